//! What the decision is made of, beside held-out loss: each swapped layer's transfer error,
//! loss by position, recall probes at 1×, 2× and 4× the training context, and decoding speed.

use super::options::LinearizeError;
use crate::config::{RunConfig, TaskConfig};
use crate::recall_probes::{Probe, probe_batches};
use crate::task::{self, Task};
use crate::transfer::{transfer, variant_free_tensors};
use attnlab_model::position::PositionKind;
use attnlab_model::{Model, SequenceMixer};
use burn::tensor::{Device, Tensor};

/// A tensor of another device's graph as a constant on `device`.
pub fn on(x: &Tensor<3>, device: &Device) -> Tensor<3> {
    Tensor::from_data(x.to_data(), device)
}

/// Each layer's mean transfer error over `batches`: the mean squared difference between the
/// student mixer's output and the teacher's attention output on the teacher's hidden states.
pub fn transfer_errors(
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

/// Held-out loss by position bucket `loss@ℓ` for `ℓ` in `[L/4, L/2, L]` of the evaluation
/// windows (length L), per model, in position order; empty for tasks that are not language
/// modelling. The first positions see little context, the last the whole window: where a
/// linear student loses to its teacher, if anywhere.
pub fn position_buckets(
    config: &RunConfig,
    eval: &[task::Batch],
    models: &[&Model],
) -> Vec<(String, Vec<f64>)> {
    if !matches!(config.task, TaskConfig::CharLm(_) | TaskConfig::BpeLm(_)) {
        return Vec::new();
    }
    let Some(len) = eval.first().map(|b| b.input.seq_len()) else { return Vec::new() };
    let mut lengths: Vec<usize> = [len / 4, len / 2, len].into_iter().filter(|&l| l > 0).collect();
    lengths.dedup();
    let per_model: Vec<_> =
        models.iter().map(|m| task::loss_per_position_bucket(m, eval, &lengths)).collect();
    lengths
        .iter()
        .map(|l| {
            let key = format!("loss@{l}");
            let values = per_model.iter().map(|m| m[&key]).collect();
            (key, values)
        })
        .collect()
}

/// One recall probe at one length: each model's answer-token accuracy (`None` where the model
/// cannot run that long: learned positions end at `model.max_seq_len`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProbeRow {
    pub probe: String,
    /// The length in multiples of the training context.
    pub multiple: usize,
    pub tokens: usize,
    /// Teacher, student, control (when trained).
    pub accuracy: Vec<Option<f64>>,
    /// Why a probe could not be written at this length, if it could not.
    pub note: Option<String>,
}

/// The recall probes ([`crate::recall_probes`]) at 1×, 2× and 4× the training context, through
/// the task's codec; empty for a task without one. A model with rotary or no positions runs
/// past its `max_seq_len` as the same weights rebuilt for the longer length.
pub fn recall_probes(
    task: &dyn Task,
    context: usize,
    models: &[(&Model, &RunConfig)],
    examples: usize,
    device: &Device,
) -> Result<Vec<ProbeRow>, LinearizeError> {
    let Some(codec) = task.codec() else { return Ok(Vec::new()) };
    let mut rows = Vec::new();
    for multiple in [1, 2, 4] {
        let len = multiple * context;
        let at_len: Vec<Option<Model>> = models
            .iter()
            .map(|(m, config)| at_length(m, config, task, len, device))
            .collect::<Result<_, _>>()?;
        let config = models[0].1;
        for probe in Probe::ALL {
            let batch_size = config.train.batch_size.clamp(1, 16);
            let (accuracy, note) =
                match probe_batches(codec, probe, len, examples, batch_size, config.seed, device) {
                    Ok(batches) => {
                        let score = |m: &Option<Model>| {
                            m.as_ref().map(|m| task::mean_metrics(m, &batches)["accuracy"])
                        };
                        (at_len.iter().map(score).collect(), None)
                    }
                    Err(e) => (vec![None; models.len()], Some(e.to_string())),
                };
            rows.push(ProbeRow {
                probe: probe.name().into(),
                multiple,
                tokens: len,
                accuracy,
                note,
            });
        }
    }
    Ok(rows)
}

/// `model` able to run `len` positions: itself when `len` fits, the same weights built for
/// `len` when its positions are rotary or absent, `None` for learned positions.
fn at_length(
    model: &Model,
    config: &RunConfig,
    task: &dyn Task,
    len: usize,
    device: &Device,
) -> Result<Option<Model>, LinearizeError> {
    if len <= model.max_seq_len() {
        return Ok(Some(model.clone()));
    }
    if config.model.positions == PositionKind::Learned {
        return Ok(None);
    }
    let mut longer = config.model.clone();
    longer.max_seq_len = len;
    let fresh = longer.init(&task.io(), config.seed, device)?;
    Ok(Some(transfer(fresh, &variant_free_tensors(model)).0))
}

/// Tokens per second of one-token decoding steps through the model's state, one sequence,
/// token 0 fed back (the speed does not depend on the tokens), over the context length (at most
/// 256 steps), after one untimed step.
pub fn decode_speed(model: &Model, device: &Device) -> f64 {
    use attnlab_model::LmInput;
    use burn::tensor::{Int, TensorData};
    let steps = model.max_seq_len().clamp(2, 256) - 1;
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
