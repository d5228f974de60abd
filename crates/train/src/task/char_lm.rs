//! Character-level language modelling on any UTF-8 text (nanoGPT's `shakespeare_char`):
//! the vocabulary is the sorted set of characters, the last `val_fraction` of the text is held
//! out, and the metric is validation loss in nats per character (and bits per character).

use super::interface::{Batch, Codec, EncodeError, MainMetric, Task, TaskError, token_batch_shape};
use super::text::{TokenStream, lm_metrics, loss_per_position_bucket, read_corpus};
use crate::config::TextConfig;
use attnlab_model::{Model, ModelInput, ModelIo};
use burn::tensor::Device;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The character vocabulary, saved as `vocab.json` in the run directory.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CharCodec {
    pub chars: Vec<char>,
}

impl CharCodec {
    pub fn from_text(text: &str) -> Self {
        Self { chars: text.chars().collect::<BTreeSet<_>>().into_iter().collect() }
    }
    const FILE: &'static str = "vocab.json";
}

impl Codec for CharCodec {
    fn encode(&self, text: &str) -> Result<Vec<u32>, EncodeError> {
        text.chars()
            .map(|c| {
                self.chars.binary_search(&c).map(|i| i as u32).map_err(|_| {
                    EncodeError::NotInVocabulary { character: c, vocab: self.chars.len() }
                })
            })
            .collect()
    }
    fn decode(&self, ids: &[u32]) -> String {
        ids.iter().filter_map(|&i| self.chars.get(i as usize)).collect()
    }
    fn export_entry(&self) -> (&'static str, String) {
        let tokens: Vec<String> = self.chars.iter().map(|c| c.to_string()).collect();
        ("vocabulary", serde_json::to_string(&tokens).expect("strings serialise"))
    }
}

pub struct CharLm {
    codec: CharCodec,
    stream: TokenStream,
    /// `task.eval_lengths`: position buckets scored in windows of the longest.
    eval_lengths: Vec<usize>,
}

impl CharLm {
    pub fn new(
        config: &TextConfig,
        seq_len: usize,
        seed: u64,
        run_dir: Option<&Path>,
    ) -> Result<Self, TaskError> {
        let text = read_corpus(&config.path)?;
        let saved = run_dir.map(|d| d.join(CharCodec::FILE)).filter(|p| p.exists());
        let codec = match saved {
            Some(p) => {
                let raw = std::fs::read_to_string(&p)
                    .map_err(|reason| TaskError::ReadCodec { path: p.clone(), reason })?;
                serde_json::from_str(&raw)
                    .map_err(|reason| TaskError::CorruptCodec { path: p, reason })?
            }
            None => CharCodec::from_text(&text),
        };
        let ids = codec
            .encode(&text)
            .map_err(|reason| TaskError::Encode { path: config.path.clone(), reason })?;
        let stream = TokenStream::split(ids, config.val_fraction, seq_len, seed, &config.path)?;
        if let Some(&longest) = config.eval_lengths.last() {
            // Fail at load, not at the first evaluation.
            stream.check_eval_window(longest)?;
        }
        Ok(Self { codec, stream, eval_lengths: config.eval_lengths.clone() })
    }
}

impl Task for CharLm {
    fn io(&self) -> ModelIo {
        let vocab = self.codec.chars.len();
        ModelIo { input: ModelInput::Tokens { vocab }, output_dim: vocab }
    }
    fn main_metric(&self) -> MainMetric {
        MainMetric {
            name: "loss",
            higher_is_better: false,
            chance: Some((self.codec.chars.len() as f64).ln()),
        }
    }
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch {
        self.stream.train_batch(step, micro, batch_size, device)
    }
    fn eval_batches(&self, batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        self.stream.eval_batches(batches, batch_size, device)
    }
    /// Loss and bits per character at the training length, then `loss@ℓ` per position bucket
    /// of `task.eval_lengths` (as many windows as the training length's evaluation).
    fn evaluate(&self, model: &Model, batches: &[Batch]) -> BTreeMap<String, f64> {
        let mut metrics = lm_metrics(model, batches, 1.0);
        let (Some(&longest), Some((device, batch_size))) =
            (self.eval_lengths.last(), token_batch_shape(batches))
        else {
            return metrics;
        };
        let long = self
            .stream
            .eval_batches_at(longest, batches.len(), batch_size, &device)
            .expect("checked when the task was built");
        metrics.extend(loss_per_position_bucket(model, &long, &self.eval_lengths));
        metrics
    }
    fn codec(&self) -> Option<&dyn Codec> {
        Some(&self.codec)
    }
    fn save_artifacts(&self, run_dir: &Path) -> Result<(), TaskError> {
        let json = serde_json::to_string(&self.codec).expect("a vocabulary serialises");
        let path = run_dir.join(CharCodec::FILE);
        std::fs::write(&path, json)
            .map_err(|e| TaskError::SaveCodec { path, reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_and_rejects_unknown_characters() {
        let c = CharCodec::from_text("hello world");
        let ids = c.encode("low").unwrap();
        assert_eq!(c.decode(&ids), "low");
        let err = c.encode("hi!").unwrap_err().to_string();
        assert!(err.contains("'i'") || err.contains("'!'"), "{err}");
    }

    /// `loss@ℓ` per position bucket equals the masked mean loss over exactly those positions
    /// (the slow path: the training loss with a mask), and the first bucket equals the loss of
    /// the same windows cut to the training length (a causal model cannot see further).
    #[test]
    fn loss_per_position_bucket_matches_masked_losses() {
        use crate::task::interface::{Target, score};
        use burn::tensor::Tensor;
        let dir =
            std::env::temp_dir().join(format!("attnlab-charlm-buckets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("corpus.txt");
        std::fs::write(&path, "the quick brown fox jumps over the lazy dog. ".repeat(40)).unwrap();
        let config = TextConfig {
            path: path.clone(),
            val_fraction: 0.5,
            seq_len: Some(8),
            eval_lengths: vec![8, 16, 32],
        };
        let task = CharLm::new(&config, 8, 5, None).unwrap();
        let device = Device::flex();
        let model = super::super::interface::tiny_model(&task.io(), 32, &device);
        let batches = task.eval_batches(2, 3, &device);
        assert_eq!(batches[0].tokens, 3 * 8, "trained-length windows");
        let m = task.evaluate(&model, &batches);
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(keys, ["accuracy", "bits_per_char", "loss", "loss@16", "loss@32", "loss@8"]);

        let long = task.stream.eval_batches_at(32, 2, 3, &device).unwrap();
        for (start, end) in [(0, 8), (8, 16), (16, 32)] {
            let (mut sum, mut n) = (0.0, 0.0);
            for b in &long {
                let Target::Tokens { ids, .. } = &b.target else { panic!("tokens") };
                let keep: Vec<f32> = (0..3 * 32)
                    .map(|i| if (start..end).contains(&(i % 32)) { 1.0 } else { 0.0 })
                    .collect();
                let mask =
                    Tensor::<2>::from_data(burn::tensor::TensorData::new(keep, [3, 32]), &device);
                let masked = crate::task::interface::Batch {
                    input: b.input.clone(),
                    target: Target::Tokens { ids: ids.clone(), mask: Some(mask) },
                    tokens: b.tokens,
                };
                sum += score(&model, &masked).loss.into_scalar::<f32>() as f64;
                n += 1.0;
            }
            let got = m[&format!("loss@{end}")];
            assert!(
                (got - sum / n).abs() < 1e-5,
                "positions {start}..{end}: {got} vs masked {}",
                sum / n
            );
        }
        let (mut sum, mut n) = (0.0, 0.0);
        for b in &long {
            let (attnlab_model::LmInput::Tokens(x), Target::Tokens { ids, .. }) =
                (&b.input, &b.target)
            else {
                panic!("tokens")
            };
            let cut = crate::task::interface::Batch {
                input: attnlab_model::LmInput::Tokens(x.clone().narrow(1, 0, 8)),
                target: Target::Tokens { ids: ids.clone().narrow(1, 0, 8), mask: None },
                tokens: 24,
            };
            sum += score(&model, &cut).loss.into_scalar::<f32>() as f64;
            n += 1.0;
        }
        assert!((m["loss@8"] - sum / n).abs() < 1e-5, "{} vs {}", m["loss@8"], sum / n);
        assert_eq!(task.evaluate(&model, &batches), m, "the evaluation windows repeat");

        let short = TextConfig { eval_lengths: vec![8, 4096], ..config };
        let err = CharLm::new(&short, 8, 5, None).err().unwrap().to_string();
        assert!(
            err.contains("fewer than one evaluation window of 4096 + 1")
                && err.contains("lower task.eval_lengths"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
