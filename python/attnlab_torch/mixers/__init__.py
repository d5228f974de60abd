"""The mixer registry: spec family name -> (the family's name in parameter paths, its module).

Every module defines ``mix(ops, p, spec, x, ctx)``: ``p`` the layer's mixer parameters with the
``blocks.<i>.mixer.<Family>.`` prefix removed, ``spec`` a :class:`attnlab_torch.spec.Spec`,
``x`` the normalised block input ``[B, T, d_model]``, ``ctx`` a
:class:`attnlab_torch.context.MixContext`; it returns ``[B, T, d_model]``.

The families and their path names come from the Rust registry (``registry.json``); each needs a
module here named after it. A family without one, or a module that fails to import, fails the
package's import, loudly: a reimplementation that silently lacks a family is no reference.
"""

import importlib

from .. import registry as _registry

# Family -> the Rust enum variant that names its parameters (`blocks.<i>.mixer.<Variant>.…`).
PATH_NAMES = {name: _registry.family(name)["module"] for name in _registry.families()}


def _load(family):
    try:
        module = importlib.import_module(f"{__name__}.{family}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{family}":
            raise
        raise ImportError(
            f"attnlab's registry has the family '{family}' but attnlab_torch has no mixer for it: "
            f"add python/attnlab_torch/mixers/{family}.py defining mix(ops, p, spec, x, ctx)"
        ) from e
    if not callable(getattr(module, "mix", None)):
        raise ImportError(f"attnlab_torch.mixers.{family} defines no mix(ops, p, spec, x, ctx)")
    return module


MIXERS = {family: (path, _load(family)) for family, path in PATH_NAMES.items()}


def mixer(family):
    """``(path_name, module)`` of a family, or ``ValueError`` naming the known ones."""
    if family not in MIXERS:
        raise ValueError(f"unknown attention family '{family}', expected one of: {', '.join(MIXERS)}")
    return MIXERS[family]
