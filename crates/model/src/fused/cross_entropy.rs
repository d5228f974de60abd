//! Cross-entropy of one target per row of logits (a language model's next-token loss), forward
//! and backward one row at a time, parallel over rows.
//!
//! Forward, for a row `x` with target `t`: `m = max x`, `lse = m + ln Σ_j e^{x_j − m}`,
//! `nll = lse − x_t`, and the row's argmax (the first index holding `m`, as Burn's `argmax`).
//! Backward, with the upstream gradient `g` of the row's `nll`: `dx_j = g·(e^{x_j − lse} − [j = t])`.
//!
//! Composed in Burn this is half a dozen passes over the logits each way (max, subtract, exp,
//! sum, log, gather, and their backward ops), each allocating a `rows × vocab` tensor: at a
//! 49k vocabulary and 2048 positions that is 400 MB a pass. Here it is one read forward and one
//! read-write backward, written into the logits' own buffer when nothing else holds it.

use super::simd;
use rayon::prelude::*;

/// Rows per parallel task: a few rows of a large vocabulary are already ~1 MB of work.
const ROWS_PER_TASK: usize = 4;

/// Per-row results of the forward pass.
pub struct Rows {
    pub nll: Vec<f32>,
    /// `ln Σ_j e^{x_j}`, kept for the backward pass.
    pub lse: Vec<f32>,
    pub argmax: Vec<i64>,
}

/// Panics naming the first target outside `0..vocab` (a task or tokenizer bug, not bad data).
fn check_targets(targets: &[usize], vocab: usize) {
    if let Some(t) = targets.iter().find(|&&t| t >= vocab) {
        panic!("cross-entropy target {t} is outside the vocabulary of {vocab} logits");
    }
}

/// `nll`, `lse` and argmax of each row of `logits` (`targets.len()` rows of `vocab`).
pub fn forward(logits: &[f32], vocab: usize, targets: &[usize]) -> Rows {
    assert_eq!(logits.len(), targets.len() * vocab, "logits are not rows x vocab");
    check_targets(targets, vocab);
    let rows = targets.len();
    let (mut nll, mut lse, mut argmax) = (vec![0.0; rows], vec![0.0; rows], vec![0i64; rows]);
    nll.par_chunks_mut(ROWS_PER_TASK)
        .zip(lse.par_chunks_mut(ROWS_PER_TASK))
        .zip(argmax.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, ((nll, lse), argmax))| {
            let first = task * ROWS_PER_TASK;
            let x = &logits[first * vocab..(first + nll.len()) * vocab];
            forward_rows(x, vocab, &targets[first..first + nll.len()], nll, lse, argmax);
        });
    Rows { nll, lse, argmax }
}

/// Overwrites `logits` (the forward pass's, `lse.len()` rows of `vocab`) with `d nll / d logits`
/// for the upstream gradients `g` (one per row).
pub fn backward_in_place(
    logits: &mut [f32],
    vocab: usize,
    targets: &[usize],
    lse: &[f32],
    g: &[f32],
) {
    assert_eq!(logits.len(), targets.len() * vocab, "logits are not rows x vocab");
    check_targets(targets, vocab);
    logits.par_chunks_mut(ROWS_PER_TASK * vocab).enumerate().for_each(|(task, x)| {
        let first = task * ROWS_PER_TASK;
        let n = x.len() / vocab;
        backward_rows(
            x,
            vocab,
            &targets[first..first + n],
            &lse[first..first + n],
            &g[first..first + n],
        );
    });
}

#[inline(always)]
fn forward_rows_body(
    x: &[f32],
    vocab: usize,
    targets: &[usize],
    nll: &mut [f32],
    lse: &mut [f32],
    argmax: &mut [i64],
) {
    for (((x, &t), nll), (lse, argmax)) in
        x.chunks_exact(vocab).zip(targets).zip(nll.iter_mut()).zip(lse.iter_mut().zip(argmax))
    {
        let m = simd::max(x);
        // Σ e^{x_j − m} in eight interleaved partial sums (see `simd::sum`).
        let mut lanes = [0.0f32; 8];
        let chunks = x.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().map(|&v| simd::exp(v - m)).sum();
        for c in chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += simd::exp(v - m);
            }
        }
        let total = lanes.iter().sum::<f32>() + tail;
        *lse = m + total.ln();
        *nll = *lse - x[t];
        // A NaN row has no index equal to its max; its loss is NaN whatever index is named.
        *argmax = x.iter().position(|&v| v == m).unwrap_or(0) as i64;
    }
}

#[inline(always)]
fn backward_rows_body(x: &mut [f32], vocab: usize, targets: &[usize], lse: &[f32], g: &[f32]) {
    for (((x, &t), &lse), &g) in x.chunks_exact_mut(vocab).zip(targets).zip(lse).zip(g) {
        for v in x.iter_mut() {
            *v = g * simd::exp(*v - lse);
        }
        x[t] -= g;
    }
}

simd::dispatched!(
    /// [`forward`] over a few rows.
    forward_rows => forward_rows_body(
        x: &[f32],
        vocab: usize,
        targets: &[usize],
        nll: &mut [f32],
        lse: &mut [f32],
        argmax: &mut [i64]
    )
);
simd::dispatched!(
    /// [`backward_in_place`] over a few rows.
    backward_rows => backward_rows_body(
        x: &mut [f32],
        vocab: usize,
        targets: &[usize],
        lse: &[f32],
        g: &[f32]
    )
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel against the definition in f64 (log of a sum of exponentials, its derivative
    /// by the softmax), on rows with a spread of magnitudes and a tie for the maximum.
    #[test]
    fn cross_entropy_kernel_matches_the_definition_in_f64() {
        let (rows, vocab) = (11, 37);
        let mut state = 0x9e37_79b9_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 20.0
        };
        let mut logits: Vec<f32> = (0..rows * vocab).map(|_| next()).collect();
        // Row 3 has its maximum twice: the first index is the argmax.
        logits[3 * vocab + 5] = 50.0;
        logits[3 * vocab + 9] = 50.0;
        let targets: Vec<usize> = (0..rows).map(|r| (r * 7 + 3) % vocab).collect();
        let g: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32 * 0.25).collect();
        let out = forward(&logits, vocab, &targets);
        let mut grad = logits.clone();
        backward_in_place(&mut grad, vocab, &targets, &out.lse, &g);
        for r in 0..rows {
            let x: Vec<f64> =
                logits[r * vocab..(r + 1) * vocab].iter().map(|&v| v as f64).collect();
            let lse = x.iter().map(|v| v.exp()).sum::<f64>().ln();
            let nll = lse - x[targets[r]];
            assert!(
                (out.nll[r] as f64 - nll).abs() < 1e-4 * (1.0 + nll.abs()),
                "row {r}: nll {} vs {nll}",
                out.nll[r]
            );
            let best = (0..vocab).fold(0, |b, j| if x[j] > x[b] { j } else { b });
            assert_eq!(out.argmax[r], best as i64, "row {r}: argmax");
            for j in 0..vocab {
                let want =
                    g[r] as f64 * ((x[j] - lse).exp() - if j == targets[r] { 1.0 } else { 0.0 });
                let got = grad[r * vocab + j] as f64;
                assert!((got - want).abs() < 1e-5, "row {r}, logit {j}: gradient {got} vs {want}");
            }
        }
        assert_eq!(out.argmax[3], 5, "the first of two equal maxima");
    }

    #[test]
    #[should_panic(expected = "cross-entropy target 40 is outside the vocabulary of 37 logits")]
    fn a_target_outside_the_vocabulary_is_named() {
        forward(&[0.0; 2 * 37], 37, &[1, 40]);
    }
}
