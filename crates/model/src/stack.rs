//! The mixers of a whole stack: one [`MixerSpec`] for every layer, or one per layer (hybrids
//! such as three linear layers to one softmax).

use crate::families::MixerSpec;
use crate::mixer::SpecError;
use std::fmt;
use std::str::FromStr;

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

    /// One spec per layer, written as one spec when every layer has the same (as configs write
    /// a uniform stack).
    pub fn per_layer(specs: Vec<MixerSpec>) -> Self {
        match specs.first() {
            Some(first) if specs.iter().all(|s| s == first) => Self::uniform(first.clone()),
            _ => Self(specs),
        }
    }

    /// This stack of `n_layers` with the layers in `layers` replaced by `to`.
    pub fn replacing(
        &self,
        n_layers: usize,
        layers: &[usize],
        to: &MixerSpec,
    ) -> Result<Self, StackLengthError> {
        let specs = (0..n_layers)
            .map(|l| {
                if layers.contains(&l) {
                    Ok(to.clone())
                } else {
                    self.for_layer(l, n_layers).cloned()
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::per_layer(specs))
    }

    /// The spec of layer `layer` in a stack of `n_layers`, or an error when the list length is
    /// neither 1 nor `n_layers`.
    pub fn for_layer(&self, layer: usize, n_layers: usize) -> Result<&MixerSpec, StackLengthError> {
        match self.0.len() {
            1 => Ok(&self.0[0]),
            n if n == n_layers => Ok(&self.0[layer]),
            specs => Err(StackLengthError { specs, n_layers }),
        }
    }
}

/// A per-layer `model.mixer` list whose length is neither 1 nor `model.n_layers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "model.mixer lists {specs} specs but model.n_layers is {n_layers}: give one spec \
     for all layers or exactly one per layer"
)]
pub struct StackLengthError {
    pub specs: usize,
    pub n_layers: usize,
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
        if self.0.len() == 1 { self.0[0].serialize(s) } else { self.0.serialize(s) }
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
            return Err(serde::de::Error::custom(
                "model.mixer: empty list; name at least one spec",
            ));
        }
        let parsed = specs.iter().map(|s| s.parse()).collect::<Result<Vec<MixerSpec>, _>>();
        parsed.map(MixerStack).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_parse_from_string_list_and_toml() {
        let s: MixerStack = "softmax,linear:elu1".parse().unwrap();
        assert_eq!(s.0.len(), 2);
        assert_eq!(s.to_string(), "softmax,linear:elu1");
        assert!(s.for_layer(1, 2).is_ok());
        assert!(s.for_layer(0, 3).unwrap_err().to_string().contains("one per layer"));

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
}
