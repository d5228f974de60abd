//! Small numeric and text helpers shared by train and eval: order statistics, error messages on
//! one line, and the SplitMix64 generator.

/// The `q`-quantile (`q` clamped to 0..=1) of the finite values of `v`, by linear interpolation
/// between order statistics; NaN when no value is finite.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
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

/// `s` with every run of whitespace (newlines included) replaced by one space, so a multi-line
/// parser error fits in a one-line message.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// SplitMix64 (Steele, Lea and Flood): tiny, fast, and good enough for seeds and resampling
/// indices; not for cryptography.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform index in `0..n` via a widening multiply; the bias is at most `n / 2^64`,
    /// negligible for sample sizes.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// A bijective mix of 64 bits: the first output of [`SplitMix64`] seeded with `z`.
pub fn splitmix64(z: u64) -> u64 {
    SplitMix64::new(z).next_u64()
}

/// A path written in the file `base_file`, resolved the way a user expects: an absolute path as
/// it is; a relative one against the directory of `base_file` (so a preset works from any
/// working directory), made absolute, when something exists there; otherwise as written,
/// against the working directory (how presets and run directories from before this rule name
/// their files).
pub fn resolve_beside(base_file: &std::path::Path, path: &std::path::Path) -> std::path::PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let beside = base_file.parent().unwrap_or(std::path::Path::new("")).join(path);
    match beside.exists() {
        true => beside.canonicalize().unwrap_or(beside),
        false => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn one_line_collapses_whitespace() {
        assert_eq!(one_line("  expected `=`\n  at line 2\tcol 3 "), "expected `=` at line 2 col 3");
        assert_eq!(one_line(""), "");
    }

    #[test]
    fn splitmix_reference_and_range() {
        // Reference output of SplitMix64 seeded with 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[rng.below(3)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 900), "{counts:?}");
    }
}
