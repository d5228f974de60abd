//! The gated (delta-rule) recurrence of the `decay` and `delta` families (the kernel of
//! `fused::gated_recurrence`), forward and backward, with or without `β`: chunked
//! (`fused::chunked_delta`) where that measured faster, else token by token.

use super::glue::{Input, classify, contiguous, from_vec, record, run_backward, slice};
use crate::fused::chunked_delta as chunked;
use crate::fused::gated_recurrence as gated;
use crate::fused::inputs::{GatedRecurrenceInputs, Unfused};
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;

#[derive(Debug)]
struct GatedRecurrenceBackward;

#[derive(Clone, Debug)]
struct GatedRecurrenceState {
    dims: gated::Dims,
    /// Contiguous `[b, h, t, ·]` inputs (`beta` empty without the delta rule).
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    g: FlexTensor,
    beta: Option<FlexTensor>,
    saved: std::sync::Arc<gated::Saved>,
}

impl<const N: usize> Backward<Flex, N> for GatedRecurrenceBackward {
    type State = GatedRecurrenceState;

    fn backward(
        self,
        ops: Ops<GatedRecurrenceState, N>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |st, dy, _| {
            let beta = st.beta.as_ref().map_or(&[][..], slice);
            let (q, k, v, g, dy) =
                (slice(&st.q), slice(&st.k), slice(&st.v), slice(&st.g), slice(dy));
            let g = match chunked::block_size(st.dims) {
                Some(block) => chunked::backward(st.dims, block, q, k, v, g, beta, &st.saved, dy),
                None => gated::backward(st.dims, q, k, v, g, beta, &st.saved, dy),
            };
            let shape = |t: &FlexTensor| t.layout().shape().clone();
            let mut all = [
                Some(from_vec(g.dq, shape(&st.q))),
                Some(from_vec(g.dk, shape(&st.k))),
                Some(from_vec(g.dv, shape(&st.v))),
                Some(from_vec(g.dg, shape(&st.g))),
                st.beta.as_ref().map(|b| from_vec(g.dbeta, shape(b))),
            ];
            std::array::from_fn(|i| all[i].take())
        });
    }
}

/// The fused gated (delta-rule) recurrence, or the inputs back when they are not all f32 flex
/// tensors of one kind.
pub fn gated_recurrence(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    beta: Option<Tensor<4>>,
    chunk: usize,
) -> Result<Tensor<4>, Unfused<GatedRecurrenceInputs>> {
    let [b, h, t, dk] = q.dims();
    let (dv, gate_width) = (v.dims()[3], log_g.dims()[3]);
    if t == 0 || b * h == 0 {
        return Err(Box::new((q, k, v, log_g, beta)));
    }
    let dims = gated::Dims {
        bh: b * h,
        seq: t,
        dk,
        dv,
        gate_width,
        delta: beta.is_some(),
        chunk: chunk.clamp(1, t),
    };
    let run = |q: &FlexTensor,
               k: &FlexTensor,
               v: &FlexTensor,
               g: &FlexTensor,
               beta: Option<&FlexTensor>| {
        let (q, k, v, g, beta) =
            (slice(q), slice(k), slice(v), slice(g), beta.map_or(&[][..], slice));
        // Both save the same checkpoints, which the token kernel's backward pass starts from.
        let (y, saved) = match chunked::block_size(dims) {
            Some(block) => chunked::forward(dims, block, q, k, v, g, beta),
            None => gated::forward(dims, q, k, v, g, beta),
        };
        (from_vec(y, [b, h, t, dv].into()), saved)
    };
    let inputs = (
        classify(q.clone()),
        classify(k.clone()),
        classify(v.clone()),
        classify(log_g.clone()),
        beta.clone().map(classify),
    );
    match inputs {
        (
            Input::Plain(q),
            Input::Plain(k),
            Input::Plain(v),
            Input::Plain(g),
            beta @ (None | Some(Input::Plain(_))),
        ) => {
            let beta = match beta {
                Some(Input::Plain(b)) => Some(contiguous(&b)),
                _ => None,
            };
            Ok(Tensor::from_primitive::<Flex>(
                run(
                    &contiguous(&q),
                    &contiguous(&k),
                    &contiguous(&v),
                    &contiguous(&g),
                    beta.as_ref(),
                )
                .0,
            ))
        }
        (
            Input::Tracked(qt),
            Input::Tracked(kt),
            Input::Tracked(vt),
            Input::Tracked(gt),
            beta @ (None | Some(Input::Tracked(_))),
        ) => {
            let (q, k, v, g) = (
                contiguous(qt.primitive()),
                contiguous(kt.primitive()),
                contiguous(vt.primitive()),
                contiguous(gt.primitive()),
            );
            match beta {
                Some(Input::Tracked(bt)) => {
                    let b = contiguous(bt.primitive());
                    let (y, saved) = run(&q, &k, &v, &g, Some(&b));
                    let state = GatedRecurrenceState {
                        dims,
                        q,
                        k,
                        v,
                        g,
                        beta: Some(b),
                        saved: std::sync::Arc::new(saved),
                    };
                    Ok(record(GatedRecurrenceBackward, [&qt, &kt, &vt, &gt, &bt], state, y))
                }
                _ => {
                    let (y, saved) = run(&q, &k, &v, &g, None);
                    let state = GatedRecurrenceState {
                        dims,
                        q,
                        k,
                        v,
                        g,
                        beta: None,
                        saved: std::sync::Arc::new(saved),
                    };
                    Ok(record(GatedRecurrenceBackward, [&qt, &kt, &vt, &gt], state, y))
                }
            }
        }
        _ => Err(Box::new((q, k, v, log_g, beta))),
    }
}
