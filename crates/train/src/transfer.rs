//! Starting a model from another run's weights (`train.init_run`): every parameter whose name
//! and shape match is copied, the rest keep their fresh initialisation. This is what
//! `attnlab swap` builds on: replace the attention in some layers, keep everything else.
//!
//! Names are matched without the enum variant segments (`blocks.0.mixer.Softmax.heads.qkv.weight`
//! matches `blocks.0.mixer.Linear.heads.qkv.weight`), so q/k/v/o projections carry over
//! between attention families whenever their shapes agree.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use std::collections::BTreeMap;

/// What a transfer did, by parameter name.
#[derive(Clone, Debug, Default)]
pub struct TransferReport {
    pub copied: Vec<String>,
    /// Parameters with no same-named, same-shaped source: freshly initialised.
    pub fresh: Vec<String>,
}

/// Tracks the module path, leaving out enum variants.
#[derive(Default)]
struct Path {
    stack: Vec<Option<String>>,
}

impl Path {
    fn enter(&mut self, name: &str, container: &str) {
        self.stack.push((!container.starts_with("Enum")).then(|| name.to_string()));
    }
    fn exit(&mut self) {
        self.stack.pop();
    }
    fn name(&self) -> String {
        self.stack.iter().flatten().cloned().collect::<Vec<_>>().join(".")
    }
}

/// Float parameters by variant-free name.
pub fn variant_free_tensors<M: Module>(module: &M) -> BTreeMap<String, TensorData> {
    struct Collect {
        path: Path,
        found: BTreeMap<String, TensorData>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.found.insert(self.path.name(), param.val().to_data());
        }
    }
    let mut c = Collect { path: Path::default(), found: BTreeMap::new() };
    module.visit(&mut c);
    c.found
}

/// Every float parameter's variant-free name and shape, without reading its values.
pub fn variant_free_shapes<M: Module>(module: &M) -> BTreeMap<String, Vec<usize>> {
    struct Collect {
        path: Path,
        found: BTreeMap<String, Vec<usize>>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.found.insert(self.path.name(), param.shape().as_slice().to_vec());
        }
    }
    let mut c = Collect { path: Path::default(), found: BTreeMap::new() };
    module.visit(&mut c);
    c.found
}

/// Copies every matching parameter of `source` into `target`.
pub fn transfer<M: Module>(
    target: M,
    source: &BTreeMap<String, TensorData>,
) -> (M, TransferReport) {
    struct Copy<'a> {
        path: Path,
        source: &'a BTreeMap<String, TensorData>,
        report: TransferReport,
    }
    impl ModuleMapper for Copy<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let name = self.path.name();
            match self.source.get(&name) {
                Some(data) if data.shape().as_slice() == param.shape().as_slice() => {
                    self.report.copied.push(name);
                    param.map(|t| {
                        let grad = t.is_require_grad();
                        Tensor::from_data(data.clone(), &t.device()).set_require_grad(grad)
                    })
                }
                _ => {
                    self.report.fresh.push(name);
                    param
                }
            }
        }
    }
    let mut c = Copy { path: Path::default(), source, report: TransferReport::default() };
    let target = target.map(&mut c);
    (target, c.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use attnlab_model::{MixerStack, ModelConfig, ModelInput, ModelIo};
    use burn::tensor::Device;

    fn config(mixers: &str) -> ModelConfig {
        ModelConfig {
            d_model: 16,
            n_heads: 2,
            n_layers: 2,
            mixer: mixers.parse::<MixerStack>().unwrap(),
            max_seq_len: 8,
            ..Default::default()
        }
    }

    /// Swapping layer 1 to linear attention keeps every weight but that layer's own extras:
    /// its q/k/v/o projections carry over, and the copied values are the source's.
    #[test]
    fn swapping_one_layer_keeps_every_matching_weight() {
        let io = ModelIo { input: ModelInput::Tokens { vocab: 11 }, output_dim: 11 };
        let device = Device::flex().autodiff();
        let source = config("softmax:learned").init(&io, 1, &device).unwrap();
        let target = config("softmax:learned,linear:elu1").init(&io, 2, &device).unwrap();
        let names_before = crate::params::named_tensors(&target).len();
        let source_tensors = variant_free_tensors(&source);
        let (target, report) = transfer(target, &source_tensors);
        assert_eq!(report.copied.len() + report.fresh.len(), names_before);
        assert!(
            report.copied.contains(&"blocks.1.mixer.heads.qkv.weight".to_string()),
            "{:?}",
            report.copied
        );
        assert!(report.fresh.is_empty(), "elu1 has no parameters of its own: {:?}", report.fresh);
        let after = variant_free_tensors(&target);
        for name in &report.copied {
            assert_eq!(after[name], source_tensors[name], "{name}");
        }
        // Still trainable: a backward pass reaches the copied weights.
        let x = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data([[1, 2, 3]], &device);
        let grads = target.forward(attnlab_model::LmInput::Tokens(x)).sum().backward();
        let grads = burn::optim::GradientsParams::from_grads(grads, &target);
        assert!(!grads.is_empty());
    }

    /// Swapping layer 1 of a softmax model to `mixer` carries q/k/v/o over by name and reports
    /// exactly `fresh` (the family's own parameters) as starting fresh.
    #[track_caller]
    fn assert_swap_carries_the_projections(mixer: &str, fresh: &[&str]) {
        let io = ModelIo { input: ModelInput::Tokens { vocab: 11 }, output_dim: 11 };
        let device = Device::flex();
        let source = config("softmax").init(&io, 1, &device).unwrap();
        let target = config(&format!("softmax,{mixer}")).init(&io, 2, &device).unwrap();
        let source_tensors = variant_free_tensors(&source);
        let (target, report) = transfer(target, &source_tensors);
        for name in ["qkv.weight", "qkv.bias", "out.weight", "out.bias"] {
            let name = format!("blocks.1.mixer.heads.{name}");
            assert!(report.copied.contains(&name), "{name} not carried: {:?}", report.copied);
            assert_eq!(variant_free_tensors(&target)[&name], source_tensors[&name], "{name}");
        }
        let mut got = report.fresh.clone();
        got.sort();
        let want: Vec<String> = fresh.iter().map(|n| format!("blocks.1.mixer.{n}")).collect();
        assert_eq!(got, want, "{mixer}");
    }

    /// Gated DeltaNet with a short convolution: fresh are β's and the gate's projections,
    /// `A_log` and the convolution.
    #[test]
    fn swapping_to_gated_delta_carries_the_projections_and_names_the_fresh_gates() {
        assert_swap_carries_the_projections(
            "delta:gated:conv=4",
            &["a_log", "beta.bias", "beta.weight", "conv.weight", "dt.bias", "dt.weight"],
        );
    }

    /// Kimi Delta Attention: the same fresh names as Gated DeltaNet, its `dt` one column per
    /// head and key channel.
    #[test]
    fn swapping_to_kda_carries_the_projections_and_names_the_fresh_gates() {
        assert_swap_carries_the_projections(
            "delta:kda",
            &["a_log", "beta.bias", "beta.weight", "dt.bias", "dt.weight"],
        );
    }

    /// DeltaProduct's first Householder step reads softmax's `[q | k | v]`; its further keys
    /// and values (`householder_kv`) and β start fresh.
    #[test]
    fn swapping_to_deltaproduct_carries_the_first_steps_projections() {
        assert_swap_carries_the_projections(
            "delta:householders=2",
            &["beta.bias", "beta.weight", "householder_kv.bias", "householder_kv.weight"],
        );
    }

    /// Differential attention keeps softmax's `[q | k | v]` shapes (its query and key halves are
    /// softmax's columns), so only λ's vectors and the per-head norm start fresh.
    #[test]
    fn swapping_to_differential_attention_carries_the_projections() {
        assert_swap_carries_the_projections(
            "diff",
            &["lambda_k1", "lambda_k2", "lambda_q1", "lambda_q2", "norm.gamma"],
        );
    }

    /// MoBA is softmax's projections under a block-sparse mask chosen by a parameter-free gate:
    /// everything carries, nothing starts fresh.
    #[test]
    fn swapping_to_block_attention_carries_every_parameter() {
        assert_swap_carries_the_projections("moba:block=4:topk=1", &[]);
    }

    /// NSA is softmax's projections plus its branch gates `W_g`: the projections carry, the
    /// gates start fresh.
    #[test]
    fn swapping_to_native_sparse_attention_carries_the_projections() {
        assert_swap_carries_the_projections("nsa:block=4:window=8", &["gate.weight"]);
    }

    /// PaTH reads softmax's `[q | k | v]` and output projection; its Householder directions
    /// (`w_down`, `w_up`, the convolution) and strengths (`beta`) start fresh.
    #[test]
    fn swapping_to_path_attention_carries_the_projections_and_names_the_fresh_maps() {
        assert_swap_carries_the_projections(
            "path",
            &["beta.bias", "beta.weight", "w_conv.weight", "w_down.weight", "w_up.weight"],
        );
    }

    /// Multi-head latent attention has projections of its own (no packed `heads.qkv`), so a
    /// swap from softmax starts exactly that layer's mixer fresh and carries everything else.
    #[test]
    fn swapping_to_latent_attention_starts_its_mixer_fresh() {
        let io = ModelIo { input: ModelInput::Tokens { vocab: 11 }, output_dim: 11 };
        let device = Device::flex();
        let source = config("softmax").init(&io, 1, &device).unwrap();
        let target = config("softmax,mla").init(&io, 2, &device).unwrap();
        let (_, report) = transfer(target, &variant_free_tensors(&source));
        let mut fresh = report.fresh.clone();
        fresh.sort();
        let want: Vec<String> = [
            "kv_down.bias",
            "kv_down.weight",
            "kv_up.weight",
            "out.bias",
            "out.weight",
            "q.bias",
            "q.weight",
        ]
        .iter()
        .map(|n| format!("blocks.1.mixer.{n}"))
        .collect();
        assert_eq!(fresh, want);
        let carried = |prefix: &str| report.copied.iter().any(|n| n.starts_with(prefix));
        assert!(carried("blocks.1.norm_mixer.") && carried("blocks.0.mixer.heads."));
    }

    /// A source with other shapes leaves the target's fresh weights alone.
    #[test]
    fn mismatched_shapes_stay_fresh() {
        let io = ModelIo { input: ModelInput::Tokens { vocab: 11 }, output_dim: 11 };
        let device = Device::flex();
        let source = config("softmax").init(&io, 1, &device).unwrap();
        let target = config("softmax,linear:taylor:feature_dim=4").init(&io, 2, &device).unwrap();
        let (_, report) = transfer(target, &variant_free_tensors(&source));
        assert!(
            report.fresh.contains(&"blocks.1.mixer.heads.qkv.weight".to_string()),
            "{:?}",
            report.fresh
        );
        assert!(report.copied.contains(&"blocks.0.mixer.heads.qkv.weight".to_string()));
    }
}
