//! Causal depthwise convolution over time (the kernel of `fused::depthwise_conv`), forward and
//! backward.

use super::glue::{from_vec, fused, run_backward, slice};
use crate::fused::depthwise_conv::{self, Dims};
use crate::fused::inputs::Unfused;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;

#[derive(Debug)]
struct DepthwiseConvBackward;

#[derive(Clone, Debug)]
struct DepthwiseConvState {
    dims: Dims,
    /// The contiguous input and weight (`[1, K, channels]`).
    x: FlexTensor,
    w: FlexTensor,
}

impl Backward<Flex, 2> for DepthwiseConvBackward {
    type State = DepthwiseConvState;

    fn backward(
        self,
        ops: Ops<DepthwiseConvState, 2>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |st, dy, _| {
            let (dx, dw) = depthwise_conv::backward(st.dims, slice(&st.x), slice(&st.w), slice(dy));
            [
                Some(from_vec(dx, st.x.layout().shape().clone())),
                Some(from_vec(dw, st.w.layout().shape().clone())),
            ]
        });
    }
}

/// Fused causal depthwise convolution from a zero history, or the inputs back when they are not
/// f32 flex tensors of one kind. `w` is `[1, K, channels]`.
pub fn causal_depthwise_conv(
    x: Tensor<3>,
    w: Tensor<3>,
) -> Result<Tensor<3>, Unfused<[Tensor<3>; 2]>> {
    let forward = |[x, w]: &[FlexTensor; 2]| {
        let [_, seq, channels] = x.layout().shape().dims::<3>();
        let kernel = w.layout().shape()[1];
        assert_eq!(w.layout().shape()[2], channels, "one kernel per channel");
        let dims = Dims { seq, channels, kernel };
        let y = depthwise_conv::forward(dims, slice(x), slice(w));
        (from_vec(y, x.layout().shape().clone()), dims)
    };
    fused([x, w], forward, DepthwiseConvBackward, |[x, w], dims| DepthwiseConvState { dims, x, w })
}
