#!/usr/bin/env python3
"""Side by side on one machine: `attnlab bench` training steps against every PyTorch anchor of the
same attention, at each thread count; prints ms/step of attnlab and of each anchor, and the ratio
attnlab / fastest anchor (below 1 = attnlab faster; the issue's target is 0.8).

    python3 bench/compare_torch.py [--threads 1,2] [--steps 30] [--rounds 3] [--rows softmax,...]
        [--torch-ref PATH] [--torch-gdn PATH] [--no-compile] [--attnlab BIN]

Rows and their anchors (nanoGPT's CPU recipe: 4 layers, 4 heads, width 128, context 64, batch 12,
Tiny Shakespeare characters):
- softmax: shared/bench/torch_reference.py (manual attention), bench/torch_sdpa.py (PyTorch's fused
  `scaled_dot_product_attention`), eager and `torch.compile`d;
- linear:elu1: torch_reference.py's prefix-sum form, shared/bench/torch_gdn.py's chunked elu+1,
  eager and compiled;
- delta:gated, delta:gated:conv=4: torch_gdn.py's fla-style chunked (WY) Gated DeltaNet, with the
  short convolution for the second, eager and compiled.
Thread counts are pinned for both: torch.set_num_threads for PyTorch, RAYON_NUM_THREADS for Burn's
CPU backend. attnlab and the anchors alternate, round after round, and each figure is the median
over rounds (the ratio: the median of the per-round ratios), because a shared virtual machine's
speed drifts by 10-30% over minutes. The CPU model and flags are printed first.
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile

from host import cpu

here = os.path.dirname(os.path.abspath(__file__))
shared = os.path.join(here, "../../shared/bench")
p = argparse.ArgumentParser()
p.add_argument("--threads", default="1,2")
p.add_argument("--steps", type=int, default=30)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--rounds", type=int, default=3, help="alternating attnlab/PyTorch rounds (median reported)")
p.add_argument("--rows", default="softmax,linear:elu1,delta:gated,delta:gated:conv=4")
p.add_argument("--torch-ref", default=os.path.join(shared, "torch_reference.py"))
p.add_argument("--torch-gdn", default=os.path.join(shared, "torch_gdn.py"))
p.add_argument("--no-compile", action="store_true", help="skip the torch.compile anchors")
p.add_argument("--attnlab", default=None, help="attnlab binary (default: $CARGO_TARGET_DIR or target/release)")
p.add_argument("--data", default="datasets/tinyshakespeare.txt")
a = p.parse_args()

binary = a.attnlab or os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "attnlab")
if not os.path.exists(binary):
    sys.exit(f"error: no attnlab binary at {binary}: run `cargo build --release` or pass --attnlab")
for path, flag in [(a.torch_ref, "--torch-ref"), (a.torch_gdn, "--torch-gdn")]:
    if not os.path.exists(path):
        sys.exit(f"error: no PyTorch anchor at {path}: pass {flag} PATH")

common = ["--data", a.data, "--iters", str(a.steps), "--warmup", str(a.warmup)]
sdpa = os.path.join(here, "torch_sdpa.py")
# attnlab spec -> [(anchor name, command without --threads, compiled?)]
ANCHORS = {
    "softmax": [("manual, eager", [a.torch_ref, "--attention", "softmax"], False),
                ("SDPA, eager", [sdpa], False),
                ("SDPA, compiled", [sdpa, "--compile"], True)],
    "linear:elu1": [("prefix sums, eager", [a.torch_ref, "--attention", "linear"], False),
                    ("chunked, eager", [a.torch_gdn, "--mixer", "elu1"], False),
                    ("chunked, compiled", [a.torch_gdn, "--mixer", "elu1", "--compile"], True)],
    "delta:gated": [("chunked WY, eager", [a.torch_gdn, "--mixer", "gdn"], False),
                    ("chunked WY, compiled", [a.torch_gdn, "--mixer", "gdn", "--compile"], True)],
    "delta:gated:conv=4": [("chunked WY + conv, eager", [a.torch_gdn, "--mixer", "gdn", "--conv", "4"], False),
                           ("chunked WY + conv, compiled", [a.torch_gdn, "--mixer", "gdn", "--conv", "4", "--compile"], True)],
}
rows = a.rows.split(",")
for r in rows:
    if r not in ANCHORS:
        sys.exit(f"error: no anchors for row {r!r}: pick from {','.join(ANCHORS)}")


def attnlab(threads):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        subprocess.run([binary, "bench", "--only", "train", "--variants", ",".join(rows),
                        "--steps", str(a.steps), "--warmup", str(a.warmup), "--json", f.name],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        return {r["variant"]: r["ms_median"] for r in json.load(open(f.name))["train_step"]}


def torch(threads, command):
    out = subprocess.run([sys.executable] + command + common + ["--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    found = re.search(r"ms_per_iter=([0-9.]+)|ms/step median=([0-9.]+)", out)
    if not found:
        sys.exit(f"error: no timing in the output of {' '.join(command)}:\n{out}")
    return float(found.group(1) or found.group(2))


print(f"cpu: {cpu()}")
print(f"{a.rounds} alternating rounds of {a.steps} steps after {a.warmup} warm-up; medians over rounds", flush=True)
for threads in [int(t) for t in a.threads.split(",")]:
    ours = {r: [] for r in rows}
    theirs = {(r, name): [] for r in rows for name, _, _ in ANCHORS[r]}
    for _ in range(a.rounds):
        for r, ms in attnlab(threads).items():
            ours[r].append(ms)
        for r in rows:
            for name, command, compiled in ANCHORS[r]:
                if not (compiled and a.no_compile):
                    theirs[(r, name)].append(torch(threads, command))
    for r in rows:
        line = f"threads {threads}  {r:<20} attnlab {statistics.median(ours[r]):7.2f} ms"
        per_round_best = [min(theirs[(r, n)][i] for n, _, c in ANCHORS[r] if theirs[(r, n)])
                          for i in range(a.rounds)]
        for name, _, _ in ANCHORS[r]:
            if theirs[(r, name)]:
                line += f" | {name} {statistics.median(theirs[(r, name)]):7.2f}"
        ratio = statistics.median([o / t for o, t in zip(ours[r], per_round_best)])
        print(f"{line} | attnlab / fastest anchor {ratio:.2f}", flush=True)
