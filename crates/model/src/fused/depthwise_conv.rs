//! Causal depthwise convolution over time, forward and backward in one pass per sequence,
//! parallel over the batch: `y[b, t, c] = Σ_{i<K} w[i, c] · x[b, t − K + 1 + i, c]`, with `x`
//! zero before the first token (the `conv=K` option's convolution, and Canon layers').
//!
//! Backward: `dx[b, s, c] = Σ_i w[i, c] · dy[b, s + K − 1 − i, c]` (taps past the end drop out),
//! `dw[i, c] = Σ_{b, t} x[b, t − K + 1 + i, c] · dy[b, t, c]`.
//! Composed by tensor ops the same thing is a copy (the zero history and `x` joined), `K`
//! products and `K − 1` sums forward, and twice that with `K` reductions backward.

use super::simd;
use rayon::prelude::*;

/// Shapes of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub seq: usize,
    pub channels: usize,
    /// Taps `K`.
    pub kernel: usize,
}

/// `acc[c] += w[c] · x[c]`.
#[inline(always)]
fn add_product(acc: &mut [f32], w: &[f32], x: &[f32]) {
    for ((a, &w), &x) in acc.iter_mut().zip(w).zip(x) {
        *a += w * x;
    }
}

/// One sequence's forward (`x`, `y`: `[seq, channels]`).
#[inline(always)]
fn sequence_forward_body(dims: Dims, x: &[f32], w: &[f32], y: &mut [f32]) {
    let Dims { channels: c, kernel: k, .. } = dims;
    for (t, y) in y.chunks_exact_mut(c).enumerate() {
        // Tap i reads token t − K + 1 + i; the first taps fall before the sequence early on.
        for i in (k - 1).saturating_sub(t)..k {
            let s = t + i + 1 - k;
            add_product(y, &w[i * c..(i + 1) * c], &x[s * c..(s + 1) * c]);
        }
    }
}

/// One sequence's backward: `dx` written, its `dw` added to `dw`.
#[inline(always)]
fn sequence_backward_body(
    dims: Dims,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
) {
    let Dims { seq, channels: c, kernel: k } = dims;
    for t in 0..seq {
        let g = &dy[t * c..(t + 1) * c];
        for i in (k - 1).saturating_sub(t)..k {
            let s = t + i + 1 - k;
            add_product(&mut dx[s * c..(s + 1) * c], &w[i * c..(i + 1) * c], g);
            add_product(&mut dw[i * c..(i + 1) * c], &x[s * c..(s + 1) * c], g);
        }
    }
}

simd::dispatched!(sequence_forward => sequence_forward_body(dims: Dims, x: &[f32], w: &[f32], y: &mut [f32]));
simd::dispatched!(sequence_backward => sequence_backward_body(dims: Dims, x: &[f32], w: &[f32], dy: &[f32], dx: &mut [f32], dw: &mut [f32]));

/// `y` (`[batch, seq, channels]`) from `x` (the same) and `w` (`[K, channels]`).
pub fn forward(dims: Dims, x: &[f32], w: &[f32]) -> Vec<f32> {
    let n = dims.seq * dims.channels;
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| sequence_forward(dims, x, w, y));
    y
}

/// `(dx, dw)` from the forward's `x`, `w` and the output gradient `dy`.
pub fn backward(dims: Dims, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (n, kc) = (dims.seq * dims.channels, dims.kernel * dims.channels);
    let mut dx = vec![0.0; x.len()];
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(n)
        .zip(x.par_chunks(n).zip(dy.par_chunks(n)))
        .map(|(dx, (x, dy))| {
            let mut dw = vec![0.0; kc];
            sequence_backward(dims, x, w, dy, dx, &mut dw);
            dw
        })
        .collect();
    let mut dw = vec![0.0; kc];
    for part in partials {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    (dx, dw)
}
