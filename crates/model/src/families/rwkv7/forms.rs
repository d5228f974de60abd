//! RWKV-7's computations on features already split into heads: the diagonal-plus-low-rank
//! recurrence token by token, the attention weights it implies, and the per-head GroupNorm.

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
