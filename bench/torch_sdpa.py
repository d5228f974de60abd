#!/usr/bin/env python3
"""The softmax anchor at its fastest: nanoGPT's CPU recipe (4 layers, 4 heads, width 128, context
64, batch 12, Tiny Shakespeare characters) in PyTorch with `F.scaled_dot_product_attention`
(PyTorch's fused CPU attention) instead of shared/bench/torch_reference.py's manual one, eager or
`--compile`d. The same model, optimiser (AdamW, betas 0.9/0.99, wd 0.1), clipping (1.0) and
timing (forward, loss, backward, clip, step; batch sampling excluded) as that reference.

    python3 bench/torch_sdpa.py --threads 1 [--compile]

Prints `ms_per_iter=<median>` as torch_reference.py does, for bench/compare_torch.py.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--data", default="datasets/tinyshakespeare.txt")
p.add_argument("--threads", type=int, default=0)
p.add_argument("--iters", type=int, default=40)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--compile", action="store_true")
p.add_argument("--seed", type=int, default=1337)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
LAYERS, HEADS, WIDTH, CTX, BATCH = 4, 4, 128, 64, 12

text = open(a.data, encoding="utf-8").read()
vocab = sorted(set(text))
index = {c: i for i, c in enumerate(vocab)}
ids = torch.tensor([index[c] for c in text[: int(0.9 * len(text))]], dtype=torch.long)


def sample():
    starts = torch.randint(len(ids) - CTX - 1, (BATCH,))
    return (torch.stack([ids[s : s + CTX] for s in starts]),
            torch.stack([ids[s + 1 : s + CTX + 1] for s in starts]))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv, self.out = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2)
                   for z in self.qkv(self.norm1(x)).split(c, 2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.norm2(x))


class Lm(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(len(vocab), WIDTH), nn.Embedding(CTX, WIDTH)
        self.blocks = nn.Sequential(*[Block() for _ in range(LAYERS)])
        self.norm, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, len(vocab), bias=False)

    def forward(self, x, y):
        h = self.tokens(x) + self.positions(torch.arange(x.shape[1]))
        logits = self.head(self.norm(self.blocks(h)))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))


model = Lm()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
step_loss = torch.compile(model) if a.compile else model
times = []
for it in range(a.warmup + a.iters):
    x, y = sample()
    start = time.perf_counter()
    loss = step_loss(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if it >= a.warmup:
        times.append(time.perf_counter() - start)
med = statistics.median(times)
mode = "compiled" if a.compile else "eager"
print(f"sdpa {mode} threads={torch.get_num_threads()} ms_per_iter={med * 1e3:.2f} "
      f"tokens_per_s={BATCH * CTX / med:.0f} last_loss={loss.item():.4f}")
