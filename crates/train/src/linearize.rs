//! Linearising a trained softmax model: the two-stage recipe of LoLCATs (Zhang et al. 2024,
//! "LoLCATs: On Low-Rank Linearizing of Large Language Models", arXiv 2410.10254), judged
//! against the control a team would otherwise run.
//!
//! - **Student**: the teacher with the chosen layers' mixers replaced by `to`, every weight whose
//!   name and shape match carried over (q/k/v/o included).
//! - **Stage 1, attention transfer**: the teacher frozen (no autodiff); each swapped layer's
//!   mixer (all its parameters) trained to minimise `Σ_l ‖mixer_l(h_l) − softmax_l(h_l)‖²/n`
//!   where `h_l` is the teacher's normalised hidden state entering layer l, computed on the fly
//!   for each batch. Layers train at once: each target comes from the frozen teacher.
//! - **`keep:K`**: the K swapped layers whose transfer error stays highest go back to the
//!   teacher's attention.
//! - **Stage 2, recovery**: the whole student on `CE + α·τ²·KL(p_teacher^τ ‖ p_student^τ)`, the
//!   teacher's logits computed on the fly.
//! - **Control**: the same student, swapped and finetuned with cross-entropy only for the same
//!   number of steps (stage 1 + stage 2) on the same data.
//!
//! Every loss is on batches `task.train_batch(step, ..)`, a pure function of (seed, step), so
//! the arms see the same data; evaluation is the task's held-out batches.

use crate::config::RunConfig;
use crate::params;
use crate::run_dir::{CONFIG_FILE, RunDir};
use crate::runs::{LoadRunError, load_run};
use crate::task::{self, Task};
use crate::trainer;
use crate::transfer::{transfer, variant_free_tensors};
use attnlab_model::{MixerSpec, MixerStack, Model, ModelConfigError, SequenceMixer};
use burn::module::{Lora, Module, ParamGroup};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};
use std::path::{Path, PathBuf};

/// Which layers to swap.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerChoice {
    All,
    These(Vec<usize>),
    /// Swap all, then keep the teacher's attention in the K layers stage 1 fits worst.
    KeepWorst(usize),
}

impl std::str::FromStr for LayerChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("--layers {s}: expected all, comma-separated indices (1,3,5) or keep:K");
        if s == "all" {
            return Ok(Self::All);
        }
        if let Some(k) = s.strip_prefix("keep:") {
            return k.parse().map(Self::KeepWorst).map_err(|_| bad());
        }
        s.split(',')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map(Self::These)
            .map_err(|_| bad())
    }
}

/// What `attnlab linearize` is asked to do.
#[derive(Clone, Debug)]
pub struct LinearizeOptions {
    pub run: PathBuf,
    pub checkpoint: String,
    pub to: MixerSpec,
    pub layers: LayerChoice,
    pub transfer_steps: usize,
    pub recover_steps: usize,
    /// Stage 1's learning rate (constant, AdamW).
    pub transfer_lr: f64,
    /// Stage 1 trains only the new mixers' own parameters (feature maps, gates, β, convolutions,
    /// scales), the carried-over q/k/v/o projections frozen (LoLCATs' stage 1); `false`: every
    /// parameter of the swapped mixers.
    pub transfer_own_only: bool,
    /// Stage 2's and the control's (constant, AdamW); `None` = the teacher run's `train.lr`.
    pub recover_lr: Option<f64>,
    /// Weight of the distillation term.
    pub alpha: f64,
    /// Distillation temperature.
    pub tau: f64,
    /// Stage 2 trains LoRA adapters of this rank on every layer's q/k/v and output projections
    /// (Burn's `Module::apply_lora`, scale 2, merged into the weights afterwards) instead of the
    /// whole student; 0 = the whole student.
    pub lora_rank: usize,
    /// Where the student run directory goes (created; must not exist or be empty).
    pub student_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LinearizeError {
    #[error(transparent)]
    Load(#[from] LoadRunError),
    #[error("--layers: layer {layer} does not exist; the run has layers 0..={last}")]
    NoSuchLayer { layer: usize, last: usize },
    #[error("--layers keep:{keep}: keeping {keep} of {swapped} layers leaves none to linearise")]
    KeepsAll { keep: usize, swapped: usize },
    #[error("--transfer-steps and --recover-steps must be at least 1")]
    NoSteps,
    #[error("--alpha must be ≥ 0 and --tau > 0 (finite)")]
    BadDistillation,
    #[error(
        "--transfer-params new: {spec} has no parameters of its own besides q/k/v/o; use --transfer-params all"
    )]
    NothingOwnToTransfer { spec: String },
    #[error(transparent)]
    Model(#[from] ModelConfigError),
    #[error(transparent)]
    Device(#[from] attnlab_model::BackendError),
    #[error(transparent)]
    Stack(#[from] attnlab_model::StackLengthError),
    #[error("{arm}: the {what} became {value} at step {step}; lower the learning rate")]
    NonFinite { arm: &'static str, what: &'static str, value: f64, step: usize },
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    #[error(transparent)]
    RunDir(#[from] crate::run_dir::RunDirError),
    #[error(transparent)]
    Task(#[from] task::TaskError),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: std::io::Error },
}

/// One swapped layer's transfer error: the mean squared difference between its mixer's output
/// and the teacher's attention output on the teacher's hidden states, over the evaluation set.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerError {
    pub layer: usize,
    /// With the carried-over weights, before stage 1.
    pub before: f64,
    /// After stage 1.
    pub after: f64,
    /// Kept as the teacher's attention (`keep:K`).
    pub kept: bool,
}

/// Held-out loss of every model the recipe makes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LinearizeResult {
    pub teacher_spec: String,
    pub student_spec: String,
    pub swapped: Vec<usize>,
    pub kept: Vec<usize>,
    pub layers: Vec<LayerError>,
    pub teacher_loss: f64,
    /// The swapped student before any training.
    pub swapped_loss: f64,
    /// After stage 1 only.
    pub transferred_loss: f64,
    /// After stage 2.
    pub student_loss: f64,
    /// Swap + cross-entropy for the same steps.
    pub control_loss: f64,
    /// Stage 1's summed transfer loss per step, and stage 2's and the control's loss per step.
    pub transfer_curve: Vec<f64>,
    pub recover_curve: Vec<f64>,
    pub control_curve: Vec<f64>,
    pub transfer_steps: usize,
    pub recover_steps: usize,
    pub alpha: f64,
    pub tau: f64,
    /// LoRA rank of stage 2 (0: the whole student trained).
    pub lora_rank: usize,
    pub student_dir: PathBuf,
    /// Decoding state one sequence holds (KV caches, recurrent states), in bytes of f32, at
    /// 4096 and 32768 tokens: `(teacher, student)` each.
    pub state_bytes_4k: (usize, usize),
    pub state_bytes_32k: (usize, usize),
    /// Held-out loss by position (`loss@ℓ`: positions up to ℓ since the previous bucket), for
    /// language-model tasks: `(teacher, student, control)`; empty for other tasks.
    pub loss_by_position: Vec<(String, f64, f64, f64)>,
    /// Greedy decoding speed, tokens/s, one sequence, after a one-token prompt (up to the
    /// context length): `(teacher, student)`.
    pub decode_tokens_per_s: (f64, f64),
}

/// Runs the recipe (see the module docs) and writes the student as a run directory.
pub fn linearize(options: &LinearizeOptions) -> Result<LinearizeResult, LinearizeError> {
    if options.transfer_steps == 0 || options.recover_steps == 0 {
        return Err(LinearizeError::NoSteps);
    }
    if !(options.alpha >= 0.0
        && options.tau > 0.0
        && options.alpha.is_finite()
        && options.tau.is_finite())
    {
        return Err(LinearizeError::BadDistillation);
    }
    let teacher_run = load_run(&options.run, &options.checkpoint, None)?;
    let config = teacher_run.config.clone();
    let n = config.model.n_layers;
    let mut swapped: Vec<usize> = match &options.layers {
        LayerChoice::These(l) => l.clone(),
        LayerChoice::All | LayerChoice::KeepWorst(_) => (0..n).collect(),
    };
    swapped.sort_unstable();
    swapped.dedup();
    if let Some(&layer) = swapped.iter().find(|&&l| l >= n) {
        return Err(LinearizeError::NoSuchLayer { layer, last: n - 1 });
    }
    if let LayerChoice::KeepWorst(k) = options.layers
        && k >= swapped.len()
    {
        return Err(LinearizeError::KeepsAll { keep: k, swapped: swapped.len() });
    }
    let (teacher, task, plain) =
        (&teacher_run.model, teacher_run.task.as_ref(), &teacher_run.device);
    let ad = plain.clone().autodiff();
    let t = &config.train;
    let eval = task.eval_batches(t.eval_batches, t.batch_size, plain);
    let eval_loss = |m: &Model| task::mean_metrics(m, &eval)["loss"];
    let teacher_tensors = variant_free_tensors(teacher);

    // The student, every matching weight carried over.
    let student_config = with_stack(&config, stack(&config, &options.to, &swapped)?);
    let fresh = student_config.model.init(&task.io(), config.seed, &ad)?;
    let (start, carried) = transfer(fresh, &teacher_tensors);
    let swapped_loss = eval_loss(&start.valid());
    let before = transfer_errors(&start.valid(), teacher, &eval, &swapped);

    // Stage 1: each swapped mixer fits the teacher's attention output on the teacher's states.
    let projections = || ParamGroup::from_any_predicates(vec!["heads."]);
    let mut student = if options.transfer_own_only {
        let own = crate::transfer::variant_free_shapes(&start.blocks[swapped[0]].mixer);
        if own.keys().all(|name| name.starts_with("heads.")) {
            return Err(LinearizeError::NothingOwnToTransfer { spec: options.to.to_string() });
        }
        start.clone().freeze_group(projections())
    } else {
        start.clone()
    };
    let mut optim = trainer::adamw(t).with_weight_decay(0.0).init();
    let mut transfer_curve = Vec::with_capacity(options.transfer_steps);
    for step in 0..options.transfer_steps {
        let batch = task.train_batch(step, 0, t.batch_size, plain);
        let (_, io) = teacher.forward_with_mixer_io(batch.input.clone());
        let ctx = student.context();
        let mut loss: Option<Tensor<1>> = None;
        for &l in &swapped {
            let (h, target) = (&io[l].0, &io[l].1);
            let y = student.blocks[l].mixer.forward(on(h, &ad), ctx).output;
            let mse = (y - on(target, &ad)).powi_scalar(2).mean();
            loss = Some(match loss {
                Some(total) => total + mse,
                None => mse,
            });
        }
        let loss = loss.expect("at least one swapped layer");
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(LinearizeError::NonFinite {
                arm: "attention transfer",
                what: "loss",
                value,
                step,
            });
        }
        transfer_curve.push(value);
        let grads = GradientsParams::from_grads(loss.backward(), &student);
        student = optim.step(options.transfer_lr, student, grads);
    }
    if options.transfer_own_only {
        student = student.unfreeze_group(projections());
    }
    let after = transfer_errors(&student.valid(), teacher, &eval, &swapped);

    // keep:K: the worst-fitted layers go back to the teacher's attention.
    let kept: Vec<usize> = match options.layers {
        LayerChoice::KeepWorst(k) => {
            let mut order: Vec<usize> = (0..swapped.len()).collect();
            order.sort_by(|&a, &b| after[b].total_cmp(&after[a]));
            let mut kept: Vec<usize> = order[..k].iter().map(|&i| swapped[i]).collect();
            kept.sort_unstable();
            kept
        }
        _ => Vec::new(),
    };
    let layers: Vec<LayerError> = swapped
        .iter()
        .enumerate()
        .map(|(i, &layer)| LayerError {
            layer,
            before: before[i],
            after: after[i],
            kept: kept.contains(&layer),
        })
        .collect();
    let final_swapped: Vec<usize> = swapped.iter().copied().filter(|l| !kept.contains(l)).collect();
    let student_config = with_stack(&config, stack(&config, &options.to, &final_swapped)?);
    if !kept.is_empty() {
        // Teacher weights everywhere, the transferred mixers where the layer stays swapped.
        let mut source = teacher_tensors.clone();
        for (name, data) in variant_free_tensors(&student) {
            if final_swapped.iter().any(|l| name.starts_with(&format!("blocks.{l}.mixer."))) {
                source.insert(name, data);
            }
        }
        let fresh = student_config.model.init(&task.io(), config.seed, &ad)?;
        student = transfer(fresh, &source).0;
    }
    let transferred_loss = eval_loss(&student.valid());

    // Stage 2 and the control.
    let lr = options.recover_lr.unwrap_or(t.lr);
    let (alpha, tau) = (options.alpha, options.tau);
    let student = match options.lora_rank {
        0 => student,
        rank => with_lora(student, rank, config.seed, &ad),
    };
    let (student, recover_curve) = finetune(
        student,
        teacher,
        task,
        &config,
        (options.transfer_steps, options.recover_steps),
        lr,
        Some((alpha, tau)),
        "recovery",
        &ad,
    )?;
    // LoRA's adapters folded into the weights: the student is an ordinary model again.
    let student = if options.lora_rank > 0 { student.materialize() } else { student };
    let control_start = {
        let fresh = student_config.model.init(&task.io(), config.seed, &ad)?;
        transfer(fresh, &teacher_tensors).0
    };
    let (control, control_curve) = finetune(
        control_start,
        teacher,
        task,
        &config,
        (0, options.transfer_steps + options.recover_steps),
        lr,
        None,
        "control",
        &ad,
    )?;
    let student_loss = eval_loss(&student.valid());
    let control_loss = eval_loss(&control.valid());
    let student_plain = student.valid();
    let loss_by_position =
        position_buckets(&config, &eval, [teacher, &student_plain, &control.valid()]);
    let bytes = |c: &RunConfig, len: usize| 4 * c.model.decode_state_floats(len);
    let decode_tokens_per_s = (
        decode_speed(teacher, &config, plain),
        decode_speed(&student_plain, &student_config, plain),
    );
    let origin = crate::run_meta::InitialisedFrom {
        checkpoint: teacher_run.checkpoint.clone(),
        copied: carried.copied,
        fresh: carried.fresh,
    };
    save_student(
        &options.student_dir,
        &options.run,
        &student_config,
        &student_plain,
        task,
        origin,
    )?;
    Ok(LinearizeResult {
        teacher_spec: config.model.mixer.to_string(),
        student_spec: student_config.model.mixer.to_string(),
        swapped: final_swapped,
        kept,
        layers,
        teacher_loss: eval_loss(teacher),
        swapped_loss,
        transferred_loss,
        student_loss,
        control_loss,
        transfer_curve,
        recover_curve,
        control_curve,
        transfer_steps: options.transfer_steps,
        recover_steps: options.recover_steps,
        alpha,
        tau,
        lora_rank: options.lora_rank,
        student_dir: options.student_dir.clone(),
        loss_by_position,
        state_bytes_4k: (bytes(&config, 4096), bytes(&student_config, 4096)),
        state_bytes_32k: (bytes(&config, 32768), bytes(&student_config, 32768)),
        decode_tokens_per_s,
    })
}

/// Loss in position buckets `[L/4, L/2, L]` of the evaluation windows (length L) for each of
/// `models`, for language-model tasks (the first positions see little context, the last the
/// whole window: where a linear student loses to its teacher, if anywhere).
fn position_buckets(
    config: &RunConfig,
    eval: &[task::Batch],
    models: [&Model; 3],
) -> Vec<(String, f64, f64, f64)> {
    use crate::config::TaskConfig;
    if !matches!(config.task, TaskConfig::CharLm(_) | TaskConfig::BpeLm(_)) {
        return Vec::new();
    }
    let Some(len) = eval.first().map(|b| b.input.seq_len()) else { return Vec::new() };
    let mut lengths: Vec<usize> = [len / 4, len / 2, len].into_iter().filter(|&l| l > 0).collect();
    lengths.dedup();
    let [a, b, c] = models.map(|m| task::loss_per_position_bucket(m, eval, &lengths));
    // In position order (the maps sort `loss@16` before `loss@8`).
    lengths
        .iter()
        .map(|l| {
            let key = format!("loss@{l}");
            (key.clone(), a[&key], b[&key], c[&key])
        })
        .collect()
}

/// Tokens per second of one-token decoding steps through the model's state, one sequence,
/// token 0 fed back (the speed does not depend on the tokens), over the context length (at most
/// 256 steps), after one untimed step.
fn decode_speed(model: &Model, config: &RunConfig, device: &Device) -> f64 {
    use attnlab_model::LmInput;
    use burn::tensor::{Int, TensorData};
    let steps = config.model.max_seq_len.clamp(2, 256) - 1;
    let token = || {
        LmInput::Tokens(Tensor::<2, Int>::from_data(TensorData::new(vec![0i64], [1, 1]), device))
    };
    let mut state = model.empty_state();
    let _: f32 = model.step(token(), &mut state).sum().into_scalar();
    let start = std::time::Instant::now();
    for _ in 0..steps {
        let _: f32 = model.step(token(), &mut state).sum().into_scalar();
    }
    steps as f64 / start.elapsed().as_secs_f64()
}

/// Rank-`rank` LoRA adapters (`W + (2r/r)·A·B`, `A ~ N(0, 1/r)`, `B = 0`; Burn's
/// `Module::apply_lora`) on every q/k/v and output projection; every other parameter frozen.
pub fn with_lora(model: Model, rank: usize, seed: u64, device: &Device) -> Model {
    let projections = ParamGroup::from_any_predicates(vec!["heads.qkv.weight", "heads.out.weight"]);
    let lora = Lora::new(rank, 2.0 * rank as f64).set_param_group(projections);
    attnlab_model::seeding::with_seed(device, seed ^ 0x4c6f_5241, || model.apply_lora(lora))
}

/// The teacher's stack with `layers` replaced by `to`.
fn stack(
    config: &RunConfig,
    to: &MixerSpec,
    layers: &[usize],
) -> Result<MixerStack, LinearizeError> {
    Ok(config.model.mixer.replacing(config.model.n_layers, layers, to)?)
}

fn with_stack(config: &RunConfig, stack: MixerStack) -> RunConfig {
    let mut c = config.clone();
    c.model.mixer = stack;
    c
}

/// A tensor of another device's graph as a constant on `device`.
fn on(x: &Tensor<3>, device: &Device) -> Tensor<3> {
    Tensor::from_data(x.to_data(), device)
}

/// Each layer's mean transfer error over `batches` (see [`LayerError`]).
fn transfer_errors(
    student: &Model,
    teacher: &Model,
    batches: &[task::Batch],
    layers: &[usize],
) -> Vec<f64> {
    let mut sums = vec![0.0; layers.len()];
    for batch in batches {
        let (_, io) = teacher.forward_with_mixer_io(batch.input.clone());
        let ctx = student.context();
        for (i, &l) in layers.iter().enumerate() {
            let y = student.blocks[l].mixer.forward(io[l].0.clone(), ctx).output;
            sums[i] += (y - io[l].1.clone()).powi_scalar(2).mean().into_scalar::<f32>() as f64;
        }
    }
    sums.iter().map(|s| s / batches.len().max(1) as f64).collect()
}

/// `steps.1` optimizer steps on batches `steps.0..`, on cross-entropy plus, with `distill =
/// (α, τ)`, `α·τ²·KL(p_teacher^τ ‖ p_student^τ)` averaged over positions.
#[allow(clippy::too_many_arguments)]
fn finetune(
    mut model: Model,
    teacher: &Model,
    task: &dyn Task,
    config: &RunConfig,
    steps: (usize, usize),
    lr: f64,
    distill: Option<(f64, f64)>,
    arm: &'static str,
    ad: &Device,
) -> Result<(Model, Vec<f64>), LinearizeError> {
    let t = &config.train;
    let mut optim = trainer::adamw(t).init();
    let mut curve = Vec::with_capacity(steps.1);
    for i in 0..steps.1 {
        let step = steps.0 + i;
        let batch = task.train_batch(step, 0, t.batch_size, ad);
        let logits = model.forward(batch.input.clone());
        let mut loss = task::score_output(logits.clone(), &batch.target).loss;
        if let Some((alpha, tau)) = distill {
            let plain_batch = task.train_batch(step, 0, t.batch_size, &teacher_device(teacher));
            let target = on(&teacher.forward(plain_batch.input), ad);
            loss = loss + kl_to_teacher(logits, target, tau) * (alpha * tau * tau) as f32;
        }
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(LinearizeError::NonFinite { arm, what: "loss", value, step });
        }
        curve.push(value);
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        params::clip_global_norm(&model, &mut grads, t.grad_clip);
        model = optim.step(lr, model, grads);
    }
    Ok((model, curve))
}

fn teacher_device(teacher: &Model) -> Device {
    teacher.devices().into_iter().next().expect("a model has a device")
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

/// The student as a run directory beside the teacher's: its config, the teacher's codec files,
/// and the weights as checkpoints `final` and `best` (hard links to `final`).
fn save_student(
    dir: &Path,
    teacher_run: &Path,
    config: &RunConfig,
    model: &Model,
    task: &dyn Task,
    origin: crate::run_meta::InitialisedFrom,
) -> Result<(), LinearizeError> {
    let run = RunDir::create(dir)?;
    for codec in ["vocab.json", "tokenizer.json"] {
        let from = teacher_run.join(codec);
        if from.is_file() {
            let to = run.file(codec);
            std::fs::copy(&from, &to).map_err(|reason| LinearizeError::Io { path: to, reason })?;
        }
    }
    run.write_file(CONFIG_FILE, &config.to_toml())?;
    let mut meta = crate::RunMeta::at_start(config, params::count(model), task.main_metric());
    // The teacher checkpoint and what carried over from it when the student was built.
    meta.initialised_from = Some(origin);
    meta.write(&run)?;
    crate::checkpoint::save_final_and_best(&run, model)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_choices_parse_and_bad_ones_name_the_forms() {
        assert_eq!("all".parse::<LayerChoice>(), Ok(LayerChoice::All));
        assert_eq!("1,3".parse::<LayerChoice>(), Ok(LayerChoice::These(vec![1, 3])));
        assert_eq!("keep:2".parse::<LayerChoice>(), Ok(LayerChoice::KeepWorst(2)));
        assert!("keep:x".parse::<LayerChoice>().unwrap_err().contains("keep:K"));
    }

    /// LoRA through Burn: adapters attach to the projections only, start as the identity
    /// (B = 0), train, and the merged model computes exactly what the adapted one does.
    #[test]
    fn lora_adapts_the_projections_and_merging_keeps_the_function() {
        use attnlab_model::{LmInput, ModelConfig, ModelInput, ModelIo};
        use burn::tensor::{Int, TensorData};
        let ad = Device::flex().autodiff();
        let config = ModelConfig {
            d_model: 16,
            n_heads: 2,
            n_layers: 2,
            max_seq_len: 8,
            ..Default::default()
        };
        let io = ModelIo { input: ModelInput::Tokens { vocab: 11 }, output_dim: 11 };
        let base = config.init(&io, 3, &ad).unwrap();
        let ids = TensorData::new((0..16).map(|i| (i * 7 % 11) as i64).collect::<Vec<_>>(), [2, 8]);
        let x = LmInput::Tokens(Tensor::<2, Int>::from_data(ids, &ad));
        let before = base.forward(x.clone());
        let adapted = with_lora(base.clone(), 2, 1, &ad);
        assert!(adapted.num_params() > base.num_params(), "adapters attached");
        let d = |a: Tensor<3>, b: Tensor<3>| (a - b).abs().max().into_scalar::<f32>();
        assert!(d(adapted.forward(x.clone()), before.clone()) < 1e-6, "B = 0: the same function");
        // One AdamW step on the adapters moves the function; merging keeps it.
        let mut optim = crate::trainer::adamw(&crate::config::TrainConfig::default()).init();
        let loss = adapted.forward(x.clone()).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &adapted);
        let trained = optim.step(1e-2, adapted, grads);
        let unmerged = trained.forward(x.clone());
        assert!(d(unmerged.clone(), before) > 1e-4, "the adapters trained");
        let merged = trained.materialize();
        assert_eq!(merged.num_params(), base.num_params(), "merged back to the base's parameters");
        assert!(d(merged.forward(x), unmerged) < 1e-5, "merged = unmerged");
    }

    /// The distillation term against its formula on a hand-made pair of distributions, and 0
    /// when the student is the teacher.
    #[test]
    fn kl_to_the_teacher_is_its_formula() {
        let d = Device::flex();
        let s = Tensor::<1>::from_floats([0.0, 1.0, 2.0], &d).reshape([1, 1, 3]);
        let t = Tensor::<1>::from_floats([2.0, 0.0, 0.0], &d).reshape([1, 1, 3]);
        let p = |z: [f64; 3], tau: f64| {
            let e: Vec<f64> = z.iter().map(|v| (v / tau).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.into_iter().map(|v| v / sum).collect::<Vec<_>>()
        };
        for tau in [1.0, 2.0] {
            let (pt, ps) = (p([2.0, 0.0, 0.0], tau), p([0.0, 1.0, 2.0], tau));
            let want: f64 = pt.iter().zip(&ps).map(|(a, b)| a * (a / b).ln()).sum();
            let got = kl_to_teacher(s.clone(), t.clone(), tau).into_scalar::<f32>() as f64;
            assert!((got - want).abs() < 1e-5, "tau {tau}: {got} vs {want}");
        }
        assert!(kl_to_teacher(t.clone(), t, 2.0).into_scalar::<f32>().abs() < 1e-6);
    }
}
