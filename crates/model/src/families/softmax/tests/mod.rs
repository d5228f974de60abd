//! The naive oracle the softmax forms are checked against, and the helpers the tests share:
//! `forms.rs` tests the kernel against the oracle, `layer.rs` the module (decoding, the fused
//! path, the output gate, specs).

mod forms;
mod layer;

use super::*;
use crate::testing::visible_rows;
use burn::tensor::activation::softmax;

/// What the oracle adds to the logits and the normaliser.
#[derive(Clone, Copy, Default)]
struct Extras<'a> {
    /// `[b, h, t]`: `ln f_t` per token (FoX).
    log_forget: Option<&'a Tensor<3>>,
    /// `[1, h, 1, 1]`: the sink logit.
    sink: Option<&'a Tensor<4>>,
    /// Sliding window: query i sees keys i − W < j (≤ i causal, < i + W bidirectional).
    window: Option<usize>,
}

/// The slow, obviously-right oracle: one query at a time over exactly the keys it sees, the
/// textbook formula for every [`Scaling`]; `scale` is the per-head multiplier of `learned`,
/// `qk_norm` and `ssmax`. FoX's bias is summed token by token over the span between query and
/// key; the sink is an explicit extra term in the denominator. No masks, no prefix sums.
fn naive_softmax_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    scaling: Scaling,
    scale: Option<&[f32]>,
    extras: Extras<'_>,
    causal: bool,
) -> Tensor<4> {
    let [b, h, _, d] = q.dims();
    let d = d as f32;
    let dev = q.device();
    let per_head = |s: &[f32]| Tensor::<1>::from_floats(s, &dev).reshape([1, s.len(), 1, 1]);
    let t = q.dims()[2];
    let rows =
        visible_rows(q, k, v, causal).into_iter().enumerate().map(|(i, (qi, keys, vals))| {
            // The window keeps keys first..last (absolute positions) of those visible_rows gives.
            let (first, last) = match extras.window {
                Some(w) => {
                    (i.saturating_sub(w - 1), if causal { i } else { (i + w - 1).min(t - 1) })
                }
                None => (0, keys.dims()[2] - 1),
            };
            let n = last + 1 - first;
            (i, first, qi, keys.narrow(2, first, n), vals.narrow(2, first, n))
        });
    let out = rows.map(|(i, first, qi, keys, vals)| {
        let n = keys.dims()[2];
        let dots = |a: Tensor<4>, b: Tensor<4>| a.matmul(b.swap_dims(2, 3)); // [b,h,1,n]
        let scores = match scaling {
            Scaling::SqrtD | Scaling::Softpick => dots(qi, keys) / d.sqrt(),
            Scaling::None => dots(qi, keys),
            Scaling::NumKeys => dots(qi, keys) / n as f32,
            Scaling::SumKeyNorms => {
                let total_norm = keys.clone().powf_scalar(2.0).sum_dim(3).sqrt().sum_dim(2); // [b,h,1,1]
                dots(qi, keys) / total_norm
            }
            Scaling::Learned => dots(qi, keys) * per_head(scale.unwrap()),
            Scaling::QkNorm => {
                let unit = |x: Tensor<4>| x.clone() / x.powf_scalar(2.0).sum_dim(3).sqrt();
                dots(unit(qi), unit(keys)) * per_head(scale.unwrap())
            }
            Scaling::Ssmax => dots(qi, keys) * per_head(scale.unwrap()) * (n as f32).ln(),
            Scaling::LogNTemp => {
                let tau = (((i + 1) as f64 / DEFAULT_FLOOR_SCALE).floor() + 1.0).ln()
                    * DEFAULT_ATTN_SCALE
                    + 1.0;
                dots(qi, keys) / d.sqrt() * tau as f32
            }
        };
        let scores = match extras.log_forget {
            // Σ ln f over the tokens strictly after the earlier of (i, j), up to the later.
            Some(lf) => {
                let bias: Vec<Tensor<4>> = (first..first + n)
                    .map(|j| {
                        let (lo, hi) = (i.min(j), i.max(j));
                        if hi == lo {
                            Tensor::zeros([b, h, 1, 1], &dev)
                        } else {
                            lf.clone().narrow(2, lo + 1, hi - lo).sum_dim(2).reshape([b, h, 1, 1])
                        }
                    })
                    .collect();
                scores + Tensor::cat(bias, 3)
            }
            None => scores,
        };
        let weights = match (scaling, extras.sink) {
            (Scaling::Softpick, _) => {
                let t = scores.exp() - 1.0;
                t.clone().clamp_min(0.0) / (t.abs().sum_dim(3) + SOFTPICK_EPS)
            }
            (_, Some(sink)) => {
                let e = scores.exp();
                e.clone() / (e.sum_dim(3) + sink.clone().exp())
            }
            _ => softmax(scores, 3),
        };
        weights.matmul(vals)
    });
    Tensor::cat(out.collect(), 2)
}

fn dims() -> MixerDims {
    MixerDims { seed: 5, layer: 1, bias: true, ..MixerDims::new(8, 2, 16) }
}

fn config(spec: &str) -> SoftmaxAttentionConfig {
    let parts: Vec<&str> = if spec.is_empty() { vec![] } else { spec.split(':').collect() };
    SoftmaxAttentionConfig::parse(&parts, spec).unwrap_or_else(|e| panic!("{e}"))
}

fn layer(spec: &str, device: &Device) -> SoftmaxAttention {
    crate::testing::seeded_layer::<SoftmaxAttentionConfig>(spec, &dims(), device)
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}
