//! Chunked causal linear attention (the kernel of `fused::linear_attention`), forward and
//! backward, on split heads and on packed `[q | k | v]` rows (`fused::packed_linear_attention`).

use super::glue::{Input, classify, contiguous, from_vec, fused, record, run_backward, slice};
use crate::fused::inputs::{LinearAttentionInputs, PointMap, Unfused};
use crate::fused::{linear_attention, packed_linear_attention};
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;

#[derive(Debug)]
struct LinearAttentionBackward;

#[derive(Clone, Debug)]
struct LinearAttentionState {
    dims: linear_attention::Dims,
    /// Contiguous `[b, h, t, ·]` inputs and the output.
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    y: FlexTensor,
    saved: std::sync::Arc<linear_attention::Saved>,
}

impl Backward<Flex, 3> for LinearAttentionBackward {
    type State = LinearAttentionState;

    fn backward(
        self,
        ops: Ops<LinearAttentionState, 3>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |st, dy, _| {
            let (dq, dk, dv) = linear_attention::backward(
                st.dims,
                slice(&st.q),
                slice(&st.k),
                slice(&st.v),
                slice(&st.y),
                &st.saved,
                slice(dy),
            );
            let shape = |t: &FlexTensor| t.layout().shape().clone();
            [
                Some(from_vec(dq, shape(&st.q))),
                Some(from_vec(dk, shape(&st.k))),
                Some(from_vec(dv, shape(&st.v))),
            ]
        });
    }
}

/// Fused chunked causal linear attention, or the inputs back when they are not all f32 flex
/// tensors of one kind.
pub fn causal_linear_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    chunk: usize,
    normalize: bool,
    eps: f32,
) -> Result<Tensor<4>, Unfused<LinearAttentionInputs>> {
    let run = |q: &FlexTensor, k: &FlexTensor, v: &FlexTensor| {
        let [b, h, t, f] = q.layout().shape().dims::<4>();
        let dv = v.layout().shape()[3];
        let dims = linear_attention::Dims {
            bh: b * h,
            seq: t,
            f,
            dv,
            chunk: chunk.clamp(1, t.max(1)),
            normalize,
            eps,
        };
        let (y, saved) = linear_attention::forward(dims, slice(q), slice(k), slice(v));
        (dims, from_vec(y, [b, h, t, dv].into()), saved)
    };
    match (classify(q.clone()), classify(k.clone()), classify(v.clone())) {
        (Input::Plain(q), Input::Plain(k), Input::Plain(v)) => Ok(Tensor::from_primitive::<Flex>(
            run(&contiguous(&q), &contiguous(&k), &contiguous(&v)).1,
        )),
        (Input::Tracked(qt), Input::Tracked(kt), Input::Tracked(vt)) => {
            let (q, k, v) = (
                contiguous(qt.primitive()),
                contiguous(kt.primitive()),
                contiguous(vt.primitive()),
            );
            let (dims, y, saved) = run(&q, &k, &v);
            let state = LinearAttentionState {
                dims,
                q,
                k,
                v,
                y: y.clone(),
                saved: std::sync::Arc::new(saved),
            };
            Ok(record(LinearAttentionBackward, [&qt, &kt, &vt], state, y))
        }
        _ => Err(Box::new((q, k, v))),
    }
}

#[derive(Debug)]
struct PackedLinearAttentionBackward;

#[derive(Clone, Debug)]
struct PackedLinearAttentionState {
    dims: linear_attention::Dims,
    packing: packed_linear_attention::Packing,
    heads: std::sync::Arc<packed_linear_attention::Heads>,
    shape: burn::tensor::Shape,
}

impl Backward<Flex, 1> for PackedLinearAttentionBackward {
    type State = PackedLinearAttentionState;

    fn backward(
        self,
        ops: Ops<PackedLinearAttentionState, 1>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |st, dy, _| {
            let dqkv = packed_linear_attention::backward(st.dims, st.packing, &st.heads, slice(dy));
            [Some(from_vec(dqkv, st.shape))]
        });
    }
}

/// Fused chunked causal linear attention on packed `[q | k | v]` rows with a pointwise feature
/// map, or the input back when it is not an f32 flex tensor.
pub fn causal_linear_attention_packed(
    qkv: Tensor<3>,
    heads: usize,
    d_qk: usize,
    map: PointMap,
    chunk: usize,
    normalize: bool,
    eps: f32,
) -> Result<Tensor<3>, Unfused<Tensor<3>>> {
    let forward = |[qkv]: &[FlexTensor; 1]| {
        let [batch, seq, width] = qkv.layout().shape().dims::<3>();
        let per_head = width / heads.max(1);
        assert!(
            heads > 0 && width.is_multiple_of(heads) && per_head > 2 * d_qk,
            "packed qkv width {width} is not {heads} heads of 2 x {d_qk} + d_v"
        );
        let dims = linear_attention::Dims {
            bh: batch * heads,
            seq,
            f: d_qk,
            dv: per_head - 2 * d_qk,
            chunk: chunk.clamp(1, seq.max(1)),
            normalize,
            eps,
        };
        let packing = packed_linear_attention::Packing { batch, heads, map };
        let (y, saved) = packed_linear_attention::forward(dims, packing, slice(qkv));
        let y = from_vec(y, [batch, seq, heads * dims.dv].into());
        (y, (dims, packing, saved, qkv.layout().shape().clone()))
    };
    fused([qkv], forward, PackedLinearAttentionBackward, |_, (dims, packing, saved, shape)| {
        PackedLinearAttentionState { dims, packing, heads: std::sync::Arc::new(saved), shape }
    })
    .map_err(|inputs| {
        let [qkv] = *inputs;
        Box::new(qkv)
    })
}
