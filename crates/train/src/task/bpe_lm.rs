//! Byte-level BPE language modelling: a tokenizer is trained with the `tokenizers` crate on the
//! training split (`task.vocab_size` tokens), saved as `tokenizer.json` in the run directory and
//! reused by resume, eval and sample. Metric: validation loss in nats per token, plus bits per
//! character (comparable with the char task).

use super::interface::{Batch, Codec, EncodeError, MainMetric, Task, TaskError};
use super::text::{TokenStream, lm_metrics, read_corpus};
use crate::config::BpeConfig;
use attnlab_model::{Model, ModelInput, ModelIo};
use burn::tensor::Device;
use std::collections::BTreeMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{Tokenizer, TokenizerBuilder};

pub const TOKENIZER_FILE: &str = "tokenizer.json";

pub struct BpeCodec {
    tokenizer: Tokenizer,
}

impl BpeCodec {
    /// Trains a byte-level BPE tokenizer on `text`.
    pub fn train(text: &str, vocab_size: usize) -> Result<Self, TaskError> {
        let failed = |reason| TaskError::TrainTokenizer { reason };
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(2)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tk = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            ByteLevel,
            ByteLevel,
            ByteLevelDecoder,
        >::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_post_processor(Some(ByteLevel::default()))
        .with_decoder(Some(ByteLevelDecoder::default()))
        .build()
        .map_err(failed)?;
        tk.train(&mut trainer, text.lines()).map_err(failed)?;
        let json = tk.to_string(false).map_err(failed)?;
        let tokenizer = json.parse::<Tokenizer>().map_err(failed)?;
        Ok(Self { tokenizer })
    }

    pub fn load(path: &Path) -> Result<Self, TaskError> {
        Tokenizer::from_file(path)
            .map(|tokenizer| Self { tokenizer })
            .map_err(|reason| TaskError::LoadTokenizer { path: path.to_path_buf(), reason })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

impl Codec for BpeCodec {
    fn encode(&self, text: &str) -> Result<Vec<u32>, EncodeError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(EncodeError::Tokenizer)
    }
    fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false).unwrap_or_default()
    }
    fn export_entry(&self) -> (&'static str, String) {
        ("tokenizer_json", self.tokenizer.to_string(false).expect("a loaded tokenizer serialises"))
    }
}

pub struct BpeLm {
    codec: BpeCodec,
    /// Rows of the embedding and the head: the vocabulary, or a pretrained checkpoint's padded
    /// count (`task.embedding_rows`).
    rows: usize,
    stream: TokenStream,
    /// Characters per token over the validation split, to report bits per character.
    chars_per_token: f64,
}

impl BpeLm {
    pub fn new(
        config: &BpeConfig,
        seq_len: usize,
        seed: u64,
        run_dir: Option<&Path>,
    ) -> Result<Self, TaskError> {
        let text = read_corpus(&config.path)?;
        let split = text
            .char_indices()
            .nth(((1.0 - config.val_fraction) * text.chars().count() as f64) as usize)
            .map(|(i, _)| i)
            .unwrap_or(text.len());
        let (train_text, val_text) = text.split_at(split);
        let saved = run_dir.map(|d| d.join(TOKENIZER_FILE)).filter(|p| p.exists());
        let codec = match (saved, config.embedding_rows) {
            (Some(p), _) => BpeCodec::load(&p)?,
            (None, None) => BpeCodec::train(train_text, config.vocab_size)?,
            (None, Some(_)) => {
                let path = run_dir.unwrap_or(Path::new(".")).join(TOKENIZER_FILE);
                return Err(TaskError::PretrainedTokenizerMissing { path });
            }
        };
        let rows = config.embedding_rows.unwrap_or(codec.vocab_size());
        if codec.vocab_size() > rows {
            return Err(TaskError::VocabularyExceedsEmbedding { vocab: codec.vocab_size(), rows });
        }
        let encode = |t: &str| {
            codec
                .encode(t)
                .map_err(|reason| TaskError::Encode { path: config.path.clone(), reason })
        };
        let (train, val) = (encode(train_text)?, encode(val_text)?);
        let chars_per_token = val_text.chars().count() as f64 / val.len().max(1) as f64;
        let n_train = train.len();
        let mut ids = train;
        ids.extend(val);
        let fraction = 1.0 - n_train as f64 / ids.len() as f64;
        let stream = TokenStream::split(ids, fraction, seq_len, seed, &config.path)?;
        Ok(Self { codec, rows, stream, chars_per_token })
    }
}

impl Task for BpeLm {
    fn io(&self) -> ModelIo {
        ModelIo { input: ModelInput::Tokens { vocab: self.rows }, output_dim: self.rows }
    }
    fn main_metric(&self) -> MainMetric {
        MainMetric {
            name: "loss",
            higher_is_better: false,
            chance: Some((self.codec.vocab_size() as f64).ln()),
        }
    }
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch {
        self.stream.train_batch(step, micro, batch_size, device)
    }
    fn eval_batches(&self, batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        self.stream.eval_batches(batches, batch_size, device)
    }
    fn evaluate(&self, model: &Model, batches: &[Batch]) -> BTreeMap<String, f64> {
        lm_metrics(model, batches, self.chars_per_token)
    }
    fn codec(&self) -> Option<&dyn Codec> {
        Some(&self.codec)
    }
    fn save_artifacts(&self, run_dir: &Path) -> Result<(), TaskError> {
        let path = run_dir.join(TOKENIZER_FILE);
        self.codec
            .tokenizer
            .save(&path, false)
            .map_err(|e| TaskError::SaveCodec { path, reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_trains_saves_loads_and_round_trips() {
        let text = "the cat sat on the mat. the cat ate the rat.\n".repeat(50);
        let codec = BpeCodec::train(&text, 300).unwrap();
        assert!(codec.vocab_size() > 256 && codec.vocab_size() <= 300, "{}", codec.vocab_size());
        let ids = codec.encode("the cat sat").unwrap();
        assert!(ids.len() < "the cat sat".len(), "merges should shorten the text: {ids:?}");
        assert_eq!(codec.decode(&ids), "the cat sat");
        let dir = std::env::temp_dir().join(format!("attnlab-bpe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        codec.tokenizer.save(dir.join(TOKENIZER_FILE), false).unwrap();
        let loaded = BpeCodec::load(&dir.join(TOKENIZER_FILE)).unwrap();
        assert_eq!(loaded.encode("the cat sat").unwrap(), ids);
        std::fs::remove_dir_all(dir).ok();
    }
}
