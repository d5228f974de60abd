//! The pointwise maps with a fused kernel on flex (`simd.rs`, glue in `flex/unary.rs`): each
//! falls back to Burn's own activation, or its formula by tensor ops, on other backends.

use burn::tensor::Tensor;

/// `elu(x) + 1` (`x + 1` for `x > 0`, `e^x` otherwise), the feature map of Katharopoulos et al.,
/// fused on flex.
///
/// # Shapes
/// - any; the output has the input's shape
pub fn elu_plus_one<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match crate::fused::flex::elu_plus_one(x) {
        Ok(y) => return y,
        Err(x) => *x,
    };
    elu_plus_one_composed(x)
}

/// The formula by tensor ops: the fallback, and the kernel's reference in the tests.
pub fn elu_plus_one_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone().clamp_min(0.0) + x.clamp_max(0.0).exp()
}

/// `ln σ(x)`, as `burn::tensor::activation::log_sigmoid` but fused on flex (GLA's and FoX's
/// gates).
///
/// # Shapes
/// - any; the output has the input's shape
pub fn log_sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match crate::fused::flex::log_sigmoid(x) {
        Ok(y) => return y,
        Err(x) => *x,
    };
    burn::tensor::activation::log_sigmoid(x)
}

/// SiLU, `x·σ(x)`, as `burn::tensor::activation::silu` but fused on flex.
///
/// # Shapes
/// - any; the output has the input's shape
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match crate::fused::flex::silu(x) {
        Ok(y) => return y,
        Err(x) => *x,
    };
    burn::tensor::activation::silu(x)
}

/// Exact GELU, `x·Φ(x)`, as `burn::tensor::activation::gelu` but fused on flex.
///
/// # Shapes
/// - any; the output has the input's shape
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match crate::fused::flex::gelu(x) {
        Ok(y) => return y,
        Err(x) => *x,
    };
    burn::tensor::activation::gelu(x)
}
