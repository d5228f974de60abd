"""``softmax[:<scaling>][:forget=true][:gate=output][:sink=learned|zero][:window=W][:floor_scale=F][:attn_scale=A]``
(mirrors crates/model/src/families/softmax/).

``y_i = Σ_j w_ij v_j``, ``w_i = softmax_j(z_ij)`` over the keys query ``i`` sees (``j <= i`` when
causal, all otherwise; with ``window=W`` only those with ``|i − j| < W``, see
``_common.visible``), with ``d`` the head dim and ``n_i`` the number of keys query ``i`` sees
(``i + 1`` causal, ``T`` bidirectional, fewer in a window):

| scaling | ``z_ij`` |
|---|---|
| sqrt_d | ``q·k / √d`` |
| none | ``q·k`` |
| num_keys | ``q·k / n_i`` |
| sum_key_norms | ``q·k / max(Σ_{j seen by i} ‖k_j‖, 1e-12)`` |
| learned | ``scale_h · q·k`` |
| qk_norm | ``scale_h · q̂·k̂``, ``x̂ = x / max(‖x‖, 1e-6)`` per head |
| ssmax | ``scale_h · ln(n_i) · q·k`` |
| log_n_temp | ``τ_i · q·k / √d``, ``τ_i = ln(⌊(i + 1)/F⌋ + 1)·A + 1`` (``i`` the position, window or not) |
| softpick | ``q·k / √d``, weights ``relu(e^z − 1) / (Σ_j |e^z − 1| + 1e-6)`` instead of softmax |

Options: ``forget=true`` adds ``c_i − c_j`` (bidirectional: ``−|c_i − c_j|``),
``c_t = Σ_{l≤t} ln σ(x_l W_f + b_f)`` per head (``forget.weight`` ``[d_model, H]``);
``sink=learned|zero`` adds ``e^{σ_h}`` (``sink`` ``[H]``, or 0) to every row's denominator;
``gate=output`` multiplies the merged heads by ``σ(x W_g + b_g)`` (``gate.weight``
``[d_model, H·d]``) before the output projection; ``window=W`` (0 = global) is sliding-window
attention, which changes only which keys each query sees. ``x`` is the mixer's (normalised) input.
"""

import math

from .. import registry as _registry
from ..heads import affine
from ._common import flat_heads, keys_seen, scores as qk_scores, split_rotated, visible

# The registry's values; a layer uses the ones its description gives (spec.convention).
SOFTPICK_EPS = _registry.convention("softmax", "softpick_eps")
QK_NORM_EPS = _registry.convention("softmax", "qk_norm_eps")
KEY_NORM_FLOOR = _registry.convention("softmax", "key_norm_floor")


def l2_normalize(ops, x, eps=QK_NORM_EPS):
    return x / ops.maximum(ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True)), eps)


def key_norm_sums(ops, k, seen):
    """``[B, H, T, 1]``: ``Σ_{j seen by i} ‖k_j‖`` for each query ``i`` (``seen`` ``[T, T]``)."""
    norms = ops.sqrt(ops.sum(k * k, axis=3, keepdims=True))  # [B, H, T, 1]
    return ops.matmul(ops.where(seen, 1.0, 0.0), norms)


def logits(ops, p, spec, q, k, x, causal, seen):
    """``z`` ``[B, H, T, T]`` before masking (the scaling and FoX's bias); ``seen`` the
    ``[T, T]`` mask of :func:`~attnlab_torch.mixers._common.visible`, which ``n_i`` and
    ``sum_key_norms``' divisor count."""
    b, h, t, d = q.shape
    scaling = spec.variant
    if scaling == "qk_norm":
        eps = spec.convention("qk_norm_eps")
        q, k = l2_normalize(ops, q, eps), l2_normalize(ops, k, eps)
    z = qk_scores(ops, q, k)

    def per_head():
        return ops.reshape(p["scale"], (1, h, 1, 1))

    if scaling in ("sqrt_d", "softpick"):
        z = z / math.sqrt(d)
    elif scaling == "none":
        pass
    elif scaling == "num_keys":
        z = z / keys_seen(ops, seen)
    elif scaling == "sum_key_norms":
        z = z / ops.maximum(key_norm_sums(ops, k, seen), spec.convention("key_norm_floor"))
    elif scaling in ("learned", "qk_norm"):
        z = z * per_head()
    elif scaling == "ssmax":
        z = z * per_head() * ops.log(keys_seen(ops, seen))
    elif scaling == "log_n_temp":
        fs, a = spec["floor_scale"], spec["attn_scale"]
        tau = [math.log(math.floor((i + 1) / fs) + 1.0) * a + 1.0 for i in range(t)]
        z = z / math.sqrt(d) * ops.reshape(ops.asarray(tau), (1, 1, t, 1))
    else:
        raise ValueError(f"softmax: unknown scaling '{scaling}'")

    if spec["forget"]:
        lf = ops.logsigmoid(affine(ops, x, p["forget.weight"], p.get("forget.bias")))  # [B, T, H]
        c = ops.cumsum(ops.swapaxes(lf, 1, 2), axis=2)  # [B, H, T]
        bias = ops.expand_dims(c, 3) - ops.expand_dims(c, 2)  # c_i - c_j
        z = z + (bias if causal else -ops.abs(bias))
    return z


def softpick(ops, z, seen, eps=SOFTPICK_EPS):
    """``relu(e^z − 1) / (Σ_seen |e^z − 1| + ε)`` computed shifted by ``m = max(0, max_j z)``."""
    hidden = ops.where(seen, z, -math.inf)
    shift = ops.maximum(ops.max(hidden, axis=3, keepdims=True), 0.0)
    floor = ops.exp(-shift)
    t = ops.exp(ops.where(seen, z, 0.0) - shift) - floor
    t = ops.where(seen, t, 0.0)
    den = ops.sum(ops.abs(t), axis=3, keepdims=True) + floor * eps
    return ops.relu(t) / den


def weights(ops, p, spec, z, seen):
    """``[B, H, T, T]`` attention weights from the logits, over the keys ``seen`` marks."""
    b, h, t, s = z.shape
    if spec.variant == "softpick":
        return softpick(ops, z, seen, spec.convention("softpick_eps"))
    z = ops.where(seen, z, -math.inf)
    sink = spec.one_of("sink")
    if sink == "none":
        return ops.softmax(z, axis=3)
    sink_logit = p["sink"] if sink == "learned" else ops.zeros((h,))
    column = ops.reshape(sink_logit, (1, h, 1, 1)) * ops.ones((b, h, t, 1))
    return ops.softmax(ops.concat([z, column], axis=3), axis=3)[..., :s]


def mix(ops, p, spec, x, ctx):
    q, k, v = split_rotated(ops, p, x, ctx)
    seen = visible(ops, q.shape[2], ctx.causal, spec.get("window", 0))
    z = logits(ops, p, spec, q, k, x, ctx.causal, seen)
    w = weights(ops, p, spec, z, seen)
    merged = flat_heads(ops, ops.matmul(w, v))
    if spec.one_of("gate") == "output":
        merged = merged * ops.sigmoid(affine(ops, x, p["gate.weight"], p.get("gate.bias")))
    return affine(ops, merged, p["heads.out.weight"], p.get("heads.out.bias"))
