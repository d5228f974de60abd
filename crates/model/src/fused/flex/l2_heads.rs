//! Heads L2-normalised off projected rows (the kernel of `fused::l2_heads`), forward and
//! backward, reading the rows in place when they are a view with contiguous rows.

use super::glue::{Input, classify, from_vec, record, run_backward, slice};
use crate::fused::inputs::Unfused;
use crate::fused::l2_heads::{self, Dims, Rows};
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;

#[derive(Debug)]
struct L2HeadsBackward;

#[derive(Clone, Debug)]
struct L2HeadsState {
    dims: Dims,
    y: FlexTensor,
    r: std::sync::Arc<Vec<f32>>,
    shape: burn::tensor::Shape,
}

impl Backward<Flex, 1> for L2HeadsBackward {
    type State = L2HeadsState;

    fn backward(self, ops: Ops<L2HeadsState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        run_backward(ops, grads, |st, dy, _| {
            let dx = l2_heads::backward(st.dims, slice(&st.y), &st.r, slice(dy));
            [Some(from_vec(dx, st.shape))]
        });
    }
}

/// `x` as rows the kernel reads in place, or a contiguous copy when its rows are not
/// contiguous (or its strides not positive).
fn rows_of(x: FlexTensor) -> (FlexTensor, Rows) {
    let layout = x.layout();
    let strides = layout.strides();
    if strides[2] == 1 && strides[0] >= 0 && strides[1] >= 0 {
        let rows = Rows {
            offset: layout.start_offset(),
            batch_stride: strides[0] as usize,
            row_stride: strides[1] as usize,
        };
        return (x, rows);
    }
    let x = x.to_contiguous();
    let [_, seq, width] = x.layout().shape().dims::<3>();
    (x, Rows { offset: 0, batch_stride: seq * width, row_stride: width })
}

/// Fused heads-and-L2-norm, or the input back when it is not an f32 flex tensor.
pub fn l2_normalize_heads(
    x: Tensor<3>,
    heads: usize,
    scale: f32,
    eps: f32,
) -> Result<Tensor<4>, Unfused<Tensor<3>>> {
    let run = |x: FlexTensor| {
        let [batch, seq, width] = x.layout().shape().dims::<3>();
        assert!(heads > 0 && width.is_multiple_of(heads), "width {width} is not {heads} heads");
        let d = width / heads;
        let dims = Dims { batch, seq, heads, d, scale, eps };
        let shape = x.layout().shape().clone();
        let (x, rows) = rows_of(x);
        let (y, r) = l2_heads::forward(dims, x.storage::<f32>(), rows);
        (dims, from_vec(y, [batch, heads, seq, d].into()), r, shape)
    };
    match classify(x) {
        Input::Plain(t) => Ok(Tensor::from_primitive::<Flex>(run(t).1)),
        Input::Tracked(t) => {
            let (dims, y, r, shape) = run(t.primitive().clone());
            let state = L2HeadsState { dims, y: y.clone(), r: std::sync::Arc::new(r), shape };
            Ok(record(L2HeadsBackward, [&t], state, y))
        }
        Input::Other(x) => Err(Box::new(x)),
    }
}
