//! The glue between the fused kernels and Burn's flex backend and autodiff graph.

use super::attention;
use super::gated_recurrence as gated;
use super::linear_attention;
use super::matmul::{self, View};
use super::norm;
use super::rope;
use super::simd;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor, TensorData};

/// Flex under Burn's default (no) gradient checkpointing, the device `attnlab` trains on.
type FlexAd = Autodiff<Flex>;

/// A tensor as the kernels see it.
enum Input<const D: usize> {
    /// Flex without autodiff (evaluation, sampling).
    Plain(FlexTensor),
    /// Flex under autodiff.
    Tracked(FloatTensor<FlexAd>),
    /// Anything else: the caller runs the composed formula.
    Other(Tensor<D>),
}

fn classify<const D: usize>(x: Tensor<D>) -> Input<D> {
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
fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() { t.clone() } else { t.to_contiguous() }
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("made contiguous f32 by the caller")
}

fn from_vec(values: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Records `op` in the autodiff graph over `inputs`, with `state` for its backward (dropped when
/// no input needs a gradient), and returns `output` as a tracked tensor.
fn record<O, const N: usize, const D: usize>(
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

/// Every backward pass here: `grads_of(state, dy, wanted)` returns each input's gradient (`dy`
/// made contiguous; `None` where the input wants none), and each is registered with its input.
fn run_backward<S, const N: usize>(
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
fn first<const N: usize>(mut all: [Option<FlexTensor>; 3]) -> [Option<FlexTensor>; N] {
    std::array::from_fn(|i| all[i].take())
}

/// Runs `f(start, chunk)` over chunks of `out` in parallel when it is large enough to pay for it.
fn par_chunks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 15;
    if out.len() >= 2 * CHUNK && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| f(i * CHUNK, chunk));
    } else {
        f(0, out);
    }
}

/// Element-wise maps with a hand-written derivative.
#[derive(Clone, Copy, Debug)]
enum Unary {
    /// Exact GELU; the backward needs the input.
    Gelu,
    /// `elu(x) + 1`; the backward needs only the output.
    Elu1,
    /// `x·σ(x)`; the backward needs the input.
    Silu,
    /// `ln σ(x)`; the backward needs the input.
    LogSigmoid,
}

impl Unary {
    fn apply(self, x: &FlexTensor) -> FlexTensor {
        let x_values = slice(x);
        let mut y = vec![0.0; x_values.len()];
        let kernel = match self {
            Unary::Gelu => simd::gelu,
            Unary::Elu1 => simd::elu1,
            Unary::Silu => simd::silu,
            Unary::LogSigmoid => simd::log_sigmoid,
        };
        par_chunks(&mut y, |start, out| kernel(&x_values[start..start + out.len()], out));
        from_vec(y, x.layout().shape().clone())
    }

    /// `dx` from the saved tensor (input or output, see the variants) and `dy`.
    fn derivative(self, saved: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
        let (saved, g) = (slice(saved), slice(dy));
        let mut dx = vec![0.0; g.len()];
        let kernel = match self {
            Unary::Gelu => simd::gelu_backward,
            Unary::Elu1 => simd::elu1_backward,
            Unary::Silu => simd::silu_backward,
            Unary::LogSigmoid => simd::log_sigmoid_backward,
        };
        par_chunks(&mut dx, |start, out| {
            kernel(&saved[start..start + out.len()], &g[start..start + out.len()], out)
        });
        from_vec(dx, dy.layout().shape().clone())
    }
}

#[derive(Debug)]
struct UnaryBackward;

impl Backward<Flex, 1> for UnaryBackward {
    /// The map and the (contiguous) tensor its derivative reads.
    type State = (Unary, FlexTensor);

    fn backward(
        self,
        ops: Ops<(Unary, FlexTensor), 1>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        run_backward(ops, grads, |(map, saved), dy, _| [Some(map.derivative(&saved, dy))]);
    }
}

fn unary_op<const D: usize>(map: Unary, x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    match classify(x) {
        Input::Plain(t) => Ok(Tensor::from_primitive::<Flex>(map.apply(&contiguous(&t)))),
        Input::Tracked(t) => {
            let input = contiguous(t.primitive());
            let y = map.apply(&input);
            let saved = match map {
                Unary::Gelu | Unary::Silu | Unary::LogSigmoid => input,
                Unary::Elu1 => y.clone(),
            };
            Ok(record(UnaryBackward, [&t], (map, saved), y))
        }
        Input::Other(x) => Err(x),
    }
}

/// Fused GELU, or the input back when it is not an f32 flex tensor.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    unary_op(Unary::Gelu, x)
}

/// Fused `elu(x) + 1`, or the input back when it is not an f32 flex tensor.
pub fn elu_plus_one<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    unary_op(Unary::Elu1, x)
}

/// Fused SiLU, or the input back when it is not an f32 flex tensor.
pub fn silu<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    unary_op(Unary::Silu, x)
}

/// Fused `ln σ(x)`, or the input back when it is not an f32 flex tensor.
pub fn log_sigmoid<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    unary_op(Unary::LogSigmoid, x)
}

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
#[allow(clippy::type_complexity)]
pub fn affine<const D: usize>(
    x: Tensor<D>,
    w: Tensor<2>,
    b: Option<Tensor<1>>,
) -> Result<Tensor<D>, (Tensor<D>, Tensor<2>, Option<Tensor<1>>)> {
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
        _ => Err((x, w, b)),
    }
}

fn packed_attention_dims(
    qkv: &FlexTensor,
    heads: usize,
    scale: f32,
    causal: bool,
) -> attention::Dims {
    let shape = qkv.layout().shape();
    let (batch, seq, width) = (shape[0], shape[1], shape[2]);
    assert!(
        heads > 0 && width % (3 * heads) == 0,
        "packed qkv width {width} is not 3 x {heads} heads"
    );
    attention::Dims { batch, seq, heads, d: width / (3 * heads), scale, causal }
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
    scale: f32,
    causal: bool,
) -> Result<Tensor<3>, Tensor<3>> {
    let forward = |qkv: &FlexTensor| {
        let dims = packed_attention_dims(qkv, heads, scale, causal);
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
        Input::Other(x) => Err(x),
    }
}

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
) -> Result<Tensor<3>, Tensor<3>> {
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
        Input::Other(x) => Err(x),
    }
}

/// Backward of layer norm with a bias (`N = 3`: x, γ, β) or without (`N = 2`).
#[derive(Debug)]
struct LayerNormBackward;

#[derive(Clone, Debug)]
struct LayerNormState {
    /// Normalised input `x̂` and the per-row reciprocal deviation `r`.
    xhat: FlexTensor,
    r: FlexTensor,
    gamma: FlexTensor,
}

impl LayerNormState {
    /// `[dx, dγ, dβ]` for a contiguous `dy`.
    fn grads(&self, dy: &FlexTensor) -> [Option<FlexTensor>; 3] {
        let (dx, dgamma, dbeta) =
            norm::backward(slice(dy), slice(&self.xhat), slice(&self.r), slice(&self.gamma));
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

/// Fused layer norm over the last axis, or the inputs back when they are not all f32 flex
/// tensors of one kind.
#[allow(clippy::type_complexity)]
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f32,
) -> Result<Tensor<D>, (Tensor<D>, Tensor<1>, Option<Tensor<1>>)> {
    let forward = |x: &FlexTensor, gamma: &FlexTensor, beta: Option<&FlexTensor>| {
        let shape = x.layout().shape().clone();
        let width = shape[shape.num_dims() - 1];
        let beta = beta.map(contiguous);
        let (y, xhat, r) =
            norm::forward(slice(x), width, slice(gamma), beta.as_ref().map(slice), epsilon);
        let rows = r.len();
        (
            from_vec(y, shape.clone()),
            LayerNormState {
                xhat: from_vec(xhat, shape),
                r: from_vec(r, [rows].into()),
                gamma: gamma.clone(),
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
        _ => Err((x, gamma, beta)),
    }
}

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
#[allow(clippy::type_complexity)]
pub fn causal_linear_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    chunk: usize,
    normalize: bool,
    eps: f32,
) -> Result<Tensor<4>, (Tensor<4>, Tensor<4>, Tensor<4>)> {
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
        _ => Err((q, k, v)),
    }
}

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
            let g = gated::backward(
                st.dims,
                slice(&st.q),
                slice(&st.k),
                slice(&st.v),
                slice(&st.g),
                beta,
                &st.saved,
                slice(dy),
            );
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
) -> Result<Tensor<4>, super::GatedRecurrenceInputs> {
    let [b, h, t, dk] = q.dims();
    let (dv, gate_width) = (v.dims()[3], log_g.dims()[3]);
    if t == 0 || b * h == 0 {
        return Err((q, k, v, log_g, beta));
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
        let (y, saved) = gated::forward(
            dims,
            slice(q),
            slice(k),
            slice(v),
            slice(g),
            beta.map_or(&[][..], slice),
        );
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
        _ => Err((q, k, v, log_g, beta)),
    }
}
