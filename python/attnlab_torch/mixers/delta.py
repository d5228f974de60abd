"""``delta[:gated|kda][:householders=N]``: DeltaNet, Gated DeltaNet, Kimi Delta Attention and
DeltaProduct (mirrors crates/model/src/families/delta/).

Per head, a state ``S_t`` ``[d_k, d_v]`` corrected towards each new value at rate ``beta_t``:

    S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = S_t^T q_t

run as ``S <- a_t S``, ``v' = beta_t (v_t - S^T k_t)``, ``S <- S + k_t v'^T``. ``a_t = 1`` for
``delta``; ``delta:gated`` uses Mamba-2's gate ``log a_t = -softplus(w_h . x + dt_bias_h) *
exp(A_log_h)``. ``beta_t = sigmoid(w_beta,h . x_t + b_h)``, doubled with ``neg_eigval=true``.

Kimi Delta Attention (``delta:kda``, Kimi Team 2025, arXiv 2510.26692) decays each key channel
on its own: ``S_t = (I - beta_t k_t k_t^T) Diag(alpha_t) S_{t-1} + beta_t k_t v_t^T`` with
``log alpha_t = -exp(A_log_h) * softplus(f(x_t) + dt_bias)`` per channel; ``f`` is the full-rank
``dt`` Linear ``[d_model, H*d_k]`` (head-major), ``dt.bias`` is ``dt_bias``, ``a_log`` ``[H]``
(the registry's ``kda_gate``). The recurrence is the one below with ``log_g`` ``[B, H, T, d_k]``:
``S <- a_t S`` scales each row of ``S`` by its channel's gate. One Householder step per token.

Features: ``[q | k | v]`` projected (keys and values repeated to every query head under
grouped-query attention, see ``heads.py``), then the ``conv=K`` short convolution (which ends in SiLU)
or plain SiLU; split into heads; q and k L2-normalised per head (``x / sqrt(|x|^2 + 1e-6)``),
rotated by the model's RoPE, then q scaled by ``d_k^(-1/2)``. Queries and keys are head_dim wide.

DeltaProduct (``householders=N``, Siems et al. 2025, arXiv 2502.10297; 1 is the rule above):
each token writes ``N`` times, ``S <- a_t S`` once, then for ``j = 1..N``
``S <- (I - beta_{t,j} k_{t,j} k_{t,j}^T) S + beta_{t,j} k_{t,j} v_{t,j}^T``, then
``o_t = S^T q_t``. Layout (the registry's ``householder_layout``): ``q | k_1..k_N | v_1..v_N``,
sub-step-major, ``k_1, v_1`` from ``heads.qkv`` and ``k_2..k_N | v_2..v_N`` from
``householder_kv`` (each block head-major over the key/value heads, repeated and key-normed as
``heads.qkv``'s); ``beta.weight`` has ``N*H`` columns, sub-step ``j``'s head ``h`` at ``j*H + h``;
the convolution runs over all ``(1 + 2N)*H*d`` channels. Here keys, values and ``beta`` are kept
``[B, N*H, T, d]`` (sub-step ``j``'s heads at ``j*H..(j+1)*H``).

Bidirectional (``ctx.causal`` False): the recurrence forwards plus the recurrence over the
reversed sequence, reversed back (each token's own write counted in both; a token's sub-steps
keep their order).

This is the recurrent form; attnlab trains with the chunked (WY) form, the same numbers.
"""

import math

from .. import heads as _heads
from .. import registry as _registry
from ._gates import heads_first, linear, ssm_log_gates
from ._short_conv import short_conv

# fla's l2norm epsilon, inside the square root: the registry's `l2_eps`; a layer uses the one
# its description gives.
L2_EPS = _registry.convention("delta", "l2_eps")


def gate_of(spec):
    """The spec's decay: ``None`` (DeltaNet), ``"gated"`` (one gate per head) or ``"kda"`` (one
    per head and key channel)."""
    if spec.variant not in (None, "gated", "kda"):
        raise ValueError(f"unknown delta variant '{spec.variant}': use 'delta', 'delta:gated' or 'delta:kda'")
    return spec.variant


def betas(ops, p, x, n_heads, beta_range, householders=1):
    """``[B, T, d_model]`` -> ``[B, N*H, T, 1]`` writing strengths in (0, ``beta_range``): the
    spec's ``beta_range`` convention, 1 or 2 with ``neg_eigval``."""
    beta = ops.sigmoid(linear(ops, p, "beta", x))
    return heads_first(ops, beta * beta_range, householders * n_heads, 1)


def l2_normalize(ops, x, eps=L2_EPS):
    """``x / sqrt(sum(x^2) + 1e-6)`` over the last axis."""
    return x / ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True) + eps)


def project(ops, p, x, ctx, householders):
    """The packed ``[q | k_1..k_N | v_1..v_N]`` of every query head: ``[B, T, (1 + 2N)*H*d]``."""
    d, h, kv = ctx.head_dim, ctx.n_heads, ctx.kv_heads
    qkv = _heads.project_qkv(ops, p, x, ctx, d)
    if householders == 1:
        return qkv
    more = householders - 1
    extra = linear(ops, p, "householder_kv", x)  # [B, T, (N-1)*K*2d]: [k_2..k_N | v_2..v_N]
    keys, values = extra[:, :, :more * kv * d], extra[:, :, more * kv * d:]
    if "heads.k_norm.gamma" in p:
        keys = _heads.head_rms_norm(ops, keys, p["heads.k_norm.gamma"], more * kv, ctx.norm_eps)
    block = kv * d

    def to_query_heads(a):
        parts = [_heads.repeat_heads(ops, a[:, :, j * block:(j + 1) * block], h, kv) for j in range(more)]
        return ops.concat(parts, axis=2)

    part = lambda i: qkv[:, :, i * h * d:(i + 1) * h * d]  # noqa: E731
    return ops.concat([part(0), part(1), to_query_heads(keys), part(2), to_query_heads(values)], axis=2)


def features(ops, p, spec, x, ctx):
    """``(q / sqrt(d_k), k, v)``: q ``[B, H, T, head_dim]``, k and v ``[B, N*H, T, head_dim]``."""
    d, n = ctx.head_dim, spec["householders"]
    qkv = project(ops, p, x, ctx, n)
    if spec["conv"] > 0:
        qkv = short_conv(ops, qkv, p["conv.weight"])
    else:
        qkv = ops.silu(qkv)
    # [q | k_1..k_N | v_1..v_N] read as H query heads, then N*H key heads and N*H value heads
    # (for N = 1 exactly heads.split_packed).
    b, t, h = qkv.shape[0], qkv.shape[1], ctx.n_heads

    def heads(start, count):
        return ops.swapaxes(ops.reshape(qkv[:, :, start:start + count * d], (b, t, count, d)), 1, 2)

    q, k, v = heads(0, h), heads(h * d, n * h), heads((1 + n) * h * d, n * h)
    eps = spec.convention("l2_eps")
    q, k = l2_normalize(ops, q, eps), l2_normalize(ops, k, eps)
    if ctx.rope is not None:
        q, k = ctx.rope(ops, q, 0), ctx.rope(ops, k, 0)
    return q / math.sqrt(d), k, v


def recurrence(ops, q, k, v, beta, log_g):
    """The gated delta rule (DeltaProduct with ``N`` sub-steps) token by token from the empty
    state: per token ``S <- a_t S``, then each sub-step ``j`` writes, then ``o_t = S^T q_t``.

    ``q`` ``[B, H, T, d_k]``, ``k`` ``[B, N*H, T, d_k]``, ``v`` ``[B, N*H, T, d_v]``, ``beta``
    ``[B, N*H, T, 1]``, ``log_g`` ``[B, H, T, G]`` (``G = 1``, or ``d_k`` per key channel:
    ``a_t S`` then scales row ``i`` of ``S`` by ``a_{t,i}``) -> ``[B, H, T, d_v]``.
    """
    b, h, t, dk = q.shape
    dv = v.shape[3]
    n = k.shape[1] // h
    decay = ops.expand_dims(ops.exp(log_g), 4)  # [B, H, T, G, 1]: scales the rows of S
    s = ops.zeros((b, h, dk, dv))
    outs = []
    for i in range(t):
        s = decay[:, :, i] * s
        for j in range(n):
            heads = slice(j * h, (j + 1) * h)
            key = k[:, heads, i]  # [B, H, dk]
            predicted = ops.sum(ops.expand_dims(key, 3) * s, axis=2)  # S^T k: [B, H, dv]
            new_value = (v[:, heads, i] - predicted) * beta[:, heads, i]
            s = s + ops.expand_dims(key, 3) * ops.expand_dims(new_value, 2)
        outs.append(ops.sum(ops.expand_dims(q[:, :, i], 3) * s, axis=2))
    return ops.stack(outs, axis=2)


def delta_rule(ops, q, k, v, beta, log_g, causal=True):
    """The recurrence, and with ``causal=False`` plus the reversed sequence's, reversed back."""
    y = recurrence(ops, q, k, v, beta, log_g)
    if causal:
        return y
    flip = lambda a: ops.flip(a, 2)  # noqa: E731
    return y + flip(recurrence(ops, flip(q), flip(k), flip(v), flip(beta), flip(log_g)))


def mix(ops, p, spec, x, ctx):
    """``[B, T, d_model]`` -> ``[B, T, d_model]``."""
    gate = gate_of(spec)
    b, t = x.shape[0], x.shape[1]
    beta = betas(ops, p, x, ctx.n_heads, spec.convention("beta_range"), spec["householders"])
    # gated: [B, H, T, 1]; kda: [B, H, T, d_k] (dt has d_k columns per head).
    log_g = ssm_log_gates(ops, p, x, ctx.n_heads) if gate else ops.zeros((b, ctx.n_heads, t, 1))
    q, k, v = features(ops, p, spec, x, ctx)
    y = delta_rule(ops, q, k, v, beta, log_g, ctx.causal)
    return _heads.merge(ops, p, y)
