//! Softmax attention with a choice of score scaling, and the length-aware variants.
//!
//! Vaswani et al. 2017, "Attention Is All You Need":
//! `y_i = Σ_j w_ij v_j`, `w_i = softmax_j(z_ij)`, `z_ij = q_i·k_j / s_i`, where the scaling is one of
//!
//! | scaling | logits `z_ij` | source |
//! |---|---|---|
//! | `sqrt_d` (default) | `q·k/√d_head` | Vaswani et al. 2017 |
//! | `none` | `q·k` | |
//! | `num_keys` | `q·k/n_i`, `n_i` the number of keys query `i` attends over (causal: `i + 1`) | Bernhard 2023 |
//! | `sum_key_norms` | `q·k/Σ_{j ∈ keys(i)} ‖k_j‖₂` (causal: a prefix sum per position) | Bernhard 2023, arXiv 2311.09406 |
//! | `learned` | `τ_h q·k`, `τ_h` learned per head, initialised to `1/√d_head` | |
//! | `qk_norm` | `g_h q̂·k̂`, `q, k` L2-normalised per head, `g_h` learned, initialised to `√d_head` | Henry et al. 2020 |
//! | `ssmax` | `s_h·ln(n_i)·q·k`, `s_h` learned per head, initialised to `1/(√d_head·ln L)` (`L` = `max_seq_len`), so it equals `sqrt_d` at the training length and sharpens beyond it | Nakanishi 2025, "Scalable-Softmax" (arXiv 2501.19399) |
//! | `log_n_temp` | `τ(p_i)·q·k/√d_head`, `τ(p) = ln(⌊(p + 1)/floor_scale⌋ + 1)·attn_scale + 1` at query position `p_i` | Llama 4's NoPE layers (`floor_scale=8192`, `attn_scale=0.1` there) |
//! | `softpick` | `q·k/√d_head`, normalised by softpick instead of softmax: `w_ij = relu(e^{z_ij} − 1)/(Σ_j |e^{z_ij} − 1| + ε)` | Zuhri et al. 2025, "Softpick" (arXiv 2504.20966) |
//!
//! Options, on any scaling (`softpick` takes no sink):
//! - `forget=true`, forgetting attention (FoX; Lin et al., ICLR 2025, arXiv 2503.02130): a learned
//!   decay bias `z_ij += c_i − c_j`, `c_t = Σ_{l≤t} ln f_l`, `f_t = σ(w_f,h·x_t + b_f,h)` per head;
//!   `b_f` starts at 5 (`f ≈ 0.993`, a memory of ~150 tokens), `w_f ~ U(±1/√d_model)`.
//!   Bidirectional: `−|c_i − c_j|`.
//! - `gate=output`, gated attention (Qiu et al. 2025, arXiv 2505.06708): each head's output times
//!   `σ(x W_g + b_g)` elementwise before the output projection; `W_g ~ U(±1/√d_model)`, `b_g = 0`.
//! - `sink=learned|zero`: an extra logit per head in every row's denominator,
//!   `w_ij = e^{z_ij}/(e^{σ_h} + Σ_j e^{z_ij})`, so a row may put weight on "nothing"; `zero` fixes
//!   `σ_h = 0` (softmax-plus-one), `learned` starts at 0.
//! - `window=W`, sliding-window attention (Beltagy et al. 2020, "Longformer"; Mistral 7B): query
//!   `i` sees only the `W` most recent keys `i − W < j ≤ i` (bidirectional: `|i − j| < W`), with
//!   any scaling; `n_i` and `sum_key_norms`' divisor count only those keys. Decoding keeps the
//!   last `W − 1` keys. `0` (the default) is global attention. Alternating window and global
//!   layers (Mistral's successors, Gemma 2) is a per-layer stack:
//!   `mixer = ["softmax:window=W", "softmax"]`.
//! - `floor_scale=F`, `attn_scale=A` (`log_n_temp` only). The defaults here are 8 and 0.1: Llama 4's
//!   8192 would leave `τ = 1` at every length attnlab trains at, so the variant would equal
//!   `sqrt_d`; with 8 the temperature is 1.22 at position 64 and 1.42 at 512.
//!
//! The `sum_key_norms` divisor is differentiable (gradients flow into the key norms), as in
//! Bernhard's formula. Masking is NaN-safe at any length (see [`crate::heads::masked_softmax`]; the sink and
//! softpick normalisers shift by the row maximum the same way). Decoding keeps a KV cache (plus
//! `c_t` per cached key with `forget=true`); every divisor is recomputed from the cache, which is
//! exact. Gate and forget parameters are drawn from the model seed and layer
//! ([`crate::gates::family_rng`]), not from the backend's generator.
//!
//! This file holds the config: its spec grammar, its catalogue and the [`MixerFamily`] impl that
//! builds the layer. The rest of the family: `options.rs` (the spec's choices), `forms.rs` (the
//! attention kernel on projected heads, with the sink and softpick normalisers), `layer.rs` (the
//! module, its forward and its KV-cache decoding) and `tests/` (the naive oracle and the tests).

mod forms;
mod layer;
mod options;
#[cfg(test)]
mod tests;

pub use forms::{
    KEY_NORM_FLOOR, QK_NORM_EPS, SOFTPICK_EPS, ScoreTerms, softmax_attention, softmax_with_sink,
    softpick,
};
pub use layer::{SoftmaxAttention, SoftmaxDecodeState};
pub use options::{OutputGate, Scaling, Sink};

use crate::gates::{FORGET_BIAS_INIT, family_rng, uniform_linear};
use crate::heads::{HeadProjection, KvCache};
use crate::mixer::{Convention, MixerDims, MixerFamily, SpecError, VariantInfo};
use crate::options::{parse_options, print_options};
use burn::module::Param;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `log_n_temp`'s defaults (see the module header for why they are small).
pub const DEFAULT_FLOOR_SCALE: f64 = 8.0;
pub const DEFAULT_ATTN_SCALE: f64 = 0.1;
/// The gate parameters' stream tag ("softmax_").
const GATE_TAG: u64 = 0x736f_6674_6d61_785f;

/// `softmax[:<scaling>][:forget=true][:gate=output][:sink=learned|zero][:window=W][:floor_scale=F][:attn_scale=A]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoftmaxAttentionConfig {
    /// The spec's positional part, not an option.
    #[serde(skip)]
    pub scaling: Scaling,
    pub forget: bool,
    pub gate: OutputGate,
    pub sink: Sink,
    /// Sliding window: the keys each query sees (0 = all).
    pub window: usize,
    pub floor_scale: f64,
    pub attn_scale: f64,
}

impl Default for SoftmaxAttentionConfig {
    fn default() -> Self {
        Self {
            scaling: Scaling::SqrtD,
            forget: false,
            gate: OutputGate::None,
            sink: Sink::None,
            window: 0,
            floor_scale: DEFAULT_FLOOR_SCALE,
            attn_scale: DEFAULT_ATTN_SCALE,
        }
    }
}

impl SoftmaxAttentionConfig {
    pub fn new(scaling: Scaling) -> Self {
        Self { scaling, ..Self::default() }
    }
}

impl fmt::Display for SoftmaxAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = print_options(self);
        let parts: Vec<&str> = [
            (self.scaling != Scaling::SqrtD).then(|| self.scaling.name()),
            (!options.is_empty()).then_some(options.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        f.write_str(&parts.join(":"))
    }
}

impl MixerFamily for SoftmaxAttentionConfig {
    const NAME: &'static str = "softmax";
    const SYNTAX: &'static str = "softmax[:<scaling>][:forget=true][:gate=output][:sink=learned|zero][:window=W][:floor_scale=F][:attn_scale=A]";
    type Module = SoftmaxAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let (scaling, options) = match parts.split_first() {
            Some((first, rest)) if !first.contains('=') => {
                let scaling =
                    Scaling::ALL.into_iter().find(|s| s.name() == *first).ok_or_else(|| {
                        let names: Vec<_> = Scaling::ALL.iter().map(|s| s.name()).collect();
                        SpecError::new(
                            spec,
                            format!(
                                "unknown scaling '{first}', expected one of: {}",
                                names.join(", ")
                            ),
                        )
                    })?;
                (scaling, rest)
            }
            _ => (Scaling::SqrtD, parts),
        };
        let c = Self { scaling, ..parse_options(options, spec)? };
        let default = Self::default();
        if scaling != Scaling::LogNTemp
            && (c.floor_scale != default.floor_scale || c.attn_scale != default.attn_scale)
        {
            return Err(SpecError::new(
                spec,
                "floor_scale and attn_scale belong to softmax:log_n_temp",
            ));
        }
        if c.floor_scale < 1.0 || !c.floor_scale.is_finite() || !c.attn_scale.is_finite() {
            return Err(SpecError::new(
                spec,
                "floor_scale must be a finite number ≥ 1 and attn_scale finite",
            ));
        }
        if scaling == Scaling::Softpick && c.sink != Sink::None {
            return Err(SpecError::new(
                spec,
                "softpick has no softmax denominator to add a sink to: drop sink=",
            ));
        }
        Ok(c)
    }

    /// The KV cache (`2·d·L`), plus `c_t` per cached key and head with `forget=true`; a window
    /// `W` caps `L` at `W`.
    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        let cached = if self.window > 0 { seq_len.min(self.window) } else { seq_len };
        KvCache::floats(dims, cached) + if self.forget { dims.n_heads * cached } else { 0 }
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> SoftmaxAttention {
        let d_head = dims.head_dim() as f32;
        let scale = match self.scaling {
            Scaling::Learned => Some(d_head.sqrt().recip()),
            Scaling::QkNorm => Some(d_head.sqrt()),
            Scaling::Ssmax => Some((d_head.sqrt() * (dims.max_seq_len.max(2) as f32).ln()).recip()),
            _ => None,
        }
        .map(|init| Param::from_tensor(Tensor::<1>::full([dims.n_heads], init, device)));
        let (h, d) = (dims.n_heads, dims.d_model);
        let mut rng = family_rng(dims, GATE_TAG);
        let forget =
            self.forget.then(|| uniform_linear(&mut rng, d, h, vec![FORGET_BIAS_INIT; h], device));
        let width = h * dims.head_dim();
        let gate = (self.gate == OutputGate::Output)
            .then(|| uniform_linear(&mut rng, d, width, vec![0.0; width], device));
        let sink = (self.sink == Sink::Learned)
            .then(|| Param::from_tensor(Tensor::<1>::zeros([h], device)));
        SoftmaxAttention {
            heads: HeadProjection::new(dims, dims.head_dim(), device),
            scale,
            forget,
            gate,
            sink,
            scaling: self.scaling,
            zero_sink: self.sink == Sink::Zero,
            window: (self.window > 0).then_some(self.window),
            log_n_temp: (self.floor_scale, self.attn_scale),
        }
    }

    const BENCH: &'static [&'static str] = &["softmax"];

    fn variants() -> Vec<&'static str> {
        Scaling::ALL.iter().map(|s| s.name()).collect()
    }

    fn variant(&self) -> Option<&'static str> {
        Some(self.scaling.name())
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "softpick_eps",
                Convention::number(
                    SOFTPICK_EPS,
                    "softpick's denominator: Σ_j |e^z − 1| + ε (over the keys the row sees)",
                ),
            ),
            (
                "qk_norm_eps",
                Convention::number(QK_NORM_EPS, "qk_norm: x̂ = x / max(‖x‖, ε) per head"),
            ),
            (
                "key_norm_floor",
                Convention::number(
                    KEY_NORM_FLOOR,
                    "sum_key_norms: the divisor is max(Σ_j ‖k_j‖, floor)",
                ),
            ),
            (
                "rope",
                Convention::new(
                    "on q and k as they leave the projection, before any scaling",
                    "where RoPE applies when model.positions = rope",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo { spec: "softmax", formula: "softmax(q·k/√d) v" },
            VariantInfo { spec: "softmax:none", formula: "softmax(q·k) v" },
            VariantInfo {
                spec: "softmax:num_keys",
                formula: "softmax(q·k/n_i) v, n_i = keys seen by query i",
            },
            VariantInfo {
                spec: "softmax:sum_key_norms",
                formula: "softmax(q·k/Σ_j‖k_j‖) v over the keys query i sees (Bernhard)",
            },
            VariantInfo {
                spec: "softmax:learned",
                formula: "softmax(τ_h q·k) v, τ_h learned, init 1/√d",
            },
            VariantInfo {
                spec: "softmax:qk_norm",
                formula: "softmax(g_h q̂·k̂) v, q̂ = q/‖q‖, g_h learned, init √d",
            },
            VariantInfo {
                spec: "softmax:ssmax",
                formula: "softmax(s_h ln(n_i) q·k) v, s_h learned, init 1/(√d ln L) (Scalable-Softmax)",
            },
            VariantInfo {
                spec: "softmax:log_n_temp",
                formula: "softmax(τ(p_i) q·k/√d) v, τ(p) = ln(⌊(p+1)/8⌋ + 1)·0.1 + 1 (Llama 4 NoPE layers)",
            },
            VariantInfo {
                spec: "softmax:softpick",
                formula: "relu(e^z − 1)/Σ|e^z − 1| in place of softmax, z = q·k/√d (Softpick)",
            },
            VariantInfo {
                spec: "softmax:forget=true",
                formula: "softmax(q·k/√d + c_i − c_j) v, c = cumsum ln σ(w_f·x + b_f) per head (FoX)",
            },
            VariantInfo {
                spec: "softmax:gate=output",
                formula: "(softmax(q·k/√d) v) ⊙ σ(x W_g) per head, before the output projection (gated attention)",
            },
            VariantInfo {
                spec: "softmax:sink=learned",
                formula: "e^{z_ij}/(e^{σ_h} + Σ_j e^{z_ij}), σ_h learned per head (attention sink)",
            },
            VariantInfo {
                spec: "softmax:sink=zero",
                formula: "e^{z_ij}/(1 + Σ_j e^{z_ij}) (softmax-plus-one)",
            },
            VariantInfo {
                spec: "softmax:window=8",
                formula: "softmax(q·k/√d) v over the 8 most recent keys i − 8 < j ≤ i (sliding window; Mistral)",
            },
        ]
    }
}
