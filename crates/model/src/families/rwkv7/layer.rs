//! The RWKV-7 module: token shift, the projections and LoRAs that make `r, w, k, v, a, g`, the
//! per-head removal key and replacement key, the recurrence (both ways when bidirectional), the
//! head norm, bonus and gate, and decoding.

use super::forms::{chunked, head_group_norm, implied_weights, recurrent};
use crate::fused::{self, affine};
use crate::heads::sequence_diagnostics;
use crate::mixer::{MixContext, MixOutput, SequenceMixer};
use burn::module::{Module, Param};
use burn::nn::{Linear, RotaryEncoding};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

/// Tokens between the fused kernel's state checkpoints: its backward pass replays at most this
/// many states at a time (`64·d_k·d_v` floats per thread).
const FUSED_CHECKPOINT: usize = 64;

/// `e^{−½}`: the largest per-token log decay's magnitude, `log w = −e^{−½}·σ(·)`.
pub const DECAY_SCALE: f32 = 0.606_530_66;
/// The floor under the removal key's norm (torch's `F.normalize`).
pub const L2_EPS: f32 = 1e-12;
/// The head GroupNorm's ε per channel of a head (fla: `head_dim · norm_eps`).
pub const GROUP_NORM_EPS: f32 = 1e-5;

/// A low-rank map `x ↦ up(f(down(x)))`; `f` is chosen by the caller (fla's `LoRA`).
#[derive(Module, Debug)]
pub struct Lora {
    /// `weight: [d_model, rank]`, no bias.
    pub down: Linear,
    /// `weight: [rank, heads·d_h]`; the bias (`w0`, `a0`) where the map has one.
    pub up: Linear,
}

impl Lora {
    fn forward(&self, x: Tensor<3>, f: impl Fn(Tensor<3>) -> Tensor<3>) -> Tensor<3> {
        affine(&self.up, f(affine(&self.down, x)))
    }
}

/// Multi-head RWKV-7 time mixing. Channels of every `[heads·d_h]` vector are head-major (head
/// `h`'s channel `i` at `h·d_h + i`).
#[derive(Module, Debug)]
pub struct Rwkv7Attention {
    /// `[6, d_model]`: the token shift's interpolations, rows r, w, k, v, a, g.
    pub mu: Param<Tensor<2>>,
    /// Receptance, key and value: `weight: [d_model, heads·d_h]`.
    pub r_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    /// Decay: `log w = −e^{−½}·σ(up(tanh(down x^w)) + w0)`.
    pub w_lora: Lora,
    /// In-context learning rate: `a = σ(up(down x^a) + a0)`.
    pub a_lora: Lora,
    /// Output gate: `g = up(σ(down x^g))`, no bias.
    pub g_lora: Lora,
    /// `[heads·d_h]`: scales `k` before it is normalised into the removal key `κ`.
    pub k_k: Param<Tensor<1>>,
    /// `[heads·d_h]`: how far `a` shrinks the written key, `k̃ = k·(1 + (a − 1)·k_a)`.
    pub k_a: Param<Tensor<1>>,
    /// `[heads, d_h]`: the bonus `Σ_i r_i k̃_i r_k,i`.
    pub r_k: Param<Tensor<2>>,
    /// `[heads·d_h]`: the head GroupNorm's weight and bias.
    pub g_norm_weight: Param<Tensor<1>>,
    pub g_norm_bias: Param<Tensor<1>>,
    /// `weight: [heads·d_h, d_model]`.
    pub o_proj: Linear,
    #[module(skip)]
    pub(super) n_heads: usize,
    /// Tokens per chunk when the layer runs the chunked form; `None`: the recurrence.
    #[module(skip)]
    pub(super) chunk: Option<usize>,
}

/// What the recurrence and the output take from a run of tokens, heads split
/// (`[batch, heads, seq, d_h]`), and the gate `[batch, seq, heads·d_h]`.
pub struct Features {
    pub r: Tensor<4>,
    pub log_w: Tensor<4>,
    /// `k̃`, the key written.
    pub k: Tensor<4>,
    pub v: Tensor<4>,
    /// `−κ`.
    pub alpha: Tensor<4>,
    /// `κ·a`.
    pub beta: Tensor<4>,
    pub g: Tensor<3>,
}

/// Decoding state: the per-head `S` (`[batch, heads, d_k, d_v]`) and the last token's input
/// (`[batch, 1, d_model]`, the token shift's history); `None` before the first token.
#[derive(Clone, Debug, Default)]
pub struct Rwkv7State {
    pub state: Option<Tensor<4>>,
    pub last_x: Option<Tensor<3>>,
}

impl Rwkv7Attention {
    fn heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, t, c] = x.dims();
        x.reshape([b, t, self.n_heads, c / self.n_heads]).swap_dims(1, 2)
    }

    /// The features of the tokens in `x`, whose predecessor's input is `prev` (zeros when
    /// `None`: the first token).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `prev`: `[batch, 1, d_model]`
    pub fn features(&self, x: Tensor<3>, prev: Option<Tensor<3>>) -> Features {
        let [b, t, d] = x.dims();
        let prev = prev.unwrap_or_else(|| Tensor::zeros([b, 1, d], &x.device()));
        let shifted =
            if t == 1 { prev } else { Tensor::cat(vec![prev, x.clone().narrow(1, 0, t - 1)], 1) };
        let delta = shifted - x.clone();
        // [b, t, 6, d]: the six interpolations at once.
        let mixes = x.unsqueeze_dim::<4>(2)
            + delta.unsqueeze_dim::<4>(2) * self.mu.val().reshape([1, 1, 6, d]);
        let mix = |c: usize| mixes.clone().narrow(2, c, 1).reshape([b, t, d]);
        let r = affine(&self.r_proj, mix(0));
        let log_w = sigmoid(self.w_lora.forward(mix(1), |z| z.tanh())) * (-DECAY_SCALE);
        let k = affine(&self.k_proj, mix(2));
        let v = affine(&self.v_proj, mix(3));
        let a = sigmoid(self.a_lora.forward(mix(4), |z| z));
        let g = self.g_lora.forward(mix(5), sigmoid);
        let c = k.dims()[2];
        let kappa = self.heads(k.clone() * self.k_k.val().reshape([1, 1, c]));
        let norm = kappa.clone().powi_scalar(2).sum_dim(3).sqrt().clamp_min(L2_EPS);
        let kappa = kappa / norm;
        let k = k * ((a.clone() - 1.0) * self.k_a.val().reshape([1, 1, c]) + 1.0);
        let a = self.heads(a);
        Features {
            r: self.heads(r),
            log_w: self.heads(log_w),
            k: self.heads(k),
            v: self.heads(v),
            alpha: -kappa.clone(),
            beta: kappa * a,
            g,
        }
    }

    /// The layer's output from the recurrence's `o` (`[batch, heads, seq, d_v]`): head norm,
    /// the bonus `(Σ_i r_i k̃_i r_k,i) v`, the gate, `W_o`.
    pub fn output(&self, o: Tensor<4>, f: &Features) -> Tensor<3> {
        let [b, h, t, d] = o.dims();
        let eps = d as f32 * GROUP_NORM_EPS;
        let o = head_group_norm(o, self.g_norm_weight.val(), self.g_norm_bias.val(), eps);
        let r_k = self.r_k.val().reshape([1, h, 1, d]);
        let bonus = (f.r.clone() * f.k.clone() * r_k).sum_dim(3) * f.v.clone();
        let y = (o + bonus).swap_dims(1, 2).reshape([b, t, h * d]) * f.g.clone();
        affine(&self.o_proj, y)
    }

    /// The recurrence over `f` from `state` (zeros when `None`): [`recurrent`], or [`chunked`]
    /// under `form=chunked` for more than one token. Returns `o` and the state after the last
    /// token.
    fn mix(&self, f: &Features, state: Option<&Tensor<4>>) -> (Tensor<4>, Tensor<4>) {
        let (r, log_w, k, v) = (f.r.clone(), f.log_w.clone(), f.k.clone(), f.v.clone());
        let (alpha, beta) = (f.alpha.clone(), f.beta.clone());
        match self.chunk {
            Some(chunk) if r.dims()[2] > 1 => chunked(r, log_w, k, v, alpha, beta, chunk, state),
            _ => recurrent(r, log_w, k, v, alpha, beta, state),
        }
    }

    /// The recurrence's `o` over `f` from the empty state: under the recurrent form the fused
    /// kernel (flex, `f32`), which computes [`recurrent`]'s numbers with a hand-written backward
    /// pass instead of a graph of `T` steps; else, and off flex, [`Self::mix`].
    fn mix_from_empty(&self, f: &Features) -> Tensor<4> {
        if self.chunk.is_none() {
            let x = [&f.r, &f.log_w, &f.k, &f.v, &f.alpha, &f.beta].map(|t| t.clone());
            if let Ok(o) = fused::dplr_recurrence(x, FUSED_CHECKPOINT) {
                return o;
            }
        }
        self.mix(f, None).0
    }

    /// One causal pass from the empty state: the output and, when asked, the recurrence's
    /// implied weights `[batch, heads, seq, seq]`.
    fn causal(&self, x: Tensor<3>, weights: bool) -> (Tensor<3>, Option<Tensor<4>>) {
        let f = self.features(x, None);
        let o = self.mix_from_empty(&f);
        let w = weights.then(|| {
            let (r, log_w, k) = (f.r.clone(), f.log_w.clone(), f.k.clone());
            implied_weights(r, log_w, k, f.alpha.clone(), f.beta.clone())
        });
        (self.output(o, &f), w)
    }
}

impl SequenceMixer for Rwkv7Attention {
    type State = Rwkv7State;

    /// RoPE is not applied (see the family's notes).
    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        let (y, w) = self.causal(x.clone(), ctx.diagnostics);
        let (y, w) = if ctx.causal {
            (y, w)
        } else {
            // The whole layer over the reversed sequence, reversed back; its weights flipped on
            // both axes land on the keys after each query.
            let (back, back_w) = self.causal(x.flip([1]), ctx.diagnostics);
            let w = w.zip(back_w).map(|(w, back)| w + back.flip([2, 3]));
            (y + back.flip([1]), w)
        };
        let diagnostics = w.map(|w| sequence_diagnostics(w, ctx.causal));
        MixOutput { output: y, diagnostics }
    }

    fn empty_state(&self) -> Rwkv7State {
        Rwkv7State::default()
    }

    fn step(
        &self,
        x: Tensor<3>,
        state: &mut Rwkv7State,
        _rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let t = x.dims()[1];
        let f = self.features(x.clone(), state.last_x.take());
        let (o, s) = self.mix(&f, state.state.as_ref());
        state.state = Some(s);
        state.last_x = Some(x.narrow(1, t - 1, 1));
        self.output(o, &f)
    }
}
