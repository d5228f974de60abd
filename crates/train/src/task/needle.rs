//! Needle retrieval in the style of RULER (Hsieh et al. 2024, "RULER: What's the Real Context
//! Size of Your Long-Context Language Models?", arXiv 2404.06654), synthetic and self-contained:
//! a haystack of random filler tokens hides needles `k = v`, and a query at the end asks for
//! what they hold. The answer follows the query (teacher-forced), and only the answer tokens
//! are scored.
//!
//! | `task.problem` | hidden (`n` = `task.needles`) | query and answer |
//! |---|---|---|
//! | `single` | one needle `k = v` | `? k` → `v` |
//! | `multikey` | n needles, distinct keys (n − 1 distractors) | `? k` for one → its `v` |
//! | `multivalue` | n needles with one key, distinct values | `? k` → `v₁ … vₙ` in order of appearance |
//! | `multiquery` | n needles, distinct keys | `? k v` for every needle, in a random order |
//! | `vartrack` | two chains `x₁ = V`, `x₂ = x₁`, …, `xₙ = xₙ₋₁` (the second a distractor with its own value), interleaved | `? V` → `x₁ … xₙ`, the variables holding the first chain's value |
//!
//! Token ids: 0 is `?`, 1 is `=`, then `task.keys` key (variable) tokens, `task.values` value
//! tokens and `task.filler` filler tokens. The haystack is uniform filler; the needles sit at
//! uniformly random places in it, in order. At an evaluation length ℓ (`task.eval_lengths`)
//! only the haystack grows. Chance: a uniform guess among the values (1/`values`), or among the
//! variables for `vartrack` (1/`keys`). Left out of RULER: needles in natural text (the haystack
//! here is random tokens), and its question-answering tasks, which need a pretrained reader.

use super::interface::{
    Batch, MainMetric, Target, Task, TaskError, eval_set_at_length, metrics_at_lengths,
    score_output,
};
use super::text::batch_index;
use crate::config::{NeedleConfig, NeedleProblem};
use crate::seed;
use attnlab_model::{LmInput, Model, ModelInput, ModelIo};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, RngExt};
use std::collections::BTreeMap;

/// The query marker's token id.
pub const QUERY: usize = 0;
/// The assignment marker's token id.
pub const ASSIGN: usize = 1;

pub struct Needle {
    config: NeedleConfig,
    problem: NeedleProblem,
    seed: u64,
}

/// One sequence: its tokens and, per position, whether the next token is an answer (scored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub tokens: Vec<usize>,
    /// `scored[t]`: position t predicts an answer token (`tokens[t + 1]`).
    pub scored: Vec<bool>,
}

/// `count` distinct draws from `0..n` in the order drawn (a partial Fisher–Yates shuffle).
fn distinct(rng: &mut impl Rng, n: usize, count: usize) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).collect();
    for i in 0..count {
        let j = rng.random_range(i..n);
        pool.swap(i, j);
    }
    pool.truncate(count);
    pool
}

impl Needle {
    pub fn new(config: NeedleConfig, seed: u64) -> Result<Self, TaskError> {
        let problem = config.parsed().map_err(TaskError::Problem)?;
        Ok(Self { config, problem, seed })
    }

    fn key(&self, i: usize) -> usize {
        2 + i
    }
    fn value(&self, i: usize) -> usize {
        2 + self.config.keys + i
    }
    fn filler(&self, i: usize) -> usize {
        2 + self.config.keys + self.config.values + i
    }

    /// A sequence of `len` tokens.
    pub fn example(&self, rng: &mut impl Rng, len: usize) -> Example {
        let c = &self.config;
        let n = c.needles;
        // The needles in the order they appear, and the query with its answer.
        let (needles, query): (Vec<[usize; 3]>, Vec<usize>) = match self.problem {
            NeedleProblem::Single | NeedleProblem::MultiKey => {
                let keys = distinct(rng, c.keys, n);
                let values: Vec<usize> = (0..n).map(|_| rng.random_range(0..c.values)).collect();
                let asked = rng.random_range(0..n);
                let query = vec![QUERY, self.key(keys[asked]), self.value(values[asked])];
                let needles =
                    keys.iter().zip(&values).map(|(&k, &v)| [self.key(k), ASSIGN, self.value(v)]);
                (needles.collect(), query)
            }
            NeedleProblem::MultiValue => {
                let key = self.key(rng.random_range(0..c.keys));
                let values: Vec<usize> =
                    distinct(rng, c.values, n).into_iter().map(|v| self.value(v)).collect();
                let mut query = vec![QUERY, key];
                query.extend(&values);
                (values.iter().map(|&v| [key, ASSIGN, v]).collect(), query)
            }
            NeedleProblem::MultiQuery => {
                let keys = distinct(rng, c.keys, n);
                let values: Vec<usize> = (0..n).map(|_| rng.random_range(0..c.values)).collect();
                let needles: Vec<[usize; 3]> = keys
                    .iter()
                    .zip(&values)
                    .map(|(&k, &v)| [self.key(k), ASSIGN, self.value(v)])
                    .collect();
                let order = distinct(rng, n, n);
                let query =
                    order.iter().flat_map(|&i| [QUERY, needles[i][0], needles[i][2]]).collect();
                (needles, query)
            }
            NeedleProblem::VariableTracking => {
                let vars: Vec<usize> =
                    distinct(rng, c.keys, 2 * n).into_iter().map(|k| self.key(k)).collect();
                let values: Vec<usize> =
                    distinct(rng, c.values, 2).into_iter().map(|v| self.value(v)).collect();
                let chain = |which: usize| -> Vec<[usize; 3]> {
                    let vars = &vars[which * n..(which + 1) * n];
                    (0..n)
                        .map(|i| {
                            [vars[i], ASSIGN, if i == 0 { values[which] } else { vars[i - 1] }]
                        })
                        .collect()
                };
                let (first, second) = (chain(0), chain(1));
                // A random interleaving that keeps each chain's assignments in order.
                let from_first = distinct(rng, 2 * n, n);
                let (mut a, mut b) = (first.iter(), second.iter());
                let needles = (0..2 * n)
                    .map(|slot| {
                        let next = if from_first.contains(&slot) { a.next() } else { b.next() };
                        *next.expect("n slots each")
                    })
                    .collect();
                let mut query = vec![QUERY, values[0]];
                query.extend(&vars[..n]);
                (needles, query)
            }
        };
        let answers = self.problem.answers(n);
        let haystack = len - 3 * needles.len() - query.len();
        // Needle j goes before filler token `places[j]`, a sorted uniform draw of gaps.
        let mut places: Vec<usize> =
            (0..needles.len()).map(|_| rng.random_range(0..=haystack)).collect();
        places.sort_unstable();
        let mut tokens = Vec::with_capacity(len);
        let mut next = needles.iter().zip(&places).peekable();
        for i in 0..=haystack {
            while let Some((needle, _)) = next.next_if(|(_, p)| **p == i) {
                tokens.extend(needle);
            }
            if i < haystack {
                tokens.push(self.filler(rng.random_range(0..c.filler)));
            }
        }
        let start = tokens.len();
        tokens.extend(&query);
        let mut scored = vec![false; len];
        for (offset, _) in query.iter().enumerate() {
            if self.problem.is_answer(offset, query.len(), n) {
                scored[start + offset - 1] = true;
            }
        }
        debug_assert_eq!(scored.iter().filter(|&&s| s).count(), answers);
        Example { tokens, scored }
    }

    fn batch(&self, rng: &mut impl Rng, size: usize, len: usize, device: &Device) -> Batch {
        let (mut inputs, mut targets, mut mask) =
            (Vec::with_capacity(size * len), Vec::with_capacity(size * len), Vec::new());
        for _ in 0..size {
            let e = self.example(rng, len);
            inputs.extend(e.tokens.iter().map(|&t| t as i64));
            targets.extend((0..len).map(|t| e.tokens.get(t + 1).copied().unwrap_or(0) as i64));
            mask.extend(e.scored.iter().map(|&s| if s { 1.0f32 } else { 0.0 }));
        }
        let ints =
            |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [size, len]), device);
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [size, len]), device);
        Batch {
            input: LmInput::Tokens(ints(inputs)),
            target: Target::Tokens { ids: ints(targets), mask: Some(mask) },
            tokens: size * len,
        }
    }

    /// The fixed evaluation set at `len` ([`eval_set_at_length`]).
    fn eval_set(&self, len: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        let c = &self.config;
        eval_set_at_length(
            self.seed,
            c.seq_len,
            len,
            c.eval_examples,
            batch_size,
            |rng: &mut StdRng, size, len| self.batch(rng, size, len, device),
        )
    }
}

impl NeedleProblem {
    /// Answer tokens per sequence.
    pub fn answers(self, n: usize) -> usize {
        match self {
            NeedleProblem::Single | NeedleProblem::MultiKey => 1,
            NeedleProblem::MultiValue
            | NeedleProblem::MultiQuery
            | NeedleProblem::VariableTracking => n,
        }
    }

    /// Whether query token `offset` (of `query_len`) is an answer.
    fn is_answer(self, offset: usize, query_len: usize, n: usize) -> bool {
        match self {
            NeedleProblem::MultiQuery => offset % 3 == 2,
            _ => offset >= query_len - self.answers(n),
        }
    }
}

/// Loss, accuracy over answer tokens, and `exact`: sequences whose every answer is right.
fn scores(model: &Model, batches: &[Batch]) -> BTreeMap<&'static str, f64> {
    let (mut loss, mut hits, mut count, mut exact, mut sequences) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for batch in batches {
        let out = model.forward(batch.input.clone());
        let Target::Tokens { ids, mask: Some(mask) } = &batch.target else { continue };
        let [b, t, _] = out.dims();
        let wrong =
            out.clone().argmax(2).reshape([b, t]).not_equal(ids.clone()).float() * mask.clone();
        let all_right = wrong.sum_dim(1).lower_equal_elem(0.0).float().sum();
        exact += all_right.into_scalar::<f32>() as f64;
        sequences += b as f64;
        let s = score_output(out, &batch.target);
        loss += s.loss.into_scalar::<f32>() as f64;
        if let Some((h, c)) = s.accuracy {
            hits += h.into_scalar::<f32>() as f64;
            count += c.into_scalar::<f32>() as f64;
        }
    }
    BTreeMap::from([
        ("loss", loss / batches.len().max(1) as f64),
        ("accuracy", hits / count.max(1.0)),
        ("exact", exact / sequences.max(1.0)),
    ])
}

impl Task for Needle {
    fn io(&self) -> ModelIo {
        let vocab = self.config.vocab();
        ModelIo { input: ModelInput::Tokens { vocab }, output_dim: vocab }
    }
    /// Accuracy over answer tokens; chance is a uniform guess among the possible answers.
    fn main_metric(&self) -> MainMetric {
        let among = match self.problem {
            NeedleProblem::VariableTracking => self.config.keys,
            _ => self.config.values,
        };
        MainMetric { name: "accuracy", higher_is_better: true, chance: Some(1.0 / among as f64) }
    }
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch {
        let mut rng = seed::rng(self.seed, "train", batch_index(step, micro));
        self.batch(&mut rng, batch_size, self.config.seq_len, device)
    }
    fn eval_batches(&self, _batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        self.eval_set(self.config.seq_len, batch_size, device)
    }
    /// The training length's loss, accuracy and exact match, then the same at every
    /// `task.eval_lengths` entry as `name@ℓ`.
    fn evaluate(&self, model: &Model, batches: &[Batch]) -> BTreeMap<String, f64> {
        metrics_at_lengths(
            batches,
            &self.config.eval_lengths,
            |b| scores(model, b),
            |len, size, device| self.eval_set(len, size, device),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(problem: &str, needles: usize, seq_len: usize) -> Needle {
        let config = NeedleConfig {
            problem: problem.into(),
            seq_len,
            keys: 8,
            values: 8,
            filler: 16,
            needles,
            eval_lengths: vec![2 * seq_len],
            eval_examples: 6,
        };
        Needle::new(config, 7).unwrap()
    }

    /// What an independent reader finds in a sequence: every `a = b` triple outside the query,
    /// and the query part (from the first `?`).
    fn read(t: &Needle, e: &Example) -> (Vec<(usize, usize)>, Vec<usize>) {
        let first_query = e.tokens.iter().position(|&x| x == QUERY).unwrap();
        let hay = &e.tokens[..first_query];
        let triples = (1..hay.len().saturating_sub(1))
            .filter(|&i| hay[i] == ASSIGN)
            .map(|i| (hay[i - 1], hay[i + 1]))
            .collect();
        // Filler never looks like a key, value or marker.
        assert!(hay.iter().all(|&x| x < 2 + t.config.keys + t.config.values + t.config.filler));
        (triples, e.tokens[first_query..].to_vec())
    }

    /// The scored positions, read back: the tokens that follow them.
    fn answers(e: &Example) -> Vec<usize> {
        (0..e.tokens.len()).filter(|&i| e.scored[i]).map(|i| e.tokens[i + 1]).collect()
    }

    /// A fixed seed gives a known sequence, and every answer is what an independent reading of
    /// the needles says it should be, for every problem and at two lengths.
    #[test]
    fn a_fixed_seed_gives_a_known_sequence_with_correct_answers() {
        let single = task("single", 1, 16);
        let e = single.example(&mut seed::rng(7, "train", 0), 16);
        assert_eq!(e.tokens, PINNED);
        assert_eq!(answers(&e), [e.tokens[15]]);

        let mut rng = seed::rng(3, "test", 0);
        for len in [40, 80] {
            for _ in 0..20 {
                // single and multikey: the value hidden under the asked key.
                for (problem, n) in [("single", 1), ("multikey", 4)] {
                    let t = task(problem, n, len);
                    let e = t.example(&mut rng, len);
                    assert_eq!(e.tokens.len(), len);
                    let (triples, query) = read(&t, &e);
                    assert_eq!(triples.len(), n, "{problem}: {:?}", e.tokens);
                    let keys: std::collections::BTreeSet<_> = triples.iter().map(|p| p.0).collect();
                    assert_eq!(keys.len(), n, "{problem}: keys are distinct");
                    assert_eq!(query.len(), 3);
                    let hidden = triples.iter().find(|p| p.0 == query[1]).unwrap().1;
                    assert_eq!(answers(&e), [hidden], "{problem}");
                }
                // multivalue: every value under the key, in order of appearance.
                let t = task("multivalue", 3, len);
                let e = t.example(&mut rng, len);
                let (triples, query) = read(&t, &e);
                assert!(triples.iter().all(|p| p.0 == query[1]));
                assert_eq!(answers(&e), triples.iter().map(|p| p.1).collect::<Vec<_>>());
                // multiquery: each asked key's value.
                let t = task("multiquery", 3, len);
                let e = t.example(&mut rng, len);
                let (triples, query) = read(&t, &e);
                let asked: Vec<usize> = query.chunks(3).map(|q| q[1]).collect();
                let want: Vec<usize> =
                    asked.iter().map(|k| triples.iter().find(|p| p.0 == *k).unwrap().1).collect();
                assert_eq!(answers(&e), want);
                assert_eq!(asked.len(), 3);
                // vartrack: follow the assignments; the answer is every variable holding V.
                let t = task("vartrack", 3, len);
                let e = t.example(&mut rng, len);
                let (triples, query) = read(&t, &e);
                assert_eq!(triples.len(), 6);
                let mut holds = std::collections::BTreeMap::new();
                for &(var, from) in &triples {
                    let value = if from >= 2 + t.config.keys { from } else { holds[&from] };
                    holds.insert(var, value);
                }
                let mut want: Vec<usize> = Vec::new();
                for &(var, _) in &triples {
                    if holds[&var] == query[1] {
                        want.push(var);
                    }
                }
                assert_eq!(answers(&e), want, "{:?}", e.tokens);
            }
        }
    }

    /// Seed 7's first training sequence: filler (18..=33), the needle `5 = 10` (key 3, value 0),
    /// more filler, then `? 5 10`.
    const PINNED: [usize; 16] = [18, 20, 32, 32, 5, 1, 10, 24, 21, 18, 21, 21, 32, 0, 5, 10];

    /// Chance is one over the answers' alphabet; training batches repeat per (seed, step);
    /// evaluation reports every length.
    #[test]
    fn chance_batches_and_evaluation() {
        let device = Device::flex();
        let t = task("multikey", 3, 24);
        assert_eq!(t.main_metric().chance, Some(1.0 / 8.0));
        assert_eq!(task("vartrack", 2, 24).main_metric().chance, Some(1.0 / 8.0));
        assert_eq!(t.io().output_dim, 2 + 8 + 8 + 16);
        let tokens = |b: Batch| -> Vec<i64> {
            let LmInput::Tokens(x) = b.input else { panic!("tokens") };
            x.into_data().convert::<i64>().try_into_vec().unwrap()
        };
        assert_eq!(
            tokens(t.train_batch(3, 1, 4, &device)),
            tokens(t.train_batch(3, 1, 4, &device))
        );
        assert_ne!(
            tokens(t.train_batch(3, 1, 4, &device)),
            tokens(t.train_batch(4, 1, 4, &device))
        );
        let model = super::super::interface::tiny_model(&t.io(), 48, &device);
        let batches = t.eval_batches(1, 4, &device);
        let m = t.evaluate(&model, &batches);
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(keys, ["accuracy", "accuracy@48", "exact", "exact@48", "loss", "loss@48"]);
        assert!(m.values().all(|v| v.is_finite() && *v >= 0.0), "{m:?}");
        assert_eq!(t.evaluate(&model, &batches), m);
        // Answers are spread over the values: over 400 single needles each value comes up.
        let single = task("single", 1, 12);
        let mut rng = seed::rng(5, "test", 0);
        let mut seen = [0usize; 8];
        for _ in 0..400 {
            let e = single.example(&mut rng, 12);
            seen[answers(&e)[0] - 2 - 8] += 1;
        }
        assert!(seen.iter().all(|&c| (25..=75).contains(&c)), "{seen:?}");
    }
}
