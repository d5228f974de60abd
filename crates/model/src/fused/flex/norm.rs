//! Layer norm (with or without its bias) and RMS norm over the last axis (the kernels of
//! `fused::norm`), forward and backward.

use super::glue::{Input, classify, contiguous, first, from_vec, record, run_backward, slice};
use crate::fused::inputs::{LayerNormInputs, Unfused};
use crate::fused::norm;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;

/// Backward of layer norm with a bias (`N = 3`: x, γ, β) or without (`N = 2`).
#[derive(Debug)]
struct LayerNormBackward;

#[derive(Clone, Debug)]
struct LayerNormState {
    /// Normalised input `x̂` and the per-row reciprocal deviation `r`.
    xhat: FlexTensor,
    r: FlexTensor,
    gamma: FlexTensor,
    /// Layer norm (`true`) or RMS norm.
    centered: bool,
}

impl LayerNormState {
    /// `[dx, dγ, dβ]` for a contiguous `dy`.
    fn grads(&self, dy: &FlexTensor) -> [Option<FlexTensor>; 3] {
        let (dx, dgamma, dbeta) = norm::backward(
            slice(dy),
            slice(&self.xhat),
            slice(&self.r),
            slice(&self.gamma),
            self.centered,
        );
        let width = dgamma.len();
        [
            from_vec(dx, dy.layout().shape().clone()),
            from_vec(dgamma, [width].into()),
            from_vec(dbeta, [width].into()),
        ]
        .map(Some)
    }
}

impl<const N: usize> Backward<Flex, N> for LayerNormBackward {
    type State = LayerNormState;

    fn backward(self, ops: Ops<LayerNormState, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        run_backward(ops, grads, |state, dy, _| first(state.grads(dy)));
    }
}

/// Fused layer norm (`centered`) or RMS norm (no `beta`) over the last axis, or the inputs back
/// when they are not all f32 flex tensors of one kind.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f32,
    centered: bool,
) -> Result<Tensor<D>, Unfused<LayerNormInputs<D>>> {
    assert!(centered || beta.is_none(), "RMS norm has no bias");
    let forward = |x: &FlexTensor, gamma: &FlexTensor, beta: Option<&FlexTensor>| {
        let shape = x.layout().shape().clone();
        let width = shape[shape.num_dims() - 1];
        let beta = beta.map(contiguous);
        let (y, xhat, r) = norm::forward(
            slice(x),
            width,
            slice(gamma),
            beta.as_ref().map(slice),
            epsilon,
            centered,
        );
        let rows = r.len();
        (
            from_vec(y, shape.clone()),
            LayerNormState {
                xhat: from_vec(xhat, shape),
                r: from_vec(r, [rows].into()),
                gamma: gamma.clone(),
                centered,
            },
        )
    };
    match (classify(x.clone()), classify(gamma.clone()), beta.clone().map(classify)) {
        (Input::Plain(x), Input::Plain(g), None) => {
            Ok(Tensor::from_primitive::<Flex>(forward(&contiguous(&x), &contiguous(&g), None).0))
        }
        (Input::Plain(x), Input::Plain(g), Some(Input::Plain(b))) => {
            Ok(Tensor::from_primitive::<Flex>(
                forward(&contiguous(&x), &contiguous(&g), Some(&b)).0,
            ))
        }
        (Input::Tracked(xt), Input::Tracked(gt), None) => {
            let (y, state) =
                forward(&contiguous(xt.primitive()), &contiguous(gt.primitive()), None);
            Ok(record(LayerNormBackward, [&xt, &gt], state, y))
        }
        (Input::Tracked(xt), Input::Tracked(gt), Some(Input::Tracked(bt))) => {
            let (y, state) = forward(
                &contiguous(xt.primitive()),
                &contiguous(gt.primitive()),
                Some(bt.primitive()),
            );
            Ok(record(LayerNormBackward, [&xt, &gt, &bt], state, y))
        }
        _ => Err(Box::new((x, gamma, beta))),
    }
}
