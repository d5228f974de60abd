//! Shared language-modelling data: a token stream split into train and validation parts, and
//! random windows of `seq_len + 1` tokens from each (nanoGPT's `get_batch`).

use super::interface::{Batch, Target, TaskError, token_nll};
use crate::seed;
use attnlab_model::{LmInput, Model};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::RngExt;
use std::collections::BTreeMap;
use std::path::Path;

pub struct TokenStream {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    pub seq_len: usize,
    pub seed: u64,
}

impl TokenStream {
    /// Splits `ids` into the first `1 - val_fraction` for training and the rest for validation,
    /// and checks both are long enough for one window.
    pub fn split(
        ids: Vec<u32>,
        val_fraction: f64,
        seq_len: usize,
        seed: u64,
        path: &Path,
    ) -> Result<Self, TaskError> {
        let n_train = ((1.0 - val_fraction) * ids.len() as f64) as usize;
        let (train, val) = (ids[..n_train].to_vec(), ids[n_train..].to_vec());
        let need = seq_len + 1;
        if train.len() < need || val.len() < need {
            return Err(TaskError::TooShort {
                path: path.to_path_buf(),
                tokens: ids.len(),
                train: train.len(),
                val: val.len(),
                need,
            });
        }
        Ok(Self { train, val, seq_len, seed })
    }

    /// `batch_size` random windows of `t` tokens from `data`, each with its next-token targets.
    fn windows(
        &self,
        data: &[u32],
        t: usize,
        rng: &mut impl rand::Rng,
        batch_size: usize,
        device: &Device,
    ) -> Batch {
        let (mut x, mut y) =
            (Vec::with_capacity(batch_size * t), Vec::with_capacity(batch_size * t));
        for _ in 0..batch_size {
            let start = rng.random_range(0..data.len() - t);
            x.extend(data[start..start + t].iter().map(|&v| v as i64));
            y.extend(data[start + 1..start + t + 1].iter().map(|&v| v as i64));
        }
        let ids =
            |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [batch_size, t]), device);
        Batch {
            input: LmInput::Tokens(ids(x)),
            target: Target::Tokens { ids: ids(y), mask: None },
            tokens: batch_size * t,
        }
    }

    /// Micro-batch `micro` of optimizer step `step`.
    pub fn train_batch(
        &self,
        step: usize,
        micro: usize,
        batch_size: usize,
        device: &Device,
    ) -> Batch {
        self.windows(
            &self.train,
            self.seq_len,
            &mut seed::rng(self.seed, "train", batch_index(step, micro)),
            batch_size,
            device,
        )
    }

    pub fn eval_batches(&self, batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        let mut rng = seed::rng(self.seed, "eval", 0);
        (0..batches)
            .map(|_| self.windows(&self.val, self.seq_len, &mut rng, batch_size, device))
            .collect()
    }

    /// `Ok` when the validation split holds one window of `len` tokens and its targets.
    pub fn check_eval_window(&self, len: usize) -> Result<(), TaskError> {
        if self.val.len() < len + 1 {
            return Err(TaskError::EvalWindow { val: self.val.len(), len });
        }
        Ok(())
    }

    /// The fixed validation windows of `len` tokens (a stream of their own), or a one-line error
    /// when the validation split is shorter than one window.
    pub fn eval_batches_at(
        &self,
        len: usize,
        batches: usize,
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<Batch>, TaskError> {
        self.check_eval_window(len)?;
        let mut rng = seed::rng(self.seed, "eval-length", len as u64);
        Ok((0..batches)
            .map(|_| self.windows(&self.val, len, &mut rng, batch_size, device))
            .collect())
    }
}

/// The language-modelling metrics: mean loss and accuracy over `batches`, and bits per character
/// (`chars_per_token` is 1 for a character vocabulary).
pub fn lm_metrics(model: &Model, batches: &[Batch], chars_per_token: f64) -> BTreeMap<String, f64> {
    let mut m = super::interface::mean_metrics(model, batches);
    m.insert("bits_per_char".into(), m["loss"] / std::f64::consts::LN_2 / chars_per_token);
    m
}

/// Loss per position bucket: for increasing `lengths` ℓ₁ < … < ℓₖ, `loss@ℓᵢ` is the mean
/// next-token loss at positions [ℓᵢ₋₁, ℓᵢ) (ℓ₀ = 0) of `batches`, windows of ℓₖ tokens.
pub fn loss_per_position_bucket(
    model: &Model,
    batches: &[Batch],
    lengths: &[usize],
) -> BTreeMap<String, f64> {
    let Some(&longest) = lengths.last() else { return BTreeMap::new() };
    let mut sum_per_position = vec![0.0f64; longest];
    let mut rows = 0usize;
    for batch in batches {
        let Target::Tokens { ids, .. } = &batch.target else { continue };
        let nll = token_nll(model.forward(batch.input.clone()), ids);
        rows += nll.dims()[0];
        let per_position =
            nll.sum_dim(0).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 losses");
        for (s, v) in sum_per_position.iter_mut().zip(per_position) {
            *s += v as f64;
        }
    }
    let mut start = 0;
    let mut out = BTreeMap::new();
    for &end in lengths {
        let bucket = &sum_per_position[start..end];
        out.insert(
            format!("loss@{end}"),
            bucket.iter().sum::<f64>() / (bucket.len() * rows.max(1)) as f64,
        );
        start = end;
    }
    out
}

/// Reads a UTF-8 corpus with one-line errors for the usual mistakes. A `.jsonl` file is one
/// JSON object per line; their `text` fields, joined by newlines, are the corpus.
pub fn read_corpus(path: &Path) -> Result<String, TaskError> {
    let bytes = std::fs::read(path)
        .map_err(|reason| TaskError::ReadCorpus { path: path.to_path_buf(), reason })?;
    if bytes.is_empty() {
        return Err(TaskError::EmptyCorpus { path: path.to_path_buf() });
    }
    let text = String::from_utf8(bytes).map_err(|e| TaskError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    if path.extension().is_some_and(|e| e == "jsonl") {
        return jsonl_texts(&text, path);
    }
    Ok(text)
}

/// The `text` fields of a JSON-lines file, joined by newlines (blank lines skipped).
fn jsonl_texts(jsonl: &str, path: &Path) -> Result<String, TaskError> {
    let mut texts = Vec::new();
    for (i, line) in jsonl.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let record: serde_json::Value = serde_json::from_str(line)
            .map_err(|_| TaskError::JsonlLine { path: path.to_path_buf(), line: i + 1 })?;
        let text = record["text"]
            .as_str()
            .ok_or_else(|| TaskError::JsonlLine { path: path.to_path_buf(), line: i + 1 })?;
        texts.push(text.to_string());
    }
    if texts.is_empty() {
        return Err(TaskError::EmptyCorpus { path: path.to_path_buf() });
    }
    Ok(texts.join("\n"))
}

/// Micro-batches are numbered across steps so every (step, micro) pair is its own stream.
pub fn batch_index(step: usize, micro: usize) -> u64 {
    ((step as u64) << 16) | micro as u64
}

#[cfg(test)]
mod jsonl_tests {
    use super::*;

    #[test]
    fn jsonl_corpora_are_their_text_fields_joined_and_bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("attnlab-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("c.jsonl");
        std::fs::write(&good, "{\"text\": \"one\", \"id\": 1}\n\n{\"text\": \"two\"}\n").unwrap();
        assert_eq!(read_corpus(&good).unwrap(), "one\ntwo");
        let bad = dir.join("b.jsonl");
        std::fs::write(&bad, "{\"text\": \"one\"}\n{\"body\": \"two\"}\n").unwrap();
        assert!(read_corpus(&bad).unwrap_err().to_string().contains("line 2"));
        std::fs::remove_dir_all(dir).ok();
    }
}
