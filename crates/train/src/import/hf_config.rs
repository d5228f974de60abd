//! A Hugging Face `config.json` read into attnlab's [`ModelConfig`], for the architectures
//! attnlab can reproduce exactly (see `docs/using.md`, "Bring your own model"):
//!
//! | `architectures` | blocks |
//! |---|---|
//! | `LlamaForCausalLM`, `MistralForCausalLM` | RMSNorm, RoPE (θ, Llama 3 scaling), GQA, SwiGLU; Mistral's `sliding_window` |
//! | `Qwen2ForCausalLM` | as Llama, with q/k/v biases |
//! | `Qwen3ForCausalLM` | as Llama, with `head_dim` and per-head RMSNorm of q and k |
//! | `GPT2LMHeadModel` | LayerNorm, learned positions, GELU (`gelu_new` = tanh) MLP, tied head |
//!
//! Everything else a config may declare that changes the function (another `rope_type`, an
//! activation other than SiLU, Qwen's `use_sliding_window` without `layer_types`, GPT-2's
//! attention re-scalings) is refused by name rather than imported approximately. RoPE θ is
//! read from the top level (older configs) or from `rope_parameters` (transformers 5).

use super::error::ImportError;
use attnlab_model::block::{LAYER_NORM_EPSILON, MlpKind, NormKind};
use attnlab_model::position::{PositionKind, RopeScaling};
use attnlab_model::{MixerSpec, MixerStack, ModelConfig};
use serde_json::Value;

/// The architectures `attnlab import` reads.
pub const SUPPORTED: [&str; 5] = [
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GPT2LMHeadModel",
];

/// Which naming and layout the checkpoint's tensors follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `model.layers.i.self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`, RMSNorms.
    Llama,
    /// `transformer.h.i.attn.c_attn` (Conv1D, `[in, out]`), LayerNorms, learned positions.
    Gpt2,
}

/// What `config.json` says, in attnlab's terms.
#[derive(Clone, Debug)]
pub struct HfModel {
    pub architecture: String,
    pub layout: Layout,
    pub model: ModelConfig,
    /// Rows of the token embedding (the checkpoint's `vocab_size`; may exceed the tokenizer's).
    pub vocab_rows: usize,
    /// The longest context the checkpoint was made for (`max_position_embeddings`/`n_positions`).
    pub max_positions: usize,
}

/// Reads `config` (the parsed `config.json` at `path`) for a model with context `context`
/// (at most the checkpoint's own; `None` = the checkpoint's, capped at 4096 for the RoPE table).
pub fn read(config: &Value, context: Option<usize>) -> Result<HfModel, ImportError> {
    let architecture = config["architectures"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .ok_or(ImportError::NoArchitecture)?
        .to_string();
    if !SUPPORTED.contains(&architecture.as_str()) {
        return Err(ImportError::UnsupportedArchitecture {
            architecture,
            supported: SUPPORTED.join(", "),
        });
    }
    let reader = Reader { config, architecture: &architecture };
    if architecture == "GPT2LMHeadModel" { gpt2(&reader, context) } else { llama(&reader, context) }
}

struct Reader<'a> {
    config: &'a Value,
    architecture: &'a str,
}

impl Reader<'_> {
    fn usize(&self, key: &'static str) -> Result<usize, ImportError> {
        self.optional_usize(key)?.ok_or(ImportError::MissingKey { key })
    }

    fn optional_usize(&self, key: &'static str) -> Result<Option<usize>, ImportError> {
        match &self.config[key] {
            Value::Null => Ok(None),
            v => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| self.bad(key, v)),
        }
    }

    fn float(&self, key: &'static str, default: f64) -> Result<f64, ImportError> {
        match &self.config[key] {
            Value::Null => Ok(default),
            v => v.as_f64().ok_or_else(|| self.bad(key, v)),
        }
    }

    fn bool(&self, key: &'static str, default: bool) -> Result<bool, ImportError> {
        match &self.config[key] {
            Value::Null => Ok(default),
            v => v.as_bool().ok_or_else(|| self.bad(key, v)),
        }
    }

    fn bad(&self, key: &'static str, value: &Value) -> ImportError {
        ImportError::BadValue { key, value: value.to_string() }
    }

    fn unsupported(&self, what: String) -> ImportError {
        ImportError::UnsupportedOption { architecture: self.architecture.to_string(), what }
    }
}

fn context_for(max_positions: usize, context: Option<usize>) -> Result<usize, ImportError> {
    match context {
        Some(c) if c > max_positions => {
            Err(ImportError::ContextTooLong { context: c, max_positions })
        }
        Some(0) => Err(ImportError::ContextTooLong { context: 0, max_positions }),
        Some(c) => Ok(c),
        None => Ok(max_positions.min(4096)),
    }
}

fn llama(r: &Reader<'_>, context: Option<usize>) -> Result<HfModel, ImportError> {
    let d_model = r.usize("hidden_size")?;
    let n_heads = r.usize("num_attention_heads")?;
    let n_layers = r.usize("num_hidden_layers")?;
    let n_kv_heads = r.optional_usize("num_key_value_heads")?.unwrap_or(n_heads);
    let head_dim = r.optional_usize("head_dim")?.unwrap_or(d_model / n_heads.max(1));
    let max_positions = r.usize("max_position_embeddings")?;
    match r.config["hidden_act"].as_str().unwrap_or("silu") {
        "silu" => {}
        other => return Err(r.unsupported(format!("hidden_act = \"{other}\" (SwiGLU needs silu)"))),
    }
    let qwen2 = r.architecture == "Qwen2ForCausalLM";
    // Qwen2 hard-wires q/k/v biases (no o_proj bias); the others follow `attention_bias`.
    let attention_bias = r.bool("attention_bias", false)?;
    let (theta, scaling) = rope(r)?;
    let mixer = window_stack(r, n_layers)?;
    let model = ModelConfig {
        d_model,
        n_heads,
        n_layers,
        n_kv_heads: if n_kv_heads == n_heads { 0 } else { n_kv_heads },
        head_dim: if head_dim * n_heads == d_model { 0 } else { head_dim },
        mixer,
        positions: PositionKind::Rope,
        norm: NormKind::Rms,
        norm_eps: r.float("rms_norm_eps", 1e-6)?,
        mlp: MlpKind::Swiglu,
        mlp_hidden: r.usize("intermediate_size")?,
        dropout: 0.0,
        tie_embeddings: r.bool("tie_word_embeddings", false)?,
        max_seq_len: context_for(max_positions, context)?,
        causal: true,
        bias: false,
        qkv_bias: (qwen2 || attention_bias).then_some(true),
        out_bias: attention_bias.then_some(true),
        mlp_bias: r.bool("mlp_bias", false)?.then_some(true),
        rope_theta: theta,
        rope_scaling: scaling,
        qk_head_norm: r.architecture == "Qwen3ForCausalLM",
        ..ModelConfig::default()
    };
    Ok(HfModel {
        architecture: r.architecture.to_string(),
        layout: Layout::Llama,
        model,
        vocab_rows: r.usize("vocab_size")?,
        max_positions,
    })
}

/// RoPE's θ and scaling, from `rope_parameters` (transformers 5) or the top level.
fn rope(r: &Reader<'_>) -> Result<(f64, Option<RopeScaling>), ImportError> {
    let parameters = &r.config["rope_parameters"];
    let theta = match (&parameters["rope_theta"], &r.config["rope_theta"]) {
        (Value::Null, Value::Null) => 10_000.0,
        (Value::Null, v) | (v, _) => v.as_f64().ok_or_else(|| r.bad("rope_theta", v))?,
    };
    let scaling = match (&r.config["rope_scaling"], parameters) {
        (Value::Null, Value::Null) => return Ok((theta, None)),
        (Value::Null, p) | (p, _) => p,
    };
    let kind = scaling["rope_type"].as_str().or(scaling["type"].as_str()).unwrap_or("default");
    match kind {
        "default" => Ok((theta, None)),
        "llama3" => {
            let number =
                |key: &'static str| scaling[key].as_f64().ok_or_else(|| r.bad(key, &scaling[key]));
            let llama3 = RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_max_position_embeddings: number("original_max_position_embeddings")?
                    as usize,
            };
            llama3.validate().map_err(|reason| r.unsupported(format!("rope scaling: {reason}")))?;
            Ok((theta, Some(llama3)))
        }
        other => Err(r.unsupported(format!(
            "rope_type = \"{other}\" (attnlab implements default and llama3 RoPE)"
        ))),
    }
}

/// Softmax in every layer, a sliding window where the config makes one active: per layer from
/// `layer_types` (transformers 5), else Mistral's `sliding_window` in every layer.
fn window_stack(r: &Reader<'_>, n_layers: usize) -> Result<MixerStack, ImportError> {
    let window = r.optional_usize("sliding_window")?;
    let windowed = |w: usize| format!("softmax:window={w}").parse::<MixerSpec>().expect("valid");
    let global = || "softmax".parse::<MixerSpec>().expect("valid");
    if let Some(types) = r.config["layer_types"].as_array() {
        if types.len() != n_layers {
            return Err(r.bad("layer_types", &r.config["layer_types"]));
        }
        let specs = types
            .iter()
            .map(|t| match (t.as_str(), window) {
                (Some("full_attention"), _) => Ok(global()),
                (Some("sliding_attention"), Some(w)) => Ok(windowed(w)),
                _ => Err(r.unsupported(format!("layer type {t} (with sliding_window {window:?})"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(MixerStack::per_layer(specs));
    }
    let qwen = r.architecture.starts_with("Qwen");
    match (window, qwen, r.bool("use_sliding_window", false)?) {
        // Qwen's window depends on max_window_layers; refuse rather than guess.
        (_, true, true) => Err(r.unsupported(
            "use_sliding_window = true without layer_types (which layers use it)".to_string(),
        )),
        (Some(w), false, _) => Ok(MixerStack::uniform(windowed(w))),
        _ => Ok(MixerStack::uniform(global())),
    }
}

fn gpt2(r: &Reader<'_>, context: Option<usize>) -> Result<HfModel, ImportError> {
    let d_model = r.usize("n_embd")?;
    let max_positions = r.usize("n_positions")?;
    let mlp = match r.config["activation_function"].as_str().unwrap_or("gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" => MlpKind::GeluTanh,
        "gelu" => MlpKind::Gelu,
        other => return Err(r.unsupported(format!("activation_function = \"{other}\""))),
    };
    let eps = r.float("layer_norm_epsilon", LAYER_NORM_EPSILON)?;
    if eps != LAYER_NORM_EPSILON {
        return Err(
            r.unsupported(format!("layer_norm_epsilon = {eps} (attnlab's LayerNorm uses 1e-5)"))
        );
    }
    for (key, default) in [
        ("scale_attn_weights", true),
        ("scale_attn_by_inverse_layer_idx", false),
        ("reorder_and_upcast_attn", false),
    ] {
        if r.bool(key, default)? != default {
            return Err(r.unsupported(format!("{key} = {}", !default)));
        }
    }
    let model = ModelConfig {
        d_model,
        n_heads: r.usize("n_head")?,
        n_layers: r.usize("n_layer")?,
        positions: PositionKind::Learned,
        norm: NormKind::Layer,
        mlp,
        mlp_hidden: r.optional_usize("n_inner")?.unwrap_or(4 * d_model),
        dropout: 0.0,
        tie_embeddings: r.bool("tie_word_embeddings", true)?,
        max_seq_len: context_for(max_positions, context)?,
        causal: true,
        bias: true,
        ..ModelConfig::default()
    };
    Ok(HfModel {
        architecture: r.architecture.to_string(),
        layout: Layout::Gpt2,
        model,
        vocab_rows: r.usize("vocab_size")?,
        max_positions,
    })
}
