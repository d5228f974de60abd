//! Why a comparison could not be read, planned, written or run: one line naming the file, arm
//! or key and the fix. A leaf of `compare`, so each step (spec, plan, run) returns it and `slurm`
//! wraps it. An OS or parser error is a field of the message (`reason`), not its `source`: said
//! once, not again as a cause when the chain is printed.

use attnlab_model::SpecError;
use attnlab_train::ConfigError;
use attnlab_train::run_dir::RunDirError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// `--task NAME` names no task with a smoke preset.
    #[error(
        "unknown task '{task}': expected mqar, icl_regression, char_lm, bpe_lm, separation, max_retrieval, state_tracking, needle or mad (or pass --preset FILE)"
    )]
    UnknownTask { task: String },
    #[error("cannot read comparison {path}: {reason} (see configs/compare/)")]
    ReadSpec { path: PathBuf, reason: std::io::Error },
    /// The comparison file is not a comparison (the TOML parser's message, on one line).
    #[error("{path}: {message}")]
    ParseSpec { path: PathBuf, message: String },
    #[error("baseline '{name}' is not an arm: expected one of {arms}", arms = .arms.join(", "))]
    UnknownBaseline { name: String, arms: Vec<String> },
    /// `[grid]` sweeps what the comparison sweeps itself (`seed`: `seeds`, `train.lr`: `lrs`).
    #[error("[grid] {key}: sweep it with the comparison's `{list}` list instead")]
    GridSweepsOwnKey { key: String, list: &'static str },
    #[error("[grid] {key}: values must be strings, numbers or booleans, not {found}")]
    GridValue { key: String, found: &'static str },
    #[error("[grid] {key}: give a non-empty list of values, e.g. {key} = [32, 64]")]
    GridNotAList { key: String },
    /// The preset every arm starts from cannot be read.
    #[error(transparent)]
    Preset(ConfigError),
    /// An arm's overrides do not apply to the preset.
    #[error("arm '{arm}': {preset}: {error}")]
    ArmOverrides { arm: String, preset: PathBuf, error: Box<ConfigError> },
    #[error("arm '{arm}': {error}")]
    ArmMixer { arm: String, error: SpecError },
    /// An arm's run config (at one learning rate and seed) does not validate.
    #[error("arm '{arm}': {error}")]
    ArmConfig { arm: String, error: Box<ConfigError> },
    /// A NaN or infinite threshold reaches nothing and would be saved as null.
    #[error(
        "target {value}: give a finite main-metric threshold (--target, or `target` in the comparison file), e.g. 0.9"
    )]
    Target { value: f64 },
    #[error(
        "lrs: {value} is not a learning rate: give finite values above 0 (--lrs, or `lrs` in the comparison file), e.g. 1e-3,3e-3"
    )]
    LearningRate { value: f64 },
    #[error("a comparison needs at least one [[arm]]")]
    NoArms,
    #[error("seeds is empty: give at least one seed")]
    NoSeeds,
    #[error("arm names must be distinct")]
    DuplicateArms,
    #[error("baseline arm {index} does not exist: there are {arms} arms")]
    NoBaseline { index: usize, arms: usize },
    /// Two arms' names differ only in characters a directory name cannot hold.
    #[error(
        "two arms share the run directory runs/{id}: name the arms so they differ in more than punctuation"
    )]
    SharedRunDir { id: String },
    #[error("{out} holds another comparison (its comparison.json differs): choose another --out")]
    OtherComparison { out: PathBuf },
    #[error("{out} is not empty and holds no comparison: choose another --out")]
    NotEmpty { out: PathBuf },
    /// Another process is running or reporting this comparison (`holder`: its pid).
    #[error(
        "{out} is being written by another attnlab compare{}: a comparison has one writer; wait for it to finish, or stop it and run the same command again to continue",
        .holder.as_ref().map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Busy { out: PathBuf, holder: Option<String> },
    /// The comparison directory's lock could not be taken (not another writer: an error).
    #[error("cannot lock {out}: {reason}")]
    Lock { out: PathBuf, reason: String },
    #[error("cannot create {path}: {reason}")]
    Create { path: PathBuf, reason: std::io::Error },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: std::io::Error },
    /// `comparison.json` or `plan.json` of the report directory `out` cannot be read.
    #[error(
        "cannot read {path} ({reason}): is {out} a comparison's report directory? `attnlab compare --plan-only` writes one"
    )]
    ReadPlan { path: PathBuf, out: PathBuf, reason: std::io::Error },
    #[error("{path} is corrupt ({reason}): run the comparison's command again to rewrite it")]
    CorruptPlan { path: PathBuf, reason: serde_json::Error },
    #[error(
        "{path} is plan format {found}, this attnlab reads format {expected}: use the attnlab that wrote it"
    )]
    PlanFormat { path: PathBuf, found: u32, expected: u32 },
    #[error(
        "plan entry {index} ({id}): its config does not match its fingerprint; plan.json was edited"
    )]
    Fingerprint { index: usize, id: String },
    /// A plan entry's run directory cannot be taken (another writer holds it, or it is not a run).
    #[error(transparent)]
    RunDir(RunDirError),
    /// The config saved in a plan entry's run directory cannot be read.
    #[error(transparent)]
    RunConfig(ConfigError),
    #[error(
        "{dir} holds a run of another config: this --out belongs to another comparison; choose another --out"
    )]
    OtherConfig { dir: PathBuf },
    #[error("cannot start worker {worker}: {reason}")]
    StartWorker { worker: PathBuf, reason: std::io::Error },
    #[error("cannot wait for a worker: {reason}")]
    WaitWorker { reason: std::io::Error },
}
