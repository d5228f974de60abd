//! The backward pass of the per-channel chunked kernel (formulas in the parent's header), block
//! by block in reverse from the forward's checkpoints, replaying its block partition.

use super::blocks::{PerChannel, Scratch};
use crate::fused::chunked_delta::blocks::{block_values, rows, substitute_backward};
use crate::fused::chunked_delta::form::{BlockBackward, Grads};
use crate::fused::gated_recurrence::{Dims, Sequence};
use crate::fused::matmul::matmul_into;
use crate::fused::simd::dot;

/// The backward pass's buffers for a block of at most `n` tokens.
pub struct Adjoints {
    /// `∂L/∂U`, `n × d_v`.
    du: Vec<f32>,
    /// `dP`, `dA`, `n × n`.
    dp: Vec<f32>,
    da: Vec<f32>,
    /// One factor's adjoint at a time, `n × d_k`.
    dz: Vec<f32>,
    /// `∂L/∂b`, `n × d_k`.
    db: Vec<f32>,
}

/// Sends the adjoint `dz` of a factor `z = x ⊙ f` back: `dx += dz ⊙ f`, `∂L/∂b += sign·dz ⊙ z`.
#[inline(always)]
fn through_factor(dz: &[f32], f: &[f32], z: &[f32], sign: f32, dx: &mut [f32], db: &mut [f32]) {
    for ((((dx, db), &d), &f), &z) in dx.iter_mut().zip(db.iter_mut()).zip(dz).zip(f).zip(z) {
        *dx += d * f;
        *db += sign * d * z;
    }
}

impl BlockBackward for PerChannel {
    type Adjoints = Adjoints;

    fn adjoints(dims: Dims, block: usize) -> Adjoints {
        Adjoints {
            du: vec![0.0; block * dims.dv],
            dp: vec![0.0; block * block],
            da: vec![0.0; block * block],
            dz: vec![0.0; block * dims.dk],
            db: vec![0.0; block * dims.dk],
        }
    }

    /// Gradients of one block (internals in `w`, start state `s`) into the sequence's slices; `ds`
    /// goes from ∂L/∂S at the block's end to its start.
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
        let nk = n * dk;
        let dyb = rows(dy, t0 * dv, n, dv);
        let (state, dstate) = (rows(s, 0, dk, dv), rows(ds, 0, dk, dv));
        let u = rows(block_values(&w.u, dims, x, t0, n), 0, n, dv);
        let (du, dz, db) = (&mut a.du[..n * dv], &mut a.dz[..nk], &mut a.db[..nk]);
        let (dqb, dkb) = (&mut dq[t0 * dk..(t0 + n) * dk], &mut dk_out[t0 * dk..(t0 + n) * dk]);
        db.fill(0.0);
        // Through the state update: U, K^d and e^{b_{n−1}}.
        matmul_into(du, 0, dv, rows(&w.p, 0, n, n).t(), dyb, 1.0, false);
        matmul_into(du, 0, dv, rows(&w.kd, 0, n, dk), dstate, 1.0, true);
        matmul_into(dz, 0, dk, u, dstate.t(), 1.0, false);
        through_factor(dz, &w.ed[..nk], &w.kd[..nk], -1.0, dkb, db);
        let last = (n - 1) * dk;
        for i in 0..n {
            let (zi, kdi) = (&dz[i * dk..(i + 1) * dk], &w.kd[i * dk..(i + 1) * dk]);
            db[last..last + dk].iter_mut().zip(zi).zip(kdi).for_each(|((b, &d), &z)| *b += d * z);
        }
        for (c, (srow, dsrow)) in s.chunks_exact(dv).zip(ds.chunks_exact(dv)).enumerate() {
            db[last + c] += w.eb[last + c] * dot(srow, dsrow);
        }
        let dvb = &mut dv_out[t0 * dv..(t0 + n) * dv];
        if dims.delta {
            let (beta, dbeta) = (&x.beta[t0..t0 + n], &mut dbeta[t0..t0 + n]);
            substitute_backward(du, dvb, &w.a, &w.r, beta, dbeta, dv);
        } else {
            dvb.copy_from_slice(du);
        }
        let dr = rows(dvb, 0, n, dv);
        let dp = &mut a.dp[..n * n];
        matmul_into(dp, 0, n, dyb, u.t(), 1.0, false);
        for (i, row) in dp.chunks_exact_mut(n).enumerate() {
            row[i + 1..].fill(0.0);
        }
        // The queries: Q^e through the state, Q^r through P.
        matmul_into(dz, 0, dk, dyb, state.t(), 1.0, false);
        through_factor(dz, &w.eb[..nk], &w.qe[..nk], 1.0, dqb, db);
        matmul_into(dz, 0, dk, rows(dp, 0, n, n), rows(&w.ki, 0, n, dk), 1.0, false);
        through_factor(dz, &w.er[..nk], &w.qr[..nk], 1.0, dqb, db);
        // The keys: K^i through P (and A), then under the delta rule K^e and K^r.
        matmul_into(dz, 0, dk, rows(dp, 0, n, n).t(), rows(&w.qr, 0, n, dk), 1.0, false);
        if dims.delta {
            let da = &mut a.da[..n * n];
            matmul_into(da, 0, n, dr, u.t(), -1.0, false);
            for (i, row) in da.chunks_exact_mut(n).enumerate() {
                row[i..].fill(0.0);
            }
            matmul_into(dz, 0, dk, rows(da, 0, n, n).t(), rows(&w.kr, 0, n, dk), 1.0, true);
            through_factor(dz, &w.ei[..nk], &w.ki[..nk], -1.0, dkb, db);
            matmul_into(dz, 0, dk, rows(da, 0, n, n), rows(&w.ki, 0, n, dk), 1.0, false);
            through_factor(dz, &w.er[..nk], &w.kr[..nk], 1.0, dkb, db);
            matmul_into(dz, 0, dk, dr, state.t(), -1.0, false);
            through_factor(dz, &w.eb[..nk], &w.ke[..nk], 1.0, dkb, db);
        } else {
            through_factor(dz, &w.ei[..nk], &w.ki[..nk], -1.0, dkb, db);
        }
        // ∂L/∂S at the block's start.
        for (row, &c) in ds.chunks_exact_mut(dv).zip(&w.eb[last..last + dk]) {
            row.iter_mut().for_each(|d| *d *= c);
        }
        matmul_into(ds, 0, dv, rows(&w.qe, 0, n, dk).t(), dyb, 1.0, true);
        if dims.delta {
            matmul_into(ds, 0, dv, rows(&w.ke, 0, n, dk).t(), dr, -1.0, true);
        }
        let dgb = &mut dg[t0 * dk..(t0 + n) * dk];
        dgb[last..].copy_from_slice(&db[last..]);
        for i in (0..n - 1).rev() {
            let (here, after) = dgb.split_at_mut((i + 1) * dk);
            let acc = &mut here[i * dk..];
            acc.iter_mut()
                .zip(&after[..dk])
                .zip(&db[i * dk..])
                .for_each(|((o, &a), &d)| *o = a + d);
        }
    }
}
