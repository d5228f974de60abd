//! Softmax over each query's key spans (the kernel of `fused::span_attention`), forward and
//! backward, on flex tensors with or without autodiff.

use super::glue::{from_vec, fused, run_backward, slice};
use crate::fused::inputs::Unfused;
use crate::fused::span_attention as kernel;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use std::sync::Arc;

#[derive(Debug)]
struct SpanAttentionBackward;

#[derive(Clone, Debug)]
struct SpanAttentionState {
    dims: kernel::Dims,
    /// Contiguous `q, k, v`.
    inputs: [FlexTensor; 3],
    spans: Arc<Vec<u32>>,
    lse: Arc<Vec<f32>>,
}

impl Backward<Flex, 3> for SpanAttentionBackward {
    type State = SpanAttentionState;

    fn backward(
        self,
        ops: Ops<SpanAttentionState, 3>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |st, dy, _| {
            let [q, k, v] = st.inputs.each_ref().map(slice);
            let g = kernel::backward(st.dims, (q, k, v), &st.spans, &st.lse, slice(dy));
            let mut i = 0;
            g.map(|g| {
                let shape = st.inputs[i].layout().shape().clone();
                i += 1;
                Some(from_vec(g, shape))
            })
        });
    }
}

/// The fused span attention, or the inputs back when they are not all f32 flex tensors of one
/// kind.
pub fn span_attention(
    x: [Tensor<4>; 3],
    spans: Vec<u32>,
    dims: kernel::Dims,
) -> Result<Tensor<4>, Unfused<[Tensor<4>; 3]>> {
    let [b, h, t, _] = x[0].dims();
    let dv = dims.dv;
    let spans = Arc::new(spans);
    let run = |inputs: &[FlexTensor; 3]| {
        let [q, k, v] = inputs.each_ref().map(slice);
        let (y, lse) = kernel::forward(dims, q, k, v, &spans);
        (from_vec(y, [b, h, t, dv].into()), lse)
    };
    fused(x, run, SpanAttentionBackward, |inputs, lse| SpanAttentionState {
        dims,
        inputs,
        spans: spans.clone(),
        lse: Arc::new(lse),
    })
}
