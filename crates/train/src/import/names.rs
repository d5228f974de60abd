//! Hugging Face tensor names and layouts to attnlab's parameters (their variant-free paths, as
//! [`crate::transfer`] names them: `blocks.0.mixer.heads.qkv.weight`).
//!
//! - Linear weights are transposed and each query and key head's rows permuted to attnlab's RoPE
//!   pairing ([`crate::hf_layout`]); Qwen3's per-head norm gain moves with them (RMS over a head
//!   does not depend on channel order). GPT-2's `Conv1D` is already `[in, out]`.
//! - Llama's separate q, k, v projections become attnlab's packed `[q | k | v]` columns.

use super::error::ImportError;
use super::hf_config::{HfModel, Layout};
use super::weights::HfTensor;
use crate::hf_layout::{self, Pairing};
use std::collections::BTreeMap;

/// An attnlab parameter's values in attnlab's layout.
pub type Mapped = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Maps `tensors` to attnlab's names and layouts; every tensor the model needs must be there
/// and every tensor there must be used (buffers Hugging Face does not save aside).
pub fn map(hf: &HfModel, mut tensors: BTreeMap<String, HfTensor>) -> Result<Mapped, ImportError> {
    let mut out = Mapped::new();
    let mut take = |name: &str| {
        tensors.remove(name).ok_or_else(|| ImportError::MissingTensor { name: name.to_string() })
    };
    match hf.layout {
        Layout::Llama => llama(hf, &mut take, &mut out)?,
        Layout::Gpt2 => gpt2(hf, &mut take, &mut out)?,
    }
    // GPT-2 checkpoints from older transformers carry the causal-mask buffers; nothing else
    // may be left over.
    tensors.retain(|name, _| !name.ends_with(".attn.bias") && !name.ends_with(".attn.masked_bias"));
    if let Some(name) = tensors.keys().next() {
        return Err(ImportError::UnusedTensor { name: name.clone(), count: tensors.len() });
    }
    Ok(out)
}

type Take<'a> = dyn FnMut(&str) -> Result<HfTensor, ImportError> + 'a;

fn llama(hf: &HfModel, take: &mut Take<'_>, out: &mut Mapped) -> Result<(), ImportError> {
    let m = &hf.model;
    let (h, kv, hd) = (m.n_heads, m.kv_heads(), m.head_dim());
    let d = m.d_model;
    put(
        out,
        "input.weight",
        expect(
            take("model.embed_tokens.weight")?,
            "model.embed_tokens.weight",
            &[hf.vocab_rows, d],
        )?,
    );
    for i in 0..m.n_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let a = |s: &str| format!("blocks.{i}.{s}");
        let mut read = |name: String, shape: &[usize]| -> Result<HfTensor, ImportError> {
            let t = take(&name)?;
            expect(t, &name, shape)
        };
        put(out, &a("norm_mixer.gamma"), read(p("input_layernorm.weight"), &[d])?);
        put(out, &a("norm_mlp.gamma"), read(p("post_attention_layernorm.weight"), &[d])?);
        let q = rope_rows(read(p("self_attn.q_proj.weight"), &[h * hd, d])?, hd);
        let k = rope_rows(read(p("self_attn.k_proj.weight"), &[kv * hd, d])?, hd);
        let v = read(p("self_attn.v_proj.weight"), &[kv * hd, d])?;
        put(out, &a("mixer.heads.qkv.weight"), transpose(&concat_rows(&[q, k, v])));
        if m.qkv_bias == Some(true) {
            let q = rope_rows(read(p("self_attn.q_proj.bias"), &[h * hd])?, hd);
            let k = rope_rows(read(p("self_attn.k_proj.bias"), &[kv * hd])?, hd);
            let v = read(p("self_attn.v_proj.bias"), &[kv * hd])?;
            put(out, &a("mixer.heads.qkv.bias"), concat_rows(&[q, k, v]));
        }
        put(
            out,
            &a("mixer.heads.out.weight"),
            transpose(&read(p("self_attn.o_proj.weight"), &[d, h * hd])?),
        );
        if m.out_bias == Some(true) {
            put(out, &a("mixer.heads.out.bias"), read(p("self_attn.o_proj.bias"), &[d])?);
        }
        if m.qk_head_norm {
            put(
                out,
                &a("mixer.heads.q_norm.gamma"),
                rope_rows(read(p("self_attn.q_norm.weight"), &[hd])?, hd),
            );
            put(
                out,
                &a("mixer.heads.k_norm.gamma"),
                rope_rows(read(p("self_attn.k_norm.weight"), &[hd])?, hd),
            );
        }
        let f = m.mlp_width();
        for (hf_name, ours, shape) in [
            ("gate_proj", "gate", [f, d]),
            ("up_proj", "up", [f, d]),
            ("down_proj", "down", [d, f]),
        ] {
            let w = read(p(&format!("mlp.{hf_name}.weight")), &shape)?;
            put(out, &a(&format!("mlp.{ours}.weight")), transpose(&w));
            if m.mlp_bias == Some(true) {
                let b = read(p(&format!("mlp.{hf_name}.bias")), &[shape[0]])?;
                put(out, &a(&format!("mlp.{ours}.bias")), b);
            }
        }
    }
    put(out, "norm.gamma", expect(take("model.norm.weight")?, "model.norm.weight", &[d])?);
    if !m.tie_embeddings {
        let head = expect(take("lm_head.weight")?, "lm_head.weight", &[hf.vocab_rows, d])?;
        put(out, "head.weight", transpose(&head));
    }
    Ok(())
}

fn gpt2(hf: &HfModel, take: &mut Take<'_>, out: &mut Mapped) -> Result<(), ImportError> {
    let m = &hf.model;
    let (d, f) = (m.d_model, m.mlp_width());
    let mut read = |name: String, shape: &[usize]| -> Result<HfTensor, ImportError> {
        let t = take(&name)?;
        expect(t, &name, shape)
    };
    put(out, "input.weight", read("transformer.wte.weight".into(), &[hf.vocab_rows, d])?);
    // The learned table covers the positions this run uses.
    let wpe = read("transformer.wpe.weight".into(), &[hf.max_positions, d])?;
    let rows = m.max_seq_len;
    put(
        out,
        "positions.learned.weight",
        HfTensor { shape: vec![rows, d], values: wpe.values[..rows * d].to_vec() },
    );
    for i in 0..m.n_layers {
        let p = |s: &str| format!("transformer.h.{i}.{s}");
        let a = |s: &str| format!("blocks.{i}.{s}");
        for (hf_name, ours, d_in, d_out) in [
            ("attn.c_attn", "mixer.heads.qkv", d, 3 * d),
            ("attn.c_proj", "mixer.heads.out", d, d),
            ("mlp.c_fc", "mlp.up", d, f),
            ("mlp.c_proj", "mlp.down", f, d),
        ] {
            put(
                out,
                &a(&format!("{ours}.weight")),
                read(p(&format!("{hf_name}.weight")), &[d_in, d_out])?,
            );
            put(out, &a(&format!("{ours}.bias")), read(p(&format!("{hf_name}.bias")), &[d_out])?);
        }
        for (hf_name, ours) in [("ln_1", "norm_mixer"), ("ln_2", "norm_mlp")] {
            put(out, &a(&format!("{ours}.gamma")), read(p(&format!("{hf_name}.weight")), &[d])?);
            put(out, &a(&format!("{ours}.beta")), read(p(&format!("{hf_name}.bias")), &[d])?);
        }
    }
    put(out, "norm.gamma", read("transformer.ln_f.weight".into(), &[d])?);
    put(out, "norm.beta", read("transformer.ln_f.bias".into(), &[d])?);
    if !m.tie_embeddings {
        put(out, "head.weight", transpose(&read("lm_head.weight".into(), &[hf.vocab_rows, d])?));
    }
    Ok(())
}

fn put(out: &mut Mapped, name: &str, t: HfTensor) {
    out.insert(name.to_string(), (t.shape, t.values));
}

/// `t` when its shape is `shape`, else the error naming both.
fn expect(t: HfTensor, name: &str, shape: &[usize]) -> Result<HfTensor, ImportError> {
    if t.shape != shape {
        return Err(ImportError::ShapeMismatch {
            name: name.to_string(),
            found: t.shape,
            expected: shape.to_vec(),
        });
    }
    Ok(t)
}

/// `[rows, cols]` -> `[cols, rows]`.
fn transpose(t: &HfTensor) -> HfTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    HfTensor { shape: vec![cols, rows], values: hf_layout::transpose(&t.values, rows, cols) }
}

/// Stacks tensors along their first axis (`[a, n] + [b, n] -> [a + b, n]`, or 1-d).
fn concat_rows(parts: &[HfTensor]) -> HfTensor {
    let mut shape = parts[0].shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    HfTensor { shape, values: parts.iter().flat_map(|p| p.values.iter().copied()).collect() }
}

/// The first axis of `t` (heads of width `hd`) from Hugging Face's RoPE pairs to attnlab's.
fn rope_rows(t: HfTensor, hd: usize) -> HfTensor {
    let row = t.values.len() / t.shape[0];
    let values = hf_layout::reorder_rope_rows(&t.values, row, hd, Pairing::HalfSplit);
    HfTensor { shape: t.shape, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_stacks_rows() {
        let t = HfTensor { shape: vec![2, 3], values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] };
        let c = concat_rows(&[t.clone(), t]);
        assert_eq!(c.shape, vec![4, 3]);
        assert_eq!(c.values[6..], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }
}
