//! The choices a softmax spec names: the score scaling (the spec's positional part), the output
//! gate and the sink. A leaf, so the config, the layer and the kernel all read them.

use serde::{Deserialize, Serialize};

/// How `q·k` becomes the logits (the spec's positional part).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scaling {
    #[default]
    SqrtD,
    None,
    NumKeys,
    SumKeyNorms,
    Learned,
    QkNorm,
    Ssmax,
    LogNTemp,
    Softpick,
}

impl Scaling {
    pub const ALL: [Scaling; 9] = [
        Self::SqrtD,
        Self::None,
        Self::NumKeys,
        Self::SumKeyNorms,
        Self::Learned,
        Self::QkNorm,
        Self::Ssmax,
        Self::LogNTemp,
        Self::Softpick,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::SqrtD => "sqrt_d",
            Self::None => "none",
            Self::NumKeys => "num_keys",
            Self::SumKeyNorms => "sum_key_norms",
            Self::Learned => "learned",
            Self::QkNorm => "qk_norm",
            Self::Ssmax => "ssmax",
            Self::LogNTemp => "log_n_temp",
            Self::Softpick => "softpick",
        }
    }

    /// Whether the scaling has a learned per-head parameter.
    pub fn has_parameter(self) -> bool {
        matches!(self, Self::Learned | Self::QkNorm | Self::Ssmax)
    }
}

/// `gate=none|output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputGate {
    #[default]
    None,
    Output,
}

/// `sink=none|learned|zero`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    #[default]
    None,
    Learned,
    Zero,
}
