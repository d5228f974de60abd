//! The delta-rule attention module: its writing strengths `β`, its gates, its features
//! (projection, short convolution or SiLU, L2 norm, RoPE, `q` scaling), the full-sequence
//! forward (both ways when bidirectional) and decoding. Under `delta:kda` the gates are one per
//! key channel (`[batch, heads, seq, d_k]`), and every form takes them as they are. With `householders = N > 1`
//! (DeltaProduct) the keys, values, `β` and gates are the interleaved sequence of sub-steps and
//! the queries stay one per token; every form runs on the sub-steps and keeps each token's last
//! output (see `forms.rs`).

use super::forms::{
    chunked, flip_tokens, gate_on_first_substep, interleave_substeps, last_substeps, parallel,
    product_weights, queries_on_last_substep, recurrent,
};
use crate::feature_map::LinearForm;
use crate::gates::ssm_log_gates;
use crate::heads::{HeadProjection, apply_rope, sequence_diagnostics};
use crate::mixer::{MixContext, MixOutput, SequenceMixer};
use crate::recurrent_layer::{RecurrentLayer, RecurrentState, fused_or_composed};
use crate::short_conv::ShortConv;
use burn::module::{Module, Param};
use burn::nn::{Linear, RotaryEncoding};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

/// `ε` inside the L2 norm of queries and keys (fla's `l2norm`).
pub const L2_EPS: f32 = 1e-6;

/// Multi-head delta-rule attention.
#[derive(Module, Debug)]
pub struct DeltaAttention {
    /// `[q | k | v]`; with `householders = N > 1` its `k` and `v` are sub-step 1's.
    pub heads: HeadProjection,
    /// `householders = N > 1`: the keys and values of sub-steps `2..N`,
    /// `weight: [d_model, (N − 1)·K·2·d]` laid out `[k_2 | … | k_N | v_2 | … | v_N]`, each
    /// block head-major over the `K` key/value heads (repeated to the query heads as
    /// `heads.qkv`'s are, and through its key norm when the model has one).
    pub householder_kv: Option<Linear>,
    /// `x ↦ w_β·x + b`, `weight: [d_model, N·heads]` (sub-step `j`'s head `h` in column
    /// `j·heads + h`); `β = σ(·)` (or `2σ(·)`).
    pub beta: Linear,
    /// `delta:gated`: `x ↦ w·x + dt_bias`, `weight: [d_model, heads]`; `delta:kda`: the
    /// full-rank `f(x) + dt_bias`, `weight: [d_model, heads·d_k]` (head `h`'s channel `i` in
    /// column `h·d_k + i`).
    pub dt: Option<Linear>,
    /// `delta:gated`, `delta:kda`: `[heads]`, the decay rate `exp(A_log)`'s log.
    pub a_log: Option<Param<Tensor<1>>>,
    /// `conv=K`: the short convolution on `[q | k | v]` before heads are split.
    pub conv: Option<ShortConv>,
    #[module(skip)]
    pub(super) neg_eigval: bool,
    /// Householder steps per token, `N` (1: the delta rule).
    #[module(skip)]
    pub(super) householders: usize,
    #[module(skip)]
    pub(super) form: LinearForm,
    #[module(skip)]
    pub(super) chunk: usize,
}

impl DeltaAttention {
    /// Per-head writing strengths `β_{t,j} ∈ (0, 1)` (or `(0, 2)`), the `N` sub-steps of
    /// each token in a row.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq·N, 1]`
    pub fn betas(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        let n = self.householders;
        let beta = sigmoid(crate::fused::affine(&self.beta, x));
        let beta = if self.neg_eigval { beta * 2.0 } else { beta };
        let substep_heads = n * self.heads.n_heads();
        interleave_substeps(beta.swap_dims(1, 2).reshape([b, substep_heads, t, 1]), n)
    }

    /// Log decays `log a_t ≤ 0`, one per head and token (all 0 for the ungated rule), or under
    /// `delta:kda` one per head, token and key channel (`G = d_k`).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, heads, seq, G]` (`G = 1` or `d_k`)
    pub fn log_gates(&self, x: Tensor<3>) -> Tensor<4> {
        match (&self.dt, &self.a_log) {
            (Some(dt), Some(a_log)) => ssm_log_gates(dt, a_log, x),
            _ => {
                let [b, t, _] = x.dims();
                Tensor::zeros([b, self.heads.n_heads(), t, 1], &x.device())
            }
        }
    }
}

impl RecurrentLayer for DeltaAttention {
    /// `(β, log gates)`: `[batch, heads, seq, 1]` and `[batch, heads, seq, G]`.
    type Gates = (Tensor<4>, Tensor<4>);

    fn heads(&self) -> &HeadProjection {
        &self.heads
    }

    fn conv(&self) -> Option<&ShortConv> {
        self.conv.as_ref()
    }

    /// SiLU, as the convolution ends in.
    fn without_conv(&self, qkv: Tensor<3>) -> Tensor<3> {
        crate::fused::silu(qkv)
    }

    /// `β` and the log gates of the sub-steps, `[batch, heads, seq·N, 1]` and
    /// `[batch, heads, seq·N, G]` (the gate on each token's first sub-step).
    fn gates(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        let log_g = gate_on_first_substep(self.log_gates(x.clone()), self.householders);
        (self.betas(x), log_g)
    }

    /// `[q | k_1..N | v_1..N]`: the heads' projection, with `N > 1` sub-steps `2..N`'s keys
    /// and values from [`DeltaAttention::householder_kv`] put beside sub-step 1's.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, (1 + 2N)·heads·d]`
    fn project(&self, x: Tensor<3>) -> Tensor<3> {
        let qkv = self.heads.project(x.clone());
        let Some(extra) = &self.householder_kv else { return qkv };
        let [b, t, _] = qkv.dims();
        let (h, kv, d) = (self.heads.n_heads(), self.heads.n_kv_heads(), self.heads.d_qk());
        let more = self.householders - 1;
        let extra = crate::fused::affine(extra, x);
        let keys = extra.clone().narrow(2, 0, more * kv * d);
        let values = extra.narrow(2, more * kv * d, more * kv * d);
        // Every key through the key norm (Qwen3's q/k norm), as sub-step 1's got in `heads`.
        let keys = match &self.heads.k_norm {
            Some(norm) => {
                norm.forward(keys.reshape([b, t, more * kv, d])).reshape([b, t, more * kv * d])
            }
            None => keys,
        };
        // Key/value head g serves query heads g·(h/kv)..(g + 1)·(h/kv), as in `heads`.
        let to_query_heads = |x: Tensor<3>| {
            x.reshape([b, t * more, kv, 1, d]).expand([b, t * more, kv, h / kv, d]).reshape([
                b,
                t,
                more * h * d,
            ])
        };
        let part = |i: usize| qkv.clone().narrow(2, i * h * d, h * d);
        Tensor::cat(
            vec![part(0), part(1), to_query_heads(keys), part(2), to_query_heads(values)],
            2,
        )
    }

    /// `(q/√d_k, k, v)`: heads split, `q` and `k` L2-normalised and rotated; `q` one per token,
    /// `k` and `v` one per sub-step (`[batch, heads, seq·N, d]`, token `t`'s sub-step `j` at
    /// `t·N + j`, every sub-step of a token rotated to the token's position).
    fn split(
        &self,
        qkv: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [b, t, width] = qkv.dims();
        let (n, h, d_k) = (self.householders, self.heads.n_heads(), self.heads.d_qk());
        let d_v = (width - (1 + n) * h * d_k) / (n * h);
        // With N = 1 these are `split_packed`'s q, k, v, op for op (the delta rule unchanged).
        let heads = |start: usize, count: usize, d: usize| {
            qkv.clone().narrow(2, start, count * d).reshape([b, t, count, d]).swap_dims(1, 2)
        };
        let v = heads((1 + n) * h * d_k, n * h, d_v);
        // RoPE is linear, so q's 1/√d_k may come before it, inside the norm.
        let q = normalized_heads(&qkv, 0, h, d_k, 1.0 / (d_k as f64).sqrt());
        let k = normalized_heads(&qkv, h * d_k, n * h, d_k, 1.0);
        let (q, k) = apply_rope(q, k, rope, offset);
        (q, interleave_substeps(k, n), interleave_substeps(v, n))
    }

    fn recurrent_from(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        (beta, log_g): (Tensor<4>, Tensor<4>),
        state: Option<&Tensor<4>>,
    ) -> (Tensor<4>, Tensor<4>) {
        let n = self.householders;
        let (y, s) = recurrent(queries_on_last_substep(q, n), k, v, beta, log_g, state);
        (last_substeps(y, n), s)
    }

    fn chunked_from(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        (beta, log_g): (Tensor<4>, Tensor<4>),
        state: Option<&Tensor<4>>,
    ) -> (Tensor<4>, Tensor<4>) {
        let n = self.householders;
        let (y, s) = chunked(queries_on_last_substep(q, n), k, v, beta, log_g, self.chunk, state);
        (last_substeps(y, n), s)
    }
}

/// `count` heads `d` wide from column `start` of `qkv`'s rows, each `c · x/√(‖x‖² + ε)`: one
/// fused op on flex, [`l2_normalize`] on split heads elsewhere (the same numbers up to rounding:
/// `fused_normalized_heads_are_the_composed_ones`).
///
/// # Shapes
/// - `qkv`: `[batch, seq, width]` -> `[batch, count, seq, d]`
pub fn normalized_heads(
    qkv: &Tensor<3>,
    start: usize,
    count: usize,
    d: usize,
    c: f64,
) -> Tensor<4> {
    let part = qkv.clone().narrow(2, start, count * d);
    match crate::fused::l2_normalize_heads(part, count, c as f32, L2_EPS) {
        Ok(heads) => heads,
        Err(part) => {
            let [b, t, _] = part.dims();
            let heads = l2_normalize(part.reshape([b, t, count, d]).swap_dims(1, 2));
            if c == 1.0 { heads } else { heads * c }
        }
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
        let n = self.householders;
        let (beta, log_g) = self.gates(x.clone());
        let (q, k, v) = self.features(x, ctx.rope, 0, &mut None);
        let causal =
            |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, beta: Tensor<4>, log_g: Tensor<4>| {
                let q = queries_on_last_substep(q, n);
                let y = match self.form {
                    LinearForm::Parallel => parallel(q, k, v, beta, log_g),
                    LinearForm::Chunked => chunked_from_empty(q, k, v, beta, log_g, self.chunk),
                    LinearForm::Recurrent => recurrent(q, k, v, beta, log_g, None).0,
                };
                last_substeps(y, n)
            };
        let y = if ctx.causal {
            causal(q.clone(), k.clone(), v, beta.clone(), log_g.clone())
        } else {
            // Tokens reversed, each token's sub-steps kept in order (for N = 1 a plain flip).
            let flip = |x: &Tensor<4>| flip_tokens(x.clone(), n);
            causal(q.clone(), k.clone(), v.clone(), beta.clone(), log_g.clone())
                + causal(q.clone().flip([2]), flip(&k), flip(&v), flip(&beta), flip(&log_g))
                    .flip([2])
        };
        let diagnostics = ctx.diagnostics.then(|| {
            let substeps = product_weights(q, k, beta, log_g, n, ctx.causal);
            // A token's weight is the sum of its sub-steps' (exact for N = 1).
            let [b, h, t, _] = substeps.dims();
            let tokens = if n == 1 {
                substeps
            } else {
                substeps.reshape([b, h, t, t, n]).sum_dim(4).reshape([b, h, t, t])
            };
            sequence_diagnostics(tokens, ctx.causal)
        });
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
        self.decode(x, state, rope)
    }
}

/// [`chunked`] from the empty state, through the fused recurrence on flex where it runs (the same
/// numbers; the test is `fused_recurrence_matches_the_composed_chunked_form`).
fn chunked_from_empty(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<4>,
    log_g: Tensor<4>,
    chunk: usize,
) -> Tensor<4> {
    fused_or_composed(q, k, v, log_g, Some(beta), chunk, |inputs| {
        let (q, k, v, log_g, beta) = inputs;
        chunked(q, k, v, beta.expect("given"), log_g, chunk, None).0
    })
}
