//! Differential attention against its formula: the kernel and the whole layer (outputs and
//! gradients, λ's and the norm's included) against naive oracles, λ and λ_init by hand numbers,
//! RoPE on each half, decoding, long inputs, specs.

use super::*;
use crate::mixer::{MixContext, SequenceMixer};
use crate::testing::{
    ad_device, assert_close, assert_decoding_equals_forward, assert_forward_finite, device,
    output_and_grads, randn, seeded_layer, values, visible_rows,
};
use burn::nn::RotaryEncodingConfig;
use burn::tensor::activation::softmax;

/// The kernel from the formula, one query at a time over exactly the keys it sees:
/// `(softmax(q₁·k₁/√d) − λ softmax(q₂·k₂/√d)) v`, `[q₁ | q₂]` the halves of `q`.
fn naive_differential(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    lambda: f32,
    causal: bool,
) -> Tensor<4> {
    let d = q.dims()[3] / 2;
    let half = |x: &Tensor<4>, i: usize| x.clone().narrow(3, i * d, d);
    let rows = visible_rows(q, k, v, causal).into_iter().map(|(qi, keys, vals)| {
        let map = |i: usize| {
            softmax(half(&qi, i).matmul(half(&keys, i).swap_dims(2, 3)) / (d as f32).sqrt(), 3)
        };
        (map(0) - map(1) * lambda).matmul(vals)
    });
    Tensor::cat(rows.collect(), 2)
}

#[test]
fn the_kernel_matches_the_formula_in_outputs_and_gradients() {
    let dev = device();
    for (n, causal) in [(0u64, true), (1, false)] {
        let seed = 600 + 10 * n;
        let inputs = [
            randn([2, 3, 7, 8], seed, &dev) * 2.0,
            randn([2, 3, 7, 8], seed + 1, &dev),
            randn([2, 3, 7, 8], seed + 2, &dev),
        ];
        let lambda = 0.37;
        let (fast, fg) = output_and_grads(&inputs, seed + 3, |x| {
            let l = Tensor::<1>::from_floats([lambda], &x[0].device());
            differential_weights(x[0].clone(), x[1].clone(), l, causal, 0).matmul(x[2].clone())
        });
        let (slow, sg) = output_and_grads(&inputs, seed + 3, |x| {
            naive_differential(&x[0], &x[1], &x[2], lambda, causal)
        });
        assert_close(fast, slow, 1e-4, &format!("causal={causal}: output"));
        for (i, (f, s)) in fg.into_iter().zip(sg).enumerate() {
            assert_close(f, s, 1e-4, &format!("causal={causal}: gradient {i}"));
        }
    }
}

/// The whole layer from the paper's equations with plain matmuls, head by head and query by
/// query: `λ` summed element by element from the four vectors, `λ_init` from the 1-based
/// `l = layer + 1`, the RMSNorm written out, then `(1 − λ_init)` and the output projection.
fn naive_layer(m: &DiffAttention, x: Tensor<3>, layer: usize, causal: bool) -> Tensor<3> {
    let [b, t, d_model] = x.dims();
    let (h, d_h) = (m.heads.n_heads(), m.heads.d_qk());
    let d = d_h / 2;
    let affine = |x: Tensor<3>, w: Tensor<2>, bias: Tensor<1>| {
        let out = w.dims()[1];
        (x.reshape([b * t, w.dims()[0]]).matmul(w) + bias.unsqueeze()).reshape([b, t, out])
    };
    let qkv = affine(x, m.heads.qkv.weight.val(), m.heads.qkv.bias.as_ref().unwrap().val());
    let l = layer as f64 + 1.0;
    let lambda_init = (0.8 - 0.6 * (-0.3 * (l - 1.0)).exp()) as f32;
    let dot = |a: &Tensor<1>, c: &Tensor<1>| {
        (0..d).fold(Tensor::<1>::zeros([1], &a.device()), |s, i| {
            s + a.clone().narrow(0, i, 1) * c.clone().narrow(0, i, 1)
        })
    };
    let lambda = (dot(&m.lambda_q1.val(), &m.lambda_k1.val()).exp()
        - dot(&m.lambda_q2.val(), &m.lambda_k2.val()).exp()
        + lambda_init)
        .reshape([1, 1, 1]);
    let gamma = m.norm.gamma.val().reshape([1, 1, d_h]);
    let heads: Vec<Tensor<3>> = (0..h)
        .map(|head| {
            let part = |block: usize| qkv.clone().narrow(2, block * h * d_h + head * d_h, d_h);
            let (q, k, v) = (part(0), part(1), part(2)); // [b, t, d_h]
            let rows: Vec<Tensor<3>> = (0..t)
                .map(|i| {
                    let n = if causal { i + 1 } else { t };
                    let (qi, keys) = (q.clone().narrow(1, i, 1), k.clone().narrow(1, 0, n));
                    let map = |p: usize| {
                        let s = qi
                            .clone()
                            .narrow(2, p * d, d)
                            .matmul(keys.clone().narrow(2, p * d, d).swap_dims(1, 2));
                        softmax(s / (d as f32).sqrt(), 2) // [b, 1, n]
                    };
                    (map(0) - map(1) * lambda.clone()).matmul(v.clone().narrow(1, 0, n))
                })
                .collect();
            let y = Tensor::cat(rows, 1); // [b, t, d_h]
            let rms = (y.clone().powi_scalar(2).mean_dim(2) + 1e-5).sqrt();
            y / rms * gamma.clone() * (1.0 - lambda_init)
        })
        .collect();
    let out = affine(
        Tensor::cat(heads, 2),
        m.heads.out.weight.val(),
        m.heads.out.bias.as_ref().unwrap().val(),
    );
    assert_eq!(out.dims(), [b, t, d_model]);
    out
}

/// A layer with λ vectors and γ far from their initial values (so λ is not just λ_init and
/// the norm's γ matters), on `device`.
fn shaken_layer(dims: &MixerDims, spec: &str, device: &Device) -> DiffAttention {
    let mut m = seeded_layer::<DiffAttentionConfig>(spec, dims, device);
    let half = dims.head_dim() / 2;
    let draw = |seed: u64| Param::from_tensor(randn([half], seed, device) * 0.6);
    m.lambda_q1 = draw(640);
    m.lambda_k1 = draw(641);
    m.lambda_q2 = draw(642);
    m.lambda_k2 = draw(643);
    m.norm.gamma = Param::from_tensor(randn([dims.head_dim()], 644, device) * 0.3 + 1.0);
    m
}

/// The layer against [`naive_layer`] on fresh inputs, causal and not: outputs, and the
/// gradients of the input, of the four λ vectors, of γ and of the projections.
#[test]
fn the_layer_matches_the_paper_in_outputs_and_gradients() {
    let ad = ad_device();
    let layer = 3;
    let dims = MixerDims { layer, seed: 5, ..MixerDims::new(16, 2, 16) };
    let m = shaken_layer(&dims, "", &ad);
    for causal in [true, false] {
        let x = randn([2, 6, 16], 650 + causal as u64, &ad);
        let probe = randn([2, 6, 16], 652, &ad);
        let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            let x = x.clone().require_grad();
            let y = f(x.clone());
            let g = (y.clone() * probe.clone()).sum().backward();
            let grad = |p: &Param<Tensor<1>>| p.val().grad(&g).expect("a λ gradient");
            let grads = vec![
                grad(&m.lambda_q1),
                grad(&m.lambda_k1),
                grad(&m.lambda_q2),
                grad(&m.lambda_k2),
                grad(&m.norm.gamma),
                m.heads.qkv.weight.val().grad(&g).unwrap().flatten::<1>(0, 1),
                m.heads.out.weight.val().grad(&g).unwrap().flatten::<1>(0, 1),
            ];
            (y, x.grad(&g).expect("input gradient"), grads)
        };
        let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
        let (slow, slow_dx, slow_g) = run(&|x| naive_layer(&m, x, layer, causal));
        // Without diagnostics the layer runs the fused kernel; with them, the composed maps.
        for (form, ctx) in [("fused", ctx), ("composed", ctx.with_diagnostics(true))] {
            let (fast, fast_dx, fast_g) = run(&|x| m.forward(x, ctx).output);
            let what = format!("{form}, causal={causal}");
            assert_close(fast, slow.clone(), 1e-4, &format!("{what}: output"));
            assert_close(fast_dx, slow_dx.clone(), 1e-4, &format!("{what}: input gradient"));
            let names = ["λ_q1", "λ_k1", "λ_q2", "λ_k2", "γ", "qkv", "out"];
            for ((f, s), name) in fast_g.into_iter().zip(slow_g.clone()).zip(names) {
                assert_close(f, s, 1e-4, &format!("{what}: {name} gradient"));
            }
        }
    }
}

/// λ by hand: `q1·k1 = 0.5·2 + 1·(−1) = 0`, `q2·k2 = 0.5 + 0.25 = 0.75`, so
/// `λ = e⁰ − e^0.75 + λ_init`; `λ_init` of the first layers is 0.2, 0.35551, 0.47071, and a fixed
/// `lambda_init=0.5` holds in every layer.
#[test]
fn lambda_is_reparameterised_as_in_the_paper() {
    let dev = device();
    let schedule = [0.2, 0.355_509_067_590_969_3, 0.470_713_018_343_584_2];
    for (layer, want) in schedule.into_iter().enumerate() {
        assert!((lambda_init_schedule(layer) - want).abs() < 1e-12, "layer {layer}");
    }
    assert!((lambda_init_schedule(1000) - 0.8).abs() < 1e-12, "deep layers approach 0.8");
    let fixed = DiffAttentionConfig { lambda_init: Some(0.5) };
    assert_eq!(fixed.lambda_init(7), 0.5);

    let set = |x: [f32; 2]| Param::from_tensor(Tensor::<1>::from_floats(x, &dev));
    for (layer, spec, lambda_init) in
        [(0, "", 0.2f32), (2, "", 0.470_713), (2, "lambda_init=0.5", 0.5)]
    {
        let dims = MixerDims { layer, ..MixerDims::new(8, 2, 16) }; // d_h 4: λ vectors of 2
        let mut m = seeded_layer::<DiffAttentionConfig>(spec, &dims, &dev);
        assert!((m.lambda_init() - lambda_init).abs() < 1e-6, "{layer} {spec}");
        m.lambda_q1 = set([0.5, 1.0]);
        m.lambda_k1 = set([2.0, -1.0]);
        m.lambda_q2 = set([1.0, 1.0]);
        m.lambda_k2 = set([0.5, 0.25]);
        let want = 1.0 - 0.75f32.exp() + lambda_init;
        let got = values(m.lambda())[0];
        assert!((got - want).abs() < 1e-6, "layer {layer} {spec}: λ {got} vs {want}");
    }
}

/// Each row of `A₁ − λA₂` sums to `1 − λ` (two rows of one), and the diagnostics report that
/// matrix.
#[test]
fn the_differential_map_rows_sum_to_one_minus_lambda() {
    let dev = device();
    let m = shaken_layer(&MixerDims::new(16, 2, 16), "", &dev);
    let lambda = values(m.lambda())[0];
    let out = m.forward(randn([1, 5, 16], 660, &dev), MixContext::causal().with_diagnostics(true));
    let w = out.diagnostics.expect("diagnostics").weights;
    assert_eq!(w.dims(), [1, 2, 5, 5]);
    for s in values(w.sum_dim(3)) {
        assert!((s - (1.0 - lambda)).abs() < 1e-5, "row sum {s} vs 1 − λ = {}", 1.0 - lambda);
    }
}

/// Under RoPE each half is its own `d_h/2`-wide head: the same as Burn's rotary encoding of
/// that width applied to `q₁`, `q₂`, `k₁`, `k₂` separately, at any offset.
#[test]
fn rope_rotates_each_half_as_its_own_head() {
    let dev = device();
    let full = RotaryEncodingConfig::new(32, 8).init(&dev);
    let half = RotaryEncodingConfig::new(32, 4).init(&dev);
    for offset in [0, 5] {
        let (q, k) = (randn([2, 2, 6, 8], 670, &dev), randn([2, 1, 6, 8], 671, &dev));
        let (rq, rk) = rotate_halves(q.clone(), k.clone(), Some(&full), offset);
        let by_half = |x: Tensor<4>| {
            let parts = [x.clone().narrow(3, 0, 4), x.narrow(3, 4, 4)];
            Tensor::cat(parts.map(|p| half.apply(p, offset)).to_vec(), 3)
        };
        assert_close(rq, by_half(q), 1e-5, &format!("queries at offset {offset}"));
        assert_close(rk, by_half(k), 1e-5, &format!("keys at offset {offset}"));
    }
}

/// Decoding through the KV cache (a prompt, single tokens, a piece) equals the forward pass,
/// with and without RoPE, with grouped-query attention, and with a fixed λ_init.
#[test]
fn step_equals_forward() {
    let dev = device();
    let rope = RotaryEncodingConfig::new(32, 8).init(&dev);
    for (spec, kv) in [("", 2), ("", 1), ("lambda_init=0.5", 2)] {
        let dims = MixerDims { layer: 1, n_kv_heads: kv, ..MixerDims::new(16, 2, 16) };
        let m = shaken_layer(&dims, spec, &dev);
        for rope in [None, Some(&rope)] {
            assert_decoding_equals_forward(
                &m,
                randn([2, 10, 16], 680, &dev),
                rope,
                &format!("diff:{spec} kv={kv} rope={}", rope.is_some()),
            );
        }
    }
}

/// Eight times the training length (`max_seq_len` 16, T = 128) with logits in the hundreds:
/// outputs, input gradients and the reported weights stay finite, causal and not, under RoPE.
#[test]
fn long_inputs_with_large_logits_stay_finite() {
    let ad = ad_device();
    let rope = RotaryEncodingConfig::new(128, 8).init(&ad);
    let m = shaken_layer(&MixerDims::new(16, 2, 16), "", &ad);
    for causal in [true, false] {
        let x = (randn([1, 128, 16], 690, &ad) * 30.0).require_grad();
        let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
        let ctx = ctx.with_rope(Some(&rope));
        assert_forward_finite(&m, x.clone(), ctx, &format!("causal={causal}"));
        // The fused kernel (no diagnostics) as well.
        let y = m.forward(x.clone(), ctx).output;
        let dx = x.grad(&y.clone().sum().backward()).expect("input gradient");
        for (what, t) in [("output", values(y)), ("input gradient", values(dx))] {
            assert!(t.iter().all(|v| v.is_finite()), "fused, causal={causal}: non-finite {what}");
        }
    }
}

#[test]
fn specs_parse_print_validate_and_size() {
    let parse = |parts: &[&str]| DiffAttentionConfig::parse(parts, "diff");
    assert_eq!(parse(&[]).unwrap().to_string(), "");
    assert_eq!(parse(&["lambda_init=0.8"]).unwrap().to_string(), "lambda_init=0.8");
    for (parts, needle) in
        [(&["lambda_init=nan"][..], "lambda_init"), (&["lambda=0.8"][..], "unknown option")]
    {
        let err = parse(parts).unwrap_err().to_string();
        assert!(err.contains(needle), "{parts:?}: {err}");
    }
    let config = DiffAttentionConfig::default();
    let err = config.validate(&MixerDims::new(12, 2, 16)).unwrap_err().to_string();
    assert!(err.contains("divisible by 4") && err.contains("model.head_dim"), "{err}");
    assert!(config.validate(&MixerDims::new(16, 2, 16)).is_ok());
    let dims = MixerDims { n_kv_heads: 1, ..MixerDims::new(16, 2, 16) };
    assert_eq!(config.decode_state_floats(&dims, 10), KvCache::floats(&dims, 10));
    assert_eq!(config.decode_state_floats(&dims, 10), 2 * 10 * 8);
}
