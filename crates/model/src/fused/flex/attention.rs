//! Softmax attention on packed `[q | k | v]` rows (the kernel of `fused::attention`), forward
//! and backward.

use super::glue::{Input, classify, contiguous, from_vec, record, run_backward, slice};
use crate::fused::attention;
use crate::fused::inputs::Unfused;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;

fn packed_attention_dims(
    qkv: &FlexTensor,
    heads: usize,
    kv_heads: usize,
    scale: f32,
    causal: bool,
) -> attention::Dims {
    let shape = qkv.layout().shape();
    let (batch, seq, width) = (shape[0], shape[1], shape[2]);
    let parts = heads + 2 * kv_heads;
    assert!(
        heads > 0 && kv_heads > 0 && heads.is_multiple_of(kv_heads) && width.is_multiple_of(parts),
        "packed qkv width {width} is not {heads} query and 2 x {kv_heads} key/value heads"
    );
    attention::Dims { batch, seq, heads, kv_heads, d: width / parts, scale, causal }
}

#[derive(Debug)]
struct PackedAttentionBackward;

#[derive(Clone, Debug)]
struct PackedAttentionState {
    dims: attention::Dims,
    /// The (contiguous) packed input and the probabilities of the forward pass.
    qkv: FlexTensor,
    p: FlexTensor,
}

impl Backward<Flex, 1> for PackedAttentionBackward {
    type State = PackedAttentionState;

    fn backward(
        self,
        ops: Ops<PackedAttentionState, 1>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |PackedAttentionState { dims, qkv, p }, dy, _| {
            let dqkv = attention::backward(dims, slice(&qkv), slice(&p), slice(dy));
            [Some(from_vec(dqkv, qkv.layout().shape().clone()))]
        });
    }
}

/// Fused softmax attention on packed `[q | k | v]`, or the input back when it is not f32 flex.
pub fn softmax_attention_packed(
    qkv: Tensor<3>,
    heads: usize,
    kv_heads: usize,
    scale: f32,
    causal: bool,
) -> Result<Tensor<3>, Unfused<Tensor<3>>> {
    let forward = |qkv: &FlexTensor| {
        let dims = packed_attention_dims(qkv, heads, kv_heads, scale, causal);
        let (y, p) = attention::forward(dims, slice(qkv));
        let y = from_vec(y, [dims.batch, dims.seq, heads * dims.d].into());
        (dims, y, from_vec(p, [dims.batch, heads, dims.seq, dims.seq].into()))
    };
    match classify(qkv) {
        Input::Plain(t) => Ok(Tensor::from_primitive::<Flex>(forward(&contiguous(&t)).1)),
        Input::Tracked(t) => {
            let input = contiguous(t.primitive());
            let (dims, y, p) = forward(&input);
            Ok(record(
                PackedAttentionBackward,
                [&t],
                PackedAttentionState { dims, qkv: input, p },
                y,
            ))
        }
        Input::Other(x) => Err(Box::new(x)),
    }
}
