//! The delta-rule attention module: its writing strengths `β`, its gates, its features
//! (projection, short convolution or SiLU, L2 norm, RoPE, `q` scaling), the full-sequence
//! forward (both ways when bidirectional) and decoding.

use super::forms::{chunked, parallel, recurrent, weights};
use crate::feature_map::LinearForm;
use crate::gates::ssm_log_gates;
use crate::heads::{HeadProjection, apply_rope, sequence_diagnostics};
use crate::mixer::{MixContext, MixOutput, SequenceMixer};
use crate::recurrent_layer::{RecurrentLayer, RecurrentState, fused_or_composed};
use crate::short_conv::ShortConv;
use burn::module::{Module, Param};
use burn::nn::{Linear, RotaryEncoding};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

/// `ε` inside the L2 norm of queries and keys (fla's `l2norm`).
pub const L2_EPS: f32 = 1e-6;

/// Multi-head delta-rule attention.
#[derive(Module, Debug)]
pub struct DeltaAttention {
    pub heads: HeadProjection,
    /// `x ↦ w_β·x + b`, `weight: [d_model, heads]`; `β = σ(·)` (or `2σ(·)`).
    pub beta: Linear,
    /// `delta:gated`: `x ↦ w·x + dt_bias`, `weight: [d_model, heads]`.
    pub dt: Option<Linear>,
    /// `delta:gated`: `[heads]`, the decay rate `exp(A_log)`'s log.
    pub a_log: Option<Param<Tensor<1>>>,
    /// `conv=K`: the short convolution on `[q | k | v]` before heads are split.
    pub conv: Option<ShortConv>,
    #[module(skip)]
    pub(super) neg_eigval: bool,
    #[module(skip)]
    pub(super) form: LinearForm,
    #[module(skip)]
    pub(super) chunk: usize,
}

impl DeltaAttention {
    /// Per-head writing strengths `β_t ∈ (0, 1)` (or `(0, 2)`).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, 1]`
    pub fn betas(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        let h = self.heads.n_heads();
        let beta = sigmoid(crate::fused::affine(&self.beta, x));
        let beta = if self.neg_eigval { beta * 2.0 } else { beta };
        beta.swap_dims(1, 2).reshape([b, h, t, 1])
    }

    /// Per-head log decays `log a_t ≤ 0` (all 0 for the ungated rule).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, 1]`
    pub fn log_gates(&self, x: Tensor<3>) -> Tensor<4> {
        match (&self.dt, &self.a_log) {
            (Some(dt), Some(a_log)) => ssm_log_gates(dt, a_log, x),
            _ => {
                let [b, t, _] = x.dims();
                Tensor::zeros([b, self.heads.n_heads(), t, 1], &x.device())
            }
        }
    }
}

impl RecurrentLayer for DeltaAttention {
    /// `(β, log gates)`, each `[batch, heads, seq, 1]`.
    type Gates = (Tensor<4>, Tensor<4>);

    fn heads(&self) -> &HeadProjection {
        &self.heads
    }

    fn conv(&self) -> Option<&ShortConv> {
        self.conv.as_ref()
    }

    /// SiLU, as the convolution ends in.
    fn without_conv(&self, qkv: Tensor<3>) -> Tensor<3> {
        crate::fused::silu(qkv)
    }

    fn gates(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (self.betas(x.clone()), self.log_gates(x))
    }

    /// `(q/√d_k, k, v)`: heads split, `q` and `k` L2-normalised and rotated.
    fn split(
        &self,
        qkv: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let (q, k, v) = self.heads.split_packed(qkv);
        let d_k = q.dims()[3] as f64;
        let (q, k) = apply_rope(l2_normalize(q), l2_normalize(k), rope, offset);
        (q / d_k.sqrt(), k, v)
    }

    fn recurrent_from(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        (beta, log_g): (Tensor<4>, Tensor<4>),
        state: Option<&Tensor<4>>,
    ) -> (Tensor<4>, Tensor<4>) {
        recurrent(q, k, v, beta, log_g, state)
    }

    fn chunked_from(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        (beta, log_g): (Tensor<4>, Tensor<4>),
        state: Option<&Tensor<4>>,
    ) -> (Tensor<4>, Tensor<4>) {
        chunked(q, k, v, beta, log_g, self.chunk, state)
    }
}

/// `x / √(‖x‖² + ε)` over the last axis.
pub fn l2_normalize(x: Tensor<4>) -> Tensor<4> {
    let norm = (x.clone().powi_scalar(2).sum_dim(3) + L2_EPS).sqrt();
    x / norm
}

impl SequenceMixer for DeltaAttention {
    /// `S`.
    type State = RecurrentState;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let (beta, log_g) = self.gates(x.clone());
        let (q, k, v) = self.features(x, ctx.rope, 0, &mut None);
        let causal = |q: Tensor<4>,
                      k: Tensor<4>,
                      v: Tensor<4>,
                      beta: Tensor<4>,
                      log_g: Tensor<4>| match self.form {
            LinearForm::Parallel => parallel(q, k, v, beta, log_g),
            LinearForm::Chunked => chunked_from_empty(q, k, v, beta, log_g, self.chunk),
            LinearForm::Recurrent => recurrent(q, k, v, beta, log_g, None).0,
        };
        let y = if ctx.causal {
            causal(q.clone(), k.clone(), v, beta.clone(), log_g.clone())
        } else {
            let flip = |x: &Tensor<4>| x.clone().flip([2]);
            causal(q.clone(), k.clone(), v.clone(), beta.clone(), log_g.clone())
                + causal(flip(&q), flip(&k), flip(&v), flip(&beta), flip(&log_g)).flip([2])
        };
        let diagnostics = ctx
            .diagnostics
            .then(|| sequence_diagnostics(weights(q, k, beta, log_g, ctx.causal), ctx.causal));
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> RecurrentState {
        RecurrentState::default()
    }

    fn step(
        &self,
        x: Tensor<3>,
        state: &mut RecurrentState,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        self.decode(x, state, rope)
    }
}

/// [`chunked`] from the empty state, through the fused recurrence on flex where it runs (the same
/// numbers; the test is `fused_recurrence_matches_the_composed_chunked_form`).
fn chunked_from_empty(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
    chunk: usize,
) -> Tensor<4> {
    fused_or_composed(q, k, v, log_g, Some(beta), chunk, |inputs| {
        let (q, k, v, log_g, beta) = inputs;
        chunked(q, k, v, beta.expect("given"), log_g, chunk, None).0
    })
}
