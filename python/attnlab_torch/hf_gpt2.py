"""GPT-2's forward written from Hugging Face's parameter names, in numpy: the CI check that an
``attnlab export --format hf`` directory holds the model it claims, without installing torch
or transformers.

It reads ``config.json`` and ``model.safetensors`` as ``transformers.GPT2LMHeadModel`` would
(Conv1D weights ``[d_in, d_out]``, fused ``c_attn`` split into q, k, v then into heads, scaled
dot-product attention with a causal mask, pre-norm blocks, ``lm_head`` tied to ``wte`` unless
``tie_word_embeddings`` is false) and shares no code with the rest of this package, so a
mapping mistake in the exporter cannot cancel out.

    python3 -m attnlab_torch.hf_gpt2 HF_DIR DUMP [--tol 1e-4]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file

_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x, kind):
    if kind == "gelu":
        return 0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0)))
    if kind in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    raise ValueError(f"activation_function {kind!r} is not one GPT-2 checkpoints use")


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def forward(cfg, w, ids):
    """Logits ``[B, T, vocab]`` for token ids ``[B, T]``."""
    ids = np.asarray(ids, dtype=np.int64)
    b, t = ids.shape
    d, h = cfg["n_embd"], cfg["n_head"]
    dh = d // h
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    act = cfg.get("activation_function", "gelu_new")
    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][np.arange(t)][None]
    causal = np.tril(np.ones((t, t), dtype=bool))
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        a = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (qkv[..., j * d:(j + 1) * d].reshape(b, t, h, dh).transpose(0, 2, 1, 3) for j in range(3))
        scores = q @ k.transpose(0, 1, 3, 2)
        if cfg.get("scale_attn_weights", True):
            scores = scores / math.sqrt(dh)
        scores = np.where(causal, scores, -np.inf)
        scores = scores - scores.max(-1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(-1, keepdims=True)
        o = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + o @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        m = _gelu(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"], act)
        x = x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = _layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    head = w["transformer.wte.weight"] if cfg.get("tie_word_embeddings", True) else w["lm_head.weight"]
    return x @ head.T


def check_shapes(cfg, w):
    """Every tensor GPT-2 expects, with its shape; returns a list of problems (empty: fine)."""
    d, v, n, inner = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg.get("n_inner") or 4 * cfg["n_embd"]
    want = {"transformer.wte.weight": (v, d), "transformer.wpe.weight": (n, d), "transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)}
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        want.update({
            p + "ln_1.weight": (d,), p + "ln_1.bias": (d,), p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
            p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
            p + "mlp.c_fc.weight": (d, inner), p + "mlp.c_fc.bias": (inner,),
            p + "mlp.c_proj.weight": (inner, d), p + "mlp.c_proj.bias": (d,),
        })
    if not cfg.get("tie_word_embeddings", True):
        want["lm_head.weight"] = (v, d)
    problems = [f"{k}: missing" for k in want if k not in w]
    problems += [f"{k}: shape {w[k].shape}, GPT-2 wants {s}" for k, s in want.items() if k in w and tuple(w[k].shape) != s]
    problems += [f"{k}: not a GPT-2 tensor" for k in w if k not in want]
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hf_dir")
    ap.add_argument("dump")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args(argv)
    with open(os.path.join(a.hf_dir, "config.json")) as f:
        cfg = json.load(f)
    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(a.hf_dir, "model.safetensors")).items()}
    problems = check_shapes(cfg, w)
    if problems:
        print("hf_gpt2: " + "; ".join(problems))
        return 1
    dump = load_file(a.dump)
    ref = dump["logits"].astype(np.float64)
    got = forward(cfg, w, dump["tokens"])
    err = np.abs(got - ref)
    ok = bool(np.all(err <= a.tol * np.maximum(1.0, np.abs(ref))))
    print(f"hf_gpt2 {cfg['n_layer']} layers, width {cfg['n_embd']}: max |Δ| = {err.max():.3g} over {err.size} logits (tol {a.tol:g}) {'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
