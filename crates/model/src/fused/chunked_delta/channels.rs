//! The chunked kernel for per-channel gates (`gate_width = d_k`: Kimi Delta Attention's
//! `Diag(α_t)`, GLA's), forward and backward, on the `gemm` crate like the per-head kernel in
//! the parent (whose header has the scalar-gate form; this one computes the same recurrence,
//! saves the same checkpoints, and so pairs with either backward pass).
//!
//! With a per-channel gate the decay between tokens `j ≤ i` of a block is the vector
//! `e^{b_i − b_j}` (`b_i = Σ_{m ≤ i} g_m`, one entry per key channel), which no `n × n` matrix
//! `Γ` can hold. It goes into the factors instead (fla's GLA/KDA intra-chunk form): with the
//! block's first token as the reference `b_0`,
//!
//! `Q^r = Q ⊙ e^{B − b_0}`, `K^r = K ⊙ e^{B − b_0}`, `K^i = K ⊙ e^{b_0 − B}`,
//! `P = (Q^r K^iᵀ) ⊙ M`, `A = (K^r K^iᵀ) ⊙ M₋`
//!
//! (so `P_ij = Σ_c q_ic k_jc e^{b_ic − b_jc}`), and with `Q^e = Q ⊙ e^B`, `K^e = K ⊙ e^B` and
//! `K^d = K ⊙ e^{b_{n−1} − B}` (all ≤ 1 for decays):
//!
//! - delta rule: `R = V − K^e S − A U` row by row (forward substitution), `U = diag(β) R`;
//!   plain accumulation: `U = V`;
//! - `Y = Q^e S + P U`;
//! - `S ← diag(e^{b_{n−1}}) S + K^dᵀ U`.
//!
//! `K^i` grows as `e^{b_0 − b_i}`: a block is cut short before any channel's log decay within it
//! exceeds [`SPAN`], so no factor overflows (one token alone always fits: its factors are 1).
//! The partition depends only on the gates, so the backward pass replays the forward's.
//!
//! Backward, per block from `dS` = ∂L/∂S at its end: `dU = Pᵀ dY + K^d dS`, the delta rule's
//! backward substitution as in the per-head kernel, `dP = (dY Uᵀ) ⊙ M`, `dA = −(dR Uᵀ) ⊙ M₋`,
//! then every factor `Z = X ⊙ e^{±(…)}` sends `dZ ⊙ e^{±(…)}` to `dX` and `±dZ ⊙ Z` to the
//! log gates of its row (`∂L/∂b_i`): `dQ^e = dY Sᵀ`, `dK^e = −dR Sᵀ`, `dQ^r = dP K^i`,
//! `dK^r = dA K^i`, `dK^i = dPᵀ Q^r + dAᵀ K^r`, `dK^d = U dSᵀ` (whose `b_{n−1}` term, with
//! `e^{b_{n−1}} ⊙ Σ_v dS ⊙ S`, goes to the last row). The reference `b_0` cancels from `P` and
//! `A`, so its terms sum to zero and are left out. Then `dS ← diag(e^{b_{n−1}}) dS + Q^eᵀ dY −
//! K^eᵀ dR` and `dg_i = Σ_{m ≥ i} ∂L/∂b_m` within the block.

pub(super) mod backward;
pub(super) mod blocks;
