//! What the gated linear-type families' forms share: cutting a sequence into chunks, the
//! in-chunk decay matrix of a scalar gate, the causal decayed scores
//! `Σ_f q_if k_jf exp(b_if − b_jf)` of a per-channel gate (`decay:gla`, `delta:kda`), built
//! without a `T × T × F` tensor, and the exact inverse of a unit lower-triangular chunk matrix
//! (the delta rule's UT transform, RWKV-7's removal reads) (the layers around the forms share [`crate::recurrent_layer`]).

use crate::heads::causal_mask;
use burn::tensor::ops::PadMode;
use burn::tensor::{Bool, Tensor, TensorData};

/// The vector gate's exact in-chunk decays (`C × C × F` per chunk) are built over sub-chunks of
/// this many tokens (fla's choice), with reference points between them.
pub const VECTOR_SUBCHUNK: usize = 16;

/// Zero-pads the sequence axis (2) of `[batch, heads, seq, w]` to `n·c` and cuts it into chunks:
/// `[batch·heads, n, c, w]`. A padded token has zero inputs and log gate 0 (gate 1), so it adds
/// nothing and leaves the state as the last real token left it.
pub fn to_chunks(x: Tensor<4>, n: usize, c: usize) -> Tensor<4> {
    let [b, h, t, w] = x.dims();
    let pad = n * c - t;
    let x = if pad > 0 { x.pad((0, 0, 0, pad), PadMode::Constant(0.0)) } else { x };
    x.reshape([b * h, n, c, w])
}

/// `exp(b_i − b_j)` for `j ≤ i` and 0 above the diagonal, from the cumulative log gates `b` of a
/// scalar gate. The differences above the diagonal (positive, possibly large) are masked before
/// `exp`, so nothing overflows however strong the gates.
///
/// # Shapes
/// - `b`: `[x, n, c, 1]` -> `[x, n, c, c]`
pub fn causal_decay(b: Tensor<4>) -> Tensor<4> {
    let [x, n, c, _] = b.dims();
    let future = causal_mask(c, c, 0, &b.device()).unsqueeze::<4>().expand([x, n, c, c]);
    let diff = b.clone() - b.swap_dims(2, 3); // b_i − b_j
    diff.mask_fill(future.clone(), 0.0).exp().mask_fill(future, 0.0)
}

/// Causal scores with decay inside one block: `A_ij = Σ_f q_if k_jf exp(b_if − b_jf)` for
/// `j ≤ i`, zero above the diagonal. `b` holds cumulative log gates along the block; the
/// differences above the diagonal (positive) are masked before `exp`.
///
/// # Shapes
/// - `q, k`: `[x, n, c, F]`, `b`: `[x, n, c, G]` (G = 1 or F) -> `[x, n, c, c]`
fn decayed_scores(q: Tensor<4>, k: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    let [x, n, c, f] = q.dims();
    if b.dims()[3] == 1 {
        q.matmul(k.swap_dims(2, 3)) * causal_decay(b)
    } else {
        let future = causal_mask(c, c, 0, &q.device());
        let mask = future.reshape([1, 1, c, c, 1]).expand([x, n, c, c, f]);
        let diff = b.clone().unsqueeze_dim::<5>(3) - b.unsqueeze_dim::<5>(2); // [x, n, i, j, f]
        let decay = diff.mask_fill(mask.clone(), 0.0).exp().mask_fill(mask, 0.0);
        (q.unsqueeze_dim::<5>(3) * k.unsqueeze_dim::<5>(2) * decay).sum_dim(4).reshape([x, n, c, c])
    }
}

/// Causal decayed scores `A_ij = Σ_f q_if k_jf exp(b_if − b_jf)` for `j ≤ i` (0 above the
/// diagonal), `b` the cumulative sums of `log_g` along axis 2 (each `[x, n]` slice its own
/// sequence). A scalar gate (`G = 1`) builds one `T × T` decay matrix; a per-channel gate is
/// assembled in row blocks of `block` tokens, below.
///
/// # Shapes
/// - `q, k`: `[x, n, t, F]`, `log_g`: `[x, n, t, G]` (G = 1 or F) -> `[x, n, t, t]`
pub fn causal_scores(q: Tensor<4>, k: Tensor<4>, log_g: Tensor<4>, block: usize) -> Tensor<4> {
    let [b, h, t, f] = q.dims();
    let c = block.max(1).min(t);
    if log_g.dims()[3] == 1 || t <= c.min(VECTOR_SUBCHUNK) {
        return decayed_scores(q, k, log_g.cumsum(2));
    }
    if c == t {
        return causal_scores(q, k, log_g, VECTOR_SUBCHUNK);
    }
    // Vector gate: a T × T × F decay tensor would not fit at training lengths, so build the
    // weights block row by block row. Block m's queries see earlier blocks' keys through the
    // reference point r_m (the cumulative log gate just before the block):
    // exp(b_i − b_j) = exp(b_i − r_m) · exp(r_m − b_j), both factors ≤ 1. The diagonal blocks
    // recurse down to sub-blocks of VECTOR_SUBCHUNK, where the exact C × C × F decays are built.
    let device = q.device();
    let n = t.div_ceil(c);
    let tp = n * c;
    let (qc, kc, gc) = (to_chunks(q, n, c), to_chunks(k, n, c), to_chunks(log_g, n, c));
    let local = gc.clone().cumsum(2); // b_i − r_m
    let diagonal = causal_scores(qc.clone(), kc.clone(), gc.clone(), VECTOR_SUBCHUNK); // [bh, n, c, c]
    let global = gc.reshape([b * h, 1, tp, f]).cumsum(2); // b_j
    let ends = global.clone().reshape([b * h, n, c, f]).narrow(2, c - 1, 1); // [bh, n, 1, f]
    let refs =
        Tensor::cat(vec![Tensor::zeros([b * h, 1, 1, f], &device), ends.narrow(1, 0, n - 1)], 1);
    // Key j is seen through r_m only from a later block (j < m·c); the rest is masked before exp.
    let later: Vec<bool> = (0..n).flat_map(|m| (0..tp).map(move |j| j >= m * c)).collect();
    let hidden = Tensor::<2, Bool>::from_bool(TensorData::new(later, [n, tp]), &device)
        .reshape([1, n, tp, 1])
        .expand([b * h, n, tp, f]);
    let decay = (refs - global).mask_fill(hidden.clone(), 0.0).exp().mask_fill(hidden, 0.0); // [bh, n, tp, f]
    let keys = kc.reshape([b * h, 1, tp, f]) * decay;
    let cross = (qc * local.exp()).matmul(keys.swap_dims(2, 3)); // [bh, n, c, tp], zero from column m·c on
    let rows: Vec<Tensor<4>> = (0..n)
        .map(|m| {
            let row = cross.clone().narrow(1, m, 1);
            let mut parts = Vec::with_capacity(3);
            if m > 0 {
                parts.push(row.clone().narrow(3, 0, m * c));
            }
            parts.push(diagonal.clone().narrow(1, m, 1));
            if m + 1 < n {
                parts.push(row.narrow(3, (m + 1) * c, tp - (m + 1) * c));
            }
            Tensor::cat(parts, 3)
        })
        .collect();
    Tensor::cat(rows, 1).reshape([b, h, tp, tp]).narrow(2, 0, t).narrow(3, 0, t)
}

/// `(I + A)⁻¹` for strictly lower-triangular `A` (forward substitution, written as block
/// doubling so it is `log₂ C` batched steps rather than `C` row steps): with the inverses `T₁`,
/// `T₂` of the two diagonal halves of a block, its inverse is `[[T₁, 0], [−T₂ A₂₁ T₁, T₂]]`.
/// Exact (no power series, whose terms overflow when keys repeat); sizes that are not a power
/// of two are padded with an identity block, which does not change the rows kept.
///
/// # Shapes
/// - `a`: `[x, n, c, c]` -> `[x, n, c, c]`
pub fn unit_lower_inverse(a: Tensor<4>) -> Tensor<4> {
    let [x, n, c, _] = a.dims();
    let device = a.device();
    let p = c.next_power_of_two();
    let a = if p > c { a.pad((0, p - c, 0, p - c), PadMode::Constant(0.0)) } else { a };
    let r = x * n;
    let a = a.reshape([r, p, p]);
    // The inverses of the diagonal blocks of size s, `[r, p/s, s, s]`; 1×1 blocks are 1.
    let mut inverses = Tensor::<4>::ones([r, p, 1, 1], &device);
    let mut s = 1;
    while s < p {
        let (w, pairs) = (2 * s, p / (2 * s));
        // The w×w diagonal blocks of `a` (block m spans rows and columns m·w..(m+1)·w), picked
        // out by multiplying with a block identity and summing the column-block axis.
        let eye: Vec<f32> =
            (0..pairs * pairs).map(|i| if i / pairs == i % pairs { 1.0 } else { 0.0 }).collect();
        let eye = Tensor::<2>::from_data(TensorData::new(eye, [pairs, pairs]), &device)
            .reshape([1, pairs, 1, pairs, 1]);
        let blocks = (a.clone().reshape([r, pairs, w, pairs, w]) * eye).sum_dim(3).reshape([
            r * pairs,
            w,
            w,
        ]);
        let below = blocks.narrow(1, s, s).narrow(2, 0, s); // A₂₁
        let halves = inverses.reshape([r * pairs, 2, s, s]);
        let t1 = halves.clone().narrow(1, 0, 1).reshape([r * pairs, s, s]);
        let t2 = halves.narrow(1, 1, 1).reshape([r * pairs, s, s]);
        let off = t2.clone().matmul(below).matmul(t1.clone()).neg();
        let top = Tensor::cat(vec![t1, Tensor::zeros([r * pairs, s, s], &device)], 2);
        let bottom = Tensor::cat(vec![off, t2], 2);
        inverses = Tensor::cat(vec![top, bottom], 1).reshape([r, pairs, w, w]);
        s = w;
    }
    inverses.reshape([x, n, p, p]).narrow(2, 0, c).narrow(3, 0, c)
}
