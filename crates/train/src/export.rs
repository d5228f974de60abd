//! Export of a trained model to safetensors: every parameter under its module path (see
//! `attnlab_model::lm` for the names), little-endian f32, plus what a loader needs to rebuild
//! the model from the file alone, as string metadata:
//!
//! | key | value |
//! |---|---|
//! | `format`, `format_version` | `attnlab`, [`FORMAT_VERSION`] |
//! | `attnlab_version` | the crate version that wrote the file |
//! | `attnlab_config` | the run's resolved config (TOML) |
//! | `linear_weight_layout` | `[d_in, d_out]`: Burn's `Linear` weight, the transpose of PyTorch's |
//! | `model_input`, `input_dim`, `output_dim` | `tokens` (vocabulary size) or `vectors` (width); logits or outputs per position |
//! | `vocabulary` or `tokenizer_json` | text tasks: the characters (JSON list, id i at index i) or the BPE tokenizer file |
//! | `tensor_sha256` | JSON object, tensor name → SHA-256 of its stored bytes: a loader refuses a file whose data changed after it was written |
//! | `attnlab_mixers` | JSON list, one [`attnlab_model::MixerDescription`] per layer: family, variant, every option with its default, the constants a reimplementation needs, and (in a weights export) the layer's parameter names and shapes |
//!
//! `dump_logits` writes the other half of a parity check: inputs and the logits this build
//! computes for them, for `python/attnlab_torch` to reproduce.

use crate::config::RunConfig;
use crate::params::named_tensors;
use crate::task::Task;
use attnlab_model::{LmInput, Model, ModelInput};
use burn::tensor::Device;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub mod hf;
pub mod hf_llama;

/// Version of the export's layout and metadata (1: weights and config only; 2: adds the
/// vocabulary or tokenizer, the input kind and sizes, and the writer's version; 3: adds
/// `attnlab_mixers`, each layer's resolved mixer; 4: adds `tensor_sha256`).
pub const FORMAT_VERSION: &str = "4";

/// Metadata key of the per-tensor digests.
pub const DIGESTS_KEY: &str = "tensor_sha256";

/// Metadata key of the per-layer mixer descriptions.
pub const MIXERS_KEY: &str = "attnlab_mixers";

/// The file that marks a directory as an attnlab export (`--format hf`; what `--force` may
/// replace).
pub const MARKER_FILE: &str = "attnlab.json";

/// An export target that may not be written, or a write that failed; the message names the flag
/// or file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{flag} {path}: the file name must end in .safetensors")]
    NotSafetensors { flag: &'static str, path: PathBuf },
    #[error("{flag} {path} is a directory: name a .safetensors file")]
    IsDirectory { flag: &'static str, path: PathBuf },
    #[error("{flag} {path} already exists: pass --force to replace it, or choose another file")]
    FileExists { flag: &'static str, path: PathBuf },
    #[error("--to {path} already exists: pass --force to replace it, or choose another directory")]
    DirectoryExists { path: PathBuf },
    #[error(
        "--to {path} exists and is not an attnlab export (no {marker}): choose another directory",
        marker = MARKER_FILE
    )]
    NotAnExport { path: PathBuf },
    #[error("--to {path}: name a directory")]
    NoDirectoryName { path: PathBuf },
    #[error("--rows must be at least 1")]
    NoRows,
    #[error(
        "the model gives non-finite logits on this input: its weights are unusable; dump an earlier checkpoint (--checkpoint step-N)"
    )]
    NonFiniteLogits,
    /// A parameter GPT-2's layout needs is missing from the model.
    #[error("the model has no parameter {name}")]
    MissingParameter { name: String },
    /// A tensor safetensors refuses (its shape and bytes disagree).
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: safetensors::SafeTensorError },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: std::io::Error },
    #[error("cannot write {path}: {reason}")]
    Serialize { path: PathBuf, reason: safetensors::SafeTensorError },
}

/// Each layer's [`attnlab_model::MixerDescription`] as JSON; with `tensors`, each lists its layer's parameters.
fn mixer_descriptions(config: &RunConfig, tensors: &[Entry]) -> String {
    let mut layers = config.model.describe_mixers().expect("a validated run config");
    for (i, layer) in layers.iter_mut().enumerate() {
        let prefix = format!("blocks.{i}.mixer.");
        for (name, _, shape, _) in tensors {
            if let Some(path) = name.strip_prefix(&prefix) {
                layer.parameters.insert(path.to_string(), shape.clone());
            }
        }
    }
    serde_json::to_string(&layers).expect("descriptions serialise")
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The metadata every export carries (see the module docs).
pub fn export_metadata(config: &RunConfig, task: &dyn Task) -> HashMap<String, String> {
    let io = task.io();
    let (kind, input_dim) = match io.input {
        ModelInput::Tokens { vocab } => ("tokens", vocab),
        ModelInput::Vectors { dim } => ("vectors", dim),
    };
    let mut meta = HashMap::from([
        ("format".to_string(), "attnlab".to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("attnlab_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("attnlab_config".to_string(), config.to_toml()),
        ("linear_weight_layout".to_string(), "[d_in, d_out]".to_string()),
        ("model_input".to_string(), kind.to_string()),
        ("input_dim".to_string(), input_dim.to_string()),
        ("output_dim".to_string(), io.output_dim.to_string()),
        (MIXERS_KEY.to_string(), mixer_descriptions(config, &[])),
    ]);
    if let Some(codec) = task.codec() {
        let (key, value) = codec.export_entry();
        meta.insert(key.to_string(), value);
    }
    meta
}

/// Checks `path` is a `.safetensors` file name that may be written (`overwrite`: `--force`).
fn check_target(path: &Path, flag: &'static str, overwrite: bool) -> Result<(), ExportError> {
    let path_buf = || path.to_path_buf();
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(ExportError::NotSafetensors { flag, path: path_buf() });
    }
    if path.is_dir() {
        return Err(ExportError::IsDirectory { flag, path: path_buf() });
    }
    if path.exists() && !overwrite {
        return Err(ExportError::FileExists { flag, path: path_buf() });
    }
    Ok(())
}

/// Writes `tensors` and `metadata` through a temporary file beside `path`, renamed into place,
/// so a failed write leaves neither a partial file nor the temporary one.
fn write_atomically(
    tensors: &[Entry],
    mut metadata: HashMap<String, String>,
    path: &Path,
) -> Result<(), ExportError> {
    let digests: std::collections::BTreeMap<&str, String> = tensors
        .iter()
        .map(|(name, _, _, bytes)| (name.as_str(), crate::checksum::sha256_hex(bytes)))
        .collect();
    metadata.insert(
        DIGESTS_KEY.to_string(),
        serde_json::to_string(&digests).expect("digests serialise"),
    );
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|reason| ExportError::Tensor { name: name.clone(), reason })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("export.safetensors");
    let temp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = safetensors::serialize_to_file(views, Some(metadata), &temp)
        .map_err(|reason| ExportError::Serialize { path: path.to_path_buf(), reason })
        .and_then(|_| {
            std::fs::rename(&temp, path)
                .map_err(|reason| ExportError::Write { path: path.to_path_buf(), reason })
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Writes `model` to `path` with [`export_metadata`]. An existing file is replaced only with
/// `overwrite` (`--force`); a directory never. Returns the number of tensors written.
pub fn export_safetensors(
    model: &Model,
    config: &RunConfig,
    task: &dyn Task,
    path: &Path,
    overwrite: bool,
) -> Result<usize, ExportError> {
    check_target(path, "--to", overwrite)?;
    let tensors: Vec<Entry> = named_tensors(model)
        .into_iter()
        .map(|(name, data)| {
            let shape = data.shape().to_vec();
            let values: Vec<f32> = data.convert::<f32>().try_into_vec().expect("float parameters");
            (name, Dtype::F32, shape, f32_bytes(&values))
        })
        .collect();
    let mut metadata = export_metadata(config, task);
    metadata.insert(MIXERS_KEY.to_string(), mixer_descriptions(config, &tensors));
    write_atomically(&tensors, metadata, path)?;
    Ok(tensors.len())
}

/// Writes the first `rows` sequences of the task's first evaluation batch and the logits the
/// model gives them: `tokens` (i64 `[rows, seq]`) or `vectors` (f32 `[rows, seq, dim]`), and
/// `logits` (f32 `[rows, seq, output_dim]`), with the export's metadata. Returns the logits' shape.
pub fn dump_logits(
    model: &Model,
    config: &RunConfig,
    task: &dyn Task,
    rows: usize,
    path: &Path,
    overwrite: bool,
    device: &Device,
) -> Result<[usize; 3], ExportError> {
    check_target(path, "--dump-logits", overwrite)?;
    if rows == 0 {
        return Err(ExportError::NoRows);
    }
    let batch = task.eval_batches(1, rows.min(config.train.batch_size), device).remove(0);
    let logits = model.forward(batch.input.clone());
    let shape = logits.dims();
    let input: Entry = match batch.input {
        LmInput::Tokens(ids) => {
            let dims = ids.dims().to_vec();
            let values: Vec<i64> =
                ids.into_data().convert::<i64>().try_into_vec().expect("int ids");
            (
                "tokens".to_string(),
                Dtype::I64,
                dims,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        }
        LmInput::Vectors(v) => {
            let dims = v.dims().to_vec();
            let values: Vec<f32> =
                v.into_data().convert::<f32>().try_into_vec().expect("float inputs");
            ("vectors".to_string(), Dtype::F32, dims, f32_bytes(&values))
        }
    };
    let values: Vec<f32> =
        logits.into_data().convert::<f32>().try_into_vec().expect("float logits");
    if values.iter().any(|v| !v.is_finite()) {
        return Err(ExportError::NonFiniteLogits);
    }
    let tensors =
        vec![input, ("logits".to_string(), Dtype::F32, shape.to_vec(), f32_bytes(&values))];
    write_atomically(&tensors, export_metadata(config, task), path)?;
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use attnlab_model::MixerDescription;
    use burn::tensor::Device;
    use safetensors::SafeTensors;

    #[test]
    fn exported_tensors_read_back_with_their_names_values_and_config() {
        let config = RunConfig::from_toml("[task]\nkind = \"mqar\"\n[model]\nd_model = 16\nn_heads = 2\nmixer = [\"softmax\", \"linear:elu1\", \"sigmoid\", \"softmax:learned\"]\n", &[]).unwrap();
        let task = crate::task::build(&config, None).unwrap();
        let model = config.model.init(&task.io(), 1, &Device::flex()).unwrap();
        let path =
            std::env::temp_dir().join(format!("attnlab-export-{}.safetensors", std::process::id()));
        let n = export_safetensors(&model, &config, task.as_ref(), &path, false).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let expected = named_tensors(&model);
        assert_eq!(n, expected.len());
        assert_eq!(st.len(), expected.len());
        for (name, data) in expected {
            let view = st.tensor(&name).unwrap_or_else(|_| panic!("{name} missing"));
            assert_eq!(view.shape(), &data.shape().to_vec()[..], "{name}");
            let values: Vec<f32> =
                view.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            assert_eq!(values, data.convert::<f32>().try_into_vec::<f32>().unwrap(), "{name}");
        }
        assert!(
            st.names().contains(&"blocks.0.mixer.Softmax.heads.qkv.weight"),
            "{:?}",
            st.names()
        );
        assert!(st.names().contains(&"blocks.3.mixer.Softmax.scale"), "{:?}", st.names());
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let saved = meta.metadata().as_ref().unwrap()["attnlab_config"].clone();
        assert_eq!(RunConfig::from_toml(&saved, &[]).unwrap(), config);
        let meta = meta.metadata().as_ref().unwrap();
        assert_eq!(meta["format_version"], FORMAT_VERSION);
        assert_eq!(meta["model_input"], "tokens");
        assert_eq!(meta["input_dim"], task.io().output_dim.to_string());
        assert!(!meta.contains_key("vocabulary"), "MQAR has no text vocabulary");
        // Each layer's mixer, resolved: variant spelled out, defaults filled in, conventions
        // and the layer's own parameters with their shapes.
        let mixers: Vec<MixerDescription> = serde_json::from_str(&meta[MIXERS_KEY]).unwrap();
        assert_eq!(mixers.len(), 4);
        assert_eq!(
            (mixers[0].family.as_str(), mixers[0].variant.as_deref()),
            ("softmax", Some("sqrt_d"))
        );
        assert_eq!(mixers[0].options["forget"], serde_json::json!(false));
        assert_eq!(mixers[0].conventions["softpick_eps"].value, serde_json::json!(1e-6));
        assert_eq!(mixers[1].spec, "linear:elu1");
        assert_eq!(mixers[1].options["chunk"], serde_json::json!(64));
        assert_eq!(mixers[2].options["bias"], serde_json::Value::Null);
        assert_eq!(mixers[3].parameters["Softmax.scale"], vec![2]);
        assert_eq!(mixers[1].parameters["Linear.heads.qkv.weight"], vec![16, 48]);
        assert!(mixers[1].parameters.keys().all(|k| k.starts_with("Linear.")));
        assert!(
            export_safetensors(&model, &config, task.as_ref(), &path.with_extension("bin"), false)
                .unwrap_err()
                .to_string()
                .contains(".safetensors")
        );

        // An existing file is kept unless forced; a directory is refused; nothing is left over.
        std::fs::write(&path, b"mine").unwrap();
        let err = export_safetensors(&model, &config, task.as_ref(), &path, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists: pass --force"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
        assert_eq!(export_safetensors(&model, &config, task.as_ref(), &path, true).unwrap(), n);
        // The same tensors (the metadata's key order may differ between writes).
        let forced = std::fs::read(&path).unwrap();
        let (st, again) =
            (SafeTensors::deserialize(&bytes).unwrap(), SafeTensors::deserialize(&forced).unwrap());
        for name in st.names() {
            assert_eq!(
                st.tensor(name).unwrap().data(),
                again.tensor(name).unwrap().data(),
                "{name}"
            );
        }
        let dir = path.with_extension("d.safetensors");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            export_safetensors(&model, &config, task.as_ref(), &dir, true)
                .unwrap_err()
                .to_string()
                .contains("is a directory")
        );
        // A write that fails (its directory is missing) leaves no temporary file behind.
        let missing = std::env::temp_dir()
            .join(format!("attnlab-export-missing-{}", std::process::id()))
            .join("m.safetensors");
        assert!(
            export_safetensors(&model, &config, task.as_ref(), &missing, false)
                .unwrap_err()
                .to_string()
                .contains("cannot write")
        );
        let parent = path.parent().unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(parent)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().contains(&format!(".tmp-{}", std::process::id()))
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir(dir).unwrap();
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn dumped_logits_are_the_models_on_the_dumped_inputs_and_a_char_vocabulary_is_embedded() {
        let dir = std::env::temp_dir().join(format!("attnlab-dump-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let corpus = dir.join("corpus.txt");
        std::fs::write(&corpus, "to be or not to be, that is the question.\n".repeat(40)).unwrap();
        let toml = format!(
            "[task]\nkind = \"char_lm\"\npath = {:?}\n[model]\nd_model = 16\nn_heads = 2\nn_layers = 1\nmax_seq_len = 8\n[train]\nbatch_size = 4\n",
            corpus.to_str().unwrap()
        );
        let config = RunConfig::from_toml(&toml, &[]).unwrap();
        let device = Device::flex();
        let task = crate::task::build(&config, None).unwrap();
        let model = config.model.init(&task.io(), 3, &device).unwrap();
        let path = dir.join("dump.safetensors");
        let shape = dump_logits(&model, &config, task.as_ref(), 3, &path, false, &device).unwrap();
        assert_eq!(shape, [3, 8, task.io().output_dim]);
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let tokens = st.tensor("tokens").unwrap();
        assert_eq!(tokens.dtype(), Dtype::I64);
        let ids: Vec<i64> =
            tokens.data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        let input = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(ids, [3, 8]),
            &device,
        );
        let expected: Vec<f32> = model
            .forward(LmInput::Tokens(input))
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap();
        let logits: Vec<f32> = st
            .tensor("logits")
            .unwrap()
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(logits, expected);
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let vocabulary: Vec<String> =
            serde_json::from_str(&meta.metadata().as_ref().unwrap()["vocabulary"]).unwrap();
        assert_eq!(vocabulary.concat(), "\n ,.abehinoqrstu");
        // The dump is no export: an existing file is kept without --force.
        assert!(
            dump_logits(&model, &config, task.as_ref(), 3, &path, false, &device)
                .unwrap_err()
                .to_string()
                .contains("--dump-logits")
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
