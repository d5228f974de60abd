//! The decay-gated attention module: its gate parameters and log gates, its features (projection,
//! optional short convolution, RoPE, feature map), the full-sequence forward and decoding.

use super::forms::{chunked, chunked_sums, divide_out, parallel, recurrent, weights, with_ones};
use super::gate::{GLA_LOGIT_NORMALIZER, Gate, retnet_log_gamma};
use crate::feature_map::{FeatureMap, LinearForm};
use crate::gates::ssm_log_gates;
use crate::heads::{HeadProjection, sequence_diagnostics};
use crate::mixer::{MixContext, MixOutput, SequenceMixer};
use crate::recurrent_layer::{RecurrentLayer, RecurrentState, fused_or_composed};
use crate::short_conv::ShortConv;
use burn::module::{Module, Param};
use burn::nn::{Linear, RotaryEncoding};
use burn::tensor::Tensor;

/// Multi-head decay-gated linear attention.
#[derive(Module, Debug)]
pub struct DecayAttention {
    pub heads: HeadProjection,
    pub feature_map: FeatureMap,
    /// `mamba2`: `x ↦ w·x + dt_bias`, `weight: [d_model, heads]`.
    pub dt: Option<Linear>,
    /// `mamba2`: `[heads]`, the decay rate `exp(A_log)`'s log.
    pub a_log: Option<Param<Tensor<1>>>,
    /// The data-dependent sigmoid gate's projection: `gla` `x ↦ x W_α + b_α`, `weight:
    /// [d_model, heads·F]`, head-major; `forget` `x ↦ w·x + b`, `weight: [d_model, heads]`.
    pub alpha: Option<Linear>,
    /// `conv=K`: the short convolution on `[q | k | v]` before heads are split.
    pub conv: Option<ShortConv>,
    #[module(skip)]
    pub(super) gate: Gate,
    #[module(skip)]
    pub(super) normalize: bool,
    #[module(skip)]
    pub(super) form: LinearForm,
    #[module(skip)]
    pub(super) chunk: usize,
}

impl DecayAttention {
    /// Per-head log gates of the tokens in `x`, all `≤ 0`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, G]`, `G = 1` (scalar gates) or `F` (`gla`)
    pub fn log_gates(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        let h = self.heads.n_heads();
        match self.gate {
            Gate::Retnet => {
                let logs: Vec<f32> = (0..h).map(retnet_log_gamma).collect();
                Tensor::<1>::from_floats(logs.as_slice(), &x.device())
                    .reshape([1, h, 1, 1])
                    .expand([b, h, t, 1])
            }
            Gate::Mamba2 => ssm_log_gates(
                self.dt.as_ref().expect("mamba2 has dt"),
                self.a_log.as_ref().expect("mamba2 has a_log"),
                x,
            ),
            Gate::Gla => {
                let alpha = self.alpha.as_ref().expect("gla has alpha");
                let logits = crate::fused::affine(alpha, x);
                let f = logits.dims()[2] / h;
                (crate::fused::log_sigmoid(logits) / GLA_LOGIT_NORMALIZER)
                    .reshape([b, t, h, f])
                    .swap_dims(1, 2)
            }
            Gate::Forget => {
                let forget = self.alpha.as_ref().expect("forget has its gate");
                crate::fused::log_sigmoid(crate::fused::affine(forget, x))
                    .swap_dims(1, 2)
                    .reshape([b, h, t, 1])
            }
        }
    }
}

impl RecurrentLayer for DecayAttention {
    /// The log gates, `[batch, heads, seq, G]`.
    type Gates = Tensor<4>;

    fn heads(&self) -> &HeadProjection {
        &self.heads
    }

    fn conv(&self) -> Option<&ShortConv> {
        self.conv.as_ref()
    }

    fn gates(&self, x: Tensor<3>) -> Tensor<4> {
        self.log_gates(x)
    }

    /// Heads split and rotated, then feature-mapped: `(φ(q), φ(k), v)`.
    fn split(
        &self,
        qkv: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let (q, k, v) = self.heads.split_packed_rotated(qkv, rope, offset);
        (self.feature_map.apply(q, offset), self.feature_map.apply(k, offset), v)
    }

    fn recurrent_from(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        log_g: Tensor<4>,
        state: Option<&Tensor<4>>,
    ) -> (Tensor<4>, Tensor<4>) {
        recurrent(q, k, v, log_g, self.normalize, state)
    }

    fn chunked_from(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        log_g: Tensor<4>,
        state: Option<&Tensor<4>>,
    ) -> (Tensor<4>, Tensor<4>) {
        chunked(q, k, v, log_g, self.chunk, self.normalize, state)
    }
}

impl SequenceMixer for DecayAttention {
    /// `S` (with `z` as its last column under `norm=sum`).
    type State = RecurrentState;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let log_g = self.log_gates(x.clone());
        let (q, k, v) = self.features(x, ctx.rope, 0, &mut None);
        let y = match (ctx.causal, self.form) {
            (false, _) => {
                weights(q.clone(), k.clone(), log_g.clone(), false, self.normalize, self.chunk)
                    .matmul(v)
            }
            (true, LinearForm::Parallel) => {
                parallel(q.clone(), k.clone(), v, log_g.clone(), self.normalize, self.chunk)
            }
            (true, LinearForm::Chunked) => chunked_from_empty(
                q.clone(),
                k.clone(),
                v,
                log_g.clone(),
                self.chunk,
                self.normalize,
            ),
            (true, LinearForm::Recurrent) => {
                recurrent(q.clone(), k.clone(), v, log_g.clone(), self.normalize, None).0
            }
        };
        let diagnostics = ctx.diagnostics.then(|| {
            sequence_diagnostics(
                weights(q, k, log_g, ctx.causal, self.normalize, self.chunk),
                ctx.causal,
            )
        });
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

/// [`chunked`] from the empty state, through the fused recurrence on flex where it runs: on `v`
/// with `norm=sum`'s column of ones, divided out after (the same numbers; the test is
/// `fused_recurrence_matches_the_composed_chunked_form`).
fn chunked_from_empty(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    chunk: usize,
    normalize: bool,
) -> Tensor<4> {
    let y = fused_or_composed(q, k, with_ones(v, normalize), log_g, None, chunk, |inputs| {
        let (q, k, v, log_g, _) = inputs;
        chunked_sums(q, k, v, log_g, chunk, None).0
    });
    divide_out(y, normalize)
}
