//! Each arm's verdict line: how it compares with the baseline, what to do about it, and seed 2's
//! "swap with monitoring and a way back" advice, whose alarms are the ranges the arm showed in
//! the comparison.

use super::analyse::ArmResult;
use crate::stats::{Summary, Verdict};

/// The baseline's line: its mean final metric and the half-width of its 95% interval.
pub(super) fn baseline_line(arm: &ArmResult, metric: &str) -> String {
    format!("{}: baseline ({metric} {:.4} ± {:.4})", arm.name, arm.summary.mean, half_width(&arm.summary))
}

fn half_width(s: &Summary) -> f64 {
    0.5 * (s.ci_high - s.ci_low)
}

/// The verdict line of an arm, with seed 2's "swap with monitoring and a way back" advice:
/// the ranges this arm showed in the PoC are the alarms to set after a swap.
pub(super) fn advice(arm: &ArmResult, base: &ArmResult, metric: &str) -> String {
    format!("{}: {}; {}. {}", arm.name, comparison(arm, base, metric), action(arm.verdict), monitoring(arm, base))
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
    let ranges = |r: &[(f64, f64)]| r.iter().map(|(lo, hi)| format!("{lo:.2}–{hi:.2}")).collect::<Vec<_>>().join(", ");
    // Runs recorded before sink mass was measured have none; the advice then leaves it out.
    let (sink_watch, sink_alarm) = if arm.sink_mass_range_per_layer.is_empty() {
        (String::new(), "")
    } else {
        (format!(", sink mass per layer within [{}]", ranges(&arm.sink_mass_range_per_layer)), " a layer's sink mass exceeds twice its maximum,")
    };
    format!(
        "After a swap, monitor: training loss within {:.3}–{:.3}, gradient norm within {:.3}–{:.3} \
         (p5–p95 of the second half of training), attention entropy per layer within [{}]{sink_watch}; roll back to {} if the loss \
         leaves that range for long, the gradient norm exceeds twice its p95,{sink_alarm} or a layer's entropy collapses below half its minimum.",
        arm.final_loss_range.0,
        arm.final_loss_range.1,
        arm.grad_norm_p5_p95.0,
        arm.grad_norm_p5_p95.1,
        ranges(&arm.entropy_range_per_layer),
        base.name
    )
}
