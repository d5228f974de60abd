//! Sigmoid attention.
//!
//! Ramapuram et al. 2024, "Theory, Analysis, and Best Practices for Sigmoid Self-Attention"
//! (arXiv 2409.04431): `y_i = Σ_j σ(q_i·k_j/√d + b) v_j`, an element-wise gate with no row
//! normalisation. The recommended bias is `b = −ln n` with `n` the sequence length; here `n` is the
//! number of keys query `i` attends over (`i + 1` when causal, the sequence length otherwise), so
//! the bias, like the output, depends only on the prefix and decoding matches the full forward.
//! `sigmoid:bias=B` fixes `b = B` instead.

use crate::heads::{HeadProjection, KvCache, causal_mask, keys_per_query, sequence_diagnostics};
use crate::mixer::{
    MixContext, MixOutput, MixerDims, MixerFamily, SequenceMixer, SpecError, VariantInfo,
};
use crate::options::{parse_options, print_options};
use burn::module::Module;
use burn::nn::RotaryEncoding;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};
use std::fmt;

/// `sigmoid[:bias=B]`; the options are this struct's fields (see [`crate::options`]).
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigmoidAttentionConfig {
    /// Fixed bias; `None` means `−ln n_i`.
    pub bias: Option<f64>,
}

impl fmt::Display for SigmoidAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_options(self))
    }
}

impl MixerFamily for SigmoidAttentionConfig {
    const NAME: &'static str = "sigmoid";
    const SYNTAX: &'static str = "sigmoid[:bias=B]";
    type Module = SigmoidAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        parse_options(parts, spec)
    }

    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        KvCache::floats(dims, seq_len)
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> SigmoidAttention {
        SigmoidAttention {
            heads: HeadProjection::new(dims, dims.head_dim(), device),
            bias: self.bias.map(|b| b as f32),
        }
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo {
                spec: "sigmoid",
                formula: "σ(q·k/√d − ln n_i) v, no row normalisation (Ramapuram et al.)",
            },
            VariantInfo {
                spec: "sigmoid:bias=-4", formula: "σ(q·k/√d + b) v with a fixed bias b"
            },
        ]
    }
}

/// Multi-head sigmoid attention.
#[derive(Module, Debug)]
pub struct SigmoidAttention {
    pub heads: HeadProjection,
    #[module(skip)]
    bias: Option<f32>,
}

/// The sigmoid attention kernel, on heads already projected (layout as softmax's kernel).
///
/// # Shapes
/// - `q`: `[batch, heads, seq_q, d]`, `k`: `[batch, heads, seq_k, d]`, `v`: `[batch, heads, seq_k, d_v]`
/// - returns `[batch, heads, seq_q, d_v]` and the gates `[batch, heads, seq_q, seq_k]`
pub fn sigmoid_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<f32>,
    causal: bool,
    q_offset: usize,
) -> (Tensor<4>, Tensor<4>) {
    let [_, _, seq_q, d] = q.dims();
    let seq_k = k.dims()[2];
    let device = q.device();
    let scores = q.matmul(k.swap_dims(2, 3)) / (d as f32).sqrt();
    let scores = match bias {
        Some(b) => scores + b,
        None => {
            scores - keys_per_query(seq_q, seq_k, q_offset, causal, &device).log().unsqueeze::<4>()
        }
    };
    let mut gates = sigmoid(scores);
    if causal {
        let [b, h, _, _] = gates.dims();
        let mask = causal_mask(seq_q, seq_k, q_offset, &device)
            .unsqueeze::<4>()
            .expand([b, h, seq_q, seq_k]);
        gates = gates.mask_fill(mask, 0.0);
    }
    (gates.clone().matmul(v), gates)
}

impl SequenceMixer for SigmoidAttention {
    type State = KvCache;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let (q, k, v) = self.heads.split_rotated(x, ctx.rope, 0);
        let (y, gates) = sigmoid_attention(q, k, v, self.bias, ctx.causal, 0);
        let diagnostics = ctx.diagnostics.then(|| sequence_diagnostics(gates, ctx.causal));
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> KvCache {
        KvCache::default()
    }

    fn step(&self, x: Tensor<3>, state: &mut KvCache, rope: Option<&RotaryEncoding>) -> Tensor<3> {
        state.step(&self.heads, x, rope, |q, keys, values, offset| {
            sigmoid_attention(q, keys, values, self.bias, true, offset).0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, output_and_grads, randn, visible_rows};

    /// The slow, obviously-right oracle: `σ(q·k/√d + b)` one query at a time over exactly the
    /// keys it sees, with `b` fixed or `−ln n`.
    fn naive_sigmoid_attention(
        q: &Tensor<4>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        bias: Option<f32>,
        causal: bool,
    ) -> Tensor<4> {
        let d = q.dims()[3] as f32;
        let out = visible_rows(q, k, v, causal).into_iter().map(|(qi, keys, vals)| {
            let b = bias.unwrap_or(-(keys.dims()[2] as f32).ln());
            sigmoid(qi.matmul(keys.swap_dims(2, 3)) / d.sqrt() + b).matmul(vals)
        });
        Tensor::cat(out.collect(), 2)
    }

    #[test]
    fn matches_the_reference_with_and_without_fixed_bias() {
        let d = device();
        for (i, (bias, causal)) in
            [(None, true), (None, false), (Some(-2.5), true)].into_iter().enumerate()
        {
            let seed = 300 + 10 * i as u64;
            let inputs = [
                randn([2, 2, 6, 4], seed, &d),
                randn([2, 2, 6, 4], seed + 1, &d),
                randn([2, 2, 6, 3], seed + 2, &d),
            ];
            let (fast, fg) = output_and_grads(&inputs, seed + 3, |x| {
                sigmoid_attention(x[0].clone(), x[1].clone(), x[2].clone(), bias, causal, 0).0
            });
            let (slow, sg) = output_and_grads(&inputs, seed + 3, |x| {
                naive_sigmoid_attention(&x[0], &x[1], &x[2], bias, causal)
            });
            assert_close(fast, slow, 1e-4, "sigmoid output");
            for (f, s) in fg.into_iter().zip(sg) {
                assert_close(f, s, 1e-4, "sigmoid grad");
            }
        }
    }
}
