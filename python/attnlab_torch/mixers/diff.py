"""``diff[:lambda_init=F]`` (mirrors crates/model/src/families/diff/).

Differential attention (Ye et al. 2024, arXiv 2410.05258). Each head's ``d_h``-wide query and
key split into halves ``q = [q₁ | q₂]``, ``k = [k₁ | k₂]`` of ``d = d_h/2`` (convention
``qk_halves``; under RoPE each half is rotated as its own ``d``-wide head), the value stays
``d_h`` wide; over the keys query ``i`` sees (``j <= i`` causal, all otherwise):

``y = (1 − λ_init) · RMSNorm((softmax(q₁·k₁/√d) − λ softmax(q₂·k₂/√d)) v)``,
``λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init`` (``lambda_q1`` … ``[d]``, one λ per layer),
``λ_init = a − b·exp(−c·layer)``, ``[a, b, c]`` the ``lambda_init_schedule`` convention and
``layer`` 0-based, unless ``lambda_init=F`` fixes it. The RMSNorm runs over each head's ``d_h``
outputs, ``y / √(mean(y²) + ε) · γ`` with ``γ = norm.gamma`` ``[d_h]`` and ``ε = norm_eps``.
"""

import math

from .. import heads as _heads
from ._common import scores, visible


def lambda_init(spec, layer):
    """``λ_init`` of the 0-based ``layer``: the option when given, else the schedule."""
    fixed = spec["lambda_init"]
    if fixed is not None:
        return float(fixed)
    a, b, c = spec.convention("lambda_init_schedule")
    return a - b * math.exp(-c * layer)


def lam(ops, p, init):
    """``λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init`` (a scalar)."""
    def dot(a, b):
        return ops.sum(p[a] * p[b])

    return ops.exp(dot("lambda_q1", "lambda_k1")) - ops.exp(dot("lambda_q2", "lambda_k2")) + init


def mix(ops, p, spec, x, ctx):
    dh = ctx.head_dim
    d = dh // 2
    q, k, v = _heads.split_packed(ops, _heads.project_qkv(ops, p, x, ctx), ctx.n_heads, dh, dh)
    halves = [q[..., :d], q[..., d:], k[..., :d], k[..., d:]]
    if ctx.rope is not None:
        rope = ctx.rope.narrowed(d)
        halves = [rope(ops, part, 0) for part in halves]
    q1, q2, k1, k2 = halves
    seen = visible(ops, q.shape[2], ctx.causal)

    def weights(qh, kh):
        return ops.softmax(ops.where(seen, scores(ops, qh, kh) / math.sqrt(d), -math.inf), axis=3)

    init = lambda_init(spec, ctx.layer)
    y = ops.matmul(weights(q1, k1) - lam(ops, p, init) * weights(q2, k2), v)
    rms = ops.sqrt(ops.mean(y * y, axis=-1, keepdims=True) + spec.convention("norm_eps"))
    return _heads.merge(ops, p, y / rms * p["norm.gamma"] * (1.0 - init))
