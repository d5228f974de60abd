//! Paths written inside files (a preset's `task.path`, a comparison's `preset`), resolved
//! against the file that names them.

use std::path::{Path, PathBuf};

/// A path written in the file `base_file`, resolved the way a user expects: an absolute path as
/// it is; a relative one against the directory of `base_file` (so a preset works from any
/// working directory), made absolute, when something exists there; otherwise as written,
/// against the working directory (how presets and run directories from before this rule name
/// their files).
pub fn resolve_beside(base_file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let beside = base_file.parent().unwrap_or(Path::new("")).join(path);
    match beside.exists() {
        true => beside.canonicalize().unwrap_or(beside),
        false => path.to_path_buf(),
    }
}
