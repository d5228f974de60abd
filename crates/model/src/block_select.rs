//! What the block-sparse families (`moba`, `nsa`) share: masks from a rule over (row, column),
//! the pooling matrix that averages keys block by block, the top-k choice among candidate blocks
//! with ties to the lower index (as tensors, and on the host for the span kernels' gates), and a
//! choice of blocks widened to their keys.
//!
//! Keys are cut into blocks of `block` positions: block `j` holds keys `j·block .. (j + 1)·block`
//! (the last one shorter when `block` does not divide the length).

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// A `[1, 1, rows, cols]` mask, `true` where `f(row, col)`, expanded to `[b, h, rows, cols]`.
pub fn mask_of(
    [b, h, rows, cols]: [usize; 4],
    f: impl Fn(usize, usize) -> bool,
    device: &Device,
) -> Tensor<4, Bool> {
    let f = &f;
    let flags: Vec<f32> =
        (0..rows).flat_map(|r| (0..cols).map(move |c| if f(r, c) { 1.0 } else { 0.0 })).collect();
    Tensor::<1>::from_floats(flags.as_slice(), device)
        .reshape([1, 1, rows, cols])
        .greater_elem(0.5)
        .expand([b, h, rows, cols])
}

/// `[n_blocks, seq_k]`: `1/|block j|` on block `j`'s keys and 0 elsewhere, so `pool · k` are the
/// first `n_blocks` block means (a short last block averaged over the keys it has).
pub fn block_pool(n_blocks: usize, seq_k: usize, block: usize, device: &Device) -> Tensor<2> {
    let pool: Vec<f32> = (0..n_blocks)
        .flat_map(|j| {
            let size = block.min(seq_k - j * block) as f32;
            (0..seq_k).map(move |l| if l / block == j { size.recip() } else { 0.0 })
        })
        .collect();
    Tensor::<1>::from_floats(pool.as_slice(), device).reshape([n_blocks, seq_k])
}

/// The `k` highest-scoring candidates of each row: `true` where column `j` is a candidate and
/// fewer than `k` candidates beat it (a higher score, or the same score and a lower index). A
/// row with at most `k` candidates keeps them all. `scores` must be finite on the candidates.
///
/// # Shapes
/// - `scores`: `[batch, heads, rows, n]`, `candidates`: the same -> the same
pub fn top_k_candidates(
    scores: Tensor<4>,
    candidates: Tensor<4, Bool>,
    k: usize,
) -> Tensor<4, Bool> {
    let shape = scores.dims();
    if k >= shape[3] {
        return candidates;
    }
    if k == 0 {
        return mask_of(shape, |_, _| false, &scores.device());
    }
    let scores = scores.mask_fill(candidates.clone().bool_not(), f32::NEG_INFINITY);
    // The k-th highest score; everything above it is chosen, and the ties at it fill the places
    // left, lowest column first. With fewer candidates than k, the k-th is −∞ and every
    // candidate is above it (the −∞ ties are not candidates).
    let kth = scores.clone().topk(k, 3).narrow(3, k - 1, 1).expand(shape);
    let above = scores.clone().greater(kth.clone());
    let tied = scores.equal(kth);
    let free = (above.clone().float().sum_dim(3).neg() + k as f32).expand(shape);
    let tie_rank = tied.clone().float().cumsum(3); // 1 for the lowest tied column, 2, ...
    let first_ties = tied.bool_and(tie_rank.lower_equal(free));
    above.bool_or(first_ties).bool_and(candidates)
}

/// A choice of blocks widened to their keys: `true` at key `l` where block `⌊l/block⌋` is chosen.
///
/// # Shapes
/// - `chosen`: `[batch, heads, rows, ⌈seq_k/block⌉]` -> `[batch, heads, rows, seq_k]`
pub fn keys_of_blocks(chosen: Tensor<4, Bool>, seq_k: usize, block: usize) -> Tensor<4, Bool> {
    let device = chosen.device();
    let block_of: Vec<i64> = (0..seq_k).map(|l| (l / block) as i64).collect();
    let block_of = Tensor::<1, Int>::from_data(TensorData::new(block_of, [seq_k]), &device);
    chosen.float().select(3, block_of).greater_elem(0.5)
}

/// The `keep` best of `scored` (`(score, block)` pairs): the highest score first, the lower block
/// among equals, as [`top_k_candidates`] chooses; returned in ascending block order. `scored` is
/// reordered.
pub fn top_blocks(scored: &mut [(f32, usize)], keep: usize) -> Vec<usize> {
    let keep = keep.min(scored.len());
    if keep < scored.len() {
        scored.select_nth_unstable_by(keep, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    let mut chosen: Vec<usize> = scored[..keep].iter().map(|&(_, j)| j).collect();
    chosen.sort_unstable();
    chosen
}

/// A tensor's values, row-major, without gradient: what a gate computed on the host reads.
pub fn host_values(x: &Tensor<4>) -> Vec<f32> {
    x.clone().detach().into_data().convert::<f32>().try_to_vec().expect("converted to f32")
}
