//! Softmax attention with a choice of score scaling.
//!
//! Vaswani et al. 2017, "Attention Is All You Need":
//! `y_i = Σ_j softmax_j(q_i·k_j / s_i) v_j`, where the divisor `s_i` is one of
//!
//! | scaling | divisor / multiplier | source |
//! |---|---|---|
//! | `sqrt_d` (default) | `s = √d_head` | Vaswani et al. 2017 |
//! | `none` | `s = 1` | |
//! | `num_keys` | `s_i = n_i`, the number of keys query `i` attends over (causal: `i + 1`) | Bernhard 2023 |
//! | `sum_key_norms` | `s_i = Σ_{j ∈ keys(i)} ‖k_j‖₂` (causal: a prefix sum per position) | Bernhard 2023, arXiv 2311.09406 |
//! | `learned` | scores multiplied by a per-head learned `τ_h`, initialised to `1/√d_head` | |
//! | `qk_norm` | `q, k` L2-normalised per head, scores multiplied by a learned per-head `g_h`, initialised to `√d_head` | Henry et al. 2020 |
//!
//! The `sum_key_norms` divisor is differentiable (gradients flow into the key norms), as in
//! Bernhard's formula. Masking is NaN-safe (see [`masked_softmax`]).
//! Decoding keeps a KV cache; the divisors are recomputed from the cached keys, which is exact.

use crate::fused;
use crate::heads::{HeadProjection, KvCache, causal_mask, keys_per_query, masked_softmax, sequence_diagnostics};
use crate::mixer::{
    MixContext, MixOutput, MixerDims, MixerFamily, SequenceMixer, SpecError, VariantInfo,
};
use burn::module::{Module, Param};
use burn::nn::RotaryEncoding;
use burn::tensor::{Device, Tensor};
use std::fmt;

/// How `q·k` is scaled before the softmax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scaling {
    #[default]
    SqrtD,
    None,
    NumKeys,
    SumKeyNorms,
    Learned,
    QkNorm,
}

impl Scaling {
    pub const ALL: [Scaling; 6] = [
        Self::SqrtD,
        Self::None,
        Self::NumKeys,
        Self::SumKeyNorms,
        Self::Learned,
        Self::QkNorm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::SqrtD => "sqrt_d",
            Self::None => "none",
            Self::NumKeys => "num_keys",
            Self::SumKeyNorms => "sum_key_norms",
            Self::Learned => "learned",
            Self::QkNorm => "qk_norm",
        }
    }

    /// Whether the scaling has a learned per-head parameter.
    pub fn has_parameter(self) -> bool {
        matches!(self, Self::Learned | Self::QkNorm)
    }
}

/// `softmax[:scaling]`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SoftmaxAttentionConfig {
    pub scaling: Scaling,
}

impl fmt::Display for SoftmaxAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scaling {
            Scaling::SqrtD => Ok(()),
            s => f.write_str(s.name()),
        }
    }
}

impl MixerFamily for SoftmaxAttentionConfig {
    const NAME: &'static str = "softmax";
    const SYNTAX: &'static str = "softmax[:<scaling>]";
    type Module = SoftmaxAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        match parts {
            [] => Ok(Self::default()),
            [name] => Scaling::ALL
                .into_iter()
                .find(|s| s.name() == *name)
                .map(|scaling| Self { scaling })
                .ok_or_else(|| {
                    let names: Vec<_> = Scaling::ALL.iter().map(|s| s.name()).collect();
                    SpecError::new(spec, format!("unknown scaling '{name}', expected one of: {}", names.join(", ")))
                }),
            _ => Err(SpecError::new(spec, "softmax takes one option, the scaling")),
        }
    }

    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        KvCache::floats(dims, seq_len)
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> SoftmaxAttention {
        let d_head = dims.head_dim() as f32;
        let scale = match self.scaling {
            Scaling::Learned => Some(d_head.sqrt().recip()),
            Scaling::QkNorm => Some(d_head.sqrt()),
            _ => None,
        }
        .map(|init| Param::from_tensor(Tensor::<1>::full([dims.n_heads], init, device)));
        SoftmaxAttention {
            heads: HeadProjection::new(dims, dims.head_dim(), device),
            scale,
            scaling: self.scaling,
        }
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo { spec: "softmax", formula: "softmax(q·k/√d) v" },
            VariantInfo { spec: "softmax:none", formula: "softmax(q·k) v" },
            VariantInfo { spec: "softmax:num_keys", formula: "softmax(q·k/n_i) v, n_i = keys seen by query i" },
            VariantInfo { spec: "softmax:sum_key_norms", formula: "softmax(q·k/Σ_j‖k_j‖) v over the keys query i sees (Bernhard)" },
            VariantInfo { spec: "softmax:learned", formula: "softmax(τ_h q·k) v, τ_h learned, init 1/√d" },
            VariantInfo { spec: "softmax:qk_norm", formula: "softmax(g_h q̂·k̂) v, q̂ = q/‖q‖, g_h learned, init √d" },
        ]
    }
}

/// Multi-head softmax attention.
#[derive(Module, Debug)]
pub struct SoftmaxAttention {
    pub heads: HeadProjection,
    /// `[heads]`: the learned multiplier of `learned` (temperature) and `qk_norm` (gain).
    pub scale: Option<Param<Tensor<1>>>,
    #[module(skip)]
    scaling: Scaling,
}

impl SoftmaxAttention {
    pub fn scaling(&self) -> Scaling {
        self.scaling
    }

    /// The score multiplier when it is a constant (`sqrt_d`, `none`), which the fused kernel takes.
    fn constant_scale(&self) -> Option<f32> {
        match self.scaling {
            Scaling::SqrtD => Some((self.heads.d_qk() as f32).sqrt().recip()),
            Scaling::None => Some(1.0),
            _ => None,
        }
    }
}

/// The softmax attention kernel on already-projected heads.
///
/// Queries sit at absolute positions `q_offset..q_offset + seq_q`, keys at `0..seq_k`. `scale` is
/// the per-head multiplier for `learned`/`qk_norm`. Returns the output and the weights.
///
/// # Shapes
/// - `q`: `[batch, heads, seq_q, d]`, `k`: `[batch, heads, seq_k, d]`, `v`: `[batch, heads, seq_k, d_v]`
/// - returns `[batch, heads, seq_q, d_v]` and `[batch, heads, seq_q, seq_k]`
pub fn softmax_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scaling: Scaling,
    scale: Option<Tensor<1>>,
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
    let key_norms = matches!(scaling, Scaling::SumKeyNorms).then(|| k.clone().powi_scalar(2).sum_dim(3).sqrt());
    let scores = q.matmul(k.swap_dims(2, 3));
    let scores = match scaling {
        Scaling::SqrtD => scores / (d as f32).sqrt(),
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
            scores / divisor.clamp_min(1e-12)
        }
        Scaling::Learned | Scaling::QkNorm => {
            let s = scale.expect("learned/qk_norm scaling needs its parameter");
            scores * s.reshape([1, h, 1, 1])
        }
    };
    let mask = causal.then(|| causal_mask(seq_q, seq_k, q_offset, &device));
    let weights = masked_softmax(scores, mask);
    (weights.clone().matmul(v), weights)
}

fn l2_normalize(x: Tensor<4>) -> Tensor<4> {
    let norm = x.clone().powi_scalar(2).sum_dim(3).sqrt().clamp_min(1e-6);
    x / norm
}

impl SequenceMixer for SoftmaxAttention {
    type State = KvCache;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let mut packed = self.heads.project(x);
        // The fused kernel covers training and evaluation without monitoring; it does not return
        // the weights, rotate positions or learn a scale.
        if let Some(scale) = self.constant_scale()
            && ctx.rope.is_none()
            && !ctx.diagnostics
        {
            match fused::softmax_attention_packed(packed, self.heads.n_heads(), scale, ctx.causal) {
                Ok(y) => return MixOutput { output: self.heads.output(y), diagnostics: None },
                Err(qkv) => packed = qkv,
            }
        }
        let (q, k, v) = self.heads.split_packed_rotated(packed, ctx.rope, 0);
        let scale = self.scale.as_ref().map(|p| p.val());
        let (y, weights) = softmax_attention(q, k, v, self.scaling(), scale, ctx.causal, 0);
        let diagnostics = ctx.diagnostics.then(|| sequence_diagnostics(weights, ctx.causal));
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> KvCache {
        KvCache::default()
    }

    fn step(&self, x: Tensor<3>, state: &mut KvCache, rope: Option<&RotaryEncoding>) -> Tensor<3> {
        let scale = self.scale.as_ref().map(|p| p.val());
        state.step(&self.heads, x, rope, |q, keys, values, offset| {
            softmax_attention(q, keys, values, self.scaling(), scale, true, offset).0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, output_and_grads, randn, values, visible_rows};
    use burn::tensor::activation::softmax;

    /// The slow, obviously-right oracle: one query at a time over exactly the keys it sees, the
    /// textbook formula for every [`Scaling`]; `scale` is the per-head multiplier of `learned`
    /// and `qk_norm`. No masks, no prefix sums.
    fn naive_softmax_attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, scaling: Scaling, scale: Option<&[f32]>, causal: bool) -> Tensor<4> {
        let d = q.dims()[3] as f32;
        let per_head = |s: &[f32]| Tensor::<1>::from_floats(s, &q.device()).reshape([1, s.len(), 1, 1]);
        let out = visible_rows(q, k, v, causal).into_iter().map(|(qi, keys, vals)| {
            let n = keys.dims()[2] as f32;
            let dots = |a: Tensor<4>, b: Tensor<4>| a.matmul(b.swap_dims(2, 3)); // [b,h,1,n]
            let scores = match scaling {
                Scaling::SqrtD => dots(qi, keys) / d.sqrt(),
                Scaling::None => dots(qi, keys),
                Scaling::NumKeys => dots(qi, keys) / n,
                Scaling::SumKeyNorms => {
                    let total_norm = keys.clone().powf_scalar(2.0).sum_dim(3).sqrt().sum_dim(2); // [b,h,1,1]
                    dots(qi, keys) / total_norm
                }
                Scaling::Learned => dots(qi, keys) * per_head(scale.unwrap()),
                Scaling::QkNorm => {
                    let unit = |x: Tensor<4>| x.clone() / x.powf_scalar(2.0).sum_dim(3).sqrt();
                    dots(unit(qi), unit(keys)) * per_head(scale.unwrap())
                }
            };
            softmax(scores, 3).matmul(vals)
        });
        Tensor::cat(out.collect(), 2)
    }

    fn check_against_reference(scaling: Scaling, causal: bool, seed: u64) {
        let d = device();
        let (b, h, t, dh) = (2, 3, 7, 4);
        let inputs = [
            randn([b, h, t, dh], seed, &d),
            randn([b, h, t, dh], seed + 1, &d),
            randn([b, h, t, dh], seed + 2, &d),
        ];
        let scale = scaling.has_parameter().then(|| randn([h], seed + 3, &d).abs() + 0.1);
        let s2 = scale.clone();
        let (fast, fast_g) = output_and_grads(&inputs, seed + 4, |x| {
            let s = s2.clone().map(|s| Tensor::from_data(s.to_data(), &x[0].device()));
            let [q, k, v] = [x[0].clone(), x[1].clone(), x[2].clone()];
            softmax_attention(q, k, v, scaling, s, causal, 0).0
        });
        let (slow, slow_g) = output_and_grads(&inputs, seed + 4, |x| {
            let s = scale.clone().map(|s| values(s));
            naive_softmax_attention(&x[0], &x[1], &x[2], scaling, s.as_deref(), causal)
        });
        let what = format!("{} causal={causal}", scaling.name());
        assert_close(fast, slow, 1e-4, &format!("{what} output"));
        for (i, (f, s)) in fast_g.into_iter().zip(slow_g).enumerate() {
            assert_close(f, s, 1e-4, &format!("{what} grad of input {i}"));
        }
    }

    #[test]
    fn every_scaling_matches_the_reference_causal() {
        for (i, s) in Scaling::ALL.into_iter().enumerate() {
            check_against_reference(s, true, 100 + 10 * i as u64);
        }
    }

    #[test]
    fn every_scaling_matches_the_reference_bidirectional() {
        for (i, s) in Scaling::ALL.into_iter().enumerate() {
            check_against_reference(s, false, 200 + 10 * i as u64);
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
        let weights = |scaling, causal| values(softmax_attention(q.clone(), k.clone(), v.clone(), scaling, None, causal, 0).1);
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
        let dims = MixerDims { d_model: 24, n_heads: 3, max_seq_len: 16, seed: 1, layer: 0, bias: true };
        for scaling in [Scaling::SqrtD, Scaling::None] {
            for causal in [true, false] {
                let x = randn([2, 11, 24], 60, &device());
                // Built and filled under the seeding lock: lazily drawn weights would take numbers
                // from the shared stream while another test holds it.
                let ad = crate::testing::ad_device();
                let layer = crate::seeding::with_seed(&ad, 62, || {
                    let layer = SoftmaxAttentionConfig { scaling }.init(&dims, &ad);
                    crate::seeding::materialize(&layer);
                    layer
                });
                let run = |diagnostics: bool| {
                    output_and_grads(&[x.clone()], 61, |v| {
                        let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
                        layer.forward(v[0].clone(), ctx.with_diagnostics(diagnostics)).output
                    })
                };
                let ((fused, fused_g), (composed, composed_g)) = (run(false), run(true));
                let what = format!("{} causal={causal}", scaling.name());
                assert_close(fused, composed, 1e-5, &format!("{what}: output"));
                assert_close(fused_g[0].clone(), composed_g[0].clone(), 1e-5, &format!("{what}: gradient"));
            }
        }
    }

    /// The composed formula the packed kernel replaces: split, `softmax_attention`, merge.
    fn composed_attention(qkv: Tensor<3>, heads: usize, scaling: Scaling, causal: bool) -> Tensor<3> {
        let [b, t, w] = qkv.dims();
        let d = w / (3 * heads);
        let part = |i: usize| qkv.clone().narrow(2, i * heads * d, heads * d).reshape([b, t, heads, d]).swap_dims(1, 2);
        let (y, _) = softmax_attention(part(0), part(1), part(2), scaling, None, causal, 0);
        y.swap_dims(1, 2).reshape([b, t, heads * d])
    }

    /// Packed fused attention equals the composed formula on fresh random inputs, outputs and
    /// gradients, causal and bidirectional, for both constant scalings, odd lengths included.
    #[test]
    fn fused_packed_attention_matches_the_composed_formula() {
        let d = device();
        for (seed, (b, t, h, dh)) in [(2, 13, 3, 4), (1, 1, 2, 8), (3, 9, 1, 16)].into_iter().enumerate() {
            for causal in [true, false] {
                for (scaling, scale) in [(Scaling::SqrtD, (dh as f32).sqrt().recip()), (Scaling::None, 1.0)] {
                    let qkv = randn([b, t, 3 * h * dh], 40 + seed as u64, &d) * 1.5;
                    let what = format!("b{b} t{t} h{h} d{dh} causal={causal} {}", scaling.name());
                    let plain = fused::softmax_attention_packed(qkv.clone(), h, scale, causal).expect("flex");
                    assert_close(plain, composed_attention(qkv.clone(), h, scaling, causal), 1e-5, &format!("{what}: no autodiff"));
                    let (fast, fast_g) = output_and_grads(&[qkv.clone()], 50, |v| {
                        fused::softmax_attention_packed(v[0].clone(), h, scale, causal).expect("flex")
                    });
                    let (slow, slow_g) = output_and_grads(&[qkv], 50, |v| composed_attention(v[0].clone(), h, scaling, causal));
                    assert_close(fast, slow, 1e-5, &format!("{what}: output"));
                    assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-5, &format!("{what}: gradient"));
                }
            }
        }
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }
}
