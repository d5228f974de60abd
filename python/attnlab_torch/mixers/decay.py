"""``decay:<retnet|mamba2|gla|forget>``: decay-gated linear attention (mirrors
crates/model/src/families/decay.rs).

Per head, with a feature map phi on queries and keys (default ``identity``), a state
``S_t`` ``[F, d_v]`` and a gate ``G_t``:

    S_t = G_t * S_{t-1} + phi(k_t) v_t^T,   o_t = S_t^T phi(q_t)

``G_t`` is a scalar per head (retnet, mamba2, forget) or a vector over the F key features
(gla), broadcast over ``d_v``. ``norm=sum`` divides by ``phi(q_t) . z_t`` with
``z_t = G_t * z_{t-1} + phi(k_t)`` (through ``safe_denominator``); the default ``norm=none``
keeps the numerator. This is the recurrent form, one token at a time; attnlab trains with the
chunked form, which gives the same numbers.

Gates, as log gates ``<= 0``:
- retnet: ``ln(1 - 2^(-5-h))`` for head ``h``, fixed;
- mamba2: ``-softplus(w_h . x + dt_bias_h) * exp(A_log_h)`` (``dt``, ``a_log``);
- gla: ``logsigmoid(x W_a + b_a) / 16``, ``alpha`` ``[d_model, H*F]`` head-major;
- forget: ``logsigmoid(w_h . x + b_h)``, ``alpha`` ``[d_model, H]``.

Features: ``[q | k | v]`` projected (keys and values repeated to every query head under
grouped-query attention, see ``heads.py``), with ``conv=K`` passed through the short convolution
(which ends in SiLU; without it there is no SiLU), split into heads, RoPE on q and k, then phi.

Bidirectional (``ctx.causal`` False): ``A_ij = sum_f phi(q_i)_f phi(k_j)_f exp(-|b_if - b_jf|)``
over all ``j`` (``b`` the cumulative log gates), the diagonal counted once: the forward
recurrence plus a backward one over the keys strictly after each query.
"""

from .. import feature_maps as _feature_maps
from .. import heads as _heads
from .. import registry as _registry
from ._gates import GLA_LOGIT_NORMALIZER, heads_first, linear, retnet_log_gamma, ssm_log_gates
from ._short_conv import short_conv

GATES = tuple(_registry.family("decay")["variants"])


def log_gates(ops, p, gate, x, n_heads, gla_normalizer=GLA_LOGIT_NORMALIZER):
    """``[B, T, d_model]`` -> ``[B, H, T, G]`` log gates, ``G = 1`` or (gla) ``F``."""
    b, t = x.shape[0], x.shape[1]
    if gate == "retnet":
        logs = ops.reshape(ops.asarray([retnet_log_gamma(h) for h in range(n_heads)]), (1, n_heads, 1, 1))
        return logs * ops.ones((b, n_heads, t, 1))
    if gate == "mamba2":
        return ssm_log_gates(ops, p, x, n_heads)
    if gate == "gla":
        logits = linear(ops, p, "alpha", x)  # [B, T, H*F]
        f = logits.shape[-1] // n_heads
        return heads_first(ops, ops.logsigmoid(logits) / gla_normalizer, n_heads, f)
    if gate == "forget":
        return heads_first(ops, ops.logsigmoid(linear(ops, p, "alpha", x)), n_heads, 1)
    raise ValueError(f"decay needs a gate: decay:<{'|'.join(GATES)}>, got {gate!r}")


def features(ops, p, spec, x, ctx):
    """``(phi(q), phi(k), v)``: ``[B, H, T, F]``, ``[B, H, T, F]``, ``[B, H, T, head_dim]``."""
    d_qk = _heads.qk_width(p, ctx.n_heads, ctx.head_dim, ctx.kv_heads)
    qkv = _heads.project_qkv(ops, p, x, ctx, d_qk)
    if spec["conv"] > 0:
        qkv = short_conv(ops, qkv, p["conv.weight"])
    q, k, v = _heads.split_packed(ops, qkv, ctx.n_heads, d_qk, ctx.head_dim)
    if ctx.rope is not None:
        q, k = ctx.rope(ops, q, 0), ctx.rope(ops, k, 0)
    phi = lambda a, is_query: _feature_maps.apply(ops, spec["map"], a, spec.values, p, ctx, is_query)  # noqa: E731
    return phi(q, True), phi(k, False), v


def _outer(ops, k, v):
    """``[B, H, F]`` x ``[B, H, D]`` -> ``[B, H, F, D]``."""
    return ops.expand_dims(k, 3) * ops.expand_dims(v, 2)


def _read(ops, q, s):
    """``S^T q``: ``[B, H, F]``, ``[B, H, F, D]`` -> ``[B, H, D]``."""
    return ops.sum(ops.expand_dims(q, 3) * s, axis=2)


def recurrence(ops, q, k, v, log_g, causal=True):
    """The unnormalised sums ``o_i = sum_j A_ij v_j`` token by token.

    Causal: ``S_i = G_i * S_{i-1} + k_i v_i^T``, ``o_i = S_i^T q_i``. Bidirectional adds
    ``R_i = sum_{j>i} (prod_{i<l<=j} G_l) k_j v_j^T``, run backwards as
    ``R_{i-1} = G_i * (R_i + k_i v_i^T)``, and ``o_i += R_i^T q_i``.

    ``q, k`` ``[B, H, T, F]``, ``v`` ``[B, H, T, D]``, ``log_g`` ``[B, H, T, G]`` -> ``[B, H, T, D]``.
    """
    b, h, t, f = q.shape
    d = v.shape[3]
    gates = ops.expand_dims(ops.exp(log_g), 4)  # [B, H, T, G, 1]
    s = ops.zeros((b, h, f, d))
    outs = []
    for i in range(t):
        s = gates[:, :, i] * s + _outer(ops, k[:, :, i], v[:, :, i])
        outs.append(_read(ops, q[:, :, i], s))
    if not causal:
        r = ops.zeros((b, h, f, d))
        after = [None] * t
        for i in range(t - 1, -1, -1):
            after[i] = _read(ops, q[:, :, i], r)
            r = gates[:, :, i] * (r + _outer(ops, k[:, :, i], v[:, :, i]))
        outs = [o + a for o, a in zip(outs, after)]
    return ops.stack(outs, axis=2)


def decay_attention(ops, q, k, v, log_g, normalize, causal=True, eps=_feature_maps.DENOMINATOR_EPS):
    """The recurrence, with ``norm=sum`` carried as a column of ones appended to ``v`` (``eps``
    the sign-safe denominator's floor)."""
    if not normalize:
        return recurrence(ops, q, k, v, log_g, causal)
    b, h, t, d = v.shape
    y = recurrence(ops, q, k, ops.concat([v, ops.ones((b, h, t, 1))], axis=3), log_g, causal)
    return y[..., :d] / _feature_maps.safe_denominator(ops, y[..., d:], eps)


def mix(ops, p, spec, x, ctx):
    """``[B, T, d_model]`` -> ``[B, T, d_model]``."""
    normalize = spec.one_of("norm") == "sum"
    lg = log_gates(ops, p, spec.variant, x, ctx.n_heads, spec.convention("gla_logit_normalizer"))
    q, k, v = features(ops, p, spec, x, ctx)
    y = decay_attention(ops, q, k, v, lg, normalize, ctx.causal, spec.convention("denominator_eps"))
    return _heads.merge(ops, p, y)
