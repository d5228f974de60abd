"""The attnlab transformer, written once against ``ops`` (mirrors crates/model/src/lm.rs and block.rs).

``forward``: embed (token embedding ``input.Tokens.weight[ids]``, or the affine read-in
``vectors @ input.Vectors.weight + bias``), add positions (learned or sinusoidal; RoPE, with base
``model.rope_theta`` and optional Llama 3 ``model.rope_scaling``, acts inside attention), then
per block, pre-norm ``x += mixer(norm_mixer(x))`` and, when the block has an MLP,
``x += mlp(norm_mlp(x))`` (with ``model.canon``, a Canon layer ``h + conv(h)`` on the normalised
input of the mixer, site ``a``, and/or of the MLP, site ``c``); then the final ``norm`` and the head (``x @ head.weight``, or
``x @ input.Tokens.weight^T`` when tied). Dropout is off (eval).

The MLP (``model.mlp``): ``gelu`` is ``down(GELU(up(x)))`` with the exact (erf) GELU,
``gelu_tanh`` the same with GELU's tanh approximation, ``swiglu`` is
``down(silu(gate(x)) ⊙ up(x))``; its hidden width is the weights' (``model.mlp_hidden``, or
``mlp_ratio·d_model``). The norms are LayerNorm (ε 1e-5) or RMSNorm (ε ``model.norm_eps``).
Heads are ``model.head_dim`` wide (``d_model / n_heads`` by default); ``model.n_kv_heads``
(grouped-query attention) and ``model.qk_head_norm`` (Qwen3's per-head q/k RMSNorm) shape the
packed projection every mixer starts from (``heads.py``). ``qkv_bias``, ``out_bias`` and
``mlp_bias`` only decide which bias tensors exist, and every bias is read when it is there.
"""

import math

from . import spec as _spec
from .context import MixContext
from .heads import affine, qk_width
from .mixers import mixer as _mixer
from .mixers._short_conv import causal_conv
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
    # gelu | gelu_tanh | swiglu.
    "mlp": "gelu",
    # The MLP's hidden width, 0 = mlp_ratio · d_model (read off the weights here).
    "mlp_hidden": 0,
    # Key/value heads (grouped-query attention), 0 = n_heads.
    "n_kv_heads": 0,
    # Per-head width, 0 = d_model / n_heads.
    "head_dim": 0,
    "rope_theta": 10000.0,
    # None, or {type = "llama3", factor, low_freq_factor, high_freq_factor,
    # original_max_position_embeddings}.
    "rope_scaling": None,
    # Which biases exist (None = `bias`): the tensors say it, and every one present is read.
    "qkv_bias": None,
    "out_bias": None,
    "mlp_bias": None,
    # RMSNorm's ε, and the per-head q/k norm's.
    "norm_eps": 1e-5,
    # Qwen3's per-head RMSNorm of queries and keys (heads.q_norm.gamma, heads.k_norm.gamma).
    "qk_head_norm": False,
    # Canon layers (Allen-Zhu 2025): "a" before the mixer, "c" before the MLP, "ac" both, ""
    # none; read off the weights here (blocks.{i}.canon_mixer / canon_mlp .conv.weight [K, d]).
    "canon": "",
    "canon_kernel": 4,
}

MLP_KINDS = ("gelu", "gelu_tanh", "swiglu")


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


def gelu_tanh(ops, x):
    """GELU's tanh approximation (GPT-2's ``gelu_new``), ``0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))``."""
    return 0.5 * x * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def mlp(ops, params, prefix, x, kind="gelu"):
    """The block's MLP under ``prefix`` (``blocks.<i>.mlp``), ``[B, T, d_model] -> [B, T, d_model]``:
    ``down(GELU(up(x)))`` (``gelu``, exact; ``gelu_tanh``, tanh approximation) or
    ``down(silu(gate(x)) ⊙ up(x))`` (``swiglu``)."""
    def linear(name, h):
        return affine(ops, h, params[f"{prefix}.{name}.weight"], params.get(f"{prefix}.{name}.bias"))

    if kind == "gelu":
        hidden = gelu(ops, linear("up", x))
    elif kind == "gelu_tanh":
        hidden = gelu_tanh(ops, linear("up", x))
    elif kind == "swiglu":
        hidden = ops.silu(linear("gate", x)) * linear("up", x)
    else:
        raise ValueError(f"model.mlp = {kind!r}: expected one of {', '.join(MLP_KINDS)}")
    return linear("down", hidden)


def canon(ops, params, prefix, x):
    """A Canon layer, ``x + conv(x)`` (causal, depthwise, no bias or activation), where the
    weights have one at ``prefix`` (``model.canon``'s sites; crates/model/src/canon.rs); ``x``
    itself otherwise."""
    weight = params.get(f"{prefix}.conv.weight")
    return x if weight is None else x + causal_conv(ops, x, weight)


def norm(ops, params, prefix, x, rms_eps=RMS_NORM_EPS):
    """LayerNorm (biased variance, ε 1e-5) or Burn's RmsNorm (``x / √(mean(x²) + ε) · γ``, ε
    ``rms_eps``: ``model.norm_eps``), whichever the parameters under ``prefix`` are."""
    if prefix + ".Layer.gamma" in params:
        mean = ops.mean(x, axis=-1, keepdims=True)
        centred = x - mean
        var = ops.mean(centred * centred, axis=-1, keepdims=True)
        y = centred / ops.sqrt(var + LAYER_NORM_EPS) * params[prefix + ".Layer.gamma"]
        beta = params.get(prefix + ".Layer.beta")
        return y if beta is None else y + beta
    if prefix + ".Rms.gamma" in params:
        rms = ops.sqrt(ops.mean(x * x, axis=-1, keepdims=True) + rms_eps)
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


def _head_shape(c):
    """``(head_dim, n_kv_heads)`` of a filled-in ``[model]`` table, the zeros resolved
    (``d_model / n_heads`` and ``n_heads``), as ``ModelConfig::validate_shape`` checks them."""
    d_model, n_heads = c["d_model"], c["n_heads"]
    if c["head_dim"] == 0 and d_model % n_heads:
        raise ValueError(f"model.d_model ({d_model}) is not divisible by model.n_heads ({n_heads})")
    kv = c["n_kv_heads"] or n_heads
    if n_heads % kv:
        raise ValueError(f"model.n_kv_heads ({kv}) does not divide model.n_heads ({n_heads})")
    return c["head_dim"] or d_model // n_heads, kv


def _check_head_norm(layer, spec, p, wanted, prefix="heads."):
    """``model.qk_head_norm`` and the layer's ``heads.q_norm.gamma``/``heads.k_norm.gamma``
    (``q_norm.gamma``/``k_norm.gamma`` for a family with projections of its own, ``prefix``
    ``""``) must agree: the projection reads the gains whenever they are there."""
    held = [f"{prefix}q_norm.gamma" in p, f"{prefix}k_norm.gamma" in p]
    if held != [wanted, wanted]:
        raise ValueError(
            f"layer {layer} ({spec}): model.qk_head_norm = {str(wanted).lower()} but the export "
            f"{'has' if held[0] else 'lacks'} {prefix}q_norm.gamma and {'has' if held[1] else 'lacks'} {prefix}k_norm.gamma"
        )


def _check_mlp(layer, params, kind):
    """A SwiGLU block has ``mlp.gate``, a GELU one has not (its gate would go unread)."""
    prefix = f"blocks.{layer}.mlp."
    if prefix + "up.weight" not in params:
        return
    has_gate = prefix + "gate.weight" in params
    if has_gate != (kind == "swiglu"):
        raise ValueError(
            f"model.mlp = {kind!r} but block {layer}'s MLP {'has' if has_gate else 'has no'} gate "
            f"({prefix}gate.weight)"
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
        self.head_dim, self.n_kv_heads = _head_shape(c)
        self.mlp_kind, self.norm_eps = c["mlp"], c["norm_eps"]
        if self.mlp_kind not in MLP_KINDS:
            raise ValueError(f"model.mlp = {self.mlp_kind!r}: expected one of {', '.join(MLP_KINDS)}")
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

        self.rope = Rope(self.head_dim, c["rope_theta"], c["rope_scaling"]) if self.positions == "rope" else None
        self.layers = []
        for i, s in enumerate(self.specs):
            _, module = _mixer(s.family)
            prefix = f"blocks.{i}.mixer.{s.module}."
            p = {name[len(prefix):]: t for name, t in names.items() if name.startswith(prefix)}
            # A family with projections of its own (MLA) reads its query/key width off them.
            own_width = getattr(module, "qk_width", None)
            if own_width is None and "heads.qkv.weight" not in p:
                found = sorted({n.split(".")[3] for n in names if n.startswith(f"blocks.{i}.mixer.")})
                raise KeyError(f"layer {i} is '{s}' but the export has no {prefix}heads.qkv.weight (mixer modules found: {found})")
            if mixers is not None:
                _check_described_parameters(i, s, mixers[i]["parameters"], names)
            _check_head_norm(i, s, p, c["qk_head_norm"], "" if own_width else "heads.")
            if own_width is None:
                d_qk = qk_width(p, self.n_heads, self.head_dim, self.n_kv_heads)
            else:
                d_qk = own_width(p, self.context(i))
            if s.qk_width is not None and s.qk_width != d_qk:
                raise ValueError(f"layer {i} ({s}) is described with {s.qk_width}-wide queries, its heads.qkv.weight holds {d_qk}")
            if self.rope is not None and d_qk != self.head_dim:
                raise ValueError(f"model.positions = rope needs {self.head_dim}-wide queries, layer {i} ({s}) has {d_qk}")
            self.layers.append((s, module, prefix))
            _check_mlp(i, names, self.mlp_kind)
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
            n_kv_heads=self.n_kv_heads,
            d_head=self.head_dim,
            norm_eps=self.norm_eps,
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
            h = canon(ops, params, f"blocks.{i}.canon_mixer", norm(ops, params, f"blocks.{i}.norm_mixer", x, self.norm_eps))
            x = x + module.mix(ops, p, s, h, self.context(i))
            if f"blocks.{i}.mlp.up.weight" in params:
                h = canon(ops, params, f"blocks.{i}.canon_mlp", norm(ops, params, f"blocks.{i}.norm_mlp", x, self.norm_eps))
                x = x + mlp(ops, params, f"blocks.{i}.mlp", h, self.mlp_kind)
        x = norm(ops, params, "norm", x, self.norm_eps)
        if self.tied:
            return ops.matmul(x, ops.swapaxes(params["input.Tokens.weight"], 0, 1))
        return affine(ops, x, params["head.weight"], params.get("head.bias"))

    __call__ = forward
