//! Rotary position encoding (Su et al. 2021) on packed `[q | k | v]` rows, in one pass.
//!
//! Each row is one position `t` of one sequence. Its first `rotated` values are the queries
//! and keys of every head, `d` per head, in pairs `(x₀, x₁)` that turn by pair `i`'s angle at
//! `t`: `(x₀·cos − x₁·sin, x₁·cos + x₀·sin)`; the values after them pass through unchanged. The
//! backward pass is the same map at minus the angle (a rotation's transpose is its inverse).

use rayon::prelude::*;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Positions per sequence (rows are `batch × seq`, position-major within a sequence).
    pub seq: usize,
    /// Values per row.
    pub width: usize,
    /// The leading values of a row that turn (queries and keys of every head).
    pub rotated: usize,
    /// Per-head width (even).
    pub d: usize,
}

/// `x` rotated by `sign ×` the angles whose cosines and sines are `cos`, `sin` (`[seq, d/2]`
/// row-major); `sign = 1` is RoPE, `sign = −1` its transpose (the backward pass).
pub fn rotate(dims: Dims, x: &[f32], cos: &[f32], sin: &[f32], sign: f32) -> Vec<f32> {
    let Dims { seq, width, rotated, d } = dims;
    let half = d / 2;
    assert!(
        d % 2 == 0 && rotated % d == 0 && rotated <= width && x.len().is_multiple_of(width * seq),
        "rope dims {dims:?} for {} values",
        x.len()
    );
    assert_eq!((cos.len(), sin.len()), (seq * half, seq * half), "rope tables");
    let mut y = x.to_vec();
    y.par_chunks_mut(ROWS_PER_TASK * width).enumerate().for_each(|(task, rows)| {
        for (r, row) in rows.chunks_exact_mut(width).enumerate() {
            let t = (task * ROWS_PER_TASK + r) % seq;
            let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
            for head in row[..rotated].chunks_exact_mut(d) {
                for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(c).zip(s) {
                    let (x0, x1, s) = (pair[0], pair[1], sign * s);
                    // The composed formula's operations in its order (x·cos + swap(x)·(∓sin)),
                    // so the fused and composed paths agree to the bit.
                    pair[0] = x0 * c + x1 * -s;
                    pair[1] = x1 * c + x0 * s;
                }
            }
        }
    });
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_each_pair_by_its_angle_and_back() {
        // One sequence of 2 positions, one head of width 4 (2 pairs) for q and for k, 2 values.
        let dims = Dims { seq: 2, width: 10, rotated: 8, d: 4 };
        let angle = |t: usize, i: usize| (t as f32 + 1.0) * (i as f32 + 0.5);
        let (mut cos, mut sin) = (vec![], vec![]);
        for t in 0..2 {
            for i in 0..2 {
                cos.push(angle(t, i).cos());
                sin.push(angle(t, i).sin());
            }
        }
        let x: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin()).collect();
        let y = rotate(dims, &x, &cos, &sin, 1.0);
        for t in 0..2 {
            let row = &x[t * 10..(t + 1) * 10];
            let out = &y[t * 10..(t + 1) * 10];
            for p in 0..4 {
                let (a, (x0, x1)) = (angle(t, p % 2), (row[2 * p], row[2 * p + 1]));
                assert!((out[2 * p] - (x0 * a.cos() - x1 * a.sin())).abs() < 1e-6);
                assert!((out[2 * p + 1] - (x1 * a.cos() + x0 * a.sin())).abs() < 1e-6);
            }
            assert_eq!(&out[8..], &row[8..], "values pass through");
        }
        let back = rotate(dims, &y, &cos, &sin, -1.0);
        for (a, b) in back.iter().zip(&x) {
            assert!((a - b).abs() < 1e-6, "the transpose undoes the rotation");
        }
    }
}
