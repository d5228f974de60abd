//! From run records to results: each arm is reported at its own best learning rate (as zoology
//! does) with its spread over seeds, steps to target and the ranges its monitoring advice
//! quotes; then every arm but the baseline is judged against the baseline.

use super::advice::{advice, baseline_line, no_result_line};
use super::results::{ArmResult, Results};
use super::run::{LayerCurve, RunRecord};
use super::spec::Comparison;
use crate::stats::{self, median, quantile};

/// Turns run records into per-arm results (best lr per arm, intervals, verdicts, advice).
pub fn analyse(spec: &Comparison, runs: Vec<RunRecord>, title: &str) -> Results {
    let (metric, higher_is_better, chance) = main_metric(&runs);
    let mut arms: Vec<ArmResult> =
        (0..spec.arms.len()).map(|a| arm_result(spec, a, &runs, higher_is_better)).collect();
    let baselines: Vec<usize> = (0..spec.arms.len()).map(|a| spec.baseline_of(a)).collect();
    let verdicts = judge_against_baseline(&mut arms, &baselines, &runs, &metric, higher_is_better);
    let missing: Vec<String> = runs.iter().filter(|r| r.pending).map(|r| r.id.clone()).collect();
    let decision = super::advice::decision(
        &arms,
        &baselines,
        &metric,
        higher_is_better,
        chance,
        missing.len(),
    );
    Results {
        title: title.to_string(),
        task: spec.arms[0].config.task.name().to_string(),
        metric,
        higher_is_better,
        target: spec.target,
        seeds: spec.seeds.clone(),
        baseline: arms[spec.baseline].name.clone(),
        arms,
        runs,
        verdicts,
        missing,
        chance,
        decision,
    }
}

/// The main metric's name, whether higher is better, and its chance level, all read from one
/// run, so the chance level is always the named metric's. Every run of a comparison has the same
/// task, so any finished run names it; with none finished, a failed or unfinished run that
/// recorded it (meta.json is written when training starts); with neither, the loss, with no
/// chance level.
fn main_metric(runs: &[RunRecord]) -> (String, bool, Option<f64>) {
    let finished = runs.iter().find(|r| r.error.is_none() && !r.pending && !r.metric.is_empty());
    let started = || runs.iter().find(|r| r.chance.is_some());
    finished.or_else(started).map_or(("loss".to_string(), false, None), |r| {
        (r.metric.clone(), r.higher_is_better, r.chance)
    })
}

/// Arm `index` at its best learning rate: its summary over seeds, steps to target, speed, size
/// and monitoring ranges. The comparison with the baseline is left to [`judge_against_baseline`].
fn arm_result(
    spec: &Comparison,
    index: usize,
    runs: &[RunRecord],
    higher_is_better: bool,
) -> ArmResult {
    let arm = &spec.arms[index];
    let mine: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].arm == arm.name).collect();
    let pending = mine.iter().filter(|&&i| runs[i].pending).count();
    let lr_sweep = lr_sweep(runs, &mine);
    let best_lr = best_lr(&lr_sweep, higher_is_better);
    let at_best: Vec<usize> = mine.into_iter().filter(|&i| runs[i].lr == best_lr).collect();
    let ok: Vec<usize> =
        at_best.iter().copied().filter(|&i| runs[i].error.is_none() && !runs[i].pending).collect();
    let summary = stats::summarize(&finite_final_metrics(runs, &at_best));
    let steps_to_target = steps_to_target(runs, &ok, spec.target, higher_is_better);
    let model = &arm.config.model;
    ArmResult {
        name: arm.name.clone(),
        is_baseline: index == spec.baseline_of(index),
        best_lr,
        lr_sweep,
        failed_runs: at_best.iter().filter(|&&i| runs[i].error.is_some()).count(),
        pending_runs: pending,
        no_finite_result: summary.n == 0 && pending == 0,
        runs: at_best,
        summary,
        difference: None,
        bootstrap: None,
        verdict: None,
        median_steps_to_target: median_of_reached(&steps_to_target),
        steps_to_target,
        tokens_per_s: median(&ok.iter().map(|&i| runs[i].tokens_per_s).collect::<Vec<_>>()),
        params: ok.first().map_or(0, |&i| runs[i].params),
        state_floats: model.decode_state_floats(model.max_seq_len),
        final_loss_range: final_loss_range(runs, &ok),
        grad_norm_p5_p95: grad_norm_p5_p95(runs, &ok),
        entropy_range_per_layer: last_range_per_layer(runs, &ok, |r| &r.entropy),
        sink_mass_range_per_layer: last_range_per_layer(runs, &ok, |r| &r.sink_mass),
    }
}

/// The final main metric of each of `runs` (indices into `all`) that recorded one.
fn final_metrics(all: &[RunRecord], runs: &[usize]) -> Vec<f64> {
    runs.iter().filter_map(|&i| all[i].final_metric).collect()
}

/// [`final_metrics`] without the non-finite ones: what an arm's summary and lr sweep average.
fn finite_final_metrics(all: &[RunRecord], runs: &[usize]) -> Vec<f64> {
    final_metrics(all, runs).into_iter().filter(|v| v.is_finite()).collect()
}

/// `(lr, mean final metric, finished runs)` for every learning rate among `runs`, lowest first.
fn lr_sweep(all: &[RunRecord], runs: &[usize]) -> Vec<(f64, f64, usize)> {
    let mut lrs: Vec<f64> = runs.iter().map(|&i| all[i].lr).collect();
    lrs.sort_by(f64::total_cmp);
    lrs.dedup();
    lrs.into_iter()
        .map(|lr| {
            let at_lr: Vec<usize> = runs.iter().copied().filter(|&i| all[i].lr == lr).collect();
            let values = finite_final_metrics(all, &at_lr);
            (lr, stats::summarize(&values).mean, values.len())
        })
        .collect()
}

/// The learning rate of the sweep with the best mean, among those with a finished run (the
/// lowest of equals); with none, the lowest tried; with no runs at all, NaN.
fn best_lr(sweep: &[(f64, f64, usize)], higher_is_better: bool) -> f64 {
    let beats = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    let mut best: Option<(f64, f64)> = None;
    for &(lr, mean, finished) in sweep {
        if finished > 0
            && mean.is_finite()
            && best.is_none_or(|(_, best_mean)| beats(mean, best_mean))
        {
            best = Some((lr, mean));
        }
    }
    best.map(|(lr, _)| lr).or_else(|| sweep.first().map(|&(lr, _, _)| lr)).unwrap_or(f64::NAN)
}

/// The first eval step at which each of `runs` reaches `target` (`None`: never); empty without
/// a target.
fn steps_to_target(
    all: &[RunRecord],
    runs: &[usize],
    target: Option<f64>,
    higher_is_better: bool,
) -> Vec<Option<usize>> {
    let Some(target) = target else { return Vec::new() };
    runs.iter()
        .map(|&i| stats::steps_to_target(&all[i].eval_metric, target, higher_is_better))
        .collect()
}

/// The median steps to target over the seeds that reached it; `None` when none did.
fn median_of_reached(steps_to_target: &[Option<usize>]) -> Option<f64> {
    let reached: Vec<f64> = steps_to_target.iter().flatten().map(|&s| s as f64).collect();
    (!reached.is_empty()).then(|| median(&reached))
}

/// Smallest and largest value (NaN for none).
fn min_max(values: &[f64]) -> (f64, f64) {
    (quantile(values, 0.0), quantile(values, 1.0))
}

/// The range of the runs' last training loss.
fn final_loss_range(all: &[RunRecord], runs: &[usize]) -> (f64, f64) {
    let last: Vec<f64> = runs.iter().filter_map(|&i| all[i].loss.last().map(|p| p.1)).collect();
    min_max(&last)
}

/// The 5th and 95th percentiles of the gradient norm over the second half of the runs' training.
fn grad_norm_p5_p95(all: &[RunRecord], runs: &[usize]) -> (f64, f64) {
    let late: Vec<f64> = runs
        .iter()
        .flat_map(|&i| {
            let g = &all[i].grad_norm;
            g[g.len() / 2..].iter().map(|p| p.1)
        })
        .collect();
    (quantile(&late, 0.05), quantile(&late, 0.95))
}

/// The range over the runs of each layer's value at the last evaluation (entropy, sink mass).
fn last_range_per_layer(
    all: &[RunRecord],
    runs: &[usize],
    curve: fn(&RunRecord) -> &LayerCurve,
) -> Vec<(f64, f64)> {
    let last = |i: usize| curve(&all[i]).last().map(|(_, per_layer)| per_layer);
    let layers = runs.iter().filter_map(|&i| last(i).map(Vec::len)).max().unwrap_or(0);
    (0..layers)
        .map(|l| {
            let v: Vec<f64> =
                runs.iter().filter_map(|&i| last(i).and_then(|e| e.get(l).copied())).collect();
            min_max(&v)
        })
        .collect()
}

/// Judges every arm against its baseline (`baselines[a]`; an arm that is its own baseline gets
/// the baseline line) and returns one verdict line per arm, in arm order. An arm with runs not
/// finished, or whose baseline has some, is not judged.
fn judge_against_baseline(
    arms: &mut [ArmResult],
    baselines: &[usize],
    runs: &[RunRecord],
    metric: &str,
    higher_is_better: bool,
) -> Vec<String> {
    let mut verdicts = Vec::with_capacity(arms.len());
    for a in 0..arms.len() {
        let baseline = baselines[a];
        if arms[a].pending_runs > 0 {
            verdicts.push(if a == baseline {
                format!("{}: baseline with {} run(s) not finished yet; no arm is judged against it until they have", arms[a].name, arms[a].pending_runs)
            } else {
                format!("{}: {} run(s) not finished yet; no verdict until they have", arms[a].name, arms[a].pending_runs)
            });
            continue;
        }
        if a == baseline {
            verdicts.push(baseline_line(&arms[a], metric));
            continue;
        }
        if arms[a].no_finite_result {
            verdicts.push(no_result_line(&arms[a], metric));
            continue;
        }
        if arms[baseline].pending_runs > 0 {
            verdicts.push(format!(
                "{}: not judged yet: its baseline {} has runs not finished",
                arms[a].name, arms[baseline].name
            ));
            continue;
        }
        let base_values = final_metrics(runs, &arms[baseline].runs);
        let values = final_metrics(runs, &arms[a].runs);
        judge(&mut arms[a], &base_values, &values, higher_is_better);
        verdicts.push(advice(&arms[a], &arms[baseline], metric));
    }
    verdicts
}

/// Fills in an arm's difference from the baseline, given both sides' final metrics at their
/// best learning rates: the Welch interval, a bootstrap interval (2000 resamples, seed 17) when
/// both sides have values, and the verdict.
fn judge(arm: &mut ArmResult, base_values: &[f64], values: &[f64], higher_is_better: bool) {
    arm.difference = stats::welch(base_values, values);
    if !base_values.is_empty() && !values.is_empty() {
        arm.bootstrap = Some(stats::bootstrap_difference(base_values, values, 2000, 17));
    }
    arm.verdict = arm.difference.as_ref().map(|d| stats::verdict(d, higher_is_better));
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
        let preset =
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/mqar-smoke.toml"));
        let base = RunConfig::load(&preset, &[]).unwrap();
        let arms = [
            ("softmax", "softmax"),
            ("linear", "linear:elu1"),
            ("sigmoid", "sigmoid"),
            ("broken", "softmax"),
        ];
        let mut comparison =
            Comparison::of_mixers(&base, &arms, vec![1, 2, 3], vec![1e-3, 3e-3]).unwrap();
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
                    record.loss =
                        (0..10).map(|i| (i * 10, 3.0 / (1.0 + i as f64) + 0.01 * k)).collect();
                    record.grad_norm =
                        (0..10).map(|i| (i * 10, 1.0 + 0.1 * ((i as f64) + k).sin())).collect();
                    record.eval_metric =
                        (0..5).map(|i| (i * 20 + 10, m * (i as f64 + 1.0) / 5.0)).collect();
                    record.entropy = (0..5)
                        .map(|i| {
                            (i * 20 + 10, vec![0.9 - 0.02 * i as f64 - 0.01 * k, 0.5 + 0.01 * k])
                        })
                        .collect();
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
        assert_eq!(
            (r.task.as_str(), r.metric.as_str(), r.higher_is_better, r.baseline.as_str()),
            ("mqar", "accuracy", true, "softmax")
        );
        let each =
            |f: &dyn Fn(&ArmResult) -> String| r.arms.iter().map(f).collect::<Vec<_>>().join(" | ");
        assert_eq!(each(&|a| format!("{:e}", a.best_lr)), "3e-3 | 1e-3 | 3e-3 | 1e-3");
        assert_eq!(
            each(&|a| format!("{:?} {}", a.runs, a.failed_runs)),
            "[3, 4, 5] 0 | [6, 7, 8] 1 | [15, 16, 17] 0 | [18, 19, 20] 3"
        );
        assert_eq!(
            each(&|a| a
                .lr_sweep
                .iter()
                .map(|(lr, m, n)| format!("{lr:e}:{m:.4}/{n}"))
                .collect::<Vec<_>>()
                .join(",")),
            "1e-3:0.8100/3,3e-3:0.9100/3 | 1e-3:0.6100/2,3e-3:0.5233/3 | 1e-3:0.7100/3,3e-3:0.9100/3 | 1e-3:NaN/0,3e-3:NaN/0"
        );
        assert_eq!(
            each(&|a| format!("{} {:.4}", a.summary.n, a.summary.mean)),
            "3 0.9100 | 2 0.6100 | 3 0.9100 | 0 NaN"
        );
        assert_eq!(
            each(&|a| format!("{:?} {:?}", a.steps_to_target, a.median_steps_to_target)),
            "[Some(90), Some(90), Some(90)] Some(90.0) | [None, None] None | [Some(90), Some(90), Some(90)] Some(90.0) | [] None"
        );
        assert_eq!(
            each(&|a| format!("{} {} {}", a.tokens_per_s, a.params, a.state_floats)),
            "5300 1000 4096 | 5850 1001 2112 | 6700 1002 4096 | NaN 0 4096"
        );
        assert_eq!(
            each(&|a| format!(
                "{:.3?} {:.3?} {:.3?}",
                a.final_loss_range, a.grad_norm_p5_p95, a.entropy_range_per_layer
            )),
            "(0.300, 0.360) (0.900, 1.099) [(0.760, 0.820), (0.500, 0.560)] | (0.370, 0.400) (0.913, 1.084) [(0.720, 0.750), (0.570, 0.600)] \
             | (0.440, 0.500) (0.914, 1.093) [(0.620, 0.680), (0.640, 0.700)] | (NaN, NaN) (NaN, NaN) []"
        );
        assert_eq!(
            each(&|a| format!(
                "{:?} {:.4?} {:?}",
                a.verdict,
                a.bootstrap,
                a.difference.as_ref().map(|d| format!("{:.4}", d.mean))
            )),
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
                "broken: no finite result (all 3 run(s) at lr 1e-3 failed or diverged; see Failed runs); no verdict. Lower its \
                 learning rate, raise train.warmup_steps or set train.grad_clip, then run the comparison again."
                    .to_string(),
            ]
        );
        assert_eq!(each(&|a| a.no_finite_result.to_string()), "false | false | false | true");
        assert!(r.decision.contains("No finite result for broken"), "{}", r.decision);
    }

    /// Every run diverged: each arm is named as having no result, the metric and its chance level
    /// come from the same runs (MQAR's accuracy, 0.25: not the loss beside an accuracy's chance),
    /// and no line shows a NaN.
    #[test]
    fn arms_whose_runs_all_diverged_have_no_result_and_no_nan() {
        let (comparison, runs) = synthetic_comparison();
        let runs: Vec<RunRecord> = runs
            .into_iter()
            .map(|r| RunRecord {
                error: Some("training diverged at step 2".into()),
                metric: "accuracy".into(),
                higher_is_better: true,
                chance: Some(0.25),
                ..RunRecord { arm: r.arm, seed: r.seed, lr: r.lr, ..Default::default() }
            })
            .collect();
        let r = analyse(&comparison, runs, "diverged");
        assert_eq!(
            (r.metric.as_str(), r.higher_is_better, r.chance),
            ("accuracy", true, Some(0.25))
        );
        assert!(r.arms.iter().all(|a| a.no_finite_result));
        assert!(
            r.decision.starts_with("Inconclusive: no arm has a finite result"),
            "{}",
            r.decision
        );
        assert!(r.verdicts[0].starts_with(
            "softmax: baseline with no finite result (all 3 run(s) at lr 1e-3 failed"
        ));
        assert!(
            r.verdicts[1].starts_with("linear: no finite result (all 3 run(s)"),
            "{}",
            r.verdicts[1]
        );
        // (The report's table is checked end to end, in tests/reliability_eval.rs.)
        let page = format!("{} {:?}", r.decision, r.verdicts);
        assert!(!page.contains("NaN") && !page.contains("inf"), "{page}");
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
    }

    /// A run not started yet has no meta.json (its record says loss, with no chance level): the
    /// metric and chance level are a started run's, never a mix of the two.
    #[test]
    fn the_chance_level_is_the_named_metrics() {
        let failed = RunRecord {
            error: Some("diverged".into()),
            metric: "accuracy".into(),
            higher_is_better: true,
            chance: Some(0.25),
            ..Default::default()
        };
        let queued = RunRecord { pending: true, metric: "loss".into(), ..Default::default() };
        assert_eq!(
            main_metric(&[queued.clone(), failed.clone()]),
            ("accuracy".to_string(), true, Some(0.25))
        );
        assert_eq!(main_metric(&[queued]), ("loss".to_string(), false, None));
        let finished = RunRecord {
            metric: "loss".into(),
            chance: Some(65f64.ln()),
            final_metric: Some(2.0),
            ..Default::default()
        };
        assert_eq!(main_metric(&[failed, finished]), ("loss".to_string(), false, Some(65f64.ln())));
    }

    /// Runs that recorded sink mass get it in the advice: its range at the last evaluation per
    /// layer, and an alarm at twice its maximum.
    #[test]
    fn sink_mass_joins_the_monitoring_advice_when_recorded() {
        let (comparison, mut runs) = synthetic_comparison();
        for (i, r) in runs.iter_mut().enumerate() {
            r.sink_mass = vec![(10, vec![0.9, 0.9]), (90, vec![0.2 + 0.01 * (i % 3) as f64, 0.05])];
        }
        let r = analyse(&comparison, runs, "synthetic");
        let linear = r.arms.iter().find(|a| a.name == "linear").unwrap();
        assert_eq!(
            format!("{:.3?}", linear.sink_mass_range_per_layer),
            "[(0.200, 0.210), (0.050, 0.050)]"
        );
        let verdict = r.verdicts.iter().find(|v| v.starts_with("linear:")).unwrap();
        assert!(
            verdict.contains("sink mass per layer within [0.20–0.21, 0.05–0.05]; roll back"),
            "{verdict}"
        );
        assert!(
            verdict.contains(
                "twice its p95, a layer's sink mass exceeds twice its maximum, or a layer's entropy"
            ),
            "{verdict}"
        );
    }
}
