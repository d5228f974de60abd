"""``stickbreak`` (mirrors crates/model/src/families/stickbreak.rs).

Query ``i`` breaks a stick starting at the nearest earlier key: ``β_ij = σ(q_i·k_j / √d)``,
``A_ij = β_ij Π_{j<l<i} (1 − β_il)`` over ``j < i`` (a query never sees its own key; the first
token outputs zero), ``y_i = Σ_j A_ij v_j``. Computed in log space,
``ln A_ij = ln σ(z_ij) + Σ_{j<l<i} ln σ(−z_il)``. Bidirectional adds the same from the right
(``j > i``, product over ``i < l < j``): the causal weights of the reversed sequence, reversed back.
"""

import math

from .. import heads as _heads
from ._common import scores, split_rotated


def causal_weights(ops, q, k):
    """``[B, H, T, T]`` stick-breaking weights over keys strictly before each query."""
    t, d = q.shape[2], q.shape[3]
    before = ops.tril(t, t, -1)  # key j strictly before query i
    z = scores(ops, q, k) / math.sqrt(d)
    log_beta = ops.logsigmoid(z)
    log_rest = ops.where(before, ops.logsigmoid(-z), 0.0)
    # Σ_{l>j, l sees} ln(1 − β_il): the reverse cumulative sum, shifted one key to the left.
    from_right = ops.flip(ops.cumsum(ops.flip(log_rest, 3), 3), 3)
    after = ops.concat([from_right[..., 1:], from_right[..., :1] * 0.0], axis=3)
    return ops.where(before, ops.exp(ops.where(before, log_beta + after, 0.0)), 0.0)


def weights(ops, q, k, causal):
    w = causal_weights(ops, q, k)
    if causal:
        return w
    back = causal_weights(ops, ops.flip(q, 2), ops.flip(k, 2))
    return w + ops.flip(ops.flip(back, 2), 3)


def mix(ops, p, spec, x, ctx):
    q, k, v = split_rotated(ops, p, x, ctx)
    return _heads.merge(ops, p, ops.matmul(weights(ops, q, k, ctx.causal), v))
