//! The differential attention module: its parameters, λ, the two-map kernel, the full-sequence
//! forward and KV-cache decoding.

use crate::fused;
use crate::heads::{
    HeadProjection, KvCache, apply_rope, causal_mask, masked_softmax, sequence_diagnostics,
};
use crate::mixer::{MixContext, MixOutput, SequenceMixer};
use burn::module::{Module, Param};
use burn::nn::{RmsNorm, RotaryEncoding};
use burn::tensor::Tensor;

/// ε of the per-head RMSNorm (the paper's code).
pub const NORM_EPS: f64 = 1e-5;

/// The paper's `λ_init = 0.8 − 0.6·exp(−0.3·(l − 1))` for the 0-based layer index `layer = l − 1`.
pub fn lambda_init_schedule(layer: usize) -> f64 {
    0.8 - 0.6 * (-0.3 * layer as f64).exp()
}

/// Multi-head differential attention.
#[derive(Module, Debug)]
pub struct DiffAttention {
    pub heads: HeadProjection,
    /// `[d_h/2]` each: `λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init`, one λ for the layer.
    pub lambda_q1: Param<Tensor<1>>,
    pub lambda_k1: Param<Tensor<1>>,
    pub lambda_q2: Param<Tensor<1>>,
    pub lambda_k2: Param<Tensor<1>>,
    /// RMSNorm over each head's `d_h` outputs, `gamma: [d_h]` shared by the heads.
    pub norm: RmsNorm,
    #[module(skip)]
    lambda_init: f32,
}

impl DiffAttention {
    /// `lambdas` are `[λ_q1, λ_k1, λ_q2, λ_k2]`.
    pub fn new(
        heads: HeadProjection,
        lambdas: [Param<Tensor<1>>; 4],
        norm: RmsNorm,
        lambda_init: f32,
    ) -> Self {
        let [lambda_q1, lambda_k1, lambda_q2, lambda_k2] = lambdas;
        Self { heads, lambda_q1, lambda_k1, lambda_q2, lambda_k2, norm, lambda_init }
    }

    pub fn lambda_init(&self) -> f32 {
        self.lambda_init
    }

    /// `λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init`, `[1]`.
    pub fn lambda(&self) -> Tensor<1> {
        let dot = |a: &Param<Tensor<1>>, b: &Param<Tensor<1>>| (a.val() * b.val()).sum();
        dot(&self.lambda_q1, &self.lambda_k1).exp() - dot(&self.lambda_q2, &self.lambda_k2).exp()
            + self.lambda_init
    }

    /// The per-head RMSNorm and the `(1 − λ_init)` scale of the heads' outputs.
    ///
    /// # Shapes
    /// - `y`: `[batch, heads, seq, d_h]` -> the same
    fn finish<const D: usize>(&self, y: Tensor<D>) -> Tensor<D> {
        self.norm.forward(y) * (1.0 - self.lambda_init)
    }

    /// The forward's two maps on the fused softmax kernel (flex), heads merged, before the norm:
    /// `A₁V − λA₂V`, the kernel run once over `2h` query heads `[q₁ heads | q₂ heads]` and
    /// `2·kv` key/value heads `[k₁ | k₂]`, `[v | v]`, so query head `i` reads key/value head
    /// `i / (h/kv)` as the kernel's grouped-query indexing has it. The kernel wants one width for
    /// queries, keys and values: the `d`-wide halves are padded with `d` zeros to `v`'s `d_h`,
    /// which leaves `q·k` unchanged (the scale stays `1/√d`). Returns `None` off flex, where the
    /// caller composes [`differential_weights`].
    ///
    /// # Shapes
    /// - `q`: `[batch, heads, seq, d_h]`, `k`, `v`: `[batch, kv_heads, seq, d_h]` (rotated)
    ///   -> `[batch, seq, heads·d_h]`
    fn attend_fused(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        causal: bool,
    ) -> Option<Tensor<3>> {
        let [b, h, t, d_h] = q.dims();
        let d = d_h / 2;
        let halves_as_heads = |x: Tensor<4>| {
            let [_, n, _, _] = x.dims();
            let zeros = Tensor::zeros([b, n, t, d], &x.device());
            let first = Tensor::cat(vec![x.clone().narrow(3, 0, d), zeros.clone()], 3);
            let second = Tensor::cat(vec![x.narrow(3, d, d), zeros], 3);
            Tensor::cat(vec![first, second], 1)
        };
        let y = fused::softmax_attention_heads(
            halves_as_heads(q),
            halves_as_heads(k),
            Tensor::cat(vec![v.clone(), v], 1),
            1.0 / (d as f32).sqrt(),
            causal,
        )?;
        let first = y.clone().narrow(2, 0, h * d_h);
        let second = y.narrow(2, h * d_h, h * d_h);
        Some(first - second * self.lambda().reshape([1, 1, 1]))
    }
}

/// RoPE on queries and keys sitting at positions `offset..`, each half `[x₁ | x₂]` rotated as its
/// own `d_h/2`-wide head (the paper's `2h` sub-heads); the inputs themselves without RoPE.
///
/// # Shapes
/// - `q`: `[batch, heads, seq, d_h]`, `k`: `[batch, kv_heads, seq, d_h]` -> the same
pub fn rotate_halves(
    q: Tensor<4>,
    k: Tensor<4>,
    rope: Option<&RotaryEncoding>,
    offset: usize,
) -> (Tensor<4>, Tensor<4>) {
    if rope.is_none() {
        return (q, k);
    }
    let d = q.dims()[3] / 2;
    let (q1, k1) = apply_rope(q.clone().narrow(3, 0, d), k.clone().narrow(3, 0, d), rope, offset);
    let (q2, k2) = apply_rope(q.narrow(3, d, d), k.narrow(3, d, d), rope, offset);
    (Tensor::cat(vec![q1, q2], 3), Tensor::cat(vec![k1, k2], 3))
}

/// The differential weights `softmax(q₁k₁ᵀ/√d) − λ softmax(q₂k₂ᵀ/√d)`, `d = d_h/2`, queries at
/// absolute positions `q_offset..`, keys at `0..seq_k`.
///
/// # Shapes
/// - `q`: `[batch, heads, seq_q, d_h]`, `k`: `[batch, heads, seq_k, d_h]`, `lambda`: `[1]`
/// - returns `[batch, heads, seq_q, seq_k]`
pub fn differential_weights(
    q: Tensor<4>,
    k: Tensor<4>,
    lambda: Tensor<1>,
    causal: bool,
    q_offset: usize,
) -> Tensor<4> {
    let [_, h, seq_q, d_h] = q.dims();
    let seq_k = k.dims()[2];
    let d = d_h / 2;
    // Both maps in one product: the halves stacked as 2h heads, [x₁ heads | x₂ heads].
    let stacked = |x: Tensor<4>| Tensor::cat(vec![x.clone().narrow(3, 0, d), x.narrow(3, d, d)], 1);
    let scores = stacked(q).matmul(stacked(k).swap_dims(2, 3)) / (d as f32).sqrt();
    let mask = causal.then(|| causal_mask(seq_q, seq_k, q_offset, &scores.device()));
    let maps = masked_softmax(scores, mask);
    maps.clone().narrow(1, 0, h) - maps.narrow(1, h, h) * lambda.reshape([1, 1, 1, 1])
}

impl SequenceMixer for DiffAttention {
    type State = KvCache;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        // The fused kernel covers training and evaluation without monitoring (it keeps no
        // weights); diagnostics and other backends compose the T × T maps.
        if !ctx.diagnostics && fused::runs_fused(&x) {
            let (q, k, v) = self.heads.split_grouped_rotated(x.clone(), None, 0);
            let (q, k) = rotate_halves(q, k, ctx.rope, 0);
            if let Some(y) = self.attend_fused(q, k, v, ctx.causal) {
                let [b, t, _] = y.dims();
                let (h, d_h) = (self.heads.n_heads(), self.heads.d_qk());
                let y = self.finish(y.reshape([b, t, h, d_h])).reshape([b, t, h * d_h]);
                return MixOutput { output: self.heads.output(y), diagnostics: None };
            }
        }
        let (q, k, v) = self.heads.split(x);
        let (q, k) = rotate_halves(q, k, ctx.rope, 0);
        let w = differential_weights(q, k, self.lambda(), ctx.causal, 0);
        let y = self.finish(w.clone().matmul(v));
        let diagnostics = ctx.diagnostics.then(|| sequence_diagnostics(w, ctx.causal));
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> KvCache {
        KvCache::default()
    }

    fn step(&self, x: Tensor<3>, state: &mut KvCache, rope: Option<&RotaryEncoding>) -> Tensor<3> {
        // KvCache::step rotates whole heads; the halves are rotated here before caching.
        let offset = state.position;
        let (q, k, v) = self.heads.split_grouped_rotated(x, None, offset);
        let (q, k) = rotate_halves(q, k, rope, offset);
        let (keys, values) = state.append(k, v);
        let w = differential_weights(q, self.heads.repeat_kv(keys), self.lambda(), true, offset);
        self.heads.merge(self.finish(w.matmul(self.heads.repeat_kv(values))))
    }
}
