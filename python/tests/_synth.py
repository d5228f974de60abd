"""Synthetic attnlab parameters with the export's names, and the metadata attnlab writes beside
them, for tests."""

import json

import numpy as np

from attnlab_torch import registry
from attnlab_torch import spec as S


def qk_width(spec, head_dim):
    """Per-head query/key width attnlab gives ``spec`` (``FeatureMapKind::qk_width``): Based
    (taylor) projects to its own ``feature_dim``. The package reads it off the weights or the
    export's description; a test that makes the weights needs it first."""
    feature_map = spec.variant if spec.family == "linear" else spec.get("map")
    return spec["feature_dim"] if feature_map == "taylor" else head_dim


def mixer_params(spec, d_model, n_heads, rng, bias=True, scale=0.3, n_kv_heads=0, head_dim=0, qk_head_norm=False):
    """``p`` for one mixer (prefix removed), float64. ``n_kv_heads``, ``head_dim`` (0: the
    defaults) and ``qk_head_norm`` as the ``[model]`` keys of those names shape the projection."""
    s = S.parse(spec) if isinstance(spec, str) else spec
    h, dh = n_heads, head_dim or d_model // n_heads
    kv = n_kv_heads or h
    if s.family == "mla":
        return mla_params(s, d_model, h, kv, dh, rng, bias, scale, qk_head_norm)
    dqk = qk_width(s, dh)
    width = h * dqk + kv * (dqk + dh)
    p = {
        "heads.qkv.weight": rng.normal(0, scale, (d_model, width)),
        "heads.out.weight": rng.normal(0, scale, (h * dh, d_model)),
    }
    if bias:
        p["heads.qkv.bias"] = rng.normal(0, 0.1, (width,))
        p["heads.out.bias"] = rng.normal(0, 0.1, (d_model,))
    if qk_head_norm:
        p["heads.q_norm.gamma"] = 1 + rng.normal(0, 0.3, (dqk,))
        p["heads.k_norm.gamma"] = 1 + rng.normal(0, 0.3, (dqk,))
    if s.family == "softmax":
        if s.variant in ("learned", "qk_norm", "ssmax"):
            p["scale"] = np.abs(rng.normal(0, 1, (h,))) + 0.2
        if s["forget"]:
            p["forget.weight"] = rng.normal(0, 0.5, (d_model, h))
            p["forget.bias"] = rng.normal(1.0, 0.5, (h,))
        if s["gate"] == "output":
            p["gate.weight"] = rng.normal(0, 0.5, (d_model, h * dh))
            p["gate.bias"] = rng.normal(0, 0.1, (h * dh,))
        if s["sink"] == "learned":
            p["sink"] = rng.normal(0, 1, (h,))
    if s.family == "diff":
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            p[name] = rng.normal(0, 0.5, (dqk // 2,))
        p["norm.gamma"] = 1 + rng.normal(0, 0.3, (dh,))
    if s.family == "nsa":
        p["gate.weight"] = rng.normal(0, 0.5, (d_model, 3 * h))
    if s.family == "linear" and s.variant == "performer":
        p["feature_map.random_features"] = rng.normal(0, 1, (s["features"], dqk))
    return p


def mla_params(s, d_model, h, kv, dh, rng, bias, scale, qk_head_norm):
    """MLA's own projections (no packed ``heads.qkv``): biases on the maps that read ``x``."""
    # An absent optional option reads as None, a given one as a float (spec.py's typing).
    d_c = int(s["latent"] or 2 * dh)
    d_r, n_q = s["rope_dim"], int(s["q_latent"] or 0)
    shapes = {"kv_down": (d_model, d_c, bias), "kv_up": (d_c, 2 * kv * dh, False),
              "q": (n_q or d_model, h * dh, bias and not n_q), "out": (h * dh, d_model, bias)}
    if n_q:
        shapes["q_down"] = (d_model, n_q, bias)
    if d_r:
        shapes["rope.q"] = (n_q or d_model, h * d_r, bias and not n_q)
        shapes["rope.k"] = (d_model, d_r, bias)
    p = {}
    for name, (d_in, d_out, has_bias) in shapes.items():
        p[f"{name}.weight"] = rng.normal(0, scale, (d_in, d_out))
        if has_bias:
            p[f"{name}.bias"] = rng.normal(0, 0.1, (d_out,))
    if qk_head_norm:
        p["q_norm.gamma"] = 1 + rng.normal(0, 0.3, (dh,))
        p["k_norm.gamma"] = 1 + rng.normal(0, 0.3, (dh,))
    return p


def model_tensors(mixers, d_model=8, n_heads=2, vocab=11, max_seq_len=12, mlp_ratio=2, norm="layer",
                  positions="learned", tie=False, vectors_dim=None, output_dim=None, bias=True, seed=0,
                  **model_keys):
    """``(config, tensors)`` of a whole tiny model with ``mixers`` (one spec per layer).

    ``model_keys``: more ``[model]`` keys (``mlp``, ``mlp_hidden``, ``n_kv_heads``, ``head_dim``,
    ``qk_head_norm``, ``rope_theta``, ``rope_scaling``, ``norm_eps``...), written to the config
    and, where they shape parameters, followed by the tensors."""
    rng = np.random.default_rng(seed)
    specs = [S.parse(m) for m in mixers]
    t = {}
    if vectors_dim:
        t["input.Vectors.weight"] = rng.normal(0, 0.5, (vectors_dim, d_model))
        t["input.Vectors.bias"] = rng.normal(0, 0.1, (d_model,))
    else:
        t["input.Tokens.weight"] = rng.normal(0, 1, (vocab, d_model))
    if positions == "learned":
        t["positions.learned.weight"] = rng.normal(0, 0.5, (max_seq_len, d_model))

    def add_norm(prefix):
        if norm == "layer":
            t[prefix + ".Layer.gamma"] = 1 + rng.normal(0, 0.1, (d_model,))
            t[prefix + ".Layer.beta"] = rng.normal(0, 0.1, (d_model,))
        else:
            t[prefix + ".Rms.gamma"] = 1 + rng.normal(0, 0.1, (d_model,))

    for i, s in enumerate(specs):
        add_norm(f"blocks.{i}.norm_mixer")
        heads = {k: model_keys.get(k, 0) for k in ("n_kv_heads", "head_dim", "qk_head_norm")}
        for k, v in mixer_params(s, d_model, n_heads, rng, bias, **heads).items():
            t[f"blocks.{i}.mixer.{s.module}.{k}"] = v
        hidden = model_keys.get("mlp_hidden") or mlp_ratio * d_model
        if hidden:
            add_norm(f"blocks.{i}.norm_mlp")
            names = ["up", "down"] + (["gate"] if model_keys.get("mlp") == "swiglu" else [])
            for name in names:
                shape = (hidden, d_model) if name == "down" else (d_model, hidden)
                t[f"blocks.{i}.mlp.{name}.weight"] = rng.normal(0, 0.3, shape)
                if bias:
                    t[f"blocks.{i}.mlp.{name}.bias"] = rng.normal(0, 0.1, shape[1:])
    add_norm("norm")
    if not tie:
        t["head.weight"] = rng.normal(0, 0.5, (d_model, output_dim or vocab))
    config = {
        "seed": 1,
        "model": {
            "d_model": d_model, "n_heads": n_heads, "n_layers": len(specs), "mixer": list(mixers),
            "positions": positions, "norm": norm, "mlp_ratio": mlp_ratio, "dropout": 0.0,
            "tie_embeddings": tie, "max_seq_len": max_seq_len, "causal": True, "bias": bias,
            **model_keys,
        },
    }
    return config, {k: v.astype(np.float32) for k, v in t.items()}


def describe(config, tensors):
    """``attnlab_mixers`` as a format-3 export writes it for ``model_tensors``' model: each
    layer's spec resolved (here by ``spec.parse``, in attnlab by the Rust registry), its
    query/key width, its family's conventions and its parameters' shapes."""
    m = config["model"]
    out = []
    for i, s in enumerate(S.parse_stack(m["mixer"], m["n_layers"])):
        prefix = f"blocks.{i}.mixer."
        out.append({
            "spec": str(s), "family": s.family, "module": s.module, "variant": s.variant,
            "options": s.values, "qk_width": qk_width(s, m.get("head_dim") or m["d_model"] // m["n_heads"]),
            "conventions": registry.family(s.family)["conventions"],
            "parameters": {n[len(prefix):]: list(t.shape) for n, t in tensors.items() if n.startswith(prefix)},
        })
    return json.dumps(out)


def conv_by_sums(qkv, w):
    """The short causal depthwise convolution written as explicit sums (no SiLU): output ``s``
    adds the input ``back`` steps before it, weighed by row ``K - 1 - back`` of ``w`` ``[K, C]``.
    The oracle the decay and delta tests both check ``conv=K`` against."""
    k, t = w.shape[0], qkv.shape[1]
    out = np.zeros_like(qkv)
    for s in range(t):
        for back in range(k):
            if s - back >= 0:
                out[:, s] += w[k - 1 - back] * qkv[:, s - back]
    return out
