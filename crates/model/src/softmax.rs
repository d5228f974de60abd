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
use crate::heads::{HeadProjection, causal_mask, diagnostics, keys_per_query, masked_softmax};
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
pub struct SoftmaxConfig {
    pub scaling: Scaling,
}

impl fmt::Display for SoftmaxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scaling {
            Scaling::SqrtD => Ok(()),
            s => f.write_str(s.name()),
        }
    }
}

impl MixerFamily for SoftmaxConfig {
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

/// KV cache of a softmax-type attention layer.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    /// `[batch, heads, seen, d_head]` keys (after RoPE) and values; `None` before the first token.
    pub keys: Option<Tensor<4>>,
    pub values: Option<Tensor<4>>,
    /// Tokens seen so far (the absolute position of the next token).
    pub position: usize,
}

impl KvCache {
    /// Appends new keys/values and returns the full cache.
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let seq = k.dims()[2];
        let keys = match self.keys.take() {
            Some(old) => Tensor::cat(vec![old, k], 2),
            None => k,
        };
        let values = match self.values.take() {
            Some(old) => Tensor::cat(vec![old, v], 2),
            None => v,
        };
        self.keys = Some(keys.clone());
        self.values = Some(values.clone());
        self.position += seq;
        (keys, values)
    }
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

    fn qk(&self, x: Tensor<3>, rope: Option<&RotaryEncoding>, offset: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        self.rotate(self.heads.split(x), rope, offset)
    }

    fn rotate(&self, (q, k, v): (Tensor<4>, Tensor<4>, Tensor<4>), rope: Option<&RotaryEncoding>, offset: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        match rope {
            Some(r) => (r.apply(q, offset), r.apply(k, offset), v),
            None => (q, k, v),
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
        let (q, k, v) = self.rotate(self.heads.split_packed(packed), ctx.rope, 0);
        let (seq, device) = (q.dims()[2], q.device());
        let scale = self.scale.as_ref().map(|p| p.val());
        let (y, weights) = softmax_attention(q, k, v, self.scaling(), scale, ctx.causal, 0);
        let diagnostics = ctx
            .diagnostics
            .then(|| diagnostics(weights, keys_per_query(seq, seq, 0, ctx.causal, &device)));
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> KvCache {
        KvCache::default()
    }

    fn step(&self, x: Tensor<3>, state: &mut KvCache, rope: Option<&RotaryEncoding>) -> Tensor<3> {
        let offset = state.position;
        let (q, k, v) = self.qk(x, rope, offset);
        let (keys, values) = state.append(k, v);
        let scale = self.scale.as_ref().map(|p| p.val());
        let (y, _) = softmax_attention(q, keys, values, self.scaling(), scale, true, offset);
        self.heads.merge(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::testing::{assert_close, device, output_and_grads, randn, values};

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
            reference::softmax_attention(&x[0], &x[1], &x[2], scaling, s.as_deref(), causal)
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
                let layer = SoftmaxConfig { scaling }.init(&dims, &crate::testing::ad_device());
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

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }
}
