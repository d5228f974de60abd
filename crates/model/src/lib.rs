//! attnlab's model library: a Burn transformer generic over its attention ("sequence mixer").
//!
//! - [`mixer`]: the [`SequenceMixer`] interface, spec strings (`softmax:sum_key_norms`,
//!   `linear:elu1`, ...) and the run-time [`Mixer`] enum.
//! - [`softmax`], [`sigmoid`], [`linear`]: one file per variant family, each opening with its
//!   paper and formula.
//! - [`block`], [`position`], [`lm`], [`config`]: the transformer around them.
//! - [`fused`]: fused flex (CPU) kernels with their own backward passes: linear map, GELU, layer
//!   norm, packed softmax attention, chunked linear attention, elu+1.
//! - [`backend`]: `--device flex|ndarray|wgpu|cuda` at run time.
//!
//! No files, printing or command-line parsing here: those live in `attnlab-train` and up.

pub mod backend;
pub mod block;
pub mod config;
pub mod fused;
pub mod heads;
pub mod linear;
pub mod lm;
pub mod mixer;
pub mod position;
pub mod seeding;
pub mod sigmoid;
pub mod softmax;

#[cfg(test)]
mod reference;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use backend::{BackendError, BackendKind};
pub use config::{ConfigError, ModelConfig, ModelInput, ModelIo};
pub use lm::{Lm, LmInput, LmState, Model};
pub use mixer::{AttentionDiagnostics, Mixer, MixerSpec, MixerStack, MixerState, SequenceMixer, SpecError};
