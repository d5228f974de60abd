//! Opening a finished (or interrupted) run again: its resolved config, its task (reusing the
//! saved vocabulary or tokenizer) and the weights of one of its checkpoints.

use crate::checkpoint::{self, CheckpointError};
use crate::config::{ConfigError, RunConfig};
use crate::run_dir::{self, RunDir, RunDirError};
use crate::task::{self, Task, TaskError};
use attnlab_model::{BackendError, BackendKind, Model, ModelConfigError};
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// A run loaded for evaluation, sampling or export (no autodiff).
pub struct LoadedRun {
    pub config: RunConfig,
    pub task: Box<dyn Task>,
    pub model: Model,
    pub checkpoint: PathBuf,
    /// The backend it was loaded on (`--device`, else the one it was trained on).
    pub backend: BackendKind,
    pub device: Device,
}

/// Why a run could not be loaded: each step's own error, as it is.
#[derive(Debug, thiserror::Error)]
pub enum LoadRunError {
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Device(#[from] BackendError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Model(#[from] ModelConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// `checkpoints/<task>-<mixers>-<timestamp>`, the default place for a new run.
pub fn default_run_dir(config: &RunConfig) -> PathBuf {
    let mixers: String = config
        .model
        .mixer
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' })
        .collect();
    PathBuf::from("checkpoints").join(format!(
        "{}-{}-{}",
        config.task.name(),
        mixers,
        run_dir::timestamp()
    ))
}

/// Which checkpoint of a run: `best`, `final`, `latest` (newest complete one) or a path.
pub fn checkpoint_dir(run: &RunDir, which: &str) -> Result<PathBuf, CheckpointError> {
    let dir = match which {
        "latest" => run
            .latest_checkpoint()
            .map(|(_, p)| p)
            .ok_or_else(|| CheckpointError::NoneYet { run: run.path.clone() })?,
        "best" | "final" => run.file(which),
        other => PathBuf::from(other),
    };
    if !dir.join(run_dir::STATE_FILE).is_file() {
        return Err(CheckpointError::NotFound { dir });
    }
    Ok(dir)
}

/// Loads the run in `dir` with the weights of checkpoint `which`, on `device` (or the device the
/// run was trained on).
pub fn load_run(
    dir: &Path,
    which: &str,
    device: Option<BackendKind>,
) -> Result<LoadedRun, LoadRunError> {
    let run = RunDir::open(dir)?;
    let config = RunConfig::load(&run.file(run_dir::CONFIG_FILE), &[])?;
    let backend = device.unwrap_or(config.device);
    let device = backend.device()?;
    let task = task::build(&config, Some(dir))?;
    let model = config.model.init(&task.io(), config.seed, &device)?;
    let checkpoint = checkpoint_dir(&run, which)?;
    let state = run_dir::read_state(&checkpoint)?;
    checkpoint::check_state(&run, &checkpoint, &state, config.train.steps)?;
    let model = checkpoint::load(&checkpoint, model, None)?.model;
    Ok(LoadedRun { config, task, model, checkpoint, backend, device })
}
