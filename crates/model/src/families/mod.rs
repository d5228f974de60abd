//! The registry: every attention family, one file each, listed once.
//!
//! Adding a family is its file (a config implementing [`MixerFamily`], a module implementing
//! [`SequenceMixer`], its naive oracle and tests) plus two lines here: its `pub mod` and its
//! line in the `families!` list. Nothing else in the crate names a family: the model asks
//! [`MixerSpec`] and [`Mixer`], which ask the family through [`MixerFamily`].
//!
//! `families!` writes only the enumeration: the [`MixerSpec`] and [`Mixer`] enums (one variant
//! per line below, e.g. `MixerSpec::Softmax(SoftmaxAttentionConfig)` and
//! `Mixer::Softmax(SoftmaxAttention)`), their `From` impls, one `match` each that hands out the
//! family behind a variant as a trait object, and a module's family name. Everything a spec or
//! a mixer does is plain code below the list, written once for all families.

pub mod decay;
pub mod delta;
pub mod diff;
pub mod linear;
pub mod mla;
pub mod moba;
pub mod nsa;
pub mod path;
pub mod rwkv7;
pub mod sigmoid;
pub mod softmax;
pub mod stickbreak;

use crate::mixer::{
    Convention, MixContext, MixOutput, MixerDescription, MixerDims, MixerError, MixerFamily,
    MixerState, SequenceMixer, SpecError, VariantInfo,
};
use burn::module::Module;
use burn::nn::RotaryEncoding;
use burn::tensor::{Device, Tensor};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Generates the two enums over the listed families; see the module docs for what it writes.
macro_rules! families {
    ($( $variant:ident($config:ty) ),* $(,)?) => {
        /// A parsed attention spec: which family, and that family's options.
        #[derive(Clone, Debug, PartialEq)]
        pub enum MixerSpec { $( $variant($config), )* }

        /// The run-time selected mixer: one concrete module type for any family (its variant
        /// name is part of every parameter's path in checkpoints and exports).
        // Held once per layer and never moved in a hot loop, so a family with many parameters
        // (RWKV-7, MLA) may be larger than the rest; Burn has no `Module` for `Box` to even them out.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum Mixer { $( $variant(<$config as MixerFamily>::Module), )* }

        $(
            impl From<$config> for MixerSpec {
                fn from(config: $config) -> Self { Self::$variant(config) }
            }
            impl From<<$config as MixerFamily>::Module> for Mixer {
                fn from(module: <$config as MixerFamily>::Module) -> Self { Self::$variant(module) }
            }
        )*

        /// Parser and catalogue of every family, in listing order.
        const FAMILY_TABLE: &[FamilyEntry] = &[
            $( FamilyEntry {
                name: <$config as MixerFamily>::NAME,
                module: stringify!($variant),
                syntax: <$config as MixerFamily>::SYNTAX,
                parse: parse_as::<$config>,
                catalogue: <$config as MixerFamily>::catalogue,
                info: family_info::<$config>,
            }, )*
        ];

        impl MixerSpec {
            /// The name in parameter paths (`Softmax`, `StickBreak`, ...).
            pub fn module_name(&self) -> &'static str {
                match self { $( Self::$variant(_) => stringify!($variant), )* }
            }

            fn family_config(&self) -> &dyn ErasedFamily {
                match self { $( Self::$variant(config) => config, )* }
            }
        }

        impl Mixer {
            fn module(&self) -> &dyn ErasedMixer {
                match self { $( Self::$variant(module) => module, )* }
            }

            /// The family name of this module ("softmax", "linear", ...).
            pub fn family(&self) -> &'static str {
                match self { $( Self::$variant(_) => <$config as MixerFamily>::NAME, )* }
            }
        }
    };
}

families! {
    Softmax(softmax::SoftmaxAttentionConfig),
    Sigmoid(sigmoid::SigmoidAttentionConfig),
    Linear(linear::LinearAttentionConfig),
    Decay(decay::DecayAttentionConfig),
    Delta(delta::DeltaAttentionConfig),
    StickBreak(stickbreak::StickBreakingAttentionConfig),
    Diff(diff::DiffAttentionConfig),
    Mla(mla::MlaAttentionConfig),
    Moba(moba::MobaAttentionConfig),
    Nsa(nsa::NsaAttentionConfig),
    Rwkv7(rwkv7::Rwkv7AttentionConfig),
    Path(path::PathAttentionConfig),
}

struct FamilyEntry {
    name: &'static str,
    module: &'static str,
    syntax: &'static str,
    parse: fn(&[&str], &str) -> Result<MixerSpec, SpecError>,
    catalogue: fn() -> Vec<VariantInfo>,
    info: fn(&'static str, &'static str) -> FamilyInfo,
}

/// A family as the registry declares it: name, grammar, the choices of its positional part,
/// every option with its default, its conventions and its catalogue. `attnlab variants --json`
/// writes the list; `python/attnlab_torch/registry.json` is that file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FamilyInfo {
    pub name: &'static str,
    /// The name in parameter paths: `blocks.<i>.mixer.<module>.…`.
    pub module: &'static str,
    pub syntax: &'static str,
    pub variants: Vec<&'static str>,
    pub variant_required: bool,
    /// What leaving the positional part out means (`sqrt_d` for softmax), when it may be.
    pub default_variant: Option<&'static str>,
    /// The specs `attnlab bench` times by default.
    pub bench: &'static [&'static str],
    /// Every option with its default.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// The default config's conventions.
    pub conventions: BTreeMap<String, Convention>,
    /// The conventions a boolean option changes (delta's `beta_range` under `neg_eigval`), so
    /// a reader that parses spec strings resolves them without a table of its own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub convention_rules: BTreeMap<String, Vec<ConventionRule>>,
    /// The values a word-valued option takes (`norm`: `none`, `sum`): its default and the
    /// alternatives the family's grammar names, read off [`FamilyInfo::syntax`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub choices: BTreeMap<String, Vec<String>>,
    pub catalogue: Vec<VariantInfo>,
}

/// [`FamilyInfo::choices`]: for each word-valued option, its default, then each alternative
/// `[:key=a|b]` in `syntax` spells out (a placeholder such as `<feature map>` lists none).
fn choices_of(
    syntax: &str,
    options: &serde_json::Map<String, serde_json::Value>,
) -> BTreeMap<String, Vec<String>> {
    let mut choices = BTreeMap::new();
    for (key, default) in options {
        let Some(default) = default.as_str() else { continue };
        let Some(at) = syntax.find(&format!(":{key}=")) else { continue };
        let listed = &syntax[at + key.len() + 2..];
        let listed = &listed[..listed.find(']').unwrap_or(listed.len())];
        if listed.starts_with('<') {
            continue;
        }
        let mut values = vec![default.to_string()];
        values.extend(listed.split('|').filter(|v| *v != default).map(str::to_string));
        choices.insert(key.clone(), values);
    }
    choices
}

/// A convention's value when the options in `when` have those values.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConventionRule {
    pub when: serde_json::Map<String, serde_json::Value>,
    pub value: serde_json::Value,
}

/// [`FamilyInfo::convention_rules`], found by parsing the family's spec with each boolean
/// option flipped and keeping the conventions that differ: derived, never listed by hand.
fn convention_rules<C: MixerFamily>() -> BTreeMap<String, Vec<ConventionRule>> {
    // A family whose variant must be given is compared within its first variant.
    let variant: Vec<&str> = if C::VARIANT_REQUIRED { C::variants()[..1].to_vec() } else { vec![] };
    let base = C::parse(&variant, C::NAME).unwrap_or_default();
    let before: BTreeMap<&str, Convention> = base.conventions().into_iter().collect();
    let mut rules: BTreeMap<String, Vec<ConventionRule>> = BTreeMap::new();
    for (key, value) in options_of(&base) {
        let Some(on) = value.as_bool() else { continue };
        let option = format!("{key}={}", !on);
        let parts: Vec<&str> = variant.iter().copied().chain([option.as_str()]).collect();
        let Ok(flipped) = C::parse(&parts, &option) else { continue };
        for (name, convention) in flipped.conventions() {
            if before.get(name).is_some_and(|c| c.value != convention.value) {
                rules.entry(name.to_string()).or_default().push(ConventionRule {
                    when: serde_json::Map::from_iter([(key.clone(), (!on).into())]),
                    value: convention.value,
                });
            }
        }
    }
    rules
}

fn family_info<C: MixerFamily>(name: &'static str, module: &'static str) -> FamilyInfo {
    let default = C::default();
    FamilyInfo {
        name,
        module,
        syntax: C::SYNTAX,
        variants: C::variants(),
        variant_required: C::VARIANT_REQUIRED,
        default_variant: if C::VARIANT_REQUIRED { None } else { default.variant() },
        bench: C::BENCH,
        options: options_of(&default),
        conventions: default.conventions().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        convention_rules: convention_rules::<C>(),
        choices: choices_of(C::SYNTAX, &options_of(&default)),
        catalogue: C::catalogue(),
    }
}

/// A config's options as a JSON object (the positional part is not an option).
fn options_of<C: serde::Serialize>(config: &C) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(config) {
        Ok(serde_json::Value::Object(map)) => map,
        other => panic!("a family's options serialise to a table, got {other:?}"),
    }
}

fn parse_as<C: MixerFamily>(parts: &[&str], spec: &str) -> Result<MixerSpec, SpecError>
where
    MixerSpec: From<C>,
{
    C::parse(parts, spec).map(MixerSpec::from)
}

/// [`MixerFamily`] without its associated types, so one `&dyn` serves every family.
trait ErasedFamily {
    fn name(&self) -> &'static str;
    fn options(&self) -> String;
    fn validate(&self, dims: &MixerDims) -> Result<(), MixerError>;
    fn needs_rope(&self) -> bool;
    fn qk_width(&self, dims: &MixerDims) -> usize;
    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize;
    fn init(&self, dims: &MixerDims, device: &Device) -> Mixer;
    /// The description but for `spec` and `module` (the registry's enum knows them) and
    /// `parameters` (the exporter's).
    fn describe(&self, dims: &MixerDims) -> MixerDescription;
}

impl<C: MixerFamily> ErasedFamily for C
where
    Mixer: From<C::Module>,
{
    fn name(&self) -> &'static str {
        C::NAME
    }
    fn options(&self) -> String {
        self.to_string()
    }
    fn validate(&self, dims: &MixerDims) -> Result<(), MixerError> {
        MixerFamily::validate(self, dims)
    }
    fn needs_rope(&self) -> bool {
        MixerFamily::needs_rope(self)
    }
    fn qk_width(&self, dims: &MixerDims) -> usize {
        MixerFamily::qk_width(self, dims)
    }
    fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        MixerFamily::decode_state_floats(self, dims, seq_len)
    }
    fn init(&self, dims: &MixerDims, device: &Device) -> Mixer {
        MixerFamily::init(self, dims, device).into()
    }
    fn describe(&self, dims: &MixerDims) -> MixerDescription {
        MixerDescription {
            spec: String::new(),
            family: C::NAME.to_string(),
            module: String::new(),
            variant: self.variant().map(String::from),
            options: options_of(self),
            qk_width: MixerFamily::qk_width(self, dims),
            conventions: self.conventions().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            parameters: BTreeMap::new(),
        }
    }
}

/// [`SequenceMixer`] with its state behind [`MixerState`], so one `&dyn` serves every family.
trait ErasedMixer {
    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput;
    fn empty_state(&self) -> MixerState;
    fn step(
        &self,
        x: Tensor<3>,
        state: &mut MixerState,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3>;
}

impl<M: SequenceMixer> ErasedMixer for M
where
    M::State: 'static,
{
    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        SequenceMixer::forward(self, x, ctx)
    }
    fn empty_state(&self) -> MixerState {
        MixerState::new(SequenceMixer::empty_state(self))
    }
    fn step(
        &self,
        x: Tensor<3>,
        state: &mut MixerState,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        SequenceMixer::step(self, x, state.downcast_mut::<M::State>(), rope)
    }
}

impl MixerSpec {
    /// Family names, in listing order.
    pub fn families() -> impl Iterator<Item = &'static str> {
        FAMILY_TABLE.iter().map(|f| f.name)
    }

    /// The family name ("softmax", "linear", ...).
    pub fn family(&self) -> &'static str {
        self.family_config().name()
    }

    pub fn validate(&self, dims: &MixerDims) -> Result<(), MixerError> {
        self.family_config().validate(dims)
    }

    /// Whether the layer needs `model.positions = "rope"` (see [`MixerFamily::needs_rope`]).
    pub fn needs_rope(&self) -> bool {
        self.family_config().needs_rope()
    }

    /// Per-head query/key width (what RoPE rotates).
    pub fn qk_width(&self, dims: &MixerDims) -> usize {
        self.family_config().qk_width(dims)
    }

    /// Floats one sequence's decoding state holds in this layer after `seq_len` tokens.
    pub fn decode_state_floats(&self, dims: &MixerDims, seq_len: usize) -> usize {
        self.family_config().decode_state_floats(dims, seq_len)
    }

    pub fn init(&self, dims: &MixerDims, device: &Device) -> Mixer {
        self.family_config().init(dims, device)
    }

    /// Each family's spec grammar, in listing order.
    pub fn syntax() -> impl Iterator<Item = &'static str> {
        FAMILY_TABLE.iter().map(|f| f.syntax)
    }

    /// Every variant with its formula, for `attnlab variants` and docs/architecture.md.
    pub fn catalogue() -> Vec<VariantInfo> {
        FAMILY_TABLE.iter().flat_map(|f| (f.catalogue)()).collect()
    }

    /// What `attnlab bench` times by default: each family's representative, in listing order.
    pub fn bench_specs() -> Vec<&'static str> {
        Self::registry().iter().flat_map(|f| f.bench.iter().copied()).collect()
    }

    /// Every family as the registry declares it, in listing order.
    pub fn registry() -> Vec<FamilyInfo> {
        FAMILY_TABLE.iter().map(|f| (f.info)(f.name, f.module)).collect()
    }

    /// `attnlab variants --json`: the registry, pretty-printed so the checked-in copy
    /// (`python/attnlab_torch/registry.json`) diffs well.
    pub fn registry_json() -> String {
        serde_json::to_string_pretty(&serde_json::json!({
            "generated_by": "attnlab variants --json",
            "families": Self::registry(),
        }))
        .expect("the registry serialises")
    }

    /// The variants and families as markdown tables, for docs/architecture.md (a test keeps
    /// the file's copy current).
    pub fn catalogue_markdown() -> String {
        let cell = |s: &str| s.replace('|', "\\|");
        let mut out = String::from("| spec | formula |\n|---|---|\n");
        for v in Self::catalogue() {
            out += &format!("| `{}` | {} |\n", v.spec, cell(v.formula));
        }
        out += "\n| family | grammar | options (default) | parameters under |\n|---|---|---|---|\n";
        for f in Self::registry() {
            let options: Vec<String> =
                f.options.iter().map(|(k, v)| format!("`{k}` ({v})")).collect();
            let options = if options.is_empty() { "none".to_string() } else { options.join(", ") };
            out += &format!(
                "| {} | `{}` | {} | `mixer.{}.` |\n",
                f.name,
                cell(f.syntax),
                cell(&options),
                f.module
            );
        }
        out
    }

    /// This layer's mixer fully resolved (see [`MixerDescription`]); `parameters` is left for
    /// the exporter to fill.
    pub fn describe(&self, dims: &MixerDims) -> MixerDescription {
        MixerDescription {
            spec: self.to_string(),
            module: self.module_name().to_string(),
            ..self.family_config().describe(dims)
        }
    }
}

impl SequenceMixer for Mixer {
    type State = MixerState;

    fn forward(&self, x: Tensor<3>, ctx: MixContext<'_>) -> MixOutput {
        self.module().forward(x, ctx)
    }

    fn empty_state(&self) -> MixerState {
        self.module().empty_state()
    }

    fn step(
        &self,
        x: Tensor<3>,
        state: &mut MixerState,
        rope: Option<&RotaryEncoding>,
    ) -> Tensor<3> {
        self.module().step(x, state, rope)
    }
}

impl fmt::Display for MixerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = self.family_config().options();
        if options.is_empty() {
            f.write_str(self.family())
        } else {
            write!(f, "{}:{options}", self.family())
        }
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
        match FAMILY_TABLE.iter().find(|f| f.name == family) {
            Some(entry) => (entry.parse)(&rest, spec),
            None => {
                let names: Vec<_> = Self::families().collect();
                Err(SpecError::new(
                    spec,
                    format!("unknown family '{family}', expected one of: {}", names.join(", ")),
                ))
            }
        }
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

#[cfg(test)]
mod tests;
