//! A family's `key=value` spec options, read into and printed from the family's own serde
//! struct. A family declares its options as fields (defaults from `Default`, names and enum
//! values from serde attributes) instead of hand-writing a parser and a printer; the messages
//! for an unknown key, a bad number or a bad choice come out the same for every family.
//!
//! Printing is canonical: keys in alphabetical order, values equal to the default left out, so
//! `linear:elu1:form=chunked:chunk=64` prints as `linear:elu1`.

use crate::mixer::SpecError;
use serde::Serialize;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use std::fmt;

/// Reads `key=value` parts into `T`; keys not given keep `T::default()`'s values (`T` needs
/// `#[serde(default)]`). `spec` is the whole spec string, for the message.
pub fn parse_options<T: DeserializeOwned>(parts: &[&str], spec: &str) -> Result<T, SpecError> {
    let mut pairs: Vec<(&str, OptionValue<'_>)> = Vec::with_capacity(parts.len());
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| SpecError::new(spec, format!("expected key=value, found '{part}'")))?;
        if pairs.iter().any(|(seen, _)| *seen == key) {
            return Err(SpecError::new(spec, format!("option '{key}' is given twice")));
        }
        pairs.push((key, OptionValue { key, value }));
    }
    let map = de::value::MapDeserializer::<_, OptionError>::new(pairs.into_iter());
    T::deserialize(map).map_err(|e| SpecError::new(spec, e.0))
}

/// `T`'s options that differ from `T::default()`, as `key=value` joined by `:` (empty when all
/// are defaults).
///
/// # Panics
/// When `T` does not serialise to a flat table of numbers, strings and booleans (a family's
/// option struct always does; its round-trip test would fail first).
pub fn print_options<T: Serialize + Default>(options: &T) -> String {
    let table = |t: &T| match toml::Value::try_from(t).expect("spec options serialise to a table") {
        toml::Value::Table(table) => table,
        other => panic!("spec options must serialise to a table, got {other}"),
    };
    let (mine, default) = (table(options), table(&T::default()));
    let changed = mine.iter().filter(|(key, value)| default.get(*key) != Some(*value));
    changed.map(|(key, value)| format!("{key}={}", plain(value))).collect::<Vec<_>>().join(":")
}

/// Splits `parts` into the positional choice that comes first (`linear:<map>`, `decay:<gate>`),
/// found among `choices` by `name`, and the `key=value` options after it. `what` names the
/// choice in messages ("feature map", "gate").
pub fn split_choice<'p, 's, T: Copy>(
    parts: &'p [&'s str],
    family: &str,
    what: &str,
    choices: &[T],
    name: impl Fn(T) -> &'static str,
    spec: &str,
) -> Result<(T, &'p [&'s str]), SpecError> {
    let names: Vec<_> = choices.iter().map(|&c| name(c)).collect();
    let Some((first, options)) = parts.split_first() else {
        return Err(SpecError::new(
            spec,
            format!("{family} needs a {what}: {family}:<{}>", names.join("|")),
        ));
    };
    let choice = choices.iter().copied().find(|&c| name(c) == *first).ok_or_else(|| {
        SpecError::new(
            spec,
            format!("unknown {what} '{first}', expected one of: {}", names.join(", ")),
        )
    })?;
    Ok((choice, options))
}

/// Writes `head` (the positional part) followed by the non-default options, as `head:k=v:...`.
pub fn write_with_options<T: Serialize + Default>(
    f: &mut fmt::Formatter<'_>,
    head: &str,
    options: &T,
) -> fmt::Result {
    f.write_str(head)?;
    let options = print_options(options);
    if options.is_empty() { Ok(()) } else { write!(f, ":{options}") }
}

/// A value as the user would type it: strings unquoted, floats in their shortest form.
fn plain(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(x) => x.to_string(),
        other => other.to_string(),
    }
}

/// One option's value, still text: numbers, booleans and choices are parsed as the field's
/// type asks, so the message can name the key.
struct OptionValue<'a> {
    key: &'a str,
    value: &'a str,
}

#[derive(Debug)]
struct OptionError(String);

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OptionError {}

impl de::Error for OptionError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        // serde says "unknown field `x`, expected one of ..."; spec options are "options".
        Self(
            msg.to_string()
                .replace("unknown field", "unknown option")
                .replace("unknown variant", "unknown value"),
        )
    }
}

impl<'de> IntoDeserializer<'de, OptionError> for OptionValue<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> OptionValue<'de> {
    fn number<T: std::str::FromStr>(&self) -> Result<T, OptionError> {
        self.value.parse().map_err(|_| {
            OptionError(format!("'{}' needs a number, found '{}'", self.key, self.value))
        })
    }
}

macro_rules! parse_as_number {
    ($($method:ident => $ty:ty, $visit:ident;)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
            visitor.$visit(self.number::<$ty>()?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for OptionValue<'de> {
    type Error = OptionError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        visitor.visit_borrowed_str(self.value)
    }

    parse_as_number! {
        deserialize_u8 => u8, visit_u8;
        deserialize_u16 => u16, visit_u16;
        deserialize_u32 => u32, visit_u32;
        deserialize_u64 => u64, visit_u64;
        deserialize_i8 => i8, visit_i8;
        deserialize_i16 => i16, visit_i16;
        deserialize_i32 => i32, visit_i32;
        deserialize_i64 => i64, visit_i64;
        deserialize_f32 => f32, visit_f32;
        deserialize_f64 => f64, visit_f64;
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        match self.value {
            "true" | "on" => visitor.visit_bool(true),
            "false" | "off" => visitor.visit_bool(false),
            v => Err(OptionError(format!("'{}' is true or false, found '{v}'", self.key))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        visitor.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, OptionError> {
        let key = self.key;
        de::value::BorrowedStrDeserializer::<OptionError>::new(self.value)
            .deserialize_enum(name, variants, visitor)
            .map_err(|e| OptionError(format!("'{key}': {e}")))
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Example {
        width: usize,
        bias: Option<f64>,
        gate: bool,
        mode: Mode,
    }

    #[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Exact,
    }

    impl Default for Example {
        fn default() -> Self {
            Self { width: 4, bias: None, gate: true, mode: Mode::Fast }
        }
    }

    #[test]
    fn options_round_trip_and_defaults_are_left_out() {
        let parsed: Example = parse_options(&["mode=exact", "bias=-4", "width=4"], "x").unwrap();
        assert_eq!(parsed, Example { bias: Some(-4.0), mode: Mode::Exact, ..Example::default() });
        assert_eq!(print_options(&parsed), "bias=-4:mode=exact");
        assert_eq!(print_options(&Example::default()), "");
        let off: Example = parse_options(&["gate=off", "bias=0.25"], "x").unwrap();
        assert_eq!(print_options(&off), "bias=0.25:gate=false");
        assert_eq!(parse_options::<Example>(&["gate=false", "bias=0.25"], "x").unwrap(), off);
    }

    #[test]
    fn bad_options_name_the_key_and_the_choices() {
        let cases = [
            (
                &["colour=red"][..],
                "unknown option `colour`, expected one of `width`, `bias`, `gate`, `mode`",
            ),
            (&["width=x"][..], "'width' needs a number, found 'x'"),
            (&["width=-1"][..], "'width' needs a number, found '-1'"),
            (&["mode=slow"][..], "'mode': unknown value `slow`, expected `fast` or `exact`"),
            (&["gate=maybe"][..], "'gate' is true or false, found 'maybe'"),
            (&["width"][..], "expected key=value, found 'width'"),
            (&["width=2", "width=3"][..], "option 'width' is given twice"),
        ];
        for (parts, needle) in cases {
            let err = parse_options::<Example>(parts, "fam:x").unwrap_err().to_string();
            assert!(err.contains(needle), "{parts:?}: {err}");
        }
    }
}
