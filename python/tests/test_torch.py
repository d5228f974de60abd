"""The torch path (``TorchOps``, ``attnlab_torch.load``) against numpy; skipped without torch."""

import os
import tempfile
import unittest

import numpy as np

from _synth import describe, model_tensors

try:
    import torch
except ImportError:  # torch is optional
    torch = None


@unittest.skipUnless(torch is not None, "torch is not installed")
class TorchTests(unittest.TestCase):
    def test_module_matches_numpy_and_trains(self):
        from safetensors.numpy import save_file

        from attnlab_torch import load, load_numpy
        from test_model import toml_of

        stacks = [
            (["softmax:qk_norm:forget=true:gate=output:sink=learned", "sigmoid", "stickbreak", "softmax:softpick"], {}),
            (["linear:performer:features=6", "linear:cosformer", "softmax:sum_key_norms", "softmax:ssmax"], {"positions": "rope"}),
            (["linear:taylor:feature_dim=2", "softmax:log_n_temp", "linear:identity", "softmax:sink=zero"], {"norm": "rms", "tie": True, "positions": "sinusoidal"}),
            (["softmax:window=3", "softmax:sum_key_norms:window=2", "linear:elu1", "stickbreak"],
             {"positions": "rope", "norm": "rms", "bias": False, "mlp": "swiglu", "mlp_hidden": 6, "n_kv_heads": 1,
              "head_dim": 6, "qk_head_norm": True, "rope_theta": 500000.0, "norm_eps": 1e-6,
              "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8}}),
        ]
        for mixers, layout in stacks:
            config, t = model_tensors(mixers, **layout)
            format2 = {"format": "attnlab", "attnlab_config": toml_of(config)}
            format3 = dict(format2, format_version="3", attnlab_mixers=describe(config, t))
            for meta in (format2, format3):
                with tempfile.TemporaryDirectory() as d:
                    path = os.path.join(d, "m.safetensors")
                    save_file(t, path, metadata=meta)
                    module, ref = load(path), load_numpy(path)
                    ids = np.random.default_rng(0).integers(0, 11, (2, 9))
                    got = module(torch.as_tensor(ids))
                    np.testing.assert_allclose(got.detach().numpy(), ref.forward(ids), rtol=1e-4, atol=1e-4, err_msg=str(mixers))
                    got.square().mean().backward()
                    grads = [p.grad for p in module.parameters() if p.requires_grad]
                    self.assertTrue(all(g is not None and torch.isfinite(g).all() for g in grads), mixers)


if __name__ == "__main__":
    unittest.main()
