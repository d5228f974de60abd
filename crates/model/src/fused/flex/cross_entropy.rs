//! Token cross-entropy with each row's argmax (the kernel of `fused::cross_entropy`), forward
//! and backward; the backward writes into the saved logits' buffer when nothing else holds it.

use super::glue::{Input, classify, contiguous, from_vec, record, run_backward, slice};
use crate::fused::cross_entropy;
use crate::fused::inputs::{CrossEntropyInputs, Unfused};
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::{Int, Tensor, TensorData};

#[derive(Debug)]
struct CrossEntropyBackward;

#[derive(Clone, Debug)]
struct CrossEntropyState {
    /// The contiguous logits of the forward pass, `[rows, vocab]` as `[batch, seq, vocab]`.
    logits: FlexTensor,
    targets: Vec<usize>,
    lse: Vec<f32>,
}

impl Backward<Flex, 1> for CrossEntropyBackward {
    type State = CrossEntropyState;

    fn backward(self, ops: Ops<CrossEntropyState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        run_backward(ops, grads, |CrossEntropyState { logits, targets, lse }, dy, _| {
            let shape = logits.layout().shape().clone();
            let vocab = shape[shape.num_dims() - 1];
            // The state holds the only reference once the forward's output is gone: reuse its
            // buffer when the logits are all of it (a contiguous view of a larger buffer, such
            // as one position narrowed out of a sequence, is copied first).
            let mut grad = logits;
            let n = shape.num_elements();
            if grad.try_storage_mut::<f32>().is_none_or(|buffer| buffer.len() != n) {
                grad = from_vec(slice(&grad).to_vec(), shape);
            }
            let buffer = grad.try_storage_mut::<f32>().expect("a fresh buffer is unique");
            cross_entropy::backward_in_place(buffer, vocab, &targets, &lse, slice(dy));
            [Some(grad)]
        });
    }
}

/// Fused cross-entropy `(nll, argmax)`, or the inputs back when the logits are not f32 flex.
pub fn token_cross_entropy(
    logits: Tensor<3>,
    ids: Tensor<2, Int>,
) -> Result<(Tensor<2>, Tensor<2, Int>), Unfused<CrossEntropyInputs>> {
    let [b, t, vocab] = logits.dims();
    assert_eq!(ids.dims(), [b, t], "targets [batch, seq] for logits [{b}, {t}, {vocab}]");
    let device = ids.device();
    let input = classify(logits);
    if let Input::Other(logits) = input {
        return Err(Box::new((logits, ids)));
    }
    let targets: Vec<usize> = ids
        .into_data()
        .iter::<i64>()
        .map(|v| {
            usize::try_from(v).unwrap_or_else(|_| panic!("cross-entropy target {v} is negative"))
        })
        .collect();
    let run = |logits: &FlexTensor| cross_entropy::forward(slice(logits), vocab, &targets);
    let (nll, argmax) = match input {
        Input::Plain(x) => {
            let rows = run(&contiguous(&x));
            (Tensor::from_primitive::<Flex>(from_vec(rows.nll, [b, t].into())), rows.argmax)
        }
        Input::Tracked(x) => {
            let logits = contiguous(x.primitive());
            let rows = run(&logits);
            let nll = from_vec(rows.nll, [b, t].into());
            let state = CrossEntropyState { logits, targets, lse: rows.lse };
            (record(CrossEntropyBackward, [&x], state, nll), rows.argmax)
        }
        Input::Other(_) => unreachable!("handed back above"),
    };
    let argmax = Tensor::<2, Int>::from_data(TensorData::new(argmax, [b, t]), &device);
    Ok((nll, argmax))
}
