//! RWKV-7's computations on features already split into heads: the diagonal-plus-low-rank
//! recurrence token by token and chunk by chunk, the attention weights it implies, and the
//! per-head GroupNorm.

use crate::chunking::{VECTOR_SUBCHUNK, causal_scores, to_chunks, unit_lower_inverse};
use burn::tensor::Tensor;

/// fla's DPLR recurrence from `state` (zeros when `None`), token by token:
/// `S_t = diag(w_t) S_{t−1} + β_t (α_tᵀ S_{t−1}) + k_t v_tᵀ`, `o_t = S_tᵀ r_t` (scale 1). The
/// removal term reads the state before the decay. Returns the outputs and the final state.
///
/// # Shapes
/// - `r`, `log_w`, `k`, `alpha`, `beta`: `[batch, heads, seq, d_k]`; `v`: `[batch, heads, seq, d_v]`
/// - `state`: `[batch, heads, d_k, d_v]`
/// - returns `[batch, heads, seq, d_v]` and `[batch, heads, d_k, d_v]`
pub fn recurrent(
    r: Tensor<4>,
    log_w: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    alpha: Tensor<4>,
    beta: Tensor<4>,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, t, dk] = r.dims();
    let dv = v.dims()[3];
    let mut s = state.cloned().unwrap_or_else(|| Tensor::zeros([b, h, dk, dv], &r.device()));
    let w = log_w.exp();
    let row = |x: &Tensor<4>, i: usize| x.clone().narrow(2, i, 1); // [b, h, 1, d]
    let col = |x: &Tensor<4>, i: usize| row(x, i).swap_dims(2, 3); // [b, h, d, 1]
    let mut out = Vec::with_capacity(t);
    for i in 0..t {
        let removed = row(&alpha, i).matmul(s.clone()); // αᵀ S: [b, h, 1, d_v]
        s = s * col(&w, i) + col(&beta, i) * removed + col(&k, i) * row(&v, i);
        out.push(row(&r, i).matmul(s.clone()));
    }
    (Tensor::cat(out, 2), s)
}

/// [`recurrent`] chunk by chunk (the same numbers up to rounding). Inside a chunk with
/// cumulative log decays `b_i` (per key channel), the removal reads `u_i = α_iᵀ S_{i−1}` solve
/// `(I − A_αβ) U = W S_0 + A_αk V` with `W_i = α_i e^{b_{i−1}}` and, for `j < i`,
/// `A_αx[i, j] = Σ_f α_if x_jf e^{b_{i−1,f} − b_jf}`; then `o_i = (r_i e^{b_i})ᵀ S_0 +
/// Σ_{j≤i} (A_rβ[i, j] u_j + A_rk[i, j] v_j)` with `A_rx[i, j] = Σ_f r_if x_jf e^{b_if − b_jf}`,
/// and `S ← e^{b_C} S_0 + Σ_j e^{b_C − b_j} (β_j u_j + k_j v_j)`. Every exponent is a difference
/// `≤ 0` except `b_{i−1} − b_j = (b_i − b_j) − log w_i`, taken as `α_i / w_i` with
/// `1/w_i ≤ e^{0.61}` (the layer's decay bound, which the form relies on). `(I − A_αβ)⁻¹` is
/// `Π_k (I + A_αβ^{2^k})` (`A_αβ` is strictly lower, so nilpotent). Returns the outputs and the
/// final state.
///
/// # Shapes
/// - as [`recurrent`]
#[allow(clippy::too_many_arguments)] // the recurrence's six inputs as fla names them, chunk, state
pub fn chunked(
    r: Tensor<4>,
    log_w: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    alpha: Tensor<4>,
    beta: Tensor<4>,
    chunk: usize,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, t, dk] = r.dims();
    let dv = v.dims()[3];
    let device = r.device();
    let c = chunk.clamp(1, t.max(1));
    let n = t.div_ceil(c);
    // [b·h, n, c, d]; padded tokens have zero inputs and log decay 0, so they change nothing.
    let [r, log_w, k, v, alpha, beta] = [r, log_w, k, v, alpha, beta].map(|x| to_chunks(x, n, c));
    let cum = log_w.clone().cumsum(2); // b_i
    let scores = |q: &Tensor<4>, x: &Tensor<4>| {
        causal_scores(q.clone(), x.clone(), log_w.clone(), VECTOR_SUBCHUNK)
    };
    let (a_rk, a_rb) = (scores(&r, &k), scores(&r, &beta));
    let strict = Tensor::<2>::ones([c, c], &device).tril(-1).reshape([1, 1, c, c]);
    let alpha_prev = alpha * (-log_w.clone()).exp(); // α_i e^{−log w_i}: decays from b_{i−1}
    let a_ab = scores(&alpha_prev, &beta) * strict.clone();
    let a_ak = scores(&alpha_prev, &k) * strict;
    // (I − A_αβ)⁻¹ by block doubling, exact (strictly lower, so unit lower-triangular).
    let inverse = unit_lower_inverse(a_ab.neg());
    let from_state = inverse.clone().matmul(alpha_prev * cum.clone().exp()); // T W: [bh, n, c, dk]
    let from_values = inverse.matmul(a_ak.matmul(v.clone())); // T A_αk V: [bh, n, c, dv]
    let r_decayed = r * cum.clone().exp();
    let last = cum.clone().narrow(2, c - 1, 1); // b_C: [bh, n, 1, dk]
    let to_end = (last.clone() - cum).exp(); // e^{b_C − b_j}
    let (k_end, beta_end) = (k * to_end.clone(), beta * to_end);
    let mut s = match state {
        Some(s) => s.clone().reshape([b * h, 1, dk, dv]),
        None => Tensor::zeros([b * h, 1, dk, dv], &device),
    };
    let mut out = Vec::with_capacity(n);
    for m in 0..n {
        let at = |x: &Tensor<4>| x.clone().narrow(1, m, 1);
        let u = at(&from_state).matmul(s.clone()) + at(&from_values);
        let v_m = at(&v);
        out.push(
            at(&r_decayed).matmul(s.clone())
                + at(&a_rb).matmul(u.clone())
                + at(&a_rk).matmul(v_m.clone()),
        );
        s = s * at(&last).exp().swap_dims(2, 3)
            + at(&beta_end).swap_dims(2, 3).matmul(u)
            + at(&k_end).swap_dims(2, 3).matmul(v_m);
    }
    let y = Tensor::cat(out, 1).reshape([b, h, n * c, dv]).narrow(2, 0, t);
    (y, s.reshape([b, h, dk, dv]))
}

/// The recurrence's weights on each token's value, `o_t = Σ_j A_tj v_j` (the recurrence run on
/// one-hot values, `v_j = e_j`); zero above the diagonal. What diagnostics report (before the
/// head norm, bonus and gate, which are not linear in `v`).
///
/// # Shapes
/// - as [`recurrent`] -> `[batch, heads, seq, seq]`
pub fn implied_weights(
    r: Tensor<4>,
    log_w: Tensor<4>,
    k: Tensor<4>,
    alpha: Tensor<4>,
    beta: Tensor<4>,
) -> Tensor<4> {
    let [b, h, t, _] = r.dims();
    let one_hot = Tensor::<2>::eye(t, &r.device()).reshape([1, 1, t, t]).expand([b, h, t, t]);
    recurrent(r, log_w, k, one_hot, alpha, beta, None).0
}

/// GroupNorm with one group per head: each head's `d` values `(x − mean)/√(var + ε)·weight +
/// bias` (biased variance, as torch's `nn.GroupNorm`).
///
/// # Shapes
/// - `x`: `[batch, heads, seq, d]`, `weight`, `bias`: `[heads·d]` (head-major) -> as `x`
pub fn head_group_norm(x: Tensor<4>, weight: Tensor<1>, bias: Tensor<1>, eps: f32) -> Tensor<4> {
    let [_, h, _, d] = x.dims();
    let centred = x.clone() - x.mean_dim(3);
    let var = centred.clone().powi_scalar(2).mean_dim(3);
    centred / (var + eps).sqrt() * weight.reshape([1, h, 1, d]) + bias.reshape([1, h, 1, d])
}
