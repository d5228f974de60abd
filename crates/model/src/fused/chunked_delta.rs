//! The gated (delta-rule) recurrence in chunked form, forward and (`backward.rs`) backward: the
//! UT transform of
//! Yang et al. 2024 ("Parallelizing Linear Transformers with the Delta Rule over Sequence
//! Length"; "Gated Delta Networks: Improving Mamba2 with Delta Rule"), its products on the
//! `gemm` crate, parallel over (batch, head). It computes what the token-by-token kernel
//! ([`super::gated_recurrence`]) does and saves the same checkpoints (the state at the start of
//! every `chunk` tokens), so either backward pass runs on either forward pass's checkpoints.
//!
//! Within a block of `n` tokens from state `S` (one log gate per head and token, `g_i`), with
//! `b_i = Σ_{j≤i} g_j` and `Γ_ij = e^{b_i − b_j}` (`j ≤ i`, so never above 1), the token
//! recurrence `u_i = β_i (v_i − (a_i S_{i−1})ᵀ k_i)` unrolls to
//!
//! `u_i = β_i (v_i − e^{b_i} (K S)_i − Σ_{j<i} Γ_ij (k_i·k_j) u_j)`,
//!
//! i.e. `(I + diag(β) (Γ ⊙ K Kᵀ ⊙ M₋)) U = diag(β) (V − diag(e^b) K S)` with `M₋` strictly lower:
//! the UT transform `U = T diag(β)(V − diag(e^b) K S)`, `T = (I + A)⁻¹`, i.e. fla's
//! `U − W S` with `W = T diag(β) diag(e^b) K`. It is solved here by forward substitution on the
//! right-hand side, which costs what applying `T` would and never forms `T` or `W`. Then
//!
//! `Y = diag(e^b) Q S + (Γ ⊙ Q Kᵀ ⊙ M) U` (`M` lower, diagonal included),
//! `S ← e^{b_n} S + (diag(e^{b_n − b}) K)ᵀ U`.
//!
//! Without the delta rule (`decay`), `U = V`. `K Kᵀ`, `Q Kᵀ`, `K S`, `Q S`, the scores times `U`
//! and the state update are matrix products (`gemm`); the substitution is `n²/2` row updates of
//! length `d_v`. Per token that is about `2n·d_k + n·d_v + n·d_v/2 + 3·d_k·d_v` multiply-adds
//! against the token kernel's `3·d_k·d_v` (plus a scaling pass): more work, in faster loops, so
//! which kernel wins depends on the shape ([`block_size`]). Per-channel gates
//! (`gate_width = d_k`) run the variant in `channels.rs`, whose decay goes into the factors.

use super::gated_recurrence::Dims;

/// Heads at least this wide (both `d_k` and `d_v`) run the chunked kernels.
///
/// Measured with `chunked_delta_timing` (tests.rs; 2-core Zen 4 with AVX-512, 2026-12-05, one
/// rayon thread, other jobs sharing the box at a load of 5, so ±20%): forward / backward µs of
/// the token kernel against chunked blocks of 8, 12 and 16, delta rule, `[bh, T, d, chunk]`:
///
/// | shape | tokens | 8 | 12 | 16 |
/// |---|---|---|---|---|
/// | `[48, 64, 32, 64]` (nanoGPT recipe) | 1357 / 4160 | 694 / 2431 | 697 / 2417 | 707 / 2325 |
/// | `[64, 32, 32, 32]` (MQAR, width 32) | 1018 / 4180 | 478 / 1572 | 470 / 1574 | 491 / 1496 |
/// | `[8, 1024, 32, 64]` | 3071 / 10237 | 1753 / 7192 | 1763 / 6901 | 1827 / 9957 |
/// | `[24, 256, 64, 64]` | 12879 / 29448 | 4416 / 12404 | 2790 / 11279 | 2958 / 10859 |
/// | `[48, 64, 32, 4]` (blocks cut to 4) | 1265 / 4169 | 920 / 2473 | 909 / 2566 | 904 / 2541 |
/// | `[48, 64, 16, 64]` | 502 / 1548 | 489 / 1563 | 493 / 1564 | 506 / 1622 |
///
/// Plain accumulation alike (`[48, 64, 32, 64]`: 910 / 2970 against 445 / 1272 at 16; `d = 16`:
/// 298 / 1104 against 313 / 838). At `d = 16` the delta rule gains nothing, so narrow heads
/// stay token by token. Hand-written loops in place of `gemm` for these small products
/// measured 2 to 3 times slower; stacking `[Q; K]` so that one product gives both `Q Kᵀ` and
/// `K Kᵀ`, and one both `Q S` and `K S`, measured no faster (user CPU seconds of 300 forward
/// passes, paired runs: 0.22 either way).
///
/// Per-channel gates (`channels.rs`; same test, Intel Xeon model 207 with AVX-512, 2026-12-05,
/// one rayon thread, the box otherwise quiet), token kernel against blocks of 16, delta rule /
/// plain: `[48, 64, 32, 64]` 1986 / 5572 against 1112 / 2898, and 1575 / 4366 against
/// 791 / 1915; `[64, 32, 32, 32]` 1393 / 3773 against 692 / 1834; `[8, 1024, 32, 64]`
/// 4385 / 12877 against 2346 / 6932; `[24, 256, 64, 64]` 7029 / 25837 against 3356 / 10110;
/// `d = 16` 727 / 2247 against 658 / 2028 (within the noise, so the same threshold).
const CHUNKED_FROM: usize = 32;

/// Block size of the chunked kernels: within the noise of 8 and 12 forward, best backward.
const BLOCK: usize = 16;

/// The block size to run the chunked kernels at on `dims` (one gate per head or per key
/// channel), or `None` where the token kernel is as fast (narrow heads).
pub fn block_size(dims: Dims) -> Option<usize> {
    let gates = dims.gate_width == 1 || dims.gate_width == dims.dk;
    (gates && dims.dk.min(dims.dv) >= CHUNKED_FROM).then_some(BLOCK)
}

mod backward;
mod blocks;
mod channels;
mod driver;
mod form;
pub use driver::{backward, forward};

#[cfg(test)]
mod tests;
