"""The ``conv=K`` short convolution of the linear-type families (mirrors crates/model/src/short_conv.rs).

A causal depthwise convolution over time on the projected ``[q | k | v]``, then SiLU:
``y[t, c] = silu(sum_{i<K} w[i, c] * x[t - K + 1 + i, c])``, with ``x`` zero before the first
token. The weight is stored ``[K, channels]``: row ``i`` weighs the input ``K - 1 - i`` steps
back. There is no bias.
"""


def short_conv(ops, x, weight):
    """``[B, T, C]`` convolved with ``weight`` ``[K, C]`` and passed through SiLU."""
    return ops.silu(causal_conv(ops, x, weight))


def causal_conv(ops, x, weight):
    """The convolution alone (no activation): what a Canon layer adds to its input."""
    kernel = weight.shape[0]
    t = x.shape[1]
    full = ops.pad_front(x, 1, kernel - 1)  # [B, K - 1 + T, C]
    y = full[:, 0:t, :] * weight[0]
    for i in range(1, kernel):
        y = y + full[:, i:i + t, :] * weight[i]
    return y
