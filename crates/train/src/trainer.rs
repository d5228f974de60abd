//! The training loop: AdamW, linear warmup then cosine decay, global-norm clipping, gradient
//! accumulation, periodic evaluation with attention entropy, checkpoints, a NaN guard, early
//! stopping, and exact resume.
//!
//! Everything random is a pure function of `(seed, step)`: the batch of micro-step `(s, m)` and
//! the dropout stream of step `s`. With the optimizer moments in the checkpoint, a resumed run
//! therefore repeats the losses of an uninterrupted one exactly (same device and build).

use crate::checkpoint::{self, CheckpointError, Loaded};
use crate::config::RunConfig;
use crate::data_parallel::{self, Replicas};
use crate::footprint;
use crate::metrics::{EvalRecord, MetricsRecord, TrainRecord};
use crate::params;
use crate::progress::{Progress, Verbosity};
use crate::run_dir::{self, RunDir, TrainState};
use crate::run_meta::{InitialisedFrom, RunMeta};
use crate::runs::LoadRunError;
use crate::seed;
use crate::task::{self, Batch, Task, TaskError};
use attnlab_model::{BackendError, Model, ModelConfig, ModelConfigError, ModelIo};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Why a run did not start, or stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path} was opened to read: train through RunDir::create or RunDir::open_for_writing")]
    NotWriter { path: PathBuf },
    #[error(transparent)]
    Device(#[from] BackendError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Model(#[from] ModelConfigError),
    /// The run to start from (`train.init_run`) cannot be loaded.
    #[error("train.init_run: {0}")]
    InitRun(Box<LoadRunError>),
    #[error(
        "train.init_run: no parameter of {run} matches this model's names and shapes; check model.d_model and the task"
    )]
    NothingTransferred { run: PathBuf },
    /// The checkpoint to resume from cannot be loaded.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A resume whose config.toml no longer describes the run (`changes`: `key: before -> after`).
    #[error(
        "{run}/config.toml changed what defines this run since it started ({changes}): a resume continues the same model on the same data; \
         restore the key, or start a new run with `attnlab train --config` (the step budget, schedule and logging may change)",
        changes = .changes.join("; ")
    )]
    IdentityChanged { run: PathBuf, changes: Vec<String> },
    #[error(
        "training diverged: the {what} became {value} at step {step}; nothing after the last good checkpoint \
         was written ({last_good}). Lower train.lr, raise train.warmup_steps or set train.grad_clip"
    )]
    NonFinite { step: usize, what: String, value: f64, last_good: String },
    /// A config whose memory floor is above the memory available.
    #[error(
        "{key} = {value}: training needs at least {need} ({params:.2e} parameters at 16 bytes with gradients and AdamW moments, plus {activations} of activations) but {have} is available; lower {key}"
    )]
    TooLarge {
        key: String,
        value: usize,
        need: String,
        params: f64,
        activations: String,
        have: String,
    },
    #[error("cannot write the run directory: {0}")]
    RunDir(run_dir::RunDirError),
    #[error("cannot save the task's files: {0}")]
    Artifacts(TaskError),
}

// Not `#[from]`: that would make the run directory's error this one's cause as well as part of
// its message, and the CLI would print it twice.
impl From<run_dir::RunDirError> for TrainError {
    fn from(e: run_dir::RunDirError) -> Self {
        TrainError::RunDir(e)
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub steps: usize,
    /// Trainable parameters.
    pub params: usize,
    /// The metric the task is judged by (the one in `evals`).
    pub metric: crate::task::MainMetric,
    /// Metrics of the last evaluation.
    pub final_metrics: BTreeMap<String, f64>,
    pub best_metric: Option<f64>,
    pub best_step: Option<usize>,
    /// Training loss per step logged by this call (`(step, loss)`; the CLI charts it). The whole
    /// run's curves are in `metrics.jsonl`.
    pub losses: Vec<(usize, f64)>,
    /// Eval main metric per evaluation `(step, value)`.
    pub evals: Vec<(usize, f64)>,
    pub stopped_early: bool,
}

/// The learning rate after `step` completed steps: linear warmup from `lr/warmup` to `lr`, then
/// cosine decay to `min_lr` at the last step (nanoGPT's schedule).
pub fn learning_rate(t: &crate::config::TrainConfig, step: usize) -> f64 {
    if step < t.warmup_steps {
        return t.lr * (step + 1) as f64 / t.warmup_steps as f64;
    }
    let span = t.steps.saturating_sub(t.warmup_steps).max(1);
    let progress = ((step - t.warmup_steps) as f64 / span as f64).min(1.0);
    t.min_lr + 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * (t.lr - t.min_lr)
}

/// The run's AdamW (nanoGPT's: ε = 1e-8, decoupled weight decay), fused on the CPU backend.
pub fn adamw(t: &crate::config::TrainConfig) -> crate::adamw::AdamWSettings {
    crate::adamw::AdamWSettings {
        beta_1: t.beta1 as f32,
        beta_2: t.beta2 as f32,
        epsilon: 1e-8,
        weight_decay: t.weight_decay as f32,
    }
}

/// Wall time of the phases of one optimizer step, in ms. On an asynchronous (GPU) backend a
/// phase's work may finish inside a later phase; on the CPU backends they are exact.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StepPhases {
    /// Forward pass and loss, read back.
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Summing the replicas' gradients onto the first device (data parallel only).
    pub reduce_ms: f64,
    /// Global gradient norm and clipping.
    pub clip_ms: f64,
    /// AdamW update.
    pub update_ms: f64,
}

/// What one optimizer step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// Mean loss over the micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Input positions processed.
    pub tokens: usize,
    pub phases: StepPhases,
}

/// A step whose loss or gradient norm was not finite; the model was not updated.
#[derive(Clone, Copy, Debug)]
pub struct NonFiniteStep {
    pub what: &'static str,
    pub value: f64,
}

/// One optimizer step of `model` on step `step`'s micro-batches: forward, backward (accumulated
/// over `train.grad_accum` micro-batches), global-norm clipping, AdamW at `lr`. The training loop
/// and `attnlab bench` both call this, so the benchmark times exactly what training does.
///
/// On more than one device ([`Replicas`]) every micro-batch is split between them and their
/// gradients are summed before clipping ([`data_parallel`](crate::data_parallel)).
pub fn optimizer_step(
    model: Model,
    optim: &mut ModuleOptimizer,
    task: &dyn Task,
    step: usize,
    t: &crate::config::TrainConfig,
    lr: f64,
    replicas: &Replicas,
) -> Result<(Model, StepReport), NonFiniteStep> {
    let mut phases = StepPhases::default();
    let ms = |since: Instant| since.elapsed().as_secs_f64() * 1e3;
    let device = replicas.first();
    let (loss, tokens, mut grads) = if replicas.len() > 1 {
        let sum = data_parallel::gradients(replicas, &model, t.grad_accum, |micro| {
            task.train_batch(step, micro, t.batch_size, device)
        });
        phases.forward_ms = sum.forward_ms;
        phases.backward_ms = sum.backward_ms;
        phases.reduce_ms = sum.reduce_ms;
        (sum.loss, sum.tokens, sum.grads)
    } else {
        let mut accumulator = GradientsAccumulator::<Model>::new();
        let (mut loss, mut tokens) = (0.0, 0);
        for micro in 0..t.grad_accum {
            let batch = task.train_batch(step, micro, t.batch_size, device);
            let started = Instant::now();
            let scaled = task::score(&model, &batch).loss / t.grad_accum as f32;
            loss += scaled.clone().into_scalar::<f32>() as f64;
            phases.forward_ms += ms(started);
            let started = Instant::now();
            let grads = GradientsParams::from_grads(scaled.backward(), &model);
            accumulator.accumulate(&model, grads);
            phases.backward_ms += ms(started);
            tokens += batch.tokens;
        }
        (loss, tokens, accumulator.grads())
    };
    if !loss.is_finite() {
        return Err(NonFiniteStep { what: "loss", value: loss });
    }
    let started = Instant::now();
    let grad_norm = params::clip_global_norm(&model, &mut grads, t.grad_clip);
    phases.clip_ms = ms(started);
    if !grad_norm.is_finite() {
        return Err(NonFiniteStep { what: "gradient norm", value: grad_norm });
    }
    let started = Instant::now();
    let model = optim.step(lr, model, grads);
    phases.update_ms = ms(started);
    Ok((model, StepReport { loss, grad_norm, tokens, phases }))
}

/// What one optimizer step averages over, said at the start of every session:
/// `train.batch_size × train.grad_accum` sequences, and each device's share.
fn effective_batch_line(config: &RunConfig, replicas: &Replicas) -> String {
    let (t, devices) = (&config.train, replicas.len());
    let mut line = format!(
        "effective batch {} sequences per step ({} × {} accumulation",
        t.batch_size * t.grad_accum,
        t.batch_size,
        t.grad_accum
    );
    if devices > 1 {
        let how = if replicas.uses_collective() {
            "Burn's all-reduce"
        } else {
            "gradients summed on the first device"
        };
        line += &format!("; {} per device on {} devices, {how}", t.batch_size / devices, devices);
    }
    line + ")"
}

/// Refuses, before anything is allocated, a config whose memory floor
/// ([`footprint`](crate::footprint)) is above what the machine has available.
fn check_fits(config: &RunConfig, task: &dyn Task, device: &Device) -> Result<(), TrainError> {
    let Some(have) = footprint::available_bytes() else { return Ok(()) };
    let (io, batch) = (task.io(), config.train.batch_size);
    let seq_len = task.train_batch(0, 0, 1, device).input.seq_len();
    let need = footprint::of(&config.model, &io, batch, seq_len);
    if need.bytes() <= have {
        return Ok(());
    }
    let (key, value) = footprint::culprit(&config.model, &io, batch, seq_len);
    Err(TrainError::TooLarge {
        key,
        value,
        need: footprint::human(need.bytes()),
        params: need.params,
        activations: footprint::human(need.activation_bytes),
        have: footprint::human(have),
    })
}

/// The number of parameters the model `config` trains, read off a freshly built model on the
/// default CPU device (its task is built for the input and output sizes; nothing is written).
/// What a comparison needs to match arms' sizes before any run starts.
pub fn parameter_count(config: &RunConfig) -> Result<usize, TrainError> {
    parameter_count_of(&config.model, &model_io(config)?, config.seed)
}

/// The input and output sizes of the model `config` trains: its task, built without a run
/// directory. They depend on the task alone, so one serves every model size tried on it.
pub fn model_io(config: &RunConfig) -> Result<ModelIo, TrainError> {
    Ok(task::build(config, None)?.io())
}

/// [`parameter_count`] of `model` for a task's `io` ([`model_io`]), without building the task.
pub fn parameter_count_of(
    model: &ModelConfig,
    io: &ModelIo,
    seed: u64,
) -> Result<usize, TrainError> {
    Ok(params::count(&model.init(io, seed, &Device::default())?))
}

/// Trains a new run in `run` (created, empty) or continues the newest checkpoint in it.
pub fn train(
    config: &RunConfig,
    run: &RunDir,
    resume: bool,
    verbosity: Verbosity,
) -> Result<TrainOutcome, TrainError> {
    if !run.is_writer() {
        return Err(TrainError::NotWriter { path: run.path.clone() });
    }
    let devices = config.device_list();
    let replicas = Replicas::new(&devices)?;
    let ad = replicas.first().clone();
    let device = replicas.first_plain().clone();
    let t = &config.train;
    let init_run = (!t.init_run.is_empty()).then(|| PathBuf::from(&t.init_run));
    // A run started from another reuses its vocabulary or tokenizer, so token ids agree.
    let artifacts = if resume { Some(run.path.as_path()) } else { init_run.as_deref() };
    let task = task::build(config, artifacts)?;
    let io = task.io();
    check_fits(config, task.as_ref(), &device)?;
    let mut fresh = config.model.init(&io, config.seed, &ad)?;
    let latest = if resume {
        run.clean_staging();
        run.latest_checkpoint()
    } else {
        None
    };
    // Resuming a run killed before its first checkpoint starts it again from step 0, in place.
    let restart = resume && latest.is_none();
    let mut transferred = None;
    if let (Some(dir), None) = (&init_run, &latest) {
        let source = crate::runs::load_run(dir, &t.init_checkpoint, Some(config.device))
            .map_err(|e| TrainError::InitRun(Box::new(e)))?;
        let (model, report) =
            crate::transfer::transfer(fresh, &crate::transfer::variant_free_tensors(&source.model));
        if report.copied.is_empty() {
            return Err(TrainError::NothingTransferred { run: dir.clone() });
        }
        fresh = model;
        transferred = Some((source.checkpoint, report));
    }
    let fresh_optim = adamw(t).init();
    // Loading a checkpoint does not change the model's shapes, so the fresh model's count holds.
    let param_count = params::count(&fresh);
    let metric = task.main_metric();

    let (mut model, mut optim, mut state) = if let Some((saved, dir)) = latest {
        check_identity(run, config)?;
        checkpoint::check_state(run, &dir, &saved, t.steps)?;
        let Loaded { model, optim } = checkpoint::load(&dir, fresh, Some(fresh_optim))?;
        // A finished run is read, not rewritten: only a run that trains on drops what was
        // logged after its checkpoint (and rewrites the event file to match).
        let finished = saved.step >= t.steps || (saved.stopped_early && t.stop_at != 0.0);
        if !finished {
            run.truncate_metrics_after(saved.step)?;
        }
        (model, optim.expect("asked for the optimizer"), saved)
    } else {
        if restart {
            // Said even when quiet: the user asked to resume and gets a restart.
            println!(
                "{} has no checkpoint yet (it was stopped before its first): training it again from step 0",
                run.path.display()
            );
            // Whatever the stopped start logged is replaced by what this one logs.
            run.clear_metrics()?;
        }
        run.write_file(run_dir::CONFIG_FILE, &config.to_toml())?;
        let mut meta = RunMeta::at_start(config, param_count, metric);
        meta.initialised_from = transferred.as_ref().map(|(from, report)| InitialisedFrom {
            checkpoint: from.clone(),
            copied: report.copied.clone(),
            fresh: report.fresh.clone(),
        });
        meta.write(run)?;
        task.save_artifacts(&run.path).map_err(TrainError::Artifacts)?;
        (
            fresh,
            fresh_optim,
            TrainState {
                step: 0,
                best_metric: None,
                best_step: None,
                tokens_seen: 0,
                stopped_early: false,
            },
        )
    };

    let eval_batches = task.eval_batches(t.eval_batches, t.batch_size, &device);
    let progress = Progress::new(verbosity, state.step, t.steps);
    progress.line(&format!(
        "{} | {} | {} parameters | {} steps from step {} on {}",
        config.task.name(),
        config.model.mixer,
        param_count,
        t.steps - state.step.min(t.steps),
        state.step,
        devices
    ));
    progress.line(&effective_batch_line(config, &replicas));

    let mut outcome = TrainOutcome {
        run_dir: run.path.clone(),
        steps: state.step,
        params: param_count,
        metric,
        final_metrics: BTreeMap::new(),
        best_metric: state.best_metric,
        best_step: state.best_step,
        losses: Vec::new(),
        evals: Vec::new(),
        stopped_early: false,
    };
    let last_good = |run: &RunDir| {
        run.latest_checkpoint()
            .map(|(s, p)| format!("step {} in {}", s.step, p.display()))
            .unwrap_or_else(|| "none was written yet".into())
    };
    if let Some((from, report)) = &transferred {
        progress.line(&format!(
            "initialised from {}: {} tensors copied, {} fresh{}",
            from.display(),
            report.copied.len(),
            report.fresh.len(),
            if report.fresh.is_empty() {
                String::new()
            } else {
                format!(" ({})", report.fresh.join(", "))
            }
        ));
        if state.step == 0 {
            // Where a started-from-weights run begins: the step-0 point of its eval curve.
            let (metrics, layers) = measure(task.as_ref(), &model.valid(), &eval_batches);
            log_eval(run, 0, &metrics, layers)?;
            if let Some(v) = metrics.get(metric.name) {
                progress.line(&format!("step 0 (before training): {} {v:.4}", metric.name));
            }
        }
    }
    let mut window = (Instant::now(), 0u64);
    // A run killed after its last step checkpoint but before `final/` resumes here finished:
    // it is finished as the uninterrupted run would have been, not trained further.
    // An early stop counts while `train.stop_at` is still set (clearing it trains on).
    state.stopped_early &= t.stop_at != 0.0;
    let finished_before = state.step >= t.steps || state.stopped_early;

    while !state.stopped_early && state.step < t.steps {
        let step = state.step;
        replicas.seed(seed::derive(config.seed, "dropout", step as u64));
        let lr = learning_rate(t, step);
        let report = match optimizer_step(model, &mut optim, task.as_ref(), step, t, lr, &replicas)
        {
            Ok((next, report)) => {
                model = next;
                report
            }
            Err(NonFiniteStep { what, value }) => {
                // The weights this step started from gave the non-finite value: a checkpoint of
                // them is not a good one, whatever its own step's loss was.
                run.set_aside(step)?;
                return Err(TrainError::NonFinite {
                    step: step + 1,
                    what: what.to_string(),
                    value,
                    last_good: last_good(run),
                });
            }
        };
        let (loss_sum, grad_norm) = (report.loss, report.grad_norm);
        state.tokens_seen += report.tokens as u64;
        window.1 += report.tokens as u64;
        state.step += 1;
        let step = state.step;

        if step % t.log_every == 0 || step == t.steps {
            let seconds = window.0.elapsed().as_secs_f64().max(1e-9);
            let tokens_per_s = window.1 as f64 / seconds;
            window = (Instant::now(), 0);
            run.append_metrics(
                &TrainRecord { step, loss: loss_sum, lr, grad_norm, tokens_per_s }.into(),
            )?;
            outcome.losses.push((step, loss_sum));
            progress.train(step, loss_sum, lr, grad_norm, tokens_per_s);
        } else {
            progress.tick(step, loss_sum);
        }

        let last = step == t.steps;
        let eval_now = last || (t.eval_every > 0 && step % t.eval_every == 0);
        let checkpoint_due = t.checkpoint_every > 0 && step % t.checkpoint_every == 0;
        // Nothing non-finite is evaluated as a result or saved as a checkpoint (an early stop
        // happens only at an evaluation, the last step is one).
        if (eval_now || checkpoint_due)
            && let Some((name, value)) = params::first_non_finite(&model)
        {
            return Err(TrainError::NonFinite {
                step,
                what: format!("parameter {name}"),
                value: value as f64,
                last_good: last_good(run),
            });
        }
        let mut stop = false;
        if eval_now {
            let (metrics, layers) = measure(task.as_ref(), &model.valid(), &eval_batches);
            let value = metrics.get(metric.name).copied().unwrap_or(f64::NAN);
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    step,
                    what: "eval metric".into(),
                    value,
                    last_good: last_good(run),
                });
            }
            log_eval(run, step, &metrics, layers)?;
            progress.eval(step, metric.name, value, &metrics);
            outcome.evals.push((step, value));
            if state.best_metric.is_none_or(|b| metric.better(value, b)) {
                state.best_metric = Some(value);
                state.best_step = Some(step);
                checkpoint::save(run, "best", &model, None, &state)?;
            }
            stop = t.stop_at != 0.0 && metric.reached(value, t.stop_at);
            state.stopped_early = stop && !last;
            if stop {
                progress.line(&format!(
                    "{} reached train.stop_at = {} at step {step}: stopping early",
                    metric.name, t.stop_at
                ));
                outcome.stopped_early = true;
            }
            outcome.final_metrics = metrics;
        }
        if last || stop || checkpoint_due {
            checkpoint::save(
                run,
                &RunDir::step_checkpoint_name(step),
                &model,
                Some(&optim),
                &state,
            )?;
            run.prune(t.keep_checkpoints)?;
        }
        if last || stop {
            checkpoint::save(run, "final", &model, Some(&optim), &state)?;
            break;
        }
    }
    if finished_before {
        finish_resumed(run, task.as_ref(), &model, &optim, &state, &eval_batches, &mut outcome)?;
    }
    progress.finish();
    outcome.steps = state.step;
    outcome.best_metric = state.best_metric;
    outcome.best_step = state.best_step;
    Ok(outcome)
}

/// Appends an evaluation's line to `metrics.jsonl`.
fn log_eval(
    run: &RunDir,
    step: usize,
    metrics: &BTreeMap<String, f64>,
    layers: LayerStats,
) -> Result<(), run_dir::RunDirError> {
    run.append_metrics(
        &EvalRecord {
            step,
            eval: metrics.clone(),
            attention_entropy: layers.entropy,
            sink_mass: layers.sink_mass,
        }
        .into(),
    )
}

/// Finishes a run resumed from the checkpoint of its last step: the final evaluation (logged
/// only if the kill came before it was), then `final/` if it is missing or older. The
/// evaluation is deterministic, so its numbers are the ones the uninterrupted run printed.
fn finish_resumed(
    run: &RunDir,
    task: &dyn Task,
    model: &Model,
    optim: &burn::optim::ModuleOptimizer,
    state: &TrainState,
    eval_batches: &[Batch],
    outcome: &mut TrainOutcome,
) -> Result<(), TrainError> {
    let (metrics, layers) = measure(task, &model.valid(), eval_batches);
    let logged = crate::metrics::read_metrics(&run.path)?
        .iter()
        .any(|r| matches!(r, MetricsRecord::Eval(e) if e.step == state.step));
    if !logged {
        log_eval(run, state.step, &metrics, layers)?;
    }
    if let Some(&value) = metrics.get(outcome.metric.name) {
        outcome.evals.push((state.step, value));
    }
    outcome.final_metrics = metrics;
    outcome.stopped_early = state.stopped_early;
    if run_dir::read_state(&run.file("final")).map_or(true, |f| f.step < state.step) {
        checkpoint::save(run, "final", model, Some(optim), state)?;
    }
    Ok(())
}

/// Per-layer attention statistics, each averaged over heads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerStats {
    /// Attention entropy normalised by `ln n` (1 = uniform, 0 = one-hot).
    pub entropy: Vec<f64>,
    /// Mean weight on position 0.
    pub sink_mass: Vec<f64>,
}

/// [`LayerStats`] on the first eval batch.
pub fn layer_stats(model: &Model, batches: &[Batch]) -> LayerStats {
    let Some(batch) = batches.first() else { return LayerStats::default() };
    let (_, diags) = model.forward_with_diagnostics(batch.input.clone());
    let mean = |t: burn::tensor::Tensor<1>| t.mean().into_scalar::<f32>() as f64;
    let (entropy, sink_mass) =
        diags.into_iter().map(|d| (mean(d.normalized_entropy), mean(d.sink_mass))).unzip();
    LayerStats { entropy, sink_mass }
}

/// Refuses to resume a run whose config.toml no longer describes the model and data it
/// started with (a run from before `identity` was recorded is not checked).
fn check_identity(run: &RunDir, config: &RunConfig) -> Result<(), TrainError> {
    let Some(started) = RunMeta::read(&run.path).ok().and_then(|meta| meta.identity) else {
        return Ok(());
    };
    let changes = RunConfig::identity_changes(&started, &config.identity());
    if changes.is_empty() {
        return Ok(());
    }
    Err(TrainError::IdentityChanged { run: run.path.clone(), changes })
}

/// Evaluates a model on a task's evaluation set with the config's batch settings.
pub fn evaluate(
    config: &RunConfig,
    task: &dyn Task,
    model: &Model,
    device: &Device,
) -> (BTreeMap<String, f64>, LayerStats) {
    let batches = task.eval_batches(config.train.eval_batches, config.train.batch_size, device);
    measure(task, model, &batches)
}

/// The task's metrics and each layer's attention statistics on `batches`.
fn measure(
    task: &dyn Task,
    model: &Model,
    batches: &[Batch],
) -> (BTreeMap<String, f64>, LayerStats) {
    (task.evaluate(model, batches), layer_stats(model, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;

    #[test]
    fn schedule_warms_up_then_decays_to_min_lr() {
        let t = TrainConfig {
            steps: 110,
            warmup_steps: 10,
            lr: 1e-3,
            min_lr: 1e-4,
            ..TrainConfig::default()
        };
        assert!((learning_rate(&t, 0) - 1e-4).abs() < 1e-12);
        assert!((learning_rate(&t, 9) - 1e-3).abs() < 1e-12);
        assert!((learning_rate(&t, 10) - 1e-3).abs() < 1e-12);
        assert!((learning_rate(&t, 60) - 5.5e-4).abs() < 1e-12);
        assert!((learning_rate(&t, 110) - 1e-4).abs() < 1e-12);
        assert!((learning_rate(&t, 500) - 1e-4).abs() < 1e-12);
    }
}
