//! Seed 1's separation task (after Deng, Song, Zhou 2023, arXiv 2310.11685): tell apart two
//! distributions of `rows × cols` input matrices that differ in one large entry.
//!
//! Construction: class 0 has i.i.d. `N(0, 1)` entries. Class 1 is drawn the same way, then one
//! entry at a uniformly random position is set to `+spike`. Every matrix (both classes) is then
//! rescaled to Frobenius norm `√(rows·cols)`, so total energy carries no signal and the class is
//! visible only through the one amplified coordinate. The rows are a sequence of `cols`-vectors
//! fed to a bidirectional model (the presets use one attention layer, no MLP, no positions);
//! the class is read out from the mean over positions of the model's 2 outputs. Softmax can put
//! almost all weight on the spiked row (exp amplifies the one large logit); a linear kernel's
//! weights grow only polynomially with it, which is the gap seed 1 proves.

use super::interface::{Batch, MainMetric, Target, Task};
use super::text::batch_index;
use crate::config::SeparationConfig;
use crate::seed;
use attnlab_model::{LmInput, ModelInput, ModelIo};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

pub struct Separation {
    config: SeparationConfig,
    seed: u64,
}

impl Separation {
    pub fn new(config: SeparationConfig, seed: u64) -> Self {
        Self { config, seed }
    }

    /// One matrix (row-major) of class `label`.
    pub fn example(&self, rng: &mut impl Rng, label: bool) -> Vec<f32> {
        let (n, d) = (self.config.rows, self.config.cols);
        let mut x: Vec<f32> = (0..n * d).map(|_| StandardNormal.sample(rng)).collect();
        if label {
            let at = rng.random_range(0..n * d);
            x[at] = self.config.spike as f32;
        }
        let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        let target = ((n * d) as f32).sqrt();
        x.iter_mut().for_each(|v| *v *= target / norm);
        x
    }

    fn batch(&self, rng: &mut impl Rng, size: usize, device: &Device) -> Batch {
        let (n, d) = (self.config.rows, self.config.cols);
        let mut data = Vec::with_capacity(size * n * d);
        let mut labels = Vec::with_capacity(size);
        for _ in 0..size {
            let label = rng.random::<bool>();
            data.extend(self.example(rng, label));
            labels.push(label as i64);
        }
        Batch {
            input: LmInput::Vectors(Tensor::<3>::from_data(
                TensorData::new(data, [size, n, d]),
                device,
            )),
            target: Target::Class(Tensor::<1, Int>::from_data(
                TensorData::new(labels, [size]),
                device,
            )),
            tokens: size * n,
        }
    }
}

impl Task for Separation {
    fn io(&self) -> ModelIo {
        ModelIo { input: ModelInput::Vectors { dim: self.config.cols }, output_dim: 2 }
    }
    fn main_metric(&self) -> MainMetric {
        MainMetric { name: "accuracy", higher_is_better: true, chance: Some(0.5) }
    }
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch {
        self.batch(&mut seed::rng(self.seed, "train", batch_index(step, micro)), batch_size, device)
    }
    fn eval_batches(&self, _batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        let mut rng = seed::rng(self.seed, "eval", 0);
        let total = self.config.eval_examples;
        let size = batch_size.max(1);
        (0..total.div_ceil(size))
            .map(|i| self.batch(&mut rng, size.min(total - i * size), device))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_classes_have_the_same_energy_and_class_one_has_the_spike() {
        let task = Separation::new(
            SeparationConfig { rows: 8, cols: 4, spike: 10.0, eval_examples: 4 },
            1,
        );
        let mut rng = seed::rng(1, "test", 0);
        for label in [false, true] {
            let x = task.example(&mut rng, label);
            let energy: f32 = x.iter().map(|v| v * v).sum();
            assert!((energy - 32.0).abs() < 1e-3);
            let max = x.iter().cloned().fold(f32::MIN, f32::max);
            if label {
                assert!(max > 4.0, "spike survives the rescaling: {max}");
            }
        }
    }
}
