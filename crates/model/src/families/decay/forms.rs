//! The three forms of the decay-gated recurrence, equal up to rounding (see the family's header
//! for the log-space rule they share): the `T × T` implied [`weights`] and the [`parallel`] form
//! built on them, the [`chunked`] form (the training default, carrying a state between chunks)
//! and the token-by-token [`recurrent`] form; plus `norm=sum`'s column of ones. The decayed
//! scores of the vector gate are [`crate::chunking::causal_scores`], which `delta:kda` shares.

pub use crate::chunking::VECTOR_SUBCHUNK;
use crate::chunking::{causal_decay, causal_scores, to_chunks};
use crate::feature_map::safe_denominator;
use crate::heads::causal_mask;
use burn::tensor::Tensor;

/// `v` with a column of ones appended under `norm=sum`, so the sums also carry `z`.
pub(super) fn with_ones(v: Tensor<4>, normalize: bool) -> Tensor<4> {
    if !normalize {
        return v;
    }
    let [b, h, t, _] = v.dims();
    let ones = Tensor::<4>::ones([b, h, t, 1], &v.device());
    Tensor::cat(vec![v, ones], 3)
}

/// Splits `[num | den]` (from [`with_ones`]) into `num / safe(den)`; the identity without `norm`.
pub(super) fn divide_out(y: Tensor<4>, normalize: bool) -> Tensor<4> {
    if !normalize {
        return y;
    }
    let dv = y.dims()[3] - 1;
    y.clone().narrow(3, 0, dv) / safe_denominator(y.narrow(3, dv, 1))
}

/// The implied attention weights `A_ij = Σ_f φq_if φk_jf exp(b_if − b_jf)` over `j ≤ i`
/// (causal), or with `exp(−|b_if − b_jf|)` over all `j` (bidirectional); divided by their row
/// sums (through [`safe_denominator`]) when `normalize`. `block` is the vector gate's block size.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]`, `log_g`: `[batch, heads, seq, G]` -> `[batch, heads, seq, seq]`
pub fn weights(
    q: Tensor<4>,
    k: Tensor<4>,
    log_g: Tensor<4>,
    causal: bool,
    normalize: bool,
    block: usize,
) -> Tensor<4> {
    let lower = causal_scores(q.clone(), k.clone(), log_g.clone(), block);
    let scores = if causal {
        lower
    } else {
        // The upper half is the lower half with queries and keys swapped; its diagonal repeats.
        let t = q.dims()[2];
        let [b, h, _, _] = lower.dims();
        let not_above =
            causal_mask(t, t, 0, &q.device()).bool_not().unsqueeze::<4>().expand([b, h, t, t]);
        lower + causal_scores(k, q, log_g, block).swap_dims(2, 3).mask_fill(not_above, 0.0)
    };
    if normalize {
        let den = scores.clone().sum_dim(3);
        scores / safe_denominator(den)
    } else {
        scores
    }
}

/// The parallel form: `y = A V` with the `T × T` [`weights`].
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]`, `v`: `[batch, heads, seq, d_v]`, `log_g`: `[batch, heads, seq, G]`
///   -> `[batch, heads, seq, d_v]`
pub fn parallel(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    normalize: bool,
    block: usize,
) -> Tensor<4> {
    weights(q, k, log_g, true, normalize, block).matmul(v)
}

/// The chunked form from `state` (zeros when `None`); returns the outputs and the state after
/// the last token (`[batch, heads, F, d_v]`, with `z` as an extra last column when `normalize`).
/// `chunk` need not divide `seq`.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]`, `v`: `[batch, heads, seq, d_v]`, `log_g`: `[batch, heads, seq, G]`
///   -> `[batch, heads, seq, d_v]`
pub fn chunked(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    chunk: usize,
    normalize: bool,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let (y, s) = chunked_sums(q, k, with_ones(v, normalize), log_g, chunk, state);
    (divide_out(y, normalize), s)
}

/// [`chunked`] on `v` as [`with_ones`] leaves it, returning the sums undivided (`[num | den]`
/// under `norm=sum`): what the fused recurrence computes, and its composed stand-in.
///
/// # Shapes
/// - as [`chunked`]
pub(super) fn chunked_sums(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    chunk: usize,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    assert!(chunk > 0, "chunk size must be at least 1");
    let [b, h, t, f] = q.dims();
    let (dv, g) = (v.dims()[3], log_g.dims()[3]);
    let device = q.device();
    let c = chunk.min(t);
    let n = t.div_ceil(c);
    let (qc, kc, vc, gc) =
        (to_chunks(q, n, c), to_chunks(k, n, c), to_chunks(v, n, c), to_chunks(log_g, n, c));
    let cum = gc.clone().cumsum(2); // b_i inside each chunk, ≤ 0
    let total = cum.clone().narrow(2, c - 1, 1); // b_C: [bh, n, 1, G]

    // Inside chunks: the decayed quadratic form (for the vector gate in sub-chunks, see
    // `causal_scores`; each chunk is a sequence of its own there).
    let scores = if g == 1 {
        qc.clone().matmul(kc.clone().swap_dims(2, 3)) * causal_decay(cum.clone())
    } else {
        causal_scores(qc.clone(), kc.clone(), gc, VECTOR_SUBCHUNK)
    };
    let intra = scores.matmul(vc.clone());

    // Each chunk's own keys as they stand at its end, and its total decay.
    let contribution = (kc * (total.clone() - cum.clone()).exp()).swap_dims(2, 3).matmul(vc); // [bh, n, F, dv]
    let carry = total.exp().swap_dims(2, 3); // [bh, n, G, 1], decays the state's rows
    let mut s = match state {
        Some(s) => s.clone().reshape([b * h, f, dv]),
        None => Tensor::zeros([b * h, f, dv], &device),
    };
    let mut before = Vec::with_capacity(n);
    for m in 0..n {
        before.push(s.clone().unsqueeze_dim::<4>(1));
        s = s * carry.clone().narrow(1, m, 1).reshape([b * h, g, 1])
            + contribution.clone().narrow(1, m, 1).reshape([b * h, f, dv]);
    }
    let inter = (qc * cum.exp()).matmul(Tensor::cat(before, 1));
    let y = (intra + inter).reshape([b, h, n * c, dv]).narrow(2, 0, t);
    (y, s.reshape([b, h, f, dv]))
}

/// The recurrence itself, one token at a time from `state` (zeros when `None`); returns the
/// outputs and the state after the last token, as [`chunked`].
///
/// # Shapes
/// - as [`chunked`]
pub fn recurrent(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    normalize: bool,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let v = with_ones(v, normalize);
    let [b, h, t, f] = q.dims();
    let dv = v.dims()[3];
    let mut s = match state {
        Some(s) => s.clone(),
        None => Tensor::zeros([b, h, f, dv], &q.device()),
    };
    let mut outputs = Vec::with_capacity(t);
    for i in 0..t {
        let token = |x: &Tensor<4>| x.clone().narrow(2, i, 1);
        let gate = token(&log_g).exp().swap_dims(2, 3); // [b, h, G, 1]
        s = s * gate + token(&k).swap_dims(2, 3).matmul(token(&v));
        outputs.push(token(&q).matmul(s.clone()));
    }
    (divide_out(Tensor::cat(outputs, 2), normalize), s)
}
