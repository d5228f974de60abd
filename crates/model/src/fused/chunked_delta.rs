//! The forward pass of the gated (delta-rule) recurrence in chunked form: the UT transform of
//! Yang et al. 2024 ("Parallelizing Linear Transformers with the Delta Rule over Sequence
//! Length"; "Gated Delta Networks: Improving Mamba2 with Delta Rule"), its products on the
//! `gemm` crate, parallel over (batch, head). It computes what the token-by-token kernel
//! ([`super::gated_recurrence`]) does, and saves the same checkpoints, so that kernel's backward
//! pass runs unchanged on them.
//!
//! Within a block of `n` tokens from state `S` (one log gate per head and token, `g_i`), with
//! `b_i = Σ_{j≤i} g_j` and `Γ_ij = e^{b_i − b_j}` (`j ≤ i`, so never above 1), the token
//! recurrence `u_i = β_i (v_i − (a_i S_{i−1})ᵀ k_i)` unrolls to
//!
//! `u_i = β_i (v_i − e^{b_i} (K S)_i − Σ_{j<i} Γ_ij (k_i·k_j) u_j)`,
//!
//! i.e. `(I + diag(β) (Γ ⊙ K Kᵀ ⊙ M₋)) U = diag(β) (V − diag(e^b) K S)` with `M₋` strictly lower:
//! the UT transform `U = T diag(β)(V − diag(e^b) K S)`, `T = (I + A)⁻¹`, i.e. fla's
//! `U − W S` with `W = T diag(β) diag(e^b) K`. It is solved here by forward substitution on the
//! right-hand side, which costs what applying `T` would and never forms `T` or `W`. Then
//!
//! `Y = diag(e^b) Q S + (Γ ⊙ Q Kᵀ ⊙ M) U` (`M` lower, diagonal included),
//! `S ← e^{b_n} S + (diag(e^{b_n − b}) K)ᵀ U`.
//!
//! Without the delta rule (`decay`), `U = V`. `K Kᵀ`, `Q Kᵀ`, `K S`, `Q S`, the scores times `U`
//! and the state update are matrix products (`gemm`); the substitution is `n²/2` row updates of
//! length `d_v`. Per token that is about `2n·d_k + n·d_v + n·d_v/2 + 3·d_k·d_v` multiply-adds
//! against the token kernel's `3·d_k·d_v` (plus a scaling pass): more work, in faster loops, so
//! which kernel wins depends on the shape ([`block_size`]). Per-channel gates
//! (`gate_width = d_k`) are left to the token kernel.

use super::gated_recurrence::{Dims, Saved, Sequence};
use super::matmul::{View, matmul_into};
use super::simd::dispatched;
use rayon::prelude::*;

/// Heads at least this wide (both `d_k` and `d_v`) run the chunked forward pass.
///
/// Measured with `chunked_delta_timing` below (2-core Zen 4, AVX-512, 2026-12-05, one rayon
/// thread, another build sharing the box, so ±20%): forward µs, token kernel against chunked
/// blocks of 8 / 12 / 16, delta rule, `[bh, T, d, chunk]`:
/// `[48, 64, 32, 64]` 1206 vs 1127 / 949 / 1355; `[64, 32, 32, 32]` 1193 vs 680 / 561 / 736;
/// `[8, 1024, 32, 64]` 5307 vs 1936 / 1931 / 2535; `[24, 256, 64, 64]` 8558 vs 4679 / 3875 /
/// 4840; but `[48, 64, 16, 64]` 558 vs 574 / 597 / 632. Plain accumulation alike (`d = 32`:
/// 922 vs 554 / 663 / 544; `d = 16`: 323 vs 318 / 320 / 331).
const CHUNKED_FROM: usize = 32;

/// Block size of the chunked kernel (8 to 16 are within the noise of each other above).
const BLOCK: usize = 12;

/// The block size to run the chunked forward pass at on `dims`, or `None` where the token
/// kernel is as fast (narrow heads) or the chunked one does not apply (per-channel gates).
pub fn block_size(dims: Dims) -> Option<usize> {
    (dims.gate_width == 1 && dims.dk.min(dims.dv) >= CHUNKED_FROM).then_some(BLOCK)
}

/// A row-major `rows × cols` matrix over the first `rows·cols` values of `data` from `offset`.
fn rows(data: &[f32], offset: usize, rows: usize, cols: usize) -> View<'_> {
    View { data, offset, rows, cols, row_stride: cols as isize, col_stride: 1 }
}

/// Buffers one sequence reuses for every block of at most `block` tokens.
struct Scratch {
    /// `b_i` and `e^{b_i}`.
    cum: Vec<f32>,
    decay: Vec<f32>,
    /// `Γ ⊙ Q Kᵀ ⊙ M` and `Γ ⊙ K Kᵀ` (strictly lower part used), `n × n`.
    qk: Vec<f32>,
    kk: Vec<f32>,
    /// `U`, `n × d_v`.
    u: Vec<f32>,
    /// `diag(e^{b_n − b}) K`, `n × d_k`.
    kd: Vec<f32>,
}

/// Multiplies the causal part of the `n × n` matrix `m` by `Γ_ij = e^{b_i − b_j}` and zeroes
/// the rest: `j ≤ i`, or `j < i` without `diagonal`.
#[inline(always)]
fn weigh_causal(m: &mut [f32], n: usize, cum: &[f32], diagonal: bool) {
    for (i, row) in m.chunks_exact_mut(n).enumerate() {
        let end = if diagonal { i + 1 } else { i };
        row[..end].iter_mut().zip(&cum[..end]).for_each(|(x, &bj)| *x *= (cum[i] - bj).exp());
        row[end..].fill(0.0);
    }
}

/// One block of `n` tokens from `t0`: its outputs into `y` (`n × d_v`), and `s` advanced past it.
#[inline(always)]
fn block_forward(
    dims: Dims,
    x: Sequence<'_>,
    t0: usize,
    n: usize,
    s: &mut [f32],
    y: &mut [f32],
    w: &mut Scratch,
) {
    let (dk, dv) = (dims.dk, dims.dv);
    let mut acc = 0.0;
    for i in 0..n {
        acc += x.g[t0 + i];
        w.cum[i] = acc;
        w.decay[i] = acc.exp();
    }
    let (cum, decay) = (&w.cum[..n], &w.decay[..n]);
    let (q, k) = (rows(x.q, t0 * dk, n, dk), rows(x.k, t0 * dk, n, dk));
    let qk = &mut w.qk[..n * n];
    matmul_into(qk, 0, n, q, k.t(), 1.0, false);
    weigh_causal(qk, n, cum, true);
    let u: &[f32] = if dims.delta {
        let kk = &mut w.kk[..n * n];
        matmul_into(kk, 0, n, k, k.t(), 1.0, false);
        weigh_causal(kk, n, cum, false);
        // Start each row as K S, then substitute forward: row i needs rows j < i.
        let u = &mut w.u[..n * dv];
        matmul_into(u, 0, dv, k, rows(s, 0, dk, dv), 1.0, false);
        for i in 0..n {
            let (done, rest) = u.split_at_mut(i * dv);
            let row = &mut rest[..dv];
            let vi = &x.v[(t0 + i) * dv..(t0 + i + 1) * dv];
            row.iter_mut().zip(vi).for_each(|(r, &v)| *r = v - decay[i] * *r);
            for (uj, &c) in done.chunks_exact(dv).zip(&kk[i * n..i * n + i]) {
                row.iter_mut().zip(uj).for_each(|(r, &u)| *r -= c * u);
            }
            let b = x.beta[t0 + i];
            row.iter_mut().for_each(|r| *r *= b);
        }
        u
    } else {
        &x.v[t0 * dv..(t0 + n) * dv]
    };
    matmul_into(y, 0, dv, q, rows(s, 0, dk, dv), 1.0, false);
    for (row, &e) in y.chunks_exact_mut(dv).zip(decay) {
        row.iter_mut().for_each(|x| *x *= e);
    }
    matmul_into(y, 0, dv, rows(qk, 0, n, n), rows(u, 0, n, dv), 1.0, true);
    let last = cum[n - 1];
    for (j, row) in w.kd[..n * dk].chunks_exact_mut(dk).enumerate() {
        let f = (last - cum[j]).exp();
        let kj = &x.k[(t0 + j) * dk..(t0 + j + 1) * dk];
        row.iter_mut().zip(kj).for_each(|(o, &k)| *o = f * k);
    }
    let carry = last.exp();
    s.iter_mut().for_each(|e| *e *= carry);
    matmul_into(s, 0, dv, rows(&w.kd, 0, n, dk).t(), rows(u, 0, n, dv), 1.0, true);
}

/// The forward pass of one (batch, head) in blocks of at most `block` tokens that never cross
/// a checkpoint: outputs into `y`, the state at the start of every `dims.chunk` tokens into
/// `checkpoints`.
#[inline(always)]
// A kernel takes its slices and sizes as plain arguments; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
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
    let (dk, dv) = (dims.dk, dims.dv);
    let block = block.clamp(1, dims.chunk);
    let mut w = Scratch {
        cum: vec![0.0; block],
        decay: vec![0.0; block],
        qk: vec![0.0; block * block],
        kk: vec![0.0; if dims.delta { block * block } else { 0 }],
        u: vec![0.0; if dims.delta { block * dv } else { 0 }],
        kd: vec![0.0; block * dk],
    };
    let mut s = vec![0.0; dk * dv];
    for c in 0..dims.chunks() {
        checkpoints[c * dk * dv..(c + 1) * dk * dv].copy_from_slice(&s);
        let end = ((c + 1) * dims.chunk).min(dims.seq);
        let mut t0 = c * dims.chunk;
        while t0 < end {
            let n = block.min(end - t0);
            block_forward(dims, x, t0, n, &mut s, &mut y[t0 * dv..(t0 + n) * dv], &mut w);
            t0 += n;
        }
    }
}

dispatched!(sequence_forward => sequence_forward_body(dims: Dims, block: usize, q: &[f32], k: &[f32], v: &[f32], g: &[f32], beta: &[f32], y: &mut [f32], checkpoints: &mut [f32]));

/// [`super::gated_recurrence::forward`] in blocks of `block` tokens: the same `y`
/// (`[bh, seq, dv]`) and checkpoints, up to rounding. Per-head gates only (`gate_width = 1`).
pub fn forward(
    dims: Dims,
    block: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
) -> (Vec<f32>, Saved) {
    assert_eq!(dims.gate_width, 1, "the chunked kernel takes one gate per head");
    let (t, dk, dv) = (dims.seq, dims.dk, dims.dv);
    let n = dims.chunks();
    let mut y = vec![0.0; dims.bh * t * dv];
    let mut checkpoints = vec![0.0; dims.bh * n * dk * dv];
    y.par_chunks_mut(t * dv).zip(checkpoints.par_chunks_mut(n * dk * dv)).enumerate().for_each(
        |(p, (y, cp))| {
            let x = Sequence::of(dims, p, q, k, v, g, beta);
            sequence_forward(dims, block, x.q, x.k, x.v, x.g, x.beta, y, cp);
        },
    );
    (y, Saved { checkpoints })
}

#[cfg(test)]
mod tests {
    use super::super::gated_recurrence as tokens;
    use super::*;

    /// Uniform values in `[0, 1)` from a seeded xorshift: fresh inputs without a tensor backend.
    fn uniform(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    }

    /// Roughly normal values (a sum of four uniforms, centred and scaled to unit variance).
    fn normal(n: usize, seed: u64) -> Vec<f32> {
        let u = uniform(4 * n, seed);
        u.chunks_exact(4).map(|c| (c.iter().sum::<f32>() - 2.0) * 3f32.sqrt()).collect()
    }

    struct Case {
        dims: Dims,
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
        g: Vec<f32>,
        beta: Vec<f32>,
    }

    /// Unit keys (as the layer's L2 norm makes them), log gates `−scale·(0..2)`, `β` in
    /// `[lo, hi)`.
    fn case(dims: Dims, scale: f32, (lo, hi): (f32, f32), seed: u64) -> Case {
        let (n, dk, dv) = (dims.bh * dims.seq, dims.dk, dims.dv);
        let mut k = normal(n * dk, seed + 1);
        for row in k.chunks_exact_mut(dk) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        Case {
            dims,
            q: normal(n * dk, seed),
            k,
            v: normal(n * dv, seed + 2),
            g: uniform(n, seed + 3).iter().map(|u| -2.0 * scale * u).collect(),
            beta: if dims.delta {
                uniform(n, seed + 4).iter().map(|u| lo + (hi - lo) * u).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The recurrence token by token in f64: outputs and the state at every chunk's start.
    fn naive(c: &Case) -> (Vec<f64>, Vec<f64>) {
        let Dims { bh, seq, dk, dv, chunk, delta, .. } = c.dims;
        let (mut y, mut cps) = (Vec::new(), Vec::new());
        for p in 0..bh {
            let mut s = vec![0f64; dk * dv];
            for t in 0..seq {
                if t % chunk == 0 {
                    cps.extend_from_slice(&s);
                }
                let r = p * seq + t;
                let (q, k) = (&c.q[r * dk..(r + 1) * dk], &c.k[r * dk..(r + 1) * dk]);
                let v = &c.v[r * dv..(r + 1) * dv];
                let a = (c.g[r] as f64).exp();
                s.iter_mut().for_each(|e| *e *= a);
                let u: Vec<f64> = (0..dv)
                    .map(|j| {
                        if !delta {
                            return v[j] as f64;
                        }
                        let read: f64 = (0..dk).map(|i| s[i * dv + j] * k[i] as f64).sum();
                        c.beta[r] as f64 * (v[j] as f64 - read)
                    })
                    .collect();
                for i in 0..dk {
                    for j in 0..dv {
                        s[i * dv + j] += k[i] as f64 * u[j];
                    }
                }
                y.extend(
                    (0..dv).map(|j| (0..dk).map(|i| s[i * dv + j] * q[i] as f64).sum::<f64>()),
                );
            }
        }
        (y, cps)
    }

    /// The largest `|a − b| / max(1, |b|)`.
    fn worst(a: &[f32], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(&a, &b)| (a as f64 - b).abs() / b.abs().max(1.0)).fold(0.0, f64::max)
    }

    /// Chunked and token kernels against the f64 recurrence, outputs and checkpoints: lengths
    /// that are and are not a multiple of the checkpoint interval, blocks that divide it, do
    /// not, and exceed it, `d_k ≠ d_v`, no gate, weak, moderate and strong decay (`e^{−20}` a
    /// token), `β` near 0, in (0, 1) and near 1, and plain accumulation (`decay`).
    #[test]
    fn chunked_forward_matches_the_token_kernel_and_the_naive_recurrence() {
        let dims =
            |bh, seq, dk, dv, chunk, delta| Dims { bh, seq, dk, dv, gate_width: 1, delta, chunk };
        let cases = [
            (dims(3, 37, 8, 12, 16, true), 8, 0.3, (0.0, 1.0)),
            (dims(2, 40, 16, 16, 20, true), 7, 10.0, (0.95, 1.0)),
            (dims(2, 33, 12, 5, 11, true), 64, 1e-3, (0.0, 0.05)),
            (dims(2, 64, 32, 32, 64, true), 16, 0.0, (0.0, 1.0)),
            (dims(2, 30, 8, 8, 8, false), 4, 0.3, (0.0, 1.0)),
            (dims(1, 19, 6, 10, 19, false), 19, 0.0, (0.0, 1.0)),
        ];
        for (seed, (d, block, scale, range)) in cases.into_iter().enumerate() {
            let c = case(d, scale, range, 100 + 10 * seed as u64);
            let (y, cps) = naive(&c);
            let (yc, sc) = forward(d, block, &c.q, &c.k, &c.v, &c.g, &c.beta);
            let (yt, st) = tokens::forward(d, &c.q, &c.k, &c.v, &c.g, &c.beta);
            let what = format!("{d:?} block {block} gate scale {scale} β {range:?}");
            for (name, got) in [
                ("chunked y", worst(&yc, &y)),
                ("token y", worst(&yt, &y)),
                ("chunked checkpoints", worst(&sc.checkpoints, &cps)),
                ("token checkpoints", worst(&st.checkpoints, &cps)),
            ] {
                assert!(got <= 2e-5, "{what}: {name} off by {got:e}");
            }
        }
    }

    /// Not a check: the forward pass of each kernel and the token kernel's backward on the
    /// shapes training meets, for choosing [`faster_than_tokens`]. Run with
    /// `cargo test --release -p attnlab-model --lib chunked_delta_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn chunked_delta_timing() {
        let time = |f: &mut dyn FnMut()| {
            f();
            let mut best = f64::MAX;
            for _ in 0..5 {
                let start = std::time::Instant::now();
                for _ in 0..10 {
                    f();
                }
                best = best.min(start.elapsed().as_secs_f64() / 10.0);
            }
            best * 1e6
        };
        let shapes = [
            (48, 64, 32, 64),
            (64, 32, 32, 32),
            (8, 1024, 32, 64),
            (24, 256, 64, 64),
            (48, 64, 16, 64),
        ];
        for (delta, (bh, seq, d, chunk)) in
            shapes.into_iter().map(|s| (true, s)).chain(shapes.into_iter().map(|s| (false, s)))
        {
            let dims = Dims { bh, seq, dk: d, dv: d, gate_width: 1, delta, chunk };
            let c = case(dims, 0.3, (0.0, 1.0), 7);
            let dy = normal(bh * seq * d, 9);
            let (_, saved) = tokens::forward(dims, &c.q, &c.k, &c.v, &c.g, &c.beta);
            let fwd = time(&mut || drop(tokens::forward(dims, &c.q, &c.k, &c.v, &c.g, &c.beta)));
            let bwd = time(&mut || {
                drop(tokens::backward(dims, &c.q, &c.k, &c.v, &c.g, &c.beta, &saved, &dy))
            });
            let mut line = format!(
                "delta {delta} bh {bh} T {seq} d {d} chunk {chunk}: token fwd {fwd:.0} µs, bwd {bwd:.0} µs; chunked"
            );
            for block in [4, 8, 12, 16, 32] {
                let t = time(&mut || drop(forward(dims, block, &c.q, &c.k, &c.v, &c.g, &c.beta)));
                line += &format!(" {block}: {t:.0}");
            }
            eprintln!("{line}");
        }
    }
}
