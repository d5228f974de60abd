"""attnlab models in Python: build an attnlab ``.safetensors`` export and compute its logits.

    import attnlab_torch
    model = attnlab_torch.load("model.safetensors")        # a torch.nn.Module
    logits = model(token_ids)                                 # [B, T, vocab]

``load_numpy`` builds the same model on numpy (float64, no torch), which is what
``python -m attnlab_torch.parity`` checks against attnlab's own logits. ``generate`` samples as
``attnlab sample`` does. The formulas are written once, in terms of :mod:`attnlab_torch.ops`.
"""

from .generate import generate
from .loader import load, load_numpy, read_export
from .model import Model

__all__ = ["load", "load_numpy", "generate", "read_export", "Model"]
