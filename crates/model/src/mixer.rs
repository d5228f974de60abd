//! The sequence-mixer interface: what every attention family implements and what the rest of
//! the model sees. A leaf: it imports no family (the registry, `families`, imports it).
//!
//! A mixer maps `x: [batch, seq, d_model]` to a tensor of the same shape. It has two paths:
//! the full-sequence [`SequenceMixer::forward`] (training, evaluation) and the incremental
//! [`SequenceMixer::step`] (decoding), which carries per-family state between calls: a KV cache
//! for softmax-type attention, the recurrent state `(Σ φ(k) vᵀ, Σ φ(k))` for linear attention.
//!
//! A family's config type implements [`MixerFamily`]: it parses and prints its part of a spec
//! string (`family[:variant][:key=value]...`), checks itself against the model's shape, reports
//! its query/key width and its decoding-state size, and builds its module.

use burn::module::{Module, ModuleDisplay};
use burn::nn::RotaryEncoding;
use burn::tensor::{Device, Tensor};
use std::any::Any;
use std::fmt;

/// What a mixer needs to know besides its input.
#[derive(Clone, Copy, Debug)]
pub struct MixContext<'a> {
    /// Causal (query `i` sees keys `j <= i`) or bidirectional (sees all keys).
    pub causal: bool,
    /// Rotary position encoding applied to queries and keys, when the model uses RoPE.
    pub rope: Option<&'a RotaryEncoding>,
    /// Also return attention weights and per-head entropy (costs a `T x T` tensor).
    pub diagnostics: bool,
}

impl<'a> MixContext<'a> {
    pub fn causal() -> Self {
        Self { causal: true, rope: None, diagnostics: false }
    }
    pub fn bidirectional() -> Self {
        Self { causal: false, rope: None, diagnostics: false }
    }
    pub fn with_rope(mut self, rope: Option<&'a RotaryEncoding>) -> Self {
        self.rope = rope;
        self
    }
    pub fn with_diagnostics(mut self, on: bool) -> Self {
        self.diagnostics = on;
        self
    }
}

/// Attention weights and their per-head entropy, for monitoring.
#[derive(Clone, Debug)]
pub struct AttentionDiagnostics {
    /// `[batch, heads, seq_q, seq_k]`. For linear attention these are the implied weights
    /// `φ(q_i)·φ(k_j) / Σ_l φ(q_i)·φ(k_l)`; for sigmoid the unnormalised gates.
    pub weights: Tensor<4>,
    /// `[heads]`: mean over batch and query rows of the entropy (nats) of each row's weights,
    /// renormalised to sum to one (absolute values, for maps that can go negative).
    pub entropy: Tensor<1>,
    /// `[heads]`: the same entropy divided by `ln n` (n = keys the row attends over), averaged
    /// over rows with `n >= 2`; 1 = uniform, 0 = one-hot.
    pub normalized_entropy: Tensor<1>,
    /// `[heads]`: sink mass, the mean over batch and rows with `n >= 2` of `|w_i0|`, the weight
    /// on position 0 (the attention-sink papers' metric; for unnormalised linear forms a
    /// magnitude, not a probability).
    pub sink_mass: Tensor<1>,
}

/// Output of a full-sequence forward.
#[derive(Clone, Debug)]
pub struct MixOutput {
    /// `[batch, seq, d_model]`.
    pub output: Tensor<3>,
    pub diagnostics: Option<AttentionDiagnostics>,
}

/// A causal (or bidirectional) sequence mixer `[B, T, D] -> [B, T, D]`.
pub trait SequenceMixer: Module + ModuleDisplay {
    /// Per-sequence decoding state (KV cache, recurrent state, ...).
    type State: Clone + fmt::Debug + Send;

    /// Full-sequence forward.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `output`: `[batch, seq, d_model]`
    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput;

    /// The state before the first token.
    fn empty_state(&self) -> Self::State;

    /// Causal incremental forward: `x` holds the next `S >= 1` tokens after those already folded
    /// into `state`. Equals the matching rows of a causal [`forward`](Self::forward) over the
    /// whole prefix.
    ///
    /// # Shapes
    /// - `x`: `[batch, S, d_model]` -> `[batch, S, d_model]`
    fn step(
        &self,
        x: Tensor<3>,
        state: &mut Self::State,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3>;
}

/// Everything a family needs to build its module.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixerDims {
    pub d_model: usize,
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention, Ainslie et al. 2023): each serves
    /// `n_heads / n_kv_heads` query heads. Equal to `n_heads` for plain multi-head attention.
    pub n_kv_heads: usize,
    /// Per-head width of values (and of queries and keys unless the family narrows them);
    /// `d_model / n_heads` unless the model sets `model.head_dim` (Qwen3).
    pub d_head: usize,
    /// Longest sequence the model will see (cosFormer's M uses it).
    pub max_seq_len: usize,
    /// Seed for fixed random parameters (Performer features); mixed with the layer index.
    pub seed: u64,
    pub layer: usize,
    /// Layers in the model (RWKV-7's initial values follow the layer's depth `layer / n_layers`).
    pub n_layers: usize,
    /// Bias on the q/k/v projection (and on the families' own input projections).
    pub bias: bool,
    /// Bias on the output projection.
    pub out_bias: bool,
    /// Qwen3's per-head RMSNorm of queries and keys before RoPE, with this ε.
    pub qk_head_norm: Option<f64>,
    /// Causal (`model.causal`); a family without a bidirectional form refuses `false` in
    /// [`MixerFamily::validate`].
    pub causal: bool,
}

impl MixerDims {
    /// Plain multi-head attention of `n_heads` heads over width `d_model`, biases on, seed 0,
    /// layer 0 of 1, causal; tests and benches change what they need with struct update syntax.
    pub const fn new(d_model: usize, n_heads: usize, max_seq_len: usize) -> Self {
        Self {
            d_model,
            n_heads,
            n_kv_heads: n_heads,
            d_head: match d_model.checked_div(n_heads) {
                Some(d) => d,
                None => 0,
            },
            max_seq_len,
            seed: 0,
            layer: 0,
            n_layers: 1,
            bias: true,
            out_bias: true,
            qk_head_norm: None,
            causal: true,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.d_head
    }
}

/// A bad spec string or option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid attention spec '{spec}': {reason}")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

impl SpecError {
    pub fn new(spec: &str, reason: impl ToString) -> Self {
        Self { spec: spec.to_string(), reason: reason.to_string() }
    }
}

/// A mixer whose options do not fit the model's shape ([`MixerFamily::validate`]); the message
/// names the option and the key to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixerError {
    /// A cosFormer re-weighting takes the context length as its period.
    #[error("{mixer} needs model.max_seq_len > 0 (its re-weighting period)")]
    PeriodNeedsContext {
        /// How the message names the mixer (`linear:cosformer`, `decay with map=cosformer`).
        mixer: &'static str,
    },
    /// A family that splits each head's queries and keys into parts needs a head dim the parts
    /// divide.
    #[error(
        "{mixer} needs a head dim divisible by {multiple} ({why}), got {head_dim}: change model.d_model/model.n_heads or set model.head_dim"
    )]
    HeadDim { mixer: &'static str, head_dim: usize, multiple: usize, why: &'static str },
    /// A model option the family has no form of (RWKV-7's grouped-query heads); `fix` names
    /// the key to change.
    #[error("{mixer} has no {what}: {fix}")]
    Unsupported { mixer: &'static str, what: &'static str, fix: &'static str },
}

/// One line of the `attnlab variants` listing.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VariantInfo {
    pub spec: &'static str,
    pub formula: &'static str,
}

/// A constant or convention a reimplementation needs that the options do not say: an ε, the
/// order of two steps, a tensor layout, a parameter's name. `value` is what code reads
/// (a number, a string, a list); `doc` says what it means.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Convention {
    pub value: serde_json::Value,
    pub doc: String,
}

impl Convention {
    pub fn new(value: impl Into<serde_json::Value>, doc: impl Into<String>) -> Self {
        Self { value: value.into(), doc: doc.into() }
    }

    /// An `f32` constant written as its shortest decimal (`1e-6`, not `9.99999997e-7`).
    pub fn number(value: f32, doc: impl Into<String>) -> Self {
        let shortest: f64 = value.to_string().parse().expect("a float prints as a float");
        Self::new(shortest, doc)
    }
}

/// One layer's mixer fully resolved: what a reimplementation (`python/attnlab_torch`) builds the
/// layer from, with no spec parser and no default table of its own. Written per layer into
/// every export (`attnlab_mixers`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MixerDescription {
    /// The canonical spec string (`decay:gla:conv=4`).
    pub spec: String,
    pub family: String,
    /// The name in parameter paths: `blocks.<i>.mixer.<module>.…`.
    pub module: String,
    /// The spec's positional part (scaling, feature map, gate, `gated`) with a default spelled
    /// out (`sqrt_d`); `None` where the family has none or the plain form was chosen.
    pub variant: Option<String>,
    /// Every option, typed, defaults filled in (an absent optional value is `null`).
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Per-head query/key width (what RoPE rotates).
    pub qk_width: usize,
    /// Constants and conventions by name.
    pub conventions: std::collections::BTreeMap<String, Convention>,
    /// The layer's parameters (path below `blocks.<i>.mixer.`) and their shapes; filled by the
    /// exporter, which holds the weights.
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, Vec<usize>>,
}

/// The config side of an attention family: everything the rest of the model asks of a family
/// without knowing which one it is.
pub trait MixerFamily:
    Sized + Clone + fmt::Debug + PartialEq + fmt::Display + Default + serde::Serialize + 'static
{
    /// The spec's first part (`softmax`, `linear`, ...).
    const NAME: &'static str;
    /// The family's spec grammar for `attnlab variants`, e.g. `sigmoid[:bias=B]`.
    const SYNTAX: &'static str;
    /// Whether the positional part must be given (`linear:<map>`); when it may be left out,
    /// [`MixerFamily::variant`] of the default config says what leaving it out means.
    const VARIANT_REQUIRED: bool = false;
    /// The catalogue specs `attnlab bench` times by default (the family's representative).
    const BENCH: &'static [&'static str] = &[];
    /// The module this config builds.
    type Module: SequenceMixer;
    /// `parts` are the `:`-separated pieces after the family name (may be empty); `spec` is the
    /// whole string, for error messages.
    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError>;
    /// Checks the options against the model's shape.
    fn validate(&self, _dims: &MixerDims) -> Result<(), MixerError> {
        Ok(())
    }
    /// Whether the config rotates a part of its own that means nothing without RoPE (MLA's
    /// decoupled key), so the model refuses it unless `model.positions = "rope"`.
    fn needs_rope(&self) -> bool {
        false
    }
    /// Per-head width of queries and keys (what RoPE would rotate).
    fn qk_width(&self, dims: &MixerDims) -> usize {
        dims.head_dim()
    }
    /// Floats one sequence's decoding state holds after `seq_len` tokens, in zoology's
    /// definitions (KV cache `2·d·L` for softmax; `heads·d_k·d_v`-type sums for fixed-state maps).
    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize;
    fn init(&self, dims: &MixerDims, device: &Device) -> Self::Module;
    /// Example specs with their formulas, for `attnlab variants`.
    fn catalogue() -> Vec<VariantInfo>;
    /// The choices of the spec's positional part, if the family has one.
    fn variants() -> Vec<&'static str> {
        Vec::new()
    }
    /// The positional part this config stands for, defaults spelled out.
    fn variant(&self) -> Option<&'static str> {
        None
    }
    /// Constants and conventions a reimplementation of this config needs beyond its options.
    fn conventions(&self) -> Vec<(&'static str, Convention)> {
        Vec::new()
    }
}

/// Decoding state of any mixer, type-erased so the model's state needs no list of families.
/// Each family's [`SequenceMixer::State`] goes in, and comes back out by its own type.
pub struct MixerState(Box<dyn ErasedState>);

trait ErasedState: Send + fmt::Debug {
    fn clone_box(&self) -> Box<dyn ErasedState>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<S: Clone + Send + fmt::Debug + 'static> ErasedState for S {
    fn clone_box(&self) -> Box<dyn ErasedState> {
        Box::new(self.clone())
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl MixerState {
    pub fn new<S: Clone + Send + fmt::Debug + 'static>(state: S) -> Self {
        Self(Box::new(state))
    }

    /// The family's own state.
    ///
    /// # Panics
    /// When the state was made by a mixer of another family (a caller mixing up layers).
    pub fn downcast_mut<S: 'static>(&mut self) -> &mut S {
        self.0
            .as_any_mut()
            .downcast_mut::<S>()
            .expect("decoding state belongs to another attention family")
    }
}

impl Clone for MixerState {
    fn clone(&self) -> Self {
        Self(self.0.clone_box())
    }
}

impl fmt::Debug for MixerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
