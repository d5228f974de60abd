//! `attnlab import --hf DIR --out RUN`: a local Hugging Face model directory (`config.json`,
//! `model.safetensors` or a sharded index, `tokenizer.json`) becomes an attnlab run directory
//! that `eval`, `sample`, `compare`, `swap`, `export` and `train --init-run` take like any other.
//!
//! The run's task is `bpe_lm` on a text file of the user's (`--text`), with the checkpoint's
//! tokenizer and its embedding rows (`task.embedding_rows`); its weights are checkpoints `final`
//! and `best` (the same weights). Everything is read and checked before the directory is
//! created, so bad input leaves nothing behind.

pub mod error;
pub mod hf_config;
pub mod names;
pub mod weights;

pub use error::ImportError;

use crate::checkpoint;
use crate::config::{BpeConfig, RunConfig, TaskConfig};
use crate::run_dir::{CONFIG_FILE, RunDir};
use crate::run_meta::{InitialisedFrom, RunMeta};
use crate::task::bpe_lm::{BpeCodec, TOKENIZER_FILE};
use crate::task::{self, TaskError};
use crate::transfer::{transfer, variant_free_shapes};
use attnlab_model::{BackendKind, ModelInput, ModelIo};
use burn::tensor::TensorData;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What `attnlab import` is asked to do.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub hf_dir: PathBuf,
    pub out: PathBuf,
    /// The text `eval` scores the model on (the run's `task.path`).
    pub text: PathBuf,
    /// The context (`model.max_seq_len`); `None` = the checkpoint's, at most 4096.
    pub context: Option<usize>,
}

/// What an import made.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub architecture: String,
    pub config: RunConfig,
    pub parameters: usize,
    pub tensors: usize,
    pub tokenizer_vocab: usize,
}

/// Imports `options.hf_dir` into a new run directory `options.out` (see the module docs).
pub fn import_hf(options: &ImportOptions) -> Result<ImportReport, ImportError> {
    let dir = &options.hf_dir;
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(ImportError::NotAModel { dir: dir.clone() });
    }
    let text = std::fs::read_to_string(&config_path).map_err(ImportError::io(&config_path))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        ImportError::Unreadable { path: config_path.clone(), reason: e.to_string() }
    })?;
    let hf = hf_config::read(&json, options.context)?;

    let tokenizer_path = dir.join(TOKENIZER_FILE);
    if !tokenizer_path.is_file() {
        return Err(ImportError::NoTokenizer { dir: dir.clone() });
    }
    let tokenizer_vocab = BpeCodec::load(&tokenizer_path)?.vocab_size();
    if tokenizer_vocab > hf.vocab_rows {
        return Err(TaskError::VocabularyExceedsEmbedding {
            vocab: tokenizer_vocab,
            rows: hf.vocab_rows,
        }
        .into());
    }
    if !options.text.is_file() {
        return Err(ImportError::NoText { path: options.text.clone() });
    }
    let text_path = std::path::absolute(&options.text).map_err(ImportError::io(&options.text))?;
    let config = RunConfig {
        seed: 0,
        device: BackendKind::Flex,
        devices: None,
        task: TaskConfig::BpeLm(BpeConfig {
            path: text_path,
            vocab_size: tokenizer_vocab,
            embedding_rows: Some(hf.vocab_rows),
            ..BpeConfig::default()
        }),
        model: hf.model.clone(),
        train: Default::default(),
    };
    config.validate()?;

    // The weights, mapped and checked against the model the config builds.
    let mapped = names::map(&hf, weights::read_all(dir)?)?;
    let io =
        ModelIo { input: ModelInput::Tokens { vocab: hf.vocab_rows }, output_dim: hf.vocab_rows };
    let device = config.device.device()?;
    let model = config.model.init(&io, config.seed, &device)?;
    let expected = variant_free_shapes(&model);
    for (name, shape) in &expected {
        match mapped.get(name) {
            Some((found, _)) if found == shape => {}
            Some((found, _)) => {
                return Err(ImportError::ShapeMismatch {
                    name: name.clone(),
                    found: found.clone(),
                    expected: shape.clone(),
                });
            }
            None => return Err(ImportError::MissingTensor { name: name.clone() }),
        }
    }
    let data: BTreeMap<String, TensorData> = mapped
        .into_iter()
        .map(|(name, (shape, values))| (name, TensorData::new(values, shape)))
        .collect();
    let (model, report) = transfer(model, &data);
    debug_assert!(report.fresh.is_empty(), "every parameter was checked above");

    // Only now the run directory: tokenizer and config first, then the task (which reads them),
    // meta.json and the checkpoints.
    let run = RunDir::create(&options.out)?;
    let tokenizer_copy = run.file(TOKENIZER_FILE);
    std::fs::copy(&tokenizer_path, &tokenizer_copy).map_err(ImportError::io(&tokenizer_copy))?;
    run.write_file(CONFIG_FILE, &config.to_toml())?;
    let task = task::build(&config, Some(&run.path))?;
    let parameters = crate::params::count(&model);
    let mut meta = RunMeta::at_start(&config, parameters, task.main_metric());
    meta.initialised_from = Some(InitialisedFrom {
        checkpoint: std::path::absolute(dir).unwrap_or(dir.clone()),
        copied: report.copied.clone(),
        fresh: report.fresh,
    });
    meta.write(&run)?;
    checkpoint::save_final_and_best(&run, &model)?;
    Ok(ImportReport {
        architecture: hf.architecture,
        config,
        parameters,
        tensors: report.copied.len(),
        tokenizer_vocab,
    })
}
