//! The model's configuration (the `[model]` table of a run config), its validation, and `init`.
//!
//! Defaults are nanoGPT's CPU recipe: 4 layers, 4 heads, width 128, context 64, GELU MLP of
//! width 4·d, learned positions, LayerNorm, no dropout, untied head without bias.

use crate::block::{Block, Mlp, Norm, NormKind};
use crate::families::MixerSpec;
use crate::families::softmax::SoftmaxAttentionConfig;
use crate::init::InitScheme;
use crate::lm::{InputLayer, Lm, Model};
use crate::mixer::{MixerDescription, MixerDims, MixerError};
use crate::position::{PositionKind, Positions};
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
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    fn dims(&self, layer: usize, seed: u64) -> MixerDims {
        MixerDims {
            d_model: self.d_model,
            n_heads: self.n_heads,
            max_seq_len: self.max_seq_len,
            seed,
            layer,
            bias: self.bias,
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
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(ModelConfigError::HeadsDoNotDivide {
                d_model: self.d_model,
                n_heads: self.n_heads,
            });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelConfigError::Dropout { dropout: self.dropout });
        }
        for layer in 0..self.n_layers {
            let spec = self.mixer.for_layer(layer, self.n_layers)?;
            spec.validate(&self.dims(layer, 0))?;
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
            .sum()
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
        let positions =
            Positions::new(self.positions, self.max_seq_len, self.d_model, self.head_dim(), device);
        let dropout = || DropoutConfig::new(self.dropout).init();
        let blocks = (0..self.n_layers)
            .map(|layer| {
                let spec = self.mixer.for_layer(layer, self.n_layers).expect("validated");
                Block {
                    norm_mixer: Norm::new(self.norm, self.d_model, device),
                    mixer: spec.init(&self.dims(layer, seed), device),
                    norm_mlp: (self.mlp_ratio > 0)
                        .then(|| Norm::new(self.norm, self.d_model, device)),
                    mlp: (self.mlp_ratio > 0)
                        .then(|| Mlp::new(self.d_model, self.mlp_ratio, self.bias, device)),
                    dropout: dropout(),
                }
            })
            .collect();
        let head = (!self.tie_embeddings)
            .then(|| LinearConfig::new(self.d_model, io.output_dim).with_bias(false).init(device));
        Lm {
            input,
            positions,
            blocks,
            norm: Norm::new(self.norm, self.d_model, device),
            head,
            dropout: dropout(),
            causal: self.causal,
            max_seq_len: self.max_seq_len,
        }
    }
}
