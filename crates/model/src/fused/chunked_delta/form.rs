//! What a chunked block form provides, so that the per-sequence drivers (`driver.rs`) are
//! written once for both forms: one gate per head (`blocks.rs`, `backward.rs`: the decay in an
//! `n × n` `Γ`) and one per key channel (`channels/`: the decay in the factors).

use crate::fused::gated_recurrence::{Dims, Sequence};

/// One form's forward block steps. A block is `n` tokens from `t0` with start state `s`;
/// `Scratch` holds its internals.
pub(super) trait BlockForward {
    type Scratch;

    fn scratch(dims: Dims, block: usize) -> Self::Scratch;
    /// The blocks `(t0, n)` of at most `block` tokens covering `c0..c1`; a function of the
    /// gates only, so the backward pass replays the forward's.
    fn partition(dims: Dims, g: &[f32], c0: usize, c1: usize, block: usize) -> Vec<(usize, usize)>;
    /// The block's internals; with `scores` also what only the outputs need (the state replay
    /// skips it).
    #[allow(clippy::too_many_arguments)] // a block step's slices and sizes, as the kernels'
    fn internals(
        dims: Dims,
        x: Sequence<'_>,
        t0: usize,
        n: usize,
        s: &[f32],
        w: &mut Self::Scratch,
        scores: bool,
    );
    /// The block's outputs into `y` (`n × d_v`).
    #[allow(clippy::too_many_arguments)] // as above
    fn outputs(
        dims: Dims,
        x: Sequence<'_>,
        t0: usize,
        n: usize,
        s: &[f32],
        y: &mut [f32],
        w: &Self::Scratch,
    );
    /// `s` advanced past the block.
    fn advance(dims: Dims, x: Sequence<'_>, t0: usize, n: usize, s: &mut [f32], w: &Self::Scratch);
}

/// One form's backward block step; `Adjoints` holds its buffers.
pub(super) trait BlockBackward: BlockForward {
    type Adjoints;

    fn adjoints(dims: Dims, block: usize) -> Self::Adjoints;
    /// The block's gradients into the sequence's slices; `ds` goes from ∂L/∂S at the block's
    /// end to its start.
    #[allow(clippy::too_many_arguments)] // as above
    fn backward(
        dims: Dims,
        x: Sequence<'_>,
        t0: usize,
        n: usize,
        s: &[f32],
        ds: &mut [f32],
        dy: &[f32],
        w: &Self::Scratch,
        a: &mut Self::Adjoints,
        grads: Grads<'_>,
    );
}

pub(super) use crate::fused::gated_recurrence::GradSlices as Grads;
