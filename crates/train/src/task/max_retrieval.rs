//! Max retrieval (after Veličković, Perivolaropoulos, Barbero, Pascanu 2024, "softmax is not
//! enough (for sharp out-of-distribution)", arXiv 2410.01104): read `n` items and output the
//! largest.
//!
//! A sequence is `n` distinct item tokens drawn uniformly from `1..vocab`, then the query token
//! 0 (distinct, so that the largest item is not simply the top token once `n` is large); the target at the query position is the largest item, and only that position
//! is scored. Training draws `n` uniformly from `min_items..=max_items` per batch; evaluation
//! uses `max_items` (the main metric) and every `eval_items` entry, reported as `accuracy@n`,
//! `loss@n` and `max_weight@n`: the largest attention weight of the query's row in the last
//! layer, averaged over heads and examples. The paper's point is that softmax's attention
//! disperses as `n` grows past the training range (the max weight falls like `1/n` for fixed
//! logits), so sharp retrieval fails out of distribution.

use super::interface::{Batch, MainMetric, Target, Task, mean_metrics, token_batch_shape};
use super::text::batch_index;
use crate::config::MaxRetrievalConfig;
use crate::seed;
use attnlab_model::{LmInput, Model, ModelInput, ModelIo};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, RngExt};
use std::collections::BTreeMap;

pub struct MaxRetrieval {
    config: MaxRetrievalConfig,
    seed: u64,
}

impl MaxRetrieval {
    pub fn new(config: MaxRetrievalConfig, seed: u64) -> Self {
        Self { config, seed }
    }

    /// `n` items and the query token; returns the tokens and the target (the largest item).
    pub fn example(&self, rng: &mut impl Rng, n: usize) -> (Vec<i64>, i64) {
        // A partial Fisher–Yates shuffle of 1..vocab: n distinct items in random order.
        let mut pool: Vec<i64> = (1..self.config.vocab as i64).collect();
        for i in 0..n {
            let j = rng.random_range(i..pool.len());
            pool.swap(i, j);
        }
        let mut tokens = pool[..n].to_vec();
        let target = *tokens.iter().max().expect("at least one item");
        tokens.push(0);
        (tokens, target)
    }

    fn batch(&self, rng: &mut impl Rng, size: usize, n: usize, device: &Device) -> Batch {
        let t = n + 1;
        let (mut tokens, mut targets, mut mask) =
            (Vec::with_capacity(size * t), vec![0i64; size * t], vec![0f32; size * t]);
        for e in 0..size {
            let (x, target) = self.example(rng, n);
            tokens.extend(x);
            targets[e * t + n] = target;
            mask[e * t + n] = 1.0;
        }
        let ints = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [size, t]), device);
        Batch {
            input: LmInput::Tokens(ints(tokens)),
            target: Target::Tokens {
                ids: ints(targets),
                mask: Some(Tensor::<2>::from_data(TensorData::new(mask, [size, t]), device)),
            },
            tokens: size * t,
        }
    }

    /// The fixed evaluation set with `n` items (a seeded stream per `n`).
    fn eval_set(&self, n: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        let mut rng = seed::rng(self.seed, "eval-items", n as u64);
        let total = self.config.eval_examples;
        (0..total.div_ceil(batch_size.max(1)))
            .map(|i| {
                let size = batch_size.max(1).min(total - i * batch_size.max(1));
                self.batch(&mut rng, size, n, device)
            })
            .collect()
    }
}

/// The largest weight in the last query row of the last layer, averaged over heads and examples.
fn query_max_weight(model: &Model, batches: &[Batch]) -> f64 {
    let mut values = Vec::new();
    for batch in batches {
        let (_, diags) = model.forward_with_diagnostics(batch.input.clone());
        if let Some(last) = diags.last() {
            let t = last.weights.dims()[2];
            values.push(
                last.weights.clone().narrow(2, t - 1, 1).max_dim(3).mean().into_scalar::<f32>()
                    as f64,
            );
        }
    }
    if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 }
}

impl Task for MaxRetrieval {
    fn io(&self) -> ModelIo {
        ModelIo {
            input: ModelInput::Tokens { vocab: self.config.vocab },
            output_dim: self.config.vocab,
        }
    }
    fn main_metric(&self) -> MainMetric {
        {
            // Guessing one of the n items in context, n uniform in min_items..=max_items.
            let (lo, hi) = (self.config.min_items.max(1), self.config.max_items.max(1));
            let chance =
                (lo..=hi).map(|n| 1.0 / n as f64).sum::<f64>() / (hi + 1 - lo).max(1) as f64;
            MainMetric { name: "accuracy", higher_is_better: true, chance: Some(chance) }
        }
    }
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch {
        let mut rng = seed::rng(self.seed, "train", batch_index(step, micro));
        let n = rng.random_range(self.config.min_items..=self.config.max_items);
        self.batch(&mut rng, batch_size, n, device)
    }
    fn eval_batches(&self, _batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        self.eval_set(self.config.max_items, batch_size, device)
    }
    /// The training range's largest `n`, then accuracy, loss and the query's max attention
    /// weight at every `eval_items` entry.
    fn evaluate(&self, model: &Model, batches: &[Batch]) -> BTreeMap<String, f64> {
        let mut metrics = mean_metrics(model, batches);
        let Some((device, batch_size)) = token_batch_shape(batches) else { return metrics };
        for &n in &self.config.eval_items {
            let set = self.eval_set(n, batch_size, &device);
            for (name, value) in mean_metrics(model, &set) {
                metrics.insert(format!("{name}@{n}"), value);
            }
            metrics.insert(format!("max_weight@{n}"), query_max_weight(model, &set));
        }
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MaxRetrievalConfig {
        MaxRetrievalConfig {
            vocab: 48,
            min_items: 2,
            max_items: 8,
            eval_items: vec![8, 32],
            eval_examples: 10,
        }
    }

    #[test]
    fn the_target_is_the_largest_item_and_only_the_query_is_scored() {
        let task = MaxRetrieval::new(config(), 1);
        let mut rng = seed::rng(1, "test", 0);
        for n in [1, 5, 40] {
            let (tokens, target) = task.example(&mut rng, n);
            assert_eq!(tokens.len(), n + 1);
            assert_eq!(tokens[n], 0, "the query token closes the sequence");
            assert!(tokens[..n].iter().all(|&x| (1..48).contains(&x)));
            let mut items = tokens[..n].to_vec();
            items.sort();
            items.dedup();
            assert_eq!(items.len(), n, "items are distinct");
            assert_eq!(target, *tokens[..n].iter().max().unwrap());
        }
        let device = Device::flex();
        let b = task.train_batch(3, 0, 4, &device);
        let Target::Tokens { mask: Some(mask), .. } = &b.target else {
            panic!("masked token targets")
        };
        let [rows, t] = mask.dims();
        assert!((3..=9).contains(&t) && rows == 4, "n in 2..=8 plus the query: {t}");
        let m: Vec<f32> = mask.clone().into_data().try_to_vec::<f32>().unwrap();
        for r in 0..4 {
            assert_eq!(&m[r * t..(r + 1) * t], [vec![0.0; t - 1], vec![1.0]].concat().as_slice());
        }
    }

    /// Every evaluation length reports accuracy, loss and the query's max attention weight
    /// (a probability for softmax), on sets that repeat.
    #[test]
    fn evaluation_reports_each_item_count() {
        let task = MaxRetrieval::new(config(), 2);
        let device = Device::flex();
        let model = super::super::interface::tiny_model(&task.io(), 33, &device);
        let batches = task.eval_batches(1, 4, &device);
        assert_eq!(batches.iter().map(|b| b.tokens).sum::<usize>(), 10 * 9);
        let m = task.evaluate(&model, &batches);
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "accuracy",
                "accuracy@32",
                "accuracy@8",
                "loss",
                "loss@32",
                "loss@8",
                "max_weight@32",
                "max_weight@8"
            ]
        );
        for n in [8, 32] {
            let w = m[&format!("max_weight@{n}")];
            assert!(w > 1.0 / (n + 1) as f64 - 1e-6 && w <= 1.0 + 1e-6, "max weight at {n}: {w}");
        }
        assert_eq!(task.evaluate(&model, &batches), m);
    }
}
