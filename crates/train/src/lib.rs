//! attnlab's training library: tasks (where batches come from and how a model is scored), the
//! run configuration, the training loop, checkpoints and the run directory, sampling, export.
//!
//! Depends on `attnlab-model` only; knows nothing of reports or the command line.
//!
//! Every fallible public function returns the thiserror enum of its concern, each variant
//! carrying what its one-line message names (the key, the value, the path) and the fix:
//! [`ConfigError`] (a run config), [`run_dir::RunDirError`] (opening, locking, writing and
//! reading back a run directory), [`checkpoint::CheckpointError`] (choosing and loading a
//! checkpoint), [`TaskError`] and [`task::EncodeError`] (a task's data and codec),
//! [`runs::LoadRunError`] (loading a run), [`TrainError`] (a run that did not start or finish),
//! [`sample::SampleError`] and [`export::ExportError`]. An OS or parser error is part of the
//! message, not its `source`, so a printed chain says it once.

pub mod adamw;
pub mod checkpoint;
pub mod checksum;
pub mod config;
pub mod data_parallel;
pub mod export;
pub mod footprint;
pub mod hf_layout;
pub mod import;
pub mod linearize;
pub mod message;
pub mod metrics;
pub mod mixer_parameters;
pub mod params;
pub mod paths;
pub mod presets;
pub mod progress;
pub mod recall_probes;
pub mod run_dir;
pub mod run_dir_error;
pub mod run_meta;
pub mod runs;
pub mod sample;
pub mod seed;
pub mod splitmix;
pub mod task;
pub mod tensorboard;
pub mod trainer;
pub mod transfer;

pub use config::{ConfigError, RunConfig, TaskConfig, TrainConfig};
pub use metrics::{EvalRecord, MetricsRecord, TrainRecord, read_metrics};
pub use progress::Verbosity;
pub use run_dir::RunDir;
pub use run_meta::RunMeta;
pub use task::{Batch, MainMetric, Target, Task, TaskError};
pub use trainer::{TrainError, TrainOutcome, model_io, parameter_count, parameter_count_of, train};

/// The Burn release this build is pinned to (recorded in `meta.json`).
pub const BURN_VERSION: &str = "0.22.1";
