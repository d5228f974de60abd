//! MLA against DeepSeek-V2's equations: the layer against a naive oracle (outputs, input and
//! parameter gradients), the absorbed and explicit decoding paths against each other and the
//! forward, causality, long inputs, the cache's size, diagnostics and specs.

use super::*;
use crate::config::{ModelConfig, ModelConfigError};
use crate::mixer::{MixContext, SequenceMixer};
use crate::position::PositionKind;
use crate::stack::MixerStack;
use crate::testing::{
    ad_device, assert_close, assert_decoding_equals_forward, assert_forward_finite, device, randn,
    seeded_layer, values,
};
use burn::module::Param;
use burn::nn::{Linear, RmsNorm, RotaryEncoding, RotaryEncodingConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

/// `x W + b` token by token, with plain matmuls.
fn affine(x: Tensor<3>, l: &Linear) -> Tensor<3> {
    let [b, t, d_in] = x.dims();
    let w = l.weight.val();
    let out = w.dims()[1];
    let y = x.reshape([b * t, d_in]).matmul(w);
    let y = match &l.bias {
        Some(bias) => y + bias.val().unsqueeze(),
        None => y,
    };
    y.reshape([b, t, out])
}

/// `[b, t, d_in] × [d_in, d_out]`.
fn times(x: Tensor<3>, w: Tensor<2>) -> Tensor<3> {
    let [b, t, d_in] = x.dims();
    let out = w.dims()[1];
    x.reshape([b * t, d_in]).matmul(w).reshape([b, t, out])
}

/// The whole layer from DeepSeek-V2's equations, head by head and query by query: the latent
/// `c = W_DKV h`, each head's `k^C = W_UK,i c` and `v = W_UV,i c` (its key/value group's
/// columns), `q^C = W_Q,i h` (through `c^Q` with a query latent), the decoupled `q^R`, `k^R`
/// rotated by `rope` (a table of the rotated part's own width: `d_R`, or `d_h` when
/// `rope_dim = 0` and the model's RoPE rotates `q^C`, `k^C`), `q = [q^C; q^R]`, `k = [k^C; k^R]`
/// concatenated, `softmax(q·k/√(d_h + d_R))` over the keys each query sees, then `W_O`.
fn naive_layer(
    m: &MlaAttention,
    x: Tensor<3>,
    rope: Option<&RotaryEncoding>,
    norm_eps: f64,
    causal: bool,
) -> Tensor<3> {
    let [b, t, _] = x.dims();
    let (h, d_h, d_r) = (m.n_heads(), m.d_head(), m.rope_dim());
    let kv_heads = m.kv_up.weight.dims()[1] / (2 * d_h);
    let group = h / kv_heads;
    let rot = |y: Tensor<3>| match rope {
        Some(r) => {
            let w = y.dims()[2];
            r.apply(y.unsqueeze_dim::<4>(1), 0).reshape([b, t, w])
        }
        None => y,
    };
    let norm = |y: Tensor<3>, n: &Option<RmsNorm>| match n {
        Some(n) => {
            let ms = y.clone().powi_scalar(2).mean_dim(2);
            y / (ms + norm_eps).sqrt() * n.gamma.val().reshape([1, 1, d_h])
        }
        None => y,
    };
    // DeepSeek-V2's code's latent norm: c / √(mean(c²) + ε) · γ over the latent's width.
    let latent_norm = |y: Tensor<3>, n: &Option<RmsNorm>| match n {
        Some(n) => {
            let width = y.dims()[2];
            let ms = y.clone().powi_scalar(2).mean_dim(2);
            y / (ms + super::LATENT_NORM_EPS).sqrt() * n.gamma.val().reshape([1, 1, width])
        }
        None => y,
    };
    let c = latent_norm(affine(x.clone(), &m.kv_down), &m.latent_norm);
    let source = m
        .q_down
        .as_ref()
        .map_or(x.clone(), |l| latent_norm(affine(x.clone(), l), &m.q_latent_norm));
    let q_all = affine(source.clone(), &m.q);
    let q_rope_all = m.rope.as_ref().map(|r| affine(source.clone(), &r.q));
    let k_rope = m.rope.as_ref().map(|r| rot(affine(x, &r.k)));
    let outputs: Vec<Tensor<3>> = (0..h)
        .map(|i| {
            let kv = i / group;
            // W_UK,i and W_UV,i: the head's columns in each half of [W_UK | W_UV].
            let up = |part: usize| {
                let start = (part * kv_heads + kv) * d_h;
                times(c.clone(), m.kv_up.weight.val().narrow(1, start, d_h))
            };
            let q_c = norm(q_all.clone().narrow(2, i * d_h, d_h), &m.q_norm);
            let k_c = norm(up(0), &m.k_norm);
            let v = up(1);
            let (q, k) = match (&q_rope_all, &k_rope) {
                (Some(q_r), Some(k_r)) => (
                    Tensor::cat(vec![q_c, rot(q_r.clone().narrow(2, i * d_r, d_r))], 2),
                    Tensor::cat(vec![k_c, k_r.clone()], 2),
                ),
                _ => (rot(q_c), rot(k_c)),
            };
            let rows: Vec<Tensor<3>> = (0..t)
                .map(|r| {
                    let n = if causal { r + 1 } else { t };
                    let s =
                        q.clone().narrow(1, r, 1).matmul(k.clone().narrow(1, 0, n).swap_dims(1, 2));
                    softmax(s / ((d_h + d_r) as f32).sqrt(), 2).matmul(v.clone().narrow(1, 0, n))
                })
                .collect();
            Tensor::cat(rows, 1)
        })
        .collect();
    affine(Tensor::cat(outputs, 2), &m.out)
}

/// The gradient of every parameter of `m` in `g`, by name, flattened.
fn parameter_grads(m: &MlaAttention, g: &burn::tensor::Gradients) -> Vec<(String, Tensor<1>)> {
    let mut out = Vec::new();
    let mut linear = |name: &str, l: &Linear| {
        let weight = l.weight.val().grad(g).unwrap_or_else(|| panic!("no {name}.weight gradient"));
        out.push((format!("{name}.weight"), weight.flatten::<1>(0, 1)));
        if let Some(b) = &l.bias {
            out.push((format!("{name}.bias"), b.val().grad(g).expect("a bias gradient")));
        }
    };
    linear("q", &m.q);
    linear("kv_down", &m.kv_down);
    linear("kv_up", &m.kv_up);
    linear("out", &m.out);
    if let Some(l) = &m.q_down {
        linear("q_down", l);
    }
    if let Some(r) = &m.rope {
        linear("rope.q", &r.q);
        linear("rope.k", &r.k);
    }
    for (name, n) in [
        ("q_norm", &m.q_norm),
        ("k_norm", &m.k_norm),
        ("latent_norm", &m.latent_norm),
        ("q_latent_norm", &m.q_latent_norm),
    ] {
        if let Some(n) = n {
            out.push((format!("{name}.gamma"), n.gamma.val().grad(g).expect("a γ gradient")));
        }
    }
    out
}

/// A layer with norm gains away from one (so a misplaced γ shows), on `device`.
fn layer(spec: &str, dims: &MixerDims, device: &Device) -> MlaAttention {
    let mut m = seeded_layer::<MlaAttentionConfig>(spec, dims, device);
    for (seed, norm) in [
        (710, &mut m.q_norm),
        (711, &mut m.k_norm),
        (712, &mut m.latent_norm),
        (713, &mut m.q_latent_norm),
    ] {
        if let Some(n) = norm {
            let width = n.gamma.dims()[0];
            n.gamma = Param::from_tensor(randn([width], seed, device) * 0.3 + 1.0);
        }
    }
    m
}

const EPS: f64 = 1e-5;

/// The layers' shapes under test: 2 heads of 8 (`d_model` 16), alone and with grouped key/value
/// heads and Qwen3's norm.
fn dims(kv: usize, head_norm: bool) -> MixerDims {
    MixerDims {
        n_kv_heads: kv,
        qk_head_norm: head_norm.then_some(EPS),
        seed: 3,
        ..MixerDims::new(16, 2, 16)
    }
}

/// A spec, its key/value heads, whether Qwen3's norm is on, the model's RoPE (head-wide) and
/// the oracle's (the rotated part's own width).
type Case<'a> = (&'a str, usize, bool, Option<&'a RotaryEncoding>, Option<&'a RotaryEncoding>);

/// The layer against [`naive_layer`] on fresh inputs: outputs, the input's gradient and every
/// parameter's, causal and not, with and without the decoupled RoPE part, a query latent,
/// grouped key/value heads and the per-head norm, and RoPE on the compressed part. The forward
/// (no diagnostics, on flex) runs the fused softmax kernel on the packed `[q | k | v]` rows, so
/// this is that path's test against the equations.
#[test]
fn the_layer_matches_the_equations_in_outputs_and_gradients() {
    let ad = ad_device();
    let head_rope = RotaryEncodingConfig::new(16, 8).init(&ad);
    let narrow_rope = RotaryEncodingConfig::new(16, 4).init(&ad);
    // (spec, key/value heads, head norm, the model's RoPE, the oracle's RoPE)
    let cases: [Case<'_>; 7] = [
        ("", 2, false, None, None),
        ("latent_norm=true", 2, false, None, None),
        ("rope_dim=4:q_latent=6:latent_norm=true", 1, true, Some(&head_rope), Some(&narrow_rope)),
        ("rope_dim=4", 2, false, Some(&head_rope), Some(&narrow_rope)),
        ("rope_dim=4:q_latent=6:latent=5", 1, true, Some(&head_rope), Some(&narrow_rope)),
        ("", 1, false, Some(&head_rope), Some(&head_rope)),
        ("q_latent=6", 2, true, None, None),
    ];
    for (n, (spec, kv, head_norm, rope, oracle_rope)) in cases.into_iter().enumerate() {
        let m = layer(spec, &dims(kv, head_norm), &ad);
        for causal in [true, false] {
            let what = format!(
                "mla:{spec} kv={kv} norm={head_norm} rope={} causal={causal}",
                rope.is_some()
            );
            let x = randn([2, 6, 16], 720 + 2 * n as u64 + causal as u64, &ad);
            let probe = randn([2, 6, 16], 740 + n as u64, &ad);
            let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
                let x = x.clone().require_grad();
                let y = f(x.clone());
                let g = (y.clone() * probe.clone()).sum().backward();
                (y, x.grad(&g).expect("input gradient"), parameter_grads(&m, &g))
            };
            let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
            let (fast, fast_dx, fast_g) = run(&|x| m.forward(x, ctx.with_rope(rope)).output);
            let (slow, slow_dx, slow_g) = run(&|x| naive_layer(&m, x, oracle_rope, EPS, causal));
            assert_close(fast, slow, 1e-4, &format!("{what}: output"));
            assert_close(fast_dx, slow_dx, 1e-4, &format!("{what}: input gradient"));
            for ((name, f), (_, s)) in fast_g.into_iter().zip(slow_g) {
                assert_close(f, s, 1e-4, &format!("{what}: {name} gradient"));
            }
        }
    }
}

/// Decodes `x` (`[batch, 10, d_model]`) by `path` in the schedule of
/// [`assert_decoding_equals_forward`]: a 4-token prompt, three single tokens, a 3-token piece.
fn decode(
    m: &MlaAttention,
    x: Tensor<3>,
    rope: Option<&RotaryEncoding>,
    path: DecodePath,
) -> Tensor<3> {
    let mut state = m.empty_state();
    let mut outs = Vec::new();
    for (start, len) in [(0, 4), (4, 1), (5, 1), (6, 1), (7, 3)] {
        outs.push(m.step_by(x.clone().narrow(1, start, len), &mut state, rope, path));
    }
    assert_eq!(state.position, 10);
    Tensor::cat(outs, 1)
}

/// Where the keys are linear in the latent, the absorbed path (scores in the latent space, `W_UV`
/// after the weighted sum) equals the explicit one (up-project the cache, then attend), and both
/// equal the forward: without RoPE, with the decoupled part under RoPE, with a query latent and
/// grouped key/value heads.
#[test]
fn absorbed_decoding_equals_explicit_decoding_equals_the_forward() {
    let dev = device();
    let rope = RotaryEncodingConfig::new(32, 8).init(&dev);
    for (spec, kv, with_rope) in [
        ("", 2, false),
        ("rope_dim=4", 2, true),
        ("rope_dim=2:q_latent=6:latent=12", 1, true),
        ("latent=3", 2, false),
        ("rope_dim=4:q_latent=6:latent_norm=true", 2, true),
    ] {
        let m = layer(spec, &dims(kv, false), &dev);
        let rope = with_rope.then_some(&rope);
        assert!(m.absorbable(rope), "{spec}");
        let x = randn([2, 10, 16], 750, &dev);
        let full = m.forward(x.clone(), MixContext::causal().with_rope(rope)).output;
        let absorbed = decode(&m, x.clone(), rope, DecodePath::Absorbed);
        let explicit = decode(&m, x.clone(), rope, DecodePath::Explicit);
        assert_close(
            absorbed.clone(),
            explicit.clone(),
            1e-5,
            &format!("mla:{spec}: absorbed vs explicit"),
        );
        assert_close(explicit, full.clone(), 1e-4, &format!("mla:{spec}: explicit vs forward"));
        assert_close(absorbed, full, 1e-4, &format!("mla:{spec}: absorbed vs forward"));
        // SequenceMixer::step takes the absorbed path here.
        assert_decoding_equals_forward(&m, x, rope, &format!("mla:{spec} step"));
    }
}

/// RoPE on the compressed part (`rope_dim = 0` under the model's RoPE) and the per-head norm
/// make the keys nonlinear in the latent: `step` takes the explicit path, which still equals
/// the forward, and the absorbed one refuses.
#[test]
fn keys_not_linear_in_the_latent_decode_by_the_explicit_path() {
    let dev = device();
    let rope = RotaryEncodingConfig::new(32, 8).init(&dev);
    for (spec, head_norm, with_rope) in
        [("", false, true), ("", true, false), ("rope_dim=4", true, true)]
    {
        let m = layer(spec, &dims(1, head_norm), &dev);
        let rope = with_rope.then_some(&rope);
        assert!(!m.absorbable(rope), "{spec}");
        assert_decoding_equals_forward(
            &m,
            randn([2, 10, 16], 760, &dev),
            rope,
            &format!("mla:{spec} norm={head_norm}"),
        );
    }
    let m = layer("", &dims(2, true), &dev);
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.step_by(randn([1, 2, 16], 761, &dev), &mut m.empty_state(), None, DecodePath::Absorbed)
    }));
    assert!(refused.is_err(), "the absorbed path must refuse normalised keys");
}

/// Changing the inputs after position t leaves every output at positions ≤ t unchanged, and the
/// later outputs do change.
#[test]
fn outputs_ignore_the_future() {
    let dev = device();
    let rope = RotaryEncodingConfig::new(16, 8).init(&dev);
    for (spec, with_rope) in [("", false), ("rope_dim=4:q_latent=6", true), ("", true)] {
        let m = layer(spec, &dims(2, false), &dev);
        let rope = with_rope.then_some(&rope);
        let a = randn([1, 9, 16], 770, &dev);
        let b = Tensor::cat(vec![a.clone().narrow(1, 0, 5), randn([1, 4, 16], 771, &dev)], 1);
        let ctx = MixContext::causal().with_rope(rope);
        let (ya, yb) = (m.forward(a, ctx).output, m.forward(b, ctx).output);
        assert_close(
            yb.clone().narrow(1, 0, 5),
            ya.clone().narrow(1, 0, 5),
            1e-6,
            &format!("mla:{spec}: prefix"),
        );
        let moved = values((yb.narrow(1, 5, 4) - ya.narrow(1, 5, 4)).abs().sum())[0];
        assert!(moved > 1e-3, "mla:{spec}: the suffix did not react to new inputs");
    }
}

/// Eight times the training length (`max_seq_len` 16, T = 128) with logits in the hundreds:
/// outputs, input gradients and the reported weights stay finite, causal and not, under RoPE.
#[test]
fn long_inputs_with_large_logits_stay_finite() {
    let ad = ad_device();
    let rope = RotaryEncodingConfig::new(128, 8).init(&ad);
    for spec in ["", "rope_dim=4"] {
        let m = layer(spec, &dims(2, false), &ad);
        for causal in [true, false] {
            let x = (randn([1, 128, 16], 780, &ad) * 30.0).require_grad();
            let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
            assert_forward_finite(
                &m,
                x,
                ctx.with_rope(Some(&rope)),
                &format!("mla:{spec} causal={causal}"),
            );
        }
    }
}

/// The cache holds `(d_c + d_R)` floats per token whatever the heads, as
/// `decode_state_floats` reports, and a model of L layers holds `L·(d_c + d_R)·T`; softmax's
/// `2·H·d_h·T` per layer is what it replaces.
#[test]
fn the_cache_holds_the_latent_and_the_rope_key_only() {
    let dev = device();
    let rope = RotaryEncodingConfig::new(32, 8).init(&dev);
    for (spec, kv, d_c, d_r) in [("", 2, 16, 0), ("rope_dim=4:latent=6", 1, 6, 4)] {
        let dims = dims(kv, false);
        let config = MlaAttentionConfig::parse(
            &spec.split(':').filter(|p| !p.is_empty()).collect::<Vec<_>>(),
            spec,
        )
        .unwrap();
        assert_eq!(config.decode_state_floats(&dims, 10), 10 * (d_c + d_r), "{spec}");
        let m = layer(spec, &dims, &dev);
        let mut state = m.empty_state();
        m.step(randn([1, 7, 16], 790, &dev), &mut state, Some(&rope));
        m.step(randn([1, 3, 16], 791, &dev), &mut state, Some(&rope));
        assert_eq!(state.floats_per_sequence(), config.decode_state_floats(&dims, 10), "{spec}");
    }
    let model = |mixer: &str| ModelConfig {
        d_model: 32,
        n_heads: 4,
        n_layers: 3,
        positions: PositionKind::Rope,
        mixer: MixerStack::uniform(mixer.parse().unwrap()),
        ..ModelConfig::default()
    };
    // d_h = 8: the default latent is 16, so 3·(16 + 4)·T against softmax's 3·2·4·8·T.
    assert_eq!(model("mla:rope_dim=4").decode_state_floats(50), 3 * (16 + 4) * 50);
    assert_eq!(model("softmax").decode_state_floats(50), 3 * 2 * 4 * 8 * 50);
}

/// The diagnostics report the softmax weights: rows sum to one, nothing on the future.
#[test]
fn diagnostics_report_the_attention_weights() {
    let dev = device();
    let rope = RotaryEncodingConfig::new(16, 8).init(&dev);
    let m = layer("rope_dim=4", &dims(2, false), &dev);
    let ctx = MixContext::causal().with_rope(Some(&rope)).with_diagnostics(true);
    let diag = m.forward(randn([2, 5, 16], 800, &dev), ctx).diagnostics.expect("diagnostics");
    assert_eq!(diag.weights.dims(), [2, 2, 5, 5]);
    for s in values(diag.weights.clone().sum_dim(3)) {
        assert!((s - 1.0).abs() < 1e-5, "row sum {s}");
    }
    let w = values(diag.weights);
    for (i, x) in w.iter().enumerate() {
        let (row, col) = ((i / 5) % 5, i % 5);
        assert!(col <= row || *x == 0.0, "weight on the future at {row},{col}: {x}");
    }
    assert!(values(diag.entropy).iter().all(|e| e.is_finite() && *e >= 0.0));
}

#[test]
fn specs_parse_print_validate_and_refuse() {
    let parse = |parts: &[&str]| MlaAttentionConfig::parse(parts, "mla");
    assert_eq!(parse(&[]).unwrap().to_string(), "");
    assert_eq!(parse(&["rope_dim=4", "latent=8"]).unwrap().to_string(), "latent=8:rope_dim=4");
    assert_eq!(parse(&["latent_norm=true"]).unwrap().to_string(), "latent_norm=true");
    assert_eq!(parse(&["latent_norm=false"]).unwrap().to_string(), "");
    for (parts, needle) in [
        (&["rope_dim=3"][..], "even"),
        (&["latent=0"][..], "at least 1"),
        (&["q_latent=0"][..], "at least 1"),
        (&["rank=4"][..], "unknown option"),
    ] {
        let err = parse(parts).unwrap_err().to_string();
        assert!(err.contains(needle), "{parts:?}: {err}");
    }
    let config = parse(&["rope_dim=4"]).unwrap();
    assert!(config.needs_rope() && !MlaAttentionConfig::default().needs_rope());
    let err = config.validate(&MixerDims::new(12, 2, 16)).unwrap_err().to_string();
    assert!(err.contains("divisible by 4") && err.contains("model.head_dim"), "{err}");
    assert!(config.validate(&MixerDims::new(16, 2, 16)).is_ok());
    assert_eq!(MlaAttentionConfig::default().latent_dim(&MixerDims::new(16, 2, 16)), 16);

    // The model refuses a decoupled RoPE part without RoPE, in one line naming the fix.
    let cfg = |positions| ModelConfig {
        d_model: 16,
        n_heads: 2,
        positions,
        mixer: MixerStack::uniform("mla:rope_dim=4".parse().unwrap()),
        ..ModelConfig::default()
    };
    for positions in [PositionKind::Learned, PositionKind::None, PositionKind::Sinusoidal] {
        let err = cfg(positions).validate_shape().unwrap_err();
        assert!(matches!(err, ModelConfigError::NeedsRope { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("positions = \"rope\"") && !text.contains('\n'), "{text}");
    }
    assert!(cfg(PositionKind::Rope).validate_shape().is_ok());
}
