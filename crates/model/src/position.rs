//! Position information: added to the input (`learned`, `sinusoidal`), rotated into queries
//! and keys (`rope`, Su et al. 2021, arXiv 2104.09864, adjacent-pair layout), or absent (`none`).
//!
//! Sinusoidal (Vaswani et al. 2017): `pe[t, 2i] = sin(t / 10000^(2i/D))`,
//! `pe[t, 2i+1] = cos(t / 10000^(2i/D))`, computed on the fly (nothing to store).
//!
//! RoPE's base θ is `model.rope_theta`; Llama 3's frequency scaling ([`RopeScaling`]) rescales
//! the slow pairs' frequencies once, when the table is built.
//!
//! RoPE's numbers live here too: [`rope_pair_angles`] reads Burn's table once for the composed
//! rotation (`heads::apply_rope`) and the fused kernel (`fused::rope_packed`) alike, so both
//! rotate by the same angles. A leaf: it imports neither.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, RotaryEncoding, RotaryEncodingConfig};
use burn::tensor::{Device, Int, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionKind {
    #[default]
    Learned,
    Sinusoidal,
    Rope,
    None,
}

/// Llama 3's RoPE frequency scaling (`rope_type = "llama3"` in a Hugging Face config; Meta's
/// Llama 3.1 release). With `λ_i = 2π/f_i` the wavelength of pair i: pairs faster than
/// `original_max_position_embeddings / high_freq_factor` keep `f_i`, pairs slower than
/// `original_max_position_embeddings / low_freq_factor` get `f_i / factor`, and the band between
/// blends the two with `s = (original_max_position_embeddings/λ_i − low)/(high − low)`:
/// `(1 − s)·f_i/factor + s·f_i`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RopeScaling {
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// Llama 3 scaling numbers that scale nothing; the message names the value.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum RopeScalingError {
    #[error("factor ({factor}) must be a finite number ≥ 1")]
    Factor { factor: f64 },
    #[error("need 0 < low_freq_factor ({low_freq_factor}) < high_freq_factor ({high_freq_factor})")]
    FrequencyFactors { low_freq_factor: f64, high_freq_factor: f64 },
    #[error("original_max_position_embeddings must be at least 1")]
    NoOriginalLength,
}

impl RopeScaling {
    /// Why the numbers cannot scale anything (the error names the value), for the config check.
    pub fn validate(&self) -> Result<(), RopeScalingError> {
        let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } = *self;
        if !(factor.is_finite() && factor >= 1.0) {
            return Err(RopeScalingError::Factor { factor });
        }
        if !(low_freq_factor > 0.0 && high_freq_factor > low_freq_factor) {
            return Err(RopeScalingError::FrequencyFactors { low_freq_factor, high_freq_factor });
        }
        if original_max_position_embeddings == 0 {
            return Err(RopeScalingError::NoOriginalLength);
        }
        Ok(())
    }

    /// The scaled frequency of a pair turning at `frequency` radians per position.
    pub fn scale(&self, frequency: f64) -> f64 {
        let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } = *self;
        let old = original_max_position_embeddings as f64;
        let wavelength = 2.0 * std::f64::consts::PI / frequency;
        if wavelength < old / high_freq_factor {
            frequency
        } else if wavelength > old / low_freq_factor {
            frequency / factor
        } else {
            let s = (old / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor);
            (1.0 - s) * frequency / factor + s * frequency
        }
    }
}

/// How RoPE's table is built: its base and optional frequency scaling.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeSettings {
    pub theta: f64,
    pub scaling: Option<RopeScaling>,
}

impl Default for RopeSettings {
    fn default() -> Self {
        Self { theta: 10_000.0, scaling: None }
    }
}

impl RopeSettings {
    /// The rotary encoding of `width`-wide heads for positions `0..max_seq_len`.
    pub fn init(&self, max_seq_len: usize, width: usize, device: &Device) -> RotaryEncoding {
        let config = RotaryEncodingConfig::new(max_seq_len, width).with_theta(self.theta as f32);
        match &self.scaling {
            None => config.init(device),
            Some(scaling) => config.init_with_frequency_scaling(
                |frequencies: Tensor<1>| {
                    let device = frequencies.device();
                    let scaled: Vec<f32> = frequencies
                        .into_data()
                        .iter::<f32>()
                        .map(|f| scaling.scale(f as f64) as f32)
                        .collect();
                    Tensor::<1>::from_floats(scaled.as_slice(), &device)
                },
                device,
            ),
        }
    }
}

#[derive(Module, Debug)]
pub struct Positions {
    /// `learned` only: `weight: [max_seq_len, d_model]`.
    pub learned: Option<Embedding>,
    /// `rope` only (no parameters).
    pub rope: Option<RotaryEncoding>,
    #[module(skip)]
    kind: PositionKind,
}

impl Positions {
    /// `rope_dim` is the per-head width RoPE rotates.
    pub fn new(
        kind: PositionKind,
        max_seq_len: usize,
        d_model: usize,
        rope_dim: usize,
        rope: &RopeSettings,
        device: &Device,
    ) -> Self {
        Self {
            learned: (kind == PositionKind::Learned)
                .then(|| EmbeddingConfig::new(max_seq_len, d_model).init(device)),
            rope: (kind == PositionKind::Rope).then(|| rope.init(max_seq_len, rope_dim, device)),
            kind,
        }
    }

    pub fn kind(&self) -> PositionKind {
        self.kind
    }

    /// Adds position information for tokens at `offset..offset + seq` (a no-op for rope/none).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn add(&self, x: Tensor<3>, offset: usize) -> Tensor<3> {
        let [_, t, d] = x.dims();
        let device = x.device();
        match self.kind {
            PositionKind::Learned => {
                let ids = Tensor::<1, Int>::arange(offset as i64..(offset + t) as i64, &device)
                    .reshape([1, t]);
                x + self.learned.as_ref().expect("learned positions").forward(ids)
            }
            PositionKind::Sinusoidal => x + sinusoidal(offset, t, d, &device).unsqueeze::<3>(),
            PositionKind::Rope | PositionKind::None => x,
        }
    }
}

/// `[seq, d_model]` sinusoidal table for positions `offset..offset + seq`.
pub fn sinusoidal(offset: usize, seq: usize, d_model: usize, device: &Device) -> Tensor<2> {
    let mut table = Vec::with_capacity(seq * d_model);
    for t in offset..offset + seq {
        for c in 0..d_model {
            let freq = 10000f64.powf(-((c / 2 * 2) as f64) / d_model as f64);
            let angle = t as f64 * freq;
            table.push(if c % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    Tensor::<1>::from_floats(table.as_slice(), device).reshape([seq, d_model])
}

/// RoPE's angle of each pair of a `width`-wide vector at positions `offset..offset + len`, as its
/// cosine and sine: the one place that reads the layout of Burn's table (`freq_complex[t, 2i +
/// m] = (cos, sin)` of pair i's angle, the same for both members m). The composed rotation and
/// the fused kernel both start from it, so they rotate by the same numbers.
///
/// The table is built for the head width `D`; a narrower query (Based's `feature_dim`) of a
/// width that divides `D` gets its own standard RoPE: its pair i turns at `θ^(−2i/width)`,
/// which is the table's pair `i·D/width`.
///
/// # Shapes
/// - returns `[len, width/2]` twice
pub(crate) fn rope_pair_angles(
    rope: &RotaryEncoding,
    offset: usize,
    len: usize,
    width: usize,
) -> (Tensor<2>, Tensor<2>) {
    let [_, d, _] = rope.freq_complex.dims();
    debug_assert!(
        width.is_multiple_of(2) && d % width == 0,
        "RoPE of width {width} from a {d}-wide table"
    );
    let (pairs, stride) = (width / 2, d / width);
    // [t, pair of width, stride, (cos, sin) of member 0 | of member 1]: the first of each stride.
    let table = rope.freq_complex.clone().narrow(0, offset, len).reshape([len, pairs, stride, 4]);
    let cos = table.clone().slice([0..len, 0..pairs, 0..1, 0..1]).reshape([len, pairs]);
    let sin = table.slice([0..len, 0..pairs, 0..1, 1..2]).reshape([len, pairs]);
    (cos, sin)
}

/// RoPE's factors for positions `offset..offset + len` (see [`rope_pair_angles`]): the cosine
/// for each dimension, and the sine signed for the member it multiplies (−sin for x₀, +sin for x₁).
///
/// # Shapes
/// - returns `[len, width]` twice
pub(crate) fn rotation(
    rope: &RotaryEncoding,
    offset: usize,
    len: usize,
    width: usize,
) -> (Tensor<2>, Tensor<2>) {
    let (cos, sin) = rope_pair_angles(rope, offset, len, width);
    let [_, pairs] = cos.dims();
    let both_members = |x: Tensor<2>| x.unsqueeze_dim::<3>(2).repeat_dim(2, 2);
    let sign = Tensor::<1>::from_floats([-1.0, 1.0], &sin.device()).reshape([1, 1, 2]);
    (
        both_members(cos).reshape([len, 2 * pairs]),
        (both_members(sin) * sign).reshape([len, 2 * pairs]),
    )
}

/// Rotates each pair `(x₀, x₁)` of `x`'s last dimension by its angle: `(x₀·cos − x₁·sin,
/// x₁·cos + x₀·sin)`, as `x·cos + swap(x)·signed_sin` where `swap` exchanges the members. The
/// same numbers as Burn's `RotaryEncoding::apply` (the test below) in four elementwise ops
/// instead of a `[.., 2] × [2, 4]` matmul per pair.
///
/// # Shapes
/// - `x`: `[a, b, c, d]`; `cos`, `signed_sin`: `[d]`-last, broadcastable to `x` -> `x`'s shape
pub(crate) fn rotate(x: Tensor<4>, cos: &Tensor<4>, signed_sin: &Tensor<4>) -> Tensor<4> {
    let [a, b, c, d] = x.dims();
    let swapped = x.clone().reshape([a * b * c, d / 2, 2]).flip([2]).reshape([a, b, c, d]);
    x * cos.clone() + swapped * signed_sin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device};

    #[test]
    fn elementwise_rope_matches_burns_rotary_encoding_in_values_and_gradients() {
        use crate::testing::{assert_output_and_grads_close, output_and_grads, randn};
        use burn::nn::RotaryEncodingConfig;
        let d = device();
        let ad = crate::testing::ad_device();
        let rope = RotaryEncodingConfig::new(16, 8).init(&ad);
        for (offset, t) in [(0, 7), (5, 3), (15, 1)] {
            let x = randn([2, 3, t, 8], 40 + offset as u64, &d);
            let fast = output_and_grads(std::slice::from_ref(&x), 7, |v| {
                let (cos, sin) = rotation(&rope, offset, t, 8);
                rotate(v[0].clone(), &cos.unsqueeze(), &sin.unsqueeze())
            });
            let reference = output_and_grads(&[x], 7, |v| rope.apply(v[0].clone(), offset));
            assert_output_and_grads_close(
                &format!("offset {offset}, {t} positions"),
                fast,
                &reference,
            );
        }
    }

    /// A query narrower than the head (Based's feature_dim) is rotated by the standard RoPE of
    /// its own width: the same angles as a table built at that width, at every position.
    #[test]
    fn a_narrower_query_gets_the_rope_of_its_own_width() {
        use burn::nn::RotaryEncodingConfig;
        let d = device();
        let wide = RotaryEncodingConfig::new(12, 16).init(&d);
        for width in [16, 8, 4, 2] {
            let own = RotaryEncodingConfig::new(12, width).init(&d);
            for (offset, len) in [(0, 12), (5, 4)] {
                let (cos, sin) = rope_pair_angles(&wide, offset, len, width);
                let (cos_own, sin_own) = rope_pair_angles(&own, offset, len, width);
                assert_close(cos, cos_own, 1e-6, &format!("cos, width {width}, offset {offset}"));
                assert_close(sin, sin_own, 1e-6, &format!("sin, width {width}, offset {offset}"));
            }
            // And the rotation it builds is the one Burn applies at that width.
            let x = crate::testing::randn([1, 2, 5, width], 3 + width as u64, &d);
            let (cos, sin) = rotation(&wide, 2, 5, width);
            assert_close(
                rotate(x.clone(), &cos.unsqueeze(), &sin.unsqueeze()),
                own.apply(x, 2),
                1e-5,
                &format!("rotation, width {width}"),
            );
        }
    }
}
