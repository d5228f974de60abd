//! PaTH attention: softmax attention whose position term is a running product of
//! data-dependent Householder-like transforms instead of RoPE.
//!
//! Yang et al. 2025, "PaTH Attention: Position Encoding via Accumulating Householder
//! Transformations" (arXiv 2505.16381), as flash-linear-attention's `PaTHAttention` layer
//! parameterises it. Per head, with `H_s = I − β_s w_s w_sᵀ` (`w_s` unit, `β_s ∈ (0, 2)`):
//!
//! `z_ij = q_iᵀ (H_i H_{i−1} ⋯ H_{j+1}) k_j / √d` for `j ≤ i` (the empty product, `j = i`, is
//! `I`), `y_i = Σ_{j ≤ i} softmax_j(z_ij) v_j`.
//!
//! Per token, from the layer input `x_t`:
//! - `q, k, v` from softmax's packed projection ([`HeadProjection`]; Qwen3's per-head q/k norm
//!   when the model has it, as fla's `use_qk_norm`);
//! - `w = normalize(silu(conv(W_up W_down x)))` per key/value head: a low-rank map
//!   (`w_rank=32`, fla's `use_low_rank_w`; `w_rank=0` a full `d_model → K·d` map), no bias, then
//!   fla's short causal convolution over time (`conv=3`, depthwise, no bias, SiLU;
//!   `conv=0` none), then L2 per head, `w / √(‖w‖² + ε)`, `ε = 1e-6` (fla's `l2_norm`);
//! - `β = 2σ(W_β x + b_β)`, one per key/value head;
//! - `fox=true` (PaTH-FoX): a forget gate per query head, `log f = logσ(W_f x + b_f)` with
//!   cumulative sums `c_i`, and `z_ij = (q_iᵀ P k_j + c_i − c_j)/√d`.
//!
//! **Form.** The decoding recurrence, which is also the training form: the layer keeps the keys
//! transformed, `K ← K − β_i (K w_i) w_iᵀ` (`H_i` applied to every earlier key; `H` is
//! symmetric, so `q_iᵀ H_i ⋯ H_{j+1} k_j = q_i · (H_i ⋯ H_{j+1} k_j)`), appends `k_i` and scores
//! `q_i` against the lot: `O(T²d)` work, one step per token. No prefix product is ever inverted
//! (`H_s` is singular at `β = 1`). Decoding carries the same rewritten keys, so the cache is
//! softmax's KV cache (`2·d·L` floats per key/value head), plus the convolution's last
//! `conv − 1` inputs of `w` and, under `fox`, each cached key's `c_j`.
//!
//! **Grouped-query attention** is fla's: `w`, `β`, keys and values per key/value head, each
//! query head reads its key/value head's transformed keys; the forget gate is per query head.
//!
//! **Where attnlab differs from fla.** The training form is the recurrence above, not fla's
//! chunked UT/WY kernel (the same numbers; fla's is faster at length). The forget gate's bias
//! starts at `+5` (attnlab's FoX convention, [`crate::gates::FORGET_BIAS_INIT`]) where fla's
//! `g_proj` keeps PyTorch's default; like fla, the gate's `c_i − c_j` sits inside the `1/√d`
//! scaling (FoX's own softmax family adds it unscaled). The q/k/v/o projections take the
//! model's `bias`/`out_bias` (fla's have none); the `w` maps never have one, `β` and the gate
//! always do, as in fla. A model's RoPE is not applied: PaTH is the position encoding (fla's
//! layer has none). There is no bidirectional form (the paper and fla define none): `validate`
//! refuses a model with `causal = false`.
//!
//! `layer.rs` holds the kernel and the module; `tests.rs` the naive oracle (explicit `d × d`
//! products per query and key, f64) and the tests against it.

mod layer;
#[cfg(test)]
mod tests;

pub use layer::{PathAttention, PathState, householder, path_attention};

use crate::gates::{FORGET_BIAS_INIT, family_rng, uniform_linear};
use crate::heads::{HeadProjection, KvCache};
use crate::mixer::{Convention, MixerDims, MixerError, MixerFamily, SpecError, VariantInfo};
use crate::options::{parse_options, print_options};
use crate::short_conv::{ShortConv, check_kernel};
use burn::nn::Linear;
use burn::tensor::Device;
use rand::rngs::StdRng;
use std::fmt;

/// The parameters' stream tag ("path_in").
const INIT_TAG: u64 = 0x7061_7468_5f69_6e00;

/// `path[:fox=true][:conv=K][:w_rank=N]`; the options are this struct's fields (see
/// [`crate::options`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathAttentionConfig {
    /// PaTH-FoX: a forget gate per query head on top of the Householder products.
    pub fox: bool,
    /// Kernel of the short convolution on `w` (0: none).
    pub conv: usize,
    /// Rank of the low-rank map making `w` (0: a full `d_model → K·d` map).
    pub w_rank: usize,
}

impl Default for PathAttentionConfig {
    fn default() -> Self {
        Self { fox: false, conv: 3, w_rank: 32 }
    }
}

impl fmt::Display for PathAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_options(self))
    }
}

/// A `d_in → d_out` map without bias, weights `U(−1/√d_in, 1/√d_in)` from `rng`.
fn linear_without_bias(rng: &mut StdRng, d_in: usize, d_out: usize, device: &Device) -> Linear {
    Linear { bias: None, ..uniform_linear(rng, d_in, d_out, vec![0.0; d_out], device) }
}

impl MixerFamily for PathAttentionConfig {
    const NAME: &'static str = "path";
    const SYNTAX: &'static str = "path[:fox=true][:conv=K][:w_rank=N]";
    type Module = PathAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let config: Self = parse_options(parts, spec)?;
        check_kernel(config.conv).map_err(|e| SpecError::new(spec, e))?;
        Ok(config)
    }

    fn validate(&self, dims: &MixerDims) -> Result<(), MixerError> {
        if !dims.causal {
            return Err(MixerError::Unsupported {
                mixer: "path",
                what: "bidirectional form (the paper and fla define none)",
                fix: "set model.causal = true",
            });
        }
        Ok(())
    }

    /// Softmax's KV cache (the keys rewritten in place, never more of them), the convolution's
    /// last `conv − 1` inputs of `w`, and under `fox` one `c_j` per cached key and query head.
    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        let w_width = dims.n_kv_heads * dims.head_dim();
        let conv = if self.conv > 0 { ShortConv::state_floats(self.conv, w_width) } else { 0 };
        let forget = if self.fox { dims.n_heads * seq_len } else { 0 };
        KvCache::floats(dims, seq_len) + conv + forget
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> PathAttention {
        let mut rng = family_rng(dims, INIT_TAG);
        let (d, h, kv) = (dims.d_model, dims.n_heads, dims.n_kv_heads);
        let w_width = kv * dims.head_dim();
        let w_down =
            (self.w_rank > 0).then(|| linear_without_bias(&mut rng, d, self.w_rank, device));
        let w_in = if self.w_rank > 0 { self.w_rank } else { d };
        let w_up = linear_without_bias(&mut rng, w_in, w_width, device);
        let w_conv = (self.conv > 0).then(|| ShortConv::new(w_width, self.conv, &mut rng, device));
        let beta = uniform_linear(&mut rng, d, kv, vec![0.0; kv], device);
        let forget =
            self.fox.then(|| uniform_linear(&mut rng, d, h, vec![FORGET_BIAS_INIT; h], device));
        PathAttention {
            heads: HeadProjection::new(dims, dims.head_dim(), device),
            w_down,
            w_up,
            w_conv,
            beta,
            forget,
        }
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "w",
                Convention::new(
                    "w = normalize(silu(conv(w_up(w_down(x))))) per key/value head; w_down absent at w_rank=0, conv and silu absent at conv=0",
                    "the Householder directions: no bias on w_down/w_up, conv weight [K, n_kv_heads·d] (row i weighs the input K−1−i steps back), L2 over each head's d channels",
                ),
            ),
            ("l2_eps", Convention::number(layer::L2_EPS, "w / sqrt(‖w‖² + this) (fla's l2_norm)")),
            (
                "beta",
                Convention::new(
                    "β = 2·σ(beta(x)), one per key/value head",
                    "H_t = I − β_t w_t w_tᵀ, eigenvalue 1 − β ∈ (−1, 1) along w",
                ),
            ),
            (
                "logits",
                Convention::new(
                    "z_ij = (q_i·(H_i⋯H_{j+1} k_j) + c_i − c_j)/√d_head for j ≤ i",
                    "computed by rewriting every earlier key with H_i at token i; c = cumsum(logσ(forget(x))) per query head under fox (0 otherwise)",
                ),
            ),
            (
                "rope",
                Convention::new(
                    "not applied",
                    "PaTH is the position encoding: a model's RoPE is ignored, learned positions add to the input as usual",
                ),
            ),
            (
                "bidirectional",
                Convention::new(
                    "refused",
                    "causal only: the paper and fla define no bidirectional form",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo {
                spec: "path",
                formula: "softmax(q_iᵀ H_i⋯H_{j+1} k_j/√d) v, H_t = I − β_t w_t w_tᵀ from x_t (PaTH, Yang et al. 2025)",
            },
            VariantInfo {
                spec: "path:fox=true",
                formula: "PaTH-FoX: PaTH's logits plus a forget gate's c_i − c_j, inside the 1/√d",
            },
        ]
    }
}
