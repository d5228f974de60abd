//! End-to-end tests of the evaluation side of issue 33's second round: values bound for Slurm
//! scripts, bench lengths, non-finite compare options, diverged arms in a report, and the built-in
//! presets from outside the repository. Each runs the `attnlab` binary as a user would.

mod common;
use common::*;

/// A newline in any value bound for a batch script would start a command of its own there: the
/// comparison is refused, naming the option, before the plan or any script is written (and so
/// before sbatch could run).
#[test]
fn slurm_values_with_control_characters_are_refused_before_anything_is_written() {
    let dir = fresh_dir("rel-eval", "slurm-inject");
    let out = dir.join("report");
    let out_text = out.to_str().unwrap();
    let compare = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "compare",
            "--task",
            "mqar",
            "--variants",
            "softmax",
            "--seeds",
            "1",
            "--out",
            out,
        ];
        args.extend_from_slice(&["--executor", "slurm"]);
        args.extend_from_slice(extra);
        attnlab(&args)
    };
    let injected = "x\ntouch /tmp/attnlab-pwned";
    let sbatch = format!("--sbatch=--qos={injected}");
    for (extra, option) in [
        (vec!["--slurm-partition", injected], "--slurm-partition"),
        (vec!["--slurm-mem", "4G\rtouch x"], "--slurm-mem"),
        (vec!["--slurm-time", "01:00:00\ttouch x"], "--slurm-time"),
        (vec!["--sbatch=--gres=gpu:1", sbatch.as_str()], "--sbatch"),
    ] {
        let o = compare(out_text, &extra);
        fails_with(&o, option);
        assert!(
            stderr(&o).contains("\\n") || stderr(&o).contains("\\r") || stderr(&o).contains("\\t")
        );
        assert!(!out.exists(), "{option}: nothing may be written");
    }
    // The report directory's own path reaches the scripts too.
    let bad_out = dir.join("report\ntouch x");
    fails_with(&compare(bad_out.to_str().unwrap(), &[]), "--out");
    assert!(!bad_out.exists());
    // So does a comparison file's [slurm] table.
    let file = dir.join("sweep.toml");
    std::fs::write(
        &file,
        format!(
            "preset = \"{}\"\nseeds = [1]\n[slurm]\npartition = \"x\\ntouch /tmp/attnlab-pwned\"\n[[arm]]\nname = \"softmax\"\n",
            root().join("configs/mqar-smoke.toml").display()
        ),
    )
    .unwrap();
    fails_with(
        &attnlab(&[
            "compare",
            "--config",
            file.to_str().unwrap(),
            "--out",
            out_text,
            "--executor",
            "slurm",
        ]),
        "--slurm-partition (or [slurm] partition)",
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// `--lengths 0` divided by zero in the scaling section (a panic, after the other sections had
/// run); it is refused up front.
#[test]
fn bench_refuses_a_zero_length_before_measuring_anything() {
    for lengths in ["0", "64,0"] {
        let o = attnlab(&[
            "bench",
            "--only",
            "train,scaling",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--scaling",
            "softmax",
            "--lengths",
            lengths,
        ]);
        fails_with(
            &o,
            "--lengths: 0 is not a sequence length; give positive lengths, e.g. --lengths 64,256",
        );
        assert!(stdout(&o).is_empty(), "nothing measured: {}", stdout(&o));
    }
}

/// NaN or inf as a threshold or learning rate was accepted (and saved as null); each is refused,
/// naming the option, from the flags and from a comparison file alike.
#[test]
fn compare_refuses_non_finite_targets_and_learning_rates() {
    let dir = fresh_dir("rel-eval", "non-finite");
    let out = dir.join("report");
    for (flag, value, needle) in [
        ("--target", "nan", "--target"),
        ("--target", "inf", "--target"),
        ("--target", "-inf", "--target"),
        ("--lrs", "1e-3,nan", "--lrs"),
        ("--lrs", "inf", "--lrs"),
        ("--lrs", "0", "--lrs"),
    ] {
        let o = attnlab(&[
            "compare",
            "--task",
            "mqar",
            "--variants",
            "softmax",
            "--seeds",
            "1",
            &format!("{flag}={value}"),
            "--plan-only",
            "--out",
            out.to_str().unwrap(),
        ]);
        fails_with(&o, needle);
        assert!(!out.exists(), "{flag} {value}: nothing may be written");
    }
    for (line, needle) in [("target = nan", "target NaN"), ("lrs = [1e-3, inf]", "lrs: inf")] {
        let file = dir.join("file.toml");
        std::fs::write(
            &file,
            format!(
                "preset = \"{}\"\nseeds = [1]\n{line}\n[[arm]]\nname = \"softmax\"\n",
                root().join("configs/mqar-smoke.toml").display()
            ),
        )
        .unwrap();
        let o = attnlab(&[
            "compare",
            "--config",
            file.to_str().unwrap(),
            "--plan-only",
            "--out",
            out.to_str().unwrap(),
        ]);
        fails_with(&o, needle);
        assert!(!out.exists(), "{line}: nothing may be written");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A huge but finite learning rate is legitimate input; every run diverges. The report names
/// each arm as having no finite result, never "NaN ± NaN", and the metric and its chance level
/// are MQAR's accuracy and 0.25 together (it said "loss" beside accuracy's chance level).
#[test]
fn a_comparison_whose_runs_all_diverge_names_its_arms_without_a_result() {
    let dir = fresh_dir("rel-eval", "diverged");
    let out = dir.join("report");
    let o = attnlab(&[
        "compare",
        "--task",
        "mqar",
        "--variants",
        "softmax,linear:elu1",
        "--seeds",
        "2",
        "--lrs",
        "1e30",
        "--set",
        "train.steps=6",
        "--set",
        "train.batch_size=8",
        "--set",
        "task.eval_examples=16",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    fails_with(&o, "no run of softmax, linear:elu1 finished");
    let text = stdout(&o);
    assert!(!text.contains("NaN"), "{text}");
    for line in [
        "decision: Inconclusive: no arm has a finite result",
        "accuracy (higher is better), each arm at its best lr:",
        "- softmax: baseline with no finite result (all 2 run(s) at lr 1e30 failed or diverged",
        "- linear:elu1: no finite result (all 2 run(s) at lr 1e30 failed or diverged",
    ] {
        assert!(text.contains(line), "'{line}' missing from\n{text}");
    }
    // The report's own lines (not the runs' error messages, which say the loss became NaN).
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let (own, failed) = report.split_once("## Failed runs").expect("a Failed runs section");
    assert!(!own.contains("NaN") && own.contains("| no finite result |"), "{own}");
    assert_eq!(failed.matches("training diverged").count(), 4, "{failed}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(
        (results["metric"].as_str(), results["chance"].as_f64()),
        (Some("accuracy"), Some(0.25))
    );
    for arm in results["arms"].as_array().unwrap() {
        assert_eq!(arm["no_finite_result"], true, "{arm}");
        assert!(arm["summary"]["mean"].is_null(), "{arm}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The built-in presets and comparison files work from any working directory: `configs/...`
/// with nothing there is the copy in the binary; a path that is not built in keeps its error.
#[test]
fn built_in_presets_work_outside_the_repository() {
    let dir = fresh_dir("rel-eval", "elsewhere");
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let small =
        ["--set", "train.steps=2", "--set", "task.eval_examples=16", "--set", "train.eval_every=2"];
    let report = dir.join("report");
    let mut args =
        vec!["compare", "--task", "mqar", "--variants", "softmax", "--seeds", "1", "--quiet"];
    args.extend_from_slice(&small);
    args.extend_from_slice(&["--out", report.to_str().unwrap()]);
    ok(&attnlab_in(&cwd, &args));
    assert!(report.join("results.json").is_file());

    let run = dir.join("run");
    let mut args = vec!["train", "--config", "configs/mqar-smoke.toml", "--quiet"];
    args.extend_from_slice(&small);
    args.extend_from_slice(&["--out", run.to_str().unwrap()]);
    ok(&attnlab_in(&cwd, &args));
    assert!(run.join("final").exists(), "the run finished");

    // A built-in comparison file names its preset as ../mqar-smoke.toml.
    let plan = dir.join("plan");
    let text = ok(&attnlab_in(
        &cwd,
        &[
            "compare",
            "--config",
            "configs/compare/mqar-softmax-vs-linear.toml",
            "--plan-only",
            "--out",
            plan.to_str().unwrap(),
        ],
    ));
    assert!(text.contains("plan: "), "{text}");

    fails_with(
        &attnlab_in(&cwd, &["train", "--config", "configs/nope.toml"]),
        "cannot read config configs/nope.toml",
    );
    // A user's own file at a built-in path wins over the built-in copy.
    std::fs::create_dir_all(cwd.join("configs")).unwrap();
    std::fs::write(cwd.join("configs/mqar-smoke.toml"), "[task]\nkind = \"nonsense\"\n").unwrap();
    let o = attnlab_in(&cwd, &["train", "--config", "configs/mqar-smoke.toml"]);
    assert!(!o.status.success() && stderr(&o).contains("nonsense"), "{}", stderr(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

/// On a real Slurm, `--wait` prints the verdicts of a comparison with diverged runs. It used to
/// parse results.json back, where a number no run produced is null ("invalid type: null,
/// expected f64"), and, when an arm had no finished run, said only that the analysis job failed.
#[test]
fn slurm_wait_prints_the_verdicts_of_a_comparison_with_diverged_runs() {
    if !slurm_is_up() {
        // CI starts Slurm (.ci/run runs scripts/slurm-local.sh up), so there this is a failure.
        assert!(std::env::var_os("CI").is_none(), "CI must have a running Slurm");
        eprintln!("note: no Slurm here: the --wait test with diverged runs did not run");
        return;
    }
    let dir = fresh_dir("rel-eval", "slurm-diverged");
    let file = dir.join("diverging.toml");
    let comparison = |name: &str, lrs: &str, arms: &str| {
        std::fs::write(
            &file,
            format!(
                "preset = \"{}\"\nset = [\"train.steps=4\", \"task.eval_examples=16\", \"train.eval_every=2\"]\nseeds = [1]\n{lrs}\n{arms}",
                root().join("configs/mqar-smoke.toml").display()
            ),
        )
        .unwrap();
        let out = dir.join(name);
        let args = ["compare", "--config", file.to_str().unwrap(), "--out", out.to_str().unwrap()];
        attnlab(&[&args[..], &["--executor", "slurm", "--wait", "--quiet"]].concat())
    };
    // Every arm has a finished run at its best lr; the runs at 1e30 failed.
    let text = ok(&comparison("two-lrs", "lrs = [3e-3, 1e30]", "[[arm]]\nname = \"softmax\"\n"));
    assert!(text.contains("- softmax: baseline (accuracy "), "{text}");
    // An arm whose every run diverged: its line, then the same error as a local run.
    let o = comparison(
        "wild-arm",
        "",
        "[[arm]]\nname = \"softmax\"\n[[arm]]\nname = \"wild\"\nset = [\"train.lr=1e30\"]\n",
    );
    fails_with(&o, "no run of wild finished");
    let text = stdout(&o);
    assert!(
        text.contains("- wild: no finite result (all 1 run(s)") && !text.contains("NaN"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
