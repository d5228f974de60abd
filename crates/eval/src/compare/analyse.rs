//! From run records to results: each arm is reported at its own best learning rate (as zoology
//! does) with its spread over seeds, steps to target and the ranges its monitoring advice
//! quotes; then every arm but the baseline is judged against the baseline.

use super::advice::{advice, half_width};
use super::run::RunRecord;
use super::spec::Comparison;
use crate::stats::{self, Difference, Summary, Verdict};
use attnlab_train::util::{median, quantile};
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
}

/// Turns run records into per-arm results (best lr per arm, intervals, verdicts, advice).
pub fn analyse(spec: &Comparison, runs: Vec<RunRecord>, title: &str) -> Results {
    let task = spec.arms[0].config.task.name().to_string();
    // Every run of a comparison has the same task; any finished one names its metric.
    let (metric, higher_is_better) = runs
        .iter()
        .find(|r| r.error.is_none() && !r.metric.is_empty())
        .map_or(("loss".to_string(), false), |r| (r.metric.clone(), r.higher_is_better));
    let better = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    let baseline = spec.baseline;

    let mut arms: Vec<ArmResult> = spec
        .arms
        .iter()
        .enumerate()
        .map(|(a, arm)| {
            let mine: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].arm == arm.name).collect();
            let mut lrs: Vec<f64> = mine.iter().map(|&i| runs[i].lr).collect();
            lrs.sort_by(f64::total_cmp);
            lrs.dedup();
            let finals = |lr: f64| -> Vec<f64> {
                mine.iter().filter(|&&i| runs[i].lr == lr).filter_map(|&i| runs[i].final_metric).filter(|v| v.is_finite()).collect()
            };
            let lr_sweep: Vec<(f64, f64, usize)> = lrs
                .iter()
                .map(|&lr| {
                    let v = finals(lr);
                    (lr, stats::summarize(&v).mean, v.len())
                })
                .collect();
            let best_lr = lr_sweep
                .iter()
                .filter(|(_, m, n)| *n > 0 && m.is_finite())
                .fold(None::<(f64, f64)>, |best, &(lr, m, _)| match best {
                    Some((_, bm)) if !better(m, bm) => best,
                    _ => Some((lr, m)),
                })
                .map_or(lrs.first().copied().unwrap_or(f64::NAN), |(lr, _)| lr);
            let at_best: Vec<usize> = mine.iter().copied().filter(|&i| runs[i].lr == best_lr).collect();
            let ok: Vec<usize> = at_best.iter().copied().filter(|&i| runs[i].error.is_none()).collect();
            let values = finals(best_lr);
            let steps_to_target: Vec<Option<usize>> = match spec.target {
                Some(t) => ok.iter().map(|&i| stats::steps_to_target(&runs[i].eval_metric, t, higher_is_better)).collect(),
                None => Vec::new(),
            };
            let reached: Vec<f64> = steps_to_target.iter().flatten().map(|&s| s as f64).collect();
            let grad_norms: Vec<f64> = ok
                .iter()
                .flat_map(|&i| {
                    let g = &runs[i].grad_norm;
                    g[g.len() / 2..].iter().map(|p| p.1).collect::<Vec<_>>()
                })
                .collect();
            let final_losses: Vec<f64> = ok.iter().filter_map(|&i| runs[i].loss.last().map(|p| p.1)).collect();
            let layers = ok.iter().filter_map(|&i| runs[i].entropy.last().map(|e| e.1.len())).max().unwrap_or(0);
            let entropy_range_per_layer = (0..layers)
                .map(|l| {
                    let v: Vec<f64> = ok.iter().filter_map(|&i| runs[i].entropy.last().and_then(|e| e.1.get(l).copied())).collect();
                    (quantile(&v, 0.0), quantile(&v, 1.0))
                })
                .collect();
            let config = &spec.arms[a].config;
            ArmResult {
                name: arm.name.clone(),
                is_baseline: a == baseline,
                best_lr,
                lr_sweep,
                failed_runs: at_best.len() - ok.len(),
                runs: at_best,
                summary: stats::summarize(&values),
                difference: None,
                bootstrap: None,
                verdict: None,
                median_steps_to_target: (!reached.is_empty()).then(|| median(&reached)),
                steps_to_target,
                tokens_per_s: median(&ok.iter().map(|&i| runs[i].tokens_per_s).collect::<Vec<_>>()),
                params: ok.first().map_or(0, |&i| runs[i].params),
                state_floats: config.model.decode_state_floats(config.model.max_seq_len),
                final_loss_range: (quantile(&final_losses, 0.0), quantile(&final_losses, 1.0)),
                grad_norm_p5_p95: (quantile(&grad_norms, 0.05), quantile(&grad_norms, 0.95)),
                entropy_range_per_layer,
            }
        })
        .collect();

    let base_values: Vec<f64> = arms[baseline].runs.iter().filter_map(|&i| runs[i].final_metric).collect();
    let mut verdicts = Vec::new();
    for a in 0..arms.len() {
        if a == baseline {
            verdicts.push(format!("{}: baseline ({metric} {:.4} ± {:.4})", arms[a].name, arms[a].summary.mean, half_width(&arms[a].summary)));
            continue;
        }
        let values: Vec<f64> = arms[a].runs.iter().filter_map(|&i| runs[i].final_metric).collect();
        arms[a].difference = stats::welch(&base_values, &values);
        if !base_values.is_empty() && !values.is_empty() {
            arms[a].bootstrap = Some(stats::bootstrap_difference(&base_values, &values, 2000, 17));
        }
        arms[a].verdict = arms[a].difference.as_ref().map(|d| stats::verdict(d, higher_is_better));
        verdicts.push(advice(&arms[a], &arms[baseline], &metric));
    }
    Results {
        title: title.to_string(),
        task,
        metric,
        higher_is_better,
        target: spec.target,
        seeds: spec.seeds.clone(),
        baseline: arms[baseline].name.clone(),
        arms,
        runs,
        verdicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attnlab_train::RunConfig;
    use std::path::PathBuf;

    /// Synthetic run records of four arms at two learning rates and three seeds: softmax (the
    /// baseline) is best at 3e-3, linear is worse and best at 1e-3 with one failed seed there,
    /// sigmoid matches softmax, and every run of broken failed.
    fn synthetic_comparison() -> (Comparison, Vec<RunRecord>) {
        let preset = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/mqar-smoke.toml"));
        let base = RunConfig::load(&preset, &[]).unwrap();
        let arms = [("softmax", "softmax"), ("linear", "linear:elu1"), ("sigmoid", "sigmoid"), ("broken", "softmax")];
        let mut comparison = Comparison::of_mixers(&base, &arms, vec![1, 2, 3], vec![1e-3, 3e-3]).unwrap();
        comparison.target = Some(0.75);
        let finals = |arm: &str, lr: f64| -> [Option<f64>; 3] {
            match (arm, lr == 1e-3) {
                ("softmax", true) => [Some(0.80), Some(0.82), Some(0.81)],
                ("softmax", false) => [Some(0.90), Some(0.92), Some(0.91)],
                ("linear", true) => [Some(0.60), Some(0.62), None],
                ("linear", false) => [Some(0.50), Some(0.55), Some(0.52)],
                ("sigmoid", true) => [Some(0.70), Some(0.71), Some(0.72)],
                ("sigmoid", false) => [Some(0.93), Some(0.89), Some(0.91)],
                _ => [None, None, None],
            }
        };
        let mut runs = Vec::new();
        for (a, &(name, _)) in arms.iter().enumerate() {
            for lr in [1e-3, 3e-3] {
                for (s, final_metric) in finals(name, lr).into_iter().enumerate() {
                    let seed = s as u64 + 1;
                    let mut record = RunRecord { arm: name.into(), seed, lr, ..Default::default() };
                    let Some(m) = final_metric else {
                        record.error = Some(format!("{name} seed {seed} diverged"));
                        runs.push(record);
                        continue;
                    };
                    let k = (a * 7 + s * 3) as f64;
                    record.final_metric = Some(m);
                    record.metric = "accuracy".into();
                    record.higher_is_better = true;
                    record.params = 1000 + a;
                    record.tokens_per_s = 5000.0 + 100.0 * k;
                    record.loss = (0..10).map(|i| (i * 10, 3.0 / (1.0 + i as f64) + 0.01 * k)).collect();
                    record.grad_norm = (0..10).map(|i| (i * 10, 1.0 + 0.1 * ((i as f64) + k).sin())).collect();
                    record.eval_metric = (0..5).map(|i| (i * 20 + 10, m * (i as f64 + 1.0) / 5.0)).collect();
                    record.entropy = (0..5).map(|i| (i * 20 + 10, vec![0.9 - 0.02 * i as f64 - 0.01 * k, 0.5 + 0.01 * k])).collect();
                    runs.push(record);
                }
            }
        }
        (comparison, runs)
    }

    #[test]
    fn analyse_picks_each_arms_best_lr_and_judges_it_against_the_baseline() {
        let (comparison, runs) = synthetic_comparison();
        let r = analyse(&comparison, runs, "synthetic");
        assert_eq!((r.task.as_str(), r.metric.as_str(), r.higher_is_better, r.baseline.as_str()), ("mqar", "accuracy", true, "softmax"));
        let each = |f: &dyn Fn(&ArmResult) -> String| r.arms.iter().map(f).collect::<Vec<_>>().join(" | ");
        assert_eq!(each(&|a| format!("{:e}", a.best_lr)), "3e-3 | 1e-3 | 3e-3 | 1e-3");
        assert_eq!(each(&|a| format!("{:?} {}", a.runs, a.failed_runs)), "[3, 4, 5] 0 | [6, 7, 8] 1 | [15, 16, 17] 0 | [18, 19, 20] 3");
        assert_eq!(
            each(&|a| a.lr_sweep.iter().map(|(lr, m, n)| format!("{lr:e}:{m:.4}/{n}")).collect::<Vec<_>>().join(",")),
            "1e-3:0.8100/3,3e-3:0.9100/3 | 1e-3:0.6100/2,3e-3:0.5233/3 | 1e-3:0.7100/3,3e-3:0.9100/3 | 1e-3:NaN/0,3e-3:NaN/0"
        );
        assert_eq!(each(&|a| format!("{} {:.4}", a.summary.n, a.summary.mean)), "3 0.9100 | 2 0.6100 | 3 0.9100 | 0 NaN");
        assert_eq!(
            each(&|a| format!("{:?} {:?}", a.steps_to_target, a.median_steps_to_target)),
            "[Some(90), Some(90), Some(90)] Some(90.0) | [None, None] None | [Some(90), Some(90), Some(90)] Some(90.0) | [] None"
        );
        assert_eq!(each(&|a| format!("{} {} {}", a.tokens_per_s, a.params, a.state_floats)), "5300 1000 4096 | 5850 1001 2112 | 6700 1002 4096 | NaN 0 4096");
        assert_eq!(
            each(&|a| format!("{:.3?} {:.3?} {:.3?}", a.final_loss_range, a.grad_norm_p5_p95, a.entropy_range_per_layer)),
            "(0.300, 0.360) (0.900, 1.099) [(0.760, 0.820), (0.500, 0.560)] | (0.370, 0.400) (0.913, 1.084) [(0.720, 0.750), (0.570, 0.600)] \
             | (0.440, 0.500) (0.914, 1.093) [(0.620, 0.680), (0.640, 0.700)] | (NaN, NaN) (NaN, NaN) []"
        );
        assert_eq!(
            each(&|a| format!("{:?} {:.4?} {:?}", a.verdict, a.bootstrap, a.difference.as_ref().map(|d| format!("{:.4}", d.mean)))),
            "None None None | Some(Worse) Some((-0.3167, -0.2833)) Some(\"-0.3000\") \
             | Some(Indistinguishable) Some((-0.0200, 0.0200)) Some(\"0.0000\") | None None None"
        );
        let monitor = |loss: &str, grad: &str, entropy: &str| {
            format!(
                "After a swap, monitor: training loss within {loss}, gradient norm within {grad} (p5–p95 of the second half of \
                 training), attention entropy per layer within [{entropy}]; roll back to softmax if the loss leaves that range for \
                 long, the gradient norm exceeds twice its p95, or a layer's entropy collapses below half its minimum."
            )
        };
        assert_eq!(
            r.verdicts,
            [
                "softmax: baseline (accuracy 0.9100 ± 0.0248)".to_string(),
                format!(
                    "linear: worse than softmax at 95% (Δaccuracy -0.3000, CI [-0.3598, -0.2402], p = 0.003); do not swap. {}",
                    monitor("0.370–0.400", "0.913–1.084", "0.72–0.75, 0.57–0.60")
                ),
                format!(
                    "sigmoid: indistinguishable from softmax at 95% (Δaccuracy +0.0000, CI [-0.0416, +0.0416], p = 1.000); no evidence \
                     either way: swap only for a non-quality reason (speed, state size). {}",
                    monitor("0.440–0.500", "0.914–1.093", "0.62–0.68, 0.64–0.70")
                ),
                format!(
                    "broken: not enough finished seeds to compare with softmax (need 2 per arm); no evidence either way: swap only \
                     for a non-quality reason (speed, state size). {}",
                    monitor("NaN–NaN", "NaN–NaN", "")
                ),
            ]
        );
    }
}
