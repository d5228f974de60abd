//! Delta-rule linear attention: DeltaNet and Gated DeltaNet.
//!
//! Per head, a state `S_t ∈ R^{d_k×d_v}` that is *corrected* towards each new value rather than
//! added to: the value the state currently predicts for `k_t` is replaced by `v_t` at rate `β_t`,
//!
//! `S_t = a_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ`,  `o_t = S_tᵀ q_t`
//!
//! written as `v'_t = β_t (v_t − (a_t S_{t−1})ᵀ k_t)`, `S_t = a_t S_{t−1} + k_t v'_tᵀ`. With
//! `β = 1` and orthonormal keys the state returns the last value written under each key exactly,
//! which is why the delta rule recalls where plain linear attention (which only adds) blurs.
//!
//! | spec | `a_t` | source |
//! |---|---|---|
//! | `delta` | 1 | Schlag, Irie, Schmidhuber 2021 ("Linear Transformers Are Secretly Fast Weight Programmers", arXiv 2102.11174); Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length" (arXiv 2406.06484) |
//! | `delta:gated` | `exp(−Δ_t·exp(A_log_h))`, `Δ_t = softplus(w_h·x_t + dt_bias_h)` (Mamba-2's gate, [`crate::gates`]) | Yang, Kautz, Hatamizadeh 2025, "Gated Delta Networks" (ICLR 2025, arXiv 2412.06464); Qwen3-Next's linear layers |
//!
//! As in fla-org/flash-linear-attention's layers: `q, k, v = silu(·)` of the projections (after
//! the `conv=K` short convolution when on, see [`ShortConv`]); `q` and `k` L2-normalised per head
//! (`x/√(‖x‖² + 1e-6)`), then `q` scaled by `d_k^(−½)`; `β_t = σ(w_β,h·x_t + b_h)` per head, or
//! `2σ(·) ∈ (0, 2)` with `neg_eigval=true` (the state transition may then flip a direction, which
//! Grazzi et al. 2025 show widens what the layer can track). Gate parameters: `β`'s weights
//! `U(±1/√d_model)` and bias 0; `dt_bias = softplus⁻¹(dt₀)`, `dt₀ ~ log-uniform[1e-3, 0.1]`,
//! `A_log = ln U(0, 16)`; drawn from the model seed and layer (see [`crate::gates`]). Left out:
//! the output RMSNorm and output gate of fla's `GatedDeltaNet` (the model's own norms stand in).
//! The model's RoPE, if any, rotates the normalised `q` and `k` (a rotation keeps their norm).
//!
//! Three forms, equal up to rounding; every gate enters as `log a_t ≤ 0`, and only differences
//! `b_i − b_j ≤ 0` of its cumulative sums are exponentiated:
//! - [`chunked`] (the training default, `chunk=64`): the WY/UT form of Yang et al. 2024. Inside a
//!   chunk with cumulative log gates `b` and `L_ij = exp(b_i − b_j)`,
//!   `T = (I + strict_tril(diag(β) K Kᵀ ⊙ L))⁻¹` ([`unit_lower_inverse`]), `W = T (β ⊙ K ⊙ e^b)`,
//!   `U = T (β ⊙ V)`; then chunk by chunk `V' = U − W S`, `O = (Q ⊙ e^b) S + (Q Kᵀ ⊙ L ⊙ M) V'`,
//!   `S ← e^{b_C} S + (K ⊙ e^{b_C − b})ᵀ V'`. Time `O(T·C·d)`, memory `O(T·C)` plus a state per
//!   chunk; never a `T × T` tensor or a state per token.
//! - [`parallel`]: the chunked form with one chunk; its `T × T` implied weights
//!   `A = (Q Kᵀ ⊙ L ⊙ M) T diag(β)` (`y = A V`) are what diagnostics report.
//! - [`recurrent`]: the recurrence token by token, as decoding does (prompts go chunked from the
//!   carried state).
//!
//! The delta rule is a recurrence with a direction; a bidirectional model (`model.causal =
//! false`) runs it forwards and backwards and adds the two outputs, as a bidirectional RNN does.

use crate::chunking::{RecurrentState, causal_decay, to_chunks};
use crate::feature_map::{DEFAULT_CHUNK, LinearForm};
use crate::gates::{family_rng, ssm_decay_params, ssm_log_gates, uniform_linear};
use crate::heads::{HeadProjection, apply_rope, sequence_diagnostics};
use crate::mixer::{
    Convention, MixContext, MixOutput, MixerDims, MixerFamily, SequenceMixer, SpecError,
    VariantInfo,
};
use crate::options::{parse_options, print_options, write_with_options};
use crate::short_conv::{ShortConv, check_kernel};
use burn::module::{Module, Param};
use burn::nn::{Linear, RotaryEncoding};
use burn::tensor::activation::sigmoid;
use burn::tensor::ops::PadMode;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `ε` inside the L2 norm of queries and keys (fla's `l2norm`).
pub const L2_EPS: f32 = 1e-6;

/// The gate parameters' stream tag ("delta_ru").
const GATE_TAG: u64 = 0x6465_6c74_615f_7275;

/// `delta[:gated][:neg_eigval=true][:conv=K][:form=chunked|parallel|recurrent][:chunk=N]`: the
/// options are this struct's fields (see [`crate::options`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeltaAttentionConfig {
    /// `delta:gated`: the state decays by `a_t` before each update (the spec's positional part).
    #[serde(skip)]
    pub gated: bool,
    /// `β ∈ (0, 2)` instead of `(0, 1)`.
    pub neg_eigval: bool,
    /// Kernel of the short convolution on q/k/v (0 = none).
    pub conv: usize,
    pub form: LinearForm,
    /// Tokens per chunk of the chunked form.
    pub chunk: usize,
}

impl Default for DeltaAttentionConfig {
    fn default() -> Self {
        Self {
            gated: false,
            neg_eigval: false,
            conv: 0,
            form: LinearForm::Chunked,
            chunk: DEFAULT_CHUNK,
        }
    }
}

impl fmt::Display for DeltaAttentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.gated {
            write_with_options(f, "gated", self)
        } else {
            f.write_str(&print_options(self))
        }
    }
}

impl MixerFamily for DeltaAttentionConfig {
    const NAME: &'static str = "delta";
    const SYNTAX: &'static str =
        "delta[:gated][:neg_eigval=true][:conv=K][:form=chunked|parallel|recurrent][:chunk=N]";
    type Module = DeltaAttention;

    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError> {
        let (gated, options) = match parts.split_first() {
            Some((&"gated", rest)) => (true, rest),
            Some((first, _)) if !first.contains('=') => {
                return Err(SpecError::new(
                    spec,
                    format!(
                        "unknown delta variant '{first}': use 'delta' or 'delta:gated', then key=value options"
                    ),
                ));
            }
            _ => (false, parts),
        };
        let c = Self { gated, ..parse_options(options, spec)? };
        if c.chunk == 0 {
            return Err(SpecError::new(spec, "chunk must be at least 1"));
        }
        check_kernel(c.conv).map_err(|reason| SpecError::new(spec, reason))?;
        Ok(c)
    }

    /// `S` (`d_k × d_v` per head, zoology's `heads·d_k·d_v`) plus, with `conv=K`, the
    /// convolution's last `K − 1` inputs; fixed in `seq_len`.
    fn decode_state_floats(&self, dims: &MixerDims, _seq_len: usize) -> usize {
        let d = dims.head_dim();
        let conv =
            if self.conv > 0 { ShortConv::state_floats(self.conv, 3 * dims.d_model) } else { 0 };
        dims.n_heads * d * d + conv
    }

    fn init(&self, dims: &MixerDims, device: &Device) -> DeltaAttention {
        let (h, d) = (dims.n_heads, dims.d_model);
        let mut rng = family_rng(dims, GATE_TAG);
        let beta = uniform_linear(&mut rng, d, h, vec![0.0; h], device);
        let (dt, a_log) = if self.gated {
            let (dt, a_log) = ssm_decay_params(&mut rng, dims, (0.0, 16.0), device);
            (Some(dt), Some(a_log))
        } else {
            (None, None)
        };
        let conv = (self.conv > 0).then(|| ShortConv::new(3 * d, self.conv, &mut rng, device));
        DeltaAttention {
            heads: HeadProjection::new(dims, dims.head_dim(), device),
            beta,
            dt,
            a_log,
            conv,
            neg_eigval: self.neg_eigval,
            form: self.form,
            chunk: self.chunk,
        }
    }

    fn variants() -> Vec<&'static str> {
        vec!["gated"]
    }

    fn variant(&self) -> Option<&'static str> {
        self.gated.then_some("gated")
    }

    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        vec![
            (
                "l2_eps",
                Convention::number(
                    L2_EPS,
                    "q and k are L2-normalised per head as x / sqrt(Σ x² + ε) (fla's l2norm)",
                ),
            ),
            (
                "beta_range",
                Convention::new(
                    if self.neg_eigval { 2.0 } else { 1.0 },
                    "β_t = this · σ(x w_β): (0, 1), or (0, 2) with neg_eigval",
                ),
            ),
            (
                "gate_bias",
                Convention::new(true, "β, Δ and A keep their biases even under model.bias = false"),
            ),
            (
                "conv_layout",
                Convention::new(
                    "[K, 3·width], no bias, tap K−1 on the current token, one SiLU after",
                    "the short convolution's weight over the packed q|k|v channels",
                ),
            ),
        ]
    }

    fn catalogue() -> Vec<VariantInfo> {
        vec![
            VariantInfo {
                spec: "delta",
                formula: "S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ, o_t = S_tᵀ q_t, β_t = σ(w_β·x_t), q, k L2-normalised (DeltaNet)",
            },
            VariantInfo {
                spec: "delta:gated",
                formula: "S_t = a_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ, a_t = exp(−Δ_t e^{A_h}) as Mamba-2 (Gated DeltaNet)",
            },
            VariantInfo {
                spec: "delta:gated:conv=4",
                formula: "Gated DeltaNet after a causal depthwise convolution (kernel 4) + SiLU on q, k, v (fla's layer)",
            },
        ]
    }
}

/// Multi-head delta-rule attention.
#[derive(Module, Debug)]
pub struct DeltaAttention {
    pub heads: HeadProjection,
    /// `x ↦ w_β·x + b`, `weight: [d_model, heads]`; `β = σ(·)` (or `2σ(·)`).
    pub beta: Linear,
    /// `delta:gated`: `x ↦ w·x + dt_bias`, `weight: [d_model, heads]`.
    pub dt: Option<Linear>,
    /// `delta:gated`: `[heads]`, the decay rate `exp(A_log)`'s log.
    pub a_log: Option<Param<Tensor<1>>>,
    /// `conv=K`: the short convolution on `[q | k | v]` before heads are split.
    pub conv: Option<ShortConv>,
    #[module(skip)]
    neg_eigval: bool,
    #[module(skip)]
    form: LinearForm,
    #[module(skip)]
    chunk: usize,
}

impl DeltaAttention {
    /// Per-head writing strengths `β_t ∈ (0, 1)` (or `(0, 2)`).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, 1]`
    pub fn betas(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        let h = self.heads.n_heads();
        let beta = sigmoid(crate::fused::affine(&self.beta, x));
        let beta = if self.neg_eigval { beta * 2.0 } else { beta };
        beta.swap_dims(1, 2).reshape([b, h, t, 1])
    }

    /// Per-head log decays `log a_t ≤ 0` (all 0 for the ungated rule).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, 1]`
    pub fn log_gates(&self, x: Tensor<3>) -> Tensor<4> {
        match (&self.dt, &self.a_log) {
            (Some(dt), Some(a_log)) => ssm_log_gates(dt, a_log, x),
            _ => {
                let [b, t, _] = x.dims();
                Tensor::zeros([b, self.heads.n_heads(), t, 1], &x.device())
            }
        }
    }

    /// `(q/√d_k, k, v)` for tokens starting at `offset`: projected, convolved (`conv=K`) or
    /// passed through SiLU, split into heads, `q` and `k` L2-normalised and rotated;
    /// `conv_history` is read and advanced.
    fn features(
        &self,
        x: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
        conv_history: &mut Option<Tensor<3>>,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let qkv = self.heads.project(x);
        let qkv = match &self.conv {
            Some(conv) => conv.continue_from(qkv, conv_history),
            None => crate::fused::silu(qkv),
        };
        let (q, k, v) = self.heads.split_packed(qkv);
        let d_k = q.dims()[3] as f64;
        let (q, k) = apply_rope(l2_normalize(q), l2_normalize(k), rope, offset);
        (q / d_k.sqrt(), k, v)
    }
}

/// `x / √(‖x‖² + ε)` over the last axis.
pub fn l2_normalize(x: Tensor<4>) -> Tensor<4> {
    let norm = (x.clone().powi_scalar(2).sum_dim(3) + L2_EPS).sqrt();
    x / norm
}

impl SequenceMixer for DeltaAttention {
    /// `S`.
    type State = RecurrentState;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let (beta, log_g) = (self.betas(x.clone()), self.log_gates(x.clone()));
        let (q, k, v) = self.features(x, ctx.rope, 0, &mut None);
        let causal = |q: Tensor<4>,
                      k: Tensor<4>,
                      v: Tensor<4>,
                      beta: Tensor<4>,
                      log_g: Tensor<4>| match self.form {
            LinearForm::Parallel => parallel(q, k, v, beta, log_g),
            LinearForm::Chunked => chunked_from_empty(q, k, v, beta, log_g, self.chunk),
            LinearForm::Recurrent => recurrent(q, k, v, beta, log_g, None).0,
        };
        let y = if ctx.causal {
            causal(q.clone(), k.clone(), v, beta.clone(), log_g.clone())
        } else {
            let flip = |x: &Tensor<4>| x.clone().flip([2]);
            causal(q.clone(), k.clone(), v.clone(), beta.clone(), log_g.clone())
                + causal(flip(&q), flip(&k), flip(&v), flip(&beta), flip(&log_g)).flip([2])
        };
        let diagnostics = ctx
            .diagnostics
            .then(|| sequence_diagnostics(weights(q, k, beta, log_g, ctx.causal), ctx.causal));
        MixOutput { output: self.heads.merge(y), diagnostics }
    }

    fn empty_state(&self) -> RecurrentState {
        RecurrentState::default()
    }

    fn step(
        &self,
        x: Tensor<3>,
        state: &mut RecurrentState,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let seq = x.dims()[1];
        let (beta, log_g) = (self.betas(x.clone()), self.log_gates(x.clone()));
        let (q, k, v) = self.features(x, rope, state.position, &mut state.conv);
        let (y, s) = if seq == 1 {
            recurrent(q, k, v, beta, log_g, state.state.as_ref())
        } else {
            chunked(q, k, v, beta, log_g, self.chunk, state.state.as_ref())
        };
        state.state = Some(s);
        state.position += seq;
        self.heads.merge(y)
    }
}

/// [`chunked`] from the empty state, through the fused recurrence on flex (the same numbers;
/// its test is `fused_recurrence_matches_the_composed_chunked_form`).
fn chunked_from_empty(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
    chunk: usize,
) -> Tensor<4> {
    match crate::fused::gated_recurrence(q, k, v, log_g, Some(beta), chunk) {
        Ok(y) => y,
        Err((q, k, v, log_g, beta)) => chunked(q, k, v, beta.expect("given"), log_g, chunk, None).0,
    }
}

/// `(I + A)⁻¹` for strictly lower-triangular `A` (forward substitution, written as block
/// doubling so it is `log₂ C` batched steps rather than `C` row steps): with the inverses `T₁`,
/// `T₂` of the two diagonal halves of a block, its inverse is `[[T₁, 0], [−T₂ A₂₁ T₁, T₂]]`.
/// Exact (no power series, whose terms overflow when keys repeat); sizes that are not a power
/// of two are padded with an identity block, which does not change the rows kept.
///
/// # Shapes
/// - `a`: `[x, n, c, c]` -> `[x, n, c, c]`
pub fn unit_lower_inverse(a: Tensor<4>) -> Tensor<4> {
    let [x, n, c, _] = a.dims();
    let device = a.device();
    let p = c.next_power_of_two();
    let a = if p > c { a.pad((0, p - c, 0, p - c), PadMode::Constant(0.0)) } else { a };
    let r = x * n;
    let a = a.reshape([r, p, p]);
    // The inverses of the diagonal blocks of size s, `[r, p/s, s, s]`; 1×1 blocks are 1.
    let mut inverses = Tensor::<4>::ones([r, p, 1, 1], &device);
    let mut s = 1;
    while s < p {
        let (w, pairs) = (2 * s, p / (2 * s));
        // The w×w diagonal blocks of `a` (block m spans rows and columns m·w..(m+1)·w), picked
        // out by multiplying with a block identity and summing the column-block axis.
        let eye: Vec<f32> =
            (0..pairs * pairs).map(|i| if i / pairs == i % pairs { 1.0 } else { 0.0 }).collect();
        let eye = Tensor::<2>::from_data(TensorData::new(eye, [pairs, pairs]), &device)
            .reshape([1, pairs, 1, pairs, 1]);
        let blocks = (a.clone().reshape([r, pairs, w, pairs, w]) * eye).sum_dim(3).reshape([
            r * pairs,
            w,
            w,
        ]);
        let below = blocks.narrow(1, s, s).narrow(2, 0, s); // A₂₁
        let halves = inverses.reshape([r * pairs, 2, s, s]);
        let t1 = halves.clone().narrow(1, 0, 1).reshape([r * pairs, s, s]);
        let t2 = halves.narrow(1, 1, 1).reshape([r * pairs, s, s]);
        let off = t2.clone().matmul(below).matmul(t1.clone()).neg();
        let top = Tensor::cat(vec![t1, Tensor::zeros([r * pairs, s, s], &device)], 2);
        let bottom = Tensor::cat(vec![off, t2], 2);
        inverses = Tensor::cat(vec![top, bottom], 1).reshape([r, pairs, w, w]);
        s = w;
    }
    inverses.reshape([x, n, p, p]).narrow(2, 0, c).narrow(3, 0, c)
}

/// True on and above the diagonal: what the strictly lower `A` leaves out.
fn diagonal_and_above(c: usize, device: &Device) -> Tensor<2, Bool> {
    Tensor::<2, Bool>::tril_mask([c, c], -1, device)
}

/// The chunked (WY/UT) form from `state` (zeros when `None`); returns the outputs and the
/// state after the last token. `chunk` need not divide `seq`.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, d_k]`, `v`: `[batch, heads, seq, d_v]`,
///   `beta, log_g`: `[batch, heads, seq, 1]`, `state`: `[batch, heads, d_k, d_v]`
///   -> (`[batch, heads, seq, d_v]`, `[batch, heads, d_k, d_v]`)
pub fn chunked(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
    chunk: usize,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    assert!(chunk > 0, "chunk size must be at least 1");
    let [b, h, t, dk] = q.dims();
    let dv = v.dims()[3];
    let device = q.device();
    let c = chunk.min(t);
    let n = t.div_ceil(c);
    let bh = b * h;
    // Padded tokens have k = 0 and β = 0, so they write nothing (their rows of T are e_i).
    let (qc, kc, vc, bc, gc) = (
        to_chunks(q, n, c),
        to_chunks(k, n, c),
        to_chunks(v, n, c),
        to_chunks(beta, n, c),
        to_chunks(log_g, n, c),
    );
    let cum = gc.cumsum(2); // b_i inside each chunk, ≤ 0
    let decay = causal_decay(cum.clone()); // L ⊙ M, diagonal included
    let strict = diagonal_and_above(c, &device).unsqueeze::<4>().expand([bh, n, c, c]);
    let kk = kc.clone().matmul(kc.clone().swap_dims(2, 3)) * decay.clone();
    let inverse = unit_lower_inverse((kk * bc.clone()).mask_fill(strict, 0.0));
    let w = inverse.clone().matmul(kc.clone() * bc.clone() * cum.clone().exp()); // [bh, n, c, dk]
    let u = inverse.matmul(vc * bc); // [bh, n, c, dv]
    let scores = qc.clone().matmul(kc.clone().swap_dims(2, 3)) * decay;
    let total = cum.clone().narrow(2, c - 1, 1); // b_C: [bh, n, 1, 1]
    let keys_at_end = kc * (total.clone() - cum.clone()).exp(); // k_j e^{b_C − b_j}
    let carry = total.exp();

    let mut s = match state {
        Some(s) => s.clone().reshape([bh, dk, dv]),
        None => Tensor::zeros([bh, dk, dv], &device),
    };
    let (mut before, mut written) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for m in 0..n {
        let piece = |x: &Tensor<4>, w: usize| x.clone().narrow(1, m, 1).reshape([bh, c, w]);
        before.push(s.clone().unsqueeze_dim::<4>(1));
        let new_values = piece(&u, dv) - piece(&w, dk).matmul(s.clone()); // V' = U − W S
        s = s * carry.clone().narrow(1, m, 1).reshape([bh, 1, 1])
            + piece(&keys_at_end, dk).swap_dims(1, 2).matmul(new_values.clone());
        written.push(new_values.unsqueeze_dim::<4>(1));
    }
    let y =
        (qc * cum.exp()).matmul(Tensor::cat(before, 1)) + scores.matmul(Tensor::cat(written, 1));
    (y.reshape([b, h, n * c, dv]).narrow(2, 0, t), s.reshape([b, h, dk, dv]))
}

/// The implied weights `A = (Q Kᵀ ⊙ L ⊙ M) T diag(β)` over the whole sequence (`y = A V` from
/// an empty state); bidirectional: the causal weights plus those of the reversed sequence,
/// reversed back.
///
/// # Shapes
/// - `q, k`: `[batch, heads, seq, d_k]`, `beta, log_g`: `[batch, heads, seq, 1]` -> `[batch, heads, seq, seq]`
pub fn weights(
    q: Tensor<4>,
    k: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
    causal: bool,
) -> Tensor<4> {
    let forward = causal_weights(q.clone(), k.clone(), beta.clone(), log_g.clone());
    if causal {
        return forward;
    }
    let flip = |x: Tensor<4>| x.flip([2]);
    forward + causal_weights(flip(q), flip(k), flip(beta), flip(log_g)).flip([2, 3])
}

fn causal_weights(q: Tensor<4>, k: Tensor<4>, beta: Tensor<4>, log_g: Tensor<4>) -> Tensor<4> {
    let [b, h, t, _] = q.dims();
    let decay = causal_decay(log_g.cumsum(2));
    let strict = diagonal_and_above(t, &q.device()).unsqueeze::<4>().expand([b, h, t, t]);
    let kk = k.clone().matmul(k.clone().swap_dims(2, 3)) * decay.clone();
    let inverse = unit_lower_inverse((kk * beta.clone()).mask_fill(strict, 0.0));
    (q.matmul(k.swap_dims(2, 3)) * decay).matmul(inverse) * beta.swap_dims(2, 3)
}

/// The parallel form: `y = A V` with the `T × T` [`weights`].
///
/// # Shapes
/// - as [`chunked`], without the state
pub fn parallel(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
) -> Tensor<4> {
    weights(q, k, beta, log_g, true).matmul(v)
}

/// The recurrence token by token from `state` (zeros when `None`): `S ← a_t S`,
/// `v' = β_t (v_t − Sᵀ k_t)`, `S ← S + k_t v'ᵀ`, `o_t = Sᵀ q_t`.
///
/// # Shapes
/// - as [`chunked`]
pub fn recurrent(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
    state: Option<&Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, t, dk] = q.dims();
    let dv = v.dims()[3];
    let mut s = match state {
        Some(s) => s.clone(),
        None => Tensor::zeros([b, h, dk, dv], &q.device()),
    };
    let mut outputs = Vec::with_capacity(t);
    for i in 0..t {
        let token = |x: &Tensor<4>| x.clone().narrow(2, i, 1);
        s = s * token(&log_g).exp();
        let key = token(&k); // [b, h, 1, dk]
        let new_value = (token(&v) - key.clone().matmul(s.clone())) * token(&beta);
        s = s + key.swap_dims(2, 3).matmul(new_value);
        outputs.push(token(&q).matmul(s.clone()));
    }
    (Tensor::cat(outputs, 2), s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        ad_device, assert_close, assert_output_and_grads_close, assert_values_close, device,
        output_and_grads, randn, values,
    };
    use burn::nn::RotaryEncodingConfig;

    /// The textbook recurrence (fla's `naive_recurrent_gated_delta_rule`), one token at a time,
    /// products by broadcasting: `S ← a S`, `v' = β (v − Σ_i k_i S_i·)`, `S ← S + k v'ᵀ`,
    /// `o = Σ_i q_i S_i·`. Returns the outputs and the final state.
    fn naive_delta_rule(
        q: &Tensor<4>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        beta: &Tensor<4>,
        log_g: &Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        let [b, h, t, dk] = q.dims();
        let dv = v.dims()[3];
        let mut s = Tensor::<4>::zeros([b, h, dk, dv], &q.device());
        let mut out = Vec::new();
        for i in 0..t {
            let at = |x: &Tensor<4>| x.clone().narrow(2, i, 1);
            let gate = at(log_g).exp(); // [b, h, 1, 1]
            let key = at(k).reshape([b, h, dk, 1]);
            s = s * gate;
            let predicted = (key.clone() * s.clone()).sum_dim(2); // [b, h, 1, dv]
            let new_value = (at(v) - predicted) * at(beta);
            s = s + key * new_value;
            out.push((at(q).reshape([b, h, dk, 1]) * s.clone()).sum_dim(2));
        }
        (Tensor::cat(out, 2), s)
    }

    /// How β is drawn from a free input: near 0, in (0, 1), near 2 (`neg_eigval`'s edge).
    #[derive(Clone, Copy, Debug)]
    enum BetaRange {
        Small,
        Unit,
        NearTwo,
    }

    fn beta_from(raw: Tensor<4>, range: BetaRange) -> Tensor<4> {
        match range {
            BetaRange::Small => sigmoid(raw) * 1e-3,
            BetaRange::Unit => sigmoid(raw),
            BetaRange::NearTwo => sigmoid(raw + 6.0) * 2.0,
        }
    }

    /// Log gates in `[−1.5·scale, −0.5·scale]`, or exactly 0 (the ungated rule) for scale 0.
    fn log_gates_from(raw: Tensor<4>, scale: f32) -> Tensor<4> {
        (sigmoid(raw) + 0.5) * (-scale)
    }

    /// Raw q, k (`d_k = 4`), v (`d_v = 3`), β and gate inputs for `seq` tokens.
    fn inputs(seq: usize, seed: u64) -> [Tensor<4>; 5] {
        let dev = device();
        [
            randn([2, 2, seq, 4], seed, &dev),
            randn([2, 2, seq, 4], seed + 1, &dev),
            randn([2, 2, seq, 3], seed + 2, &dev),
            randn([2, 2, seq, 1], seed + 3, &dev),
            randn([2, 2, seq, 1], seed + 4, &dev),
        ]
    }

    type Form<'a> = &'a dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>;

    /// parallel, chunked and recurrent against the naive recurrence, outputs and the gradients
    /// of q, k, v, β and the gate: ungated; gates near 1 (log ≈ −1e-3), moderate and near 0
    /// (log ≈ −10); β near 0, in (0, 1) and near 2; chunks that divide the length, do not, are
    /// 1, or exceed it.
    #[test]
    fn every_form_matches_the_naive_recurrence() {
        let mut seed = 2000;
        for scale in [0.0, 1e-3, 0.3, 10.0] {
            for range in [BetaRange::Small, BetaRange::Unit, BetaRange::NearTwo] {
                for seq in [9, 10] {
                    seed += 10;
                    let x = inputs(seq, seed);
                    let run = |f: Form<'_>| {
                        output_and_grads(&x, seed + 7, |x| {
                            f(
                                l2_normalize(x[0].clone()),
                                l2_normalize(x[1].clone()),
                                x[2].clone(),
                                beta_from(x[3].clone(), range),
                                log_gates_from(x[4].clone(), scale),
                            )
                        })
                    };
                    let want = run(&|q, k, v, b, g| naive_delta_rule(&q, &k, &v, &b, &g).0);
                    let what = format!("log gate≈−{scale} β {range:?} T={seq}");
                    assert_output_and_grads_close(
                        &format!("{what} recurrent"),
                        run(&|q, k, v, b, g| recurrent(q, k, v, b, g, None).0),
                        &want,
                    );
                    assert_output_and_grads_close(
                        &format!("{what} parallel"),
                        run(&|q, k, v, b, g| parallel(q, k, v, b, g)),
                        &want,
                    );
                    for c in [1, 3, 4, 16] {
                        assert_output_and_grads_close(
                            &format!("{what} chunk={c}"),
                            run(&|q, k, v, b, g| chunked(q, k, v, b, g, c, None).0),
                            &want,
                        );
                    }
                }
            }
        }
    }

    /// The fused recurrence (flex) against the composed WY chunked form, outputs and the
    /// gradients of q, k, v, β and the gate, on fresh inputs: ungated and gated (weak, moderate,
    /// strong decay), β in (0, 1) and near 2, checkpoint intervals that do and do not divide T.
    #[test]
    fn fused_recurrence_matches_the_composed_chunked_form() {
        let mut seed = 3000;
        for (scale, range) in [
            (0.0, BetaRange::Unit),
            (1e-3, BetaRange::NearTwo),
            (0.3, BetaRange::Unit),
            (10.0, BetaRange::Small),
        ] {
            for c in [1, 3, 16] {
                seed += 10;
                let x = inputs(10, seed);
                let run = |fused: bool| {
                    output_and_grads(&x, seed + 7, |x| {
                        let (q, k, v) =
                            (l2_normalize(x[0].clone()), l2_normalize(x[1].clone()), x[2].clone());
                        let (b, g) =
                            (beta_from(x[3].clone(), range), log_gates_from(x[4].clone(), scale));
                        if fused {
                            crate::fused::gated_recurrence(q, k, v, g, Some(b), c)
                                .map_err(|_| "flex")
                                .expect("the fused kernel runs on flex")
                        } else {
                            chunked(q, k, v, b, g, c, None).0
                        }
                    })
                };
                assert_output_and_grads_close(
                    &format!("fused log gate≈−{scale} β {range:?} chunk={c}"),
                    run(true),
                    &run(false),
                );
            }
        }
    }

    /// The block-doubling inverse against forward substitution in f64, for sizes that are and
    /// are not powers of two, on random entries and on repeated keys (all `k_i·k_j = 1`, the
    /// case where a power series `Σ (−A)^n` would need terms of size `C choose n`).
    #[test]
    fn unit_lower_inverse_is_forward_substitution() {
        for c in [1, 2, 3, 5, 8, 17, 64] {
            for repeated in [false, true] {
                let a = if repeated {
                    Tensor::<4>::ones([1, 2, c, c], &device())
                } else {
                    randn([1, 2, c, c], 2100 + c as u64, &device()) * 0.5
                };
                let a = a.mask_fill(
                    diagonal_and_above(c, &device()).unsqueeze::<4>().expand([1, 2, c, c]),
                    0.0,
                );
                let got = values(unit_lower_inverse(a.clone()));
                let a = values(a);
                for m in 0..2 {
                    let at = |i: usize, j: usize| a[(m * c + i) * c + j] as f64;
                    // Row i of T: e_i − Σ_{j<i} A_ij T_j.
                    let mut t = vec![vec![0f64; c]; c];
                    for i in 0..c {
                        t[i][i] = 1.0;
                        for j in 0..i {
                            let row = t[j].clone();
                            for (l, r) in row.iter().enumerate() {
                                t[i][l] -= at(i, j) * r;
                            }
                        }
                    }
                    for i in 0..c {
                        for j in 0..c {
                            let g = got[(m * c + i) * c + j] as f64;
                            assert!(
                                (g - t[i][j]).abs() <= 1e-4 * t[i][j].abs().max(1.0),
                                "c={c} repeated={repeated} ({i},{j}): {g} vs {}",
                                t[i][j]
                            );
                        }
                    }
                }
            }
        }
    }

    /// The delta rule's defining property: with β = 1 and orthonormal keys, the state holds
    /// exactly the last value written under each key, in every form, where plain linear
    /// attention (which adds) would hold their sum.
    #[test]
    fn orthonormal_keys_retrieve_the_last_value_written() {
        let dev = device();
        let writes = [0usize, 1, 2, 0, 3, 1, 0, 2, 2];
        let t = writes.len();
        let keys: Vec<f32> = writes
            .iter()
            .flat_map(|&w| (0..4).map(move |i| if i == w { 1.0 } else { 0.0 }))
            .collect();
        let k = Tensor::<1>::from_floats(keys.as_slice(), &dev).reshape([1, 1, t, 4]);
        let v = randn([1, 1, t, 3], 2200, &dev);
        let beta = Tensor::<4>::ones([1, 1, t, 1], &dev);
        let log_g = Tensor::<4>::zeros([1, 1, t, 1], &dev);
        // Query the key written at each step: the output is the value just written.
        let (y, state) =
            recurrent(k.clone(), k.clone(), v.clone(), beta.clone(), log_g.clone(), None);
        assert_close(y, v.clone(), 1e-6, "recurrent: read back");
        let vs = values(v.clone());
        for key in 0..4 {
            let last = writes.iter().rposition(|&w| w == key);
            let row = &values(state.clone())[key * 3..key * 3 + 3];
            let want: Vec<f32> = last.map_or(vec![0.0; 3], |p| vs[p * 3..p * 3 + 3].to_vec());
            for (g, w) in row.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "key {key}: state row {row:?}, last value {want:?}");
            }
        }
        for c in [2, 4, 9] {
            let (y, s) =
                chunked(k.clone(), k.clone(), v.clone(), beta.clone(), log_g.clone(), c, None);
            assert_close(y, v.clone(), 1e-5, &format!("chunk={c}: read back"));
            assert_close(s, state.clone(), 1e-5, &format!("chunk={c}: state"));
        }
        assert_close(
            parallel(k.clone(), k, v.clone(), beta, log_g),
            v,
            1e-5,
            "parallel: read back",
        );
    }

    /// Strong forgetting (log gates ≈ −30 per token) over a 40-token chunk stays finite and equal.
    #[test]
    fn strong_decay_over_long_chunks_stays_finite() {
        let [q, k, v, b, g] = inputs(40, 2300);
        let (q, k, b, g) = (
            l2_normalize(q),
            l2_normalize(k),
            beta_from(b, BetaRange::Unit),
            log_gates_from(g, 30.0),
        );
        let (want, _) = naive_delta_rule(&q, &k, &v, &b, &g);
        assert_close(
            chunked(q.clone(), k.clone(), v.clone(), b.clone(), g.clone(), 40, None).0,
            want.clone(),
            1e-4,
            "chunked",
        );
        assert_close(
            parallel(q.clone(), k.clone(), v.clone(), b.clone(), g.clone()),
            want.clone(),
            1e-4,
            "parallel",
        );
        assert_close(recurrent(q, k, v, b, g, None).0, want, 1e-4, "recurrent");
    }

    /// Continuing from a carried state equals one pass over the whole sequence (decoding relies
    /// on it), for the chunked and the recurrent form, and the final states agree.
    #[test]
    fn carried_state_continues_the_sequence() {
        for scale in [0.0, 0.3] {
            let [q, k, v, b, g] = inputs(10, 2400 + scale as u64);
            let (q, k, b, g) = (
                l2_normalize(q),
                l2_normalize(k),
                beta_from(b, BetaRange::Unit),
                log_gates_from(g, scale),
            );
            let (full, final_state) = naive_delta_rule(&q, &k, &v, &b, &g);
            let part = |x: &Tensor<4>, a: usize, n: usize| x.clone().narrow(2, a, n);
            let first = |x: &Tensor<4>| part(x, 0, 6);
            let rest = |x: &Tensor<4>| part(x, 6, 4);
            let (head, state) =
                chunked(first(&q), first(&k), first(&v), first(&b), first(&g), 4, None);
            let (tail, end) =
                chunked(rest(&q), rest(&k), rest(&v), rest(&b), rest(&g), 3, Some(&state));
            assert_close(
                Tensor::cat(vec![head, tail], 2),
                full.clone(),
                1e-4,
                "chunked with state",
            );
            assert_close(end, final_state.clone(), 1e-4, "chunked final state");
            let (_, state) = recurrent(first(&q), first(&k), first(&v), first(&b), first(&g), None);
            let (tail, end) =
                recurrent(rest(&q), rest(&k), rest(&v), rest(&b), rest(&g), Some(&state));
            assert_close(tail, full.narrow(2, 6, 4), 1e-4, "recurrent with state");
            assert_close(end, final_state, 1e-4, "recurrent final state");
        }
    }

    /// Bidirectional weights are the forward recurrence plus the reversed one.
    #[test]
    fn bidirectional_runs_both_ways() {
        let [q, k, v, b, g] = inputs(7, 2500);
        let (q, k, b, g) = (
            l2_normalize(q),
            l2_normalize(k),
            beta_from(b, BetaRange::Unit),
            log_gates_from(g, 0.3),
        );
        let flip = |x: &Tensor<4>| x.clone().flip([2]);
        let want = naive_delta_rule(&q, &k, &v, &b, &g).0
            + naive_delta_rule(&flip(&q), &flip(&k), &flip(&v), &flip(&b), &flip(&g)).0.flip([2]);
        assert_close(weights(q, k, b, g, false).matmul(v), want, 1e-4, "bidirectional");
    }

    fn dims() -> MixerDims {
        MixerDims { d_model: 8, n_heads: 2, max_seq_len: 32, seed: 5, layer: 1, bias: true }
    }

    fn config(spec: &str) -> DeltaAttentionConfig {
        let parts: Vec<&str> = if spec.is_empty() { vec![] } else { spec.split(':').collect() };
        DeltaAttentionConfig::parse(&parts, spec).unwrap_or_else(|e| panic!("{e}"))
    }

    fn layer(spec: &str, device: &Device) -> DeltaAttention {
        crate::testing::seeded_layer::<DeltaAttentionConfig>(spec, &dims(), device)
    }

    /// Every gate and convolution parameter's gradient.
    fn gate_grads(m: &DeltaAttention, grads: &burn::tensor::Gradients) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        for layer in [Some(&m.beta), m.dt.as_ref()].into_iter().flatten() {
            out.push(values(layer.weight.val().grad(grads).expect("weight grad")));
            out.push(values(layer.bias.as_ref().unwrap().val().grad(grads).expect("bias grad")));
        }
        if let Some(a) = &m.a_log {
            out.push(values(a.val().grad(grads).expect("a_log grad")));
        }
        if let Some(c) = &m.conv {
            out.push(values(c.weight.val().grad(grads).expect("conv grad")));
        }
        out
    }

    /// The module end to end: the three forms give the same output and the same gradients with
    /// respect to the input and every gate parameter, and the output equals the naive recurrence
    /// on the module's own features and gates.
    #[test]
    fn module_forms_agree_on_outputs_input_and_gate_gradients() {
        let ad = ad_device();
        for (s, (spec, params)) in
            [("chunk=3", 2), ("gated:chunk=3", 5), ("gated:neg_eigval=true:conv=4:chunk=3", 6)]
                .into_iter()
                .enumerate()
        {
            let base = layer(spec, &ad);
            let x = randn([2, 7, 8], 2600 + s as u64, &device());
            let probe = randn([2, 7, 8], 2610 + s as u64, &ad);
            let run = |form: LinearForm| {
                let mut m = base.clone();
                m.form = form;
                let x = Tensor::<3>::from_data(x.to_data(), &ad).require_grad();
                let y = m.forward(x.clone(), MixContext::causal()).output;
                let grads = (y.clone() * probe.clone()).sum().backward();
                (values(y), values(x.grad(&grads).unwrap()), gate_grads(&m, &grads))
            };
            let (want, want_x, want_gates) = run(LinearForm::Recurrent);
            assert_eq!(want_gates.len(), params, "{spec}: gate parameters");
            for form in [LinearForm::Chunked, LinearForm::Parallel] {
                let (y, gx, gates) = run(form);
                let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
                    assert_values_close(&a, &b, &format!("{spec} {form:?}: {what}"))
                };
                close(y, want.clone(), "output");
                close(gx, want_x.clone(), "input gradient");
                for (i, (g, w)) in gates.into_iter().zip(want_gates.clone()).enumerate() {
                    close(g, w, &format!("gate parameter gradient {i}"));
                }
            }
            let m = layer(spec, &device());
            let x = Tensor::<3>::from_data(x.to_data(), &device());
            let (beta, log_g) = (m.betas(x.clone()), m.log_gates(x.clone()));
            let (q, k, v) = m.features(x.clone(), None, 0, &mut None);
            let want = m.heads.merge(naive_delta_rule(&q, &k, &v, &beta, &log_g).0);
            assert_close(
                m.forward(x, MixContext::causal()).output,
                want,
                1e-4,
                &format!("{spec}: forward vs naive"),
            );
        }
    }

    /// A prompt (chunked from the empty state), single tokens (recurrent) and a 3-token piece
    /// (chunked from the carried state) give the forward's outputs, under RoPE, with and without
    /// the convolution.
    #[test]
    fn step_equals_forward() {
        let d = device();
        let rope = RotaryEncodingConfig::new(32, 4).init(&d);
        for spec in [
            "",
            "gated",
            "gated:conv=4:chunk=2",
            "neg_eigval=true:conv=3:form=parallel",
            "gated:form=recurrent",
        ] {
            let m = layer(spec, &d);
            crate::testing::assert_decoding_equals_forward(
                &m,
                randn([2, 10, 8], 2700, &d),
                Some(&rope),
                &format!("delta:{spec}"),
            );
        }
    }

    /// β, the gate and the normalised features are the formulas of the header.
    #[test]
    fn betas_and_features_match_their_formulas() {
        let d = device();
        let x = randn([1, 3, 8], 2800, &d);
        let xs = values(x.clone());
        for (spec, scale) in [("", 1.0), ("neg_eigval=true", 2.0)] {
            let m = layer(spec, &d);
            let (w, b) = (values(m.beta.weight.val()), values(m.beta.bias.as_ref().unwrap().val()));
            let got = values(m.betas(x.clone())); // [1, 2, 3, 1]
            for h in 0..2 {
                for t in 0..3 {
                    let z: f32 = (0..8).map(|i| xs[t * 8 + i] * w[i * 2 + h]).sum::<f32>() + b[h];
                    let want = scale / (1.0 + (-z).exp());
                    assert!(
                        (got[h * 3 + t] - want).abs() < 1e-6,
                        "{spec} β ({h},{t}): {} vs {want}",
                        got[h * 3 + t]
                    );
                }
            }
            assert_eq!(values(m.log_gates(x.clone())), vec![0.0; 6], "ungated");
        }
        let m = layer("gated", &d);
        let (q, k, _) = m.features(x.clone(), None, 0, &mut None);
        for (name, t, norm) in [("q", q, 0.5f32), ("k", k, 1.0)] {
            // ‖k‖ = 1 and ‖q‖ = 1/√d_k (d_k = 4), up to the ε inside the norm.
            for n in values(t.powi_scalar(2).sum_dim(3).sqrt()) {
                assert!((n - norm).abs() < 1e-4, "{name}: norm {n}, want {norm}");
            }
        }
        assert!(values(m.log_gates(x)).iter().all(|g| *g < 0.0), "gated: log gates negative");
    }

    #[test]
    fn specs_parse_print_and_size() {
        for spec in [
            "",
            "gated",
            "gated:conv=4",
            "neg_eigval=true",
            "chunk=16:conv=2:form=recurrent:neg_eigval=true",
            "gated:form=parallel",
        ] {
            assert_eq!(config(spec).to_string(), spec);
        }
        assert_eq!(
            config("gated:chunk=64:conv=0:form=chunked:neg_eigval=false").to_string(),
            "gated"
        );
        for (spec, needle) in [
            ("fast", "unknown delta variant 'fast'"),
            ("gated:beta=1", "unknown option"),
            ("chunk=0", "chunk must be at least 1"),
            ("gated:conv=1", "not a short convolution"),
            ("neg_eigval=maybe", "neg_eigval"),
        ] {
            let err = DeltaAttentionConfig::parse(&spec.split(':').collect::<Vec<_>>(), spec)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{spec}: {err}");
        }
        // d_model 8, 2 heads of 4: S is 4 × 4 per head; conv=4 keeps the last 3 of q, k, v (24 wide).
        assert_eq!(config("gated").decode_state_floats(&dims(), 100), 2 * 16);
        assert_eq!(config("conv=4").decode_state_floats(&dims(), 7), 2 * 16 + 3 * 24);
    }

    /// Diagnostics are the parallel form's weights: weighting `v` by them gives each head's output.
    #[test]
    fn diagnostics_are_the_implied_weights() {
        let d = device();
        for spec in ["", "gated:neg_eigval=true"] {
            let m = layer(spec, &d);
            let x = randn([1, 6, 8], 2900, &d);
            let diag = m
                .forward(x.clone(), MixContext::causal().with_diagnostics(true))
                .diagnostics
                .expect("diagnostics");
            let (q, k, v) = m.features(x.clone(), None, 0, &mut None);
            let (beta, log_g) = (m.betas(x.clone()), m.log_gates(x));
            assert_close(
                diag.weights.matmul(v.clone()),
                naive_delta_rule(&q, &k, &v, &beta, &log_g).0,
                1e-4,
                &format!("delta:{spec}"),
            );
        }
    }
}
