//! Causal linear attention one token at a time, the form used for decoding:
//! `S_t = S_{t−1} + φ(k_t) v_tᵀ`, `z_t = z_{t−1} + φ(k_t)`, `y_t = φ(q_t)ᵀ S_t / φ(q_t)ᵀ z_t`.
//! State `O(F·d_v)` per head, independent of position.

use super::sums::LinearAttentionSums;
use crate::feature_map::safe_denominator;
use burn::tensor::Tensor;

/// Runs the recurrence over `seq` tokens starting from `state` (zeros when `None`); returns the
/// outputs and the state after the last token.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]`, `v`: `[batch, heads, seq, d_v]` -> `[batch, heads, seq, d_v]`
pub fn causal(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    normalize: bool,
    state: Option<&LinearAttentionSums>,
) -> (Tensor<4>, LinearAttentionSums) {
    let [b, h, t, f] = q.dims();
    let dv = v.dims()[3];
    let device = q.device();
    let (mut kv, mut k_sum) = match state {
        Some(s) => (s.kv.clone(), s.k_sum.clone()),
        None => (Tensor::zeros([b, h, f, dv], &device), Tensor::zeros([b, h, f], &device)),
    };
    let mut outputs = Vec::with_capacity(t);
    for i in 0..t {
        let (qi, ki, vi) =
            (q.clone().narrow(2, i, 1), k.clone().narrow(2, i, 1), v.clone().narrow(2, i, 1));
        kv = kv + ki.clone().swap_dims(2, 3).matmul(vi);
        k_sum = k_sum + ki.reshape([b, h, f]);
        let num = qi.clone().matmul(kv.clone());
        outputs.push(if normalize {
            let den = (qi * k_sum.clone().reshape([b, h, 1, f])).sum_dim(3);
            num / safe_denominator(den)
        } else {
            num
        });
    }
    (Tensor::cat(outputs, 2), LinearAttentionSums { kv, k_sum })
}
