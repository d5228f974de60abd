//! A/B comparison of attention variants: every arm is trained over the same seeds (same data
//! order; same initial weights wherever the arms' parameter shapes agree) and, when several
//! learning rates are given, each arm is judged at its own best one (as zoology does).
//!
//! A comparison is described by a TOML file (`configs/compare/*.toml`):
//!
//! ```toml
//! preset = "configs/mqar-smoke.toml"   # the run every arm starts from
//! set = ["train.steps=300"]            # overrides for every arm
//! seeds = [1, 2, 3]
//! lrs = [1e-3, 3e-3]                   # empty: the preset's train.lr
//! target = 0.9                         # main-metric threshold for steps-to-target (optional)
//! baseline = "softmax"                 # default: the first arm
//!
//! [[arm]]
//! name = "softmax"
//! set = ["model.mixer=softmax"]
//!
//! [[arm]]
//! name = "linear:elu1"
//! set = ["model.mixer=linear:elu1"]
//! ```
//!
//! The `set` strings are the file's boundary: [`CompareSpec::resolve`] reads the preset once and
//! applies them, giving a typed [`Comparison`] (one [`RunConfig`](attnlab_train::RunConfig) per
//! arm). `swap` and `reproduce` build a `Comparison` directly by editing config fields;
//! [`Comparison::plan`] sets each run's learning rate and seed the same way.
//!
//! A comparison goes through these steps, one file each:
//!
//! ```text
//! error.rs     why a comparison could not be read, planned, written or run (CompareError)
//! spec.rs      what to run: the comparison file, [grid], task presets, the typed Comparison
//! plan.rs      its plan on disk: every run fully resolved, with an id, a directory, a fingerprint
//! run.rs       running it: one entry (the worker), the local executor, the RunRecord each leaves
//! slurm.rs     running it as a Slurm job array, with the analysis as a dependent job
//! analyse.rs   per-arm results at each arm's best learning rate, judged against the baseline
//! advice.rs    each arm's verdict line: the comparison, the action, what to monitor after a swap
//! ```

mod advice;
mod analyse;
mod error;
pub mod plan;
mod results;
mod run;
pub mod slurm;
mod spec;

pub use analyse::analyse;
pub use error::CompareError;
pub use plan::{
    PlanEntry, Prepared, RunStatus, lock_comparison, prepare_dir, read_comparison, read_plan,
};
pub use results::{ArmResult, Results};
pub use run::{
    EXECUTOR_PID_VAR, EntryError, LayerCurve, LocalExecutor, RunRecord, execute, format_duration,
    read_curves, read_record, read_records, run_all, run_entry,
};
pub use spec::{Arm, ArmSpec, CompareSpec, Comparison, GridPoint, PlannedRun, task_preset};
