//! Saving and loading checkpoints: the model (burnpack `model.bpk`), the AdamW moments
//! (`optim.bpk`) and the loop state (`state.json`, written last). Writes go through a staging
//! directory that is renamed into place ([`RunDir::publish`]).

use crate::checksum;
use crate::message::one_line;
use crate::run_dir::{self, RunDir, RunDirError, TrainState};
use attnlab_model::Model;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Environment variable used by the crash-safety tests: abort the process in the middle of
/// writing the checkpoint of this step (after the model file, before `state.json`): `N`, or
/// `NAME:N` for only the checkpoint published as `NAME` (a linearisation's stages).
pub const CRASH_AT_STEP_ENV: &str = "ATTNLAB_TEST_ABORT_IN_CHECKPOINT";

/// Writes `model` (and `optim`, when given) with `state` to `relative` inside the run.
pub fn save(
    run: &RunDir,
    relative: &str,
    model: &Model,
    optim: Option<&ModuleOptimizer>,
    state: &TrainState,
) -> Result<(), RunDirError> {
    save_with(run, relative, model, optim, state, &[])
}

/// [`save`] with more small files (`(name, contents)`) in the same checkpoint, published with it.
pub fn save_with(
    run: &RunDir,
    relative: &str,
    model: &Model,
    optim: Option<&ModuleOptimizer>,
    state: &TrainState,
    files: &[(&str, String)],
) -> Result<(), RunDirError> {
    let staging = run.staging(&relative.replace('/', "-"))?;
    let fail = |path: &Path, e: String| RunDirError::Io {
        path: path.to_path_buf(),
        reason: std::io::Error::other(e),
    };
    let model_path = staging.join(run_dir::MODEL_FILE);
    model.clone().save_file(&model_path).map_err(|e| fail(&model_path, e.to_string()))?;
    if crash_hook_matches(relative, state.step) {
        eprintln!(
            "test hook {CRASH_AT_STEP_ENV}: aborting while writing the checkpoint of step {}",
            state.step
        );
        std::process::abort();
    }
    if let Some(optim) = optim {
        let optim_path = staging.join(run_dir::OPTIM_FILE);
        optim.save(&optim_path).map_err(|e| fail(&optim_path, e.to_string()))?;
    }
    for (name, contents) in files {
        let path = staging.join(name);
        std::fs::write(&path, contents).map_err(RunDirError::io(&path))?;
    }
    // Every file's digest goes into state.json, written last: a checkpoint is complete and
    // checkable at once.
    let mut digests = BTreeMap::new();
    for entry in std::fs::read_dir(&staging).map_err(RunDirError::io(&staging))? {
        let path = entry.map_err(RunDirError::io(&staging))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        digests.insert(name, checksum::sha256_file(&path).map_err(RunDirError::io(&path))?);
    }
    let state_path = staging.join(run_dir::STATE_FILE);
    let record = StateFile { state, files: digests };
    std::fs::write(&state_path, serde_json::to_string_pretty(&record).expect("state serialises"))
        .map_err(RunDirError::io(&state_path))?;
    run.publish(&staging, relative)?;
    Ok(())
}

/// What `state.json` holds: the loop state, and the SHA-256 of each other file of the
/// checkpoint (absent in checkpoints written before attnlab recorded them).
#[derive(Serialize)]
struct StateFile<'a> {
    #[serde(flatten)]
    state: &'a TrainState,
    files: BTreeMap<String, String>,
}

/// The digests a checkpoint's `state.json` records (none for an older checkpoint).
#[derive(Default, Deserialize)]
struct RecordedDigests {
    #[serde(default)]
    files: BTreeMap<String, String>,
}

/// Checks `file` of checkpoint `dir` against the digest its `state.json` records, if it
/// records one.
pub fn verify(dir: &Path, file: &str) -> Result<(), CheckpointError> {
    let recorded: RecordedDigests = std::fs::read_to_string(dir.join(run_dir::STATE_FILE))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let Some(expected) = recorded.files.get(file) else { return Ok(()) };
    let path = dir.join(file);
    let actual = checksum::sha256_file(&path)
        .map_err(|e| CheckpointError::Unreadable { path: path.clone(), reason: e.to_string() })?;
    if &actual != expected {
        return Err(CheckpointError::Corrupt { path });
    }
    Ok(())
}

/// Whether [`CRASH_AT_STEP_ENV`] asks to abort in checkpoint `relative` of `step`.
fn crash_hook_matches(relative: &str, step: usize) -> bool {
    let Ok(value) = std::env::var(CRASH_AT_STEP_ENV) else { return false };
    match value.rsplit_once(':') {
        Some((name, n)) => name == relative && n.parse() == Ok(step),
        None => value.parse() == Ok(step),
    }
}

/// Writes `model` as checkpoint `final` at step 0 and makes `best` the same weights, as hard links to
/// `final`'s files (a copy where links fail): what a run that no training wrote (an imported
/// checkpoint, a linearised student) starts with. Files are never rewritten in place, so the
/// links stay safe.
pub fn save_final_and_best(run: &RunDir, model: &Model) -> Result<(), RunDirError> {
    let state = TrainState {
        step: 0,
        best_metric: None,
        best_step: None,
        tokens_seen: 0,
        stopped_early: false,
    };
    save(run, "final", model, None, &state)?;
    let staging = run.staging("best")?;
    let final_dir = run.file("final");
    for entry in std::fs::read_dir(&final_dir).map_err(RunDirError::io(&final_dir))? {
        let from = entry.map_err(RunDirError::io(&final_dir))?.path();
        let to = staging.join(from.file_name().expect("a file in the checkpoint"));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(RunDirError::io(&to))?;
        }
    }
    run.publish(&staging, "best")?;
    Ok(())
}

/// Checks the state checkpoint `dir` of `run` records against the run's config (`steps`: its
/// `train.steps`) and directory: a step within the budget and equal to the one a `step-N`
/// directory is named for, a best step not after it, and a `best/` where it names one. A
/// damaged or hand-edited `state.json` is refused, not trained on or reported.
pub fn check_state(
    run: &RunDir,
    dir: &Path,
    state: &TrainState,
    steps: usize,
) -> Result<(), CheckpointError> {
    let path = dir.join(run_dir::STATE_FILE);
    let bad = |problem: String| Err(CheckpointError::Inconsistent { path: path.clone(), problem });
    if state.step > steps {
        return bad(format!(
            "step {} is past train.steps = {steps} in config.toml (raise train.steps if you lowered it)",
            state.step
        ));
    }
    let named = dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("step-"));
    if let Some(n) = named.and_then(|n| n.parse::<usize>().ok())
        && n != state.step
    {
        return bad(format!("its directory is of step {n} but it says step {}", state.step));
    }
    if let Some(best) = state.best_step {
        if best > state.step {
            return bad(format!("its best step {best} is after its step {}", state.step));
        }
        if !run.file("best").join(run_dir::STATE_FILE).is_file() {
            return bad(format!(
                "it names a best checkpoint (step {best}) but best/ does not exist"
            ));
        }
    }
    Ok(())
}

/// A checkpoint that cannot be chosen or loaded; the message names the file and what to use
/// instead.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file whose bytes are not the ones its checkpoint's `state.json` recorded.
    #[error(
        "{path} does not match the SHA-256 its checkpoint's state.json records: the file was damaged or changed after it was written; delete that checkpoint to fall back to an older one, or choose another with --checkpoint"
    )]
    Corrupt { path: PathBuf },
    /// A `state.json` that disagrees with the run's config or directory.
    #[error(
        "checkpoint {path} is inconsistent: {problem}; delete that checkpoint to fall back to an older one"
    )]
    Inconsistent { path: PathBuf, problem: String },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("checkpoint {dir} has no {file}: it is incomplete; use another checkpoint", file = run_dir::MODEL_FILE)]
    NoModel { dir: PathBuf },
    /// The weights do not fit the model the run's config describes (`reason`: Burn's message).
    #[error(
        "checkpoint {path} does not fit the model its config.toml describes ({reason}): was config.toml edited? restore it or start a new run"
    )]
    DoesNotFit { path: PathBuf, reason: String },
    #[error(
        "checkpoint {dir} has no optimizer state ({file}); resume needs a step-N or final checkpoint",
        file = run_dir::OPTIM_FILE
    )]
    NoOptimizer { dir: PathBuf },
    #[error(
        "optimizer state {path} is unreadable ({reason}): delete that checkpoint to fall back to an older one"
    )]
    OptimizerUnreadable { path: PathBuf, reason: String },
    /// `--checkpoint latest` of a run with none complete.
    #[error("{run} has no complete checkpoint yet")]
    NoneYet { run: PathBuf },
    #[error(
        "no complete checkpoint at {dir}: use --checkpoint best, final, latest or a checkpoints/step-N directory"
    )]
    NotFound { dir: PathBuf },
}

/// A loaded checkpoint.
pub struct Loaded {
    pub model: Model,
    pub optim: Option<ModuleOptimizer>,
}

/// Loads the weights of checkpoint `dir` into `model` (built from the run's config), and the
/// optimizer moments into `optim` when given. Errors say which file is missing or mismatched.
pub fn load(
    dir: &Path,
    model: Model,
    optim: Option<ModuleOptimizer>,
) -> Result<Loaded, CheckpointError> {
    let model_path = dir.join(run_dir::MODEL_FILE);
    if !model_path.is_file() {
        return Err(CheckpointError::NoModel { dir: dir.to_path_buf() });
    }
    verify(dir, run_dir::MODEL_FILE)?;
    let model = model.try_load_file(&model_path).map_err(|e| CheckpointError::DoesNotFit {
        path: model_path.clone(),
        reason: one_line(&e.to_string()),
    })?;
    let optim = match optim {
        None => None,
        Some(o) => {
            let path = dir.join(run_dir::OPTIM_FILE);
            if !path.is_file() {
                return Err(CheckpointError::NoOptimizer { dir: dir.to_path_buf() });
            }
            verify(dir, run_dir::OPTIM_FILE)?;
            Some(o.load(&path).map_err(|e| CheckpointError::OptimizerUnreadable {
                reason: one_line(&e.to_string()),
                path,
            })?)
        }
    };
    Ok(Loaded { model, optim })
}
