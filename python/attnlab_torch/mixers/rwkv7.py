"""``rwkv7[:decay_rank=N][:a_rank=N][:gate_rank=N]``: RWKV-7 "Goose" time mixing (Peng et al.
2025, arXiv 2503.14456; mirrors crates/model/src/families/rwkv7/, which follows
flash-linear-attention's ``RWKV7Attention``).

Per token, ``x_prev`` the previous token's input (zeros before the first):
``x^c = x + (x_prev - x) * mu[c]`` for the rows ``c`` = r, w, k, v, a, g of ``mu`` ``[6, d_model]``;
``r, k, v`` the projections ``r_proj, k_proj, v_proj`` of ``x^r, x^k, x^v``;
``log w = -e^(-1/2) * sigmoid(w_lora.up(tanh(w_lora.down(x^w))))`` (the registry's ``decay_scale``);
``a = sigmoid(a_lora.up(a_lora.down(x^a)))``; ``g = g_lora.up(sigmoid(g_lora.down(x^g)))``.
Per head: ``kappa = normalize(k * k_k)`` (``x / max(|x|, 1e-12)``, ``l2_eps``),
``k~ = k * (1 + (a - 1) * k_a)``, and the state ``S`` ``[d_k, d_v]``

    S_t = diag(w_t) S_{t-1} + (kappa_t * a_t) (-kappa_t^T S_{t-1}) + k~_t v_t^T,   o_t = S_t^T r_t

(the removal reads the state before the decay). Then each head's ``o`` through GroupNorm
(``eps = d_h * group_norm_eps_per_dim``, weight ``g_norm_weight``, bias ``g_norm_bias``), plus the
bonus ``(sum_i r_i k~_i r_k[h, i]) v``, times ``g``, then ``o_proj``. Channels of every
``[H*d_h]`` vector are head-major. fla's cross-layer "v-first" residual is left out.

Bidirectional (``ctx.causal`` False): the whole layer over the sequence plus the whole layer over
the reversed sequence (its token shift reading the next token), reversed back.

This is the recurrent form, attnlab's default; its ``form=chunked`` gives the same numbers.
"""

from .. import heads as _heads


def qk_width(p, ctx):
    """Per-head width of ``r`` and ``k`` (``d_h``), read off ``r_proj``, which must hold ``H``
    heads of ``ctx.head_dim``."""
    width = p["r_proj.weight"].shape[-1]
    if width != ctx.n_heads * ctx.head_dim:
        raise ValueError(f"rwkv7: r_proj.weight has {width} columns, expected {ctx.n_heads}·{ctx.head_dim}")
    return ctx.head_dim


def _linear(ops, p, name, x):
    return _heads.affine(ops, x, p[name + ".weight"], p.get(name + ".bias"))


def _lora(ops, p, name, x, f):
    return _linear(ops, p, name + ".up", f(_linear(ops, p, name + ".down", x)))


def _heads_first(ops, y, n_heads):
    """``[B, T, H*d]`` -> ``[B, H, T, d]``."""
    b, t, c = y.shape
    return ops.swapaxes(ops.reshape(y, (b, t, n_heads, c // n_heads)), 1, 2)


def recurrence(ops, r, log_w, k, v, alpha, beta):
    """fla's DPLR recurrence from the empty state, token by token; all ``[B, H, T, d]``."""
    b, h, t, dk = r.shape
    dv = v.shape[3]
    w = ops.exp(log_w)
    col = lambda a, i: ops.expand_dims(a[:, :, i], 3)  # noqa: E731  [B, H, d, 1]
    row = lambda a, i: ops.expand_dims(a[:, :, i], 2)  # noqa: E731  [B, H, 1, d]
    s = ops.zeros((b, h, dk, dv))
    outs = []
    for i in range(t):
        removed = ops.sum(col(alpha, i) * s, axis=2, keepdims=True)  # alpha^T S: [B, H, 1, dv]
        s = s * col(w, i) + col(beta, i) * removed + col(k, i) * row(v, i)
        outs.append(ops.sum(col(r, i) * s, axis=2))
    return ops.stack(outs, axis=2)


def causal_layer(ops, p, spec, x, n_heads):
    """The layer over ``x`` ``[B, T, d_model]`` from the empty state."""
    b, t, d = x.shape
    shifted = ops.pad_front(x[:, : t - 1], 1, 1)
    delta = shifted - x
    mu = p["mu"]
    mix = lambda c: x + delta * mu[c]  # noqa: E731
    r = _linear(ops, p, "r_proj", mix(0))
    log_w = -spec.convention("decay_scale") * ops.sigmoid(_lora(ops, p, "w_lora", mix(1), ops.tanh))
    k = _linear(ops, p, "k_proj", mix(2))
    v = _linear(ops, p, "v_proj", mix(3))
    a = ops.sigmoid(_lora(ops, p, "a_lora", mix(4), lambda z: z))
    g = _lora(ops, p, "g_lora", mix(5), ops.sigmoid)
    kappa = _heads_first(ops, k * p["k_k"], n_heads)
    norm = ops.sqrt(ops.sum(kappa * kappa, axis=-1, keepdims=True))
    kappa = kappa / ops.maximum(norm, spec.convention("l2_eps"))
    k = k * (1.0 + (a - 1.0) * p["k_a"])
    r, log_w, k, v, a = (_heads_first(ops, z, n_heads) for z in (r, log_w, k, v, a))
    o = recurrence(ops, r, log_w, k, v, -kappa, kappa * a)
    dh = o.shape[3]
    eps = dh * spec.convention("group_norm_eps_per_dim")
    centred = o - ops.mean(o, axis=-1, keepdims=True)
    var = ops.mean(centred * centred, axis=-1, keepdims=True)
    as_heads = lambda z: ops.reshape(z, (1, n_heads, 1, dh))  # noqa: E731
    o = centred / ops.sqrt(var + eps) * as_heads(p["g_norm_weight"]) + as_heads(p["g_norm_bias"])
    bonus = ops.sum(r * k * ops.reshape(p["r_k"], (1, n_heads, 1, dh)), axis=-1, keepdims=True)
    y = ops.reshape(ops.swapaxes(o + bonus * v, 1, 2), (b, t, n_heads * dh)) * g
    return _linear(ops, p, "o_proj", y)


def mix(ops, p, spec, x, ctx):
    """``[B, T, d_model]`` -> ``[B, T, d_model]``."""
    y = causal_layer(ops, p, spec, x, ctx.n_heads)
    if ctx.causal:
        return y
    return y + ops.flip(causal_layer(ops, p, spec, ops.flip(x, 1), ctx.n_heads), 1)

