//! What a fused function hands back when it does not run (off flex, or not `f32`): the caller's
//! own inputs, boxed, for its composed formula; and the small option types the kernels take. A
//! leaf, so the flex glue and [`super`]'s wrappers share these types without importing each other.

use burn::tensor::Tensor;

/// Inputs handed back instead of an output. Boxed: tensors are large, and the fallback is the
/// rare path (off flex), so the common `Ok` stays small.
pub type Unfused<T> = Box<T>;

/// The inputs of [`super::affine_map`] (`x, weight, bias`).
pub type AffineInputs<const D: usize> = (Tensor<D>, Tensor<2>, Option<Tensor<1>>);

/// The inputs of [`super::layer_norm_with`] (`x, gamma, beta`).
pub type LayerNormInputs<const D: usize> = (Tensor<D>, Tensor<1>, Option<Tensor<1>>);

/// The inputs of [`super::causal_linear_attention`] (`q, k, v`).
pub type LinearAttentionInputs = (Tensor<4>, Tensor<4>, Tensor<4>);

/// The inputs of [`super::gated_recurrence`] (`q, k, v, log_g, beta`).
pub type GatedRecurrenceInputs = (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>, Option<Tensor<4>>);

/// The inputs of [`super::dplr_recurrence`] (`r, log_w, k, v, alpha, beta`).
pub type DplrInputs = [Tensor<4>; 6];

/// The inputs of [`super::token_cross_entropy`] (`logits, ids`).
pub type CrossEntropyInputs = (Tensor<3>, Tensor<2, burn::tensor::Int>);

/// The pointwise feature maps [`super::causal_linear_attention_packed`] applies itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointMap {
    /// `φ(x) = x`.
    Identity,
    /// `φ(x) = elu(x) + 1`.
    Elu1,
    /// `φ(x) = max(x, 0)`.
    Relu,
}

/// The inputs of [`super::adamw_step`] (`param, grad, (m, v)`).
pub type AdamWInputs<const D: usize> = (Tensor<D>, Tensor<D>, Option<(Tensor<D>, Tensor<D>)>);

/// The scalars of one [`super::adamw_step`].
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// `1 − lr·λ`, the weight-decay factor.
    pub decay: f32,
    /// The step's number, from 1 (the bias corrections' `t`).
    pub time: i32,
}
