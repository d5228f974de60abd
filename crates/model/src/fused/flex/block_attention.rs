//! Softmax over chosen key blocks (the kernel of `fused::block_attention`), forward and
//! backward, on flex tensors with or without autodiff.

use super::glue::{Input, classify, contiguous, from_vec, record, run_backward, slice};
use crate::fused::block_attention as kernel;
use crate::fused::inputs::Unfused;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use std::sync::Arc;

#[derive(Debug)]
struct BlockAttentionBackward;

#[derive(Clone, Debug)]
struct BlockAttentionState {
    dims: kernel::Dims,
    /// Contiguous `q, k, v`.
    inputs: [FlexTensor; 3],
    chosen: Arc<Vec<u32>>,
    lse: Arc<Vec<f32>>,
}

impl Backward<Flex, 3> for BlockAttentionBackward {
    type State = BlockAttentionState;

    fn backward(
        self,
        ops: Ops<BlockAttentionState, 3>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |st, dy, _| {
            let [q, k, v] = st.inputs.each_ref().map(slice);
            let g = kernel::backward(st.dims, (q, k, v), &st.chosen, &st.lse, slice(dy));
            let mut i = 0;
            g.map(|g| {
                let shape = st.inputs[i].layout().shape().clone();
                i += 1;
                Some(from_vec(g, shape))
            })
        });
    }
}

/// The fused block attention, or the inputs back when they are not all f32 flex tensors of one
/// kind.
pub fn block_attention(
    x: [Tensor<4>; 3],
    chosen: Vec<u32>,
    dims: kernel::Dims,
) -> Result<Tensor<4>, Unfused<[Tensor<4>; 3]>> {
    let [b, h, t, _] = x[0].dims();
    let dv = dims.dv;
    let chosen = Arc::new(chosen);
    let run = |inputs: &[FlexTensor; 3]| {
        let [q, k, v] = inputs.each_ref().map(slice);
        let (y, lse) = kernel::forward(dims, q, k, v, &chosen);
        (from_vec(y, [b, h, t, dv].into()), lse)
    };
    let classified = x.clone().map(classify);
    if classified.iter().all(|c| matches!(c, Input::Plain(_))) {
        let inputs = classified.map(|c| match c {
            Input::Plain(t) => contiguous(&t),
            _ => unreachable!("all plain"),
        });
        return Ok(Tensor::from_primitive::<Flex>(run(&inputs).0));
    }
    if classified.iter().all(|c| matches!(c, Input::Tracked(_))) {
        let tracked = classified.map(|c| match c {
            Input::Tracked(t) => t,
            _ => unreachable!("all tracked"),
        });
        let inputs = tracked.each_ref().map(|t| contiguous(t.primitive()));
        let (y, lse) = run(&inputs);
        let state = BlockAttentionState { dims, inputs, chosen, lse: Arc::new(lse) };
        return Ok(record(BlockAttentionBackward, tracked.each_ref(), state, y));
    }
    Err(Box::new(x))
}
