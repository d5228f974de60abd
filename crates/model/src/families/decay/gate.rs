//! Which decay a `decay` spec names (the positional part) and the fixed numbers of its gates:
//! RetNet's per-head `γ_h` and GLA's logit normaliser. A leaf, so the config and the layer both
//! read it.

/// GLA's `gate_logit_normalizer`: `log α = logsigmoid(·)/16`.
pub const GLA_LOGIT_NORMALIZER: f32 = 16.0;
/// Which decay (the spec's positional part).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Gate {
    /// Fixed scalar per head.
    #[default]
    Retnet,
    /// Data-dependent scalar per head and token.
    Mamba2,
    /// Data-dependent vector per head and token, one value per key feature.
    Gla,
    /// Data-dependent scalar per head and token, a sigmoid: FoX's forget gate on linear attention.
    Forget,
}

impl Gate {
    pub const ALL: [Gate; 4] = [Self::Retnet, Self::Mamba2, Self::Gla, Self::Forget];

    pub fn name(self) -> &'static str {
        match self {
            Self::Retnet => "retnet",
            Self::Mamba2 => "mamba2",
            Self::Gla => "gla",
            Self::Forget => "forget",
        }
    }
}

/// `log γ_h = ln(1 − 2^(−5−h))`, RetNet's fixed decay of head `h`.
pub fn retnet_log_gamma(head: usize) -> f32 {
    (-(2f64.powi(-5 - head as i32))).ln_1p() as f32
}
