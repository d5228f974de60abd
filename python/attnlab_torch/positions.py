"""Position information (mirrors crates/model/src/position.rs and Burn's ``RotaryEncoding``).

- ``learned``: ``x += positions.learned.weight[t]``.
- ``sinusoidal``: ``x += pe[t]``, ``pe[t, c] = sin(t·ω_c)`` for even ``c``, ``cos(t·ω_c)`` for odd
  ``c``, ``ω_c = 10000^(−2⌊c/2⌋/d_model)``.
- ``rope``: queries and keys of every head (width ``d``, the head dim) rotated in adjacent
  pairs ``(x_{2i}, x_{2i+1})`` by the angle ``t·θ_i``, ``θ_i = base^(−2i/d)`` (``base`` is
  ``model.rope_theta``, 10000 by default): ``(x_{2i} cos − x_{2i+1} sin, x_{2i+1} cos + x_{2i} sin)``.
  With ``model.rope_scaling`` (Llama 3's), each ``θ_i`` is replaced by :func:`llama3_frequency`
  of it. Burn builds θ and the cos/sin table in float32 (the scaling in float64 from the
  float32 θ, rounded back); the table here is rounded the same way, so angles at long
  positions agree.
- ``none``: nothing.
"""

import math
import struct


def f32(x):
    """``x`` rounded to the nearest float32 (as a Python float)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def sinusoidal_table(t, d_model, offset=0):
    """``[t][d_model]`` nested lists for positions ``offset..offset+t`` (computed in float64)."""
    rows = []
    for pos in range(offset, offset + t):
        row = []
        for c in range(d_model):
            freq = 10000.0 ** (-float(c // 2 * 2) / d_model)
            angle = pos * freq
            row.append(math.sin(angle) if c % 2 == 0 else math.cos(angle))
        rows.append(row)
    return rows


def llama3_frequency(f, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
    """Llama 3's scaling of a pair turning at ``f`` radians per position (float64).

    With the wavelength ``λ = 2π/f`` and ``old = original_max_position_embeddings``: ``f`` when
    ``λ < old/high_freq_factor``, ``f/factor`` when ``λ > old/low_freq_factor``, and between
    them ``(1 − s)·f/factor + s·f`` with ``s = (old/λ − low_freq_factor)/(high_freq_factor − low_freq_factor)``.
    """
    old = float(original_max_position_embeddings)
    wavelength = 2.0 * math.pi / f
    if wavelength < old / high_freq_factor:
        return f
    if wavelength > old / low_freq_factor:
        return f / factor
    s = (old / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    return (1.0 - s) * f / factor + s * f


def scaled_frequency(f, scaling):
    """``f`` under ``model.rope_scaling`` (a dict with ``type``; ``None``: unscaled)."""
    if scaling is None:
        return f
    kind = scaling.get("type")
    if kind != "llama3":
        raise ValueError(f"model.rope_scaling: unknown type {kind!r}, expected \"llama3\"")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in keys if k not in scaling]
    if missing:
        raise ValueError(f"model.rope_scaling (llama3) lacks {', '.join(missing)}")
    return llama3_frequency(f, *(scaling[k] for k in keys))


def rope_thetas(d, base=10000.0, scaling=None):
    """Burn's ``θ_i = 1/exp((2i/d)·ln base)``, each step in float32, then (with ``scaling``, a
    ``model.rope_scaling`` dict) each scaled in float64 and rounded to float32 as attnlab does."""
    ln_base = f32(math.log(f32(base)))
    thetas = [f32(1.0 / f32(math.exp(f32(f32(2 * i / d) * ln_base)))) for i in range(d // 2)]
    return thetas if scaling is None else [f32(scaled_frequency(th, scaling)) for th in thetas]


class Rope:
    """RoPE of per-head width ``d`` with base ``base`` (``model.rope_theta``) and optional
    ``scaling`` (``model.rope_scaling``); ``rope(ops, x, offset)`` rotates ``[..., T, d]``."""

    def __init__(self, d, base=10000.0, scaling=None):
        if d % 2:
            raise ValueError(f"rope needs an even head dim, got {d}")
        self.d = d
        self.thetas = rope_thetas(d, base, scaling)
        self._tables = {}

    def narrowed(self, width):
        """RoPE of a ``width``-wide part of a head (``width`` even, dividing ``d``) as attnlab
        rotates one: its pair ``i`` turns at the head's pair ``i·d/width``, which is
        ``θ^(−2i/width)`` (crates/model/src/position.rs, ``rope_pair_angles``)."""
        if width % 2 or self.d % width:
            raise ValueError(f"rope of width {width} from {self.d}-wide heads: need an even divisor")
        part = object.__new__(Rope)
        part.d, part.thetas, part._tables = width, self.thetas[:: self.d // width], {}
        return part

    def table(self, ops, t, offset):
        """cos and sin ``[T, d/2]`` for positions ``offset..offset+T`` (float32-rounded angles)."""
        key = (ops.name, repr(getattr(ops, "device", None)), repr(getattr(ops, "dtype", None)), t, offset)
        if key not in self._tables:
            cos, sin = [], []
            for pos in range(offset, offset + t):
                angles = [f32(f32(float(pos)) * th) for th in self.thetas]
                cos.append([f32(math.cos(a)) for a in angles])
                sin.append([f32(math.sin(a)) for a in angles])
            self._tables = {key: (ops.asarray(cos), ops.asarray(sin))}
        return self._tables[key]

    def __call__(self, ops, x, offset=0):
        t, d = x.shape[-2], x.shape[-1]
        if d != self.d:
            raise ValueError(f"rope rotates {self.d}-wide heads, got {d}")
        cos, sin = self.table(ops, t, offset)
        a, b = x[..., 0::2], x[..., 1::2]
        even = a * cos - b * sin
        odd = b * cos + a * sin
        return ops.reshape(ops.stack([even, odd], axis=-1), tuple(x.shape))
