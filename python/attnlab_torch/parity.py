"""``python -m attnlab_torch.parity EXPORT DUMP [--tol 1e-4] [--torch]``

Runs the inputs of ``DUMP`` (written by ``attnlab eval --dump-logits``: ``tokens`` I64 ``[B, T]`` or
``vectors`` F32 ``[B, T, dim]``, and ``logits`` F32 ``[B, T, out]``) through the model of
``EXPORT`` (``attnlab export``) and compares the logits elementwise with attnlab's:
``|mine − ref| <= tol · max(1, |ref|)`` (the Rust tests' scaled tolerance). Prints one line and
exits 1 when any element fails, 0 otherwise (2 when the files cannot be compared).
"""

import argparse
import sys


def compare(export, dump, tol=1e-4, use_torch=False):
    """``(line, ok, max_abs, worst_scaled)`` for an export and a logits dump."""
    import numpy as np
    from safetensors.numpy import load_file

    from .loader import load, load_numpy

    ref = load_file(str(dump))
    if "logits" not in ref:
        raise ValueError(f"{dump}: no 'logits' tensor (tensors: {sorted(ref)})")
    inputs = ref.get("tokens", ref.get("vectors"))
    if inputs is None:
        raise ValueError(f"{dump}: neither 'tokens' nor 'vectors' (tensors: {sorted(ref)})")
    want = ref["logits"].astype(np.float64)
    if use_torch:
        try:
            import torch
        except ImportError:
            raise ValueError("--torch needs torch installed (pip install torch); without it, leave --torch off") from None

        module = load(export)
        with torch.no_grad():
            got = module(torch.as_tensor(inputs)).detach().cpu().numpy().astype(np.float64)
        summary = module.model.spec_summary()
    else:
        model = load_numpy(export)
        kind = "tokens" if "tokens" in ref else "vectors"
        if kind != model.input_kind:
            raise ValueError(f"{dump} holds {kind} but {export} is a model of {model.input_kind}: a dump of another run?")
        got = np.asarray(model.forward(inputs), dtype=np.float64)
        summary = model.spec_summary()
    if got.shape != want.shape:
        raise ValueError(f"logits shape {got.shape} but the dump has {want.shape}")
    diff = np.abs(got - want)
    scaled = diff / np.maximum(1.0, np.abs(want))
    finite = bool(np.all(np.isfinite(got)))
    max_abs = float(diff.max()) if diff.size else 0.0
    worst = float(scaled.max()) if scaled.size else 0.0
    ok = finite and worst <= tol
    line = f"parity {summary}: max |Δ| = {max_abs:.3g} over {diff.size} logits (tol {tol:g})"
    if not finite:
        line += " NON-FINITE"
    elif not ok:
        line += f" FAILED: scaled error {worst:.3g}"
    return line, ok, max_abs, worst


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m attnlab_torch.parity", description=__doc__.split("\n\n")[1])
    ap.add_argument("export", help="attnlab export (.safetensors)")
    ap.add_argument("dump", help="attnlab eval --dump-logits file (.safetensors)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--torch", action="store_true", help="use the torch module (float32) instead of numpy (float64)")
    a = ap.parse_args(argv)
    try:
        line, ok, _, _ = compare(a.export, a.dump, a.tol, a.torch)
    except (ValueError, KeyError, OSError) as e:
        print(f"parity: error: {e}", file=sys.stderr)
        return 2
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
