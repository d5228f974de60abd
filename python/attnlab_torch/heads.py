"""Head mechanics every attnlab mixer shares (mirrors crates/model/src/heads.rs).

attnlab stores every ``Linear`` weight as ``[d_in, d_out]`` (Burn's layout, the transpose of
``torch.nn.Linear.weight``), so an affine map here is ``x @ W + b``. The packed projection's
columns are ``[q | k | v]``, each block head-major (column ``head * d + i``).
"""


def affine(ops, x, weight, bias=None):
    """``x @ weight + bias`` for a weight stored ``[d_in, d_out]``."""
    y = ops.matmul(x, weight)
    return y if bias is None else y + bias


def project_qkv(ops, p, x):
    """The packed projection ``[q | k | v]``: ``[B, T, d_model] -> [B, T, H*(2*d_qk + d_v)]``.

    ``p`` holds the mixer's parameters with the ``blocks.<i>.mixer.<Family>.`` prefix removed.
    """
    return affine(ops, x, p["heads.qkv.weight"], p.get("heads.qkv.bias"))


def qk_width(p, n_heads, head_dim):
    """Per-head query/key width of a layer, read off its packed projection: ``heads.qkv.weight``
    has ``H*(2*d_qk + d_v)`` columns with ``d_v = head_dim`` in every family (heads.rs). Format 3
    exports also state it (``qk_width`` in ``attnlab_mixers``), which the model checks against this."""
    columns = p["heads.qkv.weight"].shape[-1]
    per_head, spread = divmod(columns, n_heads)
    d_qk, odd = divmod(per_head - head_dim, 2)
    if spread or odd or d_qk < 1:
        raise ValueError(
            f"heads.qkv.weight has {columns} columns: not {n_heads} heads of [q | k | v] with "
            f"{head_dim}-wide values and equal query and key widths"
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
    """``[B, H, T, d_v]`` -> ``[B, T, d_model]`` through the output projection."""
    b, h, t, dv = y.shape
    flat = ops.reshape(ops.swapaxes(y, 1, 2), (b, t, h * dv))
    return affine(ops, flat, p["heads.out.weight"], p.get("heads.out.bias"))
