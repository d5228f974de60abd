//! The softmax module end to end: its fused and monitored paths agree, decoding equals the forward,
//! long inputs stay finite, the output gate is its formula, and specs parse, print and size.

use super::*;
use crate::mixer::{MixContext, SequenceMixer};
use crate::testing::{
    assert_close, assert_forward_finite, device, output_and_grads, randn, values,
};

/// The layer's fused path (no monitoring) and its composed path (monitoring on) give the
/// same outputs and gradients, so the weights a report shows belong to the model that trained.
#[test]
fn fused_and_monitored_paths_agree() {
    use crate::mixer::{MixContext, MixerDims, MixerFamily};
    let dims = MixerDims { seed: 1, layer: 0, bias: true, ..MixerDims::new(24, 3, 16) };
    let rope = burn::nn::RotaryEncodingConfig::new(16, 8).init(&crate::testing::ad_device());
    for (scaling, gate, rope) in [
        (Scaling::SqrtD, OutputGate::None, None),
        (Scaling::None, OutputGate::None, None),
        (Scaling::SqrtD, OutputGate::Output, None),
        (Scaling::SqrtD, OutputGate::None, Some(&rope)),
    ] {
        for causal in [true, false] {
            let x = randn([2, 11, 24], 60, &device());
            // Built and filled under the seeding lock: lazily drawn weights would take numbers
            // from the shared stream while another test holds it.
            let ad = crate::testing::ad_device();
            let layer = crate::seeding::with_seed(&ad, 62, || {
                let layer = SoftmaxAttentionConfig { gate, ..SoftmaxAttentionConfig::new(scaling) }
                    .init(&dims, &ad);
                crate::seeding::materialize(&layer);
                layer
            });
            let run = |diagnostics: bool| {
                output_and_grads(std::slice::from_ref(&x), 61, |v| {
                    let ctx =
                        if causal { MixContext::causal() } else { MixContext::bidirectional() };
                    layer
                        .forward(v[0].clone(), ctx.with_rope(rope).with_diagnostics(diagnostics))
                        .output
                })
            };
            let ((fused, fused_g), (composed, composed_g)) = (run(false), run(true));
            let what =
                format!("{} {gate:?} rope={} causal={causal}", scaling.name(), rope.is_some());
            assert_close(fused, composed, 1e-5, &format!("{what}: output"));
            assert_close(
                fused_g[0].clone(),
                composed_g[0].clone(),
                1e-5,
                &format!("{what}: gradient"),
            );
        }
    }
}

const LENGTH_AWARE: [&str; 12] = [
    "ssmax",
    "log_n_temp",
    "softpick",
    "forget=true",
    "gate=output",
    "sink=learned",
    "sink=zero",
    "num_keys:forget=true:gate=output:sink=zero",
    "window=3",
    "window=1",
    "sum_key_norms:window=4:forget=true:sink=learned",
    "ssmax:window=3",
];

/// A prompt, single tokens and a 3-token piece through the KV cache (and FoX's carried
/// `c_t`) give the forward's outputs, under RoPE, for every new scaling and option.
#[test]
fn step_equals_forward_for_the_length_aware_variants() {
    use burn::nn::RotaryEncodingConfig;
    let d = device();
    let rope = RotaryEncodingConfig::new(32, 4).init(&d);
    for spec in LENGTH_AWARE {
        let m = layer(spec, &d);
        crate::testing::assert_decoding_equals_forward(
            &m,
            randn([2, 10, 8], 400, &d),
            Some(&rope),
            &format!("softmax:{spec}"),
        );
    }
}

/// Eight times the training length (`max_seq_len` 16, T = 128) with logits in the hundreds:
/// every variant stays finite, forward and backward, causal and not.
#[test]
fn long_inputs_with_large_logits_stay_finite() {
    let ad = crate::testing::ad_device();
    for spec in LENGTH_AWARE.iter().copied().chain(["", "none", "sum_key_norms", "qk_norm"]) {
        let m = layer(spec, &ad);
        for causal in [true, false] {
            let x = (randn([1, 128, 8], 410, &ad) * 30.0).require_grad();
            let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
            assert_forward_finite(&m, x, ctx, &format!("softmax:{spec} causal={causal}"));
        }
    }
}

/// The output gate by hand: the ungated layer's merged heads times `σ(x W_g + b_g)`,
/// elementwise, then the output projection (the gated and ungated layers share q/k/v/o).
#[test]
fn output_gate_multiplies_each_head_channel_before_the_projection() {
    let d = device();
    let gated = layer("gate=output", &d);
    let x = randn([2, 5, 8], 430, &d);
    let (q, k, v) = gated.heads.split(x.clone());
    let (y, _) = softmax_attention(q, k, v, Scaling::SqrtD, &ScoreTerms::default(), true, 0);
    let [b, h, t, dv] = y.dims();
    let merged = y.swap_dims(1, 2).reshape([b, t, h * dv]);
    let g = gated.gate.as_ref().unwrap();
    let gate = burn::tensor::activation::sigmoid(
        x.clone().matmul(g.weight.val().unsqueeze::<3>())
            + g.bias.as_ref().unwrap().val().reshape([1, 1, h * dv]),
    );
    let want = gated.heads.output(merged * gate);
    assert_close(gated.forward(x, MixContext::causal()).output, want, 1e-5, "gate=output");
}

#[test]
fn specs_parse_print_and_size() {
    for spec in [
        "",
        "none",
        "ssmax",
        "forget=true",
        "gate=output:sink=learned",
        "log_n_temp:attn_scale=0.2:floor_scale=4",
        "num_keys:forget=true:sink=zero",
    ] {
        assert_eq!(config(spec).to_string(), spec);
    }
    assert_eq!(config("sqrt_d:forget=false:gate=none:sink=none").to_string(), "");
    for (spec, needle) in [
        ("fast", "unknown scaling 'fast'"),
        ("floor_scale=4", "belong to softmax:log_n_temp"),
        ("log_n_temp:floor_scale=0", "floor_scale must be"),
        ("softpick:sink=zero", "softpick has no softmax denominator"),
        ("sink=maybe", "sink"),
        ("gate=input", "gate"),
        ("ssmax:bias=1", "unknown option"),
    ] {
        let err = SoftmaxAttentionConfig::parse(&spec.split(':').collect::<Vec<_>>(), spec)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{spec}: {err}");
    }
    // d_model 8, 2 heads of 4: the cache holds 2·8 floats per token, FoX one more per head.
    assert_eq!(config("").decode_state_floats(&dims(), 10), 160);
    assert_eq!(config("forget=true").decode_state_floats(&dims(), 10), 160 + 20);
    let m = config("forget=true:gate=output:sink=learned").init(&dims(), &device());
    assert_eq!(
        values(m.forget.as_ref().unwrap().bias.as_ref().unwrap().val()),
        vec![FORGET_BIAS_INIT; 2]
    );
    assert_eq!(m.gate.as_ref().unwrap().weight.dims(), [8, 8]);
    assert_eq!(values(m.sink.as_ref().unwrap().val()), vec![0.0; 2]);
}
