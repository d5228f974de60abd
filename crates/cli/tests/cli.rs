//! End-to-end tests: run the `attnlab` binary as a user would, on temporary run directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{
    TINY, attnlab, fails_with, latest_step, losses, ok, root, slurm_is_up, stderr, train_tiny,
};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("attnlab-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn char_lm_trains_samples_evaluates_and_exports() {
    let out = temp("char");
    let o = attnlab(&[
        "train",
        "--config",
        "configs/shakespeare-char-smoke.toml",
        "--out",
        out.to_str().unwrap(),
        "--set",
        "model.d_model=64",
        "--set",
        "model.n_layers=2",
        "--set",
        "model.max_seq_len=32",
        "--set",
        "train.steps=40",
        "--set",
        "train.eval_every=20",
        "--set",
        "train.log_every=10",
    ]);
    let text = ok(&o);
    assert!(text.contains("training loss") && text.contains("attnlab sample --run"), "{text}");
    for f in [
        "config.toml",
        "meta.json",
        "metrics.jsonl",
        "vocab.json",
        "final/model.bpk",
        "final/optim.bpk",
        "final/state.json",
        "best/model.bpk",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let l = losses(&out);
    assert_eq!(l.len(), 4);
    assert!(l[0].1 > 3.0 && l[3].1 < l[0].1 - 0.3, "loss should fall from ~4.2: {l:?}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["seed"], 1337);
    assert_eq!(meta["burn_version"], "0.22.1");

    let s = ok(&attnlab(&[
        "sample",
        "--run",
        out.to_str().unwrap(),
        "--prompt",
        "ROMEO:",
        "--tokens",
        "50",
        "--seed",
        "3",
    ]));
    assert!(s.starts_with("ROMEO:") && s.chars().count() >= 56, "{s}");
    let again = ok(&attnlab(&[
        "sample",
        "--run",
        out.to_str().unwrap(),
        "--prompt",
        "ROMEO:",
        "--tokens",
        "50",
        "--seed",
        "3",
    ]));
    assert_eq!(s, again, "same seed, same sample");

    let e = ok(&attnlab(&["eval", "--run", out.to_str().unwrap()]));
    assert!(e.contains("bits_per_char") && e.contains("attention entropy"), "{e}");

    let file = out.join("model.safetensors");
    let x =
        ok(&attnlab(&["export", "--run", out.to_str().unwrap(), "--to", file.to_str().unwrap()]));
    assert!(x.contains("tensors"), "{x}");
    assert!(file.is_file());
    python_reads_safetensors(&file);
    std::fs::write(&file, b"mine").unwrap();
    fails_with(
        &attnlab(&["export", "--run", out.to_str().unwrap(), "--to", file.to_str().unwrap()]),
        "already exists: pass --force",
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    ok(&attnlab(&[
        "export",
        "--run",
        out.to_str().unwrap(),
        "--to",
        file.to_str().unwrap(),
        "--force",
    ]));
    python_reads_safetensors(&file);

    fails_with(
        &attnlab(&["sample", "--run", out.to_str().unwrap(), "--prompt", "ROMEO€"]),
        "not in this run's vocabulary",
    );
    std::fs::remove_dir_all(out).unwrap();
}

/// The Python `safetensors` package loads the export (checked where Python has it; CI installs it).
fn python_reads_safetensors(file: &Path) {
    let has = Command::new("python3")
        .args(["-c", "import safetensors, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        eprintln!(
            "python3 with safetensors+numpy not found: the Rust-side export test covers the format"
        );
        return;
    }
    let script = "import sys, json\nfrom safetensors.numpy import load_file\nfrom safetensors import safe_open\n\
                  t = load_file(sys.argv[1])\nm = safe_open(sys.argv[1], 'np').metadata()\n\
                  print(len(t), t['head.weight'].shape, 'attnlab_config' in m)";
    let o = Command::new("python3").args(["-c", script, file.to_str().unwrap()]).output().unwrap();
    let text = ok(&o);
    assert!(text.contains("(64, 65) True"), "{text}");
}

/// For softmax and for a family with decoding state of its own and gate parameters (Gated
/// DeltaNet with a short convolution): a run killed mid-checkpoint resumes to the same losses,
/// and the finished run exports.
#[test]
fn resume_repeats_the_losses_of_a_straight_run() {
    for mixer in ["softmax", "delta:gated:conv=4"] {
        let set = format!("model.mixer={mixer}");
        let extra = ["--set", set.as_str()];
        let straight = temp("straight");
        ok(&train_tiny(&straight, &extra, &[]));
        // The same run, killed while writing its step-8 checkpoint, then resumed from step 4.
        let interrupted = temp("interrupted");
        let o = train_tiny(&interrupted, &extra, &[("ATTNLAB_TEST_ABORT_IN_CHECKPOINT", "8")]);
        assert!(!o.status.success(), "{mixer}: the test hook aborts the process");
        assert!(!interrupted.join("final").exists());
        ok(&attnlab(&["train", "--resume", interrupted.to_str().unwrap(), "--quiet"]));
        let (a, b) = (losses(&straight), losses(&interrupted));
        assert_eq!(a.len(), 8);
        assert_eq!(a, b, "{mixer}: resumed losses differ from the straight run");
        assert!(interrupted.join("final/state.json").is_file());
        // No staging leftovers from the killed write.
        let leftovers: Vec<_> = std::fs::read_dir(&interrupted)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let file = straight.join("model.safetensors");
        let x = ok(&attnlab(&[
            "export",
            "--run",
            straight.to_str().unwrap(),
            "--to",
            file.to_str().unwrap(),
        ]));
        assert!(x.contains("tensors"), "{mixer}: {x}");
        if mixer.starts_with("delta") {
            let bytes = std::fs::read(&file).unwrap();
            let header = String::from_utf8_lossy(&bytes[..bytes.len().min(16384)]);
            for name in [
                "blocks.0.mixer.Delta.a_log",
                "blocks.1.mixer.Delta.beta.weight",
                "blocks.1.mixer.Delta.conv.weight",
            ] {
                assert!(header.contains(name), "{mixer}: {name} not exported");
            }
        }
        std::fs::remove_dir_all(straight).unwrap();
        std::fs::remove_dir_all(interrupted).unwrap();
    }
}

#[test]
fn same_seed_same_losses_other_seed_other_losses() {
    let (a, b, c) = (temp("seed-a"), temp("seed-b"), temp("seed-c"));
    ok(&train_tiny(&a, &["--seed", "5"], &[]));
    ok(&train_tiny(&b, &["--seed", "5"], &[]));
    ok(&train_tiny(&c, &["--seed", "6"], &[]));
    assert_eq!(losses(&a), losses(&b));
    assert_ne!(losses(&a), losses(&c));
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint() {
    let out = temp("nan");
    let out_s = out.to_str().unwrap().to_string();
    ok(&train_tiny(&out, &["--set", "train.steps=4", "--set", "train.checkpoint_every=1"], &[]));
    // Resumed with a learning rate of 1e30 (no clipping), the update of step 5 overflows the
    // weights, and step 6's loss is NaN.
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    let edited: Vec<String> = config
        .lines()
        .map(|l| match l.split(" = ").next().unwrap() {
            "lr" | "min_lr" => format!("{} = 1e30", l.split(" = ").next().unwrap()),
            "grad_clip" | "warmup_steps" => format!("{} = 0", l.split(" = ").next().unwrap()),
            "steps" => "steps = 8".to_string(),
            _ => l.to_string(),
        })
        .collect();
    std::fs::write(
        out.join("config.toml"),
        edited.join("\n").replace("grad_clip = 0", "grad_clip = 0.0"),
    )
    .unwrap();
    let o = attnlab(&["train", "--resume", &out_s, "--quiet"]);
    fails_with(&o, "training diverged");
    let err = stderr(&o);
    assert!(err.contains("became NaN at step 6") && err.contains("(step 4 in"), "{err}");
    let final_state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("final/state.json")).unwrap())
            .unwrap();
    assert_eq!(final_state["step"], 4, "final/ is still the finished 4-step run's");
    // The checkpoint of the weights that gave the non-finite loss is set aside, not called good;
    // every checkpoint still in place evaluates to finite numbers, and the set-aside one is
    // refused by eval rather than reported as a NaN result.
    let entries: Vec<PathBuf> =
        std::fs::read_dir(out.join("checkpoints")).unwrap().flatten().map(|e| e.path()).collect();
    let diverged: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("diverged-step-"))
        .collect();
    assert_eq!(diverged.len(), 1, "{entries:?}");
    let mut good: Vec<PathBuf> = entries
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-"))
        .cloned()
        .collect();
    good.extend([out.join("best")].into_iter().filter(|p| p.exists()));
    for checkpoint in &good {
        let e =
            ok(&attnlab(&["eval", "--run", &out_s, "--checkpoint", checkpoint.to_str().unwrap()]));
        assert!(!e.contains("NaN") && !e.contains("inf"), "{}: {e}", checkpoint.display());
    }
    let e = attnlab(&["eval", "--run", &out_s, "--checkpoint", diverged[0].to_str().unwrap()]);
    fails_with(&e, "non-finite");
    std::fs::remove_dir_all(&out).unwrap();

    // Sampling refuses non-finite logits instead of printing noise.
    let text = temp("nan-text");
    let t = text.to_str().unwrap();
    let o = attnlab(&[
        "train",
        "--config",
        "configs/shakespeare-char-smoke.toml",
        "--out",
        t,
        "--quiet",
        "--set",
        "model.d_model=32",
        "--set",
        "model.n_layers=1",
        "--set",
        "train.steps=6",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.grad_clip=0",
        "--set",
        "train.lr=1e30",
        "--set",
        "train.min_lr=1e30",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.eval_every=0",
    ]);
    fails_with(&o, "training diverged");
    let diverged = std::fs::read_dir(text.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("diverged-step-"))
        .unwrap();
    fails_with(
        &attnlab(&[
            "sample",
            "--run",
            t,
            "--checkpoint",
            diverged.to_str().unwrap(),
            "--prompt",
            "RO",
            "--tokens",
            "5",
        ]),
        "logits are not finite",
    );
    std::fs::remove_dir_all(text).unwrap();
}

/// One writer per run directory, across processes: two trains started on one `--out` leave
/// one run (the other is refused), a second train or resume while a run is being written is
/// refused with the writer's pid, and a writer killed with SIGKILL leaves no lock behind.
#[test]
fn a_run_directory_has_one_writer_process() {
    let race = temp("race");
    let spawn = |out: &Path, steps: &str| {
        let mut args: Vec<&str> = vec!["train"];
        args.extend_from_slice(TINY);
        args.extend_from_slice(&["--set", steps, "--out", out.to_str().unwrap(), "--quiet"]);
        Command::new(env!("CARGO_BIN_EXE_attnlab"))
            .args(&args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let both = [spawn(&race, "train.steps=8"), spawn(&race, "train.steps=8")]
        .map(|c| c.wait_with_output().unwrap());
    let won: Vec<&Output> = both.iter().filter(|o| o.status.success()).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one writer wins: {} / {}",
        stderr(&both[0]),
        stderr(&both[1])
    );
    let lost = both.iter().find(|o| !o.status.success()).unwrap();
    let err = stderr(lost);
    assert!(
        err.contains("is being written by another attnlab process")
            || err.contains("already holds a run"),
        "{err}"
    );
    ok(&attnlab(&["eval", "--run", race.to_str().unwrap()]));

    let long = temp("one-writer");
    let mut writer = spawn(&long, "train.steps=100000");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while latest_step(&long) < 0 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint after 120 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let busy = format!("is being written by another attnlab process (pid {})", writer.id());
    fails_with(&attnlab(&["train", "--resume", long.to_str().unwrap(), "--quiet"]), &busy);
    fails_with(&train_tiny(&long, &[], &[]), &busy);
    writer.kill().unwrap();
    writer.wait().unwrap();
    // Resume after the kill, with a step budget just past the last checkpoint.
    let last = latest_step(&long) as usize;
    let config = std::fs::read_to_string(long.join("config.toml")).unwrap();
    std::fs::write(
        long.join("config.toml"),
        config.replace("steps = 100000", &format!("steps = {}", last + 2)),
    )
    .unwrap();
    ok(&attnlab(&["train", "--resume", long.to_str().unwrap(), "--quiet"]));
    assert_eq!(losses(&long).last().unwrap().0, last as u64 + 2);
    std::fs::remove_dir_all(race).unwrap();
    std::fs::remove_dir_all(long).unwrap();
}

/// A run killed after its last step checkpoint but before `final/` is finished by `--resume`
/// exactly as the uninterrupted run was: the same final evaluation (logged once), the same
/// `final/` and `best/`; an early-stopped run is finished, not trained on.
#[test]
fn resume_finishes_a_run_killed_before_its_final_checkpoint() {
    for (name, extra) in
        [("last-step", &[][..]), ("early-stop", &["--set", "train.stop_at=0.001"][..])]
    {
        let run = temp(&format!("finish-{name}"));
        let straight = ok(&train_tiny(&run, extra, &[]));
        let read = |p: &str| std::fs::read(run.join(p)).unwrap();
        let (metrics, model, state, best) = (
            read("metrics.jsonl"),
            read("final/model.bpk"),
            read("final/state.json"),
            read("best/model.bpk"),
        );
        assert_eq!(
            String::from_utf8_lossy(&state).contains("\"stopped_early\": true"),
            name == "early-stop",
            "{name}"
        );
        // What a kill between the last step checkpoint and `final/` leaves behind.
        std::fs::remove_dir_all(run.join("final")).unwrap();
        let resumed = ok(&attnlab(&["train", "--resume", run.to_str().unwrap(), "--quiet"]));
        let final_line =
            |out: &str| out.lines().find(|l| l.starts_with("final eval after")).map(str::to_string);
        assert_eq!(final_line(&resumed), final_line(&straight), "{name}: {resumed}");
        assert!(final_line(&resumed).is_some_and(|l| l.contains("accuracy")), "{name}: {resumed}");
        assert_eq!(read("metrics.jsonl"), metrics, "{name}: nothing trained or logged twice");
        // The same state and weights; the optimizer file holds the same moments but Burn's
        // record order is not fixed, so its bytes (and their digest) may differ.
        let without_optim_digest = |bytes: &[u8]| {
            let mut state: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            state["files"].as_object_mut().unwrap().remove("optim.bpk");
            state
        };
        assert_eq!(
            without_optim_digest(&read("final/state.json")),
            without_optim_digest(&state),
            "{name}"
        );
        assert_eq!(read("final/model.bpk"), model, "{name}");
        assert_eq!(read("best/model.bpk"), best, "{name}");
        std::fs::remove_dir_all(run).unwrap();
    }
}

/// A run stopped before its first checkpoint (here: killed while writing it) cannot be
/// continued, so `--resume` trains it again from step 0 in place, says so, and ends with the
/// losses of an uninterrupted run and each step logged once.
#[test]
fn resume_restarts_a_run_stopped_before_its_first_checkpoint() {
    let (straight, stopped) = (temp("restart-straight"), temp("restart-stopped"));
    ok(&train_tiny(&straight, &[], &[]));
    let o = train_tiny(&stopped, &[], &[("ATTNLAB_TEST_ABORT_IN_CHECKPOINT", "4")]);
    assert!(!o.status.success());
    fails_with(
        &train_tiny(&stopped, &[], &[]),
        "already holds a run: continue it with `attnlab train --resume",
    );
    let resumed = ok(&attnlab(&["train", "--resume", stopped.to_str().unwrap(), "--quiet"]));
    assert!(
        resumed.contains("has no checkpoint yet") && resumed.contains("again from step 0"),
        "{resumed}"
    );
    assert_eq!(losses(&stopped), losses(&straight));
    assert_eq!(losses(&stopped).len(), 8, "each step logged once");
    std::fs::remove_dir_all(straight).unwrap();
    std::fs::remove_dir_all(stopped).unwrap();
}

/// A resume continues the model and data the run started with: an edit to config.toml that
/// changes them (even one with the same parameter shapes) is refused, naming the key; a new
/// step budget is fine.
#[test]
fn resume_refuses_a_config_that_changed_the_model_or_data() {
    let run = temp("identity");
    ok(&train_tiny(&run, &[], &[]));
    let path = run.join("config.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let r = run.to_str().unwrap();
    for (from, to, key) in [
        (
            "mixer = \"softmax\"",
            "mixer = \"softmax:num_keys\"",
            "model.mixer: \"softmax\" -> \"softmax:num_keys\"",
        ),
        ("seed = 1337", "seed = 7", "seed: 1337 -> 7"),
        ("batch_size = 8", "batch_size = 16", "train.batch_size: 8 -> 16"),
    ] {
        assert!(original.contains(from), "{from} in {original}");
        std::fs::write(&path, original.replace(from, to)).unwrap();
        fails_with(&attnlab(&["train", "--resume", r, "--quiet"]), key);
        assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), metrics, "nothing written");
    }
    std::fs::write(&path, original.replace("steps = 8", "steps = 10")).unwrap();
    ok(&attnlab(&["train", "--resume", r, "--quiet"]));
    assert_eq!(losses(&run).last().unwrap().0, 10);
    std::fs::remove_dir_all(run).unwrap();
}

/// Soak: a run killed with SIGKILL at 20 seeded random moments (any phase: start-up, a step,
/// a metrics line, a checkpoint rename) and resumed each time ends with exactly the metrics of
/// an uninterrupted run, every checkpoint loads, and no staging leftovers remain.
#[test]
fn soak_twenty_random_kills_resume_to_the_uninterrupted_metrics() {
    let args = [
        "--set",
        "train.steps=40",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.eval_every=5",
    ];
    let (straight, killed) = (temp("soak-straight"), temp("soak-killed"));
    let started = std::time::Instant::now();
    ok(&train_tiny(&straight, &args, &[]));
    let wall = started.elapsed();
    let (mut state, mut kills) = (0x2545_f491_4f6c_dd1du64, 0);
    let mut next_delay = || {
        // xorshift64: the kill moments repeat from run to run of the test.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        wall.mul_f64((state % 1000) as f64 / 1000.0 / 5.0)
    };
    let spawn = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_attnlab"));
        if killed.join("config.toml").is_file() {
            cmd.args(["train", "--resume", killed.to_str().unwrap(), "--quiet"]);
        } else {
            cmd.arg("train").args(TINY).args(args).args([
                "--out",
                killed.to_str().unwrap(),
                "--quiet",
            ]);
        }
        cmd.current_dir(root()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    };
    // The newest complete step checkpoint after each kill: the kills must land across training,
    // not all in start-up.
    let mut reached = std::collections::BTreeSet::new();
    while kills < 20 {
        let mut child = spawn();
        std::thread::sleep(next_delay());
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        reached.insert(latest_step(&killed));
    }
    assert!(reached.len() >= 3, "kills landed at too few points of training: {reached:?}");
    eprintln!("soak: newest checkpoint after each kill: {reached:?}");
    assert!(spawn().wait().unwrap().success(), "the last resume finishes the run");
    let records = |run: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("tokens_per_s");
                v
            })
            .collect()
    };
    assert_eq!(records(&killed), records(&straight), "metrics after {kills} kills");
    let mut checkpoints: Vec<PathBuf> = std::fs::read_dir(killed.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    checkpoints.extend([killed.join("best"), killed.join("final")]);
    for c in &checkpoints {
        ok(&attnlab(&[
            "eval",
            "--run",
            killed.to_str().unwrap(),
            "--checkpoint",
            c.to_str().unwrap(),
        ]));
    }
    let leftovers: Vec<_> = std::fs::read_dir(&killed)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(straight).unwrap();
    std::fs::remove_dir_all(killed).unwrap();
}

#[test]
fn bad_inputs_give_one_line_errors_and_touch_nothing() {
    let dir = temp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let d = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(dir.join("empty.txt"), "").unwrap();
    std::fs::write(dir.join("short.txt"), "to be or not").unwrap();
    std::fs::write(dir.join("latin1.txt"), [b'c', b'a', b'f', 0xE9, b'\n']).unwrap();
    let char_run = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--config",
            "configs/shakespeare-char-smoke.toml",
            "--quiet",
            "--set",
            "train.steps=2",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| attnlab(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let missing = format!("task.path=\"{}\"", d("nope.txt"));
    let empty = format!("task.path=\"{}\"", d("empty.txt"));
    let short = format!("task.path=\"{}\"", d("short.txt"));
    let latin = format!("task.path=\"{}\"", d("latin1.txt"));
    let out_new = d("never-created");
    fails_with(&run(char_run(&["--set", &missing, "--out", &out_new])), "cannot read corpus");
    fails_with(&run(char_run(&["--set", &empty, "--out", &out_new])), "is empty");
    fails_with(&run(char_run(&["--set", &short, "--out", &out_new])), "too short");
    fails_with(&run(char_run(&["--set", &latin, "--out", &out_new])), "not valid UTF-8");
    assert!(!Path::new(&out_new).exists(), "a failed start leaves no run directory");
    fails_with(&attnlab(&["train", "--config", "configs/nope.toml"]), "cannot read config");
    let twice = stderr(&attnlab(&["train", "--config", "configs/nope.toml"]));
    assert_eq!(twice.matches("os error").count(), 1, "the OS error once: {twice}");
    fails_with(
        &run(char_run(&["--set", "train.steps=many"])),
        "--set train.steps=many: invalid type",
    );
    // Output closed early (as by `| head -1`) ends the process quietly, not with a panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .arg("variants")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().unwrap();
    assert!(
        closed.status.code() != Some(101) && !stderr(&closed).contains("panicked"),
        "{:?}: {}",
        closed.status,
        stderr(&closed)
    );
    fails_with(
        &run(char_run(&["--set", "train.learning_rate=1"])),
        "unknown key 'train.learning_rate'",
    );
    fails_with(&run(char_run(&["--set", "model.d_model=30"])), "not divisible by model.n_heads");
    fails_with(
        &run(char_run(&["--set", "model.mixer=linear:elu1:chunk=0"])),
        "chunk must be at least 1",
    );
    fails_with(&run(char_run(&["--device", "tpu"])), "unknown device 'tpu'");

    // A directory of the user's is never written into; an empty one stays after a failed start.
    let users = dir.join("users");
    std::fs::create_dir_all(users.join("best")).unwrap();
    std::fs::write(users.join("meta.json"), "mine").unwrap();
    let users_out = users.to_str().unwrap().to_string();
    fails_with(
        &run(char_run(&["--out", &users_out])),
        "is not empty and holds no run (it has best, meta.json)",
    );
    assert_eq!(std::fs::read_to_string(users.join("meta.json")).unwrap(), "mine");
    assert_eq!(std::fs::read_dir(&users).unwrap().count(), 2, "nothing added");
    let empty_out = d("empty-dir");
    std::fs::create_dir_all(&empty_out).unwrap();
    fails_with(&run(char_run(&["--set", &short, "--out", &empty_out])), "too short");
    assert!(
        Path::new(&empty_out).is_dir() && std::fs::read_dir(&empty_out).unwrap().next().is_none(),
        "the user's empty directory stays, empty"
    );

    // An existing run is never overwritten by a new one.
    let existing = temp("bad-existing");
    ok(&train_tiny(&existing, &[], &[]));
    let before = std::fs::read(existing.join("metrics.jsonl")).unwrap();
    fails_with(&train_tiny(&existing, &[], &[]), "already holds a run");
    assert_eq!(std::fs::read(existing.join("metrics.jsonl")).unwrap(), before);

    // A corrupt checkpoint and one that does not fit the config.
    let ex = existing.to_str().unwrap();
    std::fs::write(existing.join("best/model.bpk"), b"not a burnpack").unwrap();
    fails_with(&attnlab(&["eval", "--run", ex]), "best/model.bpk does not match the SHA-256");
    let config = std::fs::read_to_string(existing.join("config.toml")).unwrap();
    std::fs::write(existing.join("config.toml"), config.replace("d_model = 32", "d_model = 48"))
        .unwrap();
    fails_with(&attnlab(&["eval", "--run", ex, "--checkpoint", "final"]), "does not fit the model");
    fails_with(
        &attnlab(&["sample", "--run", ex, "--checkpoint", "final"]),
        "does not fit the model",
    );
    fails_with(&attnlab(&["eval", "--run", &d("no-run")]), "is not a run directory");
    std::fs::remove_dir_all(existing).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_preset_loads_and_variants_are_listed() {
    for entry in std::fs::read_dir(root().join("configs")).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        attnlab_train::RunConfig::from_toml(&text, &[])
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    // Comparison files: every arm of every run resolves (presets are relative to the root).
    std::env::set_current_dir(root()).unwrap();
    for entry in std::fs::read_dir(root().join("configs/compare")).unwrap().flatten() {
        let spec = attnlab_eval::compare::CompareSpec::load(&entry.path()).unwrap();
        let plan = spec.plan().unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
        let arms = spec.resolve().unwrap().arms.len();
        assert_eq!(
            arms % spec.arms.len(),
            0,
            "a grid makes the same number of arms of each [[arm]]"
        );
        assert_eq!(plan.len(), arms * spec.seeds.len() * spec.lrs.len().max(1));
    }
    let v = ok(&attnlab(&["variants"]));
    for spec in ["softmax:sum_key_norms", "sigmoid", "linear:taylor", "linear:performer"] {
        assert!(v.contains(spec), "{v}");
    }
}

#[test]
fn compare_writes_a_report_whose_numbers_match_results_json() {
    let out = temp("compare");
    let o = attnlab(&[
        "compare",
        "--task",
        "mqar",
        "--variants",
        "softmax,linear:elu1",
        "--seeds",
        "2",
        "--lrs",
        "1e-3,3e-3",
        "--target",
        "0.01",
        "--set",
        "train.steps=6",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.eval_every=3",
        "--set",
        "train.log_every=1",
        "--set",
        "task.eval_examples=16",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = ok(&o);
    assert!(
        text.contains("[8/8 done | 0 running | 0 queued]") && text.contains("ETA"),
        "one line per run with an ETA: {text}"
    );
    assert!(text.contains("linear:elu1:") && text.contains("monitor"), "{text}");
    for f in ["results.json", "report.md", "report.html"] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    // Six steps teach MQAR nothing: the report opens by saying so, with no adoption advice.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let decision = md.lines().find(|l| !l.trim().is_empty() && !l.starts_with('#')).unwrap();
    assert!(
        decision.starts_with("**Decision:** Inconclusive: no arm learned the task")
            && decision.contains("no adoption advice"),
        "{md}"
    );
    assert!(text.contains("decision: Inconclusive: no arm learned"), "{text}");
    assert!(
        std::fs::read_to_string(out.join("report.html"))
            .unwrap()
            .contains("<p id=\"decision\"><strong>Decision:</strong> Inconclusive")
    );
    for stem in ["loss", "grad_norm", "eval_metric", "entropy", "final_metric", "steps_to_target"] {
        let svg = std::fs::read_to_string(out.join(format!("plots/{stem}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>") && !svg.contains("NaN"),
            "{stem}.svg"
        );
        let png = std::fs::read(out.join(format!("plots/{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["runs"].as_array().unwrap().len(), 8);
    assert_eq!(results["metric"], "accuracy");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>")
            && html.contains("<svg")
            && html.trim_end().ends_with("</html>")
    );
    for arm in results["arms"].as_array().unwrap() {
        let mean = arm["summary"]["mean"].as_f64().unwrap();
        let row = html
            .lines()
            .find(|l| l.starts_with(&format!("<tr><td>{}</td>", arm["name"].as_str().unwrap())))
            .expect("a row per arm");
        assert!(row.contains(&format!("<td>{mean:.4}</td>")), "mean {mean} not in {row}");
        assert!(row.contains(&format!("<td>{}</td>", arm["params"])), "params not in {row}");
        if let Some(d) = arm["difference"]["mean"].as_f64() {
            assert!(row.contains(&format!("<td>{d:.4}</td>")), "difference {d} not in {row}");
        }
    }
    // A bad arm fails before any training; an existing report is not overwritten.
    fails_with(
        &attnlab(&[
            "compare",
            "--task",
            "mqar",
            "--variants",
            "softmax,linear:elu1",
            "--out",
            out.to_str().unwrap(),
        ]),
        "holds another comparison",
    );
    fails_with(
        &attnlab(&[
            "compare",
            "--task",
            "mqar",
            "--variants",
            "softmax,linear:gelu",
            "--out",
            &format!("{}-2", out.display()),
        ]),
        "unknown feature map",
    );
    std::fs::remove_dir_all(out).unwrap();
}

/// A comparison killed part-way and run again with the same command continues: finished runs
/// are kept byte for byte, the interrupted one is resumed, and the report equals an
/// uninterrupted comparison's. A comparison where an arm has no finished run exits non-zero.
#[test]
fn an_interrupted_comparison_continues_when_run_again() {
    let (straight, killed) = (temp("compare-straight"), temp("compare-killed"));
    let args = |out: &Path| -> Vec<String> {
        [
            "compare",
            "--task",
            "mqar",
            "--variants",
            "softmax,linear:elu1",
            "--seeds",
            "2",
            "--set",
            "train.steps=40",
            "--set",
            "train.batch_size=8",
            "--set",
            "train.eval_every=10",
            "--set",
            "train.checkpoint_every=5",
            "--set",
            "task.eval_examples=16",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |out: &Path| attnlab(&args(out).iter().map(String::as_str).collect::<Vec<_>>());
    ok(&run(&straight));
    let mut child = Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args(args(&killed))
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the first run has finished and the second has written a checkpoint.
    let first = killed.join("runs/softmax/lr3e-3-seed1");
    let second = killed.join("runs/softmax/lr3e-3-seed2");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !(first.join("final/state.json").is_file() && latest_step(&second) >= 5) {
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the comparison ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished = std::fs::read(first.join("metrics.jsonl")).unwrap();
    let again = ok(&run(&killed));
    assert!(again.contains("continuing it"), "{again}");
    assert_eq!(
        std::fs::read(first.join("metrics.jsonl")).unwrap(),
        finished,
        "a finished run is kept as it was"
    );
    let finals = |out: &Path| -> Vec<(String, f64)> {
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        r["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (format!("{} {}", x["arm"], x["seed"]), x["final_metric"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(finals(&killed), finals(&straight));
    assert!(
        std::fs::read_dir(&killed)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".tmp")),
        "no staging left"
    );
    // The same --out with another comparison is refused, untouched.
    fails_with(
        &attnlab(&[
            "compare",
            "--task",
            "mqar",
            "--variants",
            "softmax",
            "--out",
            killed.to_str().unwrap(),
        ]),
        "holds another comparison",
    );
    // Every arm diverges: the report is written, and the command fails naming the arms.
    let diverged = temp("compare-diverged");
    let o = attnlab(&[
        "compare",
        "--task",
        "mqar",
        "--variants",
        "softmax,linear:elu1",
        "--seeds",
        "1",
        "--set",
        "train.steps=6",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.lr=1e30",
        "--set",
        "train.min_lr=1e30",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.grad_clip=0",
        "--quiet",
        "--out",
        diverged.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no run of softmax, linear:elu1 finished"), "{}", stderr(&o));
    assert!(diverged.join("report.md").is_file());
    for d in [straight, killed, diverged] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// A sweep file: two arms over a `[grid]` of two widths, two seeds; `steps` training steps.
fn sweep_file(dir: &Path, steps: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("sweep.toml");
    std::fs::write(
        &file,
        format!(
            "preset = \"configs/mqar-smoke.toml\"\nset = [\"train.steps={steps}\", \"train.eval_every=50\", \"train.checkpoint_every=10\", \
             \"task.eval_examples=16\"]\nseeds = [1, 2]\n[grid]\nmodel.d_model = [16, 32]\n[slurm]\ntime = \"00:10:00\"\n[[arm]]\nname = \"softmax\"\n[[arm]]\n\
             name = \"linear\"\nset = [\"model.mixer=linear:elu1\"]\n"
        ),
    )
    .unwrap();
    file
}

/// `--set` with `--config` applies on top of the file's own overrides (it changes what runs, so
/// the plan differs); the quick-use flags a file already fixes are refused with one line.
#[test]
fn compare_set_applies_over_a_comparison_file_and_its_quick_flags_are_refused() {
    let dir = temp("set-over-file");
    let file = sweep_file(&dir, 60);
    let plan = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "compare",
            "--config",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--plan-only",
        ];
        args.extend_from_slice(extra);
        ok(&attnlab(&args));
        let p: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
        p["runs"].as_array().unwrap().clone()
    };
    let (plain, set) =
        (plan(&dir.join("plain"), &[]), plan(&dir.join("set"), &["--set", "train.steps=7"]));
    assert_eq!(plain.len(), set.len());
    let steps = |runs: &[serde_json::Value]| {
        runs.iter().map(|r| r["config"]["train"]["steps"].as_u64().unwrap()).collect::<Vec<_>>()
    };
    assert!(
        steps(&plain).iter().all(|&s| s == 60) && steps(&set).iter().all(|&s| s == 7),
        "{:?} {:?}",
        steps(&plain),
        steps(&set)
    );
    for flag in [["--seeds", "2"], ["--lrs", "1e-3"], ["--target", "0.5"]] {
        let out = dir.join("refused");
        let o = attnlab(&[
            "compare",
            "--config",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--plan-only",
            flag[0],
            flag[1],
        ]);
        fails_with(&o, "cannot be used with");
        assert!(!out.exists(), "{flag:?}: nothing written");
    }
}

/// Every run's numbers in a report directory's results.json, by plan id: what must not depend
/// on the executor (timings and paths may).
fn run_numbers(out: &Path) -> std::collections::BTreeMap<String, String> {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    r["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let numbers: Vec<String> = [
                "final_metric",
                "loss",
                "grad_norm",
                "eval_metric",
                "entropy",
                "final_eval",
                "error",
                "pending",
                "params",
            ]
            .iter()
            .map(|k| x[*k].to_string())
            .collect();
            (x["id"].as_str().unwrap().to_string(), numbers.join(" "))
        })
        .collect()
}

/// One plan, three ways to execute it: one run at a time in the process, `--jobs 2` worker
/// processes (killed midway and continued), and the separate plan / run-entry / analyse steps
/// (with a partial analysis in between). Same seeds, same numbers, to the bit.
#[test]
fn a_grid_sweep_gives_the_same_runs_with_jobs_2_and_in_separate_steps() {
    let dir = temp("sweep");
    let file = sweep_file(&dir, 60);
    let (straight, parallel, steps) = (dir.join("straight"), dir.join("jobs2"), dir.join("steps"));
    let compare = |out: &Path, extra: &[&str]| {
        let mut args =
            vec!["compare", "--config", file.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        attnlab(&args)
    };
    ok(&compare(&straight, &["--quiet"]));
    // --jobs 2 with its executor killed midway: the workers die with it (none trains on holding
    // its run's lock), and the same command continues the sweep.
    let mut executor = Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args([
            "compare",
            "--config",
            file.to_str().unwrap(),
            "--out",
            parallel.to_str().unwrap(),
            "--jobs",
            "2",
            "--quiet",
        ])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = parallel.join("runs/softmax-d_model-16/lr3e-3-seed1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while latest_step(&first) < 10 {
        assert!(
            std::time::Instant::now() < deadline && executor.try_wait().unwrap().is_none(),
            "the sweep ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    executor.kill().unwrap();
    executor.wait().unwrap();
    let text = ok(&compare(&parallel, &["--jobs", "2"]));
    assert!(
        text.contains("continuing it")
            && text.contains("[8/8 done | 0 running | 0 queued]")
            && !text.contains("FAILED"),
        "{text}"
    );
    let verdict = text
        .lines()
        .find(|l| l.starts_with("- linear d_model=32: "))
        .expect("a verdict per grid arm");
    assert!(
        verdict.contains("softmax d_model=32") && !verdict.contains("softmax d_model=16"),
        "judged at its own width: {verdict}"
    );

    let plan = ok(&compare(&steps, &["--plan-only"]));
    assert!(
        plan.contains("softmax-d_model-16/lr3e-3-seed1") && plan.contains("plan: 8 runs"),
        "{plan}"
    );
    let entries: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(steps.join("plan.json")).unwrap()).unwrap();
    let entries = entries["runs"].as_array().unwrap();
    assert_eq!(entries.len(), 8);
    assert!(entries.iter().all(|e| e["fingerprint"].as_str().unwrap().len() == 16));
    assert!(!steps.join("runs").exists(), "--plan-only trains nothing");
    let step = |extra: &[&str]| {
        let mut args = vec!["compare", "--out", steps.to_str().unwrap()];
        args.extend_from_slice(extra);
        attnlab(&args)
    };
    ok(&step(&["--run-only", "--index", "0"]));
    ok(&step(&["--run-only", "--index", "1"]));
    fails_with(&step(&["--run-only", "--index", "8"]), "has entries 0 to 7");
    // Half a plan: the report names what is missing and judges nothing it cannot.
    let partial = step(&["--analyse-only"]);
    assert!(
        !partial.status.success()
            && stderr(&partial).contains(
                "no run of softmax d_model=32, linear d_model=16, linear d_model=32 finished"
            ),
        "{}",
        stderr(&partial)
    );
    let md = std::fs::read_to_string(steps.join("report.md")).unwrap();
    assert!(
        md.contains("## Runs not finished") && md.contains("- linear-d_model-32/lr3e-3-seed2"),
        "{md}"
    );
    assert!(md.contains("linear d_model=16: 2 run(s) not finished yet"), "{md}");
    let rest = ok(&step(&["--run-only", "--jobs", "2", "--quiet"]));
    assert!(rest.contains("8 of 8 runs finished"), "{rest}");
    ok(&step(&["--analyse-only"]));

    let expected = run_numbers(&straight);
    assert_eq!(expected.len(), 8);
    assert_eq!(run_numbers(&parallel), expected, "--jobs 2");
    assert_eq!(run_numbers(&steps), expected, "plan, run entries, analyse");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The plan as one Slurm job array on a real (single-node) Slurm: the report equals the local
/// `--jobs 1` one's; an array task cancelled midway leaves a report naming its run, and the same command
/// again submits only that run, which resumes from its checkpoint to the same numbers.
#[test]
fn slurm_executor_gives_the_local_runs_and_a_cancelled_task_resumes() {
    if !slurm_is_up() {
        // CI starts Slurm (.ci/run runs scripts/slurm-local.sh up), so there this is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide Slurm: `bash scripts/slurm-local.sh up` did not leave a node up"
        );
        eprintln!(
            "note: no Slurm here (start one with `sudo scripts/slurm-local.sh up`): the Slurm executor test did not run"
        );
        return;
    }
    let dir = temp("slurm");
    let file = sweep_file(&dir, 600);
    let (local, cluster) = (dir.join("local"), dir.join("cluster"));
    ok(&attnlab(&[
        "compare",
        "--config",
        file.to_str().unwrap(),
        "--out",
        local.to_str().unwrap(),
        "--quiet",
    ]));
    let submit = |extra: &[&str]| {
        let mut args = vec![
            "compare",
            "--config",
            file.to_str().unwrap(),
            "--out",
            cluster.to_str().unwrap(),
            "--executor",
            "slurm",
        ];
        args.extend_from_slice(extra);
        attnlab(&args)
    };
    let text = ok(&submit(&[]));
    assert!(text.contains("submitted 8 run(s) as Slurm array job"), "{text}");
    let jobs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.join("slurm/jobs.json")).unwrap())
            .unwrap();
    let array = jobs[0]["array_job"].as_str().unwrap().to_string();
    // Cancel task 0 once its run has written a checkpoint.
    let run = cluster.join("runs/softmax-d_model-16/lr3e-3-seed1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while latest_step(&run) < 10 {
        assert!(std::time::Instant::now() < deadline, "task 0 wrote no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(Command::new("scancel").arg(format!("{array}_0")).status().unwrap().success());
    // The analysis job still runs (afterany) and names the cancelled run.
    while !cluster.join("results.json").is_file() {
        assert!(std::time::Instant::now() < deadline, "the analysis job wrote no report");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let partial: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(partial["missing"], serde_json::json!(["softmax-d_model-16/lr3e-3-seed1"]));
    assert!(!run.join("final").exists() && latest_step(&run) >= 10, "cancelled midway");
    let again = ok(&submit(&["--wait", "--quiet"]));
    assert!(again.contains("continuing it") && again.contains("submitted 1 run(s)"), "{again}");
    assert_eq!(run_numbers(&cluster), run_numbers(&local));
    let script = std::fs::read_to_string(cluster.join("slurm/array.sh")).unwrap();
    assert!(
        script.contains("--run-only")
            && script.contains("#SBATCH --requeue")
            && script.contains("#SBATCH --time=00:10:00"),
        "{script}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn swap_finetunes_from_the_run_and_reports_before_and_after() {
    let run = temp("swap-run");
    let out = temp("swap-report");
    let train = attnlab(&[
        "train",
        "--config",
        "configs/mqar-smoke.toml",
        "--set",
        "train.steps=20",
        "--set",
        "task.eval_examples=32",
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]);
    ok(&train);
    let before = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let o = attnlab(&[
        "swap",
        "--run",
        run.to_str().unwrap(),
        "--to",
        "linear:elu1",
        "--layers",
        "1",
        "--finetune-steps",
        "6",
        "--seeds",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = ok(&o);
    assert!(text.contains("[4/4 done") && text.contains("swapped to linear:elu1"), "{text}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["baseline"], "original");
    for r in results["runs"].as_array().unwrap() {
        assert!(r["error"].is_null(), "{r}");
        // Both arms start from the trained weights: the eval curve has a step-0 point.
        assert_eq!(r["eval_metric"][0][0], 0, "{r}");
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(r["run_dir"].as_str().unwrap()).join("meta.json"))
                .unwrap(),
        )
        .unwrap();
        let copied = meta["initialised_from"]["copied"].as_array().unwrap();
        assert!(copied.iter().any(|n| n == "blocks.1.mixer.heads.qkv.weight"), "{meta}");
    }
    // Seeds start at the run's own (1337), whose eval set the run was judged on: there the
    // control's step-0 metric is the run's best eval, since both arms start from that checkpoint.
    let best = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["eval"]["accuracy"].as_f64()
        })
        .fold(f64::MIN, f64::max);
    let control = results["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["arm"] == "original" && r["seed"] == 1337)
        .expect("seed 1337");
    let start = control["eval_metric"][0][1].as_f64().unwrap();
    assert!((start - best).abs() < 1e-6, "control starts at {start}, the run's best was {best}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"before_after\"") && html.contains("Way back"));
    // The original run is untouched.
    assert_eq!(std::fs::read_to_string(run.join("config.toml")).unwrap(), before);
    fails_with(
        &attnlab(&[
            "swap",
            "--run",
            run.to_str().unwrap(),
            "--to",
            "linear:elu1",
            "--layers",
            "5",
            "--finetune-steps",
            "2",
        ]),
        "layer 5 does not exist",
    );
    fails_with(
        &attnlab(&[
            "swap",
            "--run",
            run.to_str().unwrap(),
            "--to",
            "linear:gelu",
            "--finetune-steps",
            "2",
        ]),
        "unknown feature map",
    );
    fails_with(
        &attnlab(&[
            "swap",
            "--run",
            "/nonexistent",
            "--to",
            "linear:elu1",
            "--finetune-steps",
            "2",
        ]),
        "not a run directory",
    );
    std::fs::remove_dir_all(run).unwrap();
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn bench_reports_every_section() {
    let json = temp("bench").with_extension("json");
    let text = ok(&attnlab(&[
        "bench",
        "--config",
        "configs/mqar-smoke.toml",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--lengths",
        "32,256",
        "--recurrent-max",
        "32",
        "--decode-tokens",
        "20",
        "--json",
        json.to_str().unwrap(),
        "--variants",
        "softmax,delta:gated",
        "--scaling",
        "softmax,linear:elu1,linear:elu1:form=recurrent,delta:gated",
    ]));
    assert!(text.contains("ms/step") && text.contains("decoding"), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["train_step"].as_array().unwrap().len(), 2);
    // 4 specs at T = 32, the recurrent form skipped at T = 256.
    assert_eq!(v["scaling"].as_array().unwrap().len(), 7);
    assert_eq!(v["decode"].as_array().unwrap().len(), 2 * 2, "positions 1 and 16 per variant");
    for r in v["train_step"].as_array().unwrap().iter().chain(v["scaling"].as_array().unwrap()) {
        assert!(r["ms_median"].as_f64().unwrap() > 0.0, "{r}");
        // The binary counts heap bytes: every forward+backward allocates something.
        assert!(r["peak_mib"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Softmax materialises T x T weights: T = 256 needs more than T = 32.
    let softmax_peak = |t: u64| {
        v["scaling"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["variant"] == "softmax" && p["seq_len"] == t)
            .unwrap()["peak_mib"]
            .as_f64()
            .unwrap()
    };
    assert!(
        softmax_peak(256) > softmax_peak(32) + 0.2,
        "{} vs {}",
        softmax_peak(256),
        softmax_peak(32)
    );
    fails_with(&attnlab(&["bench", "--only", "gpu"]), "unknown section 'gpu'");
    std::fs::remove_file(json).unwrap();
}

/// `-h` of every subcommand describes every flag (a flag without a doc comment prints its name
/// alone on its line).
#[test]
fn every_flag_of_every_subcommand_has_help_text() {
    let mut blank = Vec::new();
    for sub in
        ["train", "sample", "eval", "export", "compare", "reproduce", "swap", "bench", "variants"]
    {
        let help = ok(&attnlab(&[sub, "-h"]));
        let options = help
            .split("Options:")
            .nth(1)
            .unwrap_or_else(|| panic!("{sub}: no Options section:\n{help}"));
        let lines: Vec<&str> = options.lines().collect();
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.trim_start().starts_with('-')) {
            // "  -h, --help   Print help": the flag, its value name, two or more spaces, the text;
            // or, when a flag is long, the text alone on the next line.
            let same_line =
                line.trim_start().split_once("  ").is_some_and(|(_, text)| !text.trim().is_empty());
            let next_line = lines
                .get(i + 1)
                .is_some_and(|n| !n.trim().is_empty() && !n.trim_start().starts_with('-'));
            if !same_line && !next_line {
                blank.push(format!("attnlab {sub} {}", line.trim()));
            }
        }
    }
    assert!(blank.is_empty(), "flags without help text:\n{}", blank.join("\n"));
}
