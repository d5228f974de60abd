"""``moba[:block=B][:topk=K]`` (mirrors crates/model/src/families/moba/).

Mixture of block attention (Lu et al. 2025, arXiv 2502.13189). The keys are cut into blocks of
``B`` positions; query ``i`` (in block ``b(i) = ⌊i/B⌋``) scores each candidate block ``j`` by
``q_i·mean(k_l, l in block j)`` (after RoPE, per query head: convention ``gate``), keeps the
``K`` highest (ties to the lower ``j``; all of them when there are fewer), and attends with
``softmax(q·k/√d)`` over those blocks' keys and its own block's (convention ``selection``).
Causal: the candidates are the past blocks ``j < b(i)`` and the own block is causally masked;
bidirectional: every other block, the own block in full. The choice carries no gradient.
"""

import math

from .. import heads as _heads
from ._common import scores, split_rotated


def _mask(ops, rows, cols, f):
    """``[rows, cols]`` boolean, true where ``f(row, col)``."""
    flags = [[1.0 if f(r, c) else 0.0 for c in range(cols)] for r in range(rows)]
    return ops.asarray(flags) > 0.5


def chosen_blocks(ops, q, k, block, topk, causal):
    """``[B, H, T, n_blocks]`` boolean: the blocks besides its own that each query reads.

    A block is chosen when it is a candidate and fewer than ``topk`` candidates beat it: a
    higher score, or the same score and a lower index.
    """
    t = k.shape[2]
    n_blocks = -(-t // block)
    means = ops.stack([ops.mean(k[:, :, j * block:(j + 1) * block], axis=2) for j in range(n_blocks)], axis=2)
    gate = scores(ops, q, means)  # [B, H, T, n_blocks]
    candidate = _mask(ops, q.shape[2], n_blocks, lambda i, j: j < i // block if causal else j != i // block)
    mine, other = ops.expand_dims(gate, 4), ops.expand_dims(gate, 3)  # [.., j, 1], [.., 1, j']
    lower = ops.tril(n_blocks, n_blocks, -1)  # [j, j']: j' < j
    beats = ((other > mine) | ((other == mine) & lower)) & ops.expand_dims(candidate, 1)  # [T, 1, j']
    rank = ops.sum(ops.where(beats, 1.0, 0.0), axis=4)
    return candidate & (rank < topk)


def mix(ops, p, spec, x, ctx):
    block, topk = spec["block"], spec["topk"]
    q, k, v = split_rotated(ops, p, x, ctx)
    t, d = q.shape[2], q.shape[3]
    chosen = chosen_blocks(ops, q, k, block, topk, ctx.causal)
    keys_of = chosen[:, :, :, [l // block for l in range(t)]]  # [B, H, T, T]
    own = _mask(ops, t, t, lambda i, l: l // block == i // block and (l <= i or not ctx.causal))
    seen = keys_of | own
    w = ops.softmax(ops.where(seen, scores(ops, q, k) / math.sqrt(d), -math.inf), axis=3)
    return _heads.merge(ops, p, ops.matmul(w, v))
