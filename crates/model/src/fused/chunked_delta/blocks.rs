//! The pieces of one block that the chunked forward and backward passes share: its internals
//! (the gate terms, `Γ ⊙ K Kᵀ`, the substituted `U`), its outputs and the state's advance past
//! it (formulas in the parent's header).

use super::form::BlockForward;
use crate::fused::gated_recurrence::{Dims, Sequence};
use crate::fused::matmul::{View, matmul_into};
use crate::fused::simd::{dot, exp};

/// A row-major `rows × cols` matrix over the first `rows·cols` values of `data` from `offset`.
pub(super) fn rows(data: &[f32], offset: usize, rows: usize, cols: usize) -> View<'_> {
    View { data, offset, rows, cols, row_stride: cols as isize, col_stride: 1 }
}

/// Buffers one sequence reuses for every block of at most `block` tokens (`n` below).
pub(super) struct Scratch {
    /// `b_i` and `e^{b_i}`.
    pub(super) cum: Vec<f32>,
    pub(super) decay: Vec<f32>,
    /// `Γ` on and below the diagonal, 0 above; `n × n`.
    pub(super) gamma: Vec<f32>,
    /// `Γ ⊙ Q Kᵀ ⊙ M` and `Γ ⊙ K Kᵀ ⊙ M₋`, `n × n`.
    pub(super) qk: Vec<f32>,
    pub(super) kk: Vec<f32>,
    /// `R = V − diag(e^b) K S − (Γ ⊙ K Kᵀ ⊙ M₋) U` and `U = diag(β) R`, `n × d_v` (delta rule).
    pub(super) r: Vec<f32>,
    pub(super) u: Vec<f32>,
    /// `diag(e^{b_n − b}) K`, `n × d_k`.
    pub(super) kd: Vec<f32>,
}

impl Scratch {
    pub(super) fn new(dims: Dims, block: usize) -> Self {
        let (nn, nv) = (block * block, if dims.delta { block * dims.dv } else { 0 });
        Self {
            cum: vec![0.0; block],
            decay: vec![0.0; block],
            gamma: vec![0.0; nn],
            qk: vec![0.0; nn],
            kk: vec![0.0; if dims.delta { nn } else { 0 }],
            r: vec![0.0; nv],
            u: vec![0.0; nv],
            kd: vec![0.0; block * dims.dk],
        }
    }
}

/// `U` of the block of `n` tokens from `t0`: the computed `u` under the delta rule, `V` itself
/// without it. Both forms' scratch reads its values through this.
#[inline(always)]
pub(super) fn block_values<'a>(
    u: &'a [f32],
    dims: Dims,
    x: Sequence<'a>,
    t0: usize,
    n: usize,
) -> &'a [f32] {
    if dims.delta { &u[..n * dims.dv] } else { &x.v[t0 * dims.dv..(t0 + n) * dims.dv] }
}

/// The delta rule's forward substitution inside a block of `n = beta.len()` tokens: with `R`'s
/// rows holding their terms that do not depend on `U`, row by row `R_i −= Σ_{j<i} A_ij U_j`
/// and `U_i = β_i R_i` (`A` strictly lower, `n × n`; `R`, `U` `n × d_v`). Both kernels' `U`.
#[inline(always)]
pub(super) fn substitute(r: &mut [f32], u: &mut [f32], a: &[f32], beta: &[f32], dv: usize) {
    let n = beta.len();
    for (i, &b) in beta.iter().enumerate() {
        let ri = &mut r[i * dv..(i + 1) * dv];
        let (done, rest) = u.split_at_mut(i * dv);
        for (uj, &c) in done.chunks_exact(dv).zip(&a[i * n..i * n + i]) {
            ri.iter_mut().zip(uj).for_each(|(r, &u)| *r -= c * u);
        }
        rest[..dv].iter_mut().zip(ri.iter()).for_each(|(u, &r)| *u = b * r);
    }
}

/// [`substitute`] backward, rows from the last: from `∂L/∂U` in `du`, `dU_i −= Σ_{j>i} A_ji dR_j`,
/// `dR_i = β_i dU_i` (into `dr`; `∂L/∂V` as well, since `R = V − …`), `dβ_i = dU_i · R_i`.
#[inline(always)]
pub(super) fn substitute_backward(
    du: &mut [f32],
    dr: &mut [f32],
    a: &[f32],
    r: &[f32],
    beta: &[f32],
    dbeta: &mut [f32],
    dv: usize,
) {
    let n = beta.len();
    for i in (0..n).rev() {
        let (head, later) = dr.split_at_mut((i + 1) * dv);
        let dui = &mut du[i * dv..(i + 1) * dv];
        for (j, drj) in later.chunks_exact(dv).enumerate() {
            let c = a[(i + 1 + j) * n + i];
            dui.iter_mut().zip(drj).for_each(|(d, &r)| *d -= c * r);
        }
        dbeta[i] = dot(dui, &r[i * dv..(i + 1) * dv]);
        head[i * dv..].iter_mut().zip(dui.iter()).for_each(|(o, &d)| *o = beta[i] * d);
    }
}

/// The per-head form (one log gate per head and token, the decay in `Γ`) for the drivers.
pub(super) struct PerHead;

impl BlockForward for PerHead {
    type Scratch = Scratch;

    fn scratch(dims: Dims, block: usize) -> Scratch {
        Scratch::new(dims, block)
    }

    /// Blocks of `block` tokens, the last one shorter.
    fn partition(dims: Dims, g: &[f32], c0: usize, c1: usize, block: usize) -> Vec<(usize, usize)> {
        let _ = (dims, g);
        (c0..c1).step_by(block).map(|t0| (t0, block.min(c1 - t0))).collect()
    }

    /// Everything a block of `n` tokens from `t0` and state `s` needs besides its outputs: `b`,
    /// `e^b`, `Γ`, `diag(e^{b_n − b}) K`, with `scores` also `Γ ⊙ Q Kᵀ ⊙ M`, and under the delta
    /// rule `Γ ⊙ K Kᵀ ⊙ M₋`, `R` and `U`.
    #[inline(always)]
    fn internals(
        dims: Dims,
        x: Sequence<'_>,
        t0: usize,
        n: usize,
        s: &[f32],
        w: &mut Scratch,
        scores: bool,
    ) {
        let (dk, dv) = (dims.dk, dims.dv);
        let mut acc = 0.0;
        for i in 0..n {
            acc += x.g[t0 + i];
            w.cum[i] = acc;
            w.decay[i] = acc.exp();
        }
        let cum = &w.cum[..n];
        // Γ_ij = e^{b_i − b_j} with j ≤ i: never a positive exponent, so strong decay cannot
        // overflow. The vectorizing `exp` (libm's is a call per element, 3% of a profile).
        let gamma = &mut w.gamma[..n * n];
        for (i, row) in gamma.chunks_exact_mut(n).enumerate() {
            row[..=i].iter_mut().zip(cum).for_each(|(x, &bj)| *x = exp(cum[i] - bj));
            row[i + 1..].fill(0.0);
        }
        let last = cum[n - 1];
        for (j, row) in w.kd[..n * dk].chunks_exact_mut(dk).enumerate() {
            let f = (last - cum[j]).exp();
            let kj = &x.k[(t0 + j) * dk..(t0 + j + 1) * dk];
            row.iter_mut().zip(kj).for_each(|(o, &k)| *o = f * k);
        }
        let (q, k) = (rows(x.q, t0 * dk, n, dk), rows(x.k, t0 * dk, n, dk));
        let weigh = |m: &mut [f32]| m.iter_mut().zip(gamma.iter()).for_each(|(x, &c)| *x *= c);
        if scores {
            let qk = &mut w.qk[..n * n];
            matmul_into(qk, 0, n, q, k.t(), 1.0, false);
            weigh(qk);
        }
        if !dims.delta {
            return;
        }
        let kk = &mut w.kk[..n * n];
        matmul_into(kk, 0, n, k, k.t(), 1.0, false);
        weigh(kk);
        (0..n).for_each(|i| kk[i * n + i] = 0.0);
        // Each row of R starts as K S, then V − e^{b_i} (K S)_i; U's rows follow by substitution.
        let (r, u) = (&mut w.r[..n * dv], &mut w.u[..n * dv]);
        matmul_into(r, 0, dv, k, rows(s, 0, dk, dv), 1.0, false);
        let v = &x.v[t0 * dv..(t0 + n) * dv];
        for ((ri, vi), &e) in r.chunks_exact_mut(dv).zip(v.chunks_exact(dv)).zip(&w.decay[..n]) {
            ri.iter_mut().zip(vi).for_each(|(r, &v)| *r = v - e * *r);
        }
        substitute(r, u, kk, &x.beta[t0..t0 + n], dv);
    }

    /// The block's outputs into `y` (`n × d_v`), from its state `s` and [`BlockForward::internals`].
    #[inline(always)]
    fn outputs(
        dims: Dims,
        x: Sequence<'_>,
        t0: usize,
        n: usize,
        s: &[f32],
        y: &mut [f32],
        w: &Scratch,
    ) {
        let (dk, dv) = (dims.dk, dims.dv);
        matmul_into(y, 0, dv, rows(x.q, t0 * dk, n, dk), rows(s, 0, dk, dv), 1.0, false);
        for (row, &e) in y.chunks_exact_mut(dv).zip(&w.decay[..n]) {
            row.iter_mut().for_each(|x| *x *= e);
        }
        let u = block_values(&w.u, dims, x, t0, n);
        matmul_into(y, 0, dv, rows(&w.qk, 0, n, n), rows(u, 0, n, dv), 1.0, true);
    }

    /// `s` advanced past the block: `S ← e^{b_n} S + (diag(e^{b_n − b}) K)ᵀ U`.
    #[inline(always)]
    fn advance(dims: Dims, x: Sequence<'_>, t0: usize, n: usize, s: &mut [f32], w: &Scratch) {
        let (dk, dv) = (dims.dk, dims.dv);
        let carry = w.decay[n - 1];
        s.iter_mut().for_each(|e| *e *= carry);
        let u = block_values(&w.u, dims, x, t0, n);
        matmul_into(s, 0, dv, rows(&w.kd, 0, n, dk).t(), rows(u, 0, n, dv), 1.0, true);
    }
}
