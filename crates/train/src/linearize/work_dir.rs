//! A linearisation's working directory, a database like a run directory: one writer (the
//! lock), `linearize.json` (the options that decide the result, written first), every stage's
//! checkpoint published atomically with its progress, and `results.json` last. Asked again with
//! the same options, it resumes from the newest checkpoint of the stage it was in.

use super::options::LinearizeError;
use crate::checkpoint::{self, Loaded};
use crate::run_dir::{self, RunDir, TrainState};
use attnlab_model::Model;
use burn::optim::ModuleOptimizer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

pub const OPTIONS_FILE: &str = "linearize.json";
pub const RESULTS_FILE: &str = "results.json";
/// A stage's curves and evaluations so far, inside each of its checkpoints.
const PROGRESS_FILE: &str = "progress.json";

pub struct WorkDir {
    pub dir: RunDir,
}

/// A stage checkpoint read back.
pub struct Resumed<P> {
    pub model: Model,
    pub optim: Option<ModuleOptimizer>,
    pub state: TrainState,
    pub progress: P,
}

impl WorkDir {
    /// Creates `out` (new or empty) for `identity`, or opens the linearisation of the same
    /// identity there to resume it; another one is refused, naming the options that differ.
    pub fn open(out: &Path, identity: &serde_json::Value) -> Result<Self, LinearizeError> {
        let saved = out.join(OPTIONS_FILE);
        if !saved.is_file() {
            let dir = RunDir::create(out)?;
            let text = serde_json::to_string_pretty(identity).expect("options serialise");
            dir.write_file(OPTIONS_FILE, &text)?;
            return Ok(Self { dir });
        }
        let dir = RunDir::open_work_dir_for_writing(out, OPTIONS_FILE)?;
        let old: serde_json::Value = read_json(&saved)?;
        if old != *identity {
            let keys: Vec<String> = identity
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(key, value)| old.get(key.as_str()) != Some(value))
                .map(|(key, value)| {
                    let was = old.get(key.as_str()).map_or("unset".into(), |v| v.to_string());
                    format!("{key}: {was} there, {value} now")
                })
                .collect();
            return Err(LinearizeError::OtherOptions {
                path: out.to_path_buf(),
                keys: keys.join("; "),
            });
        }
        Ok(Self { dir })
    }

    /// The finished result, when an earlier call got that far.
    pub fn results<R: DeserializeOwned>(&self) -> Result<Option<R>, LinearizeError> {
        let path = self.dir.file(RESULTS_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Publishes checkpoint `name` (the model, the optimizer moments when given, the state and
    /// the stage's progress) as one unit.
    pub fn save<P: Serialize>(
        &self,
        name: &str,
        model: &Model,
        optim: Option<&ModuleOptimizer>,
        state: &TrainState,
        progress: &P,
    ) -> Result<(), LinearizeError> {
        let progress = serde_json::to_string(progress).expect("progress serialises");
        checkpoint::save_with(&self.dir, name, model, optim, state, &[(PROGRESS_FILE, progress)])?;
        Ok(())
    }

    /// Checkpoint `name` loaded into `model` (built as it was saved) and `optim`, or `None` when
    /// that stage has not checkpointed yet.
    pub fn load<P: DeserializeOwned>(
        &self,
        name: &str,
        model: Model,
        optim: Option<ModuleOptimizer>,
    ) -> Result<Option<Resumed<P>>, LinearizeError> {
        let dir = self.dir.file(name);
        let Ok(state) = run_dir::read_state(&dir) else { return Ok(None) };
        let Loaded { model, optim } = checkpoint::load(&dir, model, optim)?;
        let progress = read_json(&dir.join(PROGRESS_FILE))?;
        Ok(Some(Resumed { model, optim, state, progress }))
    }

    /// Writes a finished file (results, report) atomically.
    pub fn write(&self, name: &str, contents: &str) -> Result<(), LinearizeError> {
        Ok(self.dir.write_file(name, contents)?)
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, LinearizeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|reason| LinearizeError::Io { path: path.to_path_buf(), reason })?;
    serde_json::from_str(&text)
        .map_err(|e| LinearizeError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })
}
