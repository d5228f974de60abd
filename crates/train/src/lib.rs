//! attnlab's training library: tasks (where batches come from and how a model is scored), the
//! run configuration, the training loop, checkpoints and the run directory, sampling, export.
//!
//! Depends on `attnlab-model` only; knows nothing of reports or the command line.

pub mod checkpoint;
pub mod config;
pub mod export;
pub mod io_error;
pub mod metrics;
pub mod mixer_parameters;
pub mod params;
pub mod progress;
pub mod run_dir;
pub mod runs;
pub mod sample;
pub mod seed;
pub mod task;
pub mod tensorboard;
pub mod trainer;
pub mod transfer;
pub mod util;

pub use config::{ConfigError, RunConfig, TaskConfig, TrainConfig};
pub use metrics::{EvalRecord, MetricsRecord, TrainRecord, read_metrics};
pub use progress::Verbosity;
pub use run_dir::RunDir;
pub use task::{Batch, MainMetric, Target, Task, TaskError};
pub use trainer::{TrainError, TrainOutcome, train};

/// The Burn release this build is pinned to (recorded in `meta.json`).
pub const BURN_VERSION: &str = "0.22.1";
