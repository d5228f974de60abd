//! A pre-norm transformer block generic over its sequence mixer:
//! `x ← x + Dropout(Mixer(Norm(x)))`, then (optionally) `x ← x + Dropout(MLP(Norm(x)))` with
//! `MLP(x) = W₂ GELU(W₁ x)` (Radford et al. 2019, GPT-2 layout; `gelu_tanh` is GPT-2's own
//! `0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))`) or the gated `MLP(x) = W₂ (silu(W_g x) ⊙ W₁ x)`
//! (SwiGLU, Shazeer 2020, arXiv 2002.05202; Llama, Qwen, Mistral). With `model.canon`, a Canon
//! layer (`h + conv(h)`, [`crate::canon`]) sits on the normalised input of the mixer (site A)
//! and/or of the MLP (site C).

use crate::canon::Canon;
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
pub const LAYER_NORM_EPSILON: f64 = 1e-5;

#[derive(Module, Debug)]
pub enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    /// `rms_eps` is RMSNorm's ε; LayerNorm keeps [`LAYER_NORM_EPSILON`].
    pub fn new(kind: NormKind, d_model: usize, rms_eps: f64, device: &Device) -> Self {
        match kind {
            NormKind::Layer => Norm::Layer(
                LayerNormConfig::new(d_model).with_epsilon(LAYER_NORM_EPSILON).init(device),
            ),
            NormKind::Rms => {
                Norm::Rms(RmsNormConfig::new(d_model).with_epsilon(rms_eps).init(device))
            }
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Norm::Layer(n) => fused::layer_norm(n, x, LAYER_NORM_EPSILON),
            Norm::Rms(n) => fused::rms_norm(n, x),
        }
    }
}

/// Which feed-forward network the blocks use (`model.mlp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// `W₂ GELU(W₁ x)`, exact (erf) GELU.
    #[default]
    Gelu,
    /// `W₂ GELU(W₁ x)` with GELU's tanh approximation (GPT-2 checkpoints' `gelu_new`).
    GeluTanh,
    /// `W₂ (silu(W_g x) ⊙ W₁ x)`.
    Swiglu,
}

/// Position-wise feed-forward network.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `weight: [d_model, hidden]`
    pub up: Linear,
    /// `weight: [hidden, d_model]`
    pub down: Linear,
    /// SwiGLU's gate, `weight: [d_model, hidden]`.
    pub gate: Option<Linear>,
    #[module(skip)]
    kind: MlpKind,
}

impl Mlp {
    pub fn new(kind: MlpKind, d_model: usize, hidden: usize, bias: bool, device: &Device) -> Self {
        let linear = |d_in, d_out| LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
        Self {
            up: linear(d_model, hidden),
            down: linear(hidden, d_model),
            gate: (kind == MlpKind::Swiglu).then(|| linear(d_model, hidden)),
            kind,
        }
    }

    pub fn kind(&self) -> MlpKind {
        self.kind
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = match (self.kind, &self.gate) {
            (MlpKind::Gelu, _) => fused::gelu(fused::affine(&self.up, x)),
            (MlpKind::GeluTanh, _) => gelu_tanh(fused::affine(&self.up, x)),
            (MlpKind::Swiglu, Some(gate)) => {
                fused::silu(fused::affine(gate, x.clone())) * fused::affine(&self.up, x)
            }
            (MlpKind::Swiglu, None) => unreachable!("a SwiGLU MLP is built with its gate"),
        };
        fused::affine(&self.down, hidden)
    }
}

/// GELU's tanh approximation, `0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))` (GPT-2's `gelu_new`),
/// with the cube as products (a float power of a negative base is NaN on some backends).
///
/// # Shapes
/// - any; the output has the input's shape
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt();
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube * 0.044715) * sqrt_2_over_pi;
    x * (inner.tanh() + 1.0) * 0.5
}

#[derive(Module, Debug)]
pub struct Block<M: SequenceMixer> {
    pub norm_mixer: Norm,
    pub mixer: M,
    pub norm_mlp: Option<Norm>,
    pub mlp: Option<Mlp>,
    pub dropout: Dropout,
    /// Canon site A: on the mixer's normalised input.
    pub canon_mixer: Option<Canon>,
    /// Canon site C: on the MLP's normalised input.
    pub canon_mlp: Option<Canon>,
}

/// One block's decoding state: its mixer's, and each Canon layer's last inputs.
#[derive(Clone, Debug)]
pub struct BlockState<S> {
    pub mixer: S,
    pub canon_mixer: Option<Tensor<3>>,
    pub canon_mlp: Option<Tensor<3>>,
}

impl<S> BlockState<S> {
    pub fn new(mixer: S) -> Self {
        Self { mixer, canon_mixer: None, canon_mlp: None }
    }
}

impl<M: SequenceMixer> Block<M> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        ctx: MixContext<'_>,
    ) -> (Tensor<3>, Option<AttentionDiagnostics>) {
        let mixed = self.mixer.forward(self.mixer_input(x.clone(), &mut None), ctx);
        let x = x + self.dropout.forward(mixed.output);
        (self.feed_forward(x, &mut None), mixed.diagnostics)
    }

    /// [`Self::forward`] that also returns the mixer's input (the normalised hidden state) and
    /// its output, what attention transfer (linearising a trained model) fits a new mixer to.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> the block's output, the mixer's input and output, each
    ///   `[batch, seq, d_model]`
    pub fn forward_with_mixer_io(
        &self,
        x: Tensor<3>,
        ctx: MixContext<'_>,
    ) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let mixer_in = self.mixer_input(x.clone(), &mut None);
        let mixed = self.mixer.forward(mixer_in.clone(), ctx).output;
        let y = self.feed_forward(x + self.dropout.forward(mixed.clone()), &mut None);
        (y, mixer_in, mixed)
    }

    /// Incremental forward over the next tokens; see [`SequenceMixer::step`].
    pub fn step(
        &self,
        x: Tensor<3>,
        state: &mut BlockState<M::State>,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let input = self.mixer_input(x.clone(), &mut state.canon_mixer);
        let mixed = self.mixer.step(input, &mut state.mixer, rope);
        self.feed_forward(x + mixed, &mut state.canon_mlp)
    }

    /// The mixer's input: the normalised hidden state, through Canon site A when present
    /// (continuing from `history` while decoding).
    fn mixer_input(&self, x: Tensor<3>, history: &mut Option<Tensor<3>>) -> Tensor<3> {
        let h = self.norm_mixer.forward(x);
        match &self.canon_mixer {
            Some(canon) => canon.forward(h, history),
            None => h,
        }
    }

    fn feed_forward(&self, x: Tensor<3>, history: &mut Option<Tensor<3>>) -> Tensor<3> {
        match (&self.norm_mlp, &self.mlp) {
            (Some(norm), Some(mlp)) => {
                let mut h = norm.forward(x.clone());
                if let Some(canon) = &self.canon_mlp {
                    h = canon.forward(h, history);
                }
                x + self.dropout.forward(mlp.forward(h))
            }
            _ => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, randn};

    /// SwiGLU is `down(silu(gate x) ⊙ up x)` and GELU-tanh its formula, against values computed
    /// here elementwise.
    #[test]
    fn mlp_kinds_compute_their_formulas() {
        let d = device();
        let x = randn([2, 3, 4], 11, &d);
        // Weights drawn under the seeded generator's lock (crate::seeding): another test may
        // hold the shared stream.
        let seeded = |kind, bias| {
            crate::seeding::with_seed(&d, 21, || {
                let mlp = Mlp::new(kind, 4, 6, bias, &d);
                crate::seeding::materialize(&mlp);
                mlp
            })
        };
        let swiglu = seeded(MlpKind::Swiglu, true);
        let gate = fused::affine(swiglu.gate.as_ref().unwrap(), x.clone());
        let silu = gate.clone() / (gate.neg().exp() + 1.0);
        let expect = fused::affine(&swiglu.down, silu * fused::affine(&swiglu.up, x.clone()));
        assert_close(swiglu.forward(x.clone()), expect, 1e-6, "swiglu");

        let tanh = seeded(MlpKind::GeluTanh, false);
        let h: Vec<f32> =
            fused::affine(&tanh.up, x.clone()).into_data().iter::<f32>().collect::<Vec<_>>();
        let by_hand: Vec<f32> = h
            .iter()
            .map(|&v| {
                let v = v as f64;
                (0.5 * v
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3)))
                            .tanh())) as f32
            })
            .collect();
        let hidden = Tensor::<1>::from_floats(by_hand.as_slice(), &d).reshape([2, 3, 6]);
        assert_close(tanh.forward(x), fused::affine(&tanh.down, hidden), 1e-5, "gelu_tanh");
    }
}
