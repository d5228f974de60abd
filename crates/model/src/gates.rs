//! Gate parameters the gated linear-type families (`decay`, `delta`) share: a seeded stream of
//! their own for drawing them, and the Mamba-2 / SSD scalar decay
//! `log a_t = −Δ_t·exp(A_log_h)`, `Δ_t = softplus(w_h·x_t + dt_bias_h)` (Dao & Gu 2024,
//! arXiv 2405.21060), which Gated DeltaNet (Yang et al. 2025, arXiv 2412.06464) reuses as its `g_t`
//! and Kimi Delta Attention (Kimi Team 2025, arXiv 2510.26692) widens to one gate per key channel.
//!
//! Gate parameters come from a stream seeded by the model seed, the layer and a per-family tag,
//! not from the backend's generator: they repeat per seed, and adding a gate to a family leaves
//! every other weight of the model as it was.

use crate::mixer::MixerDims;
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::activation::softplus;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The initial bias of a sigmoid forget gate `f = σ(w·x + b)` (FoX's, and `decay:forget`'s):
/// `σ(5) ≈ 0.993`, a memory of ~150 tokens at the start of training.
pub const FORGET_BIAS_INIT: f32 = 5.0;

/// A generator distinct per (model seed, layer, `tag`): SplitMix64's finaliser over the three.
pub fn family_rng(dims: &MixerDims, tag: u64) -> StdRng {
    let mut z = dims.seed ^ tag ^ (dims.layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// A uniform draw in `[lo, hi)`.
pub fn uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// A Burn `Linear` `d_in → d_out` (`weight: [d_in, d_out]`) with weights `U(−1/√d_in, 1/√d_in)`
/// (Burn's and PyTorch's default range) drawn from `rng`, and the given bias.
pub fn uniform_linear(
    rng: &mut StdRng,
    d_in: usize,
    d_out: usize,
    bias: Vec<f32>,
    device: &Device,
) -> Linear {
    let bound = 1.0 / (d_in as f64).sqrt();
    let weight: Vec<f32> = (0..d_in * d_out).map(|_| uniform(rng, -bound, bound) as f32).collect();
    Linear {
        weight: Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(weight, [d_in, d_out]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::<1>::from_floats(bias.as_slice(), device))),
    }
}

/// The SSD decay's parameters for `dims.n_heads` heads: `dt` (`d_model → heads`, its bias
/// `dt_bias = softplus⁻¹(dt₀)`, `dt₀ ~ log-uniform[1e-3, 0.1]`) and `A_log = ln U(a_range)`.
/// Mamba-2 draws `A` from `(1, 16)`, Gated DeltaNet from `(0, 16)`.
pub fn ssm_decay_params(
    rng: &mut StdRng,
    dims: &MixerDims,
    a_range: (f64, f64),
    device: &Device,
) -> (Linear, Param<Tensor<1>>) {
    ssm_channel_decay_params(rng, dims, 1, a_range, device)
}

/// [`ssm_decay_params`] with `channels` gates per head (Kimi Delta Attention's per-key-channel
/// gate, `channels = d_k`): `dt` is `d_model → heads·channels` (head-major: head `h`'s channel
/// `i` in column `h·channels + i`) with a `dt_bias` per column, `A_log` still one per head. With
/// `channels = 1` these are [`ssm_decay_params`]' draws.
pub fn ssm_channel_decay_params(
    rng: &mut StdRng,
    dims: &MixerDims,
    channels: usize,
    a_range: (f64, f64),
    device: &Device,
) -> (Linear, Param<Tensor<1>>) {
    let (d, h, w) = (dims.d_model, dims.n_heads, dims.n_heads * channels);
    let bound = 1.0 / (d as f64).sqrt();
    // Drawn in this order (weights, bias, A) so a seed gives the same gates as it always has.
    let weights: Vec<f32> = (0..d * w).map(|_| uniform(rng, -bound, bound) as f32).collect();
    // softplus⁻¹(dt) = dt + ln(1 − e^{−dt}).
    let bias: Vec<f32> = (0..w)
        .map(|_| {
            let dt = uniform(rng, 1e-3f64.ln(), 0.1f64.ln()).exp();
            (dt + (-(-dt).exp_m1()).ln()) as f32
        })
        .collect();
    let logs: Vec<f32> = (0..h)
        .map(|_| uniform(rng, a_range.0, a_range.1).max(f64::MIN_POSITIVE).ln() as f32)
        .collect();
    let dt = Linear {
        weight: Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(weights, [d, w]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::<1>::from_floats(bias.as_slice(), device))),
    };
    (dt, Param::from_tensor(Tensor::<1>::from_floats(logs.as_slice(), device)))
}

/// `log a_t = −softplus(x_t·w_h + dt_bias_h)·exp(A_log_h)`, all `≤ 0`: one per head, or, when
/// `dt` has `G` columns per head ([`ssm_channel_decay_params`]), `G` per head sharing the head's
/// `A_log` (`delta:kda`'s `log α_t = −exp(A_log_h)·softplus(f(x_t) + dt_bias)`).
///
/// # Shapes
/// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, G]`
pub fn ssm_log_gates(dt: &Linear, a_log: &Param<Tensor<1>>, x: Tensor<3>) -> Tensor<4> {
    let [b, t, _] = x.dims();
    let h = a_log.dims()[0];
    let g = dt.weight.dims()[1] / h;
    let delta = softplus(crate::fused::affine(dt, x), 1.0).reshape([b, t, h, g]);
    let rate = a_log.val().exp().reshape([1, 1, h, 1]);
    (delta * rate).neg().swap_dims(1, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{device, randn, values};

    fn dims(d_model: usize, n_heads: usize, seed: u64, layer: usize) -> MixerDims {
        MixerDims { seed, layer, bias: true, ..MixerDims::new(d_model, n_heads, 8) }
    }

    /// The initial ranges hold, and draws repeat per seed and differ per layer, seed and tag.
    #[test]
    fn ssm_init_is_in_range_and_seeded() {
        let dev = device();
        let draw = |dims: MixerDims, tag: u64, range: (f64, f64)| {
            let (dt, a_log) = ssm_decay_params(&mut family_rng(&dims, tag), &dims, range, &dev);
            (values(dt.bias.unwrap().val()), values(a_log.val()))
        };
        let wide = dims(64, 64, 5, 1);
        for range in [(1.0, 16.0), (0.0, 16.0)] {
            let (bias, a_log) = draw(wide, 1, range);
            for (b, a) in bias.iter().zip(&a_log) {
                let dt = b.exp().ln_1p();
                assert!((0.999e-3..=0.1001).contains(&dt), "dt = softplus(dt_bias) = {dt}");
                assert!(
                    a.is_finite()
                        && *a <= 16f32.ln() + 1e-6
                        && *a >= (range.0.max(f64::MIN_POSITIVE)).ln() as f32,
                    "A_log = {a}"
                );
            }
        }
        assert_eq!(draw(wide, 1, (1.0, 16.0)), draw(wide, 1, (1.0, 16.0)));
        assert_ne!(draw(wide, 1, (1.0, 16.0)), draw(dims(64, 64, 5, 2), 1, (1.0, 16.0)));
        assert_ne!(draw(wide, 1, (1.0, 16.0)), draw(dims(64, 64, 6, 1), 1, (1.0, 16.0)));
        assert_ne!(draw(wide, 1, (1.0, 16.0)), draw(wide, 2, (1.0, 16.0)));
    }

    /// The log gates are the formula, computed by hand from the parameters.
    #[test]
    fn ssm_log_gates_match_the_formula() {
        let dev = device();
        let d = dims(8, 2, 3, 0);
        let (dt, a_log) = ssm_decay_params(&mut family_rng(&d, 7), &d, (1.0, 16.0), &dev);
        let x = randn([1, 3, 8], 11, &dev);
        let xs = values(x.clone());
        let (w, b, a) =
            (values(dt.weight.val()), values(dt.bias.clone().unwrap().val()), values(a_log.val()));
        let got = values(ssm_log_gates(&dt, &a_log, x)); // [1, 2, 3, 1]
        let softplus = |z: f32| if z > 20.0 { z } else { z.exp().ln_1p() };
        for h in 0..2 {
            for t in 0..3 {
                let z: f32 = (0..8).map(|i| xs[t * 8 + i] * w[i * 2 + h]).sum::<f32>() + b[h];
                let want = -softplus(z) * a[h].exp();
                assert!(
                    (got[h * 3 + t] - want).abs() < 1e-5 * want.abs().max(1.0),
                    "({h},{t}): {} vs {want}",
                    got[h * 3 + t]
                );
            }
        }
    }

    /// With `G` channels per head: one `Δ` per column (head-major), the head's `A` for all of
    /// them.
    #[test]
    fn channel_log_gates_match_the_formula() {
        let dev = device();
        let d = dims(8, 2, 3, 0);
        let (dt, a_log) =
            ssm_channel_decay_params(&mut family_rng(&d, 7), &d, 3, (1.0, 16.0), &dev);
        assert_eq!(dt.weight.dims(), [8, 6]);
        let x = randn([1, 4, 8], 12, &dev);
        let xs = values(x.clone());
        let (w, b, a) =
            (values(dt.weight.val()), values(dt.bias.clone().unwrap().val()), values(a_log.val()));
        let got = values(ssm_log_gates(&dt, &a_log, x)); // [1, 2, 4, 3]
        let softplus = |z: f32| if z > 20.0 { z } else { z.exp().ln_1p() };
        for h in 0..2 {
            for t in 0..4 {
                for i in 0..3 {
                    let col = h * 3 + i;
                    let z: f32 =
                        (0..8).map(|j| xs[t * 8 + j] * w[j * 6 + col]).sum::<f32>() + b[col];
                    let want = -softplus(z) * a[h].exp();
                    let g = got[(h * 4 + t) * 3 + i];
                    assert!(
                        (g - want).abs() < 1e-5 * want.abs().max(1.0),
                        "({h},{t},{i}): {g} vs {want}"
                    );
                }
            }
        }
    }
}
