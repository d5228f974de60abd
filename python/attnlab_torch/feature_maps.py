"""The feature maps φ of the linear-type families and the sign-safe normaliser (mirrors
crates/model/src/feature_map.rs). Shared by ``linear`` and ``decay``.

| map | φ(x) on a ``[B, H, T, d]`` query or key |
|---|---|
| identity | ``x`` |
| elu1 | ``elu(x) + 1`` |
| relu | ``max(x, 0)`` |
| cosformer | ``[relu(x) cos(π t / 2M), relu(x) sin(π t / 2M)]`` (last axis), ``t`` the absolute position, ``M = max(max_seq_len, 1)`` |
| taylor | ``[1, x / d^¼, vec(x xᵀ) / √(2d)]``, ``vec`` row-major (``x_a x_b`` at ``a·d + b``) |
| performer | ``exp(x̃ Wᵀ − ‖x̃‖²/2) / √m``, ``x̃ = x / d^¼``, ``W`` the stored ``[m, d]`` ``feature_map.random_features`` |
"""

import math

from . import registry as _registry

# The registry's value; a mixer passes the one its layer's description gives (`denominator_eps`).
DENOMINATOR_EPS = _registry.convention("linear", "denominator_eps")


def safe_denominator(ops, z, eps=DENOMINATOR_EPS):
    """``sign(z) · max(|z|, ε)`` with ``sign(0) = +1`` (ε = 1e-6)."""
    sign = ops.where(z >= 0, 1.0, -1.0)
    return ops.maximum(ops.abs(z), eps) * sign


def apply(ops, name, x, opts=None, p=None, ctx=None, is_query=False, offset=0):
    """φ_name of ``x`` ``[B, H, T, d]`` for tokens at absolute positions ``offset..offset+T``.

    ``p`` holds the mixer's parameters (Performer reads ``feature_map.random_features``),
    ``ctx`` the :class:`~attnlab_torch.context.MixContext` (cosFormer reads ``max_seq_len``).
    ``opts`` and ``is_query`` are accepted for a uniform call and not needed: every map treats
    queries and keys alike.
    """
    b, h, t, d = x.shape
    if name == "identity":
        return x
    if name == "elu1":
        return ops.elu(x) + 1.0
    if name == "relu":
        return ops.relu(x)
    if name == "cosformer":
        m = float(max(ctx.max_seq_len if ctx is not None else 1, 1))
        angles = ops.reshape(ops.asarray([math.pi / 2 * (offset + i) / m for i in range(t)]), (1, 1, t, 1))
        r = ops.relu(x)
        return ops.concat([r * ops.cos(angles), r * ops.sin(angles)], axis=3)
    if name == "taylor":
        ones = ops.ones((b, h, t, 1))
        linear = x / (d ** 0.25)
        outer = ops.reshape(ops.expand_dims(x, 4) * ops.expand_dims(x, 3), (b, h, t, d * d))
        return ops.concat([ones, linear, outer / math.sqrt(2.0 * d)], axis=3)
    if name == "performer":
        w = p["feature_map.random_features"]  # [m, d]
        m = w.shape[0]
        xs = x / (d ** 0.25)
        half_sq_norm = ops.sum(xs * xs, axis=3, keepdims=True) / 2.0
        proj = ops.matmul(xs, ops.swapaxes(w, 0, 1))
        return ops.exp(proj - half_sq_norm) / math.sqrt(m)
    raise ValueError(f"unknown feature map '{name}', expected one of: identity, elu1, relu, cosformer, taylor, performer")
