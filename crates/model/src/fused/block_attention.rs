//! Softmax attention over blocks of keys chosen per query (MoBA's attention, Lu et al. 2025,
//! arXiv 2502.13189), forward and backward, parallel over (batch, head). Keys are cut into
//! blocks of `block` positions; query `i` reads its own block (up to itself when causal) and the
//! blocks listed for it:
//!
//! `y_i = Σ_{l ∈ keys(i)} p_il v_l`, `p_il = e^{s_il − m_i}`, `s_il = scale·q_i·k_l`,
//! `m_i = ln Σ_{l ∈ keys(i)} e^{s_il}` (kept for the backward pass).
//!
//! Backward, per query: `dp_l = dy_i·v_l`, `D_i = Σ_l p_il dp_l`, `ds_l = p_il (dp_l − D_i)`;
//! `dq_i = scale Σ_l ds_l k_l`, `dk_l += scale ds_l q_i`, `dv_l += p_il dy_i`.
//!
//! Time and memory are `O(T·(slots + 1)·block·d)`, against `O(T²·d)` for dense softmax under the
//! block mask; the choice of blocks is an input (no gradient flows through it, as in MoBA).

use super::simd::{dot, exp};
use rayon::prelude::*;

/// Shapes of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Batch × heads.
    pub bh: usize,
    pub seq: usize,
    pub d: usize,
    pub dv: usize,
    pub block: usize,
    /// Chosen blocks listed per query (the list's unused entries are [`NONE`]).
    pub slots: usize,
    pub causal: bool,
    /// Multiplies `q·k` (usually `1/√d`).
    pub scale: f32,
}

/// An unused entry of a query's list of chosen blocks.
pub const NONE: u32 = u32::MAX;

/// The key ranges query `i` reads: its own block (up to `i` when causal), then each chosen block.
fn ranges(dims: Dims, i: usize, chosen: &[u32]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let (t, block) = (dims.seq, dims.block);
    let start = i / block * block;
    let own_end = if dims.causal { i + 1 } else { (start + block).min(t) };
    std::iter::once((start, own_end)).chain(
        chosen
            .iter()
            .filter(|&&j| j != NONE)
            .map(move |&j| (j as usize * block, ((j as usize + 1) * block).min(t))),
    )
}

fn row(x: &[f32], l: usize, d: usize) -> &[f32] {
    &x[l * d..(l + 1) * d]
}

/// `y` (`[bh, seq, d_v]`) and each query's log-sum-exp (`[bh, seq]`). `q`, `k`: `[bh, seq, d]`,
/// `v`: `[bh, seq, d_v]`, `chosen`: `[bh, seq, slots]`.
pub fn forward(
    dims: Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    chosen: &[u32],
) -> (Vec<f32>, Vec<f32>) {
    let Dims { seq: t, d, dv, slots, .. } = dims;
    let mut y = vec![0.0; dims.bh * t * dv];
    let mut lse = vec![0.0; dims.bh * t];
    y.par_chunks_mut(t * dv).zip(lse.par_chunks_mut(t)).enumerate().for_each(|(p, (y, lse))| {
        let (q, k, v) = (&q[p * t * d..], &k[p * t * d..], &v[p * t * dv..]);
        let chosen = &chosen[p * t * slots..(p + 1) * t * slots];
        let mut scores = Vec::with_capacity((slots + 1) * dims.block);
        for i in 0..t {
            let qi = row(q, i, d);
            let mine = &chosen[i * slots..(i + 1) * slots];
            scores.clear();
            for (a, b) in ranges(dims, i, mine) {
                scores.extend((a..b).map(|l| dims.scale * dot(qi, row(k, l, d))));
            }
            let m = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let yi = &mut y[i * dv..(i + 1) * dv];
            let mut total = 0.0;
            let mut n = 0;
            for (a, b) in ranges(dims, i, mine) {
                for l in a..b {
                    let w = exp(scores[n] - m);
                    n += 1;
                    total += w;
                    for (o, &x) in yi.iter_mut().zip(row(v, l, dv)) {
                        *o += w * x;
                    }
                }
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
    chosen: &[u32],
    lse: &[f32],
    dy: &[f32],
) -> [Vec<f32>; 3] {
    let Dims { seq: t, d, dv, slots, scale, .. } = dims;
    let mut dq = vec![0.0; dims.bh * t * d];
    let mut dk = vec![0.0; dims.bh * t * d];
    let mut dvv = vec![0.0; dims.bh * t * dv];
    dq.par_chunks_mut(t * d)
        .zip(dk.par_chunks_mut(t * d))
        .zip(dvv.par_chunks_mut(t * dv))
        .enumerate()
        .for_each(|(p, ((dq, dk), dvv))| {
            let (q, k, v) = (&q[p * t * d..], &k[p * t * d..], &v[p * t * dv..]);
            let (dy, lse) = (&dy[p * t * dv..], &lse[p * t..]);
            let chosen = &chosen[p * t * slots..(p + 1) * t * slots];
            let mut probs = Vec::with_capacity((slots + 1) * dims.block);
            let mut dps = Vec::with_capacity((slots + 1) * dims.block);
            for i in 0..t {
                let (qi, dyi) = (row(q, i, d), row(dy, i, dv));
                let mine = &chosen[i * slots..(i + 1) * slots];
                probs.clear();
                dps.clear();
                let mut big_d = 0.0;
                for (a, b) in ranges(dims, i, mine) {
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
                for (a, b) in ranges(dims, i, mine) {
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

    fn normal(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The keys of query `i`, listed from the rule: own block (up to `i` when causal) and every
    /// chosen block, in f64.
    fn naive_forward(dims: Dims, q: &[f32], k: &[f32], v: &[f32], chosen: &[u32]) -> Vec<f64> {
        let Dims { bh, seq: t, d, dv, block, slots, causal, scale } = dims;
        let mut y = vec![0.0; bh * t * dv];
        for p in 0..bh {
            for i in 0..t {
                let mine = &chosen[(p * t + i) * slots..(p * t + i + 1) * slots];
                let keys: Vec<usize> = (0..t)
                    .filter(|&l| {
                        let own = l / block == i / block && (!causal || l <= i);
                        own || mine.contains(&((l / block) as u32))
                    })
                    .collect();
                let s: Vec<f64> = keys
                    .iter()
                    .map(|&l| {
                        (0..d)
                            .map(|c| q[(p * t + i) * d + c] as f64 * k[(p * t + l) * d + c] as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for (n, &l) in keys.iter().enumerate() {
                    let w = (s[n] - m).exp() / z;
                    for c in 0..dv {
                        y[(p * t + i) * dv + c] += w * v[(p * t + l) * dv + c] as f64;
                    }
                }
            }
        }
        y
    }

    /// Chosen past blocks per query from a fixed pseudo-random rule (distinct, below the own
    /// block when causal, any other block otherwise; some lists short).
    fn choices(dims: Dims, seed: u64) -> Vec<u32> {
        let n_blocks = dims.seq.div_ceil(dims.block);
        let r = normal(dims.bh * dims.seq * n_blocks, seed);
        let mut out = vec![NONE; dims.bh * dims.seq * dims.slots];
        for p in 0..dims.bh {
            for i in 0..dims.seq {
                let own = i / dims.block;
                let mut cands: Vec<(f32, u32)> = (0..n_blocks)
                    .filter(|&j| if dims.causal { j < own } else { j != own })
                    .map(|j| (r[(p * dims.seq + i) * n_blocks + j], j as u32))
                    .collect();
                cands.sort_by(|a, b| b.0.total_cmp(&a.0));
                for (s, (_, j)) in cands.into_iter().take(dims.slots).enumerate() {
                    out[(p * dims.seq + i) * dims.slots + s] = j;
                }
            }
        }
        out
    }

    #[test]
    fn forward_matches_the_naive_rule_in_f64() {
        for (causal, block, slots, seq) in [(true, 4, 2, 13), (false, 3, 2, 11), (true, 8, 1, 40)] {
            let dims = Dims { bh: 3, seq, d: 5, dv: 6, block, slots, causal, scale: 0.7 };
            let q = normal(3 * seq * 5, 1);
            let k = normal(3 * seq * 5, 2);
            let v = normal(3 * seq * 6, 3);
            let chosen = choices(dims, 4);
            let (y, _) = forward(dims, &q, &k, &v, &chosen);
            for (a, b) in y.iter().zip(naive_forward(dims, &q, &k, &v, &chosen)) {
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b} ({causal}, {block}, {slots})");
            }
        }
    }

    /// Each gradient against central differences of the f64 oracle's `Σ dy·y`.
    #[test]
    fn backward_matches_finite_differences_of_the_oracle() {
        for (causal, block, slots, seq) in [(true, 3, 2, 10), (false, 4, 1, 9)] {
            let dims = Dims { bh: 2, seq, d: 4, dv: 3, block, slots, causal, scale: 0.5 };
            let mut x = [normal(2 * seq * 4, 11), normal(2 * seq * 4, 12), normal(2 * seq * 3, 13)];
            let dy = normal(2 * seq * 3, 14);
            let chosen = choices(dims, 15);
            let (_, lse) = forward(dims, &x[0], &x[1], &x[2], &chosen);
            let g = backward(dims, (&x[0], &x[1], &x[2]), &chosen, &lse, &dy);
            let loss = |x: &[Vec<f32>; 3]| -> f64 {
                naive_forward(dims, &x[0], &x[1], &x[2], &chosen)
                    .iter()
                    .zip(&dy)
                    .map(|(y, g)| y * *g as f64)
                    .sum()
            };
            for which in 0..3 {
                for e in (0..x[which].len()).step_by(5) {
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
