//! Reading an order between two arms off their seeds: "a recalls better than b" needs a
//! difference beyond what the seeds themselves spread over, or two arms that both solve a task
//! (or both fail it) are ranked by noise.

use crate::compare::Results;

/// The smallest difference in mean accuracy read as an order, even where the seeds agree.
const MIN_SEPARATION: f64 = 0.02;
/// How far below the other family a "≳" family may fall.
const NOT_BELOW_SLACK: f64 = 0.05;

/// An expected relation between two families' mean accuracies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Relation {
    /// Better by more than the seeds' spread (and at least [`MIN_SEPARATION`]).
    Above,
    /// At most [`NOT_BELOW_SLACK`] worse.
    NotBelow,
}

impl Relation {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            Relation::Above => ">",
            Relation::NotBelow => "≳",
        }
    }

    pub(super) fn words(self) -> String {
        match self {
            Relation::Above => {
                format!(", by more than the seeds' spread and at least {MIN_SEPARATION}")
            }
            Relation::NotBelow => format!(", within {NOT_BELOW_SLACK}"),
        }
    }

    /// Whether `a` relates so to `b`, given the two families' summed seed spread; and the
    /// numbers that say why.
    pub(super) fn judge(self, a: f64, b: f64, spread: f64) -> (bool, String) {
        match self {
            Relation::Above => {
                let margin = spread.max(MIN_SEPARATION);
                let holds = a - b > margin;
                let why = if holds || a <= b {
                    String::new()
                } else {
                    format!(": a difference within the seeds' spread ({margin:.3}) orders nothing")
                };
                (holds, format!("{a:.3} vs {b:.3}{why}"))
            }
            Relation::NotBelow => (a >= b - NOT_BELOW_SLACK, format!("{a:.3} vs {b:.3}")),
        }
    }
}

/// Half the range of an arm's final metric over its best-lr seeds (0 for one seed or a missing arm).
pub(super) fn half_range(results: &Results, arm: &str) -> f64 {
    match results.arms.iter().find(|a| a.name == arm) {
        Some(a) if a.summary.n > 1 && a.summary.max.is_finite() && a.summary.min.is_finite() => {
            0.5 * (a.summary.max - a.summary.min)
        }
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_needs_a_difference_beyond_the_seeds_spread() {
        // Both families recall within their seeds' noise: no order either way.
        let (holds, why) = Relation::Above.judge(0.999, 0.996, 0.004);
        assert!(!holds && why.contains("orders nothing"), "{why}");
        // A clear difference, wider than the spread, is an order.
        assert!(Relation::Above.judge(0.95, 0.40, 0.10).0);
        // The difference must also beat the spread when the seeds disagree widely.
        assert!(!Relation::Above.judge(0.60, 0.30, 0.40).0);
        // A reversed order is simply false, with no talk of spread.
        let (holds, why) = Relation::Above.judge(0.30, 0.60, 0.0);
        assert!(!holds && why == "0.300 vs 0.600", "{why}");
        // Equal seeds still need MIN_SEPARATION.
        assert!(!Relation::Above.judge(0.515, 0.50, 0.0).0);
        assert!(Relation::Above.judge(0.53, 0.50, 0.0).0);
    }

    #[test]
    fn not_below_allows_the_slack_and_no_more() {
        assert!(Relation::NotBelow.judge(0.96, 1.0, 0.0).0);
        assert!(Relation::NotBelow.judge(1.0, 0.2, 0.0).0);
        assert!(!Relation::NotBelow.judge(0.94, 1.0, 0.0).0);
    }
}
