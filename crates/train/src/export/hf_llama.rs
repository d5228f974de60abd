//! `attnlab export --format hf` for Llama-family stacks: softmax attention (1/√d, optionally
//! one sliding window in every layer) with RoPE, RMSNorm and SwiGLU, causal, token inputs. The
//! directory loads with `transformers.AutoModelForCausalLM.from_pretrained`, as the architecture
//! the blocks name:
//!
//! | blocks | architecture |
//! |---|---|
//! | per-head q/k norm (`qk_head_norm`) | `Qwen3ForCausalLM` |
//! | q/k/v biases without an output bias | `Qwen2ForCausalLM` |
//! | a sliding window | `MistralForCausalLM` |
//! | otherwise | `LlamaForCausalLM` (`attention_bias`, `mlp_bias` as the stack has them) |
//!
//! The inverse of `attnlab import` (`crate::import`): the packed `[q | k | v]` is split and
//! transposed, each query and key head's rows go back to Hugging Face's half-split RoPE pairing
//! ([`crate::hf_layout`]), and the config gets the keys `import` reads.

use super::{Entry, ExportError, f32_bytes};
use crate::config::RunConfig;
use crate::hf_layout::{Pairing, reorder_rope_rows, transpose};
use crate::params::named_tensors;
use crate::task::Task;
use attnlab_model::block::{MlpKind, NormKind};
use attnlab_model::position::{PositionKind, RopeScaling};
use attnlab_model::{Model, ModelInput};
use burn::tensor::TensorData;
use safetensors::tensor::Dtype;
use std::collections::BTreeMap;

/// The Hugging Face architecture this stack is, or why it is none of them.
pub fn llama_architecture(
    config: &RunConfig,
    task: &dyn Task,
) -> Result<&'static str, Vec<String>> {
    let m = &config.model;
    let mut why = Vec::new();
    let specs: Vec<String> = m.mixer.0.iter().map(|s| s.to_string()).collect();
    let windows: Vec<Option<&str>> =
        specs.iter().map(|s| s.strip_prefix("softmax:window=")).collect();
    if specs.iter().zip(&windows).any(|(s, w)| s != "softmax" && w.is_none()) {
        why.push(format!(
            "its attention is {} (Llama-family models have plain softmax, or one sliding window, in every layer)",
            specs.join(", ")
        ));
    }
    let window = windows.first().copied().flatten();
    if windows.iter().any(|w| *w != window) {
        why.push("its layers mix window and global attention (exported only as the same window in every layer)".into());
    }
    if m.positions != PositionKind::Rope {
        why.push("it does not use RoPE".into());
    }
    if m.norm != NormKind::Rms {
        why.push("it uses LayerNorm (Llama-family models use RMSNorm)".into());
    }
    if m.mlp != MlpKind::Swiglu || m.mlp_width() == 0 {
        why.push("its MLP is not SwiGLU".into());
    }
    if !m.causal {
        why.push("it is bidirectional".into());
    }
    if !matches!(task.io().input, ModelInput::Tokens { .. }) {
        why.push("it reads vectors, not tokens".into());
    }
    if m.canon.any() {
        why.push(format!(
            "it has Canon layers (model.canon = \"{}\"; Llama, Qwen and Mistral have none)",
            m.canon
        ));
    }
    let (qkv, out, mlp) = biases(config);
    let architecture = if m.qk_head_norm {
        if qkv != out || mlp {
            why.push(
                "Qwen3 has q/k/v and output biases together or not at all, and no MLP bias".into(),
            );
        }
        "Qwen3ForCausalLM"
    } else if qkv && !out {
        if mlp {
            why.push("Qwen2 has no MLP bias".into());
        }
        "Qwen2ForCausalLM"
    } else if window.is_some() {
        if qkv || out || mlp {
            why.push("Mistral has no biases".into());
        }
        "MistralForCausalLM"
    } else {
        if qkv != out {
            why.push("Llama has q/k/v and output biases together or not at all".into());
        }
        "LlamaForCausalLM"
    };
    if window.is_some() && architecture != "MistralForCausalLM" {
        why.push(format!("{architecture} is exported without a sliding window"));
    }
    if why.is_empty() { Ok(architecture) } else { Err(why) }
}

/// `(q/k/v, output, MLP)` biases as the stack has them.
fn biases(config: &RunConfig) -> (bool, bool, bool) {
    let m = &config.model;
    (m.qkv_bias.unwrap_or(m.bias), m.out_bias.unwrap_or(m.bias), m.mlp_bias.unwrap_or(m.bias))
}

/// `config.json` of `architecture` (from [`llama_architecture`]).
pub fn llama_config(config: &RunConfig, task: &dyn Task, architecture: &str) -> serde_json::Value {
    let m = &config.model;
    let (qkv, _, mlp) = biases(config);
    let rows = task.io().output_dim;
    let window = m.mixer.0.first().and_then(|s| {
        s.to_string().strip_prefix("softmax:window=").and_then(|w| w.parse::<usize>().ok())
    });
    let mut rope = serde_json::json!({"rope_type": "default", "rope_theta": m.rope_theta});
    if let Some(RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    }) = &m.rope_scaling
    {
        rope = serde_json::json!({
            "rope_type": "llama3",
            "rope_theta": m.rope_theta,
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        });
    }
    let model_type = match architecture {
        "Qwen3ForCausalLM" => "qwen3",
        "Qwen2ForCausalLM" => "qwen2",
        "MistralForCausalLM" => "mistral",
        _ => "llama",
    };
    serde_json::json!({
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": rows,
        "hidden_size": m.d_model,
        "intermediate_size": m.mlp_width(),
        "num_hidden_layers": m.n_layers,
        "num_attention_heads": m.n_heads,
        "num_key_value_heads": m.kv_heads(),
        "head_dim": m.head_dim(),
        "hidden_act": "silu",
        "max_position_embeddings": m.max_seq_len,
        "rms_norm_eps": m.norm_eps,
        // Both spellings: transformers 5 reads rope_parameters, older versions the top level.
        "rope_theta": m.rope_theta,
        "rope_parameters": rope.clone(),
        "rope_scaling": if m.rope_scaling.is_some() { rope } else { serde_json::Value::Null },
        "tie_word_embeddings": m.tie_embeddings,
        "attention_bias": qkv && architecture != "Qwen2ForCausalLM",
        "mlp_bias": mlp,
        "attention_dropout": 0.0,
        "sliding_window": window,
        "use_sliding_window": false,
        "bos_token_id": null,
        "eos_token_id": null,
        "use_cache": true,
        "torch_dtype": "float32",
        "attnlab_version": env!("CARGO_PKG_VERSION"),
    })
}

/// The model's parameters under the Llama family's names.
pub fn llama_tensors(model: &Model, config: &RunConfig) -> Result<Vec<Entry>, ExportError> {
    let m = &config.model;
    let (h, kv, hd, d) = (m.n_heads, m.kv_heads(), m.head_dim(), m.d_model);
    let params: BTreeMap<String, TensorData> = named_tensors(model).into_iter().collect();
    let values = |name: &str| -> Result<Vec<f32>, ExportError> {
        let data = params
            .get(name)
            .ok_or_else(|| ExportError::MissingParameter { name: name.to_string() })?;
        Ok(data.clone().convert::<f32>().try_into_vec().expect("float parameters"))
    };
    let mut out: Vec<Entry> = Vec::new();
    let mut put = |name: String, shape: Vec<usize>, v: &[f32]| {
        out.push((name, Dtype::F32, shape, f32_bytes(v)))
    };
    let rows = |v: Vec<f32>, width: usize| reorder_rope_rows(&v, width, hd, Pairing::Adjacent);
    let vocab = params["input.Tokens.weight"].shape()[0];
    put("model.embed_tokens.weight".into(), vec![vocab, d], &values("input.Tokens.weight")?);
    for i in 0..m.n_layers {
        let (a, p) = (format!("blocks.{i}"), format!("model.layers.{i}"));
        let heads = format!("{a}.mixer.Softmax.heads");
        put(
            format!("{p}.input_layernorm.weight"),
            vec![d],
            &values(&format!("{a}.norm_mixer.Rms.gamma"))?,
        );
        put(
            format!("{p}.post_attention_layernorm.weight"),
            vec![d],
            &values(&format!("{a}.norm_mlp.Rms.gamma"))?,
        );
        // [d, (H + 2K)·hd] -> rows of q, k, v in torch's [out, in].
        let packed = transpose(&values(&format!("{heads}.qkv.weight"))?, d, (h + 2 * kv) * hd);
        let (q, rest) = packed.split_at(h * hd * d);
        let (k, v) = rest.split_at(kv * hd * d);
        put(format!("{p}.self_attn.q_proj.weight"), vec![h * hd, d], &rows(q.to_vec(), d));
        put(format!("{p}.self_attn.k_proj.weight"), vec![kv * hd, d], &rows(k.to_vec(), d));
        put(format!("{p}.self_attn.v_proj.weight"), vec![kv * hd, d], v);
        if let Ok(bias) = values(&format!("{heads}.qkv.bias")) {
            let (q, rest) = bias.split_at(h * hd);
            let (k, v) = rest.split_at(kv * hd);
            put(format!("{p}.self_attn.q_proj.bias"), vec![h * hd], &rows(q.to_vec(), 1));
            put(format!("{p}.self_attn.k_proj.bias"), vec![kv * hd], &rows(k.to_vec(), 1));
            put(format!("{p}.self_attn.v_proj.bias"), vec![kv * hd], v);
        }
        let o = transpose(&values(&format!("{heads}.out.weight"))?, h * hd, d);
        put(format!("{p}.self_attn.o_proj.weight"), vec![d, h * hd], &o);
        if let Ok(bias) = values(&format!("{heads}.out.bias")) {
            put(format!("{p}.self_attn.o_proj.bias"), vec![d], &bias);
        }
        for which in ["q", "k"] {
            if let Ok(gamma) = values(&format!("{heads}.{which}_norm.gamma")) {
                put(format!("{p}.self_attn.{which}_norm.weight"), vec![hd], &rows(gamma, 1));
            }
        }
        let f = m.mlp_width();
        for (ours, theirs, d_in, d_out) in
            [("gate", "gate_proj", d, f), ("up", "up_proj", d, f), ("down", "down_proj", f, d)]
        {
            let w = transpose(&values(&format!("{a}.mlp.{ours}.weight"))?, d_in, d_out);
            put(format!("{p}.mlp.{theirs}.weight"), vec![d_out, d_in], &w);
            if let Ok(bias) = values(&format!("{a}.mlp.{ours}.bias")) {
                put(format!("{p}.mlp.{theirs}.bias"), vec![d_out], &bias);
            }
        }
    }
    put("model.norm.weight".into(), vec![d], &values("norm.Rms.gamma")?);
    if !m.tie_embeddings {
        put("lm_head.weight".into(), vec![vocab, d], &transpose(&values("head.weight")?, d, vocab));
    }
    Ok(out)
}
