//! A pre-norm transformer block generic over its sequence mixer:
//! `x ← x + Dropout(Mixer(Norm(x)))`, then (optionally) `x ← x + Dropout(MLP(Norm(x)))` with
//! `MLP(x) = W₂ GELU(W₁ x)` (Radford et al. 2019, GPT-2 layout).

use crate::fused;
use crate::mixer::{AttentionDiagnostics, MixContext, SequenceMixer};
use burn::module::Module;
use burn::nn::{
    Dropout, LayerNorm, LayerNormConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig,
    RotaryEncoding,
};
use burn::tensor::{Device, Tensor};

/// Which normalisation the blocks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// LayerNorm with bias (GPT-2).
    #[default]
    Layer,
    /// RMSNorm (no centring, no bias).
    Rms,
}

/// LayerNorm's ε (GPT-2's and Burn's default).
const LAYER_NORM_EPSILON: f64 = 1e-5;

#[derive(Module, Debug)]
pub enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    pub fn new(kind: NormKind, d_model: usize, device: &Device) -> Self {
        match kind {
            NormKind::Layer => Norm::Layer(
                LayerNormConfig::new(d_model).with_epsilon(LAYER_NORM_EPSILON).init(device),
            ),
            NormKind::Rms => Norm::Rms(RmsNormConfig::new(d_model).init(device)),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Norm::Layer(n) => fused::layer_norm(n, x, LAYER_NORM_EPSILON),
            Norm::Rms(n) => n.forward(x),
        }
    }
}

/// Position-wise feed-forward network.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `weight: [d_model, ratio * d_model]`
    pub up: Linear,
    /// `weight: [ratio * d_model, d_model]`
    pub down: Linear,
}

impl Mlp {
    pub fn new(d_model: usize, ratio: usize, bias: bool, device: &Device) -> Self {
        Self {
            up: LinearConfig::new(d_model, ratio * d_model).with_bias(bias).init(device),
            down: LinearConfig::new(ratio * d_model, d_model).with_bias(bias).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        fused::affine(&self.down, fused::gelu(fused::affine(&self.up, x)))
    }
}

#[derive(Module, Debug)]
pub struct Block<M: SequenceMixer> {
    pub norm_mixer: Norm,
    pub mixer: M,
    pub norm_mlp: Option<Norm>,
    pub mlp: Option<Mlp>,
    pub dropout: Dropout,
}

impl<M: SequenceMixer> Block<M> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        ctx: MixContext<'_>,
    ) -> (Tensor<3>, Option<AttentionDiagnostics>) {
        let mixed = self.mixer.forward(self.norm_mixer.forward(x.clone()), ctx);
        let x = x + self.dropout.forward(mixed.output);
        (self.feed_forward(x), mixed.diagnostics)
    }

    /// Incremental forward over the next tokens; see [`SequenceMixer::step`].
    pub fn step(
        &self,
        x: Tensor<3>,
        state: &mut M::State,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let mixed = self.mixer.step(self.norm_mixer.forward(x.clone()), state, rope);
        self.feed_forward(x + mixed)
    }

    fn feed_forward(&self, x: Tensor<3>) -> Tensor<3> {
        match (&self.norm_mlp, &self.mlp) {
            (Some(norm), Some(mlp)) => {
                x.clone() + self.dropout.forward(mlp.forward(norm.forward(x)))
            }
            _ => x,
        }
    }
}
