"""path: the mixer against the formula written as plain loops with every Householder matrix
multiplied out per query and key (``z_ij = q_i^T H_i ... H_{j+1} k_j / sqrt(d)``), with
grouped-query heads, the forget gate, both ``w`` maps and no convolution; causality; the refused
bidirectional model; ``beta = 0`` as plain causal softmax."""

import math
import unittest

import numpy as np

from attnlab_torch.context import MixContext
from attnlab_torch.mixers import path
from attnlab_torch.ops import NumpyOps
from attnlab_torch.spec import parse

OPS = NumpyOps()
D, H, T = 8, 2, 7


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def random_params(rng, spec, kv):
    d = D // H
    s = parse(spec)
    p = {
        "heads.qkv.weight": rng.normal(0, 0.5, (D, (H + 2 * kv) * d)),
        "heads.qkv.bias": rng.normal(0, 0.1, ((H + 2 * kv) * d,)),
        "heads.out.weight": rng.normal(0, 0.5, (H * d, D)),
        "heads.out.bias": rng.normal(0, 0.1, (D,)),
        "beta.weight": rng.normal(0, 0.5, (D, kv)),
        "beta.bias": rng.normal(0, 0.5, (kv,)),
    }
    rank = s["w_rank"]
    if rank:
        p["w_down.weight"] = rng.normal(0, 0.5, (D, rank))
    p["w_up.weight"] = rng.normal(0, 0.5, (rank or D, kv * d))
    if s["conv"]:
        p["w_conv.weight"] = rng.normal(0, 0.5, (s["conv"], kv * d))
    if s["fox"]:
        p["forget.weight"] = rng.normal(0, 0.5, (D, H))
        p["forget.bias"] = rng.normal(1.0, 0.5, (H,))
    return p


def oracle_sequence(p, s, x, kv):
    """One sequence ``[T, D]`` from the formula, token by token and head by head."""
    d, t = D // H, x.shape[0]
    qkv = x @ p["heads.qkv.weight"] + p["heads.qkv.bias"]
    low = x @ p["w_down.weight"] if "w_down.weight" in p else x
    w_all = low @ p["w_up.weight"]
    if "w_conv.weight" in p:
        kernel = p["w_conv.weight"].shape[0]
        conv = np.zeros_like(w_all)
        for i in range(t):
            for back in range(kernel):
                if i - back >= 0:
                    conv[i] += p["w_conv.weight"][kernel - 1 - back] * w_all[i - back]
        w_all = conv * sig(conv)
    beta_all = 2 * sig(x @ p["beta.weight"] + p["beta.bias"])
    out = np.zeros((t, H * d))
    for h in range(H):
        g = h // (H // kv)
        q = qkv[:, h * d:(h + 1) * d]
        k = qkv[:, (H + g) * d:(H + g + 1) * d]
        v = qkv[:, (H + kv + g) * d:(H + kv + g + 1) * d]
        w = w_all[:, g * d:(g + 1) * d]
        w = w / np.sqrt((w * w).sum(axis=1, keepdims=True) + 1e-6)
        c = np.zeros(t)
        if s["fox"]:
            c = np.cumsum(np.log(sig(x @ p["forget.weight"][:, h] + p["forget.bias"][h])))
        for i in range(t):
            z = []
            for j in range(i + 1):
                product = np.eye(d)
                for step in range(j + 1, i + 1):
                    product = (np.eye(d) - beta_all[step, g] * np.outer(w[step], w[step])) @ product
                z.append((q[i] @ product @ k[j] + c[i] - c[j]) / math.sqrt(d))
            e = np.exp(np.array(z) - max(z))
            out[i, h * d:(h + 1) * d] = (e / e.sum()) @ v[:i + 1]
    return out @ p["heads.out.weight"] + p["heads.out.bias"]


def run(spec, kv, seed, x=None, p=None):
    rng = np.random.default_rng(seed)
    p = random_params(rng, spec, kv) if p is None else p
    x = rng.normal(0, 1, (2, T, D)) if x is None else x
    ctx = MixContext(d_model=D, n_heads=H, max_seq_len=16, layer=0, causal=True, bias=True, n_kv_heads=kv)
    return path.mix(OPS, p, parse(spec), x, ctx), p, x


class PathTests(unittest.TestCase):
    def test_matches_the_explicit_products(self):
        seed = 10
        for spec in ["path", "path:fox=true", "path:conv=0:w_rank=0", "path:fox=true:conv=4:w_rank=3"]:
            for kv in (H, 1):
                seed += 1
                got, p, x = run(spec, kv, seed)
                want = np.stack([oracle_sequence(p, parse(spec), x[b], kv) for b in range(2)])
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=f"{spec} kv={kv}")

    def test_causal_outputs_ignore_the_future(self):
        a, p, x = run("path:fox=true", 1, 30)
        changed = x.copy()
        changed[:, 4:] += 1.0
        b, _, _ = run("path:fox=true", 1, 30, x=changed, p=p)
        np.testing.assert_allclose(a[:, :4], b[:, :4], rtol=1e-12, atol=1e-12)
        self.assertGreater(np.abs(a[:, 4:] - b[:, 4:]).max(), 1e-3)

    def test_beta_zero_is_plain_causal_softmax(self):
        rng = np.random.default_rng(40)
        p = random_params(rng, "path", H)
        p["beta.weight"] = np.zeros_like(p["beta.weight"])
        p["beta.bias"] = np.full_like(p["beta.bias"], -800.0)  # 2σ(−800) underflows to 0
        got, _, x = run("path", H, 40, p=p)
        d = D // H
        qkv = x @ p["heads.qkv.weight"] + p["heads.qkv.bias"]
        out = np.zeros((2, T, H * d))
        for b in range(2):
            for h in range(H):
                q, k, v = (qkv[b, :, (m * H + h) * d:(m * H + h + 1) * d] for m in range(3))
                for i in range(T):
                    z = q[i] @ k[:i + 1].T / math.sqrt(d)
                    e = np.exp(z - z.max())
                    out[b, i, h * d:(h + 1) * d] = e / e.sum() @ v[:i + 1]
        want = out @ p["heads.out.weight"] + p["heads.out.bias"]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    def test_a_bidirectional_model_is_refused(self):
        rng = np.random.default_rng(50)
        ctx = MixContext(d_model=D, n_heads=H, max_seq_len=16, layer=0, causal=False, bias=True)
        with self.assertRaises(ValueError) as e:
            path.mix(OPS, random_params(rng, "path", H), parse("path"), rng.normal(0, 1, (1, T, D)), ctx)
        self.assertIn("model.causal = true", str(e.exception))


if __name__ == "__main__":
    unittest.main()
