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

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A one-line error on stderr containing `needle`, and a failing exit code.
#[track_caller]
pub fn fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "should fail: {}", stdout(o));
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "expected '{needle}' in: {err}"
    );
}

/// Training losses `(step, loss)` from a run's metrics.jsonl.
pub fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v.get("step")?.as_u64()?, v.get("loss")?.as_f64()?)))
        .collect()
}

/// A tiny, fast MQAR setup (a few seconds per run).
pub const TINY: &[&str] = &[
    "--config",
    "configs/mqar-smoke.toml",
    "--set",
    "train.steps=8",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.log_every=1",
    "--set",
    "train.eval_every=4",
    "--set",
    "train.checkpoint_every=4",
    "--set",
    "task.eval_examples=16",
];

pub fn train_tiny(out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["train"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&["--out", out.to_str().unwrap(), "--quiet"]);
    args.extend_from_slice(extra);
    attnlab_env(&args, env)
}

/// The step of a run's newest complete step checkpoint (-1 without one).
pub fn latest_step(run: &Path) -> i64 {
    std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").is_file())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.parse::<i64>().ok())
        .max()
        .unwrap_or(-1)
}

/// `attnlab args...` run from `dir` (not the repository root).
pub fn attnlab_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the binary runs")
}

/// Whether a Slurm controller answers with a usable node (scripts/slurm-local.sh starts one).
pub fn slurm_is_up() -> bool {
    Command::new("sinfo").args(["-h", "-o", "%t"]).output().is_ok_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| ["idle", "mix", "alloc"].contains(&l.trim()))
    })
}
