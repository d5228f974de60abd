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
//! the arms see the same data; evaluation is the task's held-out batches. Stage 2 and the
//! control evaluate every `eval_every` steps, keep their best weights and may stop early.
//!
//! The working directory (`--out`) is resumable: every stage checkpoints (weights, optimizer
//! moments, curves) atomically, and the same command after a kill goes on from the newest
//! checkpoint of the stage it was in, to the same numbers.
//!
//! Modules: [`options`] (what is asked, every refusal), [`work_dir`] (the directory and its
//! checkpoints), [`stages`] (the training loops), [`measure`] (transfer error, loss by
//! position, recall probes, decoding).

pub mod measure;
pub mod options;
pub mod stages;
pub mod work_dir;

pub use measure::ProbeRow;
pub use options::{LayerChoice, LinearizeError, LinearizeOptions};
pub use stages::{kl_to_teacher, with_lora};

use crate::config::RunConfig;
use crate::params;
use crate::run_dir::{CONFIG_FILE, RunDir};
use crate::runs::load_run;
use crate::task::{self, Task};
use crate::transfer::{transfer, variant_free_shapes, variant_free_tensors};
use attnlab_model::{MixerSpec, MixerStack, Model};
use burn::module::Module;
use stages::{Arm, Finetuned};
use std::path::{Path, PathBuf};
use work_dir::{RESULTS_FILE, WorkDir};

/// One swapped layer's transfer error: the mean squared difference between its mixer's output
/// and the teacher's attention output on the teacher's hidden states, over the evaluation set.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LayerError {
    pub layer: usize,
    /// With the carried-over weights, before stage 1.
    pub before: f64,
    /// After stage 1.
    pub after: f64,
    /// Kept as the teacher's attention (`keep:K`).
    pub kept: bool,
}

impl LayerError {
    /// How many times stage 1 lowered the error (`before / after`).
    pub fn reduction(&self) -> f64 {
        self.before / self.after.max(f64::MIN_POSITIVE)
    }
}

impl LinearizeResult {
    /// The smallest [`LayerError::reduction`] over the swapped layers.
    pub fn smallest_reduction(&self) -> f64 {
        self.layers.iter().map(LayerError::reduction).fold(f64::MAX, f64::min)
    }
}

/// Everything the recipe measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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
    /// After stage 2 (its best evaluation).
    pub student_loss: f64,
    /// Swap + cross-entropy for the same steps (its best evaluation), when trained.
    pub control_loss: Option<f64>,
    /// Stage 1's summed transfer loss per step, and each swapped layer's (same order as
    /// `layers`).
    pub transfer_curve: Vec<f64>,
    pub transfer_per_layer: Vec<Vec<f64>>,
    /// Stage 2's and the control's training loss per step and `(step, held-out loss)` per
    /// evaluation.
    pub recover_curve: Vec<f64>,
    pub recover_evals: Vec<(usize, f64)>,
    pub control_curve: Vec<f64>,
    pub control_evals: Vec<(usize, f64)>,
    /// The step stage 2 / the control stopped early at.
    pub recover_stopped_at: Option<usize>,
    pub control_stopped_at: Option<usize>,
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
    /// language-model tasks: teacher, student and (when trained) control.
    pub loss_by_position: Vec<(String, Vec<f64>)>,
    /// Recall probes at 1×, 2× and 4× the training context `context` (language models).
    pub context: usize,
    pub probes: Vec<ProbeRow>,
    /// Greedy decoding speed, tokens/s, one sequence, after a one-token prompt (up to the
    /// context length): `(teacher, student)`.
    pub decode_tokens_per_s: (f64, f64),
}

/// Runs the recipe (see the module docs) in `options.out`, resuming what an earlier call there
/// began; writes `results.json`, the files `render` makes of the result (the report), and the
/// student as the run directory `student/`.
pub fn linearize(
    options: &LinearizeOptions,
    render: &dyn Fn(&LinearizeResult) -> Vec<(String, String)>,
) -> Result<LinearizeResult, LinearizeError> {
    if options.transfer_steps == 0 || options.recover_steps == 0 || options.eval_every == 0 {
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
    let teacher_tensors = variant_free_tensors(teacher);

    // The student, every matching weight carried over; refused before anything is written.
    let student_config = with_stack(&config, stack(&config, &options.to, &swapped)?);
    let fresh = student_config.model.init(&task.io(), config.seed, &ad)?;
    let (start, carried) = transfer(fresh, &teacher_tensors);
    if options.transfer_own_only {
        let own = variant_free_shapes(&start.blocks[swapped[0]].mixer);
        if own.keys().all(|name| name.starts_with("heads.")) {
            return Err(LinearizeError::NothingOwnToTransfer { spec: options.to.to_string() });
        }
    }

    let work = WorkDir::open(&options.out, &options.identity())?;
    if let Some(done) = work.results::<LinearizeResult>()? {
        write_rendered(&work, render(&done))?;
        return Ok(done);
    }
    let t = &config.train;
    let eval = task.eval_batches(t.eval_batches, t.batch_size, plain);
    let eval_loss = |m: &Model| task::mean_metrics(m, &eval)["loss"];
    let swapped_loss = eval_loss(&start.valid());
    let before = measure::transfer_errors(&start.valid(), teacher, &eval, &swapped);

    // Stage 1.
    let (mut student, transfer_progress) = stages::attention_transfer(
        &work,
        start.clone(),
        teacher,
        task,
        &config,
        &swapped,
        options,
        &ad,
    )?;
    let after = measure::transfer_errors(&student.valid(), teacher, &eval, &swapped);

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
    let recovery = Arm {
        name: "recovery",
        first_batch: options.transfer_steps,
        steps: options.recover_steps,
        distill: Some((options.alpha, options.tau)),
        lora_rank: options.lora_rank,
    };
    let Finetuned { model: student, progress: recovered, stopped_at: recover_stopped_at } =
        stages::finetune(&work, &recovery, student, teacher, task, &config, options, &eval, &ad)?;
    let control = if options.control {
        let arm = Arm {
            name: "control",
            first_batch: 0,
            steps: options.transfer_steps + options.recover_steps,
            distill: None,
            lora_rank: 0,
        };
        let fresh = student_config.model.init(&task.io(), config.seed, &ad)?;
        let start = transfer(fresh, &teacher_tensors).0;
        Some(stages::finetune(&work, &arm, start, teacher, task, &config, options, &eval, &ad)?)
    } else {
        None
    };

    // Measurements.
    let student_plain = student.valid();
    let control_plain = control.as_ref().map(|c| c.model.valid());
    let mut models: Vec<(&Model, &RunConfig)> =
        vec![(teacher, &config), (&student_plain, &student_config)];
    if let Some(c) = &control_plain {
        models.push((c, &student_config));
    }
    let plain_models: Vec<&Model> = models.iter().map(|(m, _)| *m).collect();
    let loss_by_position = measure::position_buckets(&config, &eval, &plain_models);
    let context = eval.first().map_or(config.model.max_seq_len, |b| b.input.seq_len());
    let probes =
        measure::recall_probes(task, context, &models, options.probe_examples.max(1), plain)?;
    let bytes = |c: &RunConfig, len: usize| 4 * c.model.decode_state_floats(len);
    let decode_tokens_per_s =
        (measure::decode_speed(teacher, plain), measure::decode_speed(&student_plain, plain));
    let origin = crate::run_meta::InitialisedFrom {
        checkpoint: teacher_run.checkpoint.clone(),
        copied: carried.copied,
        fresh: carried.fresh,
    };
    let student_dir = options.out.join("student");
    save_student(&student_dir, &options.run, &student_config, &student_plain, task, origin)?;
    let result = LinearizeResult {
        teacher_spec: config.model.mixer.to_string(),
        student_spec: student_config.model.mixer.to_string(),
        swapped: final_swapped,
        kept,
        layers,
        teacher_loss: eval_loss(teacher),
        swapped_loss,
        transferred_loss,
        student_loss: eval_loss(&student_plain),
        control_loss: control_plain.as_ref().map(eval_loss),
        transfer_curve: transfer_progress.curve,
        transfer_per_layer: transfer_progress.per_layer,
        recover_curve: recovered.curve,
        recover_evals: recovered.evals,
        control_curve: control.as_ref().map(|c| c.progress.curve.clone()).unwrap_or_default(),
        control_evals: control.as_ref().map(|c| c.progress.evals.clone()).unwrap_or_default(),
        recover_stopped_at,
        control_stopped_at: control.as_ref().and_then(|c| c.stopped_at),
        transfer_steps: options.transfer_steps,
        recover_steps: options.recover_steps,
        alpha: options.alpha,
        tau: options.tau,
        lora_rank: options.lora_rank,
        student_dir,
        state_bytes_4k: (bytes(&config, 4096), bytes(&student_config, 4096)),
        state_bytes_32k: (bytes(&config, 32768), bytes(&student_config, 32768)),
        loss_by_position,
        context,
        probes,
        decode_tokens_per_s,
    };
    write_rendered(&work, render(&result))?;
    // Last: its presence says the linearisation is finished.
    work.write(RESULTS_FILE, &serde_json::to_string_pretty(&result).expect("results serialise"))?;
    Ok(result)
}

fn write_rendered(work: &WorkDir, files: Vec<(String, String)>) -> Result<(), LinearizeError> {
    for (name, contents) in files {
        work.write(&name, &contents)?;
    }
    Ok(())
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

/// The student as a run directory in the working directory: its config, the teacher's codec
/// files, and the weights as checkpoints `final` and `best` (hard links to `final`). One a
/// killed earlier call left half-written is made again (it is the working directory's own).
fn save_student(
    dir: &Path,
    teacher_run: &Path,
    config: &RunConfig,
    model: &Model,
    task: &dyn Task,
    origin: crate::run_meta::InitialisedFrom,
) -> Result<(), LinearizeError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|reason| LinearizeError::Io { path: dir.to_path_buf(), reason })?;
    }
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
    use burn::module::Module;
    use burn::optim::GradientsParams;
    use burn::tensor::{Device, Tensor};

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
