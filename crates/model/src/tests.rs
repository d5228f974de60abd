//! Whole-model properties, checked for every attention variant: incremental decoding equals
//! the full forward, the causal mask leaks nothing, and backends agree.

use crate::config::{ModelConfig, ModelConfigError, ModelInput, ModelIo};
use crate::families::MixerSpec;
use crate::lm::{LmInput, Model};
use crate::mixer::MixerError;
use crate::position::PositionKind;
use crate::stack::MixerStack;
use crate::testing::{assert_close, device, values};
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Options that take another code path than the catalogue's examples (no denominator, the
/// other causal forms, a chunk that does not divide the length).
const EXTRA_SPECS: &[&str] = &[
    "linear:identity:norm=none",
    "linear:elu1:form=parallel",
    "linear:elu1:form=recurrent",
    "linear:elu1:norm=none:chunk=3",
    "decay:gla:conv=4:chunk=5",
    "delta:neg_eigval=true:form=parallel",
    "delta:gated:form=recurrent",
    "delta:gated:chunk=5",
    "delta:kda:conv=4:chunk=5",
    // Queries narrower than the head: under RoPE they get the rotation of their own width.
    "linear:taylor:feature_dim=8",
];

/// Specs that need `model.positions = "rope"` (MLA's decoupled RoPE part; the model refuses
/// them otherwise), so the catalogue, which every position kind runs, cannot hold them.
const ROPE_SPECS: &[&str] = &["mla:rope_dim=4", "mla:rope_dim=8:q_latent=8"];

/// Every family's catalogue examples plus [`EXTRA_SPECS`]: a new family is covered by the
/// whole-model tests below as soon as it is registered.
fn every_spec() -> Vec<String> {
    let catalogue = MixerSpec::catalogue().into_iter().map(|v| v.spec.to_string());
    catalogue.chain(EXTRA_SPECS.iter().map(|s| s.to_string())).collect()
}

/// [`config`] with heads of 16, the width Based's default `d' = 16` needs under RoPE.
fn config_for_every_spec(spec: &str, positions: PositionKind) -> ModelConfig {
    ModelConfig { d_model: 32, ..config(spec, positions) }
}

const VOCAB: usize = 11;

fn config(spec: &str, positions: PositionKind) -> ModelConfig {
    ModelConfig {
        d_model: 16,
        n_heads: 2,
        n_layers: 2,
        mixer: MixerStack::uniform(spec.parse::<MixerSpec>().unwrap()),
        positions,
        max_seq_len: 16,
        ..ModelConfig::default()
    }
}

fn io() -> ModelIo {
    ModelIo { input: ModelInput::Tokens { vocab: VOCAB }, output_dim: VOCAB }
}

fn model(cfg: &ModelConfig, device: &Device) -> Model {
    cfg.init(&io(), 42, device).unwrap()
}

fn tokens(ids: &[i64], batch: usize, device: &Device) -> Tensor<2, Int> {
    let seq = ids.len() / batch;
    Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), device)
        .reshape([batch, seq])
}

fn random_ids(n: usize, seed: u64) -> Vec<i64> {
    // A small LCG keeps these tests independent of any RNG crate's stream.
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % VOCAB as u64) as i64
        })
        .collect()
}

/// Decoding two random 12-token sequences (a 5-token prompt, one token at a time, then a 3-token
/// chunk) gives the logits of one forward over the whole sequences.
fn assert_decoding_equals_forward(m: &Model, seed: u64, what: &str) {
    let d = device();
    let ids = random_ids(2 * 12, seed);
    let full = m.forward(LmInput::Tokens(tokens(&ids, 2, &d)));
    let seq: Vec<Vec<i64>> = ids.chunks(12).map(|c| c.to_vec()).collect();
    let piece = |a: usize, b: usize| {
        let flat: Vec<i64> = seq.iter().flat_map(|s| s[a..b].to_vec()).collect();
        LmInput::Tokens(tokens(&flat, 2, &d))
    };
    let mut state = m.empty_state();
    let mut outs = vec![m.step(piece(0, 5), &mut state)];
    for t in 5..9 {
        outs.push(m.step(piece(t, t + 1), &mut state));
    }
    outs.push(m.step(piece(9, 12), &mut state));
    assert_eq!(state.position, 12, "{what}");
    assert_close(Tensor::cat(outs, 1), full, 1e-4, what);
}

/// Decoding a prompt (prefill of 5 tokens) then one token at a time, and then a 3-token chunk,
/// gives the same logits as one forward over the whole sequence.
#[test]
fn incremental_decoding_equals_the_full_forward_for_every_variant() {
    let d = device();
    for positions in [PositionKind::Learned, PositionKind::Rope] {
        for (i, spec) in every_spec().iter().enumerate() {
            let m = model(&config_for_every_spec(spec, positions), &d);
            let what = format!("{spec} ({positions:?}) decode vs forward");
            assert_decoding_equals_forward(&m, i as u64, &what);
        }
    }
    for (i, spec) in ROPE_SPECS.iter().enumerate() {
        let m = model(&config_for_every_spec(spec, PositionKind::Rope), &d);
        assert_decoding_equals_forward(&m, 300 + i as u64, &format!("{spec} decode vs forward"));
    }
}

/// The blocks of production checkpoints together: grouped-query attention with one key/value
/// head of two, Qwen3's per-head q/k norm, heads wider than `d_model / n_heads`, SwiGLU, RMSNorm
/// with Qwen's ε, Qwen2's q/k/v-only bias, RoPE with θ = 10⁶ and Llama 3's scaling. Every variant
/// still decodes to its forward, and a stack alternating window and global layers does too.
#[test]
fn production_blocks_decode_to_the_forward_for_every_variant() {
    use crate::position::RopeScaling;
    let d = device();
    let production = |mixer: MixerStack| ModelConfig {
        d_model: 32,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 32,
        qk_head_norm: true,
        mlp: crate::block::MlpKind::Swiglu,
        mlp_hidden: 40,
        norm: crate::block::NormKind::Rms,
        norm_eps: 1e-6,
        bias: false,
        qkv_bias: Some(true),
        rope_theta: 1e6,
        rope_scaling: Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8,
        }),
        mixer,
        ..config("softmax", PositionKind::Rope)
    };
    let alternating = MixerStack(vec![
        "softmax:window=4".parse::<MixerSpec>().unwrap(),
        "softmax".parse::<MixerSpec>().unwrap(),
    ]);
    let stacks = every_spec()
        .into_iter()
        .chain(ROPE_SPECS.iter().map(|s| s.to_string()))
        .map(|spec| MixerStack::uniform(spec.parse::<MixerSpec>().unwrap()))
        .chain([alternating]);
    for (i, stack) in stacks.enumerate() {
        let mut cfg = production(stack.clone());
        // RWKV-7 has no grouped-query form and no q/k head norm (it refuses both): the rest of
        // the production block still applies.
        if stack.0.iter().any(|s| s.family() == "rwkv7") {
            (cfg.n_kv_heads, cfg.qk_head_norm) = (0, false);
        }
        let m = model(&cfg, &d);
        assert_decoding_equals_forward(&m, 500 + i as u64, &format!("{stack:?} decode vs forward"));
    }
}

/// The forward that attention transfer reads gives the forward's logits, and each layer's
/// recorded mixer output is that layer's mixer applied to the recorded input.
#[test]
fn mixer_inputs_and_outputs_are_what_each_layer_mixed() {
    use crate::mixer::SequenceMixer;
    let d = device();
    let m = model(&config("softmax", PositionKind::Rope), &d);
    let input = LmInput::Tokens(tokens(&random_ids(2 * 9, 7), 2, &d));
    let (logits, io) = m.forward_with_mixer_io(input.clone());
    assert_close(logits, m.forward(input), 1e-6, "logits");
    assert_eq!(io.len(), 2);
    for (l, (h, y)) in io.into_iter().enumerate() {
        let again = m.blocks[l].mixer.forward(h, m.context()).output;
        assert_close(again, y, 1e-6, &format!("layer {l}"));
    }
}

/// Changing the tokens after position t leaves every output at positions <= t unchanged.
#[test]
fn causal_outputs_ignore_the_future_for_every_variant() {
    let d = device();
    let rope_specs = ROPE_SPECS.iter().map(|s| s.to_string());
    for (i, spec) in every_spec().into_iter().chain(rope_specs).enumerate() {
        let positions = if ROPE_SPECS.contains(&spec.as_str()) {
            vec![PositionKind::Rope]
        } else {
            vec![PositionKind::Learned, PositionKind::Sinusoidal]
        };
        for positions in positions {
            let m = model(&config_for_every_spec(&spec, positions), &d);
            let a = random_ids(10, 100 + i as u64);
            let t = 4;
            let mut b = a.clone();
            for (j, x) in b.iter_mut().enumerate().skip(t + 1) {
                *x = (*x + 1 + j as i64) % VOCAB as i64;
            }
            let out_a = m.forward(LmInput::Tokens(tokens(&a, 1, &d)));
            let out_b = m.forward(LmInput::Tokens(tokens(&b, 1, &d)));
            assert_close(
                out_b.clone().narrow(1, 0, t + 1),
                out_a.clone().narrow(1, 0, t + 1),
                1e-5,
                &format!("{spec}: prefix"),
            );
            // ...and the suffix does change, so the test would notice a model that ignores input.
            let diff: f32 =
                values((out_b.narrow(1, t + 1, 5) - out_a.narrow(1, t + 1, 5)).abs().sum())[0];
            assert!(diff > 1e-3, "{spec}: outputs after t did not react to new tokens");
        }
    }
}

/// A bidirectional model does see the future (the flag is honoured).
#[test]
fn bidirectional_outputs_see_the_future() {
    let d = device();
    for spec in [
        "softmax",
        "linear:elu1",
        "sigmoid",
        "decay:gla",
        "delta:gated",
        "stickbreak",
        "softmax:forget=true",
        "diff",
        "mla",
        "moba:block=2:topk=1",
    ] {
        let cfg = ModelConfig { causal: false, ..config(spec, PositionKind::Learned) };
        let m = model(&cfg, &d);
        let a = random_ids(8, 7);
        let mut b = a.clone();
        b[7] = (b[7] + 1) % VOCAB as i64;
        let diff = m.forward(LmInput::Tokens(tokens(&a, 1, &d)))
            - m.forward(LmInput::Tokens(tokens(&b, 1, &d)));
        assert!(values(diff.narrow(1, 0, 1).abs().sum())[0] > 1e-4, "{spec}");
    }
}

/// A family with no bidirectional form (NSA) is refused under `causal = false`, in one line:
/// the model hands its causality to the family's `validate`.
#[test]
fn a_causal_only_mixer_is_refused_in_a_bidirectional_model() {
    let cfg = ModelConfig { causal: false, ..config("nsa", PositionKind::Learned) };
    let err = cfg.validate_shape().unwrap_err();
    assert!(matches!(err, ModelConfigError::Mixer(MixerError::Unsupported { .. })), "{err}");
    let text = err.to_string();
    assert!(text.contains("model.causal = true") && !text.contains('\n'), "{text}");
    assert!(config("nsa", PositionKind::Learned).validate_shape().is_ok());
}

#[test]
fn hybrid_stack_builds_one_mixer_per_layer() {
    let cfg = ModelConfig {
        n_layers: 3,
        mixer: "softmax,linear:elu1,linear:taylor".parse().unwrap(),
        ..config("softmax", PositionKind::Learned)
    };
    let m = model(&cfg, &device());
    let families: Vec<_> = m.blocks.iter().map(|b| b.mixer.family()).collect();
    assert_eq!(families, ["softmax", "linear", "linear"]);
}

#[test]
fn same_seed_same_weights_different_seed_different_weights() {
    let d = device();
    let cfg = config("linear:performer", PositionKind::Learned);
    let ids = tokens(&random_ids(8, 3), 1, &d);
    let run = |seed| cfg.init(&io(), seed, &d).unwrap().forward(LmInput::Tokens(ids.clone()));
    assert_eq!(values(run(1)), values(run(1)));
    assert_ne!(values(run(1)), values(run(2)));
}

#[test]
fn invalid_configs_are_rejected_with_the_key_named() {
    for (cfg, needle) in [
        (ModelConfig { n_kv_heads: 3, ..config("softmax", PositionKind::Learned) }, "n_kv_heads"),
        (ModelConfig { rope_theta: 5e5, ..config("softmax", PositionKind::Learned) }, "rope_theta"),
        (ModelConfig { rope_theta: 0.0, ..config("softmax", PositionKind::Rope) }, "rope_theta"),
        (ModelConfig { norm_eps: -1.0, ..config("softmax", PositionKind::Rope) }, "norm_eps"),
    ] {
        let err = cfg.validate_shape().unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let base = config("softmax", PositionKind::Learned);
    let cases: Vec<(ModelConfig, &str)> = vec![
        (ModelConfig { d_model: 15, ..base.clone() }, "not divisible by model.n_heads"),
        (ModelConfig { n_layers: 0, ..base.clone() }, "model.n_layers is 0"),
        (ModelConfig { dropout: 1.5, ..base.clone() }, "model.dropout"),
        (
            ModelConfig { mixer: "softmax,linear:elu1,sigmoid".parse().unwrap(), ..base.clone() },
            "one per layer",
        ),
        (
            ModelConfig {
                positions: PositionKind::Rope,
                ..config("linear:taylor", PositionKind::Rope)
            },
            "feature_dim",
        ),
    ];
    for (cfg, needle) in cases {
        let err = cfg.validate(&io()).unwrap_err().to_string();
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
    }
    let vec_io = ModelIo { input: ModelInput::Vectors { dim: 3 }, output_dim: 1 };
    let tied = ModelConfig { tie_embeddings: true, ..base };
    assert!(tied.validate(&vec_io).unwrap_err().to_string().contains("tie_embeddings"));
}

#[test]
fn tied_head_reuses_the_embedding() {
    let d = device();
    let tied = ModelConfig { tie_embeddings: true, ..config("softmax", PositionKind::Learned) };
    let untied = config("softmax", PositionKind::Learned);
    let (mt, mu) = (model(&tied, &d), model(&untied, &d));
    assert!(mt.head.is_none());
    assert_eq!(mu.num_params() - mt.num_params(), 16 * VOCAB);
    let out = mt.forward(LmInput::Tokens(tokens(&random_ids(6, 1), 1, &d)));
    assert_eq!(out.dims(), [1, 6, VOCAB]);
}

#[test]
fn vector_inputs_regress() {
    let d = device();
    let cfg = ModelConfig { mlp_ratio: 0, ..config("linear:elu1", PositionKind::None) };
    let io = ModelIo { input: ModelInput::Vectors { dim: 5 }, output_dim: 1 };
    let m = cfg.init(&io, 3, &d).unwrap();
    let x = crate::testing::randn([2, 7, 5], 9, &d);
    assert_eq!(m.forward(LmInput::Vectors(x.clone())).dims(), [2, 7, 1]);
    let mut state = m.empty_state();
    let stepped = m.step(LmInput::Vectors(x.clone()), &mut state);
    assert_close(stepped, m.forward(LmInput::Vectors(x)), 1e-4, "vector decode");
}

#[test]
fn diagnostics_report_weights_and_entropy_per_layer() {
    let d = device();
    for spec in [
        "softmax",
        "linear:elu1",
        "sigmoid",
        "diff",
        "mla",
        "moba:block=2:topk=1",
        "nsa:block=2",
        "path:fox=true",
    ] {
        let m = model(&config(spec, PositionKind::Learned), &d);
        let (_, diags) =
            m.forward_with_diagnostics(LmInput::Tokens(tokens(&random_ids(12, 5), 2, &d)));
        assert_eq!(diags.len(), 2, "{spec}");
        for diag in diags {
            assert_eq!(diag.weights.dims(), [2, 2, 6, 6]);
            let e = values(diag.normalized_entropy);
            assert!(e.iter().all(|x| (0.0..=1.0 + 1e-5).contains(x)), "{spec}: {e:?}");
        }
    }
    // Softmax rows sum to one.
    let m = model(&config("softmax", PositionKind::Learned), &d);
    let (_, diags) = m.forward_with_diagnostics(LmInput::Tokens(tokens(&random_ids(6, 5), 1, &d)));
    for s in values(diags[0].weights.clone().sum_dim(3)) {
        assert!((s - 1.0).abs() < 1e-5);
    }
}

/// The same weights give the same logits on another backend.
#[cfg(any(feature = "ndarray", feature = "wgpu", feature = "cuda"))]
fn check_backend_agreement(other: Device, tol: f32) {
    let cpu = device();
    // The gated families run their composed chunked forms off flex (the WY form for delta, with
    // the short convolution), against flex's fused recurrence.
    let specs = [
        "softmax",
        "softmax:sum_key_norms",
        "sigmoid",
        "linear:elu1",
        "linear:taylor:feature_dim=4",
        "decay:gla:chunk=4",
        "decay:mamba2:conv=4",
        "delta:gated:chunk=4",
        "delta:conv=4",
    ];
    for spec in specs {
        let cfg = config(spec, PositionKind::Learned);
        let reference = model(&cfg, &cpu);
        let ids = random_ids(2 * 10, 9);
        let expected = reference.clone().forward(LmInput::Tokens(tokens(&ids, 2, &cpu)));
        let moved = model(&cfg, &other).load_record(reference.into_record());
        let got = moved.forward(LmInput::Tokens(tokens(&ids, 2, &other)));
        let got = Tensor::<3>::from_data(got.into_data(), &cpu);
        assert_close(got, expected, tol, &format!("{spec} on {other:?}"));
    }
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_matches_flex() {
    // Burn deprecates ndarray; this test is what keeps it comparable.
    #[allow(deprecated)]
    check_backend_agreement(Device::ndarray(), 1e-4);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_flex() {
    // GPU reductions sum in a different order; 1e-3 is still far below any real bug.
    check_backend_agreement(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), 1e-3);
}

#[test]
fn decode_state_size_grows_for_softmax_and_is_fixed_for_linear() {
    // d_model 16, 2 heads of 8, 2 layers.
    let soft = config("softmax", PositionKind::Learned);
    assert_eq!(soft.decode_state_floats(10), 2 * (2 * 10 * 16));
    assert_eq!(soft.decode_state_floats(20), 2 * (2 * 20 * 16));
    let elu = config("linear:elu1", PositionKind::Learned);
    assert_eq!(elu.decode_state_floats(10), 2 * (2 * (8 * 8 + 8)));
    assert_eq!(elu.decode_state_floats(1000), elu.decode_state_floats(10));
    // Taylor with d' = 4: F = 1 + 4 + 16 = 21.
    let taylor = config("linear:taylor:feature_dim=4", PositionKind::Learned);
    assert_eq!(taylor.decode_state_floats(10), 2 * (2 * (21 * 8 + 21)));
    // Grouped-query attention caches the key/value heads only: one of two halves the cache.
    let gqa = ModelConfig { n_kv_heads: 1, ..soft.clone() };
    assert_eq!(gqa.decode_state_floats(20), soft.decode_state_floats(20) / 2);
    // A window caps the cache at W keys.
    let window = config("softmax:window=8", PositionKind::Learned);
    assert_eq!(window.decode_state_floats(1000), soft.decode_state_floats(8));
    assert_eq!(window.decode_state_floats(5), soft.decode_state_floats(5));
}

/// `init = "gpt2"` draws embeddings and projections from N(0, 0.02) (the residual writers from
/// N(0, 0.02/√(2L))), zeroes their biases, leaves a family's own parameters as the default
/// initialisation drew them, and is as reproducible as the default.
#[test]
fn gpt2_init_draws_the_documented_scales_and_keeps_family_parameters() {
    use crate::init::InitScheme;
    let d = device();
    let cfg =
        ModelConfig { d_model: 64, mlp_ratio: 4, ..config("decay:mamba2", PositionKind::Learned) };
    let gpt2 = ModelConfig { init: InitScheme::Gpt2, ..cfg.clone() };
    let params = |c: &ModelConfig| -> std::collections::BTreeMap<String, Vec<f32>> {
        struct Collect(Vec<String>, std::collections::BTreeMap<String, Vec<f32>>);
        impl burn::module::ModuleVisitor for Collect {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.0.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.0.pop();
            }
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                self.1.insert(
                    self.0.join("."),
                    p.val().into_data().convert::<f32>().try_into_vec::<f32>().unwrap(),
                );
            }
        }
        let mut v = Collect(Vec::new(), Default::default());
        c.init(&io(), 7, &d).unwrap().visit(&mut v);
        v.1
    };
    let std =
        |v: &[f32]| (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let (base, g) = (params(&cfg), params(&gpt2));
    assert!(
        (std(&g["input.Tokens.weight"]) - 0.02).abs() < 0.004,
        "{}",
        std(&g["input.Tokens.weight"])
    );
    assert!((std(&base["input.Tokens.weight"]) - 1.0).abs() < 0.2, "Burn's default is N(0, 1)");
    assert!((std(&g["blocks.0.mlp.up.weight"]) - 0.02).abs() < 0.002);
    assert!((std(&g["blocks.1.mixer.Decay.heads.out.weight"]) - 0.01).abs() < 0.002, "0.02/√(2·2)");
    assert!(g["blocks.0.mixer.Decay.heads.qkv.bias"].iter().all(|&b| b == 0.0));
    assert_eq!(
        g["blocks.0.mixer.Decay.a_log"], base["blocks.0.mixer.Decay.a_log"],
        "gates keep their own init"
    );
    assert_eq!(g["blocks.0.norm_mixer.Layer.gamma"], base["blocks.0.norm_mixer.Layer.gamma"]);
    assert_eq!(params(&gpt2), g, "same seed, same weights");
    // Redrawn parameters stay trainable on an autodiff device (a fresh tensor would be a
    // constant the optimizer never moves): the loss has a gradient for each.
    let ad = crate::testing::ad_device();
    let m = gpt2.init(&io(), 7, &ad).unwrap();
    let grads = m.forward(LmInput::Tokens(tokens(&random_ids(8, 3), 1, &ad))).sum().backward();
    let crate::lm::InputLayer::Tokens(e) = &m.input else { panic!("token input") };
    assert!(e.weight.val().grad(&grads).is_some(), "embedding");
    assert!(m.positions.learned.as_ref().unwrap().weight.val().grad(&grads).is_some(), "positions");
    assert!(m.blocks[1].mlp.as_ref().unwrap().down.weight.val().grad(&grads).is_some(), "mlp.down");
    assert!(m.head.as_ref().unwrap().weight.val().grad(&grads).is_some(), "head");
    assert!(toml::to_string(&cfg).unwrap().contains("init = \"burn\""));
    assert!(toml::to_string(&gpt2).unwrap().contains("init = \"gpt2\""));
}

/// Canon layers (`model.canon`) at sites A and C: with them, every family still decodes to its
/// forward (the layers carry their last inputs) and ignores the future; the decoding state grows
/// by `(K − 1)·d_model` per site and layer; the layers change the output (they are in the path);
/// and bad settings are refused with the fix.
#[test]
fn canon_layers_decode_to_the_forward_stay_causal_and_count_their_state() {
    use crate::canon::CanonSites;
    let d = device();
    let canon = |spec: &str, sites: &str| ModelConfig {
        canon: CanonSites::try_from(sites.to_string()).unwrap(),
        ..config_for_every_spec(spec, PositionKind::Rope)
    };
    for (i, spec) in
        ["softmax", "linear:elu1", "delta:gated:conv=4", "decay:gla"].iter().enumerate()
    {
        for sites in ["a", "c", "ac"] {
            let m = model(&canon(spec, sites), &d);
            assert_decoding_equals_forward(&m, 700 + i as u64, &format!("{spec} canon={sites}"));
            let a = random_ids(10, 800 + i as u64);
            let mut b = a.clone();
            b[7] = (b[7] + 1) % VOCAB as i64;
            let (out_a, out_b) = (
                m.forward(LmInput::Tokens(tokens(&a, 1, &d))),
                m.forward(LmInput::Tokens(tokens(&b, 1, &d))),
            );
            assert_close(out_b.narrow(1, 0, 7), out_a.narrow(1, 0, 7), 1e-5, "canon: prefix");
        }
        let plain = model(&config_for_every_spec(spec, PositionKind::Rope), &d);
        let with = model(&canon(spec, "ac"), &d);
        let ids = LmInput::Tokens(tokens(&random_ids(8, 9), 1, &d));
        let diff: f32 = values((with.forward(ids.clone()) - plain.forward(ids)).abs().sum())[0];
        assert!(diff > 1e-3, "{spec}: Canon layers left the output unchanged");
    }
    // 2 layers x 2 sites x (4 − 1) x d_model 32 on top of the mixers' own state.
    let base = config_for_every_spec("linear:elu1", PositionKind::Rope);
    assert_eq!(
        canon("linear:elu1", "ac").decode_state_floats(10),
        base.decode_state_floats(10) + 2 * 2 * 3 * 32
    );
    let wide = ModelConfig { canon_kernel: 7, ..canon("linear:elu1", "a") };
    assert_eq!(wide.decode_state_floats(10), base.decode_state_floats(10) + 2 * 6 * 32);
    let no_mlp = ModelConfig { mlp_ratio: 0, ..canon("softmax", "c") };
    assert!(no_mlp.validate(&io()).unwrap_err().to_string().contains("canon = \"a\""));
    let one_tap = ModelConfig { canon_kernel: 1, ..canon("softmax", "a") };
    assert!(one_tap.validate(&io()).unwrap_err().to_string().contains("canon_kernel = 1"));
    // Without sites the kernel is not read (the default config keeps validating).
    let unused = ModelConfig { canon_kernel: 1, ..base };
    assert!(unused.validate(&io()).is_ok());
}
