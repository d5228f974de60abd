//! What the gated linear-type families' forms share: cutting a sequence into chunks and the
//! in-chunk decay matrix of a scalar gate (the layers around the forms share
//! [`crate::recurrent_layer`]).

use crate::heads::causal_mask;
use burn::tensor::Tensor;
use burn::tensor::ops::PadMode;

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
