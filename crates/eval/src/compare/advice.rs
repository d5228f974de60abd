//! Each arm's verdict line: how it compares with the baseline, what to do about it, and seed 2's
//! "swap with monitoring and a way back" advice, whose alarms are the ranges the arm showed in
//! the comparison.

use super::results::ArmResult;
use crate::stats::{Summary, Verdict};

/// The baseline's line: its mean final metric and the half-width of its 95% interval, or that it
/// has no result.
pub(super) fn baseline_line(arm: &ArmResult, metric: &str) -> String {
    if arm.no_finite_result {
        return format!(
            "{}: baseline with no finite result ({}; see Failed runs); no arm can be judged against it",
            arm.name,
            arm.no_result_reason(metric)
        );
    }
    format!(
        "{}: baseline ({metric} {:.4} ± {:.4})",
        arm.name,
        arm.summary.mean,
        half_width(&arm.summary)
    )
}

/// The line of an arm (not a baseline) with no result: nothing to judge or monitor.
pub(super) fn no_result_line(arm: &ArmResult, metric: &str) -> String {
    format!(
        "{}: no finite result ({}; see Failed runs); no verdict. Lower its learning rate, raise \
         train.warmup_steps or set train.grad_clip, then run the comparison again.",
        arm.name,
        arm.no_result_reason(metric)
    )
}

fn half_width(s: &Summary) -> f64 {
    0.5 * (s.ci_high - s.ci_low)
}

/// The verdict line of an arm, with seed 2's "swap with monitoring and a way back" advice:
/// the ranges this arm showed in the PoC are the alarms to set after a swap.
pub(super) fn advice(arm: &ArmResult, base: &ArmResult, metric: &str) -> String {
    format!(
        "{}: {}; {}. {}",
        arm.name,
        comparison(arm, base, metric),
        action(arm.verdict),
        monitoring(arm, base)
    )
}

/// How the arm compares with the baseline at 95%, with the Welch interval of the difference in
/// `metric` and its p-value.
fn comparison(arm: &ArmResult, base: &ArmResult, metric: &str) -> String {
    match (&arm.difference, arm.verdict) {
        (Some(d), Some(v)) => format!(
            "{} {} at 95% (Δ{metric} {:+.4}, CI [{:+.4}, {:+.4}], p = {:.3})",
            v.comparative(),
            base.name,
            d.mean,
            d.ci_low,
            d.ci_high,
            d.p_value
        ),
        _ if base.no_finite_result => {
            format!("not judged: its baseline {} has no finite result", base.name)
        }
        _ => format!("not enough finished seeds to compare with {} (need 2 per arm)", base.name),
    }
}

/// What the verdict means for a swap.
fn action(verdict: Option<Verdict>) -> &'static str {
    match verdict {
        Some(Verdict::Worse) => "do not swap",
        Some(Verdict::Better) => "swap candidate",
        _ => "no evidence either way: swap only for a non-quality reason (speed, state size)",
    }
}

/// The alarms to set after swapping to the arm, and when to roll back to the baseline.
fn monitoring(arm: &ArmResult, base: &ArmResult) -> String {
    let ranges = |r: &[(f64, f64)]| {
        r.iter().map(|&(lo, hi)| range(lo, hi, 2)).collect::<Vec<_>>().join(", ")
    };
    // Runs recorded before sink mass was measured have none; the advice then leaves it out.
    let (sink_watch, sink_alarm) = if arm.sink_mass_range_per_layer.is_empty() {
        (String::new(), "")
    } else {
        (
            format!(", sink mass per layer within [{}]", ranges(&arm.sink_mass_range_per_layer)),
            " a layer's sink mass exceeds twice its maximum,",
        )
    };
    format!(
        "After a swap, monitor: training loss within {}, gradient norm within {} \
         (p5–p95 of the second half of training), attention entropy per layer within [{}]{sink_watch}; roll back to {} if the loss \
         leaves that range for long, the gradient norm exceeds twice its p95,{sink_alarm} or a layer's entropy collapses below half its minimum.",
        range(arm.final_loss_range.0, arm.final_loss_range.1, 3),
        range(arm.grad_norm_p5_p95.0, arm.grad_norm_p5_p95.1, 3),
        ranges(&arm.entropy_range_per_layer),
        base.name
    )
}

/// `lo–hi` to `digits` decimals; `–` when either end is not a number (no run recorded one).
fn range(lo: f64, hi: f64, digits: usize) -> String {
    if lo.is_finite() && hi.is_finite() {
        format!("{lo:.digits$}–{hi:.digits$}")
    } else {
        "– (not recorded)".to_string()
    }
}

/// Seeds per arm below which the report warns that its intervals are unreliable: with fewer,
/// a bootstrap resamples from a handful of values and a t interval leans on normality.
pub const RELIABLE_SEEDS: usize = 5;

/// Whether `value` closes less than a tenth of the way from `chance` to a perfect score (1 for
/// a metric where higher is better, 0 for a loss): a model that learned nothing task-specific.
pub fn at_chance(value: f64, chance: f64, higher_is_better: bool) -> bool {
    let perfect = if higher_is_better { 1.0 } else { 0.0 };
    let closed = (value - chance) / (perfect - chance);
    // NaN (no chance level to close from) counts as at chance.
    closed.is_nan() || closed < 0.1
}

/// The report's one-line decision, for someone who reads nothing else: adopt, do not adopt or
/// inconclusive, and why. `baselines[a]` is the arm `a` is judged against; `chance` is the
/// task's metric at chance, when it has one.
pub fn decision(
    arms: &[ArmResult],
    baselines: &[usize],
    metric: &str,
    higher_is_better: bool,
    chance: Option<f64>,
    missing: usize,
) -> String {
    if missing > 0 {
        return format!(
            "Inconclusive: {missing} planned run(s) have not finished; run the same command again, then read the verdicts."
        );
    }
    if arms.iter().all(|a| a.no_finite_result) {
        return "Inconclusive: no arm has a finite result (every run failed, diverged or left no readable metrics; see Failed runs); \
                no adoption advice. Fix the protocol first: a lower learning rate, warm-up, gradient clipping."
            .to_string();
    }
    let without_result: Vec<&str> = baselines
        .iter()
        .filter(|&&b| arms[b].no_finite_result)
        .map(|&b| arms[b].name.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !without_result.is_empty() {
        return format!(
            "Inconclusive: the baseline {} has no finite result (its runs failed or diverged), so no arm can be judged against it; \
             no adoption advice. Fix the baseline's protocol first: a lower learning rate, warm-up, gradient clipping.",
            without_result.join(", ")
        );
    }
    if let Some(chance) = chance {
        if !arms
            .iter()
            .any(|a| a.summary.n > 0 && !at_chance(a.summary.mean, chance, higher_is_better))
        {
            return format!(
                "Inconclusive: no arm learned the task (every {metric} is within a tenth of chance, {chance:.4}); no adoption advice. \
                 Fix the protocol first: more steps, a learning-rate sweep, warm-up."
            );
        }
        let stuck: Vec<&str> = baselines
            .iter()
            .copied()
            .filter(|&b| {
                arms[b].summary.n == 0 || at_chance(arms[b].summary.mean, chance, higher_is_better)
            })
            .map(|b| arms[b].name.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !stuck.is_empty() {
            return format!(
                "Inconclusive: the baseline {} did not learn the task ({metric} within a tenth of chance, {chance:.4}), so beating it says nothing; \
                 no adoption advice. Fix the baseline's protocol first.",
                stuck.join(", ")
            );
        }
    }
    let candidates: Vec<(usize, &ArmResult)> =
        arms.iter().enumerate().filter(|(i, _)| baselines[*i] != *i).collect();
    if candidates.is_empty() {
        return "Inconclusive: the comparison has only its baseline; add an arm to compare."
            .to_string();
    }
    let fewest =
        arms.iter().filter(|a| !a.no_finite_result).map(|a| a.summary.n).min().unwrap_or(0);
    let mut caveat = if fewest < RELIABLE_SEEDS {
        format!(
            " Only {fewest} seed(s) in some arm: below {RELIABLE_SEEDS} the 95% intervals (Welch and bootstrap) are unreliable; rerun with at least {RELIABLE_SEEDS} seeds before acting."
        )
    } else {
        String::new()
    };
    let without_result: Vec<&str> = candidates
        .iter()
        .filter(|(_, a)| a.no_finite_result)
        .map(|(_, a)| a.name.as_str())
        .collect();
    if !without_result.is_empty() {
        caveat.push_str(&format!(
            " No finite result for {} (its runs failed or diverged): not judged.",
            without_result.join(", ")
        ));
    }
    let named = |v: Verdict| -> Vec<String> {
        candidates
            .iter()
            .filter(|(_, a)| a.verdict == Some(v))
            .map(|(i, a)| {
                let d = a.difference.as_ref().map_or(String::new(), |d| {
                    format!(" (Δ{metric} {:+.4}, CI [{:+.4}, {:+.4}])", d.mean, d.ci_low, d.ci_high)
                });
                format!("{} vs {}{d}", a.name, arms[baselines[*i]].name)
            })
            .collect()
    };
    let (better, worse) = (named(Verdict::Better), named(Verdict::Worse));
    let line = if !better.is_empty() {
        let mut s = format!("Adopt: {} better at 95%", better.join("; "));
        if !worse.is_empty() {
            s.push_str(&format!("; do not adopt {} (worse)", worse.join("; ")));
        }
        s.push_str(". Swap with the monitoring below and keep the baseline as the way back.");
        s
    } else if !worse.is_empty() && worse.len() + without_result.len() == candidates.len() {
        format!("Do not adopt: {} worse at 95%.", worse.join("; "))
    } else if !worse.is_empty() {
        format!(
            "Do not adopt: {} worse at 95%; the other arms are indistinguishable from their baseline (no quality reason to swap).",
            worse.join("; ")
        )
    } else {
        "Inconclusive: no arm differs from its baseline at 95%; swap only for a non-quality reason (speed, state size).".to_string()
    };
    format!("{line}{caveat}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_is_judged_from_the_distance_to_a_perfect_score() {
        // Accuracy: chance 0.25, perfect 1: 0.3 closes 1/15 of the way, 0.4 a fifth.
        assert!(at_chance(0.3, 0.25, true) && !at_chance(0.4, 0.25, true));
        // Loss: chance ln 65 ≈ 4.17, perfect 0: 4.0 is at chance, 2.5 is not.
        assert!(at_chance(4.0, 65f64.ln(), false) && !at_chance(2.5, 65f64.ln(), false));
        assert!(at_chance(f64::NAN, 0.5, true), "a missing mean learned nothing");
    }
}
