//! Statistics for A/B comparisons of attention variants over seeds.
//!
//! A comparison runs each variant with a handful of seeds and asks whether the
//! treatment's final metric differs from the baseline's by more than seed
//! noise. Everything here works on plain `f64` slices; non-finite values (NaN
//! from a diverged run, ±inf) are skipped and, in [`summarize`], counted.
//!
//! # Formulas
//!
//! * **Summary** ([`summarize`]): for `n` finite values `x_i`,
//!   mean `m = Σx_i / n`, sample standard deviation
//!   `s = sqrt(Σ(x_i − m)² / (n − 1))`, and the 95 % Student-t interval for the
//!   mean `m ± t_{0.975, n−1} · s / √n`.
//! * **Student-t quantile** ([`t_quantile_975`]): from `statrs`' [`StudentsT`],
//!   its inverse CDF polished by Newton steps on the tail; `ν` may be
//!   fractional.
//! * **Welch's test** ([`welch`]): with sample means `m_b`, `m_t`, variances
//!   `v_b`, `v_t` and sizes `n_b`, `n_t`, the standard error is
//!   `se = sqrt(v_b/n_b + v_t/n_t)`, the statistic `t = (m_t − m_b) / se`, and
//!   the Welch–Satterthwaite degrees of freedom
//!   `ν = se⁴ / ((v_b/n_b)²/(n_b−1) + (v_t/n_t)²/(n_t−1))`.
//!   The interval is `(m_t − m_b) ± t_{0.975, ν} · se` and the two-sided
//!   p-value `P(|T| > |t|) = 2 · (1 − F_ν(|t|))`.
//! * **Order statistics** ([`quantile`], [`median`]): the finite values sorted, the
//!   `q`-quantile interpolated linearly between the two order statistics around `q·(n − 1)`.
//! * **Bootstrap** ([`bootstrap_difference`]): each side is resampled with
//!   replacement, the difference of resampled means is recorded, and the
//!   2.5th and 97.5th percentiles (linear interpolation between order
//!   statistics) form the interval. A SplitMix64 generator makes the result a
//!   pure function of the inputs and the seed.
//!
//! `statrs` has the t distribution but neither Welch's test nor the bootstrap;
//! those two are written out here.

use attnlab_train::splitmix::SplitMix64;
use statrs::distribution::{Continuous, ContinuousCDF, StudentsT};

/// Descriptive statistics of one variant's metric over seeds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Number of finite values used.
    pub n: usize,
    /// Arithmetic mean (NaN when `n == 0`).
    pub mean: f64,
    /// Sample standard deviation with the `n − 1` denominator (0 when `n == 1`,
    /// NaN when `n == 0`).
    pub std: f64,
    /// Lower end of the 95 % t-interval for the mean (equals `mean` when `n == 1`).
    pub ci_low: f64,
    /// Upper end of the 95 % t-interval for the mean (equals `mean` when `n == 1`).
    pub ci_high: f64,
    /// Smallest finite value (NaN when `n == 0`).
    pub min: f64,
    /// Largest finite value (NaN when `n == 0`).
    pub max: f64,
    /// Number of non-finite inputs (NaN, ±inf) that were skipped.
    pub dropped: usize,
}

/// Summarizes `values`, skipping non-finite entries and counting them in
/// [`Summary::dropped`].
///
/// With no finite values every statistic is NaN; with one, the spread is zero
/// and the interval collapses onto the mean.
pub fn summarize(values: &[f64]) -> Summary {
    let finite = finite_values(values);
    let n = finite.len();
    let dropped = values.len() - n;
    if n == 0 {
        return Summary {
            n,
            mean: f64::NAN,
            std: f64::NAN,
            ci_low: f64::NAN,
            ci_high: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            dropped,
        };
    }
    let mean = mean(&finite);
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (std, half_width) = if n == 1 {
        (0.0, 0.0)
    } else {
        let std = sample_variance(&finite, mean).sqrt();
        (std, t_quantile_975((n - 1) as f64) * std / (n as f64).sqrt())
    };
    Summary {
        n,
        mean,
        std,
        ci_low: mean - half_width,
        ci_high: mean + half_width,
        min,
        max,
        dropped,
    }
}

/// The 0.975 quantile of Student's t distribution with `df` degrees of
/// freedom (the multiplier of a two-sided 95 % interval).
///
/// `df` may be fractional (Welch). Returns NaN for `df <= 0` or NaN.
///
/// Starts from `statrs`' inverse CDF, which drifts from about 10⁴ degrees of
/// freedom on (1.83 instead of 1.96 at 10⁷), and takes Newton steps on the upper
/// tail. There the tail is convex and decreasing, so the steps converge from
/// below and overshoot at most once from above.
pub fn t_quantile_975(df: f64) -> f64 {
    const TAIL: f64 = 0.025;
    let Some(dist) = students_t(df) else {
        return f64::NAN;
    };
    let mut t = dist.inverse_cdf(1.0 - TAIL);
    for _ in 0..8 {
        let step = (dist.sf(t) - TAIL) / dist.pdf(t);
        t += step;
        // The tail itself is accurate to ~1e-14, so ask no more of the steps.
        if step.abs() <= 1e-12 * t {
            break;
        }
    }
    t
}

/// Result of comparing a treatment against a baseline.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Difference {
    /// Difference of means, treatment − baseline.
    pub mean: f64,
    /// Lower end of the 95 % Welch interval for the difference.
    pub ci_low: f64,
    /// Upper end of the 95 % Welch interval for the difference.
    pub ci_high: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value of Welch's t-test for equal means.
    pub p_value: f64,
}

/// Welch's unequal-variance t-test of `treatment` against `baseline`.
///
/// Non-finite values are skipped. Returns `None` if either side has fewer
/// than two finite values. If both sides have zero variance the interval is
/// the point difference, `df` is `n_b + n_t − 2`, and the p-value is 0 when
/// the means differ and 1 when they are equal.
pub fn welch(baseline: &[f64], treatment: &[f64]) -> Option<Difference> {
    let b = finite_values(baseline);
    let t = finite_values(treatment);
    if b.len() < 2 || t.len() < 2 {
        return None;
    }
    let (nb, nt) = (b.len() as f64, t.len() as f64);
    let (mb, mt) = (mean(&b), mean(&t));
    let diff = mt - mb;
    // Per-side squared standard errors.
    let eb = sample_variance(&b, mb) / nb;
    let et = sample_variance(&t, mt) / nt;
    let se2 = eb + et;
    if se2 == 0.0 {
        // No noise at all: the observed difference is exact.
        return Some(Difference {
            mean: diff,
            ci_low: diff,
            ci_high: diff,
            df: nb + nt - 2.0,
            p_value: if diff == 0.0 { 1.0 } else { 0.0 },
        });
    }
    let df = se2 * se2 / (eb * eb / (nb - 1.0) + et * et / (nt - 1.0));
    let se = se2.sqrt();
    let half_width = t_quantile_975(df) * se;
    Some(Difference {
        mean: diff,
        ci_low: diff - half_width,
        ci_high: diff + half_width,
        df,
        p_value: t_two_sided_p(diff / se, df),
    })
}

/// Percentile-bootstrap 95 % interval `(low, high)` for
/// `mean(treatment) − mean(baseline)`.
///
/// Each of the `resamples` rounds draws both sides with replacement from
/// their finite values. Deterministic for a fixed `seed`. Returns
/// `(NaN, NaN)` if either side has no finite value or `resamples == 0`.
pub fn bootstrap_difference(
    baseline: &[f64],
    treatment: &[f64],
    resamples: usize,
    seed: u64,
) -> (f64, f64) {
    let b = finite_values(baseline);
    let t = finite_values(treatment);
    if b.is_empty() || t.is_empty() || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix64::new(seed);
    let mut resampled_mean = |xs: &[f64]| {
        let sum: f64 = (0..xs.len()).map(|_| xs[rng.below(xs.len())]).sum();
        sum / xs.len() as f64
    };
    let diffs: Vec<f64> = (0..resamples)
        .map(|_| {
            let mb = resampled_mean(&b);
            resampled_mean(&t) - mb
        })
        .collect();
    (quantile(&diffs, 0.025), quantile(&diffs, 0.975))
}

/// Outcome of an A/B comparison at 95 % confidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The interval excludes zero in the favourable direction.
    Better,
    /// The interval excludes zero in the unfavourable direction.
    Worse,
    /// The interval contains zero (or is undefined).
    Indistinguishable,
}

impl Verdict {
    /// Lower-case name for reports: `"better"`, `"worse"` or `"indistinguishable"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Indistinguishable => "indistinguishable",
        }
    }

    /// The verdict as a relation to the baseline, for a sentence naming it next:
    /// `"better than"`, `"worse than"` or `"indistinguishable from"`.
    pub fn comparative(&self) -> &'static str {
        match self {
            Verdict::Better => "better than",
            Verdict::Worse => "worse than",
            Verdict::Indistinguishable => "indistinguishable from",
        }
    }
}

/// Classifies a [`Difference`] (treatment − baseline) by whether its 95 %
/// interval excludes zero, and on which side.
///
/// `higher_is_better` is true for metrics like accuracy and false for losses
/// and perplexity.
pub fn verdict(diff: &Difference, higher_is_better: bool) -> Verdict {
    // Comparisons with NaN are false, so an undefined interval falls through.
    let (up, down) = (diff.ci_low > 0.0, diff.ci_high < 0.0);
    match (up, down, higher_is_better) {
        (true, _, true) | (_, true, false) => Verdict::Better,
        (true, _, false) | (_, true, true) => Verdict::Worse,
        _ => Verdict::Indistinguishable,
    }
}

/// The earliest step at which `curve` reaches `target`: metric `>= target`
/// when `higher_is_better`, `<= target` otherwise.
///
/// `curve` holds `(step, metric)` pairs and need not be sorted; non-finite
/// metrics never count. Returns `None` if the target is never reached.
pub fn steps_to_target(
    curve: &[(usize, f64)],
    target: f64,
    higher_is_better: bool,
) -> Option<usize> {
    curve
        .iter()
        .filter(|&&(_, v)| {
            v.is_finite() && if higher_is_better { v >= target } else { v <= target }
        })
        .map(|&(step, _)| step)
        .min()
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The `q`-quantile (`q` clamped to 0..=1) of the finite values of `v`, by linear interpolation
/// between order statistics; NaN when no value is finite.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = finite_values(v);
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The median of the finite values of `v` (the mean of the two middle ones for an even count);
/// NaN when no value is finite.
pub fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

fn finite_values(values: &[f64]) -> Vec<f64> {
    values.iter().copied().filter(|v| v.is_finite()).collect()
}

/// Arithmetic mean; NaN for an empty slice (so a missing value is not read as a zero).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Two-pass sample variance (`n − 1` denominator); more accurate than the
/// sum-of-squares shortcut when the mean is large relative to the spread.
fn sample_variance(xs: &[f64], mean: f64) -> f64 {
    xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
}

/// `statrs`' incomplete beta loses accuracy beyond ~10⁸ degrees of freedom
/// (off by 5e-5 at 10¹²), while from 10⁷ on the t distribution is the normal to
/// far better than any precision we report.
const MAX_DF: f64 = 1e7;

/// The standard t distribution with `df` degrees of freedom (capped at
/// [`MAX_DF`]); `None` for `df <= 0` or NaN.
fn students_t(df: f64) -> Option<StudentsT> {
    // Not `df.min(MAX_DF)`: that turns a NaN into MAX_DF.
    let df = if df > MAX_DF { MAX_DF } else { df };
    StudentsT::new(0.0, 1.0, df).ok()
}

/// Two-sided tail probability `P(|T| > |t|)` for Student's t with `df`
/// degrees of freedom.
fn t_two_sided_p(t: f64, df: f64) -> f64 {
    match students_t(df) {
        Some(dist) if !t.is_nan() => 2.0 * dist.sf(t.abs()),
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tol: f64) -> bool {
        (actual - expected).abs() <= tol
    }

    #[track_caller]
    fn assert_close(actual: f64, expected: f64, tol: f64) {
        assert!(close(actual, expected, tol), "{actual} vs {expected} (tol {tol})");
    }

    #[test]
    fn quantile_interpolates_and_skips_non_finite() {
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(&[0.0, 10.0], 0.25), 2.5);
        assert_eq!(quantile(&[0.0, 10.0, f64::NAN], 2.0), 10.0);
        assert_eq!(quantile(&[4.0, f64::INFINITY, 1.0], 0.0), 1.0);
        assert!(quantile(&[], 0.5).is_nan());
        assert!(quantile(&[f64::NAN], 0.5).is_nan());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    // Student t quantiles from standard tables.
    #[test]
    fn t_quantiles_match_tables() {
        let table = [
            (1.0, 12.706),
            (2.0, 4.303),
            (3.0, 3.182),
            (4.0, 2.776),
            (5.0, 2.571),
            (10.0, 2.228),
            (20.0, 2.086),
            (30.0, 2.042),
            (60.0, 2.000),
            (120.0, 1.980),
            (1000.0, 1.962),
        ];
        for (df, expected) in table {
            assert_close(t_quantile_975(df), expected, 1e-3);
        }
    }

    #[test]
    fn t_quantile_high_precision_and_limits() {
        // Closed forms: df=1 is Cauchy, tan(0.475π); df=2 solves t/sqrt(2+t²) = 0.95,
        // i.e. t = 0.95·sqrt(2/(1 − 0.95²)) = 4.302652729...
        assert_close(t_quantile_975(1.0), (0.475 * std::f64::consts::PI).tan(), 1e-9);
        assert_close(t_quantile_975(2.0), 0.95 * (2.0f64 / (1.0 - 0.95 * 0.95)).sqrt(), 1e-9);
        // Huge df tends to the normal quantile 1.959963985.
        assert_close(t_quantile_975(1e9), 1.959_963_985, 1e-6);
        assert_close(t_quantile_975(1e6), 1.959_966_3, 1e-6);
        // Fractional df lies between its integer neighbours.
        let q = t_quantile_975(24.5);
        assert!(t_quantile_975(25.0) < q && q < t_quantile_975(24.0));
        assert_close(q, 2.061_672, 1e-5);
        assert!(t_quantile_975(0.0).is_nan());
        assert!(t_quantile_975(f64::NAN).is_nan());
        assert!(t_quantile_975(0.5).is_finite() && t_quantile_975(0.5) > t_quantile_975(1.0));
    }

    // Where statrs' own inverse CDF drifts: the Newton steps must land on the
    // large-df (Cornish–Fisher) expansion
    // t ≈ z + (z³ + z) / (4ν) + (5z⁵ + 16z³ + 3z) / (96ν²)
    // and keep the quantile falling monotonically towards the normal one.
    #[test]
    fn t_quantile_large_df_follows_expansion() {
        let z: f64 = 1.959_963_984_540;
        let (g1, g2) =
            ((z.powi(3) + z) / 4.0, (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / 96.0);
        for df in [1e4, 1e5, 1e6] {
            assert_close(t_quantile_975(df), z + g1 / df + g2 / (df * df), 1e-9);
        }
        let dfs = [1e3, 1e4, 1e5, 1e6, 1e7];
        for pair in dfs.windows(2) {
            assert!(t_quantile_975(pair[1]) < t_quantile_975(pair[0]), "{pair:?}");
        }
        assert!(t_quantile_975(1e7) > z);
    }

    #[test]
    fn two_sided_p_known_values() {
        // df=1: P(|T|>1) = 0.5 exactly (Cauchy); df=2: P(|T|>t) = 1 − t/sqrt(2+t²).
        assert_close(t_two_sided_p(1.0, 1.0), 0.5, 1e-12);
        assert_close(t_two_sided_p(2.0, 2.0), 1.0 - 2.0 / 6f64.sqrt(), 1e-12);
        assert_close(t_two_sided_p(0.0, 7.0), 1.0, 1e-12);
        assert_close(t_two_sided_p(1.96, 1e12), 0.05, 1e-4);
        assert_eq!(t_two_sided_p(f64::INFINITY, 3.0), 0.0);
    }

    // The special functions the t distribution rests on, to the precision the
    // quantile tests above need.
    #[test]
    fn ln_gamma_known_values() {
        use statrs::function::beta::ln_beta;
        use statrs::function::gamma::ln_gamma;
        assert_close(ln_gamma(1.0), 0.0, 1e-13);
        assert_close(ln_gamma(0.5), 0.5 * std::f64::consts::PI.ln(), 1e-13);
        assert_close(ln_gamma(5.0), 24f64.ln(), 1e-13);
        assert_close(ln_gamma(30.0), (1..30).map(|k| (k as f64).ln()).sum(), 1e-11);
        // ln B agrees with its definition through ln Γ.
        assert_close(ln_beta(12.5, 0.5), ln_gamma(12.5) + ln_gamma(0.5) - ln_gamma(13.0), 1e-12);
    }

    #[test]
    fn summarize_one_to_five() {
        let s = summarize(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(s.n, 5);
        assert_eq!(s.dropped, 0);
        assert_close(s.mean, 3.0, 1e-12);
        assert_close(s.std, 2.5f64.sqrt(), 1e-12);
        assert_close(s.std, 1.5811, 1e-4);
        let half = 2.776_445_105 * 2.5f64.sqrt() / 5f64.sqrt();
        assert_close(s.ci_low, 3.0 - half, 1e-6);
        assert_close(s.ci_high, 3.0 + half, 1e-6);
        assert_close(s.ci_low, 1.036_757, 1e-5);
        assert_eq!((s.min, s.max), (1.0, 5.0));
    }

    #[test]
    fn summarize_drops_non_finite_and_handles_small_n() {
        let s = summarize(&[f64::NAN, 2.0, f64::INFINITY, 4.0]);
        assert_eq!((s.n, s.dropped), (2, 2));
        assert_close(s.mean, 3.0, 1e-12);
        assert_eq!((s.min, s.max), (2.0, 4.0));

        let one = summarize(&[7.5, f64::NAN]);
        assert_eq!((one.n, one.dropped), (1, 1));
        assert_eq!((one.mean, one.std, one.ci_low, one.ci_high), (7.5, 0.0, 7.5, 7.5));

        let none = summarize(&[f64::NAN]);
        assert_eq!((none.n, none.dropped), (0, 1));
        assert!(none.mean.is_nan() && none.ci_low.is_nan());
        assert_eq!(summarize(&[]).n, 0);
    }

    // Classic two-sample example; reference values computed independently
    // (t and df in closed form, p by numerical integration of the t density):
    // t = -2.45536, df = 24.98853, p = 0.021378, t_{0.975,df} = 2.059586.
    #[test]
    fn welch_classic_example() {
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        // Baseline b, treatment a: the difference a − b gives the negative t.
        let d = welch(&b, &a).unwrap();
        let se = (7.867_428_571_428_573 / 15.0 + 3.812_666_666_666_668 / 15.0f64).sqrt();
        assert_close(d.mean / se, -2.455_356, 1e-5);
        assert_close(d.mean, 20.82 - 22.986_666_666_666_67, 1e-10);
        assert_close(d.df, 24.988_53, 1e-4);
        assert_close(d.p_value, 0.021_378, 1e-5);
        assert_close(d.ci_low, -3.984_096, 1e-5);
        assert_close(d.ci_high, -0.349_237, 1e-5);
        // Swapping sides mirrors the interval and keeps df and p.
        let r = welch(&a, &b).unwrap();
        assert_close(r.mean, -d.mean, 1e-12);
        assert_close(r.ci_low, -d.ci_high, 1e-12);
        assert_close(r.df, d.df, 1e-12);
        assert_close(r.p_value, d.p_value, 1e-12);
    }

    #[test]
    fn welch_edge_cases() {
        assert!(welch(&[1.0], &[1.0, 2.0]).is_none());
        assert!(welch(&[1.0, f64::NAN], &[1.0, 2.0]).is_none());

        let same = welch(&[2.0, 2.0], &[2.0, 2.0, 2.0]).unwrap();
        assert_eq!((same.mean, same.ci_low, same.ci_high, same.p_value), (0.0, 0.0, 0.0, 1.0));
        assert_eq!(same.df, 3.0);

        let shifted = welch(&[2.0, 2.0], &[3.0, 3.0]).unwrap();
        assert_eq!(
            (shifted.mean, shifted.ci_low, shifted.ci_high, shifted.p_value),
            (1.0, 1.0, 1.0, 0.0)
        );

        // One side constant: df reduces to n − 1 of the noisy side.
        let half = welch(&[5.0, 5.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_close(half.df, 4.0, 1e-12);
        assert!(half.p_value > 0.0 && half.p_value < 1.0);
    }

    /// Deterministic pseudo-normal noise (sum of uniforms) for synthetic runs.
    fn noisy(center: f64, spread: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                let u: f64 = (0..12).map(|_| rng.next_u64() as f64 / u64::MAX as f64).sum();
                center + spread * (u - 6.0)
            })
            .collect()
    }

    #[test]
    fn verdicts_on_synthetic_data() {
        let base = noisy(10.0, 0.1, 8, 1);
        let high = noisy(11.0, 0.1, 8, 2);
        let up = welch(&base, &high).unwrap();
        assert!(up.p_value < 1e-6);
        assert_eq!(verdict(&up, true), Verdict::Better);
        assert_eq!(verdict(&up, false), Verdict::Worse);

        let down = welch(&high, &base).unwrap();
        assert_eq!(verdict(&down, true), Verdict::Worse);
        assert_eq!(verdict(&down, false), Verdict::Better);

        // Same distribution, different seeds: no real difference.
        let a = noisy(10.0, 1.0, 10, 3);
        let b = noisy(10.0, 1.0, 10, 4);
        let flat = welch(&a, &b).unwrap();
        assert!(flat.ci_low < 0.0 && flat.ci_high > 0.0, "{flat:?}");
        assert_eq!(verdict(&flat, true), Verdict::Indistinguishable);
        assert_eq!(verdict(&flat, false), Verdict::Indistinguishable);

        let undefined = Difference {
            mean: f64::NAN,
            ci_low: f64::NAN,
            ci_high: f64::NAN,
            df: f64::NAN,
            p_value: f64::NAN,
        };
        assert_eq!(verdict(&undefined, true), Verdict::Indistinguishable);

        assert_eq!(Verdict::Better.as_str(), "better");
        assert_eq!(Verdict::Worse.as_str(), "worse");
        assert_eq!(Verdict::Indistinguishable.as_str(), "indistinguishable");
        assert_eq!(Verdict::Better.comparative(), "better than");
        assert_eq!(Verdict::Worse.comparative(), "worse than");
        assert_eq!(Verdict::Indistinguishable.comparative(), "indistinguishable from");
    }

    #[test]
    fn bootstrap_contains_truth_and_is_deterministic() {
        let base = noisy(5.0, 0.2, 12, 10);
        let treat = noisy(7.0, 0.2, 12, 11);
        let (lo, hi) = bootstrap_difference(&base, &treat, 2000, 42);
        assert!(lo < 2.0 && 2.0 < hi, "({lo}, {hi})");
        assert!(lo > 1.5 && hi < 2.5, "interval too wide: ({lo}, {hi})");
        assert_eq!(bootstrap_difference(&base, &treat, 2000, 42), (lo, hi));
        assert_ne!(bootstrap_difference(&base, &treat, 2000, 43), (lo, hi));
        // Constant data collapses to the point difference.
        assert_eq!(bootstrap_difference(&[1.0, 1.0], &[3.0], 50, 0), (2.0, 2.0));
        let (a, b) = bootstrap_difference(&[], &[1.0], 10, 0);
        assert!(a.is_nan() && b.is_nan());
        assert!(bootstrap_difference(&[1.0], &[1.0], 0, 0).0.is_nan());
    }

    #[test]
    fn steps_to_target_cases() {
        let acc = [(0, 0.1), (100, 0.5), (200, f64::NAN), (300, 0.8), (400, 0.9)];
        assert_eq!(steps_to_target(&acc, 0.8, true), Some(300));
        assert_eq!(steps_to_target(&acc, 0.5, true), Some(100));
        assert_eq!(steps_to_target(&acc, 0.95, true), None);

        let loss = [(10, 4.0), (20, 3.0), (30, 2.5), (40, 2.7)];
        assert_eq!(steps_to_target(&loss, 3.0, false), Some(20));
        assert_eq!(steps_to_target(&loss, 1.0, false), None);
        assert_eq!(steps_to_target(&[], 1.0, false), None);

        // Unsorted input still yields the earliest step.
        let shuffled = [(30, 2.5), (10, 4.0), (20, 3.0)];
        assert_eq!(steps_to_target(&shuffled, 3.0, false), Some(20));
    }
}
