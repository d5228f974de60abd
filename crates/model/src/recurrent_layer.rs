//! What the fixed-state recurrent families (`decay`, `delta`) share around their forms: the
//! decoding state they carry ([`RecurrentState`]), the optional `conv=K` short convolution on the
//! packed `[q | k | v]` projection (built, sized, and continued across decoding calls), the
//! chunked form from the empty state through the fused recurrence on flex or the family's
//! composed form elsewhere ([`fused_or_composed`]), and the decoding step (one token through the
//! recurrent form, several through the chunked form from the carried state).
//!
//! A family implements [`RecurrentLayer`] (its gates, how it splits the projection into its
//! features, its two forms from a state); [`RecurrentLayer::features`] and
//! [`RecurrentLayer::decode`] are written once here. Names no family.

use crate::fused::{self, GatedRecurrenceInputs};
use crate::heads::HeadProjection;
use crate::short_conv::ShortConv;
use burn::nn::RotaryEncoding;
use burn::tensor::{Device, Tensor};
use rand::rngs::StdRng;

/// Decoding state of a recurrent family: its fixed-size state, the short convolution's last
/// inputs (`conv=K`) and the tokens seen.
#[derive(Clone, Debug, Default)]
pub struct RecurrentState {
    /// The family's state (`decay`: `[batch, heads, F, d_v (+1 for z)]`; `delta`:
    /// `[batch, heads, d_k, d_v]`); `None` before the first token.
    pub state: Option<Tensor<4>>,
    /// `conv=K`: the last `K − 1` projected inputs, `[batch, K − 1, channels]`.
    pub conv: Option<Tensor<3>>,
    pub position: usize,
}

/// The `conv=K` short convolution over `channels` (the packed projection's width), its weights
/// drawn from `rng`; none for `K = 0` (and nothing drawn).
pub fn short_conv(
    kernel: usize,
    channels: usize,
    rng: &mut StdRng,
    device: &Device,
) -> Option<ShortConv> {
    (kernel > 0).then(|| ShortConv::new(channels, kernel, rng, device))
}

/// Floats the `conv=K` convolution adds to one sequence's decoding state (its last `K − 1`
/// inputs of `channels`); 0 for `K = 0`.
pub fn conv_state_floats(kernel: usize, channels: usize) -> usize {
    if kernel > 0 { ShortConv::state_floats(kernel, channels) } else { 0 }
}

/// The chunked form from the empty state: the fused gated recurrence on flex
/// ([`fused::gated_recurrence`], with `beta` for the delta rule), else `composed` on the inputs
/// it hands back (the family's composed chunked form; each family tests the two against each
/// other in `fused_recurrence_matches_the_composed_chunked_form`).
///
/// # Shapes
/// - as [`fused::gated_recurrence`]
pub fn fused_or_composed(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_g: Tensor<4>,
    beta: Option<Tensor<4>>,
    chunk: usize,
    composed: impl FnOnce(GatedRecurrenceInputs) -> Tensor<4>,
) -> Tensor<4> {
    fused::gated_recurrence(q, k, v, log_g, beta, chunk).unwrap_or_else(|inputs| composed(*inputs))
}

/// A layer with a fixed-size recurrent state: what [`Self::features`] and [`Self::decode`] need
/// from it.
pub trait RecurrentLayer {
    /// What the forms take from the layer's input besides `q, k, v` (`decay`: the log gates;
    /// `delta`: `β` and the log gates).
    type Gates;

    fn heads(&self) -> &HeadProjection;

    /// The `conv=K` short convolution, when on.
    fn conv(&self) -> Option<&ShortConv>;

    /// What the packed projection goes through when there is no convolution (the identity
    /// unless the family says otherwise; `delta` applies SiLU).
    fn without_conv(&self, qkv: Tensor<3>) -> Tensor<3> {
        qkv
    }

    /// The gates of the tokens in `x` (`[batch, seq, d_model]`).
    fn gates(&self, x: Tensor<3>) -> Self::Gates;

    /// The packed projection the convolution and [`Self::split`] read: the heads' `[q | k | v]`
    /// unless the family projects more (DeltaProduct's further keys and values).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, channels]`
    fn project(&self, x: Tensor<3>) -> Tensor<3> {
        self.heads().project(x)
    }

    /// The forms' `(q, k, v)` from the (convolved) packed projection of tokens starting at
    /// `offset`: heads split, positions applied, the family's own feature map.
    fn split(
        &self,
        qkv: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>);

    /// The recurrent form (token by token) from `state` (zeros when `None`): the outputs and the
    /// state after the last token.
    fn recurrent_from(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        gates: Self::Gates,
        state: Option<&Tensor<4>>,
    ) -> (Tensor<4>, Tensor<4>);

    /// The chunked form from `state` (zeros when `None`): the outputs and the state after the
    /// last token.
    fn chunked_from(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        gates: Self::Gates,
        state: Option<&Tensor<4>>,
    ) -> (Tensor<4>, Tensor<4>);

    /// `(q, k, v)` for tokens starting at `offset`: [`Self::project`]ed, through the
    /// convolution (or [`Self::without_conv`]), then [`Self::split`]; `conv_history` is read and
    /// advanced.
    fn features(
        &self,
        x: Tensor<3>,
        rope: Option<&RotaryEncoding>,
        offset: usize,
        conv_history: &mut Option<Tensor<3>>,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let qkv = self.project(x);
        let qkv = match self.conv() {
            Some(conv) => conv.continue_from(qkv, conv_history),
            None => self.without_conv(qkv),
        };
        self.split(qkv, rope, offset)
    }

    /// One decoding step ([`crate::mixer::SequenceMixer::step`]): the next tokens `x` after those
    /// folded into `state`, a single token through the recurrent form, several through the
    /// chunked form, both from the carried state; the state, the convolution's history and the
    /// position advance.
    ///
    /// # Shapes
    /// - `x`: `[batch, S, d_model]` -> `[batch, S, d_model]`
    fn decode(
        &self,
        x: Tensor<3>,
        state: &mut RecurrentState,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        let seq = x.dims()[1];
        let gates = self.gates(x.clone());
        let (q, k, v) = self.features(x, rope, state.position, &mut state.conv);
        let (y, s) = if seq == 1 {
            self.recurrent_from(q, k, v, gates, state.state.as_ref())
        } else {
            self.chunked_from(q, k, v, gates, state.state.as_ref())
        };
        state.state = Some(s);
        state.position += seq;
        self.heads().merge(y)
    }
}
