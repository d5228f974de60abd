"""The mixer registry: spec family name -> (the family's name in parameter paths, its module).

Every module defines ``mix(ops, p, spec, x, ctx)``: ``p`` the layer's mixer parameters with the
``blocks.<i>.mixer.<Family>.`` prefix removed, ``spec`` a :class:`attnlab_torch.spec.Spec`,
``x`` the normalised block input ``[B, T, d_model]``, ``ctx`` a
:class:`attnlab_torch.context.MixContext`; it returns ``[B, T, d_model]``.
"""

import importlib

# Family -> the Rust enum variant (`families!` in crates/model/src/families/mod.rs), which names
# the parameters (`blocks.<i>.mixer.<Variant>.…`).
PATH_NAMES = {
    "softmax": "Softmax",
    "sigmoid": "Sigmoid",
    "linear": "Linear",
    "decay": "Decay",
    "delta": "Delta",
    "stickbreak": "StickBreak",
}


class _Missing:
    """Stands in for a family module that cannot be imported; using it says why."""

    def __init__(self, family, error):
        self.family, self.error = family, error

    def mix(self, *args, **kwargs):
        raise NotImplementedError(f"the '{self.family}' mixer is not available in attnlab_torch ({self.error})")


# Written separately; a missing or broken module disables its family only.
_OPTIONAL = ("decay", "delta")


def _load(family):
    if family not in _OPTIONAL:
        return importlib.import_module(f"{__name__}.{family}")
    try:
        return importlib.import_module(f"{__name__}.{family}")
    except Exception as e:  # ImportError, or a module still being written
        return _Missing(family, f"{type(e).__name__}: {e}")


MIXERS = {family: (path, _load(family)) for family, path in PATH_NAMES.items()}


def mixer(family):
    """``(path_name, module)`` of a family, or ``NotImplementedError``/``ValueError``."""
    if family not in MIXERS:
        raise ValueError(f"unknown attention family '{family}', expected one of: {', '.join(MIXERS)}")
    path, module = MIXERS[family]
    if isinstance(module, _Missing):
        module.mix()
    return path, module
