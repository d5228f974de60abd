//! Differential attention.
//!
//! Ye, Dong, Xia, Sun, Zhu, Huang, Wei, "Differential Transformer" (ICLR 2025, arXiv 2410.05258):
//! each head attends twice and subtracts, so attention noise common to both maps cancels:
//!
//! `y = (1 − λ_init) · RMSNorm((softmax(Q₁K₁ᵀ/√d) − λ softmax(Q₂K₂ᵀ/√d)) V)`,
//! `λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init`,  `λ_init = 0.8 − 0.6·exp(−0.3·(l − 1))`.
//!
//! **Parameterisation.** attnlab's packed projection makes, per head, a query and a key of the
//! head dim `d_h` and a value of `d_h`. A differential head splits its query and key into halves,
//! `q = [q₁ | q₂]`, `k = [k₁ | k₂]` (first and second `d = d_h/2` columns), and keeps the
//! `d_h`-wide value: the paper's head of `d`-wide `Q_i`, `K_i` and `2d`-wide `V` with
//! `h = d_model / 2d` heads. So the `[q | k | v]` weights have softmax's shapes and layout (a
//! trained softmax model swaps to `diff` keeping them, and back), the parameter count is
//! softmax's plus `2·d_h` per layer, and the KV cache is softmax's: `K₁, K₂, V`, `2·d_h·L` floats
//! per key/value head. Scores are scaled by `1/√d`, `d = d_h/2` (the paper's `d`). Under RoPE each
//! half is rotated as its own `d`-wide head (pair `i` at `θ^(−2i/d)`), as the paper's code rotates
//! its `2h` sub-heads, so `d_h` must be a multiple of 4.
//!
//! **λ.** One λ per layer, shared by its heads (the paper's code: `λ_q1, λ_k1, λ_q2, λ_k2 ∈ ℝ^d`
//! per layer, drawn `N(0, 0.1²)`). `l` is the 1-based layer index, so with attnlab's 0-based
//! `MixerDims::layer` `λ_init = 0.8 − 0.6·exp(−0.3·layer)`: 0.2 in the first layer, rising to 0.8.
//! `diff:lambda_init=F` fixes `λ_init = F` in every layer (the paper's ablation).
//!
//! **Norm.** The paper's "GroupNorm" is an RMSNorm over each head's `d_h` outputs with one learned
//! `γ` `[d_h]` shared by the heads (`norm.gamma`), ε = 1e-5, then the fixed `(1 − λ_init)` scale,
//! which starts the layer's output at about softmax attention's magnitude.
//!
//! **Form.** On flex the forward runs both maps through the fused blocked softmax kernel at once
//! (`2h` query heads over `[k₁ | k₂]`, `A₁V − λA₂V`: memory linear in `T`); with diagnostics,
//! and on other backends, the two `T × T` maps are composed from tensor operations.
//!
//! Diagnostics (entropy, sink mass) are measured on the differential map `A₁ − λA₂`, the weights
//! that multiply `V`; they can be negative, so as for linear attention's implied weights the
//! entropy is taken over their magnitudes. Bidirectional models drop the causal mask from both
//! maps. Decoding keeps the KV cache and recomputes each new query's two rows over it.

mod layer;
#[cfg(test)]
mod tests;

pub use layer::{
    DiffAttention, NORM_EPS, differential_weights, lambda_init_schedule, rotate_halves,
};

use crate::gates::{family_rng, uniform};
use crate::heads::{HeadProjection, KvCache};
use crate::mixer::{Convention, MixerDims, MixerError, MixerFamily, SpecError, VariantInfo};
use crate::options::{parse_options, print_options};
use burn::module::Param;
use burn::nn::RmsNormConfig;
use burn::tensor::{Device, Tensor};
use rand::rngs::StdRng;
use std::fmt;

/// Tag of the λ vectors' own stream ([`family_rng`]).
const LAMBDA_STREAM: u64 = 0xD1FF;
/// Standard deviation of the λ vectors' initial draw (the paper's code).
const LAMBDA_STD: f64 = 0.1;

/// `diff[:lambda_init=F]`; the options are this struct's fields (see [`crate::options`]).
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffAttentionConfig {
    /// Fixed `λ_init` for every layer; `None` means the paper's depth schedule.
    pub lambda_init: Option<f64>,
}

impl fmt::Display for DiffAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_options(self))
    }
}

impl DiffAttentionConfig {
    /// `λ_init` of layer `layer` (0-based).
    pub fn lambda_init(&self, layer: usize) -> f64 {
        self.lambda_init.unwrap_or_else(|| lambda_init_schedule(layer))
    }
}

/// One `N(0, std²)` draw (Box–Muller; the first of the pair), so the λ vectors come from the
/// family's own seeded stream rather than the backend's.
fn normal(rng: &mut StdRng, std: f64) -> f64 {
    let (u1, u2) = (1.0 - uniform(rng, 0.0, 1.0), uniform(rng, 0.0, 1.0));
    std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl MixerFamily for DiffAttentionConfig {
    const NAME: &'static str = "diff";
    const SYNTAX: &'static str = "diff[:lambda_init=F]";
    const BENCH: &'static [&'static str] = &["diff"];
    type Module = DiffAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let config: Self = parse_options(parts, spec)?;
        if config.lambda_init.is_some_and(|l| !l.is_finite()) {
            return Err(SpecError::new(spec, "lambda_init must be a finite number, e.g. 0.8"));
        }
        Ok(config)
    }

    fn validate(&self, dims: &MixerDims) -> Result<(), MixerError> {
        if !dims.head_dim().is_multiple_of(4) {
            return Err(MixerError::HeadDim {
                mixer: "diff",
                head_dim: dims.head_dim(),
                multiple: 4,
                why: "queries and keys split in halves that RoPE rotates in pairs",
            });
        }
        Ok(())
    }

    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        // K₁ and K₂ are the two halves of softmax's key: the cache is softmax's.
        KvCache::floats(dims, seq_len)
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> DiffAttention {
        let (d_h, half) = (dims.head_dim(), dims.head_dim() / 2);
        let mut rng = family_rng(dims, LAMBDA_STREAM);
        let mut vector = || {
            let v: Vec<f32> = (0..half).map(|_| normal(&mut rng, LAMBDA_STD) as f32).collect();
            Param::from_tensor(Tensor::<1>::from_floats(v.as_slice(), device))
        };
        let lambdas = [vector(), vector(), vector(), vector()];
        DiffAttention::new(
            HeadProjection::new(dims, d_h, device),
            lambdas,
            RmsNormConfig::new(d_h).with_epsilon(NORM_EPS).init(device),
            self.lambda_init(dims.layer) as f32,
        )
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "lambda_init_schedule",
                Convention::new(
                    vec![0.8, 0.6, 0.3],
                    "[a, b, c]: λ_init = a − b·exp(−c·layer), layer the 0-based layer index (the \
                     paper's l − 1), unless lambda_init=F fixes it",
                ),
            ),
            (
                "lambda",
                Convention::new(
                    "exp(lambda_q1·lambda_k1) − exp(lambda_q2·lambda_k2) + λ_init",
                    "one λ per layer, shared by its heads; the four vectors are d_h/2 wide",
                ),
            ),
            (
                "qk_halves",
                Convention::new(
                    "[q1 | q2]",
                    "each head's d_h-wide query and key split into first and second halves of \
                     d = d_h/2; under RoPE each half is rotated as its own d-wide head (pair i at \
                     θ^(−2i/d)); scores scaled by 1/√d",
                ),
            ),
            (
                "norm_eps",
                Convention::number(
                    NORM_EPS as f32,
                    "ε of the RMSNorm over each head's d_h outputs, y/√(mean(y²) + ε)·γ with \
                     γ = norm.gamma [d_h] shared by the heads, then times (1 − λ_init)",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo {
                spec: "diff",
                formula: "(1 − λ_init)·RMSNorm((softmax(q₁·k₁/√d) − λ softmax(q₂·k₂/√d)) v), q = [q₁|q₂], d = d_h/2, λ = e^{λ_q1·λ_k1} − e^{λ_q2·λ_k2} + λ_init, λ_init = 0.8 − 0.6e^{−0.3·layer} (Differential Transformer)",
            },
            VariantInfo {
                spec: "diff:lambda_init=0.8",
                formula: "differential attention with λ_init fixed at 0.8 in every layer",
            },
        ]
    }
}
