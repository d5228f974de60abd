//! `meta.json`, what a run directory records about the run when it starts: provenance (commit,
//! versions, device, start time), the config identity a resume is checked against, and what a
//! comparison's analysis reads without building the task or the model (the parameter count and
//! the main metric). Written and read only through [`RunMeta`].
//!
//! The keys are the ones attnlab has always written, so older run directories still read: the
//! fields added later (`identity`, `params`, `main_metric`) are optional or default when absent.

use crate::config::RunConfig;
use crate::run_dir::{self, META_FILE, RunDir, RunDirError};
use crate::task::MainMetric;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The contents of a run directory's `meta.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// `git rev-parse HEAD` of the working directory the run started in, or `unknown`.
    pub git_commit: String,
    pub seed: u64,
    /// The backend the run started on (`flex`, `ndarray`, ...).
    pub device: String,
    /// The devices it started on, data parallel (`cuda:0,cuda:1`); absent for one device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<String>,
    /// Sequences per optimizer step (`train.batch_size × train.grad_accum`, over every device);
    /// 0 in runs from before it was recorded.
    #[serde(default)]
    pub effective_batch: usize,
    pub burn_version: String,
    pub attnlab_version: String,
    /// `YYYYMMDD-HHMMSS` (UTC), as [`run_dir::timestamp`] writes it.
    pub started: String,
    /// [`RunConfig::identity`] at the start; a resume must find it unchanged. Absent in runs
    /// from before it was recorded (those are not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<serde_json::Value>,
    /// Trainable parameters; 0 in runs from before it was recorded.
    #[serde(default)]
    pub params: usize,
    /// The task's main metric; absent in runs from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_metric: Option<MetricMeta>,
    /// Where the weights came from, for a run started from another run's (`train.init_run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialised_from: Option<InitialisedFrom>,
}

/// The main metric as `meta.json` records it (a [`MainMetric`] with an owned name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricMeta {
    pub name: String,
    pub higher_is_better: bool,
    /// The metric of a model that learned nothing task-specific; absent where the task has none
    /// (and in runs from before it was recorded).
    #[serde(default)]
    pub chance: Option<f64>,
}

impl From<MainMetric> for MetricMeta {
    fn from(m: MainMetric) -> Self {
        Self { name: m.name.to_string(), higher_is_better: m.higher_is_better, chance: m.chance }
    }
}

/// The checkpoint a run's weights started from and what [`crate::transfer`] made of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitialisedFrom {
    pub checkpoint: PathBuf,
    /// Tensors copied from the checkpoint.
    pub copied: Vec<String>,
    /// Tensors left at their fresh initialisation (no name and shape match).
    pub fresh: Vec<String>,
}

impl RunMeta {
    /// What a run starting now with `config` records.
    pub fn at_start(config: &RunConfig, params: usize, metric: MainMetric) -> Self {
        let git_commit = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Self {
            git_commit,
            seed: config.seed,
            device: config.device.name().to_string(),
            devices: config.devices.as_ref().map(|d| d.to_string()),
            effective_batch: config.train.batch_size * config.train.grad_accum,
            burn_version: crate::BURN_VERSION.to_string(),
            attnlab_version: env!("CARGO_PKG_VERSION").to_string(),
            started: run_dir::timestamp(),
            identity: Some(config.identity()),
            params,
            main_metric: Some(metric.into()),
            initialised_from: None,
        }
    }

    /// Writes `meta.json` into `run` (atomically).
    pub fn write(&self, run: &RunDir) -> Result<(), RunDirError> {
        let text = serde_json::to_string_pretty(self).expect("meta.json serialises");
        run.write_file(META_FILE, &text)
    }

    /// Reads `meta.json` of the run directory `dir`.
    pub fn read(dir: &Path) -> Result<Self, RunDirError> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).map_err(RunDirError::io(&path))?;
        serde_json::from_str(&text).map_err(|reason| RunDirError::CorruptMeta { path, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `meta.json` from before `identity`, `params` and `main_metric` were recorded still
    /// reads, with those absent; one written now reads back equal, under the same keys.
    #[test]
    fn old_and_new_meta_files_read() {
        let old = r#"{"attnlab_version": "0.1.0", "burn_version": "0.22.1", "device": "flex",
            "git_commit": "unknown", "seed": 7, "started": "20261125-120000"}"#;
        let meta: RunMeta = serde_json::from_str(old).unwrap();
        assert_eq!((meta.seed, meta.params), (7, 0));
        assert!(meta.identity.is_none() && meta.main_metric.is_none());
        assert!(meta.initialised_from.is_none());

        let config = RunConfig::from_toml("[task]\nkind = \"mqar\"\n", &[]).unwrap();
        let metric = MainMetric { name: "accuracy", higher_is_better: true, chance: None };
        let mut meta = RunMeta::at_start(&config, 1234, metric);
        meta.initialised_from = Some(InitialisedFrom {
            checkpoint: "runs/a/best".into(),
            copied: vec!["head.weight".into()],
            fresh: vec![],
        });
        let text = serde_json::to_string(&meta).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["main_metric"]["name"], "accuracy");
        assert_eq!(value["initialised_from"]["copied"][0], "head.weight");
        assert_eq!(value["identity"], config.identity());
        assert_eq!(serde_json::from_str::<RunMeta>(&text).unwrap(), meta);
    }
}
