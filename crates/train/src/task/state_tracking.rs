//! State tracking: the word problem of a finite group (Merrill, Petty, Sabharwal 2024, "The
//! Illusion of State in State-Space Models", arXiv 2404.08819; Grazzi et al. 2024, "Unlocking
//! State-Tracking in Linear RNNs Through Negative Eigenvalues", arXiv 2411.12537).
//!
//! A sequence is `L` group elements drawn uniformly, one token each; the target at every
//! position is the running product of the elements so far, as a token of the same group:
//! - `parity`: bits; the state is the parity of the ones so far (Z₂);
//! - `mod<m>`: tokens `0..m`; the state is their sum mod m (Z_m);
//! - `s<n>`: every permutation of `0..n` is one token, its rank in lexicographic order (the
//!   identity is 0); the state is the composition "apply the first, then the second, …"
//!   (`(a ; b)[i] = b[a[i]]`), the symmetric group S_n with n! elements.
//!
//! Every position is scored, so a model trained at length L is trained at every prefix length
//! 1..=L. The main metric is the per-position accuracy; `final_accuracy` scores the last position
//! alone. With the elements uniform, every prefix's state is uniform over the group, so guessing
//! is right with probability 1/|G| at every position: 1/2, 1/3, 1/5, 1/6 and 1/120 for parity,
//! mod 3, mod 5, S₃ and S₅. Length generalisation: `eval_lengths` (e.g. 2L, 4L, 8L), each on a
//! fixed set of its own, reported as `accuracy@ℓ`, `final_accuracy@ℓ` and `loss@ℓ`.
//!
//! What the literature expects: parity needs a state transition with a negative eigenvalue, so a
//! linear RNN whose transitions have eigenvalues in [0, 1] (Mamba's decay, DeltaNet with β ∈ (0,
//! 1)) cannot represent it at any length, while DeltaNet with β ∈ (0, 2) can (Grazzi et al.); S₅
//! is not solvable, so no fixed-depth diagonal SSM or transformer tracks it at every length
//! (Merrill et al.).

use super::interface::{
    Batch, MainMetric, Target, Task, TaskError, eval_set_at_length, metrics_at_lengths,
    score_output,
};
use super::text::batch_index;
use crate::config::{Problem, StateTrackingConfig};
use crate::seed;
use attnlab_model::{LmInput, Model, ModelInput, ModelIo};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, RngExt};
use std::collections::BTreeMap;

/// A finite group with its elements numbered `0..order`, 0 the identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Group {
    /// Z_m: element i is the residue i; the product is addition mod m.
    Cyclic(usize),
    /// S_n: element i is the permutation of lexicographic rank i.
    Symmetric(usize),
}

impl Group {
    pub fn of(problem: Problem) -> Self {
        match problem {
            Problem::Parity => Group::Cyclic(2),
            Problem::Modular(m) => Group::Cyclic(m),
            Problem::Symmetric(n) => Group::Symmetric(n),
        }
    }

    /// The number of elements.
    pub fn order(&self) -> usize {
        match *self {
            Group::Cyclic(m) => m,
            Group::Symmetric(n) => (1..=n).product(),
        }
    }

    /// `a` then `b`: `a + b mod m`, or the permutation that applies `a` first, then `b`.
    pub fn compose(&self, a: usize, b: usize) -> usize {
        match *self {
            Group::Cyclic(m) => (a + b) % m,
            Group::Symmetric(n) => {
                let (pa, pb) = (unrank(a, n), unrank(b, n));
                rank(&pa.iter().map(|&i| pb[i]).collect::<Vec<_>>())
            }
        }
    }

    /// The running products of `elements`: position t holds `e_0 ; e_1 ; … ; e_t`.
    pub fn prefix_products(&self, elements: &[usize]) -> Vec<usize> {
        let mut state = 0;
        elements
            .iter()
            .map(|&e| {
                state = self.compose(state, e);
                state
            })
            .collect()
    }
}

/// The permutation of `0..n` with lexicographic rank `r` (its Lehmer code read in factorial base).
pub fn unrank(mut r: usize, n: usize) -> Vec<usize> {
    let mut left: Vec<usize> = (0..n).collect();
    let mut out = Vec::with_capacity(n);
    for i in (0..n).rev() {
        let block: usize = (1..=i).product();
        out.push(left.remove(r / block));
        r %= block;
    }
    out
}

/// The lexicographic rank of a permutation of `0..n`.
pub fn rank(p: &[usize]) -> usize {
    let n = p.len();
    (0..n)
        .map(|i| {
            let smaller_later = p[i + 1..].iter().filter(|&&x| x < p[i]).count();
            smaller_later * (1..n - i).product::<usize>()
        })
        .sum()
}

pub struct StateTracking {
    config: StateTrackingConfig,
    group: Group,
    seed: u64,
}

/// One sequence: the elements (input tokens) and the running products (targets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub tokens: Vec<usize>,
    pub states: Vec<usize>,
}

impl StateTracking {
    pub fn new(config: StateTrackingConfig, seed: u64) -> Result<Self, TaskError> {
        let problem = config.parsed().map_err(TaskError::Problem)?;
        Ok(Self { group: Group::of(problem), config, seed })
    }

    pub fn group(&self) -> &Group {
        &self.group
    }

    /// `len` uniform elements and their running products.
    pub fn example(&self, rng: &mut impl Rng, len: usize) -> Example {
        let order = self.group.order();
        let tokens: Vec<usize> = (0..len).map(|_| rng.random_range(0..order)).collect();
        let states = self.group.prefix_products(&tokens);
        Example { tokens, states }
    }

    fn batch(&self, rng: &mut impl Rng, size: usize, len: usize, device: &Device) -> Batch {
        let (mut tokens, mut states) =
            (Vec::with_capacity(size * len), Vec::with_capacity(size * len));
        for _ in 0..size {
            let e = self.example(rng, len);
            tokens.extend(e.tokens.iter().map(|&t| t as i64));
            states.extend(e.states.iter().map(|&s| s as i64));
        }
        let ints =
            |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [size, len]), device);
        Batch {
            input: LmInput::Tokens(ints(tokens)),
            target: Target::Tokens { ids: ints(states), mask: None },
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

/// Loss, per-position accuracy and last-position accuracy over `batches`.
fn scores(model: &Model, batches: &[Batch]) -> BTreeMap<&'static str, f64> {
    let (mut loss, mut hits, mut count, mut final_hits, mut sequences) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for batch in batches {
        let out = model.forward(batch.input.clone());
        let Target::Tokens { ids, .. } = &batch.target else { continue };
        let [b, t, _] = out.dims();
        let last = out
            .clone()
            .narrow(1, t - 1, 1)
            .argmax(2)
            .reshape([b])
            .equal(ids.clone().narrow(1, t - 1, 1).reshape([b]))
            .float()
            .sum();
        final_hits += last.into_scalar::<f32>() as f64;
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
        ("final_accuracy", final_hits / sequences.max(1.0)),
    ])
}

impl Task for StateTracking {
    fn io(&self) -> ModelIo {
        let order = self.group.order();
        ModelIo { input: ModelInput::Tokens { vocab: order }, output_dim: order }
    }
    /// Per-position accuracy; chance is 1/|G| (every prefix's state is uniform).
    fn main_metric(&self) -> MainMetric {
        MainMetric {
            name: "accuracy",
            higher_is_better: true,
            chance: Some(1.0 / self.group.order() as f64),
        }
    }
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch {
        let mut rng = seed::rng(self.seed, "train", batch_index(step, micro));
        self.batch(&mut rng, batch_size, self.config.seq_len, device)
    }
    fn eval_batches(&self, _batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        self.eval_set(self.config.seq_len, batch_size, device)
    }
    /// The training length's loss, accuracy and final accuracy, then the same at every
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

    fn task(problem: &str, seq_len: usize) -> StateTracking {
        let config = StateTrackingConfig {
            problem: problem.into(),
            seq_len,
            eval_lengths: vec![2 * seq_len, 4 * seq_len],
            eval_examples: 6,
        };
        StateTracking::new(config, 7).unwrap()
    }

    /// All permutations of `0..n` in lexicographic order, by the textbook next-permutation step
    /// (an enumeration independent of [`rank`] and [`unrank`]).
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        let mut p: Vec<usize> = (0..n).collect();
        let mut all = vec![p.clone()];
        loop {
            let Some(i) = (0..n.saturating_sub(1)).rev().find(|&i| p[i] < p[i + 1]) else {
                return all;
            };
            let j = (i + 1..n).rev().find(|&j| p[j] > p[i]).expect("a larger element");
            p.swap(i, j);
            p[i + 1..].reverse();
            all.push(p.clone());
        }
    }

    /// The indexing of S_n is the lexicographic order, identity first, and composition agrees
    /// with composing the explicit permutation arrays, for every pair in S₃ and S₄.
    #[test]
    fn permutation_indexing_and_composition_match_explicit_arrays() {
        for n in [2, 3, 4, 5] {
            let all = permutations(n);
            assert_eq!(all.len(), Group::Symmetric(n).order());
            for (i, p) in all.iter().enumerate() {
                assert_eq!((rank(p), &unrank(i, n)), (i, p), "S{n} element {i}");
            }
        }
        for n in [3, 4] {
            let (all, g) = (permutations(n), Group::Symmetric(n));
            for (a, pa) in all.iter().enumerate() {
                for (b, pb) in all.iter().enumerate() {
                    // Apply a, then b: position i goes to a[i], then to b[a[i]].
                    let mut composed = vec![0; n];
                    for i in 0..n {
                        composed[i] = pb[pa[i]];
                    }
                    let expected = all.iter().position(|p| *p == composed).unwrap();
                    assert_eq!(g.compose(a, b), expected, "S{n}: {pa:?} then {pb:?}");
                }
            }
        }
        // S₃ is not commutative, Z_5 is, and 0 is the identity of both.
        let s3 = Group::Symmetric(3);
        assert!((0..6).any(|a| (0..6).any(|b| s3.compose(a, b) != s3.compose(b, a))));
        assert!((0..6).all(|a| s3.compose(0, a) == a && s3.compose(a, 0) == a));
        let z5 = Group::Cyclic(5);
        assert!((0..5).all(|a| (0..5).all(|b| z5.compose(a, b) == z5.compose(b, a))));
        assert_eq!(z5.compose(3, 4), 2);
    }

    /// A fixed seed gives a known sequence, and every label is the running product by an
    /// independent computation: the count of ones mod 2, the sum mod m, the explicit permutation
    /// arrays composed in order.
    #[test]
    fn a_fixed_seed_gives_a_known_sequence_with_correct_labels() {
        let parity = task("parity", 12);
        let e = parity.example(&mut seed::rng(7, "train", 0), 12);
        assert_eq!(e.tokens, [0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0]);
        assert_eq!(e.states, [0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1]);
        let mod5 = task("mod5", 8);
        let e = mod5.example(&mut seed::rng(7, "train", 0), 8);
        assert_eq!(e.tokens, [2, 0, 4, 2, 0, 0, 4, 4]);
        assert_eq!(e.states, [2, 2, 1, 3, 3, 3, 2, 1]);
        let s5 = task("s5", 4);
        let e = s5.example(&mut seed::rng(7, "train", 0), 4);
        // 56 = (2, 1, 3, 0, 4) and 13 = (0, 3, 1, 4, 2) in lexicographic order (as Python's
        // itertools.permutations(range(5)) numbers them, which gives the same states).
        assert_eq!(e.tokens, [56, 13, 106, 48]);
        assert_eq!(e.states, [56, 40, 25, 7]);

        let mut rng = seed::rng(3, "test", 0);
        for (problem, m) in [("parity", 2), ("mod3", 3), ("mod5", 5)] {
            let e = task(problem, 40).example(&mut rng, 40);
            for t in 0..40 {
                let ones_or_sum: usize = e.tokens[..=t].iter().sum();
                assert_eq!(e.states[t], ones_or_sum % m, "{problem} at {t}");
                assert!(e.tokens[t] < m);
            }
        }
        for n in [3, 5] {
            let all = permutations(n);
            let e = task(&format!("s{n}"), 30).example(&mut rng, 30);
            let mut state: Vec<usize> = (0..n).collect();
            for t in 0..30 {
                let next = &all[e.tokens[t]];
                state = state.iter().map(|&i| next[i]).collect();
                assert_eq!(all[e.states[t]], state, "s{n} at {t}");
            }
        }
    }

    /// Chance is 1/|G|, and the states the generator labels are uniform over the group (so
    /// guessing any one state is right that often at every position).
    #[test]
    fn chance_is_one_over_the_group_order_and_states_are_uniform() {
        let device = Device::flex();
        for (problem, order) in [("parity", 2), ("mod3", 3), ("mod5", 5), ("s3", 6), ("s5", 120)] {
            let t = task(problem, 16);
            assert_eq!(t.main_metric().chance, Some(1.0 / order as f64), "{problem}");
            assert_eq!(
                (t.io().output_dim, t.io().input),
                (order, ModelInput::Tokens { vocab: order })
            );
            let batch = t.train_batch(5, 0, 250, &device);
            let Target::Tokens { ids, mask: None } = &batch.target else { panic!("tokens") };
            let states: Vec<i64> = ids.to_data().convert::<i64>().try_into_vec().unwrap();
            let mut counts = vec![0usize; order];
            states.iter().for_each(|&s| counts[s as usize] += 1);
            let expected = states.len() as f64 / order as f64;
            // 4000 labels: every state within 5 standard deviations of its expected count.
            let sd = (expected * (1.0 - 1.0 / order as f64)).sqrt();
            for (s, &c) in counts.iter().enumerate() {
                assert!((c as f64 - expected).abs() < 5.0 * sd, "{problem}: state {s} {c} times");
            }
        }
    }

    /// Training batches are a pure function of (seed, step); evaluation reports every length's
    /// loss, accuracy and final accuracy, on sets that repeat.
    #[test]
    fn batches_repeat_and_evaluation_reports_every_length() {
        let device = Device::flex();
        let t = task("s3", 8);
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
        let model = super::super::interface::tiny_model(&t.io(), 32, &device);
        let batches = t.eval_batches(1, 4, &device);
        assert_eq!(batches.iter().map(|b| b.tokens).sum::<usize>(), 6 * 8);
        let m = t.evaluate(&model, &batches);
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "accuracy",
                "accuracy@16",
                "accuracy@32",
                "final_accuracy",
                "final_accuracy@16",
                "final_accuracy@32",
                "loss",
                "loss@16",
                "loss@32"
            ]
        );
        assert!(m.values().all(|v| v.is_finite() && *v >= 0.0), "{m:?}");
        assert!(m.iter().filter(|(k, _)| k.contains("accuracy")).all(|(_, v)| *v <= 1.0));
        assert_eq!(t.evaluate(&model, &batches), m);
    }
}
