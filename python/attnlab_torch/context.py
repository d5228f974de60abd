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
    # Key/value heads (grouped-query attention, ``model.n_kv_heads``); ``None``: ``n_heads``.
    n_kv_heads: Optional[int] = None
    # Per-head width (``model.head_dim``); ``None``: ``d_model // n_heads``.
    d_head: Optional[int] = None
    # ε of the per-head q/k RMSNorm (``model.norm_eps``), used when the layer has
    # ``heads.q_norm.gamma`` and ``heads.k_norm.gamma``.
    norm_eps: float = 1e-5

    @property
    def head_dim(self):
        """Per-head width of values (and of queries and keys unless the family narrows them)."""
        return self.d_model // self.n_heads if self.d_head is None else self.d_head

    @property
    def kv_heads(self):
        """Key/value heads: each serves ``n_heads // kv_heads`` query heads."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads
