//! Delta-rule linear attention: DeltaNet, Gated DeltaNet, Kimi Delta Attention and DeltaProduct.
//!
//! Per head, a state `S_t ∈ R^{d_k×d_v}` that is *corrected* towards each new value rather than
//! added to: the value the state currently predicts for `k_t` is replaced by `v_t` at rate `β_t`,
//!
//! `S_t = a_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ`,  `o_t = S_tᵀ q_t`
//!
//! written as `v'_t = β_t (v_t − (a_t S_{t−1})ᵀ k_t)`, `S_t = a_t S_{t−1} + k_t v'_tᵀ`. With
//! `β = 1` and orthonormal keys the state returns the last value written under each key exactly,
//! which is why the delta rule recalls where plain linear attention (which only adds) blurs.
//!
//! | spec | `a_t` | source |
//! |---|---|---|
//! | `delta` | 1 | Schlag, Irie, Schmidhuber 2021 ("Linear Transformers Are Secretly Fast Weight Programmers", arXiv 2102.11174); Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length" (arXiv 2406.06484) |
//! | `delta:gated` | `exp(−Δ_t·exp(A_log_h))`, `Δ_t = softplus(w_h·x_t + dt_bias_h)` (Mamba-2's gate, [`crate::gates`]) | Yang, Kautz, Hatamizadeh 2025, "Gated Delta Networks" (ICLR 2025, arXiv 2412.06464); Qwen3-Next's linear layers |
//! | `delta:kda` | `Diag(α_t)`, `log α_t = −exp(A_log_h)·softplus(f(x_t) + dt_bias)` per key channel | Kimi Team 2025, "Kimi Linear: An Expressive, Efficient Attention Architecture" (arXiv 2510.26692) |
//! | `delta[:gated]:householders=N` | as above | Siems et al. 2025, "DeltaProduct: Improving State-Tracking in Linear RNNs via Householder Products" (arXiv 2502.10297) |
//!
//! **Kimi Delta Attention** (`delta:kda`) gates each key channel of the state on its own:
//! `α_t ∈ (0, 1)^{d_k}` per head and token where Gated DeltaNet has one `a_t`,
//!
//! `S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ`, i.e.
//! `v'_t = β_t (v_t − (Diag(α_t) S_{t−1})ᵀ k_t)`, `S_t = Diag(α_t) S_{t−1} + k_t v'_tᵀ`,
//!
//! with Kimi's gate `log α_t = −exp(A_log_h)·softplus(f(x_t) + dt_bias)`, `f` a projection
//! `d_model → heads·d_k`. Kimi (and fla's `KimiDeltaAttention`) factor `f` through rank
//! `d_v`; here it is **full rank**, the `dt` Linear `[d_model, heads·d_k]` (head-major, head `h`'s
//! channel `i` in column `h·d_k + i`) whose bias is `dt_bias` (`[heads·d_k]`, drawn as Gated
//! DeltaNet's), with `A_log = ln U(1, 16)` per head (fla's KDA range). q, k, v, β, `conv=K`, the
//! L2 norm and `neg_eigval` are the delta rule's. With `householders = N > 1` (KDA ×
//! DeltaProduct) the per-channel decay scales the state's rows once per token, before its
//! first Householder step, as the per-head gate does below.
//!
//! **DeltaProduct** (`householders=N`, `N ≥ 1`; 1, the default, is the rule above): each token
//! writes `N` times, with its own keys `k_{t,1..N}`, values `v_{t,1..N}` and strengths
//! `β_{t,1..N}`, so its state transition is a product of `N` generalised Householder matrices
//! rather than one (with `neg_eigval` a product of reflections, which can express any
//! permutation's rotation part and so track more than the single step can):
//!
//! `S ← a_t S` once, then for `j = 1..N`: `S ← (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S + β_{t,j} k_{t,j} v_{t,j}ᵀ`;
//! `o_t = Sᵀ q_t` after the last.
//!
//! That is the delta rule on a sequence `N` times as long, the sub-steps of each token in a row
//! (fla's layer runs it so): the gate's `log a_t` on the first sub-step of token `t` and 0 on the
//! others, `q_t` on the last and 0 on the others, and the output every `N`-th step. All three
//! forms below run on that interleaved sequence (`chunk` counts sub-steps), and the decoding
//! state is still the one `S` per head. Keys, values and `β` are projected `N` times as wide,
//! sub-step-major as fla lays them out (`k`: column `j·H·d_k + h·d_k + i`, `β`: `j·H + h`):
//! `k_{t,1}, v_{t,1}` and `q` come from the shared `heads.qkv`, `k_{t,2..N}, v_{t,2..N}` from
//! `householder_kv` (see [`DeltaAttention`]), and `conv=K` convolves all of
//! `[q | k_{·,1..N} | v_{·,1..N}]`.
//!
//! As in fla-org/flash-linear-attention's layers: `q, k, v = silu(·)` of the projections (after the
//! `conv=K` short convolution when on, see [`ShortConv`](crate::short_conv::ShortConv)); `q` and
//! `k` L2-normalised per head (`x/√(‖x‖² + 1e-6)`), then `q` scaled by `d_k^(−½)`;
//! `β_t = σ(w_β,h·x_t + b_h)` per head, or `2σ(·) ∈ (0, 2)` with `neg_eigval=true` (the state
//! transition may then flip a direction, which Grazzi et al. 2025 show widens what the layer can
//! track). Gate parameters: `β`'s weights `U(±1/√d_model)` and bias 0; `dt_bias = softplus⁻¹(dt₀)`,
//! `dt₀ ~ log-uniform[1e-3, 0.1]`, `A_log = ln U(0, 16)`; drawn from the model seed and layer (see
//! [`crate::gates`]). Left out: the output RMSNorm and output gate of fla's `GatedDeltaNet` (the
//! model's own norms stand in). The model's RoPE, if any, rotates the normalised `q` and `k` (a
//! rotation keeps their norm).
//!
//! Three forms, equal up to rounding; every gate enters as `log a_t ≤ 0`, and only differences
//! `b_i − b_j ≤ 0` of its cumulative sums are exponentiated:
//! - [`chunked`] (the training default, `chunk=64`): the WY/UT form of Yang et al. 2024. Inside a
//!   chunk with cumulative log gates `b` and `L_ij = exp(b_i − b_j)`,
//!   `T = (I + strict_tril(diag(β) K Kᵀ ⊙ L))⁻¹` ([`unit_lower_inverse`]), `W = T (β ⊙ K ⊙ e^b)`,
//!   `U = T (β ⊙ V)`; then chunk by chunk `V' = U − W S`, `O = (Q ⊙ e^b) S + (Q Kᵀ ⊙ L ⊙ M) V'`,
//!   `S ← e^{b_C} S + (K ⊙ e^{b_C − b})ᵀ V'`. Time `O(T·C·d)`, memory `O(T·C)` plus a state per
//!   chunk; never a `T × T` tensor or a state per token. For `kda` the cumulative gates `b_i` are
//!   vectors over the key channels and `(Q Kᵀ ⊙ L)_ij` becomes `Σ_f q_if k_jf e^{b_if − b_jf}`
//!   (and so for `K Kᵀ ⊙ L`), built as `decay:gla` builds its scores
//!   ([`crate::chunking::causal_scores`]: exact `C × C × d_k` decays only inside sub-chunks of 16,
//!   reference points between them); `e^b`, `e^{b_C − b}` and `e^{b_C}` scale channels (fla's
//!   `naive_chunk_kda`).
//! - [`parallel`]: the chunked form with one chunk; its `T × T` implied weights
//!   `A = (Q Kᵀ ⊙ L ⊙ M) T diag(β)` (`y = A V`) are what diagnostics report.
//! - [`recurrent`]: the recurrence token by token, as decoding does (prompts go chunked from the
//!   carried state).
//!
//! Training's chunked form from the empty state runs a fused kernel on flex
//! ([`crate::fused::gated_recurrence`]: chunked on `gemm` for per-head gates and heads of width
//! 32 or more, token by token otherwise, per-channel gates included; checked against the
//! composed chunked form for both).
//!
//! The delta rule is a recurrence with a direction; a bidirectional model (`model.causal =
//! false`) runs it forwards and backwards and adds the two outputs, as a bidirectional RNN does.
//!
//! This file holds the config: its spec grammar, its catalogue and the [`MixerFamily`] impl that
//! builds the layer. The rest of the family: `forms.rs` (the chunked WY form, the parallel form
//! and its weights, the recurrence, the unit-lower inverse), `layer.rs` (the module: β, gates,
//! features, forward and decoding) and `tests/` (the naive recurrence and the tests).

mod forms;
mod layer;
#[cfg(test)]
mod tests;

pub use forms::{
    chunked, flip_tokens, gate_on_first_substep, interleave_substeps, last_substeps, parallel,
    product_weights, queries_on_last_substep, recurrent, weights,
};
pub use layer::{DeltaAttention, L2_EPS, l2_normalize, normalized_heads};

use crate::feature_map::{DEFAULT_CHUNK, LinearForm};
use crate::gates::{family_rng, ssm_channel_decay_params, ssm_decay_params, uniform_linear};
use crate::heads::HeadProjection;
use crate::mixer::{Convention, MixerDims, MixerFamily, SpecError, VariantInfo};
use crate::options::{parse_options, print_options, write_with_options};
use crate::recurrent_layer::{conv_state_floats, short_conv};
use crate::short_conv::check_kernel;
use burn::nn::LinearConfig;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The gate parameters' stream tag ("delta_ru").
const GATE_TAG: u64 = 0x6465_6c74_615f_7275;

/// Channels of the packed `[q | k_{1..N} | v_{1..N}]` the convolution runs over (every query
/// head, keys and values repeated under GQA): `(1 + 2N)·H·d`.
fn packed_width(dims: &MixerDims, householders: usize) -> usize {
    (1 + 2 * householders) * dims.n_heads * dims.head_dim()
}

/// How the state decays before each update: the spec's positional part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeltaGate {
    /// `delta`: no decay (DeltaNet).
    #[default]
    None,
    /// `delta:gated`: one `a_t` per head (Gated DeltaNet).
    Gated,
    /// `delta:kda`: one `α_t` per head and key channel (Kimi Delta Attention).
    Kda,
}

impl DeltaGate {
    /// The spec's word for it; `None` for the ungated rule.
    pub fn name(self) -> Option<&'static str> {
        match self {
            DeltaGate::None => None,
            DeltaGate::Gated => Some("gated"),
            DeltaGate::Kda => Some("kda"),
        }
    }
}

/// `delta[:gated|kda][:neg_eigval=true][:householders=N][:conv=K][:form=chunked|parallel|recurrent][:chunk=N]`:
/// the options are this struct's fields (see [`crate::options`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeltaAttentionConfig {
    /// The state's decay (the spec's positional part).
    #[serde(skip)]
    pub gate: DeltaGate,
    /// `β ∈ (0, 2)` instead of `(0, 1)`.
    pub neg_eigval: bool,
    /// Householder steps per token (DeltaProduct); 1 is the delta rule.
    pub householders: usize,
    /// Kernel of the short convolution on q/k/v (0 = none).
    pub conv: usize,
    pub form: LinearForm,
    /// Tokens per chunk of the chunked form.
    pub chunk: usize,
}

impl Default for DeltaAttentionConfig {
    fn default() -> Self {
        Self {
            gate: DeltaGate::None,
            neg_eigval: false,
            householders: 1,
            conv: 0,
            form: LinearForm::Chunked,
            chunk: DEFAULT_CHUNK,
        }
    }
}

impl fmt::Display for DeltaAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gate.name() {
            Some(gate) => write_with_options(f, gate, self),
            None => f.write_str(&print_options(self)),
        }
    }
}

impl MixerFamily for DeltaAttentionConfig {
    const NAME: &'static str = "delta";
    const SYNTAX: &'static str = "delta[:gated|kda][:neg_eigval=true][:householders=N][:conv=K][:form=chunked|parallel|recurrent][:chunk=N]";
    type Module = DeltaAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let (gate, options) = match parts.split_first() {
            Some((&"gated", rest)) => (DeltaGate::Gated, rest),
            Some((&"kda", rest)) => (DeltaGate::Kda, rest),
            Some((first, _)) if !first.contains('=') => {
                return Err(SpecError::new(
                    spec,
                    format!(
                        "unknown delta variant '{first}': use 'delta', 'delta:gated' or 'delta:kda', then key=value options"
                    ),
                ));
            }
            _ => (DeltaGate::None, parts),
        };
        let c = Self { gate, ..parse_options(options, spec)? };
        if c.chunk == 0 {
            return Err(SpecError::new(spec, "chunk must be at least 1"));
        }
        if c.householders == 0 {
            return Err(SpecError::new(
                spec,
                "householders must be at least 1 (1 is the delta rule, 2 or more DeltaProduct)",
            ));
        }
        check_kernel(c.conv).map_err(|reason| SpecError::new(spec, reason))?;
        Ok(c)
    }

    /// `S` (`d_k × d_v` per head, zoology's `heads·d_k·d_v`, whatever `householders` is: the
    /// sub-steps of a token all write into the one state) plus, with `conv=K`, the
    /// convolution's last `K − 1` inputs of `[q | k_{1..N} | v_{1..N}]`; fixed in `seq_len`.
    fn decode_state_floats(&self, dims: &MixerDims, _seq_len: usize) -> usize {
        let d = dims.head_dim();
        let conv = conv_state_floats(self.conv, packed_width(dims, self.householders));
        dims.n_heads * d * d + conv
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> DeltaAttention {
        let (h, d, n) = (dims.n_heads, dims.d_model, self.householders);
        let mut rng = family_rng(dims, GATE_TAG);
        // N strengths per head; with N = 1 the same draws as before DeltaProduct existed.
        let beta = uniform_linear(&mut rng, d, h * n, vec![0.0; h * n], device);
        let (dt, a_log) = match self.gate {
            DeltaGate::None => (None, None),
            DeltaGate::Gated => {
                let (dt, a_log) = ssm_decay_params(&mut rng, dims, (0.0, 16.0), device);
                (Some(dt), Some(a_log))
            }
            // One Δ (and dt_bias) per key channel, fla's A ~ U(1, 16) per head.
            DeltaGate::Kda => {
                let (dt, a_log) =
                    ssm_channel_decay_params(&mut rng, dims, dims.head_dim(), (1.0, 16.0), device);
                (Some(dt), Some(a_log))
            }
        };
        // The packed [q | k_1..N | v_1..N] of every query head (keys and values repeated under GQA).
        let conv = short_conv(self.conv, packed_width(dims, n), &mut rng, device);
        // Keys and values of sub-steps 2..N, sized as the shared projection's k and v parts.
        let householder_kv = (n > 1).then(|| {
            let width = (n - 1) * dims.n_kv_heads * 2 * dims.head_dim();
            LinearConfig::new(d, width).with_bias(dims.bias).init(device)
        });
        DeltaAttention {
            heads: HeadProjection::new(dims, dims.head_dim(), device),
            householder_kv,
            beta,
            dt,
            a_log,
            conv,
            neg_eigval: self.neg_eigval,
            householders: n,
            form: self.form,
            chunk: self.chunk,
        }
    }

    const BENCH: &'static [&'static str] = &["delta:gated"];

    fn variants() -> Vec<&'static str> {
        vec!["gated", "kda"]
    }

    fn variant(&self) -> Option<&'static str> {
        self.gate.name()
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "l2_eps",
                Convention::number(
                    L2_EPS,
                    "q and k are L2-normalised per head as x / sqrt(Σ x² + ε) (fla's l2norm)",
                ),
            ),
            (
                "beta_range",
                Convention::new(
                    if self.neg_eigval { 2.0 } else { 1.0 },
                    "β_t = this · σ(x w_β): (0, 1), or (0, 2) with neg_eigval",
                ),
            ),
            (
                "gate_bias",
                Convention::new(true, "β, Δ and A keep their biases even under model.bias = false"),
            ),
            (
                "conv_layout",
                Convention::new(
                    "[K, 3·width], no bias, tap K−1 on the current token, one SiLU after",
                    "the short convolution's weight over the packed q|k|v channels",
                ),
            ),
            (
                "kda_gate",
                Convention::new(
                    "log α_t = −exp(a_log[h])·softplus(x·dt.weight + dt.bias), dt.weight [d_model, H·d_k] head-major (column h·d_k + i), dt.bias [H·d_k], a_log [H]; S ← Diag(α_t) S scales S's rows",
                    "delta:kda: the per-key-channel gate's parameters (full-rank f; Kimi's is low rank) and how it decays the state",
                ),
            ),
            (
                "householder_layout",
                Convention::new(
                    "q | k_1..k_N | v_1..v_N, sub-step-major; k_1, v_1 from heads.qkv, k_2..k_N | v_2..v_N from householder_kv; β column j·H + h",
                    "householders=N: how the N keys, values and strengths of a token are laid out (the convolution's channels too: [K, (1 + 2N)·width])",
                ),
            ),
            (
                "householder_order",
                Convention::new(
                    "S ← a_t S, then (I − β_j k_j k_jᵀ) S + β_j k_j v_jᵀ for j = 1..N, then o_t = Sᵀ q_t",
                    "householders=N: the gate once per token before its first sub-step, the read after its last",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo {
                spec: "delta",
                formula: "S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ, o_t = S_tᵀ q_t, β_t = σ(w_β·x_t), q, k L2-normalised (DeltaNet)",
            },
            VariantInfo {
                spec: "delta:gated",
                formula: "S_t = a_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ, a_t = exp(−Δ_t e^{A_h}) as Mamba-2 (Gated DeltaNet)",
            },
            VariantInfo {
                spec: "delta:gated:conv=4",
                formula: "Gated DeltaNet after a causal depthwise convolution (kernel 4) + SiLU on q, k, v (fla's layer)",
            },
            VariantInfo {
                spec: "delta:kda",
                formula: "S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ, log α_t = −e^{A_h}·softplus(f(x_t) + dt_bias) per key channel (Kimi Delta Attention, Kimi Linear 2025)",
            },
            VariantInfo {
                spec: "delta:householders=2",
                formula: "S ← (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S + β_{t,j} k_{t,j} v_{t,j}ᵀ for j = 1..2 per token, each step its own k, v, β; o_t = S_tᵀ q_t after the last (DeltaProduct, Siems et al. 2025)",
            },
            VariantInfo {
                spec: "delta:gated:householders=3:neg_eigval=true",
                formula: "Gated DeltaProduct: S ← a_t S once, then 3 Householder steps with β ∈ (0, 2) (products of reflections)",
            },
        ]
    }
}
