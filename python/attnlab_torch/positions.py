"""Position information (mirrors crates/model/src/position.rs and Burn's ``RotaryEncoding``).

- ``learned``: ``x += positions.learned.weight[t]``.
- ``sinusoidal``: ``x += pe[t]``, ``pe[t, c] = sin(t·ω_c)`` for even ``c``, ``cos(t·ω_c)`` for odd
  ``c``, ``ω_c = 10000^(−2⌊c/2⌋/d_model)``.
- ``rope``: queries and keys of every head (width ``d`` = ``d_model / n_heads``) rotated in
  adjacent pairs ``(x_{2i}, x_{2i+1})`` by the angle ``t·θ_i``, ``θ_i = 10000^(−2i/d)``:
  ``(x_{2i} cos − x_{2i+1} sin, x_{2i+1} cos + x_{2i} sin)``. Burn builds θ and the cos/sin
  table in float32; the table here is rounded the same way, so angles at long positions agree.
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


def rope_thetas(d, base=10000.0):
    """Burn's ``θ_i = 1/exp((2i/d)·ln base)``, each step in float32."""
    ln_base = f32(math.log(f32(base)))
    return [f32(1.0 / f32(math.exp(f32(f32(2 * i / d) * ln_base)))) for i in range(d // 2)]


class Rope:
    """RoPE of per-head width ``d``; ``rope(ops, x, offset)`` rotates ``[..., T, d]``."""

    def __init__(self, d, base=10000.0):
        if d % 2:
            raise ValueError(f"rope needs an even head dim, got {d}")
        self.d = d
        self.thetas = rope_thetas(d, base)
        self._tables = {}

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
