//! Decay-gated linear attention: one recurrence, three gates.
//!
//! Per head, with a feature map φ on queries and keys (default `identity`, any of
//! [`crate::feature_map`]), a state `S_t ∈ R^{F×d_v}` and a gate `G_t`:
//!
//! `S_t = G_t ⊙ S_{t−1} + φ(k_t) v_tᵀ`,  `o_t = S_tᵀ φ(q_t)`
//!
//! that is `o_i = Σ_{j≤i} (Σ_f φ(q_i)_f φ(k_j)_f Π_{j<l≤i} G_{l,f}) v_j`: linear attention whose
//! memory fades. `norm=sum` divides by `φ(q_t)·z_t`, `z_t = G_t ⊙ z_{t−1} + φ(k_t)`, through
//! [`safe_denominator`]; the default `norm=none` keeps the numerator, as the papers do.
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
//! `conv=K` runs [`ShortConv`] (causal depthwise, then SiLU; fla's `K = 4`) over the projected
//! `[q | k | v]` before heads are split; off by default so an A/B can isolate it.
//!
//! `norm=sum` appends a column of ones to `v`: the same sums then carry `z_t` as the state's last
//! column, so every form gets the denominator for free.
//!
//! Bidirectional use (`model.causal = false`) decays both ways:
//! `A_ij = Σ_f φq_if φk_jf exp(−|b_if − b_jf|)` (RetNet's bidirectional retention for the fixed
//! gate), computed from the causal weights as `L(q, k) + L(k, q)ᵀ`, the diagonal counted once.

use crate::chunking::{RecurrentState, causal_decay, to_chunks};
use crate::feature_map::{
    DEFAULT_CHUNK, DEFAULT_PERFORMER_FEATURES, DEFAULT_TAYLOR_DIM, FeatureMap, FeatureMapKind,
    LinearForm, Normalizer, safe_denominator,
};
use crate::gates::{FORGET_BIAS_INIT, family_rng, ssm_decay_params, ssm_log_gates, uniform_linear};
use crate::heads::{HeadProjection, causal_mask, sequence_diagnostics};
use crate::mixer::{
    Convention, MixContext, MixOutput, MixerDims, MixerFamily, SequenceMixer, SpecError,
    VariantInfo,
};
use crate::options::{parse_options, split_choice, write_with_options};
use crate::short_conv::{ShortConv, check_kernel};
use burn::module::{Module, Param};
use burn::nn::{Linear, RotaryEncoding};
use burn::tensor::{Bool, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::fmt;

/// GLA's `gate_logit_normalizer`: `log α = logsigmoid(·)/16`.
pub const GLA_LOGIT_NORMALIZER: f32 = 16.0;
/// The vector gate's exact in-chunk decays (`C × C × F` per chunk) are built over sub-chunks of
/// this many tokens (fla's choice), with reference points between them.
pub const VECTOR_SUBCHUNK: usize = 16;

/// Which decay (the spec's positional part).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Gate {
    /// Fixed scalar per head.
    #[default]
    Retnet,
    /// Data-dependent scalar per head and token.
    Mamba2,
    /// Data-dependent vector per head and token, one value per key feature.
    Gla,
    /// Data-dependent scalar per head and token, a sigmoid: FoX's forget gate on linear attention.
    Forget,
}

impl Gate {
    pub const ALL: [Gate; 4] = [Self::Retnet, Self::Mamba2, Self::Gla, Self::Forget];

    pub fn name(self) -> &'static str {
        match self {
            Self::Retnet => "retnet",
            Self::Mamba2 => "mamba2",
            Self::Gla => "gla",
            Self::Forget => "forget",
        }
    }
}

/// `log γ_h = ln(1 − 2^(−5−h))`, RetNet's fixed decay of head `h`.
pub fn retnet_log_gamma(head: usize) -> f32 {
    (-(2f64.powi(-5 - head as i32))).ln_1p() as f32
}

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

    fn validate(&self, dims: &MixerDims) -> Result<(), String> {
        if self.map == FeatureMapKind::Cosformer && dims.max_seq_len == 0 {
            return Err(
                "decay with map=cosformer needs model.max_seq_len > 0 (its re-weighting period)"
                    .into(),
            );
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
        let conv = if self.conv > 0 {
            ShortConv::state_floats(
                self.conv,
                dims.n_heads * (2 * self.qk_width(dims) + dims.head_dim()),
            )
        } else {
            0
        };
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
        let conv = (self.conv > 0)
            .then(|| ShortConv::new(h * (2 * d_qk + dims.head_dim()), self.conv, &mut rng, device));
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
        ]
    }
}

/// The gate parameters' stream tag ("decay_ga"), distinct from every other family's.
const GATE_TAG: u64 = 0x6465_6361_795f_6761;

/// Multi-head decay-gated linear attention.
#[derive(Module, Debug)]
pub struct DecayAttention {
    pub heads: HeadProjection,
    pub feature_map: FeatureMap,
    /// `mamba2`: `x ↦ w·x + dt_bias`, `weight: [d_model, heads]`.
    pub dt: Option<Linear>,
    /// `mamba2`: `[heads]`, the decay rate `exp(A_log)`'s log.
    pub a_log: Option<Param<Tensor<1>>>,
    /// The data-dependent sigmoid gate's projection: `gla` `x ↦ x W_α + b_α`, `weight:
    /// [d_model, heads·F]`, head-major; `forget` `x ↦ w·x + b`, `weight: [d_model, heads]`.
    pub alpha: Option<Linear>,
    /// `conv=K`: the short convolution on `[q | k | v]` before heads are split.
    pub conv: Option<ShortConv>,
    #[module(skip)]
    gate: Gate,
    #[module(skip)]
    normalize: bool,
    #[module(skip)]
    form: LinearForm,
    #[module(skip)]
    chunk: usize,
}

impl DecayAttention {
    /// Per-head log gates of the tokens in `x`, all `≤ 0`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, G]`, `G = 1` (scalar gates) or `F` (`gla`)
    pub fn log_gates(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        let h = self.heads.n_heads();
        match self.gate {
            Gate::Retnet => {
                let logs: Vec<f32> = (0..h).map(retnet_log_gamma).collect();
                Tensor::<1>::from_floats(logs.as_slice(), &x.device())
                    .reshape([1, h, 1, 1])
                    .expand([b, h, t, 1])
            }
            Gate::Mamba2 => ssm_log_gates(
                self.dt.as_ref().expect("mamba2 has dt"),
                self.a_log.as_ref().expect("mamba2 has a_log"),
                x,
            ),
            Gate::Gla => {
                let alpha = self.alpha.as_ref().expect("gla has alpha");
                let logits = crate::fused::affine(alpha, x);
                let f = logits.dims()[2] / h;
                (crate::fused::log_sigmoid(logits) / GLA_LOGIT_NORMALIZER)
                    .reshape([b, t, h, f])
                    .swap_dims(1, 2)
            }
            Gate::Forget => {
                let forget = self.alpha.as_ref().expect("forget has its gate");
                crate::fused::log_sigmoid(crate::fused::affine(forget, x))
                    .swap_dims(1, 2)
                    .reshape([b, h, t, 1])
            }
        }
    }

    /// Projected (and with `conv=K` convolved), position-encoded and feature-mapped
    /// `(φ(q), φ(k), v)` for tokens starting at `offset`; `conv_history` is read and advanced.
    fn features(
        &self,
        x: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
        conv_history: &mut Option<Tensor<3>>,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let qkv = self.heads.project(x);
        let qkv = match &self.conv {
            Some(conv) => conv.continue_from(qkv, conv_history),
            None => qkv,
        };
        let (q, k, v) = self.heads.split_packed_rotated(qkv, rope, offset);
        (self.feature_map.apply(q, offset), self.feature_map.apply(k, offset), v)
    }
}

impl SequenceMixer for DecayAttention {
    /// `S` (with `z` as its last column under `norm=sum`).
    type State = RecurrentState;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let log_g = self.log_gates(x.clone());
        let (q, k, v) = self.features(x, ctx.rope, 0, &mut None);
        let y = match (ctx.causal, self.form) {
            (false, _) => {
                weights(q.clone(), k.clone(), log_g.clone(), false, self.normalize, self.chunk)
                    .matmul(v)
            }
            (true, LinearForm::Parallel) => {
                parallel(q.clone(), k.clone(), v, log_g.clone(), self.normalize, self.chunk)
            }
            (true, LinearForm::Chunked) => chunked_from_empty(
                q.clone(),
                k.clone(),
                v,
                log_g.clone(),
                self.chunk,
                self.normalize,
            ),
            (true, LinearForm::Recurrent) => {
                recurrent(q.clone(), k.clone(), v, log_g.clone(), self.normalize, None).0
            }
        };
        let diagnostics = ctx.diagnostics.then(|| {
            sequence_diagnostics(
                weights(q, k, log_g, ctx.causal, self.normalize, self.chunk),
                ctx.causal,
            )
        });
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> RecurrentState {
        RecurrentState::default()
    }

    fn step(
        &self,
        x: Tensor<3>,
        state: &mut RecurrentState,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let seq = x.dims()[1];
        let log_g = self.log_gates(x.clone());
        let (q, k, v) = self.features(x, rope, state.position, &mut state.conv);
        let (y, s) = if seq == 1 {
            recurrent(q, k, v, log_g, self.normalize, state.state.as_ref())
        } else {
            chunked(q, k, v, log_g, self.chunk, self.normalize, state.state.as_ref())
        };
        state.state = Some(s);
        state.position += seq;
        self.heads.merge(y)
    }
}

/// [`chunked`] from the empty state, through the fused recurrence on flex (the same numbers;
/// its test is `fused_recurrence_matches_the_composed_chunked_form`).
fn chunked_from_empty(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    chunk: usize,
    normalize: bool,
) -> Tensor<4> {
    let dv = v.dims()[3];
    match crate::fused::gated_recurrence(q, k, with_ones(v, normalize), log_g, None, chunk) {
        Ok(y) => divide_out(y, normalize),
        Err((q, k, v, log_g, _)) => {
            chunked(q, k, v.narrow(3, 0, dv), log_g, chunk, normalize, None).0
        }
    }
}

/// `v` with a column of ones appended under `norm=sum`, so the sums also carry `z`.
fn with_ones(v: Tensor<4>, normalize: bool) -> Tensor<4> {
    if !normalize {
        return v;
    }
    let [b, h, t, _] = v.dims();
    let ones = Tensor::<4>::ones([b, h, t, 1], &v.device());
    Tensor::cat(vec![v, ones], 3)
}

/// Splits `[num | den]` (from [`with_ones`]) into `num / safe(den)`; the identity without `norm`.
fn divide_out(y: Tensor<4>, normalize: bool) -> Tensor<4> {
    if !normalize {
        return y;
    }
    let dv = y.dims()[3] - 1;
    y.clone().narrow(3, 0, dv) / safe_denominator(y.narrow(3, dv, 1))
}

/// Causal scores with decay inside one block: `A_ij = Σ_f q_if k_jf exp(b_if − b_jf)` for
/// `j ≤ i`, zero above the diagonal. `b` holds cumulative log gates along the block; the
/// differences above the diagonal (positive) are masked before `exp`.
///
/// # Shapes
/// - `q, k`: `[x, n, c, F]`, `b`: `[x, n, c, G]` (G = 1 or F) -> `[x, n, c, c]`
fn decayed_scores(q: Tensor<4>, k: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    let [x, n, c, f] = q.dims();
    if b.dims()[3] == 1 {
        q.matmul(k.swap_dims(2, 3)) * causal_decay(b)
    } else {
        let future = causal_mask(c, c, 0, &q.device());
        let mask = future.reshape([1, 1, c, c, 1]).expand([x, n, c, c, f]);
        let diff = b.clone().unsqueeze_dim::<5>(3) - b.unsqueeze_dim::<5>(2); // [x, n, i, j, f]
        let decay = diff.mask_fill(mask.clone(), 0.0).exp().mask_fill(mask, 0.0);
        (q.unsqueeze_dim::<5>(3) * k.unsqueeze_dim::<5>(2) * decay).sum_dim(4).reshape([x, n, c, c])
    }
}

/// The implied attention weights `A_ij = Σ_f φq_if φk_jf exp(b_if − b_jf)` over `j ≤ i`
/// (causal), or with `exp(−|b_if − b_jf|)` over all `j` (bidirectional); divided by their row
/// sums (through [`safe_denominator`]) when `normalize`. `block` is the vector gate's block size.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]`, `log_g`: `[batch, heads, seq, G]` -> `[batch, heads, seq, seq]`
pub fn weights(
    q: Tensor<4>,
    k: Tensor<4>,
    log_g: Tensor<4>,
    causal: bool,
    normalize: bool,
    block: usize,
) -> Tensor<4> {
    let lower = causal_weights(q.clone(), k.clone(), log_g.clone(), block);
    let scores = if causal {
        lower
    } else {
        // The upper half is the lower half with queries and keys swapped; its diagonal repeats.
        let t = q.dims()[2];
        let [b, h, _, _] = lower.dims();
        let not_above =
            causal_mask(t, t, 0, &q.device()).bool_not().unsqueeze::<4>().expand([b, h, t, t]);
        lower + causal_weights(k, q, log_g, block).swap_dims(2, 3).mask_fill(not_above, 0.0)
    };
    if normalize {
        let den = scores.clone().sum_dim(3);
        scores / safe_denominator(den)
    } else {
        scores
    }
}

/// Causal, unnormalised [`weights`].
fn causal_weights(q: Tensor<4>, k: Tensor<4>, log_g: Tensor<4>, block: usize) -> Tensor<4> {
    let [b, h, t, f] = q.dims();
    let c = block.max(1).min(t);
    if log_g.dims()[3] == 1 || t <= c.min(VECTOR_SUBCHUNK) {
        return decayed_scores(q, k, log_g.cumsum(2));
    }
    if c == t {
        return causal_weights(q, k, log_g, VECTOR_SUBCHUNK);
    }
    // Vector gate: a T × T × F decay tensor would not fit at training lengths, so build the
    // weights block row by block row. Block m's queries see earlier blocks' keys through the
    // reference point r_m (the cumulative log gate just before the block):
    // exp(b_i − b_j) = exp(b_i − r_m) · exp(r_m − b_j), both factors ≤ 1. The diagonal blocks
    // recurse down to sub-blocks of VECTOR_SUBCHUNK, where the exact C × C × F decays are built.
    let device = q.device();
    let n = t.div_ceil(c);
    let tp = n * c;
    let (qc, kc, gc) = (to_chunks(q, n, c), to_chunks(k, n, c), to_chunks(log_g, n, c));
    let local = gc.clone().cumsum(2); // b_i − r_m
    let diagonal = causal_weights(qc.clone(), kc.clone(), gc.clone(), VECTOR_SUBCHUNK); // [bh, n, c, c]
    let global = gc.reshape([b * h, 1, tp, f]).cumsum(2); // b_j
    let ends = global.clone().reshape([b * h, n, c, f]).narrow(2, c - 1, 1); // [bh, n, 1, f]
    let refs =
        Tensor::cat(vec![Tensor::zeros([b * h, 1, 1, f], &device), ends.narrow(1, 0, n - 1)], 1);
    // Key j is seen through r_m only from a later block (j < m·c); the rest is masked before exp.
    let later: Vec<bool> = (0..n).flat_map(|m| (0..tp).map(move |j| j >= m * c)).collect();
    let hidden = Tensor::<2, Bool>::from_bool(TensorData::new(later, [n, tp]), &device)
        .reshape([1, n, tp, 1])
        .expand([b * h, n, tp, f]);
    let decay = (refs - global).mask_fill(hidden.clone(), 0.0).exp().mask_fill(hidden, 0.0); // [bh, n, tp, f]
    let keys = kc.reshape([b * h, 1, tp, f]) * decay;
    let cross = (qc * local.exp()).matmul(keys.swap_dims(2, 3)); // [bh, n, c, tp], zero from column m·c on
    let rows: Vec<Tensor<4>> = (0..n)
        .map(|m| {
            let row = cross.clone().narrow(1, m, 1);
            let mut parts = Vec::with_capacity(3);
            if m > 0 {
                parts.push(row.clone().narrow(3, 0, m * c));
            }
            parts.push(diagonal.clone().narrow(1, m, 1));
            if m + 1 < n {
                parts.push(row.narrow(3, (m + 1) * c, tp - (m + 1) * c));
            }
            Tensor::cat(parts, 3)
        })
        .collect();
    Tensor::cat(rows, 1).reshape([b, h, tp, tp]).narrow(2, 0, t).narrow(3, 0, t)
}

/// The parallel form: `y = A V` with the `T × T` [`weights`].
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]`, `v`: `[batch, heads, seq, d_v]`, `log_g`: `[batch, heads, seq, G]`
///   -> `[batch, heads, seq, d_v]`
pub fn parallel(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    normalize: bool,
    block: usize,
) -> Tensor<4> {
    weights(q, k, log_g, true, normalize, block).matmul(v)
}

/// The chunked form from `state` (zeros when `None`); returns the outputs and the state after
/// the last token (`[batch, heads, F, d_v]`, with `z` as an extra last column when `normalize`).
/// `chunk` need not divide `seq`.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]`, `v`: `[batch, heads, seq, d_v]`, `log_g`: `[batch, heads, seq, G]`
///   -> `[batch, heads, seq, d_v]`
pub fn chunked(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    chunk: usize,
    normalize: bool,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    assert!(chunk > 0, "chunk size must be at least 1");
    let v = with_ones(v, normalize);
    let [b, h, t, f] = q.dims();
    let (dv, g) = (v.dims()[3], log_g.dims()[3]);
    let device = q.device();
    let c = chunk.min(t);
    let n = t.div_ceil(c);
    let (qc, kc, vc, gc) =
        (to_chunks(q, n, c), to_chunks(k, n, c), to_chunks(v, n, c), to_chunks(log_g, n, c));
    let cum = gc.clone().cumsum(2); // b_i inside each chunk, ≤ 0
    let total = cum.clone().narrow(2, c - 1, 1); // b_C: [bh, n, 1, G]

    // Inside chunks: the decayed quadratic form (for the vector gate in sub-chunks, see
    // `causal_weights`; each chunk is a sequence of its own there).
    let scores = if g == 1 {
        decayed_scores(qc.clone(), kc.clone(), cum.clone())
    } else {
        causal_weights(qc.clone(), kc.clone(), gc, VECTOR_SUBCHUNK)
    };
    let intra = scores.matmul(vc.clone());

    // Each chunk's own keys as they stand at its end, and its total decay.
    let contribution = (kc * (total.clone() - cum.clone()).exp()).swap_dims(2, 3).matmul(vc); // [bh, n, F, dv]
    let carry = total.exp().swap_dims(2, 3); // [bh, n, G, 1], decays the state's rows
    let mut s = match state {
        Some(s) => s.clone().reshape([b * h, f, dv]),
        None => Tensor::zeros([b * h, f, dv], &device),
    };
    let mut before = Vec::with_capacity(n);
    for m in 0..n {
        before.push(s.clone().unsqueeze_dim::<4>(1));
        s = s * carry.clone().narrow(1, m, 1).reshape([b * h, g, 1])
            + contribution.clone().narrow(1, m, 1).reshape([b * h, f, dv]);
    }
    let inter = (qc * cum.exp()).matmul(Tensor::cat(before, 1));
    let y = (intra + inter).reshape([b, h, n * c, dv]).narrow(2, 0, t);
    (divide_out(y, normalize), s.reshape([b, h, f, dv]))
}

/// The recurrence itself, one token at a time from `state` (zeros when `None`); returns the
/// outputs and the state after the last token, as [`chunked`].
///
/// # Shapes
/// - as [`chunked`]
pub fn recurrent(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    normalize: bool,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let v = with_ones(v, normalize);
    let [b, h, t, f] = q.dims();
    let dv = v.dims()[3];
    let mut s = match state {
        Some(s) => s.clone(),
        None => Tensor::zeros([b, h, f, dv], &q.device()),
    };
    let mut outputs = Vec::with_capacity(t);
    for i in 0..t {
        let token = |x: &Tensor<4>| x.clone().narrow(2, i, 1);
        let gate = token(&log_g).exp().swap_dims(2, 3); // [b, h, G, 1]
        s = s * gate + token(&k).swap_dims(2, 3).matmul(token(&v));
        outputs.push(token(&q).matmul(s.clone()));
    }
    (divide_out(Tensor::cat(outputs, 2), normalize), s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        ad_device, assert_close, assert_output_and_grads_close, assert_values_close, device,
        output_and_grads, randn, values,
    };
    use burn::nn::RotaryEncodingConfig;
    use burn::tensor::activation::sigmoid;

    /// The textbook recurrence, in linear (not log) space, one token at a time, with `z` kept
    /// apart: `S_t = G_t ⊙ S_{t−1} + k_t v_tᵀ`, `z_t = G_t ⊙ z_{t−1} + k_t`,
    /// `o_t = S_tᵀ q_t (/ q_t·z_t)`. Outer and inner products by broadcasting, not matmul.
    fn naive_decay_attention(
        q: &Tensor<4>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        log_g: &Tensor<4>,
        normalize: bool,
    ) -> Tensor<4> {
        let [b, h, t, f] = q.dims();
        let (dv, g) = (v.dims()[3], log_g.dims()[3]);
        let dev = q.device();
        let mut s = Tensor::<4>::zeros([b, h, f, dv], &dev);
        let mut z = Tensor::<4>::zeros([b, h, f, 1], &dev);
        let mut out = Vec::new();
        for i in 0..t {
            let gate = log_g.clone().narrow(2, i, 1).exp().reshape([b, h, g, 1]);
            let ki = k.clone().narrow(2, i, 1).reshape([b, h, f, 1]);
            let vi = v.clone().narrow(2, i, 1); // [b, h, 1, dv]
            s = gate.clone() * s + ki.clone() * vi;
            z = gate * z + ki;
            let qi = q.clone().narrow(2, i, 1).reshape([b, h, f, 1]);
            let num = (qi.clone() * s.clone()).sum_dim(2); // [b, h, 1, dv]
            out.push(if normalize {
                num / safe_denominator((qi * z.clone()).sum_dim(2))
            } else {
                num
            });
        }
        Tensor::cat(out, 2)
    }

    /// Both-ways decay by brute force: `A_ij = Σ_f q_if k_jf exp(−|b_if − b_jf|)`.
    fn naive_bidirectional(
        q: &Tensor<4>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        log_g: &Tensor<4>,
        normalize: bool,
    ) -> Tensor<4> {
        let b = log_g.clone().cumsum(2);
        let decay = (b.clone().unsqueeze_dim::<5>(3) - b.unsqueeze_dim::<5>(2)).abs().neg().exp();
        let a =
            (q.clone().unsqueeze_dim::<5>(3) * k.clone().unsqueeze_dim::<5>(2) * decay).sum_dim(4);
        let [bb, h, t, _] = q.dims();
        let a = a.reshape([bb, h, t, t]);
        let a = if normalize { a.clone() / safe_denominator(a.sum_dim(3)) } else { a };
        a.matmul(v.clone())
    }

    /// Log gates in `[−1.5·scale, −0.5·scale]` from a free input, so gradients reach it.
    fn log_gates_from(raw: Tensor<4>, scale: f32) -> Tensor<4> {
        (sigmoid(raw) + 0.5) * (-scale)
    }

    /// q, k (`F = 4`), v (`d_v = 3`) and a raw gate of width `g` for `seq` tokens.
    fn inputs(seq: usize, g: usize, seed: u64) -> [Tensor<4>; 4] {
        let dev = device();
        [
            randn([2, 2, seq, 4], seed, &dev),
            randn([2, 2, seq, 4], seed + 1, &dev),
            randn([2, 2, seq, 3], seed + 2, &dev),
            randn([2, 2, seq, g], seed + 3, &dev),
        ]
    }

    /// parallel, chunked and recurrent against the naive recurrence, outputs and the gradients
    /// of q, k, v and the gate: scalar and vector gates; gates near 1 (log ≈ −1e-3, long
    /// memory), moderate and near 0 (log ≈ −10); norm none and sum; chunks (and the vector gate's
    /// parallel blocks) that divide the length, do not, are 1, or exceed it.
    #[test]
    fn every_form_matches_the_naive_recurrence() {
        let mut seed = 1000;
        for g in [1, 4] {
            for scale in [1e-3, 0.3, 10.0] {
                for normalize in [false, true] {
                    for seq in [9, 10] {
                        seed += 10;
                        let x = inputs(seq, g, seed);
                        // Signed features (identity) without the denominator; positive ones
                        // (elu+1) with it, where signed ones make it ill-conditioned near zero.
                        let phi = |x: Tensor<4>| {
                            if normalize { crate::fused::elu_plus_one(x) } else { x }
                        };
                        let run = |f: &dyn Fn(
                            Tensor<4>,
                            Tensor<4>,
                            Tensor<4>,
                            Tensor<4>,
                        ) -> Tensor<4>| {
                            output_and_grads(&x, seed + 7, |x| {
                                f(
                                    phi(x[0].clone()),
                                    phi(x[1].clone()),
                                    x[2].clone(),
                                    log_gates_from(x[3].clone(), scale),
                                )
                            })
                        };
                        let want =
                            run(&|q, k, v, lg| naive_decay_attention(&q, &k, &v, &lg, normalize));
                        let what = format!("g={g} log gate≈−{scale} normalize={normalize} T={seq}");
                        assert_output_and_grads_close(
                            &format!("{what} recurrent"),
                            run(&|q, k, v, lg| recurrent(q, k, v, lg, normalize, None).0),
                            &want,
                        );
                        for c in [1, 3, 4, 16] {
                            assert_output_and_grads_close(
                                &format!("{what} chunk={c}"),
                                run(&|q, k, v, lg| chunked(q, k, v, lg, c, normalize, None).0),
                                &want,
                            );
                            assert_output_and_grads_close(
                                &format!("{what} parallel block={c}"),
                                run(&|q, k, v, lg| parallel(q, k, v, lg, normalize, c)),
                                &want,
                            );
                        }
                    }
                }
            }
        }
    }

    /// The fused recurrence (flex) against the composed chunked form, outputs and the gradients
    /// of q, k, v and the gate, on fresh inputs: scalar and vector gates, both norms, strong and
    /// weak decay, checkpoint intervals that do and do not divide the length.
    #[test]
    fn fused_recurrence_matches_the_composed_chunked_form() {
        let mut seed = 1900;
        for g in [1, 4] {
            for (scale, normalize) in [(1e-3, false), (0.3, true), (10.0, false)] {
                for c in [1, 3, 16] {
                    seed += 10;
                    let x = inputs(10, g, seed);
                    let phi =
                        |x: Tensor<4>| if normalize { crate::fused::elu_plus_one(x) } else { x };
                    let run = |fused: bool| {
                        output_and_grads(&x, seed + 7, |x| {
                            let (q, k, v, lg) = (
                                phi(x[0].clone()),
                                phi(x[1].clone()),
                                x[2].clone(),
                                log_gates_from(x[3].clone(), scale),
                            );
                            if fused {
                                let y = crate::fused::gated_recurrence(
                                    q,
                                    k,
                                    with_ones(v, normalize),
                                    lg,
                                    None,
                                    c,
                                )
                                .map_err(|_| "flex")
                                .expect("the fused kernel runs on flex");
                                divide_out(y, normalize)
                            } else {
                                chunked(q, k, v, lg, c, normalize, None).0
                            }
                        })
                    };
                    assert_output_and_grads_close(
                        &format!("fused g={g} log gate≈−{scale} normalize={normalize} chunk={c}"),
                        run(true),
                        &run(false),
                    );
                }
            }
        }
    }

    /// Sequences longer than a sub-chunk: the vector gate's in-chunk scores go through
    /// `VECTOR_SUBCHUNK`-token sub-chunks (a chunk of 20 = 16 + 4, one of 37 = 16 + 16 + 5) and
    /// the parallel form's diagonal blocks recurse into them.
    #[test]
    fn vector_gate_sub_chunks_match_the_naive_recurrence() {
        for (scale, normalize) in [(0.3, false), (10.0, false), (0.3, true)] {
            let x = inputs(37, 4, 1100 + normalize as u64 + scale as u64);
            let phi = |x: Tensor<4>| if normalize { crate::fused::elu_plus_one(x) } else { x };
            let run = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
                output_and_grads(&x, 1107, |x| {
                    f(
                        phi(x[0].clone()),
                        phi(x[1].clone()),
                        x[2].clone(),
                        log_gates_from(x[3].clone(), scale),
                    )
                })
            };
            let want = run(&|q, k, v, lg| naive_decay_attention(&q, &k, &v, &lg, normalize));
            let what = format!("T=37 log gate≈−{scale} normalize={normalize}");
            for c in [20, 64] {
                assert_output_and_grads_close(
                    &format!("{what} chunk={c}"),
                    run(&|q, k, v, lg| chunked(q, k, v, lg, c, normalize, None).0),
                    &want,
                );
            }
            for c in [8, 24, 64] {
                assert_output_and_grads_close(
                    &format!("{what} parallel block={c}"),
                    run(&|q, k, v, lg| parallel(q, k, v, lg, normalize, c)),
                    &want,
                );
            }
        }
    }

    #[test]
    fn bidirectional_weights_decay_both_ways() {
        for (g, normalize) in [(1, false), (1, true), (4, false), (4, true)] {
            let x = inputs(7, g, 1200 + g as u64 + normalize as u64);
            let phi = |x: Tensor<4>| if normalize { crate::fused::elu_plus_one(x) } else { x };
            let run = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
                output_and_grads(&x, 1210, |x| {
                    f(
                        phi(x[0].clone()),
                        phi(x[1].clone()),
                        x[2].clone(),
                        log_gates_from(x[3].clone(), 0.3),
                    )
                })
            };
            let want = run(&|q, k, v, lg| naive_bidirectional(&q, &k, &v, &lg, normalize));
            for block in [2, 7] {
                let got = run(&|q, k, v, lg| weights(q, k, lg, false, normalize, block).matmul(v));
                assert_output_and_grads_close(
                    &format!("bidirectional g={g} normalize={normalize} block={block}"),
                    got,
                    &want,
                );
            }
        }
    }

    /// Strong forgetting over long chunks: a naive `exp(−b_j)` factorisation would reach
    /// `e^{1200}` here; every form stays finite and equal.
    #[test]
    fn strong_decay_over_long_chunks_stays_finite() {
        for g in [1, 4] {
            let [q, k, v, raw] = inputs(40, g, 1300 + g as u64);
            let (q, k) = (crate::fused::elu_plus_one(q), crate::fused::elu_plus_one(k));
            let lg = log_gates_from(raw, 30.0);
            let want = naive_decay_attention(&q, &k, &v, &lg, true);
            assert_close(
                chunked(q.clone(), k.clone(), v.clone(), lg.clone(), 40, true, None).0,
                want.clone(),
                1e-4,
                "chunked",
            );
            assert_close(
                parallel(q.clone(), k.clone(), v.clone(), lg.clone(), true, 8),
                want.clone(),
                1e-4,
                "parallel",
            );
            assert_close(recurrent(q, k, v, lg, true, None).0, want, 1e-4, "recurrent");
        }
    }

    /// Continuing from a carried state equals running over the whole sequence, for the chunked
    /// and the recurrent form (decoding relies on this), with and without `z`.
    #[test]
    fn carried_state_continues_the_sequence() {
        for g in [1, 4] {
            for normalize in [false, true] {
                let [q, k, v, raw] = inputs(10, g, 1400 + 2 * g as u64 + normalize as u64);
                let (q, k) = if normalize {
                    (crate::fused::elu_plus_one(q), crate::fused::elu_plus_one(k))
                } else {
                    (q, k)
                };
                let lg = log_gates_from(raw, 0.3);
                let full = naive_decay_attention(&q, &k, &v, &lg, normalize);
                let part = |x: &Tensor<4>, a: usize, n: usize| x.clone().narrow(2, a, n);
                let what = format!("g={g} normalize={normalize}");
                let (first, state) = chunked(
                    part(&q, 0, 6),
                    part(&k, 0, 6),
                    part(&v, 0, 6),
                    part(&lg, 0, 6),
                    4,
                    normalize,
                    None,
                );
                let (rest, _) = chunked(
                    part(&q, 6, 4),
                    part(&k, 6, 4),
                    part(&v, 6, 4),
                    part(&lg, 6, 4),
                    3,
                    normalize,
                    Some(&state),
                );
                assert_close(
                    Tensor::cat(vec![first, rest], 2),
                    full.clone(),
                    1e-4,
                    &format!("{what}: chunked with state"),
                );
                let (_, state) = recurrent(
                    part(&q, 0, 6),
                    part(&k, 0, 6),
                    part(&v, 0, 6),
                    part(&lg, 0, 6),
                    normalize,
                    None,
                );
                let (rest, state) = recurrent(
                    part(&q, 6, 4),
                    part(&k, 6, 4),
                    part(&v, 6, 4),
                    part(&lg, 6, 4),
                    normalize,
                    Some(&state),
                );
                assert_close(
                    rest,
                    full.narrow(2, 6, 4),
                    1e-4,
                    &format!("{what}: recurrent with state"),
                );
                let (_, chunked_state) = chunked(q, k, v, lg, 3, normalize, None);
                assert_close(state, chunked_state, 1e-4, &format!("{what}: final states"));
            }
        }
    }

    fn dims() -> MixerDims {
        MixerDims { d_model: 8, n_heads: 2, max_seq_len: 32, seed: 5, layer: 1, bias: true }
    }

    fn config(spec: &str) -> DecayAttentionConfig {
        let parts: Vec<&str> = spec.split(':').collect();
        DecayAttentionConfig::parse(&parts, spec).unwrap_or_else(|e| panic!("{e}"))
    }

    fn layer(spec: &str, device: &Device) -> DecayAttention {
        crate::testing::seeded_layer::<DecayAttentionConfig>(spec, &dims(), device)
    }

    /// Every gate parameter's gradient (empty for retnet).
    fn gate_grads(m: &DecayAttention, grads: &burn::tensor::Gradients) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        for layer in [&m.dt, &m.alpha].into_iter().flatten() {
            out.push(values(layer.weight.val().grad(grads).expect("weight grad")));
            out.push(values(layer.bias.as_ref().unwrap().val().grad(grads).expect("bias grad")));
        }
        if let Some(a) = &m.a_log {
            out.push(values(a.val().grad(grads).expect("a_log grad")));
        }
        out
    }

    /// The module end to end, for every gate and both norms: the three forms give the same
    /// output and the same gradients with respect to the input and to every gate parameter, and
    /// the output equals the naive recurrence on the module's own features and gates.
    #[test]
    fn module_forms_agree_on_outputs_input_and_gate_gradients() {
        let ad = ad_device();
        for (s, gate) in Gate::ALL.into_iter().enumerate() {
            for norm in ["none", "sum"] {
                let spec = format!("{}:norm={norm}:chunk=3", gate.name());
                let base = layer(&spec, &ad);
                let x = randn([2, 7, 8], 1500 + s as u64, &device());
                let probe = randn([2, 7, 8], 1510 + s as u64, &ad);
                let run = |form: LinearForm| {
                    let mut m = base.clone();
                    m.form = form;
                    let x = Tensor::<3>::from_data(x.to_data(), &ad).require_grad();
                    let y = m.forward(x.clone(), MixContext::causal()).output;
                    let grads = (y.clone() * probe.clone()).sum().backward();
                    (values(y), values(x.grad(&grads).unwrap()), gate_grads(&m, &grads))
                };
                let (want, want_x, want_gates) = run(LinearForm::Parallel);
                assert_eq!(want_gates.len(), [0, 3, 2, 2][s], "{spec}: gate parameters");
                for form in [LinearForm::Chunked, LinearForm::Recurrent] {
                    let (y, gx, gates) = run(form);
                    let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
                        assert_values_close(&a, &b, &format!("{spec} {form:?}: {what}"))
                    };
                    close(y, want.clone(), "output");
                    close(gx, want_x.clone(), "input gradient");
                    for (i, (g, w)) in gates.into_iter().zip(want_gates.clone()).enumerate() {
                        close(g, w, &format!("gate parameter gradient {i}"));
                    }
                }
                // Against the oracle, on the module's own projections.
                let m = layer(&spec, &device());
                let x = Tensor::<3>::from_data(x.to_data(), &device());
                let lg = m.log_gates(x.clone());
                let (q, k, v) = m.features(x.clone(), None, 0, &mut None);
                let want = m.heads.merge(naive_decay_attention(&q, &k, &v, &lg, norm == "sum"));
                assert_close(
                    m.forward(x, MixContext::causal()).output,
                    want,
                    1e-4,
                    &format!("{spec}: forward vs naive"),
                );
            }
        }
    }

    /// A prompt (chunked from the empty state), single tokens (recurrent) and a 3-token piece
    /// (chunked from the carried state) give the forward's outputs, under RoPE, for every gate,
    /// both norms and a non-identity map.
    #[test]
    fn step_equals_forward() {
        let d = device();
        let rope = RotaryEncodingConfig::new(32, 4).init(&d);
        for gate in Gate::ALL {
            // The denominator with positive features only (signed ones make it ill-conditioned).
            for options in [
                "",
                ":map=elu1:norm=sum:chunk=2",
                ":map=performer:features=8:norm=sum:form=parallel",
                ":map=cosformer:form=recurrent",
                ":conv=4:chunk=3",
                ":conv=2:map=elu1:norm=sum:form=recurrent",
            ] {
                let spec = format!("{}{options}", gate.name());
                let m = layer(&spec, &d);
                crate::testing::assert_decoding_equals_forward(
                    &m,
                    randn([2, 10, 8], 1600, &d),
                    Some(&rope),
                    &spec,
                );
            }
        }
    }

    /// The gates are the formulas of the header, computed by hand from the parameters.
    #[test]
    fn gates_match_their_formulas() {
        let d = device();
        let x = randn([1, 3, 8], 1700, &d);
        let xs = values(x.clone());
        let dot = |w: &[f32], cols: usize, col: usize, t: usize| {
            (0..8).map(|i| xs[t * 8 + i] * w[i * cols + col]).sum::<f32>()
        };
        let softplus = |z: f32| if z > 20.0 { z } else { z.exp().ln_1p() };

        let retnet = layer("retnet", &d);
        let got = values(retnet.log_gates(x.clone())); // [1, 2, 3, 1]
        for h in 0..2 {
            let want = (1.0 - 2f64.powi(-5 - h as i32)).ln() as f32;
            assert!(
                got[h * 3..h * 3 + 3].iter().all(|g| (g - want).abs() < 1e-7),
                "retnet head {h}: {got:?} vs {want}"
            );
        }

        let mamba = layer("mamba2", &d);
        let (w, b) = (
            values(mamba.dt.as_ref().unwrap().weight.val()),
            values(mamba.dt.as_ref().unwrap().bias.as_ref().unwrap().val()),
        );
        let a_log = values(mamba.a_log.as_ref().unwrap().val());
        let got = values(mamba.log_gates(x.clone()));
        for h in 0..2 {
            for t in 0..3 {
                let want = -softplus(dot(&w, 2, h, t) + b[h]) * a_log[h].exp();
                assert!(
                    (got[h * 3 + t] - want).abs() < 1e-5 * want.abs().max(1.0),
                    "mamba2 ({h},{t}): {} vs {want}",
                    got[h * 3 + t]
                );
            }
        }

        let gla = layer("gla", &d);
        let (w, b) = (
            values(gla.alpha.as_ref().unwrap().weight.val()),
            values(gla.alpha.as_ref().unwrap().bias.as_ref().unwrap().val()),
        );
        let got = values(gla.log_gates(x)); // [1, 2, 3, 4]
        for h in 0..2 {
            for t in 0..3 {
                for f in 0..4 {
                    let want = -softplus(-(dot(&w, 8, h * 4 + f, t) + b[h * 4 + f])) / 16.0;
                    let g = got[(h * 3 + t) * 4 + f];
                    assert!((g - want).abs() < 1e-6, "gla ({h},{t},{f}): {g} vs {want}");
                }
            }
        }
    }

    /// `decay:forget`'s gate is `ln σ(w_h·x + b_h)` per head, `b_h` starting at 5.
    #[test]
    fn forget_gate_matches_its_formula() {
        let d = device();
        let x = randn([1, 3, 8], 1750, &d);
        let xs = values(x.clone());
        let m = layer("forget", &d);
        let (w, b) = (
            values(m.alpha.as_ref().unwrap().weight.val()),
            values(m.alpha.as_ref().unwrap().bias.as_ref().unwrap().val()),
        );
        assert_eq!(b, vec![crate::gates::FORGET_BIAS_INIT; 2]);
        let got = values(m.log_gates(x)); // [1, 2, 3, 1]
        for h in 0..2 {
            for t in 0..3 {
                let z: f32 = (0..8).map(|i| xs[t * 8 + i] * w[i * 2 + h]).sum::<f32>() + b[h];
                let want = -(-z).exp().ln_1p();
                assert!(
                    (got[h * 3 + t] - want).abs() < 1e-6,
                    "forget ({h},{t}): {} vs {want}",
                    got[h * 3 + t]
                );
            }
        }
    }

    /// Mamba-2's gate draws A from (1, 16) (its ranges and seeding are tested in `gates`).
    #[test]
    fn mamba2_rates_start_in_range() {
        let m = config("mamba2").init(&MixerDims { d_model: 64, n_heads: 64, ..dims() }, &device());
        for a in values(m.a_log.as_ref().unwrap().val()) {
            assert!((0.0..=16f32.ln() + 1e-6).contains(&a), "A_log = {a}");
        }
    }

    #[test]
    fn specs_parse_print_and_size() {
        for spec in [
            "retnet",
            "mamba2",
            "gla",
            "gla:map=elu1:norm=sum",
            "mamba2:chunk=16:form=recurrent",
            "retnet:feature_dim=8:map=taylor",
        ] {
            assert_eq!(config(spec).to_string(), spec);
        }
        assert_eq!(config("gla:chunk=64:form=chunked:map=identity:norm=none").to_string(), "gla");
        for (spec, needle) in [
            ("", "needs a gate"),
            ("fast", "unknown gate 'fast'"),
            ("gla:map=gelu", "'map'"),
            ("gla:feature_dim=8", "belongs to map=taylor"),
            ("gla:chunk=0", "chunk must be at least 1"),
            ("gla:gate=1", "unknown option"),
            ("gla:conv=1", "not a short convolution"),
        ] {
            let parts: Vec<&str> = if spec.is_empty() { vec![] } else { spec.split(':').collect() };
            let err = DecayAttentionConfig::parse(&parts, spec).unwrap_err().to_string();
            assert!(err.contains(needle), "{spec}: {err}");
        }
        // d_model 8, 2 heads of 4: S is 4 × 4 per head, z adds 4 per head; Taylor d' = 2 gives F = 7.
        let dims = dims();
        assert_eq!(config("gla").decode_state_floats(&dims, 100), 2 * 16);
        assert_eq!(config("retnet:norm=sum").decode_state_floats(&dims, 100), 2 * (16 + 4));
        assert_eq!(
            config("mamba2:map=taylor:feature_dim=2").decode_state_floats(&dims, 5),
            2 * 7 * 4
        );
        assert_eq!(
            config("gla:map=cosformer").init(&dims, &device()).alpha.unwrap().weight.val().dims(),
            [8, 2 * 8]
        );
        // conv=4 keeps the last 3 of q, k, v: 3 · (2 · 8 + 8).
        assert_eq!(config("gla:conv=4").decode_state_floats(&dims, 100), 2 * 16 + 3 * 24);
        assert_eq!(config("gla:conv=4").to_string(), "gla:conv=4");
    }

    /// Diagnostics are the parallel form's weights: under `norm=sum` each row sums to one, and
    /// weighting `v` by them gives the output.
    #[test]
    fn diagnostics_are_the_implied_weights() {
        let d = device();
        for gate in Gate::ALL {
            let m = layer(&format!("{}:norm=sum:map=elu1", gate.name()), &d);
            let x = randn([1, 6, 8], 1800, &d);
            let out = m.forward(x, MixContext::causal().with_diagnostics(true));
            let diag = out.diagnostics.expect("diagnostics");
            assert_eq!(diag.weights.dims(), [1, 2, 6, 6]);
            for s in values(diag.weights.clone().sum_dim(3)) {
                assert!((s - 1.0).abs() < 1e-5, "{}: row sum {s}", gate.name());
            }
            let above = values(
                diag.weights
                    .clone()
                    .mask_fill(
                        causal_mask(6, 6, 0, &d).bool_not().unsqueeze::<4>().expand([1, 2, 6, 6]),
                        0.0,
                    )
                    .abs()
                    .sum(),
            );
            assert_eq!(above, vec![0.0], "{}: weight on future keys", gate.name());
        }
    }
}
