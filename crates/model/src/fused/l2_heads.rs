//! Heads taken off projected rows, each L2-normalised and scaled, in one pass: the delta rule's
//! queries and keys. For head `h` of row `(b, t)`, `x = rows[b, t, h·d .. (h + 1)·d]`:
//! `y[b, h, t] = c · x · r`, `r = 1/√(‖x‖² + ε)`.
//! Backward, with `ŷ = y / c` (the unit vector): `dx = c · r · (dy − ŷ (ŷ·dy))`.
//!
//! The rows are read where they lie (a narrowed view of the packed `[q | k | v]` projection),
//! so the composed path's copy into heads and its six elementwise ops (and their backward
//! passes) become one read and one write.

use super::simd;
use rayon::prelude::*;

/// Where the rows lie in a buffer: row `(b, t)` starts at `offset + b·batch_stride +
/// t·row_stride` and its `heads·d` values are contiguous.
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    pub offset: usize,
    pub batch_stride: usize,
    pub row_stride: usize,
}

/// Shapes and constants of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub d: usize,
    pub scale: f32,
    pub eps: f32,
}

/// One batch element's forward: `y` (`[heads, seq, d]`) and `r` (`[heads, seq]`) from the
/// rows at `at0` in `data`.
#[inline(always)]
fn batch_forward_body(
    dims: Dims,
    data: &[f32],
    at0: usize,
    row_stride: usize,
    y: &mut [f32],
    r: &mut [f32],
) {
    let Dims { seq, d, scale, eps, .. } = dims;
    for (h, (y, r)) in y.chunks_exact_mut(seq * d).zip(r.chunks_exact_mut(seq)).enumerate() {
        for (t, (y, r)) in y.chunks_exact_mut(d).zip(r.iter_mut()).enumerate() {
            let at = at0 + t * row_stride + h * d;
            let x = &data[at..at + d];
            *r = 1.0 / (simd::dot(x, x) + eps).sqrt();
            let c = scale * *r;
            for (y, &x) in y.iter_mut().zip(x) {
                *y = c * x;
            }
        }
    }
}

/// One batch element's backward: `dx` (`[seq, heads·d]`) from its `y`, `r` and `dy`.
#[inline(always)]
fn batch_backward_body(dims: Dims, y: &[f32], r: &[f32], dy: &[f32], dx: &mut [f32]) {
    let Dims { seq, heads, d, scale, .. } = dims;
    for h in 0..heads {
        for t in 0..seq {
            let row = h * seq + t;
            let (y, dy) = (&y[row * d..(row + 1) * d], &dy[row * d..(row + 1) * d]);
            // ŷ·dy = (y·dy)/c, and c·r·ŷ(ŷ·dy) = r·y·(ŷ·dy).
            let along = simd::dot(y, dy) / scale;
            let rr = r[row];
            let dx = &mut dx[(t * heads + h) * d..(t * heads + h + 1) * d];
            for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
                *dx = rr * (scale * g - y * along);
            }
        }
    }
}

simd::dispatched!(batch_forward => batch_forward_body(dims: Dims, data: &[f32], at0: usize, row_stride: usize, y: &mut [f32], r: &mut [f32]));
simd::dispatched!(batch_backward => batch_backward_body(dims: Dims, y: &[f32], r: &[f32], dy: &[f32], dx: &mut [f32]));

/// Returns `y` (`[batch, heads, seq, d]`) and `r` (`[batch, heads, seq]`).
pub fn forward(dims: Dims, data: &[f32], rows: Rows) -> (Vec<f32>, Vec<f32>) {
    let Dims { batch, seq, heads, d, .. } = dims;
    let mut y = vec![0.0; batch * heads * seq * d];
    let mut r = vec![0.0; batch * heads * seq];
    y.par_chunks_mut(heads * seq * d).zip(r.par_chunks_mut(heads * seq)).enumerate().for_each(
        |(b, (y, r))| {
            let at0 = rows.offset + b * rows.batch_stride;
            batch_forward(dims, data, at0, rows.row_stride, y, r)
        },
    );
    (y, r)
}

/// The rows' gradient, `[batch, seq, heads·d]` (contiguous), from the output's `dy`.
pub fn backward(dims: Dims, y: &[f32], r: &[f32], dy: &[f32]) -> Vec<f32> {
    let Dims { batch, seq, heads, d, .. } = dims;
    let (n, rows) = (seq * heads * d, heads * seq);
    let mut dx = vec![0.0; batch * n];
    dx.par_chunks_mut(n).enumerate().for_each(|(b, dx)| {
        let span = b * n..(b + 1) * n;
        batch_backward(dims, &y[span.clone()], &r[b * rows..(b + 1) * rows], &dy[span], dx)
    });
    dx
}
