//! The pieces of one per-channel block that the forward and backward passes share: the block
//! partition, the factors and products, the outputs and the state's advance (formulas in the
//! parent's header).

use crate::fused::chunked_delta::blocks::{block_values, rows, substitute};
use crate::fused::chunked_delta::form::BlockForward;
use crate::fused::gated_recurrence::{Dims, Sequence};
use crate::fused::matmul::matmul_into;
use crate::fused::simd::exp;

/// The widest log decay one channel may take within a block: `e^{30}` ≈ 1e13 bounds `K^i`,
/// and `e^{−30}` keeps `Q^r`, `K^r` far from f32's subnormals. KDA's gates at initialisation
/// (`−exp(A_log)·softplus(·)`, `A_log = ln U(1, 16)`) span a few units over 16 tokens, so
/// blocks are cut only where a channel forgets within a handful of tokens.
pub const SPAN: f32 = 30.0;

/// The length of the block from `t0` (at most `block` tokens, none at or past `end`): as many
/// tokens as keep every channel's `|b_i − b_0|` within [`SPAN`]. `acc` is `d_k` of scratch.
fn block_len(dims: Dims, g: &[f32], t0: usize, end: usize, block: usize, acc: &mut [f32]) -> usize {
    let dk = dims.dk;
    acc.fill(0.0);
    let mut n = 1;
    while n < block && t0 + n < end {
        let gm = &g[(t0 + n) * dk..(t0 + n + 1) * dk];
        if acc.iter().zip(gm).any(|(&a, &g)| (a + g).abs() > SPAN) {
            break;
        }
        acc.iter_mut().zip(gm).for_each(|(a, &g)| *a += g);
        n += 1;
    }
    n
}

/// The blocks `(t0, n)` of the checkpoint interval `[c0, c1)`, in order.
pub fn partition(dims: Dims, g: &[f32], c0: usize, c1: usize, block: usize) -> Vec<(usize, usize)> {
    let mut acc = vec![0.0; dims.dk];
    let mut out = Vec::new();
    let mut t0 = c0;
    while t0 < c1 {
        let n = block_len(dims, g, t0, c1, block, &mut acc);
        out.push((t0, n));
        t0 += n;
    }
    out
}

/// One block's factors and products, for blocks of at most `block` tokens (`n` below); the
/// `n × d_k` matrices are row-major.
pub struct Scratch {
    /// `b_i` (block-relative cumulative log gates), then the factors `e^B`, `e^{B − b_0}`,
    /// `e^{b_0 − B}`, `e^{b_{n−1} − B}`.
    pub(super) cum: Vec<f32>,
    pub(super) eb: Vec<f32>,
    pub(super) er: Vec<f32>,
    pub(super) ei: Vec<f32>,
    pub(super) ed: Vec<f32>,
    /// `Q^e`, `K^e`, `Q^r`, `K^r`, `K^i`, `K^d`.
    pub(super) qe: Vec<f32>,
    pub(super) ke: Vec<f32>,
    pub(super) qr: Vec<f32>,
    pub(super) kr: Vec<f32>,
    pub(super) ki: Vec<f32>,
    pub(super) kd: Vec<f32>,
    /// `P` and (delta rule) `A`, `n × n`.
    pub(super) p: Vec<f32>,
    pub(super) a: Vec<f32>,
    /// `R` and `U`, `n × d_v` (delta rule).
    pub(super) r: Vec<f32>,
    pub(super) u: Vec<f32>,
}

impl Scratch {
    pub(super) fn new(dims: Dims, block: usize) -> Self {
        let (nk, nn) = (block * dims.dk, block * block);
        let nv = if dims.delta { block * dims.dv } else { 0 };
        let m = || vec![0.0; nk];
        Self {
            cum: m(),
            eb: m(),
            er: m(),
            ei: m(),
            ed: m(),
            qe: m(),
            ke: m(),
            qr: m(),
            kr: m(),
            ki: m(),
            kd: m(),
            p: vec![0.0; nn],
            a: vec![0.0; if dims.delta { nn } else { 0 }],
            r: vec![0.0; nv],
            u: vec![0.0; nv],
        }
    }
}

/// `out = x ⊙ f` elementwise.
#[inline(always)]
fn scaled(out: &mut [f32], x: &[f32], f: &[f32]) {
    out.iter_mut().zip(x).zip(f).for_each(|((o, &x), &f)| *o = x * f);
}

/// The per-channel form (one log gate per key channel and token, the decay in the factors) for
/// the drivers.
pub struct PerChannel;

impl BlockForward for PerChannel {
    type Scratch = Scratch;

    fn scratch(dims: Dims, block: usize) -> Scratch {
        Scratch::new(dims, block)
    }

    /// Blocks cut short where a channel's log decay would pass [`SPAN`].
    fn partition(dims: Dims, g: &[f32], c0: usize, c1: usize, block: usize) -> Vec<(usize, usize)> {
        partition(dims, g, c0, c1, block)
    }

    /// The block's internals from start state `s`: factors, products, and under the delta rule `A`,
    /// `R`, `U`; with `scores` also the query-side factors and `P` (the state replay skips them).
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
        let nk = n * dk;
        let g = &x.g[t0 * dk..(t0 + n) * dk];
        w.cum[..dk].copy_from_slice(&g[..dk]);
        for i in 1..n {
            let (done, row) = w.cum.split_at_mut(i * dk);
            let prev = &done[(i - 1) * dk..];
            row[..dk].iter_mut().zip(prev).zip(&g[i * dk..]).for_each(|((b, &p), &g)| *b = p + g);
        }
        let (cum, first, last) = (&w.cum[..nk], &w.cum[..dk], &w.cum[(n - 1) * dk..nk]);
        for (i, b) in cum.chunks_exact(dk).enumerate() {
            let at = i * dk..(i + 1) * dk;
            w.eb[at.clone()].iter_mut().zip(b).for_each(|(e, &b)| *e = exp(b));
            w.er[at.clone()].iter_mut().zip(b).zip(first).for_each(|((e, &b), &f)| *e = exp(b - f));
            w.ei[at.clone()].iter_mut().zip(b).zip(first).for_each(|((e, &b), &f)| *e = exp(f - b));
            w.ed[at].iter_mut().zip(b).zip(last).for_each(|((e, &b), &l)| *e = exp(l - b));
        }
        let (q, k) = (&x.q[t0 * dk..(t0 + n) * dk], &x.k[t0 * dk..(t0 + n) * dk]);
        scaled(&mut w.ki[..nk], k, &w.ei[..nk]);
        scaled(&mut w.kd[..nk], k, &w.ed[..nk]);
        if scores {
            scaled(&mut w.qe[..nk], q, &w.eb[..nk]);
            scaled(&mut w.qr[..nk], q, &w.er[..nk]);
            let p = &mut w.p[..n * n];
            matmul_into(p, 0, n, rows(&w.qr, 0, n, dk), rows(&w.ki, 0, n, dk).t(), 1.0, false);
            for (i, row) in p.chunks_exact_mut(n).enumerate() {
                row[i + 1..].fill(0.0);
            }
        }
        if !dims.delta {
            return;
        }
        scaled(&mut w.ke[..nk], k, &w.eb[..nk]);
        scaled(&mut w.kr[..nk], k, &w.er[..nk]);
        let a = &mut w.a[..n * n];
        matmul_into(a, 0, n, rows(&w.kr, 0, n, dk), rows(&w.ki, 0, n, dk).t(), 1.0, false);
        for (i, row) in a.chunks_exact_mut(n).enumerate() {
            row[i..].fill(0.0);
        }
        // R starts as K^e S, then V − K^e S; U's rows follow by substitution.
        let (r, u) = (&mut w.r[..n * dv], &mut w.u[..n * dv]);
        matmul_into(r, 0, dv, rows(&w.ke, 0, n, dk), rows(s, 0, dk, dv), 1.0, false);
        r.iter_mut().zip(&x.v[t0 * dv..(t0 + n) * dv]).for_each(|(r, &v)| *r = v - *r);
        substitute(r, u, a, &x.beta[t0..t0 + n], dv);
    }

    /// `Y = Q^e S + P U` into `y` (`n × d_v`).
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
        matmul_into(y, 0, dv, rows(&w.qe, 0, n, dk), rows(s, 0, dk, dv), 1.0, false);
        let u = block_values(&w.u, dims, x, t0, n);
        matmul_into(y, 0, dv, rows(&w.p, 0, n, n), rows(u, 0, n, dv), 1.0, true);
    }

    /// `S ← diag(e^{b_{n−1}}) S + K^dᵀ U`.
    #[inline(always)]
    fn advance(dims: Dims, x: Sequence<'_>, t0: usize, n: usize, s: &mut [f32], w: &Scratch) {
        let (dk, dv) = (dims.dk, dims.dv);
        let carry = &w.eb[(n - 1) * dk..n * dk];
        for (row, &c) in s.chunks_exact_mut(dv).zip(carry) {
            row.iter_mut().for_each(|e| *e *= c);
        }
        let u = block_values(&w.u, dims, x, t0, n);
        matmul_into(s, 0, dv, rows(&w.kd, 0, n, dk).t(), rows(u, 0, n, dv), 1.0, true);
    }
}
