//! Export of a trained model to safetensors: every parameter under its module path (see
//! `attnlab_model::lm` for the names), little-endian f32, plus the run's resolved config as
//! metadata (`attnlab_config`, TOML). Burn's `Linear` stores its weight as `[d_in, d_out]`
//! (the transpose of PyTorch's `nn.Linear.weight`); the metadata key `linear_weight_layout`
//! says so, so a loader can transpose.

use crate::config::RunConfig;
use crate::params::named_tensors;
use attnlab_model::Model;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Writes `model` to `path` through a temporary file beside it, renamed into place, so a failed
/// export leaves neither a partial file nor the temporary one. An existing file is replaced
/// only with `overwrite` (`--force`); a directory never.
pub fn export_safetensors(model: &Model, config: &RunConfig, path: &Path, overwrite: bool) -> Result<usize, String> {
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(format!("--to {}: the file name must end in .safetensors", path.display()));
    }
    if path.is_dir() {
        return Err(format!("--to {} is a directory: name a .safetensors file", path.display()));
    }
    if path.exists() && !overwrite {
        return Err(format!("--to {} already exists: pass --force to replace it, or choose another file", path.display()));
    }
    let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = named_tensors(model)
        .into_iter()
        .map(|(name, data)| {
            let shape = data.shape().to_vec();
            let values: Vec<f32> = data.convert::<f32>().try_into_vec().expect("float parameters");
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, bytes, shape)
        })
        .collect();
    let views = tensors
        .iter()
        .map(|(name, bytes, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v)).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([
        ("format".to_string(), "attnlab".to_string()),
        ("attnlab_config".to_string(), config.to_toml()),
        ("linear_weight_layout".to_string(), "[d_in, d_out]".to_string()),
    ]);
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("export.safetensors");
    let temp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = safetensors::serialize_to_file(views, Some(metadata), &temp)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
        .and_then(|_| std::fs::rename(&temp, path).map_err(|e| format!("cannot write {}: {e}", path.display())));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map(|_| tensors.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use attnlab_model::{ModelInput, ModelIo};
    use burn::tensor::Device;
    use safetensors::SafeTensors;

    #[test]
    fn exported_tensors_read_back_with_their_names_values_and_config() {
        let config = RunConfig::from_toml("[task]\nkind = \"mqar\"\n[model]\nd_model = 16\nn_heads = 2\nmixer = [\"softmax\", \"linear:elu1\", \"sigmoid\", \"softmax:learned\"]\n", &[]).unwrap();
        let io = ModelIo { input: ModelInput::Tokens { vocab: 10 }, output_dim: 10 };
        let model = config.model.init(&io, 1, &Device::flex()).unwrap();
        let path = std::env::temp_dir().join(format!("attnlab-export-{}.safetensors", std::process::id()));
        let n = export_safetensors(&model, &config, &path, false).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let expected = named_tensors(&model);
        assert_eq!(n, expected.len());
        assert_eq!(st.len(), expected.len());
        for (name, data) in expected {
            let view = st.tensor(&name).unwrap_or_else(|_| panic!("{name} missing"));
            assert_eq!(view.shape(), &data.shape().to_vec()[..], "{name}");
            let values: Vec<f32> = view.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            assert_eq!(values, data.convert::<f32>().try_into_vec::<f32>().unwrap(), "{name}");
        }
        assert!(st.names().contains(&"blocks.0.mixer.Softmax.heads.qkv.weight"), "{:?}", st.names());
        assert!(st.names().contains(&"blocks.3.mixer.Softmax.scale"), "{:?}", st.names());
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let saved = meta.metadata().as_ref().unwrap()["attnlab_config"].clone();
        assert_eq!(RunConfig::from_toml(&saved, &[]).unwrap(), config);
        assert!(export_safetensors(&model, &config, &path.with_extension("bin"), false).unwrap_err().contains(".safetensors"));

        // An existing file is kept unless forced; a directory is refused; nothing is left over.
        std::fs::write(&path, b"mine").unwrap();
        let err = export_safetensors(&model, &config, &path, false).unwrap_err();
        assert!(err.contains("already exists: pass --force"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
        assert_eq!(export_safetensors(&model, &config, &path, true).unwrap(), n);
        // The same tensors (the metadata's key order may differ between writes).
        let forced = std::fs::read(&path).unwrap();
        let (st, again) = (SafeTensors::deserialize(&bytes).unwrap(), SafeTensors::deserialize(&forced).unwrap());
        for name in st.names() {
            assert_eq!(st.tensor(name).unwrap().data(), again.tensor(name).unwrap().data(), "{name}");
        }
        let dir = path.with_extension("d.safetensors");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(export_safetensors(&model, &config, &dir, true).unwrap_err().contains("is a directory"));
        // A write that fails (its directory is missing) leaves no temporary file behind.
        let missing = std::env::temp_dir().join(format!("attnlab-export-missing-{}", std::process::id())).join("m.safetensors");
        assert!(export_safetensors(&model, &config, &missing, false).unwrap_err().contains("cannot write"));
        let parent = path.parent().unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(parent).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(&format!(".tmp-{}", std::process::id()))).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir(dir).unwrap();
        std::fs::remove_file(path).unwrap();
    }
}
