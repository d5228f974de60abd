//! A/B comparison of attention variants: every arm is trained over the same seeds (same data
//! order; same initial weights wherever the arms' parameter shapes agree) and, when several
//! learning rates are given, each arm is judged at its own best one (as zoology does).
//!
//! A comparison is described by a TOML file (`configs/compare/*.toml`):
//!
//! ```toml
//! preset = "configs/mqar-smoke.toml"   # the run every arm starts from
//! set = ["train.steps=300"]            # overrides for every arm
//! seeds = [1, 2, 3]
//! lrs = [1e-3, 3e-3]                   # empty: the preset's train.lr
//! target = 0.9                         # main-metric threshold for steps-to-target (optional)
//! baseline = "softmax"                 # default: the first arm
//!
//! [[arm]]
//! name = "softmax"
//! set = ["model.mixer=softmax"]
//!
//! [[arm]]
//! name = "linear:elu1"
//! set = ["model.mixer=linear:elu1"]
//! ```
//!
//! The `set` strings are the file's boundary: [`CompareSpec::resolve`] reads the preset once and
//! applies them, giving a typed [`Comparison`] (one [`RunConfig`] per arm). `swap` and
//! `reproduce` build a `Comparison` directly by editing config fields; [`Comparison::plan`]
//! sets each run's learning rate and seed the same way.

use crate::stats::{self, Difference, Summary, Verdict};
use attnlab_train::util::{median, one_line, quantile};
use attnlab_train::{MetricsRecord, RunConfig, RunDir, Verbosity, read_metrics, train};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One arm: a name and the config overrides that make it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    pub name: String,
    #[serde(default)]
    pub set: Vec<String>,
}

/// A whole comparison, as read from its TOML file or built from command-line flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSpec {
    pub preset: PathBuf,
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub lrs: Vec<f64>,
    #[serde(default)]
    pub target: Option<f64>,
    #[serde(default)]
    pub baseline: Option<String>,
    #[serde(rename = "arm")]
    pub arms: Vec<ArmSpec>,
}

fn default_seeds() -> Vec<u64> {
    vec![1, 2, 3]
}

/// The preset a task name maps to for `attnlab compare --task NAME` (the one-minute presets).
pub fn task_preset(task: &str) -> Result<PathBuf, String> {
    let name = match task {
        "mqar" => "mqar",
        "icl" | "icl_regression" | "icl-regression" => "icl-regression",
        "char" | "char_lm" | "shakespeare-char" => "shakespeare-char",
        "bpe" | "bpe_lm" | "shakespeare-bpe" => "shakespeare-bpe",
        "separation" => "separation",
        other => {
            return Err(format!(
                "unknown task '{other}': expected mqar, icl_regression, char_lm, bpe_lm or separation (or pass --preset FILE)"
            ));
        }
    };
    Ok(PathBuf::from(format!("configs/{name}-smoke.toml")))
}

impl CompareSpec {
    /// Reads a comparison file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read comparison {}: {e} (see configs/compare/)", path.display()))?;
        let spec: CompareSpec =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), one_line(&e.to_string())))?;
        Ok(spec)
    }

    pub fn baseline_index(&self) -> Result<usize, String> {
        match &self.baseline {
            None => Ok(0),
            Some(name) => self.arms.iter().position(|a| &a.name == name).ok_or_else(|| {
                let names: Vec<&str> = self.arms.iter().map(|a| a.name.as_str()).collect();
                format!("baseline '{name}' is not an arm: expected one of {}", names.join(", "))
            }),
        }
    }

    /// Reads the preset once and applies the file's overrides, shared and per arm, to a copy of
    /// it for each arm (together, so validation sees the finished arm).
    pub fn resolve(&self) -> Result<Comparison, String> {
        let baseline = self.baseline_index()?;
        let preset = RunConfig::read(&self.preset).map_err(|e| e.to_string())?;
        let arms = self
            .arms
            .iter()
            .map(|arm| {
                let sets = [&self.set[..], &arm.set[..]].concat();
                let config = preset.clone().with_overrides(&sets).map_err(|e| format!("arm '{}': {}: {e}", arm.name, self.preset.display()))?;
                Ok(Arm { name: arm.name.clone(), config })
            })
            .collect::<Result<_, String>>()?;
        Ok(Comparison { seeds: self.seeds.clone(), lrs: self.lrs.clone(), target: self.target, baseline, arms })
    }

    /// Resolves every run's config up front, so a bad override fails before any training.
    pub fn plan(&self) -> Result<Vec<PlannedRun>, String> {
        self.resolve()?.plan()
    }
}

/// A comparison ready to run: every arm's config resolved and typed.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub seeds: Vec<u64>,
    /// Learning rates every arm is trained at; empty: each arm's own `train.lr`.
    pub lrs: Vec<f64>,
    /// Main-metric threshold for steps-to-target.
    pub target: Option<f64>,
    /// Index into `arms` of the arm the others are judged against.
    pub baseline: usize,
    pub arms: Vec<Arm>,
}

/// One arm of a comparison: its name and the config its runs start from.
#[derive(Clone, Debug, Serialize)]
pub struct Arm {
    pub name: String,
    pub config: RunConfig,
}

impl Comparison {
    /// One arm per attention spec on the same base config: arm `name` is `base` with its
    /// `model.mixer` set to `mixer`. The first arm is the baseline.
    pub fn of_mixers(base: &RunConfig, arms: &[(&str, &str)], seeds: Vec<u64>, lrs: Vec<f64>) -> Result<Self, String> {
        let arms = arms
            .iter()
            .map(|&(name, mixer)| {
                let mut config = base.clone();
                config.model.mixer = mixer.parse().map_err(|e| format!("arm '{name}': {e}"))?;
                Ok(Arm { name: name.to_string(), config })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { seeds, lrs, target: None, baseline: 0, arms })
    }

    /// `attnlab compare --variants a,b`: one arm per variant on `preset` with the `--set`
    /// overrides, seeds `1..=seeds`.
    pub fn from_variants(preset: &Path, variants: &[String], seeds: usize, lrs: Vec<f64>, sets: &[String]) -> Result<Self, String> {
        let base = RunConfig::load(preset, sets).map_err(|e| e.to_string())?;
        let arms: Vec<(&str, &str)> = variants.iter().map(|v| (v.as_str(), v.as_str())).collect();
        Self::of_mixers(&base, &arms, (1..=seeds as u64).collect(), lrs)
    }

    /// Every run's config: each arm's, at each learning rate and seed, validated before any
    /// training starts.
    pub fn plan(&self) -> Result<Vec<PlannedRun>, String> {
        if self.arms.is_empty() {
            return Err("a comparison needs at least one [[arm]]".into());
        }
        if self.seeds.is_empty() {
            return Err("seeds is empty: give at least one seed".into());
        }
        let mut names: Vec<&str> = self.arms.iter().map(|a| a.name.as_str()).collect();
        names.sort();
        names.dedup();
        if names.len() != self.arms.len() {
            return Err("arm names must be distinct".into());
        }
        if self.baseline >= self.arms.len() {
            return Err(format!("baseline arm {} does not exist: there are {} arms", self.baseline, self.arms.len()));
        }
        let mut runs = Vec::new();
        for (index, arm) in self.arms.iter().enumerate() {
            let lrs = if self.lrs.is_empty() { vec![arm.config.train.lr] } else { self.lrs.clone() };
            for &lr in &lrs {
                for &seed in &self.seeds {
                    let mut config = arm.config.clone();
                    config.train.lr = lr;
                    // The decay floor may not exceed the peak, so a low lr lowers it too.
                    config.train.min_lr = config.train.min_lr.min(lr);
                    config.seed = seed;
                    config.validate().map_err(|e| format!("arm '{}': {e}", arm.name))?;
                    runs.push(PlannedRun { arm: index, seed, lr, config });
                }
            }
        }
        Ok(runs)
    }
}

/// One training run of a comparison.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    pub arm: usize,
    pub seed: u64,
    pub lr: f64,
    pub config: RunConfig,
}

/// What one finished (or failed) run contributes to the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRecord {
    pub arm: String,
    pub seed: u64,
    pub lr: f64,
    pub run_dir: PathBuf,
    /// The error message of a failed run; its numbers are empty.
    pub error: Option<String>,
    /// Main eval metric after the last step, its name and direction.
    pub final_metric: Option<f64>,
    pub metric: String,
    pub higher_is_better: bool,
    pub params: usize,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    /// `(step, value)` curves from metrics.jsonl.
    pub loss: Vec<(usize, f64)>,
    pub grad_norm: Vec<(usize, f64)>,
    pub eval_metric: Vec<(usize, f64)>,
    /// `(step, entropy per layer)` at each evaluation.
    pub entropy: Vec<(usize, Vec<f64>)>,
    /// Every metric of the last evaluation (e.g. in-context regression's error per example).
    #[serde(default)]
    pub final_eval: std::collections::BTreeMap<String, f64>,
}

/// Reads the curves of a run from its `metrics.jsonl`. Non-finite values (written as `null`)
/// are left out of the curves.
pub fn read_curves(run_dir: &Path, metric: &str, record: &mut RunRecord) {
    let mut speeds = Vec::new();
    for line in read_metrics(run_dir).unwrap_or_default() {
        match line {
            MetricsRecord::Train(t) => {
                push_finite(&mut record.loss, t.step, t.loss);
                push_finite(&mut record.grad_norm, t.step, t.grad_norm);
                speeds.push(t.tokens_per_s);
            }
            MetricsRecord::Eval(e) => {
                if let Some(&m) = e.eval.get(metric) {
                    push_finite(&mut record.eval_metric, e.step, m);
                }
                record.entropy.push((e.step, e.attention_entropy.into_iter().filter(|v| v.is_finite()).collect()));
                record.final_eval = e.eval.into_iter().filter(|(_, v)| v.is_finite()).collect();
            }
        }
    }
    // The first logging window includes start-up; the median ignores it.
    record.tokens_per_s = median(&speeds);
}

fn push_finite(curve: &mut Vec<(usize, f64)>, step: usize, value: f64) {
    if value.is_finite() {
        curve.push((step, value));
    }
}

/// Trains every planned run into `out/runs/`, printing one line per finished run with an
/// overall ETA; a failed run is recorded and the rest go on.
pub fn run_all(spec: &Comparison, plan: &[PlannedRun], out: &Path, quiet: bool) -> Vec<RunRecord> {
    let started = Instant::now();
    let mut records = Vec::with_capacity(plan.len());
    for (i, run) in plan.iter().enumerate() {
        let arm = &spec.arms[run.arm].name;
        let dir = out.join("runs").join(safe_name(arm)).join(format!("lr{:e}-seed{}", run.lr, run.seed));
        let mut record = RunRecord { arm: arm.clone(), seed: run.seed, lr: run.lr, run_dir: dir.clone(), ..Default::default() };
        let t0 = Instant::now();
        let result = RunDir::create(&dir).and_then(|rd| train(&run.config, &rd, false, Verbosity::Quiet).map_err(|e| e.to_string()));
        record.wall_s = t0.elapsed().as_secs_f64();
        let metric_name = match &result {
            Ok(o) => {
                record.final_metric = o.evals.last().map(|e| e.1);
                record.params = o.params;
                record.metric = o.metric.name.to_string();
                record.higher_is_better = o.metric.higher_is_better;
                Some(o.metric.name)
            }
            Err(e) => {
                record.error = Some(e.clone());
                None
            }
        };
        read_curves(&dir, metric_name.unwrap_or("loss"), &mut record);
        let done = i + 1;
        let eta = started.elapsed().as_secs_f64() / done as f64 * (plan.len() - done) as f64;
        if !quiet {
            let what = match (&record.error, record.final_metric) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, Some(m)) => format!("{} {m:.4}", metric_name.unwrap_or("metric")),
                (None, None) => "no evaluation".into(),
            };
            println!(
                "[{done}/{}] {arm} lr {:e} seed {}: {what} ({:.1} s) | ETA {}",
                plan.len(),
                run.lr,
                run.seed,
                record.wall_s,
                format_duration(eta)
            );
        }
        records.push(record);
    }
    records
}

pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn safe_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' { c } else { '-' }).collect()
}

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

fn half_width(s: &Summary) -> f64 {
    0.5 * (s.ci_high - s.ci_low)
}

/// The verdict line of an arm, with seed 2's "swap with monitoring and a way back" advice:
/// the ranges this arm showed in the PoC are the alarms to set after a swap.
fn advice(arm: &ArmResult, base: &ArmResult, metric: &str) -> String {
    let verdict = match (&arm.difference, arm.verdict) {
        (Some(d), Some(v)) => format!(
            "{} than {} at 95% (Δ{metric} {:+.4}, CI [{:+.4}, {:+.4}], p = {:.3})",
            v.as_str(),
            base.name,
            d.mean,
            d.ci_low,
            d.ci_high,
            d.p_value
        )
        .replace("indistinguishable than", "indistinguishable from"),
        _ => format!("not enough finished seeds to compare with {} (need 2 per arm)", base.name),
    };
    let entropy: Vec<String> = arm.entropy_range_per_layer.iter().map(|(lo, hi)| format!("{lo:.2}–{hi:.2}")).collect();
    let action = match arm.verdict {
        Some(Verdict::Worse) => "do not swap".to_string(),
        Some(Verdict::Better) => "swap candidate".to_string(),
        _ => "no evidence either way: swap only for a non-quality reason (speed, state size)".to_string(),
    };
    format!(
        "{}: {verdict}; {action}. After a swap, monitor: training loss within {:.3}–{:.3}, gradient norm within {:.3}–{:.3} \
         (p5–p95 of the second half of training), attention entropy per layer within [{}]; roll back to {} if the loss \
         leaves that range for long, the gradient norm exceeds twice its p95, or a layer's entropy collapses below half its minimum.",
        arm.name,
        arm.final_loss_range.0,
        arm.final_loss_range.1,
        arm.grad_norm_p5_p95.0,
        arm.grad_norm_p5_p95.1,
        entropy.join(", "),
        base.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_durations() {
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(&[0.0, 10.0], 0.25), 2.5);
        assert!(quantile(&[], 0.5).is_nan());
        assert_eq!(format_duration(59.4), "59s");
        assert_eq!(format_duration(125.0), "2m05s");
        assert_eq!(format_duration(3700.0), "1h01m");
    }

    #[test]
    fn spec_files_parse_and_task_names_map_to_presets() {
        let spec: CompareSpec = toml::from_str(
            "preset = \"configs/mqar-smoke.toml\"\nseeds = [1, 2]\n[[arm]]\nname = \"a\"\nset = [\"model.mixer=softmax\"]\n[[arm]]\nname = \"b\"\n",
        )
        .unwrap();
        assert_eq!(spec.arms.len(), 2);
        assert_eq!(spec.baseline_index().unwrap(), 0);
        assert!(toml::from_str::<CompareSpec>("preset = \"x\"\nbogus = 1\n[[arm]]\nname = \"a\"\n").is_err());
        assert_eq!(task_preset("icl").unwrap(), PathBuf::from("configs/icl-regression-smoke.toml"));
        assert!(task_preset("poetry").unwrap_err().contains("mqar"));
        let bad = CompareSpec { baseline: Some("c".into()), ..spec };
        assert!(bad.baseline_index().unwrap_err().contains("a, b"));
    }

    #[test]
    fn typed_plan_matches_the_configs_the_override_strings_give() {
        let preset = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/mqar-smoke.toml"));
        let spec = CompareSpec {
            preset: preset.clone(),
            set: vec!["train.steps=7".into(), "train.min_lr=1e-4".into()],
            seeds: vec![4, 9],
            lrs: vec![3e-3, 1e-5],
            target: None,
            baseline: Some("linear".into()),
            arms: vec![
                ArmSpec { name: "softmax".into(), set: vec!["model.mixer=softmax".into()] },
                ArmSpec { name: "linear".into(), set: vec!["model.mixer=linear:elu1".into()] },
            ],
        };
        let comparison = spec.resolve().unwrap();
        assert_eq!(comparison.baseline, 1);
        // reproduce writes what ran as spec.toml.
        let written = toml::to_string(&comparison).unwrap();
        assert!(written.contains("[[arms]]") && written.contains("linear:elu1"), "{written}");
        let plan = comparison.plan().unwrap();
        assert_eq!(plan.len(), 8);
        for run in &plan {
            let arm = &spec.arms[run.arm];
            // What compare used to do: the preset re-read with every change as a --set string.
            let mut sets = [&spec.set[..], &arm.set[..]].concat();
            sets.push(format!("train.lr={:e}", run.lr));
            if run.lr < 1e-4 {
                sets.push(format!("train.min_lr={:e}", run.lr));
            }
            sets.push(format!("seed={}", run.seed));
            assert_eq!(run.config, RunConfig::load(&preset, &sets).unwrap(), "{} lr {} seed {}", arm.name, run.lr, run.seed);
        }
        let unknown = CompareSpec { arms: vec![ArmSpec { name: "x".into(), set: vec!["model.mixer=linear:gelu".into()] }], baseline: None, ..spec };
        let err = unknown.plan().unwrap_err();
        assert!(err.starts_with("arm 'x': ") && err.contains("mqar-smoke.toml"), "{err}");
        let base = RunConfig::load(&preset, &[]).unwrap();
        assert!(Comparison::of_mixers(&base, &[("y", "linear:gelu")], vec![1], vec![]).unwrap_err().starts_with("arm 'y': "));
    }

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
