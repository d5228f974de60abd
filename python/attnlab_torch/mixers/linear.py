"""``linear:<map>[:norm=sum|none][:form=...][:chunk=N][:feature_dim=N][:features=N]``
(mirrors crates/model/src/families/linear/).

``y_i = Σ_j (φ(q_i)·φ(k_j)) v_j / D_i`` over the keys query ``i`` sees, with
``D_i = safe(Σ_j φ(q_i)·φ(k_j))`` for ``norm=sum`` (``safe(z) = sign(z)·max(|z|, 1e-6)``,
``sign(0) = +1``) and ``D_i = 1`` for ``norm=none``. φ is one of :mod:`attnlab_torch.feature_maps`;
``linear:taylor`` projects queries and keys to ``feature_dim`` per head (the width is read off
the packed projection, ``heads.qk_width``). Computed in the
parallel (masked ``T × T``) form; ``form=`` and ``chunk=`` change how attnlab sums, not the numbers.
"""

from .. import feature_maps
from .. import heads as _heads
from ._common import scores, split_rotated, visible


def features(ops, p, spec, x, ctx):
    """``(φ(q), φ(k), v)`` for tokens at positions ``0..T``."""
    q, k, v = split_rotated(ops, p, x, ctx, _heads.qk_width(p, ctx.n_heads, ctx.head_dim, ctx.kv_heads))
    fq = feature_maps.apply(ops, spec.variant, q, spec.values, p, ctx, True)
    fk = feature_maps.apply(ops, spec.variant, k, spec.values, p, ctx, False)
    return fq, fk, v


def attend(ops, fq, fk, v, normalize, causal, eps=feature_maps.DENOMINATOR_EPS):
    """``[B, H, T, F]``, ``[B, H, T, F]``, ``[B, H, T, d_v]`` -> ``[B, H, T, d_v]``; ``eps`` the
    sign-safe denominator's floor."""
    t = fq.shape[2]
    if not causal:
        num = ops.matmul(fq, ops.matmul(ops.swapaxes(fk, 2, 3), v))
        if not normalize:
            return num
        den = ops.sum(fq * ops.sum(fk, axis=2, keepdims=True), axis=3, keepdims=True)
        return num / feature_maps.safe_denominator(ops, den, eps)
    a = ops.where(visible(ops, t, True), scores(ops, fq, fk), 0.0)
    if normalize:
        a = a / feature_maps.safe_denominator(ops, ops.sum(a, axis=3, keepdims=True), eps)
    return ops.matmul(a, v)


def mix(ops, p, spec, x, ctx):
    fq, fk, v = features(ops, p, spec, x, ctx)
    normalize = spec.one_of("norm") == "sum"
    y = attend(ops, fq, fk, v, normalize, ctx.causal, spec.convention("denominator_eps"))
    return _heads.merge(ops, p, y)
