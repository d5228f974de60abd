//! The three forms of the delta rule, equal up to rounding (see the family's header): the
//! [`chunked`] WY/UT form (the training default) with its exact block-doubling
//! [`unit_lower_inverse`], the `T × T` implied [`weights`] and the [`parallel`] form on them, and
//! the token-by-token [`recurrent`] form. DeltaProduct (`householders=N`) runs them on the
//! sequence of its sub-steps: [`interleave_substeps`] lays each token's `N` keys, values and
//! strengths in a row, [`gate_on_first_substep`] and [`queries_on_last_substep`] place the
//! token's gate and query, [`last_substeps`] keeps the token's output, [`flip_tokens`] reverses
//! the tokens (not the sub-steps) for the backward pass, and [`product_weights`] are the implied
//! weights of each sub-step's value.
//!
//! Every form takes the log gates `[batch, heads, seq, G]`: `G = 1`, one per head (DeltaNet,
//! Gated DeltaNet, DeltaProduct), or `G = d_k`, one per key channel (`delta:kda`), scaling the
//! state's rows. A per-channel gate's pairwise decays `exp(b_if − b_jf)` go through
//! [`causal_scores`] (GLA's sub-chunk scheme), so no form exponentiates a positive difference.

use crate::chunking::{
    VECTOR_SUBCHUNK, causal_decay, causal_scores, to_chunks, unit_lower_inverse,
};
use burn::tensor::{Bool, Device, Tensor};

/// True on and above the diagonal: what the strictly lower `A` leaves out.
pub(super) fn diagonal_and_above(c: usize, device: &Device) -> Tensor<2, Bool> {
    Tensor::<2, Bool>::tril_mask([c, c], -1, device)
}

/// The chunked (WY/UT) form from `state` (zeros when `None`); returns the outputs and the
/// state after the last token. `chunk` need not divide `seq`.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, d_k]`, `v`: `[batch, heads, seq, d_v]`,
///   `beta`: `[batch, heads, seq, 1]`, `log_g`: `[batch, heads, seq, 1 or d_k]`,
///   `state`: `[batch, heads, d_k, d_v]` -> (`[batch, heads, seq, d_v]`, `[batch, heads, d_k, d_v]`)
pub fn chunked(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
    chunk: usize,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    assert!(chunk > 0, "chunk size must be at least 1");
    let [b, h, t, dk] = q.dims();
    let dv = v.dims()[3];
    let device = q.device();
    let c = chunk.min(t);
    let n = t.div_ceil(c);
    let bh = b * h;
    // Padded tokens have k = 0 and β = 0, so they write nothing (their rows of T are e_i).
    let (qc, kc, vc, bc, gc) = (
        to_chunks(q, n, c),
        to_chunks(k, n, c),
        to_chunks(v, n, c),
        to_chunks(beta, n, c),
        to_chunks(log_g, n, c),
    );
    let g = gc.dims()[3];
    let cum = gc.clone().cumsum(2); // b_i inside each chunk, ≤ 0
    let strict = diagonal_and_above(c, &device).unsqueeze::<4>().expand([bh, n, c, c]);
    // Σ_f x_if k_jf e^{b_if − b_jf} for j ≤ i: for a scalar gate one C × C decay matrix (L ⊙ M),
    // per channel GLA's sub-chunk scheme (never e^{+b}).
    let (kk, scores) = if g == 1 {
        let decay = causal_decay(cum.clone());
        (
            kc.clone().matmul(kc.clone().swap_dims(2, 3)) * decay.clone(),
            qc.clone().matmul(kc.clone().swap_dims(2, 3)) * decay,
        )
    } else {
        (
            causal_scores(kc.clone(), kc.clone(), gc.clone(), VECTOR_SUBCHUNK),
            causal_scores(qc.clone(), kc.clone(), gc, VECTOR_SUBCHUNK),
        )
    };
    let inverse = unit_lower_inverse((kk * bc.clone()).mask_fill(strict, 0.0));
    let w = inverse.clone().matmul(kc.clone() * bc.clone() * cum.clone().exp()); // [bh, n, c, dk]
    let u = inverse.matmul(vc * bc); // [bh, n, c, dv]
    let total = cum.clone().narrow(2, c - 1, 1); // b_C: [bh, n, 1, G]
    let keys_at_end = kc * (total.clone() - cum.clone()).exp(); // k_j ⊙ e^{b_C − b_j}
    let carry = total.exp();

    let mut s = match state {
        Some(s) => s.clone().reshape([bh, dk, dv]),
        None => Tensor::zeros([bh, dk, dv], &device),
    };
    let (mut before, mut written) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for m in 0..n {
        let piece = |x: &Tensor<4>, w: usize| x.clone().narrow(1, m, 1).reshape([bh, c, w]);
        before.push(s.clone().unsqueeze_dim::<4>(1));
        let new_values = piece(&u, dv) - piece(&w, dk).matmul(s.clone()); // V' = U − W S
        // Diag(e^{b_C}) S: the state's rows (key channels) decay by their own gate.
        s = s * carry.clone().narrow(1, m, 1).reshape([bh, g, 1])
            + piece(&keys_at_end, dk).swap_dims(1, 2).matmul(new_values.clone());
        written.push(new_values.unsqueeze_dim::<4>(1));
    }
    let y =
        (qc * cum.exp()).matmul(Tensor::cat(before, 1)) + scores.matmul(Tensor::cat(written, 1));
    (y.reshape([b, h, n * c, dv]).narrow(2, 0, t), s.reshape([b, h, dk, dv]))
}

/// The implied weights `A = (Q Kᵀ ⊙ L ⊙ M) T diag(β)` over the whole sequence (`y = A V` from
/// an empty state); bidirectional: the causal weights plus those of the reversed sequence,
/// reversed back.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, d_k]`, `beta`: `[batch, heads, seq, 1]`,
///   `log_g`: `[batch, heads, seq, 1 or d_k]` -> `[batch, heads, seq, seq]`
pub fn weights(
    q: Tensor<4>,
    k: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
    causal: bool,
) -> Tensor<4> {
    let forward = causal_weights(q.clone(), k.clone(), beta.clone(), log_g.clone());
    if causal {
        return forward;
    }
    let flip = |x: Tensor<4>| x.flip([2]);
    forward + causal_weights(flip(q), flip(k), flip(beta), flip(log_g)).flip([2, 3])
}

fn causal_weights(q: Tensor<4>, k: Tensor<4>, beta: Tensor<4>, log_g: Tensor<4>) -> Tensor<4> {
    let [b, h, t, _] = q.dims();
    let strict = diagonal_and_above(t, &q.device()).unsqueeze::<4>().expand([b, h, t, t]);
    let (kk, scores) = if log_g.dims()[3] == 1 {
        let decay = causal_decay(log_g.cumsum(2));
        (
            k.clone().matmul(k.clone().swap_dims(2, 3)) * decay.clone(),
            q.matmul(k.swap_dims(2, 3)) * decay,
        )
    } else {
        // Per channel: row blocks of VECTOR_SUBCHUNK against reference points, no T × T × d_k.
        (
            causal_scores(k.clone(), k.clone(), log_g.clone(), VECTOR_SUBCHUNK),
            causal_scores(q, k, log_g, VECTOR_SUBCHUNK),
        )
    };
    let inverse = unit_lower_inverse((kk * beta.clone()).mask_fill(strict, 0.0));
    scores.matmul(inverse) * beta.swap_dims(2, 3)
}

/// The parallel form: `y = A V` with the `T × T` [`weights`].
///
/// # Shapes
/// - as [`chunked`], without the state
pub fn parallel(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
) -> Tensor<4> {
    weights(q, k, beta, log_g, true).matmul(v)
}

/// The recurrence token by token from `state` (zeros when `None`): `S ← a_t S` (`Diag(α_t) S`
/// for a per-channel gate), `v' = β_t (v_t − Sᵀ k_t)`, `S ← S + k_t v'ᵀ`, `o_t = Sᵀ q_t`.
///
/// # Shapes
/// - as [`chunked`]
pub fn recurrent(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, t, dk] = q.dims();
    let dv = v.dims()[3];
    let mut s = match state {
        Some(s) => s.clone(),
        None => Tensor::zeros([b, h, dk, dv], &q.device()),
    };
    let mut outputs = Vec::with_capacity(t);
    for i in 0..t {
        let token = |x: &Tensor<4>| x.clone().narrow(2, i, 1);
        s = s * token(&log_g).exp().swap_dims(2, 3); // [b, h, G, 1]: scales S's rows
        let key = token(&k); // [b, h, 1, dk]
        let new_value = (token(&v) - key.clone().matmul(s.clone())) * token(&beta);
        s = s + key.swap_dims(2, 3).matmul(new_value);
        outputs.push(token(&q).matmul(s.clone()));
    }
    (Tensor::cat(outputs, 2), s)
}

/// Lays DeltaProduct's `N` sub-steps of each token in a row: the sequence the delta rule runs
/// on, `N` times as long. The input holds sub-step `j`'s head `h` at `j·heads + h` (the
/// sub-step-major layout of the projections); with `N = 1` it is returned as it is.
///
/// # Shapes
/// - `x`: `[batch, N·heads, seq, d]` -> `[batch, heads, seq·N, d]` (token `t`'s sub-step `j` at `t·N + j`)
pub fn interleave_substeps(x: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return x;
    }
    let [b, nh, t, d] = x.dims();
    let h = nh / n;
    x.reshape([b, n, h, t, d]).permute([0, 2, 3, 1, 4]).reshape([b, h, t * n, d])
}

/// Each token's log gate on its first sub-step and 0 on the others: the state decays once per
/// token, before the token's first write.
///
/// # Shapes
/// - `log_g`: `[batch, heads, seq, G]` -> `[batch, heads, seq·N, G]`
pub fn gate_on_first_substep(log_g: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return log_g;
    }
    let [b, h, t, g] = log_g.dims();
    let rest = Tensor::zeros([b, h, t, (n - 1) * g], &log_g.device());
    Tensor::cat(vec![log_g, rest], 3).reshape([b, h, t * n, g])
}

/// Each token's query on its last sub-step and 0 on the others (whose outputs are dropped), so
/// the token reads the state after all its writes.
///
/// # Shapes
/// - `q`: `[batch, heads, seq, d]` -> `[batch, heads, seq·N, d]`
pub fn queries_on_last_substep(q: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return q;
    }
    let [b, h, t, d] = q.dims();
    let before = Tensor::zeros([b, h, t, (n - 1) * d], &q.device());
    Tensor::cat(vec![before, q], 3).reshape([b, h, t * n, d])
}

/// Every token's output: that of its last sub-step.
///
/// # Shapes
/// - `y`: `[batch, heads, seq·N, d]` -> `[batch, heads, seq, d]`
pub fn last_substeps(y: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return y;
    }
    let [b, h, tn, d] = y.dims();
    y.reshape([b, h, tn / n, n * d]).narrow(3, (n - 1) * d, d)
}

/// The tokens in reverse order, each token's sub-steps still in theirs (a bidirectional model's
/// backward pass gates, writes and reads each token as the forward pass does).
///
/// # Shapes
/// - `x`: `[batch, heads, seq·N, d]` -> the same
pub fn flip_tokens(x: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return x.flip([2]);
    }
    let [b, h, tn, d] = x.dims();
    x.reshape([b, h, tn / n, n * d]).flip([2]).reshape([b, h, tn, d])
}

/// DeltaProduct's implied weights: token `i`'s output is `Σ_{s,j} A[i, s·N + j] v_{s,j}` over
/// the interleaved values, from an empty state ([`weights`] on the interleaved sequence, the
/// rows of the tokens' last sub-steps); bidirectional, plus those of the tokens reversed,
/// reversed back. With `N = 1` these are [`weights`].
///
/// # Shapes
/// - `q`: `[batch, heads, seq, d_k]`; `k`: `[batch, heads, seq·N, d_k]`,
///   `beta, log_g`: `[batch, heads, seq·N, 1]` (interleaved, the gate on first sub-steps)
///   -> `[batch, heads, seq, seq·N]`
pub fn product_weights(
    q: Tensor<4>,
    k: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
    n: usize,
    causal: bool,
) -> Tensor<4> {
    if n == 1 {
        return weights(q, k, beta, log_g, causal);
    }
    let forward = |q: Tensor<4>, k: Tensor<4>, beta: Tensor<4>, log_g: Tensor<4>| {
        let [b, h, t, _] = q.dims();
        let all = causal_weights(queries_on_last_substep(q, n), k, beta, log_g);
        all.reshape([b, h, t, n, t * n]).narrow(3, n - 1, 1).reshape([b, h, t, t * n])
    };
    let ahead = forward(q.clone(), k.clone(), beta.clone(), log_g.clone());
    if causal {
        return ahead;
    }
    let [b, h, t, _] = q.dims();
    let flip = |x: Tensor<4>| flip_tokens(x, n);
    let behind = forward(q.flip([2]), flip(k), flip(beta), flip(log_g));
    // Rows are tokens; columns tokens × sub-steps: reverse the tokens of both, not the sub-steps.
    ahead + behind.reshape([b, h, t, t, n]).flip([2, 3]).reshape([b, h, t, t * n])
}
