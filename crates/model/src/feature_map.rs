//! What every linear-type family (kernelised attention `linear`, decay-gated `decay`, ...) shares:
//! the feature maps φ, `sim(q, k) = φ(q)·φ(k)`, and the sign-safe row normaliser
//! [`safe_denominator`]. A module of its own rather than part of one family, so that no family
//! imports another (the import test in `tests.rs` checks this).
//!
//! | map | φ(x) | F (features) | source |
//! |---|---|---|---|
//! | `identity` | `x` | d | seed 1 (Deng, Song, Zhou 2023) |
//! | `elu1` | `elu(x) + 1` | d | Katharopoulos et al. 2020 |
//! | `relu` | `max(x, 0)` | d | |
//! | `cosformer` | `[relu(x_i) cos(πi/2M), relu(x_i) sin(πi/2M)]`, so `φ(q_i)·φ(k_j) = relu(q_i)·relu(k_j) cos(π(i−j)/2M)` | 2d | Qin et al. 2022 |
//! | `taylor` | `[1, x/d'^¼, vec(x xᵀ)/√(2d')]`, so `φ(q)·φ(k) = 1 + q·k/√d' + (q·k)²/2d'` | 1 + d' + d'² | Arora et al. 2024 (Based) |
//! | `performer` | `exp(W x̃ − ‖x̃‖²/2)/√m`, `x̃ = x/d^¼`, rows of `W` orthogonal Gaussian | m | Choromanski et al. 2021 (FAVOR+) |
//!
//! cosFormer's `M` is the model's `max_seq_len` (fixed, so decoding equals the full forward) and
//! `i` the absolute position. Performer's `W` is drawn once from the model seed and the layer
//! index, stored as a frozen parameter (saved with the weights, never trained, never redrawn).
//!
//! The normaliser `φ(q_i)·Σ_j φ(k_j)` can be zero or negative for maps that can be negative
//! (`identity`): [`safe_denominator`] keeps its sign and clamps its magnitude to at least
//! [`DENOMINATOR_EPS`], which is seed 1's row normalisation wherever that is defined and finite
//! everywhere else.

use crate::mixer::MixerDims;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// How a linear-type family computes its causal sum; every form gives the same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinearForm {
    /// Quadratic inside chunks, a carried state between them (the training default).
    #[default]
    Chunked,
    /// The masked `T × T` matrix (the only form that yields weights, for diagnostics).
    Parallel,
    /// One token at a time, as in decoding.
    Recurrent,
}

/// The row normaliser option `norm=sum|none`: `sum` divides by `φ(q_i)·z_i` through
/// [`safe_denominator`], `none` keeps the numerator. Each family picks its own default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalizer {
    #[default]
    Sum,
    None,
}

/// Tokens per chunk of the chunked form, unless `chunk=N` says otherwise.
pub const DEFAULT_CHUNK: usize = 64;

/// Smallest magnitude the normaliser may take.
pub const DENOMINATOR_EPS: f32 = 1e-6;

/// `sign(z) · max(|z|, eps)`, with `sign(0) = +1`.
pub fn safe_denominator<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    let sign = z.clone().greater_equal_elem(0.0).float() * 2.0 - 1.0;
    z.abs().clamp_min(DENOMINATOR_EPS) * sign
}

/// Taylor (Based): default per-head width `d'` of the q/k projection.
pub const DEFAULT_TAYLOR_DIM: usize = 16;
/// Performer: default number of random features `m`.
pub const DEFAULT_PERFORMER_FEATURES: usize = 64;

/// Which φ. Serialises as its lowercase name, so a family can take it as a spec option
/// (`decay:gla:map=elu1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureMapKind {
    Identity,
    #[default]
    Elu1,
    Relu,
    Cosformer,
    Taylor,
    Performer,
}

impl FeatureMapKind {
    pub const ALL: [FeatureMapKind; 6] =
        [Self::Identity, Self::Elu1, Self::Relu, Self::Cosformer, Self::Taylor, Self::Performer];

    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Elu1 => "elu1",
            Self::Relu => "relu",
            Self::Cosformer => "cosformer",
            Self::Taylor => "taylor",
            Self::Performer => "performer",
        }
    }

    /// Number of features F for an input of width `d` (`features` = Performer's m).
    pub fn output_dim(self, d: usize, features: usize) -> usize {
        match self {
            Self::Identity | Self::Elu1 | Self::Relu => d,
            Self::Cosformer => 2 * d,
            Self::Taylor => 1 + d + d * d,
            Self::Performer => features,
        }
    }

    /// Per-head width of queries and keys: Based (Taylor) projects them to its own `d'`
    /// (`feature_dim`), every other map keeps the head dim.
    pub fn qk_width(self, head_dim: usize, feature_dim: usize) -> usize {
        match self {
            Self::Taylor => feature_dim,
            _ => head_dim,
        }
    }

    /// Checks the map-specific options of a family that takes a map: `feature_dim` belongs to
    /// taylor and `features` to performer (an error on the other maps, not silently ignored),
    /// and neither may be 0. `spelled` is how the message names a map (`linear:taylor`).
    pub fn check_options(
        self,
        feature_dim: usize,
        features: usize,
        spelled: impl Fn(FeatureMapKind) -> String,
    ) -> Result<(), MapOptionError> {
        for (key, owner, given) in [
            ("feature_dim", Self::Taylor, feature_dim != DEFAULT_TAYLOR_DIM),
            ("features", Self::Performer, features != DEFAULT_PERFORMER_FEATURES),
        ] {
            if given && self != owner {
                return Err(MapOptionError::NotThisMap {
                    key,
                    owner: spelled(owner),
                    map: spelled(self),
                });
            }
        }
        for (key, value) in [("feature_dim", feature_dim), ("features", features)] {
            if value == 0 {
                return Err(MapOptionError::Zero { key });
            }
        }
        Ok(())
    }
}

/// A map-specific option given to the wrong map, or given as 0
/// ([`FeatureMapKind::check_options`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapOptionError {
    #[error("option '{key}' belongs to {owner}, not {map}")]
    NotThisMap { key: &'static str, owner: String, map: String },
    #[error("{key} must be at least 1")]
    Zero { key: &'static str },
}

/// A feature map, with Performer's fixed random projection when it has one.
#[derive(Module, Debug)]
pub struct FeatureMap {
    /// Performer only: `[m, d]`, frozen.
    pub random_features: Option<Param<Tensor<2>>>,
    #[module(skip)]
    kind: FeatureMapKind,
    #[module(skip)]
    max_seq_len: usize,
}

impl FeatureMap {
    /// `d` is the per-head q/k width the map is applied to.
    pub fn new(
        kind: FeatureMapKind,
        d: usize,
        features: usize,
        dims: &MixerDims,
        device: &Device,
    ) -> Self {
        let random_features = (kind == FeatureMapKind::Performer).then(|| {
            // Distinct per layer, repeatable per seed.
            let seed = dims.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(dims.layer as u64 + 1));
            let w = orthogonal_gaussian(features, d, seed);
            Param::from_tensor(Tensor::<2>::from_data(TensorData::new(w, [features, d]), device))
                .set_require_grad(false)
        });
        Self { random_features, kind, max_seq_len: dims.max_seq_len }
    }

    pub fn kind(&self) -> FeatureMapKind {
        self.kind
    }

    /// Applies φ to heads of tokens at absolute positions `offset..offset + seq`.
    ///
    /// # Shapes
    /// - `x`: `[batch, heads, seq, d]` -> `[batch, heads, seq, F]`
    pub fn apply(&self, x: Tensor<4>, offset: usize) -> Tensor<4> {
        let [b, h, t, d] = x.dims();
        match self.kind {
            FeatureMapKind::Identity => x,
            // elu(x) + 1 = x + 1 for x > 0, exp(x) otherwise.
            FeatureMapKind::Elu1 => crate::fused::elu_plus_one(x),
            FeatureMapKind::Relu => x.clamp_min(0.0),
            FeatureMapKind::Cosformer => {
                let m = self.max_seq_len.max(1) as f32;
                let angles: Vec<f32> = (offset..offset + t)
                    .map(|i| std::f32::consts::FRAC_PI_2 * i as f32 / m)
                    .collect();
                let angle =
                    Tensor::<1>::from_floats(angles.as_slice(), &x.device()).reshape([1, 1, t, 1]);
                let r = x.clamp_min(0.0);
                Tensor::cat(vec![r.clone() * angle.clone().cos(), r * angle.sin()], 3)
            }
            FeatureMapKind::Taylor => {
                let dd = d as f32;
                let ones = Tensor::<4>::ones([b, h, t, 1], &x.device());
                let linear = x.clone() / dd.powf(0.25);
                let outer = (x.clone().unsqueeze_dim::<5>(4) * x.unsqueeze_dim::<5>(3)).reshape([
                    b,
                    h,
                    t,
                    d * d,
                ]);
                Tensor::cat(vec![ones, linear, outer / (2.0 * dd).sqrt()], 3)
            }
            FeatureMapKind::Performer => {
                let w = self.random_features.as_ref().expect("performer has random features").val();
                let m = w.dims()[0];
                let x = x / (d as f32).powf(0.25);
                let half_sq_norm = x.clone().powi_scalar(2).sum_dim(3) / 2.0;
                let proj = x.reshape([b * h * t, d]).matmul(w.transpose()).reshape([b, h, t, m]);
                (proj - half_sq_norm).exp() / (m as f32).sqrt()
            }
        }
    }
}

/// `rows x cols` Gaussian matrix whose rows are orthogonal within each block of `cols` rows and
/// have chi-distributed norms, as FAVOR+'s orthogonal random features. Row-major.
pub fn orthogonal_gaussian(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gauss = || -> f64 { StandardNormal.sample(&mut rng) };
    let mut out = Vec::with_capacity(rows * cols);
    while out.len() < rows * cols {
        // Gram-Schmidt on a fresh square Gaussian block.
        let mut block: Vec<Vec<f64>> = Vec::with_capacity(cols);
        while block.len() < cols {
            let mut v: Vec<f64> = (0..cols).map(|_| gauss()).collect();
            for u in &block {
                let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm > 1e-6 {
                block.push(v.into_iter().map(|a| a / norm).collect());
            }
        }
        for u in block {
            // Norm of an independent Gaussian vector keeps E[w wᵀ] = I as for i.i.d. rows.
            let scale = (0..cols).map(|_| gauss().powi(2)).sum::<f64>().sqrt();
            out.extend(u.into_iter().map(|a| (a * scale) as f32));
            if out.len() == rows * cols {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{device, randn, values};

    fn dims() -> MixerDims {
        MixerDims { seed: 7, layer: 0, bias: true, ..MixerDims::new(8, 2, 16) }
    }

    fn dot_rows(a: &[f32], b: &[f32], f: usize) -> Vec<f32> {
        a.chunks(f)
            .zip(b.chunks(f))
            .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum())
            .collect()
    }

    #[test]
    fn elementwise_maps_match_their_formulas() {
        let d = device();
        let x = randn([1, 1, 5, 4], 11, &d);
        let xs = values(x.clone());
        for kind in [FeatureMapKind::Identity, FeatureMapKind::Elu1, FeatureMapKind::Relu] {
            let got = values(FeatureMap::new(kind, 4, 0, &dims(), &d).apply(x.clone(), 0));
            for (g, v) in got.iter().zip(&xs) {
                let want = match kind {
                    FeatureMapKind::Identity => *v,
                    FeatureMapKind::Elu1 => {
                        if *v > 0.0 {
                            v + 1.0
                        } else {
                            v.exp()
                        }
                    }
                    _ => v.max(0.0),
                };
                assert!((g - want).abs() < 1e-6, "{}: {g} vs {want}", kind.name());
            }
        }
    }

    #[test]
    fn taylor_kernel_is_the_second_order_expansion() {
        let d = device();
        let (q, k) = (randn([1, 1, 6, 4], 12, &d), randn([1, 1, 6, 4], 13, &d));
        let map = FeatureMap::new(FeatureMapKind::Taylor, 4, 0, &dims(), &d);
        assert_eq!(map.apply(q.clone(), 0).dims()[3], 1 + 4 + 16);
        let got = dot_rows(&values(map.apply(q.clone(), 0)), &values(map.apply(k.clone(), 0)), 21);
        for (g, s) in got.iter().zip(dot_rows(&values(q), &values(k), 4)) {
            let want = 1.0 + s / 2.0 + s * s / 8.0; // d' = 4: √d' = 2, 2d' = 8
            assert!((g - want).abs() < 1e-4 * want.abs().max(1.0), "{g} vs {want}");
        }
    }

    #[test]
    fn cosformer_kernel_reweights_by_distance() {
        let d = device();
        let (q, k) = (randn([1, 1, 5, 4], 14, &d), randn([1, 1, 5, 4], 15, &d));
        let map = FeatureMap::new(FeatureMapKind::Cosformer, 4, 0, &dims(), &d);
        let (fq, fk) = (values(map.apply(q.clone(), 3)), values(map.apply(k.clone(), 0)));
        let (qs, ks) = (values(q.clamp_min(0.0)), values(k.clamp_min(0.0)));
        for i in 0..5 {
            for j in 0..5 {
                let got: f32 = fq[i * 8..i * 8 + 8]
                    .iter()
                    .zip(&fk[j * 8..j * 8 + 8])
                    .map(|(a, b)| a * b)
                    .sum();
                let base: f32 = qs[i * 4..i * 4 + 4]
                    .iter()
                    .zip(&ks[j * 4..j * 4 + 4])
                    .map(|(a, b)| a * b)
                    .sum();
                let dist = (3 + i) as f32 - j as f32;
                let want = base * (std::f32::consts::FRAC_PI_2 * dist / 16.0).cos();
                assert!((got - want).abs() < 1e-5, "({i},{j}): {got} vs {want}");
            }
        }
    }

    /// FAVOR+ is an unbiased estimate of the softmax kernel exp(q·k/√d): with many features
    /// the estimate is close to it.
    #[test]
    fn performer_approximates_the_softmax_kernel() {
        let d = device();
        let (q, k) = (randn([1, 1, 4, 4], 16, &d) * 0.5, randn([1, 1, 4, 4], 17, &d) * 0.5);
        let map = FeatureMap::new(FeatureMapKind::Performer, 4, 4096, &dims(), &d);
        let got =
            dot_rows(&values(map.apply(q.clone(), 0)), &values(map.apply(k.clone(), 0)), 4096);
        for (g, s) in got.iter().zip(dot_rows(&values(q), &values(k), 4)) {
            let want = (s / 2.0).exp();
            assert!((g - want).abs() < 0.05 * want, "{g} vs {want}");
        }
    }

    #[test]
    fn kinds_serialise_as_their_names() {
        for kind in FeatureMapKind::ALL {
            let parsed: FeatureMapKind =
                serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                    serde::de::value::Error,
                >::new(kind.name()))
                .unwrap();
            assert_eq!(parsed, kind);
        }
    }

    #[test]
    fn identity_denominator_keeps_its_sign_and_stays_finite() {
        let dev = device();
        let z = Tensor::<1>::from_floats([2.0, -3.0, 0.0, 1e-9, -1e-9], &dev);
        let got = values(safe_denominator(z));
        assert_eq!(got, vec![2.0, -3.0, DENOMINATOR_EPS, DENOMINATOR_EPS, -DENOMINATOR_EPS]);
    }

    #[test]
    fn orthogonal_features_are_orthogonal_within_blocks_and_seeded() {
        let w = orthogonal_gaussian(6, 4, 3);
        for i in 0..4 {
            for j in 0..i {
                let dot: f32 = (0..4).map(|c| w[i * 4 + c] * w[j * 4 + c]).sum();
                assert!(dot.abs() < 1e-4, "rows {i},{j}: {dot}");
            }
        }
        assert_eq!(w, orthogonal_gaussian(6, 4, 3));
        assert_ne!(w, orthogonal_gaussian(6, 4, 4));
    }
}
