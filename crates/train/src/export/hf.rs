//! `attnlab export --format hf`: a Hugging Face directory that
//! `transformers.GPT2LMHeadModel.from_pretrained(dir)` loads, for stacks that are plain GPT-2
//! (Radford et al. 2019): softmax attention with 1/√d per head in every layer, learned
//! positions, LayerNorm, a GELU MLP, causal, token inputs.
//!
//! The mapping is one to one. GPT-2's `Conv1D` stores `[d_in, d_out]`, Burn's `Linear` layout,
//! so every projection is copied as it is; its fused `c_attn` has attnlab's `[q | k | v]`
//! head-major columns; only the untied `lm_head` (PyTorch `nn.Linear`, `[d_out, d_in]`) is
//! transposed. attnlab's exact-erf GELU is `activation_function = "gelu"` (GPT-2's own
//! default is the tanh approximation, `gelu_new`), LayerNorm ε is 1e-5 in both. A stack
//! without biases gets zero biases, and one without an MLP (`mlp_ratio = 0`) a zero MLP of
//! width 1: both give the same function in GPT-2's fixed layout.
//!
//! Llama-family stacks (RoPE, RMSNorm, SwiGLU, softmax) are written by `hf_llama.rs` as Llama,
//! Mistral, Qwen2 or Qwen3. Any other stack gets the directory too, without `config.json`: the attnlab export, the
//! tokenizer and a README.md saying why it is not GPT-2 and how to load it with
//! `python/attnlab_torch`.

use super::{Entry, ExportError, export_metadata, f32_bytes};
use crate::config::RunConfig;
use crate::params::named_tensors;
use crate::task::Task;
use attnlab_model::block::{MlpKind, NormKind};
use attnlab_model::position::PositionKind;
use attnlab_model::{Model, ModelInput};
use burn::tensor::TensorData;
use safetensors::tensor::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use super::MARKER_FILE;

/// Why this stack is not a plain GPT-2 (empty when it is).
pub fn gpt2_mismatches(config: &RunConfig, task: &dyn Task) -> Vec<String> {
    let m = &config.model;
    let mut why = Vec::new();
    let plain: Vec<String> =
        m.mixer.0.iter().map(|s| s.to_string()).filter(|s| s != "softmax").collect();
    if !plain.is_empty() {
        why.push(format!(
            "its attention is {} (GPT-2 has plain `softmax`, 1/√d per head, in every layer)",
            plain.join(", ")
        ));
    }
    if m.positions != PositionKind::Learned {
        why.push(
            format!("its positions are {:?} (GPT-2 learns absolute positions)", m.positions)
                .to_lowercase(),
        );
    }
    if m.norm != NormKind::Layer {
        why.push("it uses RMSNorm (GPT-2 uses LayerNorm)".to_string());
    }
    if !m.causal {
        why.push("it is bidirectional (GPT-2 is causal)".to_string());
    }
    if m.mlp == MlpKind::Swiglu {
        why.push("its MLP is SwiGLU (GPT-2's is GELU)".to_string());
    }
    if m.kv_heads() != m.n_heads || m.head_dim() * m.n_heads != m.d_model || m.qk_head_norm {
        why.push(
            "its attention heads are grouped, resized or normed per head (GPT-2 has plain multi-head attention)"
                .to_string(),
        );
    }
    if [m.qkv_bias, m.out_bias, m.mlp_bias].iter().any(|b| b.is_some_and(|b| b != m.bias)) {
        why.push("it has biases on some projections only (GPT-2 has all or none)".to_string());
    }
    if !matches!(task.io().input, ModelInput::Tokens { .. }) {
        why.push("it reads vectors, not tokens".to_string());
    }
    if m.canon.any() {
        why.push(format!("it has Canon layers (model.canon = \"{}\"; GPT-2 has none)", m.canon));
    }
    why
}

/// Writes the directory `to` (see the module docs); returns the number of tensors written.
/// An existing `to` is replaced only with `overwrite` and only when it holds an attnlab
/// export ([`MARKER_FILE`]): a directory of the user's is never touched.
pub fn export_gpt2(
    model: &Model,
    config: &RunConfig,
    task: &dyn Task,
    to: &Path,
    overwrite: bool,
) -> Result<usize, ExportError> {
    if to.exists() {
        if !overwrite {
            return Err(ExportError::DirectoryExists { path: to.to_path_buf() });
        }
        if !to.join(MARKER_FILE).is_file() {
            return Err(ExportError::NotAnExport { path: to.to_path_buf() });
        }
    }
    let name = to
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ExportError::NoDirectoryName { path: to.to_path_buf() })?;
    let stage = to.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let written =
        write_dir(model, config, task, &stage).and_then(|n| replace_dir(&stage, to).map(|_| n));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    written
}

fn write_dir(
    model: &Model,
    config: &RunConfig,
    task: &dyn Task,
    dir: &Path,
) -> Result<usize, ExportError> {
    let io_err = |p: &Path, reason| ExportError::Write { path: p.to_path_buf(), reason };
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let write = |file: &str, text: String| {
        let p = dir.join(file);
        std::fs::write(&p, text).map_err(|e| io_err(&p, e))
    };
    let meta = export_metadata(config, task);
    let marker = serde_json::json!({
        "format": "attnlab-hf",
        "format_version": super::FORMAT_VERSION,
        "attnlab_version": meta["attnlab_version"],
        "attnlab_config": meta["attnlab_config"],
    });
    write(MARKER_FILE, serde_json::to_string_pretty(&marker).expect("json"))?;
    if let Some(codec) = task.codec() {
        let tokenizer = match codec.export_entry() {
            ("vocabulary", list) => char_tokenizer_json(
                &serde_json::from_str::<Vec<String>>(&list).expect("a JSON list"),
            ),
            (_, json) => json,
        };
        write("tokenizer.json", tokenizer)?;
        write("tokenizer_config.json", serde_json::to_string_pretty(&serde_json::json!({"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": false})).expect("json"))?;
    }
    let why = gpt2_mismatches(config, task);
    if !why.is_empty() {
        let llama = super::hf_llama::llama_architecture(config, task);
        if let Ok(architecture) = llama {
            let tensors = super::hf_llama::llama_tensors(model, config)?;
            super::write_atomically(
                &tensors,
                HashMap::from([("format".to_string(), "pt".to_string())]),
                &dir.join("model.safetensors"),
            )?;
            let json = super::hf_llama::llama_config(config, task, architecture);
            write("config.json", serde_json::to_string_pretty(&json).expect("json"))?;
            return Ok(tensors.len());
        }
        let n = super::export_safetensors(
            model,
            config,
            task,
            &dir.join("attnlab.safetensors"),
            false,
        )?;
        let not_llama = llama.err().unwrap_or_default();
        write("README.md", not_hf_readme(&why, &not_llama))?;
        return Ok(n);
    }
    let tensors = gpt2_tensors(model, config)?;
    // transformers refuses a safetensors file whose metadata lacks format = pt.
    super::write_atomically(
        &tensors,
        HashMap::from([("format".to_string(), "pt".to_string())]),
        &dir.join("model.safetensors"),
    )?;
    write("config.json", serde_json::to_string_pretty(&gpt2_config(config, task)).expect("json"))?;
    Ok(tensors.len())
}

/// Moves the staged directory into place, replacing an old export only after the new one is
/// complete.
fn replace_dir(stage: &Path, to: &Path) -> Result<(), ExportError> {
    let err = |reason| ExportError::Write { path: to.to_path_buf(), reason };
    if to.exists() {
        let old: PathBuf = stage.with_extension("old");
        std::fs::rename(to, &old).map_err(err)?;
        std::fs::rename(stage, to).map_err(err)?;
        let _ = std::fs::remove_dir_all(old);
        Ok(())
    } else {
        std::fs::rename(stage, to).map_err(err)
    }
}

/// GPT-2's `config.json` for this stack.
pub fn gpt2_config(config: &RunConfig, task: &dyn Task) -> serde_json::Value {
    let m = &config.model;
    serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": task.io().output_dim,
        "n_positions": m.max_seq_len,
        "n_embd": m.d_model,
        "n_layer": m.n_layers,
        "n_head": m.n_heads,
        "n_inner": m.mlp_width().max(1),
        "activation_function": if m.mlp == MlpKind::GeluTanh { "gelu_new" } else { "gelu" },
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": m.dropout,
        "embd_pdrop": m.dropout,
        "attn_pdrop": 0.0,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "tie_word_embeddings": m.tie_embeddings,
        "bos_token_id": null,
        "eos_token_id": null,
        "use_cache": true,
        "torch_dtype": "float32",
        "attnlab_version": env!("CARGO_PKG_VERSION"),
    })
}

/// The model's parameters under GPT-2's names (`transformer.h.<i>.attn.c_attn.weight`, ...).
pub fn gpt2_tensors(model: &Model, config: &RunConfig) -> Result<Vec<Entry>, ExportError> {
    let m = &config.model;
    let params: BTreeMap<String, TensorData> = named_tensors(model).into_iter().collect();
    let values = |name: &str| -> Result<(Vec<usize>, Vec<f32>), ExportError> {
        let data = params
            .get(name)
            .ok_or_else(|| ExportError::MissingParameter { name: name.to_string() })?;
        Ok((
            data.shape().to_vec(),
            data.clone().convert::<f32>().try_into_vec().expect("float parameters"),
        ))
    };
    let mut out: Vec<Entry> = Vec::new();
    let mut put = |name: String, shape: Vec<usize>, v: Vec<f32>| {
        out.push((name, Dtype::F32, shape, f32_bytes(&v)))
    };
    let copy = |put: &mut dyn FnMut(String, Vec<usize>, Vec<f32>),
                to: String,
                from: &str|
     -> Result<(), ExportError> {
        let (shape, v) = values(from)?;
        put(to, shape, v);
        Ok(())
    };
    // A bias attnlab does not have (model.bias = false) is zero in GPT-2's layout.
    let bias_or_zero = |put: &mut dyn FnMut(String, Vec<usize>, Vec<f32>),
                        to: String,
                        from: &str,
                        width: usize|
     -> Result<(), ExportError> {
        match params.contains_key(from) {
            true => copy(put, to, from),
            false => {
                put(to, vec![width], vec![0.0; width]);
                Ok(())
            }
        }
    };
    copy(&mut put, "transformer.wte.weight".into(), "input.Tokens.weight")?;
    copy(&mut put, "transformer.wpe.weight".into(), "positions.learned.weight")?;
    let d = m.d_model;
    for i in 0..m.n_layers {
        let (src, dst) = (format!("blocks.{i}"), format!("transformer.h.{i}"));
        copy(&mut put, format!("{dst}.ln_1.weight"), &format!("{src}.norm_mixer.Layer.gamma"))?;
        copy(&mut put, format!("{dst}.ln_1.bias"), &format!("{src}.norm_mixer.Layer.beta"))?;
        let attn = format!("{src}.mixer.Softmax.heads");
        copy(&mut put, format!("{dst}.attn.c_attn.weight"), &format!("{attn}.qkv.weight"))?;
        bias_or_zero(
            &mut put,
            format!("{dst}.attn.c_attn.bias"),
            &format!("{attn}.qkv.bias"),
            3 * d,
        )?;
        copy(&mut put, format!("{dst}.attn.c_proj.weight"), &format!("{attn}.out.weight"))?;
        bias_or_zero(&mut put, format!("{dst}.attn.c_proj.bias"), &format!("{attn}.out.bias"), d)?;
        if m.mlp_width() > 0 {
            copy(&mut put, format!("{dst}.ln_2.weight"), &format!("{src}.norm_mlp.Layer.gamma"))?;
            copy(&mut put, format!("{dst}.ln_2.bias"), &format!("{src}.norm_mlp.Layer.beta"))?;
            copy(&mut put, format!("{dst}.mlp.c_fc.weight"), &format!("{src}.mlp.up.weight"))?;
            bias_or_zero(
                &mut put,
                format!("{dst}.mlp.c_fc.bias"),
                &format!("{src}.mlp.up.bias"),
                m.mlp_width(),
            )?;
            copy(&mut put, format!("{dst}.mlp.c_proj.weight"), &format!("{src}.mlp.down.weight"))?;
            bias_or_zero(
                &mut put,
                format!("{dst}.mlp.c_proj.bias"),
                &format!("{src}.mlp.down.bias"),
                d,
            )?;
        } else {
            // No MLP: a zero one of width 1 adds exactly nothing to the residual stream.
            put(format!("{dst}.ln_2.weight"), vec![d], vec![1.0; d]);
            put(format!("{dst}.ln_2.bias"), vec![d], vec![0.0; d]);
            put(format!("{dst}.mlp.c_fc.weight"), vec![d, 1], vec![0.0; d]);
            put(format!("{dst}.mlp.c_fc.bias"), vec![1], vec![0.0]);
            put(format!("{dst}.mlp.c_proj.weight"), vec![1, d], vec![0.0; d]);
            put(format!("{dst}.mlp.c_proj.bias"), vec![d], vec![0.0; d]);
        }
    }
    copy(&mut put, "transformer.ln_f.weight".into(), "norm.Layer.gamma")?;
    copy(&mut put, "transformer.ln_f.bias".into(), "norm.Layer.beta")?;
    if !m.tie_embeddings {
        // attnlab's head is [d_model, vocab]; nn.Linear wants [vocab, d_model].
        let (shape, v) = values("head.weight")?;
        let (rows, cols) = (shape[0], shape[1]);
        let transposed: Vec<f32> = (0..cols)
            .flat_map(|c| (0..rows).map(move |r| (r, c)))
            .map(|(r, c)| v[r * cols + c])
            .collect();
        put("lm_head.weight".into(), vec![cols, rows], transposed);
    }
    Ok(out)
}

/// A `tokenizers` file for a character vocabulary: every character is its own token
/// (WordLevel over a split into single characters, decoded by concatenation).
pub fn char_tokenizer_json(chars: &[String]) -> String {
    let vocab: serde_json::Map<String, serde_json::Value> =
        chars.iter().enumerate().map(|(i, c)| (c.clone(), serde_json::json!(i))).collect();
    let unk = chars.first().cloned().unwrap_or_default();
    serde_json::to_string_pretty(&serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"}, "behavior": "Isolated", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": unk},
    }))
    .expect("json")
}

fn not_hf_readme(why: &[String], not_llama: &[String]) -> String {
    format!(
        "# Not a Hugging Face architecture\n\nThis model cannot be loaded by `transformers.GPT2LMHeadModel` because {}, \
         nor as a Llama-family model (Llama, Mistral, Qwen2, Qwen3) because {}.\n\n\
         `attnlab.safetensors` is the full attnlab export (weights, config, vocabulary). Load it in PyTorch with\n\
         attnlab's reference package (`python/` in the attnlab repository):\n\n\
         ```python\nimport attnlab_torch\nmodel = attnlab_torch.load(\"attnlab.safetensors\")\nlogits = model(token_ids)  # [batch, seq] -> [batch, seq, vocab]\n```\n\n\
         `tokenizer.json` (when present) loads with `tokenizers.Tokenizer.from_file`.\n",
        why.join("; "),
        not_llama.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use safetensors::SafeTensors;

    fn setup(extra: &str) -> (RunConfig, Box<dyn Task>, Model, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("attnlab-hf-{}-{}", std::process::id(), extra.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let corpus = dir.join("corpus.txt");
        std::fs::write(&corpus, "first citizen: we are accounted poor.\n".repeat(30)).unwrap();
        let toml = format!(
            "[task]\nkind = \"char_lm\"\npath = {:?}\n[model]\nd_model = 16\nn_heads = 2\nn_layers = 2\nmax_seq_len = 8\n{extra}",
            corpus.to_str().unwrap()
        );
        let config = RunConfig::from_toml(&toml, &[]).unwrap();
        let task = crate::task::build(&config, None).unwrap();
        let model = config.model.init(&task.io(), 5, &Device::flex()).unwrap();
        (config, task, model, dir)
    }

    #[test]
    fn a_gpt2_stack_maps_every_tensor_with_gpt2_names_and_shapes() {
        let (config, task, model, dir) = setup("");
        assert!(gpt2_mismatches(&config, task.as_ref()).is_empty());
        let to = dir.join("hf");
        let n = export_gpt2(&model, &config, task.as_ref(), &to, false).unwrap();
        // wte, wpe, 12 per layer, ln_f (2), lm_head.
        assert_eq!(n, 2 + 12 * 2 + 2 + 1);
        let bytes = std::fs::read(to.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let v = task.io().output_dim;
        for (name, shape) in [
            ("transformer.wte.weight", vec![v, 16]),
            ("transformer.wpe.weight", vec![8, 16]),
            ("transformer.h.1.attn.c_attn.weight", vec![16, 48]),
            ("transformer.h.1.attn.c_attn.bias", vec![48]),
            ("transformer.h.0.mlp.c_fc.weight", vec![16, 64]),
            ("transformer.h.0.mlp.c_proj.weight", vec![64, 16]),
            ("transformer.ln_f.bias", vec![16]),
            ("lm_head.weight", vec![v, 16]),
        ] {
            assert_eq!(st.tensor(name).unwrap().shape(), &shape[..], "{name}");
        }
        // lm_head is the transpose of attnlab's head.
        let params: BTreeMap<String, TensorData> = named_tensors(&model).into_iter().collect();
        let head: Vec<f32> = params["head.weight"].clone().convert::<f32>().try_into_vec().unwrap();
        let lm: Vec<f32> = st
            .tensor("lm_head.weight")
            .unwrap()
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(lm[3 * 16 + 5], head[5 * v + 3]);
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(to.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["activation_function"], "gelu");
        assert_eq!(cfg["n_inner"], 64);
        assert_eq!(cfg["vocab_size"], v);
        // The character tokenizer reads back and round-trips the corpus' text.
        let tk = tokenizers::Tokenizer::from_file(to.join("tokenizer.json")).unwrap();
        let enc = tk.encode("we are poor.\n", false).unwrap();
        let codec = task.codec().unwrap();
        assert_eq!(enc.get_ids(), &codec.encode("we are poor.\n").unwrap()[..]);
        assert_eq!(tk.decode(enc.get_ids(), false).unwrap(), "we are poor.\n");
        // Kept without --force; replaced with it; a user's directory is never replaced.
        assert!(
            export_gpt2(&model, &config, task.as_ref(), &to, false)
                .unwrap_err()
                .to_string()
                .contains("--force")
        );
        assert_eq!(export_gpt2(&model, &config, task.as_ref(), &to, true).unwrap(), n);
        let mine = dir.join("mine");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join("notes.txt"), "keep").unwrap();
        assert!(
            export_gpt2(&model, &config, task.as_ref(), &mine, true)
                .unwrap_err()
                .to_string()
                .contains("not an attnlab export")
        );
        assert_eq!(std::fs::read_to_string(mine.join("notes.txt")).unwrap(), "keep");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn other_stacks_get_the_attnlab_export_and_a_readme_saying_why() {
        let (config, task, model, dir) =
            setup("mixer = \"linear:elu1\"\npositions = \"rope\"\nmlp_ratio = 0\nbias = false\n");
        let why = gpt2_mismatches(&config, task.as_ref());
        assert_eq!(why.len(), 2, "{why:?}");
        let to = dir.join("hf-linear");
        export_gpt2(&model, &config, task.as_ref(), &to, false).unwrap();
        assert!(!to.join("config.json").exists());
        assert!(to.join("attnlab.safetensors").is_file());
        let readme = std::fs::read_to_string(to.join("README.md")).unwrap();
        assert!(
            readme.contains("linear:elu1")
                && readme.contains("rope")
                && readme.contains("attnlab_torch.load"),
            "{readme}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_stack_without_biases_or_mlp_gets_zero_ones() {
        let (config, _task, model, dir) =
            setup("mlp_ratio = 0\nbias = false\ntie_embeddings = true\n");
        let tensors = gpt2_tensors(&model, &config).unwrap();
        let get =
            |name: &str| tensors.iter().find(|t| t.0 == name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(get("transformer.h.0.attn.c_attn.bias").2, vec![48]);
        assert!(get("transformer.h.0.attn.c_attn.bias").3.iter().all(|&b| b == 0));
        assert_eq!(get("transformer.h.1.mlp.c_fc.weight").2, vec![16, 1]);
        assert!(tensors.iter().all(|t| t.0 != "lm_head.weight"), "tied: no lm_head");
        std::fs::remove_dir_all(dir).ok();
    }
}
