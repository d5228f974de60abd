"""Gate parameters shared by ``decay`` and ``delta`` (mirrors crates/model/src/gates.rs).

Every gate enters the recurrences as a log gate ``<= 0``, laid out ``[B, H, T, G]`` (``G = 1``
for a scalar gate per head, ``F`` for GLA's vector gate, ``d_k`` for KDA's).
"""

import math

from .. import registry as _registry
from ..heads import affine

# decay.rs: GLA's gate_logit_normalizer, log alpha = logsigmoid(.) / 16.
GLA_LOGIT_NORMALIZER = _registry.convention("decay", "gla_logit_normalizer")


def retnet_log_gamma(head):
    """``ln(1 - 2^(-5 - head))``: RetNet's fixed decay of head ``head``."""
    return math.log1p(-(2.0 ** (-5 - head)))


def heads_first(ops, y, n_heads, width):
    """``[B, T, H * width]`` (head-major columns) -> ``[B, H, T, width]``."""
    b, t = y.shape[0], y.shape[1]
    return ops.swapaxes(ops.reshape(y, (b, t, n_heads, width)), 1, 2)


def linear(ops, p, name, x):
    """The Burn ``Linear`` stored under ``name`` (``name.weight`` ``[d_in, d_out]``, ``name.bias``)."""
    return affine(ops, x, p[name + ".weight"], p.get(name + ".bias"))


def ssm_log_gates(ops, p, x, n_heads):
    """Mamba-2 / SSD: ``log a_t = -softplus(w_h . x_t + dt_bias_h) * exp(A_log_h)``; with ``G``
    columns of ``dt`` per head (``delta:kda``, ``G = d_k``) one gate per key channel, all of a
    head's channels sharing its ``A_log``.

    Parameters ``dt.weight`` ``[d_model, H*G]`` (head-major: head ``h``'s channel ``i`` in column
    ``h*G + i``), ``dt.bias`` ``[H*G]`` and ``a_log`` ``[H]``; ``x`` ``[B, T, d_model]`` ->
    ``[B, H, T, G]``.
    """
    delta = ops.softplus(linear(ops, p, "dt", x))  # [B, T, H*G]
    b, t, g = delta.shape[0], delta.shape[1], delta.shape[2] // n_heads
    rate = ops.reshape(ops.exp(p["a_log"]), (n_heads, 1))  # [H, 1]
    return ops.swapaxes(-(ops.reshape(delta, (b, t, n_heads, g)) * rate), 1, 2)
