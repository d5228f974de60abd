//! Slow, obviously-right attention, used only by tests.
//!
//! Each function walks the queries one at a time, slices out exactly the keys that query may
//! see (`0..=i` when causal, all otherwise), and applies the textbook formula to that row with
//! plain tensor ops. No masks, no prefix sums, no chunking: the fast paths are checked against
//! these on random inputs, outputs and gradients.

use crate::linear::safe_denominator;
use crate::softmax::Scaling;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::Tensor;

/// Rows of queries with the keys each may see: `(i, q_i [b,h,1,d], K [b,h,n,d], V [b,h,n,dv])`.
fn rows(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, causal: bool) -> Vec<(usize, Tensor<4>, Tensor<4>, Tensor<4>)> {
    let t = q.dims()[2];
    (0..t)
        .map(|i| {
            let n = if causal { i + 1 } else { k.dims()[2] };
            (i, q.clone().narrow(2, i, 1), k.clone().narrow(2, 0, n), v.clone().narrow(2, 0, n))
        })
        .collect()
}

fn per_head(values: &[f32], device: &burn::tensor::Device) -> Tensor<4> {
    Tensor::<1>::from_floats(values, device).reshape([1, values.len(), 1, 1])
}

/// Textbook softmax attention for every [`Scaling`]; `scale` is the per-head multiplier of
/// `learned` and `qk_norm`.
pub fn softmax_attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, scaling: Scaling, scale: Option<&[f32]>, causal: bool) -> Tensor<4> {
    let d = q.dims()[3] as f32;
    let out = rows(q, k, v, causal).into_iter().map(|(_, qi, keys, vals)| {
        let n = keys.dims()[2] as f32;
        let dots = |a: Tensor<4>, b: Tensor<4>| a.matmul(b.swap_dims(2, 3)); // [b,h,1,n]
        let scores = match scaling {
            Scaling::SqrtD => dots(qi, keys) / d.sqrt(),
            Scaling::None => dots(qi, keys),
            Scaling::NumKeys => dots(qi, keys) / n,
            Scaling::SumKeyNorms => {
                let total_norm = keys.clone().powf_scalar(2.0).sum_dim(3).sqrt().sum_dim(2); // [b,h,1,1]
                dots(qi, keys) / total_norm
            }
            Scaling::Learned => dots(qi, keys) * per_head(scale.unwrap(), &q.device()),
            Scaling::QkNorm => {
                let unit = |x: Tensor<4>| x.clone() / x.powf_scalar(2.0).sum_dim(3).sqrt();
                dots(unit(qi), unit(keys)) * per_head(scale.unwrap(), &q.device())
            }
        };
        softmax(scores, 3).matmul(vals)
    });
    Tensor::cat(out.collect(), 2)
}

/// Textbook sigmoid attention: `σ(q·k/√d + b)` with `b` fixed or `−ln n`.
pub fn sigmoid_attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, bias: Option<f32>, causal: bool) -> Tensor<4> {
    let d = q.dims()[3] as f32;
    let out = rows(q, k, v, causal).into_iter().map(|(_, qi, keys, vals)| {
        let b = bias.unwrap_or(-(keys.dims()[2] as f32).ln());
        sigmoid(qi.matmul(keys.swap_dims(2, 3)) / d.sqrt() + b).matmul(vals)
    });
    Tensor::cat(out.collect(), 2)
}

/// Textbook linear attention on feature-mapped queries and keys:
/// `y_i = Σ_j (φq_i·φk_j) v_j / Σ_j φq_i·φk_j`, over the keys query `i` sees.
pub fn linear_attention(fq: &Tensor<4>, fk: &Tensor<4>, v: &Tensor<4>, normalize: bool, causal: bool) -> Tensor<4> {
    let out = rows(fq, fk, v, causal).into_iter().map(|(_, qi, keys, vals)| {
        let sims = qi.matmul(keys.swap_dims(2, 3)); // [b,h,1,n]
        let num = sims.clone().matmul(vals);
        if normalize { num / safe_denominator(sims.sum_dim(3)) } else { num }
    });
    Tensor::cat(out.collect(), 2)
}
