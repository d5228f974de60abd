//! Data-parallel training end to end (`attnlab train --devices`). CI has no GPU, so two
//! replicas share the CPU's one flex device: everything but Burn's CUDA all-reduce is exercised
//! (the split, the weighting by scored positions, the sum, one writer, resume).

mod common;

use attnlab_train::params::named_tensors;
use attnlab_train::runs::load_run;
use common::*;
use std::path::{Path, PathBuf};

fn temp(name: &str) -> PathBuf {
    fresh_dir("dp", name)
}

/// Largest absolute difference between the final weights of two runs, and the largest weight.
fn weight_gap(a: &Path, b: &Path) -> (f32, f32) {
    let (a, b) = (load_run(a, "final", None).unwrap(), load_run(b, "final", None).unwrap());
    let (a, b) = (named_tensors(&a.model), named_tensors(&b.model));
    assert_eq!(a.len(), b.len());
    let (mut gap, mut largest) = (0.0f32, 0.0f32);
    for ((name, x), (other, y)) in a.iter().zip(&b) {
        assert_eq!(name, other);
        let (x, y) = (x.try_to_vec::<f32>().unwrap(), y.try_to_vec::<f32>().unwrap());
        for (u, v) in x.iter().zip(&y) {
            gap = gap.max((u - v).abs());
            largest = largest.max(u.abs());
        }
    }
    (gap, largest)
}

/// Two replicas with half the batch each take the steps one device takes with the whole
/// batch: MQAR's loss is masked, so this also checks the slices are weighted by what they score;
/// with two micro-batches a step too (each replica accumulates, then the sums are added).
#[test]
fn two_devices_train_as_one_device_with_the_whole_batch() {
    for accumulation in [1, 2] {
        let accum = format!("train.grad_accum={accumulation}");
        let (one, two) =
            (temp(&format!("one-{accumulation}")), temp(&format!("two-{accumulation}")));
        ok(&train_tiny(&one, &["--set", &accum], &[]));
        ok(&train_tiny(&two, &["--set", &accum, "--devices", "flex,flex"], &[]));
        let (a, b) = (losses(&one), losses(&two));
        assert_eq!(a.len(), 8);
        assert_eq!(a.len(), b.len());
        for ((step, x), (_, y)) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "accumulation {accumulation}, step {step}: loss {x} vs {y}"
            );
        }
        // AdamW divides by √v, so a gradient entry near zero can flip an update of size lr;
        // the weights agree to well under one such step (lr 1e-3 here).
        let (gap, largest) = weight_gap(&one, &two);
        assert!(gap <= 1e-4, "final weights differ by {gap} (largest weight {largest})");
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(two.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["devices"], "flex,flex");
        assert_eq!(meta["effective_batch"], 8 * accumulation);
        let config = std::fs::read_to_string(two.join("config.toml")).unwrap();
        assert!(config.contains("devices = \"flex,flex\""), "{config}");
    }
}

/// A data-parallel run killed mid-checkpoint resumes to the uninterrupted run's losses, on the
/// same devices and on a different count (the step does not depend on the split).
#[test]
fn a_killed_data_parallel_run_resumes_to_the_uninterrupted_losses() {
    let straight = temp("straight");
    ok(&train_tiny(&straight, &["--devices", "flex,flex"], &[]));
    for resume_on in ["flex,flex", "flex"] {
        let run = temp(&format!("killed-{}", resume_on.len()));
        let abort = [("ATTNLAB_TEST_ABORT_IN_CHECKPOINT", "8")];
        let o = train_tiny(&run, &["--devices", "flex,flex"], &abort);
        assert!(!o.status.success(), "the test hook aborts the process");
        let run_s = run.to_str().unwrap();
        ok(&attnlab(&["train", "--resume", run_s, "--devices", resume_on, "--quiet"]));
        let (a, b) = (losses(&straight), losses(&run));
        assert_eq!(a.len(), b.len());
        for ((step, x), (_, y)) in a.iter().zip(&b) {
            if resume_on == "flex,flex" {
                assert_eq!(x, y, "step {step}: resumed on the same devices");
            } else {
                assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "step {step}: {x} vs {y}");
            }
        }
        assert!(run.join("final/state.json").is_file());
    }
}

/// The effective batch is said at the start; bad device lists get one line and write nothing.
#[test]
fn device_lists_are_checked_before_anything_is_written() {
    let run = temp("said");
    let mut args = vec!["train"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&["--set", "train.steps=1", "--devices", "flex,flex"]);
    args.extend_from_slice(&["--out", run.to_str().unwrap()]);
    let said = ok(&attnlab(&args));
    assert!(said.contains("on flex,flex"), "{said}");
    assert!(
        said.contains(
            "effective batch 8 sequences per step (8 × 1 accumulation; 4 per device on 2 devices"
        ),
        "{said}"
    );

    for (devices, needle) in [
        ("flex,flex,flex", "multiple of 3"),
        ("flex:1", "list it once per replica"),
        ("cuda:0,flex", "mix backends"),
        ("tpu", "unknown device"),
    ] {
        let out = temp("refused");
        std::fs::remove_dir_all(&out).unwrap();
        fails_with(&train_tiny(&out, &["--devices", devices], &[]), needle);
        assert!(!out.exists(), "{devices}: {} was written", out.display());
    }
    // Replicas sharing a device share its random stream: dropout there would not repeat.
    let out = temp("dropout");
    std::fs::remove_dir_all(&out).unwrap();
    let o = train_tiny(&out, &["--devices", "flex,flex", "--set", "model.dropout=0.1"], &[]);
    fails_with(&o, "set model.dropout = 0 or list distinct devices");
    // In a config file the list must agree with `device`.
    let out = temp("config");
    std::fs::remove_dir_all(&out).unwrap();
    let o = train_tiny(&out, &["--set", "devices=cuda:0,cuda:1"], &[]);
    fails_with(&o, "set device = cuda as well");
}
