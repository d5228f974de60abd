//! Walking a model's parameters: their stable names (for export), counts, and the global
//! gradient norm with PyTorch-style `clip_grad_norm_` clipping (Burn's own clipping is per
//! tensor, which changes the update direction; a global norm only rescales it).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

/// `(name, data)` of every float parameter, in module order; names join the module path with
/// dots (`blocks.0.mixer.Softmax.heads.qkv.weight`).
pub fn named_tensors<M: Module>(module: &M) -> Vec<(String, TensorData)> {
    // Burn announces every struct field, enum variant and Vec index with `enter_module`, so the
    // path to a parameter is the stack of names entered and not yet exited.
    struct Collect {
        path: Vec<String>,
        found: Vec<(String, TensorData)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.found.push((self.path.join("."), param.val().to_data()));
        }
    }
    let mut c = Collect { path: Vec::new(), found: Vec::new() };
    module.visit(&mut c);
    c.found
}

/// The first float parameter holding a NaN or an infinity, and that value, if any.
pub fn first_non_finite<M: Module>(module: &M) -> Option<(String, f32)> {
    named_tensors(module).into_iter().find_map(|(name, data)| {
        let values: Vec<f32> = data.convert::<f32>().try_into_vec().expect("float parameters");
        values.into_iter().find(|v| !v.is_finite()).map(|v| (name, v))
    })
}

/// Number of trainable scalars.
pub fn count<M: Module>(module: &M) -> usize {
    module.num_params()
}

/// `sqrt(Σ ‖g‖²)` over every parameter's gradient, read back once.
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    struct Norm<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for Norm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let sq = g.powi_scalar(2).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + sq,
                    None => sq,
                });
            }
        }
    }
    let mut v = Norm { grads, total: None };
    module.visit(&mut v);
    v.total.map_or(0.0, |t| (t.into_scalar::<f32>() as f64).sqrt())
}

/// Multiplies every gradient by `factor`.
pub fn scale_grads<M: Module>(module: &M, grads: &mut GradientsParams, factor: f32) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f32,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g * self.factor);
            }
        }
    }
    module.visit(&mut Scale { grads, factor });
}

/// Clips to a global norm of at most `max_norm` (0 = off); returns the norm before clipping.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_grad_norm(module, grads);
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        // The small epsilon matches torch.nn.utils.clip_grad_norm_.
        scale_grads(module, grads, (max_norm / (norm + 1e-6)) as f32);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Two {
        a: Linear,
        b: Linear,
    }

    fn grads_of(model: &Two, device: &Device) -> GradientsParams {
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 0.5]], device);
        let y = model.b.forward(model.a.forward(x));
        GradientsParams::from_grads((y.clone() * y).sum().backward(), model)
    }

    /// The global norm equals the norm of all gradients laid end to end, and clipping rescales
    /// every tensor by the same factor (so the direction is kept).
    #[test]
    fn global_norm_and_clipping_match_the_definition() {
        let device = Device::flex().autodiff();
        let model = Two {
            a: LinearConfig::new(3, 4).init(&device),
            b: LinearConfig::new(4, 2).init(&device),
        };
        let mut grads = grads_of(&model, &device);
        let flat: Vec<f32> = [
            grads.get::<2>(model.a.weight.id).unwrap().into_data().try_into_vec::<f32>().unwrap(),
            grads
                .get::<1>(model.a.bias.as_ref().unwrap().id)
                .unwrap()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap(),
            grads.get::<2>(model.b.weight.id).unwrap().into_data().try_into_vec::<f32>().unwrap(),
            grads
                .get::<1>(model.b.bias.as_ref().unwrap().id)
                .unwrap()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap(),
        ]
        .concat();
        let expect = flat.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let norm = global_grad_norm(&model, &grads);
        assert!((norm - expect).abs() < 1e-5 * expect.max(1.0), "{norm} vs {expect}");

        let before =
            grads.get::<2>(model.a.weight.id).unwrap().into_data().try_into_vec::<f32>().unwrap();
        let reported = clip_global_norm(&model, &mut grads, norm / 4.0);
        assert_eq!(reported, norm);
        let after_norm = global_grad_norm(&model, &grads);
        assert!((after_norm - norm / 4.0).abs() < 1e-4 * norm, "{after_norm}");
        let after =
            grads.get::<2>(model.a.weight.id).unwrap().into_data().try_into_vec::<f32>().unwrap();
        for (a, b) in after.iter().zip(&before) {
            assert!((a * 4.0 - b).abs() < 1e-4 * b.abs().max(1.0));
        }
    }

    #[test]
    fn names_follow_the_module_path() {
        let device = Device::flex();
        let model = Two {
            a: LinearConfig::new(3, 4).init(&device),
            b: LinearConfig::new(4, 2).init(&device),
        };
        let names: Vec<String> = named_tensors(&model).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["a.weight", "a.bias", "b.weight", "b.bias"]);
    }
}
