import io
import json
import os
import tempfile
import unittest
from contextlib import redirect_stdout

import numpy as np
from safetensors.numpy import save_file

from _format2 import both_logits
from _synth import describe, model_tensors
from attnlab_torch import load_numpy, parity
from attnlab_torch.model import Model, gelu, norm
from attnlab_torch.ops import NumpyOps

ops = NumpyOps()
STACK = ["softmax:qk_norm:forget=true", "sigmoid", "linear:elu1", "stickbreak"]


def toml_of(config):
    """A minimal TOML writer for the test configs (flat tables of scalars, string lists and
    inline tables)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{a} = {val(b)}" for a, b in v.items()) + "}"
        return repr(v)
    lines = [f"{k} = {val(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for k, v in config.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{a} = {val(b)}" for a, b in v.items()]
    return "\n".join(lines) + "\n"


def direct_forward(config, t, ids):
    """The model written out once more by hand, for one layout: learned positions, LayerNorm."""
    m = config["model"]
    x = t["input.Tokens.weight"].astype(np.float64)[ids] + t["positions.learned.weight"][: ids.shape[1]]
    from attnlab_torch.context import MixContext
    from attnlab_torch.mixers import MIXERS
    from attnlab_torch.spec import parse

    def ln(prefix, x):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * t[prefix + ".Layer.gamma"] + t[prefix + ".Layer.beta"]

    for i, spec in enumerate(m["mixer"]):
        s = parse(spec)
        path = MIXERS[s.family][0]
        pre = f"blocks.{i}.mixer.{path}."
        p = {k[len(pre):]: v.astype(np.float64) for k, v in t.items() if k.startswith(pre)}
        ctx = MixContext(m["d_model"], m["n_heads"], m["max_seq_len"], i, True, True)
        x = x + MIXERS[s.family][1].mix(ops, p, s, ln(f"blocks.{i}.norm_mixer", x), ctx)
        h = ln(f"blocks.{i}.norm_mlp", x) @ t[f"blocks.{i}.mlp.up.weight"] + t[f"blocks.{i}.mlp.up.bias"]
        h = gelu(ops, h)
        x = x + h @ t[f"blocks.{i}.mlp.down.weight"] + t[f"blocks.{i}.mlp.down.bias"]
    return ln("norm", x) @ t["head.weight"]


class ModelTests(unittest.TestCase):
    def ids(self, b=2, t=10, vocab=11, seed=3):
        return np.random.default_rng(seed).integers(0, vocab, (b, t))

    def test_a_hybrid_stack_matches_the_hand_written_forward(self):
        config, t = model_tensors(STACK)
        ids = self.ids()
        got = Model(config, t, ops).forward(ids)
        np.testing.assert_allclose(got, direct_forward(config, t, ids), rtol=1e-12, atol=1e-12)

    def test_every_layout_runs_and_is_causal(self):
        layouts = [
            dict(),
            dict(positions="rope"),
            dict(positions="sinusoidal", norm="rms"),
            dict(positions="none", tie=True, mlp_ratio=0),
            dict(bias=False),
            dict(positions="rope", norm="rms", bias=False, qkv_bias=True, mlp="swiglu", mlp_hidden=6, n_kv_heads=1,
                 head_dim=6, qk_head_norm=True, rope_theta=500000.0, norm_eps=1e-6,
                 rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8}),
            dict(mlp="gelu_tanh", head_dim=2),
        ]
        for layout in layouts:
            config, t = model_tensors(STACK, **layout)
            model = Model(config, t, ops)
            ids = self.ids()
            y = model.forward(ids)
            self.assertEqual(y.shape, (2, 10, 11), layout)
            self.assertTrue(np.all(np.isfinite(y)), layout)
            for cut in (0, 4, 8):
                changed = ids.copy()
                changed[:, cut + 1:] = (changed[:, cut + 1:] + 1) % 11
                y2 = model.forward(changed)
                np.testing.assert_allclose(y[:, :cut + 1], y2[:, :cut + 1], rtol=1e-12, atol=1e-12, err_msg=str(layout))
                self.assertFalse(np.allclose(y[:, cut + 1:], y2[:, cut + 1:]), layout)

    def test_tied_head_and_vector_inputs(self):
        config, t = model_tensors(["softmax"], tie=True)
        model = Model(config, t, ops)
        self.assertTrue(model.tied)
        untied = dict(t, **{"head.weight": t["input.Tokens.weight"].T.copy()})
        ids = self.ids()
        np.testing.assert_allclose(model.forward(ids), Model(config, untied, ops).forward(ids), rtol=1e-12, atol=1e-12)
        config, t = model_tensors(["softmax", "linear:relu"], vectors_dim=3, output_dim=1)
        model = Model(config, t, ops)
        self.assertEqual(model.input_kind, "vectors")
        v = np.random.default_rng(0).normal(size=(2, 6, 3))
        self.assertEqual(model.forward(v).shape, (2, 6, 1))

    def test_bidirectional_models_see_the_future(self):
        config, t = model_tensors(STACK)
        config["model"]["causal"] = False
        model = Model(config, t, ops)
        ids = self.ids()
        changed = ids.copy()
        changed[:, -1] = (changed[:, -1] + 1) % 11
        self.assertFalse(np.allclose(model.forward(ids)[:, 0], model.forward(changed)[:, 0]))

    def test_mismatched_exports_are_refused(self):
        config, t = model_tensors(["softmax"])
        config["model"]["mixer"] = "sigmoid"
        with self.assertRaises(KeyError) as e:
            Model(config, t, ops)
        self.assertIn("Softmax", str(e.exception))
        config, t = model_tensors(["softmax"])
        config["model"]["colour"] = "red"
        with self.assertRaises(ValueError):
            Model(config, t, ops)

    def test_export_files_load_and_parity_reports(self):
        config, t = model_tensors(STACK, tie=True)
        with tempfile.TemporaryDirectory() as d:
            export = os.path.join(d, "m.safetensors")
            meta = {"format": "attnlab", "attnlab_config": toml_of(config), "format_version": "2", "model_input": "tokens",
                    "input_dim": "11", "output_dim": "11", "vocabulary": json.dumps([chr(97 + i) for i in range(11)])}
            save_file(t, export, metadata=meta)
            model = load_numpy(export)
            self.assertEqual(model.vocabulary[2], "c")
            self.assertEqual(model.spec_summary(), ",".join(STACK))
            ids = self.ids()
            logits = np.asarray(model.forward(ids), dtype=np.float32)
            dump = os.path.join(d, "d.safetensors")
            save_file({"tokens": ids.astype(np.int64), "logits": logits}, dump)
            out = io.StringIO()
            with redirect_stdout(out):
                self.assertEqual(parity.main([export, dump]), 0)
            self.assertIn("over 220 logits (tol 0.0001)", out.getvalue())
            save_file({"tokens": ids.astype(np.int64), "logits": logits + 1e-3}, dump)
            with redirect_stdout(io.StringIO()):
                self.assertEqual(parity.main([export, dump]), 1)
            bad = dict(meta, output_dim="12")
            save_file(t, export, metadata=bad)
            with self.assertRaises(ValueError):
                load_numpy(export)

    def test_format_3_layers_come_from_their_description_and_format_2_gives_the_same(self):
        stack = ["softmax:log_n_temp:floor_scale=4", "linear:taylor:feature_dim=2", "sigmoid:bias=-2", "linear:performer:features=5"]
        config, t = model_tensors(stack)
        meta = {"format": "attnlab", "attnlab_config": toml_of(config), "format_version": "3", "attnlab_mixers": describe(config, t)}
        with tempfile.TemporaryDirectory() as d:
            export = os.path.join(d, "m.safetensors")
            save_file(t, export, metadata=meta)
            model = load_numpy(export)
            self.assertEqual([s.qk_width for s in model.specs], [4, 2, 4, 4])
            self.assertEqual(model.spec_summary(), ",".join(stack))
            new, old = both_logits(export, self.ids())
            np.testing.assert_array_equal(new, old)

            # The description, not the config, says what each layer is.
            described = json.loads(meta["attnlab_mixers"])
            described[2]["options"]["bias"] = -3.0
            save_file(t, export, metadata=dict(meta, attnlab_mixers=json.dumps(described)))
            self.assertFalse(np.allclose(load_numpy(export).forward(self.ids()), new))

            for change, needle in [
                (lambda ds: ds[1]["parameters"].pop("Linear.heads.qkv.bias"), "not described ['Linear.heads.qkv.bias']"),
                (lambda ds: ds[1]["parameters"].update({"Linear.gate.weight": [8, 8]}), "missing ['Linear.gate.weight']"),
                (lambda ds: ds[0].update(qk_width=2), "described with 2-wide queries"),
                (lambda ds: ds.pop(), "describes 3 layers"),
            ]:
                described = json.loads(meta["attnlab_mixers"])
                change(described)
                save_file(t, export, metadata=dict(meta, attnlab_mixers=json.dumps(described)))
                with self.assertRaises(ValueError) as e:
                    load_numpy(export)
                self.assertIn(needle, str(e.exception))


if __name__ == "__main__":
    unittest.main()
