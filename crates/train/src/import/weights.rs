//! The checkpoint's tensors as `f32`: `model.safetensors`, or the shards a
//! `model.safetensors.index.json` names, read with the `safetensors` crate (the format's
//! reference implementation) and cast from `F32`, `F16` or `BF16` with `half`.

use super::error::ImportError;
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A tensor as the checkpoint stores it (PyTorch's layout), in `f32`.
#[derive(Clone, Debug)]
pub struct HfTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Every tensor of the checkpoint in `dir`, by name.
pub fn read_all(dir: &Path) -> Result<BTreeMap<String, HfTensor>, ImportError> {
    let files: Vec<String> = if dir.join(SINGLE_FILE).is_file() {
        vec![SINGLE_FILE.to_string()]
    } else if dir.join(INDEX_FILE).is_file() {
        shard_names(dir)?
    } else {
        return Err(ImportError::NoWeights { dir: dir.to_path_buf() });
    };
    let mut tensors = BTreeMap::new();
    for file in files {
        let path = dir.join(&file);
        if !path.is_file() {
            return Err(ImportError::MissingShard { index: dir.join(INDEX_FILE), file });
        }
        let bytes = std::fs::read(&path).map_err(ImportError::io(&path))?;
        let archive = SafeTensors::deserialize(&bytes)
            .map_err(|e| ImportError::Unreadable { path: path.clone(), reason: e.to_string() })?;
        for (name, view) in archive.tensors() {
            let values =
                to_f32(view.dtype(), view.data()).ok_or_else(|| ImportError::UnsupportedDtype {
                    name: name.clone(),
                    dtype: format!("{:?}", view.dtype()),
                })?;
            tensors.insert(name, HfTensor { shape: view.shape().to_vec(), values });
        }
    }
    Ok(tensors)
}

/// The distinct files an index's `weight_map` points to, in order.
fn shard_names(dir: &Path) -> Result<Vec<String>, ImportError> {
    let path = dir.join(INDEX_FILE);
    let text = std::fs::read_to_string(&path).map_err(ImportError::io(&path))?;
    let index: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ImportError::Unreadable { path: path.clone(), reason: e.to_string() })?;
    let map = index["weight_map"].as_object().ok_or_else(|| ImportError::Unreadable {
        path: path.clone(),
        reason: "no weight_map object".to_string(),
    })?;
    let files: BTreeSet<String> =
        map.values().filter_map(|f| f.as_str().map(String::from)).collect();
    Ok(files.into_iter().collect())
}

/// Little-endian `F32`, `F16` or `BF16` bytes as `f32` (`None` for any other dtype).
fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let words2 = || data.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    Some(match dtype {
        Dtype::F32 => {
            data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        Dtype::F16 => words2().map(|w| half::f16::from_bits(w).to_f32()).collect(),
        Dtype::BF16 => words2().map(|w| half::bf16::from_bits(w).to_f32()).collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_bytes_decode_to_their_values() {
        let bf16: Vec<u8> =
            [1.5f32, -0.25].iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(to_f32(Dtype::BF16, &bf16), Some(vec![1.5, -0.25]));
        let f16: Vec<u8> =
            [3.0f32, 0.5].iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(to_f32(Dtype::F16, &f16), Some(vec![3.0, 0.5]));
        assert_eq!(to_f32(Dtype::I64, &[0; 8]), None);
    }
}
