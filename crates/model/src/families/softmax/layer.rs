//! The softmax attention module: its parameters, the full-sequence forward (through the fused
//! packed kernel when nothing but a constant scale shapes the logits) and KV-cache decoding.

use super::forms::{ScoreTerms, attention_mask, softmax_attention};
use super::options::Scaling;
use crate::fused;
use crate::heads::{HeadProjection, KvCache, diagnostics, sequence_diagnostics};
use crate::mixer::{MixContext, MixOutput, SequenceMixer};
use burn::module::{Module, Param};
use burn::nn::{Linear, RotaryEncoding};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

/// Multi-head softmax attention.
#[derive(Module, Debug)]
pub struct SoftmaxAttention {
    pub heads: HeadProjection,
    /// `[heads]`: the learned multiplier of `learned` (temperature), `qk_norm` (gain) and `ssmax` (`s_h`).
    pub scale: Option<Param<Tensor<1>>>,
    /// `forget=true`: `x ↦ w_f·x + b_f`, `weight: [d_model, heads]`.
    pub forget: Option<Linear>,
    /// `gate=output`: `x ↦ x W_g + b_g`, `weight: [d_model, heads·d_head]`.
    pub gate: Option<Linear>,
    /// `sink=learned`: `[heads]`, the sink logit.
    pub sink: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub(super) scaling: Scaling,
    #[module(skip)]
    pub(super) zero_sink: bool,
    /// `window=W`: the keys each query sees.
    #[module(skip)]
    pub(super) window: Option<usize>,
    #[module(skip)]
    pub(super) log_n_temp: (f64, f64),
}

/// Decoding state: the KV cache and, with `forget=true`, `c_t` of every cached key.
#[derive(Clone, Debug, Default)]
pub struct SoftmaxDecodeState {
    pub cache: KvCache,
    /// `[batch, heads, seen]`.
    pub forget: Option<Tensor<3>>,
}
impl SoftmaxAttention {
    pub fn scaling(&self) -> Scaling {
        self.scaling
    }

    /// The score multiplier when it is a constant and nothing else shapes the logits (`sqrt_d`,
    /// `none`; an output gate is fine), which the fused kernel takes.
    fn constant_scale(&self) -> Option<f32> {
        if self.forget.is_some() || self.sink.is_some() || self.zero_sink {
            return None;
        }
        match self.scaling {
            Scaling::SqrtD => Some((self.heads.d_qk() as f32).sqrt().recip()),
            Scaling::None => Some(1.0),
            _ => None,
        }
    }

    /// Per-head `ln f_t ≤ 0` of the tokens in `x`, `[batch, heads, seq]`.
    fn log_forget(&self, x: Tensor<3>) -> Option<Tensor<3>> {
        self.forget.as_ref().map(|f| fused::log_sigmoid(fused::affine(f, x)).swap_dims(1, 2))
    }

    /// The terms for queries with forget sums `queries_c`, keys with sums `keys_c` (the
    /// queries' own when `None`), the first key at absolute position `key_start`.
    pub(super) fn terms(
        &self,
        queries_c: Option<Tensor<3>>,
        keys_c: Option<Tensor<3>>,
        key_start: usize,
    ) -> ScoreTerms {
        let h = self.heads.n_heads();
        let sink = match (&self.sink, self.zero_sink) {
            (Some(s), _) => Some(s.val()),
            (None, true) => Some(Tensor::zeros([h], &self.heads.qkv.weight.device())),
            _ => None,
        };
        let forget = queries_c.map(|c| {
            let keys = keys_c.unwrap_or_else(|| c.clone());
            (c, keys)
        });
        ScoreTerms {
            scale: self.scale.as_ref().map(|p| p.val()),
            forget,
            sink,
            log_n_temp: self.log_n_temp,
            window: self.window,
            key_start,
        }
    }

    /// Merged heads (`[batch, seq, heads·d_v]`) through the output gate (if any) and projection.
    fn finish(&self, merged: Tensor<3>, x: Tensor<3>) -> Tensor<3> {
        let merged = match &self.gate {
            Some(g) => merged * sigmoid(fused::affine(g, x)),
            None => merged,
        };
        self.heads.output(merged)
    }
}

/// `[batch, heads, seq, d_v]` -> `[batch, seq, heads·d_v]`.
fn merge_heads(y: Tensor<4>) -> Tensor<3> {
    let [b, h, t, dv] = y.dims();
    y.swap_dims(1, 2).reshape([b, t, h * dv])
}
impl SequenceMixer for SoftmaxAttention {
    type State = SoftmaxDecodeState;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        // Keys and values as projected (`n_kv_heads` of them), RoPE applied in place.
        let rotated = self.heads.rotate_grouped(self.heads.project_grouped(x.clone()), ctx.rope, 0);
        // The fused kernel covers training and evaluation without monitoring; it does not return
        // the weights, learn a scale, forget, or add a sink.
        let rotated = match self.constant_scale() {
            Some(scale) if !ctx.diagnostics => match fused::softmax_attention_packed(
                rotated,
                self.heads.n_heads(),
                self.heads.n_kv_heads(),
                scale,
                ctx.causal,
                self.window,
            ) {
                Ok(y) => return MixOutput { output: self.finish(y, x), diagnostics: None },
                Err(rotated) => *rotated,
            },
            _ => rotated,
        };
        let (q, k, v) = self.heads.split_grouped(rotated);
        let c = self.log_forget(x.clone()).map(|lf| lf.cumsum(2));
        let (y, weights) =
            softmax_attention(q, k, v, self.scaling, &self.terms(c, None, 0), ctx.causal, 0);
        let diagnostics = ctx.diagnostics.then(|| match self.window {
            None => sequence_diagnostics(weights, ctx.causal),
            Some(w) => {
                let [_, _, t, _] = weights.dims();
                let mask = attention_mask(t, t, 0, ctx.causal, Some(w), &weights.device());
                let keys = mask.expect("a window masks").bool_not().float().sum_dim(1);
                diagnostics(weights, keys)
            }
        });
        MixOutput { output: self.finish(merge_heads(y), x), diagnostics }
    }

    fn empty_state(&self) -> SoftmaxDecodeState {
        SoftmaxDecodeState::default()
    }

    fn step(
        &self,
        x: Tensor<3>,
        state: &mut SoftmaxDecodeState,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let offset = state.cache.position;
        // The cache keeps the key/value heads as projected; the query heads read them repeated.
        let (q, k, v) = self.heads.split_grouped_rotated(x.clone(), rope, offset);
        let (keys, values) = state.cache.append(k, v);
        let key_start = state.cache.position - keys.dims()[2];
        let (keys, values) = (self.heads.repeat_kv(keys), self.heads.repeat_kv(values));
        // c of the new tokens continues from the last cached key's.
        let c = self.log_forget(x.clone()).map(|lf| {
            let before = state.forget.as_ref().map(|c| {
                let seen = c.dims()[2];
                c.clone().narrow(2, seen - 1, 1)
            });
            let c = lf.cumsum(2);
            let c = match before {
                Some(last) => c + last,
                None => c,
            };
            state.forget = Some(match state.forget.take() {
                Some(old) => Tensor::cat(vec![old, c.clone()], 2),
                None => c.clone(),
            });
            c
        });
        let keys_c = c.as_ref().and(state.forget.clone());
        let terms = self.terms(c, keys_c, key_start);
        let (y, _) = softmax_attention(q, keys, values, self.scaling, &terms, true, offset);
        if let Some(w) = self.window {
            // The next query sees at most the last W − 1 of these keys.
            state.cache.keep_last(w - 1);
            state.forget = state.forget.take().and_then(|c| {
                let seen = c.dims()[2];
                (w > 1).then(|| c.narrow(2, seen.saturating_sub(w - 1), seen.min(w - 1)))
            });
        }
        self.finish(merge_heads(y), x)
    }
}
