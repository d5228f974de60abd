//! What a comparison produced: each arm's numbers at its best learning rate ([`ArmResult`]) and
//! the whole comparison ([`Results`], written as `results.json`). Plain data, read by the report
//! writers and the advice; computed in `analyse`.

use super::run::RunRecord;
use crate::stats::{Difference, Summary, Verdict};
use serde::{Deserialize, Serialize};

/// Per-arm results at the arm's best learning rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArmResult {
    pub name: String,
    pub is_baseline: bool,
    pub best_lr: f64,
    /// `(lr, mean main metric over seeds, finished runs)` for every learning rate tried.
    pub lr_sweep: Vec<(f64, f64, usize)>,
    /// Indices into `Results::runs` of the runs at the best learning rate.
    pub runs: Vec<usize>,
    pub failed_runs: usize,
    /// Runs of this arm (at any lr) not finished yet; an arm with any gets no verdict.
    #[serde(default)]
    pub pending_runs: usize,
    /// Every run is done, and none left a finite final metric (all failed or diverged, or left no
    /// readable record): the arm has no result, its numbers are absent (null), and the report
    /// says so instead of showing them.
    #[serde(default)]
    pub no_finite_result: bool,
    pub summary: Summary,
    /// Against the baseline arm (at its own best lr): Welch interval, bootstrap interval, verdict.
    pub difference: Option<Difference>,
    pub bootstrap: Option<(f64, f64)>,
    pub verdict: Option<Verdict>,
    /// First eval step reaching the target, per seed (`None` = never).
    pub steps_to_target: Vec<Option<usize>>,
    pub median_steps_to_target: Option<f64>,
    pub tokens_per_s: f64,
    pub params: usize,
    /// Decoding state (floats per sequence) at the task's context length.
    pub state_floats: usize,
    /// Observed ranges over the best-lr runs, for the monitoring advice.
    pub final_loss_range: (f64, f64),
    pub grad_norm_p5_p95: (f64, f64),
    pub entropy_range_per_layer: Vec<(f64, f64)>,
    /// The same for the sink mass (mean weight on position 0).
    #[serde(default)]
    pub sink_mass_range_per_layer: Vec<(f64, f64)>,
}

impl ArmResult {
    /// Why the arm has no result, for an arm with [`ArmResult::no_finite_result`].
    pub fn no_result_reason(&self, metric: &str) -> String {
        let runs = self.runs.len();
        if self.failed_runs == runs {
            format!("all {runs} run(s) at lr {:e} failed or diverged", self.best_lr)
        } else {
            format!(
                "its {runs} run(s) at lr {:e} left no finite {metric} ({} failed or diverged)",
                self.best_lr, self.failed_runs
            )
        }
    }
}

/// Everything a comparison produced; written as `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub title: String,
    pub task: String,
    pub metric: String,
    pub higher_is_better: bool,
    pub target: Option<f64>,
    pub seeds: Vec<u64>,
    pub baseline: String,
    pub arms: Vec<ArmResult>,
    pub runs: Vec<RunRecord>,
    /// One line per arm: the verdict and the monitoring advice.
    pub verdicts: Vec<String>,
    /// Ids of the planned runs that have not finished (queued, running or interrupted).
    #[serde(default)]
    pub missing: Vec<String>,
    /// The main metric (`metric`) at chance, when the task has one.
    #[serde(default)]
    pub chance: Option<f64>,
    /// The report's opening line: adopt, do not adopt or inconclusive, and why.
    #[serde(default)]
    pub decision: String,
}
