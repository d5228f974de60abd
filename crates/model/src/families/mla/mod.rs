//! Multi-head latent attention (MLA).
//!
//! DeepSeek-AI, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language
//! Model" (arXiv 2405.04434), §2.1: every head's key and value are up-projected from one
//! low-rank latent per token, so decoding caches the latent instead of the keys and values.
//! With `h_t` the token's input, `H` heads of width `d_h`:
//!
//! `c_t = W_DKV h_t ∈ ℝ^{d_c}`, `k^C_{t,i} = W_UK,i c_t`, `v_{t,i} = W_UV,i c_t`,
//! `q^C_{t,i} = W_Q,i h_t` (with `q_latent=N`: `q^C_{t,i} = W_UQ,i c^Q_t`, `c^Q_t = W_DQ h_t ∈ ℝ^N`),
//! `q^R_{t,i} = RoPE(W_QR,i h_t)` (`W_QR,i c^Q_t` with a query latent),
//! `k^R_t = RoPE(W_KR h_t) ∈ ℝ^{d_R}` (one key shared by every head),
//! `q = [q^C; q^R]`, `k = [k^C; k^R]`,
//! `o_{t,i} = Σ_{j≤t} softmax_j(q_{t,i}·k_{j,i} / √(d_h + d_R)) v_{j,i}`,
//! `y_t = W_O [o_{t,1}; …; o_{t,H}]`.
//!
//! **Decoding.** The state is `c_t` and the rotated `k^R_t` of every token: `(d_c + d_R)·L`
//! floats per layer, against softmax's `2·H·d_h·L`. The *absorbed* path never up-projects the
//! cache: `q^C·(W_UK c) = (W_UKᵀ q^C)·c`, so each new query is taken into the latent space once
//! and scored against the cached latents, and `Σ_j w_j W_UV c_j = W_UV (Σ_j w_j c_j)`, so `W_UV`
//! applies once, after the weighted sum of latents. That needs keys linear in the latent: RoPE
//! on `k^C` (a rotation by the key's position, between `W_UK` and the query) or a norm of `k^C`
//! would break it, which is why DeepSeek-V2 rotates only a separate `d_R`-wide part. Where the
//! keys are not linear in `c` (below), decoding takes the *explicit* path: up-project the cached
//! latents, then attend. It still caches only `c_t`.
//!
//! **Positions.** `rope_dim=d_R > 0` is DeepSeek-V2's decoupled RoPE: only `q^R` and `k^R` are
//! rotated, never the compressed part. It needs `model.positions = "rope"` (the model refuses it
//! otherwise) and an even `d_R` dividing the head dim: the part reads RoPE's head-wide table at
//! its own width, pair `i` at `θ^(−2i/d_R)`, as Based's narrow queries do. `rope_dim=0` (the
//! default) has no decoupled part: learned and sinusoidal positions add to the input as for any
//! family, and under `model.positions = "rope"` the model's RoPE rotates `q^C` and `k^C` as it
//! rotates every family's queries and keys, so decoding takes the explicit path.
//!
//! **Defaults.** `latent` (`d_c`) is `2·d_h`: DeepSeek-V2 uses `4·d_h` with 128 heads, a
//! 57th of the KV cache; attnlab's models have 2–8 heads, where `4·d_h` would be as large as the
//! whole KV cache at 2 heads. `2·d_h` caches half of it at 2 heads and a quarter at 4, and stays
//! a multiple of the head width as `d_h` changes. `rope_dim` is 0 so that plain `mla` fits the
//! project's default (learned) positions; DeepSeek-V2's `d_R = d_h/2` is `mla:rope_dim=<d_h/2>`.
//!
//! **The model's head options.** `model.n_kv_heads = K < H` makes `W_UK` and `W_UV` `K` heads
//! wide, key/value head `j` read by query heads `j·H/K .. (j + 1)·H/K` (grouped-query attention
//! on the up-projections; the cache is the latent either way). `model.qk_head_norm` (Qwen3)
//! RMS-normalises each head's `q^C` and `k^C` (width `d_h`, before any RoPE), so decoding takes
//! the explicit path. Biases: the maps that read `h` (`W_DKV`, `W_Q` or `W_DQ`, `W_KR`, and
//! `W_QR` without a query latent) take `model.qkv_bias`/`model.bias`; the maps that read a
//! latent have none (a bias on `W_UK` would add the same `q·b` to every score of a row, which
//! softmax ignores; one on `W_UV` would pass through weights summing to one into `W_O`'s);
//! `W_O` takes `model.out_bias`.
//!
//! **Latent norm.** The paper's equations have no norm on the latents; DeepSeek-V2's released
//! code RMS-normalises `c_t` and `c^Q_t` right after the down-projections (`kv_a_layernorm`,
//! `q_a_layernorm`, ε 1e-6). `latent_norm=true` adds them (`latent_norm.gamma: [d_c]`,
//! `q_latent_norm.gamma: [d_c']` with a query latent); decoding caches the normalised `c_t`,
//! and keys stay linear in it, so the absorbed path still holds.
//!
//! `layer.rs` holds the module (forward, both decoding paths), `tests.rs` the naive oracle from
//! the equations above and the tests.

mod layer;
#[cfg(test)]
mod tests;

pub use layer::{DecodePath, DecoupledRope, LatentCache, MlaAttention};

use crate::mixer::{Convention, MixerDims, MixerError, MixerFamily, SpecError, VariantInfo};
use crate::options::{parse_options, print_options};
use burn::nn::{LinearConfig, RmsNormConfig};
use burn::tensor::Device;
use std::fmt;

/// `latent` when the spec leaves it out: this many head widths (see the module docs for why).
pub const DEFAULT_LATENT_HEADS: usize = 2;

/// `mla[:latent=N][:rope_dim=N][:q_latent=N]`; the options are this struct's fields (see
/// [`crate::options`]).
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlaAttentionConfig {
    /// `d_c`, the key/value latent's width; `None` means `2·d_h`.
    pub latent: Option<usize>,
    /// `d_R`, the decoupled RoPE part of each query and of the shared key; 0 = none.
    pub rope_dim: usize,
    /// `d_c'`, the query latent's width; `None` projects queries straight from `h`.
    pub q_latent: Option<usize>,
    /// RMSNorm of `c_t` (and of `c^Q_t`) after the down-projections, as DeepSeek-V2's code has.
    pub latent_norm: bool,
}

/// ε of the latents' RMSNorm (DeepSeek-V2's `rms_norm_eps`).
pub const LATENT_NORM_EPS: f64 = 1e-6;

impl fmt::Display for MlaAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_options(self))
    }
}

impl MlaAttentionConfig {
    /// `d_c` at these dims.
    pub fn latent_dim(&self, dims: &MixerDims) -> usize {
        self.latent.unwrap_or(DEFAULT_LATENT_HEADS * dims.head_dim())
    }
}

impl MixerFamily for MlaAttentionConfig {
    const NAME: &'static str = "mla";
    const SYNTAX: &'static str = "mla[:latent=N][:rope_dim=N][:q_latent=N][:latent_norm=true]";
    const BENCH: &'static [&'static str] = &["mla"];
    type Module = MlaAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let config: Self = parse_options(parts, spec)?;
        if config.latent == Some(0) || config.q_latent == Some(0) {
            return Err(SpecError::new(spec, "latent and q_latent must be at least 1"));
        }
        if !config.rope_dim.is_multiple_of(2) {
            return Err(SpecError::new(spec, "rope_dim must be even (RoPE turns pairs), e.g. 4"));
        }
        Ok(config)
    }

    fn validate(&self, dims: &MixerDims) -> Result<(), MixerError> {
        if self.rope_dim > 0 && !dims.head_dim().is_multiple_of(self.rope_dim) {
            return Err(MixerError::HeadDim {
                mixer: "mla",
                head_dim: dims.head_dim(),
                multiple: self.rope_dim,
                why: "the decoupled RoPE part reads RoPE's head-wide table at its own width",
            });
        }
        Ok(())
    }

    fn needs_rope(&self) -> bool {
        self.rope_dim > 0
    }

    /// `c_t` and `k^R_t` per token: `(d_c + d_R)·L`, whatever the heads.
    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        seq_len * (self.latent_dim(dims) + self.rope_dim)
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> MlaAttention {
        let (d, h, kv, d_h, d_r) =
            (dims.d_model, dims.n_heads, dims.n_kv_heads, dims.head_dim(), self.rope_dim);
        let d_c = self.latent_dim(dims);
        // Maps that read h take the projection bias; maps that read a latent take none.
        let linear = |from: usize, to: usize, bias: bool| {
            LinearConfig::new(from, to).with_bias(bias).init(device)
        };
        let q_down = self.q_latent.map(|n| linear(d, n, dims.bias));
        let (q_from, q_bias) = match self.q_latent {
            Some(n) => (n, false),
            None => (d, dims.bias),
        };
        let norm =
            || dims.qk_head_norm.map(|eps| RmsNormConfig::new(d_h).with_epsilon(eps).init(device));
        let latent_norm =
            |width: usize| RmsNormConfig::new(width).with_epsilon(LATENT_NORM_EPS).init(device);
        MlaAttention {
            q_down,
            q: linear(q_from, h * d_h, q_bias),
            kv_down: linear(d, d_c, dims.bias),
            kv_up: linear(d_c, 2 * kv * d_h, false),
            rope: (d_r > 0).then(|| layer::DecoupledRope {
                q: linear(q_from, h * d_r, q_bias),
                k: linear(d, d_r, dims.bias),
            }),
            q_norm: norm(),
            k_norm: norm(),
            latent_norm: self.latent_norm.then(|| latent_norm(d_c)),
            q_latent_norm: self.q_latent.filter(|_| self.latent_norm).map(latent_norm),
            out: LinearConfig::new(h * d_h, d).with_bias(dims.out_bias).init(device),
            shape: layer::Shape { n_heads: h, n_kv_heads: kv, d_head: d_h, rope_dim: d_r },
        }
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "latent_default",
                Convention::new(
                    DEFAULT_LATENT_HEADS,
                    "latent (d_c) = this many head widths when the option is absent",
                ),
            ),
            (
                "score_scale",
                Convention::new(
                    "1/√(d_h + rope_dim)",
                    "scores q·k = q^C·k^C + q^R·k^R divided by √ of the whole query width",
                ),
            ),
            (
                "rope",
                Convention::new(
                    "rope_dim > 0: rope.q and rope.k outputs only, pair i at θ^(−2i/rope_dim); \
                     rope_dim = 0: q^C and k^C as any family's queries and keys",
                    "where RoPE applies when model.positions = rope (rope_dim > 0 requires it)",
                ),
            ),
            (
                "kv_heads",
                Convention::new(
                    "kv_up: [d_c, 2·n_kv_heads·d_h], columns [W_UK | W_UV] each head-major; query \
                     head h reads key/value head h // (H/K)",
                    "grouped-query attention acts on the up-projections; the latent is shared",
                ),
            ),
            (
                "latent_norm_eps",
                Convention::new(
                    LATENT_NORM_EPS,
                    "latent_norm=true: RMSNorm with this ε of c = W_DKV x (latent_norm.gamma [d_c]) and of \
                     c^Q (q_latent_norm.gamma [d_c']) right after the down-projections, as DeepSeek-V2's \
                     code has; off by default, as in the paper's equations",
                ),
            ),
            (
                "head_norm",
                Convention::new(
                    "q_norm, k_norm: RMSNorm over each head's d_h-wide q^C and k^C, before RoPE",
                    "model.qk_head_norm; the decoupled RoPE part is not normalised",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo {
                spec: "mla",
                formula: "softmax(q·k/√(d_h + d_R)) v, k = [W_UK c; k^R], v = W_UV c, c = W_DKV x (d_c = 2·d_h), q = [W_Q x; q^R]; decoding caches c and k^R, (d_c + d_R) floats per token (DeepSeek-V2 multi-head latent attention; d_R = rope_dim, 0 here)",
            },
            VariantInfo { spec: "mla:latent=4", formula: "MLA with a 4-wide key/value latent c" },
            VariantInfo {
                spec: "mla:q_latent=8",
                formula: "MLA with queries through an 8-wide latent too: q^C = W_UQ c^Q, c^Q = W_DQ x",
            },
        ]
    }
}
