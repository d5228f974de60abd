//! The MoBA kernel on projected heads (the gate, the top-k block choice, the mask it makes and
//! softmax under it) and the module: its full-sequence forward and KV-cache decoding.

use crate::block_select::{
    block_pool, host_values, keys_of_blocks, mask_of, top_blocks, top_k_candidates,
};
use crate::fused::simd::dot;
use crate::heads::{HeadProjection, KvCache, diagnostics, masked_softmax};
use crate::mixer::{MixContext, MixOutput, SequenceMixer};
use burn::module::Module;
use burn::nn::RotaryEncoding;
use burn::tensor::{Bool, Tensor};

/// The past blocks each query reads besides its own: `true` where query `i` (absolute position
/// `q_offset + i`) chooses key block `j` (keys `j·block .. (j + 1)·block`). Causal: the `topk`
/// highest `q_i·mean(k_l, l in block j)` over `j < ⌊(q_offset + i)/block⌋`, ties to the lower
/// `j`, all of them when there are fewer; bidirectional: the same over every block but the own.
/// The gate is computed on detached inputs: the choice carries no gradient.
///
/// # Shapes
/// - `q`: `[batch, heads, seq_q, d]`, `k`: `[batch, heads, seq_k, d]`
/// - returns `[batch, heads, seq_q, ⌈seq_k/block⌉]`
pub fn selected_blocks(
    q: Tensor<4>,
    k: Tensor<4>,
    block: usize,
    topk: usize,
    causal: bool,
    q_offset: usize,
) -> Tensor<4, Bool> {
    let [b, h, seq_q, _] = q.dims();
    let seq_k = k.dims()[2];
    let n_blocks = seq_k.div_ceil(block);
    let device = q.device();
    let shape = [b, h, seq_q, n_blocks];
    let candidates = mask_of(
        shape,
        |i, j| {
            let own = (q_offset + i) / block;
            if causal { j < own } else { j != own }
        },
        &device,
    );
    if topk >= n_blocks {
        return candidates;
    }
    let pool = block_pool(n_blocks, seq_k, block, &device)
        .unsqueeze::<4>()
        .expand([b, h, n_blocks, seq_k]);
    let means = pool.matmul(k.detach()); // [b, h, n_blocks, d]
    let gate = q.detach().matmul(means.swap_dims(2, 3));
    top_k_candidates(gate, candidates, topk)
}

/// `true` where query `i` (absolute position `q_offset + i`) must not see key `l`: keys outside
/// its own block and the blocks it chose (`selected`, from [`selected_blocks`]), and, causal,
/// its own block's future.
///
/// # Shapes
/// - `selected`: `[batch, heads, seq_q, n_blocks]` -> `[batch, heads, seq_q, seq_k]`
pub fn moba_mask(
    selected: Tensor<4, Bool>,
    seq_k: usize,
    block: usize,
    causal: bool,
    q_offset: usize,
) -> Tensor<4, Bool> {
    let [b, h, seq_q, _] = selected.dims();
    let device = selected.device();
    let chosen = keys_of_blocks(selected, seq_k, block);
    let own = mask_of(
        [b, h, seq_q, seq_k],
        |i, l| {
            let p = q_offset + i;
            l / block == p / block && (!causal || l <= p)
        },
        &device,
    );
    chosen.bool_or(own).bool_not()
}

/// MoBA on already-projected heads: softmax of `q·k/√d` over the keys of each query's own block
/// (causally masked) and of the blocks [`selected_blocks`] chooses. Queries sit at absolute
/// positions `q_offset..`, keys at `0..seq_k`. Returns the output and the weights (zero off the
/// selected keys).
///
/// # Shapes
/// - `q`: `[batch, heads, seq_q, d]`, `k`: `[batch, heads, seq_k, d]`, `v`: `[batch, heads, seq_k, d_v]`
/// - returns `[batch, heads, seq_q, d_v]` and `[batch, heads, seq_q, seq_k]`
pub fn moba_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    block: usize,
    topk: usize,
    causal: bool,
    q_offset: usize,
) -> (Tensor<4>, Tensor<4>) {
    let (y, weights, _) = attend(q, k, v, block, topk, causal, q_offset);
    (y, weights)
}

/// [`moba_attention`], also returning the mask it used.
fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    block: usize,
    topk: usize,
    causal: bool,
    q_offset: usize,
) -> (Tensor<4>, Tensor<4>, Tensor<4, Bool>) {
    let [_, _, _, d] = q.dims();
    let seq_k = k.dims()[2];
    let selected = selected_blocks(q.clone(), k.clone(), block, topk, causal, q_offset);
    let hidden = moba_mask(selected, seq_k, block, causal, q_offset);
    let scores = q.matmul(k.swap_dims(2, 3)) / (d as f32).sqrt();
    let weights = masked_softmax(scores.mask_fill(hidden.clone(), f32::NEG_INFINITY), None);
    (weights.clone().matmul(v), weights, hidden)
}

/// Each query's key spans for the span kernel, its own block's first (up to itself when
/// causal), then its chosen blocks: the gate of [`selected_blocks`] computed on the host, per
/// (batch, head) in parallel: block means, `q·mean(K_j)` over the candidate blocks, the `slots`
/// highest (ties to the lower block). `q`, `k`: `[bh, t, d]` row-major.
fn gate_spans(
    q: &[f32],
    k: &[f32],
    [bh, t, d]: [usize; 3],
    block: usize,
    topk: usize,
    causal: bool,
) -> (Vec<u32>, usize) {
    use rayon::prelude::*;
    let n_blocks = t.div_ceil(block);
    let slots = topk.min(n_blocks.saturating_sub(1));
    let width = (slots + 1) * 2;
    let mut spans = vec![0u32; bh * t * width];
    let span_of = |j: usize| [(j * block) as u32, ((j + 1) * block).min(t) as u32];
    spans.par_chunks_mut(t * width).enumerate().for_each(|(p, spans)| {
        let (q, k) = (&q[p * t * d..(p + 1) * t * d], &k[p * t * d..(p + 1) * t * d]);
        let mut means = vec![0.0f32; n_blocks * d];
        for (j, mean) in means.chunks_exact_mut(d).enumerate() {
            let keys = &k[j * block * d..((j + 1) * block).min(t) * d];
            for row in keys.chunks_exact(d) {
                mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x);
            }
            let size = (keys.len() / d) as f32;
            mean.iter_mut().for_each(|m| *m /= size);
        }
        let mut scored: Vec<(f32, usize)> = Vec::with_capacity(n_blocks);
        for (i, row) in spans.chunks_exact_mut(width).enumerate() {
            let own = i / block;
            let [start, end] = span_of(own);
            row[..2].copy_from_slice(&[start, if causal { i as u32 + 1 } else { end }]);
            if slots == 0 {
                continue;
            }
            let qi = &q[i * d..(i + 1) * d];
            scored.clear();
            let candidates = (0..n_blocks).filter(|&j| if causal { j < own } else { j != own });
            scored.extend(candidates.map(|j| (dot(qi, &means[j * d..(j + 1) * d]), j)));
            for (slot, j) in top_blocks(&mut scored, slots).into_iter().enumerate() {
                row[2 + 2 * slot..4 + 2 * slot].copy_from_slice(&span_of(j));
            }
        }
    });
    (spans, slots + 1)
}

/// [`moba_attention`]'s output from position 0 by the fused span kernel: each query's own block
/// (up to itself when causal) and chosen blocks as key spans, `O(T·(topk + 1)·block)` instead of
/// `O(T²)`, the gate computed on the host ([`gate_spans`]). Off flex, the dense form.
///
/// # Shapes
/// - `q`, `k`: `[batch, heads, seq, d]`, `v`: `[batch, heads, seq, d_v]` -> `[batch, heads, seq, d_v]`
pub fn moba_attention_blocks(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    block: usize,
    topk: usize,
    causal: bool,
) -> Tensor<4> {
    if !crate::fused::runs_fused(&q) {
        return moba_attention(q, k, v, block, topk, causal, 0).0;
    }
    let [b, h, t, d] = q.dims();
    let (spans, n_spans) =
        gate_spans(&host_values(&q), &host_values(&k), [b * h, t, d], block, topk, causal);
    match crate::fused::span_attention([q, k, v], spans, n_spans) {
        Ok(y) => y,
        Err(x) => {
            let [q, k, v] = *x;
            moba_attention(q, k, v, block, topk, causal, 0).0
        }
    }
}

/// Multi-head MoBA: softmax's projections, a block-sparse mask chosen per query.
#[derive(Module, Debug)]
pub struct MobaAttention {
    pub heads: HeadProjection,
    #[module(skip)]
    block: usize,
    #[module(skip)]
    topk: usize,
}

impl MobaAttention {
    pub fn new(heads: HeadProjection, block: usize, topk: usize) -> Self {
        Self { heads, block, topk }
    }

    pub fn block(&self) -> usize {
        self.block
    }

    pub fn topk(&self) -> usize {
        self.topk
    }

    /// The past blocks each query of `x` chooses ([`selected_blocks`] of the layer's rotated
    /// queries and keys), for monitoring which blocks the gate routes to.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, ⌈seq/block⌉]`
    pub fn selection(&self, x: Tensor<3>, ctx: MixContext<'_>) -> Tensor<4, Bool> {
        let (q, k, _) = self.heads.split_rotated(x, ctx.rope, 0);
        selected_blocks(q, k, self.block, self.topk, ctx.causal, 0)
    }
}

impl SequenceMixer for MobaAttention {
    type State = KvCache;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let (q, k, v) = self.heads.split_rotated(x, ctx.rope, 0);
        if !ctx.diagnostics {
            let y = moba_attention_blocks(q, k, v, self.block, self.topk, ctx.causal);
            return MixOutput { output: self.heads.merge(y), diagnostics: None };
        }
        let (y, weights, hidden) = attend(q, k, v, self.block, self.topk, ctx.causal, 0);
        // The keys each row reads, averaged over batch and heads (exact when causal, where
        // every row of a position reads the same number).
        let diagnostics = ctx.diagnostics.then(|| {
            let [_, _, t, _] = weights.dims();
            let keys = hidden.bool_not().float().sum_dim(3).mean_dim(0).mean_dim(1);
            diagnostics(weights, keys.reshape([t, 1]))
        });
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> KvCache {
        KvCache::default()
    }

    fn step(&self, x: Tensor<3>, state: &mut KvCache, rope: Option<&RotaryEncoding>) -> Tensor<3> {
        let (block, topk) = (self.block, self.topk);
        state.step(&self.heads, x, rope, |q, keys, values, offset| {
            moba_attention(q, keys, values, block, topk, true, offset).0
        })
    }
}
