//! The running sums the causal forms carry from token to token (and the decoding state keeps):
//! everything a linear-attention layer remembers. A leaf, so [`super::chunked`] and
//! [`super::recurrent`] share it without reaching into the family's `mod.rs`.

use burn::tensor::Tensor;

/// Running sums of the causal form: everything a linear-attention layer remembers.
#[derive(Clone, Debug)]
pub struct LinearAttentionSums {
    /// `[batch, heads, F, d_v]`: `Σ_j φ(k_j) v_jᵀ`.
    pub kv: Tensor<4>,
    /// `[batch, heads, F]`: `Σ_j φ(k_j)`.
    pub k_sum: Tensor<3>,
}
