#!/usr/bin/env python3
"""PyTorch's matmul on the shapes `attnlab bench --only matmul` timed, side by side with attnlab's
GFLOP/s: how close the gemm under the model's linear maps comes to the host's BLAS (MKL or
OpenBLAS, whichever torch was built with).

    RAYON_NUM_THREADS=2 attnlab bench --only matmul --config PRESET --json matmul.json
    python3 bench/torch_matmul.py matmul.json --threads 2

Median ms of --steps products after --warmup, `x @ w` with x `[m, k]` and w `[k, n]` drawn from a
normal, no gradient; then with both gradients (`((x @ w) * dy).sum().backward()`, 6·m·k·n FLOPs), beside
attnlab's "with grads" column; the CPU model and flags first.
"""
import argparse
import json
import statistics
import time

import torch

from host import cpu

p = argparse.ArgumentParser()
p.add_argument("attnlab_json", help="the --json file of `attnlab bench --only matmul`")
p.add_argument("--threads", type=int, default=0)
p.add_argument("--steps", type=int, default=30)
p.add_argument("--warmup", type=int, default=5)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
points = json.load(open(a.attnlab_json))["matmul"]
print(f"cpu: {cpu()}; torch {torch.__version__}, threads {torch.get_num_threads()}")
print(f"{'product':<20} {'m':>6} {'k':>6} {'n':>6} {'attnlab GFLOP/s':>16} {'torch GFLOP/s':>14} {'attnlab/torch':>14}"
      f" {'with grads: attnlab':>20} {'torch':>7} {'ratio':>6}")


def median_ms(run):
    times = []
    for rep in range(a.warmup + a.steps):
        start = time.perf_counter()
        run()
        if rep >= a.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


for pt in points:
    m, k, n = pt["m"], pt["k"], pt["n"]
    x, w = torch.randn(m, k), torch.randn(k, n)
    with torch.no_grad():
        ms = median_ms(lambda: x @ w)
    # With both gradients as attnlab times them: ((x·w) ⊙ dy).sum() backward, so dx = dy·wᵀ, dw = xᵀ·dy.
    xg, wg, dy = x.clone().requires_grad_(), w.clone().requires_grad_(), torch.randn(m, n)
    train_ms = median_ms(lambda: ((xg @ wg) * dy).sum().backward())
    ours, theirs = pt["gflops"], 2 * m * k * n / (ms * 1e6)
    line = f"{pt['name']:<20} {m:>6} {k:>6} {n:>6} {ours:>16.1f} {theirs:>14.1f} {ours / theirs:>14.2f}"
    if "train_gflops" in pt:
        ours_t, theirs_t = pt["train_gflops"], 6 * m * k * n / (train_ms * 1e6)
        line += f" {ours_t:>20.1f} {theirs_t:>7.1f} {ours_t / theirs_t:>6.2f}"
    print(line)
