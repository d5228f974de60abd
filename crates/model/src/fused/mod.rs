//! Fused kernels with hand-written backward passes, used on the flex (CPU) backend.
//!
//! Burn's autodiff records every tensor op of a composed formula and runs each one's backward
//! separately, and flex's matmul zero-fills then copies every output buffer. Profiles of the
//! nanoGPT-recipe training step put about half of it in that overhead, so each formula below is
//! one op over raw `f32` slices, registered with Burn's autodiff with its own backward:
//!
//! | function | formula | kernel file |
//! |---|---|---|
//! | [`affine`], [`affine_map`] | `x·W + b` (Burn's `Linear`) | `matmul.rs` (the `gemm` crate, strided) |
//! | [`gelu`] | `x·Φ(x)` | `simd.rs` |
//! | [`elu_plus_one`] | `elu(x) + 1` | `simd.rs` |
//! | [`silu`] | `x·σ(x)` | `simd.rs` |
//! | [`log_sigmoid`] | `ln σ(x)` | `simd.rs` |
//! | [`token_cross_entropy`] | `ln Σ_j e^{x_j} − x_t` per row, and its argmax | `cross_entropy.rs` |
//! | [`layer_norm`] | `γ ⊙ (x − μ)/√(σ² + ε) + β` | `norm.rs` |
//! | [`rms_norm`] | `γ ⊙ x/√(mean(x²) + ε)` | `norm.rs` |
//! | [`rope_packed`] | RoPE on the `q`, `k` of `[q|k|v]` rows: `(x₀cos − x₁sin, x₁cos + x₀sin)` per pair | `rope.rs` |
//! | [`softmax_attention_packed`] | `softmax(c·q·kᵀ) v` on `[q|k|v]` rows | `attention.rs` (probabilities kept), `tiled_attention.rs` (from 128 tokens: blocks of queries, memory linear in T) |
//! | [`softmax_attention_heads`] | the same on split heads (packs them first) | as above |
//! | [`l2_normalize_heads`] | heads off `[.., H·d]` rows, `c·x/√(‖x‖² + ε)` each (the delta rule's q, k) | `l2_heads.rs` |
//! | [`causal_linear_attention`] | chunked `φ(q)·Σφ(k)vᵀ / φ(q)·Σφ(k)` | `linear_attention.rs` |
//! | [`causal_linear_attention_packed`] | the same on `[q|k|v]` rows, a pointwise φ applied inside | `packed_linear_attention.rs` (over `linear_attention.rs`) |
//! | [`gated_recurrence`] | `S_t = a_t ⊙ S_{t−1} + k_t u_tᵀ`, `u_t = v_t` or `β_t(v_t − (a_t ⊙ S_{t−1})ᵀk_t)`, `y_t = S_tᵀq_t` | `gated_recurrence.rs` (token by token), `chunked_delta.rs` (blocks on the gemm from head width 32, one driver over the per-head and per-channel (`chunked_delta/channels/`) block forms) |
//! | [`dplr_recurrence`] | `S_t = diag(w_t) S_{t−1} + β_t (S_{t−1}ᵀα_t)ᵀ + k_t v_tᵀ`, `y_t = S_tᵀ r_t` | `dplr_recurrence.rs` (token by token) |
//! | [`adamw_step`] | `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `p ← p(1−lr·λ) − lr·m̂/(√v̂ + ε)` (no gradient) | `adamw.rs` |
//! | [`causal_depthwise_conv`] | `y_t = Σ_i w_i ⊙ x_{t−K+1+i}` per channel, zero history (`conv=K`, Canon) | `depthwise_conv.rs` |
//! | [`span_attention`] | `softmax(c·q_i·k_l) v_l` over the key spans listed per query (MoBA's blocks, NSA's selection and window) | `span_attention.rs` |
//!
//! Every function takes and returns ordinary tensors. On flex (with or without autodiff) it
//! runs the fused kernel; on any other backend, or a dtype other than `f32`, it runs the
//! composed formula, which is also what the tests compare the kernels against (outputs and
//! gradients on fresh random inputs).

#[cfg(feature = "flex")]
mod adamw;
#[cfg(feature = "flex")]
mod attention;
#[cfg(feature = "flex")]
mod chunked_delta;
#[cfg(feature = "flex")]
mod cross_entropy;
#[cfg(feature = "flex")]
mod depthwise_conv;
#[cfg(feature = "flex")]
mod dplr_recurrence;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod gated_recurrence;
mod inputs;
#[cfg(feature = "flex")]
mod l2_heads;
#[cfg(feature = "flex")]
mod linear_attention;
#[cfg(feature = "flex")]
mod matmul;
#[cfg(feature = "flex")]
mod norm;
#[cfg(feature = "flex")]
mod packed_linear_attention;
mod pointwise;
#[cfg(feature = "flex")]
mod rope;
// Off flex only the MoBA and NSA gates' `dot` is used.
#[cfg_attr(not(feature = "flex"), allow(dead_code, unused_imports))]
pub(crate) mod simd;
#[cfg(feature = "flex")]
mod span_attention;
#[cfg(feature = "flex")]
mod tiled_attention;

use burn::nn::{LayerNorm, Linear, RmsNorm};
use burn::tensor::Tensor;

pub use inputs::{
    AdamWInputs, AdamWStep, AffineInputs, CrossEntropyInputs, DplrInputs, GatedRecurrenceInputs,
    LayerNormInputs, LinearAttentionInputs, PointMap, Unfused,
};
pub use pointwise::{elu_plus_one, gelu, log_sigmoid, silu};

/// `x · w + b` over the last axis, as `burn::nn::Linear::forward` computes it, fused on flex.
///
/// # Shapes
/// - `x`: `[..., d_in]`, `weight`: `[d_in, d_out]` (any strides), `bias`: `[d_out]`
/// - returns `[..., d_out]`
pub fn affine_map<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let (x, weight, bias) = match flex::affine(x, weight, bias) {
        Ok(y) => return y,
        Err(inputs) => *inputs,
    };
    burn::tensor::module::linear(x, weight, bias)
}

/// Rotary position encoding of the queries and keys in packed `[q | k | v]` rows (the first
/// `rotated` values of each row, heads `d` wide) at positions `offset..`, fused on flex.
/// Returns `qkv` back (boxed) off flex, where the caller runs the composed formula
/// (`heads::HeadProjection::rotate_packed`, which the tests compare this with).
///
/// # Shapes
/// - `qkv`: `[batch, seq, width]` -> the same
pub fn rope_packed(
    qkv: Tensor<3>,
    rope: &burn::nn::RotaryEncoding,
    offset: usize,
    rotated: usize,
    d: usize,
) -> Result<Tensor<3>, Unfused<Tensor<3>>> {
    #[cfg(feature = "flex")]
    return flex::rope_packed(qkv, rope, offset, rotated, d);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (rope, offset, rotated, d);
        Err(Box::new(qkv))
    }
}

/// One AdamW step on a parameter, its gradient and its moments (zero when `None`), as
/// burn-optim's `AdamW` computes it, in one pass and in place on flex. Returns the inputs back
/// off flex, where the caller runs burn's optimizer (the trainer's test compares the two).
///
/// # Shapes
/// - `param`, `grad`, each moment: the same shape -> the new `(param, m, v)`
pub fn adamw_step<const D: usize>(
    h: AdamWStep,
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
) -> Result<(Tensor<D>, Tensor<D>, Tensor<D>), Unfused<AdamWInputs<D>>> {
    #[cfg(feature = "flex")]
    return flex::adamw_step(h, param, grad, moments);
    #[cfg(not(feature = "flex"))]
    {
        let _ = h;
        Err(Box::new((param, grad, moments)))
    }
}

/// Causal depthwise convolution over time from a zero history, `y_t = Σ_i w_i ⊙ x_{t−K+1+i}`
/// per channel, fused on flex. Returns the inputs back off flex, where the caller runs the
/// composed formula (`short_conv::causal_conv`, whose test compares the two).
///
/// # Shapes
/// - `x`: `[batch, seq, channels]`, `w`: `[K, channels]` -> `[batch, seq, channels]`
pub fn causal_depthwise_conv(
    x: Tensor<3>,
    w: Tensor<2>,
) -> Result<Tensor<3>, Unfused<(Tensor<3>, Tensor<2>)>> {
    #[cfg(feature = "flex")]
    let (x, w) = {
        let [k, c] = w.dims();
        match flex::causal_depthwise_conv(x, w.clone().reshape([1, k, c])) {
            Ok(y) => return Ok(y),
            Err(inputs) => {
                let [x, _] = *inputs;
                (x, w)
            }
        }
    };
    Err(Box::new((x, w)))
}

/// Whether the fused kernels run on `x`'s backend and dtype (`f32` on flex): a caller that must
/// build a kernel's layout first (MLA's packed rows) asks before paying for it.
pub fn runs_fused<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    return flex::takes(x);
    #[cfg(not(feature = "flex"))]
    {
        let _ = x;
        false
    }
}

/// Softmax attention with a constant score multiplier on packed projections, fused on flex.
///
/// `qkv` holds each position's `heads` queries, then `kv_heads` keys and values, side by side
/// (`[q | k | v]`, each head-major: the layout of `heads::HeadProjection::project_grouped`);
/// with `kv_heads < heads` (grouped-query attention) each key/value head serves
/// `heads / kv_heads` consecutive query heads without being copied. With a `window` `W`, query
/// `i` sees only keys `j` with `i − W < j` (and `j < i + W` when not causal), as
/// `families::softmax::attention_mask` masks. The result has the heads merged. Returns `qkv`
/// back (boxed) off flex, where the caller runs the composed formula.
///
/// # Shapes
/// - `qkv`: `[batch, seq, (heads + 2·kv_heads)·d]` -> `[batch, seq, heads·d]`
pub fn softmax_attention_packed(
    qkv: Tensor<3>,
    heads: usize,
    kv_heads: usize,
    scale: f32,
    causal: bool,
    window: Option<usize>,
) -> Result<Tensor<3>, Unfused<Tensor<3>>> {
    #[cfg(feature = "flex")]
    return flex::softmax_attention_packed(qkv, heads, kv_heads, scale, causal, window);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (heads, kv_heads, scale, causal, window);
        Err(Box::new(qkv))
    }
}

/// [`softmax_attention_packed`] for heads already split: packs `q`, `k`, `v` into the kernel's
/// `[q | k | v]` rows (one copy each) and runs it. For the families whose heads are not the
/// plain projection's (MLA's latent keys, differential attention's half-width sub-heads), which
/// build their heads first and must still reach the kernel. Returns `None` off flex, where the
/// caller composes the formula; ask [`runs_fused`] first to skip building the heads there.
///
/// # Shapes
/// - `q`: `[batch, heads, seq, d]`, `k`, `v`: `[batch, kv_heads, seq, d]`
///   -> `[batch, seq, heads·d]`
pub fn softmax_attention_heads(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f32,
    causal: bool,
) -> Option<Tensor<3>> {
    let [b, h, t, d] = q.dims();
    let kv = k.dims()[1];
    let rows = |x: Tensor<4>, n: usize| x.swap_dims(1, 2).reshape([b, t, n * d]);
    let qkv = Tensor::cat(vec![rows(q, h), rows(k, kv), rows(v, kv)], 2);
    softmax_attention_packed(qkv, h, kv, scale, causal, None).ok()
}

/// Layer norm over the last axis, `γ ⊙ (x − μ)/√(σ² + ε) + β`, as `burn::nn::LayerNorm`
/// computes it, fused on flex. `epsilon` must be the one the layer was configured with (Burn
/// keeps it private).
///
/// # Shapes
/// - `x`: `[..., d]` -> `[..., d]`
pub fn layer_norm<const D: usize>(layer: &LayerNorm, x: Tensor<D>, epsilon: f64) -> Tensor<D> {
    layer_norm_with(x, layer.gamma.val(), layer.beta.as_ref().map(|b| b.val()), epsilon)
}

/// [`layer_norm`] with explicit `γ` and `β`.
///
/// # Shapes
/// - `x`: `[..., d]`, `gamma`, `beta`: `[d]` -> `[..., d]`
pub fn layer_norm_with<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let (x, gamma, beta) = match flex::layer_norm(x, gamma, beta, epsilon as f32, true) {
        Ok(y) => return y,
        Err(inputs) => *inputs,
    };
    burn::tensor::module::layer_norm(x, gamma, beta, epsilon)
}

/// RMS norm over the last axis, `γ ⊙ x/√(mean(x²) + ε)`, as `burn::nn::RmsNorm` computes it,
/// fused on flex.
///
/// # Shapes
/// - `x`: `[..., d]` -> `[..., d]`
pub fn rms_norm<const D: usize>(layer: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    rms_norm_with(x, layer.gamma.val(), layer.epsilon)
}

/// [`rms_norm`] with an explicit `γ`.
///
/// # Shapes
/// - `x`: `[..., d]`, `gamma`: `[d]` -> `[..., d]`
pub fn rms_norm_with<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, epsilon: f64) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let (x, gamma, _) = match flex::layer_norm(x, gamma, None, epsilon as f32, false) {
        Ok(y) => return y,
        Err(inputs) => *inputs,
    };
    rms_norm_composed(x, gamma, epsilon)
}

/// `burn::nn::RmsNorm`'s formula (for `f32`), by tensor ops.
fn rms_norm_composed<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, epsilon: f64) -> Tensor<D> {
    let rms = (x.clone().square().mean_dim(D - 1) + epsilon).sqrt();
    x / rms * gamma.unsqueeze()
}

/// Splits `heads` heads off each row and L2-normalises each, scaled by `c`: `c·x/√(‖x‖² + ε)`,
/// fused on flex (reading a narrowed view of a packed projection in place). Returns `x` back off
/// flex, where the caller splits and normalises by tensor ops (the delta family's test compares
/// the two).
///
/// # Shapes
/// - `x`: `[batch, seq, heads·d]` -> `[batch, heads, seq, d]`
pub fn l2_normalize_heads(
    x: Tensor<3>,
    heads: usize,
    c: f32,
    eps: f32,
) -> Result<Tensor<4>, Unfused<Tensor<3>>> {
    #[cfg(feature = "flex")]
    return flex::l2_normalize_heads(x, heads, c, eps);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (heads, c, eps);
        Err(Box::new(x))
    }
}

/// Causal linear attention by chunks of `chunk` tokens from a zero state, fused on flex: the
/// formula of `families::linear::chunked::causal` (normalised by `safe(φ(q)·Σφ(k))` when
/// `normalize`, `safe(z) = sign(z)·max(|z|, eps)`). Returns the inputs back off flex, where the
/// caller runs the composed formula. The linear-attention family owns the choice to call it and
/// its test against the composed form.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]` (feature-mapped), `v`: `[batch, heads, seq, d_v]`
///   -> `[batch, heads, seq, d_v]`
pub fn causal_linear_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    chunk: usize,
    normalize: bool,
    eps: f32,
) -> Result<Tensor<4>, Unfused<LinearAttentionInputs>> {
    #[cfg(feature = "flex")]
    return flex::causal_linear_attention(q, k, v, chunk, normalize, eps);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (chunk, normalize, eps);
        Err(Box::new((q, k, v)))
    }
}

/// [`causal_linear_attention`] on packed `[q | k | v]` rows (`heads` of each, queries and keys
/// `d_qk` wide), the pointwise feature map `map` applied to queries and keys inside the kernel;
/// returns the heads side by side, as the output projection takes them. Returns `qkv` back
/// off flex, where the caller splits the heads and runs the composed formula (the linear family's
/// test compares the two).
///
/// # Shapes
/// - `qkv`: `[batch, seq, heads·(2·d_qk + d_v)]` -> `[batch, seq, heads·d_v]`
pub fn causal_linear_attention_packed(
    qkv: Tensor<3>,
    heads: usize,
    d_qk: usize,
    map: PointMap,
    chunk: usize,
    normalize: bool,
    eps: f32,
) -> Result<Tensor<3>, Unfused<Tensor<3>>> {
    #[cfg(feature = "flex")]
    return flex::causal_linear_attention_packed(qkv, heads, d_qk, map, chunk, normalize, eps);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (heads, d_qk, map, chunk, normalize, eps);
        Err(Box::new(qkv))
    }
}

/// The gated linear recurrence of the `decay` and (with `beta`) `delta` families, fused on
/// flex (forward and backward in blocks as matrix products for one gate per head and heads of
/// width 32 or more, else token by token; the state checkpointed every `chunk` tokens):
/// `S_t = a_t ⊙ S_{t−1} + k_t u_tᵀ`, `y_t = S_tᵀ q_t`, `a_t = e^{log_g_t}` scaling the state's
/// rows (one gate per head, or one per key channel), `u_t = v_t` without `beta`, else
/// `u_t = β_t (v_t − (a_t ⊙ S_{t−1})ᵀ k_t)`. From the zero state. Returns the inputs back off
/// flex, where the caller runs its composed form.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, d_k]`, `v`: `[batch, heads, seq, d_v]`,
///   `log_g`: `[batch, heads, seq, 1 or d_k]`, `beta`: `[batch, heads, seq, 1]`
///   -> `[batch, heads, seq, d_v]`
pub fn gated_recurrence(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    beta: Option<Tensor<4>>,
    chunk: usize,
) -> Result<Tensor<4>, Unfused<GatedRecurrenceInputs>> {
    #[cfg(feature = "flex")]
    return flex::gated_recurrence(q, k, v, log_g, beta, chunk);
    #[cfg(not(feature = "flex"))]
    {
        let _ = chunk;
        Err(Box::new((q, k, v, log_g, beta)))
    }
}

/// Softmax attention of each query over the key spans listed for it (the sparse attention of
/// MoBA and of NSA's selected and window branches), fused on flex in `O(T·|spans|·d)`: `spans`
/// is `[batch, heads, seq, n_spans, 2]` key positions `(start, end)`, disjoint per query, an
/// unused one empty; a query with no key gets zero. Returns the inputs back off flex, where the
/// caller runs its masked dense form.
///
/// # Shapes
/// - `x = [q, k, v]`: `q` `[batch, heads, seq, d]`, `k` `[batch, heads, seq_k, d]`, `v`
///   `[batch, heads, seq_k, d_v]` -> `[batch, heads, seq, d_v]`
pub fn span_attention(
    x: [Tensor<4>; 3],
    spans: Vec<u32>,
    n_spans: usize,
) -> Result<Tensor<4>, Unfused<[Tensor<4>; 3]>> {
    #[cfg(feature = "flex")]
    {
        let [b, h, t, d] = x[0].dims();
        let seq_k = x[1].dims()[2];
        let dims = span_attention::Dims {
            bh: b * h,
            seq: t,
            seq_k,
            d,
            dv: x[2].dims()[3],
            spans: n_spans,
            scale: (d as f32).sqrt().recip(),
        };
        let in_range = spans.iter().all(|&p| p as usize <= seq_k);
        if t == 0 || b * h == 0 || spans.len() != b * h * t * n_spans * 2 || !in_range {
            return Err(Box::new(x));
        }
        flex::span_attention(x, spans, dims)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (spans, n_spans);
        Err(Box::new(x))
    }
}

/// fla's diagonal-plus-low-rank recurrence (RWKV-7's state rule) from the zero state:
/// `S_t = diag(e^{log w_t}) S_{t−1} + β_t (S_{t−1}ᵀ α_t)ᵀ + k_t v_tᵀ`, `y_t = S_tᵀ r_t`, fused
/// token by token on flex (`chunk` tokens between the backward pass's checkpoints). Returns the
/// inputs back off flex, where the caller runs its composed form.
///
/// # Shapes
/// - `x = [r, log_w, k, v, alpha, beta]`: `[batch, heads, seq, d_k]` each, `v`
///   `[batch, heads, seq, d_v]` -> `[batch, heads, seq, d_v]`
pub fn dplr_recurrence(x: DplrInputs, chunk: usize) -> Result<Tensor<4>, Unfused<DplrInputs>> {
    #[cfg(feature = "flex")]
    return flex::dplr_recurrence(x, chunk);
    #[cfg(not(feature = "flex"))]
    {
        let _ = chunk;
        Err(Box::new(x))
    }
}

/// Next-token cross-entropy: each position's negative log-likelihood of its target id under
/// its logits, `ln Σ_j e^{x_j} − x_id`, and each position's argmax (the first maximal logit,
/// without gradient), fused on flex into one pass over the logits each way.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`, `ids`: `[batch, seq]` (each in `0..vocab`)
///   -> `([batch, seq], [batch, seq])`
pub fn token_cross_entropy(
    logits: Tensor<3>,
    ids: Tensor<2, burn::tensor::Int>,
) -> (Tensor<2>, Tensor<2, burn::tensor::Int>) {
    #[cfg(feature = "flex")]
    let (logits, ids) = match flex::token_cross_entropy(logits, ids) {
        Ok(out) => return out,
        Err(inputs) => *inputs,
    };
    token_cross_entropy_composed(logits, ids)
}

fn token_cross_entropy_composed(
    logits: Tensor<3>,
    ids: Tensor<2, burn::tensor::Int>,
) -> (Tensor<2>, Tensor<2, burn::tensor::Int>) {
    let [b, t, _] = logits.dims();
    let argmax = logits.clone().detach().argmax(2).reshape([b, t]);
    let nll = -burn::tensor::activation::log_softmax(logits, 2)
        .gather(2, ids.unsqueeze_dim::<3>(2))
        .reshape([b, t]);
    (nll, argmax)
}

/// [`affine_map`] with a `Linear` layer's parameters. Named "affine" so it never reads as
/// linear attention.
pub fn affine<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    affine_map(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

#[cfg(test)]
mod tests;
