"""The host line every PyTorch-side benchmark prints first, so a speed figure never travels
without the machine it came from: the CPU model, its hardware threads, and its SIMD flags."""
import os

FLAGS = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni", "amx_tile"]


def cpu():
    """`<model>, <n> hardware threads, SIMD: <flags>` from /proc/cpuinfo (`?` where unreadable)."""
    name, flags = "?", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and name == "?":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} hardware threads, SIMD: {' '.join(f for f in FLAGS if f in flags)}"
