//! Character-level language modelling on any UTF-8 text (nanoGPT's `shakespeare_char`):
//! the vocabulary is the sorted set of characters, the last `val_fraction` of the text is held
//! out, and the metric is validation loss in nats per character (and bits per character).

use super::text::{TokenStream, lm_metrics, read_corpus};
use super::{Batch, Codec, MainMetric, Task, TaskError};
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
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        text.chars()
            .map(|c| {
                self.chars.binary_search(&c).map(|i| i as u32).map_err(|_| {
                    format!("character {c:?} is not in this run's vocabulary ({} characters); remove it from the prompt", self.chars.len())
                })
            })
            .collect()
    }
    fn decode(&self, ids: &[u32]) -> String {
        ids.iter().filter_map(|&i| self.chars.get(i as usize)).collect()
    }
}

pub struct CharLm {
    codec: CharCodec,
    stream: TokenStream,
}

impl CharLm {
    pub fn new(config: &TextConfig, seq_len: usize, seed: u64, run_dir: Option<&Path>) -> Result<Self, TaskError> {
        let text = read_corpus(&config.path)?;
        let saved = run_dir.map(|d| d.join(CharCodec::FILE)).filter(|p| p.exists());
        let codec = match saved {
            Some(p) => {
                let raw = std::fs::read_to_string(&p).map_err(|e| TaskError(format!("cannot read {}: {e}", p.display())))?;
                serde_json::from_str(&raw).map_err(|e| TaskError(format!("{} is corrupt: {e}", p.display())))?
            }
            None => CharCodec::from_text(&text),
        };
        let ids = codec.encode(&text).map_err(|e| TaskError(format!("corpus {}: {e}", config.path.display())))?;
        let stream = TokenStream::split(ids, config.val_fraction, seq_len, seed, &config.path)?;
        Ok(Self { codec, stream })
    }
}

impl Task for CharLm {
    fn io(&self) -> ModelIo {
        let vocab = self.codec.chars.len();
        ModelIo { input: ModelInput::Tokens { vocab }, output_dim: vocab }
    }
    fn main_metric(&self) -> MainMetric {
        MainMetric { name: "loss", higher_is_better: false }
    }
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch {
        self.stream.train_batch(step, micro, batch_size, device)
    }
    fn eval_batches(&self, batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        self.stream.eval_batches(batches, batch_size, device)
    }
    fn evaluate(&self, model: &Model, batches: &[Batch]) -> BTreeMap<String, f64> {
        lm_metrics(model, batches, 1.0)
    }
    fn codec(&self) -> Option<&dyn Codec> {
        Some(&self.codec)
    }
    fn save_artifacts(&self, run_dir: &Path) -> Result<(), String> {
        let json = serde_json::to_string(&self.codec).map_err(|e| e.to_string())?;
        std::fs::write(run_dir.join(CharCodec::FILE), json).map_err(|e| e.to_string())
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
        let err = c.encode("hi!").unwrap_err();
        assert!(err.contains("'i'") || err.contains("'!'"), "{err}");
    }
}
