//! Running a comparison's plan and reading back what its runs left.
//!
//! [`run_entry`] trains one [`PlanEntry`] (the worker every executor calls: this process, a
//! `--jobs N` worker process, a Slurm array task); [`execute`] is the local executor, one run at a
//! time in this process or N at a time as worker processes; [`read_records`] reads each entry's
//! [`RunRecord`] from its run directory alone, so the analysis is the same whichever executor
//! ran the plan, and works on a plan that is only partly run.

use super::error::CompareError;
use super::plan::{PlanEntry, RunStatus, prepare_dir, write_atomic};
use super::spec::Comparison;
use crate::stats::median;
use attnlab_train::{
    MetricsRecord, RunConfig, RunDir, RunMeta, TrainError, Verbosity, read_metrics, train,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one run contributes to the report, read from its run directory.
/// A per-layer value at each evaluation: `(step, one value per layer)`.
pub type LayerCurve = Vec<(usize, Vec<f64>)>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRecord {
    /// The plan entry's id (`<arm>/lr<lr>-seed<seed>`).
    #[serde(default)]
    pub id: String,
    pub arm: String,
    pub seed: u64,
    pub lr: f64,
    pub run_dir: PathBuf,
    /// The error message of a failed run; its numbers are empty.
    pub error: Option<String>,
    /// Not finished yet: queued, running, or interrupted.
    #[serde(default)]
    pub pending: bool,
    /// Main eval metric of the finished run's last evaluation, its name and direction.
    pub final_metric: Option<f64>,
    pub metric: String,
    pub higher_is_better: bool,
    /// The main metric at chance (meta.json; absent in runs written before it was recorded).
    #[serde(default)]
    pub chance: Option<f64>,
    pub params: usize,
    pub tokens_per_s: f64,
    /// `(step, value)` curves from metrics.jsonl.
    pub loss: Vec<(usize, f64)>,
    pub grad_norm: Vec<(usize, f64)>,
    pub eval_metric: Vec<(usize, f64)>,
    /// `(step, entropy per layer)` at each evaluation.
    pub entropy: LayerCurve,
    /// `(step, sink mass per layer)` at each evaluation.
    #[serde(default)]
    pub sink_mass: LayerCurve,
    /// Every metric of the last evaluation (e.g. in-context regression's error per example).
    #[serde(default)]
    pub final_eval: std::collections::BTreeMap<String, f64>,
}

/// Reads the curves of a run from its `metrics.jsonl`, and the main metric of its last
/// evaluation as `final_metric` (even when non-finite). Non-finite values (written as `null`)
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
                    record.final_metric = Some(m);
                }
                record.entropy.push((
                    e.step,
                    e.attention_entropy.into_iter().filter(|v| v.is_finite()).collect(),
                ));
                if !e.sink_mass.is_empty() {
                    record.sink_mass.push((
                        e.step,
                        e.sink_mass.into_iter().filter(|v| v.is_finite()).collect(),
                    ));
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

/// The record of `entry` as its run directory (under the report directory `out`) shows it:
/// finished runs with their numbers, failed ones with their error, the rest `pending`.
pub fn read_record(out: &Path, entry: &PlanEntry) -> RunRecord {
    let dir = entry.run_dir(out);
    let mut record = RunRecord {
        id: entry.id.clone(),
        arm: entry.arm.clone(),
        seed: entry.seed,
        lr: entry.lr,
        run_dir: dir.clone(),
        ..Default::default()
    };
    // A run not started yet has no meta.json; one from before the metric was recorded, none.
    let meta = RunMeta::read(&dir).ok();
    record.params = meta.as_ref().map_or(0, |m| m.params);
    let metric = meta.and_then(|m| m.main_metric);
    record.metric = metric.as_ref().map_or_else(|| "loss".to_string(), |m| m.name.clone());
    record.higher_is_better = metric.as_ref().is_some_and(|m| m.higher_is_better);
    record.chance = metric.and_then(|m| m.chance);
    read_curves(&dir, &record.metric.clone(), &mut record);
    match entry.status(out) {
        RunStatus::Finished => {}
        RunStatus::Failed(error) => {
            record.error = Some(error);
            record.final_metric = None;
        }
        RunStatus::Queued | RunStatus::Started => {
            record.pending = true;
            record.final_metric = None;
        }
    }
    record
}

/// Every entry's record, in plan order.
pub fn read_records(out: &Path, entries: &[PlanEntry]) -> Vec<RunRecord> {
    entries.iter().map(|e| read_record(out, e)).collect()
}

/// Why [`run_entry`] did not finish its run.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// Training failed; the error is recorded beside the run directory.
    #[error(transparent)]
    Failed(TrainError),
    /// The run could not be taken (another process is writing it, or the plan entry does not
    /// match its directory); nothing was recorded.
    #[error(transparent)]
    NotTaken(CompareError),
}

/// Trains plan entry `entry` of the comparison in `out` into its run directory, as that
/// directory's one writer: a new run from the start, a started one resumed from its newest
/// checkpoint, a finished one only read back. A failure is recorded in the entry's error file
/// (and cleared by the next attempt).
pub fn run_entry(out: &Path, entry: &PlanEntry) -> Result<(), EntryError> {
    if super::plan::fingerprint(&entry.config) != entry.fingerprint {
        return Err(EntryError::NotTaken(CompareError::Fingerprint {
            index: entry.index,
            id: entry.id.clone(),
        }));
    }
    let dir = entry.run_dir(out);
    let (run, resume) = take_run_dir(&dir, &entry.config).map_err(EntryError::NotTaken)?;
    let error_file = entry.error_file(out);
    let _ = std::fs::remove_file(&error_file);
    train(&entry.config, &run, resume, Verbosity::Quiet).map(|_| ()).map_err(|e| {
        let _ = write_atomic(&error_file, &e.to_string());
        EntryError::Failed(e)
    })
}

/// Opens `dir` as its one writer: created for a new run, reopened to resume one that holds
/// `config`; a directory holding another config is refused.
fn take_run_dir(dir: &Path, config: &RunConfig) -> Result<(RunDir, bool), CompareError> {
    let config_file = dir.join(attnlab_train::run_dir::CONFIG_FILE);
    if !config_file.is_file() {
        return Ok((RunDir::create(dir).map_err(CompareError::RunDir)?, false));
    }
    let run = RunDir::open_for_writing(dir).map_err(CompareError::RunDir)?;
    let saved = RunConfig::load(&config_file, &[]).map_err(CompareError::RunConfig)?;
    if &saved != config {
        return Err(CompareError::OtherConfig { dir: dir.to_path_buf() });
    }
    Ok((run, true))
}

/// Set for a `--jobs` worker process: the pid of the executor that started it, which the worker
/// must not outlive (a killed executor's workers would otherwise train on, holding their runs'
/// locks against the rerun).
pub const EXECUTOR_PID_VAR: &str = "ATTNLAB_EXECUTOR_PID";

/// How this machine executes a comparison's plan.
#[derive(Clone, Debug)]
pub struct LocalExecutor {
    /// Runs at a time. 1: one after another in this process; more: that many worker processes,
    /// the cores divided between them.
    pub jobs: usize,
    /// The `attnlab` binary the worker processes run (`None`: this process only, `jobs` 1).
    pub worker: Option<PathBuf>,
    /// Print only what must be said.
    pub quiet: bool,
    /// Every run on this backend, whatever its config says (`reproduce --device`).
    pub device: Option<attnlab_model::BackendKind>,
    /// Every run data parallel on these devices (`reproduce --devices`).
    pub devices: Option<attnlab_model::DeviceList>,
    /// Plan every comparison and train none (`reproduce --plan`): each reads back as pending.
    pub plan_only: bool,
    /// Runs and optimizer steps planned so far (what `--plan` totals).
    pub planned: std::cell::Cell<(usize, usize)>,
}

impl LocalExecutor {
    /// One run at a time in this process, on each config's own device.
    pub fn sequential(quiet: bool) -> Self {
        Self {
            jobs: 1,
            worker: None,
            quiet,
            device: None,
            devices: None,
            plan_only: false,
            planned: Default::default(),
        }
    }

    /// Puts a run on the executor's backend or devices, where it names them.
    pub fn place(&self, config: &mut attnlab_train::RunConfig) {
        if let Some(device) = self.device {
            config.device = device;
            config.devices = None;
        }
        if let Some(list) = &self.devices {
            config.device = list.backend();
            config.devices = (list.len() > 1).then(|| list.clone());
        }
    }

    /// Threads each of `jobs` concurrent runs gets: the hardware threads divided evenly, at least one.
    pub fn threads_per_job(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / self.jobs.max(1)).max(1)
    }
}

/// Prepares `out` for `spec` (see [`prepare_dir`]), runs every entry not yet finished, and
/// reads back every record: what `reproduce` and `swap` call.
pub fn run_all(
    spec: &Comparison,
    out: &Path,
    executor: &LocalExecutor,
) -> Result<Vec<RunRecord>, CompareError> {
    let _writer = prepare_dir(spec, out)?.lock;
    let entries = super::plan::read_plan(out)?;
    execute(out, &entries, executor)?;
    Ok(read_records(out, &entries))
}

/// Runs every entry of `entries` that has not finished (failed ones are tried again), `jobs` at
/// a time, printing one line per finished run with the counts of finished, running and queued
/// runs and an ETA.
pub fn execute(
    out: &Path,
    entries: &[PlanEntry],
    executor: &LocalExecutor,
) -> Result<(), CompareError> {
    let todo: Vec<&PlanEntry> =
        entries.iter().filter(|e| e.status(out) != RunStatus::Finished).collect();
    let mut progress = Tally {
        total: entries.len(),
        done: entries.len() - todo.len(),
        started: Instant::now(),
        finished_here: 0,
        quiet: executor.quiet,
    };
    if progress.done > 0 && !executor.quiet {
        println!("{} of {} runs finished already: kept", progress.done, entries.len());
    }
    match (&executor.worker, executor.jobs) {
        (Some(worker), jobs) if jobs > 1 => {
            run_processes(out, &todo, worker, jobs, executor.threads_per_job(), &mut progress)
        }
        _ => {
            for (i, entry) in todo.iter().enumerate() {
                let t0 = Instant::now();
                let result = run_entry(out, entry).map_err(|e| e.to_string());
                progress.report(out, entry, result.err(), t0.elapsed(), 0, todo.len() - i - 1);
            }
            Ok(())
        }
    }
}

/// The local executor's progress line.
struct Tally {
    total: usize,
    done: usize,
    started: Instant,
    /// Runs finished by this invocation (the ETA's rate).
    finished_here: usize,
    quiet: bool,
}

impl Tally {
    fn report(
        &mut self,
        out: &Path,
        entry: &PlanEntry,
        error: Option<String>,
        took: Duration,
        running: usize,
        queued: usize,
    ) {
        self.done += 1;
        self.finished_here += 1;
        if self.quiet {
            return;
        }
        let record = read_record(out, entry);
        let what = match (error.or(record.error), record.final_metric) {
            (Some(e), _) => format!("FAILED: {e}"),
            (None, Some(m)) if m.is_finite() => format!("{} {m:.4}", record.metric),
            (None, Some(_)) => format!("no finite {}", record.metric),
            (None, None) => "not finished".into(),
        };
        // Runs left, at the rate this invocation has finished them.
        let eta = self.started.elapsed().as_secs_f64() / self.finished_here as f64
            * (self.total - self.done) as f64;
        println!(
            "[{}/{} done | {running} running | {queued} queued] {}: {what} ({:.1} s) | ETA {}",
            self.done,
            self.total,
            entry.label(),
            took.as_secs_f64(),
            format_duration(eta)
        );
    }
}

/// `jobs` worker processes at a time, each `attnlab compare --out OUT --run-only --index I`
/// with `threads` threads; a worker's stderr goes to `OUT/logs/<index>.log`.
fn run_processes(
    out: &Path,
    todo: &[&PlanEntry],
    worker: &Path,
    jobs: usize,
    threads: usize,
    progress: &mut Tally,
) -> Result<(), CompareError> {
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|reason| CompareError::Create { path: logs.clone(), reason })?;
    let mut queue = todo.iter().copied();
    let mut running: Vec<(&PlanEntry, std::process::Child, Instant)> = Vec::new();
    loop {
        while running.len() < jobs {
            let Some(entry) = queue.next() else { break };
            let log_path = logs.join(format!("{}.log", entry.index));
            let log = std::fs::File::create(&log_path)
                .map_err(|reason| CompareError::Create { path: log_path.clone(), reason })?;
            let child = std::process::Command::new(worker)
                .args([
                    "compare",
                    "--run-only",
                    "--quiet",
                    "--index",
                    &entry.index.to_string(),
                    "--out",
                ])
                .arg(out)
                .env("RAYON_NUM_THREADS", threads.to_string())
                // The worker dies with this process (see the CLI's `die_with_executor`).
                .env(EXECUTOR_PID_VAR, std::process::id().to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|reason| CompareError::StartWorker { worker: worker.into(), reason })?;
            running.push((entry, child, Instant::now()));
        }
        if running.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < running.len() {
            let Some(status) =
                running[i].1.try_wait().map_err(|reason| CompareError::WaitWorker { reason })?
            else {
                i += 1;
                continue;
            };
            let (entry, _, t0) = running.swap_remove(i);
            let log = logs.join(format!("{}.log", entry.index));
            let error = (!status.success()).then(|| worker_failure(out, entry, status, &log));
            if std::fs::metadata(&log).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&log);
            }
            progress.report(out, entry, error, t0.elapsed(), running.len(), queue.len());
        }
    }
}

/// What a worker's non-zero exit means. Exit 1 is a failed run (the worker recorded it); a
/// crash (a panic, a signal) is recorded here, with the last line of its log.
fn worker_failure(
    out: &Path,
    entry: &PlanEntry,
    status: std::process::ExitStatus,
    log: &Path,
) -> String {
    let last_line = std::fs::read_to_string(log)
        .ok()
        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string))
        .unwrap_or_default();
    if let RunStatus::Failed(error) = entry.status(out) {
        return error;
    }
    let message = format!("worker {status}: {last_line} (log: {})", log.display());
    if status.code() != Some(2) {
        // Not recorded by the worker itself (2 is a run it could not take: someone else's).
        let _ = write_atomic(&entry.error_file(out), &message);
    }
    message
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
