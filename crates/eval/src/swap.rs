//! `attnlab swap`: seed 2's "try it small, then swap it into production, with monitoring and a
//! way back", made concrete. A trained run's attention is replaced in some layers (every other
//! weight kept, q/k/v/o projections too where shapes allow), finetuned, and compared with the
//! control: the same run finetuned for the same steps with its attention unchanged. Both arms
//! start from the same checkpoint and see the same data (per seed); the report shows the metric
//! before finetuning (step 0), the recovery curves and a verdict with the alarms to set.

use crate::compare::{Arm, CompareError, Comparison, Results};
use crate::report::{self, ReportError, Section, Table, fmt};
use attnlab_model::{MixerSpec, MixerStack, SpecError, StackLengthError};
use attnlab_train::checkpoint::CheckpointError;
use attnlab_train::run_dir::RunDirError;
use attnlab_train::{ConfigError, RunConfig};
use std::path::{Path, PathBuf};

/// Why a swap cannot be planned or run; one line naming the flag or file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("--layers: layer {layer} does not exist; the run has layers 0..={last}")]
    NoSuchLayer { layer: usize, last: usize },
    #[error(transparent)]
    StackLength(#[from] StackLengthError),
    #[error(
        "{run} is not a run directory (no config.toml): pass the directory `attnlab train` wrote"
    )]
    NotARun { run: PathBuf },
    /// The run's config.toml cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The checkpoint to start from is missing.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("--to: {0}")]
    To(SpecError),
    #[error("--finetune-steps must be at least 1")]
    NoFinetuneSteps,
    #[error("--seeds must be at least 1")]
    NoSeeds,
    /// The run's path cannot be made absolute.
    #[error("{run}: {reason}")]
    Resolve { run: PathBuf, reason: std::io::Error },
    #[error(
        "{run}: the run's path is not valid UTF-8, which config.toml cannot record; move the run to a UTF-8 path"
    )]
    NotUtf8 { run: PathBuf },
    #[error(transparent)]
    Compare(#[from] CompareError),
    /// Every finetuning run failed (`first`: the first run's error).
    #[error("every finetuning run failed: {first}")]
    AllFailed { first: String },
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot write results.json: {0}")]
    Json(serde_json::Error),
}

/// What to swap and how long to finetune.
#[derive(Clone, Debug)]
pub struct SwapSpec {
    pub run: PathBuf,
    pub checkpoint: String,
    pub to: String,
    /// Layers to swap; empty = all.
    pub layers: Vec<usize>,
    pub finetune_steps: usize,
    pub seeds: usize,
    /// Finetuning learning rates (each arm at its best); empty = the run's own train.lr.
    pub lrs: Vec<f64>,
}

/// The per-layer mixers after the swap (one spec when every layer has the same).
pub fn swapped_stack(
    config: &RunConfig,
    to: &MixerSpec,
    layers: &[usize],
) -> Result<MixerStack, SwapError> {
    let n = config.model.n_layers;
    if let Some(&layer) = layers.iter().find(|&&l| l >= n) {
        return Err(SwapError::NoSuchLayer { layer, last: n - 1 });
    }
    let all: Vec<usize> = (0..n).collect();
    let layers = if layers.is_empty() { &all[..] } else { layers };
    Ok(config.model.mixer.replacing(n, layers, to)?)
}

/// Builds the two-arm comparison (control, swapped) that `run` trains: the run's own config,
/// changed to finetune from its checkpoint; the swapped arm also gets the new mixers.
pub fn plan(spec: &SwapSpec) -> Result<(Comparison, RunConfig, MixerStack), SwapError> {
    let config_path = spec.run.join(attnlab_train::run_dir::CONFIG_FILE);
    if !config_path.is_file() {
        return Err(SwapError::NotARun { run: spec.run.clone() });
    }
    let config = RunConfig::load(&config_path, &[])?;
    attnlab_train::runs::checkpoint_dir(
        &attnlab_train::RunDir::open(&spec.run)?,
        &spec.checkpoint,
    )?;
    let to: MixerSpec = spec.to.parse().map_err(SwapError::To)?;
    if spec.finetune_steps == 0 {
        return Err(SwapError::NoFinetuneSteps);
    }
    if spec.seeds == 0 {
        return Err(SwapError::NoSeeds);
    }
    let stack = swapped_stack(&config, &to, &spec.layers)?;
    let run = spec
        .run
        .canonicalize()
        .map_err(|reason| SwapError::Resolve { run: spec.run.clone(), reason })?;
    let run = run.to_str().ok_or_else(|| SwapError::NotUtf8 { run: run.clone() })?;
    let steps = spec.finetune_steps;
    let mut finetune = config.clone();
    let t = &mut finetune.train;
    t.init_run = run.to_string();
    t.init_checkpoint = spec.checkpoint.clone();
    t.steps = steps;
    t.warmup_steps = (steps / 10).max(1);
    t.eval_every = (steps / 5).max(1);
    t.log_every = (steps / 50).max(1);
    t.checkpoint_every = 0;
    t.stop_at = 0.0;
    let mut swapped = finetune.clone();
    swapped.model.mixer = stack.clone();
    let compare = Comparison {
        title: String::new(),
        // The first seed is the run's own, so the control's step-0 eval is the run's own eval.
        seeds: (0..spec.seeds as u64).map(|i| config.seed + i).collect(),
        lrs: spec.lrs.clone(),
        target: None,
        baseline: 0,
        arms: vec![
            Arm { name: "original".into(), config: finetune, grid: None },
            Arm { name: format!("swapped to {}", spec.to), config: swapped, grid: None },
        ],
    };
    Ok((compare, config, stack))
}

/// Trains both arms and writes the report into `out`.
pub fn run(
    spec: &SwapSpec,
    out: &Path,
    exec: &crate::compare::LocalExecutor,
) -> Result<Results, SwapError> {
    let (compare, config, stack) = plan(spec)?;
    let plan = compare.plan()?;
    let title = format!("attnlab swap: {} -> {stack}", config.model.mixer);
    if !exec.quiet {
        println!(
            "{title}: {} finetuning runs of {} steps -> {}",
            plan.len(),
            spec.finetune_steps,
            out.display()
        );
    }
    let records = crate::compare::run_all(&compare, out, exec)?;
    if records.iter().all(|r| r.error.is_some()) {
        return Err(SwapError::AllFailed { first: records[0].error.clone().unwrap_or_default() });
    }
    let results = crate::compare::analyse(&compare, records, &title);

    // The metric each arm starts from (step 0, before any finetuning) and ends at.
    let start_end = |arm: &str| -> (f64, f64) {
        let a = results.arms.iter().find(|a| a.name == arm).expect("both arms ran");
        let at = |first: bool| {
            let v: Vec<f64> = a
                .runs
                .iter()
                .filter_map(|&i| {
                    let c = &results.runs[i].eval_metric;
                    if first { c.first().filter(|p| p.0 == 0) } else { c.last() }.map(|p| p.1)
                })
                .collect();
            crate::stats::mean(&v)
        };
        (at(true), at(false))
    };
    let rows: Vec<Vec<String>> = results
        .arms
        .iter()
        .map(|a| {
            let (s, e) = start_end(&a.name);
            vec![a.name.clone(), fmt(s), fmt(e), fmt(e - s)]
        })
        .collect();
    let header = [
        "arm",
        &format!("{} at step 0", results.metric),
        &format!("{} after finetuning", results.metric),
        "change",
    ]
    .map(String::from)
    .to_vec();
    let swapped = results.arms.iter().find(|a| !a.is_baseline).expect("two arms");
    let decision = match swapped.verdict {
        Some(crate::stats::Verdict::Worse) => {
            "keep the original attention: after finetuning the swapped model is still worse at 95%"
        }
        Some(crate::stats::Verdict::Better) => {
            "swap: after finetuning the swapped model is better at 95%; deploy with the monitoring below"
        }
        Some(crate::stats::Verdict::Indistinguishable) => {
            "swap if it buys something else (speed, decode state): after finetuning the two are indistinguishable at 95%"
        }
        None => "undecided: give --seeds 2 or more for a verdict",
    };
    let mut doc = report::document(&results);
    doc.intro = format!(
        "Run `{}` (checkpoint {}), layers {} swapped to `{}`, finetuned {} steps per seed. Control: the same checkpoint \
         finetuned with its attention unchanged. Every parameter whose name and shape match is kept (see each run's meta.json). {}",
        spec.run.display(),
        spec.checkpoint,
        if spec.layers.is_empty() { "all".to_string() } else { format!("{:?}", spec.layers) },
        spec.to,
        spec.finetune_steps,
        doc.intro
    );
    doc.sections.insert(
        1,
        Section::new("Decision")
            .text(decision)
            .table(Table::new("before_after", header, rows))
            .text("Way back: the original run directory is untouched; its checkpoint stays the rollback target."),
    );
    let json = serde_json::to_string_pretty(&results).map_err(SwapError::Json)?;
    report::write_document(&doc, &json, out)?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapped_stack_replaces_only_the_chosen_layers() {
        let config = RunConfig::from_toml(
            "[task]\nkind = \"mqar\"\n[model]\nn_layers = 3\nmixer = \"softmax\"\n",
            &[],
        )
        .unwrap();
        let to: MixerSpec = "linear:elu1".parse().unwrap();
        assert_eq!(
            swapped_stack(&config, &to, &[1]).unwrap().to_string(),
            "softmax,linear:elu1,softmax"
        );
        assert_eq!(swapped_stack(&config, &to, &[]).unwrap().to_string(), "linear:elu1");
        assert!(swapped_stack(&config, &to, &[3]).unwrap_err().to_string().contains("0..=2"));
    }

    #[test]
    fn a_run_whose_path_holds_a_quote_is_planned_with_that_path() {
        let run = std::env::temp_dir()
            .join(format!("attnlab-swap-\"quoted\" run-{}", std::process::id()));
        std::fs::create_dir_all(run.join("best")).unwrap();
        let canonical = run.canonicalize().unwrap();
        let config =
            RunConfig::from_toml("[task]\nkind = \"mqar\"\n[model]\nn_layers = 2\n", &[]).unwrap();
        std::fs::write(run.join("config.toml"), config.to_toml()).unwrap();
        std::fs::write(
            run.join("best/state.json"),
            r#"{"step":5,"best_metric":null,"best_step":null,"tokens_seen":0}"#,
        )
        .unwrap();
        let spec = SwapSpec {
            run: run.clone(),
            checkpoint: "best".into(),
            to: "linear:elu1".into(),
            layers: vec![1],
            finetune_steps: 20,
            seeds: 2,
            lrs: vec![],
        };
        let (compare, _, stack) = plan(&spec).unwrap();
        let runs = compare.plan().unwrap();
        std::fs::remove_dir_all(&run).unwrap();
        assert_eq!(runs.len(), 4);
        let swapped = &compare.arms[1].config;
        assert_eq!(swapped.train.init_run, canonical.to_str().unwrap());
        assert_eq!(
            (swapped.train.steps, swapped.train.warmup_steps, swapped.train.eval_every),
            (20, 2, 4)
        );
        assert_eq!(
            (swapped.model.mixer.clone(), stack.to_string()),
            (stack.clone(), "softmax,linear:elu1".to_string())
        );
        assert_eq!(compare.arms[0].config.model.mixer, config.model.mixer);
        assert_eq!(runs.iter().map(|r| r.seed).collect::<Vec<_>>(), vec![1337, 1338, 1337, 1338]);
    }
}
