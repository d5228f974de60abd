//! The diagonal-plus-low-rank recurrence (the kernel of `fused::dplr_recurrence`), forward and
//! backward, on flex tensors with or without autodiff.

use super::glue::{from_vec, fused, run_backward, slice};
use crate::fused::dplr_recurrence as dplr;
use crate::fused::inputs::{DplrInputs, Unfused};
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;

#[derive(Debug)]
struct DplrBackward;

#[derive(Clone, Debug)]
struct DplrState {
    dims: dplr::Dims,
    /// Contiguous `[b, h, t, ·]` inputs in the kernel's order.
    inputs: [FlexTensor; 6],
    saved: std::sync::Arc<dplr::Saved>,
}

impl Backward<Flex, 6> for DplrBackward {
    type State = DplrState;

    fn backward(self, ops: Ops<DplrState, 6>, grads: &mut Gradients, _: &mut Checkpointer) {
        run_backward(ops, grads, |st, dy, _| {
            let x: dplr::Inputs<'_> = std::array::from_fn(|i| slice(&st.inputs[i]));
            let g = dplr::backward(st.dims, x, &st.saved, slice(dy));
            let mut i = 0;
            g.map(|g| {
                let shape = st.inputs[i].layout().shape().clone();
                i += 1;
                Some(from_vec(g, shape))
            })
        });
    }
}

/// The fused DPLR recurrence from the zero state, or the inputs back when they are not all f32
/// flex tensors of one kind.
pub fn dplr_recurrence(x: DplrInputs, chunk: usize) -> Result<Tensor<4>, Unfused<DplrInputs>> {
    let [b, h, t, dk] = x[0].dims();
    let dv = x[3].dims()[3];
    if t == 0 || b * h == 0 {
        return Err(Box::new(x));
    }
    let dims = dplr::Dims { bh: b * h, seq: t, dk, dv, chunk: chunk.clamp(1, t) };
    let run = |inputs: &[FlexTensor; 6]| {
        let (y, saved) = dplr::forward(dims, std::array::from_fn(|i| slice(&inputs[i])));
        (from_vec(y, [b, h, t, dv].into()), saved)
    };
    fused(x, run, DplrBackward, |inputs, saved| DplrState {
        dims,
        inputs,
        saved: std::sync::Arc::new(saved),
    })
}
