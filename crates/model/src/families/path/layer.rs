//! The PaTH kernel on projected heads (the Householder rewrite of the cached keys, the grouped
//! scores, softmax under the causal mask) and the module: its `w`, `β` and forget-gate maps, the
//! full-sequence forward and decoding.

use crate::fused;
use crate::heads::{HeadProjection, causal_mask, masked_softmax, sequence_diagnostics};
use crate::mixer::{MixContext, MixOutput, SequenceMixer};
use crate::short_conv::ShortConv;
use burn::module::Module;
use burn::nn::{Linear, RotaryEncoding};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

/// `ε` inside the L2 norm of `w` (fla's `l2_norm`).
pub const L2_EPS: f32 = 1e-6;

/// `H = I − β w wᵀ` applied to every row of `keys`: `k ← k − β (k·w) w`.
///
/// # Shapes
/// - `keys`: `[batch, kv_heads, n, d]`, `w`: `[batch, kv_heads, 1, d]`,
///   `beta`: `[batch, kv_heads, 1, 1]` -> `[batch, kv_heads, n, d]`
pub fn householder(keys: Tensor<4>, w: Tensor<4>, beta: Tensor<4>) -> Tensor<4> {
    let along = keys.clone().matmul(w.clone().swap_dims(2, 3)); // [b, kv, n, 1]
    keys - (along * beta).matmul(w)
}

/// `a` of `H` query heads against `b` of `K` key/value heads, query head `h` reading key/value
/// head `h / (H/K)`: `a·bᵀ` per head, without repeating `b`.
///
/// # Shapes
/// - `a`: `[batch, H, s, d]`, `b`: `[batch, K, n, d]` -> `[batch, H, s, n]`
fn grouped_matmul_t(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    let [batch, h, s, d] = a.dims();
    let [_, kv, n, _] = b.dims();
    // Query heads g·(H/K)..(g + 1)·(H/K) are contiguous: their rows stack under head g.
    a.reshape([batch, kv, (h / kv) * s, d]).matmul(b.swap_dims(2, 3)).reshape([batch, h, s, n])
}

/// Weights of `H` query heads times values of `K` key/value heads (see [`grouped_matmul_t`]).
///
/// # Shapes
/// - `weights`: `[batch, H, s, n]`, `v`: `[batch, K, n, d_v]` -> `[batch, H, s, d_v]`
fn grouped_matmul(weights: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [batch, h, s, n] = weights.dims();
    let [_, kv, _, dv] = v.dims();
    weights.reshape([batch, kv, (h / kv) * s, n]).matmul(v).reshape([batch, h, s, dv])
}

/// The decoding recurrence over `s` new tokens after `past` (the `L` earlier keys, already
/// rewritten by every Householder up to token `L − 1`): before token `i` the earlier keys are
/// rewritten by `H_i`, then `q_i` scores all of them. Returns the raw scores `q_i·(P k_j)`
/// (`[batch, H, s, L + s]`; entries `j > L + i` are not meaningful and must be masked) and the
/// `L + s` keys rewritten through the last token (the next step's `past`).
///
/// # Shapes
/// - `q`: `[batch, H, s, d]`, `k`, `w`: `[batch, K, s, d]`, `beta`: `[batch, K, s, 1]`,
///   `past`: `[batch, K, L, d]`
fn rewritten_scores(
    q: Tensor<4>,
    k: Tensor<4>,
    w: Tensor<4>,
    beta: Tensor<4>,
    past: Option<Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let s = q.dims()[2];
    let mut keys = match past {
        Some(past) => Tensor::cat(vec![past, k], 2),
        None => k,
    };
    let total = keys.dims()[2];
    let seen = total - s;
    let mut rows = Vec::with_capacity(s);
    for i in 0..s {
        let before = seen + i;
        if before > 0 {
            let rewritten = householder(
                keys.clone().narrow(2, 0, before),
                w.clone().narrow(2, i, 1),
                beta.clone().narrow(2, i, 1),
            );
            keys = Tensor::cat(vec![rewritten, keys.narrow(2, before, total - before)], 2);
        }
        rows.push(grouped_matmul_t(q.clone().narrow(2, i, 1), keys.clone()));
    }
    (Tensor::cat(rows, 2), keys)
}

/// PaTH over `s` new tokens after `past` rewritten keys (see [`rewritten_scores`]): softmax of
/// `(q_i·P k_j + c_i − c_j)/√d` over `j ≤ L + i`, times `values` (all `L + s`). `forget` holds
/// the cumulative log forget gates of the queries and of all `L + s` keys. Returns the output,
/// the weights and the rewritten keys.
///
/// # Shapes
/// - `forget`: `([batch, H, s, 1], [batch, H, L + s, 1])`, `values`: `[batch, K, L + s, d_v]`
///   -> `[batch, H, s, d_v]`, `[batch, H, s, L + s]`, `[batch, K, L + s, d]`
fn attend(
    (q, k, values): (Tensor<4>, Tensor<4>, Tensor<4>),
    (w, beta): (Tensor<4>, Tensor<4>),
    forget: Option<(Tensor<4>, Tensor<4>)>,
    past: Option<Tensor<4>>,
) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let [_, _, s, d] = q.dims();
    let (scores, keys) = rewritten_scores(q, k, w, beta, past);
    let total = keys.dims()[2];
    let scores = match forget {
        Some((c_q, c_k)) => scores + c_q - c_k.swap_dims(2, 3),
        None => scores,
    };
    let mask = causal_mask(s, total, total - s, &scores.device());
    let weights = masked_softmax(scores / (d as f64).sqrt(), Some(mask));
    (grouped_matmul(weights.clone(), values), weights, keys)
}

/// Causal PaTH attention on projected heads, from the start of a sequence: softmax of
/// `(q_iᵀ H_i ⋯ H_{j+1} k_j + c_i − c_j)/√d` over `j ≤ i`, `H_t = I − β_t w_t w_tᵀ` (`w` as
/// given: the module normalises it), `c` the cumulative sum of `log_forget` (0 without).
/// Returns the output and the weights.
///
/// # Shapes
/// - `q`: `[batch, H, T, d]`, `k`, `w`: `[batch, K, T, d]`, `v`: `[batch, K, T, d_v]`,
///   `beta`: `[batch, K, T, 1]`, `log_forget`: `[batch, H, T, 1]`
///   -> `[batch, H, T, d_v]`, `[batch, H, T, T]`
pub fn path_attention(
    (q, k, v): (Tensor<4>, Tensor<4>, Tensor<4>),
    w: Tensor<4>,
    beta: Tensor<4>,
    log_forget: Option<Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let forget = log_forget.map(|lf| {
        let c = lf.cumsum(2);
        (c.clone(), c)
    });
    let (y, weights, _) = attend((q, k, v), (w, beta), forget, None);
    (y, weights)
}

/// Multi-head PaTH attention: softmax's projections, Householder directions and strengths of
/// its own, optionally FoX's forget gate.
#[derive(Module, Debug)]
pub struct PathAttention {
    /// Softmax's `[q | k | v]` and output projection.
    pub heads: HeadProjection,
    /// `w_rank > 0`: `x ↦ W x`, `weight: [d_model, w_rank]`, no bias.
    pub w_down: Option<Linear>,
    /// `weight: [w_rank (or d_model), K·d]` (head-major), no bias.
    pub w_up: Linear,
    /// `conv=K`: the short convolution (then SiLU) on `w` before the heads are split.
    pub w_conv: Option<ShortConv>,
    /// `x ↦ W_β x + b_β`, `weight: [d_model, K]`; `β = 2σ(·)`.
    pub beta: Linear,
    /// `fox=true`: `x ↦ W_f x + b_f`, `weight: [d_model, H]`; `log f = logσ(·)`.
    pub forget: Option<Linear>,
}

/// Decoding state: the rewritten keys, the values, the convolution's last inputs and, under
/// `fox`, the cached keys' cumulative log forget gates.
#[derive(Clone, Debug, Default)]
pub struct PathState {
    /// `[batch, K, seen, d]`: key `j` rewritten by the Householders of every token after it.
    pub keys: Option<Tensor<4>>,
    /// `[batch, K, seen, d_v]`.
    pub values: Option<Tensor<4>>,
    /// `[batch, conv − 1, K·d]`: the convolution's last inputs.
    pub w_history: Option<Tensor<3>>,
    /// `[batch, H, seen, 1]`: `c_j` of every cached key.
    pub forget: Option<Tensor<4>>,
}

impl PathAttention {
    /// Unit Householder directions per key/value head, the convolution continuing from
    /// `history` (and leaving its new one there).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, K, seq, d]`
    pub fn directions(&self, x: Tensor<3>, history: &mut Option<Tensor<3>>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        let low = match &self.w_down {
            Some(down) => fused::affine(down, x),
            None => x,
        };
        let w = fused::affine(&self.w_up, low);
        let w = match &self.w_conv {
            Some(conv) => conv.continue_from(w, history),
            None => w,
        };
        let (kv, d) = (self.heads.n_kv_heads(), self.heads.d_qk());
        let w = w.reshape([b, t, kv, d]).swap_dims(1, 2);
        let norm = (w.clone().powi_scalar(2).sum_dim(3) + L2_EPS).sqrt();
        w / norm
    }

    /// `β = 2σ(W_β x + b_β) ∈ (0, 2)` per key/value head.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, K, seq, 1]`
    pub fn betas(&self, x: Tensor<3>) -> Tensor<4> {
        (sigmoid(fused::affine(&self.beta, x)) * 2.0).swap_dims(1, 2).unsqueeze_dim(3)
    }

    /// `fox=true`: `log f = logσ(W_f x + b_f) ≤ 0` per query head.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, H, seq, 1]`
    pub fn log_forget(&self, x: Tensor<3>) -> Option<Tensor<4>> {
        let f = self.forget.as_ref()?;
        Some(fused::log_sigmoid(fused::affine(f, x)).swap_dims(1, 2).unsqueeze_dim(3))
    }
}

impl SequenceMixer for PathAttention {
    type State = PathState;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        // The family's `validate` refuses a bidirectional model.
        assert!(ctx.causal, "path attention has no bidirectional form");
        let (q, k, v) = self.heads.split_grouped_rotated(x.clone(), None, 0);
        let w = self.directions(x.clone(), &mut None);
        let beta = self.betas(x.clone());
        let (y, weights) = path_attention((q, k, v), w, beta, self.log_forget(x));
        let diagnostics = ctx.diagnostics.then(|| sequence_diagnostics(weights, true));
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> PathState {
        PathState::default()
    }

    /// The model's RoPE is not applied (see the module docs).
    fn step(
        &self,
        x: Tensor<3>,
        state: &mut PathState,
        _rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let (q, k, v) = self.heads.split_grouped_rotated(x.clone(), None, 0);
        let w = self.directions(x.clone(), &mut state.w_history);
        let beta = self.betas(x.clone());
        let values = match state.values.take() {
            Some(old) => Tensor::cat(vec![old, v], 2),
            None => v,
        };
        let forget = self.log_forget(x).map(|lf| {
            let c_q = match &state.forget {
                Some(c) => lf.cumsum(2) + c.clone().narrow(2, c.dims()[2] - 1, 1),
                None => lf.cumsum(2),
            };
            let c_k = match state.forget.take() {
                Some(old) => Tensor::cat(vec![old, c_q.clone()], 2),
                None => c_q.clone(),
            };
            state.forget = Some(c_k.clone());
            (c_q, c_k)
        });
        let (y, _, keys) = attend((q, k, values.clone()), (w, beta), forget, state.keys.take());
        state.keys = Some(keys);
        state.values = Some(values);
        self.heads.merge(y)
    }
}
