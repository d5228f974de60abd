//! The gated linear recurrence of the `decay` and `delta` families, forward and backward, one
//! pass over the tokens of each (batch, head), parallel over (batch, head).
//!
//! Per token, with state `S` (`d_k × d_v`, row `i` belongs to key channel `i`), log gate `g_t`
//! (one per head, or one per key channel) and, for the delta rule, `β_t`:
//!
//! `S̃ = a_t ⊙ S_{t−1}` (`a_t = e^{g_t}` scaling rows), `r_t = v_t − S̃ᵀ k_t`,
//! `u_t = β_t r_t` (delta) or `u_t = v_t` (plain), `S_t = S̃ + k_t u_tᵀ`, `y_t = S_tᵀ q_t`.
//!
//! Backward, tokens in reverse, `dS` = ∂L/∂S_t gathered from later tokens:
//! `dS += q_t dy_tᵀ`; `dq_t = S_t dy_t = a_t ⊙ (S_{t−1} dy_t) + k_t (u_t·dy_t)`;
//! `du = dSᵀ k_t`, `dk_t = dS u_t`; delta: `dβ_t = du·r_t`, `dv_t = β_t du`, `dp = −β_t du`,
//! `dk_t += a_t ⊙ (S_{t−1} dp)`, `dS += k_t dpᵀ` (now ∂L/∂S̃); plain: `dv_t = du`;
//! `dg_t = Σ_rows a_t ⊙ (dS ⊙ S_{t−1})` (summed over all rows for a per-head gate);
//! `dS ← a_t ⊙ dS` (∂L/∂S_{t−1}).
//!
//! This is the token-by-token form (fla's `fused_recurrent`), not the WY chunked form the
//! composed code uses: at head widths ≤ 64 it does fewer flops on a CPU (about `4·d_k·d_v` per
//! token forward against `4·C·d + 3·d²` for chunks of `C`), and its state stays in L1. Memory is
//! linear in `T`: the forward keeps the state at the start of every `chunk` tokens, and the
//! backward recomputes each chunk's states from there (`chunk·d_k·d_v` scratch per thread).

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
    /// Log gates per token: 1 (per head) or `dk` (per key channel).
    pub gate_width: usize,
    /// The delta rule (`β` given) or plain accumulation.
    pub delta: bool,
    /// Tokens between state checkpoints.
    pub chunk: usize,
}

impl Dims {
    pub(super) fn chunks(&self) -> usize {
        self.seq.div_ceil(self.chunk)
    }
}

/// The state at the start of each chunk, `[bh, chunks, dk, dv]`, kept for the backward pass.
#[derive(Debug)]
pub struct Saved {
    pub checkpoints: Vec<f32>,
}

/// One (batch, head)'s inputs.
#[derive(Clone, Copy)]
pub(super) struct Sequence<'a> {
    pub(super) q: &'a [f32],
    pub(super) k: &'a [f32],
    pub(super) v: &'a [f32],
    pub(super) g: &'a [f32],
    pub(super) beta: &'a [f32],
}

impl<'a> Sequence<'a> {
    pub(super) fn of(
        dims: Dims,
        p: usize,
        q: &'a [f32],
        k: &'a [f32],
        v: &'a [f32],
        g: &'a [f32],
        beta: &'a [f32],
    ) -> Self {
        let (t, dk, dv, gw) = (dims.seq, dims.dk, dims.dv, dims.gate_width);
        Self {
            q: &q[p * t * dk..(p + 1) * t * dk],
            k: &k[p * t * dk..(p + 1) * t * dk],
            v: &v[p * t * dv..(p + 1) * t * dv],
            g: &g[p * t * gw..(p + 1) * t * gw],
            beta: if dims.delta { &beta[p * t..(p + 1) * t] } else { &[] },
        }
    }
}

/// Every row's decay factor `a_t` at token `t`, into `a` (`dk` long).
#[inline(always)]
fn gates_at(dims: Dims, g: &[f32], t: usize, a: &mut [f32]) {
    if dims.gate_width == 1 {
        a.fill(g[t].exp());
    } else {
        a.iter_mut()
            .zip(&g[t * dims.gate_width..(t + 1) * dims.gate_width])
            .for_each(|(a, &g)| *a = g.exp());
    }
}

/// One token forward: updates `s` in place, writes `y_t`, and `u_t`, `r_t` into `u`, `r`;
/// `a` is scratch for the gates.
#[inline(always)]
// A kernel takes its slices and sizes as plain arguments; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn token_forward(
    dims: Dims,
    x: Sequence<'_>,
    t: usize,
    s: &mut [f32],
    y: &mut [f32],
    u: &mut [f32],
    r: &mut [f32],
    a: &mut [f32],
) {
    let (dk, dv) = (dims.dk, dims.dv);
    let (qt, kt, vt) =
        (&x.q[t * dk..(t + 1) * dk], &x.k[t * dk..(t + 1) * dk], &x.v[t * dv..(t + 1) * dv]);
    gates_at(dims, x.g, t, a);
    for (row, &a) in s.chunks_exact_mut(dv).zip(a.iter()) {
        row.iter_mut().for_each(|e| *e *= a);
    }
    if dims.delta {
        r.copy_from_slice(vt);
        for (row, &ki) in s.chunks_exact(dv).zip(kt) {
            r.iter_mut().zip(row).for_each(|(r, &e)| *r -= ki * e);
        }
        let b = x.beta[t];
        u.iter_mut().zip(r.iter()).for_each(|(u, &r)| *u = b * r);
    } else {
        u.copy_from_slice(vt);
    }
    y.fill(0.0);
    for ((row, &ki), &qi) in s.chunks_exact_mut(dv).zip(kt).zip(qt) {
        row.iter_mut().zip(u.iter()).for_each(|(e, &u)| *e += ki * u);
        y.iter_mut().zip(row.iter()).for_each(|(y, &e)| *y += qi * e);
    }
}

/// The forward pass of one (batch, head): outputs into `y`, chunk-start states into `checkpoints`.
/// (Inlined into the AVX2+FMA build `dispatched!` makes of it.)
#[inline(always)]
// A kernel takes its slices and sizes as plain arguments; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn sequence_forward_body(
    dims: Dims,
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
    let mut s = vec![0.0; dk * dv];
    let (mut u, mut r, mut a) = (vec![0.0; dv], vec![0.0; dv], vec![0.0; dk]);
    for t in 0..dims.seq {
        if t % dims.chunk == 0 {
            let c = t / dims.chunk;
            checkpoints[c * dk * dv..(c + 1) * dk * dv].copy_from_slice(&s);
        }
        token_forward(dims, x, t, &mut s, &mut y[t * dv..(t + 1) * dv], &mut u, &mut r, &mut a);
    }
}

dispatched!(sequence_forward => sequence_forward_body(dims: Dims, q: &[f32], k: &[f32], v: &[f32], g: &[f32], beta: &[f32], y: &mut [f32], checkpoints: &mut [f32]));

/// Returns `y` (`[bh, seq, dv]`) and the checkpoints. `beta` is `[bh, seq]` (empty without the
/// delta rule), `g` is `[bh, seq, gate_width]`.
pub fn forward(
    dims: Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
) -> (Vec<f32>, Saved) {
    forward_each(dims, (q, k, v, g, beta), |x, y, cp| {
        sequence_forward(dims, x.q, x.k, x.v, x.g, x.beta, y, cp)
    })
}

/// The inputs of a call, each `[bh, seq, ·]`: `q, k, v, g, beta`.
pub(super) type Inputs<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32], &'a [f32]);

/// A forward pass of every (batch, head) in parallel: `run(x, y, checkpoints)` fills one
/// sequence's outputs (`seq × d_v`) and state checkpoints. Both the token and the chunked
/// kernels run this way.
pub(super) fn forward_each(
    dims: Dims,
    (q, k, v, g, beta): Inputs<'_>,
    run: impl Fn(Sequence<'_>, &mut [f32], &mut [f32]) + Sync,
) -> (Vec<f32>, Saved) {
    let (t, dk, dv) = (dims.seq, dims.dk, dims.dv);
    let n = dims.chunks();
    let mut y = vec![0.0; dims.bh * t * dv];
    let mut checkpoints = vec![0.0; dims.bh * n * dk * dv];
    y.par_chunks_mut(t * dv)
        .zip(checkpoints.par_chunks_mut(n * dk * dv))
        .enumerate()
        .for_each(|(p, (y, cp))| run(Sequence::of(dims, p, q, k, v, g, beta), y, cp));
    (y, Saved { checkpoints })
}

/// Gradients of one (batch, head), written into the `d*` slices.
#[inline(always)]
// A kernel takes its slices and sizes as plain arguments; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn sequence_backward_body(
    dims: Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    checkpoints: &[f32],
    dy: &[f32],
    dq: &mut [f32],
    dk_out: &mut [f32],
    dv_out: &mut [f32],
    dg: &mut [f32],
    dbeta: &mut [f32],
) {
    let x = Sequence { q, k, v, g, beta };
    let (dk, dv, gw) = (dims.dk, dims.dv, dims.gate_width);
    let state = dk * dv;
    let mut ds = vec![0.0; state];
    // Per token of the chunk being undone: the state before it, u_t and r_t.
    let mut before = vec![0.0; dims.chunk * state];
    let (mut us, mut rs) = (vec![0.0; dims.chunk * dv], vec![0.0; dims.chunk * dv]);
    let (mut s, mut y) = (vec![0.0; state], vec![0.0; dv]);
    let (mut du, mut dp, mut a) = (vec![0.0; dv], vec![0.0; dv], vec![0.0; dk]);
    for c in (0..dims.chunks()).rev() {
        let (t0, t1) = (c * dims.chunk, ((c + 1) * dims.chunk).min(dims.seq));
        s.copy_from_slice(&checkpoints[c * state..(c + 1) * state]);
        for t in t0..t1 {
            let j = t - t0;
            before[j * state..(j + 1) * state].copy_from_slice(&s);
            let (u, r) = (&mut us[j * dv..(j + 1) * dv], &mut rs[j * dv..(j + 1) * dv]);
            token_forward(dims, x, t, &mut s, &mut y, u, r, &mut a);
        }
        for t in (t0..t1).rev() {
            let j = t - t0;
            let sp = &before[j * state..(j + 1) * state]; // S_{t−1}
            let (u, r) = (&us[j * dv..(j + 1) * dv], &rs[j * dv..(j + 1) * dv]);
            let (qt, kt) = (&x.q[t * dk..(t + 1) * dk], &x.k[t * dk..(t + 1) * dk]);
            let dyt = &dy[t * dv..(t + 1) * dv];
            gates_at(dims, x.g, t, &mut a);
            // dq_t = a ⊙ (S_{t−1} dy) + k (u·dy)
            let u_dy = dot(u, dyt);
            for (i, row) in sp.chunks_exact(dv).enumerate() {
                dq[t * dk + i] = a[i] * dot(row, dyt) + kt[i] * u_dy;
            }
            // dS += q dyᵀ; du = dSᵀ k; dk = dS u
            du.fill(0.0);
            for (i, row) in ds.chunks_exact_mut(dv).enumerate() {
                row.iter_mut().zip(dyt).for_each(|(d, &e)| *d += qt[i] * e);
                du.iter_mut().zip(row.iter()).for_each(|(d, &e)| *d += kt[i] * e);
                dk_out[t * dk + i] = dot(row, u);
            }
            let dvt = &mut dv_out[t * dv..(t + 1) * dv];
            if dims.delta {
                let b = x.beta[t];
                dbeta[t] = dot(&du, r);
                dvt.iter_mut().zip(&du).for_each(|(o, &d)| *o = b * d);
                dp.iter_mut().zip(&du).for_each(|(o, &d)| *o = -b * d);
                for (i, (row, drow)) in sp.chunks_exact(dv).zip(ds.chunks_exact_mut(dv)).enumerate()
                {
                    dk_out[t * dk + i] += a[i] * dot(row, &dp);
                    drow.iter_mut().zip(&dp).for_each(|(d, &e)| *d += kt[i] * e);
                }
            } else {
                dvt.copy_from_slice(&du);
            }
            // dS is now ∂L/∂S̃: the gate's gradient, then ∂L/∂S_{t−1}.
            let dgt = &mut dg[t * gw..(t + 1) * gw];
            dgt.fill(0.0);
            for (i, (row, drow)) in sp.chunks_exact(dv).zip(ds.chunks_exact_mut(dv)).enumerate() {
                dgt[if gw == 1 { 0 } else { i }] += a[i] * dot(drow, row);
                drow.iter_mut().for_each(|d| *d *= a[i]);
            }
        }
    }
}

dispatched!(sequence_backward => sequence_backward_body(
    dims: Dims, q: &[f32], k: &[f32], v: &[f32], g: &[f32], beta: &[f32], checkpoints: &[f32], dy: &[f32],
    dq: &mut [f32], dk_out: &mut [f32], dv_out: &mut [f32], dg: &mut [f32], dbeta: &mut [f32]
));

/// Gradients with respect to `q`, `k`, `v`, `g` and `β` (empty without the delta rule).
pub struct Grads {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
    pub dg: Vec<f32>,
    pub dbeta: Vec<f32>,
}

/// The backward pass from the inputs, the checkpoints and the output gradient `dy`.
// A kernel takes its slices and sizes as plain arguments; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dims: Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    saved: &Saved,
    dy: &[f32],
) -> Grads {
    backward_each(dims, (q, k, v, g, beta), saved, dy, |x, cp, dy, (dq, dk, dv, dg, db)| {
        sequence_backward(dims, x.q, x.k, x.v, x.g, x.beta, cp, dy, dq, dk, dv, dg, db)
    })
}

/// One sequence's gradient slices: `dq`, `dk`, `dv`, `dg`, `dβ` (empty without the delta rule).
pub(super) type GradSlices<'a> =
    (&'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32]);

/// A backward pass of every (batch, head) in parallel: `run(x, checkpoints, dy, grads)` writes
/// one sequence's gradients from its checkpoints and output gradient. Both the token and the
/// chunked kernels run this way.
pub(super) fn backward_each(
    dims: Dims,
    (q, k, v, g, beta): Inputs<'_>,
    saved: &Saved,
    dy: &[f32],
    run: impl Fn(Sequence<'_>, &[f32], &[f32], GradSlices<'_>) + Sync,
) -> Grads {
    let (t, dk, dv, gw) = (dims.seq, dims.dk, dims.dv, dims.gate_width);
    let (n, bh) = (dims.chunks(), dims.bh);
    let mut out = Grads {
        dq: vec![0.0; bh * t * dk],
        dk: vec![0.0; bh * t * dk],
        dv: vec![0.0; bh * t * dv],
        dg: vec![0.0; bh * t * gw],
        dbeta: vec![0.0; if dims.delta { bh * t } else { 0 }],
    };
    // Without the delta rule there is no β: hand every sequence an empty slice.
    let dbeta: Vec<&mut [f32]> = if dims.delta {
        out.dbeta.chunks_mut(t).collect()
    } else {
        (0..bh).map(|_| <&mut [f32]>::default()).collect()
    };
    out.dq
        .par_chunks_mut(t * dk)
        .zip(out.dk.par_chunks_mut(t * dk))
        .zip(out.dv.par_chunks_mut(t * dv))
        .zip(out.dg.par_chunks_mut(t * gw))
        .zip(dbeta.into_par_iter())
        .enumerate()
        .for_each(|(p, ((((dq, dkp), dvp), dg), db))| {
            let x = Sequence::of(dims, p, q, k, v, g, beta);
            let cp = &saved.checkpoints[p * n * dk * dv..(p + 1) * n * dk * dv];
            run(x, cp, &dy[p * t * dv..(p + 1) * t * dv], (dq, dkp, dvp, dg, db));
        });
    out
}
