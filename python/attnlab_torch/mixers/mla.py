"""``mla[:latent=N][:rope_dim=N][:q_latent=N][:latent_norm=true]`` (mirrors crates/model/src/families/mla/).

Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434, §2.1). MLA has no packed
``heads.qkv``: its parameters are its own (weights stored ``[d_in, d_out]``):

- ``kv_down`` ``[d_model, d_c]``: the latent ``c = x W_DKV + b``;
- ``kv_up`` ``[d_c, 2·K·d_h]`` (no bias), columns ``[W_UK | W_UV]`` each head-major:
  ``k^C = c W_UK``, ``v = c W_UV``, ``K`` the key/value heads (``model.n_kv_heads``; query head ``h`` reads head ``h // (H/K)``, convention ``kv_heads``);
- ``q`` ``[d_model or N, H·d_h]``: ``q^C``, from ``x``, or from ``c^Q = x W_DQ + b`` (``q_down``
  ``[d_model, N]``) with ``q_latent=N`` (then ``q`` has no bias);
- with ``rope_dim = d_R > 0``: ``rope.q`` ``[d_model or N, H·d_R]`` and ``rope.k`` ``[d_model, d_R]``,
  the decoupled part, rotated by RoPE of width ``d_R``; ``k^R`` is one key shared by the heads;
- ``latent_norm.gamma`` ``[d_c]`` and, with a query latent, ``q_latent_norm.gamma`` ``[N]`` with
  ``latent_norm=true``: RMSNorm of ``c`` and ``c^Q`` right after the down-projections (ε: the
  registry's ``latent_norm_eps``, DeepSeek-V2's code);
- ``q_norm.gamma``, ``k_norm.gamma`` ``[d_h]`` with ``model.qk_head_norm``: RMSNorm of each head's
  ``q^C``, ``k^C`` (ε ``model.norm_eps``), before RoPE;
- ``out`` ``[H·d_h, d_model]``.

``q = [q^C; q^R]``, ``k = [k^C; k^R]``, ``softmax(q·k / √(d_h + d_R)) v`` over the keys each query
sees; with ``rope_dim = 0`` the model's RoPE (if any) rotates ``q^C`` and ``k^C`` (convention
``rope``). attnlab decodes from the cached latents; this package runs the forward only.
"""

import math

from .. import heads as _heads
from ._common import flat_heads, scores, visible


def qk_width(p, ctx):
    """Per-head width of the compressed query and key (``d_h``), read off the weights, which
    must hold ``H`` query heads and ``K`` key/value heads of ``ctx.head_dim``."""
    h, kv, dh = ctx.n_heads, ctx.kv_heads, ctx.head_dim
    q, kv_up = p["q.weight"].shape[-1], p["kv_up.weight"].shape[-1]
    if q != h * dh or kv_up != 2 * kv * dh:
        raise ValueError(
            f"mla: q.weight has {q} columns and kv_up.weight {kv_up}, expected {h}·{dh} and 2·{kv}·{dh}"
        )
    return dh


def _heads_of(ops, x, n):
    """``[B, T, n·d]`` -> ``[B, n, T, d]``."""
    b, t, w = x.shape
    return ops.swapaxes(ops.reshape(x, (b, t, n, w // n)), 1, 2)


def _norm(ops, x, gamma, eps):
    """RMSNorm over the last axis: ``x / √(mean(x²) + ε) · γ``."""
    return x / ops.sqrt(ops.mean(x * x, axis=-1, keepdims=True) + eps) * gamma


def mix(ops, p, spec, x, ctx):
    h, kv, dh, dr = ctx.n_heads, ctx.kv_heads, ctx.head_dim, spec["rope_dim"]
    qk_width(p, ctx)
    if dr and ctx.rope is None:
        raise ValueError(f"{spec}: rope_dim > 0 needs model.positions = rope")
    latent_eps = spec.convention("latent_norm_eps")
    source = x if "q_down.weight" not in p else _heads.affine(ops, x, p["q_down.weight"], p.get("q_down.bias"))
    if "q_latent_norm.gamma" in p:
        source = _norm(ops, source, p["q_latent_norm.gamma"], latent_eps)
    q = _heads_of(ops, _heads.affine(ops, source, p["q.weight"], p.get("q.bias")), h)
    c = _heads.affine(ops, x, p["kv_down.weight"], p.get("kv_down.bias"))
    if "latent_norm.gamma" in p:
        c = _norm(ops, c, p["latent_norm.gamma"], latent_eps)

    kv_up = ops.matmul(c, p["kv_up.weight"])

    def up(part):
        return _heads_of(ops, _heads.repeat_heads(ops, kv_up[:, :, part * kv * dh:(part + 1) * kv * dh], h, kv), h)

    k, v = up(0), up(1)
    if "q_norm.gamma" in p:
        q = _norm(ops, q, p["q_norm.gamma"], ctx.norm_eps)
        k = _norm(ops, k, p["k_norm.gamma"], ctx.norm_eps)
    if dr:
        rope = ctx.rope.narrowed(dr)
        q_r = rope(ops, _heads_of(ops, _heads.affine(ops, source, p["rope.q.weight"], p.get("rope.q.bias")), h), 0)
        k_r = rope(ops, _heads_of(ops, _heads.affine(ops, x, p["rope.k.weight"], p.get("rope.k.bias")), 1), 0)
        q, k = ops.concat([q, q_r], axis=3), ops.concat([k, ops.concat([k_r] * h, axis=1)], axis=3)
    elif ctx.rope is not None:
        q, k = ctx.rope(ops, q, 0), ctx.rope(ops, k, 0)
    seen = visible(ops, q.shape[2], ctx.causal)
    w = ops.softmax(ops.where(seen, scores(ops, q, k) / math.sqrt(dh + dr), -math.inf), axis=3)
    return _heads.affine(ops, flat_heads(ops, ops.matmul(w, v)), p["out.weight"], p.get("out.bias"))
