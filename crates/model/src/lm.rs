//! The transformer: a token embedding (or a linear read-in for vector inputs), position
//! information, a stack of pre-norm [`Block`]s each with its own mixer, a final norm, and a head.
//!
//! `Lm<M>` is generic over the mixer type; [`Model`] = `Lm<Mixer>` picks the mixer of every
//! layer at run time (hybrid stacks are one config line).
//!
//! Parameter names (stable; they are the keys of saved checkpoints and safetensors exports):
//! `input.Tokens.weight` or `input.Vectors.{weight,bias}`, `positions.learned.weight`,
//! `blocks.<i>.norm_mixer.<Layer|Rms>.{gamma,beta}`, `blocks.<i>.mixer.<Family>.heads.qkv.{weight,bias}`,
//! `blocks.<i>.mixer.<Family>.heads.out.{weight,bias}`, `blocks.<i>.mixer.Softmax.scale`,
//! `blocks.<i>.mixer.Linear.feature_map.random_features`, `blocks.<i>.norm_mlp.*`,
//! `blocks.<i>.mlp.{up,down}.{weight,bias}`, `norm.*`, `head.weight`.

use crate::block::{Block, BlockState, Norm};
use crate::families::Mixer;
use crate::fused;
use crate::mixer::{AttentionDiagnostics, MixContext, SequenceMixer};
use crate::position::Positions;
use burn::module::Module;
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::{Int, Tensor};

/// The run-time configurable model.
pub type Model = Lm<Mixer>;

/// How inputs enter the model.
#[derive(Module, Debug)]
pub enum InputLayer {
    /// Token ids -> `weight: [vocab, d_model]`.
    Tokens(Embedding),
    /// Vectors (in-context regression) -> `weight: [dim, d_model]`.
    Vectors(Linear),
}

/// A batch of inputs.
#[derive(Clone, Debug)]
pub enum LmInput {
    /// `[batch, seq]` token ids.
    Tokens(Tensor<2, Int>),
    /// `[batch, seq, dim]` vectors.
    Vectors(Tensor<3>),
}

impl LmInput {
    pub fn seq_len(&self) -> usize {
        match self {
            LmInput::Tokens(t) => t.dims()[1],
            LmInput::Vectors(v) => v.dims()[1],
        }
    }
}

/// Decoding state: one block state (its mixer's, and its Canon layers') per layer, and the
/// number of tokens seen.
#[derive(Clone, Debug)]
pub struct LmState<S> {
    pub layers: Vec<BlockState<S>>,
    pub position: usize,
}

#[derive(Module, Debug)]
pub struct Lm<M: SequenceMixer> {
    pub input: InputLayer,
    pub positions: Positions,
    pub blocks: Vec<Block<M>>,
    pub norm: Norm,
    /// `None` when the head is tied to the token embedding.
    pub head: Option<Linear>,
    pub dropout: Dropout,
    /// Read through [`Lm::is_causal`]; set where `ModelConfig::init` assembles the model.
    #[module(skip)]
    pub(crate) causal: bool,
    /// Read through [`Lm::max_seq_len`].
    #[module(skip)]
    pub(crate) max_seq_len: usize,
}

impl<M: SequenceMixer> Lm<M> {
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    pub fn is_causal(&self) -> bool {
        self.causal
    }

    /// # Shapes
    /// - tokens `[batch, seq]` or vectors `[batch, seq, dim]` -> `[batch, seq, output_dim]`
    pub fn forward(&self, input: LmInput) -> Tensor<3> {
        self.run(input, false).0
    }

    /// Forward that also returns each layer's attention diagnostics.
    pub fn forward_with_diagnostics(
        &self,
        input: LmInput,
    ) -> (Tensor<3>, Vec<AttentionDiagnostics>) {
        let (out, diags) = self.run(input, true);
        (out, diags.into_iter().flatten().collect())
    }

    /// Forward that also returns each layer's mixer input and output (see
    /// [`Block::forward_with_mixer_io`]), for attention transfer.
    pub fn forward_with_mixer_io(
        &self,
        input: LmInput,
    ) -> (Tensor<3>, Vec<(Tensor<3>, Tensor<3>)>) {
        let mut x = self.embed(input, 0);
        let ctx = self.context();
        let mut io = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (y, mixer_in, mixer_out) = block.forward_with_mixer_io(x, ctx);
            x = y;
            io.push((mixer_in, mixer_out));
        }
        (self.project(x), io)
    }

    /// What every mixer of this model is called with (full sequence, no diagnostics).
    pub fn context(&self) -> MixContext<'_> {
        MixContext { causal: self.causal, rope: self.positions.rope.as_ref(), diagnostics: false }
    }

    fn run(
        &self,
        input: LmInput,
        diagnostics: bool,
    ) -> (Tensor<3>, Vec<Option<AttentionDiagnostics>>) {
        let mut x = self.embed(input, 0);
        let ctx =
            MixContext { causal: self.causal, rope: self.positions.rope.as_ref(), diagnostics };
        let mut diags = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (y, d) = block.forward(x, ctx);
            x = y;
            diags.push(d);
        }
        (self.project(x), diags)
    }

    pub fn empty_state(&self) -> LmState<M::State> {
        let layers = self.blocks.iter().map(|b| BlockState::new(b.mixer.empty_state())).collect();
        LmState { layers, position: 0 }
    }

    /// Causal incremental forward over the next `S >= 1` inputs; equals the matching rows of
    /// [`forward`](Self::forward) over the whole prefix. The caller keeps
    /// `state.position + S <= max_seq_len`.
    ///
    /// # Shapes
    /// - `[batch, S]` tokens or `[batch, S, dim]` vectors -> `[batch, S, output_dim]`
    pub fn step(&self, input: LmInput, state: &mut LmState<M::State>) -> Tensor<3> {
        let seq = input.seq_len();
        let mut x = self.embed(input, state.position);
        let rope = self.positions.rope.as_ref();
        for (block, layer_state) in self.blocks.iter().zip(state.layers.iter_mut()) {
            x = block.step(x, layer_state, rope);
        }
        state.position += seq;
        self.project(x)
    }

    fn embed(&self, input: LmInput, offset: usize) -> Tensor<3> {
        let x = match (&self.input, input) {
            (InputLayer::Tokens(e), LmInput::Tokens(ids)) => e.forward(ids),
            (InputLayer::Vectors(l), LmInput::Vectors(v)) => fused::affine(l, v),
            _ => panic!("input kind does not match the model's input layer"),
        };
        self.dropout.forward(self.positions.add(x, offset))
    }

    fn project(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.norm.forward(x);
        match (&self.head, &self.input) {
            (Some(head), _) => fused::affine(head, x),
            (None, InputLayer::Tokens(e)) => {
                let [b, t, d] = x.dims();
                let w = e.weight.val(); // [vocab, d_model]
                let vocab = w.dims()[0];
                fused::affine_map(x.reshape([b * t, d]), w.transpose(), None).reshape([b, t, vocab])
            }
            (None, InputLayer::Vectors(_)) => {
                unreachable!("tied heads need token inputs (checked by the config)")
            }
        }
    }
}
