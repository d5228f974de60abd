//! The run's optimizer: AdamW (decoupled weight decay, Loshchilov & Hutter 2019) exactly as
//! burn-optim's `AdamW` defines it, with each parameter's step one fused pass on the CPU backend
//! (`attnlab_model::fused::adamw_step`) instead of burn's dozen tensor ops.
//!
//! The state is burn's own `AdamWState`, so checkpoints (`optim.bpk`) read and write the same
//! records either way, and every other backend runs burn's optimizer unchanged.

use attnlab_model::fused::{self, AdamWStep};
use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::tensor::{Device, Tensor};

/// AdamW's settings; [`Self::init`] builds the module optimizer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWSettings {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl AdamWSettings {
    pub fn with_weight_decay(self, weight_decay: f32) -> Self {
        Self { weight_decay, ..self }
    }

    /// burn-optim's configuration of the same optimizer: the fallback, and the tests' reference.
    pub fn composed(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_weight_decay(self.weight_decay)
    }

    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(FusedAdamW { settings: *self })
    }
}

/// AdamW with the fused step where the tensors are plain f32 flex, burn's elsewhere.
#[derive(Clone)]
pub struct FusedAdamW {
    settings: AdamWSettings,
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, Option<AdamWState<D>>) {
        let s = &self.settings;
        let time = state.as_ref().map_or(1, |st| st.momentum.time + 1);
        // As burn computes them: the decay factor in f64, then each scalar as f32.
        let step = AdamWStep {
            lr: lr as f32,
            beta_1: s.beta_1,
            beta_2: s.beta_2,
            epsilon: s.epsilon,
            decay: (1.0 - lr * s.weight_decay as f64) as f32,
            time: time as i32,
        };
        let moments = state.map(|st| (st.momentum.moment_1, st.momentum.moment_2));
        match fused::adamw_step(step, tensor, grad, moments) {
            Ok((param, moment_1, moment_2)) => {
                let momentum =
                    AdaptiveMomentumState { time, moment_1, moment_2, max_moment_2: None };
                (param, Some(AdamWState { momentum }))
            }
            Err(inputs) => {
                let (tensor, grad, moments) = *inputs;
                let state = moments.map(|(moment_1, moment_2)| AdamWState {
                    momentum: AdaptiveMomentumState {
                        time: time - 1,
                        moment_1,
                        moment_2,
                        max_moment_2: None,
                    },
                });
                // Off flex (rare, and a plain struct to build): burn's optimizer.
                s.composed().build().step(lr, tensor, grad, state)
            }
        }
    }

    fn to_device<const D: usize>(state: AdamWState<D>, device: &Device) -> AdamWState<D> {
        AdamW::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::{Distribution, Tolerance};

    /// The fused optimizer follows burn's AdamW step for step, weight decay on and off, on fresh
    /// random inputs: the weights after each of five steps agree to float rounding.
    #[test]
    fn fused_adamw_follows_burns() {
        let device = Device::default().autodiff();
        for weight_decay in [0.1, 0.0] {
            let settings = AdamWSettings { beta_1: 0.9, beta_2: 0.95, epsilon: 1e-8, weight_decay };
            let start: Linear = LinearConfig::new(6, 5).init(&device);
            let (mut fused, mut composed) = (start.clone(), start);
            let (mut fused_optim, mut composed_optim) =
                (settings.init(), settings.composed().init());
            for step in 0..5 {
                let x = Tensor::<2>::random([4, 6], Distribution::Normal(0.0, 1.0), &device);
                let lr = 1e-2 / (step + 1) as f64;
                let grads = |model: &Linear| {
                    let loss = model.forward(x.clone()).powf_scalar(2.0).sum();
                    GradientsParams::from_grads(loss.backward(), model)
                };
                let (gf, gc) = (grads(&fused), grads(&composed));
                fused = fused_optim.step(lr, fused, gf);
                composed = composed_optim.step(lr, composed, gc);
                let weights = |m: &Linear| m.weight.val().into_data();
                weights(&fused).assert_approx_eq::<f32>(
                    &weights(&composed),
                    Tolerance::absolute(1e-6).set_relative(1e-5),
                );
                let bias = |m: &Linear| m.bias.as_ref().expect("bias").val().into_data();
                bias(&fused).assert_approx_eq::<f32>(
                    &bias(&composed),
                    Tolerance::absolute(1e-6).set_relative(1e-5),
                );
            }
            assert_eq!(fused.num_params(), composed.num_params());
        }
    }
}
