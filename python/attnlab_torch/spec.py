"""attnlab's attention spec strings, ``family[:variant][:key=value]...`` (mirrors the Rust parsers).

Each family's grammar and defaults follow its ``MixerFamily::parse`` and ``Display`` in
``crates/model/src/families/``; option values are read as serde reads them in
``crates/model/src/options.rs`` (numbers, ``true|on|false|off``, lowercase choices), and printing
is canonical as there: the variant (left out when it is the default one), then the options that
differ from their defaults in alphabetical order, so ``str(parse(s))`` is attnlab's own spelling.

``parse("softmax:qk_norm:sink=zero")`` gives ``Spec(family="softmax", variant="qk_norm",
options={"sink": "zero"})`` whose ``values`` hold every option of the family, typed, defaults
filled in (``spec["forget"] is False``). A bad spec raises ``ValueError`` naming the family,
variant or option.
"""

import re
from dataclasses import dataclass, field
from decimal import Decimal

from . import registry as _registry

FEATURE_MAPS = ("identity", "elu1", "relu", "cosformer", "taylor", "performer")
SCALINGS = ("sqrt_d", "none", "num_keys", "sum_key_norms", "learned", "qk_norm", "ssmax", "log_n_temp", "softpick")
DECAY_GATES = ("retnet", "mamba2", "gla", "forget")
FORMS = ("chunked", "parallel", "recurrent")

DEFAULT_TAYLOR_DIM = 16
DEFAULT_PERFORMER_FEATURES = 64
DEFAULT_CHUNK = 64
DEFAULT_FLOOR_SCALE = 8.0
DEFAULT_ATTN_SCALE = 0.1
MAX_CONV_KERNEL = 64

# Option types: "bool", "usize", "f64", "opt_f64" (absent = None), or a tuple of choices.
_SCHEMAS = {
    "softmax": {
        "forget": ("bool", False),
        "gate": (("none", "output"), "none"),
        "sink": (("none", "learned", "zero"), "none"),
        "floor_scale": ("f64", DEFAULT_FLOOR_SCALE),
        "attn_scale": ("f64", DEFAULT_ATTN_SCALE),
    },
    "sigmoid": {"bias": ("opt_f64", None)},
    "linear": {
        "feature_dim": ("usize", DEFAULT_TAYLOR_DIM),
        "features": ("usize", DEFAULT_PERFORMER_FEATURES),
        "norm": (("sum", "none"), "sum"),
        "form": (FORMS, "chunked"),
        "chunk": ("usize", DEFAULT_CHUNK),
    },
    "decay": {
        "map": (FEATURE_MAPS, "identity"),
        "feature_dim": ("usize", DEFAULT_TAYLOR_DIM),
        "features": ("usize", DEFAULT_PERFORMER_FEATURES),
        "norm": (("sum", "none"), "none"),
        "form": (FORMS, "chunked"),
        "chunk": ("usize", DEFAULT_CHUNK),
        "conv": ("usize", 0),
    },
    "delta": {
        "neg_eigval": ("bool", False),
        "conv": ("usize", 0),
        "form": (FORMS, "chunked"),
        "chunk": ("usize", DEFAULT_CHUNK),
    },
    "stickbreak": {},
}

FAMILIES = tuple(_registry.families())


@dataclass(frozen=True)
class Spec:
    """A parsed spec.

    - ``family``: ``softmax``, ``sigmoid``, ``linear``, ``decay``, ``delta`` or ``stickbreak``;
    - ``variant``: the positional part (softmax's scaling, default ``"sqrt_d"``; linear's feature
      map; decay's gate; ``"gated"`` or ``None`` for delta; ``None`` for sigmoid and stickbreak);
    - ``options``: the ``key=value`` options the spec string gave, values as canonical strings
      (``"true"``, ``"64"``, ``"-4"``, ``"output"``), defaults not filled in;
    - ``values``: every option of the family, typed (bool, int, float, None or the choice's
      name), defaults filled in; ``spec[key]`` reads one.

    Two specs are equal when they mean the same (``softmax:forget=false == softmax``).
    """

    family: str
    variant: object = None
    options: dict = field(default_factory=dict, compare=False)
    values: dict = field(default_factory=dict, repr=False)

    def __getitem__(self, key):
        return self.values[key]

    def get(self, key, default=None):
        return self.values.get(key, default)

    def changed_options(self):
        """``key=value`` of the options that differ from the defaults, alphabetical."""
        schema = _SCHEMAS[self.family]
        out = []
        for key in sorted(schema):
            value = self.values[key]
            if value != schema[key][1] and value is not None:
                out.append(f"{key}={_plain(value)}")
        return out

    def __str__(self):
        head = None
        if self.family == "softmax":
            head = None if self.variant == "sqrt_d" else self.variant
        elif self.family in ("linear", "decay"):
            head = self.variant
        elif self.family == "delta":
            head = "gated" if self.variant == "gated" else None
        parts = ([head] if head else []) + self.changed_options()
        return ":".join([self.family] + parts)

    def __hash__(self):
        return hash(str(self))


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


_USIZE = re.compile(r"\+?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?(inf|infinity|nan|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)\Z", re.IGNORECASE)


def _error(spec, reason):
    return ValueError(f"invalid attention spec '{spec}': {reason}")


def _read_value(spec, key, kind, text):
    if kind == "bool":
        if text in ("true", "on"):
            return True
        if text in ("false", "off"):
            return False
        raise _error(spec, f"'{key}' is true or false, found '{text}'")
    if kind == "usize":
        if not _USIZE.match(text):
            raise _error(spec, f"'{key}' needs a number, found '{text}'")
        return int(text)
    if kind in ("f64", "opt_f64"):
        if not _FLOAT.match(text):
            raise _error(spec, f"'{key}' needs a number, found '{text}'")
        return float(text)
    choices = kind
    if text not in choices:
        listed = " or ".join(f"`{c}`" for c in choices) if len(choices) == 2 else ", ".join(f"`{c}`" for c in choices)
        raise _error(spec, f"'{key}': unknown value `{text}`, expected {listed}")
    return text


def _read_options(family, parts, spec):
    """``(given, values)``: the given options as canonical strings, and every option typed."""
    schema = _SCHEMAS[family]
    options = {key: default for key, (_, default) in schema.items()}
    given = {}
    seen = set()
    for part in parts:
        if "=" not in part:
            raise _error(spec, f"expected key=value, found '{part}'")
        key, text = part.split("=", 1)
        if key in seen:
            raise _error(spec, f"option '{key}' is given twice")
        seen.add(key)
        if key not in schema:
            if schema:
                expected = ", ".join(f"`{k}`" for k in schema)
                raise _error(spec, f"unknown option `{key}`, expected one of {expected}")
            raise _error(spec, f"unknown option `{key}`: {family} takes no options")
        options[key] = _read_value(spec, key, schema[key][0], text)
        given[key] = _plain(options[key])
    return given, options


def _split_choice(parts, family, what, choices, spec):
    if not parts:
        raise _error(spec, f"{family} needs a {what}: {family}:<{'|'.join(choices)}>")
    first, rest = parts[0], parts[1:]
    if first not in choices:
        raise _error(spec, f"unknown {what} '{first}', expected one of: {', '.join(choices)}")
    return first, rest


def _check_map_options(spec, kind, options, spelled):
    for key, owner, default in (("feature_dim", "taylor", DEFAULT_TAYLOR_DIM), ("features", "performer", DEFAULT_PERFORMER_FEATURES)):
        if options[key] != default and kind != owner:
            raise _error(spec, f"option '{key}' belongs to {spelled(owner)}, not {spelled(kind)}")
    for key in ("feature_dim", "features"):
        if options[key] == 0:
            raise _error(spec, f"{key} must be at least 1")


def _check_chunk_and_conv(spec, options):
    if options["chunk"] == 0:
        raise _error(spec, "chunk must be at least 1")
    conv = options.get("conv", 0)
    if not (conv == 0 or 2 <= conv <= MAX_CONV_KERNEL):
        raise _error(spec, f"conv={conv} is not a short convolution: use 0 (none) or a kernel from 2 to {MAX_CONV_KERNEL}, e.g. conv=4")


def parse(spec):
    """Parses one spec string (see the module docs)."""
    if not isinstance(spec, str):
        raise TypeError(f"a spec is a string, got {type(spec).__name__}")
    spec = spec.strip()
    parts = spec.split(":")
    family, rest = parts[0], parts[1:]
    if not family:
        raise _error(spec, "empty spec; try 'softmax' or 'linear:elu1'")
    if any(p == "" for p in rest):
        raise _error(spec, "empty ':'-separated part")
    if family not in FAMILIES:
        raise _error(spec, f"unknown family '{family}', expected one of: {', '.join(FAMILIES)}")

    if family == "softmax":
        variant = "sqrt_d"
        if rest and "=" not in rest[0]:
            if rest[0] not in SCALINGS:
                raise _error(spec, f"unknown scaling '{rest[0]}', expected one of: {', '.join(SCALINGS)}")
            variant, rest = rest[0], rest[1:]
        given, options = _read_options(family, rest, spec)
        if variant != "log_n_temp" and (options["floor_scale"] != DEFAULT_FLOOR_SCALE or options["attn_scale"] != DEFAULT_ATTN_SCALE):
            raise _error(spec, "floor_scale and attn_scale belong to softmax:log_n_temp")
        fs, a = options["floor_scale"], options["attn_scale"]
        if not (fs >= 1.0 and fs != float("inf")) or a != a or a in (float("inf"), float("-inf")):
            raise _error(spec, "floor_scale must be a finite number ≥ 1 and attn_scale finite")
        if variant == "softpick" and options["sink"] != "none":
            raise _error(spec, "softpick has no softmax denominator to add a sink to: drop sink=")
    elif family in ("sigmoid", "stickbreak"):
        variant = None
        given, options = _read_options(family, rest, spec)
    elif family == "linear":
        variant, rest = _split_choice(rest, "linear", "feature map", FEATURE_MAPS, spec)
        given, options = _read_options(family, rest, spec)
        _check_map_options(spec, variant, options, lambda m: f"linear:{m}")
        _check_chunk_and_conv(spec, options)
    elif family == "decay":
        variant, rest = _split_choice(rest, "decay", "gate", DECAY_GATES, spec)
        given, options = _read_options(family, rest, spec)
        _check_map_options(spec, options["map"], options, lambda m: f"map={m}")
        _check_chunk_and_conv(spec, options)
    else:  # delta
        variant = None
        if rest and rest[0] == "gated":
            variant, rest = "gated", rest[1:]
        elif rest and "=" not in rest[0]:
            raise _error(spec, f"unknown delta variant '{rest[0]}': use 'delta' or 'delta:gated', then key=value options")
        given, options = _read_options(family, rest, spec)
        _check_chunk_and_conv(spec, options)
    return Spec(family, variant, given, options)


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


def qk_width(spec, head_dim):
    """Per-head query/key width of a spec (Based/taylor projects to its own ``feature_dim``)."""
    if spec.family == "linear" and spec.variant == "taylor":
        return spec["feature_dim"]
    if spec.family == "decay" and spec["map"] == "taylor":
        return spec["feature_dim"]
    return head_dim


def with_defaults(spec, defaults, family):
    """The options a spec gives, over its family's ``defaults`` (text as written, e.g.
    ``{"conv": "4"}``); an option the family does not have is a ValueError naming it."""
    opts = dict(defaults)
    given = dict(getattr(spec, "options", None) or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"{family}: unknown option(s) {sorted(unknown)}")
    opts.update(given)
    return opts
