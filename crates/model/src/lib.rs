//! attnlab's model library: a Burn transformer generic over its attention ("sequence mixer").
//!
//! - [`mixer`]: the interface every attention family implements ([`SequenceMixer`],
//!   [`mixer::MixerFamily`]), its context, diagnostics and decoding state. A leaf.
//! - [`heads`]: head mechanics the families share (projection, split/merge, RoPE, KV cache).
//! - [`feature_map`]: what the linear-type families share: the feature maps φ and the sign-safe
//!   normaliser.
//! - [`families`]: the registry (spec strings like `softmax:sum_key_norms` and `linear:elu1`,
//!   the run-time [`Mixer`] enum) and one module per family, each opening with its paper and
//!   formula: a file, or once it outgrows one screen a folder (`mod.rs` the config, `layer.rs`
//!   the module, `forms.rs` the computations, `tests/` the oracle and tests).
//! - [`gates`], [`short_conv`], [`chunking`]: what the gated linear-type families share (the
//!   SSD decay's parameters, the `conv=K` short convolution, chunk bookkeeping).
//! - [`recurrent_layer`]: what the fixed-state recurrent families (`decay`, `delta`) share around
//!   their forms: the decoding state and step, the convolution's handling, the fused-or-composed
//!   chunked call.
//! - [`block_select`]: what the block-sparse families share (block masks and means, the top-k
//!   block choice with ties to the lower index).
//! - [`options`]: a family's `key=value` spec options read into and printed from its serde struct.
//! - [`stack`]: one spec per layer ([`MixerStack`]).
//! - [`block`], [`position`], [`lm`], [`config`]: the transformer around them.
//! - [`fused`]: fused flex (CPU) kernels with their own backward passes: affine map, GELU, layer
//!   norm, packed softmax attention, chunked linear attention, elu+1. Imports no family.
//! - [`backend`]: `--device flex|ndarray|wgpu|cuda` at run time.
//!
//! No files, printing or command-line parsing here: those live in `attnlab-train` and up.
//!
//! Errors are typed, one enum per concern, each variant carrying what its one-line message names
//! (the key, the value) and the fix: [`SpecError`] (a spec string), [`MixerError`] (a mixer's
//! options against the model's shape, [`mixer::MixerFamily::validate`]), [`ModelConfigError`]
//! (the `[model]` table), [`StackLengthError`], [`feature_map::MapOptionError`],
//! [`short_conv::KernelError`] and [`BackendError`].
//!
//! Modules import one way: no import circle (a parent's `mod.rs` may use its children, not the
//! other way round), no family names another, and `mixer`, `heads` and `fused` name no family.
//! `crates/cli/tests/architecture.rs` checks this from the sources.

pub mod backend;
pub mod block;
pub mod block_select;
pub mod canon;
pub mod chunking;
pub mod config;
pub mod families;
pub mod feature_map;
pub mod fused;
pub mod gates;
pub mod heads;
pub mod init;
pub mod lm;
pub mod mixer;
pub mod options;
pub mod position;
pub mod recurrent_layer;
pub mod seeding;
pub mod short_conv;
pub mod stack;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use backend::{BackendError, BackendKind, DeviceList, DeviceListError, DeviceSpec};
pub use config::{ModelConfig, ModelConfigError, ModelInput, ModelIo};
pub use families::{FamilyInfo, Mixer, MixerSpec};
pub use lm::{Lm, LmInput, LmState, Model};
pub use mixer::{
    AttentionDiagnostics, Convention, MixerDescription, MixerError, MixerState, SequenceMixer,
    SpecError,
};
pub use stack::{MixerStack, StackLengthError};
