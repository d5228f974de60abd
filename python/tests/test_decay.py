"""decay: the recurrent form against an explicit masked quadratic form, end to end on random
parameters, and the gates' known values."""

import math
import unittest

import numpy as np

from attnlab_torch.context import MixContext
from attnlab_torch.mixers import decay
from attnlab_torch.mixers._short_conv import short_conv
from attnlab_torch.ops import NumpyOps
from attnlab_torch.spec import Spec, parse
from _synth import conv_by_sums

OPS = NumpyOps()


def spec(variant, **options):
    """``decay:<variant>:key=value...`` as the package reads it."""
    return parse(":".join(["decay", variant] + [f"{k}={v}" for k, v in options.items()]))


def ctx(causal=True, d_model=8, n_heads=2):
    return MixContext(d_model=d_model, n_heads=n_heads, max_seq_len=16, layer=0, causal=causal, bias=True)


def quadratic(q, k, v, log_g, normalize, causal):
    """``A_ij = sum_f q_if k_jf exp(b_if - b_jf)`` for ``j <= i`` (or ``exp(-|.|)`` over all
    ``j``), by explicit loops over (i, j), optionally divided by its row sums."""
    b, h, t, f = q.shape
    g = np.broadcast_to(log_g, (b, h, t, f))
    cum = np.cumsum(g, axis=2)
    a = np.zeros((b, h, t, t))
    for i in range(t):
        for j in range(t):
            if causal and j > i:
                continue
            decay_ij = np.exp(-np.abs(cum[:, :, i] - cum[:, :, j]))  # [b, h, f]
            a[:, :, i, j] = np.sum(q[:, :, i] * k[:, :, j] * decay_ij, axis=-1)
    if normalize:
        den = a.sum(-1, keepdims=True)
        a = a / (np.where(den >= 0, 1.0, -1.0) * np.maximum(np.abs(den), 1e-6))
    return a @ v


def random_params(rng, gate, d_model, n_heads, d_qk, head_dim, f, conv):
    width = n_heads * (2 * d_qk + head_dim)
    p = {
        "heads.qkv.weight": rng.normal(size=(d_model, width)) / math.sqrt(d_model),
        "heads.qkv.bias": rng.normal(size=width) * 0.1,
        "heads.out.weight": rng.normal(size=(n_heads * head_dim, d_model)) / math.sqrt(d_model),
        "heads.out.bias": rng.normal(size=d_model) * 0.1,
    }
    if gate == "mamba2":
        p["dt.weight"] = rng.normal(size=(d_model, n_heads)) * 0.3
        p["dt.bias"] = rng.normal(size=n_heads) * 0.5 - 2.0
        p["a_log"] = np.log(rng.uniform(1, 16, size=n_heads))
    if gate == "gla":
        p["alpha.weight"] = rng.normal(size=(d_model, n_heads * f))
        p["alpha.bias"] = rng.normal(size=n_heads * f) * 0.1
    if gate == "forget":
        p["alpha.weight"] = rng.normal(size=(d_model, n_heads))
        p["alpha.bias"] = np.full(n_heads, 1.0)
    if conv:
        p["conv.weight"] = rng.uniform(-0.5, 0.5, size=(conv, width))
    return p


def oracle_mix(p, gate, x, n_heads, normalize, causal, conv, phi):
    """The whole mixer written out plainly in numpy: projection, convolution by explicit
    sums over past tokens, per-head gates by their formulas, the quadratic form, merge."""
    b, t, d_model = x.shape
    hd = d_model // n_heads
    qkv = x @ p["heads.qkv.weight"] + p["heads.qkv.bias"]
    if conv:
        out = conv_by_sums(qkv, p["conv.weight"])
        qkv = out / (1.0 + np.exp(-out))
    q = qkv[..., : n_heads * hd].reshape(b, t, n_heads, hd).transpose(0, 2, 1, 3)
    k = qkv[..., n_heads * hd: 2 * n_heads * hd].reshape(b, t, n_heads, hd).transpose(0, 2, 1, 3)
    v = qkv[..., 2 * n_heads * hd:].reshape(b, t, n_heads, hd).transpose(0, 2, 1, 3)
    q, k = phi(q), phi(k)
    lg = np.zeros((b, n_heads, t, 1))
    for h in range(n_heads):
        if gate == "retnet":
            lg[:, h] = math.log(1.0 - 2.0 ** (-5 - h))
        elif gate == "mamba2":
            z = x @ p["dt.weight"][:, h] + p["dt.bias"][h]
            lg[:, h, :, 0] = -np.log1p(np.exp(z)) * math.exp(p["a_log"][h])
        elif gate == "forget":
            z = x @ p["alpha.weight"][:, h] + p["alpha.bias"][h]
            lg[:, h, :, 0] = np.log(1.0 / (1.0 + np.exp(-z)))
    if gate == "gla":
        z = x @ p["alpha.weight"] + p["alpha.bias"]  # [b, t, h*f]
        lg = (np.log(1.0 / (1.0 + np.exp(-z))) / 16.0).reshape(b, t, n_heads, hd).transpose(0, 2, 1, 3)
    y = quadratic(q, k, v, lg, normalize, causal)
    return y.transpose(0, 2, 1, 3).reshape(b, t, n_heads * hd) @ p["heads.out.weight"] + p["heads.out.bias"]


def elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


class RecurrenceTest(unittest.TestCase):
    def test_recurrence_equals_quadratic_form(self):
        rng = np.random.default_rng(0)
        for g in (1, 4):
            for normalize in (False, True):
                for causal in (True, False):
                    q, k = rng.normal(size=(2, 2, 7, 4)), rng.normal(size=(2, 2, 7, 4))
                    if normalize:
                        q, k = elu1(q), elu1(k)
                    v = rng.normal(size=(2, 2, 7, 3))
                    lg = -rng.uniform(0.05, 1.5, size=(2, 2, 7, g))
                    got = decay.decay_attention(OPS, q, k, v, lg, normalize, causal)
                    want = quadratic(q, k, v, lg, normalize, causal)
                    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"g={g} norm={normalize} causal={causal}")

    def test_strong_decay_stays_finite(self):
        rng = np.random.default_rng(1)
        q, k, v = (rng.normal(size=(1, 1, 30, 3)) for _ in range(3))
        lg = -rng.uniform(20, 40, size=(1, 1, 30, 3))
        for causal in (True, False):
            got = decay.decay_attention(OPS, q, k, v, lg, False, causal)
            self.assertTrue(np.all(np.isfinite(got)))
            np.testing.assert_allclose(got, quadratic(q, k, v, lg, False, causal), rtol=1e-10, atol=1e-12)

    def test_without_decay_is_linear_attention(self):
        rng = np.random.default_rng(2)
        q, k, v = (rng.normal(size=(1, 2, 6, 4)) for _ in range(3))
        got = decay.recurrence(OPS, q, k, v, np.zeros((1, 2, 6, 1)), causal=True)
        want = np.tril(q @ np.swapaxes(k, 2, 3)) @ v
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        got = decay.recurrence(OPS, q, k, v, np.zeros((1, 2, 6, 1)), causal=False)
        np.testing.assert_allclose(got, (q @ np.swapaxes(k, 2, 3)) @ v, rtol=1e-12, atol=1e-12)


class GateTest(unittest.TestCase):
    def test_retnet_gamma(self):
        for h in range(6):
            self.assertAlmostEqual(math.exp(decay.log_gates(OPS, {}, "retnet", np.zeros((1, 2, 8)), 6)[0, h, 1, 0]), 1 - 2.0 ** (-5 - h), places=14)
        self.assertAlmostEqual(1 - math.exp(decay.log_gates(OPS, {}, "retnet", np.zeros((1, 1, 8)), 1)[0, 0, 0, 0]), 1 / 32, places=14)

    def test_gate_shapes_and_signs(self):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(2, 5, 8))
        for gate, width in (("retnet", 1), ("mamba2", 1), ("gla", 4), ("forget", 1)):
            p = random_params(rng, gate, 8, 2, 4, 4, 4, 0)
            lg = decay.log_gates(OPS, p, gate, x, 2)
            self.assertEqual(lg.shape, (2, 2, 5, width), gate)
            self.assertTrue(np.all(lg <= 0), gate)

    def test_defaults(self):
        s = spec("gla")
        self.assertEqual((s["map"], s["norm"], s["conv"], s["chunk"]), ("identity", "none", 0, 64))
        with self.assertRaises(ValueError):
            spec("gla", gate=1)
        with self.assertRaises(ValueError):
            parse("decay")
        with self.assertRaises(ValueError):
            decay.mix(OPS, {}, spec("gla", norm="maybe"), np.zeros((1, 2, 8)), ctx())


class ShortConvTest(unittest.TestCase):
    def test_matches_the_formula(self):
        rng = np.random.default_rng(4)
        x, w = rng.normal(size=(2, 7, 3)), rng.normal(size=(4, 3))
        got = short_conv(OPS, x, w)
        for b in range(2):
            for t in range(7):
                for c in range(3):
                    z = sum(w[i, c] * x[b, t + i - 3, c] for i in range(4) if t + i >= 3)
                    self.assertAlmostEqual(got[b, t, c], z / (1 + math.exp(-z)), places=12)


class MixTest(unittest.TestCase):
    def test_every_gate_end_to_end(self):
        rng = np.random.default_rng(5)
        cases = []
        for gate in decay.GATES:
            for norm in ("none", "sum"):
                for conv in (0, 4):
                    for causal in (True, False):
                        cases.append((gate, norm, conv, causal))
        for gate, norm, conv, causal in cases:
            p = random_params(rng, gate, 8, 2, 4, 4, 4, conv)
            x = rng.normal(size=(2, 6, 8))
            opts = {"norm": norm}
            if conv:
                opts["conv"] = conv
            # norm=sum with positive features (signed ones make the denominator ill-conditioned).
            if norm == "sum":
                opts["map"] = "elu1"
            phi = elu1 if norm == "sum" else (lambda a: a)
            got = decay.mix(OPS, p, spec(gate, **opts), x, ctx(causal))
            want = oracle_mix(p, gate, x, 2, norm == "sum", causal, conv, phi)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11, err_msg=f"{gate} norm={norm} conv={conv} causal={causal}")

    def test_rope_rotates_before_the_map(self):
        calls = []

        def rope(ops, a, offset):
            calls.append(a.shape)
            return a * 2.0

        rng = np.random.default_rng(6)
        p = random_params(rng, "retnet", 8, 2, 4, 4, 4, 0)
        x = rng.normal(size=(1, 5, 8))
        c = ctx()
        c.rope = rope
        got = decay.mix(OPS, p, spec("retnet"), x, c)
        want = decay.mix(OPS, p, spec("retnet"), x, ctx())
        self.assertEqual(calls, [(1, 2, 5, 4), (1, 2, 5, 4)])
        # Identity features: doubling q and k quadruples the attention part.
        out_b = p["heads.out.bias"]
        np.testing.assert_allclose(got - out_b, 4 * (want - out_b), rtol=1e-10, atol=1e-12)

    def test_described_specs(self):
        """A format-3 description gives what the spec string gives."""
        rng = np.random.default_rng(7)
        x = rng.normal(size=(1, 5, 8))
        for text in ("decay:gla:conv=4", "decay:forget:map=elu1:norm=sum"):
            parsed = parse(text)
            described = Spec.from_description({
                "spec": text, "family": "decay", "module": "Decay", "variant": parsed.variant,
                "options": dict(parsed.values), "qk_width": 4, "conventions": parsed.conventions,
            })
            p = random_params(rng, parsed.variant, 8, 2, 4, 4, 4, parsed["conv"])
            np.testing.assert_array_equal(decay.mix(OPS, p, described, x, ctx()), decay.mix(OPS, p, parsed, x, ctx()))

if __name__ == "__main__":
    unittest.main()
