//! Tick values and their labels, the numbers behind every axis: the classic "nice numbers"
//! scheme for linear axes (steps of 1, 2 or 5 times a power of ten, about five ticks, the range
//! widened to the enclosing ticks), decades or 1–2–5 values for log axes, and short labels.
//! Pure arithmetic: nothing here writes SVG.

/// "Nice" tick values covering `[lo, hi]` with roughly `target` ticks.
///
/// The step is 1, 2 or 5 times a power of ten and the first and last ticks
/// enclose the range, e.g. `nice_ticks(0.0, 1.0, 5)` gives
/// `[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]`. Degenerate ranges are widened around
/// their value and non-finite bounds fall back to `[0, 1]`; at least two ticks
/// are always returned.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (lo, hi) = widen(lo, hi);
    let target = target.max(2);
    let range = nice_number(hi - lo, false);
    let (mantissa, exp) = nice_step(range / (target - 1) as f64);
    let step = tick_value(1, mantissa, exp);
    // The small slack keeps floating-point noise (0.30000000000000004 / 0.1)
    // from adding an empty tick at either end.
    let first = (lo / step + 1e-9).floor() as i64;
    let last = ((hi / step - 1e-9).ceil() as i64).max(first + 1);
    (first..=last).map(|k| tick_value(k, mantissa, exp)).collect()
}

/// Domain and ticks for a log axis covering `[min, max]`, both positive.
pub(super) fn log_ticks(min: f64, max: f64) -> (f64, f64, Vec<f64>) {
    let mut lo_e = min.log10().floor() as i32;
    let mut hi_e = max.log10().ceil() as i32;
    if hi_e <= lo_e {
        // An exact power of ten: look one decade either side of it.
        lo_e -= 1;
        hi_e = lo_e + 2;
    }
    let decades = hi_e - lo_e;
    if decades >= 3 {
        // Label at most ~9 decades, and stretch the top so that the last
        // label sits on the frame rather than leaving an unlabelled stretch.
        let stride = (decades + 7) / 8;
        let hi_e = lo_e + (decades + stride - 1) / stride * stride;
        let ticks = (lo_e..=hi_e).step_by(stride as usize).map(pow10).collect();
        return (pow10(lo_e), pow10(hi_e), ticks);
    }
    // One or two decades: 1–2–5 values read better than two bare powers.
    let mut candidates: Vec<f64> =
        (lo_e..hi_e).flat_map(|e| [1, 2, 5].map(|m| tick_value(m, 1, e))).collect();
    candidates.push(pow10(hi_e));
    let lo = candidates.iter().copied().filter(|&c| c <= min).fold(pow10(lo_e), f64::max);
    let hi = candidates.iter().copied().filter(|&c| c >= max).fold(pow10(hi_e), f64::min);
    let ticks: Vec<f64> = candidates.into_iter().filter(|&c| c >= lo && c <= hi).collect();
    if ticks.len() >= 3 {
        return (lo, hi, ticks);
    }
    // Data within a narrow band (say 2.1–3.5): linear nice values instead.
    let ticks: Vec<f64> = nice_ticks(min, max, 5).into_iter().filter(|&t| t > 0.0).collect();
    let lo = ticks[0].min(min);
    let hi = ticks[ticks.len() - 1].max(max);
    (lo, hi, ticks)
}

/// Makes `[lo, hi]` finite, ordered and of non-zero width.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    let scale = lo.abs().max(hi.abs());
    if hi - lo > 1e-9 * scale && hi - lo < f64::MAX / 4.0 {
        return (lo, hi);
    }
    // A single value: pad by 10 % of its magnitude (or ±1 around zero).
    let mid = 0.5 * (lo + hi);
    let pad = if mid == 0.0 { 1.0 } else { 0.1 * mid.abs() };
    (mid - pad, mid + pad)
}

/// Heckbert's nice number: 1, 2, 5 or 10 times a power of ten near `x`,
/// rounded to nearest (`round`) or up (for ranges).
fn nice_number(x: f64, round: bool) -> f64 {
    let exp = x.log10().floor() as i32;
    let f = x / pow10(exp);
    let nf = match (round, f) {
        (true, f) if f < 1.5 => 1.0,
        (true, f) if f < 3.0 => 2.0,
        (true, f) if f < 7.0 => 5.0,
        (false, f) if f <= 1.0 => 1.0,
        (false, f) if f <= 2.0 => 2.0,
        (false, f) if f <= 5.0 => 5.0,
        _ => 10.0,
    };
    nf * pow10(exp)
}

/// Rounded nice step as `(mantissa, exponent)` with mantissa 1, 2 or 5, so
/// ticks can be built from integers without accumulating error.
fn nice_step(x: f64) -> (i64, i32) {
    let exp = x.log10().floor() as i32;
    match x / pow10(exp) {
        f if f < 1.5 => (1, exp),
        f if f < 3.0 => (2, exp),
        f if f < 7.0 => (5, exp),
        _ => (1, exp + 1),
    }
}

/// `k · mantissa · 10^exp`, dividing for negative exponents so that values
/// like 0.6 come out correctly rounded (3·2/10, not 3·0.2).
fn tick_value(k: i64, mantissa: i64, exp: i32) -> f64 {
    let n = (k * mantissa) as f64;
    if exp >= 0 { n * pow10(exp) } else { n / pow10(-exp) }
}

fn pow10(exp: i32) -> f64 {
    if exp >= 0 { 10f64.powi(exp) } else { 1.0 / 10f64.powi(-exp) }
}

/// Labels for evenly spaced ticks, all with the step's number of decimals.
pub(super) fn linear_labels(ticks: &[f64]) -> Vec<String> {
    let step = (ticks[1] - ticks[0]).abs();
    let biggest = ticks.iter().fold(0.0_f64, |m, t| m.max(t.abs()));
    let step_exp = step.log10().floor() as i32;
    if biggest >= 1e6 || step_exp < -4 {
        return ticks.iter().map(|&t| format_value(t)).collect();
    }
    let decimals = (-step_exp).max(0) as usize;
    ticks
        .iter()
        .map(|&t| {
            let s = format!("{:.*}", decimals, t);
            // Avoid "-0" / "-0.0" for ticks that are zero up to rounding.
            if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
                s.trim_start_matches('-').to_string()
            } else {
                s
            }
        })
        .collect()
}

/// Shortest readable form of a single value: plain decimals in
/// `[1e-3, 1e6)`, scientific notation outside.
pub(super) fn format_value(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        // `{:e}` prints 1e-4 / 2.5e6; trim float noise first.
        return format!("{:e}", round_sig(v, 6));
    }
    for decimals in 0..=6 {
        let s = format!("{:.*}", decimals, v);
        if let Ok(back) = s.parse::<f64>()
            && (back - v).abs() <= 1e-9 * a
        {
            return s;
        }
    }
    format!("{v:.6}")
}

fn round_sig(v: f64, digits: i32) -> f64 {
    let exp = v.abs().log10().floor() as i32;
    let scale = pow10(digits - 1 - exp);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx_eq(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn nice_ticks_unit_range() {
        let t = nice_ticks(0.0, 1.0, 5);
        assert!(approx_eq(&t, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), "{t:?}");
        // Built from integers, so exactly the literals.
        assert_eq!(t, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    }

    #[test]
    fn nice_ticks_other_ranges() {
        assert_eq!(nice_ticks(0.0, 100.0, 5), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(nice_ticks(3.2, 7.9, 5), vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(nice_ticks(-1.0, 1.0, 5), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(nice_ticks(2.1, 3.5, 5), vec![2.0, 2.5, 3.0, 3.5]);
        assert_eq!(nice_ticks(0.0, 1000.0, 5), vec![0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        // Reversed, degenerate and non-finite input.
        assert_eq!(nice_ticks(1.0, 0.0, 5), nice_ticks(0.0, 1.0, 5));
        let single = nice_ticks(5.0, 5.0, 5);
        assert!(single.len() >= 2 && single[0] < 5.0 && *single.last().unwrap() > 5.0);
        let zero = nice_ticks(0.0, 0.0, 5);
        assert!(zero[0] <= -1.0 && *zero.last().unwrap() >= 1.0);
        assert_eq!(nice_ticks(f64::NAN, 1.0, 5), nice_ticks(0.0, 1.0, 5));
        // Ticks always enclose the range with a 1/2/5 step.
        for (lo, hi) in [(0.013, 0.0171), (-37.0, 912.0), (1e-7, 3e-7), (12345.0, 12399.0)] {
            let t = nice_ticks(lo, hi, 5);
            assert!(t[0] <= lo && *t.last().unwrap() >= hi, "{lo}..{hi}: {t:?}");
            assert!((3..=11).contains(&t.len()), "{lo}..{hi}: {t:?}");
            let step = t[1] - t[0];
            let mant = step / pow10(step.log10().floor() as i32);
            assert!([1.0, 2.0, 5.0].iter().any(|m| (mant - m).abs() < 1e-6), "{step}");
        }
    }

    #[test]
    fn linear_labels_are_tidy() {
        assert_eq!(
            linear_labels(&nice_ticks(0.0, 1.0, 5)),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        assert_eq!(linear_labels(&nice_ticks(-1.0, 1.0, 5)), ["-1.0", "-0.5", "0.0", "0.5", "1.0"]);
        assert_eq!(linear_labels(&[0.0, 500.0, 1000.0]), ["0", "500", "1000"]);
        assert_eq!(linear_labels(&[0.0, 2e6, 4e6]), ["0", "2e6", "4e6"]);
        assert_eq!(format_value(0.0001), "1e-4");
        assert_eq!(format_value(0.05), "0.05");
        assert_eq!(format_value(2.5), "2.5");
    }

    /// True if `v` is 1, 2 or 5 times a power of ten.
    fn is_one_two_five(v: f64) -> bool {
        let mant = v / pow10(v.log10().floor() as i32);
        [1.0, 2.0, 5.0, 10.0].iter().any(|m| (mant - m).abs() < 1e-9)
    }

    fn is_power_of_ten(v: f64) -> bool {
        (v.log10() - v.log10().round()).abs() < 1e-12
    }

    #[test]
    fn log_ticks_are_powers_of_ten_or_nice() {
        // Many decades: powers of ten only, domain on decade boundaries.
        let (lo, hi, t) = log_ticks(3e-4, 42.0);
        assert!(t.iter().all(|&v| is_power_of_ten(v)), "{t:?}");
        assert!(lo <= 3e-4 && hi >= 42.0 && is_power_of_ten(lo) && is_power_of_ten(hi));
        let (lo, hi, wide) = log_ticks(1e-12, 3e11);
        assert!(wide.len() <= 9 && wide.iter().all(|&v| is_power_of_ten(v)), "{wide:?}");
        // The domain starts and ends on a labelled tick.
        assert_eq!((lo, hi), (wide[0], wide[wide.len() - 1]));
        assert!(lo <= 1e-12 && hi >= 3e11);

        // A decade or two: 1–2–5 values.
        let (lo, hi, t) = log_ticks(1.5, 40.0);
        assert_eq!((lo, hi), (1.0, 50.0));
        assert!(t.len() >= 3 && t.iter().all(|&v| is_one_two_five(v)), "{t:?}");

        // Narrow band: linear nice values, evenly spaced with a 1/2/5 step.
        let (lo, hi, t) = log_ticks(2.1, 3.5);
        assert!(lo <= 2.1 && hi >= 3.5 && lo > 0.0);
        assert!(t.len() >= 3, "{t:?}");
        let step = t[1] - t[0];
        assert!(is_one_two_five(step), "{t:?}");
        for w in t.windows(2) {
            assert!((w[1] - w[0] - step).abs() < 1e-9, "{t:?}");
        }

        // A single value (even an exact power of ten) gets padded around it.
        for v in [100.0, 7.0, 3e-5] {
            let (lo, hi, t) = log_ticks(v, v);
            assert!(0.0 < lo && lo < v && v < hi, "{v}: {lo}..{hi}");
            assert!(t.len() >= 2 && t.iter().all(|&x| x >= lo && x <= hi), "{v}: {t:?}");
        }
    }
}
