//! `attnlab linearize` at smoke size: a tiny Llama-shaped char teacher is linearised; stage 1
//! lowers every swapped layer's transfer error; the student is a run `eval` and `export` take;
//! `keep:1` keeps the worst-fitted layer as softmax, and with LoRA in stage 2 the merged
//! student evaluates to the reported loss; bad options are refused with one line and
//! leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn attnlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the binary runs")
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("attnlab-lin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
    let mut args = vec![
        "linearize",
        "--run",
        teacher.to_str().unwrap(),
        "--to",
        "linear:elu1",
        "--transfer-steps",
        "15",
        "--recover-steps",
        "10",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    attnlab(&args)
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
