"""The attnlab transformer, written once against ``ops`` (mirrors crates/model/src/lm.rs and block.rs).

``forward``: embed (token embedding ``input.Tokens.weight[ids]``, or the affine read-in
``vectors @ input.Vectors.weight + bias``), add positions (learned or sinusoidal; RoPE acts inside
attention), then per block, pre-norm ``x += mixer(norm_mixer(x))`` and, when the block has an MLP,
``x += down(GELU(up(norm_mlp(x))))`` with the exact (erf) GELU; then the final ``norm`` and the
head (``x @ head.weight``, or ``x @ input.Tokens.weight^T`` when tied). Dropout is off (eval).
"""

import math

from . import spec as _spec
from .context import MixContext
from .heads import affine, qk_width
from .mixers import mixer as _mixer
from .positions import Rope, sinusoidal_table

LAYER_NORM_EPS = 1e-5
RMS_NORM_EPS = 1e-5

# ModelConfig::default() (crates/model/src/config.rs): what a config leaves out.
MODEL_DEFAULTS = {
    "d_model": 128,
    "n_heads": 4,
    "n_layers": 4,
    "mixer": "softmax",
    "positions": "learned",
    "norm": "layer",
    "mlp_ratio": 4,
    "dropout": 0.0,
    "tie_embeddings": False,
    "max_seq_len": 64,
    "causal": True,
    "bias": True,
    # How the weights started (burn | gpt2): no effect on the forward of trained weights.
    "init": "burn",
}


def model_config(config):
    """The ``[model]`` table of a run config (or the table itself) with defaults filled in."""
    table = config.get("model", config) if isinstance(config, dict) else {}
    unknown = set(table) - set(MODEL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown [model] keys: {', '.join(sorted(unknown))}")
    return {**MODEL_DEFAULTS, **table}


def gelu(ops, x):
    """Exact GELU, ``x·Φ(x) = x/2·(1 + erf(x/√2))``."""
    return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))


def norm(ops, params, prefix, x):
    """LayerNorm (biased variance, ε 1e-5) or Burn's RmsNorm (``x / √(mean(x²) + 1e-5) · γ``),
    whichever the parameters under ``prefix`` are."""
    if prefix + ".Layer.gamma" in params:
        mean = ops.mean(x, axis=-1, keepdims=True)
        centred = x - mean
        var = ops.mean(centred * centred, axis=-1, keepdims=True)
        y = centred / ops.sqrt(var + LAYER_NORM_EPS) * params[prefix + ".Layer.gamma"]
        beta = params.get(prefix + ".Layer.beta")
        return y if beta is None else y + beta
    if prefix + ".Rms.gamma" in params:
        rms = ops.sqrt(ops.mean(x * x, axis=-1, keepdims=True) + RMS_NORM_EPS)
        return x / rms * params[prefix + ".Rms.gamma"]
    raise KeyError(f"no norm parameters under '{prefix}' ({prefix}.Layer.gamma or {prefix}.Rms.gamma)")


def _check_described_parameters(layer, spec, described, tensors):
    """A format-3 layer's ``parameters`` (path below ``blocks.<i>.mixer.`` -> shape) must be
    exactly the tensors under its mixer: a name missing, extra or of another shape means this
    package would read the layer differently from how attnlab wrote it."""
    prefix = f"blocks.{layer}.mixer."
    held = {n[len(prefix):]: tuple(t.shape) for n, t in tensors.items() if n.startswith(prefix)}
    wanted = {n: tuple(shape) for n, shape in described.items()}
    if held != wanted:
        missing = sorted(set(wanted) - set(held))
        extra = sorted(set(held) - set(wanted))
        reshaped = sorted(n for n in set(held) & set(wanted) if held[n] != wanted[n])
        raise ValueError(
            f"layer {layer} ({spec}): the export describes parameters the tensors do not match "
            f"(missing {missing}, not described {extra}, other shapes {reshaped})"
        )


class Model:
    """An attnlab model from its run config and its parameters.

    ``config``: the run config as a dict (with a ``model`` table) or the ``[model]`` table itself.
    ``tensors``: every parameter under its attnlab name (numpy arrays, or already ``ops`` arrays,
    e.g. torch ``nn.Parameter``s). ``ops``: :class:`~attnlab_torch.ops.NumpyOps` or ``TorchOps``.
    ``mixers``: a format-3 export's ``attnlab_mixers`` (one description per layer), which each
    layer is built from; without it (format 2) the config's ``model.mixer`` spec strings are read.
    """

    def __init__(self, config, tensors, ops, mixers=None):
        self.ops = ops
        self.config = model_config(config)
        c = self.config
        self.d_model, self.n_heads, self.n_layers = c["d_model"], c["n_heads"], c["n_layers"]
        self.max_seq_len, self.causal, self.bias = c["max_seq_len"], c["causal"], c["bias"]
        self.positions = c["positions"]
        if self.positions not in ("learned", "sinusoidal", "rope", "none"):
            raise ValueError(f"model.positions = {self.positions!r}: expected learned, sinusoidal, rope or none")
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model ({self.d_model}) is not divisible by model.n_heads ({self.n_heads})")
        self.head_dim = self.d_model // self.n_heads
        if mixers is None:
            self.specs = _spec.parse_stack(c["mixer"], self.n_layers)
        else:
            if len(mixers) != self.n_layers:
                raise ValueError(f"attnlab_mixers describes {len(mixers)} layers, model.n_layers is {self.n_layers}")
            self.specs = [_spec.Spec.from_description(d) for d in mixers]
        self.params = {name: ops.asarray(t) for name, t in tensors.items()}
        names = self.params

        if "input.Tokens.weight" in names:
            self.input_kind = "tokens"
            self.vocab_size = names["input.Tokens.weight"].shape[0]
            self.input_dim = None
        elif "input.Vectors.weight" in names:
            self.input_kind = "vectors"
            self.vocab_size = None
            self.input_dim = names["input.Vectors.weight"].shape[0]
        else:
            raise KeyError("no input layer: expected input.Tokens.weight or input.Vectors.weight")
        self.tied = "head.weight" not in names
        if self.tied and self.input_kind != "tokens":
            raise ValueError("a tied head needs token inputs, but the export has input.Vectors")
        self.output_dim = self.vocab_size if self.tied else names["head.weight"].shape[1]
        if self.positions == "learned" and "positions.learned.weight" not in names:
            raise KeyError("model.positions = learned but positions.learned.weight is missing")

        self.rope = Rope(self.head_dim) if self.positions == "rope" else None
        self.layers = []
        for i, s in enumerate(self.specs):
            _, module = _mixer(s.family)
            prefix = f"blocks.{i}.mixer.{s.module}."
            p = {name[len(prefix):]: t for name, t in names.items() if name.startswith(prefix)}
            if "heads.qkv.weight" not in p:
                found = sorted({n.split(".")[3] for n in names if n.startswith(f"blocks.{i}.mixer.")})
                raise KeyError(f"layer {i} is '{s}' but the export has no {prefix}heads.qkv.weight (mixer modules found: {found})")
            if mixers is not None:
                _check_described_parameters(i, s, mixers[i]["parameters"], names)
            d_qk = qk_width(p, self.n_heads, self.head_dim)
            if s.qk_width is not None and s.qk_width != d_qk:
                raise ValueError(f"layer {i} ({s}) is described with {s.qk_width}-wide queries, its heads.qkv.weight holds {d_qk}")
            if self.rope is not None and d_qk != self.head_dim:
                raise ValueError(f"model.positions = rope needs {self.head_dim}-wide queries, layer {i} ({s}) has {d_qk}")
            self.layers.append((s, module, prefix))
        self.vocabulary = None

    def context(self, layer):
        return MixContext(
            d_model=self.d_model,
            n_heads=self.n_heads,
            max_seq_len=self.max_seq_len,
            layer=layer,
            causal=self.causal,
            bias=self.bias,
            rope=self.rope,
        )

    def spec_summary(self):
        """The mixer stack as attnlab prints it (``softmax`` or ``softmax,linear:elu1``)."""
        texts = [str(s) for s in self.specs]
        return texts[0] if len(set(texts)) == 1 else ",".join(texts)

    def embed(self, inputs, params):
        ops = self.ops
        if self.input_kind == "tokens":
            x = ops.take_rows(params["input.Tokens.weight"], inputs)
        else:
            x = affine(ops, ops.asarray(inputs), params["input.Vectors.weight"], params.get("input.Vectors.bias"))
        t = x.shape[1]
        if self.positions == "learned":
            if t > self.max_seq_len:
                raise ValueError(f"{t} positions but the model learned {self.max_seq_len} (model.max_seq_len)")
            x = x + params["positions.learned.weight"][:t]
        elif self.positions == "sinusoidal":
            x = x + ops.expand_dims(ops.asarray(sinusoidal_table(t, self.d_model)), 0)
        return x

    def forward(self, inputs, params=None):
        """Token ids ``[B, T]`` (integers) or vectors ``[B, T, dim]`` -> logits ``[B, T, output_dim]``.

        ``params`` replaces the stored parameters (the torch module passes its own each call).
        """
        ops = self.ops
        params = self.params if params is None else params
        x = self.embed(inputs, params)
        for i, (s, module, prefix) in enumerate(self.layers):
            p = {name[len(prefix):]: t for name, t in params.items() if name.startswith(prefix)}
            x = x + module.mix(ops, p, s, norm(ops, params, f"blocks.{i}.norm_mixer", x), self.context(i))
            if f"blocks.{i}.mlp.up.weight" in params:
                h = norm(ops, params, f"blocks.{i}.norm_mlp", x)
                h = gelu(ops, affine(ops, h, params[f"blocks.{i}.mlp.up.weight"], params.get(f"blocks.{i}.mlp.up.bias")))
                x = x + affine(ops, h, params[f"blocks.{i}.mlp.down.weight"], params.get(f"blocks.{i}.mlp.down.bias"))
        x = norm(ops, params, "norm", x)
        if self.tied:
            return ops.matmul(x, ops.swapaxes(params["input.Tokens.weight"], 0, 1))
        return affine(ops, x, params["head.weight"], params.get("head.bias"))

    __call__ = forward
