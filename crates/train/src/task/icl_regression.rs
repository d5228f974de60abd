//! In-context linear regression (Garg, Tsipras, Liang, Valiant 2022, arXiv 2208.01066).
//!
//! Per prompt: `w ~ N(0, I_d)`, `x_i ~ N(0, I_d)`, `y_i = x_i·w`. The prompt interleaves
//! `x_1, y_1, x_2, y_2, ...` as `(d+1)`-vectors: an x-token is `[x, 0]`, a y-token `[0…0, y]`.
//! At each x-token the model predicts `y_i` from the examples before it; the loss is the squared
//! error of every prediction divided by `d` (so predicting 0 scores 1). The optional curriculum
//! (Garg et al.) starts with fewer active dimensions and points and grows them every
//! `curriculum_every` steps. Evaluation reports the error per number of in-context examples next
//! to least squares (min-norm, via a tiny ridge) and the zero predictor.

use super::interface::{Batch, MainMetric, Target, Task};
use crate::config::IclConfig;
use crate::seed;
use attnlab_model::{LmInput, Model, ModelInput, ModelIo};
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;

pub struct IclRegression {
    config: IclConfig,
    seed: u64,
}

/// One sampled prompt: `xs` (`points × dim`, row-major) and `ys`.
struct Prompt {
    xs: Vec<f32>,
    ys: Vec<f32>,
}

impl IclRegression {
    pub fn new(config: IclConfig, seed: u64) -> Self {
        Self { config, seed }
    }

    /// Active dimensions and points at `step` under the curriculum.
    pub fn curriculum(&self, step: usize) -> (usize, usize) {
        let c = &self.config;
        if c.curriculum_start_dim == 0 && c.curriculum_start_points == 0 {
            return (c.dim, c.points);
        }
        let grown = step / c.curriculum_every.max(1);
        let dim = (c.curriculum_start_dim.max(1) + grown).min(c.dim);
        let points = (c.curriculum_start_points.max(1) + 2 * grown).min(c.points);
        (dim, points)
    }

    fn prompt(&self, rng: &mut impl Rng, active_dim: usize, points: usize) -> Prompt {
        let d = self.config.dim;
        let mut normal = || -> f32 { StandardNormal.sample(rng) };
        let w: Vec<f32> = (0..d).map(|i| if i < active_dim { normal() } else { 0.0 }).collect();
        let mut xs = Vec::with_capacity(points * d);
        let mut ys = Vec::with_capacity(points);
        for _ in 0..points {
            let x: Vec<f32> = (0..d).map(|i| if i < active_dim { normal() } else { 0.0 }).collect();
            ys.push(x.iter().zip(&w).map(|(a, b)| a * b).sum());
            xs.extend(x);
        }
        Prompt { xs, ys }
    }

    fn batch(
        &self,
        prompts: &[Prompt],
        points: usize,
        active_dim: usize,
        device: &Device,
    ) -> Batch {
        let d = self.config.dim;
        let (b, t) = (prompts.len(), 2 * points);
        let mut input = vec![0f32; b * t * (d + 1)];
        let mut y = vec![0f32; b * t];
        let mut mask = vec![0f32; b * t];
        for (p, prompt) in prompts.iter().enumerate() {
            for i in 0..points {
                let xrow = (p * t + 2 * i) * (d + 1);
                input[xrow..xrow + d].copy_from_slice(&prompt.xs[i * d..(i + 1) * d]);
                input[(p * t + 2 * i + 1) * (d + 1) + d] = prompt.ys[i];
                y[p * t + 2 * i] = prompt.ys[i];
                mask[p * t + 2 * i] = 1.0;
            }
        }
        let tensor2 = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [b, t]), device);
        Batch {
            input: LmInput::Vectors(Tensor::<3>::from_data(
                TensorData::new(input, [b, t, d + 1]),
                device,
            )),
            target: Target::Values { y: tensor2(y), mask: tensor2(mask), scale: active_dim as f32 },
            tokens: b * t,
        }
    }
}

impl Task for IclRegression {
    fn io(&self) -> ModelIo {
        ModelIo { input: ModelInput::Vectors { dim: self.config.dim + 1 }, output_dim: 1 }
    }
    fn main_metric(&self) -> MainMetric {
        // Predicting 0: E[(w·x)²]/d = 1 for w, x ~ N(0, I_d).
        MainMetric { name: "loss", higher_is_better: false, chance: Some(1.0) }
    }
    fn train_batch(&self, step: usize, micro: usize, batch_size: usize, device: &Device) -> Batch {
        let (dim, points) = self.curriculum(step);
        let mut rng = seed::rng(self.seed, "train", super::text::batch_index(step, micro));
        let prompts: Vec<Prompt> =
            (0..batch_size).map(|_| self.prompt(&mut rng, dim, points)).collect();
        self.batch(&prompts, points, dim, device)
    }
    fn eval_batches(&self, _batches: usize, batch_size: usize, device: &Device) -> Vec<Batch> {
        let c = &self.config;
        let mut rng = seed::rng(self.seed, "eval", 0);
        let prompts: Vec<Prompt> =
            (0..c.eval_prompts).map(|_| self.prompt(&mut rng, c.dim, c.points)).collect();
        prompts.chunks(batch_size.max(1)).map(|p| self.batch(p, c.points, c.dim, device)).collect()
    }

    /// Adds `err_k<i>` (model), `lsq_k<i>` (least squares) per number `i` of in-context
    /// examples, and `zero` (the zero predictor), all divided by d.
    fn evaluate(&self, model: &Model, batches: &[Batch]) -> BTreeMap<String, f64> {
        let mut m = super::interface::mean_metrics(model, batches);
        let (d, k) = (self.config.dim, self.config.points);
        let mut model_err = vec![0f64; k];
        let mut lsq_err = vec![0f64; k];
        let mut zero_err = 0f64;
        let mut n = 0usize;
        for batch in batches {
            let (LmInput::Vectors(input), Target::Values { y, .. }) = (&batch.input, &batch.target)
            else {
                continue;
            };
            let [b, t, _] = input.dims();
            let pred = model.forward(batch.input.clone()).narrow(2, 0, 1).reshape([b, t]);
            let pred: Vec<f32> = pred.into_data().convert::<f32>().try_into_vec().unwrap();
            let ys: Vec<f32> = y.to_data().convert::<f32>().try_into_vec().unwrap();
            let xs: Vec<f32> = input.to_data().convert::<f32>().try_into_vec().unwrap();
            for p in 0..b {
                let x_of = |i: usize| &xs[(p * t + 2 * i) * (d + 1)..(p * t + 2 * i) * (d + 1) + d];
                for i in 0..k {
                    let target = ys[p * t + 2 * i] as f64;
                    model_err[i] += (pred[p * t + 2 * i] as f64 - target).powi(2) / d as f64;
                    let rows: Vec<&[f32]> = (0..i).map(x_of).collect();
                    let prev: Vec<f64> = (0..i).map(|j| ys[p * t + 2 * j] as f64).collect();
                    let w = least_squares(&rows, &prev, d);
                    let guess: f64 = x_of(i).iter().zip(&w).map(|(a, b)| *a as f64 * b).sum();
                    lsq_err[i] += (guess - target).powi(2) / d as f64;
                    zero_err += target * target / d as f64;
                }
                n += 1;
            }
        }
        let n = n.max(1) as f64;
        for i in 0..k {
            m.insert(format!("err_k{i:02}"), model_err[i] / n);
            m.insert(format!("lsq_k{i:02}"), lsq_err[i] / n);
        }
        m.insert("zero".into(), zero_err / (n * k as f64));
        m
    }
}

/// `argmin_w ‖Xw − y‖² + 1e-6‖w‖²`: the least-squares fit, and (as the ridge vanishes) the
/// minimum-norm one when there are fewer rows than dimensions. Gaussian elimination in f64.
pub fn least_squares(rows: &[&[f32]], y: &[f64], d: usize) -> Vec<f64> {
    let mut a = vec![0f64; d * d];
    let mut rhs = vec![0f64; d];
    for (row, &yi) in rows.iter().zip(y) {
        for i in 0..d {
            rhs[i] += row[i] as f64 * yi;
            for j in 0..d {
                a[i * d + j] += row[i] as f64 * row[j] as f64;
            }
        }
    }
    for i in 0..d {
        a[i * d + i] += 1e-6;
    }
    // Elimination with partial pivoting on the symmetric positive definite system.
    for col in 0..d {
        let pivot = (col..d)
            .max_by(|&r, &s| a[r * d + col].abs().total_cmp(&a[s * d + col].abs()))
            .unwrap();
        if pivot != col {
            for j in 0..d {
                a.swap(col * d + j, pivot * d + j);
            }
            rhs.swap(col, pivot);
        }
        for r in col + 1..d {
            let f = a[r * d + col] / a[col * d + col];
            for j in col..d {
                a[r * d + j] -= f * a[col * d + j];
            }
            rhs[r] -= f * rhs[col];
        }
    }
    let mut w = vec![0f64; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|j| a[i * d + j] * w[j]).sum();
        w[i] = (rhs[i] - s) / a[i * d + i];
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_w_once_there_are_enough_examples() {
        let w = [1.5f64, -2.0, 0.5];
        let xs: Vec<Vec<f32>> = vec![
            vec![1.0, 0.0, 2.0],
            vec![0.0, 1.0, 1.0],
            vec![3.0, 1.0, 0.0],
            vec![1.0, 1.0, 1.0],
        ];
        let ys: Vec<f64> =
            xs.iter().map(|x| x.iter().zip(&w).map(|(a, b)| *a as f64 * b).sum()).collect();
        let rows: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        let fit = least_squares(&rows, &ys, 3);
        for (a, b) in fit.iter().zip(w) {
            assert!((a - b).abs() < 1e-4, "{fit:?}");
        }
        // One example: the min-norm solution is y x / ‖x‖².
        let fit = least_squares(&rows[..1], &ys[..1], 3);
        let (x, y) = ([1.0, 0.0, 2.0], ys[0]);
        for (a, xi) in fit.iter().zip(x) {
            assert!((a - y * xi / 5.0).abs() < 1e-4, "{fit:?}");
        }
    }

    #[test]
    fn prompts_interleave_x_and_y_and_curriculum_grows() {
        let cfg = IclConfig {
            dim: 3,
            points: 4,
            curriculum_start_dim: 1,
            curriculum_start_points: 2,
            curriculum_every: 10,
            eval_prompts: 4,
        };
        let task = IclRegression::new(cfg, 1);
        assert_eq!(task.curriculum(0), (1, 2));
        assert_eq!(task.curriculum(10), (2, 4));
        assert_eq!(task.curriculum(1000), (3, 4));
        let b = task.train_batch(0, 0, 2, &Device::flex());
        let LmInput::Vectors(x) = b.input else { panic!() };
        assert_eq!(x.dims(), [2, 4, 4]);
        let v: Vec<f32> = x.into_data().try_into_vec().unwrap();
        // Step 0: one active dim, so x-tokens are [x0, 0, 0, 0], y-tokens [0, 0, 0, y].
        assert!(v[0] != 0.0 && v[1] == 0.0 && v[2] == 0.0 && v[3] == 0.0);
        assert!(v[4] == 0.0 && v[7] != 0.0);
    }
}
