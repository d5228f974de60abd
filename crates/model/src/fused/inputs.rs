//! What a fused function hands back when it does not run (off flex, or not `f32`): the caller's
//! own inputs, for its composed formula. A leaf, so the flex glue and [`super`]'s wrappers share
//! these types without importing each other.

use burn::tensor::Tensor;

/// The inputs of [`super::gated_recurrence`] (`q, k, v, log_g, beta`), handed back off flex.
pub type GatedRecurrenceInputs = (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>, Option<Tensor<4>>);
