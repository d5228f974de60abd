//! What every flex glue file shares: telling a plain, a tracked (autodiff) and a foreign tensor
//! apart, reading a flex tensor's `f32` buffer, and recording an op with its own backward pass
//! in Burn's autodiff graph.

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor, TensorData};

/// Flex under Burn's default (no) gradient checkpointing, the device `attnlab` trains on.
pub(super) type FlexAd = Autodiff<Flex>;

/// A tensor as the kernels see it.
pub(super) enum Input<const D: usize> {
    /// Flex without autodiff (evaluation, sampling).
    Plain(FlexTensor),
    /// Flex under autodiff.
    Tracked(FloatTensor<FlexAd>),
    /// Anything else: the caller runs the composed formula.
    Other(Tensor<D>),
}

pub(super) fn classify<const D: usize>(x: Tensor<D>) -> Input<D> {
    if x.dtype() != DType::F32 {
        return Input::Other(x);
    }
    if let Ok(t) = x.clone().try_into_primitive::<FlexAd>() {
        return Input::Tracked(t);
    }
    match x.clone().try_into_primitive::<Flex>() {
        Ok(t) => Input::Plain(t),
        Err(_) => Input::Other(x),
    }
}

/// The tensor's elements in row-major order (copied only when it is a strided view).
pub(super) fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() { t.clone() } else { t.to_contiguous() }
}

pub(super) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("made contiguous f32 by the caller")
}

pub(super) fn from_vec(values: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Records `op` in the autodiff graph over `inputs`, with `state` for its backward (dropped when
/// no input needs a gradient), and returns `output` as a tracked tensor.
pub(super) fn record<O, const N: usize, const D: usize>(
    op: O,
    inputs: [&FloatTensor<FlexAd>; N],
    state: O::State,
    output: FlexTensor,
) -> Tensor<D>
where
    O: Backward<Flex, N>,
{
    let out =
        match op.prepare::<NoCheckpointing>(inputs.map(|t| t.node())).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
    Tensor::from_primitive::<FlexAd>(out)
}

/// A fused op over `N` same-kind inputs: on plain flex tensors `forward` alone; under autodiff
/// `forward`, then `op` recorded with the state `state` builds from the contiguous inputs and
/// what `forward` saved; on anything else (another backend, a mix of kinds) the inputs back.
pub(super) fn fused<O, S, const N: usize, const D: usize, const E: usize>(
    x: [Tensor<D>; N],
    forward: impl Fn(&[FlexTensor; N]) -> (FlexTensor, S),
    op: O,
    state: impl FnOnce([FlexTensor; N], S) -> O::State,
) -> Result<Tensor<E>, Box<[Tensor<D>; N]>>
where
    O: Backward<Flex, N>,
{
    let classified = x.clone().map(classify);
    if classified.iter().all(|c| matches!(c, Input::Plain(_))) {
        let inputs = classified.map(|c| match c {
            Input::Plain(t) => contiguous(&t),
            _ => unreachable!("all plain"),
        });
        return Ok(Tensor::from_primitive::<Flex>(forward(&inputs).0));
    }
    if classified.iter().all(|c| matches!(c, Input::Tracked(_))) {
        let tracked = classified.map(|c| match c {
            Input::Tracked(t) => t,
            _ => unreachable!("all tracked"),
        });
        let inputs = tracked.each_ref().map(|t| contiguous(t.primitive()));
        let (y, saved) = forward(&inputs);
        return Ok(record(op, tracked.each_ref(), state(inputs, saved), y));
    }
    Err(Box::new(x))
}

/// Every backward pass here: `grads_of(state, dy, wanted)` returns each input's gradient (`dy`
/// made contiguous; `None` where the input wants none), and each is registered with its input.
pub(super) fn run_backward<S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    grads_of: impl FnOnce(S, &FlexTensor, [bool; N]) -> [Option<FlexTensor>; N],
) {
    let dy = contiguous(&grads.consume::<Flex>(&ops.node));
    let wanted = ops.parents.each_ref().map(Option::is_some);
    for (parent, grad) in ops.parents.into_iter().zip(grads_of(ops.state, &dy, wanted)) {
        if let (Some(node), Some(grad)) = (parent, grad) {
            grads.register::<Flex>(node.id, grad);
        }
    }
}

/// The first `N` of three optional gradients (ops whose third input, a bias, is optional).
pub(super) fn first<const N: usize>(mut all: [Option<FlexTensor>; 3]) -> [Option<FlexTensor>; N] {
    std::array::from_fn(|i| all[i].take())
}

/// Runs `f(start, chunk)` over chunks of `out` in parallel when it is large enough to pay for it.
pub(super) fn par_chunks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 15;
    if out.len() >= 2 * CHUNK && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| f(i * CHUNK, chunk));
    } else {
        f(0, out);
    }
}
