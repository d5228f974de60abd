//! Causal linear attention in its quadratic ("parallel") form: build the masked `T × T` matrix
//! `A = tril(φ(Q) φ(K)ᵀ)`, then `y = A V / rowsum(A)`. Memory `O(T²)` per head; the only form
//! that materialises the attention weights (used for diagnostics).

use crate::feature_map::safe_denominator;
use crate::heads::causal_mask;
use burn::tensor::Tensor;

/// Attention weights implied by linear attention: `A_ij / Σ_l A_il` (or `A_ij` when
/// `normalize` is off), zero above the diagonal when `causal`.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]` -> `[batch, heads, seq, seq]`
pub fn weights(q: Tensor<4>, k: Tensor<4>, causal: bool, normalize: bool) -> Tensor<4> {
    let [b, h, t, _] = q.dims();
    let mut scores = q.matmul(k.swap_dims(2, 3));
    if causal {
        let mask = causal_mask(t, t, 0, &scores.device()).unsqueeze::<4>().expand([b, h, t, t]);
        scores = scores.mask_fill(mask, 0.0);
    }
    if normalize {
        let den = scores.clone().sum_dim(3);
        scores / safe_denominator(den)
    } else {
        scores
    }
}

/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]`, `v`: `[batch, heads, seq, d_v]` -> `[batch, heads, seq, d_v]`
pub fn causal(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, normalize: bool) -> Tensor<4> {
    weights(q, k, true, normalize).matmul(v)
}
