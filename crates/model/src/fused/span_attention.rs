//! Softmax attention of each query over a few spans of keys listed for it, forward and backward,
//! parallel over (batch, head): the sparse attention of MoBA (Lu et al. 2025, arXiv 2502.13189:
//! a query's own block and the blocks its gate chose) and of NSA's selected and sliding-window
//! branches (Yuan et al. 2025, arXiv 2502.11089). With `keys(i)` the union of query `i`'s spans
//! (disjoint by the caller's construction):
//!
//! `y_i = Σ_{l ∈ keys(i)} p_il v_l`, `p_il = e^{s_il − m_i}`, `s_il = scale·q_i·k_l`,
//! `m_i = ln Σ_{l ∈ keys(i)} e^{s_il}` (kept for the backward pass).
//!
//! Backward, per query: `dp_l = dy_i·v_l`, `D_i = Σ_l p_il dp_l`, `ds_l = p_il (dp_l − D_i)`;
//! `dq_i = scale Σ_l ds_l k_l`, `dk_l += scale ds_l q_i`, `dv_l += p_il dy_i`.
//!
//! Time and memory are `O(T·|keys(i)|·d)`, against `O(T²·d)` for dense softmax under a mask; the
//! spans are an input (no gradient flows through their choice, as in MoBA and NSA). A query with
//! no key gets a zero output.

use super::simd::{dot, exp};
use rayon::prelude::*;

/// Shapes of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Batch × heads.
    pub bh: usize,
    /// Queries per (batch, head).
    pub seq: usize,
    /// Keys (and values) per (batch, head).
    pub seq_k: usize,
    pub d: usize,
    pub dv: usize,
    /// Spans listed per query (an unused one is empty: start = end).
    pub spans: usize,
    /// Multiplies `q·k` (usually `1/√d`).
    pub scale: f32,
}

/// Query `i`'s key ranges, from its `spans` pairs `(start, end)`.
fn ranges(spans: &[u32]) -> impl Iterator<Item = (usize, usize)> + '_ {
    spans.chunks_exact(2).map(|s| (s[0] as usize, s[1] as usize)).filter(|(a, b)| a < b)
}

fn row(x: &[f32], l: usize, d: usize) -> &[f32] {
    &x[l * d..(l + 1) * d]
}

/// `y` (`[bh, seq, d_v]`) and each query's log-sum-exp (`[bh, seq]`). `q`: `[bh, seq, d]`, `k`:
/// `[bh, seq_k, d]`, `v`: `[bh, seq_k, d_v]`, `spans`: `[bh, seq, spans, 2]` key positions
/// `(start, end)`.
pub fn forward(dims: Dims, q: &[f32], k: &[f32], v: &[f32], spans: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let Dims { seq: t, seq_k: tk, d, dv, spans: r, .. } = dims;
    let mut y = vec![0.0; dims.bh * t * dv];
    let mut lse = vec![0.0; dims.bh * t];
    y.par_chunks_mut(t * dv).zip(lse.par_chunks_mut(t)).enumerate().for_each(|(p, (y, lse))| {
        let (q, k, v) = (&q[p * t * d..], &k[p * tk * d..], &v[p * tk * dv..]);
        let spans = &spans[p * t * r * 2..(p + 1) * t * r * 2];
        let mut scores = Vec::new();
        for i in 0..t {
            let qi = row(q, i, d);
            let mine = &spans[i * r * 2..(i + 1) * r * 2];
            scores.clear();
            for (a, b) in ranges(mine) {
                scores.extend((a..b).map(|l| dims.scale * dot(qi, row(k, l, d))));
            }
            let m = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let yi = &mut y[i * dv..(i + 1) * dv];
            let mut total = 0.0;
            let mut n = 0;
            for (a, b) in ranges(mine) {
                for l in a..b {
                    let w = exp(scores[n] - m);
                    n += 1;
                    total += w;
                    for (o, &x) in yi.iter_mut().zip(row(v, l, dv)) {
                        *o += w * x;
                    }
                }
            }
            if n == 0 {
                // No key: a zero output, and an lse that gives no weight in the backward pass.
                lse[i] = f32::INFINITY;
                continue;
            }
            yi.iter_mut().for_each(|o| *o /= total);
            lse[i] = m + total.ln();
        }
    });
    (y, lse)
}

/// `[dq, dk, dv]` from the inputs, the forward's log-sum-exps and the output gradient `dy`.
pub fn backward(
    dims: Dims,
    (q, k, v): (&[f32], &[f32], &[f32]),
    spans: &[u32],
    lse: &[f32],
    dy: &[f32],
) -> [Vec<f32>; 3] {
    let Dims { seq: t, seq_k: tk, d, dv, spans: r, scale, .. } = dims;
    let mut dq = vec![0.0; dims.bh * t * d];
    let mut dk = vec![0.0; dims.bh * tk * d];
    let mut dvv = vec![0.0; dims.bh * tk * dv];
    dq.par_chunks_mut(t * d)
        .zip(dk.par_chunks_mut(tk * d))
        .zip(dvv.par_chunks_mut(tk * dv))
        .enumerate()
        .for_each(|(p, ((dq, dk), dvv))| {
            let (q, k, v) = (&q[p * t * d..], &k[p * tk * d..], &v[p * tk * dv..]);
            let (dy, lse) = (&dy[p * t * dv..], &lse[p * t..]);
            let spans = &spans[p * t * r * 2..(p + 1) * t * r * 2];
            let (mut probs, mut dps) = (Vec::new(), Vec::new());
            for i in 0..t {
                let (qi, dyi) = (row(q, i, d), row(dy, i, dv));
                let mine = &spans[i * r * 2..(i + 1) * r * 2];
                probs.clear();
                dps.clear();
                let mut big_d = 0.0;
                for (a, b) in ranges(mine) {
                    for l in a..b {
                        let pl = exp(scale * dot(qi, row(k, l, d)) - lse[i]);
                        let dp = dot(dyi, row(v, l, dv));
                        big_d += pl * dp;
                        probs.push(pl);
                        dps.push(dp);
                    }
                }
                let dqi = &mut dq[i * d..(i + 1) * d];
                let mut n = 0;
                for (a, b) in ranges(mine) {
                    for l in a..b {
                        let (pl, ds) = (probs[n], probs[n] * (dps[n] - big_d) * scale);
                        n += 1;
                        for (o, &x) in dqi.iter_mut().zip(row(k, l, d)) {
                            *o += ds * x;
                        }
                        for (o, &x) in dk[l * d..(l + 1) * d].iter_mut().zip(qi) {
                            *o += ds * x;
                        }
                        for (o, &x) in dvv[l * dv..(l + 1) * dv].iter_mut().zip(dyi) {
                            *o += pl * x;
                        }
                    }
                }
            }
        });
    [dq, dk, dvv]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded values in `[-1, 1)`.
    fn uniform(n: usize, seed: u64) -> Vec<f32> {
        crate::testing::uniform_values(n, seed, (-1.0, 1.0))
    }

    /// Query `i`'s keys, every position inside one of its spans, and the softmax over them in
    /// f64 (zero without keys).
    fn naive_forward(dims: Dims, q: &[f32], k: &[f32], v: &[f32], spans: &[u32]) -> Vec<f64> {
        let Dims { bh, seq: t, seq_k: tk, d, dv, spans: r, scale } = dims;
        let mut y = vec![0.0; bh * t * dv];
        for p in 0..bh {
            for i in 0..t {
                let mine = &spans[(p * t + i) * r * 2..(p * t + i + 1) * r * 2];
                let keys: Vec<usize> = (0..tk)
                    .filter(|&l| mine.chunks(2).any(|s| s[0] as usize <= l && l < s[1] as usize))
                    .collect();
                let s: Vec<f64> = keys
                    .iter()
                    .map(|&l| {
                        (0..d)
                            .map(|c| q[(p * t + i) * d + c] as f64 * k[(p * tk + l) * d + c] as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for (n, &l) in keys.iter().enumerate() {
                    let w = (s[n] - m).exp() / z;
                    for c in 0..dv {
                        y[(p * t + i) * dv + c] += w * v[(p * tk + l) * dv + c] as f64;
                    }
                }
            }
        }
        y
    }

    /// `r` disjoint spans per query from a fixed pseudo-random rule: cut `0..seq_k` at `2r` sorted
    /// random points and keep every other piece, so some spans are empty; the last query of
    /// each (batch, head) gets none at all.
    fn random_spans(dims: Dims, seed: u64) -> Vec<u32> {
        let (t, tk, r) = (dims.seq, dims.seq_k, dims.spans);
        let u = uniform(dims.bh * t * 2 * r, seed);
        let mut out = vec![0u32; dims.bh * t * r * 2];
        for row in 0..dims.bh * t {
            if row % t == t - 1 {
                continue;
            }
            let mut cuts: Vec<u32> = u[row * 2 * r..(row + 1) * 2 * r]
                .iter()
                .map(|x| ((x + 1.0) / 2.0 * tk as f32) as u32)
                .collect();
            cuts.sort();
            out[row * r * 2..(row + 1) * r * 2].copy_from_slice(&cuts);
        }
        out
    }

    #[test]
    fn forward_matches_the_naive_rule_in_f64() {
        for (r, seq, seq_k) in [(1, 13, 13), (2, 11, 11), (3, 40, 40), (2, 12, 5)] {
            let dims = Dims { bh: 3, seq, seq_k, d: 5, dv: 6, spans: r, scale: 0.7 };
            let q = uniform(3 * seq * 5, 1);
            let k = uniform(3 * seq_k * 5, 2);
            let v = uniform(3 * seq_k * 6, 3);
            let spans = random_spans(dims, 4 + r as u64);
            let (y, _) = forward(dims, &q, &k, &v, &spans);
            for (a, b) in y.iter().zip(naive_forward(dims, &q, &k, &v, &spans)) {
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b} (spans {r}, seq {seq})");
            }
        }
    }

    /// Each gradient against central differences of the f64 oracle's `Σ dy·y`.
    #[test]
    fn backward_matches_finite_differences_of_the_oracle() {
        for (r, seq, seq_k) in [(2, 10, 10), (3, 9, 9), (2, 8, 3)] {
            let dims = Dims { bh: 2, seq, seq_k, d: 4, dv: 3, spans: r, scale: 0.5 };
            let mut x =
                [uniform(2 * seq * 4, 11), uniform(2 * seq_k * 4, 12), uniform(2 * seq_k * 3, 13)];
            let dy = uniform(2 * seq * 3, 14);
            let spans = random_spans(dims, 15 + r as u64);
            let (_, lse) = forward(dims, &x[0], &x[1], &x[2], &spans);
            let g = backward(dims, (&x[0], &x[1], &x[2]), &spans, &lse, &dy);
            let loss = |x: &[Vec<f32>; 3]| -> f64 {
                naive_forward(dims, &x[0], &x[1], &x[2], &spans)
                    .iter()
                    .zip(&dy)
                    .map(|(y, g)| y * *g as f64)
                    .sum()
            };
            for which in 0..3 {
                for e in (0..x[which].len()).step_by(3) {
                    let h = 1e-3;
                    let keep = x[which][e];
                    x[which][e] = keep + h;
                    let up = loss(&x);
                    x[which][e] = keep - h;
                    let down = loss(&x);
                    x[which][e] = keep;
                    let want = (up - down) / (2.0 * h as f64);
                    let got = g[which][e] as f64;
                    assert!((got - want).abs() < 2e-3, "input {which}[{e}]: {got} vs {want}");
                }
            }
        }
    }
}
