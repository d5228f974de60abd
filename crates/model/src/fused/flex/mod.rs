//! The glue between the fused kernels and Burn's flex backend and autodiff graph: one file per
//! kernel, each taking ordinary tensors, running the kernel on their `f32` buffers and recording
//! its hand-written backward pass, or handing the inputs back (boxed) when they are not f32 flex
//! tensors of one kind. What every file shares (classifying a tensor, recording an op) is
//! [`glue`].

mod adamw;
mod affine;
mod attention;
mod cross_entropy;
mod depthwise_conv;
mod dplr_recurrence;
mod gated_recurrence;
mod glue;
mod l2_heads;
mod linear_attention;
mod norm;
mod rope;
mod span_attention;
mod unary;

pub use adamw::adamw_step;
pub use affine::affine;
pub use attention::softmax_attention_packed;
pub use cross_entropy::token_cross_entropy;
pub use depthwise_conv::causal_depthwise_conv;
pub use dplr_recurrence::dplr_recurrence;
pub use gated_recurrence::gated_recurrence;
pub use l2_heads::l2_normalize_heads;
pub use linear_attention::{causal_linear_attention, causal_linear_attention_packed};
pub use norm::layer_norm;
pub use rope::rope_packed;
pub use span_attention::span_attention;
pub use unary::{elu_plus_one, gelu, log_sigmoid, silu};

/// Whether `x` is an `f32` flex tensor (with or without autodiff), the kind the kernels take.
pub fn takes<const D: usize>(x: &burn::tensor::Tensor<D>) -> bool {
    !matches!(glue::classify(x.clone()), glue::Input::Other(_))
}
