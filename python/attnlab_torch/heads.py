"""Head mechanics every attnlab mixer shares (mirrors crates/model/src/heads.rs).

attnlab stores every ``Linear`` weight as ``[d_in, d_out]`` (Burn's layout, the transpose of
``torch.nn.Linear.weight``), so an affine map here is ``x @ W + b``. The packed projection's
columns are ``[q | k | v]``, each block head-major (column ``head * d + i``): ``H`` query heads,
and ``K`` key and value heads (``K = H`` unless the model has grouped-query attention,
``model.n_kv_heads``). :func:`project_qkv` turns that into the plain layout every family reads:

1. ``x @ heads.qkv.weight + heads.qkv.bias``: ``[B, T, H·d_qk + K·(d_qk + d_v)]``;
2. with ``heads.q_norm.gamma`` and ``heads.k_norm.gamma`` (``model.qk_head_norm``, Qwen3): every
   query head and every key head ``x ← x / √(mean(x²) + ε) · γ`` over its own ``d_qk`` values
   (one ``γ`` ``[d_qk]`` for all query heads, one for all key heads; values untouched);
3. keys and values repeated so query head ``h`` reads key/value head ``h // (H/K)`` (Hugging
   Face's ``repeat_kv``): ``[B, T, H·(2·d_qk + d_v)]``.

RoPE, feature maps and short convolutions all come after, on the plain layout.
"""


def affine(ops, x, weight, bias=None):
    """``x @ weight + bias`` for a weight stored ``[d_in, d_out]``."""
    y = ops.matmul(x, weight)
    return y if bias is None else y + bias


def head_rms_norm(ops, x, gamma, n_heads, eps):
    """``[B, T, n·d]`` -> the same, each head's ``d`` values ``x / √(mean(x²) + ε) · γ``."""
    b, t, width = x.shape
    heads = ops.reshape(x, (b, t, n_heads, width // n_heads))
    rms = ops.sqrt(ops.mean(heads * heads, axis=-1, keepdims=True) + eps)
    return ops.reshape(heads / rms * gamma, (b, t, width))


def repeat_heads(ops, x, n_heads, n_kv_heads):
    """``[B, T, K·d]`` -> ``[B, T, H·d]``: key/value head ``j`` copied to query heads
    ``j·G .. (j + 1)·G``, ``G = H/K``."""
    if n_heads == n_kv_heads:
        return x
    b, t, width = x.shape
    d = width // n_kv_heads
    one_each = ops.reshape(x, (b, t, n_kv_heads, 1, d))
    grouped = ops.concat([one_each] * (n_heads // n_kv_heads), axis=3)  # [B, T, K, G, d]
    return ops.reshape(grouped, (b, t, n_heads * d))


def project_grouped(ops, p, x, n_heads, n_kv_heads, d_qk, eps=1e-5):
    """Steps 1 and 2 of the module docs: ``[B, T, d_model] -> [B, T, H·d_qk + K·(d_qk + d_v)]``."""
    qkv = affine(ops, x, p["heads.qkv.weight"], p.get("heads.qkv.bias"))
    if "heads.q_norm.gamma" not in p:
        return qkv
    q_end, k_end = n_heads * d_qk, (n_heads + n_kv_heads) * d_qk
    q = head_rms_norm(ops, qkv[:, :, :q_end], p["heads.q_norm.gamma"], n_heads, eps)
    k = head_rms_norm(ops, qkv[:, :, q_end:k_end], p["heads.k_norm.gamma"], n_kv_heads, eps)
    return ops.concat([q, k, qkv[:, :, k_end:]], axis=2)


def project_qkv(ops, p, x, ctx, d_qk=None):
    """The packed projection in the plain layout (all three steps of the module docs):
    ``[B, T, d_model] -> [B, T, H·(2·d_qk + d_v)]``, ``d_qk`` defaulting to ``ctx.head_dim``.

    ``p`` holds the mixer's parameters with the ``blocks.<i>.mixer.<Family>.`` prefix removed,
    ``ctx`` the :class:`~attnlab_torch.context.MixContext` (heads, key/value heads, ε).
    """
    h, kv = ctx.n_heads, ctx.kv_heads
    d_qk = ctx.head_dim if d_qk is None else d_qk
    qkv = project_grouped(ops, p, x, h, kv, d_qk, ctx.norm_eps)
    if h == kv:
        return qkv
    q_end, k_end = h * d_qk, (h + kv) * d_qk
    k = repeat_heads(ops, qkv[:, :, q_end:k_end], h, kv)
    v = repeat_heads(ops, qkv[:, :, k_end:], h, kv)
    return ops.concat([qkv[:, :, :q_end], k, v], axis=2)


def qk_width(p, n_heads, head_dim, n_kv_heads=None):
    """Per-head query/key width of a layer, read off its packed projection: ``heads.qkv.weight``
    has ``H·d_qk + K·(d_qk + d_v)`` columns with ``d_v = head_dim`` in every family (heads.rs) and
    ``K = n_kv_heads`` (``n_heads`` when ``None``). Format 3 exports also state it (``qk_width`` in
    ``attnlab_mixers``), which the model checks against this."""
    kv = n_heads if n_kv_heads is None else n_kv_heads
    columns = p["heads.qkv.weight"].shape[-1]
    d_qk, spread = divmod(columns - kv * head_dim, n_heads + kv)
    if spread or d_qk < 1:
        raise ValueError(
            f"heads.qkv.weight has {columns} columns: not {n_heads} query heads and {kv} key/value "
            f"heads of [q | k | v] with {head_dim}-wide values and equal query and key widths"
        )
    return d_qk


def split_packed(ops, qkv, n_heads, d_qk, d_v):
    """``[B, T, H*(2*d_qk + d_v)]`` -> q, k ``[B, H, T, d_qk]``, v ``[B, H, T, d_v]``."""
    b, t = qkv.shape[0], qkv.shape[1]
    h = n_heads

    def heads(start, d):
        part = qkv[:, :, start:start + h * d]
        return ops.swapaxes(ops.reshape(part, (b, t, h, d)), 1, 2)

    return heads(0, d_qk), heads(h * d_qk, d_qk), heads(2 * h * d_qk, d_v)


def merge(ops, p, y):
    """``[B, H, T, d_v]`` -> ``[B, T, d_model]`` through the output projection
    (``heads.out.weight`` ``[H·d_v, d_model]``)."""
    b, h, t, dv = y.shape
    flat = ops.reshape(ops.swapaxes(y, 1, 2), (b, t, h * dv))
    return affine(ops, flat, p["heads.out.weight"], p.get("heads.out.bias"))
