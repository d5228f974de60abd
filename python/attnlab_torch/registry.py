"""attnlab's family registry, as the Rust side declares it: ``registry.json`` beside this file is
the output of ``attnlab variants --json`` (a Rust test fails when it is stale), so this package
keeps no list of families, defaults or constants of its own.

Each family has ``name``, ``module`` (its name in parameter paths, ``blocks.<i>.mixer.<module>.…``),
``syntax``, ``variants``, ``variant_required``, ``default_variant``, ``options`` (every option
with its default), ``conventions`` (constants such as ε values, each ``{"value", "doc"}``) and
``catalogue``.
"""

import json
from pathlib import Path

_FAMILIES = json.loads((Path(__file__).with_name("registry.json")).read_text(encoding="utf-8"))["families"]
_BY_NAME = {f["name"]: f for f in _FAMILIES}


def families():
    """Family names, in the registry's order."""
    return [f["name"] for f in _FAMILIES]


def family(name):
    """The registry entry of ``name``, or ``ValueError`` naming the known ones."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown attention family '{name}', expected one of: {', '.join(families())}")
    return _BY_NAME[name]


def defaults(name):
    """Every option of ``name`` with its default (a fresh dict)."""
    return dict(family(name)["options"])


def convention(name, key):
    """The value of one of ``name``'s conventions (``convention("delta", "l2_eps")``)."""
    return family(name)["conventions"][key]["value"]
