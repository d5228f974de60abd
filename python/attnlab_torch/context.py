"""What a mixer is told about its place in the model (mirrors ``MixerDims`` and ``MixContext``)."""

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass
class MixContext:
    d_model: int
    n_heads: int
    max_seq_len: int
    layer: int
    causal: bool
    bias: bool
    # ``rope(ops, x, offset)`` rotates ``[B, H, T, d]`` queries or keys sitting at positions
    # ``offset..``; ``None`` when the model has no RoPE (positions = learned, sinusoidal, none).
    rope: Optional[Callable] = None

    @property
    def head_dim(self):
        return self.d_model // self.n_heads
