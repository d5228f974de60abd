//! The training reproductions: each is one or more comparisons (see `compare`) with a fixed
//! set of arms, plus the tables, plots and checks its question needs.

use super::harness::{
    Check, Outcome, ReproduceError, Size, read_preset, run_compare, spec, write_report,
};
use super::order::{Relation, half_range};
use super::widths::Cell;
use crate::compare::LocalExecutor;
use crate::compare::{Comparison, Results};
use crate::plots::{Series, accuracy_chart, line_chart};
use crate::report::{self, Plot, Section, Table, fmt};
use attnlab_train::{RunConfig, TaskConfig};
use std::collections::BTreeMap;
use std::path::Path;

/// Arms named after their mixer.
fn by_mixer<'a>(mixers: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    mixers.iter().map(|&m| (m, m)).collect()
}

/// Mean final metric of an arm (at its best lr).
pub(super) fn mean(results: &Results, arm: &str) -> f64 {
    results.arms.iter().find(|a| a.name == arm).map_or(f64::NAN, |a| a.summary.mean)
}

/// Mean over an arm's best-lr runs of one metric of their last evaluation.
pub(super) fn final_eval_mean(results: &Results, arm: &str, key: &str) -> f64 {
    let Some(a) = results.arms.iter().find(|a| a.name == arm) else { return f64::NAN };
    let v: Vec<f64> =
        a.runs.iter().filter_map(|&i| results.runs[i].final_eval.get(key).copied()).collect();
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn mean_entropy(results: &Results, arm: &str) -> f64 {
    let Some(a) = results.arms.iter().find(|a| a.name == arm) else { return f64::NAN };
    let v: Vec<f64> = a
        .runs
        .iter()
        .filter_map(|&i| results.runs[i].entropy.last())
        .flat_map(|(_, layers)| layers.iter().copied())
        .collect();
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// Writes a one-comparison reproduction: the comparison's page with the checks after the
/// summary and `extra` sections and plots at the end.
fn write(
    name: &str,
    size: Size,
    results: &Results,
    checks: Vec<Check>,
    extra: Vec<Section>,
    extra_plots: Vec<Plot>,
    out: &Path,
) -> Result<Outcome, ReproduceError> {
    let mut doc = report::document(results);
    doc.sections.insert(
        1,
        Section::new("Expected effects").bullets(checks.iter().map(Check::line).collect()),
    );
    doc.sections.extend(extra);
    doc.plots.extend(extra_plots);
    let json = serde_json::json!({ "reproduction": name, "size": size, "checks": checks, "results": results });
    write_report(&doc, &json, out)?;
    // A comparison with nothing finished (`--plan`) has no summary table yet.
    let summary = doc.sections[0]
        .table
        .clone()
        .unwrap_or_else(|| Table::new("summary", vec![name.to_string()], Vec::new()));
    Ok(Outcome { checks, summary })
}

/// mqar-gap's full size: seeds per arm and the learning rates each arm is swept over.
const MQAR_FULL_SEEDS: u64 = 2;
/// mqar-gap's paper size: seeds per arm (zoology reports one run per cell; three tell a failed
/// seed from a failed family).
const MQAR_PAPER_SEEDS: u64 = 3;
const MQAR_FULL_LRS: [f64; 3] = [1e-3, 3e-3, 1e-2];

/// Zoology's learning rates, `logspace(-4, -2, 4)`, as the paper sizes sweep them.
pub(super) const ZOOLOGY_LRS: [f64; 4] = [1e-4, 4.6e-4, 2.2e-3, 1e-2];
/// Zoology's Figure 2 tasks at vocab 8192: (sequence length, key-value pairs, batch size).
const ZOOLOGY_FIGURE2: [(usize, usize, usize); 3] = [(64, 4, 512), (128, 8, 512), (256, 16, 256)];

const LINEAR_MAPS: [(&str, &str); 6] = [
    ("linear:identity", "linear:identity"),
    ("linear:elu1", "linear:elu1"),
    ("linear:relu", "linear:relu"),
    ("linear:cosformer", "linear:cosformer"),
    ("linear:taylor", "linear:taylor"),
    ("linear:performer", "linear:performer"),
];

/// A small character LM for the smoke sizes (a few seconds per run on 2 cores).
fn small_char_lm(mut config: RunConfig) -> RunConfig {
    config.model.d_model = 64;
    config.model.n_heads = 2;
    config.model.n_layers = 2;
    let t = &mut config.train;
    t.steps = 200;
    t.warmup_steps = 20;
    t.eval_every = 50;
    t.eval_batches = 8;
    t.log_every = 10;
    t.checkpoint_every = 0;
    config
}

/// Evaluates every `steps` steps and keeps no step checkpoints (the full sizes' curves).
fn eval_every(mut config: RunConfig, steps: usize) -> RunConfig {
    config.train.eval_every = steps;
    config.train.checkpoint_every = 0;
    config
}

pub fn scaling_train(
    size: Size,
    out: &Path,
    exec: &LocalExecutor,
) -> Result<Outcome, ReproduceError> {
    let arms = [
        ("sqrt_d", "softmax"),
        ("none", "softmax:none"),
        ("sum_key_norms", "softmax:sum_key_norms"),
        ("num_keys", "softmax:num_keys"),
        ("learned", "softmax:learned"),
    ];
    let char_lm = read_preset("configs/shakespeare-char-smoke.toml")?;
    let spec = match size {
        Size::Smoke => spec(&small_char_lm(char_lm), 2, &[], None, &arms[..3])?,
        Size::Full => spec(&eval_every(char_lm, 50), 3, &[], None, &arms)?,
        // Bernhard's proof of concept is a nanoGPT-sized model; this is nanoGPT's GPU recipe.
        Size::Paper => {
            spec(&read_preset("configs/shakespeare-char-paper.toml")?, 3, &[], None, &arms)?
        }
    };
    let results = run_compare(
        &spec,
        "attnlab reproduce scaling-train: q·k divisors in a trained character LM",
        out,
        exec,
    )?;
    let (e_sqrt, e_sum) =
        (mean_entropy(&results, "sqrt_d"), mean_entropy(&results, "sum_key_norms"));
    let checks = vec![Check::new(
        "÷Σ‖k_j‖ leaves trained attention flatter (higher entropy) than ÷√d",
        e_sum > e_sqrt,
        format!("mean normalised entropy over layers {e_sum:.3} vs {e_sqrt:.3}"),
    )];
    let findings = results
        .arms
        .iter()
        .map(|a| {
            format!(
                "{}: val loss {} ± {}, final entropy {:.3}, gradient norm p5–p95 {:.3}–{:.3}",
                a.name,
                fmt(a.summary.mean),
                fmt(0.5 * (a.summary.ci_high - a.summary.ci_low)),
                mean_entropy(&results, &a.name),
                a.grad_norm_p5_p95.0,
                a.grad_norm_p5_p95.1
            )
        })
        .collect();
    write(
        "scaling-train",
        size,
        &results,
        checks,
        vec![Section::new("Per divisor").bullets(findings)],
        Vec::new(),
        out,
    )
}

pub fn lm_gap(size: Size, out: &Path, exec: &LocalExecutor) -> Result<Outcome, ReproduceError> {
    let spec = match size {
        Size::Smoke => {
            let mut config = small_char_lm(read_preset("configs/shakespeare-char-smoke.toml")?);
            config.train.steps = 600;
            config.train.eval_every = 100;
            spec(&config, 2, &[], None, &by_mixer(&["softmax", "linear:elu1", "linear:taylor"]))?
        }
        Size::Full => {
            let config = eval_every(read_preset("configs/shakespeare-char.toml")?, 100);
            // Taylor is left out at this size: its chunked path is ~4x slower per step here.
            spec(&config, 2, &[], None, &by_mixer(&["softmax", "linear:elu1", "linear:cosformer"]))?
        }
        Size::Paper => {
            let config = read_preset("configs/shakespeare-char-paper.toml")?;
            spec(
                &config,
                3,
                &[],
                None,
                &by_mixer(&["softmax", "linear:elu1", "linear:cosformer", "linear:taylor"]),
            )?
        }
    };
    let results = run_compare(
        &spec,
        "attnlab reproduce lm-gap: softmax vs linear attention on Tiny Shakespeare",
        out,
        exec,
    )?;
    let soft = mean(&results, "softmax");
    let checks = results
        .arms
        .iter()
        .filter(|a| a.name != "softmax")
        .map(|a| {
            Check::new(
                format!("softmax reaches a lower val loss than {}", a.name),
                soft < a.summary.mean,
                format!("{soft:.4} vs {:.4}", a.summary.mean),
            )
        })
        .collect();
    write("lm-gap", size, &results, checks, Vec::new(), Vec::new(), out)
}

pub fn separation(size: Size, out: &Path, exec: &LocalExecutor) -> Result<Outcome, ReproduceError> {
    let arms = by_mixer(&["softmax", "linear:identity", "linear:elu1", "linear:relu"]);
    let spec = match size {
        Size::Smoke => spec(&read_preset("configs/separation-smoke.toml")?, 2, &[], None, &arms)?,
        // Seed 1 proves the separation and trains nothing: no published configuration to run,
        // so the paper size is the full one.
        Size::Full | Size::Paper => {
            spec(&read_preset("configs/separation.toml")?, 3, &[3e-3, 1e-2], None, &arms)?
        }
    };
    let results =
        run_compare(&spec, "attnlab reproduce separation: one planted large entry", out, exec)?;
    let soft = mean(&results, "softmax");
    let plain = mean(&results, "linear:identity");
    // Seed 1's linear attention is the plain kernel q·k; that is the claim checked. The positive
    // feature maps are reported beside it: in our trained models they do not lose to softmax.
    let checks = vec![Check::new(
        "softmax separates better than plain linear attention (φ = identity, seed 1's linear attention)",
        soft > plain,
        format!("accuracy {soft:.3} vs {plain:.3}"),
    )];
    let observations: Vec<String> = results
        .arms
        .iter()
        .filter(|a| a.name != "softmax")
        .map(|a| {
            format!(
                "{}: accuracy {:.3} vs softmax {soft:.3} ({})",
                a.name,
                a.summary.mean,
                if a.summary.mean < soft { "below softmax" } else { "not below softmax" }
            )
        })
        .collect();
    let text = "Construction (crates/train/src/task/separation.rs): class 0 is a rows × cols matrix of i.i.d. N(0, 1) \
                entries; class 1 is the same with one random entry set to +spike; every matrix is rescaled to \
                Frobenius norm √(rows·cols), so only the one amplified coordinate carries the class. One \
                bidirectional attention layer reads the rows; the class is read from the mean of its outputs. \
                Softmax can put nearly all weight on the spiked row (seed 1's amplification of one large logit); \
                a linear kernel's weights grow only polynomially with the spike, so its signal is averaged away.";
    let sections = vec![
        Section::new("Construction").text(text),
        Section::new("Every linear map against softmax (observed, not asserted)")
            .bullets(observations),
    ];
    write("separation", size, &results, checks, sections, Vec::new(), out)
}

pub fn icl_gap(size: Size, out: &Path, exec: &LocalExecutor) -> Result<Outcome, ReproduceError> {
    let arms = [
        ("softmax", "softmax"),
        ("linear:elu1", "linear:elu1"),
        ("linear:identity", "linear:identity:norm=none"),
    ];
    let spec = match size {
        Size::Smoke => {
            let path = "configs/icl-regression-smoke.toml";
            let mut config = read_preset(path)?;
            let TaskConfig::IclRegression(task) = &mut config.task else {
                return Err(ReproduceError::NotIclPreset {
                    preset: path.to_string(),
                    found: config.task.name(),
                });
            };
            task.eval_prompts = 512;
            spec(&config, 2, &[], None, &arms)?
        }
        Size::Full => spec(
            &eval_every(read_preset("configs/icl-regression.toml")?, 250),
            3,
            &[],
            None,
            &arms,
        )?,
        Size::Paper => {
            spec(&read_preset("configs/icl-regression-paper.toml")?, 3, &[], None, &arms)?
        }
    };
    let results =
        run_compare(&spec, "attnlab reproduce icl-gap: in-context linear regression", out, exec)?;
    // Every (k, err_kNN key) the runs report, in order of k.
    let mut ks: Vec<(usize, String)> = results
        .runs
        .iter()
        .flat_map(|r| r.final_eval.keys().filter_map(|key| Some((examples_of(key)?, key.clone()))))
        .collect();
    ks.sort();
    ks.dedup();
    let all_runs = |key: &str| -> f64 {
        let v: Vec<f64> =
            results.runs.iter().filter_map(|r| r.final_eval.get(key).copied()).collect();
        crate::stats::mean(&v)
    };
    let mut series: Vec<Series> = results
        .arms
        .iter()
        .map(|a| {
            Series::new(
                a.name.clone(),
                ks.iter()
                    .map(|(n, k)| (*n as f64, final_eval_mean(&results, &a.name, k)))
                    .collect(),
            )
        })
        .collect();
    series.push(Series::new(
        "least squares",
        ks.iter().map(|(n, k)| (*n as f64, all_runs(&k.replace("err_", "lsq_")))).collect(),
    ));
    let zero = all_runs("zero");
    series.push(Series::new("zero predictor", ks.iter().map(|(n, _)| (*n as f64, zero)).collect()));
    let title = "Error vs number of in-context examples (squared error / d, mean over seeds)";
    let plot = Plot {
        stem: "error_vs_examples".into(),
        title: title.into(),
        svg: line_chart(title, "in-context examples", "error", &series, true),
    };

    let mut header = vec!["in-context examples".to_string()];
    header.extend(series.iter().map(|s| s.label.clone()));
    let rows: Vec<Vec<String>> = ks
        .iter()
        .enumerate()
        .map(|(i, (n, _))| {
            let mut row = vec![n.to_string()];
            row.extend(series.iter().map(|s| fmt(s.points[i].1)));
            row
        })
        .collect();
    // The gap is judged where attention has examples to use: the second half of the prompt.
    let late = |arm: &str| -> f64 {
        let v: Vec<f64> =
            ks[ks.len() / 2..].iter().map(|(_, k)| final_eval_mean(&results, arm, k)).collect();
        crate::stats::mean(&v)
    };
    let soft = late("softmax");
    let elu1 = late("linear:elu1");
    let plain = late("linear:identity");
    // The check is against normalised linear attention (elu+1). Unnormalised φ = identity is
    // reported, not asserted: one layer of it can express a step of gradient descent on the
    // prompt's least-squares loss (von Oswald et al. 2023), and at the full size it beats softmax.
    let mut checks = vec![
        Check::new(
            "softmax's error over the later in-context examples is below linear:elu1's",
            soft < elu1,
            format!("{soft:.4} vs {elu1:.4}"),
        ),
        Check::new(
            "softmax beats the zero predictor",
            soft < zero,
            format!("{soft:.4} vs {zero:.4}"),
        ),
    ];
    if size != Size::Smoke {
        // Garg et al.: the trained Transformer tracks least squares, whose error is 0 from k = d
        // examples on noiseless data. Two examples of slack past d, on every seed.
        let dim = match &spec.arms[0].config.task {
            TaskConfig::IclRegression(t) => t.dim,
            _ => 0,
        };
        let (worst, at_k, seeds) = worst_seed_error(&results, "softmax", dim + 2);
        checks.push(Check::new(
            format!("softmax approaches least squares: error ÷ d <= 0.1 for every k >= d + 2 = {} on every seed", dim + 2),
            worst <= 0.1,
            format!("worst {worst:.4} (k = {at_k}, over {seeds} seeds)"),
        ));
    }
    let observation = format!(
        "Unnormalised linear attention (φ = identity, no normaliser) over the later examples: {plain:.4} against softmax's {soft:.4} ({}).",
        if plain < soft { "below softmax" } else { "not below softmax" }
    );
    let section = Section::new("Error per number of in-context examples")
        .table(Table::new("per_example", header, rows))
        .text(observation);
    write("icl-gap", size, &results, checks, vec![section], vec![plot], out)
}

/// The number of in-context examples k of an `err_kNN` key (the error of the prediction made
/// after k examples, ÷ d); `None` for every other metric.
fn examples_of(key: &str) -> Option<usize> {
    key.strip_prefix("err_k")?.parse().ok()
}

/// The largest final `err_kNN` over an arm's best-lr runs and every k >= `from_k`: the value,
/// its k and how many runs were read (NaN while a run is unfinished or failed).
fn worst_seed_error(results: &Results, arm: &str, from_k: usize) -> (f64, usize, usize) {
    let Some(a) = results.arms.iter().find(|a| a.name == arm) else { return (f64::NAN, 0, 0) };
    if a.runs.is_empty() || a.failed_runs + a.pending_runs > 0 {
        return (f64::NAN, 0, a.runs.len());
    }
    let evals: Vec<&BTreeMap<String, f64>> =
        a.runs.iter().map(|&i| &results.runs[i].final_eval).collect();
    let (worst, k) = worst_error(&evals, from_k);
    (worst, k, a.runs.len())
}

/// The largest `err_kNN` with k >= `from_k` over `evals`, and its k; NaN when an eval has none
/// (a run whose errors were not finite keeps no `err_k` keys).
fn worst_error(evals: &[&BTreeMap<String, f64>], from_k: usize) -> (f64, usize) {
    let mut worst = (f64::NEG_INFINITY, 0);
    for eval in evals {
        let errors: Vec<(usize, f64)> = eval
            .iter()
            .filter_map(|(key, &v)| Some((examples_of(key)?, v)))
            .filter(|&(k, _)| k >= from_k)
            .collect();
        if errors.is_empty() {
            return (f64::NAN, 0);
        }
        for (k, v) in errors {
            if v > worst.0 {
                worst = (v, k);
            }
        }
    }
    if evals.is_empty() { (f64::NAN, 0) } else { worst }
}

/// The final metrics of an arm's best-lr seeds; `None` where one has none (unfinished or
/// failed), so that no verdict is ever read from missing runs.
pub(super) fn seed_finals(results: &Results, arm: &str) -> Option<Vec<f64>> {
    let a = results.arms.iter().find(|a| a.name == arm)?;
    let finals: Vec<f64> =
        a.runs.iter().map(|&i| results.runs[i].final_metric.unwrap_or(f64::NAN)).collect();
    (!finals.is_empty() && a.failed_runs + a.pending_runs == 0).then_some(finals)
}

/// Lowest final accuracy over an arm's best-lr seeds (NaN where one has none: unfinished or failed).
pub(super) fn worst_seed(results: &Results, arm: &str) -> f64 {
    seed_finals(results, arm).map_or(f64::NAN, |f| f.into_iter().fold(f64::INFINITY, f64::min))
}

/// One MQAR task size of mqar-gap: key-value pairs, and where it differs from the preset's, the
/// sequence length and batch size (zoology halves the batch at length 256).
#[derive(Clone, Copy, Debug)]
pub(super) struct MqarSize {
    pub pairs: usize,
    pub length_and_batch: Option<(usize, usize)>,
}

/// `base` at task size `size` (as it is for `None`).
pub(super) fn with_size(
    base: &RunConfig,
    size: Option<MqarSize>,
    preset: &str,
) -> Result<RunConfig, ReproduceError> {
    let mut config = base.clone();
    if let Some(s) = size {
        let TaskConfig::Mqar(task) = &mut config.task else {
            return Err(ReproduceError::NotTaskPreset { preset: preset.into(), task: "an mqar" });
        };
        task.num_kv_pairs = s.pairs;
        if let Some((length, batch)) = s.length_and_batch {
            task.seq_len = length;
            config.model.max_seq_len = length;
            config.train.batch_size = batch;
        }
    }
    Ok(config)
}

/// Softmax vs the six linear feature maps on MQAR at several widths (and, at the larger sizes,
/// several task sizes). `smoke`: `configs/mqar-smoke.toml` (length 32, 4 pairs) at width 32.
/// `full`: `configs/mqar-short.toml` (length 32, rotary positions, 3000 steps, early stop at
/// 0.99) with 4 and 8 pairs at widths 32, 64 and 128, 2 seeds, each arm at its best learning rate
/// per cell, as zoology reports Figure 2. The same grid at length 64 and batch 256
/// (`configs/compare/mqar-gap-length64.toml`) is two days on 2 cores: a GPU's or Slurm's job.
/// `paper`: Figure 2 itself, `configs/mqar-paper.toml` (vocab 8192) at lengths 64/128/256 with
/// 4/8/16 pairs, widths 64 to 512, zoology's four learning rates.
pub fn mqar_gap(size: Size, out: &Path, exec: &LocalExecutor) -> Result<Outcome, ReproduceError> {
    let pairs = |pairs| Some(MqarSize { pairs, length_and_batch: None });
    // (preset, task sizes, widths, seeds, lrs, the width from which softmax must solve)
    type Grid = (&'static str, Vec<Option<MqarSize>>, Vec<usize>, u64, Vec<f64>, usize);
    let (preset, task_sizes, widths, seeds, lrs, solve_from): Grid = match size {
        Size::Smoke => ("configs/mqar-smoke.toml", vec![None], vec![32], 2, vec![], 32),
        Size::Full => (
            "configs/mqar-short.toml",
            vec![pairs(4), pairs(8)],
            vec![32, 64, 128],
            MQAR_FULL_SEEDS,
            MQAR_FULL_LRS.to_vec(),
            64,
        ),
        Size::Paper => (
            "configs/mqar-paper.toml",
            ZOOLOGY_FIGURE2
                .iter()
                .map(|&(length, pairs, batch)| {
                    Some(MqarSize { pairs, length_and_batch: Some((length, batch)) })
                })
                .collect(),
            vec![64, 128, 256, 512],
            MQAR_PAPER_SEEDS,
            ZOOLOGY_LRS.to_vec(),
            64,
        ),
    };
    let pair_counts: Vec<Option<usize>> = task_sizes.iter().map(|s| s.map(|s| s.pairs)).collect();
    let mut base = read_preset(preset)?;
    base.train.eval_every = base.train.eval_every.min(100);
    let mut arms = vec![("softmax", "softmax")];
    arms.extend(LINEAR_MAPS);
    let names: Vec<String> = arms.iter().map(|a| a.0.to_string()).collect();
    let mut cells = Vec::new();
    let mut per_cell = Vec::new();
    for (&task_size, &pairs) in task_sizes.iter().zip(&pair_counts) {
        let config = with_size(&base, task_size, preset)?;
        let dir = pairs.map_or(out.to_path_buf(), |p| out.join(format!("pairs-{p}")));
        per_cell.extend(super::widths::run_each_width(
            "mqar-gap",
            &config,
            &widths,
            (seeds, &lrs, Some(0.9)),
            &arms,
            &dir,
            exec,
        )?);
        cells.extend(widths.iter().map(|&width| Cell { width, pairs }));
    }
    let mut header = vec!["attention".to_string()];
    header.extend(cells.iter().map(|c| format!("accuracy, {}", c.heading().to_lowercase())));
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            let mut row = vec![n.clone()];
            for r in &per_cell {
                let a = r.arms.iter().find(|a| &a.name == n).expect("every arm ran");
                row.push(format!(
                    "{} ± {} (lr {:e})",
                    fmt(a.summary.mean),
                    fmt(0.5 * (a.summary.ci_high - a.summary.ci_low)),
                    a.best_lr
                ));
            }
            row
        })
        .collect();
    let (mut plots, mut checks) = (Vec::new(), Vec::new());
    for &pairs in &pair_counts {
        let at: Vec<(usize, &Results)> = cells
            .iter()
            .zip(&per_cell)
            .filter(|(c, _)| c.pairs == pairs)
            .map(|(c, r)| (c.width, r))
            .collect();
        let series: Vec<Series> = names
            .iter()
            .map(|n| {
                Series::new(n.clone(), at.iter().map(|&(w, r)| (w as f64, mean(r, n))).collect())
            })
            .collect();
        let (stem, title) = match pairs {
            Some(p) => (
                format!("accuracy_vs_width_{p}_pairs"),
                format!(
                    "MQAR with {p} pairs: accuracy vs model width (mean over seeds, best lr per arm)"
                ),
            ),
            None => (
                "accuracy_vs_width".to_string(),
                "MQAR accuracy vs model width (mean over seeds, best lr per arm)".to_string(),
            ),
        };
        plots.push(Plot {
            svg: accuracy_chart(&title, "d_model", "accuracy", &series),
            stem,
            title,
        });

        let task = match task_sizes.iter().flatten().find(|s| Some(s.pairs) == pairs) {
            Some(MqarSize { pairs, length_and_batch: Some((length, _)) }) => {
                format!(" with {pairs} pairs at length {length}")
            }
            Some(s) => format!(" with {} pairs", s.pairs),
            None => String::new(),
        };
        // Zoology's Figure 2: attention solves MQAR at every width it trains. The baseline must
        // do so here on every seed before any gap is read off it.
        let worst: Vec<(usize, f64)> = at
            .iter()
            .filter(|(w, _)| *w >= solve_from)
            .map(|&(w, r)| (w, worst_seed(r, "softmax")))
            .collect();
        let evidence: Vec<String> =
            worst.iter().map(|(w, acc)| format!("width {w}: worst seed {acc:.3}")).collect();
        let every_seed = worst.iter().all(|&(_, acc)| acc >= 0.97);
        checks.push(Check::new(format!("softmax solves MQAR{task} (accuracy >= 0.97) on every seed at width >= {solve_from}"), every_seed, evidence.join("; ")));
        // Zoology's claim: softmax solves recall at a width where linear attention cannot. Judge
        // it at the smallest width where softmax solves the task (mean accuracy >= 0.9).
        checks.push(match at.iter().find(|(_, r)| mean(r, "softmax") >= 0.9) {
            Some((w, r)) => {
                let soft = mean(r, "softmax");
                let best = LINEAR_MAPS.iter().map(|(n, _)| (mean(r, n), *n)).fold((f64::MIN, ""), |a, b| if b.0 > a.0 { b } else { a });
                // Worse by more than the seeds' spread: a map that also solves is no gap.
                let (holds, numbers) = Relation::Above.judge(soft, best.0, half_range(r, "softmax") + half_range(r, best.1));
                Check::new(
                    format!("at width {w}, the smallest where softmax solves MQAR{task}, every linear feature map recalls worse (by more than the seeds' spread)"),
                    holds,
                    format!("softmax vs best linear {}: {numbers}", best.1),
                )
            }
            None => Check::new(format!("softmax solves MQAR{task} (accuracy >= 0.9) at some width"), false, "no width reached 0.9".to_string()),
        });
        let over_widths = |f: &dyn Fn(&Results, &str) -> f64, n: &str| {
            at.iter().map(|(_, r)| f(r, n)).sum::<f64>() / at.len() as f64
        };
        let over_maps = |f: &dyn Fn(&Results, &str) -> f64| {
            LINEAR_MAPS.iter().map(|(n, _)| over_widths(f, n)).sum::<f64>()
                / LINEAR_MAPS.len() as f64
        };
        let (soft_avg, linear_avg) = (over_widths(&mean, "softmax"), over_maps(&mean));
        let (holds, numbers) = Relation::Above.judge(
            soft_avg,
            linear_avg,
            over_widths(&half_range, "softmax") + over_maps(&half_range),
        );
        checks.push(Check::new(format!("averaged over widths{task}, softmax beats the linear maps' average (by more than the seeds' spread)"), holds, numbers));
    }
    let intro = format!(
        "Preset `{preset}` with {seeds} seeds per arm{}; each cell is the mean accuracy at queried positions ± half the 95% CI, at the arm's best lr.",
        if lrs.is_empty() { String::new() } else { format!(", learning rates {lrs:?}") }
    );
    super::widths::write_joined(
        "mqar-gap",
        size,
        ("attnlab reproduce mqar-gap: softmax vs linear attention on associative recall", intro),
        &cells,
        &per_cell,
        ("Accuracy per width", Table::new("summary", header, rows)),
        checks,
        plots,
        out,
    )
}

/// One half of length-scaling: a comparison evaluated at several lengths (item counts or
/// tokens), as a table of `key_a / key_b` per length and one plot per key.
struct LengthStudy {
    results: Results,
    mixers: Vec<String>,
    lengths: Vec<usize>,
    /// The length whose metrics carry no `@n` (MQAR's training length), if any.
    plain: Option<usize>,
}

impl LengthStudy {
    fn at(&self, arm: &str, key: &str, n: usize) -> f64 {
        let key = if self.plain == Some(n) { key.to_string() } else { format!("{key}@{n}") };
        final_eval_mean(&self.results, arm, &key)
    }

    /// Rows of "a / b" (or "a" alone) per length, one row per mixer.
    fn table(&self, stem: &str, unit: &str, keys: &[&str]) -> Table {
        let mut header = vec!["attention".to_string()];
        header.extend(self.lengths.iter().map(|n| format!("{n} {unit}: {}", keys.join(" / "))));
        let rows = self
            .mixers
            .iter()
            .map(|m| {
                let mut row = vec![m.clone()];
                row.extend(self.lengths.iter().map(|&n| {
                    keys.iter().map(|k| fmt(self.at(m, k, n))).collect::<Vec<_>>().join(" / ")
                }));
                row
            })
            .collect();
        Table::new(stem, header, rows)
    }

    fn plot(&self, stem: &str, key: &str, unit: &str, title: &str) -> Plot {
        let series: Vec<Series> = self
            .mixers
            .iter()
            .map(|m| {
                Series::new(
                    m.clone(),
                    self.lengths.iter().map(|&n| (n as f64, self.at(m, key, n))).collect(),
                )
            })
            .collect();
        Plot {
            stem: stem.into(),
            title: title.into(),
            svg: line_chart(title, unit, key, &series, false),
        }
    }
}

/// Trains `comparison` into `dir`, writes its own report there, and keeps what the length
/// tables need (its arms' names are the tables' rows).
fn length_study(
    comparison: &Comparison,
    (lengths, plain): (Vec<usize>, Option<usize>),
    title: &str,
    dir: &Path,
    exec: &LocalExecutor,
) -> Result<LengthStudy, ReproduceError> {
    let results = run_compare(comparison, title, dir, exec)?;
    report::write(&results, dir)?;
    Ok(LengthStudy {
        results,
        mixers: comparison.arms.iter().map(|a| a.name.clone()).collect(),
        lengths,
        plain,
    })
}

/// Softmax that knows its length, past the length it was trained at, on three tasks:
/// - max retrieval (Veličković et al. 2024): one layer trained on up to 16 items, evaluated at
///   16 … 256. A set: what matters is how sharp attention stays as n grows.
/// - MQAR without positions, trained at 32 tokens (4 pairs) and evaluated at 64 … 256 tokens
///   with proportionally more pairs. A sequence: the token after the key must be found.
/// - the character LM trained on 64-character windows, its loss per position bucket in windows
///   of 512 (FoX's length-extrapolation figure, at toy size).
///
/// The full size runs √d, ÷n (Bernhard), the learned temperature, SSMax, Llama 4's log-n
/// temperature, FoX and stick-breaking on the two recall tasks, each arm at its best of three
/// learning rates (judged at the training length, as zoology does), and RoPE softmax, softmax
/// without positions, FoX and stick-breaking on the LM. The smoke size runs the pair each smoke
/// check is about at the presets' learning rate.
pub fn length_scaling(
    size: Size,
    out: &Path,
    exec: &LocalExecutor,
) -> Result<Outcome, ReproduceError> {
    const ALL: [&str; 7] = [
        "softmax",
        "softmax:num_keys",
        "softmax:learned",
        "softmax:ssmax",
        "softmax:log_n_temp",
        "softmax:forget=true",
        "stickbreak",
    ];
    const ROPE: &str = "softmax:rope";
    // The length-aware softmax papers publish 100M+-parameter language models, not a toy
    // configuration: the paper size is the full one.
    let full = size != Size::Smoke;
    let (retrieval_preset, retrieval_mixers, mqar_mixers, lm_mixers): (
        &str,
        &[&str],
        &[&str],
        &[&str],
    ) = match size {
        Size::Smoke => (
            "configs/max-retrieval-smoke.toml",
            &["softmax", "softmax:ssmax"],
            &["softmax", "softmax:forget=true"],
            &["softmax", "softmax:forget=true"],
        ),
        Size::Full | Size::Paper => (
            "configs/max-retrieval.toml",
            &ALL,
            &ALL,
            &["softmax", "softmax", "softmax:forget=true", "stickbreak"],
        ),
    };
    // Without a sweep the max-retrieval SSMax-vs-√d accuracy comparison is a tie at 256 items
    // (0.768 each at lr 3e-3); at each arm's best lr SSMax's lead shows, as published.
    let recall_lrs: &[f64] = if full { &[1e-3, 3e-3, 1e-2] } else { &[] };

    let retrieval = read_preset(retrieval_preset)?;
    let TaskConfig::MaxRetrieval(task) = &retrieval.task else {
        return Err(ReproduceError::NotTaskPreset {
            preset: retrieval_preset.into(),
            task: "a max_retrieval",
        });
    };
    let (counts, fewest) = (task.eval_items.clone(), task.min_items);
    let (trained, most) = (task.max_items, counts.iter().copied().max().unwrap_or(task.max_items));

    let mqar_preset = "configs/mqar-length-smoke.toml";
    let mut mqar = read_preset(mqar_preset)?;
    let TaskConfig::Mqar(task) = &mqar.task else {
        return Err(ReproduceError::NotTaskPreset { preset: mqar_preset.into(), task: "an mqar" });
    };
    let mut lengths = vec![task.seq_len];
    lengths.extend(task.eval_lengths.iter().copied());
    let (short, long) = (task.seq_len, lengths.iter().copied().max().unwrap_or(task.seq_len));
    mqar.train.checkpoint_every = 0;
    if !full {
        // 700 steps: both seeds of FoX solve the training length (400 leave one unsolved).
        mqar.train.steps = 700;
        mqar.train.eval_every = 350;
    }

    let lm_preset = "configs/shakespeare-char-length-smoke.toml";
    let mut lm = read_preset(lm_preset)?;
    let TaskConfig::CharLm(task) = &lm.task else {
        return Err(ReproduceError::NotTaskPreset { preset: lm_preset.into(), task: "a char_lm" });
    };
    let buckets = task.eval_lengths.clone();
    let (window, last) =
        (task.train_len(lm.model.max_seq_len), buckets.last().copied().unwrap_or(0));
    if !full {
        lm = small_char_lm(lm);
        lm.train.steps = 300;
        lm.train.eval_every = 300;
    }
    let mut lm_spec = spec(&lm, 2, &[], None, &by_mixer(lm_mixers))?;
    // The baseline an LM would ship: softmax with RoPE (the other arms run without positions).
    lm_spec.arms[0].name = ROPE.into();
    lm_spec.arms[0].config.model.positions = attnlab_model::position::PositionKind::Rope;
    if full {
        lm_spec.arms[1].name = "softmax (no positions)".into();
    }

    let title = "attnlab reproduce length-scaling";
    let retrieval = length_study(
        &spec(&retrieval, 2, recall_lrs, None, &by_mixer(retrieval_mixers))?,
        (counts, None),
        &format!("{title}: max retrieval past the trained item count"),
        &out.join("max-retrieval"),
        exec,
    )?;
    let mqar = length_study(
        &spec(&mqar, 2, recall_lrs, None, &by_mixer(mqar_mixers))?,
        (lengths, Some(short)),
        &format!("{title}: MQAR past the trained length"),
        &out.join("mqar-length"),
        exec,
    )?;
    let lm = length_study(
        &lm_spec,
        (buckets.clone(), None),
        &format!("{title}: character LM past the trained context"),
        &out.join("char-lm-length"),
        exec,
    )?;
    let mqar_at = |arm: &str, n: usize| mqar.at(arm, "accuracy", n);
    let lm_at = |arm: &str, n: usize| lm.at(arm, "loss", n);

    // Veličković et al.: with logits that cannot grow, softmax's attention disperses as n grows
    // past training; SSMax's log-n factor is meant to hold it.
    let (w_train, w_most) = (
        retrieval.at("softmax", "max_weight", trained),
        retrieval.at("softmax", "max_weight", most),
    );
    let ss_most = retrieval.at("softmax:ssmax", "max_weight", most);
    let (acc_most, ss_acc_most) = (
        retrieval.at("softmax", "accuracy", most),
        retrieval.at("softmax:ssmax", "accuracy", most),
    );
    // Without positions, √d softmax has no way to find "the token after the key" in a longer
    // sequence; FoX's forget gate is a learned recency bias that needs no position table.
    let (soft_short, soft_long) = (mqar_at("softmax", short), mqar_at("softmax", long));
    let fox_long = mqar_at("softmax:forget=true", long);
    // Lin et al. 2025 (FoX), length extrapolation: RoPE softmax's per-position loss rises past
    // the training context; FoX's keeps falling with more context.
    let (rope_in, rope_out, fox_in, fox_out) = (
        lm_at(ROPE, window),
        lm_at(ROPE, last),
        lm_at("softmax:forget=true", window),
        lm_at("softmax:forget=true", last),
    );
    let last_bucket = format!("positions {}-{}", last / 2, last - 1);
    let mut checks = vec![
        Check::new(
            format!(
                "max retrieval: √d softmax's largest attention weight falls from {trained} to {most} items (by more than 0.05)"
            ),
            w_train - w_most > 0.05,
            format!("{w_train:.3} -> {w_most:.3}"),
        ),
        Check::new(
            format!("max retrieval: SSMax keeps a larger largest weight than √d at {most} items"),
            ss_most > w_most,
            format!("{ss_most:.3} vs {w_most:.3}"),
        ),
        Check::new(
            format!("max retrieval: SSMax retrieves the max more often than √d at {most} items"),
            ss_acc_most > acc_most,
            format!("{ss_acc_most:.3} vs {acc_most:.3}"),
        ),
        Check::new(
            format!(
                "MQAR: √d softmax's accuracy falls from {short} to {long} tokens (by more than 0.2)"
            ),
            soft_short - soft_long > 0.2,
            format!("{soft_short:.3} -> {soft_long:.3}"),
        ),
        Check::new(
            format!("MQAR: FoX recalls more than √d at {long} tokens"),
            fox_long > soft_long,
            format!("{fox_long:.3} vs {soft_long:.3}"),
        ),
        Check::new(
            format!(
                "char LM: RoPE softmax's loss at {last_bucket} exceeds its loss in the trained range (0-{}) by more than 0.1",
                window - 1
            ),
            rope_out - rope_in > 0.1,
            format!("{rope_in:.3} -> {rope_out:.3}"),
        ),
        Check::new(
            format!("char LM: FoX's loss at {last_bucket} is below RoPE softmax's"),
            fox_out < rope_out,
            format!("{fox_out:.3} vs {rope_out:.3}"),
        ),
    ];
    if full {
        let (sb_long, ss_long) = (mqar_at("stickbreak", long), mqar_at("softmax:ssmax", long));
        checks.push(Check::new(
            format!("MQAR: stick-breaking recalls more than √d at {long} tokens"),
            sb_long > soft_long,
            format!("{sb_long:.3} vs {soft_long:.3}"),
        ));
        checks.push(Check::new(
            format!("MQAR: SSMax recalls more than √d at {long} tokens"),
            ss_long > soft_long,
            format!("{ss_long:.3} vs {soft_long:.3}"),
        ));
        checks.push(Check::new(format!("char LM: FoX's loss does not rise past the trained context ({last_bucket} vs 0-{})", window - 1), fox_out <= fox_in, format!("{fox_in:.3} -> {fox_out:.3}")));
        let sb_out = lm_at("stickbreak", last);
        checks.push(Check::new(
            format!("char LM: stick-breaking's loss at {last_bucket} is below RoPE softmax's"),
            sb_out < rope_out,
            format!("{sb_out:.3} vs {rope_out:.3}"),
        ));
    }

    let retrieval_table =
        retrieval.table("max_retrieval_per_items", "items", &["accuracy", "max_weight"]);
    let summary = retrieval_table.clone();
    let lr_note = if full {
        "each arm at its best learning rate of 1e-3, 3e-3 and 1e-2 (by training-range accuracy)"
    } else {
        "the preset's learning rate"
    };
    let sections = vec![
        Section::new("Max retrieval: accuracy / the query's largest attention weight per item count (mean over 2 seeds)")
            .table(retrieval_table)
            .text(format!("Trained on {fewest} to {trained} distinct items, {lr_note}; full report `max-retrieval/report.html`.")),
        Section::new("MQAR without positions: accuracy per evaluation length (mean over 2 seeds)")
            .table(mqar.table("mqar_per_length", "tokens", &["accuracy"]))
            .text(format!("Trained at {short} tokens, {lr_note}; longer sequences hold proportionally more pairs. Full report `mqar-length/report.html`.")),
        Section::new("Character LM: loss per position bucket (mean over 2 seeds)")
            .table(lm.table("char_lm_per_position", "(bucket end)", &["loss"]))
            .text(format!(
                "Trained on {window}-character windows, scored on {last}: the column for ℓ is the mean loss over positions [ℓ/2, ℓ), the first over [0, {window}). \
                 Full report `char-lm-length/report.html`."
            )),
        Section::new("Expected effects").bullets(checks.iter().map(Check::line).collect()),
    ];
    let plots = vec![
        retrieval.plot(
            "max_weight_vs_items",
            "max_weight",
            "items",
            "Max retrieval: largest attention weight vs items",
        ),
        retrieval.plot(
            "accuracy_vs_items",
            "accuracy",
            "items",
            "Max retrieval: accuracy vs items",
        ),
        mqar.plot(
            "mqar_accuracy_vs_length",
            "accuracy",
            "evaluation length (tokens)",
            "MQAR: accuracy vs length",
        ),
        lm.plot(
            "char_lm_loss_vs_position",
            "loss",
            "position bucket end (characters)",
            "Char LM: loss per position bucket",
        ),
    ];
    let doc = report::Document {
        title: "attnlab reproduce length-scaling: softmax that knows its length".into(),
        decision: None,
        intro: format!(
            "Presets `{retrieval_preset}`, `{mqar_preset}` and `{lm_preset}`{}.",
            if full {
                ""
            } else {
                " at smoke sizes (MQAR 700 steps; the LM at width 64, 2 layers, 300 steps)"
            }
        ),
        sections,
        plots,
    };
    let json = serde_json::json!({
        "reproduction": "length-scaling", "size": size, "checks": checks,
        "max_retrieval": retrieval.results, "mqar_length": mqar.results, "char_lm_length": lm.results,
    });
    write_report(&doc, &json, out)?;
    Ok(Outcome { checks, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every run of mqar-gap's full size is a valid config (42 per pair count and width: seven
    /// arms × two seeds × three lrs), planned before any of them trains.
    #[test]
    fn mqar_gap_full_plans_every_cell() {
        let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/mqar-short.toml");
        let base = read_preset(preset).unwrap();
        let mut arms = vec![("softmax", "softmax")];
        arms.extend(LINEAR_MAPS);
        for pairs in [4, 8] {
            let config =
                with_size(&base, Some(MqarSize { pairs, length_and_batch: None }), preset).unwrap();
            let TaskConfig::Mqar(task) = &config.task else { panic!("mqar") };
            assert_eq!(task.num_kv_pairs, pairs);
            for width in [32, 64, 128] {
                let mut config = config.clone();
                config.model.d_model = width;
                let plan = spec(&config, MQAR_FULL_SEEDS, &MQAR_FULL_LRS, Some(0.9), &arms)
                    .unwrap()
                    .plan()
                    .unwrap();
                assert_eq!(plan.len(), 42, "{pairs} pairs, width {width}");
            }
        }
    }

    #[test]
    fn worst_error_is_the_largest_late_error_over_every_seed() {
        let eval = |errs: &[(usize, f64)]| -> BTreeMap<String, f64> {
            let mut m: BTreeMap<String, f64> =
                errs.iter().map(|&(k, v)| (format!("err_k{k:02}"), v)).collect();
            m.insert("lsq_k09".into(), 5.0);
            m.insert("loss".into(), 7.0);
            m
        };
        let a = eval(&[(3, 0.9), (7, 0.05), (8, 0.02), (10, 0.01)]);
        let b = eval(&[(6, 0.5), (7, 0.04), (9, 0.08), (10, 0.03)]);
        // k = 3 and 6 are before the threshold; lsq_ and loss are not errors of the model.
        assert_eq!(worst_error(&[&a, &b], 7), (0.08, 9));
        assert_eq!(worst_error(&[&a, &b], 10), (0.03, 10));
        assert_eq!(worst_error(&[&a], 3), (0.9, 3));
        // A run with no error past the threshold (diverged, or too few points) is no evidence.
        let (worst, _) = worst_error(&[&a, &eval(&[(3, 0.1)])], 7);
        assert!(worst.is_nan());
        assert!(worst_error(&[], 7).0.is_nan());
        assert_eq!(
            [
                examples_of("err_k07"),
                examples_of("err_k10"),
                examples_of("lsq_k07"),
                examples_of("err_kx")
            ],
            [Some(7), Some(10), None, None]
        );
    }

    #[test]
    fn typed_sizes_match_the_override_strings_they_replace() {
        let preset = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/shakespeare-char-smoke.toml"
        ));
        let strings = |sets: &[&str]| {
            RunConfig::load(preset, &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
        };
        let small = [
            "model.d_model=64",
            "model.n_heads=2",
            "model.n_layers=2",
            "train.steps=200",
            "train.warmup_steps=20",
            "train.eval_every=50",
            "train.eval_batches=8",
            "train.log_every=10",
            "train.checkpoint_every=0",
        ];
        let read = || RunConfig::read(preset).unwrap();
        assert_eq!(small_char_lm(read()), strings(&small));
        assert_eq!(
            eval_every(read(), 100),
            strings(&["train.eval_every=100", "train.checkpoint_every=0"])
        );
        let arms =
            spec(&read(), 2, &[], None, &[("identity", "linear:identity:norm=none")]).unwrap();
        assert_eq!(arms.arms[0].config, strings(&["model.mixer=linear:identity:norm=none"]));
    }
}
