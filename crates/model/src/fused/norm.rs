//! Layer normalisation (Ba et al. 2016) and RMS normalisation (Zhang & Sennrich 2019) over the
//! last axis, forward and backward in one pass per row, parallel over rows.
//!
//! Layer norm (`centered`): `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)` (biased variance),
//! `y = γ ⊙ x̂ + β`. Backward, with `g = γ ⊙ dy`: `dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂))`,
//! `dγ = Σ_rows dy ⊙ x̂`, `dβ = Σ_rows dy`.
//! RMS norm (not `centered`): `x̂ = x·r`, `r = 1/√(mean(x²) + ε)`, `y = γ ⊙ x̂`, and the same
//! backward without the `mean(g)` term (nothing was subtracted).

use super::simd;
use rayon::prelude::*;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Returns `(y, x̂, r)` for `x` of `rows × width` (row-major): layer norm when `centered`,
/// RMS norm otherwise.
pub fn forward(
    x: &[f32],
    width: usize,
    gamma: &[f32],
    beta: Option<&[f32]>,
    epsilon: f32,
    centered: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(gamma.len(), width, "gamma length");
    let rows = x.len() / width;
    let (mut y, mut xhat, mut r) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; rows]);
    let chunk = ROWS_PER_TASK * width;
    y.par_chunks_mut(chunk)
        .zip(xhat.par_chunks_mut(chunk))
        .zip(r.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, ((y, xhat), r))| {
            let x = &x[task * chunk..task * chunk + y.len()];
            for (((x, y), xhat), r) in x
                .chunks_exact(width)
                .zip(y.chunks_exact_mut(width))
                .zip(xhat.chunks_exact_mut(width))
                .zip(r)
            {
                let mean = if centered { simd::sum(x) / width as f32 } else { 0.0 };
                for (h, &v) in xhat.iter_mut().zip(x) {
                    *h = v - mean;
                }
                let var = simd::dot(xhat, xhat) / width as f32;
                *r = 1.0 / (var + epsilon).sqrt();
                for h in xhat.iter_mut() {
                    *h *= *r;
                }
                match beta {
                    Some(beta) => {
                        for (((y, &h), &g), &b) in
                            y.iter_mut().zip(xhat.iter()).zip(gamma).zip(beta)
                        {
                            *y = h * g + b;
                        }
                    }
                    None => {
                        for ((y, &h), &g) in y.iter_mut().zip(xhat.iter()).zip(gamma) {
                            *y = h * g;
                        }
                    }
                }
            }
        });
    (y, xhat, r)
}

/// Returns `(dx, dγ, dβ)` from the saved `x̂`, `r` and the output gradient `dy` (`centered` as
/// in the forward pass).
pub fn backward(
    dy: &[f32],
    xhat: &[f32],
    r: &[f32],
    gamma: &[f32],
    centered: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let width = gamma.len();
    let mut dx = vec![0.0; dy.len()];
    let chunk = ROWS_PER_TASK * width;
    // Each task also returns its partial dγ and dβ; they are added up afterwards.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(chunk)
        .enumerate()
        .map(|(task, dx)| {
            let start = task * chunk;
            let (dy, xhat) = (&dy[start..start + dx.len()], &xhat[start..start + dx.len()]);
            let (mut dgamma, mut dbeta) = (vec![0.0; width], vec![0.0; width]);
            let mut g = vec![0.0; width];
            let rows = dx
                .chunks_exact_mut(width)
                .zip(dy.chunks_exact(width))
                .zip(xhat.chunks_exact(width));
            for (row, ((dx, dy), xhat)) in rows.enumerate() {
                for ((((g, &d), &h), dg), db) in
                    g.iter_mut().zip(dy).zip(xhat).zip(dgamma.iter_mut()).zip(dbeta.iter_mut())
                {
                    *dg += d * h;
                    *db += d;
                    *g = d;
                }
                for (g, &gm) in g.iter_mut().zip(gamma) {
                    *g *= gm;
                }
                let mean_g = if centered { simd::sum(&g) / width as f32 } else { 0.0 };
                let mean_gx = simd::dot(&g, xhat) / width as f32;
                let rr = r[task * ROWS_PER_TASK + row];
                for ((dx, &g), &h) in dx.iter_mut().zip(&g).zip(xhat) {
                    *dx = rr * (g - mean_g - h * mean_gx);
                }
            }
            (dgamma, dbeta)
        })
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0.0; width], vec![0.0; width]);
    for (pg, pb) in partials {
        for (a, b) in dgamma.iter_mut().zip(pg) {
            *a += b;
        }
        for (a, b) in dbeta.iter_mut().zip(pb) {
            *a += b;
        }
    }
    (dx, dgamma, dbeta)
}
