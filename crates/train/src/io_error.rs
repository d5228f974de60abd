//! An I/O failure with the path it concerns: the error of every file operation on a run
//! directory (a leaf, so `metrics` and `run_dir` can both return it).

use std::path::PathBuf;

/// I/O failure with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct RunDirError {
    pub path: PathBuf,
    pub source: std::io::Error,
}
