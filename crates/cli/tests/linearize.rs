//! `attnlab linearize` at smoke size: a tiny Llama-shaped char teacher is linearised; stage 1
//! lowers every swapped layer's transfer error; the student is a run `eval` and `export` take;
//! `keep:1` keeps the worst-fitted layer as softmax, and with LoRA in stage 2 the merged
//! student evaluates to the reported loss; bad options are refused with one line and
//! leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{attnlab, attnlab_env, ok};

fn temp(name: &str) -> PathBuf {
    common::fresh_dir("lin", name)
}

fn teacher(dir: &Path) -> PathBuf {
    let run = dir.join("teacher");
    ok(&attnlab(&[
        "train",
        "--config",
        "configs/shakespeare-char-smoke.toml",
        "--set",
        "model.d_model=32",
        "--set",
        "model.n_layers=2",
        "--set",
        "model.max_seq_len=32",
        "--set",
        "model.positions=rope",
        "--set",
        "model.norm=rms",
        "--set",
        "model.mlp=swiglu",
        "--set",
        "model.mlp_hidden=64",
        "--set",
        "train.steps=200",
        "--set",
        "train.batch_size=8",
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]));
    run
}

fn linearize(teacher: &Path, out: &Path, extra: &[&str]) -> Output {
    linearize_env(teacher, out, extra, &[])
}

fn linearize_env(teacher: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "linearize",
        "--run",
        teacher.to_str().unwrap(),
        "--to",
        "linear:elu1",
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--transfer-steps") {
        args.extend(["--transfer-steps", "15", "--recover-steps", "10"]);
    }
    args.extend_from_slice(extra);
    attnlab_env(&args, env)
}

#[test]
fn linearize_transfers_distils_and_writes_a_usable_student() {
    let dir = temp("run");
    let teacher = teacher(&dir);
    let out = dir.join("report");
    let printed = ok(&linearize(&teacher, &out, &[]));
    assert!(printed.contains("Linearising layers [0, 1] to linear:elu1 costs"), "{printed}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for layer in r["layers"].as_array().unwrap() {
        let (before, after) = (layer["before"].as_f64().unwrap(), layer["after"].as_f64().unwrap());
        assert!(after < before, "stage 1 lowers every layer's error: {layer}");
    }
    for key in ["teacher_loss", "swapped_loss", "transferred_loss", "student_loss", "control_loss"]
    {
        assert!(r[key].as_f64().unwrap().is_finite(), "{key}: {r}");
    }
    assert_eq!(r["transfer_curve"].as_array().unwrap().len(), 15);
    // A KV cache grows with the context, elu1's state does not.
    let (teacher_32k, student_32k) =
        (r["state_bytes_32k"][0].as_u64().unwrap(), r["state_bytes_32k"][1].as_u64().unwrap());
    assert_eq!(teacher_32k, 8 * r["state_bytes_4k"][0].as_u64().unwrap(), "{r}");
    assert_eq!(student_32k, r["state_bytes_4k"][1].as_u64().unwrap(), "{r}");
    assert!(student_32k < teacher_32k, "{r}");
    assert!(r["decode_tokens_per_s"][1].as_f64().unwrap() > 0.0, "{r}");
    // Loss by position over the 32-character windows: buckets 8, 16 and 32.
    let buckets: Vec<&str> =
        r["loss_by_position"].as_array().unwrap().iter().map(|b| b[0].as_str().unwrap()).collect();
    assert_eq!(buckets, ["loss@8", "loss@16", "loss@32"], "{r}");
    assert_eq!(
        r["control_curve"].as_array().unwrap().len(),
        25,
        "the control trains both stages' steps"
    );
    // Each fine-tune hands back its best evaluation (here every 50 steps: only the last).
    let best = |evals: &serde_json::Value| {
        evals.as_array().unwrap().iter().map(|e| e[1].as_f64().unwrap()).fold(f64::MAX, f64::min)
    };
    assert!((best(&r["recover_evals"]) - r["student_loss"].as_f64().unwrap()).abs() < 1e-6, "{r}");
    assert!((best(&r["control_evals"]) - r["control_loss"].as_f64().unwrap()).abs() < 1e-6, "{r}");
    // Recall probes at 1×, 2× and 4× the 32-token context; the passkey does not fit in 32.
    let probes = r["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 6, "{r}");
    for p in probes {
        let fits = !(p["probe"] == "passkey" && p["multiple"] == 1);
        assert_eq!(p["note"].is_null(), fits, "{p}");
        for a in p["accuracy"].as_array().unwrap() {
            assert_eq!(a.is_null(), !fits, "RoPE runs past the context: {p}");
            assert!(a.is_null() || (0.0..=1.0).contains(&a.as_f64().unwrap()), "{p}");
        }
    }
    assert!(out.join("transfer.svg").is_file() && out.join("report.md").is_file());
    // The student is an ordinary run.
    let student = out.join("student");
    let eval = ok(&attnlab(&["eval", "--run", student.to_str().unwrap(), "--json"]));
    let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
    let reported = r["student_loss"].as_f64().unwrap();
    assert!(
        (eval["metrics"]["loss"].as_f64().unwrap() - reported).abs() < 1e-4,
        "{eval} vs {reported}"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(student.join("meta.json")).unwrap()).unwrap();
    let copied = meta["initialised_from"]["copied"].as_array().unwrap();
    assert!(copied.iter().any(|n| n == "blocks.0.mixer.heads.qkv.weight"), "{meta}");
    let config = std::fs::read_to_string(student.join("config.toml")).unwrap();
    assert!(config.contains("linear:elu1"), "{config}");

    // keep:1 keeps one layer as softmax: the one stage 1 fits worst.
    let kept = dir.join("kept");
    ok(&linearize(&teacher, &kept, &["--layers", "keep:1", "--lora", "4"]));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kept.join("results.json")).unwrap()).unwrap();
    let layers = r["layers"].as_array().unwrap();
    let worst = layers
        .iter()
        .max_by(|a, b| a["after"].as_f64().unwrap().total_cmp(&b["after"].as_f64().unwrap()))
        .unwrap();
    assert_eq!(r["kept"], serde_json::json!([worst["layer"]]), "{r}");
    assert_eq!(r["swapped"].as_array().unwrap().len(), 1);
    assert!(r["student_spec"].as_str().unwrap().contains("softmax"), "{r}");
    // With LoRA in stage 2 the student is merged: an ordinary run with the base's parameters.
    assert_eq!(r["lora_rank"], 4);
    let eval = ok(&attnlab(&["eval", "--run", kept.join("student").to_str().unwrap(), "--json"]));
    let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert!(
        (eval["metrics"]["loss"].as_f64().unwrap() - r["student_loss"].as_f64().unwrap()).abs()
            < 1e-4
    );
}

/// LoLCATs' stage 1: only the new mixer's own parameters (GLA's gate) train, q/k/v/o frozen;
/// the gate alone still lowers the transfer error.
#[test]
fn stage_one_can_train_only_the_new_parameters() {
    let dir = temp("own");
    let teacher = teacher(&dir);
    let out = dir.join("report");
    let mut args: Vec<&str> = vec!["--transfer-params", "new", "--transfer-lr", "1e-2"];
    args.extend(["--to", "decay:gla"]);
    let o = attnlab(
        &[
            &["linearize", "--run", teacher.to_str().unwrap(), "--out", out.to_str().unwrap()][..],
            &["--transfer-steps", "15", "--recover-steps", "5"],
            &args[..],
        ]
        .concat(),
    );
    ok(&o);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for layer in r["layers"].as_array().unwrap() {
        assert!(layer["after"].as_f64() < layer["before"].as_f64(), "{layer}");
    }
}

/// A linearisation killed in each stage in turn (attention transfer, LoRA recovery, control),
/// resumed each time by the same command, ends with the numbers of one never interrupted; the
/// finished directory answers again without training; other options there are refused.
#[test]
fn linearize_killed_in_every_stage_resumes_to_the_same_result() {
    let dir = temp("resume");
    let teacher = teacher(&dir);
    let args = ["--transfer-steps", "12", "--recover-steps", "12", "--eval-every", "4"];
    let args = [&args[..], &["--lora", "2", "--probe-examples", "4", "--quiet"]].concat();
    let (straight, killed) = (dir.join("straight"), dir.join("killed"));
    ok(&linearize(&teacher, &straight, &args));
    for hook in ["transfer:8", "recovery:8", "control:12"] {
        let o =
            linearize_env(&teacher, &killed, &args, &[("ATTNLAB_TEST_ABORT_IN_CHECKPOINT", hook)]);
        assert!(!o.status.success(), "{hook}: the hook aborts");
        assert!(!killed.join("results.json").exists());
    }
    ok(&linearize(&teacher, &killed, &args));
    let read = |d: &Path| -> serde_json::Value {
        let mut r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("results.json")).unwrap())
                .unwrap();
        // Wall-clock speed and the directory differ by nature.
        r.as_object_mut().unwrap().remove("decode_tokens_per_s");
        r.as_object_mut().unwrap().remove("student_dir");
        r
    };
    assert_eq!(read(&straight), read(&killed));
    let leftovers: Vec<_> = std::fs::read_dir(&killed)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Finished: the same command prints the same report without training again.
    let again = ok(&linearize(&teacher, &killed, &args));
    assert!(again.contains("Linearising layers [0, 1] to linear:elu1 costs"), "{again}");
    assert_eq!(read(&straight), read(&killed));
    // Other options in the same directory: one line naming what differs.
    let other = [&args[..], &["--alpha", "0.5"]].concat();
    let o = linearize(&teacher, &killed, &other);
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert!(!o.status.success() && err.contains("alpha: 1.0 there, 0.5 now"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Early stopping: with an evaluation every step and patience 1, a fine-tune at a learning
/// rate too high to keep improving stops at the first evaluation that is not better, and hands
/// back the weights of the best one.
#[test]
fn a_fine_tune_stops_early_and_keeps_its_best_weights() {
    let dir = temp("early");
    let teacher = teacher(&dir);
    let out = dir.join("report");
    let args = ["--transfer-steps", "2", "--recover-steps", "30", "--eval-every", "1"];
    let args =
        [&args[..], &["--patience", "1", "--lr", "3e-2", "--no-control", "--quiet"]].concat();
    ok(&linearize(&teacher, &out, &args));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let evals: Vec<(u64, f64)> = r["recover_evals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_u64().unwrap(), e[1].as_f64().unwrap()))
        .collect();
    let stopped = r["recover_stopped_at"].as_u64().expect("stopped early");
    assert!(stopped < 30 && evals.last().unwrap().0 == stopped, "{r}");
    let (last, before) = (evals[evals.len() - 1].1, evals[evals.len() - 2].1);
    assert!(last >= before, "stopped at the first evaluation that was not better: {evals:?}");
    let best = evals.iter().map(|e| e.1).fold(f64::MAX, f64::min);
    assert!((r["student_loss"].as_f64().unwrap() - best).abs() < 1e-6, "{r}");
    assert!(r["control_loss"].is_null() && r["control_curve"].as_array().unwrap().is_empty());
}

#[test]
fn bad_linearize_options_are_refused_with_one_line() {
    let dir = temp("bad");
    let teacher = teacher(&dir);
    for (extra, needle) in [
        (vec!["--layers", "keep:2"], "leaves none"),
        (vec!["--layers", "5"], "layer 5 does not exist"),
        (vec!["--layers", "one"], "keep:K"),
        (vec!["--tau", "0"], "--tau"),
        (vec!["--alpha=-1"], "--alpha"),
        (vec!["--eval-every", "0"], "at least 1"),
    ] {
        let out = dir.join(format!("bad-{}", extra.join("-")));
        let o = linearize(&teacher, &out, &extra);
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        assert!(!o.status.success() && err.contains(needle), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out.exists(), "{extra:?} left {}", out.display());
    }
    let run = teacher.to_str().unwrap();
    let o = attnlab(&["linearize", "--run", run, "--to", "linear:nope"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--to"), "bad spec");
    let o =
        attnlab(&["linearize", "--run", run, "--to", "linear:elu1", "--transfer-params", "new"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no parameters of its own"),
        "elu1 has none"
    );
    let o = attnlab(&["linearize", "--run", run, "--to", "linear:elu1", "--recover-steps", "0"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least 1"), "no steps");
}
