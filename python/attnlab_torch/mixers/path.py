"""``path[:fox=true][:conv=K][:w_rank=N]``: PaTH attention (mirrors crates/model/src/families/path/).

Yang et al. 2025, "PaTH Attention: Position Encoding via Accumulating Householder
Transformations" (arXiv 2505.16381). Softmax attention whose position term is a running product
of data-dependent Householder-like transforms ``H_t = I - beta_t w_t w_t^T``:

    z_ij = (q_i^T H_i H_{i-1} ... H_{j+1} k_j + c_i - c_j) / sqrt(d)   for j <= i

(convention ``logits``; ``c`` the cumulative ``logsigmoid(forget(x))`` per query head under
``fox``, 0 otherwise), then softmax over ``j <= i`` and the values.

Per token: ``q, k, v`` from ``heads.qkv`` as the weights make them (``K`` key/value heads,
Qwen3's q/k norm when present); ``w = normalize(silu(conv(w_up(w_down(x)))))`` per key/value
head (convention ``w``: no ``w_down`` at ``w_rank=0``, no conv and no SiLU at ``conv=0``; L2 as
``w / sqrt(|w|^2 + l2_eps)``); ``beta = 2 sigmoid(beta(x))`` per key/value head. Query head
``h`` reads key/value head ``h // (H/K)``. The model's RoPE is not applied (convention ``rope``),
and there is no bidirectional form.

Computed as attnlab does: the earlier keys are rewritten with ``H_i`` before query ``i`` scores
them (``k <- k - beta_i (k . w_i) w_i``), which is ``H_i ... H_{j+1} k_j`` for every ``j < i``.
"""

import math

from .. import heads as _heads
from .. import registry as _registry
from ._common import visible
from ._gates import heads_first, linear
from ._short_conv import short_conv

# w / sqrt(|w|^2 + eps): the registry's `l2_eps`.
L2_EPS = _registry.convention("path", "l2_eps")


def directions(ops, p, x, kv, d):
    """Unit Householder directions ``[B, K, T, d]``."""
    low = linear(ops, p, "w_down", x) if "w_down.weight" in p else x
    w = linear(ops, p, "w_up", low)
    if "w_conv.weight" in p:
        w = short_conv(ops, w, p["w_conv.weight"])
    w = heads_first(ops, w, kv, d)
    return w / ops.sqrt(ops.sum(w * w, axis=-1, keepdims=True) + L2_EPS)


def to_query_heads(ops, x, h):
    """``[B, K, T, d]`` -> ``[B, H, T, d]``, key/value head ``g`` copied to query heads
    ``g*G .. (g + 1)*G``."""
    b, kv, t, d = x.shape
    if kv == h:
        return x
    one_each = ops.reshape(x, (b, kv, 1, t, d))
    return ops.reshape(ops.concat([one_each] * (h // kv), axis=2), (b, h, t, d))


def mix(ops, p, spec, x, ctx):
    if not ctx.causal:
        raise ValueError("path has no bidirectional form: set model.causal = true")
    h, kv, d = ctx.n_heads, ctx.kv_heads, ctx.head_dim
    qkv = _heads.project_grouped(ops, p, x, h, kv, d, ctx.norm_eps)
    t = x.shape[1]
    q = heads_first(ops, qkv[:, :, :h * d], h, d)
    keys = heads_first(ops, qkv[:, :, h * d:(h + kv) * d], kv, d)
    v = heads_first(ops, qkv[:, :, (h + kv) * d:], kv, d)  # queries, keys and values head_dim wide
    w = directions(ops, p, x, kv, d)
    beta = heads_first(ops, 2.0 * ops.sigmoid(linear(ops, p, "beta", x)), kv, 1)  # [B, K, T, 1]
    rows = []
    for i in range(t):
        if i > 0:
            past, wi, bi = keys[:, :, :i], w[:, :, i:i + 1], beta[:, :, i:i + 1]
            past = past - ops.matmul(ops.matmul(past, ops.swapaxes(wi, 2, 3)) * bi, wi)
            keys = ops.concat([past, keys[:, :, i:]], axis=2)
        rows.append(ops.matmul(q[:, :, i:i + 1], ops.swapaxes(to_query_heads(ops, keys, h), 2, 3)))
    z = ops.concat(rows, axis=2)  # [B, H, T, T]; entries j > i are masked below
    if spec["fox"]:
        c = ops.cumsum(heads_first(ops, ops.logsigmoid(linear(ops, p, "forget", x)), h, 1), axis=2)
        z = z + c - ops.swapaxes(c, 2, 3)
    z = ops.where(visible(ops, t, True), z / math.sqrt(d), -math.inf)
    return _heads.merge(ops, p, ops.matmul(ops.softmax(z, axis=3), to_query_heads(ops, v, h)))
