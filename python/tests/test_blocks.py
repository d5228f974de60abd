"""The blocks of production checkpoints: grouped-query attention, Qwen3's per-head q/k norm,
heads wider than ``d_model / n_heads``, the sliding window, SwiGLU and GELU-tanh, RMSNorm's ε,
RoPE's base and Llama 3's frequency scaling."""

import math
import unittest

import numpy as np

from _synth import mixer_params, model_tensors
from attnlab_torch.context import MixContext
from attnlab_torch.heads import project_grouped, project_qkv, qk_width
from attnlab_torch.mixers import MIXERS
from attnlab_torch.mixers._common import keys_seen, visible
from attnlab_torch.model import Model, gelu, gelu_tanh, mlp, norm
from attnlab_torch.ops import NumpyOps
from attnlab_torch.positions import Rope, f32, llama3_frequency, rope_thetas
from attnlab_torch.spec import parse

ops = NumpyOps()
LLAMA3 = {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8}


def context(n_heads, n_kv_heads=None, d_head=None, causal=True, d_model=8, rope=None):
    return MixContext(d_model=d_model, n_heads=n_heads, max_seq_len=16, layer=0, causal=causal, bias=True,
                      rope=rope, n_kv_heads=n_kv_heads, d_head=d_head, norm_eps=1e-6)


def repeated_columns(a, n_heads, n_kv_heads, d_qk, d_v):
    """A grouped ``[q | k | v]`` (last axis) as the plain layout: each key and value head's
    columns copied to the ``n_heads / n_kv_heads`` query heads it serves."""
    group = n_heads // n_kv_heads
    q_end, k_end = n_heads * d_qk, (n_heads + n_kv_heads) * d_qk

    def repeat(block, d):
        return np.concatenate([block[..., j * d:(j + 1) * d] for j in range(n_kv_heads) for _ in range(group)], axis=-1)

    return np.concatenate([a[..., :q_end], repeat(a[..., q_end:k_end], d_qk), repeat(a[..., k_end:], d_v)], axis=-1)


def as_multi_head(p, n_heads, n_kv_heads, d_qk, d_v):
    """``p`` with its grouped projection (weight and bias) rewritten as plain multi-head."""
    plain = dict(p)
    for name in ("heads.qkv.weight", "heads.qkv.bias"):
        if name in p:
            plain[name] = repeated_columns(p[name], n_heads, n_kv_heads, d_qk, d_v)
    return plain


class GroupedQueryTests(unittest.TestCase):
    def test_qk_width_reads_grouped_projections(self):
        for h, kv, dqk, dv in [(4, 2, 3, 5), (4, 1, 8, 8), (3, 3, 2, 4), (6, 3, 21, 4)]:
            p = {"heads.qkv.weight": np.zeros((8, h * dqk + kv * (dqk + dv)))}
            self.assertEqual(qk_width(p, h, dv, kv), dqk)
        with self.assertRaises(ValueError):
            qk_width({"heads.qkv.weight": np.zeros((8, 27))}, 4, 4, 2)

    def test_the_projection_equals_multi_head_with_repeated_key_value_columns(self):
        rng = np.random.default_rng(1)
        h, kv, dqk, dv = 6, 2, 3, 5
        width = h * dqk + kv * (dqk + dv)
        p = {"heads.qkv.weight": rng.normal(size=(8, width)), "heads.qkv.bias": rng.normal(size=(width,))}
        x = rng.normal(size=(2, 5, 8))
        got = project_qkv(ops, p, x, context(h, kv, dv), dqk)
        want = project_qkv(ops, as_multi_head(p, h, kv, dqk, dv), x, context(h, None, dv), dqk)
        self.assertEqual(got.shape, (2, 5, h * (2 * dqk + dv)))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        # Query head 3 of 6 reads key/value head 3 // 3 = 1.
        k_head = got[..., h * dqk + 3 * dqk: h * dqk + 4 * dqk]
        raw = x @ p["heads.qkv.weight"] + p["heads.qkv.bias"]
        np.testing.assert_allclose(k_head, raw[..., h * dqk + dqk: h * dqk + 2 * dqk], atol=1e-12)

    def test_every_family_equals_multi_head_with_repeated_key_value_weights(self):
        # Wider heads than d_model / n_heads, RoPE, per-head q/k norm: all act on the plain layout.
        h, kv, dh = 4, 2, 6
        for spec in ["softmax", "softmax:ssmax:window=3:forget=true", "sigmoid", "stickbreak", "linear:elu1",
                     "linear:taylor:feature_dim=2"]:
            s = parse(spec)
            rng = np.random.default_rng(7)
            p = mixer_params(s, 8, h, rng, n_kv_heads=kv, head_dim=dh, qk_head_norm=True)
            dqk = qk_width(p, h, dh, kv)
            x = rng.normal(size=(2, 7, 8))
            rope = Rope(dqk) if s.family != "linear" else None
            mix = MIXERS[s.family][1].mix
            got = mix(ops, p, s, x, context(h, kv, dh, rope=rope))
            want = mix(ops, as_multi_head(p, h, kv, dqk, dh), s, x, context(h, None, dh, rope=rope))
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=spec)


class HeadNormTests(unittest.TestCase):
    def test_each_query_and_key_head_is_rms_normalised_and_values_are_not(self):
        rng = np.random.default_rng(2)
        h, kv, d = 2, 1, 4
        p = {"heads.qkv.weight": rng.normal(size=(8, h * d + kv * 2 * d)),
             "heads.q_norm.gamma": np.array([0.5, 1.0, 1.5, 2.0]), "heads.k_norm.gamma": np.array([2.0, 1.0, 1.0, 0.5])}
        x = rng.normal(size=(1, 3, 8))
        raw = x @ p["heads.qkv.weight"]
        got = project_grouped(ops, p, x, h, kv, d, 1e-6)

        def rms(v, gamma):
            return v / np.sqrt((v ** 2).mean(-1, keepdims=True) + 1e-6) * gamma

        for head in range(h):
            np.testing.assert_allclose(got[..., head * d:(head + 1) * d], rms(raw[..., head * d:(head + 1) * d], p["heads.q_norm.gamma"]), atol=1e-12)
        np.testing.assert_allclose(got[..., 8:12], rms(raw[..., 8:12], p["heads.k_norm.gamma"]), atol=1e-12)
        np.testing.assert_array_equal(got[..., 12:], raw[..., 12:])


class WindowTests(unittest.TestCase):
    def test_the_mask_keeps_keys_within_the_window(self):
        t = 9
        for causal in (True, False):
            for w in (1, 2, 4, 8, 9, 20):
                seen = visible(ops, t, causal, w)
                want = np.array([[abs(i - j) < w and (j <= i or not causal) for j in range(t)] for i in range(t)])
                np.testing.assert_array_equal(seen, want, err_msg=f"causal={causal} W={w}")
                np.testing.assert_array_equal(keys_seen(ops, seen)[:, 0], want.sum(1))
            np.testing.assert_array_equal(visible(ops, t, causal, 0), visible(ops, t, causal, t))

    def test_a_window_as_long_as_the_sequence_is_global_attention(self):
        s, g = parse("softmax:sum_key_norms:window=7"), parse("softmax:sum_key_norms")
        rng = np.random.default_rng(3)
        p = mixer_params(s, 8, 2, rng)
        x = rng.normal(size=(2, 7, 8))
        for causal in (True, False):
            ctx = context(2, causal=causal)
            mix = MIXERS["softmax"][1].mix
            np.testing.assert_allclose(mix(ops, p, s, x, ctx), mix(ops, p, g, x, ctx), rtol=1e-12, atol=1e-12)

    def test_a_window_hides_keys_it_has_passed(self):
        s = parse("softmax:window=3")
        rng = np.random.default_rng(4)
        p = mixer_params(s, 8, 2, rng)
        x = rng.normal(size=(1, 8, 8))
        ctx = context(2)
        y = MIXERS["softmax"][1].mix(ops, p, s, x, ctx)
        changed = x.copy()
        changed[0, :3] += 1.0  # positions 0..2: outside every window from position 5 on
        y2 = MIXERS["softmax"][1].mix(ops, p, s, changed, ctx)
        np.testing.assert_allclose(y[0, 5:], y2[0, 5:], rtol=1e-12, atol=1e-12)
        self.assertFalse(np.allclose(y[0, 4], y2[0, 4]))


class MlpTests(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(5)
        self.x = rng.normal(size=(2, 3, 4))
        self.p = {f"m.{n}.{k}": rng.normal(size=s) for n, (a, b) in {"up": (4, 6), "gate": (4, 6), "down": (6, 4)}.items()
                  for k, s in (("weight", (a, b)), ("bias", (b,)))}

    def linear(self, name, h):
        return h @ self.p[f"m.{name}.weight"] + self.p[f"m.{name}.bias"]

    def test_swiglu_is_down_of_silu_gate_times_up(self):
        g = self.linear("gate", self.x)
        want = self.linear("down", g / (1 + np.exp(-g)) * self.linear("up", self.x))
        np.testing.assert_allclose(mlp(ops, self.p, "m", self.x, "swiglu"), want, rtol=1e-12, atol=1e-12)

    def test_gelu_kinds(self):
        u = self.linear("up", self.x)
        by_hand = np.vectorize(lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))))(u)
        np.testing.assert_allclose(mlp(ops, self.p, "m", self.x, "gelu_tanh"), self.linear("down", by_hand), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(mlp(ops, self.p, "m", self.x, "gelu"), self.linear("down", gelu(ops, u)), rtol=1e-12, atol=1e-12)
        z = np.linspace(-6, 6, 101)
        self.assertLess(np.abs(gelu_tanh(ops, z) - gelu(ops, z)).max(), 1e-3)
        self.assertGreater(np.abs(gelu_tanh(ops, z) - gelu(ops, z)).max(), 1e-5)
        with self.assertRaises(ValueError):
            mlp(ops, self.p, "m", self.x, "relu")

    def test_rms_norm_reads_its_epsilon(self):
        x, g = self.x * 1e-3, np.linspace(0.5, 1.5, 4)
        y = norm(ops, {"n.Rms.gamma": g}, "n", x, rms_eps=1e-6)
        np.testing.assert_allclose(y, x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * g, rtol=1e-12)


class RopeTests(unittest.TestCase):
    def test_llama3_scaling_in_its_three_bands(self):
        args = (8.0, 1.0, 4.0, 8192)
        # λ = 2π/f below 8192/4 = 2048: kept; above 8192/1: divided by the factor; between: blended.
        fast, slow = 2 * math.pi / 1000, 2 * math.pi / 10000
        self.assertEqual(llama3_frequency(fast, *args), fast)
        self.assertEqual(llama3_frequency(slow, *args), slow / 8.0)
        mid = 2 * math.pi / 4096
        s = (8192 / 4096 - 1.0) / (4.0 - 1.0)
        self.assertAlmostEqual(llama3_frequency(mid, *args), (1 - s) * mid / 8 + s * mid, places=15)
        # The blend meets both bands at their edges.
        for wavelength, want in ((2048.0, 1.0), (8192.0, 1 / 8)):
            f = 2 * math.pi / wavelength
            self.assertAlmostEqual(llama3_frequency(f, *args) / f, want, places=12)

    def test_thetas_take_the_base_and_the_scaling(self):
        th = rope_thetas(16, 500000.0)
        self.assertAlmostEqual(th[1], 500000.0 ** (-2 / 16), places=7)
        scaled = rope_thetas(16, 500000.0, LLAMA3)
        want = [f32(llama3_frequency(f, 8.0, 1.0, 4.0, 8)) for f in th]
        self.assertEqual(scaled, want)
        self.assertTrue(all(f32(v) == v for v in scaled))
        self.assertEqual(Rope(16, 500000.0, LLAMA3).thetas, scaled)
        with self.assertRaises(ValueError):
            rope_thetas(16, 10000.0, {"type": "yarn", "factor": 4.0})


class ModelTests(unittest.TestCase):
    LLAMA = dict(positions="rope", norm="rms", bias=False, mlp="swiglu", mlp_hidden=12, n_kv_heads=1, head_dim=6,
                 qk_head_norm=True, rope_theta=500000.0, rope_scaling=LLAMA3, norm_eps=1e-6)

    def test_a_llama_like_model_runs_causally(self):
        config, t = model_tensors(["softmax:window=4", "softmax", "linear:elu1"], **self.LLAMA)
        model = Model(config, t, ops)
        self.assertEqual((model.head_dim, model.n_kv_heads), (6, 1))
        ids = np.random.default_rng(0).integers(0, 11, (2, 10))
        y = model.forward(ids)
        self.assertTrue(np.all(np.isfinite(y)))
        changed = ids.copy()
        changed[:, 6:] = (changed[:, 6:] + 1) % 11
        np.testing.assert_allclose(model.forward(changed)[:, :6], y[:, :6], rtol=1e-12, atol=1e-12)

    def test_a_grouped_model_equals_its_multi_head_rewrite(self):
        config, t = model_tensors(["softmax", "sigmoid"], d_model=8, n_heads=4, n_kv_heads=2, positions="rope")
        plain = {n: (repeated_columns(v, 4, 2, 2, 2) if ".heads.qkv." in n else v) for n, v in t.items()}
        ids = np.random.default_rng(1).integers(0, 11, (2, 9))
        mha = dict(config, model=dict(config["model"], n_kv_heads=0))
        np.testing.assert_allclose(Model(config, t, ops).forward(ids), Model(mha, plain, ops).forward(ids), rtol=1e-10, atol=1e-10)

    def test_heads_need_not_divide_d_model_when_head_dim_is_set(self):
        config, t = model_tensors(["softmax"], d_model=10, n_heads=4, head_dim=2)
        self.assertEqual(Model(config, t, ops).forward([[1, 2, 3]]).shape, (1, 3, 11))
        config["model"]["head_dim"] = 0
        with self.assertRaises(ValueError):
            Model(config, t, ops)

    def test_configs_the_tensors_contradict_are_refused(self):
        for keys, change, needle in [
            (dict(qk_head_norm=True), dict(qk_head_norm=False), "qk_head_norm"),
            (dict(), dict(qk_head_norm=True), "qk_head_norm"),
            (dict(mlp="swiglu"), dict(mlp="gelu"), "gate"),
            (dict(), dict(mlp="swiglu"), "gate"),
            (dict(), dict(mlp="relu"), "model.mlp"),
            (dict(n_kv_heads=1), dict(n_kv_heads=3), "n_kv_heads"),
        ]:
            config, t = model_tensors(["softmax"], **keys)
            config["model"].update(change)
            with self.assertRaises(ValueError, msg=str(change)) as e:
                Model(config, t, ops)
            self.assertIn(needle, str(e.exception))


if __name__ == "__main__":
    unittest.main()
