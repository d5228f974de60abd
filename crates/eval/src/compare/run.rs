//! Running a comparison: [`run_all`] trains every planned run into its own run directory and
//! keeps going past a failed one; each run leaves a [`RunRecord`], its final numbers and its
//! curves read back from the typed `metrics.jsonl` records.

use super::spec::{Comparison, PlannedRun};
use attnlab_train::util::median;
use attnlab_train::{MetricsRecord, RunConfig, RunDir, TrainOutcome, Verbosity, read_metrics, train};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    /// `(step, sink mass per layer)` at each evaluation.
    #[serde(default)]
    pub sink_mass: Vec<(usize, Vec<f64>)>,
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
                if !e.sink_mass.is_empty() {
                    record.sink_mass.push((e.step, e.sink_mass.into_iter().filter(|v| v.is_finite()).collect()));
                }
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
        let result = train_or_resume(run, &dir);
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

/// Trains one planned run into `dir`; where `dir` already holds it (a comparison stopped and run
/// again), resumes it from its newest checkpoint, or, if it finished, only reads it back.
fn train_or_resume(run: &PlannedRun, dir: &Path) -> Result<TrainOutcome, String> {
    let config_file = dir.join(attnlab_train::run_dir::CONFIG_FILE);
    if !config_file.is_file() {
        let rd = RunDir::create(dir)?;
        return train(&run.config, &rd, false, Verbosity::Quiet).map_err(|e| e.to_string());
    }
    let rd = RunDir::open_for_writing(dir)?;
    let saved = RunConfig::load(&config_file, &[]).map_err(|e| e.to_string())?;
    if saved != run.config {
        return Err(format!("{} holds a run of another config: this --out belongs to another comparison; choose another --out", dir.display()));
    }
    train(&run.config, &rd, true, Verbosity::Quiet).map_err(|e| e.to_string())
}

/// Prepares `out` for `spec`: a new or empty directory gets the comparison's plan
/// (`comparison.json`); one holding the same plan (an interrupted or finished run of this very
/// comparison) is resumed, `Ok(true)`; anything else is refused, untouched.
pub fn prepare_dir(spec: &Comparison, out: &Path) -> Result<bool, String> {
    let plan = serde_json::to_string_pretty(spec).map_err(|e| e.to_string())?;
    let file = out.join("comparison.json");
    if let Ok(saved) = std::fs::read_to_string(&file) {
        if saved != plan {
            return Err(format!("{} holds another comparison (its comparison.json differs): choose another --out", out.display()));
        }
        return Ok(true);
    }
    let occupied = std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(format!("{} is not empty and holds no comparison: choose another --out", out.display()));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let temp = out.join(".tmp-comparison.json");
    std::fs::write(&temp, &plan).and_then(|_| std::fs::rename(&temp, &file)).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(false)
}

/// A duration for the progress line: `59s`, `2m05s`, `1h01m`.
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

/// `name` as a directory name: anything but ASCII letters, digits, `_` and `.` becomes `-`.
fn safe_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' { c } else { '-' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(format_duration(59.4), "59s");
        assert_eq!(format_duration(125.0), "2m05s");
        assert_eq!(format_duration(3700.0), "1h01m");
    }
}
