"""rwkv7: the mixer against the formula written as plain loops with every transition matrix
explicit (``S_t = (diag(w_t) + beta_t alpha_t^T) S_{t-1} + k~_t v_t^T``), causal and
bidirectional, on random parameters; and causality."""

import unittest

import numpy as np

from attnlab_torch.context import MixContext
from attnlab_torch.mixers import rwkv7
from attnlab_torch.ops import NumpyOps
from attnlab_torch.spec import parse

OPS = NumpyOps()
D, H, RANK = 8, 2, 3


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def random_params(rng, bias=True):
    c = D
    p = {"mu": rng.normal(0, 0.5, (6, D))}
    for name in ("r_proj", "k_proj", "v_proj"):
        p[name + ".weight"] = rng.normal(0, 0.5, (D, c))
        if bias:
            p[name + ".bias"] = rng.normal(0, 0.1, (c,))
    for name in ("w_lora", "a_lora", "g_lora"):
        p[name + ".down.weight"] = rng.normal(0, 0.5, (D, RANK))
        p[name + ".up.weight"] = rng.normal(0, 0.5, (RANK, c))
        if name != "g_lora":
            p[name + ".up.bias"] = rng.normal(0, 0.5, (c,))
    for name in ("k_k", "k_a", "g_norm_weight", "g_norm_bias"):
        p[name] = rng.normal(0, 0.5, (c,))
    p["r_k"] = rng.normal(0, 0.5, (H, c // H))
    p["o_proj.weight"] = rng.normal(0, 0.5, (c, D))
    if bias:
        p["o_proj.bias"] = rng.normal(0, 0.1, (D,))
    return p


def oracle_sequence(p, x):
    """One sequence ``[T, D]`` token by token from the formula."""
    t = x.shape[0]
    dh = D // H
    lin = lambda name, z: z @ p[name + ".weight"] + p.get(name + ".bias", 0.0)  # noqa: E731
    s = [np.zeros((dh, dh)) for _ in range(H)]
    out = []
    for i in range(t):
        prev = x[i - 1] if i > 0 else np.zeros(D)
        xs = [x[i] + (prev - x[i]) * p["mu"][c] for c in range(6)]
        r = lin("r_proj", xs[0])
        w = np.exp(-np.exp(-0.5) * sig(lin("w_lora.up", np.tanh(lin("w_lora.down", xs[1])))))
        k = lin("k_proj", xs[2])
        v = lin("v_proj", xs[3])
        a = sig(lin("a_lora.up", lin("a_lora.down", xs[4])))
        g = lin("g_lora.up", sig(lin("g_lora.down", xs[5])))
        y = np.zeros(D)
        for h in range(H):
            hs = slice(h * dh, (h + 1) * dh)
            kk = k[hs] * p["k_k"][hs]
            kappa = kk / max(np.linalg.norm(kk), 1e-12)
            kt = k[hs] * (1 + (a[hs] - 1) * p["k_a"][hs])
            transition = np.diag(w[hs]) + np.outer(kappa * a[hs], -kappa)
            s[h] = transition @ s[h] + np.outer(kt, v[hs])
            o = s[h].T @ r[hs]
            normed = (o - o.mean()) / np.sqrt(o.var() + dh * 1e-5) * p["g_norm_weight"][hs] + p["g_norm_bias"][hs]
            bonus = np.sum(r[hs] * kt * p["r_k"][h])
            y[hs] = (normed + bonus * v[hs]) * g[hs]
        out.append(lin("o_proj", y))
    return np.stack(out)


def oracle(p, x, causal):
    y = np.stack([oracle_sequence(p, seq) for seq in x])
    if causal:
        return y
    return y + np.stack([oracle_sequence(p, seq[::-1])[::-1] for seq in x])


def ctx(causal):
    return MixContext(d_model=D, n_heads=H, max_seq_len=16, layer=0, causal=causal, bias=True)


class Rwkv7Tests(unittest.TestCase):
    def test_matches_the_formula_causal_and_bidirectional(self):
        rng = np.random.default_rng(3)
        for bias in (True, False):
            p = random_params(rng, bias)
            x = rng.normal(0, 1, (2, 7, D))
            for causal in (True, False):
                got = rwkv7.mix(OPS, p, parse("rwkv7"), x, ctx(causal))
                np.testing.assert_allclose(got, oracle(p, x, causal), rtol=1e-10, atol=1e-10)

    def test_causal_outputs_ignore_the_future(self):
        rng = np.random.default_rng(4)
        p = random_params(rng)
        x = rng.normal(0, 1, (1, 9, D))
        x2 = x.copy()
        x2[0, 5:] += rng.normal(0, 1, (4, D))
        y, y2 = (rwkv7.mix(OPS, p, parse("rwkv7"), z, ctx(True)) for z in (x, x2))
        np.testing.assert_allclose(y[0, :5], y2[0, :5], rtol=1e-12, atol=1e-12)
        self.assertFalse(np.allclose(y[0, 5:], y2[0, 5:]))


if __name__ == "__main__":
    unittest.main()
