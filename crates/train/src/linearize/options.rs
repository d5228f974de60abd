//! What `attnlab linearize` is asked to do, and every way it refuses or fails (one line each,
//! naming the option and the fix).

use crate::checkpoint::CheckpointError;
use crate::runs::LoadRunError;
use crate::task;
use attnlab_model::{MixerSpec, ModelConfigError};
use std::path::PathBuf;

/// Which layers to swap.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerChoice {
    All,
    These(Vec<usize>),
    /// Swap all, then keep the teacher's attention in the K layers stage 1 fits worst.
    KeepWorst(usize),
}

/// A `--layers` value that names no layers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--layers {given}: expected all, comma-separated indices (1,3,5) or keep:K")]
pub struct LayerChoiceError {
    pub given: String,
}

impl std::str::FromStr for LayerChoice {
    type Err = LayerChoiceError;
    fn from_str(s: &str) -> Result<Self, LayerChoiceError> {
        let bad = || LayerChoiceError { given: s.to_string() };
        if s == "all" {
            return Ok(Self::All);
        }
        if let Some(k) = s.strip_prefix("keep:") {
            return k.parse().map(Self::KeepWorst).map_err(|_| bad());
        }
        s.split(',')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map(Self::These)
            .map_err(|_| bad())
    }
}

impl std::fmt::Display for LayerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => write!(f, "all"),
            Self::KeepWorst(k) => write!(f, "keep:{k}"),
            Self::These(layers) => {
                let list: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
                write!(f, "{}", list.join(","))
            }
        }
    }
}

/// What `attnlab linearize` is asked to do.
#[derive(Clone, Debug)]
pub struct LinearizeOptions {
    pub run: PathBuf,
    pub checkpoint: String,
    pub to: MixerSpec,
    pub layers: LayerChoice,
    pub transfer_steps: usize,
    pub recover_steps: usize,
    /// Stage 1's learning rate (constant, AdamW).
    pub transfer_lr: f64,
    /// Stage 1 trains only the new mixers' own parameters (feature maps, gates, β, convolutions,
    /// scales), the carried-over q/k/v/o projections frozen (LoLCATs' stage 1); `false`: every
    /// parameter of the swapped mixers.
    pub transfer_own_only: bool,
    /// Stage 2's and the control's (constant, AdamW); `None` = the teacher run's `train.lr`.
    pub recover_lr: Option<f64>,
    /// Weight of the distillation term (0: stage 2 is cross-entropy only, "transfer only").
    pub alpha: f64,
    /// Distillation temperature.
    pub tau: f64,
    /// Stage 2 trains LoRA adapters of this rank on every layer's q/k/v and output projections
    /// (Burn's `Module::apply_lora`, scale 2, merged into the weights afterwards) instead of the
    /// whole student; 0 = the whole student.
    pub lora_rank: usize,
    /// Stage 2 and the control evaluate the held-out loss every this many steps (and at their
    /// last), keep the best weights and checkpoint; stage 1 checkpoints at the same cadence.
    pub eval_every: usize,
    /// Stop stage 2 (and the control) after this many evaluations without a lower held-out
    /// loss; 0 = never early.
    pub patience: usize,
    /// Also train the control (swap + cross-entropy, both stages' steps).
    pub control: bool,
    /// Recall probes of each kind and length.
    pub probe_examples: usize,
    /// The working directory: checkpoints of every stage, `linearize.json` (these options, to
    /// resume), `results.json`, the report, and the student run `student/`.
    pub out: PathBuf,
    /// No progress lines on stderr.
    pub quiet: bool,
}

impl LinearizeOptions {
    /// Everything that decides the result (not `out` or `quiet`), as `linearize.json` holds it:
    /// a resume must be asked the same.
    pub fn identity(&self) -> serde_json::Value {
        let run = self.run.canonicalize().unwrap_or_else(|_| self.run.clone());
        serde_json::json!({
            "run": run,
            "checkpoint": self.checkpoint,
            "to": self.to.to_string(),
            "layers": self.layers.to_string(),
            "transfer_steps": self.transfer_steps,
            "recover_steps": self.recover_steps,
            "transfer_lr": self.transfer_lr,
            "transfer_params": if self.transfer_own_only { "new" } else { "all" },
            "lr": self.recover_lr,
            "alpha": self.alpha,
            "tau": self.tau,
            "lora": self.lora_rank,
            "eval_every": self.eval_every,
            "patience": self.patience,
            "control": self.control,
            "probe_examples": self.probe_examples,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinearizeError {
    #[error(transparent)]
    Load(#[from] LoadRunError),
    #[error("--layers: layer {layer} does not exist; the run has layers 0..={last}")]
    NoSuchLayer { layer: usize, last: usize },
    #[error("--layers keep:{keep}: keeping {keep} of {swapped} layers leaves none to linearise")]
    KeepsAll { keep: usize, swapped: usize },
    #[error("--transfer-steps, --recover-steps and --eval-every must be at least 1")]
    NoSteps,
    #[error("--alpha must be ≥ 0 and --tau > 0 (finite)")]
    BadDistillation,
    #[error(
        "--transfer-params new: {spec} has no parameters of its own besides q/k/v/o; use --transfer-params all"
    )]
    NothingOwnToTransfer { spec: String },
    #[error(
        "{path} holds a linearisation asked with other options ({keys}): repeat its options to resume it, or choose a new --out"
    )]
    OtherOptions { path: PathBuf, keys: String },
    #[error(transparent)]
    Model(#[from] ModelConfigError),
    #[error(transparent)]
    Device(#[from] attnlab_model::BackendError),
    #[error(transparent)]
    Stack(#[from] attnlab_model::StackLengthError),
    #[error("{arm}: the {what} became {value} at step {step}; lower the learning rate")]
    NonFinite { arm: &'static str, what: &'static str, value: f64, step: usize },
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    #[error(transparent)]
    RunDir(#[from] crate::run_dir::RunDirError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Task(#[from] task::TaskError),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: std::io::Error },
    #[error("{path} is corrupt ({reason}): delete it to redo that part")]
    Corrupt { path: PathBuf, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_choices_parse_print_back_and_bad_ones_name_the_forms() {
        for (text, choice) in [
            ("all", LayerChoice::All),
            ("1,3", LayerChoice::These(vec![1, 3])),
            ("keep:2", LayerChoice::KeepWorst(2)),
        ] {
            assert_eq!(text.parse::<LayerChoice>(), Ok(choice.clone()));
            assert_eq!(choice.to_string(), text);
        }
        assert!("keep:x".parse::<LayerChoice>().unwrap_err().to_string().contains("keep:K"));
    }
}
