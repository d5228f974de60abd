//! What every end-to-end test file needs: the repository root, the `attnlab` binary run from
//! it, a success check that shows the command's output, and a fresh scratch directory.
// Each test file uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `attnlab args...`, run from the repository root.
pub fn attnlab(args: &[&str]) -> Output {
    attnlab_env(args, &[])
}

/// [`attnlab`] with extra environment variables.
pub fn attnlab_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attnlab"));
    cmd.args(args).current_dir(root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

/// The command's stdout, after asserting it succeeded (its stderr and stdout in the message).
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An empty directory `attnlab-<tag>-<name>-<pid>` under the system's temp dir, whatever an
/// earlier run left there removed.
pub fn fresh_dir(tag: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("attnlab-{tag}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
