//! How a model's weights start (`model.init`).
//!
//! `burn` keeps Burn's defaults: embeddings and learned positions N(0, 1), linear maps
//! Kaiming-uniform (±1/√fan_in). `gpt2` is GPT-2's scheme as nanoGPT and zoology use it
//! (Radford et al. 2019): token embeddings, learned positions and every projection N(0, 0.02),
//! their biases 0, and the projections that write into the residual stream (attention's output,
//! the MLP's down projection) N(0, 0.02/√(2·n_layers)). Norms and each family's own parameters
//! (gates, scales, sinks, Performer's fixed features) keep their family's initialisation.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Distribution, Tensor};

/// Which initialisation the model's weights get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitScheme {
    #[default]
    Burn,
    Gpt2,
}

impl InitScheme {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// GPT-2's standard deviation for embeddings and projections.
pub const GPT2_STD: f64 = 0.02;

/// What `gpt2` does to the parameter at `path` (its module path, `blocks.0.mixer.Softmax.heads.out.weight`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Redraw {
    Normal(f64),
    Zero,
    Keep,
}

/// The rule for one parameter path under `gpt2` in a stack of `n_layers`.
pub fn gpt2_rule(path: &str, n_layers: usize) -> Redraw {
    let residual_std = GPT2_STD / (2.0 * n_layers.max(1) as f64).sqrt();
    let projection = |p: &str| {
        // `householder_kv`: DeltaProduct's further keys and values, part of its q/k/v projection.
        ["heads.qkv", "householder_kv", "heads.out", "mlp.up", "mlp.down", "input.Vectors"]
            .iter()
            .any(|m| p.ends_with(m))
            || p == "head"
    };
    if path == "input.Tokens.weight" || path == "positions.learned.weight" {
        return Redraw::Normal(GPT2_STD);
    }
    let Some((module, leaf)) = path.rsplit_once('.') else { return Redraw::Keep };
    if !projection(module) {
        return Redraw::Keep;
    }
    match leaf {
        "bias" => Redraw::Zero,
        "weight" if module.ends_with("heads.out") || module.ends_with("mlp.down") => {
            Redraw::Normal(residual_std)
        }
        "weight" => Redraw::Normal(GPT2_STD),
        _ => Redraw::Keep,
    }
}

/// Redraws `module`'s parameters by [`gpt2_rule`] from the backend generator (call it inside
/// `seeding::with_seed`, after the default initialisation has drawn, so the order is fixed).
pub fn apply_gpt2<M: Module>(module: M, n_layers: usize) -> M {
    struct Gpt2 {
        path: Vec<String>,
        n_layers: usize,
    }
    impl ModuleMapper for Gpt2 {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let rule = gpt2_rule(&self.path.join("."), self.n_layers);
            if rule == Redraw::Keep {
                return param;
            }
            let redrawn = param.map(|t| {
                let (shape, device) = (t.shape(), t.device());
                match rule {
                    Redraw::Normal(std) => {
                        Tensor::random(shape, Distribution::Normal(0.0, std), &device)
                    }
                    _ => Tensor::zeros(shape, &device),
                }
            });
            // A fresh tensor is a constant until marked: without this the optimizer would never
            // move it (every parameter of a freshly built model is trainable).
            redrawn.set_require_grad(true)
        }
    }
    module.map(&mut Gpt2 { path: Vec::new(), n_layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_redraws_embeddings_and_projections_and_keeps_the_rest() {
        let r = |p| gpt2_rule(p, 2);
        assert_eq!(r("input.Tokens.weight"), Redraw::Normal(0.02));
        assert_eq!(r("positions.learned.weight"), Redraw::Normal(0.02));
        assert_eq!(r("blocks.0.mixer.Softmax.heads.qkv.weight"), Redraw::Normal(0.02));
        assert_eq!(r("blocks.1.mixer.Delta.heads.qkv.bias"), Redraw::Zero);
        assert_eq!(r("blocks.1.mixer.Delta.householder_kv.weight"), Redraw::Normal(0.02));
        assert_eq!(r("blocks.1.mixer.Softmax.heads.out.weight"), Redraw::Normal(0.01));
        assert_eq!(r("blocks.0.mlp.down.weight"), Redraw::Normal(0.01));
        assert_eq!(r("blocks.0.mlp.up.weight"), Redraw::Normal(0.02));
        assert_eq!(r("head.weight"), Redraw::Normal(0.02));
        for kept in [
            "blocks.0.norm_mixer.Layer.gamma",
            "blocks.0.mixer.Softmax.scale",
            "blocks.0.mixer.Decay.dt.weight",
            "blocks.0.mixer.Decay.a_log",
            "blocks.0.mixer.Delta.beta.weight",
            "blocks.0.mixer.Linear.feature_map.random_features",
            "norm.Layer.beta",
        ] {
            assert_eq!(r(kept), Redraw::Keep, "{kept}");
        }
    }
}
