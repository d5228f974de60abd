//! What every reproduction uses: its size, the checks it states and the outcome it returns, and
//! running one comparison (or only planning it, under `--plan`).

use crate::compare::{
    CompareError, Comparison, LocalExecutor, Results, RunRecord, analyse, run_all,
};
use crate::report::{ReportError, Table};
use attnlab_train::{ConfigError, RunConfig};
use serde::Serialize;
use std::path::Path;

/// Why a reproduction could not run or write its report; one line naming the reproduction,
/// preset or comparison.
#[derive(Debug, thiserror::Error)]
pub enum ReproduceError {
    #[error("unknown reproduction '{name}': expected one of {names}", names = .names.join(", "))]
    UnknownName { name: String, names: Vec<&'static str> },
    #[error("reproduction '{name}' has no runner")]
    NoRunner { name: String },
    #[error("unknown size '{size}': expected smoke, full or paper")]
    UnknownSize { size: String },
    /// A reproduction's preset cannot be read.
    #[error(transparent)]
    Preset(#[from] ConfigError),
    /// A preset of another task than the reproduction needs (`task`: `an mqar`, `a char_lm`).
    #[error("{preset} is not {task} preset")]
    NotTaskPreset { preset: String, task: &'static str },
    #[error("{preset}: icl-gap needs an icl_regression task, the preset has {found}")]
    NotIclPreset { preset: String, found: &'static str },
    #[error(transparent)]
    Compare(#[from] CompareError),
    #[error(transparent)]
    Report(#[from] ReportError),
    /// No run of a comparison finished (`first`: the first run's error).
    #[error("every run of '{title}' failed; first error: {first}")]
    AllFailed { title: String, first: String },
    #[error("cannot write results.json: {0}")]
    Json(serde_json::Error),
    /// The linearisation reproduction's teacher or one of its arms (the message names which).
    #[error("{0}")]
    Linearize(String),
    /// An arm could not be brought to the baseline's parameter count (the message says why).
    #[error("equal parameter count: {0}")]
    EqualParams(String),
}

/// How big a reproduction runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// Minutes on 2 CPU cores; what the tests run.
    Smoke,
    /// The numbers in docs/reproductions.md.
    Full,
    /// The published configuration (a GPU or a cluster).
    Paper,
}

impl Size {
    pub fn name(self) -> &'static str {
        match self {
            Size::Smoke => "smoke",
            Size::Full => "full",
            Size::Paper => "paper",
        }
    }
}

impl std::str::FromStr for Size {
    type Err = ReproduceError;
    fn from_str(s: &str) -> Result<Self, ReproduceError> {
        match s {
            "smoke" => Ok(Size::Smoke),
            "full" => Ok(Size::Full),
            "paper" => Ok(Size::Paper),
            other => Err(ReproduceError::UnknownSize { size: other.to_string() }),
        }
    }
}

/// An effect a reproduction expects, and whether the measurements show it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Check {
    pub claim: String,
    pub holds: bool,
    /// The measured numbers behind the answer.
    pub evidence: String,
}

impl Check {
    pub fn new(claim: impl Into<String>, holds: bool, evidence: impl Into<String>) -> Self {
        Self { claim: claim.into(), holds, evidence: evidence.into() }
    }
    pub fn line(&self) -> String {
        format!(
            "{}: {} ({})",
            if self.holds { "holds" } else { "DOES NOT HOLD" },
            self.claim,
            self.evidence
        )
    }
}

/// What a finished reproduction reports besides its files.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub checks: Vec<Check>,
    /// The headline table (also the first table of the report).
    pub summary: Table,
}

/// Every reproduction: name and one line on what it shows.
/// "length 64, 4 key-value pairs, vocab 8192": an MQAR config's task in words, for the intros.
pub(super) fn mqar_task_words(config: &attnlab_train::RunConfig) -> String {
    match &config.task {
        attnlab_train::TaskConfig::Mqar(t) => {
            format!("length {}, {} key-value pairs, vocab {}", t.seq_len, t.num_kv_pairs, t.vocab)
        }
        other => other.name().to_string(),
    }
}

/// Trains a comparison into `dir/runs/` and analyses it (the report is written by the caller,
/// which adds its own sections).
pub(super) fn run_compare(
    spec: &Comparison,
    title: &str,
    dir: &Path,
    exec: &LocalExecutor,
) -> Result<Results, ReproduceError> {
    let mut spec = spec.clone();
    for arm in &mut spec.arms {
        exec.place(&mut arm.config);
    }
    let spec = &spec;
    let plan = spec.plan()?;
    if exec.plan_only {
        let steps: usize = plan.iter().map(|r| r.config.train.steps).sum();
        let (runs, total) = exec.planned.get();
        exec.planned.set((runs + plan.len(), total + steps));
        let device = plan.first().map_or(String::new(), |r| r.config.device.to_string());
        println!(
            "{title}: {} runs ({} arms x {} lrs x {} seeds), {} steps in all, on {device}",
            plan.len(),
            spec.arms.len(),
            spec.lrs.len().max(1),
            spec.seeds.len(),
            steps
        );
        // Nothing trains and nothing is read: every run is pending, so the checks come out
        // unmeasured and the caller's report shows the plan.
        let entries = crate::compare::plan::entries(spec)?;
        let records = entries
            .iter()
            .map(|e| RunRecord {
                id: e.id.clone(),
                arm: e.arm.clone(),
                seed: e.seed,
                lr: e.lr,
                run_dir: dir.join(&e.dir),
                pending: true,
                ..Default::default()
            })
            .collect();
        return Ok(analyse(spec, records, title));
    }
    if !exec.quiet {
        println!("{title}: {} runs -> {}", plan.len(), dir.display());
    }
    let records = run_all(spec, dir, exec)?;
    if records.iter().all(|r| r.error.is_some()) {
        return Err(ReproduceError::AllFailed {
            title: title.to_string(),
            first: records[0].error.clone().unwrap_or_default(),
        });
    }
    // What ran: seeds, learning rates and every arm's resolved config.
    let _ = std::fs::write(dir.join("spec.toml"), toml::to_string(spec).unwrap_or_default());
    Ok(analyse(spec, records, title))
}

/// Writes a reproduction's page and `results.json` (`json`, pretty-printed) into `out`.
pub(super) fn write_report(
    doc: &crate::report::Document,
    json: &serde_json::Value,
    out: &Path,
) -> Result<(), ReproduceError> {
    let text = serde_json::to_string_pretty(json).map_err(ReproduceError::Json)?;
    Ok(crate::report::write_document(doc, &text, out)?)
}

/// A reproduction's preset, read once; each reproduction then sets its sizes as fields (every
/// run's config is validated when the comparison is planned).
pub(super) fn read_preset(path: &str) -> Result<RunConfig, ReproduceError> {
    Ok(RunConfig::read(Path::new(path))?)
}

/// A comparison of `(name, mixer)` arms on `base`, over seeds `1..=seeds`.
pub(super) fn spec(
    base: &RunConfig,
    seeds: u64,
    lrs: &[f64],
    target: Option<f64>,
    arms: &[(&str, &str)],
) -> Result<Comparison, ReproduceError> {
    let mut comparison = Comparison::of_mixers(base, arms, (1..=seeds).collect(), lrs.to_vec())?;
    comparison.target = target;
    Ok(comparison)
}
