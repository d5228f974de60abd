//! Causal linear attention by chunks (the training default).
//!
//! Split the sequence into `N` chunks of `C` tokens (zero-padded at the end; zero features add
//! nothing to any sum). Within a chunk use the masked quadratic form; across chunks carry the
//! state `S = Σ φ(k) vᵀ`, `z = Σ φ(k)` of all earlier chunks:
//! `num_c = tril(Q_c K_cᵀ) V_c + Q_c S_{<c}`, `den_c = rowsum(tril(Q_c K_cᵀ)) + Q_c z_{<c}`.
//! The per-chunk states come from one exclusive prefix sum over chunks, so the whole thing is a
//! handful of batched matmuls: time `O(T·C·F + T·F·d_v)`, memory `O(T·C + (T/C)·F·d_v)`; no
//! `T × F × d_v` tensor is ever built.

use super::sums::LinearAttentionSums;
use crate::feature_map::safe_denominator;
use crate::heads::causal_mask;
use burn::tensor::Tensor;

/// Runs the chunked form from `state` (zeros when `None`); returns the outputs and the state
/// after the last token. `chunk` need not divide `seq`.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, F]`, `v`: `[batch, heads, seq, d_v]` -> `[batch, heads, seq, d_v]`
pub fn causal(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    chunk: usize,
    normalize: bool,
    state: Option<&LinearAttentionSums>,
) -> (Tensor<4>, LinearAttentionSums) {
    assert!(chunk > 0, "chunk size must be at least 1");
    let [b, h, t, f] = q.dims();
    let dv = v.dims()[3];
    let device = q.device();
    let c = chunk.min(t);
    let n = t.div_ceil(c);
    let pad = n * c - t;
    let to_chunks = |x: Tensor<4>, width: usize| {
        let x = if pad > 0 {
            x.pad((0, 0, 0, pad), burn::tensor::ops::PadMode::Constant(0.0))
        } else {
            x
        };
        x.reshape([b * h, n, c, width])
    };
    let (qc, kc, vc) = (to_chunks(q, f), to_chunks(k, f), to_chunks(v, dv));

    // Within chunks: masked quadratic.
    let mask = causal_mask(c, c, 0, &device).unsqueeze::<4>().expand([b * h, n, c, c]);
    let scores = qc.clone().matmul(kc.clone().swap_dims(2, 3)).mask_fill(mask, 0.0);
    let mut num = scores.clone().matmul(vc.clone());

    // Across chunks: state of all earlier chunks, by an exclusive prefix sum over chunks.
    let chunk_kv = kc.clone().swap_dims(2, 3).matmul(vc); // [bh, n, f, dv]
    let chunk_k = kc.sum_dim(2); // [bh, n, 1, f]
    let (kv0, k0) = match state {
        Some(s) => {
            (s.kv.clone().reshape([b * h, 1, f, dv]), s.k_sum.clone().reshape([b * h, 1, 1, f]))
        }
        None => {
            (Tensor::zeros([b * h, 1, f, dv], &device), Tensor::zeros([b * h, 1, 1, f], &device))
        }
    };
    let kv_incl = chunk_kv.cumsum(1) + kv0.clone();
    let k_incl = chunk_k.cumsum(1) + k0.clone();
    let exclusive = |incl: Tensor<4>, first: Tensor<4>| {
        if n == 1 { first } else { Tensor::cat(vec![first, incl.narrow(1, 0, n - 1)], 1) }
    };
    let kv_before = exclusive(kv_incl.clone(), kv0);
    let k_before = exclusive(k_incl.clone(), k0);
    num = num + qc.clone().matmul(kv_before);

    let y = if normalize {
        let den = scores.sum_dim(3) + (qc * k_before).sum_dim(3);
        num / safe_denominator(den)
    } else {
        num
    };
    let y = y.reshape([b, h, n * c, dv]).narrow(2, 0, t);
    let last = LinearAttentionSums {
        kv: kv_incl.narrow(1, n - 1, 1).reshape([b, h, f, dv]),
        k_sum: k_incl.narrow(1, n - 1, 1).reshape([b, h, f]),
    };
    (y, last)
}
