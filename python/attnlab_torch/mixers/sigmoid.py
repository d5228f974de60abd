"""``sigmoid[:bias=B]`` (mirrors crates/model/src/families/sigmoid.rs).

``y_i = Σ_j σ(q_i·k_j / √d + b_i) v_j`` over the keys query ``i`` sees, no row normalisation;
``b_i = −ln n_i`` (``n_i`` the keys query ``i`` sees: ``i + 1`` causal, ``T`` bidirectional)
unless ``bias=B`` fixes ``b_i = B``.
"""

import math

from .. import heads as _heads
from ._common import keys_per_query, scores, split_rotated, visible


def gates(ops, spec, q, k, causal):
    """``[B, H, T, T]``: ``σ(q·k/√d + b)``, zero where a query does not see a key."""
    t, d = q.shape[2], q.shape[3]
    z = scores(ops, q, k) / math.sqrt(d)
    bias = spec["bias"]
    z = z + bias if bias is not None else z - ops.log(keys_per_query(ops, t, causal))
    g = ops.sigmoid(z)
    return ops.where(visible(ops, t, True), g, 0.0) if causal else g


def mix(ops, p, spec, x, ctx):
    q, k, v = split_rotated(ops, p, x, ctx)
    return _heads.merge(ops, p, ops.matmul(gates(ops, spec, q, k, ctx.causal), v))
