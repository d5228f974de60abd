//! Fused kernels with hand-written backward passes, used on the flex (CPU) backend.
//!
//! Burn's autodiff records every tensor op of a composed formula and runs each one's backward
//! separately: exact GELU costs a scalar `erf` per element forward and an `erf` plus an `exp`
//! backward, and causal softmax attention becomes about ten passes with a fresh buffer each.
//! Here each such formula is one op over raw `f32` slices, registered with Burn's autodiff
//! with its own backward.
//!
//! Every function takes and returns ordinary tensors. On flex (with or without autodiff) it
//! runs the fused kernel; on any other backend, or a dtype other than `f32`, it runs the
//! composed reference formula, which is also what the tests compare the kernels against.

#[cfg(feature = "flex")]
mod flex;
pub(crate) mod simd;

use burn::tensor::Tensor;

/// Exact GELU, `x·Φ(x)`, as `burn::tensor::activation::gelu` but fused on flex.
///
/// # Shapes
/// - any; the output has the input's shape
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match flex::gelu(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::activation::gelu(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, output_and_grads, randn};

    /// The fused GELU equals Burn's composed GELU on fresh random inputs, outputs and gradients,
    /// with and without autodiff.
    #[test]
    fn fused_gelu_matches_burn_gelu() {
        let d = device();
        let x = randn([3, 17, 40], 7, &d) * 3.0;
        assert_close(gelu(x.clone()), burn::tensor::activation::gelu(x.clone()), 1e-6, "gelu, no autodiff");
        let (fast, fast_g) = output_and_grads(&[x.clone()], 8, |v| gelu(v[0].clone()));
        let (slow, slow_g) = output_and_grads(&[x], 8, |v| burn::tensor::activation::gelu(v[0].clone()));
        assert_close(fast, slow, 1e-6, "gelu output");
        assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-6, "gelu gradient");
    }

    /// A strided (transposed) input gives the same values as its contiguous copy.
    #[test]
    fn fused_gelu_reads_strided_inputs() {
        let d = device();
        let x = randn([5, 9], 11, &d).swap_dims(0, 1);
        let contiguous = Tensor::<2>::from_data(x.to_data(), &d);
        assert_close(gelu(x), gelu(contiguous), 0.0, "strided vs contiguous");
    }
}
