//! Causal linear attention on packed `[q | k | v]` rows, the feature map applied inside: the
//! chunked kernel of `linear_attention` without the split into heads, the feature map's own op
//! and the merge of heads that the composed path pays for in copies and autodiff nodes (on the
//! Intel host a sixth of elu+1's training step, docs/benchmarks.md).
//!
//! Rows are `[batch, seq, H·f (q) | H·f (k) | H·d_v (v)]`; the output is `[batch, seq, H·d_v]`,
//! heads side by side, ready for the output projection. φ is pointwise (identity, `elu + 1`,
//! ReLU), so the backward pass scales `dφ(q)`, `dφ(k)` elementwise by `φ'`, which each map
//! reads off its own output.

use super::inputs::PointMap;
use super::linear_attention::{self, Dims, Saved};
use super::simd;
use rayon::prelude::*;

/// Where the heads sit in a packed row.
#[derive(Clone, Copy, Debug)]
pub struct Packing {
    pub batch: usize,
    pub heads: usize,
    pub map: PointMap,
}

/// What the backward pass reads: the inputs as the kernel saw them (`[batch·heads, seq, ·]`,
/// φ applied), its output in the same layout, and the kernel's own saved sums.
#[derive(Debug)]
pub struct Heads {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    y: Vec<f32>,
    saved: Saved,
}

/// The `d`-wide head slices starting at column `col0` of each `width`-wide row, as
/// `[batch, heads, seq, d]`, each slice written through `each(slice, out)` (a copy, or φ).
fn to_heads(
    rows: &[f32],
    (width, col0, d): (usize, usize, usize),
    p: Packing,
    seq: usize,
    each: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0.0; p.batch * p.heads * seq * d];
    out.par_chunks_mut(p.heads * seq * d).enumerate().for_each(|(b, out)| {
        let rows = &rows[b * seq * width..(b + 1) * seq * width];
        for (h, head) in out.chunks_exact_mut(seq * d).enumerate() {
            for (t, o) in head.chunks_exact_mut(d).enumerate() {
                let at = t * width + col0 + h * d;
                each(&rows[at..at + d], o);
            }
        }
    });
    out
}

/// The inverse of [`to_heads`]: fills the `d`-wide slices from column `col0` of each row, each
/// through `each(at, slice)` with `at` the slice's offset in `[batch, heads, seq, d]`.
fn from_heads(
    rows: &mut [f32],
    (width, col0, d): (usize, usize, usize),
    p: Packing,
    seq: usize,
    each: impl Fn(usize, &mut [f32]) + Sync,
) {
    rows.par_chunks_mut(seq * width).enumerate().for_each(|(b, rows)| {
        for h in 0..p.heads {
            for t in 0..seq {
                let at = t * width + col0 + h * d;
                each(((b * p.heads + h) * seq + t) * d, &mut rows[at..at + d]);
            }
        }
    });
}

fn copy(x: &[f32], out: &mut [f32]) {
    out.copy_from_slice(x);
}

/// `out = φ(x)`.
fn map_into(map: PointMap, x: &[f32], out: &mut [f32]) {
    match map {
        PointMap::Identity => out.copy_from_slice(x),
        PointMap::Elu1 => simd::elu1(x, out),
        PointMap::Relu => out.iter_mut().zip(x).for_each(|(o, &x)| *o = x.max(0.0)),
    }
}

/// `out = g · φ'(x)`, from the map's output `y = φ(x)`.
fn chain_into(map: PointMap, y: &[f32], g: &[f32], out: &mut [f32]) {
    match map {
        PointMap::Identity => out.copy_from_slice(g),
        PointMap::Elu1 => simd::elu1_backward(y, g, out),
        PointMap::Relu => {
            for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
                *o = if y > 0.0 { g } else { 0.0 };
            }
        }
    }
}

/// Returns the output `[batch, seq, H·d_v]` and what the backward pass needs. `dims.bh` must be
/// `batch·heads`.
pub fn forward(dims: Dims, p: Packing, qkv: &[f32]) -> (Vec<f32>, Heads) {
    let Dims { seq, f, dv, .. } = dims;
    let width = p.heads * (2 * f + dv);
    let mapped = |x: &[f32], out: &mut [f32]| map_into(p.map, x, out);
    let q = to_heads(qkv, (width, 0, f), p, seq, mapped);
    let k = to_heads(qkv, (width, p.heads * f, f), p, seq, mapped);
    let v = to_heads(qkv, (width, 2 * p.heads * f, dv), p, seq, copy);
    let (y, saved) = linear_attention::forward(dims, &q, &k, &v);
    let mut out = vec![0.0; p.batch * seq * p.heads * dv];
    from_heads(&mut out, (p.heads * dv, 0, dv), p, seq, |at, o| o.copy_from_slice(&y[at..at + dv]));
    (out, Heads { q, k, v, y, saved })
}

/// The gradient of the packed input from the output's `dy` (`[batch, seq, H·d_v]`).
pub fn backward(dims: Dims, p: Packing, heads: &Heads, dy: &[f32]) -> Vec<f32> {
    let Dims { seq, f, dv, .. } = dims;
    let dy = to_heads(dy, (p.heads * dv, 0, dv), p, seq, copy);
    let (dq, dk, dv_heads) =
        linear_attention::backward(dims, &heads.q, &heads.k, &heads.v, &heads.y, &heads.saved, &dy);
    let width = p.heads * (2 * f + dv);
    let mut dqkv = vec![0.0; p.batch * seq * width];
    for (col0, phi, g) in [(0, &heads.q, &dq), (p.heads * f, &heads.k, &dk)] {
        from_heads(&mut dqkv, (width, col0, f), p, seq, |at, out| {
            chain_into(p.map, &phi[at..at + f], &g[at..at + f], out)
        });
    }
    from_heads(&mut dqkv, (width, 2 * p.heads * f, dv), p, seq, |at, out| {
        out.copy_from_slice(&dv_heads[at..at + dv])
    });
    dqkv
}
