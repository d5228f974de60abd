//! RWKV-7 "Goose": a generalised delta rule with a per-channel decay and a separate removal key.
//!
//! Peng et al. 2025, "RWKV-7 "Goose" with Expressive Dynamic State Evolution" (arXiv
//! 2503.14456), as flash-linear-attention's `RWKV7Attention` layer computes it. Per head, a state
//! `S_t ∈ R^{d_k×d_v}` (fla's layout: `o = Sᵀ r`):
//!
//! `S_t = diag(w_t) S_{t−1} + β_t (α_tᵀ S_{t−1}) + k̃_t v_tᵀ`,  `o_t = S_tᵀ r_t`,
//!
//! with `α_t = −κ_t`, `β_t = κ_t ⊙ a_t` (fla's diagonal-plus-low-rank recurrence): the state is
//! decayed per key channel and the part it holds along the unit "removal key" `κ_t` is taken out at
//! in-context learning rate `a_t`, channel by channel. Note that the removal term reads the state
//! *before* the decay, as fla's naive `dplr_recurrence` does.
//!
//! Per token, from the layer input `x_t` (`x_{−1} = 0`; decoding keeps the last token's `x`):
//! - token shift: `δ_t = x_{t−1} − x_t`, `x^c = x + δ ⊙ μ_c` for `c ∈ {r, w, k, v, a, g}`;
//! - `r = W_r x^r`, `k = W_k x^k`, `v = W_v x^v` (biases under `model.bias`; fla has none);
//! - `log w = −e^{−½}·σ(w0 + W_w2 tanh(W_w1 x^w))`, so `w ∈ (e^{−0.607}, 1)` per key channel;
//! - `a = σ(a0 + W_a2 W_a1 x^a) ∈ (0, 1)` per key channel; `g = W_g2 σ(W_g1 x^g)`;
//! - per head `κ = normalize(k ⊙ k_k)` (L2, `x / max(‖x‖, 1e-12)`), `k̃ = k ⊙ (1 + (a − 1) ⊙ k_a)`;
//! - `o ← GroupNorm_head(o)` (each head's `d_v` outputs, ε = `d_h·1e-5`, affine), then
//!   `o ← (o + (Σ_i r_i k̃_i r_k,i) v) ⊙ g` per head (the "bonus" of the current token), then `W_o`.
//!
//! The three LoRAs are `x ↦ W_2 f(W_1 x) (+ b)`, ranks `decay_rank`, `a_rank`, `gate_rank`
//! (options, default 32 each). fla sizes them `max(32, round(c·√d_model·f / 32)·32)` (`c = 2.5`,
//! `f = d_h/64` for `w` and `a`; `c = 5`, `f = 1` for `g`): 32 for `w` and `a` up to
//! `d_model = 368` at `d_h = 64`, and 32 for `g` only up to `d_model = 92` (64 above it: set
//! `gate_rank=64` to match fla on wider models).
//!
//! **Left out**: fla's "v-first" value residual (layers after the first mix their `v` with layer
//! 0's), a connection across layers the mixer interface does not carry. There is no grouped-query
//! form and no per-head q/k norm (both refused by `validate`), and no RoPE (the recurrence and the
//! token shift order the tokens; a model's RoPE is not applied).
//!
//! **Initialisation** follows fla's `_initialize_weights` with the layer's place in the stack
//! (`ρ₀ = layer / (L − 1)`, `ρ₁ = 1 − layer / L`): `μ_c = 1 − (n/D)^{p_c·ρ₁}` over channels `n`,
//! `k_k = 0.71 − 0.1·lin`, `k_a = 1.02`, `r_k = −0.04`, `w0 = −6 + 6·(n/(D−1))^{1 + ρ₀^0.3} + 0.5
//! + 2.5·zigzag`, `a0 = −0.19 + 0.3·zigzag + 0.4·lin`, GroupNorm weight `((layer + 1)/L)^0.7`
//! (bias 0), `W_r, W_v` orthogonal, `W_k` orthogonal × 0.1, `W_o = 0`, every LoRA's `W_1 = 0` and
//! `W_2` orthogonal × 0.1. Drawn from the model seed and layer.
//!
//! Forms (`form=`, the same numbers): [`recurrent`], token by token (the default: on the CPU
//! backend at this project's widths it ran 2–5× faster than the chunked form, whose per-channel
//! `C × C × d_k` decays cost more than the steps they save), and [`chunked`] (`chunk=16` tokens
//! per chunk: inside a chunk the removal reads `u_i = α_iᵀ S_{i−1}` come from one unit-lower
//! triangular solve, between chunks the state is carried), for accelerators and long sequences.
//! On flex the recurrent form's pass from the empty state (training, evaluation) runs the fused
//! kernel `fused::dplr_recurrence`, the same recurrence with a hand-written backward pass (tested
//! equal to [`recurrent`] in outputs and gradients); decoding from a carried state composes it.
//! Single-token decoding, the implied weights and the tests' reference use the recurrence. A
//! bidirectional model runs the whole layer forwards and over the reversed sequence (its token
//! shift then reads the next token) and adds the two outputs.
//!
//! This file holds the config; `init.rs` fla's initial values, `layer.rs` the module, `forms.rs`
//! the recurrent and chunked forms, the implied weights and the head norm, `tests.rs` the naive
//! oracle and the tests.

mod forms;
mod init;
mod layer;
#[cfg(test)]
mod tests;

pub use forms::{chunked, head_group_norm, implied_weights, recurrent};
pub use layer::{Lora, Rwkv7Attention, Rwkv7State};

use crate::gates::family_rng;
use crate::mixer::{Convention, MixerDims, MixerError, MixerFamily, SpecError, VariantInfo};
use crate::options::{parse_options, print_options};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The parameters' stream tag ("rwkv7_in").
const INIT_TAG: u64 = 0x7277_6b76_375f_696e;

/// `rwkv7[:decay_rank=N][:a_rank=N][:gate_rank=N][:form=recurrent|chunked][:chunk=N]`: the options are this struct's fields (see
/// [`crate::options`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rwkv7AttentionConfig {
    /// Rank of the decay LoRA (`w`).
    pub decay_rank: usize,
    /// Rank of the in-context learning rate LoRA (`a`).
    pub a_rank: usize,
    /// Rank of the output gate LoRA (`g`).
    pub gate_rank: usize,
    pub form: Rwkv7Form,
    /// Tokens per chunk of the chunked form.
    pub chunk: usize,
}

/// How the layer runs its recurrence over a sequence; both give the same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rwkv7Form {
    /// Token by token.
    #[default]
    Recurrent,
    /// A triangular solve inside chunks, the state carried between them.
    Chunked,
}

impl Default for Rwkv7AttentionConfig {
    fn default() -> Self {
        Self { decay_rank: 32, a_rank: 32, gate_rank: 32, form: Rwkv7Form::Recurrent, chunk: 16 }
    }
}

impl fmt::Display for Rwkv7AttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_options(self))
    }
}

impl MixerFamily for Rwkv7AttentionConfig {
    const NAME: &'static str = "rwkv7";
    const SYNTAX: &'static str =
        "rwkv7[:decay_rank=N][:a_rank=N][:gate_rank=N][:form=recurrent|chunked][:chunk=N]";
    type Module = Rwkv7Attention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let c: Self = parse_options(parts, spec)?;
        if c.chunk == 0 {
            return Err(SpecError::new(spec, "chunk must be at least 1"));
        }
        if c.decay_rank == 0 || c.a_rank == 0 || c.gate_rank == 0 {
            return Err(SpecError::new(
                spec,
                "decay_rank, a_rank and gate_rank must be at least 1",
            ));
        }
        Ok(c)
    }

    fn validate(&self, dims: &MixerDims) -> Result<(), MixerError> {
        let unsupported = |what, fix| Err(MixerError::Unsupported { mixer: "rwkv7", what, fix });
        if dims.n_kv_heads != dims.n_heads {
            return unsupported(
                "grouped-query form (every head has its own k and v)",
                "set model.n_kv_heads = model.n_heads (or 0)",
            );
        }
        if dims.qk_head_norm.is_some() {
            return unsupported("per-head q/k norm", "set model.qk_head_norm = false");
        }
        Ok(())
    }

    /// `S` (`heads·d_k·d_v`) plus the token shift's one remembered input (`d_model`); fixed in
    /// `seq_len`.
    fn decode_state_floats(&self, dims: &MixerDims, _seq_len: usize) -> usize {
        let d = dims.head_dim();
        dims.n_heads * d * d + dims.d_model
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> Rwkv7Attention {
        let mut rng = family_rng(dims, INIT_TAG);
        let ranks = (self.decay_rank, self.a_rank, self.gate_rank);
        let chunk = (self.form == Rwkv7Form::Chunked).then_some(self.chunk);
        init::build(dims, ranks, chunk, &mut rng, device)
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "mix_layout",
                Convention::new(
                    "mu [6, d_model], rows r, w, k, v, a, g; x^c = x + (x_prev − x)·mu[c], x_prev = 0 before the first token",
                    "the token shift's six interpolations",
                ),
            ),
            (
                "decay_scale",
                Convention::new(
                    (-0.5f64).exp(),
                    "log w = −this · σ(w_lora.up(tanh(w_lora.down(x^w)))), this = e^{−1/2}",
                ),
            ),
            (
                "lora",
                Convention::new(
                    "w: up(tanh(down x)) + bias; a: σ(up(down x) + bias); g: up(σ(down x)), no bias",
                    "the three low-rank maps (down: [d_model, rank], no bias; up: [rank, H·d_h])",
                ),
            ),
            (
                "l2_eps",
                Convention::number(
                    layer::L2_EPS,
                    "κ = (k·k_k) / max(‖k·k_k‖, ε) per head (torch's F.normalize)",
                ),
            ),
            (
                "recurrence",
                Convention::new(
                    "S_t = diag(w_t) S_{t−1} + (κ_t·a_t)(−κ_tᵀ S_{t−1}) + k̃_t v_tᵀ (the removal reads S before the decay); o_t = S_tᵀ r_t, scale 1",
                    "fla's dplr recurrence with α = −κ, β = κ·a, k̃ = k·(1 + (a − 1)·k_a)",
                ),
            ),
            (
                "group_norm_eps_per_dim",
                Convention::number(
                    layer::GROUP_NORM_EPS,
                    "GroupNorm over each head's d_v outputs with ε = d_h · this, weight and bias g_norm_weight, g_norm_bias",
                ),
            ),
            (
                "bonus",
                Convention::new(
                    "o ← (norm(o) + Σ_i(r·k̃·r_k)_i · v) · g per head, then o_proj",
                    "the current token's own term and the output gate",
                ),
            ),
            (
                "bias",
                Convention::new(
                    "r_proj, k_proj, v_proj under model.bias (qkv_bias); o_proj under out_bias; the LoRAs as fla",
                    "which projections carry a bias (fla's carry none)",
                ),
            ),
            (
                "omitted",
                Convention::new(
                    "v_first",
                    "fla's cross-layer value residual is left out: every layer uses its own v",
                ),
            ),
            (
                "bidirectional",
                Convention::new(
                    "layer(x) + flip(layer(flip(x)))",
                    "model.causal = false: the whole layer (token shift included) forwards and over the reversed sequence",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![VariantInfo {
            spec: "rwkv7",
            formula: "S_t = diag(w_t) S_{t−1} − (κ_t⊙a_t)(κ_tᵀ S_{t−1}) + k̃_t v_tᵀ, o_t = S_tᵀ r_t, then head GroupNorm, bonus and gate (RWKV-7 Goose, Peng et al. 2025)",
        }]
    }
}
