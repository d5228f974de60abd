"""Write tiny random Hugging Face checkpoints with reference outputs, one directory per case.

    python3 python/hf_reference/make_fixtures.py --out DIR [--case NAME ...]

Each DIR/<case>/ holds config.json, the weights (HF tensor names, dtypes and file layout),
tokenizer.json (256 byte tokens, no merges) and reference.json (float64 logits of a fixed
24-token input and a 50-token greedy continuation, from reference.py). DIR/cases.json lists
the cases written. Needs only numpy and safetensors; the output is the same bytes every run.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

TOKENIZER_VOCAB = 256
INPUT_LEN, PROMPT_LEN, GREEDY_STEPS = 24, 8, 50
MIN_MARGIN = 1e-3
MIN_DISTINCT = 8  # greedy tokens; random tiny models easily fall into repeating one token
BOS, EOS = 1, 2

LLAMA_COMMON = {
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 128,
    "bos_token_id": BOS,
    "eos_token_id": EOS,
}

# case -> (config.json, how the weights are stored)
CASES = {
    "llama": (
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            **LLAMA_COMMON,
            "vocab_size": 256,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
        },
        "float32",
    ),
    # transformers-5 style: rope_parameters instead of a top-level rope_theta, "dtype".
    # head_dim 16 gives 8 frequencies theta^(-i/8), wavelengths 2*pi*10000^(i/8) = 6.3, 19.9,
    # 62.8, ...; with original_max_position_embeddings 32 the bands are wavelen < 32/4 = 8
    # (high, kept: i = 0), 8..32 (medium, smoothed: i = 1) and > 32 (low, divided by 8: i >= 2).
    "llama3_bf16": (
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            **LLAMA_COMMON,
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_key_value_heads": 1,
            "vocab_size": 256,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            "dtype": "bfloat16",
        },
        "bfloat16",
    ),
    # Embedding padded to 260 rows while the tokenizer has 256 tokens, as real checkpoints do.
    # sliding_window is set but off (use_sliding_window false), as in Qwen2.5's configs.
    "qwen2_sharded": (
        {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            **LLAMA_COMMON,
            "vocab_size": 260,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "tie_word_embeddings": True,
            "use_sliding_window": False,
            "sliding_window": 4096,
            "max_window_layers": 2,
            "torch_dtype": "float32",
        },
        "float32-sharded",
    ),
    "qwen3": (
        {
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            **LLAMA_COMMON,
            "head_dim": 16,
            "vocab_size": 256,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "attention_bias": False,
            "tie_word_embeddings": True,
            "use_sliding_window": False,
            "sliding_window": None,
            "max_window_layers": 2,
            "layer_types": ["full_attention", "full_attention"],
            "dtype": "float16",
        },
        "float16",
    ),
    "mistral": (
        {
            "architectures": ["MistralForCausalLM"],
            "model_type": "mistral",
            **LLAMA_COMMON,
            "vocab_size": 256,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "sliding_window": 8,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
        },
        "float32",
    ),
    # Fields as in openai-community/gpt2's config.json: no tie_word_embeddings key (tied by
    # default), n_inner null (4 * n_embd).
    "gpt2": (
        {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": 256,
            "n_embd": 32,
            "n_head": 4,
            "n_layer": 2,
            "n_positions": 128,
            "n_ctx": 128,
            "n_inner": None,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "resid_pdrop": 0.1,
            "embd_pdrop": 0.1,
            "attn_pdrop": 0.1,
            "initializer_range": 0.02,
            "bos_token_id": BOS,
            "eos_token_id": EOS,
            "torch_dtype": "float32",
        },
        "float32",
    ),
}


def weight_shapes(config):
    """[(HF tensor name, shape, kind)] in a fixed order; kind picks the initial distribution."""
    if config["model_type"] == "gpt2":
        d, v = config["n_embd"], config["vocab_size"]
        inner = config["n_inner"] or 4 * d
        out = [("transformer.wte.weight", (v, d), "w")]
        out.append(("transformer.wpe.weight", (config["n_positions"], d), "w"))
        for i in range(config["n_layer"]):
            p = f"transformer.h.{i}."
            out += [(p + "ln_1.weight", (d,), "norm"), (p + "ln_1.bias", (d,), "b")]
            out += [(p + "attn.c_attn.weight", (d, 3 * d), "w"), (p + "attn.c_attn.bias", (3 * d,), "b")]
            out += [(p + "attn.c_proj.weight", (d, d), "w"), (p + "attn.c_proj.bias", (d,), "b")]
            out += [(p + "ln_2.weight", (d,), "norm"), (p + "ln_2.bias", (d,), "b")]
            out += [(p + "mlp.c_fc.weight", (d, inner), "w"), (p + "mlp.c_fc.bias", (inner,), "b")]
            out += [(p + "mlp.c_proj.weight", (inner, d), "w"), (p + "mlp.c_proj.bias", (d,), "b")]
        return out + [("transformer.ln_f.weight", (d,), "norm"), ("transformer.ln_f.bias", (d,), "b")]

    d, v, inter = config["hidden_size"], config["vocab_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or d // heads
    out = [("model.embed_tokens.weight", (v, d), "w")]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.append((p + "input_layernorm.weight", (d,), "norm"))
        for proj, rows in (("q", heads * hd), ("k", kv * hd), ("v", kv * hd)):
            out.append((p + f"self_attn.{proj}_proj.weight", (rows, d), "w"))
            if config["model_type"] == "qwen2":  # Qwen2: q/k/v carry biases, o_proj none
                out.append((p + f"self_attn.{proj}_proj.bias", (rows,), "b"))
        out.append((p + "self_attn.o_proj.weight", (d, heads * hd), "w"))
        if config["model_type"] == "qwen3":  # per-head RMSNorm gains over head_dim
            out += [(p + "self_attn.q_norm.weight", (hd,), "norm"), (p + "self_attn.k_norm.weight", (hd,), "norm")]
        out.append((p + "post_attention_layernorm.weight", (d,), "norm"))
        out += [(p + "mlp.gate_proj.weight", (inter, d), "w"), (p + "mlp.up_proj.weight", (inter, d), "w")]
        out.append((p + "mlp.down_proj.weight", (d, inter), "w"))
    out.append(("model.norm.weight", (d,), "norm"))
    if not config["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, d), "w"))
    return out


def to_bf16_bits(x):
    """float32 -> bfloat16 bit patterns (uint16), round to nearest, ties to even."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def random_weights(config, storage, seed):
    """{name: float32 array holding exactly the values the stored dtype can represent}."""
    rng = np.random.default_rng(seed)
    std = {"w": 0.15, "b": 0.1, "norm": 0.1}
    out = {}
    for name, shape, kind in weight_shapes(config):
        x = rng.normal(0.0, std[kind], size=shape) + (1.0 if kind == "norm" else 0.0)
        x = x.astype(np.float32)
        if storage == "bfloat16":
            x = from_bf16_bits(to_bf16_bits(x))
        elif storage == "float16":
            x = x.astype(np.float16).astype(np.float32)
        out[name] = x
    return out


def save_bf16(tensors, path):
    """A safetensors file of BF16 tensors, written by hand (numpy has no bfloat16): an 8-byte
    little-endian header length, the JSON header padded with spaces to a multiple of 8, then
    the tensors' bytes back to back in header order."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        data = to_bf16_bits(tensors[name]).astype("<u2").tobytes()
        shape = list(tensors[name].shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def save_weights(weights, storage, out):
    meta = {"format": "pt"}
    if storage == "bfloat16":
        save_bf16(weights, os.path.join(out, "model.safetensors"))
    elif storage == "float16":
        half = {k: v.astype(np.float16) for k, v in weights.items()}
        save_file(half, os.path.join(out, "model.safetensors"), meta)
    elif storage == "float32":
        save_file(weights, os.path.join(out, "model.safetensors"), meta)
    elif storage == "float32-sharded":
        # Shard 1: the embedding and layer 0; shard 2: everything else (as transformers splits
        # by size, a layer's tensors stay together).
        names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        first = ("model.embed_tokens.", "model.layers.0.")
        weight_map = {k: names[0] if k.startswith(first) else names[1] for k in sorted(weights)}
        for shard in names:
            save_file({k: weights[k] for k in weights if weight_map[k] == shard}, os.path.join(out, shard), meta)
        index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())}, "weight_map": weight_map}
        write_json(os.path.join(out, "model.safetensors.index.json"), index)
    else:
        raise ValueError(storage)


def bytes_to_unicode():
    """GPT-2's byte -> printable character map: printable Latin-1 bytes map to themselves, the
    other 68 (controls, space, ...) to chr(256 + n) in byte order, so no token is whitespace."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def tokenizer_json():
    """Byte-level BPE with no merges: token id b is byte b."""
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", **byte_level, "add_prefix_space": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {ch: b for b, ch in bytes_to_unicode().items()},
            "merges": [],
        },
    }


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def reference_json(arch, seed, ids, logits, greedy, margin):
    """One key per line and one logits row per line, so the file stays readable and diffable."""
    row = lambda r: "[" + ",".join(repr(float(f"{x:.7g}")) for x in r) + "]"  # noqa: E731
    lines = [
        f'  "architecture": {json.dumps(arch)}',
        f'  "seed": {seed}',
        f'  "input_ids": {json.dumps(ids)}',
        '  "logits": [\n    ' + ",\n    ".join(row(r) for r in logits) + "\n  ]",
        f'  "prompt": {json.dumps(ids[:PROMPT_LEN])}',
        f'  "greedy": {json.dumps(greedy)}',
        f'  "min_margin": {float(f"{margin:.7g}")!r}',
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def input_ids():
    # The same 24 ids for every case, drawn once from a fixed seed.
    return [int(i) for i in np.random.default_rng(20261204).integers(0, TOKENIZER_VOCAB, INPUT_LEN)]


def make_case(name, out):
    config, storage = CASES[name]
    ids = input_ids()
    # The first weight seed whose greedy run is unambiguous in float32 (every step's top-two
    # gap >= MIN_MARGIN), is not stuck on a token or two (MIN_DISTINCT), and stays within the
    # tokenizer, never emitting EOS (so a consumer that decodes or stops at EOS still sees all
    # 50 tokens).
    for seed in range(100):
        weights = random_weights(config, storage, seed)
        greedy, margin = reference.greedy(config, weights, ids[:PROMPT_LEN], GREEDY_STEPS)
        varied = len(set(greedy)) >= MIN_DISTINCT
        if margin >= MIN_MARGIN and varied and max(greedy) < TOKENIZER_VOCAB and EOS not in greedy:
            break
    else:
        raise RuntimeError(f"{name}: no seed below 100 meets the greedy conditions")
    logits = reference.forward(config, weights, ids)

    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "config.json"), config)
    save_weights(weights, storage, out)
    write_json(os.path.join(out, "tokenizer.json"), tokenizer_json())
    with open(os.path.join(out, "reference.json"), "w") as f:
        f.write(reference_json(config["architectures"][0], seed, ids, logits, greedy, margin))
    return seed, margin


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory to write DIR/<case>/ and DIR/cases.json into")
    ap.add_argument("--case", action="append", choices=list(CASES), help="only this case (repeatable); default all")
    args = ap.parse_args()
    cases = list(dict.fromkeys(args.case or CASES))
    os.makedirs(args.out, exist_ok=True)
    for name in cases:
        seed, margin = make_case(name, os.path.join(args.out, name))
        print(f"{name}: seed {seed}, min greedy margin {margin:.4g}")
    write_json(os.path.join(args.out, "cases.json"), cases)


if __name__ == "__main__":
    main()
