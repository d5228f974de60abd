//! Linear (kernelised) attention.
//!
//! Katharopoulos et al. 2020, "Transformers are RNNs" (arXiv 2006.16236):
//! `y_i = φ(q_i)ᵀ Σ_{j≤i} φ(k_j) v_jᵀ / φ(q_i)ᵀ Σ_{j≤i} φ(k_j)` with a feature map φ
//! ([`crate::feature_map`], shared with the other linear-type families). The causal sum can be
//! computed three ways, all equal up to rounding:
//! - [`parallel`]: the masked `T × T` matrix `φ(Q) φ(K)ᵀ` (quadratic; the only form that yields
//!   attention weights, used for diagnostics),
//! - [`chunked`] (the training default): quadratic inside chunks of `C` tokens, a running state
//!   `Σ φ(k) vᵀ` between chunks; time `O(T·C·F + T·F·d_v)`, never a `T × F × d_v` tensor,
//! - [`recurrent`]: one token at a time, as in decoding.
//!
//! `norm=sum` (default) divides by the denominator above; `norm=none` drops it (the numerator
//! alone, as fla's linear attention does before its output norm). For feature maps that can be
//! negative (`identity`, seed 1's "linear attention") the denominator can be zero or negative:
//! [`safe_denominator`] (also shared) keeps its sign and clamps its magnitude to at least `1e-6`,
//! which is exactly seed 1's row normalisation wherever that is defined and finite everywhere else.

pub mod chunked;
pub mod parallel;
pub mod recurrent;
mod sums;

pub use sums::LinearAttentionSums;

use crate::feature_map::{
    DEFAULT_CHUNK, DEFAULT_PERFORMER_FEATURES, DEFAULT_TAYLOR_DIM, DENOMINATOR_EPS, FeatureMap,
    FeatureMapKind, LinearForm, Normalizer, safe_denominator,
};
use crate::heads::{HeadProjection, sequence_diagnostics};
use crate::mixer::{
    Convention, MixContext, MixOutput, MixerDims, MixerError, MixerFamily, SequenceMixer,
    SpecError, VariantInfo,
};
use crate::options::{parse_options, split_choice, write_with_options};
use burn::module::Module;
use burn::nn::RotaryEncoding;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `linear:<map>[:feature_dim=N][:features=N][:norm=sum|none][:form=chunked|parallel|recurrent][:chunk=N]`.
/// The options after the map are this struct's fields (see [`crate::options`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinearAttentionConfig {
    /// The spec's positional part, not an option.
    #[serde(skip)]
    pub feature_map: FeatureMapKind,
    /// Taylor: per-head width `d'` of the q/k projection (φ has `1 + d' + d'²` features).
    pub feature_dim: usize,
    /// Performer: number of random features `m`.
    pub features: usize,
    pub norm: Normalizer,
    pub form: LinearForm,
    /// Tokens per chunk of the chunked form.
    pub chunk: usize,
}

impl LinearAttentionConfig {
    pub fn new(feature_map: FeatureMapKind) -> Self {
        Self {
            feature_map,
            feature_dim: DEFAULT_TAYLOR_DIM,
            features: DEFAULT_PERFORMER_FEATURES,
            norm: Normalizer::Sum,
            form: LinearForm::Chunked,
            chunk: DEFAULT_CHUNK,
        }
    }
}

impl Default for LinearAttentionConfig {
    fn default() -> Self {
        Self::new(FeatureMapKind::Elu1)
    }
}

impl fmt::Display for LinearAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_with_options(f, self.feature_map.name(), self)
    }
}

impl MixerFamily for LinearAttentionConfig {
    const NAME: &'static str = "linear";
    const SYNTAX: &'static str = "linear:<map>[:norm=sum|none][:form=chunked|parallel|recurrent][:chunk=N][:feature_dim=N][:features=N]";
    type Module = LinearAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let (kind, options) = split_choice(
            parts,
            Self::NAME,
            "feature map",
            &FeatureMapKind::ALL,
            FeatureMapKind::name,
            spec,
        )?;
        let c = Self { feature_map: kind, ..parse_options(options, spec)? };
        kind.check_options(c.feature_dim, c.features, |m| format!("linear:{}", m.name()))
            .map_err(|reason| SpecError::new(spec, reason))?;
        if c.chunk == 0 {
            return Err(SpecError::new(spec, "chunk must be at least 1"));
        }
        Ok(c)
    }

    fn validate(&self, dims: &MixerDims) -> Result<(), MixerError> {
        if self.feature_map == FeatureMapKind::Cosformer && dims.max_seq_len == 0 {
            return Err(MixerError::PeriodNeedsContext { mixer: "linear:cosformer" });
        }
        Ok(())
    }

    /// Based (Taylor) projects queries and keys to its own small width `d'`.
    fn qk_width(&self, dims: &MixerDims) -> usize {
        self.feature_map.qk_width(dims.head_dim(), self.feature_dim)
    }

    /// The sums `Σ φ(k) vᵀ` (`F × d_v`) and `Σ φ(k)` (`F`) per head, fixed in `seq_len`; zoology
    /// counts `heads·F·d_v + heads·F` for Based, the same formula.
    fn decode_state_floats(&self, dims: &MixerDims, _seq_len: usize) -> usize {
        let f = self.feature_map.output_dim(self.qk_width(dims), self.features);
        dims.n_heads * (f * dims.head_dim() + f)
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> LinearAttention {
        let d_qk = self.qk_width(dims);
        LinearAttention {
            heads: HeadProjection::new(dims, d_qk, device),
            feature_map: FeatureMap::new(self.feature_map, d_qk, self.features, dims, device),
            normalize: self.norm == Normalizer::Sum,
            form: self.form,
            chunk: self.chunk,
        }
    }

    const VARIANT_REQUIRED: bool = true;

    const BENCH: &'static [&'static str] = &["linear:elu1"];

    fn variants() -> Vec<&'static str> {
        FeatureMapKind::ALL.iter().map(|m| m.name()).collect()
    }

    fn variant(&self) -> Option<&'static str> {
        Some(self.feature_map.name())
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "denominator_eps",
                Convention::number(
                    crate::feature_map::DENOMINATOR_EPS,
                    "norm=sum: the denominator z becomes sign(z)·max(|z|, ε), sign(0) = +1",
                ),
            ),
            (
                "rope",
                Convention::new(
                    "on q and k before the feature map",
                    "where RoPE applies when model.positions = rope",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo {
                spec: "linear:identity",
                formula: "φ(x) = x: seed 1's linear attention (denominator sign-safe)",
            },
            VariantInfo {
                spec: "linear:elu1",
                formula: "φ(x) = elu(x) + 1 (Katharopoulos et al. 2020)",
            },
            VariantInfo { spec: "linear:relu", formula: "φ(x) = max(x, 0)" },
            VariantInfo {
                spec: "linear:cosformer",
                formula: "φ(x_i) = [relu(x_i) cos(πi/2M), relu(x_i) sin(πi/2M)] (Qin et al. 2022)",
            },
            VariantInfo {
                spec: "linear:taylor",
                formula: "φ(x) = [1, x/d'^¼, x⊗x/√(2d')], d' = 16: φ(q)·φ(k) ≈ exp(q·k/√d') (Based)",
            },
            VariantInfo {
                spec: "linear:performer",
                formula: "φ(x) = exp(Wx − ‖x‖²/2)/√m, W orthogonal random, x scaled by d^-¼ (FAVOR+)",
            },
        ]
    }
}

/// Multi-head linear attention.
#[derive(Module, Debug)]
pub struct LinearAttention {
    pub heads: HeadProjection,
    pub feature_map: FeatureMap,
    #[module(skip)]
    normalize: bool,
    #[module(skip)]
    form: LinearForm,
    #[module(skip)]
    chunk: usize,
}

/// Decoding state: the running sums plus the number of tokens seen.
#[derive(Clone, Debug, Default)]
pub struct LinearDecodeState {
    pub sums: Option<LinearAttentionSums>,
    pub position: usize,
}

impl LinearAttention {
    /// Projected, position-encoded and feature-mapped `(φ(q), φ(k), v)` for tokens starting at `offset`.
    fn features(
        &self,
        x: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let (q, k, v) = self.heads.split_rotated(x, rope, offset);
        (self.feature_map.apply(q, offset), self.feature_map.apply(k, offset), v)
    }

    /// The causal chunked form on the packed projection, the feature map inside the kernel
    /// (flex, a pointwise map, every head its own keys); `None` where it does not run, and the
    /// caller takes the split path. The same numbers: `packed_kernel_matches_the_split_path`.
    fn packed(&self, x: &Tensor<3>, ctx: &MixContext<'_>) -> Option<Tensor<3>> {
        let map = match self.feature_map.kind() {
            FeatureMapKind::Identity => crate::fused::PointMap::Identity,
            FeatureMapKind::Elu1 => crate::fused::PointMap::Elu1,
            FeatureMapKind::Relu => crate::fused::PointMap::Relu,
            _ => return None,
        };
        let takes = ctx.causal
            && !ctx.diagnostics
            && self.form == LinearForm::Chunked
            && self.heads.n_kv_heads() == self.heads.n_heads()
            && crate::fused::runs_fused(x);
        if !takes {
            return None;
        }
        let qkv = self.heads.rotate_grouped(self.heads.project_grouped(x.clone()), ctx.rope, 0);
        let y = crate::fused::causal_linear_attention_packed(
            qkv,
            self.heads.n_heads(),
            self.heads.d_qk(),
            map,
            self.chunk,
            self.normalize,
            DENOMINATOR_EPS,
        )
        .ok()?;
        Some(self.heads.output(y))
    }
}

/// Bidirectional linear attention: every query sees every key.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]`, `v`: `[batch, heads, seq, d_v]` -> `[batch, heads, seq, d_v]`
pub fn bidirectional(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, normalize: bool) -> Tensor<4> {
    let num = q.clone().matmul(k.clone().swap_dims(2, 3).matmul(v));
    if !normalize {
        return num;
    }
    let den = (q * k.sum_dim(2)).sum_dim(3);
    num / safe_denominator(den)
}

impl SequenceMixer for LinearAttention {
    type State = LinearDecodeState;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        if let Some(output) = self.packed(&x, &ctx) {
            return MixOutput { output, diagnostics: None };
        }
        let (q, k, v) = self.features(x, ctx.rope, 0);
        let y = match (ctx.causal, self.form) {
            (false, _) => bidirectional(q.clone(), k.clone(), v, self.normalize),
            (true, LinearForm::Parallel) => {
                parallel::causal(q.clone(), k.clone(), v, self.normalize)
            }
            (true, LinearForm::Chunked) => match crate::fused::causal_linear_attention(
                q.clone(),
                k.clone(),
                v,
                self.chunk,
                self.normalize,
                DENOMINATOR_EPS,
            ) {
                Ok(y) => y,
                Err(inputs) => {
                    let (q, k, v) = *inputs;
                    chunked::causal(q, k, v, self.chunk, self.normalize, None).0
                }
            },
            (true, LinearForm::Recurrent) => {
                recurrent::causal(q.clone(), k.clone(), v, self.normalize, None).0
            }
        };
        let diagnostics = ctx.diagnostics.then(|| {
            sequence_diagnostics(parallel::weights(q, k, ctx.causal, self.normalize), ctx.causal)
        });
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> LinearDecodeState {
        LinearDecodeState::default()
    }

    fn step(
        &self,
        x: Tensor<3>,
        state: &mut LinearDecodeState,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let seq = x.dims()[1];
        let (q, k, v) = self.features(x, rope, state.position);
        let (y, sums) = if seq == 1 {
            recurrent::causal(q, k, v, self.normalize, state.sums.as_ref())
        } else {
            chunked::causal(q, k, v, self.chunk, self.normalize, state.sums.as_ref())
        };
        state.sums = Some(sums);
        state.position += seq;
        self.heads.merge(y)
    }
}

#[cfg(test)]
mod tests;
