//! Recall probes written as text, for language models of any vocabulary: what a linearised
//! student loses first (Deng et al. 2023, arXiv 2310.11685; Arora et al. 2023, "Zoology",
//! arXiv 2312.04927), measured through the run's own codec at a chosen number of tokens.
//!
//! - **passkey**: a short key hidden in filler (" the key is kqzv.") and asked for at the end
//!   (" ... the key is kqzv"); the filler before and after the key is cut to reach the length,
//!   the key at a random depth.
//! - **key-value**: multi-query associative recall (MQAR) as text: pairs " kx 4, jm 9, ..."
//!   then " recall:" and every key again with its value, in another order. Longer probes hold
//!   more pairs, so they ask a fixed-size state to remember more.
//!
//! Each probe is a token [`Batch`] whose mask scores only the answer tokens (those that are not
//! whitespace), so the task's accuracy is the fraction of answer tokens predicted (argmax,
//! teacher-forced) and its loss their mean negative log-likelihood. Words are encoded one at a
//! time and joined; every word after the first starts with its space, which is where BPE
//! pre-tokenizers split anyway. Answer symbols are the digits when the codec writes each as
//! one token, else lowercase letters (a character vocabulary without digits).

use crate::seed;
use crate::task::{Batch, Codec, Target};
use attnlab_model::LmInput;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::RngExt;
use rand::rngs::StdRng;

const FILLER: &str =
    " the grass is green. the sky is blue. the sun is warm. here we go. there and back again.";
const KEY_SYMBOLS: usize = 4;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Probe {
    Passkey,
    KeyValue,
}

impl Probe {
    pub const ALL: [Probe; 2] = [Probe::Passkey, Probe::KeyValue];
    pub fn name(self) -> &'static str {
        match self {
            Probe::Passkey => "passkey",
            Probe::KeyValue => "key-value",
        }
    }
}

/// Why a probe cannot be written at a length or in a vocabulary.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProbeError {
    #[error("the run's codec cannot write {text:?} ({reason})")]
    Unwritable { text: String, reason: String },
    #[error("{probe} needs at least {need} tokens, the probe length is {len}")]
    TooShort { probe: &'static str, need: usize, len: usize },
}

/// The vocabulary the probes are written in.
struct Words<'a> {
    codec: &'a dyn Codec,
    filler: Vec<u32>,
    /// Answer symbols, each one token.
    symbols: Vec<char>,
}

impl<'a> Words<'a> {
    fn new(codec: &'a dyn Codec) -> Result<Self, ProbeError> {
        let single = |c: char| codec.encode(&c.to_string()).is_ok_and(|t| t.len() == 1);
        let digits: Vec<char> = ('0'..='9').collect();
        let symbols = if digits.iter().all(|&c| single(c)) {
            digits
        } else {
            ('a'..='z').filter(|&c| single(c)).collect()
        };
        if symbols.len() < 8 {
            return Err(ProbeError::Unwritable {
                text: "0-9 or a-z".into(),
                reason: "fewer than 8 of them are single tokens".into(),
            });
        }
        let words = Self { codec, filler: Vec::new(), symbols };
        let filler = words.encode(FILLER)?;
        Ok(Self { filler, ..words })
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ProbeError> {
        self.codec.encode(text).map_err(|e| ProbeError::Unwritable {
            text: text.to_string(),
            reason: crate::message::one_line(&e.to_string()),
        })
    }

    /// `n` filler tokens: the filler text repeated, cut to length.
    fn filler(&self, n: usize) -> Vec<u32> {
        self.filler.iter().copied().cycle().take(n).collect()
    }

    fn symbol_string(&self, rng: &mut StdRng, n: usize) -> String {
        (0..n).map(|_| self.symbols[rng.random_range(0..self.symbols.len())]).collect()
    }

    fn is_blank(&self, token: u32) -> bool {
        self.codec.decode(&[token]).trim().is_empty()
    }
}

/// One example: `len + 1` tokens and the positions (of the `len` inputs) whose next token is
/// scored.
struct Example {
    tokens: Vec<u32>,
    scored: Vec<bool>,
}

/// Tokens and scoring mask built piece by piece.
#[derive(Default)]
struct Builder {
    tokens: Vec<u32>,
    answer: Vec<bool>,
}

impl Builder {
    fn push(&mut self, ids: &[u32], answer: bool) {
        self.tokens.extend_from_slice(ids);
        self.answer.extend(std::iter::repeat_n(answer, ids.len()));
    }
    /// As inputs/targets: position i is scored when token i+1 is an answer token.
    fn finish(self) -> Example {
        let scored = self.answer[1..].to_vec();
        Example { tokens: self.tokens, scored }
    }
}

fn passkey(w: &Words, rng: &mut StdRng, len: usize) -> Result<Example, ProbeError> {
    let key = w.symbol_string(rng, KEY_SYMBOLS);
    let statement = w.encode(&format!(" the key is {key}. remember it."))?;
    let question = w.encode(" what is the key? the key is")?;
    let answer = w.encode(&format!(" {key}"))?;
    let fixed = statement.len() + question.len() + answer.len();
    let need = fixed + 1;
    if len + 1 < need {
        return Err(ProbeError::TooShort { probe: "passkey", need, len });
    }
    let filler = len + 1 - fixed;
    let before = rng.random_range(0..=filler);
    let mut b = Builder::default();
    b.push(&w.filler(before), false);
    b.push(&statement, false);
    b.push(&w.filler(filler - before), false);
    b.push(&question, false);
    let marks: Vec<bool> = answer.iter().map(|&t| !w.is_blank(t)).collect();
    for (t, m) in answer.iter().zip(marks) {
        b.push(&[*t], m);
    }
    Ok(b.finish())
}

fn key_value(w: &Words, rng: &mut StdRng, len: usize) -> Result<Example, ProbeError> {
    // Two-letter keys, all distinct; one-symbol values; each pair written twice (stated, then
    // recalled), so it costs twice its tokens.
    let recall = w.encode(" recall:")?;
    let comma = w.encode(",")?;
    let mut keys = std::collections::BTreeSet::new();
    let mut pairs: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
    let mut total = recall.len();
    while keys.len() < 26 * 26 {
        let key: String = (0..2).map(|_| (b'a' + rng.random_range(0..26u8)) as char).collect();
        if !keys.insert(key.clone()) {
            continue;
        }
        let value = w.symbol_string(rng, 1);
        let (k, v) = (w.encode(&format!(" {key}"))?, w.encode(&format!(" {value}"))?);
        let cost = 2 * (k.len() + v.len() + comma.len());
        if total + cost > len + 1 {
            break;
        }
        total += cost;
        pairs.push((k, v));
    }
    if pairs.len() < 2 {
        let per_pair = 2 * (w.encode(" kx")?.len() + w.encode(" 4")?.len() + comma.len());
        let need = recall.len() + 2 * per_pair;
        return Err(ProbeError::TooShort { probe: "key-value", need, len });
    }
    let mut b = Builder::default();
    b.push(&w.filler(len + 1 - total), false);
    for (k, v) in &pairs {
        b.push(k, false);
        b.push(v, false);
        b.push(&comma, false);
    }
    b.push(&recall, false);
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    for i in order {
        let (k, v) = &pairs[i];
        b.push(k, false);
        for &t in v {
            b.push(&[t], !w.is_blank(t));
        }
        b.push(&comma, false);
    }
    Ok(b.finish())
}

/// `examples` probes of `len` input tokens, in batches of `batch_size`, repeatable from
/// (`seed`, probe, `len`).
pub fn probe_batches(
    codec: &dyn Codec,
    probe: Probe,
    len: usize,
    examples: usize,
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<Batch>, ProbeError> {
    let words = Words::new(codec)?;
    let mut rng = seed::rng(seed, &format!("probe-{}", probe.name()), len as u64);
    let all = (0..examples)
        .map(|_| match probe {
            Probe::Passkey => passkey(&words, &mut rng, len),
            Probe::KeyValue => key_value(&words, &mut rng, len),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(all.chunks(batch_size.max(1)).map(|chunk| batch(chunk, len, device)).collect())
}

fn batch(examples: &[Example], len: usize, device: &Device) -> Batch {
    let b = examples.len();
    let ids = |range: std::ops::Range<usize>| {
        let v: Vec<i64> = examples
            .iter()
            .flat_map(|e| e.tokens[range.clone()].iter().map(|&t| t as i64))
            .collect();
        Tensor::<2, Int>::from_data(TensorData::new(v, [b, len]), device)
    };
    let mask: Vec<f32> =
        examples.iter().flat_map(|e| e.scored.iter().map(|&s| f32::from(u8::from(s)))).collect();
    Batch {
        input: LmInput::Tokens(ids(0..len)),
        target: Target::Tokens {
            ids: ids(1..len + 1),
            mask: Some(Tensor::<2>::from_data(TensorData::new(mask, [b, len]), device)),
        },
        tokens: b * len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::char_lm::CharCodec;

    fn codec(text: &str) -> CharCodec {
        CharCodec::from_text(text)
    }

    /// Each example as (its text, the answer characters its mask scores, in order).
    fn examples(codec: &CharCodec, probe: Probe, len: usize) -> Vec<(String, String)> {
        let d = Device::flex();
        let batches = probe_batches(codec, probe, len, 6, 4, 7, &d).unwrap();
        let mut out = Vec::new();
        for b in batches {
            let LmInput::Tokens(input) = &b.input else { panic!("tokens") };
            let Target::Tokens { ids, mask: Some(mask) } = &b.target else { panic!("masked") };
            let [n, t] = input.dims();
            assert_eq!(t, len, "every example has exactly the probe length");
            let inp: Vec<i64> = input.to_data().convert::<i64>().try_into_vec().unwrap();
            let tgt: Vec<i64> = ids.to_data().convert::<i64>().try_into_vec().unwrap();
            let m: Vec<f32> = mask.to_data().try_into_vec().unwrap();
            for e in 0..n {
                let row =
                    |v: &[i64]| v[e * t..(e + 1) * t].iter().map(|&x| x as u32).collect::<Vec<_>>();
                let (i, o) = (row(&inp), row(&tgt));
                assert_eq!(i[1..], o[..t - 1], "targets are the inputs shifted by one");
                let mut text = codec.decode(&i);
                text.push_str(&codec.decode(&o[t - 1..]));
                let answer: Vec<u32> =
                    (0..t).filter(|&p| m[e * t + p] == 1.0).map(|p| o[p]).collect();
                out.push((text, codec.decode(&answer)));
            }
        }
        out
    }

    const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz .,:?";

    /// The scored tokens are the key, and the key is stated earlier in the same text: a model
    /// that recalls it scores 1, and nothing else is scored.
    #[test]
    fn passkey_scores_exactly_the_key_stated_earlier() {
        let c = codec(ALPHABET);
        for (text, answer) in examples(&c, Probe::Passkey, 120) {
            assert_eq!(answer.len(), KEY_SYMBOLS, "{text:?}");
            assert!(answer.chars().all(|ch| ch.is_ascii_lowercase()), "no digits: letters");
            assert!(text.ends_with(&format!("the key is {answer}")), "{text:?}");
            assert!(text.contains(&format!("the key is {answer}. remember it.")), "{text:?}");
        }
    }

    /// Every scored token is the value the same key got among the stated pairs, each key is
    /// recalled once, and with digits in the vocabulary the values are digits.
    #[test]
    fn key_value_scores_each_keys_stated_value() {
        let c = codec(&format!("{ALPHABET}0123456789"));
        let all = examples(&c, Probe::KeyValue, 200);
        for (text, answer) in &all {
            let (stated, recalled) = text.split_once(" recall:").unwrap();
            let pairs = |s: &str| -> Vec<(String, String)> {
                s.split(',')
                    .filter_map(|p| {
                        let mut w = p.split_whitespace().rev();
                        let v = w.next()?;
                        let k = w.next()?;
                        (k.len() == 2 && v.len() == 1).then(|| (k.to_string(), v.to_string()))
                    })
                    .collect()
            };
            let stated: std::collections::BTreeMap<_, _> = pairs(stated).into_iter().collect();
            let recalled = pairs(recalled);
            assert!(recalled.len() >= 2 && recalled.len() == stated.len(), "{text:?}");
            let values: String = recalled.iter().map(|(_, v)| v.as_str()).collect();
            assert_eq!(&values, answer, "the mask scores the recalled values: {text:?}");
            for (k, v) in &recalled {
                assert_eq!(stated.get(k), Some(v), "{text:?}");
                assert!(v.chars().all(|c| c.is_ascii_digit()));
            }
        }
        // Twice the length holds about twice the pairs.
        let pairs_at = |len| examples(&c, Probe::KeyValue, len)[0].1.len();
        assert!(pairs_at(400) >= 2 * pairs_at(200) - 1, "{} vs {}", pairs_at(400), pairs_at(200));
    }

    #[test]
    fn probes_repeat_from_the_seed_and_refuse_what_they_cannot_write() {
        let c = codec(ALPHABET);
        assert_eq!(examples(&c, Probe::KeyValue, 90), examples(&c, Probe::KeyValue, 90));
        let d = Device::flex();
        let short = probe_batches(&c, Probe::Passkey, 20, 1, 1, 7, &d).unwrap_err();
        assert!(matches!(short, ProbeError::TooShort { probe: "passkey", len: 20, .. }), "{short}");
        let no_filler =
            probe_batches(&codec("abcdefghijklmnopqrstuvwxyz"), Probe::Passkey, 99, 1, 1, 7, &d);
        assert!(
            matches!(no_filler, Err(ProbeError::Unwritable { .. })),
            "no space in the vocabulary"
        );
    }
}
