//! The backward pass of the chunked form (see the parent's header for the forward), block by
//! block in reverse from the checkpoints the forward pass saved. Within a chunk it first
//! replays the blocks' states from the chunk's checkpoint, then, for each block from the last,
//! recomputes its internals and, with `dS` = ∂L/∂S at the block's end:
//!
//! - `dU = (Γ ⊙ Q Kᵀ ⊙ M)ᵀ dY + (diag(e^{b_n − b}) K) dS`;
//! - delta rule, backward substitution (row `i` needs the rows `j > i`):
//!   `dU_i −= Σ_{j>i} (Γ ⊙ K Kᵀ)_ji dR_j`, `dR_i = β_i dU_i`, `dβ_i = dU_i · R_i`, `dV = dR`;
//!   plain accumulation: `dV = dU`;
//! - `dQ = diag(e^b) dY Sᵀ + dP K`, `dK = −diag(e^b) dR Sᵀ + dPᵀ Q + (dA + dAᵀ) K +
//!   diag(e^{b_n − b}) U dSᵀ`, with `dP = Γ ⊙ (dY Uᵀ) ⊙ M` and `dA = −Γ ⊙ (dR Uᵀ) ⊙ M₋`;
//! - `dS ← e^{b_n} dS + Qᵀ diag(e^b) dY − Kᵀ diag(e^b) dR` (∂L/∂S at the block's start);
//! - the gates: each weight `x = e^{b_i − b_j}·(…)` adds `∂L/∂x · x` to `∂L/∂b_i` and takes it
//!   from `∂L/∂b_j`; `e^{b_i}` adds `q_i·(e^{b_i} S dy_i)` and `k_i·(−e^{b_i} S dr_i)` to
//!   `∂L/∂b_i`, `e^{b_n}` adds `e^{b_n}⟨dS, S⟩` to `∂L/∂b_n`; then `dg_i = Σ_{m ≥ i} ∂L/∂b_m`.

use super::blocks::{PerHead, Scratch, block_values, rows, substitute_backward};
use super::form::{BlockBackward, Grads};
use crate::fused::gated_recurrence::{Dims, Sequence};
use crate::fused::matmul::matmul_into;
use crate::fused::simd::dot;

/// The backward pass's own buffers for a block of at most `n` tokens.
pub(super) struct Adjoints {
    /// `∂L/∂U`, `n × d_v`.
    du: Vec<f32>,
    /// `diag(e^b) dY` and `−diag(e^b) dR`, `n × d_v`.
    ey: Vec<f32>,
    er: Vec<f32>,
    /// `∂L/∂(Q Kᵀ)` and `∂L/∂(K Kᵀ)` (`dP`, `dA`), `n × n`.
    dqk: Vec<f32>,
    dkk: Vec<f32>,
    /// The state update's part of `dK`, `n × d_k`.
    dks: Vec<f32>,
    /// `∂L/∂b`.
    db: Vec<f32>,
}

/// Adds `∂L/∂x · x` of every weight `x_ij = Γ_ij·(…)` to `∂L/∂b_i` and takes it from `∂L/∂b_j`,
/// then turns `∂L/∂x` into `∂L/∂(…) = Γ ⊙ ∂L/∂x`, zero outside the weighed part: `j ≤ i`, or
/// `j < i` without `diagonal`.
#[inline(always)]
fn through_gamma(
    d: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    n: usize,
    diagonal: bool,
    db: &mut [f32],
) {
    for i in 0..n {
        let (d, x, gamma) = (&mut d[i * n..(i + 1) * n], &x[i * n..(i + 1) * n], &gamma[i * n..]);
        let end = if diagonal { i + 1 } else { i };
        for j in 0..end {
            let h = d[j] * x[j];
            db[i] += h;
            db[j] -= h;
            d[j] *= gamma[j];
        }
        d[end..].fill(0.0);
    }
}

impl BlockBackward for PerHead {
    type Adjoints = Adjoints;

    fn adjoints(dims: Dims, block: usize) -> Adjoints {
        let nn = block * block;
        Adjoints {
            du: vec![0.0; block * dims.dv],
            ey: vec![0.0; block * dims.dv],
            er: vec![0.0; block * dims.dv],
            dqk: vec![0.0; nn],
            dkk: vec![0.0; nn],
            dks: vec![0.0; block * dims.dk],
            db: vec![0.0; block],
        }
    }

    /// Gradients of one block of `n` tokens from `t0` (internals in `w`, start state `s`), written
    /// into the sequence's gradient slices; `ds` goes from ∂L/∂S at the block's end to its start.
    #[inline(always)]
    // A kernel takes its slices and sizes as plain arguments; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        dims: Dims,
        x: Sequence<'_>,
        t0: usize,
        n: usize,
        s: &[f32],
        ds: &mut [f32],
        dy: &[f32],
        w: &Scratch,
        a: &mut Adjoints,
        (dq, dk_out, dv_out, dg, dbeta): Grads<'_>,
    ) {
        let (dk, dv) = (dims.dk, dims.dv);
        let (q, k) = (rows(x.q, t0 * dk, n, dk), rows(x.k, t0 * dk, n, dk));
        let dyb = rows(dy, t0 * dv, n, dv);
        let (state, dstate) = (rows(s, 0, dk, dv), rows(ds, 0, dk, dv));
        let u = rows(block_values(&w.u, dims, x, t0, n), 0, n, dv);
        let (gamma, decay) = (&w.gamma[..n * n], &w.decay[..n]);
        let (du, db) = (&mut a.du[..n * dv], &mut a.db[..n]);
        db.fill(0.0);
        // The state update: U and K through S_n, and e^{b_n}.
        matmul_into(du, 0, dv, rows(&w.qk, 0, n, n).t(), dyb, 1.0, false);
        matmul_into(du, 0, dv, rows(&w.kd, 0, n, dk), dstate, 1.0, true);
        let dks = &mut a.dks[..n * dk];
        matmul_into(dks, 0, dk, u, dstate.t(), 1.0, false);
        db[n - 1] += decay[n - 1] * dot(ds, s);
        for (j, row) in dks.chunks_exact_mut(dk).enumerate() {
            let f = (w.cum[n - 1] - w.cum[j]).exp();
            row.iter_mut().for_each(|d| *d *= f);
            let h = dot(row, &x.k[(t0 + j) * dk..(t0 + j + 1) * dk]);
            db[n - 1] += h;
            db[j] -= h;
        }
        let dvb = &mut dv_out[t0 * dv..(t0 + n) * dv];
        if dims.delta {
            let (beta, dbeta) = (&x.beta[t0..t0 + n], &mut dbeta[t0..t0 + n]);
            substitute_backward(du, dvb, &w.kk, &w.r, beta, dbeta, dv);
        } else {
            dvb.copy_from_slice(du);
        }
        let dr = rows(dvb, 0, n, dv);
        // The scores: dP, and its gate terms.
        let dqk = &mut a.dqk[..n * n];
        matmul_into(dqk, 0, n, dyb, u.t(), 1.0, false);
        through_gamma(dqk, &w.qk, gamma, n, true, db);
        let (ey, er) = (&mut a.ey[..n * dv], &mut a.er[..n * dv]);
        for (i, &e) in decay.iter().enumerate() {
            let dyi = &dy[(t0 + i) * dv..(t0 + i + 1) * dv];
            ey[i * dv..(i + 1) * dv].iter_mut().zip(dyi).for_each(|(o, &d)| *o = e * d);
        }
        // dQ: the state's part first, whose dot with q_i is e^{b_i}'s gate term.
        matmul_into(dq, t0 * dk, dk, rows(ey, 0, n, dv), state.t(), 1.0, false);
        for i in 0..n {
            db[i] +=
                dot(&x.q[(t0 + i) * dk..(t0 + i + 1) * dk], &dq[(t0 + i) * dk..(t0 + i + 1) * dk]);
        }
        matmul_into(dq, t0 * dk, dk, rows(dqk, 0, n, n), k, 1.0, true);
        let dkb = &mut dk_out[t0 * dk..(t0 + n) * dk];
        if dims.delta {
            for (i, &e) in decay.iter().enumerate() {
                let dri = &dvb[i * dv..(i + 1) * dv];
                er[i * dv..(i + 1) * dv].iter_mut().zip(dri).for_each(|(o, &d)| *o = -e * d);
            }
            matmul_into(dkb, 0, dk, rows(er, 0, n, dv), state.t(), 1.0, false);
            for (i, row) in dkb.chunks_exact_mut(dk).enumerate() {
                db[i] += dot(&x.k[(t0 + i) * dk..(t0 + i + 1) * dk], row);
                row.iter_mut().zip(&dks[i * dk..(i + 1) * dk]).for_each(|(o, &d)| *o += d);
            }
            let dkk = &mut a.dkk[..n * n];
            matmul_into(dkk, 0, n, dr, u.t(), -1.0, false);
            through_gamma(dkk, &w.kk, gamma, n, false, db);
            matmul_into(dkb, 0, dk, rows(dkk, 0, n, n), k, 1.0, true);
            matmul_into(dkb, 0, dk, rows(dkk, 0, n, n).t(), k, 1.0, true);
        } else {
            dkb.copy_from_slice(dks);
        }
        matmul_into(dkb, 0, dk, rows(dqk, 0, n, n).t(), q, 1.0, true);
        // ∂L/∂S at the block's start.
        let carry = decay[n - 1];
        ds.iter_mut().for_each(|d| *d *= carry);
        matmul_into(ds, 0, dv, q.t(), rows(ey, 0, n, dv), 1.0, true);
        if dims.delta {
            matmul_into(ds, 0, dv, k.t(), rows(er, 0, n, dv), 1.0, true);
        }
        let mut acc = 0.0;
        for i in (0..n).rev() {
            acc += db[i];
            dg[t0 + i] = acc;
        }
    }
}
