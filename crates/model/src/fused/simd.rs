//! Element-wise kernels written so LLVM vectorizes them: straight-line `f32` arithmetic, no
//! calls into libm, selects instead of branches. Each public kernel runs an AVX-512 or an
//! AVX2+FMA build of the same body when the CPU has one (checked per call, [`tier`]), so the
//! binary stays portable.
//!
//! - `exp`: `e^x = 2^n · e^r` with `n = round(x / ln 2)`, `|r| ≤ ln 2 / 2`, and `e^r` by its Taylor
//!   series to `r⁶/720` (truncation error below `1.2e-7` relative). Inputs are clamped to
//!   `[-87, 88]`, so the result is never zero or infinite; NaN stays NaN.
//! - GELU, exact form `x·Φ(x)` with `Φ(x) = ½(1 + erf(x/√2))`. `erf` is Abramowitz & Stegun
//!   7.1.26 (|error| ≤ 1.5e-7): `erf(z) = 1 − t·P(t)·e^{−z²}`, `t = 1/(1 + 0.3275911·z)`, `z ≥ 0`.
//!   The same `e^{−x²/2}` gives the density `φ(x)` for the backward pass `Φ(x) + x·φ(x)`.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two so `x - n·ln2` stays exact for the n that occur (Cody & Waite).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
// Adding and subtracting 1.5·2²³ rounds an f32 of magnitude < 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x` for `x` in `[-87, 88]` (clamped outside), relative error about 2e-7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ: `n + 127` lands in the low mantissa bits of `n + 2²³ + 127`, and the shift moves it into
    // the exponent field (the high bits fall off). Unlike `n as i32`, this vectorizes.
    p * f32::from_bits((n + 8_388_735.0).to_bits() << 23)
}

/// `Σ x`, in eight interleaved partial sums: a plain `fold` is a serial chain of dependent adds
/// that LLVM may not reorder, so it neither vectorizes nor pipelines.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `Σ a·b` in eight interleaved partial sums (see [`sum`]).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `max x` (`-inf` for an empty slice; a NaN element may or may not win), eight lanes at a time.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = if v > *l { v } else { *l };
        }
    }
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `(Φ(x), φ(x))`: the standard normal CDF and density.
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    let e = exp(-0.5 * x * x);
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    // ½·(1 − erf(|x|/√2)): the upper tail, computed without cancellation.
    let tail = 0.5 * poly * e;
    let cdf = if x >= 0.0 { 1.0 - tail } else { tail };
    (cdf, FRAC_1_SQRT_2PI * e)
}

#[inline(always)]
fn gelu_body(x: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = x * normal_cdf_pdf(x).0;
    }
}

#[inline(always)]
fn gelu_backward_body(x: &[f32], grad: &[f32], out: &mut [f32]) {
    for ((o, &x), &g) in out.iter_mut().zip(x).zip(grad) {
        let (cdf, pdf) = normal_cdf_pdf(x);
        *o = g * (cdf + x * pdf);
    }
}

#[inline(always)]
fn elu1_body(x: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        let e = exp(x.min(0.0));
        *o = if x > 0.0 { x + 1.0 } else { e };
    }
}

/// The derivative of `elu(x) + 1` from its output `y`: `1` where `x > 0` (`y > 1`), else `e^x = y`.
#[inline(always)]
fn elu1_backward_body(y: &[f32], grad: &[f32], out: &mut [f32]) {
    for ((o, &y), &g) in out.iter_mut().zip(y).zip(grad) {
        *o = g * y.min(1.0);
    }
}

#[inline(always)]
fn silu_body(x: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = x / (1.0 + exp(-x));
    }
}

/// The derivative of `x·σ(x)`: `σ(x)·(1 + x·(1 − σ(x)))`.
#[inline(always)]
fn silu_backward_body(x: &[f32], grad: &[f32], out: &mut [f32]) {
    for ((o, &x), &g) in out.iter_mut().zip(x).zip(grad) {
        let s = 1.0 / (1.0 + exp(-x));
        *o = g * s * (1.0 + x * (1.0 - s));
    }
}

/// `ln σ(x) = −ln(1 + e^{−x})`, as `min(x, 0) − ln(1 + e^{−|x|})` so neither tail overflows.
#[inline(always)]
fn log_sigmoid_body(x: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = x.min(0.0) - (1.0 + exp(-x.abs())).ln();
    }
}

/// The derivative of `ln σ(x)`: `σ(−x) = 1/(1 + e^x)`.
#[inline(always)]
fn log_sigmoid_backward_body(x: &[f32], grad: &[f32], out: &mut [f32]) {
    for ((o, &x), &g) in out.iter_mut().zip(x).zip(grad) {
        *o = g / (1.0 + exp(x));
    }
}

#[cfg(test)]
#[inline(always)]
fn exp_body(x: &mut [f32]) {
    for v in x {
        *v = exp(*v);
    }
}

/// The instruction sets a dispatched kernel can be compiled for, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// The baseline build (any CPU the binary runs on).
    Portable = 0,
    /// x86-64 with AVX2 and FMA (256-bit vectors).
    Avx2 = 1,
    /// x86-64 with AVX-512 F and VL besides (512-bit vectors, 32 registers).
    Avx512 = 2,
}

/// The widest tier kernels may use; lowered only by tests, to run every build of a kernel on a
/// CPU that has them all. Every build computes the same `f32` operations in the same order
/// (Rust never fuses or reorders float arithmetic on its own), so they agree bit for bit.
static CEILING: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(Tier::Avx512 as u8);

/// The tier the dispatched kernels run at on this CPU (checked per call: `std` caches the
/// detection, so it is an atomic load).
pub fn tier() -> Tier {
    let ceiling = CEILING.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if ceiling >= Tier::Avx512 as u8
            && has!("avx512f")
            && has!("avx512vl")
            && has!("avx2")
            && has!("fma")
        {
            return Tier::Avx512;
        }
        if ceiling >= Tier::Avx2 as u8 && has!("avx2") && has!("fma") {
            return Tier::Avx2;
        }
    }
    let _ = ceiling;
    Tier::Portable
}

/// Runs `f` with the dispatched kernels held to `tier` and below, restoring the ceiling after.
#[cfg(test)]
pub(crate) fn at_most<T>(tier: Tier, f: impl FnOnce() -> T) -> T {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            CEILING.store(Tier::Avx512 as u8, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _restore = Restore;
    CEILING.store(tier as u8, std::sync::atomic::Ordering::Relaxed);
    f()
}

/// Generates `$name` that runs `$body` compiled for the widest [`Tier`] the CPU has (AVX-512,
/// else AVX2+FMA), and the baseline build of the same body otherwise: one binary, every host.
macro_rules! dispatched {
    ($(#[$doc:meta])* $name:ident => $body:ident ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        // The kernel's own argument list, passed through unchanged.
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)] // as above
                fn widest($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)] // as above
                fn wide($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match $crate::fused::simd::tier() {
                    // SAFETY: `tier()` names a tier only when this CPU has its features.
                    $crate::fused::simd::Tier::Avx512 => return unsafe { widest($($arg),*) },
                    // SAFETY: as above.
                    $crate::fused::simd::Tier::Avx2 => return unsafe { wide($($arg),*) },
                    $crate::fused::simd::Tier::Portable => {}
                }
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use dispatched;

dispatched!(
    /// `out[i] = gelu(x[i])` (exact-erf GELU). `out` must be as long as `x`.
    gelu => gelu_body(x: &[f32], out: &mut [f32])
);
dispatched!(
    /// `out[i] = grad[i] · gelu'(x[i])`.
    gelu_backward => gelu_backward_body(x: &[f32], grad: &[f32], out: &mut [f32])
);
dispatched!(
    /// `out[i] = elu(x[i]) + 1` (`x + 1` for `x > 0`, `e^x` otherwise).
    elu1 => elu1_body(x: &[f32], out: &mut [f32])
);
dispatched!(
    /// `out[i] = grad[i] · d(elu(x) + 1)/dx`, from the forward output `y`.
    elu1_backward => elu1_backward_body(y: &[f32], grad: &[f32], out: &mut [f32])
);
dispatched!(
    /// `out[i] = silu(x[i]) = x[i]·σ(x[i])`.
    silu => silu_body(x: &[f32], out: &mut [f32])
);
dispatched!(
    /// `out[i] = grad[i] · silu'(x[i])`.
    silu_backward => silu_backward_body(x: &[f32], grad: &[f32], out: &mut [f32])
);
dispatched!(
    /// `out[i] = ln σ(x[i])`.
    log_sigmoid => log_sigmoid_body(x: &[f32], out: &mut [f32])
);
dispatched!(
    /// `out[i] = grad[i] · σ(−x[i])`.
    log_sigmoid_backward => log_sigmoid_backward_body(x: &[f32], grad: &[f32], out: &mut [f32])
);
#[cfg(test)]
dispatched!(
    /// `x[i] ← e^{x[i]}` in place.
    exp_in_place => exp_body(x: &mut [f32])
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow, obviously right references in f64.
    fn erf64(x: f64) -> f64 {
        // Maclaurin series for |x| < 3, continued fraction for the tail: both converge to f64
        // precision well within the iteration counts used here.
        if x.abs() < 3.0 {
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let z = x.abs();
            let mut f = 0.0;
            for k in (1..200).rev() {
                f = (k as f64 / 2.0) / (z + f);
            }
            let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f);
            x.signum() * (1.0 - erfc)
        }
    }

    fn grid() -> Vec<f32> {
        (-4000..=4000).map(|i| i as f32 * 0.0025).chain([-30.0, -12.0, 12.0, 30.0]).collect()
    }

    #[test]
    fn exp_matches_f64_within_3e7_relative() {
        let xs: Vec<f32> = (-8700..=8800).map(|i| i as f32 * 0.01).collect();
        let mut ys = xs.clone();
        exp_in_place(&mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            let want = (*x as f64).exp();
            let err = ((*y as f64 - want) / want).abs();
            assert!(err < 3e-7, "exp({x}) = {y}, want {want} (relative error {err:.1e})");
        }
        let mut nan = [f32::NAN];
        exp_in_place(&mut nan);
        assert!(nan[0].is_nan());
    }

    #[test]
    fn gelu_and_its_derivative_match_f64_references() {
        let xs = grid();
        let (mut y, mut dy) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
        gelu(&xs, &mut y);
        gelu_backward(&xs, &vec![1.0; xs.len()], &mut dy);
        for (i, &x) in xs.iter().enumerate() {
            let x64 = x as f64;
            let cdf = 0.5 * (1.0 + erf64(x64 / 2f64.sqrt()));
            let pdf = (-0.5 * x64 * x64).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let (want, dwant) = (x64 * cdf, cdf + x64 * pdf);
            let tol = |w: f64| 3e-7 * w.abs().max(1.0);
            assert!((y[i] as f64 - want).abs() <= tol(want), "gelu({x}) = {}, want {want}", y[i]);
            assert!(
                (dy[i] as f64 - dwant).abs() <= tol(dwant),
                "gelu'({x}) = {}, want {dwant}",
                dy[i]
            );
        }
    }

    #[test]
    fn lane_reductions_match_serial_ones() {
        for n in [0, 1, 7, 8, 9, 64, 133] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.25).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.5).collect();
            let serial_sum: f64 = a.iter().map(|&x| x as f64).sum();
            let serial_dot: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((sum(&a) as f64 - serial_sum).abs() < 1e-4, "sum of {n}");
            assert!((dot(&a, &b) as f64 - serial_dot).abs() < 1e-4, "dot of {n}");
            assert_eq!(max(&a), a.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)), "max of {n}");
        }
    }

    /// Every build of the kernels this CPU can run (portable, AVX2, AVX-512) gives the same
    /// bits: the dispatch changes the vector width, never the arithmetic.
    #[test]
    fn every_tier_computes_the_same_bits() {
        let xs: Vec<f32> = grid().into_iter().chain([f32::NAN, -88.5, 90.0]).collect();
        let g: Vec<f32> = xs.iter().map(|x| 0.5 - x * 0.1).collect();
        let run = || {
            let mut outs = Vec::new();
            for kernel in [gelu, elu1, silu, log_sigmoid] {
                let mut y = vec![0.0; xs.len()];
                kernel(&xs, &mut y);
                outs.push(y);
            }
            for kernel in [gelu_backward, elu1_backward, silu_backward, log_sigmoid_backward] {
                let mut y = vec![0.0; xs.len()];
                kernel(&xs, &g, &mut y);
                outs.push(y);
            }
            let mut e = xs.clone();
            exp_in_place(&mut e);
            outs.push(e);
            outs.into_iter().flatten().map(f32::to_bits).collect::<Vec<u32>>()
        };
        let best = tier();
        let reference = at_most(Tier::Portable, run);
        for t in [Tier::Avx2, Tier::Avx512].into_iter().filter(|&t| t <= best) {
            assert_eq!(at_most(t, run), reference, "{t:?} differs from the portable build");
        }
    }

    #[test]
    fn gelu_propagates_nan_and_infinity() {
        let xs = [f32::NAN, f32::INFINITY];
        let mut y = [0.0; 2];
        gelu(&xs, &mut y);
        assert!(y[0].is_nan(), "NaN must stay NaN so the trainer's guard sees it");
        assert_eq!(y[1], f32::INFINITY);
    }
}
