//! End-to-end tests of the run directory's guarantees under a hostile or unlucky user: a link
//! planted as the lock file, the lock file deleted under a live writer, damaged metrics lines,
//! flipped bits in checkpoints and exports, a hand-edited `state.json`, a finished run resumed,
//! and configs too large for the machine. Each fails without the fix it guards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{
    TINY, attnlab, fails_with, fresh_dir, latest_step, losses, ok, root, stderr, train_tiny,
};

fn temp(name: &str) -> PathBuf {
    fresh_dir("reliability", name)
}

/// `dir`'s files and their bytes, recursively, except the writer's pid file.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if entry.file_name() != "writer.lock" {
                files.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    files
}

/// Flips one bit in the middle of `path` (tensor data, past any header).
fn flip_a_bit(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() * 2 / 3;
    bytes[i] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// A link planted as `writer.lock` is neither followed (the file it points to keeps its
/// contents) nor replaced: a new run and a resume are refused with one line naming it.
#[test]
fn a_link_planted_as_the_lock_file_is_refused_and_its_target_untouched() {
    let dir = temp("link");
    let precious = dir.join("precious.txt");
    std::fs::write(&precious, "the user's words").unwrap();
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::os::unix::fs::symlink(&precious, fresh.join("writer.lock")).unwrap();
    fails_with(&train_tiny(&fresh, &[], &[]), "is not attnlab's lock file");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "the user's words");

    let run = dir.join("run");
    ok(&train_tiny(&run, &[], &[]));
    std::fs::remove_file(run.join("writer.lock")).unwrap();
    std::os::unix::fs::symlink(&precious, run.join("writer.lock")).unwrap();
    fails_with(
        &attnlab(&["train", "--resume", run.to_str().unwrap(), "--quiet"]),
        "is not attnlab's lock file",
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "the user's words");
    assert!(std::fs::symlink_metadata(run.join("writer.lock")).unwrap().is_symlink());
    std::fs::remove_dir_all(dir).unwrap();
}

/// The lock is on the directory: deleting `writer.lock` under a live writer does not let a
/// second writer in beside it.
#[test]
fn deleting_the_lock_file_under_a_live_writer_does_not_let_a_second_one_in() {
    let run = temp("deleted-lock");
    let mut args: Vec<&str> = vec!["train"];
    args.extend_from_slice(TINY);
    let out = run.join("run");
    args.extend_from_slice(&[
        "--set",
        "train.steps=100000",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let mut writer = Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args(&args)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while latest_step(&out) < 0 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint after 120 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::remove_file(out.join("writer.lock")).unwrap();
    let second = attnlab(&["train", "--resume", out.to_str().unwrap(), "--quiet"]);
    writer.kill().unwrap();
    writer.wait().unwrap();
    fails_with(&second, "is being written by another attnlab process");
    std::fs::remove_dir_all(run).unwrap();
}

/// Damage in the middle of `metrics.jsonl` (bytes that are not text) costs only its own line:
/// a resume from the step-4 checkpoint still drops everything logged after step 4, warns about
/// the damaged line, and ends with every step logged once, with the uninterrupted run's losses.
#[test]
fn a_damaged_metrics_line_costs_only_itself_and_resume_still_truncates() {
    let dir = temp("metrics-garbage");
    let straight = dir.join("straight");
    ok(&train_tiny(&straight, &[], &[]));
    let run = dir.join("run");
    ok(&train_tiny(&run, &[], &[]));
    // Back to the state of a run killed after its step-4 checkpoint, with everything up to
    // step 8 already logged.
    std::fs::remove_dir_all(run.join("final")).unwrap();
    std::fs::remove_dir_all(run.join("checkpoints/step-000008")).unwrap();
    let text = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let second_newline = text.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(1).unwrap().0;
    let mut damaged = text[..=second_newline].to_vec();
    damaged.extend_from_slice(b"\xff\xfe\x00\x9c garbage\n");
    damaged.extend_from_slice(&text[second_newline + 1..]);
    std::fs::write(run.join("metrics.jsonl"), damaged).unwrap();

    let resumed = attnlab(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    ok(&resumed);
    let warning = stderr(&resumed);
    assert!(warning.contains("skipped 1 unreadable line(s) (line 3)"), "{warning}");
    assert_eq!(losses(&run), losses(&straight), "each step once, as uninterrupted");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A finished run is read, not rewritten: resuming it changes no byte of any file
/// (the TensorBoard event file included).
#[test]
fn resuming_a_finished_run_rewrites_nothing() {
    let run = temp("finished");
    ok(&train_tiny(&run, &[], &[]));
    let before = snapshot(&run);
    let out = ok(&attnlab(&["train", "--resume", run.to_str().unwrap(), "--quiet"]));
    assert!(out.contains("final eval after 8 steps"), "{out}");
    let after = snapshot(&run);
    let changed: Vec<_> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
    assert!(changed.is_empty(), "rewritten: {changed:?}");
    assert_eq!(before.len(), after.len());
    std::fs::remove_dir_all(run).unwrap();
}

/// A `state.json` that disagrees with its run (a step past `train.steps`, a `step-N`
/// directory that says another step, a best checkpoint that is not there) is refused by
/// resume and eval, with one line naming the file and the problem.
#[test]
fn a_state_that_disagrees_with_its_run_is_refused() {
    let run = temp("state");
    ok(&train_tiny(&run, &[], &[]));
    let r = run.to_str().unwrap();
    let edit = |file: &str, from: &str, to: &str| {
        let path = run.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    let original = std::fs::read_to_string(run.join("final/state.json")).unwrap();
    edit("final/state.json", "\"step\": 8", "\"step\": 999999");
    let past = "final/state.json is inconsistent: step 999999 is past train.steps = 8";
    fails_with(&attnlab(&["train", "--resume", r, "--quiet"]), past);
    fails_with(&attnlab(&["eval", "--run", r, "--checkpoint", "final"]), past);
    std::fs::write(run.join("final/state.json"), original).unwrap();

    std::fs::remove_dir_all(run.join("final")).unwrap();
    edit("checkpoints/step-000008/state.json", "\"step\": 8", "\"step\": 7");
    fails_with(
        &attnlab(&["train", "--resume", r, "--quiet"]),
        "its directory is of step 8 but it says step 7",
    );
    edit("checkpoints/step-000008/state.json", "\"step\": 7", "\"step\": 8");
    std::fs::remove_dir_all(run.join("best")).unwrap();
    fails_with(&attnlab(&["train", "--resume", r, "--quiet"]), "but best/ does not exist");
    std::fs::remove_dir_all(run).unwrap();
}

/// A flipped bit in a checkpoint's weights or optimizer state is found before use by resume,
/// eval and export, with one line naming the file; one in an export's tensor data is found
/// by the Python loader.
#[test]
fn flipped_bits_are_found_before_they_are_used() {
    let dir = temp("bits");
    let run = dir.join("run");
    ok(&train_tiny(&run, &[], &[]));
    let r = run.to_str().unwrap();
    let export = dir.join("model.safetensors");
    ok(&attnlab(&["export", "--run", r, "--to", export.to_str().unwrap()]));

    flip_a_bit(&run.join("final/optim.bpk"));
    let named = |file: &str| format!("{file} does not match the SHA-256");
    fails_with(&attnlab(&["train", "--resume", r, "--quiet"]), &named("final/optim.bpk"));
    flip_a_bit(&run.join("final/optim.bpk"));
    flip_a_bit(&run.join("final/model.bpk"));
    fails_with(&attnlab(&["train", "--resume", r, "--quiet"]), &named("final/model.bpk"));
    fails_with(&attnlab(&["eval", "--run", r, "--checkpoint", "final"]), &named("final/model.bpk"));
    let again = dir.join("again.safetensors");
    let export_final =
        ["export", "--run", r, "--checkpoint", "final", "--to", again.to_str().unwrap()];
    fails_with(&attnlab(&export_final), &named("final/model.bpk"));
    assert!(!again.exists());
    flip_a_bit(&run.join("final/model.bpk"));
    ok(&attnlab(&export_final));

    let has_python = Command::new("python3")
        .args(["-c", "import safetensors, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(has_python || std::env::var_os("CI").is_none(), "CI has python3 with safetensors");
    if has_python {
        let load = |path: &Path| {
            Command::new("python3")
                .args(["-c", "import sys, attnlab_torch; attnlab_torch.load_numpy(sys.argv[1]); print('loaded')"])
                .arg(path)
                .env("PYTHONPATH", root().join("python"))
                .output()
                .unwrap()
        };
        assert!(ok(&load(&export)).contains("loaded"));
        flip_a_bit(&export);
        let refused = load(&export);
        assert!(!refused.status.success());
        let err = stderr(&refused);
        assert!(err.contains("does not match the SHA-256 recorded when it was exported"), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A config too large for the machine is refused before anything is allocated, naming the key
/// and the estimate, and leaving no run directory behind; an allocation the system refuses
/// anyway (here under `ulimit -v`) ends with one error line and exit code 1, not an abort.
#[test]
fn a_config_too_large_for_the_machine_is_refused_and_a_refused_allocation_is_an_error() {
    let dir = temp("too-large");
    for (set, key) in [
        ("model.d_model=1000000", "model.d_model = 1000000: training needs at least"),
        ("model.n_layers=100000", "model.n_layers = 100000: training needs at least"),
        ("train.batch_size=10000000", "train.batch_size = 10000000: training needs at least"),
    ] {
        let out = dir.join(set);
        fails_with(&train_tiny(&out, &["--set", set], &[]), key);
        assert!(!out.exists(), "{set}: nothing left behind");
    }
    let out = dir.join("ulimit");
    let script = format!(
        "ulimit -v 1500000; exec '{}' train --config configs/mqar-smoke.toml --set model.d_model=4096 --set model.n_heads=8 --out '{}' --quiet",
        env!("CARGO_BIN_EXE_attnlab"),
        out.display()
    );
    let o = Command::new("bash").args(["-c", &script]).current_dir(root()).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "an exit, not a signal: {}", stderr(&o));
    fails_with(&o, "out of memory: the system refused");
    std::fs::remove_dir_all(dir).unwrap();
}

/// One comparison writer per `--out`: a second `compare` started on the directory while the
/// first runs is refused with one line (it neither fails the first one's runs nor writes a
/// report), and the first finishes with its report; run again afterwards, it continues.
#[test]
fn a_comparison_directory_has_one_writer() {
    let out = temp("compare-writer").join("report");
    let args = |steps: &str| -> Vec<String> {
        [
            "compare",
            "--task",
            "mqar",
            "--variants",
            "softmax,linear:elu1",
            "--set",
            steps,
            "--set",
            "train.batch_size=8",
            "--set",
            "task.eval_examples=16",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]
        .map(String::from)
        .to_vec()
    };
    let mut first = Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args(args("train.steps=300"))
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !out.join("plan.json").is_file() {
        assert!(std::time::Instant::now() < deadline, "no plan after 120 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args(args("train.steps=300"))
        .current_dir(root())
        .output()
        .unwrap();
    let first_done = first.try_wait().unwrap().is_none();
    fails_with(&second, "is being written by another attnlab compare");
    let first = first.wait_with_output().unwrap();
    assert!(first_done, "the second was refused while the first ran");
    ok(&first);
    assert!(out.join("results.json").is_file());
    let again = ok(&Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args(args("train.steps=300"))
        .current_dir(root())
        .output()
        .unwrap());
    assert!(again.contains("holds this comparison already"), "{again}");
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
}
