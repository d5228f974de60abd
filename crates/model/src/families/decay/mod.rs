//! Decay-gated linear attention: one recurrence, three gates.
//!
//! Per head, with a feature map φ on queries and keys (default `identity`, any of
//! [`crate::feature_map`]), a state `S_t ∈ R^{F×d_v}` and a gate `G_t`:
//!
//! `S_t = G_t ⊙ S_{t−1} + φ(k_t) v_tᵀ`,  `o_t = S_tᵀ φ(q_t)`
//!
//! that is `o_i = Σ_{j≤i} (Σ_f φ(q_i)_f φ(k_j)_f Π_{j<l≤i} G_{l,f}) v_j`: linear attention whose
//! memory fades. `norm=sum` divides by `φ(q_t)·z_t`, `z_t = G_t ⊙ z_{t−1} + φ(k_t)`, through
//! [`crate::feature_map::safe_denominator`]; the default `norm=none` keeps the numerator, as the papers do.
//!
//! | gate | `G_t` | parameters | source |
//! |---|---|---|---|
//! | `retnet` | scalar `γ_h = 1 − 2^(−5−h)` per head `h = 0..heads−1`, fixed | none | Sun et al. 2023, "Retentive Network" (arXiv 2307.08621) |
//! | `mamba2` | scalar `a_t = exp(−Δ_t·exp(A_log_h))`, `Δ_t = softplus(w_h·x_t + dt_bias_h)` | `dt`: Linear `d_model → heads` (its bias is `dt_bias`), `a_log: [heads]` | Dao & Gu 2024, "Transformers are SSMs" (Mamba-2 / SSD, arXiv 2405.21060) |
//! | `forget` | scalar `f_t = σ(w_h·x_t + b_h)`, `b_h` initialised to 5 (`f ≈ 0.993`) | `alpha`: Linear `d_model → heads` | FoX's forget gate (Lin et al. 2025, arXiv 2503.02130) on linear attention: the linear side of the {softmax, linear} × {gate, no gate} design |
//! | `gla` | vector `α_t ∈ (0,1)^F` per head, broadcast over `d_v`: `log α_t = logsigmoid(x_t W_α + b_α)/16` | `alpha`: Linear `d_model → heads·F` | Yang et al. 2024, "Gated Linear Attention Transformers" (arXiv 2312.06635) |
//!
//! Initialisation (drawn from the model seed and the layer index, like Performer's features,
//! so it repeats per seed and leaves the backend's generator, and with it every other weight,
//! untouched): `dt_bias = softplus⁻¹(dt)`, `dt ~ log-uniform[1e-3, 0.1]`; `a_log = ln U(1, 16)`;
//! the weights of `dt` and `alpha` `U(−1/√d_model, 1/√d_model)` (Burn's `Linear` default);
//! `b_α = 0`, so at `x W_α = 0` a GLA gate starts at `2^(−1/16) ≈ 0.958`.
//!
//! Differences from the reference layers (fla-org/flash-linear-attention, which these follow):
//! queries are not scaled by `d_k^(−½)` (as in this crate's `linear`; with `norm=sum` it cancels);
//! there is no output norm or output gate, no xPos (use the model's RoPE);
//! Mamba-2's input scaling `Δ_t·x_t` and skip `D·x_t` are left out (the recurrence above is fla's
//! `simple_gla`); GLA's `W_α` is full rank where fla factors it through rank 16.
//!
//! **Log space.** Gates enter only as `log G_t ≤ 0`. With `b_i = Σ_{l≤i} log G_l` (a cumulative
//! sum inside a chunk, or over the sequence), the decay between key `j` and query `i ≥ j` is
//! `exp(b_i − b_j)`; the chunked and parallel forms exponentiate only such differences with
//! `j ≤ i` (never `exp(−b_j)` alone, a positive cumulative sum that overflows after a few strong
//! gates), masking the `j > i` half *before* `exp`. Three forms, equal up to rounding:
//! - [`parallel`]: the `T × T` weights `A_ij = Σ_f φq_if φk_jf exp(b_if − b_jf)` (the implied
//!   weights diagnostics report). For a scalar gate one `T × T` decay matrix; for the vector gate
//!   they are assembled in blocks of `chunk` against a reference point at each block's start
//!   (diagonal blocks in sub-blocks of [`VECTOR_SUBCHUNK`]), so no `T × T × F` tensor is built.
//! - [`chunked`] (the training default, `chunk=64`): quadratic inside a chunk, a carried state
//!   between chunks: `o_i = A^{intra} V + (φq_i ⊙ e^{b_i}) S_{start}`,
//!   `S_{end} = e^{b_C} ⊙ S_{start} + Σ_j (φk_j ⊙ e^{b_C − b_j}) v_jᵀ` (fla's chunk form). Memory
//!   `O(T·C)` plus one `F × d_v` state per chunk; never a `T × T` tensor or a state per token.
//!   The vector gate's exact in-chunk decays `exp(b_if − b_jf)` cost `C × C × F` per chunk, so,
//!   as fla does, they are built only inside sub-chunks of [`VECTOR_SUBCHUNK`] tokens and
//!   bridged between sub-chunks by reference points (the block scheme of [`parallel`]).
//! - [`recurrent`]: one token at a time, as decoding does for single tokens (prompts use the
//!   chunked form from the carried state).
//!
//! `conv=K` runs [`ShortConv`](crate::short_conv::ShortConv) (causal depthwise, then SiLU;
//! fla's `K = 4`) over the projected `[q | k | v]` before heads are split; off by default so an
//! A/B can isolate it.
//!
//! `norm=sum` appends a column of ones to `v`: the same sums then carry `z_t` as the state's last
//! column, so every form gets the denominator for free.
//!
//! Bidirectional use (`model.causal = false`) decays both ways:
//! `A_ij = Σ_f φq_if φk_jf exp(−|b_if − b_jf|)` (RetNet's bidirectional retention for the fixed
//! gate), computed from the causal weights as `L(q, k) + L(k, q)ᵀ`, the diagonal counted once.
//!
//! This file holds the config: its spec grammar, its catalogue and the [`MixerFamily`] impl that
//! builds the layer. The rest of the family: `gate.rs` (the gate choice and its constants),
//! `forms.rs` (the parallel, chunked and recurrent computations), `layer.rs` (the module: its
//! gates, features, forward and decoding) and `tests/` (the naive recurrence and the tests).

mod forms;
mod gate;
mod layer;
#[cfg(test)]
mod tests;

pub use forms::{VECTOR_SUBCHUNK, chunked, parallel, recurrent, weights};
pub use gate::{GLA_LOGIT_NORMALIZER, Gate, retnet_log_gamma};
pub use layer::DecayAttention;

use crate::feature_map::{
    DEFAULT_CHUNK, DEFAULT_PERFORMER_FEATURES, DEFAULT_TAYLOR_DIM, FeatureMap, FeatureMapKind,
    LinearForm, Normalizer,
};
use crate::gates::{FORGET_BIAS_INIT, family_rng, ssm_decay_params, uniform_linear};
use crate::heads::HeadProjection;
use crate::mixer::{Convention, MixerDims, MixerError, MixerFamily, SpecError, VariantInfo};
use crate::options::{parse_options, split_choice, write_with_options};
use crate::recurrent_layer::{conv_state_floats, short_conv};
use crate::short_conv::check_kernel;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The gate parameters' stream tag ("decay_ga"), distinct from every other family's.
const GATE_TAG: u64 = 0x6465_6361_795f_6761;

/// `decay:<retnet|mamba2|gla|forget>[:map=<feature map>][:feature_dim=N][:features=N][:norm=none|sum][:form=chunked|parallel|recurrent][:chunk=N][:conv=K]`.
/// The options after the gate are this struct's fields (see [`crate::options`]); `feature_dim`
/// and `features` belong to `map=taylor` and `map=performer`, as in `linear`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecayAttentionConfig {
    /// The spec's positional part, not an option.
    #[serde(skip)]
    pub gate: Gate,
    pub map: FeatureMapKind,
    /// Taylor: per-head width `d'` of the q/k projection.
    pub feature_dim: usize,
    /// Performer: number of random features `m`.
    pub features: usize,
    /// `none` by default here: decay-gated models usually run without the row normaliser.
    pub norm: Normalizer,
    pub form: LinearForm,
    /// Tokens per chunk of the chunked form (and per block of the vector gate's parallel form).
    pub chunk: usize,
    /// Kernel of the short convolution on q/k/v (0 = none).
    pub conv: usize,
}

impl DecayAttentionConfig {
    pub fn new(gate: Gate) -> Self {
        Self {
            gate,
            map: FeatureMapKind::Identity,
            feature_dim: DEFAULT_TAYLOR_DIM,
            features: DEFAULT_PERFORMER_FEATURES,
            norm: Normalizer::None,
            form: LinearForm::Chunked,
            chunk: DEFAULT_CHUNK,
            conv: 0,
        }
    }

    /// Features per head after φ (the state's rows, and GLA's gate width).
    pub fn feature_count(&self, dims: &MixerDims) -> usize {
        self.map.output_dim(self.qk_width(dims), self.features)
    }
}

impl Default for DecayAttentionConfig {
    fn default() -> Self {
        Self::new(Gate::Retnet)
    }
}

impl fmt::Display for DecayAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_with_options(f, self.gate.name(), self)
    }
}

impl MixerFamily for DecayAttentionConfig {
    const NAME: &'static str = "decay";
    const SYNTAX: &'static str = "decay:<retnet|mamba2|gla|forget>[:map=<feature map>][:norm=none|sum][:form=chunked|parallel|recurrent][:chunk=N][:conv=K]";
    type Module = DecayAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let (gate, options) =
            split_choice(parts, Self::NAME, "gate", &Gate::ALL, Gate::name, spec)?;
        let c = Self { gate, ..parse_options(options, spec)? };
        c.map
            .check_options(c.feature_dim, c.features, |m| format!("map={}", m.name()))
            .map_err(|reason| SpecError::new(spec, reason))?;
        if c.chunk == 0 {
            return Err(SpecError::new(spec, "chunk must be at least 1"));
        }
        check_kernel(c.conv).map_err(|reason| SpecError::new(spec, reason))?;
        Ok(c)
    }

    fn validate(&self, dims: &MixerDims) -> Result<(), MixerError> {
        if self.map == FeatureMapKind::Cosformer && dims.max_seq_len == 0 {
            return Err(MixerError::PeriodNeedsContext { mixer: "decay with map=cosformer" });
        }
        Ok(())
    }

    /// `map=taylor` projects queries and keys to its own width `d'`.
    fn qk_width(&self, dims: &MixerDims) -> usize {
        self.map.qk_width(dims.head_dim(), self.feature_dim)
    }

    /// The state `S` (`F × d_v` per head), plus `z` (`F` per head) with `norm=sum`, plus the
    /// convolution's last `K − 1` inputs with `conv=K`; fixed in `seq_len` (zoology's
    /// `heads·d_k·d_v` for identity features without a convolution).
    fn decode_state_floats(&self, dims: &MixerDims, _seq_len: usize) -> usize {
        let f = self.feature_count(dims);
        let z = if self.norm == Normalizer::Sum { f } else { 0 };
        let conv = conv_state_floats(
            self.conv,
            dims.n_heads * (2 * self.qk_width(dims) + dims.head_dim()),
        );
        dims.n_heads * (f * dims.head_dim() + z) + conv
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> DecayAttention {
        let d_qk = self.qk_width(dims);
        let f = self.feature_count(dims);
        let (h, d) = (dims.n_heads, dims.d_model);
        let mut rng = family_rng(dims, GATE_TAG);
        let (mut dt, mut a_log, mut alpha) = (None, None, None);
        match self.gate {
            Gate::Retnet => {}
            Gate::Mamba2 => {
                let (linear, log_rate) = ssm_decay_params(&mut rng, dims, (1.0, 16.0), device);
                (dt, a_log) = (Some(linear), Some(log_rate));
            }
            Gate::Gla => alpha = Some(uniform_linear(&mut rng, d, h * f, vec![0.0; h * f], device)),
            Gate::Forget => {
                alpha = Some(uniform_linear(&mut rng, d, h, vec![FORGET_BIAS_INIT; h], device))
            }
        }
        // Drawn after the gates, so adding the option leaves the gates of a seed as they were.
        let conv = short_conv(self.conv, h * (2 * d_qk + dims.head_dim()), &mut rng, device);
        DecayAttention {
            heads: HeadProjection::new(dims, d_qk, device),
            feature_map: FeatureMap::new(self.map, d_qk, self.features, dims, device),
            dt,
            a_log,
            alpha,
            conv,
            gate: self.gate,
            normalize: self.norm == Normalizer::Sum,
            form: self.form,
            chunk: self.chunk,
        }
    }

    const VARIANT_REQUIRED: bool = true;

    const BENCH: &'static [&'static str] = &["decay:gla"];

    fn variants() -> Vec<&'static str> {
        Gate::ALL.iter().map(|g| g.name()).collect()
    }

    fn variant(&self) -> Option<&'static str> {
        Some(self.gate.name())
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "order",
                Convention::new(
                    serde_json::json!(["conv", "rope", "feature_map"]),
                    "q and k pass the short convolution (conv=K), then RoPE, then the feature map",
                ),
            ),
            (
                "denominator_eps",
                Convention::number(
                    crate::feature_map::DENOMINATOR_EPS,
                    "norm=sum: the denominator z becomes sign(z)·max(|z|, ε), sign(0) = +1",
                ),
            ),
            (
                "gla_logit_normalizer",
                Convention::number(
                    GLA_LOGIT_NORMALIZER,
                    "gla: log a = log σ(x W_a) / this constant (fla's GLA)",
                ),
            ),
            (
                "gla_gate_width",
                Convention::new("heads × feature width", "gla: the gate projection's output width"),
            ),
            (
                "forget_gate_parameter",
                Convention::new("alpha", "forget: its gate's projection is stored as Decay.alpha"),
            ),
            (
                "gate_bias",
                Convention::new(
                    true,
                    "gate projections keep their biases even under model.bias = false",
                ),
            ),
            (
                "conv_layout",
                Convention::new(
                    "[K, 3·width], no bias, tap K−1 on the current token, one SiLU after",
                    "the short convolution's weight over the packed q|k|v channels",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo {
                spec: "decay:retnet",
                formula: "S_t = γ_h S_{t−1} + k_t v_tᵀ, o_t = S_tᵀ q_t, γ_h = 1 − 2^(−5−h) fixed per head (RetNet)",
            },
            VariantInfo {
                spec: "decay:mamba2",
                formula: "S_t = a_t S_{t−1} + k_t v_tᵀ, a_t = exp(−Δ_t e^{A_h}), Δ_t = softplus(w_h·x_t + b_h) (Mamba-2 / SSD)",
            },
            VariantInfo {
                spec: "decay:gla",
                formula: "S_t = diag(α_t) S_{t−1} + k_t v_tᵀ, log α_t = logsigmoid(x_t W_α)/16 per key channel (GLA)",
            },
            VariantInfo {
                spec: "decay:forget",
                formula: "S_t = f_t S_{t−1} + k_t v_tᵀ, f_t = σ(w_h·x_t + b_h), b_h from 5 (FoX's forget gate on linear attention)",
            },
            VariantInfo {
                spec: "decay:gla:conv=4",
                formula: "GLA after a causal depthwise convolution (kernel 4) + SiLU on q, k, v (fla's GLA layer)",
            },
        ]
    }
}
