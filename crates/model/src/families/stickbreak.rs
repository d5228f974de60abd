//! Stick-breaking attention.
//!
//! Tan, Shen, Yang, Courville, Panda, "Scaling Stick-Breaking Attention: An Efficient
//! Implementation and In-depth Study" (ICLR 2025, arXiv 2410.17980): query `i` breaks a stick of
//! length one, starting at the most recent key and moving back; each key takes the fraction
//! `β_ij = σ(q_i·k_j/√d)` of what is left:
//!
//! `y_i = Σ_{j<i} A_ij v_j`,  `A_ij = β_ij Π_{j<l<i} (1 − β_il)`.
//!
//! Recency is built in, so it needs no positional encoding (`model.positions = "none"` is the
//! paper's setting; RoPE or learned positions still work). As in the paper's equation a query
//! does not attend to its own key: the first token sees nothing and outputs zero, and a row's
//! weights sum to `1 − Π_{l<i}(1 − β_il) ≤ 1`, the rest of the stick going to nothing.
//!
//! Computed in log space: `ln A_ij = ln σ(z_ij) + Σ_{j<l<i} ln σ(−z_il)`, the sum a reverse
//! cumulative sum along the keys of each row, so no product underflows to zero before its
//! gradient is taken; entries outside `j < i` are masked before the exponential. A bidirectional
//! model runs the breaking both ways (from the nearest key to the left, and to the right) and adds
//! the two. Decoding keeps a KV cache (`2·d·L`); each new query's row is recomputed over it.

use crate::heads::{HeadProjection, KvCache, sequence_diagnostics};
use crate::mixer::{
    Convention, MixContext, MixOutput, MixerDims, MixerFamily, SequenceMixer, SpecError,
    VariantInfo,
};
use crate::options::{parse_options, print_options};
use burn::module::Module;
use burn::nn::RotaryEncoding;
use burn::tensor::ops::PadMode;
use burn::tensor::{Bool, Device, Tensor};
use std::fmt;

/// `stickbreak` (no options yet; the struct keeps the grammar of the other families).
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StickBreakingAttentionConfig {}

impl fmt::Display for StickBreakingAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_options(self))
    }
}

impl MixerFamily for StickBreakingAttentionConfig {
    const NAME: &'static str = "stickbreak";
    const SYNTAX: &'static str = "stickbreak";
    type Module = StickBreakingAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        parse_options(parts, spec)
    }

    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        KvCache::floats(dims, seq_len)
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> StickBreakingAttention {
        StickBreakingAttention { heads: HeadProjection::new(dims, dims.head_dim(), device) }
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![(
            "entropy_normalizer",
            Convention::new(
                "ln(i + 1)",
                "normalised entropy of row i divides by ln(i + 1): the row's weights need not sum to one",
            ),
        )]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![VariantInfo {
            spec: "stickbreak",
            formula: "A_ij = β_ij Π_{j<l<i}(1 − β_il), β_ij = σ(q_i·k_j/√d), over keys j < i (stick-breaking attention)",
        }]
    }
}

/// Multi-head stick-breaking attention.
#[derive(Module, Debug)]
pub struct StickBreakingAttention {
    pub heads: HeadProjection,
}

/// True where key `j` is not strictly before query `i` (absolute position `q_offset + i`).
fn not_before(seq_q: usize, seq_k: usize, q_offset: usize, device: &Device) -> Tensor<2, Bool> {
    Tensor::<2, Bool>::tril_mask([seq_q, seq_k], q_offset as i64 - 1, device)
}

/// The causal stick-breaking weights `A` (queries at `q_offset..`, keys at `0..seq_k`).
///
/// # Shapes
/// - `q`: `[batch, heads, seq_q, d]`, `k`: `[batch, heads, seq_k, d]` -> `[batch, heads, seq_q, seq_k]`
pub fn causal_weights(q: Tensor<4>, k: Tensor<4>, q_offset: usize) -> Tensor<4> {
    let [b, h, seq_q, d] = q.dims();
    let seq_k = k.dims()[2];
    let hidden = not_before(seq_q, seq_k, q_offset, &q.device())
        .unsqueeze::<4>()
        .expand([b, h, seq_q, seq_k]);
    let z = q.matmul(k.swap_dims(2, 3)) / (d as f32).sqrt();
    let log_beta = crate::fused::log_sigmoid(z.clone());
    let log_rest = crate::fused::log_sigmoid(z.neg()).mask_fill(hidden.clone(), 0.0); // ln(1 − β_il), visible l only
    // Σ_{l>j} ln(1 − β_il): the reverse cumulative sum shifted one key to the left.
    let from_right = log_rest.flip([3]).cumsum(3).flip([3]);
    let after = if seq_k > 1 {
        from_right.narrow(3, 1, seq_k - 1).pad((0, 1, 0, 0), PadMode::Constant(0.0))
    } else {
        from_right * 0.0
    };
    (log_beta + after).mask_fill(hidden.clone(), 0.0).exp().mask_fill(hidden, 0.0)
}

/// The weights over the whole sequence: causal, or the causal weights plus those of the reversed
/// sequence reversed back.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, d]` -> `[batch, heads, seq, seq]`
pub fn weights(q: Tensor<4>, k: Tensor<4>, causal: bool) -> Tensor<4> {
    let forward = causal_weights(q.clone(), k.clone(), 0);
    if causal {
        forward
    } else {
        forward + causal_weights(q.flip([2]), k.flip([2]), 0).flip([2, 3])
    }
}

impl SequenceMixer for StickBreakingAttention {
    type State = KvCache;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let (q, k, v) = self.heads.split_rotated(x, ctx.rope, 0);
        let w = weights(q, k, ctx.causal);
        let y = w.clone().matmul(v);
        let diagnostics = ctx.diagnostics.then(|| sequence_diagnostics(w, ctx.causal));
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> KvCache {
        KvCache::default()
    }

    fn step(&self, x: Tensor<3>, state: &mut KvCache, rope: Option<&RotaryEncoding>) -> Tensor<3> {
        state.step(&self.heads, x, rope, |q, keys, values, offset| {
            causal_weights(q, keys, offset).matmul(values)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, output_and_grads, randn, values};
    use burn::tensor::activation::sigmoid;

    /// The textbook formula, one query and one key at a time in linear space:
    /// `A_ij = β_ij Π_{j<l<i}(1 − β_il)` over `j < i` (causal), plus the same from the right
    /// (`j > i`, product over `i < l < j`) when bidirectional.
    fn naive_stick_breaking(
        q: &Tensor<4>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        causal: bool,
    ) -> Tensor<4> {
        let [b, h, t, d] = q.dims();
        let beta = sigmoid(q.clone().matmul(k.clone().swap_dims(2, 3)) / (d as f32).sqrt()); // [b,h,t,t]
        let at = |i: usize, j: usize| beta.clone().narrow(2, i, 1).narrow(3, j, 1); // [b,h,1,1]
        let rows: Vec<Tensor<4>> = (0..t)
            .map(|i| {
                let mut row = Tensor::<4>::zeros([b, h, 1, v.dims()[3]], &q.device());
                for j in 0..t {
                    let between: Vec<usize> = if j < i {
                        (j + 1..i).collect()
                    } else if j > i && !causal {
                        (i + 1..j).collect()
                    } else {
                        continue;
                    };
                    let mut a = at(i, j);
                    for l in between {
                        a = a * (at(i, l).neg() + 1.0);
                    }
                    row = row + a * v.clone().narrow(2, j, 1);
                }
                row
            })
            .collect();
        Tensor::cat(rows, 2)
    }

    #[test]
    fn matches_the_textbook_formula_causal_and_bidirectional() {
        let dev = device();
        for (n, causal) in [(0u64, true), (1, false)] {
            let inputs = [
                randn([2, 2, 7, 4], 500 + 10 * n, &dev) * 2.0,
                randn([2, 2, 7, 4], 501 + 10 * n, &dev),
                randn([2, 2, 7, 3], 502 + 10 * n, &dev),
            ];
            let (fast, fg) = output_and_grads(&inputs, 503 + 10 * n, |x| {
                weights(x[0].clone(), x[1].clone(), causal).matmul(x[2].clone())
            });
            let (slow, sg) = output_and_grads(&inputs, 503 + 10 * n, |x| {
                naive_stick_breaking(&x[0], &x[1], &x[2], causal)
            });
            assert_close(fast, slow, 1e-4, &format!("causal={causal}: output"));
            for (i, (f, s)) in fg.into_iter().zip(sg).enumerate() {
                assert_close(f, s, 1e-4, &format!("causal={causal}: gradient {i}"));
            }
        }
    }

    /// With every logit 0 (β = ½) the stick halves at each key back: `A_ij = 2^{−(i−j)}`, and
    /// the first query sees nothing.
    #[test]
    fn even_logits_halve_the_stick() {
        let dev = device();
        let q = Tensor::<4>::zeros([1, 1, 5, 2], &dev);
        let k = randn([1, 1, 5, 2], 510, &dev);
        let w = values(causal_weights(q, k, 0));
        for i in 0..5 {
            for j in 0..5 {
                let want = if j < i { 0.5f32.powi((i - j) as i32) } else { 0.0 };
                assert!(
                    (w[i * 5 + j] - want).abs() < 1e-6,
                    "({i},{j}): {} vs {want}",
                    w[i * 5 + j]
                );
            }
        }
    }

    /// Long sequences with logits in the hundreds stay finite, forward and backward.
    #[test]
    fn long_inputs_with_large_logits_stay_finite() {
        let dev = device();
        let inputs = [
            randn([1, 2, 128, 4], 520, &dev) * 30.0,
            randn([1, 2, 128, 4], 521, &dev) * 30.0,
            randn([1, 2, 128, 4], 522, &dev),
        ];
        for causal in [true, false] {
            let (y, g) = output_and_grads(&inputs, 523, |x| {
                weights(x[0].clone(), x[1].clone(), causal).matmul(x[2].clone())
            });
            assert!(values(y).iter().all(|v| v.is_finite()), "causal={causal}: output");
            for g in g {
                assert!(values(g).iter().all(|v| v.is_finite()), "causal={causal}: gradient");
            }
        }
    }

    /// Decoding through the KV cache (a prompt, single tokens, a piece) equals the forward pass.
    #[test]
    fn step_equals_forward() {
        use burn::nn::RotaryEncodingConfig;
        let dev = device();
        let dims = MixerDims { seed: 1, layer: 0, bias: true, ..MixerDims::new(8, 2, 16) };
        let m = crate::testing::seeded_layer::<StickBreakingAttentionConfig>("", &dims, &dev);
        let rope = RotaryEncodingConfig::new(32, 4).init(&dev);
        for rope in [None, Some(&rope)] {
            crate::testing::assert_decoding_equals_forward(
                &m,
                randn([2, 10, 8], 530, &dev),
                rope,
                &format!("stickbreak rope={}", rope.is_some()),
            );
        }
    }

    #[test]
    fn spec_parses_and_prints() {
        assert_eq!(StickBreakingAttentionConfig::parse(&[], "stickbreak").unwrap().to_string(), "");
        let err = StickBreakingAttentionConfig::parse(&["scale=2"], "stickbreak:scale=2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option"), "{err}");
    }
}
