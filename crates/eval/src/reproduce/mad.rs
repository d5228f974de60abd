//! `attnlab reproduce mad`: the MAD synthetic suite (Poli et al. 2024, "Mechanistic Design and
//! Scaling of Hybrid Architectures", arXiv 2403.17844; athms/mad-lab) across the families, in
//! MAD's form: each arm's accuracy per task at its best point of a learning-rate × weight-decay
//! grid, the mean over the six tasks and the mean rank (the task: `crates/train/src/task/mad.rs`).
//!
//! MAD's protocol, kept: every (arm, task, difficulty setting) is trained at every grid point and
//! scored by its best; a task's score is the mean over its settings (mad-lab's `benchmark.py`
//! and `analysis.py`). At `paper` size the grid is MAD's own (lr 1e-4, 5e-4, 1e-3 × weight
//! decay 0, 0.1, one seed) and the settings are MAD's sweep: the baseline of each task's
//! `configs/tasks/*.yml` and every change from it, one knob at a time (vocabulary, sequence
//! length, training-set size, noise, tokens to copy; 66 settings over the six tasks), each
//! trained for MAD's 200 epochs of its training set. Below `paper` each task runs at one setting,
//! MAD's baseline scaled down.
//!
//! Equal size: the arms share width and depth, so the recurrent arms' decoding states are equal
//! (`d²/h` per layer for the decay and delta rules, `d·(d/h + 1)` for elu+1, within 3%); softmax's
//! state is its KV cache, which grows with the sequence. At `full` and `paper` every arm more than
//! 3% over softmax's parameter count (GLA, with its full-rank gate projection) also runs at
//! softmax's count, as "<arm> (equal params)": the MLP's hidden width absorbs the difference
//! where the model has an MLP (`paper`), the model width where it has none (`full`; see
//! [`super::equal_params`]).
//!
//! The checks are the claims the seed papers and MAD's own task definitions make, not orderings
//! MAD's tables state (its per-task results are per architecture of its own zoo, not these
//! arms): softmax attention recalls where elu+1 linear attention, a fixed-size state that only
//! adds, blurs (Arora et al. 2023, "Zoology", arXiv 2312.04927; Deng et al. 2023, arXiv
//! 2310.11685), on in-context recall and on noisy recall; memorization needs no sequence mixing
//! (MAD: the key-to-value map is the same for every sequence, so it lives in the weights), so the
//! arms' accuracies there are within 0.1 of each other; and, at `full` and `paper` size, the
//! gated delta rule, which corrects the value stored under a key instead of adding to it (Yang
//! et al. 2024, arXiv 2412.06464), recalls better than elu+1.
//!
//! Sizes (two layers of width 64 with 2 heads, rotary positions, no MLP, from
//! `configs/mad-smoke.toml`, below `paper`):
//! - `smoke`: softmax, linear:elu1 and delta:gated; 32-token instances, 500 steps, one seed at the
//!   preset's lr and no weight decay (18 runs, about 2 minutes on 2 cores).
//! - `full`: five arms (softmax, linear:elu1, decay:gla, delta, delta:gated) and GLA at equal
//!   parameters, 32-token instances, 1000 steps, lr {1e-3, 3e-3} × weight decay {0, 0.1}, one
//!   seed (144 runs).
//! - `paper`: `configs/mad.toml` (MAD's model) at MAD's 66 settings and MAD's grid, the five
//!   arms and GLA at equal parameters (2 376 runs: a cluster's job, `--executor slurm`).

use super::equal_params;
use super::harness::{
    Check, Outcome, ReproduceError, Size, read_preset, run_compare, spec, write_report,
};
use crate::compare::{Arm, Comparison, LocalExecutor, Results};
use crate::plots::bar_chart;
use crate::report::{self, Plot, Section, Table, fmt};
use attnlab_train::config::{MAD_PROBLEMS, MadConfig, MadProblem};
use attnlab_train::{RunConfig, TaskConfig};
use std::path::Path;

const SOFTMAX: &str = "softmax";
const LINEAR: &str = "linear:elu1";
const GATED_DELTA: &str = "delta:gated";
const GLA: &str = "decay:gla";
/// MAD trains every setting for this many epochs of its training set.
const MAD_EPOCHS: usize = 200;
/// The largest spread of memorization accuracy over the arms that counts as "no difference".
const MEMORIZATION_SPREAD: f64 = 0.1;
/// The least recall gap between softmax and elu+1 that counts as "recalls where it blurs".
const RECALL_GAP: f64 = 0.2;

/// What one size trains: preset, arms, the lr × weight-decay grid, seeds, and the sequence length
/// and step budget it sets on the preset (`None`: the preset's own, MAD's baselines).
struct Plan {
    preset: &'static str,
    arms: Vec<&'static str>,
    lrs: Vec<f64>,
    weight_decays: Vec<f64>,
    seeds: u64,
    seq_len: Option<usize>,
    steps: Option<usize>,
    /// Arms that also run at softmax's parameter count (see [`equal_params`]).
    equal_params: Vec<&'static str>,
    /// MAD's sweep of difficulty settings (true), or the baseline setting alone.
    sweep: bool,
}

impl Plan {
    fn of(size: Size) -> Self {
        let five = vec![SOFTMAX, LINEAR, GLA, "delta", GATED_DELTA];
        match size {
            Size::Smoke => Plan {
                preset: "configs/mad-smoke.toml",
                arms: vec![SOFTMAX, LINEAR, GATED_DELTA],
                lrs: vec![],
                weight_decays: vec![0.0],
                seeds: 1,
                seq_len: Some(32),
                steps: Some(500),
                equal_params: vec![],
                sweep: false,
            },
            Size::Full => Plan {
                preset: "configs/mad-smoke.toml",
                arms: five,
                lrs: vec![1e-3, 3e-3],
                weight_decays: vec![0.0, 0.1],
                seeds: 1,
                seq_len: Some(32),
                steps: Some(1000),
                equal_params: vec![GLA],
                sweep: false,
            },
            Size::Paper => Plan {
                preset: "configs/mad.toml",
                arms: five,
                lrs: vec![1e-4, 5e-4, 1e-3],
                weight_decays: vec![0.0, 0.1],
                seeds: 1,
                seq_len: None,
                steps: None,
                equal_params: vec![GLA],
                sweep: true,
            },
        }
    }
}

/// One of MAD's difficulty knobs (the `changes` of mad-lab's `configs/tasks/*.yml`), moved
/// from the task's baseline one at a time.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Knob {
    Vocab(usize),
    SeqLen(usize),
    TrainExamples(usize),
    Noise(f64),
    TokensToCopy(usize),
}

impl Knob {
    /// The setting's name in directories and tables: MAD's config key and value.
    fn label(self) -> String {
        match self {
            Knob::Vocab(v) => format!("vocab_size={v}"),
            Knob::SeqLen(l) => format!("seq_len={l}"),
            Knob::TrainExamples(n) => format!("num_train_examples={n}"),
            Knob::Noise(f) => format!("frac_noise={f}"),
            Knob::TokensToCopy(n) => format!("num_tokens_to_copy={n}"),
        }
    }

    fn apply(self, task: &mut MadConfig) {
        match self {
            Knob::Vocab(v) => task.vocab_size = v,
            Knob::SeqLen(l) => task.seq_len = l,
            Knob::TrainExamples(n) => task.num_train_examples = n,
            Knob::Noise(f) => task.frac_noise = f,
            Knob::TokensToCopy(n) => task.num_tokens_to_copy = n,
        }
    }
}

/// MAD's difficulty sweep of `problem`: its baseline (`None`) and every change from it, one knob
/// at a time, as mad-lab's `make_benchmark_mad_configs` enumerates them.
fn sweep(problem: MadProblem) -> Vec<Option<Knob>> {
    use Knob::*;
    const TRAIN_SETS: [usize; 4] = [6400, 3200, 1600, 800];
    let recall_lengths = [256, 512, 1024].map(SeqLen);
    let changes: Vec<Knob> = match problem {
        MadProblem::InContextRecall | MadProblem::FuzzyRecall => [32, 64, 128]
            .map(Vocab)
            .into_iter()
            .chain(recall_lengths)
            .chain(TRAIN_SETS.map(TrainExamples))
            .collect(),
        // MAD's vocabularies here count the 16 noise tokens in.
        MadProblem::NoisyRecall => [48, 80, 144]
            .map(Vocab)
            .into_iter()
            .chain(recall_lengths)
            .chain(TRAIN_SETS.map(TrainExamples))
            .chain([0.4, 0.6, 0.8].map(Noise))
            .collect(),
        MadProblem::SelectiveCopying => [32, 64, 128]
            .map(Vocab)
            .into_iter()
            .chain([512, 1024].map(SeqLen))
            .chain(TRAIN_SETS.map(TrainExamples))
            .chain([32, 64, 96].map(TokensToCopy))
            .collect(),
        MadProblem::Compression => [32, 64, 128]
            .map(Vocab)
            .into_iter()
            .chain([64, 128, 256].map(SeqLen))
            .chain(TRAIN_SETS.map(TrainExamples))
            .collect(),
        MadProblem::Memorization => [512, 1024, 2048, 4096, 8192].map(Vocab).to_vec(),
    };
    std::iter::once(None).chain(changes.into_iter().map(Some)).collect()
}

/// The settings a plan trains `problem` at.
fn settings(problem: MadProblem, plan: &Plan) -> Vec<Option<Knob>> {
    if plan.sweep { sweep(problem) } else { vec![None] }
}

/// `base` set to `problem` at MAD's baseline difficulty for it (`configs/tasks/*.yml` of
/// mad-lab), or at `knob` moved from it, on `seq_len`-token instances where the plan scales
/// MAD's lengths down: fuzzy recall with keys and values of up to 3 tokens, noisy recall with 16
/// noise tokens and a 0.2 noise fraction (vocab 32), selective copying of a sixteenth of MAD's
/// 256 tokens (a quarter of a scaled length), memorization over a 256-token vocabulary from 256
/// fixed sequences of length 32, compression of 32 tokens. At MAD's own sizes the run is MAD's
/// 200 epochs of the training set at the preset's batch.
fn problem_config(
    base: &RunConfig,
    problem: MadProblem,
    knob: Option<Knob>,
    plan: &Plan,
) -> Result<RunConfig, ReproduceError> {
    let mut config = base.clone();
    let TaskConfig::Mad(task) = &mut config.task else {
        return Err(ReproduceError::NotTaskPreset { preset: plan.preset.into(), task: "a mad" });
    };
    task.problem = problem;
    let len = plan.seq_len.unwrap_or(task.seq_len);
    task.seq_len = len;
    match problem {
        MadProblem::InContextRecall => {}
        MadProblem::FuzzyRecall => {
            task.k_motif_size = 3;
            task.v_motif_size = 3;
        }
        MadProblem::NoisyRecall => {
            task.vocab_size = 32;
            task.noise_vocab_size = 16;
            task.frac_noise = 0.2;
        }
        MadProblem::SelectiveCopying => {
            // MAD copies 16 tokens out of 256; a scaled-down length keeps a quarter of its
            // tokens to copy so that the task stays a copy of several tokens.
            (task.seq_len, task.num_tokens_to_copy) =
                if plan.seq_len.is_some() { (len, len / 4) } else { (256, 16) };
        }
        MadProblem::Memorization => {
            task.vocab_size = 256;
            task.seq_len = len.min(32);
            task.num_train_examples = 256;
        }
        MadProblem::Compression => task.seq_len = len.min(32),
    }
    if let Some(knob) = knob {
        knob.apply(task);
    }
    let need = task.input_len();
    let examples = task.num_train_examples;
    config.model.max_seq_len = config.model.max_seq_len.max(need);
    match plan.steps {
        Some(steps) => {
            config.train.steps = steps;
            config.train.eval_every = steps / 2;
            config.train.checkpoint_every = 0;
        }
        // MAD's 200 epochs (20 000 steps at its baseline's 12 800 sequences and batch 128, 400
        // for memorization's 256), the last batch of an epoch a short one.
        None if examples > 0 => {
            config.train.steps = MAD_EPOCHS * examples.div_ceil(config.train.batch_size.max(1));
        }
        None => {}
    }
    config.train.eval_every = config.train.eval_every.min(config.train.steps).max(1);
    Ok(config)
}

/// One arm's score on one task: the best mean accuracy over the grid and where it was found.
#[derive(Clone, Copy, Debug)]
struct Score {
    accuracy: f64,
    lr: f64,
    weight_decay: f64,
}

/// Mean accuracy at the arm's best lr in one comparison; `None` while a run is pending, failed
/// or left no finite result (so that no score is read from missing runs).
fn arm_accuracy(results: &Results, arm: &str) -> Option<(f64, f64)> {
    let a = results.arms.iter().find(|a| a.name == arm)?;
    let complete = a.failed_runs + a.pending_runs == 0 && !a.no_finite_result;
    (complete && a.summary.mean.is_finite()).then_some((a.summary.mean, a.best_lr))
}

/// The best over the weight decays of `(weight decay, its comparison)`; NaN accuracy when any
/// grid point has no score (a best of an incomplete grid is not MAD's score).
fn best_over_grid(per_decay: &[(f64, Results)], arm: &str) -> Score {
    let mut best = Score { accuracy: f64::NEG_INFINITY, lr: f64::NAN, weight_decay: f64::NAN };
    for (wd, results) in per_decay {
        let Some((accuracy, lr)) = arm_accuracy(results, arm) else {
            return Score { accuracy: f64::NAN, lr: f64::NAN, weight_decay: f64::NAN };
        };
        if accuracy > best.accuracy {
            best = Score { accuracy, lr, weight_decay: *wd };
        }
    }
    best
}

/// Ranks of `values` from the highest (1) down, tied values sharing the mean of their ranks; a
/// NaN value gets a NaN rank and takes no place from the others.
fn ranks(values: &[f64]) -> Vec<f64> {
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                return f64::NAN;
            }
            let above = values.iter().filter(|&&u| u.is_finite() && u > v).count();
            let tied = values.iter().filter(|&&u| u == v).count();
            above as f64 + (1 + tied) as f64 / 2.0
        })
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// One difficulty setting of a problem: its comparisons, one per weight decay.
struct Setting {
    knob: Option<Knob>,
    per_decay: Vec<(f64, Results)>,
}

impl Setting {
    fn label(&self) -> String {
        self.knob.map_or_else(|| "baseline".to_string(), Knob::label)
    }
}

/// A problem's settings (the baseline first).
struct Task {
    problem: MadProblem,
    settings: Vec<Setting>,
}

impl Task {
    /// MAD's score of `arm` on the task: the mean over the settings of the best over the grid,
    /// with the grid point of the baseline setting (NaN while any setting has no score).
    fn score(&self, arm: &str) -> Score {
        let baseline = best_over_grid(&self.settings[0].per_decay, arm);
        let accuracy =
            mean(self.settings.iter().map(|s| best_over_grid(&s.per_decay, arm).accuracy));
        Score { accuracy, ..baseline }
    }
    fn chance(&self) -> Option<f64> {
        self.settings[0].per_decay.first().and_then(|(_, r)| r.chance)
    }
}

/// The name of `arm`'s copy at softmax's parameter count.
fn equal_params_name(arm: &str) -> String {
    format!("{arm} (equal params)")
}

/// Adds, for each of `arms`, its copy resized to the baseline arm's parameter count.
fn add_equal_params(comparison: &mut Comparison, arms: &[&str]) -> Result<(), ReproduceError> {
    if arms.is_empty() {
        return Ok(());
    }
    let target = attnlab_train::parameter_count(&comparison.arms[comparison.baseline].config)
        .map_err(|e| ReproduceError::EqualParams(e.to_string()))?;
    for &name in arms {
        let arm = comparison.arms.iter().find(|a| a.name == name).ok_or_else(|| {
            ReproduceError::EqualParams(format!("{name} is not an arm of the comparison"))
        })?;
        let (config, _) = equal_params::matched(&arm.config, target)?;
        comparison.arms.push(Arm { name: equal_params_name(name), config, grid: None });
    }
    Ok(())
}

pub fn mad(size: Size, out: &Path, exec: &LocalExecutor) -> Result<Outcome, ReproduceError> {
    let plan = Plan::of(size);
    let base = read_preset(plan.preset)?;
    let named: Vec<(&str, &str)> = plan.arms.iter().map(|&a| (a, a)).collect();
    let mut tasks = Vec::new();
    for problem in MAD_PROBLEMS {
        let mut done = Vec::new();
        for knob in settings(problem, &plan) {
            let config = problem_config(&base, problem, knob, &plan)?;
            let mut comparison = spec(&config, plan.seeds, &plan.lrs, None, &named)?;
            add_equal_params(&mut comparison, &plan.equal_params)?;
            let (dir, what) = match knob {
                None => (out.join(problem.name()), problem.name().to_string()),
                Some(k) => (
                    out.join(problem.name()).join(k.label()),
                    format!("{} at {}", problem.name(), k.label()),
                ),
            };
            let mut per_decay = Vec::new();
            for &wd in &plan.weight_decays {
                let mut comparison = comparison.clone();
                for arm in &mut comparison.arms {
                    arm.config.train.weight_decay = wd;
                }
                let dir = dir.join(format!("wd{wd}"));
                let title = format!("attnlab reproduce mad: {what} at weight decay {wd}");
                let results = run_compare(&comparison, &title, &dir, exec)?;
                report::write(&results, &dir)?;
                per_decay.push((wd, results));
            }
            done.push(Setting { knob, per_decay });
        }
        tasks.push(Task { problem, settings: done });
    }

    let arm_names: Vec<String> = plan
        .arms
        .iter()
        .map(|a| a.to_string())
        .chain(plan.equal_params.iter().map(|a| equal_params_name(a)))
        .collect();
    let arms: Vec<&str> = arm_names.iter().map(String::as_str).collect();
    let arms = &arms;
    // scores[t][a]: arm a on task t; ranks per task over the arms.
    let scores: Vec<Vec<Score>> =
        tasks.iter().map(|t| arms.iter().map(|a| t.score(a)).collect()).collect();
    let task_ranks: Vec<Vec<f64>> = scores
        .iter()
        .map(|row| ranks(&row.iter().map(|s| s.accuracy).collect::<Vec<_>>()))
        .collect();
    let mean_accuracy: Vec<f64> =
        (0..arms.len()).map(|a| mean(scores.iter().map(|row| row[a].accuracy))).collect();
    let mean_rank: Vec<f64> =
        (0..arms.len()).map(|a| mean(task_ranks.iter().map(|r| r[a]))).collect();
    let at = |problem: MadProblem, arm: &str| -> f64 {
        let t = tasks.iter().position(|t| t.problem == problem).expect("every problem ran");
        let a = arms.iter().position(|&x| x == arm).expect("the arm is in the plan");
        scores[t][a].accuracy
    };

    let mut checks = Vec::new();
    for problem in [MadProblem::InContextRecall, MadProblem::NoisyRecall] {
        let (s, l) = (at(problem, SOFTMAX), at(problem, LINEAR));
        checks.push(Check::new(
            format!(
                "{}: softmax recalls where elu+1 linear attention blurs (accuracy at least {RECALL_GAP} higher)",
                problem.name()
            ),
            s - l >= RECALL_GAP,
            format!("softmax {}, linear:elu1 {}", fmt(s), fmt(l)),
        ));
    }
    let memorized: Vec<f64> = arms.iter().map(|a| at(MadProblem::Memorization, a)).collect();
    let spread = memorized.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v))
        - memorized.iter().fold(f64::INFINITY, |m, &v| m.min(v));
    checks.push(Check::new(
        format!(
            "memorization: the map is in the weights, so the mixer hardly matters (every arm within {MEMORIZATION_SPREAD} of the best)"
        ),
        spread <= MEMORIZATION_SPREAD,
        arms.iter().zip(&memorized).map(|(a, v)| format!("{a} {}", fmt(*v))).collect::<Vec<_>>().join(", "),
    ));
    if size != Size::Smoke {
        let (d, l) =
            (at(MadProblem::InContextRecall, GATED_DELTA), at(MadProblem::InContextRecall, LINEAR));
        checks.push(Check::new(
            "in_context_recall: the gated delta rule, which corrects what a key stores, recalls better than elu+1, which only adds",
            d > l,
            format!("delta:gated {}, linear:elu1 {}", fmt(d), fmt(l)),
        ));
    }

    // The summary in MAD's form: accuracy per task, mean, mean rank; then size.
    let mut header = vec!["attention".to_string()];
    header.extend(tasks.iter().map(|t| t.problem.name().to_string()));
    header.extend(["mean accuracy", "mean rank", "params", "state floats"].map(String::from));
    let any = &tasks[0].settings[0].per_decay[0].1;
    let rows: Vec<Vec<String>> = arms
        .iter()
        .enumerate()
        .map(|(a, &arm)| {
            let mut row = vec![arm.to_string()];
            row.extend(scores.iter().map(|r| fmt(r[a].accuracy)));
            row.push(fmt(mean_accuracy[a]));
            row.push(format!("{:.2}", mean_rank[a]));
            let result = any.arms.iter().find(|r| r.name == arm);
            row.push(result.map_or("?".into(), |r| r.params.to_string()));
            row.push(result.map_or("?".into(), |r| r.state_floats.to_string()));
            row
        })
        .collect();
    let summary = Table::new("summary", header, rows);

    let mut grid_header = vec!["attention".to_string()];
    grid_header.extend(tasks.iter().map(|t| t.problem.name().to_string()));
    let grid_rows = arms
        .iter()
        .enumerate()
        .map(|(a, &arm)| {
            let mut row = vec![arm.to_string()];
            row.extend(
                scores.iter().map(|r| format!("{} / {}", fmt(r[a].lr), fmt(r[a].weight_decay))),
            );
            row
        })
        .collect();
    let chance = tasks
        .iter()
        .map(|t| format!("{} {}", t.problem.name(), t.chance().map_or("?".into(), fmt)))
        .collect::<Vec<_>>()
        .join(", ");
    let swept = tasks.iter().any(|t| t.settings.len() > 1);
    let mut sections = vec![
        Section::new("Accuracy per task at the best grid point, mean over tasks and mean rank")
            .table(summary.clone())
            .text(format!(
                "Accuracy over the evaluation probes (micro-averaged; MAD's torchmetrics score averages over classes){}. Rank 1 is the best arm of a task, ties share their mean rank. Params and state floats: in-context recall's baseline setting. Chance: {chance}.",
                if swept { "; a task's score is the mean over its difficulty settings of the best grid point at each" } else { "" }
            )),
        Section::new("Expected effects").bullets(checks.iter().map(Check::line).collect()),
        Section::new(if swept {
            "The grid point each baseline setting's score comes from (lr / weight decay)"
        } else {
            "The grid point each score comes from (lr / weight decay)"
        })
        .table(Table::new("best_grid_point", grid_header, grid_rows))
        .text(
            "Each task's comparisons: `<task>/wd<weight decay>/report.html` (and, for a difficulty setting, `<task>/<setting>/wd<weight decay>/`).",
        ),
    ];
    if swept {
        let mut header = vec!["task".to_string(), "setting".to_string()];
        header.extend(arms.iter().map(|a| a.to_string()));
        let rows = tasks
            .iter()
            .flat_map(|t| {
                t.settings.iter().map(|s| {
                    let mut row = vec![t.problem.name().to_string(), s.label()];
                    row.extend(arms.iter().map(|a| fmt(best_over_grid(&s.per_decay, a).accuracy)));
                    row
                })
            })
            .collect();
        sections.push(
            Section::new("Accuracy per difficulty setting (best grid point)")
                .table(Table::new("settings", header, rows)),
        );
    }
    let bars: Vec<(String, f64, f64, f64)> = arms
        .iter()
        .zip(&mean_accuracy)
        .map(|(a, &m)| (a.to_string(), m, f64::NAN, f64::NAN))
        .collect();
    let title = "MAD: mean accuracy over the six tasks".to_string();
    let plots = vec![Plot {
        stem: "mean_accuracy".into(),
        svg: bar_chart(&title, "mean accuracy", &bars),
        title,
    }];
    let doc = report::Document {
        title: "attnlab reproduce mad: the MAD synthetic suite across the families".into(),
        decision: None,
        intro: format!(
            "Preset `{}`{}; arms {}; {} seed(s); each arm at its best of lr {} × weight decay {:?} per task.",
            plan.preset,
            plan.seq_len.map_or(String::new(), |l| format!(
                " at {l}-token instances and {} steps",
                plan.steps.unwrap_or(base.train.steps)
            )),
            arms.join(", "),
            plan.seeds,
            if plan.lrs.is_empty() {
                format!("{}", base.train.lr)
            } else {
                format!("{:?}", plan.lrs)
            },
            plan.weight_decays,
        ),
        sections,
        plots,
    };
    // tasks[problem][setting][weight decay]: each comparison's results.
    let per_task: serde_json::Map<String, serde_json::Value> = tasks
        .iter()
        .map(|t| {
            let settings: serde_json::Map<String, serde_json::Value> = t
                .settings
                .iter()
                .map(|s| {
                    let grid: serde_json::Map<String, serde_json::Value> = s
                        .per_decay
                        .iter()
                        .map(|(wd, r)| {
                            (format!("{wd}"), serde_json::to_value(r).unwrap_or_default())
                        })
                        .collect();
                    (s.label(), serde_json::Value::Object(grid))
                })
                .collect();
            (t.problem.name().to_string(), serde_json::Value::Object(settings))
        })
        .collect();
    let table: Vec<serde_json::Value> = arms
        .iter()
        .enumerate()
        .map(|(a, &arm)| {
            let per: serde_json::Map<String, serde_json::Value> = tasks
                .iter()
                .zip(&scores)
                .map(|(t, r)| {
                    let s = r[a];
                    (
                        t.problem.name().to_string(),
                        serde_json::json!({"accuracy": finite(s.accuracy), "lr": finite(s.lr), "weight_decay": finite(s.weight_decay)}),
                    )
                })
                .collect();
            serde_json::json!({"arm": arm, "tasks": per, "mean_accuracy": finite(mean_accuracy[a]), "mean_rank": finite(mean_rank[a])})
        })
        .collect();
    let json = serde_json::json!({
        "reproduction": "mad", "size": size, "checks": checks, "arms": table,
        "weight_decays": plan.weight_decays, "tasks": per_task,
    });
    write_report(&doc, &json, out)?;
    Ok(Outcome { checks, summary })
}

/// A number for results.json: non-finite values (unscored arms) are absent (null), never saved.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
    }

    #[test]
    fn ranks_count_from_the_best_and_ties_share_their_mean() {
        assert_eq!(ranks(&[0.5, 1.0, 0.2]), [2.0, 1.0, 3.0]);
        assert_eq!(ranks(&[1.0, 1.0, 0.2]), [1.5, 1.5, 3.0]);
        let r = ranks(&[0.3, f64::NAN, 0.9]);
        assert_eq!((r[0], r[2]), (2.0, 1.0));
        assert!(r[1].is_nan());
    }

    #[test]
    fn every_size_sets_each_problem_and_setting_to_a_valid_config() {
        for size in [Size::Smoke, Size::Full, Size::Paper] {
            let plan = Plan::of(size);
            let base = RunConfig::read(&root().join(plan.preset)).unwrap();
            for problem in MAD_PROBLEMS {
                for knob in settings(problem, &plan) {
                    let c = problem_config(&base, problem, knob, &plan).unwrap();
                    c.validate()
                        .unwrap_or_else(|e| panic!("{size:?} {} {knob:?}: {e}", problem.name()));
                    let TaskConfig::Mad(t) = &c.task else { unreachable!() };
                    assert_eq!(t.problem, problem);
                    assert!(c.model.max_seq_len >= t.input_len());
                }
            }
        }
        // MAD's baselines at paper size: selective copying of 16 tokens out of 256, and
        // memorization in 400 steps (200 epochs of 256 sequences at batch 128).
        let plan = Plan::of(Size::Paper);
        let base = RunConfig::read(&root().join(plan.preset)).unwrap();
        let c = problem_config(&base, MadProblem::SelectiveCopying, None, &plan).unwrap();
        let TaskConfig::Mad(t) = &c.task else { unreachable!() };
        assert_eq!((t.seq_len, t.num_tokens_to_copy), (256, 16));
        let c = problem_config(&base, MadProblem::Memorization, None, &plan).unwrap();
        assert_eq!(c.train.steps, 400);
        let c = problem_config(&base, MadProblem::InContextRecall, None, &plan).unwrap();
        assert_eq!(c.train.steps, 20_000);
    }

    #[test]
    fn the_paper_size_sweeps_mads_difficulty_settings_one_knob_at_a_time() {
        // mad-lab's configs/tasks/*.yml: the baseline plus each listed change.
        let counts: Vec<usize> = MAD_PROBLEMS.iter().map(|&p| sweep(p).len()).collect();
        assert_eq!(
            counts,
            [
                1 + 3 + 3 + 4,
                1 + 3 + 3 + 4,
                1 + 3 + 3 + 4 + 3,
                1 + 3 + 2 + 4 + 3,
                1 + 3 + 3 + 4,
                1 + 5
            ]
        );
        assert_eq!(counts.iter().sum::<usize>(), 66);
        for size in [Size::Smoke, Size::Full] {
            assert!(MAD_PROBLEMS.iter().all(|&p| settings(p, &Plan::of(size)) == [None]));
        }
        let plan = Plan::of(Size::Paper);
        let base = RunConfig::read(&root().join(plan.preset)).unwrap();
        let task = |problem, knob| {
            let c = problem_config(&base, problem, Some(knob), &plan).unwrap();
            let TaskConfig::Mad(t) = c.task.clone() else { unreachable!() };
            (c, t)
        };
        // One knob moves, the rest stay at the baseline: noisy recall's noise keeps its vocab.
        let (_, t) = task(MadProblem::NoisyRecall, Knob::Noise(0.6));
        assert_eq!((t.vocab_size, t.noise_vocab_size, t.frac_noise), (32, 16, 0.6));
        let (_, t) = task(MadProblem::NoisyRecall, Knob::Vocab(144));
        assert_eq!((t.vocab_size, t.frac_noise), (144, 0.2));
        // Fewer training sequences, fewer steps: 200 epochs of ⌈800 / 128⌉ = 7 batches.
        let (c, t) = task(MadProblem::FuzzyRecall, Knob::TrainExamples(800));
        assert_eq!((t.num_train_examples, t.k_motif_size, c.train.steps), (800, 3, 1400));
        // A longer sequence widens the model's positions to it.
        let (c, t) = task(MadProblem::SelectiveCopying, Knob::SeqLen(1024));
        assert_eq!((t.seq_len, t.num_tokens_to_copy), (1024, 16));
        assert!(c.model.max_seq_len >= 1024);
        let (c, t) = task(MadProblem::Memorization, Knob::Vocab(8192));
        assert_eq!((t.vocab_size, t.num_train_examples, c.train.steps), (8192, 256, 400));
        assert_eq!(Knob::TrainExamples(800).label(), "num_train_examples=800");
    }

    #[test]
    fn gla_is_the_only_arm_off_softmaxs_count_and_its_copy_matches_it() {
        // Every arm but GLA is within the tolerance of softmax's count on each problem's
        // baseline, so GLA is the one arm the larger sizes add at equal parameters.
        let plan = Plan::of(Size::Full);
        let base = RunConfig::read(&root().join(plan.preset)).unwrap();
        let named: Vec<(&str, &str)> = plan.arms.iter().map(|&a| (a, a)).collect();
        let config = problem_config(&base, MadProblem::InContextRecall, None, &plan).unwrap();
        let mut comparison = spec(&config, 1, &[], None, &named).unwrap();
        let count = |c: &RunConfig| attnlab_train::parameter_count(c).unwrap() as f64;
        let target = count(&comparison.arms[0].config);
        for arm in &comparison.arms {
            let off = (count(&arm.config) - target).abs() / target;
            assert_eq!(
                off > equal_params::TOLERANCE,
                plan.equal_params.contains(&arm.name.as_str()),
                "{}",
                arm.name
            );
        }
        add_equal_params(&mut comparison, &plan.equal_params).unwrap();
        let copy = comparison.arms.last().unwrap();
        assert_eq!(copy.name, "decay:gla (equal params)");
        assert_eq!(copy.config.model.mixer.to_string(), GLA);
        let (gla, matched) = (count(&comparison.arms[2].config), count(&copy.config));
        assert!(
            (matched - target).abs() < (gla - target).abs() / 2.0,
            "{matched} against {target}, GLA {gla}"
        );
    }
}
