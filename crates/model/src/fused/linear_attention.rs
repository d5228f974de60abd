//! Causal linear attention by chunks (the form of `linear::chunked`), forward and backward in one
//! pass over the chunks of each (batch, head), parallel over (batch, head).
//!
//! Inputs are the feature-mapped `q, k` (`[bh, seq, f]`) and `v` (`[bh, seq, dv]`), row-major.
//! Per chunk `c` of `L ≤ C` rows, with `S` (`f × dv`) and `z` (`f`) summing all earlier chunks:
//! `A = tril(Q_c K_cᵀ)`, `num = A V_c + Q_c S`, `den = rowsum(A) + Q_c z`,
//! `y = num / safe(den)` (or `num` without normalisation), then `S += K_cᵀ V_c`, `z += Σ_rows K_c`.
//! `safe(den) = sign(den)·max(|den|, ε)`, as in `feature_map::safe_denominator`.
//!
//! Backward, chunks in reverse, with `dŜ`, `dẑ` the gradients of the state summed over later
//! chunks: `dnum = dy / safe(den)`, `dden = −Σ_e dy⊙y / safe(den)` (zero where clamped),
//! `dA = tril(dnum V_cᵀ + dden·1ᵀ)`, `dQ_c = dA K_c + dnum Sᵀ + dden zᵀ`,
//! `dK_c = dAᵀ Q_c + V_c dŜᵀ + 1 dẑᵀ`, `dV_c = Aᵀ dnum + K_c dŜ`, then `dŜ += Q_cᵀ dnum`,
//! `dẑ += Q_cᵀ dden`. The per-chunk states `S`, `z` are kept from the forward pass.

use super::matmul::{View, matmul_into};
use rayon::prelude::*;

/// Shapes of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Batch × heads.
    pub bh: usize,
    pub seq: usize,
    pub f: usize,
    pub dv: usize,
    pub chunk: usize,
    pub normalize: bool,
    pub eps: f32,
}

impl Dims {
    fn chunks(&self) -> usize {
        self.seq.div_ceil(self.chunk)
    }
    fn rows(&self, c: usize) -> (usize, usize) {
        (c * self.chunk, ((c + 1) * self.chunk).min(self.seq))
    }
}

fn block(data: &[f32], row0: usize, rows: usize, cols: usize) -> View<'_> {
    View { data, offset: row0 * cols, rows, cols, row_stride: cols as isize, col_stride: 1 }
}

/// `sign(z)·max(|z|, ε)` and whether `z` was clamped.
fn safe(z: f32, eps: f32) -> (f32, bool) {
    let s = if z >= 0.0 { 1.0 } else { -1.0 };
    if z.abs() > eps { (z, false) } else { (s * eps, true) }
}

/// Zeroes the strictly upper triangle of a row-major `l × l` block.
fn keep_lower(a: &mut [f32], l: usize) {
    for (i, row) in a.chunks_exact_mut(l).enumerate() {
        row[i + 1..].fill(0.0);
    }
}

/// What the backward pass needs besides the inputs and the output: raw denominators and the
/// state before each chunk.
#[derive(Debug)]
pub struct Saved {
    pub den: Vec<f32>,
    pub states: Vec<f32>,
    pub sums: Vec<f32>,
}

/// Returns the output `y` (`[bh, seq, dv]`) and what the backward pass needs.
pub fn forward(dims: Dims, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Saved) {
    let Dims { bh, seq, f, dv, chunk, .. } = dims;
    let n = dims.chunks();
    let mut y = vec![0.0; bh * seq * dv];
    let mut saved = Saved {
        den: vec![0.0; bh * seq],
        states: vec![0.0; bh * n * f * dv],
        sums: vec![0.0; bh * n * f],
    };
    y.par_chunks_mut(seq * dv)
        .zip(saved.den.par_chunks_mut(seq))
        .zip(saved.states.par_chunks_mut(n * f * dv))
        .zip(saved.sums.par_chunks_mut(n * f))
        .enumerate()
        .for_each(|(p, (((y, den), states), sums))| {
            let (q, k, v) = (
                &q[p * seq * f..(p + 1) * seq * f],
                &k[p * seq * f..(p + 1) * seq * f],
                &v[p * seq * dv..(p + 1) * seq * dv],
            );
            let (mut s, mut z) = (vec![0.0; f * dv], vec![0.0; f]);
            let mut a = vec![0.0; chunk * chunk];
            for c in 0..n {
                let (r0, r1) = dims.rows(c);
                let l = r1 - r0;
                states[c * f * dv..(c + 1) * f * dv].copy_from_slice(&s);
                sums[c * f..(c + 1) * f].copy_from_slice(&z);
                let (qc, kc, vc) = (block(q, r0, l, f), block(k, r0, l, f), block(v, r0, l, dv));
                let a = &mut a[..l * l];
                matmul_into(a, 0, l, qc, kc.t(), 1.0, false);
                keep_lower(a, l);
                matmul_into(y, r0 * dv, dv, View::row_major(a, l, l), vc, 1.0, false);
                matmul_into(y, r0 * dv, dv, qc, View::row_major(&s, f, dv), 1.0, true);
                if dims.normalize {
                    for i in 0..l {
                        let qi = &q[(r0 + i) * f..(r0 + i + 1) * f];
                        let d: f32 = a[i * l..(i + 1) * l].iter().sum::<f32>()
                            + qi.iter().zip(&z).map(|(x, y)| x * y).sum::<f32>();
                        den[r0 + i] = d;
                        let inv = 1.0 / safe(d, dims.eps).0;
                        for e in &mut y[(r0 + i) * dv..(r0 + i + 1) * dv] {
                            *e *= inv;
                        }
                    }
                }
                matmul_into(&mut s, 0, dv, kc.t(), vc, 1.0, true);
                for row in k[r0 * f..r1 * f].chunks_exact(f) {
                    for (z, x) in z.iter_mut().zip(row) {
                        *z += x;
                    }
                }
            }
        });
    (y, saved)
}

/// Returns `(dq, dk, dv)` from the inputs, the forward output `y` and what it saved.
// A kernel takes its slices and sizes as plain arguments; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dims: Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    y: &[f32],
    saved: &Saved,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims { bh, seq, f, dv, chunk, .. } = dims;
    let n = dims.chunks();
    let (mut dq, mut dk, mut dvv) =
        (vec![0.0; bh * seq * f], vec![0.0; bh * seq * f], vec![0.0; bh * seq * dv]);
    dq.par_chunks_mut(seq * f)
        .zip(dk.par_chunks_mut(seq * f))
        .zip(dvv.par_chunks_mut(seq * dv))
        .enumerate()
        .for_each(|(p, ((dq, dk), dvp))| {
            let qkr = p * seq * f..(p + 1) * seq * f;
            let vr = p * seq * dv..(p + 1) * seq * dv;
            let (q, k, v, y, g) =
                (&q[qkr.clone()], &k[qkr], &v[vr.clone()], &y[vr.clone()], &dy[vr]);
            let den = &saved.den[p * seq..(p + 1) * seq];
            let states = &saved.states[p * n * f * dv..(p + 1) * n * f * dv];
            let sums = &saved.sums[p * n * f..(p + 1) * n * f];
            let (mut ds_acc, mut dz_acc) = (vec![0.0; f * dv], vec![0.0; f]);
            let (mut a, mut da) = (vec![0.0; chunk * chunk], vec![0.0; chunk * chunk]);
            let (mut dnum, mut dden) = (vec![0.0; chunk * dv], vec![0.0; chunk]);
            for c in (0..n).rev() {
                let (r0, r1) = dims.rows(c);
                let l = r1 - r0;
                let (qc, kc, vc) = (block(q, r0, l, f), block(k, r0, l, f), block(v, r0, l, dv));
                let (s, z) = (
                    View::row_major(&states[c * f * dv..(c + 1) * f * dv], f, dv),
                    &sums[c * f..(c + 1) * f],
                );
                let (dnum, dden) = (&mut dnum[..l * dv], &mut dden[..l]);
                for i in 0..l {
                    let (gi, yi) = (
                        &g[(r0 + i) * dv..(r0 + i + 1) * dv],
                        &y[(r0 + i) * dv..(r0 + i + 1) * dv],
                    );
                    let out = &mut dnum[i * dv..(i + 1) * dv];
                    if dims.normalize {
                        let (d, clamped) = safe(den[r0 + i], dims.eps);
                        for (o, &x) in out.iter_mut().zip(gi) {
                            *o = x / d;
                        }
                        dden[i] = if clamped {
                            0.0
                        } else {
                            -gi.iter().zip(yi).map(|(a, b)| a * b).sum::<f32>() / d
                        };
                    } else {
                        out.copy_from_slice(gi);
                        dden[i] = 0.0;
                    }
                }
                let dnum_v = View::row_major(dnum, l, dv);
                let (a, da) = (&mut a[..l * l], &mut da[..l * l]);
                matmul_into(a, 0, l, qc, kc.t(), 1.0, false);
                keep_lower(a, l);
                matmul_into(da, 0, l, dnum_v, vc.t(), 1.0, false);
                for (i, row) in da.chunks_exact_mut(l).enumerate() {
                    for x in &mut row[..=i] {
                        *x += dden[i];
                    }
                    row[i + 1..].fill(0.0);
                }
                let (a_v, da_v) = (View::row_major(a, l, l), View::row_major(da, l, l));
                // dQ_c = dA K_c + dnum Sᵀ + dden zᵀ
                matmul_into(dq, r0 * f, f, da_v, kc, 1.0, false);
                matmul_into(dq, r0 * f, f, dnum_v, s.t(), 1.0, true);
                // dK_c = dAᵀ Q_c + V_c dŜᵀ + 1 dẑᵀ ; dV_c = Aᵀ dnum + K_c dŜ
                matmul_into(dk, r0 * f, f, da_v.t(), qc, 1.0, false);
                matmul_into(dk, r0 * f, f, vc, View::row_major(&ds_acc, f, dv).t(), 1.0, true);
                matmul_into(dvp, r0 * dv, dv, a_v.t(), dnum_v, 1.0, false);
                matmul_into(dvp, r0 * dv, dv, kc, View::row_major(&ds_acc, f, dv), 1.0, true);
                for i in 0..l {
                    let (dqi, dki) = (
                        &mut dq[(r0 + i) * f..(r0 + i + 1) * f],
                        &mut dk[(r0 + i) * f..(r0 + i + 1) * f],
                    );
                    for ((dq, dk), (&zz, &dz)) in
                        dqi.iter_mut().zip(dki.iter_mut()).zip(z.iter().zip(&dz_acc))
                    {
                        *dq += dden[i] * zz;
                        *dk += dz;
                    }
                }
                // The state before this chunk collects from this chunk's queries.
                matmul_into(&mut ds_acc, 0, dv, qc.t(), dnum_v, 1.0, true);
                for i in 0..l {
                    for (dz, &x) in dz_acc.iter_mut().zip(&q[(r0 + i) * f..(r0 + i + 1) * f]) {
                        *dz += dden[i] * x;
                    }
                }
            }
        });
    (dq, dk, dvv)
}
