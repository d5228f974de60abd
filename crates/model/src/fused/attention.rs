//! Softmax attention over packed `[q | k | v]` rows, forward and backward in one pass per batch
//! element, parallel over the batch.
//!
//! Layout: `qkv` is `[batch, seq, (heads + 2·kv_heads)·d]` (the output of the fused q/k/v
//! projection: `heads` queries, then `kv_heads` keys and values, head-major inside each part), the
//! output `y` is `[batch, seq, heads·d]` (heads merged, ready for the output projection). With
//! grouped-query attention (`kv_heads < heads`) query head `h` reads key/value head
//! `h / (heads / kv_heads)` where it sits, never copied; its gradient sums over the group. The probabilities `P` (`[batch, heads, seq, seq]`, zero above the diagonal
//! when causal) are kept for the backward pass, as the composed formula keeps them too.
//!
//! Forward, per head: `s_ij = c·q_i·k_j` over the keys `j` query `i` sees, `P_ij = softmax_j(s_ij)`,
//! `y_i = Σ_j P_ij v_j`. Backward, with `dP_ij = dy_i·v_j` and `δ_i = Σ_j P_ij dP_ij`:
//! `dS_ij = P_ij (dP_ij − δ_i)`, `dq_i = c Σ_j dS_ij k_j`, `dk_j = c Σ_i dS_ij q_i`, `dv_j = Σ_i P_ij dy_i`.
//!
//! The six products per head are strided `gemm` calls straight on the packed rows (no split,
//! no transposed copies); the softmax and its backward are row loops that vectorize.

use super::matmul::{View, matmul_into};
use super::simd;

/// Shapes of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads: `heads`, or a divisor of it (grouped-query attention).
    pub kv_heads: usize,
    pub d: usize,
    /// The multiplier `c` of `q·k`.
    pub scale: f32,
    pub causal: bool,
    /// `W`: query `i` sees only keys `j` with `i − W < j` (and `j < i + W` when bidirectional).
    /// Only the blocked kernel (`fused::tiled_attention`) takes one.
    pub window: Option<usize>,
}

impl Dims {
    pub(super) fn width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.d
    }
    /// Columns of query head `h`'s key and value in a packed row.
    pub(super) fn key_value_at(&self, h: usize) -> (usize, usize) {
        let kv = h / (self.heads / self.kv_heads);
        ((self.heads + kv) * self.d, (self.heads + self.kv_heads + kv) * self.d)
    }
    /// Keys query `i` attends over (without a window).
    fn keys(&self, i: usize) -> usize {
        if self.causal { i + 1 } else { self.seq }
    }
    /// The keys `lo..hi` query `i` sees, window included.
    pub(super) fn visible(&self, i: usize) -> (usize, usize) {
        let hi = if self.causal { i + 1 } else { self.seq };
        match self.window {
            Some(w) => ((i + 1).saturating_sub(w), if self.causal { hi } else { hi.min(i + w) }),
            None => (0, hi),
        }
    }
}

/// One head's `rows × d` block of the packed rows, starting at column `at`.
pub(super) fn head<'a>(rows: &'a [f32], at: usize, dims: &Dims) -> View<'a> {
    View {
        data: rows,
        offset: at,
        rows: dims.seq,
        cols: dims.d,
        row_stride: dims.width() as isize,
        col_stride: 1,
    }
}

/// Head `h`'s `seq × d` block of rows with the heads merged (`[seq, heads·d]`: `y`, `dy`).
pub(super) fn merged_head<'a>(rows: &'a [f32], h: usize, dims: &Dims) -> View<'a> {
    View {
        data: rows,
        offset: h * dims.d,
        rows: dims.seq,
        cols: dims.d,
        row_stride: (dims.heads * dims.d) as isize,
        col_stride: 1,
    }
}

/// A row-major `seq × seq` block.
fn square(data: &[f32], seq: usize) -> View<'_> {
    View::row_major(data, seq, seq)
}

/// Forward for one batch element: `qkv` `[seq, width]`, writes `y` `[seq, heads·d]` and
/// `p` `[heads, seq, seq]`.
#[inline(always)]
fn forward_one(dims: Dims, qkv: &[f32], y: &mut [f32], p: &mut [f32]) {
    let Dims { seq, heads, d, scale, .. } = dims;
    let hd = heads * d;
    for h in 0..heads {
        let (k_at, v_at) = dims.key_value_at(h);
        let p = &mut p[h * seq * seq..(h + 1) * seq * seq];
        // Scores for every pair (the masked half is cheaper to compute than to skip in gemm).
        matmul_into(p, 0, seq, head(qkv, h * d, &dims), head(qkv, k_at, &dims).t(), scale, false);
        for (i, row) in p.chunks_exact_mut(seq).enumerate() {
            let n = dims.keys(i);
            let max = simd::max(&row[..n]);
            for s in &mut row[..n] {
                *s = simd::exp(*s - max);
            }
            let inv = 1.0 / simd::sum(&row[..n]);
            for s in &mut row[..n] {
                *s *= inv;
            }
            row[n..].fill(0.0);
        }
        matmul_into(y, h * d, hd, square(p, seq), head(qkv, v_at, &dims), 1.0, false);
    }
}

/// Backward for one batch element: from `dy` `[seq, heads·d]` and the saved `p`, writes
/// `dqkv` `[seq, width]`. `scratch` holds `seq·seq` floats.
#[inline(always)]
fn backward_one(
    dims: Dims,
    qkv: &[f32],
    p: &[f32],
    dy: &[f32],
    dqkv: &mut [f32],
    scratch: &mut [f32],
) {
    let Dims { seq, heads, d, scale, .. } = dims;
    let width = dims.width();
    // The first query head of a group writes its key/value gradient, the others add to it.
    let group = heads / dims.kv_heads;
    for h in 0..heads {
        let (k_at, v_at) = dims.key_value_at(h);
        let (q_at, shared) = (h * d, h % group != 0);
        let p = &p[h * seq * seq..(h + 1) * seq * seq];
        // dP = dy·vᵀ, then c·dS = c·P ⊙ (dP − δ) in place, δ_i = Σ_j P_ij dP_ij.
        matmul_into(
            scratch,
            0,
            seq,
            merged_head(dy, h, &dims),
            head(qkv, v_at, &dims).t(),
            1.0,
            false,
        );
        for (i, (ds, prow)) in scratch.chunks_exact_mut(seq).zip(p.chunks_exact(seq)).enumerate() {
            let n = dims.keys(i);
            let delta = simd::dot(&prow[..n], &ds[..n]);
            for (g, &pij) in ds[..n].iter_mut().zip(&prow[..n]) {
                *g = scale * pij * (*g - delta);
            }
            ds[n..].fill(0.0);
        }
        let ds = square(scratch, seq);
        matmul_into(dqkv, q_at, width, ds, head(qkv, k_at, &dims), 1.0, false);
        matmul_into(dqkv, k_at, width, ds.t(), head(qkv, q_at, &dims), 1.0, shared);
        matmul_into(dqkv, v_at, width, square(p, seq).t(), merged_head(dy, h, &dims), 1.0, shared);
    }
}

super::simd::dispatched!(
    forward_dispatch => forward_one(dims: Dims, qkv: &[f32], y: &mut [f32], p: &mut [f32])
);
super::simd::dispatched!(
    backward_dispatch => backward_one(dims: Dims, qkv: &[f32], p: &[f32], dy: &[f32], dqkv: &mut [f32], scratch: &mut [f32])
);

/// Forward over the whole batch: returns `(y, p)`.
pub fn forward(dims: Dims, qkv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let Dims { batch, seq, heads, kv_heads, d, .. } = dims;
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "{kv_heads} key/value heads for {heads} heads"
    );
    assert_eq!(qkv.len(), batch * seq * dims.width(), "qkv length");
    let (y_len, p_len) = (seq * heads * d, heads * seq * seq);
    let mut y = vec![0.0; batch * y_len];
    let mut p = vec![0.0; batch * p_len];
    let w = seq * dims.width();
    y.par_chunks_mut(y_len).zip(p.par_chunks_mut(p_len)).enumerate().for_each(|(b, (y, p))| {
        forward_dispatch(dims, &qkv[b * w..(b + 1) * w], y, p);
    });
    (y, p)
}

/// Backward over the whole batch: returns `dqkv`.
pub fn backward(dims: Dims, qkv: &[f32], p: &[f32], dy: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    let Dims { batch, seq, heads, d, .. } = dims;
    let (w, y_len, p_len) = (seq * dims.width(), seq * heads * d, heads * seq * seq);
    assert_eq!(dy.len(), batch * y_len, "dy length");
    let mut dqkv = vec![0.0; batch * w];
    dqkv.par_chunks_mut(w).enumerate().for_each(|(b, g)| {
        let mut scratch = vec![0.0; seq * seq];
        backward_dispatch(
            dims,
            &qkv[b * w..(b + 1) * w],
            &p[b * p_len..(b + 1) * p_len],
            &dy[b * y_len..(b + 1) * y_len],
            g,
            &mut scratch,
        );
    });
    dqkv
}
