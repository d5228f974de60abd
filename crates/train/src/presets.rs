//! The presets shipped in `configs/` (and the comparison files in `configs/compare/`), built
//! into the binary, so `--task mqar` or `--config configs/mqar-smoke.toml` works from any
//! working directory, not only from the repository's root.
//!
//! Every preset read goes through [`read`]: a file that exists on disk is read from disk (an
//! edited preset wins over the built-in one); a relative `configs/...` path with nothing there
//! falls back to the copy built in; anything else keeps the file system's error.

use std::io;
use std::path::{Component, Path, PathBuf};

macro_rules! preset {
    ($path:literal) => {
        ($path, include_str!(concat!("../../../", $path)))
    };
}

/// `(path relative to the repository root, text)` of every built-in preset. A test checks that
/// it lists exactly the `.toml` files of `configs/` and `configs/compare/`.
pub const BUILT_IN: &[(&str, &str)] = &[
    preset!("configs/bench-llama-135m.toml"),
    preset!("configs/icl-regression-paper.toml"),
    preset!("configs/icl-regression-smoke.toml"),
    preset!("configs/icl-regression.toml"),
    preset!("configs/mad-smoke.toml"),
    preset!("configs/mad.toml"),
    preset!("configs/max-retrieval-smoke.toml"),
    preset!("configs/max-retrieval.toml"),
    preset!("configs/mqar-length-smoke.toml"),
    preset!("configs/mqar-paper.toml"),
    preset!("configs/mqar-short.toml"),
    preset!("configs/mqar-smoke.toml"),
    preset!("configs/mqar.toml"),
    preset!("configs/needle-paper.toml"),
    preset!("configs/needle-smoke.toml"),
    preset!("configs/needle.toml"),
    preset!("configs/separation-smoke.toml"),
    preset!("configs/separation.toml"),
    preset!("configs/shakespeare-bpe-smoke.toml"),
    preset!("configs/shakespeare-bpe.toml"),
    preset!("configs/shakespeare-char-length-smoke.toml"),
    preset!("configs/shakespeare-char-paper.toml"),
    preset!("configs/shakespeare-char-smoke.toml"),
    preset!("configs/shakespeare-char.toml"),
    preset!("configs/state-tracking-paper.toml"),
    preset!("configs/state-tracking-smoke.toml"),
    preset!("configs/state-tracking.toml"),
    preset!("configs/compare/char-length.toml"),
    preset!("configs/compare/char-scaling.toml"),
    preset!("configs/compare/forget-gate-2x2.toml"),
    preset!("configs/compare/forgetting-mqar.toml"),
    preset!("configs/compare/hybrid-ratio-paper.toml"),
    preset!("configs/compare/hybrid-ratio.toml"),
    preset!("configs/compare/mqar-gap-length64.toml"),
    preset!("configs/compare/mqar-gated-delta.toml"),
    preset!("configs/compare/mqar-softmax-baseline.toml"),
    preset!("configs/compare/mqar-softmax-vs-linear.toml"),
    preset!("configs/compare/width-sweep.toml"),
    preset!("configs/compare/zoo-2026-char.toml"),
    preset!("configs/compare/zoo-2026.toml"),
];

/// The built-in text of `path` when, written relative to the repository root, it names a
/// built-in preset (`configs/mqar-smoke.toml`, `./configs/compare/../mqar.toml`).
pub fn built_in(path: &Path) -> Option<&'static str> {
    let name = normalise(path)?;
    BUILT_IN.iter().find(|(p, _)| Path::new(p) == name).map(|(_, text)| *text)
}

/// The text of the preset at `path`: the file on disk when there is one, else the built-in copy
/// of a `configs/...` path, else the error reading the file gave.
pub fn read(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            built_in(path).map(str::to_string).ok_or(e)
        }
        other => other,
    }
}

/// `path`, written in the file `base_file`, resolved as [`crate::paths::resolve_beside`] does;
/// when nothing exists there but `path` beside `base_file` names a built-in preset, that
/// preset's `configs/...` path (a built-in comparison file names its preset as
/// `../mqar-smoke.toml`).
pub fn resolve_beside(base_file: &Path, path: &Path) -> PathBuf {
    let resolved = crate::paths::resolve_beside(base_file, path);
    if resolved.exists() || path.is_absolute() {
        return resolved;
    }
    let beside = base_file.parent().unwrap_or(Path::new("")).join(path);
    match normalise(&beside) {
        Some(name) if built_in(&name).is_some() => name,
        _ => resolved,
    }
}

/// A relative path with `.` and `dir/..` removed, lexically; `None` for an absolute path or one
/// that climbs above its start.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// A preset added to `configs/` but not to [`BUILT_IN`] would work only from the repository.
    #[test]
    fn every_preset_on_disk_is_built_in_as_it_is() {
        let mut on_disk = Vec::new();
        for dir in ["configs", "configs/compare"] {
            for entry in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".toml") {
                    on_disk.push(format!("{dir}/{name}"));
                }
            }
        }
        on_disk.sort();
        let mut built: Vec<String> = BUILT_IN.iter().map(|(p, _)| p.to_string()).collect();
        built.sort();
        assert_eq!(built, on_disk, "add the new preset to BUILT_IN in crates/train/src/presets.rs");
        for (path, text) in BUILT_IN {
            assert_eq!(std::fs::read_to_string(root().join(path)).unwrap(), *text, "{path}");
        }
    }

    #[test]
    fn built_in_presets_are_found_by_their_configs_path_only() {
        let smoke = std::fs::read_to_string(root().join("configs/mqar-smoke.toml")).unwrap();
        for path in [
            "configs/mqar-smoke.toml",
            "./configs/mqar-smoke.toml",
            "configs/compare/../mqar-smoke.toml",
        ] {
            assert_eq!(built_in(Path::new(path)), Some(smoke.as_str()), "{path}");
        }
        for path in [
            "mqar-smoke.toml",
            "/configs/mqar-smoke.toml",
            "../configs/mqar-smoke.toml",
            "configs/nope.toml",
        ] {
            assert_eq!(built_in(Path::new(path)), None, "{path}");
        }
        // Relative to the working directory: the test runs in crates/train, where no configs/ is.
        assert_eq!(read(Path::new("configs/mqar-smoke.toml")).unwrap(), smoke);
        let missing = read(Path::new("configs/nope.toml")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        // A file on disk wins over the built-in copy.
        let dir = std::env::temp_dir().join(format!("attnlab-presets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("configs")).unwrap();
        let edited = dir.join("configs/mqar-smoke.toml");
        std::fs::write(&edited, "seed = 7\n").unwrap();
        assert_eq!(read(&edited).unwrap(), "seed = 7\n");
        // A built-in comparison file's `../mqar-smoke.toml` is the built-in preset.
        assert_eq!(
            resolve_beside(Path::new("configs/compare/x.toml"), Path::new("../mqar-smoke.toml")),
            PathBuf::from("configs/mqar-smoke.toml")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
