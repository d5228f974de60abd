//! The diagonal-plus-low-rank (DPLR) recurrence, forward and backward, token by token and
//! parallel over (batch, head): fla's `fused_recurrent_dplr_delta_rule`, the state rule of
//! RWKV-7. Per token, with state `S` (`d_k × d_v`, row `i` belonging to key channel `i`):
//!
//! `u_t = Sᵀ_{t−1} α_t` (the removal read, before the decay),
//! `S_t = diag(w_t) S_{t−1} + β_t u_tᵀ + k_t v_tᵀ`, `y_t = S_tᵀ r_t`, `w_t = e^{log w_t}`.
//!
//! Backward, tokens in reverse, `dS` = ∂L/∂S_t gathered from later tokens:
//! `dS += r_t dy_tᵀ`; `dr_t = S_t dy_t`; `dk_t = dS v_t`, `dv_t = dSᵀ k_t`; `dβ_t = dS u_t`,
//! `du = dSᵀ β_t`; `d log w_t = w_t ⊙ rowsum(dS ⊙ S_{t−1})`; `dα_t = S_{t−1} du`;
//! `dS ← diag(w_t) dS + α_t duᵀ` (∂L/∂S_{t−1}).
//!
//! Memory is linear in `T`: the forward keeps the state at the start of every `chunk` tokens, and
//! the backward replays each chunk's states from there (`(chunk + 1)·d_k·d_v` scratch per thread).

use super::simd::{dispatched, dot};
use rayon::prelude::*;

/// Shapes of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Batch × heads.
    pub bh: usize,
    pub seq: usize,
    pub dk: usize,
    pub dv: usize,
    /// Tokens between state checkpoints.
    pub chunk: usize,
}

impl Dims {
    fn chunks(&self) -> usize {
        self.seq.div_ceil(self.chunk)
    }
}

/// One (batch, head)'s inputs: `r`, `log_w`, `k`, `alpha`, `beta` are `seq × d_k`, `v` is
/// `seq × d_v`.
#[derive(Clone, Copy)]
struct Sequence<'a> {
    r: &'a [f32],
    log_w: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    alpha: &'a [f32],
    beta: &'a [f32],
}

/// The six inputs of a call, each `[bh, seq, ·]`, in the order `r, log_w, k, v, alpha, beta`.
pub type Inputs<'a> = [&'a [f32]; 6];

impl<'a> Sequence<'a> {
    fn of(dims: Dims, p: usize, x: Inputs<'a>) -> Self {
        let (t, dk, dv) = (dims.seq, dims.dk, dims.dv);
        let at = |s: &'a [f32], d: usize| &s[p * t * d..(p + 1) * t * d];
        Self {
            r: at(x[0], dk),
            log_w: at(x[1], dk),
            k: at(x[2], dk),
            v: at(x[3], dv),
            alpha: at(x[4], dk),
            beta: at(x[5], dk),
        }
    }

    fn row(x: &[f32], t: usize, d: usize) -> &[f32] {
        &x[t * d..(t + 1) * d]
    }
}

/// The state at the start of each chunk, `[bh, chunks, d_k, d_v]`, kept for the backward pass.
#[derive(Debug)]
pub struct Saved {
    pub checkpoints: Vec<f32>,
}

/// `out = Sᵀ x` (`d_v`): the removal read `u = Sᵀ α` and the output `y = Sᵀ r`.
#[inline(always)]
fn transposed_times(s: &[f32], x: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for (row, &a) in s.chunks_exact(out.len()).zip(x) {
        out.iter_mut().zip(row).for_each(|(o, &e)| *o += a * e);
    }
}

/// Token `t` from `prev` into `next` (both `d_k × d_v`), its removal read into `u`.
#[inline(always)]
fn step(dims: Dims, x: Sequence<'_>, t: usize, prev: &[f32], next: &mut [f32], u: &mut [f32]) {
    let (dk, dv) = (dims.dk, dims.dv);
    transposed_times(prev, Sequence::row(x.alpha, t, dk), u);
    let (lw, b, k) =
        (Sequence::row(x.log_w, t, dk), Sequence::row(x.beta, t, dk), Sequence::row(x.k, t, dk));
    let v = Sequence::row(x.v, t, dv);
    for (i, (out, row)) in next.chunks_exact_mut(dv).zip(prev.chunks_exact(dv)).enumerate() {
        let (w, bi, ki) = (lw[i].exp(), b[i], k[i]);
        for (((o, &e), &u), &v) in out.iter_mut().zip(row).zip(u.iter()).zip(v) {
            *o = w * e + bi * u + ki * v;
        }
    }
}

#[inline(always)]
// A kernel takes its slices and sizes as plain arguments; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn sequence_forward_body(
    dims: Dims,
    r: &[f32],
    log_w: &[f32],
    k: &[f32],
    v: &[f32],
    alpha: &[f32],
    beta: &[f32],
    y: &mut [f32],
    checkpoints: &mut [f32],
) {
    let x = Sequence { r, log_w, k, v, alpha, beta };
    let (dk, dv) = (dims.dk, dims.dv);
    let (mut s, mut next, mut u) = (vec![0.0; dk * dv], vec![0.0; dk * dv], vec![0.0; dv]);
    for t in 0..dims.seq {
        if t % dims.chunk == 0 {
            let c = t / dims.chunk;
            checkpoints[c * dk * dv..(c + 1) * dk * dv].copy_from_slice(&s);
        }
        step(dims, x, t, &s, &mut next, &mut u);
        std::mem::swap(&mut s, &mut next);
        transposed_times(&s, Sequence::row(x.r, t, dk), &mut y[t * dv..(t + 1) * dv]);
    }
}

dispatched!(sequence_forward => sequence_forward_body(dims: Dims, r: &[f32], log_w: &[f32], k: &[f32], v: &[f32], alpha: &[f32], beta: &[f32], y: &mut [f32], checkpoints: &mut [f32]));

/// The forward pass from the zero state: `y` (`[bh, seq, d_v]`) and the checkpoints.
pub fn forward(dims: Dims, x: Inputs<'_>) -> (Vec<f32>, Saved) {
    let (t, dk, dv) = (dims.seq, dims.dk, dims.dv);
    let n = dims.chunks();
    let mut y = vec![0.0; dims.bh * t * dv];
    let mut checkpoints = vec![0.0; dims.bh * n * dk * dv];
    y.par_chunks_mut(t * dv).zip(checkpoints.par_chunks_mut(n * dk * dv)).enumerate().for_each(
        |(p, (y, cp))| {
            let s = Sequence::of(dims, p, x);
            sequence_forward(dims, s.r, s.log_w, s.k, s.v, s.alpha, s.beta, y, cp);
        },
    );
    (y, Saved { checkpoints })
}

/// Gradients of the six inputs, in their order and shapes.
pub type Grads = [Vec<f32>; 6];

#[inline(always)]
// A kernel takes its slices and sizes as plain arguments; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn sequence_backward_body(
    dims: Dims,
    r: &[f32],
    log_w: &[f32],
    k: &[f32],
    v: &[f32],
    alpha: &[f32],
    beta: &[f32],
    checkpoints: &[f32],
    dy: &[f32],
    dr: &mut [f32],
    dlog_w: &mut [f32],
    dk_out: &mut [f32],
    dv_out: &mut [f32],
    dalpha: &mut [f32],
    dbeta: &mut [f32],
) {
    let x = Sequence { r, log_w, k, v, alpha, beta };
    let (dk, dv) = (dims.dk, dims.dv);
    let state = dk * dv;
    // states[m] is the state before token c0 + m of the chunk being undone.
    let mut states = vec![0.0; (dims.chunk + 1) * state];
    // The replay's removal reads u_t, and each token's decays w_t, kept for the reverse pass.
    let (mut us, mut w) = (vec![0.0; dims.chunk * dv], vec![0.0; dk]);
    let (mut ds, mut du) = (vec![0.0; state], vec![0.0; dv]);
    for c in (0..dims.chunks()).rev() {
        let (c0, c1) = (c * dims.chunk, ((c + 1) * dims.chunk).min(dims.seq));
        states[..state].copy_from_slice(&checkpoints[c * state..(c + 1) * state]);
        for m in 0..c1 - c0 {
            let (done, rest) = states.split_at_mut((m + 1) * state);
            let u = &mut us[m * dv..(m + 1) * dv];
            step(dims, x, c0 + m, &done[m * state..], &mut rest[..state], u);
        }
        for t in (c0..c1).rev() {
            let m = t - c0;
            let (prev, now) =
                (&states[m * state..(m + 1) * state], &states[(m + 1) * state..(m + 2) * state]);
            let (rt, kt, at, bt) = (
                Sequence::row(x.r, t, dk),
                Sequence::row(x.k, t, dk),
                Sequence::row(x.alpha, t, dk),
                Sequence::row(x.beta, t, dk),
            );
            let (vt, dyt) = (Sequence::row(x.v, t, dv), Sequence::row(dy, t, dv));
            let u = &us[m * dv..(m + 1) * dv];
            w.iter_mut().zip(Sequence::row(x.log_w, t, dk)).for_each(|(w, &l)| *w = l.exp());
            // dS += r dyᵀ, and what reads dS before the decay: dr, dk, dβ, d log w, du, dv.
            du.fill(0.0);
            let dvt = &mut dv_out[t * dv..(t + 1) * dv];
            dvt.fill(0.0);
            for i in 0..dk {
                let row = &mut ds[i * dv..(i + 1) * dv];
                row.iter_mut().zip(dyt).for_each(|(d, &g)| *d += rt[i] * g);
                dr[t * dk + i] = dot(&now[i * dv..(i + 1) * dv], dyt);
                dk_out[t * dk + i] = dot(row, vt);
                dbeta[t * dk + i] = dot(row, u);
                dlog_w[t * dk + i] = w[i] * dot(row, &prev[i * dv..(i + 1) * dv]);
                du.iter_mut().zip(row.iter()).for_each(|(d, &e)| *d += bt[i] * e);
                dvt.iter_mut().zip(row.iter()).for_each(|(d, &e)| *d += kt[i] * e);
            }
            // dα = S_{t−1} du; dS ← diag(w) dS + α duᵀ.
            for i in 0..dk {
                dalpha[t * dk + i] = dot(&prev[i * dv..(i + 1) * dv], &du);
                let row = &mut ds[i * dv..(i + 1) * dv];
                row.iter_mut().zip(&du).for_each(|(d, &g)| *d = w[i] * *d + at[i] * g);
            }
        }
    }
}

dispatched!(sequence_backward => sequence_backward_body(
    dims: Dims, r: &[f32], log_w: &[f32], k: &[f32], v: &[f32], alpha: &[f32], beta: &[f32],
    checkpoints: &[f32], dy: &[f32], dr: &mut [f32], dlog_w: &mut [f32], dk_out: &mut [f32],
    dv_out: &mut [f32], dalpha: &mut [f32], dbeta: &mut [f32]
));

/// The backward pass from the inputs, the checkpoints and the output gradient `dy`.
pub fn backward(dims: Dims, x: Inputs<'_>, saved: &Saved, dy: &[f32]) -> Grads {
    let (t, dk, dv, bh) = (dims.seq, dims.dk, dims.dv, dims.bh);
    let n = dims.chunks();
    let keys = || vec![0.0; bh * t * dk];
    let mut g: Grads = [keys(), keys(), keys(), vec![0.0; bh * t * dv], keys(), keys()];
    let [dr, dlw, dkk, dvv, da, db] = &mut g;
    dr.par_chunks_mut(t * dk)
        .zip(dlw.par_chunks_mut(t * dk))
        .zip(dkk.par_chunks_mut(t * dk))
        .zip(dvv.par_chunks_mut(t * dv))
        .zip(da.par_chunks_mut(t * dk))
        .zip(db.par_chunks_mut(t * dk))
        .enumerate()
        .for_each(|(p, (((((dr, dlw), dkk), dvv), da), db))| {
            let s = Sequence::of(dims, p, x);
            let cp = &saved.checkpoints[p * n * dk * dv..(p + 1) * n * dk * dv];
            let dy = &dy[p * t * dv..(p + 1) * t * dv];
            sequence_backward(
                dims, s.r, s.log_w, s.k, s.v, s.alpha, s.beta, cp, dy, dr, dlw, dkk, dvv, da, db,
            );
        });
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded values in `[-1, 1)`.
    fn uniform(n: usize, seed: u64) -> Vec<f32> {
        crate::testing::uniform_values(n, seed, (-1.0, 1.0))
    }

    /// The recurrence in f64, token by token, straight from the formula.
    fn naive(dims: Dims, x: Inputs<'_>) -> Vec<f64> {
        let Dims { bh, seq, dk, dv, .. } = dims;
        let mut y = Vec::new();
        for p in 0..bh {
            let s = Sequence::of(dims, p, x);
            let mut st = vec![vec![0f64; dv]; dk];
            for t in 0..seq {
                let at = |a: &[f32], i: usize| a[t * dk + i] as f64;
                let u: Vec<f64> =
                    (0..dv).map(|j| (0..dk).map(|i| at(s.alpha, i) * st[i][j]).sum()).collect();
                for (i, row) in st.iter_mut().enumerate() {
                    for (j, e) in row.iter_mut().enumerate() {
                        let v = s.v[t * dv + j] as f64;
                        *e = at(s.log_w, i).exp() * *e + at(s.beta, i) * u[j] + at(s.k, i) * v;
                    }
                }
                y.extend((0..dv).map(|j| (0..dk).map(|i| at(s.r, i) * st[i][j]).sum::<f64>()));
            }
        }
        y
    }

    /// The kernel's outputs against the f64 recurrence, with checkpoint intervals that do and do
    /// not divide the length; RWKV-7's ranges (`log w ∈ (−0.61, 0)`, `α = −κ`, `β = κ ⊙ a`).
    #[test]
    fn forward_matches_the_naive_recurrence() {
        for (seed, (bh, seq, dk, dv, chunk)) in
            [(3, 19, 8, 5, 4), (2, 33, 6, 6, 33), (1, 7, 4, 9, 1)].into_iter().enumerate()
        {
            let dims = Dims { bh, seq, dk, dv, chunk };
            let s = 10 * seed as u64;
            let nk = bh * seq * dk;
            let kappa = uniform(nk, s + 1);
            let a: Vec<f32> = uniform(nk, s + 2).iter().map(|x| 0.5 + 0.5 * x).collect();
            let x = [
                uniform(nk, s + 3),
                uniform(nk, s + 4).iter().map(|u| -0.3 * (1.0 + u)).collect(),
                uniform(nk, s + 5),
                uniform(bh * seq * dv, s + 6),
                kappa.iter().map(|k| -k).collect(),
                kappa.iter().zip(&a).map(|(k, a)| k * a).collect::<Vec<f32>>(),
            ];
            let inputs: Inputs<'_> = std::array::from_fn(|i| &x[i][..]);
            let (y, _) = forward(dims, inputs);
            let want = naive(dims, inputs);
            let worst = y
                .iter()
                .zip(&want)
                .map(|(&a, &b)| (a as f64 - b).abs() / b.abs().max(1.0))
                .fold(0.0, f64::max);
            assert!(worst <= 1e-5, "{dims:?}: off by {worst:e}");
        }
    }
}
