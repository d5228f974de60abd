"""One layer's attention mixer as attnlab describes it, and the reader of older spec strings.

Format 3 exports describe each layer's mixer fully resolved (``attnlab_mixers``: family, variant,
every option typed with its defaults, query/key width, constants): :meth:`Spec.from_description`
takes that as it is, with nothing parsed and nothing defaulted here.

Format 2 exports (and tests) only give spec strings, ``family[:variant][:key=value]...``.
:func:`parse` reads them with the grammar every family shares, driven by the registry
(``registry.json``: each family's variants, whether one is required, and every option with a
typed default; values are read as serde reads them in ``crates/model/src/options.rs``). It
checks what that grammar says (family, variant, option names, value types) and no rule between
options (``floor_scale`` belongs to ``softmax:log_n_temp``): attnlab checked those before it
trained, and its own tests hold them (``crates/model/src/families/``).

``str(spec)`` is attnlab's canonical spelling: the variant (left out when it is the family's
default), then the options that differ from their defaults in alphabetical order.
"""

import re
from dataclasses import dataclass, field
from decimal import Decimal

from . import registry as _registry


@dataclass(frozen=True)
class Spec:
    """One layer's mixer.

    - ``family``: a registry family (``softmax``, ``linear``, ...); ``module``: its name in
      parameter paths (``blocks.<i>.mixer.<module>.…``);
    - ``variant``: the positional part with a default spelled out (``"sqrt_d"``), or ``None``
      where the family has none or the plain form was chosen (``delta``);
    - ``values``: every option, typed (bool, int, float, str, or None for an absent optional
      float), defaults filled in; ``spec[key]`` and ``spec.get(key)`` read one;
    - ``options``: the options that differ from their defaults, as attnlab prints them
      (``{"sink": "zero"}``);
    - ``qk_width``: per-head query/key width, as the export describes it (``None`` for a spec
      read from text: the layer's packed projection says it, see ``heads.qk_width``);
    - ``conventions``: the constants a reimplementation needs (``{name: {"value", "doc"}}``),
      ``spec.convention(name)`` reads one's value.

    Two specs are equal when they mean the same (``softmax:forget=false == softmax``).
    """

    family: str
    variant: object = None
    values: dict = field(default_factory=dict, repr=False)
    text: str = field(default="", compare=False, repr=False)
    module: str = field(default="", compare=False, repr=False)
    qk_width: object = field(default=None, compare=False, repr=False)
    conventions: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_description(cls, d):
        """A format-3 layer description (one entry of ``attnlab_mixers``), as it is."""
        return cls(
            family=d["family"],
            variant=d["variant"],
            values=dict(d["options"]),
            text=d["spec"],
            module=d["module"],
            qk_width=d["qk_width"],
            conventions=dict(d["conventions"]),
        )

    def __getitem__(self, key):
        return self.values[key]

    def get(self, key, default=None):
        return self.values.get(key, default)

    @property
    def options(self):
        """The options that differ from the family's defaults, as attnlab prints them."""
        defaults = _registry.defaults(self.family)
        return {k: _plain(v) for k, v in sorted(self.values.items()) if v != defaults.get(k) and v is not None}

    def convention(self, name):
        """The value of one of the described constants (``spec.convention("l2_eps")``)."""
        if name not in self.conventions:
            raise KeyError(f"{self}: no convention '{name}' (described: {', '.join(sorted(self.conventions)) or 'none'})")
        return self.conventions[name]["value"]

    def one_of(self, key):
        """``spec[key]``, checked against the values the registry lists for it (``choices``,
        which attnlab reads off the family's grammar); otherwise a ValueError naming them."""
        value = self.values[key]
        choices = _registry.family(self.family).get("choices", {}).get(key)
        if choices is None:
            raise KeyError(f"{self}: '{key}' is not a word-valued option of {self.family}")
        if value not in choices:
            raise _error(self, f"'{key}': unknown value `{value}`, expected one of: {', '.join(choices)}")
        return value

    def __str__(self):
        return self.text

    def __hash__(self):
        return hash((self.family, self.variant, tuple(sorted(self.values.items()))))


def _plain(value):
    """A value as attnlab prints it: booleans lowercase, floats in Rust's shortest positional form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        s = repr(value)
        if "e" in s or "E" in s:
            s = format(Decimal(s), "f")
        if s.endswith(".0"):
            s = s[:-2]
        return s
    return str(value)


def canonical(family, variant, values):
    """attnlab's spelling: the variant unless it is the default, then the options that differ
    from their defaults, alphabetically."""
    entry = _registry.family(family)
    defaults = entry["options"]
    parts = [family]
    if variant is not None and variant != entry["default_variant"]:
        parts.append(variant)
    for key in sorted(values):
        if values[key] != defaults[key] and values[key] is not None:
            parts.append(f"{key}={_plain(values[key])}")
    return ":".join(parts)


# Every integer option attnlab has is a count (a usize), so a sign is refused as serde refuses it.
_UNSIGNED = re.compile(r"\+?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?(inf|infinity|nan|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)\Z", re.IGNORECASE)


def _error(spec, reason):
    return ValueError(f"invalid attention spec '{spec}': {reason}")


def _read_value(spec, key, default, text):
    """``text`` typed as the registry's default for ``key`` is (``None``: an optional float)."""
    if isinstance(default, bool):
        if text in ("true", "on"):
            return True
        if text in ("false", "off"):
            return False
        raise _error(spec, f"'{key}' is true or false, found '{text}'")
    if isinstance(default, int):
        if not _UNSIGNED.match(text):
            raise _error(spec, f"'{key}' needs a number, found '{text}'")
        return int(text)
    if default is None or isinstance(default, float):
        if not _FLOAT.match(text):
            raise _error(spec, f"'{key}' needs a number, found '{text}'")
        return float(text)
    if isinstance(default, str):
        choices = _registry.family(spec.split(":")[0]).get("choices", {}).get(key)
        if choices is not None and text not in choices:
            raise _error(spec, f"'{key}': unknown value `{text}`, expected one of: {', '.join(choices)}")
        return text
    raise TypeError(f"registry.json: option '{key}' has a default of unexpected type {type(default).__name__}")


def parse(text):
    """Reads one spec string (see the module docs) into a :class:`Spec`; a bad one raises
    ``ValueError`` naming the family, variant or option."""
    if not isinstance(text, str):
        raise TypeError(f"a spec is a string, got {type(text).__name__}")
    spec = text.strip()
    family, *rest = spec.split(":")
    if not family:
        raise _error(spec, "empty spec; try 'softmax' or 'linear:elu1'")
    if any(p == "" for p in rest):
        raise _error(spec, "empty ':'-separated part")
    if family not in _registry.families():
        raise _error(spec, f"unknown family '{family}', expected one of: {', '.join(_registry.families())}")
    entry = _registry.family(family)

    variant = entry["default_variant"]
    if rest and "=" not in rest[0] and entry["variants"]:
        if rest[0] not in entry["variants"]:
            raise _error(spec, f"unknown variant '{rest[0]}' of {family}, expected one of: {', '.join(entry['variants'])}")
        variant, rest = rest[0], rest[1:]
    elif entry["variant_required"]:
        raise _error(spec, f"{family} needs a variant: {entry['syntax']}")

    values = dict(entry["options"])
    seen = set()
    for part in rest:
        if "=" not in part:
            raise _error(spec, f"expected key=value, found '{part}'")
        key, value = part.split("=", 1)
        if key in seen:
            raise _error(spec, f"option '{key}' is given twice")
        seen.add(key)
        if key not in values:
            if not values:
                raise _error(spec, f"unknown option `{key}`: {family} takes no options")
            raise _error(spec, f"unknown option `{key}`, expected one of {', '.join(f'`{k}`' for k in values)}")
        values[key] = _read_value(spec, key, entry["options"][key], value)
    return Spec(
        family=family,
        variant=variant,
        values=values,
        text=canonical(family, variant, values),
        module=entry["module"],
        conventions=_resolved_conventions(entry, values),
    )


def _resolved_conventions(entry, values):
    """The family's conventions for these option values: the registry's defaults, with each
    ``convention_rules`` entry whose ``when`` options all match applied (attnlab derives the
    rules from the families, so a parsed spec and an export's description agree)."""
    conventions = dict(entry["conventions"])
    for name, rules in entry.get("convention_rules", {}).items():
        for rule in rules:
            if all(values.get(k) == v for k, v in rule["when"].items()):
                conventions[name] = dict(conventions[name], value=rule["value"])
    return conventions


def parse_stack(value, n_layers):
    """``model.mixer`` (a string, a comma-separated string or a list of strings) as one
    :class:`Spec` per layer, as ``MixerStack::for_layer`` reads it."""
    if isinstance(value, str):
        texts = value.split(",")
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("model.mixer: empty list; name at least one spec")
        texts = list(value)
    else:
        raise ValueError(f"model.mixer must be a string or a list of strings, got {value!r}")
    specs = [parse(t) for t in texts]
    if len(specs) == 1:
        return specs * n_layers
    if len(specs) != n_layers:
        raise ValueError(
            f"model.mixer lists {len(specs)} specs but model.n_layers is {n_layers}: give one spec "
            "for all layers or exactly one per layer"
        )
    return specs
