"""What the KV-cache families (softmax, sigmoid, stickbreak) share besides ``heads.py``."""

import math

from .. import heads as _heads


def split_rotated(ops, p, x, ctx, d_qk=None):
    """Project ``[q | k | v]`` (keys and values repeated to every query head, see ``heads.py``),
    split into heads, rotate q and k when the model has RoPE.

    ``x`` ``[B, T, d_model]`` -> q, k ``[B, H, T, d_qk]``, v ``[B, H, T, head_dim]``.
    """
    d_qk = ctx.head_dim if d_qk is None else d_qk
    qkv = _heads.project_qkv(ops, p, x, ctx, d_qk)
    q, k, v = _heads.split_packed(ops, qkv, ctx.n_heads, d_qk, ctx.head_dim)
    if ctx.rope is not None:
        q, k = ctx.rope(ops, q, 0), ctx.rope(ops, k, 0)
    return q, k, v


def visible(ops, t, causal, window=0):
    """``[T, T]`` boolean, true where query ``i`` sees key ``j``: ``j <= i`` when causal (every
    ``j`` otherwise), and with a sliding window ``W > 0`` only ``|i − j| < W``
    (causal: ``i − W < j <= i``)."""
    seen = ops.tril(t) if causal else ops.tril(t, t, t)
    if window > 0:
        seen = seen & ~ops.tril(t, t, -window)  # drops j <= i − W
        if not causal:
            seen = seen & ops.tril(t, t, window - 1)  # drops j >= i + W
    return seen


def keys_seen(ops, seen):
    """``[T, 1]``: the keys each query sees, counted off a :func:`visible` mask."""
    return ops.sum(ops.where(seen, 1.0, 0.0), axis=1, keepdims=True)


def keys_per_query(ops, t, causal):
    """``[T, 1]``: keys each query attends over, ``i + 1`` when causal, ``T`` otherwise."""
    return ops.reshape(ops.asarray([float(i + 1 if causal else t) for i in range(t)]), (t, 1))


def scores(ops, q, k):
    """``q kᵀ``: ``[B, H, T, d]`` x ``[B, H, S, d]`` -> ``[B, H, T, S]``."""
    return ops.matmul(q, ops.swapaxes(k, 2, 3))


def flat_heads(ops, y):
    """``[B, H, T, d_v]`` -> ``[B, T, H·d_v]`` (head-major columns)."""
    b, h, t, dv = y.shape
    return ops.reshape(ops.swapaxes(y, 1, 2), (b, t, h * dv))


def inv_sqrt(d):
    return 1.0 / math.sqrt(d)
