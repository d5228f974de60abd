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
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, output_and_grads, randn, visible_rows};

    /// The slow, obviously-right oracle on feature-mapped queries and keys, one query at a time
    /// over exactly the keys it sees: `y_i = Σ_j (φq_i·φk_j) v_j / Σ_j φq_i·φk_j`.
    fn naive_linear_attention(
        fq: &Tensor<4>,
        fk: &Tensor<4>,
        v: &Tensor<4>,
        normalize: bool,
        causal: bool,
    ) -> Tensor<4> {
        let out = visible_rows(fq, fk, v, causal).into_iter().map(|(qi, keys, vals)| {
            let sims = qi.matmul(keys.swap_dims(2, 3)); // [b,h,1,n]
            let num = sims.clone().matmul(vals);
            if normalize { num / safe_denominator(sims.sum_dim(3)) } else { num }
        });
        Tensor::cat(out.collect(), 2)
    }

    fn dims() -> MixerDims {
        MixerDims { seed: 5, layer: 1, bias: true, ..MixerDims::new(8, 2, 32) }
    }

    /// Raw q, k, v for `seq` tokens with head width `d`.
    fn qkv(seq: usize, d: usize, seed: u64) -> [Tensor<4>; 3] {
        let dev = device();
        [
            randn([2, 2, seq, d], seed, &dev),
            randn([2, 2, seq, d], seed + 1, &dev),
            randn([2, 2, seq, 3], seed + 2, &dev),
        ]
    }

    /// Every feature map, with and without the denominator, causal and bidirectional: the
    /// chunked (training) path and the bidirectional path against the per-query reference.
    #[test]
    fn every_feature_map_matches_the_reference() {
        for (m, kind) in FeatureMapKind::ALL.into_iter().enumerate() {
            for normalize in [true, false] {
                for causal in [true, false] {
                    let seed = 400 + 20 * m as u64 + 2 * normalize as u64 + causal as u64;
                    let map = FeatureMap::new(kind, 4, 16, &dims(), &device());
                    let inputs = qkv(7, 4, seed);
                    let fast_fn = |x: Vec<Tensor<4>>| {
                        let (fq, fk) = (map.apply(x[0].clone(), 0), map.apply(x[1].clone(), 0));
                        if causal {
                            chunked::causal(fq, fk, x[2].clone(), 3, normalize, None).0
                        } else {
                            bidirectional(fq, fk, x[2].clone(), normalize)
                        }
                    };
                    let slow_fn = |x: Vec<Tensor<4>>| {
                        let (fq, fk) = (map.apply(x[0].clone(), 0), map.apply(x[1].clone(), 0));
                        naive_linear_attention(&fq, &fk, &x[2], normalize, causal)
                    };
                    let what = format!("{} normalize={normalize} causal={causal}", kind.name());
                    let (fast, fg) = output_and_grads(&inputs, seed + 9, fast_fn);
                    let (slow, sg) = output_and_grads(&inputs, seed + 9, slow_fn);
                    assert_close(fast, slow, 1e-4, &format!("{what} output"));
                    for (i, (f, s)) in fg.into_iter().zip(sg).enumerate() {
                        assert_close(f, s, 1e-4, &format!("{what} grad {i}"));
                    }
                }
            }
        }
    }

    /// parallel = chunked = recurrent, outputs and gradients, for chunk sizes that divide the
    /// sequence (1, 3 of 9, 9), do not (2, 4), or exceed it (16).
    #[test]
    fn the_three_causal_forms_agree() {
        let map = FeatureMap::new(FeatureMapKind::Elu1, 4, 0, &dims(), &device());
        for normalize in [true, false] {
            let inputs = qkv(9, 4, 500 + normalize as u64);
            let run = |form: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
                output_and_grads(&inputs, 77, |x| {
                    form(map.apply(x[0].clone(), 0), map.apply(x[1].clone(), 0), x[2].clone())
                })
            };
            let (par, par_g) = run(&|q, k, v| parallel::causal(q, k, v, normalize));
            let (rec, rec_g) = run(&|q, k, v| recurrent::causal(q, k, v, normalize, None).0);
            assert_close(rec, par.clone(), 1e-4, "recurrent vs parallel");
            for (r, p) in rec_g.into_iter().zip(par_g.clone()) {
                assert_close(r, p, 1e-4, "recurrent vs parallel grad");
            }
            for chunk in [1, 2, 3, 4, 9, 16] {
                let (ch, ch_g) = run(&|q, k, v| chunked::causal(q, k, v, chunk, normalize, None).0);
                assert_close(ch, par.clone(), 1e-4, &format!("chunk={chunk} vs parallel"));
                for (c, p) in ch_g.into_iter().zip(par_g.clone()) {
                    assert_close(c, p, 1e-4, &format!("chunk={chunk} grad"));
                }
            }
        }
    }

    /// Continuing from a carried state equals running over the concatenated sequence, for the
    /// chunked and the recurrent form (the decoding path relies on this).
    #[test]
    fn carried_state_continues_the_sequence() {
        let [q, k, v] = qkv(10, 4, 600);
        let full = parallel::causal(q.clone(), k.clone(), v.clone(), true);
        let (first, state) = chunked::causal(
            q.clone().narrow(2, 0, 6),
            k.clone().narrow(2, 0, 6),
            v.clone().narrow(2, 0, 6),
            4,
            true,
            None,
        );
        let (rest, _) = chunked::causal(
            q.clone().narrow(2, 6, 4),
            k.clone().narrow(2, 6, 4),
            v.clone().narrow(2, 6, 4),
            3,
            true,
            Some(&state),
        );
        assert_close(Tensor::cat(vec![first, rest], 2), full.clone(), 1e-4, "chunked with state");
        let (_, state) = recurrent::causal(
            q.clone().narrow(2, 0, 6),
            k.clone().narrow(2, 0, 6),
            v.clone().narrow(2, 0, 6),
            true,
            None,
        );
        let (rest, _) = recurrent::causal(
            q.narrow(2, 6, 4),
            k.narrow(2, 6, 4),
            v.narrow(2, 6, 4),
            true,
            Some(&state),
        );
        assert_close(rest, full.narrow(2, 6, 4), 1e-4, "recurrent with state");
    }

    /// Fused chunked linear attention equals the composed chunked form on fresh random inputs,
    /// outputs and all three gradients: normalised or not, chunks that divide the length or not,
    /// positive features (elu+1) and signed ones (identity, whose denominators cross zero).
    #[test]
    fn fused_linear_attention_matches_the_composed_chunked_form() {
        let d = device();
        for (seed, (b, h, t, f, dv, chunk)) in
            [(2, 2, 13, 4, 3, 4), (1, 3, 16, 8, 8, 8), (1, 1, 5, 3, 2, 64)].into_iter().enumerate()
        {
            for normalize in [true, false] {
                for positive in [true, false] {
                    let feats = |x: Tensor<4>| {
                        if positive { burn::tensor::activation::elu(x, 1.0) + 1.0 } else { x }
                    };
                    let inputs = [
                        randn([b, h, t, f], 80 + seed as u64, &d),
                        randn([b, h, t, f], 81 + seed as u64, &d),
                        randn([b, h, t, f.max(dv)], 82, &d),
                    ];
                    let what = format!(
                        "b{b} h{h} t{t} f{f} dv{dv} chunk{chunk} normalize={normalize} positive={positive}"
                    );
                    let v_of = |x: &Tensor<4>| x.clone().narrow(3, 0, dv);
                    let (fast, fast_g) = output_and_grads(&inputs, 83, |x| {
                        crate::fused::causal_linear_attention(
                            feats(x[0].clone()),
                            feats(x[1].clone()),
                            v_of(&x[2]),
                            chunk,
                            normalize,
                            DENOMINATOR_EPS,
                        )
                        .expect("flex")
                    });
                    let (slow, slow_g) = output_and_grads(&inputs, 83, |x| {
                        chunked::causal(
                            feats(x[0].clone()),
                            feats(x[1].clone()),
                            v_of(&x[2]),
                            chunk,
                            normalize,
                            None,
                        )
                        .0
                    });
                    assert_close(fast, slow, 1e-4, &format!("{what}: output"));
                    for (i, (f, s)) in fast_g.into_iter().zip(slow_g).enumerate() {
                        assert_close(f, s, 1e-3, &format!("{what}: gradient {i}"));
                    }
                }
            }
        }
    }
}
