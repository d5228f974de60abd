//! Native sparse attention (NSA).
//!
//! Yuan et al. 2025, "Native Sparse Attention: Hardware-Aligned and Natively Trainable Sparse
//! Attention" (arXiv 2502.11089): each query head's output is a gated sum of three softmax
//! attentions over the same (grouped-query shared) keys and values,
//!
//! `o_t = g^cmp_t · Attn(q_t, K̃^cmp_t, Ṽ^cmp_t) + g^slc_t · Attn(q_t, K^slc_t, V^slc_t)
//!      + g^win_t · Attn(q_t, K^win_t, V^win_t)`, `g_t = σ(W_g x_t)` per head and branch,
//!
//! with `Attn(q, K, V) = softmax(q·Kᵀ/√d) V` and, for blocks of `B` positions (`b(t) = ⌊t/B⌋`):
//!
//! - **compressed**: `K̃^cmp_t` the means of the keys of every *complete* block that ends at or
//!   before `t` (block `j` when `(j + 1)·B ≤ t + 1`), `Ṽ^cmp_t` likewise; a query before the first
//!   complete block gets 0 from this branch;
//! - **selected**: the importance of block `j` for query `t` is its compressed-branch probability
//!   `p^cmp_tj`, summed over the query heads that share a key/value head (so a group selects
//!   together); query `t` reads its own block `b(t)` (causally masked) and the `K − 1` past blocks
//!   `j < b(t)` of highest importance, ties to the lower `j`, all of them when there are fewer;
//! - **window**: the last `W` keys, `t − W < l ≤ t`.
//!
//! **Where attnlab differs from the paper, and why.** The paper compresses each block with a
//! learned MLP over its keys plus intra-block positions, with overlapping blocks (stride
//! `d < l`), and selects over blocks of `l' ≥ l` positions. attnlab follows the reference code
//! (fla-org/native-sparse-attention, `naive.py`): parameter-free mean pooling with stride `B`, and
//! one block size `B` for compression and selection, so a selection block is a compression block
//! and its importance needs no re-mapping. The paper fixes one initial and two local blocks among
//! its `n` selected; the reference forces only the own (current, partial) block, and so does
//! attnlab. The compressed branch pools the keys after RoPE, as the reference does.
//!
//! **Conventions.** `topk=K` counts every block a query reads, the own block among them (the
//! reference's `block_counts`, the paper's `n`), so `topk=1` reads the own block only and `topk`
//! at least the number of blocks is plain causal softmax over every key. The reference forces the
//! own block by giving it importance 1 and takes a `torch.topk` whose ties are unspecified;
//! attnlab breaks ties to the lower block index. A query with no complete block gets exactly 0
//! from the compressed branch, as the reference (which zeroes those rows after its softmax).
//! The choice is discrete: no gradient flows through the importance, only through the three
//! softmaxes (and the compressed keys' means). `W_g` has no bias, as in the reference. `window`
//! at least the length is causal softmax. NSA is causal: a bidirectional model is refused.
//!
//! **Forms.** Training (no diagnostics asked) runs all three branches on the fused span kernel
//! (`fused::span_attention`, via [`nsa_attention_spans`]): a query reads its complete blocks'
//! means, its `topk` blocks (its own up to itself) and its last `window` keys only,
//! `O(T·(T/block + topk·block + window))` time and `O(T)` memory, with the selection computed on
//! the host from the compressed probabilities. Three dense
//! softmaxes under masks (`O(T²)`) are the obviously-right form the kernel is tested against,
//! and what runs with diagnostics, off flex, and when decoding. Decoding keeps softmax's KV cache (`2·d·L` floats)
//! and recomputes the block means over it, which is exact: a complete block never changes. The
//! paper's decoding state is smaller only because a learned compression lets it drop the keys a
//! query no longer selects or windows; with mean pooling every key stays a candidate.
//!
//! **Defaults.** `block=8`, `topk=2`, `window=16`: a 32-token sequence has 4 blocks, and a late
//! query reads its own block, one chosen past block, the last 16 keys and the 4 block means.
//!
//! `layer.rs` holds the kernel (compression, importance, selection, masks) and the module;
//! `tests.rs` the naive per-query oracle and the tests against it.

mod layer;
#[cfg(test)]
mod tests;

pub use layer::{
    NsaAttention, NsaBranches, NsaPattern, nsa_attention, nsa_attention_spans, nsa_branches,
};

use crate::heads::{HeadProjection, KvCache};
use crate::mixer::{Convention, MixerDims, MixerError, MixerFamily, SpecError, VariantInfo};
use crate::options::{parse_options, print_options};
use burn::nn::LinearConfig;
use burn::tensor::Device;
use std::fmt;

/// `nsa[:block=B][:topk=K][:window=W]`; the options are this struct's fields (see
/// [`crate::options`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NsaAttentionConfig {
    /// Positions per block, for compression and selection alike.
    pub block: usize,
    /// Blocks each query's selected branch reads, its own block among them.
    pub topk: usize,
    /// Keys the sliding-window branch reads, the query's own among them.
    pub window: usize,
}

impl Default for NsaAttentionConfig {
    fn default() -> Self {
        Self { block: 8, topk: 2, window: 16 }
    }
}

impl fmt::Display for NsaAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_options(self))
    }
}

impl MixerFamily for NsaAttentionConfig {
    const NAME: &'static str = "nsa";
    const SYNTAX: &'static str = "nsa[:block=B][:topk=K][:window=W]";
    type Module = NsaAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let config: Self = parse_options(parts, spec)?;
        if config.block == 0 {
            return Err(SpecError::new(spec, "block must be at least 1 position"));
        }
        if config.topk == 0 {
            return Err(SpecError::new(spec, "topk must be at least 1 (it counts the own block)"));
        }
        if config.window == 0 {
            return Err(SpecError::new(spec, "window must be at least 1 key (the query's own)"));
        }
        Ok(config)
    }

    fn validate(&self, dims: &MixerDims) -> Result<(), MixerError> {
        if !dims.causal {
            return Err(MixerError::Unsupported {
                mixer: "nsa",
                what: "bidirectional form (its compressed blocks end before the query)",
                fix: "set model.causal = true",
            });
        }
        Ok(())
    }

    /// Softmax's KV cache: mean pooling keeps every key a candidate of a later query.
    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        KvCache::floats(dims, seq_len)
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> NsaAttention {
        let pattern = NsaPattern { block: self.block, topk: self.topk, window: self.window };
        NsaAttention::new(
            HeadProjection::new(dims, dims.head_dim(), device),
            LinearConfig::new(dims.d_model, 3 * dims.n_heads).with_bias(false).init(device),
            pattern,
        )
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "gate",
                Convention::new(
                    "g = sigmoid(x · gate.weight), no bias; column 3·h + branch, branches \
                     (compressed, selected, window)",
                    "the three branches' gates of query head h",
                ),
            ),
            (
                "compressed",
                Convention::new(
                    "softmax(q·mean(K_j)/√d_head) over the complete blocks j with (j+1)·block ≤ t+1",
                    "keys and values averaged per block after RoPE; a query with no complete \
                     block gets 0 from this branch",
                ),
            ),
            (
                "selection",
                Convention::new(
                    "the own block plus the topk − 1 past blocks of highest importance, ties to \
                     the lower index",
                    "importance of block j: the compressed probability of j summed over the query \
                     heads sharing a key/value head; softmax(q·k/√d_head) over the selected keys, \
                     the own block causally masked; no gradient through the choice",
                ),
            ),
            (
                "window",
                Convention::new(
                    "softmax(q·k/√d_head) over keys t − window < l ≤ t",
                    "the sliding-window branch",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo {
                spec: "nsa",
                formula: "σ(W_g x)-gated sum of softmax over the means of complete blocks of 8, over the own block and the top 1 past block by that branch's probabilities, and over the last 16 keys (NSA)",
            },
            VariantInfo {
                spec: "nsa:block=4:window=8",
                formula: "NSA with blocks of 4, the own and one chosen past block, a window of 8",
            },
        ]
    }
}
