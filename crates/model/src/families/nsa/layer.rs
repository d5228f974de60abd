//! The NSA kernel on projected heads (block compression, the importance of each block, the
//! selection it makes, the three masked softmaxes and their gated sum) and the module: its
//! full-sequence forward and KV-cache decoding.

use crate::block_select::{
    block_pool, host_values, keys_of_blocks, mask_of, top_blocks, top_k_candidates,
};
use crate::fused;
use crate::fused::simd::dot;
use crate::heads::{HeadProjection, KvCache, masked_softmax, sequence_diagnostics};
use crate::mixer::{MixContext, MixOutput, SequenceMixer};
use burn::module::Module;
use burn::nn::{Linear, RotaryEncoding};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Bool, Tensor};

/// NSA's block geometry: `block` positions per compression and selection block, `topk` blocks
/// selected (the own one among them), a window of `window` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsaPattern {
    pub block: usize,
    pub topk: usize,
    pub window: usize,
}

/// The three branches of NSA before their gates, and what chose the selected one.
#[derive(Clone, Debug)]
pub struct NsaBranches {
    /// `[batch, heads, seq_q, d_v]`: softmax over the complete blocks' mean keys, of their mean
    /// values (0 for a query with no complete block).
    pub compressed: Tensor<4>,
    /// `[batch, heads, seq_q, d_v]`: softmax over the selected blocks' keys (causal).
    pub selected: Tensor<4>,
    /// `[batch, heads, seq_q, d_v]`: softmax over the last `window` keys.
    pub window: Tensor<4>,
    /// `[batch, heads, seq_q, ⌈seq_k/block⌉]`: the blocks each query's selected branch reads,
    /// its own among them (shared by the query heads of a key/value head).
    pub selection: Tensor<4, Bool>,
    /// `[batch, heads, seq_q, seq_k]` each: the branches' weights on the keys (the compressed
    /// branch's spread over each block's keys by the mean), in the order above.
    pub weights: [Tensor<4>; 3],
}

/// NSA's compressed branch and the selection its probabilities make: the compressed output,
/// its probabilities over the complete blocks with the pooling matrix that made their means
/// (`None` when no block is complete yet), and the blocks each query's selected branch reads,
/// its own among them.
fn compress_and_select(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    pattern: NsaPattern,
    group: usize,
    q_offset: usize,
) -> (Tensor<4>, Option<(Tensor<4>, Tensor<4>)>, Tensor<4, Bool>) {
    let NsaPattern { block, topk, .. } = pattern;
    let [b, h, seq_q, d] = q.dims();
    let [_, _, seq_k, dv] = v.dims();
    let device = q.device();
    let scale = (d as f32).sqrt().recip();
    let n_blocks = seq_k.div_ceil(block);
    let complete = seq_k / block;
    let at = |i: usize| q_offset + i;

    // Compressed: a query sees block j once it is complete, (j + 1)·block ≤ t + 1.
    let (compressed, cmp_probs) = if complete == 0 {
        (Tensor::<4>::zeros([b, h, seq_q, dv], &device), None)
    } else {
        let pool = block_pool(complete, seq_k, block, &device)
            .unsqueeze::<4>()
            .expand([b, h, complete, seq_k]);
        let (k_cmp, v_cmp) = (pool.clone().matmul(k), pool.clone().matmul(v));
        let unseen = mask_of([b, h, seq_q, complete], |i, j| (j + 1) * block > at(i) + 1, &device);
        let scores = q.matmul(k_cmp.swap_dims(2, 3)) * scale;
        // A row with no complete block is all −∞; masked_softmax makes it all zero.
        let probs = masked_softmax(scores.mask_fill(unseen, f32::NEG_INFINITY), None);
        (probs.clone().matmul(v_cmp), Some((probs, pool)))
    };

    // Importance: the compressed probabilities, summed over a key/value head's query heads.
    let own = mask_of([b, h, seq_q, n_blocks], |i, j| j == at(i) / block, &device);
    let selection = match &cmp_probs {
        Some((probs, _)) => {
            let kv = h / group;
            let summed = probs
                .clone()
                .detach()
                .reshape([b, kv, group, seq_q, complete])
                .sum_dim(2)
                .expand([b, kv, group, seq_q, complete])
                .reshape([b, h, seq_q, complete]);
            // Only the own block can be incomplete, and it is forced: its importance is moot.
            let importance = if n_blocks > complete {
                let pad = Tensor::<4>::zeros([b, h, seq_q, n_blocks - complete], &device);
                Tensor::cat(vec![summed, pad], 3)
            } else {
                summed
            };
            let past = mask_of([b, h, seq_q, n_blocks], |i, j| j < at(i) / block, &device);
            top_k_candidates(importance, past, topk - 1).bool_or(own)
        }
        None => own,
    };
    (compressed, cmp_probs, selection)
}

/// NSA's three branches on already-projected heads (keys and values repeated to every query
/// head, `group` query heads per key/value head). Queries sit at absolute positions
/// `q_offset..`, keys at `0..seq_k` (`seq_k ≥ q_offset + seq_q`); causal.
///
/// # Shapes
/// - `q`: `[batch, heads, seq_q, d]`, `k`: `[batch, heads, seq_k, d]`, `v`: `[batch, heads, seq_k, d_v]`
pub fn nsa_branches(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    pattern: NsaPattern,
    group: usize,
    q_offset: usize,
) -> NsaBranches {
    let NsaPattern { block, window, .. } = pattern;
    let [b, h, seq_q, d] = q.dims();
    let seq_k = v.dims()[2];
    let device = q.device();
    let scale = (d as f32).sqrt().recip();
    let at = |i: usize| q_offset + i;
    let (compressed, cmp_probs, selection) =
        compress_and_select(q.clone(), k.clone(), v.clone(), pattern, group, q_offset);
    let cmp_weights = match cmp_probs {
        Some((probs, pool)) => probs.matmul(pool),
        None => Tensor::<4>::zeros([b, h, seq_q, seq_k], &device),
    };

    let scores = q.matmul(k.swap_dims(2, 3)) * scale;
    let future = mask_of([b, h, seq_q, seq_k], |i, l| l > at(i), &device);
    let unselected = keys_of_blocks(selection.clone(), seq_k, block).bool_not().bool_or(future);
    let slc_weights = masked_softmax(scores.clone().mask_fill(unselected, f32::NEG_INFINITY), None);
    let outside = mask_of([b, h, seq_q, seq_k], |i, l| l > at(i) || l + window <= at(i), &device);
    let win_weights = masked_softmax(scores.mask_fill(outside, f32::NEG_INFINITY), None);
    NsaBranches {
        compressed,
        selected: slc_weights.clone().matmul(v.clone()),
        window: win_weights.clone().matmul(v),
        selection,
        weights: [cmp_weights, slc_weights, win_weights],
    }
}

/// The selected branch's blocks from the compressed probabilities, on the host: for each query,
/// `p_j = softmax_j(scale·q·mean(K_j))` over its complete blocks, summed over the query heads
/// of a key/value head, the `topk − 1` highest past blocks (ties to the lower block) and its own.
/// Returns each query's `topk` spans, the own block cut at the query. `q`, `k_cmp`: `[bh, t, d]`
/// and `[bh, complete, d]` row-major, heads in groups of `group` sharing a key/value head.
fn selected_spans(
    q: &[f32],
    k_cmp: &[f32],
    [bh, t, d, complete]: [usize; 4],
    pattern: NsaPattern,
    group: usize,
) -> Vec<u32> {
    use rayon::prelude::*;
    let NsaPattern { block, topk, .. } = pattern;
    let scale = (d as f32).sqrt().recip();
    let mut spans = vec![0u32; bh * t * topk * 2];
    // One key/value head's queries at a time: their heads' probabilities are summed.
    spans.par_chunks_mut(group * t * topk * 2).enumerate().for_each(|(kv, spans)| {
        let mut importance = vec![0.0f32; complete];
        let mut scores = vec![0.0f32; complete];
        let mut scored: Vec<(f32, usize)> = Vec::with_capacity(complete);
        for i in 0..t {
            let own = i / block;
            let visible = ((i + 1) / block).min(complete);
            importance.fill(0.0);
            for g in 0..group {
                let p = kv * group + g;
                let qi = &q[(p * t + i) * d..(p * t + i + 1) * d];
                let keys = &k_cmp[p * complete * d..(p + 1) * complete * d];
                let s = &mut scores[..visible];
                for (j, x) in s.iter_mut().enumerate() {
                    *x = scale * dot(qi, &keys[j * d..(j + 1) * d]);
                }
                let m = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                s.iter_mut().for_each(|x| *x = (*x - m).exp());
                let z: f32 = s.iter().sum();
                importance.iter_mut().zip(s.iter()).for_each(|(w, &x)| *w += x / z);
            }
            scored.clear();
            scored.extend((0..own).map(|j| (importance[j], j)));
            // The past blocks chosen all lie below the own one, so it stays last in order.
            let mut chosen = top_blocks(&mut scored, topk - 1);
            chosen.push(own);
            for g in 0..group {
                let row = &mut spans[(g * t + i) * topk * 2..(g * t + i + 1) * topk * 2];
                for (slot, &j) in chosen.iter().enumerate() {
                    let end = if j == own { i + 1 } else { ((j + 1) * block).min(t) };
                    row[2 * slot..2 * slot + 2].copy_from_slice(&[(j * block) as u32, end as u32]);
                }
            }
        }
    });
    spans
}

/// [`nsa_attention`]'s output from position 0 with all three branches on the fused span kernel:
/// the compressed branch over the block means (a query reads its complete blocks), the selected
/// branch over its `topk` blocks (its own up to itself), the window over its last `window` keys;
/// the selection from the compressed probabilities on the host ([`selected_spans`]). Time
/// `O(T·(T/block + topk·block + window))`, memory `O(T)`. Off flex, the dense form.
///
/// # Shapes
/// - as [`nsa_attention`] with `q_offset = 0` -> `[batch, heads, seq, d_v]`
pub fn nsa_attention_spans(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    gates: Tensor<4>,
    pattern: NsaPattern,
    group: usize,
) -> Tensor<4> {
    if !fused::runs_fused(&q) {
        return nsa_attention(q, k, v, gates, pattern, group, 0).0;
    }
    let NsaPattern { block, topk, window } = pattern;
    let [b, h, t, d] = q.dims();
    let dv = v.dims()[3];
    let complete = t / block;
    let mean = |x: &Tensor<4>, w: usize| {
        x.clone().narrow(2, 0, complete * block).reshape([b, h, complete, block, w]).mean_dim(3)
    };
    // The block means by a reshape (`O(T·d)`), none before the first block is complete.
    let means = (complete > 0).then(|| {
        (mean(&k, d).reshape([b, h, complete, d]), mean(&v, dv).reshape([b, h, complete, dv]))
    });
    let k_host = means.as_ref().map_or_else(Vec::new, |(k_cmp, _)| host_values(k_cmp));
    let selected =
        selected_spans(&host_values(&q), &k_host, [b * h, t, d, complete], pattern, group);
    // Per query: the complete blocks' means it sees, and its last `window` keys.
    let positions = (0..b * h * t).map(|r| r % t);
    let compressed_spans: Vec<u32> =
        positions.clone().flat_map(|i| [0, ((i + 1) / block).min(complete) as u32]).collect();
    let windowed: Vec<u32> =
        positions.flat_map(|i| [(i + 1).saturating_sub(window) as u32, i as u32 + 1]).collect();
    let branch =
        |x: [Tensor<4>; 3], spans: Vec<u32>, n: usize| fused::span_attention(x, spans, n).ok();
    let compressed = match means {
        Some((k_cmp, v_cmp)) => branch([q.clone(), k_cmp, v_cmp], compressed_spans, 1),
        None => Some(Tensor::<4>::zeros([b, h, t, dv], &q.device())),
    };
    let slc = branch([q.clone(), k.clone(), v.clone()], selected, topk);
    let win = branch([q.clone(), k.clone(), v.clone()], windowed, 1);
    match (compressed, slc, win) {
        (Some(cmp), Some(slc), Some(win)) => {
            let g = |branch: usize| gates.clone().narrow(3, branch, 1);
            cmp * g(0) + slc * g(1) + win * g(2)
        }
        _ => nsa_attention(q, k, v, gates, pattern, group, 0).0,
    }
}

/// NSA on already-projected heads: the gated sum of [`nsa_branches`]' three outputs. Returns
/// the output, the weights it puts on each key (the gated sum of the branches' weights, so
/// `output = weights · v`) and the selection.
///
/// # Shapes
/// - `q`, `k`, `v` as [`nsa_branches`]; `gates`: `[batch, heads, seq_q, 3]` (after the sigmoid;
///   compressed, selected, window)
/// - returns `[batch, heads, seq_q, d_v]`, `[batch, heads, seq_q, seq_k]` and
///   `[batch, heads, seq_q, ⌈seq_k/block⌉]`
pub fn nsa_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    gates: Tensor<4>,
    pattern: NsaPattern,
    group: usize,
    q_offset: usize,
) -> (Tensor<4>, Tensor<4>, Tensor<4, Bool>) {
    let branches = nsa_branches(q, k, v, pattern, group, q_offset);
    let g = |branch: usize| gates.clone().narrow(3, branch, 1);
    let y = branches.compressed * g(0) + branches.selected * g(1) + branches.window * g(2);
    let [w_cmp, w_slc, w_win] = branches.weights;
    let weights = w_cmp * g(0) + w_slc * g(1) + w_win * g(2);
    (y, weights, branches.selection)
}

/// Multi-head NSA: softmax's projections, and `W_g` gating the three branches per head.
#[derive(Module, Debug)]
pub struct NsaAttention {
    pub heads: HeadProjection,
    /// `W_g`, `weight: [d_model, 3·heads]`, no bias; column `3·h + branch` (compressed,
    /// selected, window).
    pub gate: Linear,
    #[module(skip)]
    block: usize,
    #[module(skip)]
    topk: usize,
    #[module(skip)]
    window: usize,
}

impl NsaAttention {
    pub fn new(heads: HeadProjection, gate: Linear, pattern: NsaPattern) -> Self {
        let NsaPattern { block, topk, window } = pattern;
        Self { heads, gate, block, topk, window }
    }

    pub fn pattern(&self) -> NsaPattern {
        NsaPattern { block: self.block, topk: self.topk, window: self.window }
    }

    /// Query heads per key/value head, which share their selection.
    fn group(&self) -> usize {
        self.heads.n_heads() / self.heads.n_kv_heads()
    }

    /// The gates `σ(W_g x)` of each head's three branches (compressed, selected, window).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, 3]`
    pub fn gates(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        let h = self.heads.n_heads();
        sigmoid(fused::affine(&self.gate, x)).reshape([b, t, h, 3]).swap_dims(1, 2)
    }

    /// The blocks each query of `x` reads in the selected branch, its own among them, for
    /// monitoring where the importance routes.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, ⌈seq/block⌉]`
    pub fn selection(&self, x: Tensor<3>, ctx: MixContext<'_>) -> Tensor<4, Bool> {
        let (q, k, v) = self.heads.split_rotated(x, ctx.rope, 0);
        nsa_branches(q, k, v, self.pattern(), self.group(), 0).selection
    }
}

impl SequenceMixer for NsaAttention {
    type State = KvCache;

    /// # Panics
    /// Under a bidirectional context: NSA is causal, and the model refuses the combination
    /// before building (the family's `validate`).
    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        assert!(ctx.causal, "nsa has no bidirectional form");
        let gates = self.gates(x.clone());
        let (q, k, v) = self.heads.split_rotated(x, ctx.rope, 0);
        if !ctx.diagnostics {
            let y = nsa_attention_spans(q, k, v, gates, self.pattern(), self.group());
            return MixOutput { output: self.heads.merge(y), diagnostics: None };
        }
        let (y, weights, _) = nsa_attention(q, k, v, gates, self.pattern(), self.group(), 0);
        let diagnostics = ctx.diagnostics.then(|| sequence_diagnostics(weights, true));
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> KvCache {
        KvCache::default()
    }

    fn step(&self, x: Tensor<3>, state: &mut KvCache, rope: Option<&RotaryEncoding>) -> Tensor<3> {
        let gates = self.gates(x.clone());
        let (pattern, group) = (self.pattern(), self.group());
        state.step(&self.heads, x, rope, |q, keys, values, offset| {
            nsa_attention(q, keys, values, gates, pattern, group, offset).0
        })
    }
}
