"""Format-2 compatibility: an export rewritten as attnlab wrote it before format 3 (no
``attnlab_mixers``, ``format_version`` 2) must give exactly the logits the export itself gives,
read through the spec strings of its config instead of its layers' descriptions.

    python3 tests/_format2.py EXPORT DUMP [EXPORT DUMP ...]

runs each dump's inputs (``attnlab eval --dump-logits``) through both readings and exits 1 when
any pair differs (crates/cli/tests/interop.rs runs it over its parity exports).
"""

import os
import sys
import tempfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from attnlab_torch import load_numpy  # noqa: E402


def as_format2(src, dst):
    """Writes ``src``'s tensors and metadata to ``dst`` without ``attnlab_mixers``, as format 2."""
    with safe_open(str(src), framework="np") as f:
        metadata = dict(f.metadata() or {})
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    if "attnlab_mixers" not in metadata:
        raise ValueError(f"{src}: no attnlab_mixers, already an older export")
    del metadata["attnlab_mixers"]
    metadata["format_version"] = "2"
    save_file(tensors, str(dst), metadata=metadata)


def both_logits(export, inputs):
    """``(format 3 logits, format 2 logits)`` of ``export`` on ``inputs``, float64."""
    with tempfile.TemporaryDirectory() as d:
        legacy = os.path.join(d, "format2.safetensors")
        as_format2(export, legacy)
        old = load_numpy(legacy)
        old_logits = np.asarray(old.forward(inputs), dtype=np.float64)
    new = load_numpy(export)
    if new.spec_summary() != old.spec_summary():
        raise ValueError(f"{export}: described as {new.spec_summary()}, its config reads {old.spec_summary()}")
    return np.asarray(new.forward(inputs), dtype=np.float64), old_logits


def main(argv):
    if not argv or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for export, dump in zip(argv[::2], argv[1::2]):
        ref = load_file(dump)
        try:
            new, old = both_logits(export, ref.get("tokens", ref.get("vectors")))
            diff = float(np.max(np.abs(new - old)))
        except (ValueError, KeyError) as e:
            print(f"format 2 {export}: error: {e}")
            failed += 1
            continue
        print(f"format 2 {os.path.basename(export)}: max |Δ| against format 3 = {diff:.3g}")
        failed += diff != 0.0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
