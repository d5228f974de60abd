"""``nsa[:block=B][:topk=K][:window=W]`` (mirrors crates/model/src/families/nsa/).

Native sparse attention (Yuan et al. 2025, arXiv 2502.11089). Each query head's output is
``g_cmp·o_cmp + g_slc·o_slc + g_win·o_win`` with ``g = sigmoid(x · gate.weight)`` (no bias;
column ``3·h + branch``: convention ``gate``), three softmax(q·k/√d) attentions over the same
keys and values (after RoPE):

- compressed: over the means of the keys (values) of every complete block of ``B`` positions
  that ends at or before the query, ``(j + 1)·B ≤ t + 1``; 0 for a query before the first one;
- selected: over the keys (up to the query) of its own block and the ``K − 1`` past blocks of
  highest importance (the compressed probability, summed over the query heads that share a
  key/value head), ties to the lower block, all of them when there are fewer;
- window: over the keys ``t − W < l ≤ t``.

Causal only: a bidirectional context is refused, as the Rust model refuses it.
"""

import math

from .. import heads as _heads
from ._common import scores, split_rotated, visible


def _mask(ops, rows, cols, f):
    """``[rows, cols]`` boolean, true where ``f(row, col)``."""
    flags = [[1.0 if f(r, c) else 0.0 for c in range(cols)] for r in range(rows)]
    return ops.asarray(flags) > 0.5


def _attend(ops, s, seen, v):
    return ops.matmul(ops.softmax(ops.where(seen, s, -math.inf), axis=3), v)


def compressed(ops, q, k, v, block):
    """The compressed branch's output ``[B, H, T, d_v]`` and probabilities ``[B, H, T, C]`` over
    the ``C = ⌊T/B⌋`` complete blocks (``None`` when there is none)."""
    b, h, t, d = q.shape
    n = t // block
    if n == 0:
        return ops.zeros((b, h, t, v.shape[3])), None
    pool = lambda x: ops.stack([ops.mean(x[:, :, j * block:(j + 1) * block], axis=2) for j in range(n)], axis=2)
    seen = _mask(ops, t, n, lambda i, j: (j + 1) * block <= i + 1)
    some = _mask(ops, t, 1, lambda i, _: i + 1 >= block)
    # A query with no complete block softmaxes zeros (finite) and its probabilities are zeroed.
    s = ops.where(some, ops.where(seen, scores(ops, q, pool(k)) / math.sqrt(d), -math.inf), 0.0)
    probs = ops.softmax(s, axis=3) * ops.where(some, 1.0, 0.0)
    return ops.matmul(probs, pool(v)), probs


def chosen_blocks(ops, probs, t, block, topk, group):
    """``[B, H, T, ⌈T/B⌉]`` boolean (``[T, ⌈T/B⌉]`` when no block is complete): the blocks each
    query's selected branch reads, its own among them. A past block is chosen when fewer than
    ``topk − 1`` past blocks beat it: a higher importance, or the same and a lower index."""
    n_blocks = -(-t // block)
    own = _mask(ops, t, n_blocks, lambda i, j: j == i // block)
    if probs is None:
        return own
    b, h, _, n = probs.shape
    grouped = ops.sum(ops.reshape(probs, (b, h // group, group, t, n)), axis=2, keepdims=True)
    importance = ops.reshape(ops.concat([grouped] * group, axis=2), (b, h, t, n))
    if n_blocks > n:
        importance = ops.concat([importance, ops.zeros((b, h, t, n_blocks - n))], axis=3)
    past = _mask(ops, t, n_blocks, lambda i, j: j < i // block)
    mine, other = ops.expand_dims(importance, 4), ops.expand_dims(importance, 3)  # [.., j, 1], [.., 1, j']
    lower = ops.tril(n_blocks, n_blocks, -1)  # [j, j']: j' < j
    beats = ((other > mine) | ((other == mine) & lower)) & ops.expand_dims(past, 1)  # [T, 1, j']
    rank = ops.sum(ops.where(beats, 1.0, 0.0), axis=4)
    return (past & (rank < topk - 1)) | own


def mix(ops, p, spec, x, ctx):
    if not ctx.causal:
        raise ValueError("nsa has no bidirectional form: set model.causal = true")
    block, topk, window = spec["block"], spec["topk"], spec["window"]
    q, k, v = split_rotated(ops, p, x, ctx)
    b, h, t, d = q.shape
    gates = ops.sigmoid(_heads.affine(ops, x, p["gate.weight"], p.get("gate.bias")))
    gates = ops.swapaxes(ops.reshape(gates, (b, t, h, 3)), 1, 2)  # [B, H, T, 3]
    o_cmp, probs = compressed(ops, q, k, v, block)
    chosen = chosen_blocks(ops, probs, t, block, topk, ctx.n_heads // ctx.kv_heads)
    s = scores(ops, q, k) / math.sqrt(d)
    o_slc = _attend(ops, s, chosen[..., [l // block for l in range(t)]] & ops.tril(t), v)
    o_win = _attend(ops, s, visible(ops, t, True, window), v)
    g = [gates[:, :, :, n:n + 1] for n in range(3)]
    return _heads.merge(ops, p, g[0] * o_cmp + g[1] * o_slc + g[2] * o_win)
