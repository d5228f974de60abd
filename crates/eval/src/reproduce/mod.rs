//! `attnlab reproduce <name> [--size smoke|full|paper] [--plan]`: the experiments behind attnlab's two seed
//! papers, each a small script over [`compare`](crate::compare) (or pure arithmetic, for
//! `scaling-sim`) that writes the same report files as `attnlab compare` and states the effect it
//! expects as [`Check`]s, evaluated on what it measured.
//!
//! `smoke` sizes run in minutes on 2 CPU cores (the tests assert their checks); `full` sizes
//! are the ones whose numbers the README quotes; `paper` sizes are the published
//! configurations, for a GPU (`--device cuda`) or a cluster: runnable and planned by the tests
//! (`--plan` lists their runs without training), never trained in CI. Where a paper published
//! no trained configuration (seed 1's separation theorem, seed 2's simulation) or only
//! language models far past toy scale (the length-aware softmax papers), `paper` is `full`,
//! and the runner says so.

mod frontier;
mod gaps;
mod hybrid;
mod order;
pub mod scaling_sim;
mod widths;

use crate::compare::{Comparison, LocalExecutor, Results, RunRecord, analyse, run_all};
use crate::report::Table;
use serde::Serialize;
use std::path::Path;

/// How big a reproduction runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// Minutes on 2 CPU cores; what the tests run.
    Smoke,
    /// The README's numbers.
    Full,
    /// The published configuration (a GPU or a cluster).
    Paper,
}

impl Size {
    pub fn name(self) -> &'static str {
        match self {
            Size::Smoke => "smoke",
            Size::Full => "full",
            Size::Paper => "paper",
        }
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "smoke" => Ok(Size::Smoke),
            "full" => Ok(Size::Full),
            "paper" => Ok(Size::Paper),
            other => Err(format!("unknown size '{other}': expected smoke, full or paper")),
        }
    }
}

/// An effect a reproduction expects, and whether the measurements show it.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub claim: String,
    pub holds: bool,
    /// The measured numbers behind the answer.
    pub evidence: String,
}

impl Check {
    pub fn new(claim: impl Into<String>, holds: bool, evidence: impl Into<String>) -> Self {
        Self { claim: claim.into(), holds, evidence: evidence.into() }
    }
    pub fn line(&self) -> String {
        format!(
            "{}: {} ({})",
            if self.holds { "holds" } else { "DOES NOT HOLD" },
            self.claim,
            self.evidence
        )
    }
}

/// What a finished reproduction reports besides its files.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub checks: Vec<Check>,
    /// The headline table (also the first table of the report).
    pub summary: Table,
}

/// Every reproduction: name and one line on what it shows.
pub const REPRODUCTIONS: [(&str, &str); 9] = [
    (
        "scaling-sim",
        "seed 2's simulation: softmax(q·k / s) for s = 1, √d, Σ‖k_j‖, n at d = 16 and 256",
    ),
    (
        "scaling-train",
        "the same divisors inside a trained character LM: loss, gradient norm, attention entropy",
    ),
    ("mqar-gap", "softmax vs six linear feature maps on associative recall, across model widths"),
    (
        "icl-gap",
        "softmax vs linear attention on in-context linear regression, error per example count",
    ),
    ("lm-gap", "softmax vs linear attention on Tiny Shakespeare: validation loss curves"),
    (
        "separation",
        "seed 1's construction: one planted large entry; softmax separates, linear does not",
    ),
    (
        "length-scaling",
        "softmax that knows its length (SSMax, log-n temperature, FoX, stick-breaking) on max retrieval and MQAR past the trained size",
    ),
    (
        "hybrid-ratio",
        "4-layer MQAR stacks from all softmax to all Gated DeltaNet: how much softmax recall needs (1:1, 3:1)",
    ),
    (
        "recall-frontier",
        "MQAR accuracy against decoding-state size for softmax, the feature maps and the gated/delta families",
    ),
];

/// `Ok` when `name` is one of [`REPRODUCTIONS`], else the one-line error naming the choices.
pub fn check_name(name: &str) -> Result<(), String> {
    if REPRODUCTIONS.iter().any(|r| r.0 == name) {
        return Ok(());
    }
    let names: Vec<&str> = REPRODUCTIONS.iter().map(|r| r.0).collect();
    Err(format!("unknown reproduction '{name}': expected one of {}", names.join(", ")))
}

/// Runs reproduction `name` at `size`, writing its report into `out`.
pub fn run(name: &str, size: Size, out: &Path, exec: &LocalExecutor) -> Result<Outcome, String> {
    match name {
        "scaling-sim" => scaling_sim::run(out),
        "scaling-train" => gaps::scaling_train(size, out, exec),
        "mqar-gap" => gaps::mqar_gap(size, out, exec),
        "icl-gap" => gaps::icl_gap(size, out, exec),
        "lm-gap" => gaps::lm_gap(size, out, exec),
        "separation" => gaps::separation(size, out, exec),
        "length-scaling" => gaps::length_scaling(size, out, exec),
        "hybrid-ratio" => hybrid::hybrid_ratio(size, out, exec),
        "recall-frontier" => frontier::recall_frontier(size, out, exec),
        other => check_name(other).and(Err(format!("reproduction '{other}' has no runner"))),
    }
}

/// "length 64, 4 key-value pairs, vocab 8192": an MQAR config's task in words, for the intros.
fn mqar_task_words(config: &attnlab_train::RunConfig) -> String {
    match &config.task {
        attnlab_train::TaskConfig::Mqar(t) => {
            format!("length {}, {} key-value pairs, vocab {}", t.seq_len, t.num_kv_pairs, t.vocab)
        }
        other => other.name().to_string(),
    }
}

/// Trains a comparison into `dir/runs/` and analyses it (the report is written by the caller,
/// which adds its own sections).
fn run_compare(
    spec: &Comparison,
    title: &str,
    dir: &Path,
    exec: &LocalExecutor,
) -> Result<Results, String> {
    let mut spec = spec.clone();
    if let Some(device) = exec.device {
        for arm in &mut spec.arms {
            arm.config.device = device;
        }
    }
    let spec = &spec;
    let plan = spec.plan()?;
    if exec.plan_only {
        let steps: usize = plan.iter().map(|r| r.config.train.steps).sum();
        let (runs, total) = exec.planned.get();
        exec.planned.set((runs + plan.len(), total + steps));
        let device = plan.first().map_or(String::new(), |r| r.config.device.to_string());
        println!(
            "{title}: {} runs ({} arms x {} lrs x {} seeds), {} steps in all, on {device}",
            plan.len(),
            spec.arms.len(),
            spec.lrs.len().max(1),
            spec.seeds.len(),
            steps
        );
        // Nothing trains and nothing is read: every run is pending, so the checks come out
        // unmeasured and the caller's report shows the plan.
        let entries = crate::compare::plan::entries(spec)?;
        let records = entries
            .iter()
            .map(|e| RunRecord {
                id: e.id.clone(),
                arm: e.arm.clone(),
                seed: e.seed,
                lr: e.lr,
                run_dir: dir.join(&e.dir),
                pending: true,
                ..Default::default()
            })
            .collect();
        return Ok(analyse(spec, records, title));
    }
    if !exec.quiet {
        println!("{title}: {} runs -> {}", plan.len(), dir.display());
    }
    let records = run_all(spec, dir, exec)?;
    if records.iter().all(|r| r.error.is_some()) {
        return Err(format!(
            "every run of '{title}' failed; first error: {}",
            records[0].error.as_deref().unwrap_or("")
        ));
    }
    // What ran: seeds, learning rates and every arm's resolved config.
    let _ = std::fs::write(dir.join("spec.toml"), toml::to_string(spec).unwrap_or_default());
    Ok(analyse(spec, records, title))
}
