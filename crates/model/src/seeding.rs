//! Reproducible use of the backend's random generator.
//!
//! Burn's CPU backend keeps one process-wide generator and initialises parameters lazily (on
//! first use). Two threads drawing from it interleave, and a lazily initialised model draws in
//! whatever order its parameters happen to be touched. [`with_seed`] makes "same seed, same
//! numbers" hold anyway: it holds a process-wide lock, seeds, and runs the closure; models built
//! by `ModelConfig::init` materialise every parameter inside it.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use std::sync::Mutex;

static BACKEND_RNG: Mutex<()> = Mutex::new(());

/// Runs `f` with the backend generator seeded with `seed` and no other thread drawing from it.
pub fn with_seed<R>(device: &Device, seed: u64, f: impl FnOnce() -> R) -> R {
    let _guard = BACKEND_RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    f()
}

struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Forces lazily initialised parameters to draw their values now, in a fixed order.
pub fn materialize<M: Module>(module: &M) {
    module.visit(&mut Materialize);
}
