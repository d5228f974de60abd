//! Why a Hugging Face directory could not be imported: a leaf the import's modules all use.

use crate::run_dir_error::RunDirError;
use crate::task::TaskError;
use attnlab_model::ModelConfigError;
use std::path::{Path, PathBuf};

/// Why a directory could not be imported; each names the file, key or tensor, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{dir} is not a Hugging Face model directory: it has no config.json")]
    NotAModel { dir: PathBuf },
    #[error(
        "config.json names no architectures: add \"architectures\": [\"LlamaForCausalLM\"] (or the model's class)"
    )]
    NoArchitecture,
    #[error("architecture {architecture} is not supported: attnlab imports {supported}")]
    UnsupportedArchitecture { architecture: String, supported: String },
    #[error(
        "{architecture}: {what} is not supported; attnlab would not reproduce this model exactly"
    )]
    UnsupportedOption { architecture: String, what: String },
    #[error("config.json has no {key}")]
    MissingKey { key: &'static str },
    #[error("config.json: {key} = {value} is not a valid value")]
    BadValue { key: &'static str, value: String },
    #[error("--context {context} must be between 1 and the checkpoint's {max_positions} positions")]
    ContextTooLong { context: usize, max_positions: usize },
    #[error("{dir} has neither model.safetensors nor model.safetensors.index.json")]
    NoWeights { dir: PathBuf },
    #[error("{index} names shard {file}, which is missing: download every shard")]
    MissingShard { index: PathBuf, file: String },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("tensor {name} is {dtype}: attnlab reads F32, F16 and BF16 checkpoints")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("the checkpoint has no tensor {name}: is config.json the one these weights came with?")]
    MissingTensor { name: String },
    #[error(
        "tensor {name} has shape {found:?} but config.json implies {expected:?}: is config.json the one these weights came with?"
    )]
    ShapeMismatch { name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error(
        "the checkpoint has {count} tensor(s) the architecture does not use, e.g. {name}: is config.json the one these weights came with?"
    )]
    UnusedTensor { name: String, count: usize },
    #[error(
        "{dir} has no tokenizer.json: attnlab reads the tokenizer in Hugging Face's tokenizers format"
    )]
    NoTokenizer { dir: PathBuf },
    #[error(transparent)]
    Tokenizer(#[from] TaskError),
    #[error("--text {path} is not a readable file: give a UTF-8 text file to evaluate on")]
    NoText { path: PathBuf },
    #[error(transparent)]
    Model(#[from] ModelConfigError),
    #[error(transparent)]
    Device(#[from] attnlab_model::BackendError),
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: std::io::Error },
}

impl ImportError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |reason| Self::Io { path: path.to_path_buf(), reason }
    }
}
