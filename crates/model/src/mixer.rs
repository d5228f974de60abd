//! The sequence-mixer interface every attention variant implements, and the run-time choice
//! between variants.
//!
//! A mixer maps `x: [batch, seq, d_model]` to a tensor of the same shape. It has two paths:
//! the full-sequence [`SequenceMixer::forward`] (training, evaluation) and the incremental
//! [`SequenceMixer::step`] (decoding), which carries per-variant state between calls: a KV cache
//! for softmax-type attention, the recurrent state `(Σ φ(k) vᵀ, Σ φ(k))` for linear attention.
//!
//! Variants are named by a short spec string, valid on the command line and in TOML:
//! `family[:variant][:key=value]...`, e.g. `softmax`, `softmax:sum_key_norms`, `linear:elu1`,
//! `linear:taylor:feature_dim=16`, `sigmoid`. [`MixerSpec`] parses and prints it (canonical form,
//! defaults omitted), and builds the matching [`Mixer`] module.
//!
//! Adding a family: write its file (a config type implementing [`MixerFamily`] and a module
//! implementing [`SequenceMixer`]) and add one line to the `mixer_families!` list at the bottom.

use crate::linear::LinearConfig;
use crate::sigmoid::SigmoidConfig;
use crate::softmax::SoftmaxConfig;
use burn::module::{Module, ModuleDisplay};
use burn::nn::RotaryEncoding;
use burn::tensor::{Device, Tensor};
use std::fmt;
use std::str::FromStr;

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
    fn step(&self, x: Tensor<3>, state: &mut Self::State, rope: Option<&RotaryEncoding>)
    -> Tensor<3>;
}

/// Everything a variant needs to build its module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixerDims {
    pub d_model: usize,
    pub n_heads: usize,
    /// Longest sequence the model will see (cosFormer's M uses it).
    pub max_seq_len: usize,
    /// Seed for fixed random parameters (Performer features); mixed with the layer index.
    pub seed: u64,
    pub layer: usize,
    /// Bias on the q/k/v and output projections.
    pub bias: bool,
}

impl MixerDims {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
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
    pub fn new(spec: &str, reason: impl Into<String>) -> Self {
        Self { spec: spec.to_string(), reason: reason.into() }
    }
}

/// One line of the `attnlab variants` listing.
#[derive(Clone, Debug)]
pub struct VariantInfo {
    pub spec: &'static str,
    pub formula: &'static str,
}

/// The config side of a variant family: parse the part of the spec after `family:`, print it
/// back (canonical, defaults omitted), and build the module.
pub trait MixerFamily: Sized + Clone + fmt::Debug + PartialEq + fmt::Display {
    /// The module this config builds.
    type Module: SequenceMixer;
    /// `parts` are the `:`-separated pieces after the family name (may be empty).
    fn parse(parts: &[&str], spec: &str) -> Result<Self, SpecError>;
    /// Checks the variant against the model's shape (e.g. head dim even for RoPE).
    fn validate(&self, _dims: &MixerDims) -> Result<(), String> {
        Ok(())
    }
    fn init(&self, dims: &MixerDims, device: &Device) -> Self::Module;
    fn catalogue() -> Vec<VariantInfo>;
}

/// Splits `key=value`; used by every family's parser.
pub(crate) fn key_value<'a>(part: &'a str, spec: &str) -> Result<(&'a str, &'a str), SpecError> {
    part.split_once('=').ok_or_else(|| {
        SpecError::new(spec, format!("expected key=value, found '{part}'"))
    })
}

pub(crate) fn parse_number<T: FromStr>(value: &str, key: &str, spec: &str) -> Result<T, SpecError> {
    value
        .parse()
        .map_err(|_| SpecError::new(spec, format!("'{key}' needs a number, found '{value}'")))
}

macro_rules! mixer_families {
    ($( $variant:ident : $family:literal => $config:ty ),* $(,)?) => {
        /// A parsed attention spec: which family, and that family's options.
        #[derive(Clone, Debug, PartialEq)]
        pub enum MixerSpec { $( $variant($config), )* }

        /// The run-time selected mixer: one concrete module type for any variant.
        #[derive(Module, Debug)]
        pub enum Mixer { $( $variant(<$config as MixerFamily>::Module), )* }

        /// Decoding state of a [`Mixer`].
        #[derive(Clone, Debug)]
        pub enum MixerState {
            $( $variant(<<$config as MixerFamily>::Module as SequenceMixer>::State), )*
        }

        impl MixerSpec {
            /// Family names, in listing order.
            pub const FAMILIES: &'static [&'static str] = &[$( $family, )*];

            pub fn family(&self) -> &'static str {
                match self { $( Self::$variant(_) => $family, )* }
            }

            pub fn validate(&self, dims: &MixerDims) -> Result<(), String> {
                match self { $( Self::$variant(c) => c.validate(dims), )* }
            }

            pub fn init(&self, dims: &MixerDims, device: &Device) -> Mixer {
                match self { $( Self::$variant(c) => Mixer::$variant(c.init(dims, device)), )* }
            }

            /// Every variant with its formula, for `attnlab variants` and the README.
            pub fn catalogue() -> Vec<VariantInfo> {
                let mut all = Vec::new();
                $( all.extend(<$config as MixerFamily>::catalogue()); )*
                all
            }

            fn parse_family(family: &str, parts: &[&str], spec: &str) -> Result<Self, SpecError> {
                match family {
                    $( $family => Ok(Self::$variant(<$config as MixerFamily>::parse(parts, spec)?)), )*
                    other => Err(SpecError::new(spec, format!(
                        "unknown family '{other}', expected one of: {}", Self::FAMILIES.join(", ")))),
                }
            }

            fn fmt_options(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let rest = match self { $( Self::$variant(c) => c.to_string(), )* };
                if rest.is_empty() { f.write_str(self.family()) } else { write!(f, "{}:{rest}", self.family()) }
            }
        }

        impl Mixer {
            /// The family name of this module ("softmax", "linear", ...).
            pub fn family(&self) -> &'static str {
                match self { $( Self::$variant(_) => $family, )* }
            }
        }

        impl SequenceMixer for Mixer {
            type State = MixerState;

            fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
                match self { $( Self::$variant(m) => m.forward(x, ctx), )* }
            }

            fn empty_state(&self) -> MixerState {
                match self { $( Self::$variant(m) => MixerState::$variant(m.empty_state()), )* }
            }

            fn step(&self, x: Tensor<3>, state: &mut MixerState, rope: Option<&RotaryEncoding>) -> Tensor<3> {
                match (self, state) {
                    $( (Self::$variant(m), MixerState::$variant(s)) => m.step(x, s, rope), )*
                    #[allow(unreachable_patterns)]
                    _ => panic!("decoding state belongs to another attention variant"),
                }
            }
        }
    };
}

mixer_families! {
    Softmax: "softmax" => SoftmaxConfig,
    Sigmoid: "sigmoid" => SigmoidConfig,
    Linear: "linear" => LinearConfig,
}

impl fmt::Display for MixerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_options(f)
    }
}

impl FromStr for MixerSpec {
    type Err = SpecError;
    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let spec = spec.trim();
        let mut parts = spec.split(':');
        let family = parts.next().unwrap_or_default();
        if family.is_empty() {
            return Err(SpecError::new(spec, "empty spec; try 'softmax' or 'linear:elu1'"));
        }
        let rest: Vec<&str> = parts.collect();
        if rest.iter().any(|p| p.is_empty()) {
            return Err(SpecError::new(spec, "empty ':'-separated part"));
        }
        Self::parse_family(family, &rest, spec)
    }
}

impl serde::Serialize for MixerSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MixerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The mixers of a whole stack: one spec for every layer, or one per layer (hybrids).
///
/// Written as a string (`"linear:elu1"`), a comma-separated string (`"softmax,linear:elu1"`),
/// or a TOML array (`["softmax", "linear:elu1"]`).
#[derive(Clone, Debug, PartialEq)]
pub struct MixerStack(pub Vec<MixerSpec>);

impl MixerStack {
    pub fn uniform(spec: MixerSpec) -> Self {
        Self(vec![spec])
    }

    /// The spec of layer `layer` in a stack of `n_layers`, or an error when the list length is
    /// neither 1 nor `n_layers`.
    pub fn for_layer(&self, layer: usize, n_layers: usize) -> Result<&MixerSpec, String> {
        match self.0.len() {
            1 => Ok(&self.0[0]),
            n if n == n_layers => Ok(&self.0[layer]),
            n => Err(format!(
                "model.mixer lists {n} specs but model.n_layers is {n_layers}: give one spec \
                 for all layers or exactly one per layer"
            )),
        }
    }
}

impl fmt::Display for MixerStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|s| s.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for MixerStack {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let specs = s.split(',').map(str::parse).collect::<Result<Vec<MixerSpec>, _>>()?;
        Ok(Self(specs))
    }
}

impl serde::Serialize for MixerStack {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.len() == 1 {
            self.0[0].serialize(s)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> serde::Deserialize<'de> for MixerStack {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let specs = match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => return s.parse().map_err(serde::de::Error::custom),
            OneOrMany::Many(v) => v,
        };
        if specs.is_empty() {
            return Err(serde::de::Error::custom("model.mixer: empty list; name at least one spec"));
        }
        let parsed = specs.iter().map(|s| s.parse()).collect::<Result<Vec<MixerSpec>, _>>();
        parsed.map(MixerStack).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_specs_round_trip() {
        for spec in [
            "softmax",
            "softmax:none",
            "softmax:num_keys",
            "softmax:sum_key_norms",
            "softmax:learned",
            "softmax:qk_norm",
            "sigmoid",
            "sigmoid:bias=-4",
            "linear:identity",
            "linear:elu1",
            "linear:relu",
            "linear:cosformer",
            "linear:taylor",
            "linear:taylor:feature_dim=8",
            "linear:performer:features=32",
            "linear:elu1:norm=none",
            "linear:elu1:form=recurrent",
            "linear:elu1:chunk=16",
        ] {
            let parsed: MixerSpec = spec.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.to_string(), spec);
        }
    }

    #[test]
    fn defaults_are_omitted_when_printing() {
        let s: MixerSpec = "softmax:sqrt_d".parse().unwrap();
        assert_eq!(s.to_string(), "softmax");
        let s: MixerSpec = "linear:elu1:form=chunked:chunk=64:norm=sum".parse().unwrap();
        assert_eq!(s.to_string(), "linear:elu1");
    }

    #[test]
    fn bad_specs_name_the_problem() {
        let cases = [
            ("attention", "unknown family"),
            ("softmax:sqrt", "sqrt_d"),
            ("linear:gelu", "elu1"),
            ("linear:elu1:chunk=0", "chunk"),
            ("linear:elu1:chunk=x", "number"),
            ("linear:elu1:colour=red", "colour"),
            ("linear", "feature map"),
            ("", "empty"),
        ];
        for (spec, needle) in cases {
            let err = spec.parse::<MixerSpec>().unwrap_err().to_string();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn stacks_parse_from_string_list_and_toml() {
        let s: MixerStack = "softmax,linear:elu1".parse().unwrap();
        assert_eq!(s.0.len(), 2);
        assert_eq!(s.to_string(), "softmax,linear:elu1");
        assert!(s.for_layer(1, 2).is_ok());
        assert!(s.for_layer(0, 3).unwrap_err().contains("one per layer"));

        #[derive(serde::Deserialize)]
        struct Wrap {
            mixer: MixerStack,
        }
        let w: Wrap = toml::from_str("mixer = [\"softmax\", \"linear:taylor\"]").unwrap();
        assert_eq!(w.mixer.to_string(), "softmax,linear:taylor");
        let w: Wrap = toml::from_str("mixer = \"sigmoid\"").unwrap();
        assert_eq!(w.mixer.0.len(), 1);
        assert!(toml::from_str::<Wrap>("mixer = \"softmax:bogus\"").is_err());
    }

    #[test]
    fn catalogue_lists_every_family() {
        let cat = MixerSpec::catalogue();
        for fam in MixerSpec::FAMILIES {
            assert!(cat.iter().any(|v| v.spec.starts_with(fam)), "{fam}");
        }
        for v in &cat {
            v.spec.parse::<MixerSpec>().unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
