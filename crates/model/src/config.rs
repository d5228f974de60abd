//! The model's configuration (the `[model]` table of a run config), its validation, and `init`.
//!
//! Defaults are nanoGPT's CPU recipe: 4 layers, 4 heads, width 128, context 64, GELU MLP of
//! width 4·d, learned positions, LayerNorm, no dropout, untied head without bias.

use crate::block::{Block, Mlp, MlpKind, Norm, NormKind};
use crate::canon::{Canon, CanonKernelError, CanonSites};
use crate::families::MixerSpec;
use crate::families::softmax::SoftmaxAttentionConfig;
use crate::init::InitScheme;
use crate::lm::{InputLayer, Lm, Model};
use crate::mixer::{MixerDescription, MixerDims, MixerError};
use crate::position::{PositionKind, Positions, RopeScaling, RopeScalingError, RopeSettings};
use crate::stack::{MixerStack, StackLengthError};
use burn::nn::{DropoutConfig, EmbeddingConfig, LinearConfig};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Residual width.
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    /// One attention spec for every layer, or one per layer (see `attnlab variants`).
    pub mixer: MixerStack,
    pub positions: PositionKind,
    pub norm: NormKind,
    /// MLP hidden width as a multiple of `d_model`; 0 = attention-only blocks (MQAR configs).
    pub mlp_ratio: usize,
    pub dropout: f64,
    /// Share the token embedding with the output head.
    pub tie_embeddings: bool,
    /// Longest sequence (context length).
    pub max_seq_len: usize,
    /// Causal (language modelling) or bidirectional (classification).
    pub causal: bool,
    /// Biases on the attention and MLP projections.
    pub bias: bool,
    /// How the weights start: `burn` (Burn's defaults) or `gpt2` (N(0, 0.02), nanoGPT's and
    /// zoology's); see `init.rs`.
    pub init: InitScheme,
    /// The MLP: `gelu` (GPT-2 as attnlab trains it, exact erf), `gelu_tanh` (GPT-2 checkpoints'
    /// `gelu_new`) or `swiglu` (Llama, Qwen, Mistral: `down(silu(gate·x) ⊙ up·x)`).
    #[serde(skip_serializing_if = "is_default")]
    pub mlp: MlpKind,
    /// The MLP's hidden width; 0 = `mlp_ratio · d_model`.
    #[serde(skip_serializing_if = "is_default")]
    pub mlp_hidden: usize,
    /// Key/value heads, grouped-query attention (Ainslie et al. 2023); must divide `n_heads`.
    /// 0 = `n_heads` (multi-head), 1 = multi-query.
    #[serde(skip_serializing_if = "is_default")]
    pub n_kv_heads: usize,
    /// Per-head width; 0 = `d_model / n_heads`. Qwen3 sets it so that `n_heads · head_dim`
    /// differs from `d_model`.
    #[serde(skip_serializing_if = "is_default")]
    pub head_dim: usize,
    /// RoPE's base θ (`positions = "rope"`): pair i of a head turns at `θ^(−2i/head_dim)`.
    #[serde(skip_serializing_if = "is_default_theta")]
    pub rope_theta: f64,
    /// Llama 3's RoPE frequency scaling, when a checkpoint declares it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// Bias on the q/k/v projection; unset = `bias` (Qwen2: true with `bias = false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qkv_bias: Option<bool>,
    /// Bias on the attention output projection; unset = `bias`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_bias: Option<bool>,
    /// Bias on the MLP's projections; unset = `bias`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// RMSNorm's ε (Llama 1e-5, Qwen 1e-6). LayerNorm keeps GPT-2's 1e-5.
    #[serde(skip_serializing_if = "is_default_eps")]
    pub norm_eps: f64,
    /// Qwen3's per-head RMSNorm (learned gain `[head_dim]`, ε = `norm_eps`) on queries and keys
    /// before RoPE, in every family. Distinct from `softmax:qk_norm`, a score scaling that
    /// L2-normalises q and k and learns one gain per head.
    #[serde(skip_serializing_if = "is_default")]
    pub qk_head_norm: bool,
    /// Canon layers (Allen-Zhu 2025; [`crate::canon`]): `a` before the mixer, `c` before the
    /// MLP, `ac` both; empty for none.
    #[serde(skip_serializing_if = "is_default")]
    pub canon: CanonSites,
    /// The Canon layers' kernel (taps).
    #[serde(skip_serializing_if = "is_default_canon_kernel")]
    pub canon_kernel: usize,
}

fn is_default_canon_kernel(kernel: &usize) -> bool {
    *kernel == crate::canon::DEFAULT_KERNEL
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// RoPE's base when the config does not say (Su et al. 2021; GPT-NeoX, Llama 2).
pub const DEFAULT_ROPE_THETA: f64 = 10_000.0;
/// RMSNorm's ε when the config does not say (Burn's and Llama's).
pub const DEFAULT_NORM_EPS: f64 = 1e-5;

fn is_default_theta(theta: &f64) -> bool {
    *theta == DEFAULT_ROPE_THETA
}

fn is_default_eps(eps: &f64) -> bool {
    *eps == DEFAULT_NORM_EPS
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            d_model: 128,
            n_heads: 4,
            n_layers: 4,
            mixer: MixerStack::uniform(MixerSpec::from(SoftmaxAttentionConfig::default())),
            positions: PositionKind::Learned,
            norm: NormKind::Layer,
            mlp_ratio: 4,
            dropout: 0.0,
            tie_embeddings: false,
            max_seq_len: 64,
            causal: true,
            bias: true,
            init: InitScheme::Burn,
            mlp: MlpKind::Gelu,
            mlp_hidden: 0,
            n_kv_heads: 0,
            head_dim: 0,
            rope_theta: DEFAULT_ROPE_THETA,
            rope_scaling: None,
            qkv_bias: None,
            out_bias: None,
            mlp_bias: None,
            norm_eps: DEFAULT_NORM_EPS,
            qk_head_norm: false,
            canon: CanonSites::default(),
            canon_kernel: crate::canon::DEFAULT_KERNEL,
        }
    }
}

/// What the task feeds in and reads out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelInput {
    Tokens { vocab: usize },
    Vectors { dim: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelIo {
    pub input: ModelInput,
    /// Logits per position (vocabulary size) or regression outputs.
    pub output_dim: usize,
}

/// A config value that cannot build a model; the message names the key and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelConfigError {
    /// `model.<key>` is 0 where a size must be at least 1.
    #[error("model.{key} is 0: it must be at least 1")]
    Zero { key: &'static str },
    #[error(
        "model.d_model ({d_model}) is not divisible by model.n_heads ({n_heads}): choose a d_model that is a multiple of n_heads"
    )]
    HeadsDoNotDivide { d_model: usize, n_heads: usize },
    #[error("model.dropout ({dropout}) must be in [0, 1)")]
    Dropout { dropout: f64 },
    #[error(transparent)]
    StackLength(#[from] StackLengthError),
    /// A layer's mixer does not fit the model's shape.
    #[error(transparent)]
    Mixer(#[from] MixerError),
    /// RoPE rotates head-wide pairs; a layer's queries of another width cannot take it.
    #[error(
        "model.positions = \"rope\" rotates {head_dim}-wide heads but layer {layer} ({spec}) has {qk_width}-wide queries: \
         set feature_dim to an even divisor of {head_dim} or use other positions"
    )]
    RopeWidth { layer: usize, spec: String, head_dim: usize, qk_width: usize },
    #[error("model.positions = \"rope\" needs an even head dim, d_model/n_heads is {head_dim}")]
    RopeOddHead { head_dim: usize },
    #[error(
        "model.tie_embeddings needs token inputs and outputs over the same vocabulary; set it to false for this task"
    )]
    TiedEmbeddings,
    #[error("the task's input size is 0")]
    EmptyInput,
    #[error(
        "model.n_kv_heads ({n_kv_heads}) does not divide model.n_heads ({n_heads}): choose a divisor (1 = multi-query, n_heads = multi-head)"
    )]
    KvHeadsDoNotDivide { n_kv_heads: usize, n_heads: usize },
    #[error("model.{key} ({value}) must be a finite number > 0")]
    NotPositive { key: &'static str, value: f64 },
    #[error("model.rope_scaling: {0}")]
    RopeScaling(#[from] RopeScalingError),
    #[error(transparent)]
    CanonKernel(#[from] CanonKernelError),
    #[error("{reason}")]
    Canon { reason: String },
    #[error(
        "model.{key} is set but model.positions is \"{positions}\": it applies to positions = \"rope\" only; remove it or use RoPE"
    )]
    RopeOnly { key: &'static str, positions: String },
    #[error(
        "layer {layer} ({spec}) rotates a part of its own that needs model.positions = \"rope\" (it is \"{positions}\"): set positions = \"rope\" or drop rope_dim"
    )]
    NeedsRope { layer: usize, spec: String, positions: String },
}

impl ModelConfig {
    /// Per-head width: `model.head_dim`, or `d_model / n_heads` when that is 0.
    pub fn head_dim(&self) -> usize {
        match self.head_dim {
            0 => self.d_model / self.n_heads.max(1),
            set => set,
        }
    }

    /// Key/value heads: `model.n_kv_heads`, or `n_heads` when that is 0.
    pub fn kv_heads(&self) -> usize {
        match self.n_kv_heads {
            0 => self.n_heads,
            set => set,
        }
    }

    /// The MLP's hidden width (0: no MLP).
    pub fn mlp_width(&self) -> usize {
        match self.mlp_hidden {
            0 => self.mlp_ratio * self.d_model,
            set => set,
        }
    }

    fn dims(&self, layer: usize, seed: u64) -> MixerDims {
        MixerDims {
            d_model: self.d_model,
            n_heads: self.n_heads,
            n_kv_heads: self.kv_heads(),
            d_head: self.head_dim(),
            max_seq_len: self.max_seq_len,
            seed,
            layer,
            n_layers: self.n_layers,
            bias: self.qkv_bias.unwrap_or(self.bias),
            out_bias: self.out_bias.unwrap_or(self.bias),
            qk_head_norm: self.qk_head_norm.then_some(self.norm_eps),
            causal: self.causal,
        }
    }

    /// Checks every value against the others, without the task: the sizes, dropout, and each
    /// layer's mixer against the widths it gets (RoPE's included). A run config calls this when
    /// it is read, so a comparison refuses an arm when it is planned, before anything trains.
    pub fn validate_shape(&self) -> Result<(), ModelConfigError> {
        for (key, value) in [
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_layers", self.n_layers),
            ("max_seq_len", self.max_seq_len),
        ] {
            if value == 0 {
                return Err(ModelConfigError::Zero { key });
            }
        }
        if self.head_dim == 0 && !self.d_model.is_multiple_of(self.n_heads) {
            return Err(ModelConfigError::HeadsDoNotDivide {
                d_model: self.d_model,
                n_heads: self.n_heads,
            });
        }
        if !self.n_heads.is_multiple_of(self.kv_heads()) {
            return Err(ModelConfigError::KvHeadsDoNotDivide {
                n_kv_heads: self.n_kv_heads,
                n_heads: self.n_heads,
            });
        }
        for (key, value) in [("rope_theta", self.rope_theta), ("norm_eps", self.norm_eps)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ModelConfigError::NotPositive { key, value });
            }
        }
        if self.positions != PositionKind::Rope {
            let positions = format!("{:?}", self.positions).to_lowercase();
            if self.rope_scaling.is_some() {
                return Err(ModelConfigError::RopeOnly { key: "rope_scaling", positions });
            }
            if self.rope_theta != DEFAULT_ROPE_THETA {
                return Err(ModelConfigError::RopeOnly { key: "rope_theta", positions });
            }
        }
        if let Some(scaling) = &self.rope_scaling {
            scaling.validate()?;
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelConfigError::Dropout { dropout: self.dropout });
        }
        if self.canon.any() {
            crate::canon::check_kernel(self.canon_kernel)?;
        }
        if self.canon.before_mlp && self.mlp_width() == 0 {
            return Err(ModelConfigError::Canon {
                reason: format!(
                    "model.canon = \"{}\" puts a Canon layer before the MLP, but the blocks have none (mlp_ratio = 0): use canon = \"a\" or give the blocks an MLP",
                    self.canon
                ),
            });
        }
        for layer in 0..self.n_layers {
            let spec = self.mixer.for_layer(layer, self.n_layers)?;
            spec.validate(&self.dims(layer, 0))?;
            if spec.needs_rope() && self.positions != PositionKind::Rope {
                return Err(ModelConfigError::NeedsRope {
                    layer,
                    spec: spec.to_string(),
                    positions: format!("{:?}", self.positions).to_lowercase(),
                });
            }
            let d_qk = spec.qk_width(&self.dims(layer, 0));
            // A narrower query gets the RoPE of its own width, read from the head-wide table
            // (position::rope_pair_angles), which needs a width that divides the head's.
            let head = self.head_dim();
            if self.positions == PositionKind::Rope
                && (d_qk > head || d_qk % 2 != 0 || !head.is_multiple_of(d_qk))
            {
                return Err(ModelConfigError::RopeWidth {
                    layer,
                    spec: spec.to_string(),
                    head_dim: head,
                    qk_width: d_qk,
                });
            }
        }
        if self.positions == PositionKind::Rope && !self.head_dim().is_multiple_of(2) {
            return Err(ModelConfigError::RopeOddHead { head_dim: self.head_dim() });
        }
        Ok(())
    }

    /// [`validate_shape`](Self::validate_shape), then the values that depend on the task's
    /// input and output (a char LM's vocabulary is only known once its data is read).
    pub fn validate(&self, io: &ModelIo) -> Result<(), ModelConfigError> {
        self.validate_shape()?;
        if self.tie_embeddings {
            match io.input {
                ModelInput::Tokens { vocab } if vocab == io.output_dim => {}
                _ => return Err(ModelConfigError::TiedEmbeddings),
            }
        }
        if let ModelInput::Tokens { vocab: 0 } | ModelInput::Vectors { dim: 0 } = io.input {
            return Err(ModelConfigError::EmptyInput);
        }
        Ok(())
    }

    /// Each layer's mixer fully resolved (see [`MixerDescription`]), for exports.
    pub fn describe_mixers(&self) -> Result<Vec<MixerDescription>, ModelConfigError> {
        (0..self.n_layers)
            .map(|layer| {
                let spec = self.mixer.for_layer(layer, self.n_layers)?;
                Ok(spec.describe(&self.dims(layer, 0)))
            })
            .collect()
    }

    /// Floats one sequence's decoding state holds after `seq_len` tokens, summed over layers,
    /// each family counting its own (a KV cache grows with the context; linear attention's sums
    /// do not).
    pub fn decode_state_floats(&self, seq_len: usize) -> usize {
        (0..self.n_layers)
            .map(|layer| match self.mixer.for_layer(layer, self.n_layers) {
                Ok(spec) => spec.decode_state_floats(&self.dims(layer, 0), seq_len),
                Err(_) => 0,
            })
            .sum::<usize>()
            + self.n_layers * self.canon_state_floats()
    }

    /// One block's Canon layers' decoding state (their last inputs), 0 without Canon layers.
    fn canon_state_floats(&self) -> usize {
        crate::canon::state_floats(self.canon, self.canon_kernel, self.d_model)
    }

    /// Builds the model; `seed` fixes the initial weights (and Performer's random features).
    pub fn init(
        &self,
        io: &ModelIo,
        seed: u64,
        device: &Device,
    ) -> Result<Model, ModelConfigError> {
        self.validate(io)?;
        Ok(crate::seeding::with_seed(device, seed, || {
            let model = self.build(io, seed, device);
            crate::seeding::materialize(&model);
            match self.init {
                InitScheme::Burn => model,
                InitScheme::Gpt2 => crate::init::apply_gpt2(model, self.n_layers),
            }
        }))
    }

    fn build(&self, io: &ModelIo, seed: u64, device: &Device) -> Model {
        let input = match io.input {
            ModelInput::Tokens { vocab } => {
                InputLayer::Tokens(EmbeddingConfig::new(vocab, self.d_model).init(device))
            }
            ModelInput::Vectors { dim } => {
                InputLayer::Vectors(LinearConfig::new(dim, self.d_model).init(device))
            }
        };
        let rope = RopeSettings { theta: self.rope_theta, scaling: self.rope_scaling.clone() };
        let positions = Positions::new(
            self.positions,
            self.max_seq_len,
            self.d_model,
            self.head_dim(),
            &rope,
            device,
        );
        let norm = || Norm::new(self.norm, self.d_model, self.norm_eps, device);
        let mlp_width = self.mlp_width();
        let mlp_bias = self.mlp_bias.unwrap_or(self.bias);
        let dropout = || DropoutConfig::new(self.dropout).init();
        let blocks = (0..self.n_layers)
            .map(|layer| {
                let spec = self.mixer.for_layer(layer, self.n_layers).expect("validated");
                Block {
                    norm_mixer: norm(),
                    mixer: spec.init(&self.dims(layer, seed), device),
                    norm_mlp: (mlp_width > 0).then(norm),
                    mlp: (mlp_width > 0)
                        .then(|| Mlp::new(self.mlp, self.d_model, mlp_width, mlp_bias, device)),
                    dropout: dropout(),
                    canon_mixer: self.canon.before_mixer.then(|| {
                        Canon::new(self.d_model, self.canon_kernel, seed, layer, 0, device)
                    }),
                    canon_mlp: self.canon.before_mlp.then(|| {
                        Canon::new(self.d_model, self.canon_kernel, seed, layer, 1, device)
                    }),
                }
            })
            .collect();
        let head = (!self.tie_embeddings)
            .then(|| LinearConfig::new(self.d_model, io.output_dim).with_bias(false).init(device));
        Lm {
            input,
            positions,
            blocks,
            norm: norm(),
            head,
            dropout: dropout(),
            causal: self.causal,
            max_seq_len: self.max_seq_len,
        }
    }
}
