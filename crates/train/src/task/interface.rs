//! What every task implements and what the trainer sees: batches and their targets, scoring a
//! model on them, the main metric, and the [`Task`] and [`Codec`] traits. A leaf of `task`:
//! each task's module imports it, and `task` (which builds a task from its config) re-exports it.

use attnlab_model::{LmInput, Model, ModelIo, fused};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the loss compares the model's output with.
#[derive(Clone, Debug)]
pub enum Target {
    /// Next-token ids `[batch, seq]`; `mask` `[batch, seq]` (1 = scored) or every position.
    Tokens { ids: Tensor<2, Int>, mask: Option<Tensor<2>> },
    /// Regression targets `[batch, seq]` read from output channel 0 where `mask` is 1; the
    /// squared error is divided by `scale` (in-context regression: the dimension d).
    Values { y: Tensor<2>, mask: Tensor<2>, scale: f32 },
    /// One class per sequence `[batch]`, predicted from the mean of the outputs over positions.
    Class(Tensor<1, Int>),
    /// A whole sequence of token ids `[batch, n]` predicted from the output at the last
    /// position alone, read as `n` rows of `out / n` logits: everything the prediction uses
    /// passes through that one position's state (MAD's compression task).
    LastPosition(Tensor<2, Int>),
}

#[derive(Clone, Debug)]
pub struct Batch {
    pub input: LmInput,
    pub target: Target,
    /// Input positions in the batch (for tokens/s).
    pub tokens: usize,
}

impl Batch {
    /// The batch cut into `parts` equal slices along the batch axis, each moved to its device
    /// in `devices`, with the share of the batch's scored positions each holds. The weighted sum
    /// of the slices' losses is the whole batch's loss, so a gradient summed over slices (data
    /// parallelism) is the whole batch's gradient.
    ///
    /// # Shapes
    /// - every tensor `[batch, ..]` becomes `[batch / parts, ..]`; `batch` divisible by `parts`
    pub fn split(&self, devices: &[Device]) -> Vec<(Batch, f64)> {
        let parts = devices.len();
        let rows = match &self.input {
            LmInput::Tokens(t) => t.dims()[0],
            LmInput::Vectors(v) => v.dims()[0],
        };
        assert!(
            parts > 0 && rows.is_multiple_of(parts),
            "{rows} sequences do not split into {parts}"
        );
        let size = rows / parts;
        let slices: Vec<Batch> = devices
            .iter()
            .enumerate()
            .map(|(k, device)| {
                let input = match &self.input {
                    LmInput::Tokens(t) => {
                        LmInput::Tokens(t.clone().narrow(0, k * size, size).to_device(device))
                    }
                    LmInput::Vectors(v) => {
                        LmInput::Vectors(v.clone().narrow(0, k * size, size).to_device(device))
                    }
                };
                Batch {
                    input,
                    target: self.target.narrow(k * size, size, device),
                    tokens: self.tokens / parts,
                }
            })
            .collect();
        // One readback of the scored positions per row for the whole batch, summed per slice
        // on the host (not one device sync per slice).
        let per_row = self.target.scored_per_row();
        let counts: Vec<f64> =
            (0..parts).map(|k| per_row[k * size..(k + 1) * size].iter().sum()).collect();
        let total: f64 = counts.iter().sum();
        slices
            .into_iter()
            .zip(counts)
            // A batch with nothing scored has loss 0 in every slice: equal shares keep it so.
            .map(|(b, c)| (b, if total > 0.0 { c / total } else { 1.0 / parts as f64 }))
            .collect()
    }
}

impl Target {
    /// Rows `start..start + len` on `device`.
    fn narrow(&self, start: usize, len: usize, device: &Device) -> Target {
        let rows2 = |t: &Tensor<2>| t.clone().narrow(0, start, len).to_device(device);
        match self {
            Target::Tokens { ids, mask } => Target::Tokens {
                ids: ids.clone().narrow(0, start, len).to_device(device),
                mask: mask.as_ref().map(rows2),
            },
            Target::Values { y, mask, scale } => {
                Target::Values { y: rows2(y), mask: rows2(mask), scale: *scale }
            }
            Target::Class(labels) => {
                Target::Class(labels.clone().narrow(0, start, len).to_device(device))
            }
            Target::LastPosition(ids) => {
                Target::LastPosition(ids.clone().narrow(0, start, len).to_device(device))
            }
        }
    }

    /// How many predictions the loss averages over, per row of the batch: the mask's row sum
    /// where there is one, else every position (tokens) or the one class (classes).
    fn scored_per_row(&self) -> Vec<f64> {
        match self {
            Target::Tokens { mask: Some(m), .. } | Target::Values { mask: m, .. } => {
                let rows = m.dims()[0];
                let sums = m.clone().sum_dim(1).reshape([rows]).into_data();
                sums.convert::<f32>().iter::<f32>().map(f64::from).collect()
            }
            Target::Tokens { ids, mask: None } | Target::LastPosition(ids) => {
                let [rows, cols] = ids.dims();
                vec![cols as f64; rows]
            }
            Target::Class(labels) => vec![1.0; labels.dims()[0]],
        }
    }
}

/// The scalar loss of a batch and, where the task has one, the number of correct predictions.
pub struct Scored {
    /// `[1]`, differentiable.
    pub loss: Tensor<1>,
    /// `(correct, scored)` counts, computed without gradient.
    pub accuracy: Option<(Tensor<1>, Tensor<1>)>,
}

/// Computes a batch's loss with the model's output.
pub fn score(model: &Model, batch: &Batch) -> Scored {
    let out = model.forward(batch.input.clone());
    score_output(out, &batch.target)
}

/// The loss of a given output tensor `[batch, seq, out]` against `target`.
pub fn score_output(out: Tensor<3>, target: &Target) -> Scored {
    match target {
        Target::Tokens { ids, mask } => {
            let [b, t, _] = out.dims();
            let (nll, predicted) = fused::token_cross_entropy(out, ids.clone());
            let hits = predicted.equal(ids.clone()).float();
            match mask {
                Some(m) => {
                    let count = m.clone().sum();
                    let loss = (nll * m.clone()).sum() / count.clone().clamp_min(1.0);
                    Scored {
                        loss,
                        accuracy: Some(((hits * m.clone()).sum().detach(), count.detach())),
                    }
                }
                None => {
                    let n = Tensor::<1>::from_floats([(b * t) as f32], &hits.device());
                    Scored { loss: nll.mean(), accuracy: Some((hits.sum().detach(), n)) }
                }
            }
        }
        Target::Values { y, mask, scale } => {
            let [b, t, _] = out.dims();
            let pred = out.narrow(2, 0, 1).reshape([b, t]);
            let se = (pred - y.clone()).powi_scalar(2) * mask.clone();
            Scored { loss: se.sum() / mask.clone().sum().clamp_min(1.0) / *scale, accuracy: None }
        }
        Target::Class(labels) => {
            let [b, _, c] = out.dims();
            let logits = out.mean_dim(1).reshape([b, c]);
            let predicted = logits.clone().argmax(1).reshape([b]);
            let nll = -log_softmax(logits, 1)
                .gather(1, labels.clone().unsqueeze_dim::<2>(1))
                .reshape([b]);
            let hits = predicted.equal(labels.clone()).float().sum().detach();
            let n = Tensor::<1>::from_floats([b as f32], &hits.device());
            Scored { loss: nll.mean(), accuracy: Some((hits, n)) }
        }
        Target::LastPosition(ids) => {
            let [b, t, width] = out.dims();
            let n = ids.dims()[1];
            assert!(width.is_multiple_of(n), "{width} outputs are not {n} rows of logits");
            let logits = out.narrow(1, t - 1, 1).reshape([b, n, width / n]);
            score_output(logits, &Target::Tokens { ids: ids.clone(), mask: None })
        }
    }
}

/// Next-token negative log-likelihood `[batch, seq]` of `ids` under the logits `out`
/// `[batch, seq, vocab]`.
pub fn token_nll(out: Tensor<3>, ids: &Tensor<2, Int>) -> Tensor<2> {
    fused::token_cross_entropy(out, ids.clone()).0
}

/// The metric a task is judged by (early stopping, `best/`, compare reports).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MainMetric {
    pub name: &'static str,
    pub higher_is_better: bool,
    /// The metric of a model that has learned nothing task-specific (uniform guessing over the
    /// vocabulary for a language model, among the values in context for recall, the mean for
    /// regression), when the task has one: reports say when no arm got away from it.
    pub chance: Option<f64>,
}

impl MainMetric {
    pub fn better(&self, a: f64, b: f64) -> bool {
        if self.higher_is_better { a > b } else { a < b }
    }
    pub fn reached(&self, value: f64, target: f64) -> bool {
        if self.higher_is_better { value >= target } else { value <= target }
    }
}

/// Encoding and decoding text for sampling.
pub trait Codec: Send + Sync {
    /// Token ids of `text`, or an error naming what cannot be encoded.
    fn encode(&self, text: &str) -> Result<Vec<u32>, EncodeError>;
    fn decode(&self, ids: &[u32]) -> String;
    /// What an export embeds so a loader can tokenize without the run directory: the metadata
    /// key (`vocabulary`, a JSON list of strings with token id i at index i, or
    /// `tokenizer_json`, a Hugging Face `tokenizers` file) and its value.
    fn export_entry(&self) -> (&'static str, String);
}

pub trait Task: Send + Sync {
    fn io(&self) -> ModelIo;
    fn main_metric(&self) -> MainMetric;
    /// Micro-batch `micro` of optimizer step `step`.
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch;
    /// The fixed evaluation set, `batches` batches of `batch_size`.
    fn eval_batches(&self, batches: usize, batch_size: usize, device: &Device) -> Vec<Batch>;
    /// Evaluates the model on the fixed evaluation set. The default averages loss (and accuracy
    /// where scored); tasks add their own metrics.
    fn evaluate(&self, model: &Model, batches: &[Batch]) -> BTreeMap<String, f64> {
        mean_metrics(model, batches)
    }
    /// Text codec, for language-modelling tasks.
    fn codec(&self) -> Option<&dyn Codec> {
        None
    }
    /// Files the task wants kept in the run directory (e.g. `tokenizer.json`).
    fn save_artifacts(&self, _run_dir: &Path) -> Result<(), TaskError> {
        Ok(())
    }
}

/// The device and batch size of a token evaluation set, for building its evaluations at other
/// lengths beside it; `None` for an empty or non-token set.
pub fn token_batch_shape(batches: &[Batch]) -> Option<(Device, usize)> {
    match &batches.first()?.input {
        LmInput::Tokens(ids) => Some((ids.device(), ids.dims()[0])),
        _ => None,
    }
}

/// The fixed evaluation set of a task scored at several lengths: `examples` sequences of
/// length `len` in batches of `batch_size`, drawn by `make(rng, size, len)`. The training
/// length's set is the seed's "eval" stream and every other length's a stream of its own, so
/// adding an evaluation length changes no other length's set.
pub fn eval_set_at_length(
    seed: u64,
    train_len: usize,
    len: usize,
    examples: usize,
    batch_size: usize,
    mut make: impl FnMut(&mut rand::rngs::StdRng, usize, usize) -> Batch,
) -> Vec<Batch> {
    let mut rng = if len == train_len {
        crate::seed::rng(seed, "eval", 0)
    } else {
        crate::seed::rng(seed, "eval-length", len as u64)
    };
    let size = batch_size.max(1);
    (0..examples.div_ceil(size))
        .map(|i| make(&mut rng, size.min(examples - i * size), len))
        .collect()
}

/// A task's metrics on its training-length `batches`, then the same at every evaluation
/// length as `name@ℓ` (`set(len, batch_size, device)` builds that length's set).
pub fn metrics_at_lengths(
    batches: &[Batch],
    lengths: &[usize],
    scores: impl Fn(&[Batch]) -> BTreeMap<&'static str, f64>,
    set: impl Fn(usize, usize, &Device) -> Vec<Batch>,
) -> BTreeMap<String, f64> {
    let mut metrics: BTreeMap<String, f64> =
        scores(batches).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let Some((device, batch_size)) = token_batch_shape(batches) else { return metrics };
    for &len in lengths {
        for (name, value) in scores(&set(len, batch_size, &device)) {
            metrics.insert(format!("{name}@{len}"), value);
        }
    }
    metrics
}

/// `loss` and (where the task has it) `accuracy`, averaged over the batches.
pub fn mean_metrics(model: &Model, batches: &[Batch]) -> BTreeMap<String, f64> {
    let (mut loss, mut hits, mut count, mut has_acc) = (0.0, 0.0, 0.0, false);
    for batch in batches {
        let s = score(model, batch);
        loss += s.loss.into_scalar::<f32>() as f64;
        if let Some((h, c)) = s.accuracy {
            has_acc = true;
            hits += h.into_scalar::<f32>() as f64;
            count += c.into_scalar::<f32>() as f64;
        }
    }
    let mut m = BTreeMap::new();
    m.insert("loss".to_string(), loss / batches.len().max(1) as f64);
    if has_acc {
        m.insert("accuracy".to_string(), hits / count.max(1.0));
    }
    m
}

/// A task that cannot be built (its data or saved codec) or cannot save its files: one line
/// naming the file or value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("cannot read corpus {path}: {reason} (set task.path to a UTF-8 text file)")]
    ReadCorpus { path: PathBuf, reason: std::io::Error },
    #[error(
        "{path} line {line} is not a JSON object with a \"text\" string: a .jsonl corpus holds one such object per line"
    )]
    JsonlLine { path: PathBuf, line: usize },
    #[error("corpus {path} is empty: point task.path at a text file with content")]
    EmptyCorpus { path: PathBuf },
    #[error(
        "corpus {path} is not valid UTF-8 (first bad byte at offset {offset}): convert it to UTF-8 first"
    )]
    NotUtf8 { path: PathBuf, offset: usize },
    /// A split shorter than one training window (`need` tokens: the training length + 1).
    #[error(
        "corpus {path} is too short: {tokens} tokens give {train} train / {val} validation tokens, each split needs at least {need} \
         (the training length + 1); use a longer text or a smaller task.seq_len / model.max_seq_len"
    )]
    TooShort { path: PathBuf, tokens: usize, train: usize, val: usize, need: usize },
    #[error(
        "the validation split has {val} tokens, fewer than one evaluation window of {len} + 1: lower task.eval_lengths or raise task.val_fraction"
    )]
    EvalWindow { val: usize, len: usize },
    /// The corpus holds what the codec cannot encode.
    #[error("corpus {path}: {reason}")]
    Encode { path: PathBuf, reason: EncodeError },
    /// A saved codec file (`vocab.json`) of the run cannot be read.
    #[error("cannot read {path}: {reason}")]
    ReadCodec { path: PathBuf, reason: std::io::Error },
    #[error("{path} is corrupt: {reason}")]
    CorruptCodec { path: PathBuf, reason: serde_json::Error },
    #[error("cannot load {path}: {reason}")]
    LoadTokenizer { path: PathBuf, reason: tokenizers::Error },
    #[error(
        "{path} is missing: this run's weights are pretrained (task.embedding_rows is set), so its tokenizer cannot be retrained; copy the checkpoint's tokenizer.json there"
    )]
    PretrainedTokenizerMissing { path: PathBuf },
    #[error(
        "the tokenizer has {vocab} tokens but the model's embedding has {rows} rows: every token id needs a row"
    )]
    VocabularyExceedsEmbedding { vocab: usize, rows: usize },
    #[error("training the BPE tokenizer failed: {reason}")]
    TrainTokenizer { reason: tokenizers::Error },
    /// A task option that names nothing the task can build (`task.problem`); the message names
    /// the key and the fix.
    #[error(transparent)]
    Problem(#[from] crate::config::ProblemError),
    /// Task settings that cannot make the task (MAD's refusals); the message names `key` and
    /// the fix.
    #[error("{message}")]
    Refused { key: &'static str, message: String },
    /// A file the task keeps in the run directory cannot be written.
    #[error("{path}: {reason}")]
    SaveCodec { path: PathBuf, reason: String },
}

/// Text a [`Codec`] cannot encode.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "character {character:?} is not in this run's vocabulary ({vocab} characters); remove it from the prompt"
    )]
    NotInVocabulary { character: char, vocab: usize },
    /// The BPE tokenizer's own error.
    #[error("{0}")]
    Tokenizer(tokenizers::Error),
}

/// A one-layer softmax model (width 16, 2 heads, no positions, no MLP) for the tasks' tests of
/// their evaluation at other lengths.
#[cfg(test)]
pub(crate) fn tiny_model(io: &ModelIo, max_seq_len: usize, device: &Device) -> Model {
    use attnlab_model::position::PositionKind;
    use attnlab_model::{MixerStack, ModelConfig};
    let config = ModelConfig {
        d_model: 16,
        n_heads: 2,
        n_layers: 1,
        mixer: "softmax".parse::<MixerStack>().unwrap(),
        positions: PositionKind::None,
        max_seq_len,
        mlp_ratio: 0,
        ..Default::default()
    };
    config.init(io, 1, device).unwrap()
}
