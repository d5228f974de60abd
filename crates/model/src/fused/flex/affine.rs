//! The affine map `x·W + b` (Burn's `Linear`) on the strided `gemm` kernel of `fused::matmul`,
//! with its backward `dx = dy·Wᵀ`, `dW = xᵀ·dy`, `db = Σ dy`.

use super::glue::{Input, classify, contiguous, first, from_vec, record, run_backward, slice};
use crate::fused::inputs::{AffineInputs, Unfused};
use crate::fused::matmul::{self, View};
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;

/// A 2-D flex tensor as a strided matrix view (no copy).
fn matrix(t: &FlexTensor) -> View<'_> {
    let layout = t.layout();
    let shape = layout.shape();
    assert_eq!(shape.num_dims(), 2, "matrix view of a rank-{} tensor", shape.num_dims());
    View {
        data: t.storage::<f32>(),
        offset: layout.start_offset(),
        rows: shape[0],
        cols: shape[1],
        row_stride: layout.strides()[0],
        col_stride: layout.strides()[1],
    }
}

/// `x · w (+ b)` over the last axis of a contiguous `x`.
fn affine_forward(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>) -> FlexTensor {
    let shape = x.layout().shape();
    let k = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / k.max(1);
    let wv = matrix(w);
    let bias = b.map(contiguous);
    let y = matmul::matmul(View::row_major(slice(x), rows, k), wv, bias.as_ref().map(slice));
    let mut dims = shape.to_vec();
    *dims.last_mut().expect("rank >= 1") = wv.cols;
    from_vec(y, dims.into())
}

/// Backward of `x · w + b`: `dx = dy·wᵀ`, `dw = xᵀ·dy`, `db = Σ_rows dy`, each only if wanted.
#[derive(Debug)]
struct AffineBackward;

/// Inputs kept for the backward pass (both contiguous or, for `w`, the original strided view).
#[derive(Clone, Debug)]
struct AffineSaved {
    x: FlexTensor,
    w: FlexTensor,
}

/// `[dx, dw, db]` for a contiguous `dy`, each only if wanted.
fn affine_grads(state: &AffineSaved, dy: &FlexTensor, want: [bool; 3]) -> [Option<FlexTensor>; 3] {
    let (x_shape, w_shape) = (state.x.layout().shape().clone(), state.w.layout().shape().clone());
    let (k, n) = (w_shape[0], w_shape[1]);
    let rows = x_shape.num_elements() / k.max(1);
    let dy_m = View::row_major(slice(dy), rows, n);
    let dx = want[0]
        .then(|| from_vec(matmul::matmul(dy_m, matrix(&state.w).t(), None), x_shape.clone()));
    let dw = want[1].then(|| {
        from_vec(
            matmul::matmul(View::row_major(slice(&state.x), rows, k).t(), dy_m, None),
            w_shape.clone(),
        )
    });
    let db = want[2].then(|| from_vec(matmul::column_sums(slice(dy), n), [n].into()));
    [dx, dw, db]
}

/// `N = 3` (x, w, b) with a bias, `N = 2` (x, w) without.
impl<const N: usize> Backward<Flex, N> for AffineBackward {
    type State = AffineSaved;

    fn backward(self, ops: Ops<AffineSaved, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        run_backward(ops, grads, |state, dy, wanted| {
            let mut want = [false; 3];
            want[..N].copy_from_slice(&wanted);
            first(affine_grads(&state, dy, want))
        });
    }
}

/// Fused affine map `x·W + b`, or the inputs back when they are not all f32 flex tensors of one kind.
pub fn affine<const D: usize>(
    x: Tensor<D>,
    w: Tensor<2>,
    b: Option<Tensor<1>>,
) -> Result<Tensor<D>, Unfused<AffineInputs<D>>> {
    let kinds = (classify(x.clone()), classify(w.clone()), b.clone().map(classify));
    match kinds {
        (Input::Plain(x), Input::Plain(w), None) => {
            Ok(Tensor::from_primitive::<Flex>(affine_forward(&contiguous(&x), &w, None)))
        }
        (Input::Plain(x), Input::Plain(w), Some(Input::Plain(b))) => {
            Ok(Tensor::from_primitive::<Flex>(affine_forward(&contiguous(&x), &w, Some(&b))))
        }
        (Input::Tracked(xt), Input::Tracked(wt), None) => {
            let state = AffineSaved { x: contiguous(xt.primitive()), w: wt.primitive().clone() };
            let y = affine_forward(&state.x, &state.w, None);
            Ok(record(AffineBackward, [&xt, &wt], state, y))
        }
        (Input::Tracked(xt), Input::Tracked(wt), Some(Input::Tracked(bt))) => {
            let state = AffineSaved { x: contiguous(xt.primitive()), w: wt.primitive().clone() };
            let y = affine_forward(&state.x, &state.w, Some(bt.primitive()));
            Ok(record(AffineBackward, [&xt, &wt, &bt], state, y))
        }
        _ => Err(Box::new((x, w, b))),
    }
}
