//! Mixture of block attention (MoBA).
//!
//! Lu et al. 2025, "MoBA: Mixture of Block Attention for Long-Context LLMs" (arXiv 2502.13189):
//! the keys are cut into blocks of `B` positions, and each query attends, with softmax, only to
//! the keys of the few blocks a parameter-free gate routes it to. With `b(i) = ⌊i/B⌋` the block
//! of position `i` and `K̄_j` the mean of block `j`'s keys:
//!
//! `s_ij = q_i·K̄_j` for the past blocks `j < b(i)` (all complete),
//! `S_i = top-k_j(s_ij) ∪ {b(i)}`,
//! `y_i = Σ_{l ∈ S_i, l ≤ i} softmax_l(q_i·k_l/√d) v_l` (the own block causally masked).
//!
//! **Conventions.** `topk=K` counts the *past* blocks chosen, so a query reads `K` past blocks
//! and its own: the paper's `moba_topk` counts the own block, so its `moba_topk = K + 1` is
//! `topk=K` here. Ties go to the lower block index; with fewer than `K` past blocks a query takes
//! them all, so `topk` at least the number of blocks is plain causal softmax attention. The gate
//! reads the queries and keys after RoPE (as the paper's code, which replaces the attention
//! function of a model that has already rotated them) and, under grouped-query attention, each
//! query head's own scores over its key/value head's block means. The selection is a discrete
//! choice: no gradient flows through the gate, only through the softmax over the selected keys
//! (as in the paper). A bidirectional model's query sees its whole own block and chooses among
//! every other block (the last one's mean over the keys it has).
//!
//! **Forms.** Training (no diagnostics asked) runs the fused span kernel
//! (`fused::span_attention`, via [`moba_attention_blocks`]): each query's softmax over its own
//! and chosen blocks' keys only, `O(T·(topk + 1)·block)` time and memory. Its gate (block means,
//! `q·mean(K_j)` over the candidates, the top `topk`) runs on the host per (batch, head), `O(T²/
//! block)` time but only `O(T/block)` memory, and hands the kernel each query's spans. The dense
//! form,
//! softmax under the MoBA mask (`O(T²)`), is the obviously-right one the kernel is tested
//! against, and what runs with diagnostics (which need every weight), off flex, and when
//! decoding. A form gathering each query's keys with Burn's `gather` was measured too and lost to
//! the dense form below T = 2048 (its gathers and scatter-add backward cost more than the masked
//! products they save), so it was not kept. Decoding keeps softmax's KV cache (`2·d·L` floats)
//! and recomputes the block means over it, which is exact: a query's candidate blocks are
//! complete and never change.
//!
//! **Defaults.** `block=8`, `topk=2`: a 64-token sequence has 8 blocks and a query in the last
//! reads 3 of them, about 40% of the keys a causal query sees on average.
//!
//! `layer.rs` holds the kernel (gate, selection, mask, attention) and the module; `tests.rs`
//! the naive oracle and the tests against it.

mod layer;
#[cfg(test)]
mod tests;

pub use layer::{MobaAttention, moba_attention, moba_attention_blocks, moba_mask, selected_blocks};

use crate::heads::{HeadProjection, KvCache};
use crate::mixer::{Convention, MixerDims, MixerFamily, SpecError, VariantInfo};
use crate::options::{parse_options, print_options};
use burn::tensor::Device;
use std::fmt;

/// `moba[:block=B][:topk=K]`; the options are this struct's fields (see [`crate::options`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MobaAttentionConfig {
    /// Positions per key block.
    pub block: usize,
    /// Past blocks each query chooses, besides its own (0: its own block only).
    pub topk: usize,
}

impl Default for MobaAttentionConfig {
    fn default() -> Self {
        Self { block: 8, topk: 2 }
    }
}

impl fmt::Display for MobaAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_options(self))
    }
}

impl MixerFamily for MobaAttentionConfig {
    const NAME: &'static str = "moba";
    const SYNTAX: &'static str = "moba[:block=B][:topk=K]";
    type Module = MobaAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let config: Self = parse_options(parts, spec)?;
        if config.block == 0 {
            return Err(SpecError::new(spec, "block must be at least 1 position"));
        }
        Ok(config)
    }

    /// Softmax's KV cache: every key stays a candidate of a later query.
    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        KvCache::floats(dims, seq_len)
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> MobaAttention {
        MobaAttention::new(
            HeadProjection::new(dims, dims.head_dim(), device),
            self.block,
            self.topk,
        )
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "gate",
                Convention::new(
                    "q_i·mean(k_l, l in block j), after RoPE, per query head",
                    "the gate's score of past block j < ⌊i/block⌋ (bidirectional: every block \
                     but the own one, the last one's mean over the keys it has); no gradient \
                     flows through the choice",
                ),
            ),
            (
                "selection",
                Convention::new(
                    "topk past blocks, ties to the lower index, plus the own block",
                    "the blocks query i reads; fewer than topk candidates: all of them; the own \
                     block causally masked; softmax(q·k/√d_head) over the selected keys",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo {
                spec: "moba",
                formula: "softmax(q·k/√d) v over the own block of 8 (causal) and the top 2 past blocks by q·mean(K_block) (MoBA)",
            },
            VariantInfo {
                spec: "moba:block=4:topk=1",
                formula: "MoBA with blocks of 4 and one past block chosen per query",
            },
        ]
    }
}
