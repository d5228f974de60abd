//! The naive decay recurrence (and its both-ways counterpart) the forms are checked against, and
//! the helpers the tests share: `forms.rs` tests the forms against the oracle, `layer.rs` the
//! module (its gates, decoding, specs and diagnostics).

mod forms;
mod layer;

use super::*;
use crate::feature_map::safe_denominator;
use crate::testing::{device, randn};
use burn::tensor::Tensor;
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
        out.push(if normalize { num / safe_denominator((qi * z.clone()).sum_dim(2)) } else { num });
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
    let a = (q.clone().unsqueeze_dim::<5>(3) * k.clone().unsqueeze_dim::<5>(2) * decay).sum_dim(4);
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

fn dims() -> MixerDims {
    MixerDims { seed: 5, layer: 1, bias: true, ..MixerDims::new(8, 2, 32) }
}

fn config(spec: &str) -> DecayAttentionConfig {
    let parts: Vec<&str> = spec.split(':').collect();
    DecayAttentionConfig::parse(&parts, spec).unwrap_or_else(|e| panic!("{e}"))
}

fn layer(spec: &str, device: &Device) -> DecayAttention {
    crate::testing::seeded_layer::<DecayAttentionConfig>(spec, &dims(), device)
}
