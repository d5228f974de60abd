//! The softmax attention kernel on already-projected heads, for every [`Scaling`], with FoX's
//! decay bias and the sink or softpick normaliser in place of softmax: what the layer's composed
//! path, its decoding and the tests run (the fused kernel covers only the constant scalings).

use super::options::Scaling;
use crate::heads::{causal_mask, keys_per_query, masked_softmax};
use burn::tensor::{Bool, Tensor};

/// Softpick's `ε`.
pub const SOFTPICK_EPS: f32 = 1e-6;
/// `qk_norm`: `x̂ = x / max(‖x‖, ε)`.
pub const QK_NORM_EPS: f32 = 1e-6;
/// `sum_key_norms`: the divisor's floor.
pub const KEY_NORM_FLOOR: f32 = 1e-12;

/// What shapes the logits and their normalisation besides `q`, `k` and the scaling.
#[derive(Clone, Debug, Default)]
pub struct ScoreTerms {
    /// `[heads]`: `learned`/`qk_norm`'s multiplier or `ssmax`'s `s_h`.
    pub scale: Option<Tensor<1>>,
    /// FoX: cumulative log forget gates `c` of the queries (`[batch, heads, seq_q]`) and of the
    /// keys (`[batch, heads, seq_k]`).
    pub forget: Option<(Tensor<3>, Tensor<3>)>,
    /// `[heads]`: the sink logit.
    pub sink: Option<Tensor<1>>,
    /// `log_n_temp`'s `(floor_scale, attn_scale)`.
    pub log_n_temp: (f64, f64),
    /// `window=W`: query `i` sees only keys `j` with `i − W < j` (and `j < i + W` when
    /// bidirectional), `W` keys including its own.
    pub window: Option<usize>,
    /// Absolute position of the first key (a windowed KV cache drops the keys it no longer
    /// needs); 0 for a full sequence.
    pub key_start: usize,
}

/// `true` where query `i` (at `q_offset + i`, counted from the first key) must not see key `j`:
/// the future when causal, and with a window `W` every key `W` or more positions away.
///
/// # Shapes
/// - returns `[seq_q, seq_k]`
pub fn attention_mask(
    seq_q: usize,
    seq_k: usize,
    q_offset: usize,
    causal: bool,
    window: Option<usize>,
    device: &burn::tensor::Device,
) -> Option<Tensor<2, Bool>> {
    let future = causal.then(|| causal_mask(seq_q, seq_k, q_offset, device));
    let Some(w) = window else { return future };
    // Keys before the window: j < q_offset + i − W + 1 (triu_mask marks j < i + offset).
    let past = Tensor::<2, Bool>::triu_mask([seq_q, seq_k], q_offset as i64 - w as i64 + 1, device);
    let far = match future {
        Some(future) => future,
        // Bidirectional: also the keys W or more positions ahead.
        None => {
            Tensor::<2, Bool>::tril_mask([seq_q, seq_k], q_offset as i64 + w as i64 - 1, device)
        }
    };
    Some(past.bool_or(far))
}

/// The softmax attention kernel on already-projected heads.
///
/// Queries sit at absolute positions `q_offset..q_offset + seq_q`, keys at `0..seq_k`. Returns
/// the output and the weights.
///
/// # Shapes
/// - `q`: `[batch, heads, seq_q, d]`, `k`: `[batch, heads, seq_k, d]`, `v`: `[batch, heads, seq_k, d_v]`
/// - returns `[batch, heads, seq_q, d_v]` and `[batch, heads, seq_q, seq_k]`
pub fn softmax_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scaling: Scaling,
    terms: &ScoreTerms,
    causal: bool,
    q_offset: usize,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, seq_q, d] = q.dims();
    let seq_k = k.dims()[2];
    let device = q.device();
    // Masks and key counts are relative to the first key; log_n_temp reads absolute positions.
    let relative = q_offset - terms.key_start;
    let mask = attention_mask(seq_q, seq_k, relative, causal, terms.window, &device);
    // Keys each query sees, `[seq_q, 1]`; with a window, counted off the mask.
    let visible = |mask: &Option<Tensor<2, Bool>>| match (terms.window, mask) {
        (Some(_), Some(m)) => m.clone().bool_not().float().sum_dim(1),
        _ => keys_per_query(seq_q, seq_k, relative, causal, &device),
    };
    let (q, k) = match scaling {
        Scaling::QkNorm => (l2_normalize(q), l2_normalize(k)),
        _ => (q, k),
    };
    let per_head = |name: &str| {
        terms
            .scale
            .clone()
            .unwrap_or_else(|| panic!("{name} scaling needs its parameter"))
            .reshape([1, h, 1, 1])
    };
    let key_norms =
        matches!(scaling, Scaling::SumKeyNorms).then(|| k.clone().powi_scalar(2).sum_dim(3).sqrt());
    let scores = q.matmul(k.swap_dims(2, 3));
    let scores = match scaling {
        Scaling::SqrtD | Scaling::Softpick => scores / (d as f32).sqrt(),
        Scaling::None => scores,
        Scaling::NumKeys => scores / visible(&mask).unsqueeze::<4>(),
        Scaling::SumKeyNorms => {
            // [b, h, seq_k, 1] -> divisor per query: a prefix sum when causal, the total
            // otherwise, the sum over the visible keys with a window.
            let norms = key_norms.expect("computed above");
            let divisor = match (&mask, terms.window) {
                (Some(m), Some(_)) => m.clone().bool_not().float().unsqueeze::<4>().matmul(norms),
                _ if causal => norms
                    .reshape([b, h, seq_k])
                    .cumsum(2)
                    .narrow(2, relative, seq_q)
                    .reshape([b, h, seq_q, 1]),
                _ => norms.reshape([b, h, seq_k]).sum_dim(2).reshape([b, h, 1, 1]),
            };
            // All-zero keys would divide by zero; such rows are uniform either way.
            scores / divisor.clamp_min(KEY_NORM_FLOOR)
        }
        Scaling::Learned | Scaling::QkNorm => scores * per_head(scaling.name()),
        Scaling::Ssmax => {
            let log_n = visible(&mask).log();
            scores * per_head("ssmax") * log_n.unsqueeze::<4>()
        }
        Scaling::LogNTemp => {
            let (floor_scale, attn_scale) = terms.log_n_temp;
            let tau: Vec<f32> = (0..seq_q)
                .map(|i| {
                    (((((q_offset + i + 1) as f64) / floor_scale).floor() + 1.0).ln() * attn_scale
                        + 1.0) as f32
                })
                .collect();
            scores / (d as f32).sqrt()
                * Tensor::<1>::from_floats(tau.as_slice(), &device).reshape([1, 1, seq_q, 1])
        }
    };
    let scores = match &terms.forget {
        Some((cq, ck)) => {
            let bias = cq.clone().unsqueeze_dim::<4>(3) - ck.clone().unsqueeze_dim::<4>(2); // c_i − c_j
            // Causal rows see only j ≤ i, where the bias is ≤ 0; the rest is masked below.
            scores + if causal { bias } else { bias.abs().neg() }
        }
        None => scores,
    };
    let weights = match (scaling, &terms.sink) {
        (Scaling::Softpick, _) => softpick(scores, mask),
        (_, Some(sink)) => softmax_with_sink(scores, mask, sink.clone()),
        _ => masked_softmax(scores, mask),
    };
    (weights.clone().matmul(v), weights)
}

/// Softmax with one extra logit `σ_h` per head in every row's denominator:
/// `w_ij = e^{z_ij}/(e^{σ_h} + Σ_j e^{z_ij})`. The sink is a column appended to the logits, so
/// [`masked_softmax`]'s shift by the row maximum keeps it finite at any scale.
///
/// # Shapes
/// - `scores`: `[batch, heads, seq_q, seq_k]`, `sink`: `[heads]` -> `[batch, heads, seq_q, seq_k]`
pub fn softmax_with_sink(
    scores: Tensor<4>,
    mask: Option<Tensor<2, Bool>>,
    sink: Tensor<1>,
) -> Tensor<4> {
    let [b, h, q, k] = scores.dims();
    let scores = match mask {
        Some(mask) => {
            scores.mask_fill(mask.unsqueeze::<4>().expand([b, h, q, k]), f32::NEG_INFINITY)
        }
        None => scores,
    };
    let sink = sink.reshape([1, h, 1, 1]).expand([b, h, q, 1]);
    masked_softmax(Tensor::cat(vec![scores, sink], 3), None).narrow(3, 0, k)
}

/// Softpick, `w_ij = relu(e^{z_ij} − 1)/(Σ_j |e^{z_ij} − 1| + ε)` over the visible keys, computed
/// as `relu(e^{z − m} − e^{−m})/(Σ|e^{z − m} − e^{−m}| + ε e^{−m})` with `m = max(0, max_j z_ij)`
/// (the same ratio, with every exponent ≤ 0). Rows need not sum to one; a row whose logits are
/// all ≤ 0 is all zeros.
///
/// # Shapes
/// - `scores`: `[batch, heads, seq_q, seq_k]` -> the same
pub fn softpick(scores: Tensor<4>, mask: Option<Tensor<2, Bool>>) -> Tensor<4> {
    let [b, h, q, k] = scores.dims();
    let mask = mask.map(|m| m.unsqueeze::<4>().expand([b, h, q, k]));
    let hidden = match &mask {
        Some(m) => scores.clone().mask_fill(m.clone(), f32::NEG_INFINITY),
        None => scores.clone(),
    };
    let shift = hidden.max_dim(3).detach().clamp_min(0.0); // m ≥ 0, finite
    let floor = shift.clone().neg().exp(); // e^{−m} ≤ 1
    let centred = match &mask {
        Some(m) => scores.mask_fill(m.clone(), 0.0),
        None => scores,
    };
    let t = (centred - shift).exp() - floor.clone();
    let t = match mask {
        Some(m) => t.mask_fill(m, 0.0),
        None => t,
    };
    let den = t.clone().abs().sum_dim(3) + floor * SOFTPICK_EPS;
    t.clamp_min(0.0) / den
}

fn l2_normalize(x: Tensor<4>) -> Tensor<4> {
    let norm = x.clone().powi_scalar(2).sum_dim(3).sqrt().clamp_min(QK_NORM_EPS);
    x / norm
}
