//! The chunked kernels' drivers, written once over a form's block steps ([`BlockForward`], [`BlockBackward`]): each (batch, head) in
//! parallel, each sequence chunk by chunk (a chunk is `dims.chunk` tokens between checkpoints)
//! and block by block within it; backward, the chunks in reverse, each first replaying its
//! blocks' start states from its checkpoint. `sequence_forward` and `sequence_backward` pick the
//! form by the gates' width and run it compiled for the widest SIMD tier the CPU has.

use super::blocks::PerHead;
use super::channels::blocks::PerChannel;
use super::form::{BlockBackward, BlockForward};
use crate::fused::gated_recurrence::{Dims, Grads, Saved, Sequence, backward_each, forward_each};
use crate::fused::simd::dispatched;

/// The forward pass of one (batch, head): outputs into `y`, the state at the start of every
/// `dims.chunk` tokens into `checkpoints`.
#[inline(always)]
fn forward_in<F: BlockForward>(
    dims: Dims,
    block: usize,
    x: Sequence<'_>,
    y: &mut [f32],
    checkpoints: &mut [f32],
) {
    let state = dims.dk * dims.dv;
    let block = block.clamp(1, dims.chunk);
    let mut w = F::scratch(dims, block);
    let mut s = vec![0.0; state];
    for c in 0..dims.chunks() {
        checkpoints[c * state..(c + 1) * state].copy_from_slice(&s);
        let (c0, c1) = (c * dims.chunk, ((c + 1) * dims.chunk).min(dims.seq));
        for (t0, n) in F::partition(dims, x.g, c0, c1, block) {
            F::internals(dims, x, t0, n, &s, &mut w, true);
            F::outputs(dims, x, t0, n, &s, &mut y[t0 * dims.dv..(t0 + n) * dims.dv], &w);
            F::advance(dims, x, t0, n, &mut s, &w);
        }
    }
}

/// The gradients of one (batch, head) from its checkpoints and `dy`.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // a kernel's slices and sizes, passed as they are
fn backward_in<F: BlockBackward>(
    dims: Dims,
    block: usize,
    x: Sequence<'_>,
    checkpoints: &[f32],
    dy: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dg: &mut [f32],
    dbeta: &mut [f32],
) {
    let state = dims.dk * dims.dv;
    let block = block.clamp(1, dims.chunk);
    let mut w = F::scratch(dims, block);
    let mut a = F::adjoints(dims, block);
    let mut ds = vec![0.0; state];
    let mut starts = Vec::new();
    for c in (0..dims.chunks()).rev() {
        let (c0, c1) = (c * dims.chunk, ((c + 1) * dims.chunk).min(dims.seq));
        let blocks = F::partition(dims, x.g, c0, c1, block);
        // The state at the start of each block of the chunk being undone.
        starts.resize(blocks.len() * state, 0.0);
        starts[..state].copy_from_slice(&checkpoints[c * state..(c + 1) * state]);
        for (m, &(t0, n)) in blocks.iter().enumerate().take(blocks.len() - 1) {
            let (done, next) = starts.split_at_mut((m + 1) * state);
            let s = &mut next[..state];
            s.copy_from_slice(&done[m * state..]);
            F::internals(dims, x, t0, n, s, &mut w, false);
            F::advance(dims, x, t0, n, s, &w);
        }
        for (m, &(t0, n)) in blocks.iter().enumerate().rev() {
            let s = &starts[m * state..(m + 1) * state];
            F::internals(dims, x, t0, n, s, &mut w, true);
            let grads = (&mut *dq, &mut *dk, &mut *dv, &mut *dg, &mut *dbeta);
            F::backward(dims, x, t0, n, s, &mut ds, dy, &w, &mut a, grads);
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)] // as above
fn sequence_forward_body(
    dims: Dims,
    block: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    y: &mut [f32],
    checkpoints: &mut [f32],
) {
    let x = Sequence { q, k, v, g, beta };
    if dims.gate_width == 1 {
        forward_in::<PerHead>(dims, block, x, y, checkpoints)
    } else {
        forward_in::<PerChannel>(dims, block, x, y, checkpoints)
    }
}

dispatched!(sequence_forward => sequence_forward_body(dims: Dims, block: usize, q: &[f32], k: &[f32], v: &[f32], g: &[f32], beta: &[f32], y: &mut [f32], checkpoints: &mut [f32]));

#[inline(always)]
#[allow(clippy::too_many_arguments)] // as above
fn sequence_backward_body(
    dims: Dims,
    block: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    checkpoints: &[f32],
    dy: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dg: &mut [f32],
    dbeta: &mut [f32],
) {
    let x = Sequence { q, k, v, g, beta };
    if dims.gate_width == 1 {
        backward_in::<PerHead>(dims, block, x, checkpoints, dy, dq, dk, dv, dg, dbeta)
    } else {
        backward_in::<PerChannel>(dims, block, x, checkpoints, dy, dq, dk, dv, dg, dbeta)
    }
}

dispatched!(sequence_backward => sequence_backward_body(
    dims: Dims, block: usize, q: &[f32], k: &[f32], v: &[f32], g: &[f32], beta: &[f32],
    checkpoints: &[f32], dy: &[f32], dq: &mut [f32], dk: &mut [f32], dv: &mut [f32],
    dg: &mut [f32], dbeta: &mut [f32]
));

/// [`super::super::gated_recurrence::forward`] in blocks of `block` tokens: the same `y`
/// (`[bh, seq, dv]`) and checkpoints, up to rounding, per-head or per-channel gates.
pub fn forward(
    dims: Dims,
    block: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
) -> (Vec<f32>, Saved) {
    forward_each(dims, (q, k, v, g, beta), |x, y, cp| {
        sequence_forward(dims, block, x.q, x.k, x.v, x.g, x.beta, y, cp)
    })
}

/// [`super::super::gated_recurrence::backward`] in blocks of `block` tokens: the same
/// gradients, up to rounding, from the same checkpoints, per-head or per-channel gates.
#[allow(clippy::too_many_arguments)] // as above
pub fn backward(
    dims: Dims,
    block: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    saved: &Saved,
    dy: &[f32],
) -> Grads {
    backward_each(dims, (q, k, v, g, beta), saved, dy, |x, cp, dy, (dq, dk, dv, dg, db)| {
        sequence_backward(dims, block, x.q, x.k, x.v, x.g, x.beta, cp, dy, dq, dk, dv, dg, db)
    })
}
