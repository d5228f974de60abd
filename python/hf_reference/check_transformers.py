"""By-hand check of the fixtures against transformers itself (needs torch and transformers;
not run in CI).

    python3 python/hf_reference/check_transformers.py [--fixtures DIR]

Loads each case with AutoModelForCausalLM.from_pretrained in float32 and prints, per case: the
max |logits - reference logits| over the 24-token input (sdpa and eager attention), whether
greedy generation of 50 tokens equals the reference's, whether transformers loaded every
tensor (no missing or unexpected keys), and whether save_pretrained of the same config writes
the same tensor names. For mistral it also shows that only sliding window 8 (query i sees
keys i-7..i) matches, and for llama3_bf16 that the llama3 rope scaling matters. Without
--fixtures it writes the fixtures to a temporary directory first.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402 (after the path insert)
import reference  # noqa: E402


def read_json(*path):
    with open(os.path.join(*path)) as f:
        return json.load(f)


def tensor_names(directory):
    names = set()
    for f in os.listdir(directory):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(directory, f), framework="pt") as st:
                names |= set(st.keys())
    return names


def saved_names(case_dir):
    """The tensor names transformers' own save_pretrained writes for this config."""
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(case_dir))
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return tensor_names(tmp)


def check_tokenizer(case_dir):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return "tokenizers not installed"
    tok = Tokenizer.from_file(os.path.join(case_dir, "tokenizer.json"))
    ids = tok.encode("hello").ids
    text = "héllo wörld\n\t!"
    round_trip = tok.decode(tok.encode(text).ids) == text
    all_bytes = tok.encode(bytes(range(1, 128)).decode()).ids == list(range(1, 128))
    return f"hello -> {ids}, round trip {round_trip}, ids = bytes {all_bytes}"


def check_case(case_dir, attn):
    ref = read_json(case_dir, "reference.json")
    # transformers 5 renamed from_pretrained's torch_dtype to dtype.
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model, info = AutoModelForCausalLM.from_pretrained(
        case_dir, attn_implementation=attn, output_loading_info=True, **{dtype_kw: torch.float32}
    )
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ref["input_ids"]])).logits[0].double().numpy()
        out = model.generate(
            torch.tensor([ref["prompt"]]),
            max_new_tokens=len(ref["greedy"]),
            do_sample=False,
            pad_token_id=0,
        )
    greedy = out[0, len(ref["prompt"]) :].tolist()
    weights = {k: v.double().numpy() for k, v in model.state_dict().items()}
    return logits, greedy, info, weights, ref


def reference_notes(name, config, weights, ref, logits):
    """reference.forward on the weights transformers loaded (float32, so the bf16/f16 files
    decoded) must give reference.json's logits; for mistral only window 8 matches
    transformers, and llama3_bf16 differs without its rope scaling."""

    def diff(cfg, against):
        return f"{np.abs(reference.forward(cfg, weights, ref['input_ids']) - against).max():.1e}"

    notes = [f"{name}: reference.forward on the loaded weights vs reference.json: {diff(config, ref['logits'])}"]
    if config["model_type"] == "mistral":
        for window in (7, 8, 9, None):
            d = diff({**config, "sliding_window": window}, logits)
            notes.append(f"mistral: reference with sliding_window {window} vs transformers: {d}")
    if name == "llama3_bf16":
        plain = {**config, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}
        notes.append(f"llama3_bf16: reference without the llama3 scaling vs transformers: {diff(plain, logits)}")
    return notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", help="directory written by make_fixtures.py (default: a fresh temporary one)")
    args = ap.parse_args()
    fixtures = args.fixtures
    if fixtures is None:
        fixtures = tempfile.mkdtemp(prefix="hf_fixtures_")
        for name in make_fixtures.CASES:
            make_fixtures.make_case(name, os.path.join(fixtures, name))
        make_fixtures.write_json(os.path.join(fixtures, "cases.json"), list(make_fixtures.CASES))
    transformers.utils.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, fixtures {fixtures}\n")
    columns = ["case", "max abs diff (sdpa)", "max abs diff (eager)", "greedy equal", "min margin"]
    columns += ["all tensors loaded", "names = save_pretrained"]
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    notes = []
    for name in read_json(fixtures, "cases.json"):
        case_dir = os.path.join(fixtures, name)
        diffs, equal = [], []
        for attn in ("sdpa", "eager"):
            logits, greedy, info, weights, ref = check_case(case_dir, attn)
            diffs.append(np.abs(logits - np.array(ref["logits"])).max())
            equal.append(greedy == ref["greedy"])
        loaded = not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
        ours, theirs = tensor_names(case_dir), saved_names(case_dir)
        same = ours == theirs
        row = [name, f"{diffs[0]:.2e}", f"{diffs[1]:.2e}", all(equal), f"{ref['min_margin']:.3g}", loaded, same]
        print("| " + " | ".join(map(str, row)) + " |")
        if not loaded:
            notes.append(f"{name}: loading info {info}")
        if not same:
            notes.append(f"{name}: only ours {sorted(ours - theirs)}, only save_pretrained {sorted(theirs - ours)}")

        notes += reference_notes(name, read_json(case_dir, "config.json"), weights, ref, logits)
    print()
    print("\n".join(notes))
    print("\ntokenizer:", check_tokenizer(os.path.join(fixtures, "llama")))


if __name__ == "__main__":
    main()
