//! The training loops of the recipe, each resumable from its checkpoint in the working
//! directory: stage 1 (attention transfer) and the fine-tunes (stage 2's recovery and the
//! control), which evaluate, keep their best weights and stop early on held-out loss.

use super::measure::on;
use super::options::{LinearizeError, LinearizeOptions};
use super::work_dir::WorkDir;
use crate::config::RunConfig;
use crate::params;
use crate::run_dir::TrainState;
use crate::seed;
use crate::task::{self, Task};
use crate::trainer;
use attnlab_model::{Model, SequenceMixer};
use burn::module::{Lora, Module, ParamGroup};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};

/// Stage 1's record: the summed loss per step and each swapped layer's own.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TransferProgress {
    pub curve: Vec<f64>,
    /// `per_layer[i][step]`: swapped layer i's MSE at that step.
    pub per_layer: Vec<Vec<f64>>,
}

fn state(step: usize) -> TrainState {
    TrainState { step, best_metric: None, best_step: None, tokens_seen: 0, stopped_early: false }
}

/// Stage 1: each swapped mixer of `start` fits the frozen teacher's attention output on the
/// teacher's hidden states, `Σ_l ‖mixer_l(h_l) − softmax_l(h_l)‖²/n`, all layers at once (each
/// target comes from the teacher, computed on the fly per batch). Checkpoint `transfer`.
#[allow(clippy::too_many_arguments)]
pub fn attention_transfer(
    work: &WorkDir,
    start: Model,
    teacher: &Model,
    task: &dyn Task,
    config: &RunConfig,
    swapped: &[usize],
    options: &LinearizeOptions,
    ad: &Device,
) -> Result<(Model, TransferProgress), LinearizeError> {
    let t = &config.train;
    let plain = teacher_device(teacher);
    let steps = options.transfer_steps;
    let projections = || ParamGroup::from_any_predicates(vec!["heads."]);
    let fresh_optim = || trainer::adamw(t).with_weight_decay(0.0).init();
    let (mut student, mut optim, mut progress, first) =
        match work.load::<TransferProgress>("transfer", start.clone(), Some(fresh_optim()))? {
            Some(r) => (r.model, r.optim.expect("loaded with moments"), r.progress, r.state.step),
            None => {
                let empty = vec![Vec::with_capacity(steps); swapped.len()];
                let progress = TransferProgress { curve: Vec::new(), per_layer: empty };
                (start, fresh_optim(), progress, 0)
            }
        };
    if options.transfer_own_only {
        student = student.freeze_group(projections());
    }
    for step in first..steps {
        ad.seed(seed::derive(config.seed, "dropout-transfer", step as u64));
        let batch = task.train_batch(step, 0, t.batch_size, &plain);
        let (_, io) = teacher.forward_with_mixer_io(batch.input.clone());
        let ctx = student.context();
        let mut losses: Vec<Tensor<1>> = Vec::with_capacity(swapped.len());
        for &l in swapped {
            let (h, target) = (&io[l].0, &io[l].1);
            let y = student.blocks[l].mixer.forward(on(h, ad), ctx).output;
            losses.push((y - on(target, ad)).powi_scalar(2).mean());
        }
        let per_layer: Vec<f64> =
            losses.iter().map(|l| l.clone().into_scalar::<f32>() as f64).collect();
        let loss = losses.into_iter().reduce(|a, b| a + b).expect("at least one swapped layer");
        let value: f64 = per_layer.iter().sum();
        if !value.is_finite() {
            let arm = "attention transfer";
            return Err(LinearizeError::NonFinite { arm, what: "loss", value, step });
        }
        progress.curve.push(value);
        for (curve, v) in progress.per_layer.iter_mut().zip(per_layer) {
            curve.push(v);
        }
        let grads = GradientsParams::from_grads(loss.backward(), &student);
        student = optim.step(options.transfer_lr, student, grads);
        let done = step + 1;
        if done % options.eval_every == 0 || done == steps {
            if !options.quiet {
                eprintln!("linearize: attention transfer step {done}/{steps}: MSE {value:.4e}");
            }
            work.save("transfer", &student, Some(&optim), &state(done), &progress)?;
        }
    }
    if options.transfer_own_only {
        student = student.unfreeze_group(projections());
    }
    Ok((student, progress))
}

/// A fine-tune: stage 2 (`distill = Some((α, τ))`) or the control (`None`).
pub struct Arm {
    /// Its checkpoints: `name` (the latest) and `name-best`.
    pub name: &'static str,
    /// Batch index of its first step (the batches after stage 1's for stage 2).
    pub first_batch: usize,
    pub steps: usize,
    pub distill: Option<(f64, f64)>,
    pub lora_rank: usize,
}

/// A fine-tune's record: loss per step and `(step, held-out loss)` per evaluation.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct FinetuneProgress {
    pub curve: Vec<f64>,
    pub evals: Vec<(usize, f64)>,
}

/// What a fine-tune hands back: its best weights (LoRA merged) and its record.
pub struct Finetuned {
    pub model: Model,
    pub progress: FinetuneProgress,
    /// The step it stopped early at, if it did.
    pub stopped_at: Option<usize>,
}

/// Trains `start` for `arm.steps` steps on cross-entropy plus, with `distill = (α, τ)`,
/// `α·τ²·KL(p_teacher^τ ‖ p_student^τ)` averaged over positions; evaluates every
/// `options.eval_every` steps and at the last, keeping the best weights (`name-best`), and stops
/// after `options.patience` evaluations without improvement (0: never).
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    work: &WorkDir,
    arm: &Arm,
    start: Model,
    teacher: &Model,
    task: &dyn Task,
    config: &RunConfig,
    options: &LinearizeOptions,
    eval: &[task::Batch],
    ad: &Device,
) -> Result<Finetuned, LinearizeError> {
    let t = &config.train;
    let lr = options.recover_lr.unwrap_or(t.lr);
    let template = match arm.lora_rank {
        0 => start,
        rank => with_lora(start, rank, config.seed, ad),
    };
    let best_name = format!("{}-best", arm.name);
    let (mut model, mut optim, mut progress, mut st) = match work.load::<FinetuneProgress>(
        arm.name,
        template.clone(),
        Some(trainer::adamw(t).init()),
    )? {
        Some(r) => (r.model, r.optim.expect("loaded with moments"), r.progress, r.state),
        None => (template.clone(), trainer::adamw(t).init(), FinetuneProgress::default(), state(0)),
    };
    let plain = teacher_device(teacher);
    while st.step < arm.steps && !st.stopped_early {
        let (i, step) = (st.step, arm.first_batch + st.step);
        ad.seed(seed::derive(config.seed, &format!("dropout-{}", arm.name), i as u64));
        let batch = task.train_batch(step, 0, t.batch_size, ad);
        let logits = model.forward(batch.input.clone());
        let mut loss = task::score_output(logits.clone(), &batch.target).loss;
        if let Some((alpha, tau)) = arm.distill.filter(|(alpha, _)| *alpha > 0.0) {
            let plain_batch = task.train_batch(step, 0, t.batch_size, &plain);
            let target = on(&teacher.forward(plain_batch.input), ad);
            loss = loss + kl_to_teacher(logits, target, tau) * (alpha * tau * tau) as f32;
        }
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(LinearizeError::NonFinite { arm: arm.name, what: "loss", value, step: i });
        }
        progress.curve.push(value);
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        params::clip_global_norm(&model, &mut grads, t.grad_clip);
        model = optim.step(lr, model, grads);
        st.step += 1;
        if st.step % options.eval_every != 0 && st.step != arm.steps {
            continue;
        }
        let held_out = task::mean_metrics(&model.valid(), eval)["loss"];
        if !held_out.is_finite() {
            let (arm, what, value, step) = (arm.name, "held-out loss", held_out, st.step);
            return Err(LinearizeError::NonFinite { arm, what, value, step });
        }
        progress.evals.push((st.step, held_out));
        let better = st.best_metric.is_none_or(|best| held_out < best);
        if better {
            st.best_metric = Some(held_out);
            st.best_step = Some(st.step);
            // Before the latest checkpoint: a kill between the two redoes this evaluation.
            work.save(&best_name, &model, None, &st, &progress)?;
        }
        let since_best = progress.evals.iter().filter(|(s, _)| Some(*s) > st.best_step).count();
        st.stopped_early = options.patience > 0 && since_best >= options.patience;
        if !options.quiet {
            eprintln!(
                "linearize: {} step {}/{}: held-out loss {held_out:.4}{}{}",
                arm.name,
                st.step,
                arm.steps,
                if better { " (best)" } else { "" },
                if st.stopped_early { ", stopping early" } else { "" }
            );
        }
        work.save(arm.name, &model, Some(&optim), &st, &progress)?;
    }
    let best = match work.load::<FinetuneProgress>(&best_name, template, None)? {
        Some(r) => r.model,
        None => model,
    };
    // LoRA's adapters folded into the weights: an ordinary model again.
    let model = if arm.lora_rank > 0 { best.materialize() } else { best };
    let stopped_at = st.stopped_early.then_some(st.step);
    Ok(Finetuned { model, progress, stopped_at })
}

fn teacher_device(teacher: &Model) -> Device {
    teacher.devices().into_iter().next().expect("a model has a device")
}

/// Rank-`rank` LoRA adapters (`W + (2r/r)·A·B`, `A ~ N(0, 1/r)`, `B = 0`; Burn's
/// `Module::apply_lora`) on every q/k/v and output projection; every other parameter frozen.
pub fn with_lora(model: Model, rank: usize, seed: u64, device: &Device) -> Model {
    let projections = ParamGroup::from_any_predicates(vec!["heads.qkv.weight", "heads.out.weight"]);
    let lora = Lora::new(rank, 2.0 * rank as f64).set_param_group(projections);
    attnlab_model::seeding::with_seed(device, seed ^ 0x4c6f_5241, || model.apply_lora(lora))
}

/// `KL(softmax(z_T/τ) ‖ softmax(z_S/τ))` summed over the vocabulary, averaged over positions.
///
/// # Shapes
/// - `student`, `teacher`: `[batch, seq, vocab]` -> `[1]`
pub fn kl_to_teacher(student: Tensor<3>, teacher: Tensor<3>, tau: f64) -> Tensor<1> {
    let log_s = log_softmax(student / tau, 2);
    let log_t = log_softmax(teacher / tau, 2);
    (log_t.clone().exp() * (log_t - log_s)).sum_dim(2).mean()
}
