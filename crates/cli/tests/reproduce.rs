//! Each reproduction at its smoke size shows the effect it expects (`--strict` fails the
//! command otherwise), and writes a complete report.

use std::path::Path;
use std::process::Command;

mod common;
use common::root;

fn reproduce(name: &str) -> serde_json::Value {
    let out = std::env::temp_dir().join(format!("attnlab-reproduce-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args([
            "reproduce",
            name,
            "--size",
            "smoke",
            "--strict",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{name}: {}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("holds:"), "{stdout}");
    for f in ["results.json", "report.md", "report.html"] {
        assert!(out.join(f).is_file(), "{name}: missing {f}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>")
            && html.contains("<svg")
            && html.trim_end().ends_with("</html>")
    );
    let plots: Vec<_> =
        std::fs::read_dir(out.join("plots")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(plots.iter().any(|p| p.extension().is_some_and(|e| e == "png")), "{name}: no PNG");
    for svg in plots.iter().filter(|p| p.extension().is_some_and(|e| e == "svg")) {
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(
            text.contains("<svg") && text.trim_end().ends_with("</svg>") && !text.contains("NaN"),
            "{}",
            svg.display()
        );
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let checks = results["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    for c in checks {
        assert_eq!(c["holds"], true, "{name}: {c}");
    }
    std::fs::remove_dir_all(&out).unwrap();
    results
}

#[test]
fn scaling_sim_shows_saturation_without_scaling() {
    let r = reproduce("scaling-sim");
    assert_eq!(r["stats"].as_array().unwrap().len(), 8, "2 widths x 4 divisors");
}

#[test]
fn scaling_train_sum_of_key_norms_flattens_attention() {
    reproduce("scaling-train");
}

#[test]
fn mqar_gap_softmax_recalls_better() {
    let r = reproduce("mqar-gap");
    assert_eq!(r["per_width"].as_array().unwrap().len(), 1);
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "softmax on every seed, the gap where it solves, the average");
    assert!(checks[0]["claim"].as_str().unwrap().contains("on every seed"), "{}", checks[0]);
}

#[test]
fn icl_gap_softmax_learns_in_context() {
    reproduce("icl-gap");
}

#[test]
fn lm_gap_softmax_models_text_better() {
    reproduce("lm-gap");
}

#[test]
fn length_scaling_ssmax_holds_attention_and_fox_holds_recall_and_loss_past_the_trained_length() {
    let r = reproduce("length-scaling");
    assert_eq!(r["checks"].as_array().unwrap().len(), 7);
    for part in ["max_retrieval", "mqar_length", "char_lm_length"] {
        assert_eq!(r[part]["runs"].as_array().unwrap().len(), 4, "{part}: 2 arms x 2 seeds");
    }
}

#[test]
fn separation_softmax_beats_plain_linear_attention() {
    reproduce("separation");
}

#[test]
fn hybrid_ratio_three_gated_deltanet_layers_to_one_softmax_recover_recall() {
    let r = reproduce("hybrid-ratio");
    assert_eq!(r["checks"].as_array().unwrap().len(), 3, "the gap and two hybrids at one width");
    let runs = r["per_width"][0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8, "4 stacks x 2 seeds");
}

#[test]
fn recall_frontier_softmax_on_top_and_gated_delta_above_linear() {
    let r = reproduce("recall-frontier");
    assert_eq!(r["widths"], serde_json::json!([16, 32]));
    // Each family's decode state grows with the width: the frontier has two points per family.
    for family in 0..4 {
        let state = |w: usize| r["per_width"][w]["arms"][family]["state_floats"].as_u64().unwrap();
        assert!(state(1) > state(0), "family {family}: {} -> {}", state(0), state(1));
    }
}

/// State tracking at smoke size: on parity, both negative-eigenvalue delta-rule arms solve the
/// training length on both seeds and their [0, 1] counterparts do not, and every arm (softmax,
/// linear, Mamba-2 decay, the six delta-rule arms (KDA's included), DeltaProduct and RWKV-7) reports its per-position and last-position
/// accuracy at 1x, 2x, 4x and 8x the trained length.
#[test]
fn state_tracking_negative_eigenvalues_solve_parity_and_the_unit_interval_does_not() {
    let r = reproduce("state-tracking");
    assert_eq!(r["checks"].as_array().unwrap().len(), 6, "three pairs, solves and does not");
    assert_eq!(r["lengths"], serde_json::json!([16, 32, 64, 128]));
    let parity = &r["problems"]["parity"];
    assert_eq!(parity["chance"], 0.5);
    let runs = parity["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 22, "11 arms x 2 seeds");
    for run in runs {
        for key in
            ["accuracy", "final_accuracy", "accuracy@32", "accuracy@128", "final_accuracy@128"]
        {
            let v = run["final_eval"][key].as_f64().unwrap_or(f64::NAN);
            assert!((0.0..=1.0).contains(&v), "{}: {key} = {v}", run["id"]);
        }
    }
}

/// The MAD suite at smoke size: softmax recalls where elu+1 linear attention blurs (in-context
/// and noisy recall), memorization does not depend on the mixer, and the table in MAD's form has
/// every arm's accuracy on all six tasks, its best grid point, mean accuracy and mean rank.
#[test]
fn mad_softmax_recalls_where_linear_blurs_and_memorization_ignores_the_mixer() {
    let r = reproduce("mad");
    assert_eq!(r["checks"].as_array().unwrap().len(), 3, "two recall gaps and memorization");
    let arms = r["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 3, "softmax, linear:elu1, delta:gated");
    let tasks = [
        "in_context_recall",
        "fuzzy_recall",
        "noisy_recall",
        "selective_copying",
        "compression",
        "memorization",
    ];
    let mut rank_sum = 0.0;
    for arm in arms {
        for task in tasks {
            let a = arm["tasks"][task]["accuracy"].as_f64().unwrap_or(f64::NAN);
            assert!((0.0..=1.0).contains(&a), "{}: {task} = {a}", arm["arm"]);
            assert_eq!(arm["tasks"][task]["weight_decay"], 0.0, "{}", arm["arm"]);
        }
        let rank = arm["mean_rank"].as_f64().unwrap();
        assert!((1.0..=3.0).contains(&rank), "{}: mean rank {rank}", arm["arm"]);
        rank_sum += rank;
    }
    // Ranks 1, 2 and 3 (or shared means of them) on every task: the mean ranks sum to 6.
    assert!((rank_sum - 6.0).abs() < 1e-9, "{rank_sum}");
    for task in tasks {
        let runs = r["tasks"][task]["baseline"]["0"]["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 3, "{task}: 3 arms x 1 seed at weight decay 0");
    }
}

/// Every reproduction's paper size is a valid plan (each run's config resolves and validates),
/// of the published size, without training anything or writing into the repository.
#[test]
fn every_paper_size_plans_without_training() {
    // (name, runs and optimizer steps in all; None for length-scaling, whose paper size is its
    // full size of three studies, sized by that size's own code)
    let expected: [(&str, Option<(usize, usize)>); 12] = [
        ("scaling-sim", Some((0, 0))),
        // 5 divisors x 3 seeds of nanoGPT's 5000-step GPU recipe.
        ("scaling-train", Some((15, 15 * 5000))),
        // zoology's Figure 2: 3 task sizes x 4 widths x 7 arms x 3 seeds x 4 lrs, 12 500 steps each.
        ("mqar-gap", Some((1008, 1008 * 12_500))),
        // Garg et al.: 3 arms x 3 seeds of 500 000 steps.
        ("icl-gap", Some((9, 9 * 500_000))),
        ("lm-gap", Some((12, 12 * 5000))),
        // No published trained configuration: the full size.
        ("separation", Some((24, 24 * 3000))),
        ("length-scaling", None),
        // configs/compare/hybrid-ratio-paper.toml's 96 runs.
        ("hybrid-ratio", Some((96, 96 * 12_500))),
        // 3 widths x 15 families x 3 seeds x 4 lrs.
        ("recall-frontier", Some((540, 540 * 12_500))),
        // An imported teacher (no training) and 2 families x 4 arms of 1000 + 1000 steps, the
        // control (2000 steps) once per family.
        ("linearize", Some((9, 2 * (4 * 2000 + 2000)))),
        // 5 problems x 11 arms x 3 seeds x 3 lrs of 20 000 steps (configs/state-tracking-paper.toml).
        ("state-tracking", Some((495, 495 * 20_000))),
        // MAD's grid (3 lrs x 2 weight decays, one seed) for 5 arms and GLA at equal params
        // on MAD's 66 difficulty settings, each 200 epochs of its training set: 20 000 steps
        // for 12 800 sequences; the smaller sets of five tasks 10 000, 5 000, 2 600 and 1 400;
        // memorization's six vocabularies 400.
        (
            "mad",
            Some((
                6 * 6 * 66,
                6 * 6 * (40 * 20_000 + 5 * (10_000 + 5_000 + 2_600 + 1_400) + 6 * 400),
            )),
        ),
    ];
    for (name, expected) in expected {
        let o = Command::new(env!("CARGO_BIN_EXE_attnlab"))
            .args(["reproduce", name, "--size", "paper", "--plan"])
            .current_dir(root())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{name}: {}\n{stdout}", String::from_utf8_lossy(&o.stderr));
        let total = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} --size paper: ")))
            .unwrap_or_else(|| panic!("{name}: no total line\n{stdout}"));
        let numbers: Vec<usize> = total.split(' ').filter_map(|w| w.parse().ok()).collect();
        match expected {
            Some((runs, steps)) => assert_eq!(numbers, [runs, steps], "{name}: {total}"),
            None => assert!(numbers.len() == 2 && numbers[0] > 0 && numbers[1] > 0, "{total}"),
        }
        assert!(stdout.contains("the effects it checks:\n- "), "{name}: {stdout}");
        assert!(!stdout.contains("report:"), "{name} --plan trained or wrote a report: {stdout}");
    }
    // --plan writes nothing, so a report directory beside it is a mistake, said in one line.
    let o = Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args(["reproduce", "icl-gap", "--plan", "--out", "somewhere"])
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--plan") && stderr.contains("--out"), "{stderr}");
    assert!(!root().join("somewhere").exists());
}

/// `reproduce linearize` at smoke size: a tiny teacher, both families through all five arms at
/// equal steps, and a report whose table, checks and per-arm reports are complete. Its checks
/// are judged at `full` size (docs/reproductions.md): at smoke size the teacher has no recall
/// and 20 + 20 steps transfer little, so here they need only be measured.
#[test]
fn linearize_reproduction_runs_every_arm_and_reports_them() {
    let out = std::env::temp_dir().join(format!("attnlab-reproduce-lin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_attnlab"))
        .args(["reproduce", "linearize", "--size", "smoke", "--quiet", "--out"])
        .arg(&out)
        .current_dir(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    for f in ["results.json", "report.md", "report.html", "outcome.json", "corpus.txt"] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let corpus = std::fs::read_to_string(out.join("corpus.txt")).unwrap();
    assert!(corpus.contains(" recall:") && corpus.contains("the key is "), "drills in the corpus");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let arms = results.as_array().unwrap();
    assert_eq!(arms.len(), 8, "2 families x 4 arms (the control inside transfer + KD)");
    for a in arms {
        let r = &a["result"];
        assert!(r["student_loss"].as_f64().unwrap().is_finite(), "{a}");
        assert_eq!(r["control_loss"].is_null(), a["arm"] != "transfer + KD", "{a}");
        assert_eq!(r["probes"].as_array().unwrap().len(), 6, "{a}");
        let dir = Path::new(r["student_dir"].as_str().unwrap()).parent().unwrap().to_path_buf();
        assert!(dir.join("report.md").is_file() && dir.join("transfer.svg").is_file(), "{a}");
        match a["arm"].as_str().unwrap() {
            "transfer only" => assert_eq!(r["alpha"], 0.0),
            "transfer + KD + LoRA" => assert_eq!(r["lora_rank"], 8),
            "keep:K hybrid" => assert_eq!(r["kept"].as_array().unwrap().len(), 1, "K = 4/4"),
            _ => {}
        }
    }
    let outcome: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("outcome.json")).unwrap()).unwrap();
    assert_eq!(outcome["checks"].as_array().unwrap().len(), 6, "{outcome}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in ["control (swap + CE)", "keep:K hybrid", "Gated DeltaNet", "Taylor feature map"] {
        assert!(report.contains(needle), "{needle}: {report}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}
