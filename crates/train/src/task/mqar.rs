//! Multi-query associative recall (Arora et al. 2023, "Zoology", arXiv 2312.04927).
//!
//! A sequence opens with `num_kv_pairs` key-value pairs `k_1 v_1 k_2 v_2 …` (keys from
//! `[1, vocab/2)`, values from `[vocab/2, vocab)`, distinct within a sequence), then a query
//! region of zeros in which every key appears once more. Query gaps follow zoology's power law,
//! `p(g) ∝ g^(a−1)` over `space = (seq_len − 2·kv)/2` slots, drawn without replacement; a query
//! for key `k_i` sits at `2·kv + 2·g_i`. The model must output the matching value at the query
//! position; loss and accuracy count only those positions. Training draws a fresh sequence for
//! every slot of every batch, or with `train_examples = N` samples a fixed pool of N (zoology
//! trains on 100k; it shuffles whole epochs, attnlab draws from the pool with replacement, which
//! shows each sequence as often on average); the evaluation set is fixed by the seed.

use super::interface::{Batch, MainMetric, Target, Task, mean_metrics, token_batch_shape};
use super::text::batch_index;
use crate::config::MqarConfig;
use crate::seed;
use attnlab_model::{LmInput, Model, ModelInput, ModelIo};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, RngExt};
use std::collections::BTreeMap;

pub struct Mqar {
    config: MqarConfig,
    seed: u64,
}

/// One sequence: input tokens, target tokens (0 where unscored) and the scoring mask.
pub struct Example {
    pub tokens: Vec<i64>,
    pub targets: Vec<i64>,
    pub mask: Vec<f32>,
}

impl Mqar {
    pub fn new(config: MqarConfig, seed: u64) -> Self {
        Self { config, seed }
    }

    /// A sequence at the training length.
    pub fn example(&self, rng: &mut impl Rng) -> Example {
        self.example_at(rng, self.config.seq_len)
    }

    /// A sequence of `len` tokens holding [`MqarConfig::pairs_at`]`(len)` pairs.
    pub fn example_at(&self, rng: &mut impl Rng, len: usize) -> Example {
        let c = &self.config;
        let (kv, rebinds) = (c.pairs_at(len), c.rebinds_at(len));
        let half = c.vocab / 2;
        let keys = distinct(rng, 1, half, kv);
        let values = distinct(rng, half, c.vocab, kv + rebinds);
        let mut tokens = vec![0i64; len];
        let mut targets = vec![0i64; len];
        let mut mask = vec![0f32; len];
        for i in 0..kv {
            tokens[2 * i] = keys[i];
            tokens[2 * i + 1] = values[i];
        }
        // Forgetting MQAR: keys bound again to fresh values; queries want the latest binding.
        // (No draws at all without rebinding, so the plain task's stream is unchanged.)
        let mut latest = values[..kv].to_vec();
        for (r, &i) in distinct(rng, 0, kv, rebinds).iter().enumerate() {
            let (i, at) = (i as usize, 2 * (kv + r));
            tokens[at] = keys[i];
            tokens[at + 1] = values[kv + r];
            latest[i] = values[kv + r];
        }
        let prefix = 2 * (kv + rebinds);
        let space = (len - prefix) / 2;
        let weights: Vec<f64> =
            (1..=space).map(|g| c.power_a * (g as f64).powf(c.power_a - 1.0)).collect();
        for (i, gap) in weighted_without_replacement(rng, &weights, kv).into_iter().enumerate() {
            let pos = prefix + 2 * gap;
            tokens[pos] = keys[i];
            targets[pos] = latest[i];
            mask[pos] = 1.0;
        }
        Example { tokens, targets, mask }
    }

    /// Sequence `i` of the fixed training pool: a pure function of the seed and `i`, in its own
    /// stream (the evaluation set draws from another).
    pub fn pool_example(&self, i: usize) -> Example {
        self.example(&mut seed::rng(self.seed, "train-pool", i as u64))
    }

    fn batch(&self, examples: &[Example], device: &Device) -> Batch {
        let (b, t) = (examples.len(), examples.first().map_or(0, |e| e.tokens.len()));
        let ints = |f: &dyn Fn(&Example) -> &Vec<i64>| {
            let v: Vec<i64> = examples.iter().flat_map(|e| f(e).iter().copied()).collect();
            Tensor::<2, Int>::from_data(TensorData::new(v, [b, t]), device)
        };
        let mask: Vec<f32> = examples.iter().flat_map(|e| e.mask.iter().copied()).collect();
        Batch {
            input: LmInput::Tokens(ints(&|e| &e.tokens)),
            target: Target::Tokens {
                ids: ints(&|e| &e.targets),
                mask: Some(Tensor::<2>::from_data(TensorData::new(mask, [b, t]), device)),
            },
            tokens: b * t,
        }
    }
}

/// `n` distinct integers from `lo..hi`.
fn distinct(rng: &mut impl Rng, lo: usize, hi: usize, n: usize) -> Vec<i64> {
    let mut pool: Vec<i64> = (lo as i64..hi as i64).collect();
    for i in 0..n {
        let j = rng.random_range(i..pool.len());
        pool.swap(i, j);
    }
    pool.truncate(n);
    pool
}

/// `n` distinct indices drawn one after another with probability proportional to `weights`
/// among those not yet drawn (as numpy's `choice(replace=False, p=...)`).
fn weighted_without_replacement(rng: &mut impl Rng, weights: &[f64], n: usize) -> Vec<usize> {
    let mut w = weights.to_vec();
    let mut picked = Vec::with_capacity(n);
    for _ in 0..n {
        let total: f64 = w.iter().sum();
        let mut r = rng.random::<f64>() * total;
        let mut choice = w.iter().rposition(|&x| x > 0.0).expect("enough slots");
        for (i, &x) in w.iter().enumerate() {
            if x > 0.0 && r < x {
                choice = i;
                break;
            }
            r -= x;
        }
        picked.push(choice);
        w[choice] = 0.0;
    }
    picked
}

impl Task for Mqar {
    fn io(&self) -> ModelIo {
        ModelIo {
            input: ModelInput::Tokens { vocab: self.config.vocab },
            output_dim: self.config.vocab,
        }
    }
    fn main_metric(&self) -> MainMetric {
        MainMetric {
            name: "accuracy",
            higher_is_better: true,
            chance: Some(1.0 / self.config.num_kv_pairs.max(1) as f64),
        }
    }
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch {
        let mut rng = seed::rng(self.seed, "train", batch_index(step, micro));
        let ex: Vec<Example> = match self.config.train_examples {
            0 => (0..batch_size).map(|_| self.example(&mut rng)).collect(),
            pool => (0..batch_size).map(|_| self.pool_example(rng.random_range(0..pool))).collect(),
        };
        self.batch(&ex, device)
    }
    fn eval_batches(&self, _batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        self.eval_set(self.config.seq_len, batch_size, device)
    }
    /// The training length's metrics, then `accuracy@ℓ` and `loss@ℓ` at every
    /// `task.eval_lengths` entry, each on a fixed set of its own.
    fn evaluate(&self, model: &Model, batches: &[Batch]) -> BTreeMap<String, f64> {
        let mut metrics = mean_metrics(model, batches);
        let Some((device, batch_size)) = token_batch_shape(batches) else { return metrics };
        for &len in &self.config.eval_lengths {
            for (name, value) in mean_metrics(model, &self.eval_set(len, batch_size, &device)) {
                metrics.insert(format!("{name}@{len}"), value);
            }
        }
        metrics
    }
}

impl Mqar {
    /// The fixed evaluation set at `len` tokens: the training length's is the seed's "eval"
    /// stream, every other length a stream of its own.
    fn eval_set(&self, len: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        let mut rng = if len == self.config.seq_len {
            seed::rng(self.seed, "eval", 0)
        } else {
            seed::rng(self.seed, "eval-length", len as u64)
        };
        let ex: Vec<Example> =
            (0..self.config.eval_examples).map(|_| self.example_at(&mut rng, len)).collect();
        ex.chunks(batch_size.max(1)).map(|c| self.batch(c, device)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_queried_once_with_its_value_as_target() {
        let cfg = MqarConfig {
            vocab: 64,
            seq_len: 32,
            num_kv_pairs: 4,
            power_a: 0.01,
            eval_examples: 8,
            ..MqarConfig::default()
        };
        let task = Mqar::new(cfg, 3);
        let mut rng = seed::rng(3, "test", 0);
        for _ in 0..50 {
            let e = task.example(&mut rng);
            let pairs: Vec<(i64, i64)> =
                (0..4).map(|i| (e.tokens[2 * i], e.tokens[2 * i + 1])).collect();
            assert!(pairs.iter().all(|(k, v)| (1..32).contains(k) && (32..64).contains(v)));
            let queries: Vec<usize> = (0..32).filter(|&p| e.mask[p] == 1.0).collect();
            assert_eq!(queries.len(), 4);
            for p in queries {
                assert!(p >= 8 && (p - 8) % 2 == 0);
                let (_, v) = pairs.iter().find(|(k, _)| *k == e.tokens[p]).expect("query is a key");
                assert_eq!(e.targets[p], *v);
            }
        }
    }

    /// With `train_examples = N` every training sequence is one of the pool's N (each a pure
    /// function of seed and index, drawn from a stream apart from the evaluation set), and a
    /// few batches see all of a small pool; without it every draw is fresh.
    #[test]
    fn a_fixed_training_pool_is_all_batches_draw_from() {
        let cfg = MqarConfig {
            vocab: 64,
            seq_len: 32,
            num_kv_pairs: 4,
            eval_examples: 8,
            train_examples: 5,
            ..MqarConfig::default()
        };
        let task = Mqar::new(cfg.clone(), 9);
        let device = Device::flex();
        let tokens = |task: &Mqar, step: usize| -> Vec<Vec<i64>> {
            let LmInput::Tokens(t) = task.train_batch(step, 0, 16, &device).input else {
                panic!("tokens")
            };
            let v: Vec<i64> = t.into_data().convert::<i64>().try_into_vec().unwrap();
            v.chunks(32).map(|c| c.to_vec()).collect()
        };
        let pool: Vec<Vec<i64>> = (0..5).map(|i| task.pool_example(i).tokens).collect();
        assert_eq!(
            pool[2],
            Mqar::new(cfg.clone(), 9).pool_example(2).tokens,
            "the pool is fixed by the seed"
        );
        assert_ne!(pool[2], Mqar::new(cfg.clone(), 10).pool_example(2).tokens);
        let mut seen = std::collections::BTreeSet::new();
        for step in 0..4 {
            for seq in tokens(&task, step) {
                seen.insert(pool.iter().position(|p| *p == seq).expect("a pool sequence"));
            }
        }
        assert_eq!(seen.len(), 5, "64 draws from a pool of 5 see every sequence");
        let eval = task.eval_batches(1, 8, &device);
        let LmInput::Tokens(e) = &eval[0].input else { panic!("tokens") };
        let e: Vec<i64> = e.to_data().convert::<i64>().try_into_vec().unwrap();
        assert!(
            e.chunks(32).all(|seq| !pool.iter().any(|p| p == seq)),
            "evaluation sequences are not the pool's"
        );

        let fresh = Mqar::new(MqarConfig { train_examples: 0, ..cfg }, 9);
        let batch = tokens(&fresh, 0);
        let distinct: std::collections::BTreeSet<&Vec<i64>> = batch.iter().collect();
        assert_eq!(distinct.len(), 16, "fresh draws repeat no sequence");
    }

    /// At 4× the training length a sequence holds 4× the pairs, every key queried once with its
    /// value, and the evaluation reports each length's metrics next to the training length's.
    #[test]
    fn longer_sequences_hold_proportionally_more_pairs() {
        let cfg = MqarConfig {
            vocab: 128,
            seq_len: 32,
            num_kv_pairs: 4,
            power_a: 0.01,
            eval_examples: 6,
            eval_lengths: vec![64, 128],
            rebind_pairs: 0,
            train_examples: 0,
        };
        let task = Mqar::new(cfg, 3);
        let mut rng = seed::rng(3, "test", 0);
        for _ in 0..20 {
            let e = task.example_at(&mut rng, 128);
            assert_eq!(e.tokens.len(), 128);
            let pairs: Vec<(i64, i64)> =
                (0..16).map(|i| (e.tokens[2 * i], e.tokens[2 * i + 1])).collect();
            let queries: Vec<usize> = (0..128).filter(|&p| e.mask[p] == 1.0).collect();
            assert_eq!(queries.len(), 16);
            for p in queries {
                assert!(p >= 32);
                let (_, v) = pairs.iter().find(|(k, _)| *k == e.tokens[p]).expect("query is a key");
                assert_eq!(e.targets[p], *v);
            }
        }
        let device = Device::flex();
        let model = super::super::interface::tiny_model(&task.io(), 128, &device);
        let batches = task.eval_batches(1, 4, &device);
        let m = task.evaluate(&model, &batches);
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["accuracy", "accuracy@128", "accuracy@64", "loss", "loss@128", "loss@64"]
        );
        assert!(m.values().all(|v| v.is_finite()), "{m:?}");
        // The fixed sets repeat: evaluating again gives the same numbers.
        assert_eq!(task.evaluate(&model, &batches), m);
    }

    /// Forgetting MQAR: the rebound keys appear twice before the queries, with different values,
    /// and every query wants the value of its key's latest binding.
    #[test]
    fn rebound_keys_are_queried_for_their_latest_value() {
        let cfg = MqarConfig {
            vocab: 64,
            seq_len: 32,
            num_kv_pairs: 4,
            power_a: 0.01,
            eval_examples: 8,
            rebind_pairs: 2,
            ..MqarConfig::default()
        };
        let task = Mqar::new(cfg, 5);
        let mut rng = seed::rng(5, "test", 0);
        for _ in 0..50 {
            let e = task.example(&mut rng);
            // Pairs 0..4, then 2 rebindings at 8..12; queries from position 12 on.
            let bindings: Vec<(i64, i64)> =
                (0..6).map(|i| (e.tokens[2 * i], e.tokens[2 * i + 1])).collect();
            let rebound: Vec<i64> = bindings[4..].iter().map(|b| b.0).collect();
            assert_ne!(rebound[0], rebound[1]);
            for &k in &rebound {
                let values: Vec<i64> = bindings.iter().filter(|b| b.0 == k).map(|b| b.1).collect();
                assert_eq!(values.len(), 2, "key {k} bound twice");
                assert_ne!(values[0], values[1]);
            }
            let queries: Vec<usize> = (0..32).filter(|&p| e.mask[p] == 1.0).collect();
            assert_eq!(queries.len(), 4);
            for p in queries {
                assert!(p >= 12 && (p - 12) % 2 == 0);
                let latest =
                    bindings.iter().rev().find(|b| b.0 == e.tokens[p]).expect("query is a key").1;
                assert_eq!(e.targets[p], latest);
            }
        }
    }

    #[test]
    fn power_law_prefers_short_gaps() {
        let mut rng = seed::rng(1, "test", 0);
        let w: Vec<f64> = (1..=50).map(|g| 0.01 * (g as f64).powf(-0.99)).collect();
        let mut first = 0;
        for _ in 0..2000 {
            let p = weighted_without_replacement(&mut rng, &w, 3);
            assert_eq!(p.len(), 3);
            assert!(p[0] != p[1] && p[1] != p[2] && p[0] != p[2]);
            first += (p[0] == 0) as usize;
        }
        // p(g=1) = 1/H_50(0.99) ≈ 0.22.
        assert!((300..600).contains(&first), "{first}");
    }
}
