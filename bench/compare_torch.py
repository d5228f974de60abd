#!/usr/bin/env python3
"""Side by side on one machine: `attnlab bench` training steps against the PyTorch eager
reference (shared/bench/torch_reference.py), softmax and linear (elu+1) attention, at each
thread count; prints ms/step of both and the ratio attnlab / PyTorch (below 1 = attnlab faster).

    python3 bench/compare_torch.py [--threads 1,2] [--steps 30] [--rounds 3] [--torch-ref PATH] [--attnlab BIN]

Both run nanoGPT's CPU recipe (4 layers, 4 heads, width 128, context 64, batch 12, vocab 65).
Thread counts are pinned for both: torch.set_num_threads for PyTorch, RAYON_NUM_THREADS for
Burn's CPU backend. The two alternate, round after round, and each ratio is the median of the
per-round ratios: on a shared virtual machine the speed drifts by 10-30% over minutes, and
alternating keeps both sides under the same conditions.
"""
import argparse, json, os, re, subprocess, sys, tempfile

p = argparse.ArgumentParser()
p.add_argument("--threads", default="1,2")
p.add_argument("--steps", type=int, default=30)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--rounds", type=int, default=3, help="alternating attnlab/PyTorch rounds (median reported)")
p.add_argument("--torch-ref", default=os.path.join(os.path.dirname(__file__), "../../shared/bench/torch_reference.py"))
p.add_argument("--attnlab", default=None, help="attnlab binary (default: $CARGO_TARGET_DIR or target/release)")
p.add_argument("--data", default="datasets/tinyshakespeare.txt")
a = p.parse_args()

binary = a.attnlab or os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "attnlab")
if not os.path.exists(binary):
    sys.exit(f"error: no attnlab binary at {binary}: run `cargo build --release` or pass --attnlab")
if not os.path.exists(a.torch_ref):
    sys.exit(f"error: no PyTorch reference at {a.torch_ref}: pass --torch-ref PATH")

VARIANTS = [("softmax", "softmax"), ("linear:elu1", "linear")]

def attnlab(threads):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        subprocess.run([binary, "bench", "--only", "train", "--variants", ",".join(v for v, _ in VARIANTS),
                        "--steps", str(a.steps), "--warmup", str(a.warmup), "--json", f.name],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        return {r["variant"]: r["ms_median"] for r in json.load(open(f.name))["train_step"]}

def torch(threads, attention):
    out = subprocess.run([sys.executable, a.torch_ref, "--data", a.data, "--threads", str(threads),
                          "--attention", attention, "--iters", str(a.steps), "--warmup", str(a.warmup)],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"ms_per_iter=([0-9.]+)", out).group(1))

import statistics
print(f"{'threads':>7} {'attention':<12} {'attnlab ms':>11} {'torch ms':>9} {'ratio':>6}   (median of {a.rounds} alternating rounds)")
for threads in [int(t) for t in a.threads.split(",")]:
    rounds = {v: [] for v, _ in VARIANTS}
    for r in range(a.rounds):
        ours = attnlab(threads)
        for variant, torch_name in VARIANTS:
            rounds[variant].append((ours[variant], torch(threads, torch_name)))
    for variant, _ in VARIANTS:
        pairs = rounds[variant]
        med = lambda xs: statistics.median(xs)
        ratio = med([o / t for o, t in pairs])
        print(f"{threads:>7} {variant:<12} {med([o for o, _ in pairs]):>11.2f} {med([t for _, t in pairs]):>9.2f} {ratio:>6.2f}", flush=True)
