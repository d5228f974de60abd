"""PyTorch CPU anchor for `attnlab bench --config configs/bench-llama-135m.toml`: the same
~135M-parameter Llama shape (30 layers, width 576, 9 heads, 3 key/value heads, SwiGLU 1536,
vocabulary 49152, tied head; SmolLM-135M's), random weights, batch 4 x sequence 512, as
transformers' `LlamaForCausalLM` (eager attention, and SDPA: the faster anchor).

Times what `attnlab bench` times: the training step (forward, cross-entropy over every position,
backward, global-norm clipping to 1.0, AdamW; batch building excluded) and a forward without
gradients; median ms over --steps after --warmup untimed ones; the peak of the process's
resident memory above what it held after building the model (so gradients, AdamW's moments
and activations count, as in attnlab's).

Needs torch and transformers (not in CI). Run on an idle machine, beside attnlab's bench:
    python3 scripts/bench_llama_torch.py --threads 2
"""
import argparse
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from host import cpu  # noqa: E402  (bench/host.py, shared by the PyTorch-side benchmarks)


def rss_mib():
    # The peak so far (ru_maxrss, KiB on Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--attn", default="eager,sdpa")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"cpu: {cpu()}; torch {torch.__version__}, threads {torch.get_num_threads()}")
    for attn in a.attn.split(","):
        config = LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=a.seq,
            rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
            attn_implementation=attn,
        )
        model = LlamaForCausalLM(config).float()
        params = sum(p.numel() for p in model.parameters())
        optim = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
        ids = torch.randint(0, 49152, (a.batch, a.seq + 1))
        x, y = ids[:, :-1], ids[:, 1:]

        def step():
            logits = model(input_ids=x).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            optim.zero_grad(set_to_none=True)
            return loss.item()

        # As attnlab's bench: the peak above what was held before the first step (the model),
        # so it counts gradients, AdamW's moments and the activations.
        base = rss_mib()
        times = []
        for i in range(a.warmup + a.steps):
            t = time.perf_counter()
            step()
            if i >= a.warmup:
                times.append(time.perf_counter() - t)
        train_peak = rss_mib() - base
        fwd = []
        with torch.no_grad():
            for i in range(a.warmup + a.steps):
                t = time.perf_counter()
                model(input_ids=x).logits.sum().item()
                if i >= a.warmup:
                    fwd.append(time.perf_counter() - t)
        tokens = a.batch * a.seq
        ms, fms = statistics.median(times) * 1e3, statistics.median(fwd) * 1e3
        print(
            f"torch {attn:5}: {params / 1e6:.1f}M params; train step {ms:.0f} ms ({tokens / ms * 1e3:.0f} tok/s), "
            f"forward {fms:.0f} ms ({tokens / fms * 1e3:.0f} tok/s), peak +{train_peak:.0f} MiB (RSS high-water above the model)"
        )


if __name__ == "__main__":
    main()
