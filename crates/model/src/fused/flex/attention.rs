//! Softmax attention on packed `[q | k | v]` rows, forward and backward: the kernel of
//! `fused::attention` (every head's probabilities kept) for short sequences, the blocked one of
//! `fused::tiled_attention` (memory linear in the sequence) from [`TILED_FROM`] tokens on.

use super::glue::{Input, classify, contiguous, from_vec, record, run_backward, slice};
use crate::fused::inputs::Unfused;
use crate::fused::{attention, tiled_attention};
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
    window: Option<usize>,
) -> attention::Dims {
    let shape = qkv.layout().shape();
    let (batch, seq, width) = (shape[0], shape[1], shape[2]);
    let parts = heads + 2 * kv_heads;
    assert!(
        heads > 0 && kv_heads > 0 && heads.is_multiple_of(kv_heads) && width.is_multiple_of(parts),
        "packed qkv width {width} is not {heads} query and 2 x {kv_heads} key/value heads"
    );
    attention::Dims { batch, seq, heads, kv_heads, d: width / parts, scale, causal, window }
}

/// The sequence length from which the blocked kernel runs (measured: `attnlab bench --only
/// scaling`, docs/benchmarks.md). Below it, keeping the probabilities is cheaper than
/// recomputing them, and their memory is small.
const TILED_FROM: usize = 128;

/// Queries per block of the blocked kernel.
const QUERY_BLOCK: usize = 64;

#[derive(Debug)]
struct PackedAttentionBackward;

/// What the backward pass recomputes the attention from.
#[derive(Clone, Debug)]
enum Saved {
    /// Every head's probabilities, `[batch, heads, seq, seq]`.
    Probabilities(FlexTensor),
    /// Each row's maximum score and reciprocal sum (`[batch, heads, seq, 2]`).
    Blocked { stats: FlexTensor },
}

#[derive(Clone, Debug)]
struct PackedAttentionState {
    dims: attention::Dims,
    /// The (contiguous) packed input.
    qkv: FlexTensor,
    saved: Saved,
}

impl Backward<Flex, 1> for PackedAttentionBackward {
    type State = PackedAttentionState;

    fn backward(
        self,
        ops: Ops<PackedAttentionState, 1>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |PackedAttentionState { dims, qkv, saved }, dy, _| {
            let dqkv = match saved {
                Saved::Probabilities(p) => {
                    attention::backward(dims, slice(&qkv), slice(&p), slice(dy))
                }
                Saved::Blocked { stats } => tiled_attention::backward(
                    dims,
                    QUERY_BLOCK,
                    slice(&qkv),
                    slice(&stats),
                    slice(dy),
                ),
            };
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
    window: Option<usize>,
) -> Result<Tensor<3>, Unfused<Tensor<3>>> {
    let forward = |qkv: &FlexTensor| {
        let dims = packed_attention_dims(qkv, heads, kv_heads, scale, causal, window);
        let y_shape = [dims.batch, dims.seq, heads * dims.d];
        // Only the blocked kernel takes a window.
        if dims.seq >= TILED_FROM || window.is_some() {
            let (y, stats) = tiled_attention::forward(dims, QUERY_BLOCK, slice(qkv));
            let stats = from_vec(stats, [dims.batch, heads, dims.seq, 2].into());
            (dims, from_vec(y, y_shape.into()), Saved::Blocked { stats })
        } else {
            let (y, p) = attention::forward(dims, slice(qkv));
            let p = from_vec(p, [dims.batch, heads, dims.seq, dims.seq].into());
            (dims, from_vec(y, y_shape.into()), Saved::Probabilities(p))
        }
    };
    match classify(qkv) {
        Input::Plain(t) => Ok(Tensor::from_primitive::<Flex>(forward(&contiguous(&t)).1)),
        Input::Tracked(t) => {
            let input = contiguous(t.primitive());
            let (dims, y, saved) = forward(&input);
            Ok(record(
                PackedAttentionBackward,
                [&t],
                PackedAttentionState { dims, qkv: input, saved },
                y,
            ))
        }
        Input::Other(x) => Err(Box::new(x)),
    }
}
