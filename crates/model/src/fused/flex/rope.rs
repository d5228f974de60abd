//! RoPE on packed `[q | k | v]` rows (the kernel of `fused::rope`), at the angles the composed
//! rotation reads from Burn's table (`position::rope_pair_angles`); its backward is the same
//! map at minus the angle.

use super::glue::{Input, classify, contiguous, from_vec, record, run_backward, slice};
use crate::fused::inputs::Unfused;
use crate::fused::rope;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::Tensor;

#[derive(Debug)]
struct RopeBackward;

impl Backward<Flex, 1> for RopeBackward {
    /// The dims and the `[seq, d/2]` cosines and sines of the forward pass.
    type State = (rope::Dims, Vec<f32>, Vec<f32>);

    fn backward(
        self,
        ops: Ops<(rope::Dims, Vec<f32>, Vec<f32>), 1>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |(dims, cos, sin), dy, _| {
            [Some(from_vec(
                rope::rotate(dims, slice(dy), &cos, &sin, -1.0),
                dy.layout().shape().clone(),
            ))]
        });
    }
}

/// Fused RoPE on packed `[q | k | v]`, or the input back when it is not f32 flex.
pub fn rope_packed(
    qkv: Tensor<3>,
    encoding: &burn::nn::RotaryEncoding,
    offset: usize,
    rotated: usize,
    d: usize,
) -> Result<Tensor<3>, Unfused<Tensor<3>>> {
    let [_, seq, width] = qkv.dims();
    // The composed path's own angles (one reader of Burn's table layout), so the fused path
    // rotates by exactly its numbers.
    let tables = || {
        let (cos, sin) = crate::position::rope_pair_angles(encoding, offset, seq, d);
        let to_vec =
            |t: Tensor<2>| t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 table");
        (to_vec(cos), to_vec(sin))
    };
    let dims = rope::Dims { seq, width, rotated, d };
    match classify(qkv) {
        Input::Plain(t) => {
            let (cos, sin) = tables();
            let y = rope::rotate(dims, slice(&contiguous(&t)), &cos, &sin, 1.0);
            Ok(Tensor::from_primitive::<Flex>(from_vec(y, t.layout().shape().clone())))
        }
        Input::Tracked(t) => {
            let (cos, sin) = tables();
            let input = contiguous(t.primitive());
            let y = from_vec(
                rope::rotate(dims, slice(&input), &cos, &sin, 1.0),
                input.layout().shape().clone(),
            );
            Ok(record(RopeBackward, [&t], (dims, cos, sin), y))
        }
        Input::Other(x) => Err(Box::new(x)),
    }
}
