//! `attnlab reproduce <name> [--size smoke|full|paper] [--plan]`: the experiments behind attnlab's two seed
//! papers, each a small script over [`compare`](crate::compare) (or pure arithmetic, for
//! `scaling-sim`) that writes the same report files as `attnlab compare` and states the effect it
//! expects as [`Check`]s, evaluated on what it measured.
//!
//! `smoke` sizes run in minutes on 2 CPU cores (the tests assert their checks); `full` sizes
//! are the ones whose numbers docs/reproductions.md quotes; `paper` sizes are the published
//! configurations, for a GPU (`--device cuda`) or a cluster: runnable and planned by the tests
//! (`--plan` lists their runs without training), never trained in CI. Where a paper published
//! no trained configuration (seed 1's separation theorem, seed 2's simulation) or only
//! language models far past toy scale (the length-aware softmax papers), `paper` is `full`,
//! and the runner says so.

mod docs;
mod equal_params;
mod frontier;
mod gaps;
mod harness;
mod hybrid;
mod linearize;
mod mad;
mod order;
pub mod scaling_sim;
mod state;
mod widths;

pub use docs::{DocsError, OUTCOME_FILE, OutcomeRecord, machine, update_docs};
pub use harness::{Check, Outcome, ReproduceError, Size};
pub use linearize::{Inputs, with_recall_drills};

use crate::compare::LocalExecutor;
use std::path::Path;

pub const REPRODUCTIONS: [(&str, &str); 12] = [
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
    (
        "linearize",
        "a softmax LM linearised to Taylor and Gated DeltaNet: attention transfer + distillation vs the control, LoRA, keep:K hybrids, recall",
    ),
    (
        "state-tracking",
        "parity, mod 3/5 counting and S3/S5 composition at 1x-8x the trained length: negative eigenvalues (neg_eigval) against [0, 1]",
    ),
    (
        "mad",
        "the MAD synthetic suite (recall, fuzzy and noisy recall, selective copying, memorization, compression): accuracy per task at the best lr x weight decay, mean rank",
    ),
];

/// `Ok` when `name` is one of [`REPRODUCTIONS`], else the one-line error naming the choices.
pub fn check_name(name: &str) -> Result<(), ReproduceError> {
    if REPRODUCTIONS.iter().any(|r| r.0 == name) {
        return Ok(());
    }
    let names = REPRODUCTIONS.iter().map(|r| r.0).collect();
    Err(ReproduceError::UnknownName { name: name.to_string(), names })
}

/// Runs reproduction `name` at `size`, writing its report into `out`.
pub fn run(
    name: &str,
    size: Size,
    out: &Path,
    exec: &LocalExecutor,
) -> Result<Outcome, ReproduceError> {
    run_with(name, size, out, exec, &Inputs::default())
}

/// [`run`] with a teacher to import (`linearize --size paper`).
pub fn run_with(
    name: &str,
    size: Size,
    out: &Path,
    exec: &LocalExecutor,
    inputs: &Inputs,
) -> Result<Outcome, ReproduceError> {
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
        "linearize" => linearize::linearize_recipe(size, out, exec, inputs),
        "state-tracking" => state::state_tracking(size, out, exec),
        "mad" => mad::mad(size, out, exec),
        other => check_name(other).and(Err(ReproduceError::NoRunner { name: other.to_string() })),
    }
}
