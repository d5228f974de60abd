//! The MAD synthetic task suite (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
//! Architectures", arXiv 2403.17844; reference: athms/mad-lab, `mad/data/instances.py`).
//!
//! Six token tasks, each a small probe of one capability, generated with the reference's token
//! layout: with `D` = [`MadConfig::data_vocab`] (the vocabulary less the specials and the
//! `noise_vocab_size` noise tokens), keys are `0..D/2`, values `D/2..D`, noise `D..D+noise`, and
//! the special tokens sit at the top of the vocabulary (`V` = `vocab_size`).
//! - `in_context_recall`: `seq_len/2` slots; every slot but the last is a key-value pair `k v`
//!   (a key keeps its first value for the whole sequence); the last slot repeats a key already
//!   seen with its value. With `multi_query` every value whose key was seen before is a probe;
//!   without it a copy-prefix token `V−1` precedes the last slot and only its value is probed.
//!   After MAD's one-token shift the model sees `seq_len − 1` tokens (multi-query) or
//!   `seq_len` (the copy prefix makes the instance one longer).
//! - `noisy_recall`: the same, with each slot (but one kept as a pair) noise with probability
//!   `frac_noise`: two noise tokens.
//! - `fuzzy_recall`: keys are ordered tuples of 1..=`k_motif_size` distinct key tokens and values
//!   of 1..=`v_motif_size` distinct value tokens (evaluation keys are always `k_motif_size`
//!   long); a planted pair sits at a random slot and is queried at the end; the sequence is
//!   front-padded with `V−2` (`V−1` with `multi_query`) to `seq_len + 1` tokens. A probe is
//!   every token of a repeated key's value.
//! - `selective_copying`: `num_tokens_to_copy` data tokens (`0..V−2`) in order with
//!   `seq_len − 2n − 1` blanks (`V−2`) strewn before them, the copy token `V−1`, then `n` blanks
//!   at which the model outputs the data tokens in order.
//! - `memorization`: `(key, insert token V−1)` pairs; at the insert token the model outputs the
//!   key's value under a key→value map fixed for the whole run (a random one-to-one map of the
//!   keys into the values). MAD draws it from the run's seed (`MADConfig.seed`); attnlab draws it
//!   from the run seed's `kv-map` stream.
//! - `compression`: `seq_len − 1` data tokens (a token is noise with probability `frac_noise`),
//!   then the compression token `V−1`; the model reproduces the whole sequence.
//!
//! MAD's protocol, kept here: in the recall problems training scores every next token (the
//! instance `x_0 … x_N` is shifted: inputs `x_0 … x_{N−1}`, targets `x_1 … x_N`, no mask) while
//! evaluation scores only the probes (the reference's `is_training` switch); memorization and
//! selective copying score their probes in both; compression every position in both. Training
//! samples a fixed set of `num_train_examples` sequences (drawn once from the seed, each a pure
//! function of seed and index; batches draw from it with replacement, as the MQAR pool does,
//! where MAD shuffles epochs); evaluation is a separate fixed set of `eval_examples`. The main
//! metric is the accuracy over the evaluation probes; chance is a uniform guess among the
//! possible answers: 1/|values| for the recall problems, 1/|keys| (the map's images) for
//! memorization, 1/D for selective copying, and for compression the mean over positions of
//! 1/(D + noise) at the data positions and 1 at the compression token (MAD scores it too).
//!
//! What differs from the reference:
//! - Compression: MAD trains an encoder-decoder (`auto_encoder.py`): the layers encode the
//!   sequence, the last position's vector is the code, and an MLP reads each position's token
//!   from the code plus a sinusoidal position embedding. attnlab's decoder-only model keeps the
//!   bottleneck exactly: its output head is `seq_len · V` wide and only the output at the last
//!   (compression) position is read, as `seq_len` rows of logits ([`Target::LastPosition`]), so
//!   everything passes through that one position's state. The decoder is the model's linear
//!   head, not MAD's two-layer MLP, so it needs a code laid out for linear read-out.
//! - Compression with noise: MAD's generator computes targets that skip noise tokens but returns
//!   the inputs as targets; attnlab does what the reference does (noise tokens are reproduced).
//! - Selective copying: MAD places the blanks with numpy's global generator (unseeded); attnlab
//!   draws them from the run's streams like everything else.
//! - Noisy recall: MAD picks the slot that is never noise among all `seq_len/2` slots, the final
//!   query slot included, so on rare draws every context slot is noise and no key exists to
//!   query (numpy fails); attnlab picks it among the context slots.
//! - Fuzzy recall: when the planted pair's slot falls near the end, MAD can close the context
//!   before planting it, and the final query asks for a value never shown; attnlab plants it in
//!   the last slot instead (the only change to the distribution).
//! - Memorization's map: MAD builds it over `vocab_size − 1` tokens whatever
//!   `noise_vocab_size` is (its instances then draw noise from the same top range); attnlab
//!   builds it over the data tokens below the noise, so noise never doubles as a key or value.
//! - Accuracy is micro-averaged over probes; MAD's torchmetrics `MulticlassAccuracy` averages
//!   over classes (`average="macro"` by default), which weighs rare values more.

use super::interface::{Batch, MainMetric, Target, Task, TaskError};
use super::text::batch_index;
use crate::config::{MadConfig, MadProblem};
use crate::seed;
use attnlab_model::{LmInput, ModelInput, ModelIo};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, RngExt};
use std::collections::BTreeMap;
use std::ops::Range;

pub struct Mad {
    config: MadConfig,
    seed: u64,
    /// Memorization: `value_of_key[k]` is key k's value for the whole run; empty otherwise.
    value_of_key: Vec<usize>,
}

/// One sequence as the model sees it: input tokens, what training scores at each position and
/// what evaluation scores (`None`: not scored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub tokens: Vec<usize>,
    pub train_targets: Vec<Option<usize>>,
    pub probes: Vec<Option<usize>>,
}

impl Example {
    /// MAD's recall instances: the full sequence `x_0 … x_N` and its probe targets, shifted by
    /// one (inputs `x_0 … x_{N−1}`); training learns every next token, evaluation the probes.
    fn shifted(full: &[usize], probes: &[Option<usize>]) -> Self {
        let n = full.len();
        Example {
            tokens: full[..n - 1].to_vec(),
            train_targets: full[1..].iter().map(|&t| Some(t)).collect(),
            probes: probes[1..].to_vec(),
        }
    }

    /// Instances whose targets are the same in training and evaluation.
    fn unshifted(tokens: Vec<usize>, probes: Vec<Option<usize>>) -> Self {
        Example { tokens, train_targets: probes.clone(), probes }
    }
}

/// `size` distinct tokens of `range` in random order: a uniform draw from all ordered tuples,
/// as MAD's choice from the shuffled list of every permutation of that size.
fn motif(rng: &mut impl Rng, range: Range<usize>, size: usize) -> Vec<usize> {
    let mut pool: Vec<usize> = range.collect();
    for i in 0..size {
        let j = rng.random_range(i..pool.len());
        pool.swap(i, j);
    }
    pool.truncate(size);
    pool
}

impl Mad {
    pub fn new(config: MadConfig, seed: u64) -> Result<Self, TaskError> {
        if let Some((key, message)) = config.refusal() {
            return Err(TaskError::Refused { key, message });
        }
        let value_of_key = if config.problem == MadProblem::Memorization {
            let (keys, values) = Self::halves(config.data_vocab());
            // A one-to-one map: the values in random order, the first |keys| of them.
            motif(&mut seed::rng(seed, "kv-map", 0), values, keys.len())
        } else {
            Vec::new()
        };
        Ok(Self { config, seed, value_of_key })
    }

    /// Keys `0..D/2` and values `D/2..D` of a data vocabulary of `D` tokens.
    fn halves(data: usize) -> (Range<usize>, Range<usize>) {
        (0..data / 2, data / 2..data)
    }

    fn noise(&self) -> Range<usize> {
        let data = self.config.data_vocab();
        data..data + self.config.noise_vocab_size
    }

    /// Memorization's fixed map, `value_of_key[k]` (empty for the other problems).
    pub fn value_of_key(&self) -> &[usize] {
        &self.value_of_key
    }

    /// One sequence; `training` selects MAD's training distribution where it differs (fuzzy
    /// recall's key lengths). Both target kinds are filled either way.
    pub fn example(&self, rng: &mut impl Rng, training: bool) -> Example {
        match self.config.problem {
            MadProblem::InContextRecall | MadProblem::NoisyRecall => self.recall(rng),
            MadProblem::FuzzyRecall => self.fuzzy_recall(rng, training),
            MadProblem::SelectiveCopying => self.selective_copying(rng),
            MadProblem::Memorization => self.memorization(rng),
            MadProblem::Compression => self.compression(rng),
        }
    }

    fn recall(&self, rng: &mut impl Rng) -> Example {
        let c = &self.config;
        let (keys, values) = Self::halves(c.data_vocab());
        let slots = c.seq_len / 2;
        // One context slot is always a pair, so the final query has a key to ask for.
        let always_a_pair = rng.random_range(0..slots - 1);
        let (mut full, mut probes) = (Vec::with_capacity(c.seq_len + 1), Vec::new());
        let mut value_of: BTreeMap<usize, usize> = BTreeMap::new();
        for slot in 0..slots - 1 {
            let noise =
                c.frac_noise > 0.0 && slot != always_a_pair && rng.random::<f64>() < c.frac_noise;
            if noise {
                for _ in 0..2 {
                    full.push(rng.random_range(self.noise()));
                    probes.push(None);
                }
                continue;
            }
            let key = rng.random_range(keys.clone());
            let seen = value_of.contains_key(&key);
            let value = *value_of.entry(key).or_insert_with(|| rng.random_range(values.clone()));
            full.extend([key, value]);
            probes.extend([None, (seen && c.multi_query).then_some(value)]);
        }
        let seen: Vec<usize> = value_of.keys().copied().collect();
        let key = seen[rng.random_range(0..seen.len())];
        if !c.multi_query {
            full.push(c.vocab_size - 1);
            probes.push(None);
        }
        full.extend([key, value_of[&key]]);
        probes.extend([None, Some(value_of[&key])]);
        Example::shifted(&full, &probes)
    }

    fn fuzzy_recall(&self, rng: &mut impl Rng, training: bool) -> Example {
        let c = &self.config;
        let (keys, values) = Self::halves(c.data_vocab());
        let (k_max, v_max) = (c.k_motif_size, c.v_motif_size);
        let pad = if c.multi_query { c.vocab_size - 1 } else { c.vocab_size - 2 };
        let (k_len, v_len) = self.motif_lengths(rng, training);
        let planted_key = motif(rng, keys.clone(), k_len);
        let planted_value = motif(rng, values.clone(), v_len);
        let planted_len = k_len + v_len;
        let plant_at = rng.random_range(0..c.seq_len - 2 * planted_len);
        // The context stops growing once it reaches this length (MAD's bound, which leaves room
        // for the final query and keeps the sequence within seq_len + 1).
        let context = c.seq_len - planted_len - (k_max + v_max);
        let (mut full, mut probes): (Vec<usize>, Vec<Option<usize>>) = (Vec::new(), Vec::new());
        let mut value_of: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
        let mut planted = false;
        while full.len() < context {
            let (k_len, v_len) = self.motif_lengths(rng, training);
            let last_slot = full.len() + k_len + v_len >= context;
            if !planted && (full.len() >= plant_at || last_slot) {
                full.extend(&planted_key);
                full.extend(&planted_value);
                probes.extend(vec![None; planted_len]);
                value_of.insert(planted_key.clone(), planted_value.clone());
                planted = true;
                continue;
            }
            if c.frac_noise > 0.0 && rng.random::<f64>() < c.frac_noise {
                for _ in 0..k_len + v_len {
                    full.push(rng.random_range(self.noise()));
                    probes.push(None);
                }
                continue;
            }
            let key = motif(rng, keys.clone(), k_len);
            let seen = value_of.contains_key(&key);
            let value = if key == planted_key {
                planted = true;
                planted_value.clone()
            } else {
                match value_of.get(&key) {
                    Some(v) => v.clone(),
                    None => motif(rng, values.clone(), v_len),
                }
            };
            value_of.insert(key.clone(), value.clone());
            full.extend(&key);
            probes.extend(vec![None; key.len()]);
            full.extend(&value);
            probes.extend(value.iter().map(|&v| (seen && c.multi_query).then_some(v)));
        }
        if !c.multi_query {
            full.push(c.vocab_size - 1);
            probes.push(None);
        }
        full.extend(&planted_key);
        probes.extend(vec![None; planted_key.len()]);
        full.extend(&planted_value);
        probes.extend(planted_value.iter().map(|&v| Some(v)));
        // Front padding to seq_len + 1 tokens: seq_len after the shift.
        let pads = c.seq_len + 1 - full.len();
        let full: Vec<usize> = std::iter::repeat_n(pad, pads).chain(full).collect();
        let probes: Vec<Option<usize>> = std::iter::repeat_n(None, pads).chain(probes).collect();
        Example::shifted(&full, &probes)
    }

    /// A fuzzy-recall slot's key and value lengths: uniform over 1..=max, except that
    /// evaluation keys are always the longest (MAD's `is_training` switch).
    fn motif_lengths(&self, rng: &mut impl Rng, training: bool) -> (usize, usize) {
        let c = &self.config;
        let key = if training { rng.random_range(1..=c.k_motif_size) } else { c.k_motif_size };
        (key, rng.random_range(1..=c.v_motif_size))
    }

    fn selective_copying(&self, rng: &mut impl Rng) -> Example {
        let c = &self.config;
        let (copy, blank, data) = (c.vocab_size - 1, c.vocab_size - 2, c.vocab_size - 2);
        let n = c.num_tokens_to_copy;
        let to_copy: Vec<usize> = (0..n).map(|_| rng.random_range(0..data)).collect();
        // Each blank goes before a data token chosen uniformly (numpy's `insert` at uniform
        // indices `0..n`): none ever follows the last data token.
        let mut blanks_before = vec![0usize; n];
        for _ in 0..c.seq_len - 2 * n - 1 {
            blanks_before[rng.random_range(0..n)] += 1;
        }
        let mut tokens = Vec::with_capacity(c.seq_len);
        for (&token, &blanks) in to_copy.iter().zip(&blanks_before) {
            tokens.extend(std::iter::repeat_n(blank, blanks));
            tokens.push(token);
        }
        tokens.push(copy);
        let mut probes = vec![None; tokens.len()];
        tokens.extend(std::iter::repeat_n(blank, n));
        probes.extend(to_copy.iter().map(|&t| Some(t)));
        Example::unshifted(tokens, probes)
    }

    fn memorization(&self, rng: &mut impl Rng) -> Example {
        let c = &self.config;
        let insert = c.vocab_size - 1;
        let slots = c.seq_len / 2;
        let always_a_pair = rng.random_range(0..slots);
        let (mut tokens, mut probes) = (Vec::with_capacity(c.seq_len), Vec::new());
        for slot in 0..slots {
            let noise =
                c.frac_noise > 0.0 && slot != always_a_pair && rng.random::<f64>() < c.frac_noise;
            if noise {
                for _ in 0..2 {
                    tokens.push(rng.random_range(self.noise()));
                    probes.push(None);
                }
            } else {
                let key = rng.random_range(0..self.value_of_key.len());
                tokens.extend([key, insert]);
                probes.extend([None, Some(self.value_of_key[key])]);
            }
        }
        Example::unshifted(tokens, probes)
    }

    fn compression(&self, rng: &mut impl Rng) -> Example {
        let c = &self.config;
        let mut tokens: Vec<usize> =
            (0..c.seq_len - 1).map(|_| rng.random_range(0..c.data_vocab())).collect();
        tokens.push(c.vocab_size - 1);
        if c.frac_noise > 0.0 {
            for token in &mut tokens[..c.seq_len - 1] {
                if rng.random::<f64>() < c.frac_noise {
                    *token = rng.random_range(self.noise());
                }
            }
        }
        let probes = tokens.iter().map(|&t| Some(t)).collect();
        Example::unshifted(tokens, probes)
    }
}

impl Mad {
    /// Sequence `i` of the fixed training set: a pure function of the seed and `i`, in a
    /// stream apart from the evaluation set's.
    pub fn pool_example(&self, i: usize) -> Example {
        self.example(&mut seed::rng(self.seed, "train-pool", i as u64), true)
    }

    /// The fixed evaluation set, in batches of `batch_size`.
    fn eval_set(&self, batch_size: usize, device: &Device) -> Vec<Batch> {
        let mut rng = seed::rng(self.seed, "eval", 0);
        let examples: Vec<Example> =
            (0..self.config.eval_examples).map(|_| self.example(&mut rng, false)).collect();
        examples.chunks(batch_size.max(1)).map(|c| self.batch(c, false, device)).collect()
    }

    /// `examples` as a batch scored by their training targets or by their probes. Where every
    /// position is scored the mask is left out (every next token, as MAD trains recall).
    fn batch(&self, examples: &[Example], training: bool, device: &Device) -> Batch {
        let (b, t) = (examples.len(), examples.first().map_or(0, |e| e.tokens.len()));
        let ints = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [b, t]), device);
        let tokens = examples.iter().flat_map(|e| e.tokens.iter().map(|&x| x as i64)).collect();
        let targets: Vec<Option<usize>> = examples
            .iter()
            .flat_map(|e| if training { &e.train_targets } else { &e.probes })
            .copied()
            .collect();
        let ids: Vec<i64> = targets.iter().map(|t| t.unwrap_or(0) as i64).collect();
        let target = if self.config.problem == MadProblem::Compression {
            Target::LastPosition(ints(ids))
        } else if targets.iter().all(Option::is_some) {
            Target::Tokens { ids: ints(ids), mask: None }
        } else {
            let mask: Vec<f32> = targets.iter().map(|t| f32::from(u8::from(t.is_some()))).collect();
            Target::Tokens {
                ids: ints(ids),
                mask: Some(Tensor::<2>::from_data(TensorData::new(mask, [b, t]), device)),
            }
        };
        Batch { input: LmInput::Tokens(ints(tokens)), target, tokens: b * t }
    }
}

impl Task for Mad {
    /// Token inputs over the whole vocabulary; compression's head emits a row of logits for
    /// every position of the sequence (read at the last position only).
    fn io(&self) -> ModelIo {
        let v = self.config.vocab_size;
        let output_dim = match self.config.problem {
            MadProblem::Compression => self.config.seq_len * v,
            _ => v,
        };
        ModelIo { input: ModelInput::Tokens { vocab: v }, output_dim }
    }
    /// Accuracy over the evaluation probes; chance is a uniform guess among the possible
    /// answers (see the module doc).
    fn main_metric(&self) -> MainMetric {
        let c = &self.config;
        let data = c.data_vocab() as f64;
        let (keys, values) = ((c.data_vocab() / 2) as f64, data - (c.data_vocab() / 2) as f64);
        let chance = match c.problem {
            MadProblem::InContextRecall | MadProblem::NoisyRecall | MadProblem::FuzzyRecall => {
                1.0 / values
            }
            MadProblem::Memorization => 1.0 / keys,
            MadProblem::SelectiveCopying => 1.0 / data,
            MadProblem::Compression => {
                let answers =
                    data + if c.frac_noise > 0.0 { c.noise_vocab_size as f64 } else { 0.0 };
                let len = c.seq_len as f64;
                ((len - 1.0) / answers + 1.0) / len
            }
        };
        MainMetric { name: "accuracy", higher_is_better: true, chance: Some(chance) }
    }
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch {
        let mut rng = seed::rng(self.seed, "train", batch_index(step, micro));
        let examples: Vec<Example> = match self.config.num_train_examples {
            0 => (0..batch_size).map(|_| self.example(&mut rng, true)).collect(),
            pool => (0..batch_size).map(|_| self.pool_example(rng.random_range(0..pool))).collect(),
        };
        self.batch(&examples, true, device)
    }
    fn eval_batches(&self, _batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        self.eval_set(batch_size, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::interface::{mean_metrics, score_output, tiny_model};

    fn task(problem: MadProblem, set: impl FnOnce(&mut MadConfig)) -> Mad {
        let mut config = MadConfig { problem, eval_examples: 6, ..MadConfig::default() };
        set(&mut config);
        Mad::new(config, 7).unwrap()
    }

    /// `(tokens, training targets, probes)` with unscored positions as -1, for pinning.
    fn flat(e: &Example) -> (Vec<usize>, Vec<i64>, Vec<i64>) {
        let opt = |v: &[Option<usize>]| v.iter().map(|t| t.map_or(-1, |t| t as i64)).collect();
        (e.tokens.clone(), opt(&e.train_targets), opt(&e.probes))
    }

    fn ints(t: &Tensor<2, Int>) -> Vec<i64> {
        t.to_data().convert::<i64>().try_into_vec().unwrap()
    }

    /// A fixed seed gives a known sequence for every problem, each checked by hand against the
    /// layout in the module doc (keys `0..D/2`, values `D/2..D`, noise above, specials on top).
    #[test]
    fn a_fixed_seed_gives_a_known_sequence_for_every_problem() {
        let rng = || seed::rng(7, "train", 0);
        // V = 8, multi-query: keys 0..4, values 4..8; pairs 0→7 1→4 0→7 3→7 1→4, query 0→7.
        // The shift drops the last token; repeated keys and the query are probed at the key.
        let t = task(MadProblem::InContextRecall, |c| (c.vocab_size, c.seq_len) = (8, 12));
        assert_eq!(
            flat(&t.example(&mut rng(), true)),
            (
                vec![0, 7, 1, 4, 0, 7, 3, 7, 1, 4, 0],
                vec![7, 1, 4, 0, 7, 3, 7, 1, 4, 0, 7],
                vec![-1, -1, -1, -1, 7, -1, -1, -1, 4, -1, 7]
            )
        );
        // Single query (V = 9: the same 8 data tokens and the copy prefix 8): only the final
        // key, after the copy prefix, is probed; the sequence keeps seq_len tokens.
        let t = task(MadProblem::InContextRecall, |c| {
            (c.vocab_size, c.seq_len, c.multi_query) = (9, 12, false)
        });
        assert_eq!(
            flat(&t.example(&mut rng(), true)),
            (
                vec![0, 7, 1, 4, 0, 7, 3, 7, 1, 4, 8, 0],
                vec![7, 1, 4, 0, 7, 3, 7, 1, 4, 8, 0, 7],
                vec![-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 7]
            )
        );
        // V = 12 with 4 noise tokens (8..12): the fourth slot is noise (11 11).
        let t = task(MadProblem::NoisyRecall, |c| {
            (c.vocab_size, c.noise_vocab_size, c.frac_noise, c.seq_len) = (12, 4, 0.4, 12)
        });
        assert_eq!(
            flat(&t.example(&mut rng(), true)),
            (
                vec![1, 4, 3, 5, 0, 4, 11, 11, 2, 5, 3],
                vec![4, 3, 5, 0, 4, 11, 11, 2, 5, 3, 5],
                vec![-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 5]
            )
        );
        // Fuzzy, V = 13, motifs up to 2: pad 12, keys 0..6, values 6..12. Training: pads, then
        // 5→8 (1 0)→7 5→8 4→(8 11) 0→(6 7) 1→(6 11), query 5→8; the repeat of 5 is probed.
        let t = task(MadProblem::FuzzyRecall, |c| {
            (c.vocab_size, c.k_motif_size, c.v_motif_size, c.seq_len) = (13, 2, 2, 20)
        });
        let (tokens, train, probes) = flat(&t.example(&mut rng(), true));
        assert_eq!(tokens, [12, 12, 12, 5, 8, 1, 0, 7, 5, 8, 4, 8, 11, 0, 6, 7, 1, 6, 11, 5]);
        assert_eq!(train, [12, 12, 5, 8, 1, 0, 7, 5, 8, 4, 8, 11, 0, 6, 7, 1, 6, 11, 5, 8]);
        let probed: Vec<(usize, i64)> =
            probes.iter().enumerate().filter(|p| *p.1 >= 0).map(|(i, &p)| (i, p)).collect();
        assert_eq!(probed, [(8, 8), (19, 8)]);
        // Evaluation: every key two tokens: (0 5)→8 (5 2)→(7 6) (1 5)→11 (3 4)→8, query (0 5).
        let (tokens, _, probes) = flat(&t.example(&mut rng(), false));
        assert_eq!(tokens, [12, 12, 12, 12, 12, 0, 5, 8, 5, 2, 7, 6, 1, 5, 11, 3, 4, 8, 0, 5]);
        assert_eq!(probes.iter().filter(|&&p| p >= 0).count(), 1);
        assert_eq!(probes[19], 8);
        // Selective copying, V = 6: data 0..4, blank 4, copy 5; 1 0 3 with 2, 1, 2 blanks
        // before them, then the copy token and 3 blanks at which they are output.
        let t = task(MadProblem::SelectiveCopying, |c| {
            (c.vocab_size, c.seq_len, c.num_tokens_to_copy) = (6, 12, 3)
        });
        let copied = vec![-1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 0, 3];
        assert_eq!(
            flat(&t.example(&mut rng(), true)),
            (vec![4, 4, 1, 4, 0, 4, 4, 3, 5, 4, 4, 4], copied.clone(), copied)
        );
        // Memorization, V = 11: insert token 10, keys 0..5 mapped one-to-one into 5..10.
        let t = task(MadProblem::Memorization, |c| (c.vocab_size, c.seq_len) = (11, 8));
        assert_eq!(t.value_of_key(), [7, 9, 8, 6, 5]);
        let recalled = vec![-1, 7, -1, 5, -1, 8, -1, 7];
        assert_eq!(
            flat(&t.example(&mut rng(), true)),
            (vec![0, 10, 4, 10, 2, 10, 0, 10], recalled.clone(), recalled)
        );
        // Compression, V = 6: seven data tokens 0..5, the compression token 5; all reproduced.
        let t = task(MadProblem::Compression, |c| (c.vocab_size, c.seq_len) = (6, 8));
        let all = vec![2, 0, 4, 2, 0, 0, 4, 5];
        assert_eq!(
            flat(&t.example(&mut rng(), true)),
            (vec![2, 0, 4, 2, 0, 0, 4, 5], all.clone(), all)
        );
    }

    /// In-context and noisy recall, by an independent scan: the full sequence read in slots of
    /// two, a key→value map kept along the way: every pair obeys the map, noise slots hold
    /// noise tokens, a value is probed exactly when its key came before (multi-query), and the
    /// final query asks for a key already seen, with its value.
    #[test]
    fn recall_probes_match_an_independent_scan() {
        let mut rng = seed::rng(3, "test", 0);
        for (problem, vocab, noise, frac, multi_query) in [
            (MadProblem::InContextRecall, 16, 0, 0.0, true),
            (MadProblem::InContextRecall, 17, 0, 0.0, false),
            (MadProblem::NoisyRecall, 32, 16, 0.2, true),
            (MadProblem::NoisyRecall, 33, 16, 0.6, false),
        ] {
            let t = task(problem, |c| {
                (c.vocab_size, c.noise_vocab_size, c.frac_noise, c.multi_query, c.seq_len) =
                    (vocab, noise, frac, multi_query, 64)
            });
            let (keys, values, noise_tokens) = (0..8, 8..16, 16..16 + noise);
            let (mut noise_slots, mut slots) = (0, 0);
            for _ in 0..50 {
                let e = t.example(&mut rng, true);
                assert_eq!(e.tokens.len(), if multi_query { 63 } else { 64 });
                let mut full = e.tokens.clone();
                full.push(e.train_targets.last().unwrap().unwrap());
                for (p, target) in e.train_targets.iter().enumerate() {
                    assert_eq!(*target, Some(full[p + 1]), "training scores every next token");
                }
                // probes[p] is the target for full[p + 1]: a value at full[i + 1] is probed at i.
                let context = 62;
                let mut map = BTreeMap::new();
                for i in (0..context).step_by(2) {
                    let (a, b) = (full[i], full[i + 1]);
                    assert_eq!(e.probes[i + 1], None, "nothing after a value is probed");
                    slots += 1;
                    if noise_tokens.contains(&a) {
                        assert!(noise_tokens.contains(&b) && e.probes[i].is_none());
                        noise_slots += 1;
                        continue;
                    }
                    assert!(keys.contains(&a) && values.contains(&b), "{a} {b}");
                    let expected = match map.get(&a) {
                        Some(&v) => {
                            assert_eq!(b, v, "a key keeps its value");
                            multi_query.then_some(v)
                        }
                        None => None,
                    };
                    map.insert(a, b);
                    assert_eq!(e.probes[i], expected, "slot at {i}");
                }
                let mut at = context;
                if !multi_query {
                    assert_eq!((full[at], e.probes[at - 1]), (vocab - 1, None), "copy prefix");
                    at += 1;
                }
                let (key, value) = (full[at], full[at + 1]);
                assert_eq!(map.get(&key), Some(&value), "the query asks for a key seen before");
                assert_eq!((e.probes[at - 1], e.probes[at]), (None, Some(value)));
                assert_eq!(full.len(), at + 2);
            }
            let rate = noise_slots as f64 / slots as f64;
            assert!((rate - frac).abs() < 0.05, "{problem:?}: noise in {rate} of the slots");
        }
    }

    /// Fuzzy recall, by an independent parse: key tokens, value tokens, noise and pads are
    /// disjoint ranges, so the sequence splits into runs, a key run followed by its value run.
    /// Every repeated key carries its first value, whose every token is probed (multi-query);
    /// evaluation keys are all k_motif_size long; the final key is always in the context.
    #[test]
    fn fuzzy_recall_probes_match_an_independent_parse() {
        let mut rng = seed::rng(5, "test", 0);
        for (multi_query, noise, frac) in [(true, 0, 0.0), (false, 0, 0.0), (true, 4, 0.3)] {
            let vocab = 16 + noise;
            let t = task(MadProblem::FuzzyRecall, |c| {
                (c.vocab_size, c.k_motif_size, c.v_motif_size, c.seq_len) = (vocab, 3, 3, 128);
                (c.multi_query, c.noise_vocab_size, c.frac_noise) = (multi_query, noise, frac);
            });
            // 16 + noise tokens: 15 (multi-query) or 14 data tokens, then noise, then specials.
            let data = if multi_query { 15 } else { 14 };
            let class = |x: usize| match x {
                _ if x < data / 2 => 'k',
                _ if x < data => 'v',
                _ if x < data + noise => 'n',
                _ => 's',
            };
            let mut key_lengths = BTreeMap::new();
            for training in [true, false].into_iter().cycle().take(80) {
                let e = t.example(&mut rng, training);
                assert_eq!(e.tokens.len(), 128);
                let mut full = e.tokens.clone();
                full.push(e.train_targets.last().unwrap().unwrap());
                let mut runs: Vec<(char, Range<usize>)> = Vec::new();
                for (i, &x) in full.iter().enumerate() {
                    match runs.last_mut() {
                        Some((c, r)) if *c == class(x) => r.end = i + 1,
                        _ => runs.push((class(x), i..i + 1)),
                    }
                }
                assert_eq!(runs[0].0, 's', "front padding");
                let mut map: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
                let pairs: Vec<(Range<usize>, Range<usize>)> = runs
                    .windows(2)
                    .filter(|w| w[0].0 == 'k' && w[1].0 == 'v')
                    .map(|w| (w[0].1.clone(), w[1].1.clone()))
                    .collect();
                let scored: usize = e.probes.iter().filter(|p| p.is_some()).count();
                let mut expected_scored = 0;
                for (n, (k, v)) in pairs.iter().enumerate() {
                    let (key, value) = (full[k.clone()].to_vec(), full[v.clone()].to_vec());
                    *key_lengths.entry((training, key.len())).or_insert(0) += 1;
                    let last = n + 1 == pairs.len();
                    let seen = map.get(&key);
                    if let Some(first) = seen {
                        assert_eq!(first, &value, "a key keeps its value");
                    }
                    let probed = last || (seen.is_some() && multi_query);
                    for i in v.clone() {
                        assert_eq!(e.probes[i - 1], probed.then_some(full[i]), "value token {i}");
                    }
                    expected_scored += if probed { value.len() } else { 0 };
                    if last {
                        assert!(seen.is_some(), "the final key was planted in the context");
                        if !multi_query {
                            assert_eq!(full[k.start - 1], vocab - 1, "copy prefix");
                        }
                    }
                    map.insert(key, value);
                }
                assert_eq!(scored, expected_scored, "nothing but value tokens is probed");
            }
            // Training keys take every length 1..=3; evaluation keys only 3.
            let lengths: Vec<(bool, usize)> = key_lengths.keys().copied().collect();
            assert_eq!(lengths, [(false, 3), (true, 1), (true, 2), (true, 3)]);
        }
    }

    /// Selective copying: the data tokens before the copy token, blanks removed, are the
    /// probes in order. Memorization: every probe is the key's value under one map for the
    /// run (one-to-one, keys into values), in training and evaluation alike. Compression: the
    /// targets are the sequence itself.
    #[test]
    fn copying_memorization_and_compression_targets_are_right() {
        let mut rng = seed::rng(11, "test", 0);
        let t =
            task(MadProblem::SelectiveCopying, |c| (c.seq_len, c.num_tokens_to_copy) = (256, 16));
        for _ in 0..30 {
            let e = t.example(&mut rng, true);
            let copy_at = e.tokens.iter().position(|&x| x == 15).unwrap();
            assert_eq!(copy_at, 256 - 16 - 1);
            let data: Vec<usize> =
                e.tokens[..copy_at].iter().copied().filter(|&x| x != 14).collect();
            let probed: Vec<usize> = e.probes.iter().flatten().copied().collect();
            assert_eq!((data.len(), &data), (16, &probed));
            assert!(e.probes[..copy_at + 1].iter().all(Option::is_none));
            assert!(e.tokens[copy_at + 1..].iter().all(|&x| x == 14));
            assert_eq!(e.train_targets, e.probes);
        }
        let t = task(MadProblem::Memorization, |c| (c.vocab_size, c.seq_len) = (256, 32));
        let map = t.value_of_key().to_vec();
        assert_eq!(map.len(), 127);
        assert!(map.iter().all(|v| (127..255).contains(v)));
        assert_eq!(map.iter().collect::<std::collections::BTreeSet<_>>().len(), 127, "one-to-one");
        let other = Mad::new(t.config.clone(), 8).unwrap();
        assert_ne!(other.value_of_key(), map, "the map comes from the run seed");
        for training in [true, false] {
            for _ in 0..20 {
                let e = t.example(&mut rng, training);
                for i in (0..32).step_by(2) {
                    assert_eq!((e.tokens[i + 1], e.probes[i]), (255, None));
                    assert_eq!(e.probes[i + 1], Some(map[e.tokens[i]]));
                }
            }
        }
        let t = task(MadProblem::Compression, |c| {
            (c.vocab_size, c.seq_len, c.noise_vocab_size, c.frac_noise) = (20, 32, 4, 0.25)
        });
        let mut noise = 0;
        for _ in 0..40 {
            let e = t.example(&mut rng, true);
            assert_eq!(e.tokens[31], 19, "the compression token ends the sequence");
            assert!(e.tokens[..31].iter().all(|&x| x < 19));
            noise += e.tokens[..31].iter().filter(|&&x| x >= 15).count();
            let all: Vec<Option<usize>> = e.tokens.iter().map(|&x| Some(x)).collect();
            assert_eq!((&e.train_targets, &e.probes), (&all, &all));
        }
        let rate = noise as f64 / (40.0 * 31.0);
        assert!((rate - 0.25).abs() < 0.04, "noise rate {rate}");
    }

    /// Chance is a uniform guess among the possible answers, at MAD's baselines: 1/8 values
    /// for the three recall problems, 1/127 mapped values (memorization, V = 256), 1/14 data
    /// tokens (selective copying), and for compression (V = 16, L = 32) 1/15 at 31 data
    /// positions and the certain compression token.
    #[test]
    fn chance_is_a_uniform_guess_among_the_answers() {
        let chance = |problem, set: &dyn Fn(&mut MadConfig)| {
            task(problem, |c| set(c)).main_metric().chance.unwrap()
        };
        assert_eq!(chance(MadProblem::InContextRecall, &|_| {}), 1.0 / 8.0);
        assert_eq!(
            chance(MadProblem::NoisyRecall, &|c| {
                (c.vocab_size, c.noise_vocab_size, c.frac_noise) = (32, 16, 0.2)
            }),
            1.0 / 8.0
        );
        assert_eq!(
            chance(MadProblem::FuzzyRecall, &|c| (c.k_motif_size, c.v_motif_size) = (3, 3)),
            1.0 / 8.0
        );
        assert_eq!(
            chance(MadProblem::Memorization, &|c| (c.vocab_size, c.seq_len) = (256, 32)),
            1.0 / 127.0
        );
        assert_eq!(
            chance(MadProblem::SelectiveCopying, &|c| {
                (c.seq_len, c.num_tokens_to_copy) = (256, 16)
            }),
            1.0 / 14.0
        );
        let compression = chance(MadProblem::Compression, &|c| c.seq_len = 32);
        assert!((compression - (31.0 / 15.0 + 1.0) / 32.0).abs() < 1e-12, "{compression}");
        // The recall answers are uniform over the values: a scan of probes agrees with 1/8.
        let t = task(MadProblem::InContextRecall, |_| {});
        let mut rng = seed::rng(1, "test", 0);
        let mut counts = [0usize; 16];
        for _ in 0..200 {
            t.example(&mut rng, false).probes.iter().flatten().for_each(|&v| counts[v] += 1);
        }
        let total: usize = counts.iter().sum();
        assert!(counts[..8].iter().all(|&c| c == 0));
        assert!(counts[8..].iter().all(|&c| (c as f64 / total as f64 - 0.125).abs() < 0.02));
    }

    /// MAD's `is_training` switch: a recall training batch scores every next token (no mask,
    /// the targets the inputs shifted by one) while the evaluation batch scores the probes
    /// alone; memorization masks its probes in both; compression reads the last position.
    #[test]
    fn training_scores_every_next_token_and_evaluation_only_the_probes() {
        let device = Device::flex();
        let t = task(MadProblem::InContextRecall, |c| c.seq_len = 32);
        let batch = t.train_batch(0, 0, 4, &device);
        let (LmInput::Tokens(x), Target::Tokens { ids, mask: None }) =
            (&batch.input, &batch.target)
        else {
            panic!("unmasked tokens")
        };
        assert_eq!(x.dims(), [4, 31]);
        let (x, y) = (ints(x), ints(ids));
        for row in 0..4 {
            assert_eq!(x[row * 31 + 1..row * 31 + 31], y[row * 31..row * 31 + 30], "shifted");
        }
        let eval = t.eval_batches(1, 4, &device);
        assert_eq!(eval.len(), 2, "6 examples in batches of 4");
        let Target::Tokens { ids, mask: Some(mask) } = &eval[0].target else { panic!("masked") };
        let mask: Vec<f32> = mask.to_data().convert::<f32>().try_into_vec().unwrap();
        let mut rng = seed::rng(7, "eval", 0);
        let expected: Vec<Option<usize>> =
            (0..4).flat_map(|_| t.example(&mut rng, false).probes).collect();
        let ids = ints(ids);
        for (i, p) in expected.iter().enumerate() {
            assert_eq!(mask[i] == 1.0, p.is_some(), "position {i}");
            if let Some(v) = p {
                assert_eq!(ids[i], *v as i64);
            }
        }
        let probes = mask.iter().filter(|&&m| m == 1.0).count();
        assert!(probes > 4 * 8, "multi-query probes every repeated key: {probes}");

        let t = task(MadProblem::Memorization, |c| (c.vocab_size, c.seq_len) = (32, 8));
        for b in [t.train_batch(0, 0, 2, &device), t.eval_batches(1, 2, &device).remove(0)] {
            let Target::Tokens { mask: Some(m), .. } = &b.target else { panic!("masked") };
            let m: Vec<f32> = m.to_data().convert::<f32>().try_into_vec().unwrap();
            assert_eq!(m, [0., 1., 0., 1., 0., 1., 0., 1.].repeat(2));
        }
        let t = task(MadProblem::Compression, |c| (c.vocab_size, c.seq_len) = (6, 8));
        assert_eq!(t.io().output_dim, 48);
        let Target::LastPosition(ids) = t.train_batch(0, 0, 2, &device).target else {
            panic!("last position")
        };
        assert_eq!(ids.dims(), [2, 8]);
    }

    /// Compression's target reads the output at the last position alone, as seq_len rows of
    /// logits: perfect logits there score 1 whatever the other positions hold.
    #[test]
    fn the_compression_target_reads_only_the_last_position() {
        let device = Device::flex();
        let (b, t, n, v) = (2usize, 3usize, 3usize, 4usize);
        let ids = vec![1i64, 3, 0, 2, 2, 1];
        let mut out = vec![5.0f32; b * t * n * v]; // ties everywhere: argmax 0
        for row in 0..b {
            for i in 0..n {
                let at = (row * t + t - 1) * n * v + i * v + ids[row * n + i] as usize;
                out[at] = 50.0;
            }
        }
        let out = Tensor::<3>::from_data(TensorData::new(out, [b, t, n * v]), &device);
        let target = Target::LastPosition(Tensor::<2, Int>::from_data(
            TensorData::new(ids, [b, n]),
            &device,
        ));
        let s = score_output(out.clone(), &target);
        let (hits, count) = s.accuracy.unwrap();
        assert_eq!((hits.into_scalar::<f32>(), count.into_scalar::<f32>()), (6.0, 6.0));
        assert!(s.loss.into_scalar::<f32>() < 1e-6);
        // The last position uniform: every row a tie, argmax 0, right for the one target 0, and
        // the loss ln 4 whatever the earlier positions hold.
        let flat = Tensor::<3>::zeros([b, 1, n * v], &device);
        let out = Tensor::cat(vec![out.narrow(1, 0, t - 1), flat], 1);
        let s = score_output(out, &target);
        assert_eq!(s.accuracy.unwrap().0.into_scalar::<f32>(), 1.0);
        assert!((s.loss.into_scalar::<f32>() - 4f32.ln()).abs() < 1e-5);
    }

    /// Training batches are a pure function of (seed, step), drawn from the fixed training
    /// set (each member a pure function of seed and index); the evaluation set is fixed and
    /// apart from it; 0 training examples draws fresh sequences.
    #[test]
    fn batches_repeat_and_draw_from_the_fixed_training_set() {
        let device = Device::flex();
        let t = task(MadProblem::InContextRecall, |c| (c.seq_len, c.num_train_examples) = (32, 5));
        let rows = |b: Batch| -> Vec<Vec<i64>> {
            let LmInput::Tokens(x) = b.input else { panic!("tokens") };
            ints(&x).chunks(31).map(<[i64]>::to_vec).collect()
        };
        assert_eq!(rows(t.train_batch(3, 1, 8, &device)), rows(t.train_batch(3, 1, 8, &device)));
        assert_ne!(rows(t.train_batch(3, 1, 8, &device)), rows(t.train_batch(4, 1, 8, &device)));
        let pool: Vec<Vec<i64>> =
            (0..5).map(|i| t.pool_example(i).tokens.iter().map(|&x| x as i64).collect()).collect();
        let mut seen = std::collections::BTreeSet::new();
        for step in 0..4 {
            for row in rows(t.train_batch(step, 0, 16, &device)) {
                seen.insert(pool.iter().position(|p| *p == row).expect("a training-set sequence"));
            }
        }
        assert_eq!(seen.len(), 5, "64 draws from a set of 5 see every sequence");
        let eval: Vec<Vec<i64>> =
            t.eval_batches(1, 6, &device).into_iter().flat_map(rows).collect();
        assert_eq!(eval.len(), 6);
        assert!(eval.iter().all(|e| !pool.contains(e)), "evaluation sequences are not trained on");
        let again: Vec<Vec<i64>> =
            t.eval_batches(1, 4, &device).into_iter().flat_map(rows).collect();
        assert_eq!(eval, again, "the evaluation set does not depend on the batch size");
        let fresh =
            task(MadProblem::InContextRecall, |c| (c.seq_len, c.num_train_examples) = (32, 0));
        let distinct: std::collections::BTreeSet<Vec<i64>> =
            rows(fresh.train_batch(0, 0, 16, &device)).into_iter().collect();
        assert_eq!(distinct.len(), 16, "fresh draws repeat no sequence");
    }

    /// Every problem evaluates to its loss and probe accuracy, finite and repeatable, with a
    /// tiny model (compression through its seq_len·V-wide head).
    #[test]
    fn evaluation_reports_loss_and_accuracy_for_every_problem() {
        let device = Device::flex();
        let tasks = [
            task(MadProblem::InContextRecall, |c| c.seq_len = 16),
            task(MadProblem::NoisyRecall, |c| {
                (c.vocab_size, c.noise_vocab_size, c.frac_noise, c.seq_len) = (32, 16, 0.2, 16)
            }),
            task(MadProblem::FuzzyRecall, |c| {
                (c.k_motif_size, c.v_motif_size, c.seq_len) = (2, 2, 16)
            }),
            task(MadProblem::SelectiveCopying, |c| (c.seq_len, c.num_tokens_to_copy) = (16, 4)),
            task(MadProblem::Memorization, |c| (c.vocab_size, c.seq_len) = (64, 16)),
            task(MadProblem::Compression, |c| c.seq_len = 16),
        ];
        for t in &tasks {
            let model = tiny_model(&t.io(), 16, &device);
            let batches = t.eval_batches(1, 4, &device);
            let m = t.evaluate(&model, &batches);
            let keys: Vec<&str> = m.keys().map(String::as_str).collect();
            assert_eq!(keys, ["accuracy", "loss"], "{:?}", t.config.problem);
            assert!(m.values().all(|v| v.is_finite() && *v >= 0.0), "{m:?}");
            assert!(m["accuracy"] <= 1.0);
            assert_eq!(mean_metrics(&model, &batches), m);
            assert_eq!(t.evaluate(&model, &batches), m, "repeatable");
        }
    }
}
