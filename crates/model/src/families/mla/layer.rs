//! The MLA module: its projections, the full-sequence forward, and decoding from the latent
//! cache by the absorbed or the explicit path.

use crate::fused;
use crate::heads::{causal_mask, masked_softmax, sequence_diagnostics};
use crate::mixer::{MixContext, MixOutput, SequenceMixer};
use crate::position::{rotate, rotation};
use burn::module::Module;
use burn::nn::{Linear, RmsNorm, RotaryEncoding};
use burn::tensor::Tensor;

/// Head counts and widths.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub rope_dim: usize,
}

/// Multi-head latent attention.
#[derive(Module, Debug)]
pub struct MlaAttention {
    /// `q_latent=N`: `W_DQ`, `weight: [d_model, N]`.
    pub q_down: Option<Linear>,
    /// `W_Q` (or `W_UQ` from the query latent), `weight: [d_model or N, heads·d_h]`.
    pub q: Linear,
    /// `W_DKV`, `weight: [d_model, d_c]`.
    pub kv_down: Linear,
    /// `[W_UK | W_UV]`, `weight: [d_c, 2·kv_heads·d_h]`, no bias: the keys' columns then the
    /// values', each head-major (one up-projection from the latent, as DeepSeek-V2's code has).
    pub kv_up: Linear,
    /// `rope_dim > 0`: the decoupled RoPE part's projections.
    pub rope: Option<DecoupledRope>,
    /// `model.qk_head_norm`: RMSNorm of each head's `q^C`, `gamma: [d_h]`.
    pub q_norm: Option<RmsNorm>,
    /// The same for `k^C`.
    pub k_norm: Option<RmsNorm>,
    /// `latent_norm=true`: RMSNorm of `c_t`, `gamma: [d_c]`.
    pub latent_norm: Option<RmsNorm>,
    /// `latent_norm=true` with a query latent: RMSNorm of `c^Q_t`, `gamma: [N]`.
    pub q_latent_norm: Option<RmsNorm>,
    /// `W_O`, `weight: [heads·d_h, d_model]`.
    pub out: Linear,
    #[module(skip)]
    pub shape: Shape,
}

/// The projections of the decoupled RoPE part (both exist exactly when `rope_dim > 0`).
#[derive(Module, Debug)]
pub struct DecoupledRope {
    /// `W_QR`, `weight: [d_model or N, heads·d_R]`.
    pub q: Linear,
    /// `W_KR`, `weight: [d_model, d_R]`, one key for all heads.
    pub k: Linear,
}

/// Decoding state: what MLA caches per token.
#[derive(Clone, Debug, Default)]
pub struct LatentCache {
    /// `[batch, seen, d_c]`: `c_t`.
    pub latents: Option<Tensor<3>>,
    /// `[batch, seen, d_R]`: `k^R_t` after RoPE; `None` with `rope_dim = 0`.
    pub rope_keys: Option<Tensor<3>>,
    /// Tokens seen so far (the absolute position of the next token).
    pub position: usize,
}

impl LatentCache {
    /// Floats held per sequence (what `decode_state_floats` counts).
    pub fn floats_per_sequence(&self) -> usize {
        let per = |x: &Option<Tensor<3>>| x.as_ref().map_or(0, |t| t.dims()[1] * t.dims()[2]);
        per(&self.latents) + per(&self.rope_keys)
    }

    fn append(&mut self, c: Tensor<3>, k_r: Option<Tensor<3>>) -> (Tensor<3>, Option<Tensor<3>>) {
        let grow = |old: Option<Tensor<3>>, new: Tensor<3>| match old {
            Some(old) => Tensor::cat(vec![old, new], 1),
            None => new,
        };
        self.position += c.dims()[1];
        let latents = grow(self.latents.take(), c);
        self.latents = Some(latents.clone());
        self.rope_keys = k_r.map(|k| grow(self.rope_keys.take(), k));
        (latents, self.rope_keys.clone())
    }
}

/// How a decoding step scores the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodePath {
    /// Queries taken into the latent space (`W_UKᵀ q^C`), `W_UV` after the weighted sum of
    /// latents: nothing up-projected per cached token. Needs keys linear in the latent.
    Absorbed,
    /// Up-project the cached latents to keys and values, then attend.
    Explicit,
}

/// `x` rotated at positions `offset..` (no-op without RoPE), at its own width.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, d]` -> the same
fn rotated(x: Tensor<4>, rope: Option<&RotaryEncoding>, offset: usize) -> Tensor<4> {
    let Some(rope) = rope else { return x };
    let [_, _, t, width] = x.dims();
    let (cos, sin) = rotation(rope, offset, t, width);
    rotate(x, &cos.unsqueeze(), &sin.unsqueeze())
}

/// `[batch, seq, n·d]` -> `[batch, n, seq, d]`.
fn heads(x: Tensor<3>, n: usize) -> Tensor<4> {
    let [b, t, w] = x.dims();
    x.reshape([b, t, n, w / n]).swap_dims(1, 2)
}

impl MlaAttention {
    pub fn n_heads(&self) -> usize {
        self.shape.n_heads
    }

    pub fn d_head(&self) -> usize {
        self.shape.d_head
    }

    pub fn rope_dim(&self) -> usize {
        self.shape.rope_dim
    }

    /// The RoPE the compressed part takes: the model's only without a decoupled part.
    fn content_rope<'a>(&self, rope: Option<&'a RotaryEncoding>) -> Option<&'a RotaryEncoding> {
        rope.filter(|_| self.shape.rope_dim == 0)
    }

    /// The RoPE the decoupled part takes.
    fn decoupled_rope<'a>(&self, rope: Option<&'a RotaryEncoding>) -> Option<&'a RotaryEncoding> {
        rope.filter(|_| self.shape.rope_dim > 0)
    }

    /// Whether keys are linear in the latent, so the absorbed path holds: no RoPE and no norm
    /// on `k^C`.
    pub fn absorbable(&self, rope: Option<&RotaryEncoding>) -> bool {
        self.k_norm.is_none() && self.content_rope(rope).is_none()
    }

    /// `q^C` (normalised, not rotated) and the unrotated `q^R`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, d_h]`, `[batch, heads, seq, d_R]`
    fn queries(&self, x: Tensor<3>) -> (Tensor<4>, Option<Tensor<4>>) {
        let from = match (&self.q_down, &self.q_latent_norm) {
            (Some(down), Some(norm)) => fused::rms_norm(norm, fused::affine(down, x)),
            (Some(down), None) => fused::affine(down, x),
            (None, _) => x,
        };
        let q_c = heads(fused::affine(&self.q, from.clone()), self.shape.n_heads);
        let q_c = match &self.q_norm {
            Some(norm) => norm.forward(q_c),
            None => q_c,
        };
        let q_r = self.rope.as_ref().map(|r| heads(fused::affine(&r.q, from), self.shape.n_heads));
        (q_c, q_r)
    }

    /// `c_t = W_DKV h_t` (RMS-normalised with `latent_norm`), `[batch, seq, d_c]`.
    fn latents(&self, x: Tensor<3>) -> Tensor<3> {
        let c = fused::affine(&self.kv_down, x);
        match &self.latent_norm {
            Some(norm) => fused::rms_norm(norm, c),
            None => c,
        }
    }

    /// The unrotated shared key `W_KR h_t`, `[batch, 1, seq, d_R]`.
    fn rope_key(&self, x: Tensor<3>) -> Option<Tensor<4>> {
        self.rope.as_ref().map(|r| fused::affine(&r.k, x).unsqueeze_dim(1))
    }

    /// Key/value heads repeated to the query heads.
    ///
    /// # Shapes
    /// - `x`: `[batch, kv_heads, seq, d]` -> `[batch, heads, seq, d]`
    fn repeat_kv(&self, x: Tensor<4>) -> Tensor<4> {
        let (h, kv) = (self.shape.n_heads, self.shape.n_kv_heads);
        if h == kv {
            return x;
        }
        let [b, _, t, d] = x.dims();
        x.reshape([b, kv, 1, t, d]).expand([b, kv, h / kv, t, d]).reshape([b, h, t, d])
    }

    /// The explicit up-projection of latents: `k^C` (normalised) and `v` of each key/value head.
    ///
    /// # Shapes
    /// - `c`: `[batch, seq, d_c]` -> two `[batch, kv_heads, seq, d_h]`
    fn grouped_keys_values(&self, c: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        let width = self.shape.n_kv_heads * self.shape.d_head;
        let kv = fused::affine(&self.kv_up, c);
        let k = heads(kv.clone().narrow(2, 0, width), self.shape.n_kv_heads);
        let k = match &self.k_norm {
            Some(norm) => norm.forward(k),
            None => k,
        };
        (k, heads(kv.narrow(2, width, width), self.shape.n_kv_heads))
    }

    /// [`Self::grouped_keys_values`] repeated to every query head.
    ///
    /// # Shapes
    /// - `c`: `[batch, seq, d_c]` -> two `[batch, heads, seq, d_h]`
    fn keys_values(&self, c: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = self.grouped_keys_values(c);
        (self.repeat_kv(k), self.repeat_kv(v))
    }

    /// The forward's attention on the fused softmax kernel (flex), heads merged: `q = [q^C; q^R]`
    /// and `k = [k^C; k^R]` laid out as the kernel's packed `[q | k | v]` rows, each head
    /// `d_h + d_R` wide, with `v` padded by `d_R` zeros to that width (their outputs are
    /// dropped), the key/value heads read in place by the kernel's grouped-query indexing.
    /// Returns `None` off flex, where the caller runs [`Self::attend_explicit`].
    ///
    /// # Shapes
    /// - `q_c`: `[batch, heads, seq, d_h]` (rotated if the content takes RoPE), `q_r`:
    ///   `[batch, heads, seq, d_R]`, `c`: `[batch, seq, d_c]`, `k_r`: `[batch, 1, seq, d_R]`
    ///   -> `[batch, seq, heads·d_h]`
    fn attend_fused(
        &self,
        q_c: Tensor<4>,
        q_r: Option<Tensor<4>>,
        c: Tensor<3>,
        k_r: Option<Tensor<4>>,
        rope: Option<&RotaryEncoding>,
        causal: bool,
    ) -> Option<Tensor<3>> {
        let Shape { n_heads: h, n_kv_heads: kv, d_head: d_h, rope_dim: d_r } = self.shape;
        let (k_c, v) = self.grouped_keys_values(c);
        let k_c = rotated(k_c, self.content_rope(rope), 0);
        let [b, _, t, _] = q_c.dims();
        let device = q_c.device();
        let (q, k, v) = match (q_r, k_r) {
            (Some(q_r), Some(k_r)) => (
                Tensor::cat(vec![q_c, q_r], 3),
                Tensor::cat(vec![k_c, k_r.expand([b, kv, t, d_r])], 3),
                Tensor::cat(vec![v, Tensor::zeros([b, kv, t, d_r], &device)], 3),
            ),
            _ => (q_c, k_c, v),
        };
        let w = d_h + d_r;
        let y = fused::softmax_attention_heads(q, k, v, 1.0 / (w as f32).sqrt(), causal)?;
        Some(if d_r == 0 {
            y
        } else {
            y.reshape([b, t, h, w]).narrow(3, 0, d_h).reshape([b, t, h * d_h])
        })
    }

    /// `W_UK` (`part` 0) or `W_UV` (1) per query head, `[batch, heads, d_c, d_h]` (head `h`
    /// holding its key/value head's columns): what the absorbed path multiplies by.
    fn per_head(&self, part: usize, batch: usize) -> Tensor<4> {
        let (kv, d_h) = (self.shape.n_kv_heads, self.shape.d_head);
        let d_c = self.kv_up.weight.dims()[0];
        let w = self.kv_up.weight.val().narrow(1, part * kv * d_h, kv * d_h);
        let w = w.reshape([d_c, kv, d_h]).swap_dims(0, 1).unsqueeze_dim::<4>(0);
        self.repeat_kv(w).expand([batch, self.shape.n_heads, d_c, d_h])
    }

    /// The rotated decoupled part's scores `q^R·k^R`, added to the compressed part's.
    ///
    /// # Shapes
    /// - `scores`: `[batch, heads, seq_q, seq_k]`, `q_r`: `[batch, heads, seq_q, d_R]`,
    ///   `k_r`: `[batch, 1, seq_k, d_R]` -> `scores`' shape
    fn with_rope_scores(
        &self,
        scores: Tensor<4>,
        q_r: Option<Tensor<4>>,
        k_r: Option<Tensor<4>>,
    ) -> Tensor<4> {
        match (q_r, k_r) {
            (Some(q_r), Some(k_r)) => {
                let [b, h, _, _] = scores.dims();
                let [_, _, n, d_r] = k_r.dims();
                scores + q_r.matmul(k_r.expand([b, h, n, d_r]).swap_dims(2, 3))
            }
            _ => scores,
        }
    }

    /// Softmax of the scores scaled by `1/√(d_h + d_R)`, queries at `q_offset..`.
    fn weights(&self, scores: Tensor<4>, causal: bool, q_offset: usize) -> Tensor<4> {
        let [_, _, seq_q, seq_k] = scores.dims();
        let scores = scores / ((self.shape.d_head + self.shape.rope_dim) as f32).sqrt();
        let mask = causal.then(|| causal_mask(seq_q, seq_k, q_offset, &scores.device()));
        masked_softmax(scores, mask)
    }

    /// Heads merged and through `W_O`.
    ///
    /// # Shapes
    /// - `y`: `[batch, heads, seq, d_h]` -> `[batch, seq, d_model]`
    fn merge(&self, y: Tensor<4>) -> Tensor<3> {
        let [b, h, t, d] = y.dims();
        fused::affine(&self.out, y.swap_dims(1, 2).reshape([b, t, h * d]))
    }

    /// The explicit form over latents `c` of keys at `0..seq_k`, queries (already rotated) at
    /// `q_offset..`: up-project, rotate the compressed keys if the content takes RoPE, attend.
    ///
    /// # Shapes
    /// - `q_c`: `[batch, heads, seq_q, d_h]`, `c`: `[batch, seq_k, d_c]`, `k_r`:
    ///   `[batch, 1, seq_k, d_R]` -> outputs `[batch, heads, seq_q, d_h]` and weights
    #[allow(clippy::too_many_arguments)]
    fn attend_explicit(
        &self,
        q_c: Tensor<4>,
        q_r: Option<Tensor<4>>,
        c: Tensor<3>,
        k_r: Option<Tensor<4>>,
        rope: Option<&RotaryEncoding>,
        causal: bool,
        q_offset: usize,
    ) -> (Tensor<4>, Tensor<4>) {
        let (k_c, v) = self.keys_values(c);
        let k_c = rotated(k_c, self.content_rope(rope), 0);
        let scores = self.with_rope_scores(q_c.matmul(k_c.swap_dims(2, 3)), q_r, k_r);
        let w = self.weights(scores, causal, q_offset);
        (w.clone().matmul(v), w)
    }

    /// The absorbed form (causal, queries at `q_offset..`): scores `(W_UKᵀ q^C)·c` in the latent
    /// space, `W_UV` applied to the weighted sum of latents.
    ///
    /// # Shapes
    /// - `q_c`: `[batch, heads, seq_q, d_h]`, `c`: `[batch, seq_k, d_c]` -> `[batch, heads, seq_q, d_h]`
    fn attend_absorbed(
        &self,
        q_c: Tensor<4>,
        q_r: Option<Tensor<4>>,
        c: Tensor<3>,
        k_r: Option<Tensor<4>>,
        q_offset: usize,
    ) -> Tensor<4> {
        let [b, n, d_c] = c.dims();
        let c = c.unsqueeze_dim::<4>(1).expand([b, self.shape.n_heads, n, d_c]);
        // q^C·(W_UK c) = (W_UKᵀ q^C)·c: each query once into the latent space, [b, h, s, d_c].
        let q_latent = q_c.matmul(self.per_head(0, b).swap_dims(2, 3));
        let scores = self.with_rope_scores(q_latent.matmul(c.clone().swap_dims(2, 3)), q_r, k_r);
        let w = self.weights(scores, true, q_offset);
        // Σ_j w_j W_UV c_j = W_UV Σ_j w_j c_j.
        w.matmul(c).matmul(self.per_head(1, b))
    }

    /// One decoding step by the given path; [`SequenceMixer::step`] picks the absorbed one
    /// whenever it holds.
    ///
    /// # Panics
    /// On [`DecodePath::Absorbed`] when the keys are not linear in the latent
    /// ([`Self::absorbable`]).
    ///
    /// # Shapes
    /// - `x`: `[batch, S, d_model]` -> `[batch, S, d_model]`
    pub fn step_by(
        &self,
        x: Tensor<3>,
        state: &mut LatentCache,
        rope: Option<&RotaryEncoding>,
        path: DecodePath,
    ) -> Tensor<3> {
        let offset = state.position;
        let (q_c, q_r) = self.queries(x.clone());
        let q_r = q_r.map(|q| rotated(q, self.decoupled_rope(rope), offset));
        // The cache keeps k^R rotated at its own position, as a KV cache keeps its keys.
        let k_r = self.rope_key(x.clone()).map(|k| {
            let [b, _, s, d_r] = k.dims();
            rotated(k, self.decoupled_rope(rope), offset).reshape([b, s, d_r])
        });
        let (c, k_r) = state.append(self.latents(x), k_r);
        let k_r = k_r.map(|k| k.unsqueeze_dim::<4>(1));
        let y = match path {
            DecodePath::Absorbed => {
                assert!(self.absorbable(rope), "the absorbed path needs keys linear in c");
                self.attend_absorbed(q_c, q_r, c, k_r, offset)
            }
            DecodePath::Explicit => {
                let q_c = rotated(q_c, self.content_rope(rope), offset);
                self.attend_explicit(q_c, q_r, c, k_r, rope, true, offset).0
            }
        };
        self.merge(y)
    }
}

impl SequenceMixer for MlaAttention {
    type State = LatentCache;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let (q_c, q_r) = self.queries(x.clone());
        let q_c = rotated(q_c, self.content_rope(ctx.rope), 0);
        let q_r = q_r.map(|q| rotated(q, self.decoupled_rope(ctx.rope), 0));
        let k_r = self.rope_key(x.clone()).map(|k| rotated(k, self.decoupled_rope(ctx.rope), 0));
        let c = self.latents(x);
        // The fused kernel covers training and evaluation without monitoring (it keeps no weights);
        // elsewhere the packed rows would be built only to be thrown away.
        if !ctx.diagnostics && fused::runs_fused(&c) {
            let fused = self.attend_fused(
                q_c.clone(),
                q_r.clone(),
                c.clone(),
                k_r.clone(),
                ctx.rope,
                ctx.causal,
            );
            if let Some(y) = fused {
                return MixOutput { output: fused::affine(&self.out, y), diagnostics: None };
            }
        }
        let (y, w) = self.attend_explicit(q_c, q_r, c, k_r, ctx.rope, ctx.causal, 0);
        let diagnostics = ctx.diagnostics.then(|| sequence_diagnostics(w, ctx.causal));
        MixOutput { output: self.merge(y), diagnostics }
    }

    fn empty_state(&self) -> LatentCache {
        LatentCache::default()
    }

    fn step(
        &self,
        x: Tensor<3>,
        state: &mut LatentCache,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let path = if self.absorbable(rope) { DecodePath::Absorbed } else { DecodePath::Explicit };
        self.step_by(x, state, rope, path)
    }
}
