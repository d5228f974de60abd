"""delta: the recurrence against the explicit ``(I - beta k k^T)`` matrix product, end to end on
random parameters, and the delta rule's known answer for orthonormal keys."""

import math
import unittest

import numpy as np

from attnlab_torch.context import MixContext
from attnlab_torch.mixers import delta
from attnlab_torch.ops import NumpyOps
from attnlab_torch.spec import Spec, parse
from _synth import conv_by_sums

OPS = NumpyOps()


def spec(variant=None, **options):
    """``delta[:variant]:key=value...`` as the package reads it."""
    return parse(":".join(["delta"] + ([variant] if variant else []) + [f"{k}={v}" for k, v in options.items()]))


def ctx(causal=True):
    return MixContext(d_model=8, n_heads=2, max_seq_len=16, layer=0, causal=causal, bias=True)


def matrix_delta(q, k, v, beta, log_g):
    """``S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``, ``o_t = S_t^T q_t``, with
    the transition built as a matrix, per (batch, head): DeltaProduct's definition with one
    Householder step per token (the scalar decay commutes with the reflection)."""
    return matrix_product(q, k, v, beta, log_g, 1)


def unit(x):
    return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6)


def silu(x):
    return x / (1.0 + np.exp(-x))


def random_params(rng, gated, conv, d_model=8, n_heads=2):
    width = 3 * d_model
    p = {
        "heads.qkv.weight": rng.normal(size=(d_model, width)) / math.sqrt(d_model),
        "heads.qkv.bias": rng.normal(size=width) * 0.1,
        "heads.out.weight": rng.normal(size=(d_model, d_model)) / math.sqrt(d_model),
        "heads.out.bias": rng.normal(size=d_model) * 0.1,
        "beta.weight": rng.normal(size=(d_model, n_heads)),
        "beta.bias": rng.normal(size=n_heads) * 0.1,
    }
    if gated:
        p["dt.weight"] = rng.normal(size=(d_model, n_heads)) * 0.3
        p["dt.bias"] = rng.normal(size=n_heads) * 0.5 - 2.0
        p["a_log"] = np.log(rng.uniform(0.5, 16, size=n_heads))
    if conv:
        p["conv.weight"] = rng.uniform(-0.5, 0.5, size=(conv, width))
    return p


def oracle_heads(p, x, neg_eigval, conv, n_heads):
    """The delta layer's per-head q, k, v (conv, one SiLU, L2 norms, q scaled) and β, from the formula."""
    b, t, d_model = x.shape
    hd = d_model // n_heads
    qkv = x @ p["heads.qkv.weight"] + p["heads.qkv.bias"]
    if conv:
        qkv = conv_by_sums(qkv, p["conv.weight"])
    qkv = silu(qkv)
    split = lambda a: a.reshape(b, t, n_heads, hd).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(qkv[..., :d_model]), split(qkv[..., d_model:2 * d_model]), split(qkv[..., 2 * d_model:])
    q, k = unit(q) / math.sqrt(hd), unit(k)
    z = x @ p["beta.weight"] + p["beta.bias"]
    beta = ((2.0 if neg_eigval else 1.0) / (1.0 + np.exp(-z))).transpose(0, 2, 1)[..., None]
    return q, k, v, beta


def oracle_mix(p, x, gated, neg_eigval, conv, causal, n_heads=2):
    b, t, d_model = x.shape
    q, k, v, beta = oracle_heads(p, x, neg_eigval, conv, n_heads)
    if gated:
        zz = x @ p["dt.weight"] + p["dt.bias"]
        lg = (-np.log1p(np.exp(zz)) * np.exp(p["a_log"])).transpose(0, 2, 1)[..., None]
    else:
        lg = np.zeros((b, n_heads, t, 1))
    y = matrix_delta(q, k, v, beta, lg)
    if not causal:
        f = lambda a: a[:, :, ::-1]  # noqa: E731
        y = y + f(matrix_delta(f(q), f(k), f(v), f(beta), f(lg)))
    return y.transpose(0, 2, 1, 3).reshape(b, t, d_model) @ p["heads.out.weight"] + p["heads.out.bias"]


class RecurrenceTest(unittest.TestCase):
    def test_recurrence_equals_the_matrix_product(self):
        rng = np.random.default_rng(0)
        for scale in (0.0, 0.3, 5.0):
            for beta_scale in (1.0, 2.0):
                q, k = unit(rng.normal(size=(2, 2, 9, 4))), unit(rng.normal(size=(2, 2, 9, 4)))
                v = rng.normal(size=(2, 2, 9, 3))
                beta = beta_scale / (1 + np.exp(-rng.normal(size=(2, 2, 9, 1))))
                lg = -scale * rng.uniform(0.5, 1.5, size=(2, 2, 9, 1))
                got = delta.recurrence(OPS, q, k, v, beta, lg)
                np.testing.assert_allclose(got, matrix_delta(q, k, v, beta, lg), rtol=1e-10, atol=1e-12)

    def test_orthonormal_keys_retrieve_the_last_value_written(self):
        writes = [0, 1, 2, 0, 3, 1, 0, 2, 2]
        t = len(writes)
        k = np.eye(4)[writes][None, None]  # [1, 1, t, 4]
        v = np.random.default_rng(1).normal(size=(1, 1, t, 3))
        beta, lg = np.ones((1, 1, t, 1)), np.zeros((1, 1, t, 1))
        # Query the key just written: the value just written comes back.
        np.testing.assert_allclose(delta.recurrence(OPS, k, k, v, beta, lg), v, atol=1e-12)
        # After all writes, querying each key returns its last value (zero if never written).
        for key in range(4):
            q = np.broadcast_to(np.eye(4)[key], (1, 1, t, 4))
            last = max((i for i, w in enumerate(writes) if w == key), default=None)
            want = np.zeros(3) if last is None else v[0, 0, last]
            np.testing.assert_allclose(delta.recurrence(OPS, q, k, v, beta, lg)[0, 0, -1], want, atol=1e-12)

    def test_l2_normalize(self):
        x = np.array([[3.0, 4.0], [0.0, 0.0]])
        np.testing.assert_allclose(delta.l2_normalize(OPS, x), [[3 / math.sqrt(25 + 1e-6), 4 / math.sqrt(25 + 1e-6)], [0.0, 0.0]])


class MixTest(unittest.TestCase):
    def test_end_to_end(self):
        rng = np.random.default_rng(2)
        for gated in (False, True):
            for neg in (False, True):
                for conv in (0, 4):
                    for causal in (True, False):
                        p = random_params(rng, gated, conv)
                        x = rng.normal(size=(2, 7, 8))
                        opts = {}
                        if neg:
                            opts["neg_eigval"] = "true"
                        if conv:
                            opts["conv"] = conv
                        got = delta.mix(OPS, p, spec("gated" if gated else None, **opts), x, ctx(causal))
                        want = oracle_mix(p, x, gated, neg, conv, causal)
                        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11, err_msg=f"gated={gated} neg={neg} conv={conv} causal={causal}")

    def test_spec_checks(self):
        with self.assertRaises(ValueError):
            spec("fast")
        with self.assertRaises(ValueError):
            spec(beta="1")
        self.assertIs(spec()["neg_eigval"], False)
        self.assertIs(spec(neg_eigval="on")["neg_eigval"], True)

    def test_described_specs(self):
        """A format-3 description gives what the spec string gives."""
        rng = np.random.default_rng(3)
        x = rng.normal(size=(1, 5, 8))
        for text in ("delta:gated:conv=4", "delta:neg_eigval=true"):
            parsed = parse(text)
            described = Spec.from_description({
                "spec": text, "family": "delta", "module": "Delta", "variant": parsed.variant,
                "options": dict(parsed.values), "qk_width": 4, "conventions": parsed.conventions,
            })
            p = random_params(rng, parsed.variant == "gated", parsed["conv"])
            np.testing.assert_array_equal(delta.mix(OPS, p, described, x, ctx()), delta.mix(OPS, p, parsed, x, ctx()))

def matrix_product(q, k, v, beta, log_g, n):
    """DeltaProduct by its definition, every transition a matrix: per token ``S <- a_t S``, then
    ``S <- (I - beta_j k_j k_j^T) S + beta_j k_j v_j^T`` for ``j = 1..n``, then ``o_t = S^T q_t``.
    ``k, v, beta`` hold sub-step ``j``'s heads at ``j*H..(j+1)*H``."""
    b, h, t, dk = q.shape
    dv = v.shape[3]
    out = np.zeros((b, h, t, dv))
    for bi in range(b):
        for hi in range(h):
            s = np.zeros((dk, dv))
            for i in range(t):
                s = math.exp(log_g[bi, hi, i, 0]) * s
                for j in range(n):
                    kk = k[bi, j * h + hi, i][:, None]
                    be = beta[bi, j * h + hi, i, 0]
                    s = (np.eye(dk) - be * kk @ kk.T) @ s + be * kk @ v[bi, j * h + hi, i][None, :]
                out[bi, hi, i] = s.T @ q[bi, hi, i]
    return out


def product_params(rng, n, gated, conv, d_model=8, n_heads=2):
    """``random_params`` with ``n`` strengths per head, ``householder_kv`` for sub-steps 2..n and
    the convolution over all ``(1 + 2n)·d_model`` channels."""
    p = random_params(rng, gated, 0, d_model, n_heads)
    p["beta.weight"] = rng.normal(size=(d_model, n * n_heads))
    p["beta.bias"] = rng.normal(size=n * n_heads) * 0.1
    p["householder_kv.weight"] = rng.normal(size=(d_model, (n - 1) * 2 * d_model)) / math.sqrt(d_model)
    p["householder_kv.bias"] = rng.normal(size=(n - 1) * 2 * d_model) * 0.1
    if conv:
        p["conv.weight"] = rng.uniform(-0.5, 0.5, size=(conv, (1 + 2 * n) * d_model))
    return p


def oracle_product_mix(p, x, n, gated, neg_eigval, conv, causal, n_heads=2):
    b, t, d_model = x.shape
    hd = d_model // n_heads
    qkv = x @ p["heads.qkv.weight"] + p["heads.qkv.bias"]
    extra = x @ p["householder_kv.weight"] + p["householder_kv.bias"]
    more = (n - 1) * d_model
    # The documented channel order: q | k_1 | k_2..k_n | v_1 | v_2..v_n.
    packed = np.concatenate([qkv[..., :2 * d_model], extra[..., :more], qkv[..., 2 * d_model:], extra[..., more:]], -1)
    if conv:
        packed = conv_by_sums(packed, p["conv.weight"])
    packed = silu(packed)
    split = lambda a, heads: a.reshape(b, t, heads, hd).transpose(0, 2, 1, 3)  # noqa: E731
    q = split(packed[..., :d_model], n_heads)
    k = split(packed[..., d_model:(1 + n) * d_model], n * n_heads)
    v = split(packed[..., (1 + n) * d_model:], n * n_heads)
    q, k = unit(q) / math.sqrt(hd), unit(k)
    z = x @ p["beta.weight"] + p["beta.bias"]  # column j*H + h
    beta = ((2.0 if neg_eigval else 1.0) / (1.0 + np.exp(-z))).transpose(0, 2, 1)[..., None]
    if gated:
        zz = x @ p["dt.weight"] + p["dt.bias"]
        lg = (-np.log1p(np.exp(zz)) * np.exp(p["a_log"])).transpose(0, 2, 1)[..., None]
    else:
        lg = np.zeros((b, n_heads, t, 1))
    y = matrix_product(q, k, v, beta, lg, n)
    if not causal:
        f = lambda a: a[:, :, ::-1]  # noqa: E731
        y = y + f(matrix_product(f(q), f(k), f(v), f(beta), f(lg), n))
    return y.transpose(0, 2, 1, 3).reshape(b, t, d_model) @ p["heads.out.weight"] + p["heads.out.bias"]


class DeltaProductTest(unittest.TestCase):
    def test_recurrence_equals_the_product_of_householder_matrices(self):
        rng = np.random.default_rng(4)
        for n in (1, 2, 3):
            for scale, beta_scale in ((0.0, 1.0), (0.3, 2.0), (5.0, 1.0)):
                q = unit(rng.normal(size=(2, 2, 6, 4)))
                k = unit(rng.normal(size=(2, 2 * n, 6, 4)))
                v = rng.normal(size=(2, 2 * n, 6, 3))
                beta = beta_scale / (1 + np.exp(-rng.normal(size=(2, 2 * n, 6, 1))))
                lg = -scale * rng.uniform(0.5, 1.5, size=(2, 2, 6, 1))
                np.testing.assert_allclose(
                    delta.recurrence(OPS, q, k, v, beta, lg), matrix_product(q, k, v, beta, lg, n),
                    rtol=1e-10, atol=1e-12, err_msg=f"n={n} scale={scale}")

    def test_end_to_end(self):
        rng = np.random.default_rng(5)
        for n in (2, 3):
            for gated in (False, True):
                for neg in (False, True):
                    for conv in (0, 4):
                        for causal in (True, False):
                            p = product_params(rng, n, gated, conv)
                            x = rng.normal(size=(2, 5, 8))
                            opts = {"householders": n}
                            if neg:
                                opts["neg_eigval"] = "true"
                            if conv:
                                opts["conv"] = conv
                            got = delta.mix(OPS, p, spec("gated" if gated else None, **opts), x, ctx(causal))
                            want = oracle_product_mix(p, x, n, gated, neg, conv, causal)
                            np.testing.assert_allclose(
                                got, want, rtol=1e-9, atol=1e-11,
                                err_msg=f"n={n} gated={gated} neg={neg} conv={conv} causal={causal}")

    def test_spec(self):
        self.assertEqual(spec()["householders"], 1)
        self.assertEqual(spec("gated", householders="3")["householders"], 3)
        self.assertEqual(str(spec("gated", neg_eigval="true", householders="3")), "delta:gated:householders=3:neg_eigval=true")


def matrix_kda(q, k, v, beta, log_g):
    """Kimi Delta Attention by its definition, per (batch, head):
    ``S_t = (I - beta_t k_t k_t^T) Diag(alpha_t) S_{t-1} + beta_t k_t v_t^T``, ``o_t = S_t^T q_t``,
    ``alpha_t = exp(log_g_t)`` one per key channel (``log_g`` ``[B, H, T, d_k]``)."""
    b, h, t, dk = q.shape
    out = np.zeros((b, h, t, v.shape[3]))
    for bi in range(b):
        for hi in range(h):
            s = np.zeros((dk, v.shape[3]))
            for i in range(t):
                kk = k[bi, hi, i][:, None]
                be = beta[bi, hi, i, 0]
                s = (np.eye(dk) - be * kk @ kk.T) @ np.diag(np.exp(log_g[bi, hi, i])) @ s + be * kk @ v[bi, hi, i][None, :]
                out[bi, hi, i] = s.T @ q[bi, hi, i]
    return out


def kda_params(rng, conv, d_model=8, n_heads=2):
    """``random_params`` with KDA's gate: ``dt`` ``[d_model, H*d_k]`` (head-major), ``dt_bias``
    per channel, ``a_log`` per head."""
    p = random_params(rng, False, conv, d_model, n_heads)
    p["dt.weight"] = rng.normal(size=(d_model, d_model)) * 0.3
    p["dt.bias"] = rng.normal(size=d_model) * 0.5 - 2.0
    p["a_log"] = np.log(rng.uniform(1, 16, size=n_heads))
    return p


def oracle_kda_mix(p, x, neg_eigval, conv, causal, n_heads=2):
    b, t, d_model = x.shape
    hd = d_model // n_heads
    q, k, v, beta = oracle_heads(p, x, neg_eigval, conv, n_heads)
    # log alpha = -exp(A_log_h) * softplus(f(x) + dt_bias), column h*d_k + i for head h, channel i.
    f = x @ p["dt.weight"] + p["dt.bias"]
    lg = -np.log1p(np.exp(f)).reshape(b, t, n_heads, hd) * np.exp(p["a_log"])[:, None]
    lg = lg.transpose(0, 2, 1, 3)
    y = matrix_kda(q, k, v, beta, lg)
    if not causal:
        r = lambda a: a[:, :, ::-1]  # noqa: E731
        y = y + r(matrix_kda(r(q), r(k), r(v), r(beta), r(lg)))
    return y.transpose(0, 2, 1, 3).reshape(b, t, d_model) @ p["heads.out.weight"] + p["heads.out.bias"]


class KdaTest(unittest.TestCase):
    def test_recurrence_equals_the_kda_matrices(self):
        rng = np.random.default_rng(6)
        for scales in ((0.3, 0.3, 0.3, 0.3), (1e-3, 0.3, 3.0, 30.0)):
            for beta_scale in (1.0, 2.0):
                q, k = unit(rng.normal(size=(2, 2, 9, 4))), unit(rng.normal(size=(2, 2, 9, 4)))
                v = rng.normal(size=(2, 2, 9, 3))
                beta = beta_scale / (1 + np.exp(-rng.normal(size=(2, 2, 9, 1))))
                lg = -np.array(scales) * rng.uniform(0.5, 1.5, size=(2, 2, 9, 4))
                np.testing.assert_allclose(
                    delta.recurrence(OPS, q, k, v, beta, lg), matrix_kda(q, k, v, beta, lg),
                    rtol=1e-10, atol=1e-12, err_msg=f"scales={scales} beta={beta_scale}")

    def test_one_gate_per_head_repeated_over_channels_is_gated_deltanet(self):
        rng = np.random.default_rng(7)
        q, k = unit(rng.normal(size=(2, 2, 9, 4))), unit(rng.normal(size=(2, 2, 9, 4)))
        v = rng.normal(size=(2, 2, 9, 3))
        beta = 1 / (1 + np.exp(-rng.normal(size=(2, 2, 9, 1))))
        lg = -rng.uniform(0.1, 2.0, size=(2, 2, 9, 1))
        np.testing.assert_allclose(
            matrix_kda(q, k, v, beta, np.repeat(lg, 4, axis=3)), matrix_delta(q, k, v, beta, lg), rtol=1e-10, atol=1e-12)

    def test_end_to_end(self):
        rng = np.random.default_rng(8)
        for neg in (False, True):
            for conv in (0, 4):
                for causal in (True, False):
                    p = kda_params(rng, conv)
                    x = rng.normal(size=(2, 7, 8))
                    opts = {}
                    if neg:
                        opts["neg_eigval"] = "true"
                    if conv:
                        opts["conv"] = conv
                    got = delta.mix(OPS, p, spec("kda", **opts), x, ctx(causal))
                    want = oracle_kda_mix(p, x, neg, conv, causal)
                    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11, err_msg=f"neg={neg} conv={conv} causal={causal}")

    def test_spec(self):
        self.assertEqual(spec("kda").variant, "kda")
        self.assertEqual(str(spec("kda", neg_eigval="true", conv="4")), "delta:kda:conv=4:neg_eigval=true")
        self.assertEqual(delta.gate_of(spec("kda")), "kda")


if __name__ == "__main__":
    unittest.main()
