//! Data parallelism on one machine: each micro-batch is cut into equal slices, one per device
//! (`--devices cuda:0,cuda:1`), a replica of the model on each device computes its slice's
//! gradient, and the gradients are summed onto the first device before clipping and AdamW.
//! The first device's model is the run's model (checkpoints, evaluation); the others are copies
//! of it taken at the start of every step.
//!
//! Each slice's loss is weighted by its share of the batch's scored positions
//! ([`Batch::split`]), so the summed gradient is the whole batch's: N data-parallel steps equal
//! N one-device steps up to the order of float additions (tested in `tests/data_parallel.rs`
//! of the CLI). Dropout is the exception: each replica draws its own masks, from its device's
//! stream; replicas sharing a device would share one stream in thread order, so the config
//! refuses dropout with a device listed twice.
//!
//! How the sum is taken. Burn 0.22's collective, [`burn::tensor::distributed::all_reduce`],
//! is implemented by CUDA alone (NCCL, one process): Burn's dispatch has no collective arm for
//! flex or ndarray (`burn-backend-extension` `catalog.rs`: `distributed: false`, the default
//! `DistributedOps::all_reduce` is `unimplemented!()`), and CubeCL's wgpu and CPU runtimes keep
//! the default `ComputeServer::all_reduce`, which answers `NoDeviceTransport`. So on CUDA the
//! gradients are all-reduced with Burn's collective; on every other backend they are moved to
//! the first device with Burn's `to_device` and added there. Both give the same sum.
//! Across processes or machines Burn 0.22 has no collective at all (`burn-remote`:
//! "cross-peer all_reduce is not supported yet"; NCCL's group id lives in one process).

use crate::task::{self, Batch};
use attnlab_model::{BackendError, BackendKind, DeviceList, Model};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::distributed::{ReduceOperation, all_reduce};
use burn::tensor::{Device, Tensor};
use std::time::Instant;

/// The devices of one run, in rank order, and how their gradients are summed.
#[derive(Clone, Debug)]
pub struct Replicas {
    /// Plain devices (where gradients live).
    plain: Vec<Device>,
    /// The same devices with autodiff (where replicas train).
    autodiff: Vec<Device>,
    /// Burn's all-reduce (CUDA) rather than moving gradients to the first device.
    collective: bool,
}

/// What one slice's forward and backward gave.
struct SliceResult {
    loss: f64,
    grads: GradientsParams,
    forward_ms: f64,
    backward_ms: f64,
}

impl Replicas {
    /// The devices of `list`.
    pub fn new(list: &DeviceList) -> Result<Self, BackendError> {
        let plain = list.devices()?;
        let autodiff = plain.iter().map(|d| d.clone().autodiff()).collect();
        // A device listed twice is one device: NCCL cannot reduce a device with itself.
        let distinct = list.specs().iter().collect::<std::collections::HashSet<_>>().len();
        let collective =
            list.backend() == BackendKind::Cuda && distinct == list.len() && list.len() > 1;
        Ok(Self { plain, autodiff, collective })
    }

    /// One device: training as it always was.
    pub fn single(device: &Device) -> Self {
        Self {
            plain: vec![device.clone()],
            autodiff: vec![device.clone().autodiff()],
            collective: false,
        }
    }

    pub fn len(&self) -> usize {
        self.plain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plain.is_empty()
    }

    /// The first device, with autodiff: where the run's model, optimizer and batches live.
    pub fn first(&self) -> &Device {
        &self.autodiff[0]
    }

    /// Seeds every device's random stream (dropout): the first with `seed`, the others with
    /// seeds derived from it. Replicas sharing a device share its stream, so their dropout
    /// masks depend on the order they draw in.
    pub fn seed(&self, seed: u64) {
        for (rank, device) in self.autodiff.iter().enumerate() {
            device.seed(if rank == 0 {
                seed
            } else {
                crate::seed::derive(seed, "rank", rank as u64)
            });
        }
    }

    /// The first device without autodiff: where evaluation batches are made.
    pub fn first_plain(&self) -> &Device {
        &self.plain[0]
    }

    /// Whether gradients are summed with Burn's collective (else by moving them).
    pub fn uses_collective(&self) -> bool {
        self.collective
    }

    /// The model on every device: `model` itself first, then independent copies (fresh leaves,
    /// so each replica's backward sees only its own graph).
    fn replicate(&self, model: &Model) -> Vec<Model> {
        let mut models = vec![model.clone()];
        models.extend(self.autodiff[1..].iter().map(|d| model.clone().fork(d)));
        models
    }

    /// Forward and backward of one micro-batch, its slices in parallel: each slice's loss is
    /// scaled by its share and by `1 / accumulation` before the backward.
    fn slices(&self, models: &[Model], batch: &Batch, accumulation: usize) -> Vec<SliceResult> {
        let ms = |since: Instant| since.elapsed().as_secs_f64() * 1e3;
        let slices = batch.split(&self.autodiff);
        std::thread::scope(|scope| {
            let running: Vec<_> = models
                .iter()
                .zip(slices)
                .map(|(model, (slice, share))| {
                    scope.spawn(move || {
                        let started = Instant::now();
                        let scaled =
                            task::score(model, &slice).loss * (share / accumulation as f64) as f32;
                        let loss = scaled.clone().into_scalar::<f32>() as f64;
                        let forward_ms = ms(started);
                        let started = Instant::now();
                        let grads = GradientsParams::from_grads(scaled.backward(), model);
                        SliceResult { loss, grads, forward_ms, backward_ms: ms(started) }
                    })
                })
                .collect();
            running
                .into_iter()
                .map(|r| r.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        })
    }

    /// The sum of every replica's gradients, on the first device.
    fn sum(&self, grads: Vec<GradientsParams>, models: &[Model]) -> GradientsParams {
        if self.collective {
            let mut reduce = AllReduce { grads, out: GradientsParams::new() };
            models[0].visit(&mut reduce);
            return reduce.out;
        }
        let mut total = GradientsAccumulator::<Model>::new();
        for (k, g) in grads.into_iter().enumerate() {
            let g = if k == 0 { g } else { g.to_device(&self.plain[0], &models[k]) };
            total.accumulate(&models[0], g);
        }
        total.grads()
    }
}

/// Burn's all-reduce of each parameter's gradient over the replicas; keeps the first's.
struct AllReduce {
    grads: Vec<GradientsParams>,
    out: GradientsParams,
}

impl ModuleVisitor for AllReduce {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let parts: Vec<Tensor<D>> =
            self.grads.iter_mut().filter_map(|g| g.remove::<D>(param.id)).collect();
        if parts.len() != self.grads.len() {
            // A parameter no replica's loss reached has no gradient anywhere (the same graph on
            // every replica), so there is nothing to reduce.
            return;
        }
        let devices: Vec<Device> = parts.iter().map(|t| t.device()).collect();
        let mut reduced = parts
            .into_iter()
            .map(|t| all_reduce(t, ReduceOperation::Sum, devices.clone()).resolve());
        let first = reduced.next().expect("one replica at least");
        // Every rank's result is resolved so every device's collective stream is synced.
        reduced.for_each(drop);
        self.out.register(param.id, first);
    }
}

/// What one data-parallel step's forward, backward and reduction gave.
pub(crate) struct ParallelGrads {
    pub grads: GradientsParams,
    pub loss: f64,
    pub tokens: usize,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub reduce_ms: f64,
}

/// The summed gradient of step `step`'s `accumulation` micro-batches of `batch_size`
/// sequences, each split over `replicas`. `batch(micro)` makes a micro-batch on the first
/// device.
pub(crate) fn gradients(
    replicas: &Replicas,
    model: &Model,
    accumulation: usize,
    mut batch: impl FnMut(usize) -> Batch,
) -> ParallelGrads {
    let ms = |since: Instant| since.elapsed().as_secs_f64() * 1e3;
    let models = replicas.replicate(model);
    let mut accumulators: Vec<GradientsAccumulator<Model>> =
        models.iter().map(|_| GradientsAccumulator::new()).collect();
    let (mut loss, mut tokens, mut forward_ms, mut backward_ms) = (0.0, 0, 0.0, 0.0);
    for micro in 0..accumulation {
        let batch = batch(micro);
        tokens += batch.tokens;
        let results = replicas.slices(&models, &batch, accumulation);
        // The replicas run side by side: a phase lasts as long as its slowest replica.
        forward_ms += results.iter().map(|r| r.forward_ms).fold(0.0, f64::max);
        backward_ms += results.iter().map(|r| r.backward_ms).fold(0.0, f64::max);
        for ((result, acc), replica) in results.into_iter().zip(&mut accumulators).zip(&models) {
            loss += result.loss;
            acc.accumulate(replica, result.grads);
        }
    }
    let started = Instant::now();
    let grads = replicas.sum(accumulators.iter_mut().map(|a| a.grads()).collect(), &models);
    ParallelGrads { grads, loss, tokens, forward_ms, backward_ms, reduce_ms: ms(started) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attnlab_model::ModelConfig;
    use burn::tensor::{Distribution, Int};

    /// Two replicas on the one CPU device give the one-device gradient of the whole batch, and
    /// a masked loss is weighted by what each slice scores, not by its rows.
    #[test]
    fn two_replicas_sum_to_the_whole_batch_gradient() {
        let device = Device::flex().autodiff();
        let config = ModelConfig {
            d_model: 16,
            n_heads: 2,
            n_layers: 1,
            max_seq_len: 8,
            ..Default::default()
        };
        let io = attnlab_model::ModelIo {
            input: attnlab_model::ModelInput::Tokens { vocab: 11 },
            output_dim: 11,
        };
        let model = config.init(&io, 7, &device).unwrap();
        let ids = Tensor::<2, Int>::random([4, 8], Distribution::Uniform(0.0, 11.0), &device);
        let target = Tensor::<2, Int>::random([4, 8], Distribution::Uniform(0.0, 11.0), &device);
        // Row 0 scores 8 positions, the others 1: slices of unequal weight.
        let mut mask = vec![0.0f32; 32];
        mask[..8].fill(1.0);
        for row in 1..4 {
            mask[row * 8 + 3] = 1.0;
        }
        let mask = Tensor::<1>::from_floats(mask.as_slice(), &device).reshape([4, 8]);
        let batch = Batch {
            input: attnlab_model::LmInput::Tokens(ids),
            target: crate::Target::Tokens { ids: target, mask: Some(mask) },
            tokens: 32,
        };

        let whole = task::score(&model, &batch).loss;
        let want_loss = whole.clone().into_scalar::<f32>() as f64;
        let want = GradientsParams::from_grads(whole.backward(), &model);
        let replicas = Replicas {
            plain: vec![Device::flex(); 2],
            autodiff: vec![device.clone(); 2],
            collective: false,
        };
        let got = gradients(&replicas, &model, 1, |_| batch.clone());
        assert!((got.loss - want_loss).abs() < 1e-5, "{} vs {want_loss}", got.loss);

        struct Compare<'a>(&'a GradientsParams, &'a GradientsParams, usize);
        impl ModuleVisitor for Compare<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let (Some(a), Some(b)) = (self.0.get::<D>(param.id), self.1.get::<D>(param.id))
                else {
                    return;
                };
                let scale = a.clone().abs().max().into_scalar::<f32>().max(1e-6);
                let diff = (a - b).abs().max().into_scalar::<f32>();
                assert!(diff <= 1e-4 * scale, "gradient differs by {diff} (scale {scale})");
                self.2 += 1;
            }
        }
        let mut compare = Compare(&want, &got.grads, 0);
        model.visit(&mut compare);
        assert!(compare.2 > 5, "only {} gradients compared", compare.2);
    }

    /// The evidence behind the module's choice: Burn's collective refuses a CPU device.
    #[test]
    fn burns_all_reduce_refuses_the_cpu_backends() {
        let device = Device::flex();
        let refused = std::panic::catch_unwind(|| {
            let t = Tensor::<1>::from_floats([1.0, 2.0], &device);
            all_reduce(t, ReduceOperation::Sum, vec![device.clone(), device.clone()]).resolve()
        });
        assert!(refused.is_err(), "flex now all-reduces: use the collective on CPU too");
    }
}
