//! A short causal depthwise convolution over time on the projected queries, keys and values
//! (the `conv=K` option of the linear-type families), followed by SiLU:
//!
//! `y_{t,c} = silu(Σ_{i=0}^{K−1} w_{i,c} · x_{t−K+1+i, c})`, with `x` zero before the first token.
//!
//! H3 (Fu et al. 2023) introduced it, zoology (Arora et al. 2024) found it matters for recall, and
//! fla's GLA, DeltaNet and Gated DeltaNet layers use it with `K = 4` and no bias (`ShortConvolution`).
//! Each channel mixes only with its own last `K − 1` inputs, so decoding carries those inputs
//! (`(K − 1)` floats per channel) and continues exactly where the full forward would be.
//! Initialised as PyTorch's `Conv1d` (depthwise fan-in `K`): `w ~ U(−1/√K, 1/√K)`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;

/// Largest `conv=K` a family accepts: a short convolution, not a long one.
pub const MAX_KERNEL: usize = 64;

/// A `conv=K` option that is not a short convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "conv={kernel} is not a short convolution: use 0 (none) or a kernel from 2 to {max}, e.g. conv=4",
    max = MAX_KERNEL
)]
pub struct KernelError {
    pub kernel: usize,
}

/// Checks a `conv=K` option: 0 (off) or `2..=MAX_KERNEL`.
pub fn check_kernel(kernel: usize) -> Result<(), KernelError> {
    match kernel {
        0 | 2..=MAX_KERNEL => Ok(()),
        _ => Err(KernelError { kernel }),
    }
}

/// Depthwise causal convolution of width `K` over `channels`.
#[derive(Module, Debug)]
pub struct ShortConv {
    /// `[K, channels]`: row `i` weighs the input `K − 1 − i` steps back.
    pub weight: Param<Tensor<2>>,
}

impl ShortConv {
    /// `kernel ≥ 2`; weights drawn from `rng`.
    pub fn new(channels: usize, kernel: usize, rng: &mut StdRng, device: &Device) -> Self {
        assert!(kernel >= 2, "a short convolution needs a kernel of at least 2");
        let bound = 1.0 / (kernel as f64).sqrt();
        let w: Vec<f32> = (0..kernel * channels)
            .map(|_| crate::gates::uniform(rng, -bound, bound) as f32)
            .collect();
        Self {
            weight: Param::from_tensor(Tensor::<2>::from_data(
                TensorData::new(w, [kernel, channels]),
                device,
            )),
        }
    }

    pub fn kernel(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Floats of decoding state per sequence.
    pub fn state_floats(kernel: usize, channels: usize) -> usize {
        (kernel - 1) * channels
    }

    /// Convolves `x`, continuing from `history` (the last `K − 1` inputs before `x`; zeros when
    /// `None`), applies SiLU, and returns the output with the new history.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, channels]`, `history`: `[batch, K − 1, channels]`
    ///   -> `([batch, seq, channels], [batch, K − 1, channels])`
    pub fn forward(&self, x: Tensor<3>, history: Option<Tensor<3>>) -> (Tensor<3>, Tensor<3>) {
        convolve(x, self.weight.val(), history)
    }

    /// [`Self::forward`] reading `history` and leaving the new one in its place (a decoding
    /// state's field; `None` at the start of a sequence).
    pub fn continue_from(&self, x: Tensor<3>, history: &mut Option<Tensor<3>>) -> Tensor<3> {
        let (y, next) = self.forward(x, history.take());
        *history = Some(next);
        y
    }
}

/// [`ShortConv::forward`] with the weight `[K, channels]` given.
pub fn convolve(x: Tensor<3>, w: Tensor<2>, history: Option<Tensor<3>>) -> (Tensor<3>, Tensor<3>) {
    let (y, next) = causal_conv(x, w, history);
    (crate::fused::silu(y), next)
}

/// The convolution alone, `Σ_i w_i ⊙ x_{t−K+1+i}` (no activation; Canon layers add it to their
/// input), continuing from `history`, with the new history.
///
/// # Shapes
/// - `x`: `[batch, seq, channels]`, `w`: `[K, channels]`, `history`: `[batch, K − 1, channels]`
///   -> `([batch, seq, channels], [batch, K − 1, channels])`
pub fn causal_conv(
    x: Tensor<3>,
    w: Tensor<2>,
    history: Option<Tensor<3>>,
) -> (Tensor<3>, Tensor<3>) {
    if history.is_some() || !crate::fused::runs_fused(&x) {
        return causal_conv_composed(x, w, history);
    }
    // From a zero history (training; decoding's first call) the fused kernel runs, and the next
    // history is the last K − 1 inputs, zeros first when fewer came.
    let [b, t, c] = x.dims();
    let k = w.dims()[0];
    let next = if t >= k - 1 {
        x.clone().narrow(1, t - (k - 1), k - 1)
    } else {
        Tensor::cat(vec![Tensor::zeros([b, k - 1 - t, c], &x.device()), x.clone()], 1)
    };
    match crate::fused::causal_depthwise_conv(x, w) {
        Ok(y) => (y, next),
        Err(inputs) => {
            let (x, w) = *inputs;
            causal_conv_composed(x, w, None)
        }
    }
}

/// [`causal_conv`] by tensor ops: every backend, any history, and the fused kernel's reference.
pub fn causal_conv_composed(
    x: Tensor<3>,
    w: Tensor<2>,
    history: Option<Tensor<3>>,
) -> (Tensor<3>, Tensor<3>) {
    let [b, t, c] = x.dims();
    let k = w.dims()[0];
    let past = history.unwrap_or_else(|| Tensor::zeros([b, k - 1, c], &x.device()));
    let full = Tensor::cat(vec![past, x], 1); // [b, K − 1 + t, c]
    let mut y = full.clone().narrow(1, 0, t) * w.clone().narrow(0, 0, 1).reshape([1, 1, c]);
    for i in 1..k {
        y = y + full.clone().narrow(1, i, t) * w.clone().narrow(0, i, 1).reshape([1, 1, c]);
    }
    (y, full.narrow(1, t, k - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, output_and_grads, randn, values};
    use burn::tensor::activation::silu;
    use rand::SeedableRng;

    /// The formula by hand, element by element.
    #[test]
    fn matches_the_formula_and_continues_from_history() {
        let dev = device();
        let conv = ShortConv::new(3, 4, &mut StdRng::seed_from_u64(1), &dev);
        let x = randn([2, 7, 3], 2, &dev);
        let (y, _) = conv.forward(x.clone(), None);
        let (xs, w, ys) = (values(x.clone()), values(conv.weight.val()), values(y.clone()));
        for b in 0..2 {
            for t in 0..7 {
                for c in 0..3 {
                    let z: f32 = (0..4)
                        .filter(|&i| t + i >= 3)
                        .map(|i| w[i * 3 + c] * xs[(b * 7 + t + i - 3) * 3 + c])
                        .sum();
                    let want = z / (1.0 + (-z).exp());
                    let got = ys[(b * 7 + t) * 3 + c];
                    assert!((got - want).abs() < 1e-6, "({b},{t},{c}): {got} vs {want}");
                }
            }
        }
        // Pieces of 3, 1 and 3 tokens carried through the history give the same output.
        let mut history = None;
        let mut outs = Vec::new();
        for (a, n) in [(0, 3), (3, 1), (4, 3)] {
            let (o, h) = conv.forward(x.clone().narrow(1, a, n), history);
            outs.push(o);
            history = Some(h);
        }
        assert_close(Tensor::cat(outs, 1), y, 1e-6, "pieces vs whole");
    }

    /// Input and weight gradients against a finite-difference-free reference: the same formula
    /// written with a padded sum over shifted copies, differentiated by autodiff.
    #[test]
    fn gradients_match_the_shifted_sum() {
        let dev = device();
        let x = randn([1, 5, 2], 3, &dev);
        let w = randn([3, 2], 4, &dev);
        let reference = |x: Tensor<3>, w: Tensor<3>| {
            let padded = Tensor::cat(vec![Tensor::zeros([1, 2, 2], &x.device()), x], 1);
            let parts: Vec<Tensor<3>> = (0..3)
                .map(|i| padded.clone().narrow(1, i, 5) * w.clone().narrow(1, i, 1))
                .collect();
            silu(Tensor::stack::<4>(parts, 0).sum_dim(0).reshape([1, 5, 2]))
        };
        let (want, want_grads) =
            output_and_grads(&[x.clone(), w.clone().reshape([1, 3, 2])], 5, |v| {
                reference(v[0].clone(), v[1].clone())
            });
        let (got, got_grads) = output_and_grads(&[x, w.reshape([1, 3, 2])], 5, |v| {
            convolve(v[0].clone(), v[1].clone().reshape([3, 2]), None).0
        });
        assert_close(got, want, 1e-6, "output");
        for (i, (g, w)) in got_grads.into_iter().zip(want_grads).enumerate() {
            assert_close(g, w, 1e-6, &format!("gradient {i}"));
        }
    }
    /// The fused kernel equals the composed convolution from a zero history, outputs, the next
    /// history, and the gradients of input and weight, for kernels shorter and longer than the
    /// sequence.
    #[test]
    fn fused_convolution_matches_the_composed_one() {
        let dev = device();
        for (seed, (b, t, c, k)) in
            [(2, 9, 6, 4), (1, 3, 5, 4), (3, 7, 33, 2)].into_iter().enumerate()
        {
            let seed = 40 + 3 * seed as u64;
            let inputs = [randn([b, t, c], seed, &dev), randn([1, k, c], seed + 1, &dev)];
            let weight = |w: &Tensor<3>| w.clone().reshape([k, c]);
            let what = format!("b{b} t{t} c{c} k{k}");
            let (fast, fast_g) = output_and_grads(&inputs, seed + 2, |x| {
                causal_conv(x[0].clone(), weight(&x[1]), None).0
            });
            let (slow, slow_g) = output_and_grads(&inputs, seed + 2, |x| {
                causal_conv_composed(x[0].clone(), weight(&x[1]), None).0
            });
            assert_close(fast, slow, 1e-5, &format!("{what}: output"));
            for (i, (f, s)) in fast_g.into_iter().zip(slow_g).enumerate() {
                assert_close(f, s, 1e-5, &format!("{what}: gradient {i}"));
            }
            let w = weight(&inputs[1]);
            let (_, fused_next) = causal_conv(inputs[0].clone(), w.clone(), None);
            let (_, composed_next) = causal_conv_composed(inputs[0].clone(), w, None);
            assert_close(fused_next, composed_next, 0.0, &format!("{what}: next history"));
        }
    }
}
