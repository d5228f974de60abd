"""Reading an attnlab ``.safetensors`` export (crates/train/src/export.rs) into a model.

The file holds every parameter under its attnlab name, float32, ``Linear`` weights ``[d_in, d_out]``,
and string metadata: ``format = "attnlab"``, ``attnlab_config`` (the run's resolved config, TOML),
and in newer exports ``format_version``, ``attnlab_version``, ``model_input`` (tokens|vectors),
``input_dim``, ``output_dim``, and ``vocabulary`` (JSON list: token id i is vocabulary[i]) or
``tokenizer_json``; format 3 adds ``attnlab_mixers``, each layer's mixer fully resolved (family,
variant, every option with its default, constants, parameter names and shapes), which the
layers are built from (older exports: the config's ``model.mixer`` spec strings); format 4 adds
``tensor_sha256`` (tensor name -> SHA-256 of its stored bytes), checked on every read so a damaged
file is refused instead of loading as another model.
"""

import hashlib
import json
import tomllib

from .model import Model
from .ops import NumpyOps, TorchOps


def read_export(path):
    """``(metadata, config, tensors)``: the metadata strings, the run config (a dict parsed from
    ``attnlab_config``), and every tensor as a numpy array under its attnlab name."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="np") as f:
        metadata = dict(f.metadata() or {})
        for name in f.keys():
            tensors[name] = f.get_tensor(name)
    if metadata.get("format") != "attnlab":
        raise ValueError(f"{path}: not an attnlab export (metadata format = {metadata.get('format')!r})")
    if "attnlab_config" not in metadata:
        raise ValueError(f"{path}: the export has no attnlab_config metadata")
    config = tomllib.loads(metadata["attnlab_config"])
    _check_digests(path, metadata, tensors)
    return metadata, config, tensors


def _check_digests(path, metadata, tensors):
    """Every tensor's bytes against the SHA-256 the export recorded (format 4 on)."""
    text = metadata.get("tensor_sha256")
    if not text:
        return
    recorded = json.loads(text)
    if set(recorded) != set(tensors):
        raise ValueError(f"{path}: the tensors are not the ones the export recorded: the file was changed; export it again")
    for name, array in tensors.items():
        if hashlib.sha256(array.tobytes()).hexdigest() != recorded[name]:
            raise ValueError(f"{path}: tensor {name} does not match the SHA-256 recorded when it was exported: the file was damaged or changed; export it again")


def _check_metadata(model, metadata, path):
    """Cross-checks the newer metadata keys against what the tensors say."""
    kind = metadata.get("model_input")
    if kind is not None and kind != model.input_kind:
        raise ValueError(f"{path}: metadata model_input = {kind!r} but the tensors have a {model.input_kind} input layer")
    for key, have in (("output_dim", model.output_dim), ("input_dim", model.vocab_size if model.input_kind == "tokens" else model.input_dim)):
        if key in metadata and str(metadata[key]).strip() and int(metadata[key]) != have:
            raise ValueError(f"{path}: metadata {key} = {metadata[key]} but the tensors say {have}")


def mixer_descriptions(metadata):
    """A format-3 export's ``attnlab_mixers`` (one fully resolved mixer per layer), which the
    model's layers are built from; ``None`` for older exports, whose config's spec strings are
    read instead."""
    text = metadata.get("attnlab_mixers")
    return json.loads(text) if text else None


def _vocabulary(metadata):
    text = metadata.get("vocabulary")
    return json.loads(text) if text else None


def _build(path, ops, tensors_to_params=None):
    metadata, config, tensors = read_export(path)
    params = tensors if tensors_to_params is None else tensors_to_params(tensors)
    model = Model(config, params, ops, mixer_descriptions(metadata))
    _check_metadata(model, metadata, path)
    model.vocabulary = _vocabulary(metadata)
    model.metadata = metadata
    model.run_config = config
    return model


def load_numpy(path):
    """The export as a :class:`~attnlab_torch.model.Model` on ``NumpyOps`` (float64, no torch)."""
    return _build(path, NumpyOps())


def _key(name):
    return name.replace(".", "__")


def load(path, dtype=None, device=None):
    """The export as a ``torch.nn.Module``: ``module(tokens)`` (or vectors) returns logits.

    The parameters are ``nn.Parameter``s in ``module.params`` (a ``ParameterDict`` keyed by the
    attnlab name with ``.`` replaced by ``__``); Performer's fixed random features are frozen.
    """
    import torch

    metadata, config, tensors = read_export(path)

    class AttnlabModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.params = torch.nn.ParameterDict(
                {
                    _key(n): torch.nn.Parameter(
                        torch.tensor(t, dtype=dtype or torch.float32, device=device),
                        requires_grad=not n.endswith("feature_map.random_features"),
                    )
                    for n, t in tensors.items()
                }
            )
            self.names = {_key(n): n for n in tensors}
            first = next(iter(self.params.values()))
            self.model = Model(config, self._named(), TorchOps(first.dtype, first.device), mixer_descriptions(metadata))
            _check_metadata(self.model, metadata, path)
            self.metadata, self.run_config = metadata, config
            self.vocabulary = _vocabulary(metadata)
            self.max_seq_len = self.model.max_seq_len

        def _named(self):
            return {self.names[k]: v for k, v in self.params.items()}

        def forward(self, inputs):
            first = next(iter(self.params.values()))
            self.model.ops = TorchOps(first.dtype, first.device)
            if self.model.input_kind == "tokens" and not isinstance(inputs, torch.Tensor):
                inputs = torch.as_tensor(inputs, dtype=torch.long, device=first.device)
            elif isinstance(inputs, torch.Tensor) and self.model.input_kind == "tokens":
                inputs = inputs.to(first.device)
            return self.model.forward(inputs, self._named())

    return AttnlabModel()
