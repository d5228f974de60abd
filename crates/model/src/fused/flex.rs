//! The glue between the fused kernels and Burn's flex backend and autodiff graph.

use super::simd;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor, TensorData};

/// Flex under Burn's default (no) gradient checkpointing, the device `attnlab` trains on.
type FlexAd = Autodiff<Flex>;

/// A tensor as the kernels see it.
enum Input<const D: usize> {
    /// Flex without autodiff (evaluation, sampling).
    Plain(FlexTensor),
    /// Flex under autodiff.
    Tracked(burn::backend::tensor::FloatTensor<FlexAd>),
    /// Anything else: the caller runs the composed formula.
    Other(Tensor<D>),
}

fn classify<const D: usize>(x: Tensor<D>) -> Input<D> {
    if x.dtype() != DType::F32 {
        return Input::Other(x);
    }
    if let Ok(t) = x.clone().try_into_primitive::<FlexAd>() {
        return Input::Tracked(t);
    }
    match x.clone().try_into_primitive::<Flex>() {
        Ok(t) => Input::Plain(t),
        Err(_) => Input::Other(x),
    }
}

/// The tensor's elements in row-major order (copied only when it is a strided view).
fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() { t.clone() } else { t.to_contiguous() }
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("made contiguous f32 by the caller")
}

fn from_vec(values: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn gelu_forward(x: &FlexTensor) -> FlexTensor {
    let mut y = vec![0.0; x.layout().shape().num_elements()];
    simd::gelu(slice(x), &mut y);
    from_vec(y, x.layout().shape().clone())
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    /// The (contiguous) input.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let grad = contiguous(&grad);
            let mut dx = vec![0.0; grad.layout().shape().num_elements()];
            simd::gelu_backward(slice(&x), slice(&grad), &mut dx);
            from_vec(dx, x.layout().shape().clone())
        });
    }
}

/// Fused GELU, or the input back when it is not an f32 flex tensor.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    match classify(x) {
        Input::Plain(t) => Ok(Tensor::from_primitive::<Flex>(gelu_forward(&contiguous(&t)))),
        Input::Tracked(t) => {
            let out = match GeluBackward.prepare::<NoCheckpointing>([t.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let input = contiguous(t.primitive());
                    let y = gelu_forward(&input);
                    prep.finish(input, y)
                }
                OpsKind::UnTracked(prep) => prep.finish(gelu_forward(&contiguous(t.primitive()))),
            };
            Ok(Tensor::from_primitive::<FlexAd>(out))
        }
        Input::Other(x) => Err(x),
    }
}
