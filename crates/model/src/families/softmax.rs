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
//! - `floor_scale=F`, `attn_scale=A` (`log_n_temp` only). The defaults here are 8 and 0.1: Llama 4's
//!   8192 would leave `τ = 1` at every length attnlab trains at, so the variant would equal
//!   `sqrt_d`; with 8 the temperature is 1.22 at position 64 and 1.42 at 512.
//!
//! The `sum_key_norms` divisor is differentiable (gradients flow into the key norms), as in
//! Bernhard's formula. Masking is NaN-safe at any length (see [`masked_softmax`]; the sink and
//! softpick normalisers shift by the row maximum the same way). Decoding keeps a KV cache (plus
//! `c_t` per cached key with `forget=true`); every divisor is recomputed from the cache, which is
//! exact. Gate and forget parameters are drawn from the model seed and layer
//! ([`crate::gates::family_rng`]), not from the backend's generator.

use crate::fused;
use crate::gates::{FORGET_BIAS_INIT, family_rng, uniform_linear};
use crate::heads::{
    HeadProjection, KvCache, causal_mask, keys_per_query, masked_softmax, sequence_diagnostics,
};
use crate::mixer::{
    Convention, MixContext, MixOutput, MixerDims, MixerFamily, SequenceMixer, SpecError,
    VariantInfo,
};
use crate::options::{parse_options, print_options};
use burn::module::{Module, Param};
use burn::nn::{Linear, RotaryEncoding};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Bool, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How `q·k` becomes the logits (the spec's positional part).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scaling {
    #[default]
    SqrtD,
    None,
    NumKeys,
    SumKeyNorms,
    Learned,
    QkNorm,
    Ssmax,
    LogNTemp,
    Softpick,
}

impl Scaling {
    pub const ALL: [Scaling; 9] = [
        Self::SqrtD,
        Self::None,
        Self::NumKeys,
        Self::SumKeyNorms,
        Self::Learned,
        Self::QkNorm,
        Self::Ssmax,
        Self::LogNTemp,
        Self::Softpick,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::SqrtD => "sqrt_d",
            Self::None => "none",
            Self::NumKeys => "num_keys",
            Self::SumKeyNorms => "sum_key_norms",
            Self::Learned => "learned",
            Self::QkNorm => "qk_norm",
            Self::Ssmax => "ssmax",
            Self::LogNTemp => "log_n_temp",
            Self::Softpick => "softpick",
        }
    }

    /// Whether the scaling has a learned per-head parameter.
    pub fn has_parameter(self) -> bool {
        matches!(self, Self::Learned | Self::QkNorm | Self::Ssmax)
    }
}

/// `gate=none|output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputGate {
    #[default]
    None,
    Output,
}

/// `sink=none|learned|zero`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    #[default]
    None,
    Learned,
    Zero,
}

/// `log_n_temp`'s defaults (see the module header for why they are small).
pub const DEFAULT_FLOOR_SCALE: f64 = 8.0;
pub const DEFAULT_ATTN_SCALE: f64 = 0.1;
/// Softpick's `ε`.
pub const SOFTPICK_EPS: f32 = 1e-6;
/// `qk_norm`: `x̂ = x / max(‖x‖, ε)`.
pub const QK_NORM_EPS: f32 = 1e-6;
/// `sum_key_norms`: the divisor's floor.
pub const KEY_NORM_FLOOR: f32 = 1e-12;
/// The gate parameters' stream tag ("softmax_").
const GATE_TAG: u64 = 0x736f_6674_6d61_785f;

/// `softmax[:<scaling>][:forget=true][:gate=output][:sink=learned|zero][:floor_scale=F][:attn_scale=A]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoftmaxAttentionConfig {
    /// The spec's positional part, not an option.
    #[serde(skip)]
    pub scaling: Scaling,
    pub forget: bool,
    pub gate: OutputGate,
    pub sink: Sink,
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
    const SYNTAX: &'static str = "softmax[:<scaling>][:forget=true][:gate=output][:sink=learned|zero][:floor_scale=F][:attn_scale=A]";
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
        if !(c.floor_scale >= 1.0 && c.floor_scale.is_finite()) || !c.attn_scale.is_finite() {
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

    /// The KV cache (`2·d·L`), plus `c_t` per cached key and head with `forget=true`.
    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        KvCache::floats(dims, seq_len) + if self.forget { dims.n_heads * seq_len } else { 0 }
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
            log_n_temp: (self.floor_scale, self.attn_scale),
        }
    }

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
        ]
    }
}

/// Multi-head softmax attention.
#[derive(Module, Debug)]
pub struct SoftmaxAttention {
    pub heads: HeadProjection,
    /// `[heads]`: the learned multiplier of `learned` (temperature), `qk_norm` (gain) and `ssmax` (`s_h`).
    pub scale: Option<Param<Tensor<1>>>,
    /// `forget=true`: `x ↦ w_f·x + b_f`, `weight: [d_model, heads]`.
    pub forget: Option<Linear>,
    /// `gate=output`: `x ↦ x W_g + b_g`, `weight: [d_model, heads·d_head]`.
    pub gate: Option<Linear>,
    /// `sink=learned`: `[heads]`, the sink logit.
    pub sink: Option<Param<Tensor<1>>>,
    #[module(skip)]
    scaling: Scaling,
    #[module(skip)]
    zero_sink: bool,
    #[module(skip)]
    log_n_temp: (f64, f64),
}

/// Decoding state: the KV cache and, with `forget=true`, `c_t` of every cached key.
#[derive(Clone, Debug, Default)]
pub struct SoftmaxDecodeState {
    pub cache: KvCache,
    /// `[batch, heads, seen]`.
    pub forget: Option<Tensor<3>>,
}

/// What shapes the logits and their normalisation besides `q`, `k` and the scaling.
#[derive(Clone, Debug, Default)]
pub struct ScoreTerms {
    /// `[heads]`: `learned`/`qk_norm`'s multiplier or `ssmax`'s `s_h`.
    pub scale: Option<Tensor<1>>,
    /// FoX: cumulative log forget gates `c` of the queries (`[batch, heads, seq_q]`) and of the
    /// keys (`[batch, heads, seq_k]`).
    pub forget: Option<(Tensor<3>, Tensor<3>)>,
    /// `[heads]`: the sink logit.
    pub sink: Option<Tensor<1>>,
    /// `log_n_temp`'s `(floor_scale, attn_scale)`.
    pub log_n_temp: (f64, f64),
}

impl SoftmaxAttention {
    pub fn scaling(&self) -> Scaling {
        self.scaling
    }

    /// The score multiplier when it is a constant and nothing else shapes the logits (`sqrt_d`,
    /// `none`; an output gate is fine), which the fused kernel takes.
    fn constant_scale(&self) -> Option<f32> {
        if self.forget.is_some() || self.sink.is_some() || self.zero_sink {
            return None;
        }
        match self.scaling {
            Scaling::SqrtD => Some((self.heads.d_qk() as f32).sqrt().recip()),
            Scaling::None => Some(1.0),
            _ => None,
        }
    }

    /// Per-head `ln f_t ≤ 0` of the tokens in `x`, `[batch, heads, seq]`.
    fn log_forget(&self, x: Tensor<3>) -> Option<Tensor<3>> {
        self.forget.as_ref().map(|f| fused::log_sigmoid(fused::affine(f, x)).swap_dims(1, 2))
    }

    /// The terms for queries `x` whose forget sums continue from `c_before` (`[batch, heads, 1]`;
    /// 0 at the start), with the keys' sums `keys_c` (the queries' own when `None`).
    fn terms(&self, queries_c: Option<Tensor<3>>, keys_c: Option<Tensor<3>>) -> ScoreTerms {
        let h = self.heads.n_heads();
        let sink = match (&self.sink, self.zero_sink) {
            (Some(s), _) => Some(s.val()),
            (None, true) => Some(Tensor::zeros([h], &self.heads.qkv.weight.device())),
            _ => None,
        };
        let forget = queries_c.map(|c| {
            let keys = keys_c.unwrap_or_else(|| c.clone());
            (c, keys)
        });
        ScoreTerms {
            scale: self.scale.as_ref().map(|p| p.val()),
            forget,
            sink,
            log_n_temp: self.log_n_temp,
        }
    }

    /// Merged heads (`[batch, seq, heads·d_v]`) through the output gate (if any) and projection.
    fn finish(&self, merged: Tensor<3>, x: Tensor<3>) -> Tensor<3> {
        let merged = match &self.gate {
            Some(g) => merged * sigmoid(fused::affine(g, x)),
            None => merged,
        };
        self.heads.output(merged)
    }
}

/// `[batch, heads, seq, d_v]` -> `[batch, seq, heads·d_v]`.
fn merge_heads(y: Tensor<4>) -> Tensor<3> {
    let [b, h, t, dv] = y.dims();
    y.swap_dims(1, 2).reshape([b, t, h * dv])
}

/// The softmax attention kernel on already-projected heads.
///
/// Queries sit at absolute positions `q_offset..q_offset + seq_q`, keys at `0..seq_k`. Returns
/// the output and the weights.
///
/// # Shapes
/// - `q`: `[batch, heads, seq_q, d]`, `k`: `[batch, heads, seq_k, d]`, `v`: `[batch, heads, seq_k, d_v]`
/// - returns `[batch, heads, seq_q, d_v]` and `[batch, heads, seq_q, seq_k]`
pub fn softmax_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scaling: Scaling,
    terms: &ScoreTerms,
    causal: bool,
    q_offset: usize,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, seq_q, d] = q.dims();
    let seq_k = k.dims()[2];
    let device = q.device();
    let (q, k) = match scaling {
        Scaling::QkNorm => (l2_normalize(q), l2_normalize(k)),
        _ => (q, k),
    };
    let per_head = |name: &str| {
        terms
            .scale
            .clone()
            .unwrap_or_else(|| panic!("{name} scaling needs its parameter"))
            .reshape([1, h, 1, 1])
    };
    let key_norms =
        matches!(scaling, Scaling::SumKeyNorms).then(|| k.clone().powi_scalar(2).sum_dim(3).sqrt());
    let scores = q.matmul(k.swap_dims(2, 3));
    let scores = match scaling {
        Scaling::SqrtD | Scaling::Softpick => scores / (d as f32).sqrt(),
        Scaling::None => scores,
        Scaling::NumKeys => {
            let n = keys_per_query(seq_q, seq_k, q_offset, causal, &device);
            scores / n.unsqueeze::<4>()
        }
        Scaling::SumKeyNorms => {
            // [b, h, seq_k, 1] -> divisor per query: a prefix sum when causal, the total otherwise.
            let norms = key_norms.expect("computed above").reshape([b, h, seq_k]);
            let divisor = if causal {
                norms.cumsum(2).narrow(2, q_offset, seq_q).reshape([b, h, seq_q, 1])
            } else {
                norms.sum_dim(2).reshape([b, h, 1, 1])
            };
            // All-zero keys would divide by zero; such rows are uniform either way.
            scores / divisor.clamp_min(KEY_NORM_FLOOR)
        }
        Scaling::Learned | Scaling::QkNorm => scores * per_head(scaling.name()),
        Scaling::Ssmax => {
            let log_n = keys_per_query(seq_q, seq_k, q_offset, causal, &device).log();
            scores * per_head("ssmax") * log_n.unsqueeze::<4>()
        }
        Scaling::LogNTemp => {
            let (floor_scale, attn_scale) = terms.log_n_temp;
            let tau: Vec<f32> = (0..seq_q)
                .map(|i| {
                    (((((q_offset + i + 1) as f64) / floor_scale).floor() + 1.0).ln() * attn_scale
                        + 1.0) as f32
                })
                .collect();
            scores / (d as f32).sqrt()
                * Tensor::<1>::from_floats(tau.as_slice(), &device).reshape([1, 1, seq_q, 1])
        }
    };
    let scores = match &terms.forget {
        Some((cq, ck)) => {
            let bias = cq.clone().unsqueeze_dim::<4>(3) - ck.clone().unsqueeze_dim::<4>(2); // c_i − c_j
            // Causal rows see only j ≤ i, where the bias is ≤ 0; the rest is masked below.
            scores + if causal { bias } else { bias.abs().neg() }
        }
        None => scores,
    };
    let mask = causal.then(|| causal_mask(seq_q, seq_k, q_offset, &device));
    let weights = match (scaling, &terms.sink) {
        (Scaling::Softpick, _) => softpick(scores, mask),
        (_, Some(sink)) => softmax_with_sink(scores, mask, sink.clone()),
        _ => masked_softmax(scores, mask),
    };
    (weights.clone().matmul(v), weights)
}

/// Softmax with one extra logit `σ_h` per head in every row's denominator:
/// `w_ij = e^{z_ij}/(e^{σ_h} + Σ_j e^{z_ij})`. The sink is a column appended to the logits, so
/// [`masked_softmax`]'s shift by the row maximum keeps it finite at any scale.
///
/// # Shapes
/// - `scores`: `[batch, heads, seq_q, seq_k]`, `sink`: `[heads]` -> `[batch, heads, seq_q, seq_k]`
pub fn softmax_with_sink(
    scores: Tensor<4>,
    mask: Option<Tensor<2, Bool>>,
    sink: Tensor<1>,
) -> Tensor<4> {
    let [b, h, q, k] = scores.dims();
    let scores = match mask {
        Some(mask) => {
            scores.mask_fill(mask.unsqueeze::<4>().expand([b, h, q, k]), f32::NEG_INFINITY)
        }
        None => scores,
    };
    let sink = sink.reshape([1, h, 1, 1]).expand([b, h, q, 1]);
    masked_softmax(Tensor::cat(vec![scores, sink], 3), None).narrow(3, 0, k)
}

/// Softpick, `w_ij = relu(e^{z_ij} − 1)/(Σ_j |e^{z_ij} − 1| + ε)` over the visible keys, computed
/// as `relu(e^{z − m} − e^{−m})/(Σ|e^{z − m} − e^{−m}| + ε e^{−m})` with `m = max(0, max_j z_ij)`
/// (the same ratio, with every exponent ≤ 0). Rows need not sum to one; a row whose logits are
/// all ≤ 0 is all zeros.
///
/// # Shapes
/// - `scores`: `[batch, heads, seq_q, seq_k]` -> the same
pub fn softpick(scores: Tensor<4>, mask: Option<Tensor<2, Bool>>) -> Tensor<4> {
    let [b, h, q, k] = scores.dims();
    let mask = mask.map(|m| m.unsqueeze::<4>().expand([b, h, q, k]));
    let hidden = match &mask {
        Some(m) => scores.clone().mask_fill(m.clone(), f32::NEG_INFINITY),
        None => scores.clone(),
    };
    let shift = hidden.max_dim(3).detach().clamp_min(0.0); // m ≥ 0, finite
    let floor = shift.clone().neg().exp(); // e^{−m} ≤ 1
    let centred = match &mask {
        Some(m) => scores.mask_fill(m.clone(), 0.0),
        None => scores,
    };
    let t = (centred - shift).exp() - floor.clone();
    let t = match mask {
        Some(m) => t.mask_fill(m, 0.0),
        None => t,
    };
    let den = t.clone().abs().sum_dim(3) + floor * SOFTPICK_EPS;
    t.clamp_min(0.0) / den
}

fn l2_normalize(x: Tensor<4>) -> Tensor<4> {
    let norm = x.clone().powi_scalar(2).sum_dim(3).sqrt().clamp_min(QK_NORM_EPS);
    x / norm
}

impl SequenceMixer for SoftmaxAttention {
    type State = SoftmaxDecodeState;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let packed = self.heads.project(x.clone());
        // The fused kernel covers training and evaluation without monitoring; it does not return
        // the weights, learn a scale, forget, or add a sink. RoPE is applied before it.
        let (q, k, v) = if let Some(scale) = self.constant_scale()
            && !ctx.diagnostics
        {
            match fused::softmax_attention_packed(
                self.heads.rotate_packed(packed, ctx.rope, 0),
                self.heads.n_heads(),
                scale,
                ctx.causal,
            ) {
                Ok(y) => return MixOutput { output: self.finish(y, x), diagnostics: None },
                Err(rotated) => self.heads.split_packed(rotated),
            }
        } else {
            self.heads.split_packed_rotated(packed, ctx.rope, 0)
        };
        let c = self.log_forget(x.clone()).map(|lf| lf.cumsum(2));
        let (y, weights) =
            softmax_attention(q, k, v, self.scaling, &self.terms(c, None), ctx.causal, 0);
        let diagnostics = ctx.diagnostics.then(|| sequence_diagnostics(weights, ctx.causal));
        MixOutput { output: self.finish(merge_heads(y), x), diagnostics }
    }

    fn empty_state(&self) -> SoftmaxDecodeState {
        SoftmaxDecodeState::default()
    }

    fn step(
        &self,
        x: Tensor<3>,
        state: &mut SoftmaxDecodeState,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let offset = state.cache.position;
        let (q, k, v) = self.heads.split_rotated(x.clone(), rope, offset);
        let (keys, values) = state.cache.append(k, v);
        // c of the new tokens continues from the last cached key's.
        let c = self.log_forget(x.clone()).map(|lf| {
            let before = state.forget.as_ref().map(|c| {
                let seen = c.dims()[2];
                c.clone().narrow(2, seen - 1, 1)
            });
            let c = lf.cumsum(2);
            let c = match before {
                Some(last) => c + last,
                None => c,
            };
            state.forget = Some(match state.forget.take() {
                Some(old) => Tensor::cat(vec![old, c.clone()], 2),
                None => c.clone(),
            });
            c
        });
        let keys_c = c.as_ref().and(state.forget.clone());
        let (y, _) =
            softmax_attention(q, keys, values, self.scaling, &self.terms(c, keys_c), true, offset);
        self.finish(merge_heads(y), x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, output_and_grads, randn, values, visible_rows};
    use burn::tensor::activation::{log_sigmoid, softmax};

    /// What the oracle adds to the logits and the normaliser.
    #[derive(Clone, Copy, Default)]
    struct Extras<'a> {
        /// `[b, h, t]`: `ln f_t` per token (FoX).
        log_forget: Option<&'a Tensor<3>>,
        /// `[1, h, 1, 1]`: the sink logit.
        sink: Option<&'a Tensor<4>>,
    }

    /// The slow, obviously-right oracle: one query at a time over exactly the keys it sees, the
    /// textbook formula for every [`Scaling`]; `scale` is the per-head multiplier of `learned`,
    /// `qk_norm` and `ssmax`. FoX's bias is summed token by token over the span between query and
    /// key; the sink is an explicit extra term in the denominator. No masks, no prefix sums.
    fn naive_softmax_attention(
        q: &Tensor<4>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        scaling: Scaling,
        scale: Option<&[f32]>,
        extras: Extras<'_>,
        causal: bool,
    ) -> Tensor<4> {
        let [b, h, _, d] = q.dims();
        let d = d as f32;
        let dev = q.device();
        let per_head = |s: &[f32]| Tensor::<1>::from_floats(s, &dev).reshape([1, s.len(), 1, 1]);
        let out =
            visible_rows(q, k, v, causal).into_iter().enumerate().map(|(i, (qi, keys, vals))| {
                let n = keys.dims()[2];
                let dots = |a: Tensor<4>, b: Tensor<4>| a.matmul(b.swap_dims(2, 3)); // [b,h,1,n]
                let scores = match scaling {
                    Scaling::SqrtD | Scaling::Softpick => dots(qi, keys) / d.sqrt(),
                    Scaling::None => dots(qi, keys),
                    Scaling::NumKeys => dots(qi, keys) / n as f32,
                    Scaling::SumKeyNorms => {
                        let total_norm = keys.clone().powf_scalar(2.0).sum_dim(3).sqrt().sum_dim(2); // [b,h,1,1]
                        dots(qi, keys) / total_norm
                    }
                    Scaling::Learned => dots(qi, keys) * per_head(scale.unwrap()),
                    Scaling::QkNorm => {
                        let unit = |x: Tensor<4>| x.clone() / x.powf_scalar(2.0).sum_dim(3).sqrt();
                        dots(unit(qi), unit(keys)) * per_head(scale.unwrap())
                    }
                    Scaling::Ssmax => dots(qi, keys) * per_head(scale.unwrap()) * (n as f32).ln(),
                    Scaling::LogNTemp => {
                        let tau = (((i + 1) as f64 / DEFAULT_FLOOR_SCALE).floor() + 1.0).ln()
                            * DEFAULT_ATTN_SCALE
                            + 1.0;
                        dots(qi, keys) / d.sqrt() * tau as f32
                    }
                };
                let scores = match extras.log_forget {
                    // Σ ln f over the tokens strictly after the earlier of (i, j), up to the later.
                    Some(lf) => {
                        let bias: Vec<Tensor<4>> = (0..n)
                            .map(|j| {
                                let (lo, hi) = (i.min(j), i.max(j));
                                if hi == lo {
                                    Tensor::zeros([b, h, 1, 1], &dev)
                                } else {
                                    lf.clone()
                                        .narrow(2, lo + 1, hi - lo)
                                        .sum_dim(2)
                                        .reshape([b, h, 1, 1])
                                }
                            })
                            .collect();
                        scores + Tensor::cat(bias, 3)
                    }
                    None => scores,
                };
                let weights = match (scaling, extras.sink) {
                    (Scaling::Softpick, _) => {
                        let t = scores.exp() - 1.0;
                        t.clone().clamp_min(0.0) / (t.abs().sum_dim(3) + SOFTPICK_EPS)
                    }
                    (_, Some(sink)) => {
                        let e = scores.exp();
                        e.clone() / (e.sum_dim(3) + sink.clone().exp())
                    }
                    _ => softmax(scores, 3),
                };
                weights.matmul(vals)
            });
        Tensor::cat(out.collect(), 2)
    }

    /// The kernel against the oracle on fresh inputs: outputs and the gradients of q, k, v, the
    /// forget gates' input and the sink logit.
    fn check_against_reference(
        scaling: Scaling,
        forget: bool,
        sink: bool,
        causal: bool,
        seed: u64,
    ) {
        let d = device();
        let (b, h, t, dh) = (2, 3, 7, 4);
        let inputs = [
            randn([b, h, t, dh], seed, &d),
            randn([b, h, t, dh], seed + 1, &d),
            randn([b, h, t, dh], seed + 2, &d),
            randn([b, h, t, 1], seed + 3, &d),
            randn([1, h, 1, 1], seed + 4, &d),
        ];
        let scale = scaling.has_parameter().then(|| randn([h], seed + 5, &d).abs() + 0.1);
        let log_forget = |raw: &Tensor<4>| log_sigmoid(raw.clone() + 1.0).reshape([b, h, t]);
        let (fast, fast_g) = output_and_grads(&inputs, seed + 6, |x| {
            let c = forget.then(|| log_forget(&x[3]).cumsum(2));
            let terms = ScoreTerms {
                scale: scale.clone().map(|s| Tensor::from_data(s.to_data(), &x[0].device())),
                forget: c.map(|c| (c.clone(), c)),
                sink: sink.then(|| x[4].clone().reshape([h])),
                log_n_temp: (DEFAULT_FLOOR_SCALE, DEFAULT_ATTN_SCALE),
            };
            // Unused inputs still need a (zero) gradient for the helper.
            let unused = (x[3].clone().sum() + x[4].clone().sum()).reshape([1, 1, 1, 1]) * 0.0;
            softmax_attention(x[0].clone(), x[1].clone(), x[2].clone(), scaling, &terms, causal, 0)
                .0
                + unused
        });
        let (slow, slow_g) = output_and_grads(&inputs, seed + 6, |x| {
            let s = scale.clone().map(values);
            let lf = log_forget(&x[3]);
            let extras = Extras { log_forget: forget.then_some(&lf), sink: sink.then_some(&x[4]) };
            let unused = (x[3].clone().sum() + x[4].clone().sum()).reshape([1, 1, 1, 1]) * 0.0;
            naive_softmax_attention(&x[0], &x[1], &x[2], scaling, s.as_deref(), extras, causal)
                + unused
        });
        let what = format!("{} forget={forget} sink={sink} causal={causal}", scaling.name());
        assert_close(fast, slow, 1e-4, &format!("{what} output"));
        for (i, (f, s)) in fast_g.into_iter().zip(slow_g).enumerate() {
            assert_close(f, s, 1e-4, &format!("{what} grad of input {i}"));
        }
    }

    #[test]
    fn every_scaling_matches_the_reference_causal() {
        for (i, s) in Scaling::ALL.into_iter().enumerate() {
            check_against_reference(s, false, false, true, 100 + 10 * i as u64);
        }
    }

    #[test]
    fn every_scaling_matches_the_reference_bidirectional() {
        for (i, s) in Scaling::ALL.into_iter().enumerate() {
            check_against_reference(s, false, false, false, 200 + 10 * i as u64);
        }
    }

    /// FoX's bias and the sink on top of every scaling, causal and not.
    #[test]
    fn forget_and_sink_match_the_reference() {
        let mut seed = 300;
        for s in Scaling::ALL {
            for (forget, sink) in [(true, false), (false, true), (true, true)] {
                if sink && s == Scaling::Softpick {
                    continue;
                }
                for causal in [true, false] {
                    seed += 10;
                    check_against_reference(s, forget, sink, causal, seed);
                }
            }
        }
    }

    /// Hand-computed divisors on a 1-head, 3-key case: keys of norm 3, 0 and 4 (a 3-4-5 key).
    #[test]
    fn bernhard_divisors_match_hand_computed_values() {
        let d = device();
        let k = Tensor::<1>::from_floats([3.0, 0.0, 0.0, 0.0, 0.0, 4.0], &d).reshape([1, 1, 3, 2]);
        let q = Tensor::<1>::from_floats([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], &d).reshape([1, 1, 3, 2]);
        let v = Tensor::<1>::from_floats([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], &d).reshape([1, 1, 3, 2]);
        // q·k = [3, 0, 4] for every query.
        let weights = |scaling, causal| {
            values(
                softmax_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    scaling,
                    &ScoreTerms::default(),
                    causal,
                    0,
                )
                .1,
            )
        };
        let sm = |z: &[f32]| {
            let m: f32 = z.iter().map(|x| x.exp()).sum();
            z.iter().map(|x| x.exp() / m).collect::<Vec<_>>()
        };
        // sum_key_norms, causal: divisors 3, 3+0, 3+0+4 = 7.
        let mut expect = sm(&[3.0 / 3.0]);
        expect.extend([0.0, 0.0]);
        expect.extend(sm(&[3.0 / 3.0, 0.0]));
        expect.push(0.0);
        expect.extend(sm(&[3.0 / 7.0, 0.0, 4.0 / 7.0]));
        close(&weights(Scaling::SumKeyNorms, true), &expect);
        // bidirectional: every query divides by 7.
        let row = sm(&[3.0 / 7.0, 0.0, 4.0 / 7.0]);
        close(&weights(Scaling::SumKeyNorms, false), &[row.clone(), row.clone(), row].concat());
        // num_keys, causal: divisors 1, 2, 3.
        let mut expect = sm(&[3.0]);
        expect.extend([0.0, 0.0]);
        expect.extend(sm(&[1.5, 0.0]));
        expect.push(0.0);
        expect.extend(sm(&[1.0, 0.0, 4.0 / 3.0]));
        close(&weights(Scaling::NumKeys, true), &expect);
    }

    /// The layer's fused path (no monitoring) and its composed path (monitoring on) give the
    /// same outputs and gradients, so the weights a report shows belong to the model that trained.
    #[test]
    fn fused_and_monitored_paths_agree() {
        use crate::mixer::{MixContext, MixerDims, MixerFamily};
        let dims =
            MixerDims { d_model: 24, n_heads: 3, max_seq_len: 16, seed: 1, layer: 0, bias: true };
        let rope = burn::nn::RotaryEncodingConfig::new(16, 8).init(&crate::testing::ad_device());
        for (scaling, gate, rope) in [
            (Scaling::SqrtD, OutputGate::None, None),
            (Scaling::None, OutputGate::None, None),
            (Scaling::SqrtD, OutputGate::Output, None),
            (Scaling::SqrtD, OutputGate::None, Some(&rope)),
        ] {
            for causal in [true, false] {
                let x = randn([2, 11, 24], 60, &device());
                // Built and filled under the seeding lock: lazily drawn weights would take numbers
                // from the shared stream while another test holds it.
                let ad = crate::testing::ad_device();
                let layer = crate::seeding::with_seed(&ad, 62, || {
                    let layer =
                        SoftmaxAttentionConfig { gate, ..SoftmaxAttentionConfig::new(scaling) }
                            .init(&dims, &ad);
                    crate::seeding::materialize(&layer);
                    layer
                });
                let run = |diagnostics: bool| {
                    output_and_grads(&[x.clone()], 61, |v| {
                        let ctx =
                            if causal { MixContext::causal() } else { MixContext::bidirectional() };
                        layer
                            .forward(
                                v[0].clone(),
                                ctx.with_rope(rope).with_diagnostics(diagnostics),
                            )
                            .output
                    })
                };
                let ((fused, fused_g), (composed, composed_g)) = (run(false), run(true));
                let what =
                    format!("{} {gate:?} rope={} causal={causal}", scaling.name(), rope.is_some());
                assert_close(fused, composed, 1e-5, &format!("{what}: output"));
                assert_close(
                    fused_g[0].clone(),
                    composed_g[0].clone(),
                    1e-5,
                    &format!("{what}: gradient"),
                );
            }
        }
    }

    /// The composed formula the packed kernel replaces: split, `softmax_attention`, merge.
    fn composed_attention(
        qkv: Tensor<3>,
        heads: usize,
        scaling: Scaling,
        causal: bool,
    ) -> Tensor<3> {
        let [b, t, w] = qkv.dims();
        let d = w / (3 * heads);
        let part = |i: usize| {
            qkv.clone()
                .narrow(2, i * heads * d, heads * d)
                .reshape([b, t, heads, d])
                .swap_dims(1, 2)
        };
        let (y, _) = softmax_attention(
            part(0),
            part(1),
            part(2),
            scaling,
            &ScoreTerms::default(),
            causal,
            0,
        );
        y.swap_dims(1, 2).reshape([b, t, heads * d])
    }

    /// Packed fused attention equals the composed formula on fresh random inputs, outputs and
    /// gradients, causal and bidirectional, for both constant scalings, odd lengths included.
    #[test]
    fn fused_packed_attention_matches_the_composed_formula() {
        let d = device();
        for (seed, (b, t, h, dh)) in
            [(2, 13, 3, 4), (1, 1, 2, 8), (3, 9, 1, 16)].into_iter().enumerate()
        {
            for causal in [true, false] {
                for (scaling, scale) in
                    [(Scaling::SqrtD, (dh as f32).sqrt().recip()), (Scaling::None, 1.0)]
                {
                    let qkv = randn([b, t, 3 * h * dh], 40 + seed as u64, &d) * 1.5;
                    let what = format!("b{b} t{t} h{h} d{dh} causal={causal} {}", scaling.name());
                    let plain = fused::softmax_attention_packed(qkv.clone(), h, scale, causal)
                        .expect("flex");
                    assert_close(
                        plain,
                        composed_attention(qkv.clone(), h, scaling, causal),
                        1e-5,
                        &format!("{what}: no autodiff"),
                    );
                    let (fast, fast_g) = output_and_grads(&[qkv.clone()], 50, |v| {
                        fused::softmax_attention_packed(v[0].clone(), h, scale, causal)
                            .expect("flex")
                    });
                    let (slow, slow_g) = output_and_grads(&[qkv], 50, |v| {
                        composed_attention(v[0].clone(), h, scaling, causal)
                    });
                    assert_close(fast, slow, 1e-5, &format!("{what}: output"));
                    assert_close(
                        fast_g[0].clone(),
                        slow_g[0].clone(),
                        1e-5,
                        &format!("{what}: gradient"),
                    );
                }
            }
        }
    }

    fn dims() -> MixerDims {
        MixerDims { d_model: 8, n_heads: 2, max_seq_len: 16, seed: 5, layer: 1, bias: true }
    }

    fn config(spec: &str) -> SoftmaxAttentionConfig {
        let parts: Vec<&str> = if spec.is_empty() { vec![] } else { spec.split(':').collect() };
        SoftmaxAttentionConfig::parse(&parts, spec).unwrap_or_else(|e| panic!("{e}"))
    }

    fn layer(spec: &str, device: &Device) -> SoftmaxAttention {
        crate::testing::seeded_layer::<SoftmaxAttentionConfig>(spec, &dims(), device)
    }

    const LENGTH_AWARE: [&str; 8] = [
        "ssmax",
        "log_n_temp",
        "softpick",
        "forget=true",
        "gate=output",
        "sink=learned",
        "sink=zero",
        "num_keys:forget=true:gate=output:sink=zero",
    ];

    /// A prompt, single tokens and a 3-token piece through the KV cache (and FoX's carried
    /// `c_t`) give the forward's outputs, under RoPE, for every new scaling and option.
    #[test]
    fn step_equals_forward_for_the_length_aware_variants() {
        use burn::nn::RotaryEncodingConfig;
        let d = device();
        let rope = RotaryEncodingConfig::new(32, 4).init(&d);
        for spec in LENGTH_AWARE {
            let m = layer(spec, &d);
            crate::testing::assert_decoding_equals_forward(
                &m,
                randn([2, 10, 8], 400, &d),
                Some(&rope),
                &format!("softmax:{spec}"),
            );
        }
    }

    /// Eight times the training length (`max_seq_len` 16, T = 128) with logits in the hundreds:
    /// every variant stays finite, forward and backward, causal and not.
    #[test]
    fn long_inputs_with_large_logits_stay_finite() {
        let ad = crate::testing::ad_device();
        for spec in LENGTH_AWARE.iter().copied().chain(["", "none", "sum_key_norms", "qk_norm"]) {
            let m = layer(spec, &ad);
            for causal in [true, false] {
                let x = (randn([1, 128, 8], 410, &ad) * 30.0).require_grad();
                let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
                let out = m.forward(x.clone(), ctx.with_diagnostics(true));
                let y = out.output;
                let g = x.grad(&y.clone().sum().backward()).expect("input gradient");
                for (what, v) in [
                    ("output", values(y)),
                    ("gradient", values(g)),
                    ("weights", values(out.diagnostics.unwrap().weights)),
                ] {
                    assert!(
                        v.iter().all(|x| x.is_finite()),
                        "softmax:{spec} causal={causal}: non-finite {what}"
                    );
                }
            }
        }
    }

    /// Known answers: SSMax at the training length equals √d scaling (its initialisation's
    /// promise); softpick and the zero sink on hand-made logits.
    #[test]
    fn length_aware_known_answers() {
        let d = device();
        let dims = dims(); // L = 16, head dim 4
        let (q, k, v) = (
            randn([1, 2, 16, 4], 420, &d),
            randn([1, 2, 16, 4], 421, &d),
            randn([1, 2, 16, 4], 422, &d),
        );
        let ssmax = SoftmaxAttentionConfig::new(Scaling::Ssmax).init(&dims, &d);
        let terms = ssmax.terms(None, None);
        let (_, w) =
            softmax_attention(q.clone(), k.clone(), v.clone(), Scaling::Ssmax, &terms, true, 0);
        let (_, w0) = softmax_attention(q, k, v, Scaling::SqrtD, &ScoreTerms::default(), true, 0);
        assert_close(w.narrow(2, 15, 1), w0.narrow(2, 15, 1), 1e-5, "ssmax at n = L vs sqrt_d");

        // Logits [ln 2, 0, ln ½]: e^z − 1 = [1, 0, −½], softpick = [1/1.5, 0, 0].
        let z = Tensor::<1>::from_floats([2f32.ln(), 0.0, 0.5f32.ln()], &d).reshape([1, 1, 1, 3]);
        close(&values(softpick(z.clone(), None)), &[1.0 / (1.5 + SOFTPICK_EPS), 0.0, 0.0]);
        // The zero sink: logits [0, 0] -> each 1/3, the sink takes the last third.
        let z = Tensor::<4>::zeros([1, 1, 1, 2], &d);
        close(&values(softmax_with_sink(z, None, Tensor::zeros([1], &d))), &[1.0 / 3.0, 1.0 / 3.0]);
        // log_n_temp's temperature: 1 up to position 6, then ln 2·0.1 + 1 from position 7.
        let one = Tensor::<4>::ones([1, 1, 9, 1], &d);
        let terms = ScoreTerms { log_n_temp: (8.0, 0.1), ..ScoreTerms::default() };
        // With d = 1, q = k = 1 and two keys per row (bidirectional over 2 keys) the weights stay
        // uniform; use q·k differences instead: key 0 = 1, key 1 = 0.
        let keys = Tensor::<1>::from_floats([1.0, 0.0], &d).reshape([1, 1, 2, 1]);
        let (_, w) = softmax_attention(
            one,
            keys,
            Tensor::zeros([1, 1, 2, 1], &d),
            Scaling::LogNTemp,
            &terms,
            false,
            0,
        );
        let w = values(w);
        for p in 0..9 {
            let tau = if p >= 7 { 2f32.ln() * 0.1 + 1.0 } else { 1.0 };
            let want = 1.0 / (1.0 + (-tau).exp());
            assert!((w[2 * p] - want).abs() < 1e-6, "position {p}: {} vs {want}", w[2 * p]);
        }
    }

    /// The output gate by hand: the ungated layer's merged heads times `σ(x W_g + b_g)`,
    /// elementwise, then the output projection (the gated and ungated layers share q/k/v/o).
    #[test]
    fn output_gate_multiplies_each_head_channel_before_the_projection() {
        let d = device();
        let gated = layer("gate=output", &d);
        let x = randn([2, 5, 8], 430, &d);
        let (q, k, v) = gated.heads.split(x.clone());
        let (y, _) = softmax_attention(q, k, v, Scaling::SqrtD, &ScoreTerms::default(), true, 0);
        let [b, h, t, dv] = y.dims();
        let merged = y.swap_dims(1, 2).reshape([b, t, h * dv]);
        let g = gated.gate.as_ref().unwrap();
        let gate = burn::tensor::activation::sigmoid(
            x.clone().matmul(g.weight.val().unsqueeze::<3>())
                + g.bias.as_ref().unwrap().val().reshape([1, 1, h * dv]),
        );
        let want = gated.heads.output(merged * gate);
        assert_close(gated.forward(x, MixContext::causal()).output, want, 1e-5, "gate=output");
    }

    #[test]
    fn specs_parse_print_and_size() {
        for spec in [
            "",
            "none",
            "ssmax",
            "forget=true",
            "gate=output:sink=learned",
            "log_n_temp:attn_scale=0.2:floor_scale=4",
            "num_keys:forget=true:sink=zero",
        ] {
            assert_eq!(config(spec).to_string(), spec);
        }
        assert_eq!(config("sqrt_d:forget=false:gate=none:sink=none").to_string(), "");
        for (spec, needle) in [
            ("fast", "unknown scaling 'fast'"),
            ("floor_scale=4", "belong to softmax:log_n_temp"),
            ("log_n_temp:floor_scale=0", "floor_scale must be"),
            ("softpick:sink=zero", "softpick has no softmax denominator"),
            ("sink=maybe", "sink"),
            ("gate=input", "gate"),
            ("ssmax:bias=1", "unknown option"),
        ] {
            let err = SoftmaxAttentionConfig::parse(&spec.split(':').collect::<Vec<_>>(), spec)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{spec}: {err}");
        }
        // d_model 8, 2 heads of 4: the cache holds 2·8 floats per token, FoX one more per head.
        assert_eq!(config("").decode_state_floats(&dims(), 10), 160);
        assert_eq!(config("forget=true").decode_state_floats(&dims(), 10), 160 + 20);
        let m = config("forget=true:gate=output:sink=learned").init(&dims(), &device());
        assert_eq!(
            values(m.forget.as_ref().unwrap().bias.as_ref().unwrap().val()),
            vec![FORGET_BIAS_INIT; 2]
        );
        assert_eq!(m.gate.as_ref().unwrap().weight.dims(), [8, 8]);
        assert_eq!(values(m.sink.as_ref().unwrap().val()), vec![0.0; 2]);
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }
}
