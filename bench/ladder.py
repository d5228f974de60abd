#!/usr/bin/env python3
"""Training-step time of several commits, measured side by side: builds `attnlab` at each commit
(in a temporary git worktree, sharing the cargo target directory), then runs every binary's
`attnlab bench --only train` in turn, round after round, and prints the median ms per step of each
commit and thread count. Alternating the binaries keeps them under the same conditions on a
machine whose speed drifts (docs/benchmarks.md, "How it got there").

    python3 bench/ladder.py COMMIT [COMMIT ...] [--rounds 3] [--threads 1,2] [--steps 40]
        [--variants softmax,linear:elu1] [--keep DIR]

`--keep DIR` keeps each commit's binary as DIR/attnlab-<commit> and reuses one already there, so
a later run on a quieter machine times the same binaries without building them again.

Run it from the repository root (the bench reads configs/ and datasets/ from there).
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile

p = argparse.ArgumentParser()
p.add_argument("commits", nargs="+")
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--threads", default="1,2")
p.add_argument("--steps", type=int, default=40)
p.add_argument("--variants", default="softmax,linear:elu1")
p.add_argument("--keep", help="folder that keeps (and reuses) the built binaries")
a = p.parse_args()

target = os.environ.get("CARGO_TARGET_DIR") or os.path.abspath("target")
keep = os.path.abspath(a.keep) if a.keep else tempfile.mkdtemp(prefix="attnlab-ladder-")
os.makedirs(keep, exist_ok=True)
binaries = []
for commit in a.commits:
    binary = os.path.join(keep, f"attnlab-{commit}")
    if a.keep and os.path.exists(binary):
        binaries.append((commit, binary))
        print(f"reusing {binary}", flush=True)
        continue
    tree = os.path.join(keep, "src")
    subprocess.run(["git", "worktree", "add", "-f", "--detach", tree, commit], check=True, capture_output=True)
    try:
        env = dict(os.environ, CARGO_TARGET_DIR=target)
        built = subprocess.run(["cargo", "build", "--release"], cwd=tree, env=env, capture_output=True, text=True)
        if built.returncode != 0:
            sys.exit(f"error: building {commit} failed:\n{built.stderr[-2000:]}")
        shutil.copy(os.path.join(target, "release", "attnlab"), binary)
        binaries.append((commit, binary))
        print(f"built {commit}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", tree], capture_output=True)

threads = [int(t) for t in a.threads.split(",")]
variants = a.variants.split(",")
times = {}
for _ in range(a.rounds):
    for t in threads:
        for commit, binary in binaries:
            out = subprocess.run([binary, "bench", "--only", "train", "--variants", a.variants, "--steps", str(a.steps)],
                                 env=dict(os.environ, RAYON_NUM_THREADS=str(t)), capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                m = re.match(r"(\S+)\s+([0-9.]+)\s", line)
                if m and m.group(1) in variants:
                    times.setdefault((commit, t, m.group(1)), []).append(float(m.group(2)))

print(f"\nms per step, median of {a.rounds} alternating rounds")
print(f"{'commit':<14}" + "".join(f"{v + ' ' + str(t) + ' thr':>22}" for t in threads for v in variants))
for commit, _ in binaries:
    cells = [statistics.median(times[(commit, t, v)]) for t in threads for v in variants]
    print(f"{commit:<14}" + "".join(f"{c:>22.1f}" for c in cells))
if not a.keep:
    shutil.rmtree(keep, ignore_errors=True)
