import math
import unittest

import numpy as np

from attnlab_torch.feature_maps import safe_denominator
from attnlab_torch.model import gelu, norm
from attnlab_torch.ops import NumpyOps
from attnlab_torch.positions import Rope, f32, rope_thetas, sinusoidal_table

ops = NumpyOps()


class NumpyOpsTests(unittest.TestCase):
    def setUp(self):
        self.x = np.random.default_rng(0).normal(0, 3, (3, 5, 7))

    def close(self, a, b, tol=1e-12):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)

    def test_elementwise_composites(self):
        x = self.x
        self.close(ops.sigmoid(x), 1 / (1 + np.exp(-x)))
        self.close(ops.logsigmoid(x), np.log(1 / (1 + np.exp(-x))))
        self.close(ops.softplus(x), np.log1p(np.exp(x)))
        self.close(ops.silu(x), x / (1 + np.exp(-x)))
        self.close(ops.elu(x), np.where(x > 0, x, np.exp(x) - 1))
        self.close(ops.relu(x), np.where(x > 0, x, 0))
        self.close(ops.erf(x), np.vectorize(math.erf)(x))
        # extreme inputs stay finite
        big = np.array([-800.0, -50.0, 0.0, 50.0, 800.0])
        self.assertTrue(np.all(np.isfinite(ops.logsigmoid(big))))
        self.close(ops.logsigmoid(big)[[0, 4]], [-800.0, 0.0])

    def test_reductions(self):
        x = self.x
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        self.close(ops.softmax(x, axis=-1), e / e.sum(axis=-1, keepdims=True))
        self.close(ops.logsumexp(x, axis=1), np.log(np.exp(x).sum(axis=1)))
        masked = np.where(np.tri(5, 7, dtype=bool), x[0], -np.inf)
        w = ops.softmax(masked, axis=-1)
        self.assertTrue(np.all(np.isfinite(w)))
        self.close(w.sum(axis=-1), np.ones(5))
        self.close(ops.cumsum(x, 1)[:, -1], x.sum(axis=1))

    def test_masks_and_shapes(self):
        m = ops.tril(3, 4, 1)
        self.assertEqual(m.tolist(), [[c <= r + 1 for c in range(4)] for r in range(3)])
        self.assertTrue(ops.tril(4, 4, 4).all())
        self.assertEqual(ops.tril(3, 3, -1).tolist(), [[c < r for c in range(3)] for r in range(3)])
        self.close(ops.pad_front(np.ones((2, 3)), 1, 2), [[0, 0, 1, 1, 1]] * 2)
        self.close(ops.take_rows(np.arange(6.0).reshape(3, 2), [[2, 0]]), [[[4, 5], [0, 1]]])

    def test_gelu_norms_and_safe_denominator(self):
        x = self.x
        self.close(gelu(ops, x), x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2))))
        g, b = np.linspace(0.5, 1.5, 7), np.linspace(-0.2, 0.2, 7)
        y = norm(ops, {"n.Layer.gamma": g, "n.Layer.beta": b}, "n", x)
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        self.close(y, (x - mu) / np.sqrt(var + 1e-5) * g + b)
        y = norm(ops, {"n.Rms.gamma": g}, "n", x)
        self.close(y, x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * g)
        z = np.array([-2.0, -1e-9, 0.0, 1e-9, 3.0])
        self.close(safe_denominator(ops, z), [-2.0, -1e-6, 1e-6, 1e-6, 3.0])

    def test_positions(self):
        t = np.array(sinusoidal_table(5, 6, offset=3))
        for i, pos in enumerate(range(3, 8)):
            for c in range(6):
                w = 1 / 10000 ** (2 * (c // 2) / 6)
                self.assertAlmostEqual(t[i, c], math.sin(pos * w) if c % 2 == 0 else math.cos(pos * w), places=12)
        # Burn's own test (burn-nn rope_encoding.rs): d = 4, positions 0 and 1.
        x = np.array([[[1.0, 2, 3, 4], [5, 6, 7, 8]], [[9, 10, 11, 12], [13, 14, 15, 16]]])
        want = [[[1, 2, 3, 4], [-2.3473, 7.4492, 6.9197, 8.0696]], [[9, 10, 11, 12], [-4.7567, 18.5034, 14.8393, 16.1492]]]
        np.testing.assert_allclose(Rope(4)(ops, x), want, atol=1e-4)
        # Adjacent pairs rotated by pos·θ_i: q·k depends on the distance only.
        rope = Rope(8)
        rng = np.random.default_rng(1)
        q, k = rng.normal(size=(1, 1, 1, 8)), rng.normal(size=(1, 1, 1, 8))
        dots = [float((rope(ops, q, a) * rope(ops, k, a - 3)).sum()) for a in (3, 7, 20)]
        np.testing.assert_allclose(dots, dots[0], rtol=1e-5)
        th = rope_thetas(8)
        self.assertEqual(th[0], 1.0)
        self.assertAlmostEqual(th[1], 10000 ** -0.25, places=6)
        self.assertEqual(f32(th[3]), th[3])


if __name__ == "__main__":
    unittest.main()
