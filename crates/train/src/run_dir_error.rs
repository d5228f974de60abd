//! Why an operation on a run directory failed, with the path it concerns: opening, creating and
//! locking one, every file written into it, and reading its checkpoint state and `meta.json`
//! back (a leaf, so `metrics`, `run_dir` and `run_meta` can all return it).
//!
//! Each message is one line naming the path and the fix. An OS error is a field of the message
//! (`reason`), not its `source`: said once, not again as a cause when the chain is printed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A file operation inside the run directory failed.
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: std::io::Error },
    #[error(
        "{path} is not a run directory (no config.toml): pass a directory written by `attnlab train`"
    )]
    NotARun { path: PathBuf },
    /// Another process holds the writer lock (`holder`: the pid it wrote into the lock file).
    #[error(
        "{path} is being written by {who}: a run directory has one writer; wait for it to finish, or stop it and `attnlab train --resume {path}`",
        who = writer_words(.holder)
    )]
    Busy { path: PathBuf, holder: Option<String> },
    /// Something other than a plain file (a link, a directory) sits where the pid file goes.
    #[error(
        "{path} is not attnlab's lock file (a link or a directory): attnlab neither follows nor replaces it; move it away and run again"
    )]
    NotALockFile { path: PathBuf },
    #[error("cannot open {path}: {reason}")]
    OpenLock { path: PathBuf, reason: std::io::Error },
    #[error("cannot lock {path}: {reason}")]
    Lock { path: PathBuf, reason: std::io::Error },
    #[error(
        "{path} already holds a run: continue it with `attnlab train --resume {path}` or choose another --out"
    )]
    HoldsRun { path: PathBuf },
    #[error("{path} exists and is not a directory: choose another --out")]
    NotADirectory { path: PathBuf },
    /// A directory of someone else's files (`entries`: the names found, sorted).
    #[error(
        "{path} is not empty and holds no run (it has {shown}): attnlab writes a run only into a new or empty directory; choose another --out",
        shown = first_names(.entries)
    )]
    NotEmpty { path: PathBuf, entries: Vec<String> },
    #[error("cannot read {path}: {reason}")]
    ReadDir { path: PathBuf, reason: std::io::Error },
    #[error("cannot create run directory {path}: {reason}")]
    Create { path: PathBuf, reason: std::io::Error },
    /// A checkpoint's `state.json` could not be read.
    #[error("cannot read checkpoint {path}: {reason}")]
    ReadState { path: PathBuf, reason: std::io::Error },
    #[error("checkpoint {path} is corrupt ({reason}): delete it to fall back to an older one")]
    CorruptState { path: PathBuf, reason: serde_json::Error },
    /// `meta.json` is not what attnlab writes.
    #[error("{path} is corrupt ({reason})")]
    CorruptMeta { path: PathBuf, reason: serde_json::Error },
}

impl RunDirError {
    /// [`RunDirError::Io`] on `path`, for `map_err`.
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |reason| Self::Io { path: path.to_path_buf(), reason }
    }
}

fn writer_words(holder: &Option<String>) -> String {
    match holder {
        Some(pid) => format!("another attnlab process (pid {pid})"),
        None => "another attnlab process".to_string(),
    }
}

/// The first three names, and `…` for more.
fn first_names(entries: &[String]) -> String {
    let shown = entries.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if entries.len() > 3 { format!("{shown}, …") } else { shown }
}
