//! Element-wise maps with a hand-written derivative (GELU, `elu + 1`, SiLU, `ln σ`) on the
//! SIMD kernels of `fused::simd`.

use super::glue::{Input, classify, contiguous, from_vec, par_chunks, record, run_backward, slice};
use crate::fused::inputs::Unfused;
use crate::fused::simd;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;

/// Element-wise maps with a hand-written derivative.
#[derive(Clone, Copy, Debug)]
enum Unary {
    /// Exact GELU; the backward needs the input.
    Gelu,
    /// `elu(x) + 1`; the backward needs only the output.
    Elu1,
    /// `x·σ(x)`; the backward needs the input.
    Silu,
    /// `ln σ(x)`; the backward needs the input.
    LogSigmoid,
}

impl Unary {
    fn apply(self, x: &FlexTensor) -> FlexTensor {
        let x_values = slice(x);
        let mut y = vec![0.0; x_values.len()];
        let kernel = match self {
            Unary::Gelu => simd::gelu,
            Unary::Elu1 => simd::elu1,
            Unary::Silu => simd::silu,
            Unary::LogSigmoid => simd::log_sigmoid,
        };
        par_chunks(&mut y, |start, out| kernel(&x_values[start..start + out.len()], out));
        from_vec(y, x.layout().shape().clone())
    }

    /// `dx` from the saved tensor (input or output, see the variants) and `dy`.
    fn derivative(self, saved: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
        let (saved, g) = (slice(saved), slice(dy));
        let mut dx = vec![0.0; g.len()];
        let kernel = match self {
            Unary::Gelu => simd::gelu_backward,
            Unary::Elu1 => simd::elu1_backward,
            Unary::Silu => simd::silu_backward,
            Unary::LogSigmoid => simd::log_sigmoid_backward,
        };
        par_chunks(&mut dx, |start, out| {
            kernel(&saved[start..start + out.len()], &g[start..start + out.len()], out)
        });
        from_vec(dx, dy.layout().shape().clone())
    }
}

#[derive(Debug)]
struct UnaryBackward;

impl Backward<Flex, 1> for UnaryBackward {
    /// The map and the (contiguous) tensor its derivative reads.
    type State = (Unary, FlexTensor);

    fn backward(
        self,
        ops: Ops<(Unary, FlexTensor), 1>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |(map, saved), dy, _| [Some(map.derivative(&saved, dy))]);
    }
}

fn unary_op<const D: usize>(map: Unary, x: Tensor<D>) -> Result<Tensor<D>, Unfused<Tensor<D>>> {
    match classify(x) {
        Input::Plain(t) => Ok(Tensor::from_primitive::<Flex>(map.apply(&contiguous(&t)))),
        Input::Tracked(t) => {
            let input = contiguous(t.primitive());
            let y = map.apply(&input);
            let saved = match map {
                Unary::Gelu | Unary::Silu | Unary::LogSigmoid => input,
                Unary::Elu1 => y.clone(),
            };
            Ok(record(UnaryBackward, [&t], (map, saved), y))
        }
        Input::Other(x) => Err(Box::new(x)),
    }
}

/// Fused GELU, or the input back when it is not an f32 flex tensor.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Unfused<Tensor<D>>> {
    unary_op(Unary::Gelu, x)
}

/// Fused `elu(x) + 1`, or the input back when it is not an f32 flex tensor.
pub fn elu_plus_one<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Unfused<Tensor<D>>> {
    unary_op(Unary::Elu1, x)
}

/// Fused SiLU, or the input back when it is not an f32 flex tensor.
pub fn silu<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Unfused<Tensor<D>>> {
    unary_op(Unary::Silu, x)
}

/// Fused `ln σ(x)`, or the input back when it is not an f32 flex tensor.
pub fn log_sigmoid<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Unfused<Tensor<D>>> {
    unary_op(Unary::LogSigmoid, x)
}
