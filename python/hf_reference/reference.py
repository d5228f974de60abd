"""Float64 numpy forward passes of the Hugging Face causal LMs the fixtures cover.

Written from the published definitions (transformers' modeling_llama, modeling_qwen2,
modeling_qwen3, modeling_mistral, modeling_gpt2): `forward(config, weights, ids)` takes a
parsed config.json, a {HF tensor name: array} dict and a list of token ids, and returns the
logits [T, vocab] of the whole sequence. `greedy` continues a prompt by argmax, recomputing
the full forward each step (no KV cache, so nothing but the forward pass can be wrong).
"""

import math

import numpy as np


def rms_norm(x, weight, eps):
    # LlamaRMSNorm: x / sqrt(mean(x^2) + eps) over the last axis, then a per-channel gain.
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def layer_norm(x, weight, bias, eps):
    # nn.LayerNorm: centre, divide by the (biased) standard deviation, then gain and bias.
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_new(x):
    # GPT-2's "gelu_new": the tanh approximation of GELU.
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def rope_parameters(config):
    """(rope_type, theta, the whole parameter dict) from either config style.

    transformers 5 writes `rope_parameters` {"rope_type", "rope_theta", ...}; older configs have
    a top-level `rope_theta` and optionally `rope_scaling` {"rope_type" or "type", ...}."""
    params = dict(config.get("rope_scaling") or {})
    params.update(config.get("rope_parameters") or {})
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    return rope_type, theta, params


def inv_freq(config, head_dim):
    """RoPE inverse frequencies, one per pair of channels: theta^(-2i/head_dim)."""
    rope_type, theta, p = rope_parameters(config)
    base = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if rope_type == "default":
        return base
    if rope_type != "llama3":
        raise NotImplementedError(f"rope_type {rope_type!r}")
    # Llama 3.1 (transformers' _compute_llama3_parameters): long wavelengths (beyond the
    # original context / low_freq_factor) are slowed down by `factor`, short ones (below the
    # original context / high_freq_factor) are kept, and the band between is interpolated.
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old_max = p["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_max / low, old_max / high
    wavelen = 2 * math.pi / base
    scaled = np.where(wavelen > low_freq_wavelen, base / factor, base)
    smooth = (old_max / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(medium, smoothed, scaled)


def rotate_half(x):
    # HF pairs channel i with channel i + head_dim/2 (not adjacent channels as in the original
    # RoPE paper): the checkpoints' q/k projections are permuted to match this layout.
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, cos, sin):
    # x: [T, heads, head_dim]; cos/sin: [T, head_dim], the same for every head.
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def causal_mask(t, sliding_window=None):
    """Allowed[i, j]: query i sees key j iff j <= i (and i - window < j with a sliding window,
    transformers' sliding_window_overlay: `window` keys including itself)."""
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    allowed = j <= i
    if sliding_window is not None:
        allowed &= j > i - sliding_window
    return allowed


def attention(q, k, v, allowed):
    """Scaled dot-product attention. q: [T, H, hd]; k, v: [T, KV, hd] with KV dividing H."""
    t, heads, hd = q.shape
    # Grouped-query attention (repeat_kv): query head h uses key/value head h // (H / KV).
    rep = heads // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    scores = np.einsum("ihd,jhd->hij", q, k) / math.sqrt(hd)
    scores = np.where(allowed[None], scores, -np.inf)
    out = np.einsum("hij,jhd->ihd", softmax(scores), v)
    return out.reshape(t, heads * hd)


def linear(x, weights, name, bias=False):
    # torch.nn.Linear stores weight as [out, in]: y = x W^T (+ b).
    y = x @ weights[name + ".weight"].T
    return y + weights[name + ".bias"] if bias else y


def sliding_window(config):
    # Mistral applies `sliding_window` when set; Qwen2/Qwen3 only with use_sliding_window
    # (their configs carry a window size even when it is off).
    if config["model_type"] in ("qwen2", "qwen3") and not config.get("use_sliding_window", False):
        return None
    return config.get("sliding_window")


def llama_forward(config, w, ids):
    """Llama, Mistral, Qwen2 and Qwen3: pre-norm decoder, RoPE, GQA, SwiGLU MLP."""
    d, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    hd = config.get("head_dim") or d // heads
    eps = config["rms_norm_eps"]
    qkv_bias = config["model_type"] == "qwen2" or config.get("attention_bias", False)
    qk_norm = config["model_type"] == "qwen3"
    t = len(ids)

    # RoPE tables: angle[p, i] = p * inv_freq[i], duplicated over both halves of head_dim.
    angles = np.arange(t, dtype=np.float64)[:, None] * inv_freq(config, hd)[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    cos, sin = np.cos(angles), np.sin(angles)
    allowed = causal_mask(t, sliding_window(config))

    x = w["model.embed_tokens.weight"][ids]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(h, w, p + "self_attn.q_proj", qkv_bias).reshape(t, heads, hd)
        k = linear(h, w, p + "self_attn.k_proj", qkv_bias).reshape(t, kv_heads, hd)
        v = linear(h, w, p + "self_attn.v_proj", qkv_bias).reshape(t, kv_heads, hd)
        if qk_norm:
            # Qwen3: RMSNorm over each head's head_dim channels, before RoPE.
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        x = x + linear(attention(q, k, v, allowed), w, p + "self_attn.o_proj")
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        # SwiGLU: down(silu(gate(h)) * up(h)).
        gated = silu(linear(h, w, p + "mlp.gate_proj")) * linear(h, w, p + "mlp.up_proj")
        x = x + linear(gated, w, p + "mlp.down_proj")

    x = rms_norm(x, w["model.norm.weight"], eps)
    # A tied head reuses the embedding matrix (no lm_head.weight in the checkpoint).
    head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def gpt2_forward(config, w, ids):
    """GPT-2: learned positions, pre-LayerNorm blocks, Conv1D ([in, out]) projections."""
    d, heads = config["n_embd"], config["n_head"]
    hd, eps, t = d // heads, config["layer_norm_epsilon"], len(ids)
    allowed = causal_mask(t)

    def conv1d(x, name):
        # transformers' Conv1D stores weight as [in, out]: y = x W + b (no transpose).
        return x @ w[name + ".weight"] + w[name + ".bias"]

    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][:t]
    for layer in range(config["n_layer"]):
        p = f"transformer.h.{layer}."
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        # c_attn's output columns are [q | k | v], each head-major (head h: columns h*hd..).
        q, k, v = np.split(conv1d(h, p + "attn.c_attn"), 3, axis=-1)
        q, k, v = (a.reshape(t, heads, hd) for a in (q, k, v))
        x = x + conv1d(attention(q, k, v, allowed), p + "attn.c_proj")
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        x = x + conv1d(gelu_new(conv1d(h, p + "mlp.c_fc")), p + "mlp.c_proj")

    x = layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    return x @ w["transformer.wte.weight"].T  # tied head


def forward(config, weights, ids):
    """Logits [len(ids), vocab] (float64) for one sequence."""
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    ids = np.asarray(ids, dtype=np.int64)
    if config["model_type"] == "gpt2":
        return gpt2_forward(config, weights, ids)
    if config["model_type"] in ("llama", "mistral", "qwen2", "qwen3"):
        return llama_forward(config, weights, ids)
    raise NotImplementedError(config["model_type"])


def greedy(config, weights, prompt, steps):
    """(tokens, min_margin): `steps` argmax tokens after `prompt`, each from a full forward, and
    the smallest gap between the best and second-best logit over those steps."""
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    ids, margin = list(prompt), math.inf
    for _ in range(steps):
        last = forward(config, weights, ids)[-1]
        top2 = np.sort(last)[-2:]
        margin = min(margin, float(top2[1] - top2[0]))
        ids.append(int(np.argmax(last)))
    return ids[len(prompt) :], margin
