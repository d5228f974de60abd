//! Canon layers (Allen-Zhu 2025, "Physics of Language Models: Part 4.1, Architecture Design and
//! the Magic of Canon Layers", arXiv 2512.17351): a short causal residual convolution that lets
//! every position see its last few neighbours' hidden states, whatever the mixer is:
//!
//! `h'_t = h_t + Σ_{i=0}^{K−1} w_i ⊙ h_{t−K+1+i}`, per channel (depthwise), `h` zero before the
//! first token, no bias and no activation.
//!
//! The paper places it at four sites of a block: A before the mixer (on its normalised input), B
//! inside it on the projected q/k/v, C before the MLP (on its normalised input) and D inside the
//! MLP. `model.canon` names the sites attnlab adds as a model option orthogonal to the mixer: `a`,
//! `c` or `ac`. B is each linear-type family's own `conv=K` option (on q/k/v, with SiLU, fla's
//! `ShortConvolution`); D is not built. `model.canon_kernel` is `K` (4, the paper's).
//!
//! Decoding carries the last `K − 1` inputs of each site (`(K − 1)·d_model` floats per site and
//! layer) and continues exactly where the full forward would be. Initialised as PyTorch's
//! depthwise `Conv1d` (fan-in `K`): `w ~ U(−1/√K, 1/√K)`, drawn from the model seed and layer.

use crate::short_conv::{MAX_KERNEL, ShortConv, causal_conv};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The paper's kernel.
pub const DEFAULT_KERNEL: usize = 4;
/// The weight stream's tag ("canon_la").
const CANON_TAG: u64 = 0x6361_6e6f_6e5f_6c61;

/// Where a block has Canon layers (`model.canon`): a subset of `a` (before the mixer) and `c`
/// (before the MLP), written in that order; empty is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CanonSites {
    pub before_mixer: bool,
    pub before_mlp: bool,
}

/// A `model.canon` value that is not a set of supported sites.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model.canon = \"{value}\": {reason}")]
pub struct CanonSitesError {
    pub value: String,
    pub reason: String,
}

impl CanonSites {
    pub fn any(self) -> bool {
        self.before_mixer || self.before_mlp
    }

    /// How many sites a block has.
    pub fn count(self) -> usize {
        usize::from(self.before_mixer) + usize::from(self.before_mlp)
    }
}

impl TryFrom<String> for CanonSites {
    type Error = CanonSitesError;
    fn try_from(value: String) -> Result<Self, CanonSitesError> {
        let refuse = |reason: &str| CanonSitesError { value: value.clone(), reason: reason.into() };
        let mut sites = CanonSites::default();
        for c in value.chars() {
            let seen = match c.to_ascii_lowercase() {
                'a' => std::mem::replace(&mut sites.before_mixer, true),
                'c' => std::mem::replace(&mut sites.before_mlp, true),
                'b' => {
                    return Err(refuse(
                        "site B (on q/k/v inside the mixer) is the mixer's own option: use conv=K in the spec, e.g. delta:gated:conv=4",
                    ));
                }
                'd' => return Err(refuse("site D (inside the MLP) is not built: use a, c or ac")),
                _ => {
                    return Err(refuse(
                        "expected the sites a (before the mixer), c (before the MLP) or ac",
                    ));
                }
            };
            if seen {
                return Err(refuse("a site is named twice: use a, c or ac"));
            }
        }
        Ok(sites)
    }
}

impl fmt::Display for CanonSites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.before_mixer {
            f.write_str("a")?;
        }
        if self.before_mlp {
            f.write_str("c")?;
        }
        Ok(())
    }
}

impl From<CanonSites> for String {
    fn from(sites: CanonSites) -> String {
        sites.to_string()
    }
}

/// `model.canon_kernel` outside `2..=MAX_KERNEL` while a site is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "model.canon_kernel = {kernel}: a Canon layer is a short convolution of 2 to {max} taps (the paper's is 4)",
    max = MAX_KERNEL
)]
pub struct CanonKernelError {
    pub kernel: usize,
}

/// Checks `model.canon_kernel` while a site is on: `2..=MAX_KERNEL`.
pub fn check_kernel(kernel: usize) -> Result<(), CanonKernelError> {
    if (2..=MAX_KERNEL).contains(&kernel) { Ok(()) } else { Err(CanonKernelError { kernel }) }
}

/// One Canon layer over `d_model` channels.
#[derive(Module, Debug)]
pub struct Canon {
    /// `weight: [K, d_model]`: row `i` weighs the input `K − 1 − i` steps back.
    pub conv: ShortConv,
}

impl Canon {
    /// `site` is 0 (before the mixer) or 1 (before the MLP), so that each layer and site draws
    /// its own weights from the model seed.
    pub fn new(
        d_model: usize,
        kernel: usize,
        seed: u64,
        layer: usize,
        site: u64,
        device: &Device,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(stream(seed, layer, site));
        Self { conv: ShortConv::new(d_model, kernel, &mut rng, device) }
    }

    pub fn kernel(&self) -> usize {
        self.conv.kernel()
    }

    /// `x + conv(x)`, continuing from `history` (the last `K − 1` inputs; `None` at the start of
    /// a sequence, and then left holding this call's last inputs).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`; `history`: `[batch, K − 1, d_model]`
    pub fn forward(&self, x: Tensor<3>, history: &mut Option<Tensor<3>>) -> Tensor<3> {
        let (y, next) = causal_conv(x.clone(), self.conv.weight.val(), history.take());
        *history = Some(next);
        x + y
    }
}

/// A seed of its own for each (model seed, layer, site): splitmix64's finaliser over their mix.
fn stream(seed: u64, layer: usize, site: u64) -> u64 {
    let mut z = seed
        ^ CANON_TAG
        ^ ((layer as u64) << 1 | site).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Floats of decoding state one block's Canon layers carry per sequence.
pub fn state_floats(sites: CanonSites, kernel: usize, d_model: usize) -> usize {
    if sites.any() { sites.count() * ShortConv::state_floats(kernel, d_model) } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, output_and_grads, randn, values};

    #[test]
    fn sites_parse_print_and_refuse_with_the_fix() {
        let parse = |s: &str| CanonSites::try_from(s.to_string());
        assert_eq!(parse("").unwrap(), CanonSites::default());
        let ac = parse("ac").unwrap();
        assert!(ac.before_mixer && ac.before_mlp && ac.count() == 2);
        assert_eq!(parse("CA").unwrap().to_string(), "ac");
        assert_eq!(parse("c").unwrap().to_string(), "c");
        assert!(parse("b").unwrap_err().to_string().contains("conv=K"));
        assert!(parse("ad").unwrap_err().to_string().contains("not built"));
        assert!(parse("aa").unwrap_err().to_string().contains("twice"));
        assert!(parse("x").unwrap_err().to_string().contains("expected the sites"));
        assert!(check_kernel(4).is_ok() && check_kernel(1).is_err() && check_kernel(65).is_err());
    }

    /// `x + Σ_i w_i ⊙ x_{t−K+1+i}` by hand, element by element.
    #[test]
    fn adds_the_causal_convolution_to_its_input() {
        let dev = device();
        let canon = Canon::new(3, 4, 7, 0, 0, &dev);
        let x = randn([2, 6, 3], 1, &dev);
        let y = canon.forward(x.clone(), &mut None);
        let (xs, w, ys) = (values(x), values(canon.conv.weight.val()), values(y));
        for b in 0..2 {
            for t in 0..6 {
                for c in 0..3 {
                    let conv: f32 = (0..4)
                        .filter(|&i| t + i >= 3)
                        .map(|i| w[i * 3 + c] * xs[(b * 6 + t + i - 3) * 3 + c])
                        .sum();
                    let want = xs[(b * 6 + t) * 3 + c] + conv;
                    assert!((ys[(b * 6 + t) * 3 + c] - want).abs() < 1e-5, "b{b} t{t} c{c}");
                }
            }
        }
    }

    /// Token by token (and in uneven pieces) from the carried history equals the whole sequence
    /// at once, and a layer's sites and layers draw different weights.
    #[test]
    fn continuing_from_history_equals_the_whole_sequence() {
        let dev = device();
        let canon = Canon::new(4, 3, 7, 1, 1, &dev);
        let x = randn([2, 7, 4], 2, &dev);
        let whole = canon.forward(x.clone(), &mut None);
        let mut history = None;
        let pieces: Vec<Tensor<3>> = [(0, 1), (1, 3), (4, 1), (5, 2)]
            .iter()
            .map(|&(start, len)| canon.forward(x.clone().narrow(1, start, len), &mut history))
            .collect();
        assert_close(Tensor::cat(pieces, 1), whole, 1e-6, "pieces vs whole");
        let other = Canon::new(4, 3, 7, 1, 0, &dev);
        assert_ne!(values(other.conv.weight.val()), values(canon.conv.weight.val()));
    }

    /// The input gradient against central finite differences of the forward (the probe-weighted
    /// sum `output_and_grads` differentiates).
    #[test]
    fn input_gradient_matches_finite_differences() {
        let dev = device();
        let canon = Canon::new(2, 3, 9, 0, 0, &dev);
        let x = randn([1, 5, 2], 3, &dev);
        let probe_seed = 4;
        let (_, grads) = output_and_grads(std::slice::from_ref(&x), probe_seed, |v| {
            let ad = Canon::new(2, 3, 9, 0, 0, &v[0].device());
            ad.forward(v[0].clone(), &mut None)
        });
        let grad = values(grads[0].clone());
        let probe = values(randn([1, 5, 2], probe_seed, &dev));
        let loss = |v: Vec<f32>| -> f64 {
            let x = Tensor::<3>::from_data(burn::tensor::TensorData::new(v, [1, 5, 2]), &dev);
            let y = values(canon.forward(x, &mut None));
            y.iter().zip(&probe).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let base = values(x);
        let eps = 1e-2;
        for i in 0..base.len() {
            let (mut up, mut down) = (base.clone(), base.clone());
            up[i] += eps;
            down[i] -= eps;
            let numeric = (loss(up) - loss(down)) / (2.0 * eps as f64);
            assert!((numeric - grad[i] as f64).abs() < 1e-2, "{i}: {numeric} vs {}", grad[i]);
        }
    }
}
