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
//! | [`causal_linear_attention`] | chunked `φ(q)·Σφ(k)vᵀ / φ(q)·Σφ(k)` | `linear_attention.rs` |
//! | [`gated_recurrence`] | `S_t = a_t ⊙ S_{t−1} + k_t u_tᵀ`, `u_t = v_t` or `β_t(v_t − (a_t ⊙ S_{t−1})ᵀk_t)`, `y_t = S_tᵀq_t` | `gated_recurrence.rs` |
//!
//! Every function takes and returns ordinary tensors. On flex (with or without autodiff) it
//! runs the fused kernel; on any other backend, or a dtype other than `f32`, it runs the
//! composed formula, which is also what the tests compare the kernels against (outputs and
//! gradients on fresh random inputs).

#[cfg(feature = "flex")]
mod attention;
#[cfg(feature = "flex")]
mod chunked_delta;
#[cfg(feature = "flex")]
mod cross_entropy;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod gated_recurrence;
mod inputs;
#[cfg(feature = "flex")]
mod linear_attention;
#[cfg(feature = "flex")]
mod matmul;
#[cfg(feature = "flex")]
mod norm;
#[cfg(feature = "flex")]
mod rope;
pub(crate) mod simd;
#[cfg(feature = "flex")]
mod tiled_attention;

use burn::nn::{LayerNorm, Linear, RmsNorm};
use burn::tensor::Tensor;

pub use inputs::{
    AffineInputs, CrossEntropyInputs, GatedRecurrenceInputs, LayerNormInputs,
    LinearAttentionInputs, Unfused,
};

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

/// `elu(x) + 1` (`x + 1` for `x > 0`, `e^x` otherwise), the feature map of Katharopoulos et al.,
/// fused on flex.
///
/// # Shapes
/// - any; the output has the input's shape
pub fn elu_plus_one<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match flex::elu_plus_one(x) {
        Ok(y) => return y,
        Err(x) => *x,
    };
    elu_plus_one_composed(x)
}

fn elu_plus_one_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone().clamp_min(0.0) + x.clamp_max(0.0).exp()
}

/// `ln σ(x)`, as `burn::tensor::activation::log_sigmoid` but fused on flex (GLA's and FoX's
/// gates).
///
/// # Shapes
/// - any; the output has the input's shape
pub fn log_sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match flex::log_sigmoid(x) {
        Ok(y) => return y,
        Err(x) => *x,
    };
    burn::tensor::activation::log_sigmoid(x)
}

/// SiLU, `x·σ(x)`, as `burn::tensor::activation::silu` but fused on flex.
///
/// # Shapes
/// - any; the output has the input's shape
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match flex::silu(x) {
        Ok(y) => return y,
        Err(x) => *x,
    };
    burn::tensor::activation::silu(x)
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

/// Exact GELU, `x·Φ(x)`, as `burn::tensor::activation::gelu` but fused on flex.
///
/// # Shapes
/// - any; the output has the input's shape
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match flex::gelu(x) {
        Ok(y) => return y,
        Err(x) => *x,
    };
    burn::tensor::activation::gelu(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, output_and_grads, randn};

    /// The fused GELU equals Burn's composed GELU on fresh random inputs, outputs and gradients,
    /// with and without autodiff.
    #[test]
    fn fused_gelu_matches_burn_gelu() {
        let d = device();
        let x = randn([3, 17, 40], 7, &d) * 3.0;
        assert_close(
            gelu(x.clone()),
            burn::tensor::activation::gelu(x.clone()),
            1e-6,
            "gelu, no autodiff",
        );
        let (fast, fast_g) = output_and_grads(std::slice::from_ref(&x), 8, |v| gelu(v[0].clone()));
        let (slow, slow_g) =
            output_and_grads(&[x], 8, |v| burn::tensor::activation::gelu(v[0].clone()));
        assert_close(fast, slow, 1e-6, "gelu output");
        assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-6, "gelu gradient");
    }

    /// The fused cross-entropy equals the composed `−log_softmax(x)[id]` on fresh random logits
    /// (a strided view and a contiguous view at an offset among them), outputs, argmax and
    /// gradients, with and without autodiff.
    #[test]
    fn fused_cross_entropy_matches_the_composed_formula() {
        use burn::tensor::{Int, TensorData};
        let d = device();
        let (b, t, vocab) = (3, 7, 53);
        let logits = randn([b, vocab, t], 110, &d) * 4.0;
        let ids: Vec<i64> = (0..b * t).map(|i| ((i * 31 + 5) % vocab) as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &d);
        let run = |fused: bool| {
            output_and_grads(std::slice::from_ref(&logits), 111, |v| {
                let x = v[0].clone().swap_dims(1, 2);
                let ids = Tensor::<2, Int>::from_data(ids.to_data(), &x.device());
                let (nll, _) = if fused {
                    token_cross_entropy(x, ids)
                } else {
                    token_cross_entropy_composed(x, ids)
                };
                nll
            })
        };
        let ((fast, fast_g), (slow, slow_g)) = (run(true), run(false));
        assert_close(fast, slow, 1e-5, "nll");
        assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-5, "gradient of the logits");
        // A contiguous view at an offset into a larger buffer (one batch element's last
        // positions, as `Target::LastPosition` narrows them) whose buffer nothing else holds by
        // the backward pass (the product makes it, the narrowing keeps no reference).
        let wide = randn([1, t + 2, vocab], 112, &d) * 4.0;
        let last = |x: Tensor<3>| (x * 1.0).narrow(1, 2, t);
        let one_ids = |x: &Tensor<3>| {
            let ids: Vec<i64> = (0..t).map(|i| ((i * 17 + 3) % vocab) as i64).collect();
            Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &x.device())
        };
        let run = |fused: bool| {
            output_and_grads(std::slice::from_ref(&wide), 113, |v| {
                let x = last(v[0].clone());
                let ids = one_ids(&x);
                let (nll, _) = if fused {
                    token_cross_entropy(x, ids)
                } else {
                    token_cross_entropy_composed(x, ids)
                };
                nll
            })
        };
        let ((fast, fast_g), (slow, slow_g)) = (run(true), run(false));
        assert_close(fast, slow, 1e-5, "nll of a narrowed view");
        assert_close(
            fast_g[0].clone(),
            slow_g[0].clone(),
            1e-5,
            "gradient through a narrowed view",
        );
        let x = logits.swap_dims(1, 2);
        let (nll, argmax) = token_cross_entropy(x.clone(), ids.clone());
        let (want_nll, want_argmax) = token_cross_entropy_composed(x, ids);
        assert_close(nll, want_nll, 1e-5, "nll, no autodiff");
        assert_eq!(argmax.into_data(), want_argmax.into_data(), "argmax");
    }

    /// The fused affine map equals Burn's on fresh random inputs: outputs and the gradients of
    /// input, weight and bias, with and without bias, with a transposed (strided) weight.
    #[test]
    fn fused_affine_matches_burn_linear() {
        let d = device();
        let x = randn([2, 5, 7], 21, &d);
        let w = randn([7, 4], 22, &d);
        let wt = randn([4, 7], 23, &d);
        let b = randn([4], 24, &d);
        let reference = |x: Tensor<3>, w: Tensor<2>, b: Option<Tensor<1>>| {
            burn::tensor::module::linear(x, w, b)
        };
        let cases: [(&str, bool, bool); 4] = [
            ("bias", true, false),
            ("no bias", false, false),
            ("strided weight", true, true),
            ("strided, no bias", false, true),
        ];
        for (name, with_bias, strided) in cases {
            let weight = if strided { wt.clone() } else { w.clone() };
            let run = |f: &dyn Fn(Tensor<3>, Tensor<2>, Option<Tensor<1>>) -> Tensor<3>| {
                // Inputs as 3-D tensors so one closure type covers all three.
                let inputs =
                    [x.clone(), weight.clone().unsqueeze::<3>(), b.clone().unsqueeze::<3>()];
                output_and_grads(&inputs, 25, |v| {
                    let w2: Tensor<2> = v[1].clone().squeeze_dim(0);
                    let w2 = if strided { w2.transpose() } else { w2 };
                    let y = f(v[0].clone(), w2, with_bias.then(|| v[2].clone().reshape([4])));
                    // An unused bias still needs a (zero) gradient for the helper.
                    y + v[2].clone().sum().reshape([1, 1, 1]) * 0.0
                })
            };
            let (fast, fast_g) = run(&|x, w, b| affine_map(x, w, b));
            let (slow, slow_g) = run(&|x, w, b| reference(x, w, b));
            assert_close(fast, slow, 1e-5, &format!("{name}: output"));
            let parts = if with_bias { 3 } else { 2 };
            for (i, (f, s)) in fast_g.into_iter().zip(slow_g).take(parts).enumerate() {
                assert_close(f, s, 1e-5, &format!("{name}: gradient {i}"));
            }
        }
        // Without autodiff.
        let plain = affine_map(x.clone(), w.clone(), Some(b.clone()));
        assert_close(plain, reference(x, w, Some(b)), 1e-5, "no autodiff");
    }

    /// The fused layer norm equals Burn's on fresh random inputs (outputs and the gradients of
    /// input, γ and β), with and without bias and autodiff, over more rows than one task holds.
    #[test]
    fn fused_layer_norm_matches_burn_layer_norm() {
        use burn::nn::LayerNormConfig;
        let d = device();
        for bias in [true, false] {
            let x = randn([3, 50, 20], 70, &d) * 2.0 + 0.5;
            let inputs = [
                x,
                randn([20], 71, &d).reshape([1, 1, 20]),
                randn([20], 72, &d).reshape([1, 1, 20]),
            ];
            let run = |fused: bool| {
                output_and_grads(&inputs, 73, |v| {
                    let (gamma, beta) =
                        (v[1].clone().reshape([20]), bias.then(|| v[2].clone().reshape([20])));
                    let y = if fused {
                        layer_norm_with(v[0].clone(), gamma, beta, 1e-5)
                    } else {
                        burn::tensor::module::layer_norm(v[0].clone(), gamma, beta, 1e-5)
                    };
                    // An unused bias still needs a (zero) gradient for the helper.
                    y + v[2].clone().sum().reshape([1, 1, 1]) * 0.0
                })
            };
            let ((fast, fast_g), (slow, slow_g)) = (run(true), run(false));
            assert_close(fast, slow, 1e-5, &format!("bias={bias}: output"));
            for (i, (f, s)) in fast_g.into_iter().zip(slow_g).enumerate() {
                assert_close(f, s, 1e-4, &format!("bias={bias}: gradient {i}"));
            }
        }
        let layer = LayerNormConfig::new(20).init(&d);
        let x = randn([130, 20], 74, &d);
        assert_close(
            layer_norm(&layer, x.clone(), 1e-5),
            layer.forward(x),
            1e-5,
            "a layer, no autodiff",
        );
    }

    /// The fused RMS norm equals Burn's `RmsNorm` on fresh random inputs (outputs and the
    /// gradients of input and γ), with and without autodiff, over more rows than one task holds.
    #[test]
    fn fused_rms_norm_matches_burn_rms_norm() {
        use burn::nn::RmsNormConfig;
        let d = device();
        let x = randn([3, 50, 20], 80, &d) * 2.0 + 0.5;
        let gamma = randn([20], 81, &d).reshape([1, 1, 20]);
        let run = |fused: bool| {
            output_and_grads(&[x.clone(), gamma.clone()], 82, |v| {
                let (x, gamma) = (v[0].clone(), v[1].clone().reshape([20]));
                if fused {
                    rms_norm_with(x, gamma, 1e-5)
                } else {
                    rms_norm_composed(x, gamma, 1e-5)
                }
            })
        };
        let ((fast, fast_g), (slow, slow_g)) = (run(true), run(false));
        assert_close(fast, slow, 1e-5, "rms norm output");
        for (i, (f, s)) in fast_g.into_iter().zip(slow_g).enumerate() {
            assert_close(f, s, 1e-4, &format!("rms norm gradient {i}"));
        }
        let layer = RmsNormConfig::new(20).with_epsilon(1e-6).init(&d);
        let x = randn([130, 20], 83, &d);
        assert_close(rms_norm(&layer, x.clone()), layer.forward(x), 1e-5, "a layer, no autodiff");
    }

    /// Fused `elu + 1` equals the composed formula on a strided input, outputs and gradients.
    #[test]
    fn fused_elu_plus_one_matches_the_composed_formula() {
        let d = device();
        let x = randn([4, 9, 33], 90, &d) * 3.0;
        let (fast, fast_g) = output_and_grads(std::slice::from_ref(&x), 91, |v| {
            elu_plus_one(v[0].clone().swap_dims(1, 2))
        });
        let (slow, slow_g) =
            output_and_grads(&[x], 91, |v| elu_plus_one_composed(v[0].clone().swap_dims(1, 2)));
        assert_close(fast, slow, 1e-6, "elu+1 output");
        assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-6, "elu+1 gradient");
    }

    /// Fused `ln σ` equals Burn's on fresh random inputs, strided, large magnitudes included,
    /// outputs and gradients.
    #[test]
    fn fused_log_sigmoid_matches_burn_log_sigmoid() {
        let d = device();
        let x = randn([4, 9, 33], 94, &d) * 30.0;
        assert_close(
            log_sigmoid(x.clone()),
            burn::tensor::activation::log_sigmoid(x.clone()),
            1e-5,
            "log σ, no autodiff",
        );
        let (fast, fast_g) = output_and_grads(std::slice::from_ref(&x), 95, |v| {
            log_sigmoid(v[0].clone().swap_dims(1, 2))
        });
        let (slow, slow_g) = output_and_grads(&[x], 95, |v| {
            burn::tensor::activation::log_sigmoid(v[0].clone().swap_dims(1, 2))
        });
        assert_close(fast, slow, 1e-5, "log σ output");
        assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-5, "log σ gradient");
    }

    /// Fused SiLU equals Burn's on fresh random inputs, strided, outputs and gradients, with
    /// and without autodiff.
    #[test]
    fn fused_silu_matches_burn_silu() {
        let d = device();
        let x = randn([4, 9, 33], 92, &d) * 4.0;
        assert_close(
            silu(x.clone()),
            burn::tensor::activation::silu(x.clone()),
            1e-6,
            "silu, no autodiff",
        );
        let (fast, fast_g) =
            output_and_grads(std::slice::from_ref(&x), 93, |v| silu(v[0].clone().swap_dims(1, 2)));
        let (slow, slow_g) = output_and_grads(&[x], 93, |v| {
            burn::tensor::activation::silu(v[0].clone().swap_dims(1, 2))
        });
        assert_close(fast, slow, 1e-6, "silu output");
        assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-6, "silu gradient");
    }

    /// A strided (transposed) input gives the same values as its contiguous copy.
    #[test]
    fn fused_gelu_reads_strided_inputs() {
        let d = device();
        let x = randn([5, 9], 11, &d).swap_dims(0, 1);
        let contiguous = Tensor::<2>::from_data(x.to_data(), &d);
        assert_close(gelu(x), gelu(contiguous), 0.0, "strided vs contiguous");
    }
}
