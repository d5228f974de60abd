//! Softmax attention over packed `[q | k | v]` rows by blocks of queries, keeping only two
//! numbers per row (its maximum score and the reciprocal of its sum) for the backward pass (Dao et al. 2022, "FlashAttention", on a CPU's
//! terms): memory linear in the sequence, where [`super::attention`] keeps every head's
//! `seq × seq` probabilities.
//!
//! Forward, per head and block of `block` queries `i` (keys `0..end` of the block when causal,
//! all otherwise): `S = c·Q_blk·Kᵀ`, `m_i = max_j S_ij` and `r_i = 1/Σ_j e^{S_ij − m_i}` over the
//! keys query `i` sees, `P_ij = e^{S_ij − m_i}·r_i`, `Y_blk = P·V`.
//! Backward, per block: `P` recomputed from `S`, `m` and `r` (bit for bit the forward's, where a
//! log-sum-exp would differ by rounding that adds up over long sequences), `dP = dY_blk·Vᵀ`,
//! `δ_i = Σ_j P_ij dP_ij`, `dS = c·P ⊙ (dP − δ)`, `dQ_blk = dS·K`, `dK += dSᵀ·Q_blk`, `dV += Pᵀ·dY_blk`.
//!
//! A causal block multiplies only the keys up to its last query (and, with a window `W`, from
//! its first query's `W`-th key back), so this form also skips the masked products that the
//! kept-probabilities form computes and discards.
//! Layout, grouped-query heads and [`Dims`] are [`super::attention`]'s.

use super::attention::{Dims, head, merged_head};
use super::matmul::{View, matmul_into};
use super::simd;

/// Rows `start..start + rows` of a view.
fn rows(v: View<'_>, start: usize, rows: usize) -> View<'_> {
    View { offset: v.offset + start * v.row_stride as usize, rows, ..v }
}

/// The keys `lo..hi` that some query of the block `start..start + n` sees (the first query's
/// lowest, the last one's highest: both move forward with the query).
fn keys_of_block(dims: &Dims, start: usize, n: usize) -> (usize, usize) {
    (dims.visible(start).0, dims.visible(start + n - 1).1)
}

/// Softmax of `row` (the scores of keys `lo..` for query `i`) over the keys `i` sees, zero
/// elsewhere; returns its maximum and reciprocal sum.
#[inline(always)]
fn softmax_visible(dims: &Dims, i: usize, lo: usize, row: &mut [f32]) -> (f32, f32) {
    let (first, end) = dims.visible(i);
    let (first, end) = (first - lo, end - lo);
    let seen = &mut row[first..end];
    let max = simd::max(seen);
    for x in seen.iter_mut() {
        *x = simd::exp(*x - max);
    }
    let inv = 1.0 / simd::sum(seen);
    for x in seen.iter_mut() {
        *x *= inv;
    }
    row[..first].fill(0.0);
    row[end..].fill(0.0);
    (max, inv)
}

/// Forward of head `h` of one batch element: `qkv` `[seq, width]`; writes `y` `[seq, d]` and
/// `stats` `[seq, 2]` (each row's `m`, `r`). `scratch` holds `block·seq` floats.
#[inline(always)]
fn forward_head(
    dims: Dims,
    block: usize,
    qkv: &[f32],
    h: usize,
    y: &mut [f32],
    stats: &mut [f32],
    scratch: &mut [f32],
) {
    let Dims { seq, d, scale, .. } = dims;
    let (k_at, v_at) = dims.key_value_at(h);
    let (q, k, v) = (head(qkv, h * d, &dims), head(qkv, k_at, &dims), head(qkv, v_at, &dims));
    for start in (0..seq).step_by(block) {
        let n = block.min(seq - start);
        let (lo, hi) = keys_of_block(&dims, start, n);
        let keys = hi - lo;
        let s = &mut scratch[..n * keys];
        matmul_into(s, 0, keys, rows(q, start, n), rows(k, lo, keys).t(), scale, false);
        for (r, row) in s.chunks_exact_mut(keys).enumerate() {
            let (max, inv) = softmax_visible(&dims, start + r, lo, row);
            stats[2 * (start + r)] = max;
            stats[2 * (start + r) + 1] = inv;
        }
        matmul_into(y, start * d, d, View::row_major(s, n, keys), rows(v, lo, keys), 1.0, false);
    }
}

/// Backward of key/value head `g` of one batch element and the query heads it serves, from
/// `dy` (`[seq, heads·d]`) and the forward's `stats` (`[heads, seq, 2]`): writes the
/// group's query gradients `dq` `[seq, group·d]` and `dkv` `[seq, 2·d]` (key, then value).
/// `scratch` holds `2·block·seq` floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // one group's buffers, passed through
fn backward_group(
    dims: Dims,
    block: usize,
    (qkv, stats, dy): (&[f32], &[f32], &[f32]),
    g: usize,
    dq: &mut [f32],
    dkv: &mut [f32],
    scratch: &mut [f32],
) {
    let Dims { seq, heads, d, scale, .. } = dims;
    let group = heads / dims.kv_heads;

    let (p_buf, ds_buf) = scratch.split_at_mut(scratch.len() / 2);
    for h in g * group..(g + 1) * group {
        let (k_at, v_at) = dims.key_value_at(h);
        let (q, k, v) = (head(qkv, h * d, &dims), head(qkv, k_at, &dims), head(qkv, v_at, &dims));
        let dy_h = merged_head(dy, h, &dims);
        let dq_at = (h - g * group) * d;
        for start in (0..seq).step_by(block) {
            let n = block.min(seq - start);
            let (lo, hi) = keys_of_block(&dims, start, n);
            let keys = hi - lo;
            let (p, ds) = (&mut p_buf[..n * keys], &mut ds_buf[..n * keys]);
            matmul_into(p, 0, keys, rows(q, start, n), rows(k, lo, keys).t(), scale, false);
            matmul_into(ds, 0, keys, rows(dy_h, start, n), rows(v, lo, keys).t(), 1.0, false);
            let pairs = p.chunks_exact_mut(keys).zip(ds.chunks_exact_mut(keys));
            for (r, (prow, dsrow)) in pairs.enumerate() {
                let i = start + r;
                let (first, end) = dims.visible(i);
                let (first, end) = (first - lo, end - lo);
                let (max, inv) = (stats[2 * (h * seq + i)], stats[2 * (h * seq + i) + 1]);
                for pij in &mut prow[first..end] {
                    *pij = simd::exp(*pij - max) * inv;
                }
                // δ from the very P and dP it corrects, so the row of dS sums to zero as exactly
                // as the kept-probabilities kernel's.
                let delta = simd::dot(&prow[first..end], &dsrow[first..end]);
                for (g, &pij) in dsrow[first..end].iter_mut().zip(&prow[first..end]) {
                    *g = scale * pij * (*g - delta);
                }
                for row in [&mut *prow, &mut *dsrow] {
                    row[..first].fill(0.0);
                    row[end..].fill(0.0);
                }
            }
            let (p, ds) = (View::row_major(p, n, keys), View::row_major(ds, n, keys));
            let dq_width = group * d;
            matmul_into(dq, start * dq_width + dq_at, dq_width, ds, rows(k, lo, keys), 1.0, false);
            // Keys and values gather from every block and every query head of the group.
            matmul_into(dkv, lo * 2 * d, 2 * d, ds.t(), rows(q, start, n), 1.0, true);
            matmul_into(dkv, lo * 2 * d + d, 2 * d, p.t(), rows(dy_h, start, n), 1.0, true);
        }
    }
}

simd::dispatched!(
    forward_dispatch => forward_head(
        dims: Dims,
        block: usize,
        qkv: &[f32],
        h: usize,
        y: &mut [f32],
        stats: &mut [f32],
        scratch: &mut [f32]
    )
);
simd::dispatched!(
    backward_dispatch => backward_group(
        dims: Dims,
        block: usize,
        inputs: (&[f32], &[f32], &[f32]),
        g: usize,
        dq: &mut [f32],
        dkv: &mut [f32],
        scratch: &mut [f32]
    )
);

/// Forward over the whole batch in blocks of `block` queries, parallel over (batch element,
/// head): returns `(y, stats)`, `stats` as `[batch, heads, seq, 2]`.
pub fn forward(dims: Dims, block: usize, qkv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let Dims { batch, seq, heads, d, .. } = dims;
    assert!(block > 0, "a block holds at least one query");
    assert_eq!(qkv.len(), batch * seq * dims.width(), "qkv length");
    let w = seq * dims.width();
    let mut stats = vec![0.0; batch * heads * seq * 2];
    // Each task's output `[seq, d]`, interleaved into `[seq, heads·d]` rows afterwards.
    let per_head: Vec<Vec<f32>> = stats
        .par_chunks_mut(2 * seq.max(1))
        .enumerate()
        .map(|(task, stats)| {
            let (b, h) = (task / heads, task % heads);
            let (mut y, mut scratch) = (vec![0.0; seq * d], vec![0.0; block.min(seq) * seq]);
            forward_dispatch(dims, block, &qkv[b * w..(b + 1) * w], h, &mut y, stats, &mut scratch);
            y
        })
        .collect();
    let hd = heads * d;
    let mut y = vec![0.0; batch * seq * hd];
    for (task, part) in per_head.iter().enumerate() {
        let (b, h) = (task / heads, task % heads);
        for (i, row) in part.chunks_exact(d.max(1)).enumerate() {
            let at = (b * seq + i) * hd + h * d;
            y[at..at + d].copy_from_slice(row);
        }
    }
    (y, stats)
}

/// Backward over the whole batch, parallel over (batch element, key/value head): returns
/// `dqkv` from the forward's `stats` and `dy`.
pub fn backward(dims: Dims, block: usize, qkv: &[f32], stats: &[f32], dy: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    let Dims { batch, seq, heads, kv_heads, d, .. } = dims;
    let (width, y_len, s_len) = (dims.width(), seq * heads * d, 2 * heads * seq);
    let w = seq * width;
    assert_eq!(dy.len(), batch * y_len, "dy length");
    let group = heads / kv_heads;
    let parts: Vec<(Vec<f32>, Vec<f32>)> = (0..batch * kv_heads)
        .into_par_iter()
        .map(|task| {
            let (b, g) = (task / kv_heads, task % kv_heads);
            let (mut dq, mut dkv) = (vec![0.0; seq * group * d], vec![0.0; seq * 2 * d]);
            let mut scratch = vec![0.0; 2 * block.min(seq) * seq];
            let inputs = (
                &qkv[b * w..(b + 1) * w],
                &stats[b * s_len..(b + 1) * s_len],
                &dy[b * y_len..(b + 1) * y_len],
            );
            backward_dispatch(dims, block, inputs, g, &mut dq, &mut dkv, &mut scratch);
            (dq, dkv)
        })
        .collect();
    let mut dqkv = vec![0.0; batch * w];
    for (task, (dq, dkv)) in parts.iter().enumerate() {
        let (b, g) = (task / kv_heads, task % kv_heads);
        let (k_at, v_at) = dims.key_value_at(g * group);
        for i in 0..seq {
            let row = &mut dqkv[(b * seq + i) * width..(b * seq + i + 1) * width];
            let gd = group * d;
            row[g * gd..(g + 1) * gd].copy_from_slice(&dq[i * gd..(i + 1) * gd]);
            row[k_at..k_at + d].copy_from_slice(&dkv[i * 2 * d..i * 2 * d + d]);
            row[v_at..v_at + d].copy_from_slice(&dkv[i * 2 * d + d..(i + 1) * 2 * d]);
        }
    }
    dqkv
}

#[cfg(test)]
mod tests {
    use super::super::attention;
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
            })
            .collect()
    }

    /// The blocked form equals the kept-probabilities form (itself tested against the composed
    /// formula) on fresh random inputs, outputs and input gradients: blocks that divide the
    /// length and blocks that do not, one block for all, causal and not, grouped-query heads.
    #[test]
    fn tiled_attention_equals_the_kept_probabilities_form() {
        for (seed, (batch, seq, heads, kv_heads, d)) in
            [(2, 13, 2, 2, 4), (1, 9, 4, 2, 8), (3, 1, 1, 1, 3), (1, 16, 3, 1, 4)]
                .into_iter()
                .enumerate()
        {
            for causal in [true, false] {
                let dims =
                    Dims { batch, seq, heads, kv_heads, d, scale: 0.4, causal, window: None };
                let qkv = values(batch * seq * dims.width(), 10 + seed as u64);
                let dy = values(batch * seq * heads * d, 20 + seed as u64);
                let (y_ref, p) = attention::forward(dims, &qkv);
                let dqkv_ref = attention::backward(dims, &qkv, &p, &dy);
                for block in [1, 4, 5, seq] {
                    let what = format!(
                        "b{batch} t{seq} h{heads}/{kv_heads} causal={causal} block {block}"
                    );
                    let (y, stats) = forward(dims, block, &qkv);
                    for (a, b) in y.iter().zip(&y_ref) {
                        assert!((a - b).abs() < 1e-5, "{what}: output {a} vs {b}");
                    }
                    let dqkv = backward(dims, block, &qkv, &stats, &dy);
                    for (i, (a, b)) in dqkv.iter().zip(&dqkv_ref).enumerate() {
                        assert!((a - b).abs() < 1e-4, "{what}: gradient {i}: {a} vs {b}");
                    }
                }
            }
        }
    }
}
