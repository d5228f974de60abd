//! Head mechanics every attention family shares: the packed q/k/v projection, split and merge,
//! RoPE application, the KV cache, causal masks and attention diagnostics.
//!
//! All families project `x` with one fused linear map to queries, keys and values
//! (`[q | k | v]`, a layout that also lets a trained model swap its attention variant while keeping
//! these weights), split them into heads `[batch, heads, seq, head_dim]`, mix, then merge the
//! heads and apply the output projection.

use crate::fused;
use crate::mixer::{AttentionDiagnostics, MixerDims};
use crate::position::{rotate, rotation};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, RmsNorm, RmsNormConfig, RotaryEncoding};
use burn::tensor::{Bool, Device, Tensor};

/// Fused q/k/v projection and output projection (affine maps, Burn's `Linear`).
///
/// With grouped-query attention (`n_kv_heads < n_heads`) the projection makes `n_kv_heads` keys
/// and values, and [`Self::project`] repeats each for the `n_heads / n_kv_heads` query heads it
/// serves (query head h reads key/value head `h / group`, Hugging Face's `repeat_kv`), so every
/// family sees the plain `[q | k | v]` layout; KV caches keep the unrepeated heads
/// ([`Self::split_grouped_rotated`]).
#[derive(Module, Debug)]
pub struct HeadProjection {
    /// `weight: [d_model, H·d_qk + K·(d_qk + d_v)]` (`H` query heads, `K` key/value heads),
    /// columns laid out `[q | k | v]`, each head-major (`head * d + i`).
    pub qkv: Linear,
    /// `weight: [n_heads * d_v, d_model]`.
    pub out: Linear,
    /// Qwen3's per-head RMSNorm of queries before RoPE, `gamma: [d_qk]`.
    pub q_norm: Option<RmsNorm>,
    /// The same for keys.
    pub k_norm: Option<RmsNorm>,
    n_heads: usize,
    n_kv_heads: usize,
    d_qk: usize,
    d_v: usize,
}

impl HeadProjection {
    /// `d_qk` is the per-head query/key width (the head dim, or a smaller feature dim for Based);
    /// values keep the head dim.
    pub fn new(dims: &MixerDims, d_qk: usize, device: &Device) -> Self {
        let d_v = dims.head_dim();
        let (h, kv) = (dims.n_heads, dims.n_kv_heads);
        let width = h * d_qk + kv * (d_qk + d_v);
        let norm =
            || dims.qk_head_norm.map(|eps| RmsNormConfig::new(d_qk).with_epsilon(eps).init(device));
        Self {
            qkv: LinearConfig::new(dims.d_model, width).with_bias(dims.bias).init(device),
            out: LinearConfig::new(h * d_v, dims.d_model).with_bias(dims.out_bias).init(device),
            q_norm: norm(),
            k_norm: norm(),
            n_heads: h,
            n_kv_heads: kv,
            d_qk,
            d_v,
        }
    }

    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// Key/value heads (equal to [`Self::n_heads`] without grouped-query attention).
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Per-head query/key width.
    pub fn d_qk(&self) -> usize {
        self.d_qk
    }

    /// The packed projection `[q | k | v]`, keys and values repeated to every query head.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, heads·(2·d_qk + d_v)]`
    pub fn project(&self, x: Tensor<3>) -> Tensor<3> {
        let grouped = self.project_grouped(x);
        if self.n_kv_heads == self.n_heads {
            return grouped;
        }
        let (h, kv, dqk) = (self.n_heads, self.n_kv_heads, self.d_qk);
        let q = grouped.clone().narrow(2, 0, h * dqk);
        let k = grouped.clone().narrow(2, h * dqk, kv * dqk);
        let v = grouped.narrow(2, (h + kv) * dqk, kv * self.d_v);
        Tensor::cat(vec![q, self.repeat_packed(k, dqk), self.repeat_packed(v, self.d_v)], 2)
    }

    /// The projection as the weights make it: `[q | k | v]` with `n_kv_heads` keys and values,
    /// queries and keys through the per-head norm when the model has one.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, H·d_qk + K·(d_qk + d_v)]`
    pub fn project_grouped(&self, x: Tensor<3>) -> Tensor<3> {
        let qkv = fused::affine(&self.qkv, x);
        let (Some(q_norm), Some(k_norm)) = (&self.q_norm, &self.k_norm) else { return qkv };
        let [b, t, w] = qkv.dims();
        let (h, kv, dqk) = (self.n_heads, self.n_kv_heads, self.d_qk);
        let per_head = |norm: &RmsNorm, start: usize, heads: usize| {
            fused::rms_norm(
                norm,
                qkv.clone().narrow(2, start, heads * dqk).reshape([b, t, heads, dqk]),
            )
            .reshape([b, t, heads * dqk])
        };
        let values = qkv.clone().narrow(2, (h + kv) * dqk, w - (h + kv) * dqk);
        Tensor::cat(vec![per_head(q_norm, 0, h), per_head(k_norm, h * dqk, kv), values], 2)
    }

    /// `[batch, seq, K·d]` -> `[batch, seq, H·d]`, key/value head j copied to query heads
    /// `j·group .. (j + 1)·group`.
    fn repeat_packed(&self, x: Tensor<3>, d: usize) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kv) = (self.n_heads, self.n_kv_heads);
        x.reshape([b, t, kv, 1, d]).expand([b, t, kv, h / kv, d]).reshape([b, t, h * d])
    }

    /// Key/value heads repeated to every query head.
    ///
    /// # Shapes
    /// - `x`: `[batch, n_kv_heads, seq, d]` -> `[batch, n_heads, seq, d]`
    pub fn repeat_kv(&self, x: Tensor<4>) -> Tensor<4> {
        let (h, kv) = (self.n_heads, self.n_kv_heads);
        if h == kv {
            return x;
        }
        let [b, _, t, d] = x.dims();
        x.reshape([b, kv, 1, t, d]).expand([b, kv, h / kv, t, d]).reshape([b, h, t, d])
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `q, k`: `[batch, heads, seq, d_qk]`,
    ///   `v`: `[batch, heads, seq, d_v]`
    pub fn split(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        self.split_packed(self.project(x))
    }

    /// Splits [`Self::project_grouped`]'s layout, keys and values repeated to every query head.
    ///
    /// # Shapes
    /// - `qkv`: `[batch, seq, H·d_qk + K·(d_qk + d_v)]` -> `q, k`: `[batch, heads, seq, d_qk]`,
    ///   `v`: `[batch, heads, seq, d_v]`
    pub fn split_grouped(&self, qkv: Tensor<3>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let (q, k, v) = self.split_heads(qkv, self.n_kv_heads);
        (q, self.repeat_kv(k), self.repeat_kv(v))
    }

    /// [`Self::split`] of an already projected `[q | k | v]`.
    pub fn split_packed(&self, qkv: Tensor<3>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        self.split_heads(qkv, self.n_heads)
    }

    /// Splits `[q | k | v]` holding `n_heads` queries and `kv` keys and values.
    fn split_heads(&self, qkv: Tensor<3>, kv: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [b, t, _] = qkv.dims();
        let (h, dqk, dv) = (self.n_heads, self.d_qk, self.d_v);
        let heads = |start: usize, n: usize, d: usize| {
            qkv.clone().narrow(2, start, n * d).reshape([b, t, n, d]).swap_dims(1, 2)
        };
        (heads(0, h, dqk), heads(h * dqk, kv, dqk), heads((h + kv) * dqk, kv, dv))
    }

    /// Queries of every head and the `n_kv_heads` keys and values as the weights make them,
    /// rotated at positions `offset..`: what a KV cache stores.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `q`: `[batch, heads, seq, d_qk]`,
    ///   `k`: `[batch, kv_heads, seq, d_qk]`, `v`: `[batch, kv_heads, seq, d_v]`
    pub fn split_grouped_rotated(
        &self,
        x: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let (q, k, v) = self.split_heads(self.project_grouped(x), self.n_kv_heads);
        let (q, k) = apply_rope(q, k, rope, offset);
        (q, k, v)
    }

    /// [`Self::split`] with RoPE applied to queries and keys at positions `offset..`.
    pub fn split_rotated(
        &self,
        x: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        self.split_packed_rotated(self.project(x), rope, offset)
    }

    /// [`Self::split_packed`] with RoPE applied to queries and keys at positions `offset..`.
    pub fn split_packed_rotated(
        &self,
        qkv: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let (q, k, v) = self.split_packed(qkv);
        let (q, k) = apply_rope(q, k, rope, offset);
        (q, k, v)
    }

    /// # Shapes
    /// - `y`: `[batch, heads, seq, d_v]` -> `[batch, seq, d_model]`
    pub fn merge(&self, y: Tensor<4>) -> Tensor<3> {
        let [b, h, t, dv] = y.dims();
        self.output(y.swap_dims(1, 2).reshape([b, t, h * dv]))
    }

    /// The output projection of heads already merged.
    ///
    /// # Shapes
    /// - `y`: `[batch, seq, heads·d_v]` -> `[batch, seq, d_model]`
    pub fn output(&self, y: Tensor<3>) -> Tensor<3> {
        fused::affine(&self.out, y)
    }
}

/// Rotates queries and keys sitting at absolute positions `offset..` (Su et al. 2021); a no-op
/// when the model has no RoPE. The one place every family applies positions inside attention.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, d]` -> the same
pub fn apply_rope(
    q: Tensor<4>,
    k: Tensor<4>,
    rope: Option<&RotaryEncoding>,
    offset: usize,
) -> (Tensor<4>, Tensor<4>) {
    match rope {
        Some(r) => {
            let [_, _, t, width] = q.dims();
            let (cos, sin) = rotation(r, offset, t, width);
            let (cos, sin) = (cos.unsqueeze::<4>(), sin.unsqueeze::<4>());
            (rotate(q, &cos, &sin), rotate(k, &cos, &sin))
        }
        None => (q, k),
    }
}

impl HeadProjection {
    /// RoPE applied inside packed `[q | k | v]` (queries and keys rotated, values as they are),
    /// for kernels that take the packed layout; the input itself without RoPE.
    ///
    /// # Shapes
    /// - `qkv`: `[batch, seq, (2·d_qk + d_v)·heads]` -> the same
    pub fn rotate_packed(
        &self,
        qkv: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
    ) -> Tensor<3> {
        self.rotate_parts(qkv, rope, offset, self.n_heads)
    }

    /// [`Self::rotate_packed`] of [`Self::project_grouped`]'s layout (`n_kv_heads` keys).
    ///
    /// # Shapes
    /// - `qkv`: `[batch, seq, H·d_qk + K·(d_qk + d_v)]` -> the same
    pub fn rotate_grouped(
        &self,
        qkv: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
    ) -> Tensor<3> {
        self.rotate_parts(qkv, rope, offset, self.n_kv_heads)
    }

    /// RoPE on the `n_heads` queries and the `kv` keys leading each packed row.
    fn rotate_parts(
        &self,
        qkv: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
        kv: usize,
    ) -> Tensor<3> {
        let Some(rope) = rope else { return qkv };
        match fused::rope_packed(qkv, rope, offset, (self.n_heads + kv) * self.d_qk, self.d_qk) {
            Ok(rotated) => rotated,
            Err(qkv) => self.rotate_parts_composed(*qkv, rope, offset, kv),
        }
    }

    /// [`Self::rotate_packed`] by tensor ops: the fused kernel's reference.
    #[cfg(test)]
    fn rotate_packed_composed(
        &self,
        qkv: Tensor<3>,
        rope: &RotaryEncoding,
        offset: usize,
    ) -> Tensor<3> {
        self.rotate_parts_composed(qkv, rope, offset, self.n_heads)
    }

    fn rotate_parts_composed(
        &self,
        qkv: Tensor<3>,
        rope: &RotaryEncoding,
        offset: usize,
        kv: usize,
    ) -> Tensor<3> {
        let [b, t, w] = qkv.dims();
        let (h, dqk) = (self.n_heads(), self.d_qk());
        let (cos, sin) = rotation(rope, offset, t, dqk);
        let (cos, sin) = (cos.reshape([1, t, 1, dqk]), sin.reshape([1, t, 1, dqk]));
        let part = |start: usize, n: usize| {
            rotate(qkv.clone().narrow(2, start, n * dqk).reshape([b, t, n, dqk]), &cos, &sin)
                .reshape([b, t, n * dqk])
        };
        let rest = qkv.clone().narrow(2, (h + kv) * dqk, w - (h + kv) * dqk);
        Tensor::cat(vec![part(0, h), part(h * dqk, kv), rest], 2)
    }
}

/// KV cache of a softmax-type (growing-state) attention layer.
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

    /// Drops all but the last `n` cached keys and values (a sliding window's decoding); the
    /// position keeps counting every token seen.
    pub fn keep_last(&mut self, n: usize) {
        let keep = |x: Option<Tensor<4>>| {
            x.and_then(|x| {
                let seen = x.dims()[2];
                (n > 0).then(|| if seen > n { x.narrow(2, seen - n, n) } else { x })
            })
        };
        self.keys = keep(self.keys.take());
        self.values = keep(self.values.take());
    }

    /// One decoding step of a KV-cache family: project `x` and rotate it at the cache's position,
    /// append its keys and values, run `attend(q, keys, values, q_offset)` over the whole cache
    /// (causal, queries at `q_offset..`), and merge the heads.
    ///
    /// # Shapes
    /// - `x`: `[batch, S, d_model]` -> `[batch, S, d_model]`; `attend` returns `[batch, heads, S, d_v]`
    pub fn step(
        &mut self,
        heads: &HeadProjection,
        x: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        attend: impl FnOnce(Tensor<4>, Tensor<4>, Tensor<4>, usize) -> Tensor<4>,
    ) -> Tensor<3> {
        let offset = self.position;
        let (q, k, v) = heads.split_grouped_rotated(x, rope, offset);
        let (keys, values) = self.append(k, v);
        heads.merge(attend(q, heads.repeat_kv(keys), heads.repeat_kv(values), offset))
    }

    /// Floats a cache holds after `seq_len` tokens: keys and values of every key/value head,
    /// `2·d·L` (zoology's state size for attention), divided by the query heads per key/value
    /// head under grouped-query attention.
    pub fn floats(dims: &MixerDims, seq_len: usize) -> usize {
        2 * seq_len * dims.n_kv_heads * dims.head_dim()
    }
}

/// `true` where query `i` (absolute position `q_offset + i`) must not see key `j`: `j > q_offset + i`.
///
/// # Shapes
/// - returns `[seq_q, seq_k]`
pub fn causal_mask(
    seq_q: usize,
    seq_k: usize,
    q_offset: usize,
    device: &Device,
) -> Tensor<2, Bool> {
    Tensor::<2, Bool>::tril_mask([seq_q, seq_k], q_offset as i64, device)
}

/// Number of keys each query attends over: `min(q_offset + i + 1, seq_k)` when causal, else `seq_k`.
///
/// # Shapes
/// - returns `[seq_q, 1]`
pub fn keys_per_query(
    seq_q: usize,
    seq_k: usize,
    q_offset: usize,
    causal: bool,
    device: &Device,
) -> Tensor<2> {
    let counts: Vec<f32> = (0..seq_q)
        .map(|i| if causal { (q_offset + i + 1).min(seq_k) } else { seq_k } as f32)
        .collect();
    Tensor::<1>::from_floats(counts.as_slice(), device).reshape([seq_q, 1])
}

/// Softmax over the last axis with `mask == true` entries excluded. NaN-safe: a row whose
/// entries are all masked gets all-zero weights, not NaN.
///
/// # Shapes
/// - `scores`: `[batch, heads, seq_q, seq_k]`, `mask`: `[seq_q, seq_k]`
pub fn masked_softmax(scores: Tensor<4>, mask: Option<Tensor<2, Bool>>) -> Tensor<4> {
    let scores = match mask {
        Some(mask) => {
            let [b, h, q, k] = scores.dims();
            scores.mask_fill(mask.unsqueeze::<4>().expand([b, h, q, k]), f32::NEG_INFINITY)
        }
        None => scores,
    };
    // Softmax is shift-invariant, so the (detached) row max only guards exp against overflow.
    // Clamping it keeps an all -inf row at exp(-inf - finite) = 0 instead of exp(NaN).
    let row_max = scores.clone().max_dim(3).detach().clamp_min(f32::MIN);
    let e = (scores - row_max).exp();
    let total = e.clone().sum_dim(3).clamp_min(f32::MIN_POSITIVE);
    e / total
}

/// [`diagnostics`] of a full-sequence forward: every query at its own position, over `seq` keys.
pub fn sequence_diagnostics(weights: Tensor<4>, causal: bool) -> AttentionDiagnostics {
    let [_, _, seq, _] = weights.dims();
    let keys = keys_per_query(seq, seq, 0, causal, &weights.device());
    diagnostics(weights, keys)
}

/// Per-head entropy of attention rows, for monitoring. Works on detached copies.
///
/// # Shapes
/// - `weights`: `[batch, heads, seq_q, seq_k]`, `keys`: `[seq_q, 1]` (from [`keys_per_query`])
pub fn diagnostics(weights: Tensor<4>, keys: Tensor<2>) -> AttentionDiagnostics {
    let weights = weights.detach();
    let [b, h, q, _] = weights.dims();
    let magnitude = weights.clone().abs();
    let p = magnitude.clone() / magnitude.sum_dim(3).clamp_min(1e-30);
    // p ln p -> 0 as p -> 0; the clamp only keeps ln finite.
    let row_entropy = -(p.clone() * p.clamp_min(1e-30).log()).sum_dim(3).reshape([b, h, q]);
    let entropy = row_entropy.clone().mean_dim(2).mean_dim(0).reshape([h]);

    let log_n = keys.clone().log().reshape([1, 1, q]);
    let counted = keys.greater_equal_elem(2.0).float().reshape([1, 1, q]);
    let rows = counted.clone().sum().into_scalar::<f32>().max(1.0) * b as f32;
    let normalized =
        (row_entropy / log_n.clamp_min(1e-12) * counted.clone()).sum_dim(2).sum_dim(0).reshape([h])
            / rows;
    let first = weights.clone().narrow(3, 0, 1).abs().reshape([b, h, q]);
    let sink_mass = (first * counted).sum_dim(2).sum_dim(0).reshape([h]) / rows;
    AttentionDiagnostics { weights, entropy, normalized_entropy: normalized, sink_mass }
}

#[cfg(test)]
mod tests;
