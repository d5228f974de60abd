//! The decay module end to end: its forms agree on outputs and every gradient, decoding equals
//! the forward, the gates are their formulas, and specs parse, print and size.

use super::*;
use crate::heads::causal_mask;
use crate::mixer::{MixContext, SequenceMixer};
use crate::recurrent_layer::RecurrentLayer;
use crate::testing::{ad_device, assert_close, assert_values_close, randn, values};
use burn::nn::RotaryEncodingConfig;

/// Every gate parameter's gradient (empty for retnet).
fn gate_grads(m: &DecayAttention, grads: &burn::tensor::Gradients) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for layer in [&m.dt, &m.alpha].into_iter().flatten() {
        out.push(values(layer.weight.val().grad(grads).expect("weight grad")));
        out.push(values(layer.bias.as_ref().unwrap().val().grad(grads).expect("bias grad")));
    }
    if let Some(a) = &m.a_log {
        out.push(values(a.val().grad(grads).expect("a_log grad")));
    }
    out
}

/// The module end to end, for every gate and both norms: the three forms give the same
/// output and the same gradients with respect to the input and to every gate parameter, and
/// the output equals the naive recurrence on the module's own features and gates.
#[test]
fn module_forms_agree_on_outputs_input_and_gate_gradients() {
    let ad = ad_device();
    for (s, gate) in Gate::ALL.into_iter().enumerate() {
        for norm in ["none", "sum"] {
            let spec = format!("{}:norm={norm}:chunk=3", gate.name());
            let base = layer(&spec, &ad);
            let x = randn([2, 7, 8], 1500 + s as u64, &device());
            let probe = randn([2, 7, 8], 1510 + s as u64, &ad);
            let run = |form: LinearForm| {
                let mut m = base.clone();
                m.form = form;
                let x = Tensor::<3>::from_data(x.to_data(), &ad).require_grad();
                let y = m.forward(x.clone(), MixContext::causal()).output;
                let grads = (y.clone() * probe.clone()).sum().backward();
                (values(y), values(x.grad(&grads).unwrap()), gate_grads(&m, &grads))
            };
            let (want, want_x, want_gates) = run(LinearForm::Parallel);
            assert_eq!(want_gates.len(), [0, 3, 2, 2][s], "{spec}: gate parameters");
            for form in [LinearForm::Chunked, LinearForm::Recurrent] {
                let (y, gx, gates) = run(form);
                let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
                    assert_values_close(&a, &b, &format!("{spec} {form:?}: {what}"))
                };
                close(y, want.clone(), "output");
                close(gx, want_x.clone(), "input gradient");
                for (i, (g, w)) in gates.into_iter().zip(want_gates.clone()).enumerate() {
                    close(g, w, &format!("gate parameter gradient {i}"));
                }
            }
            // Against the oracle, on the module's own projections.
            let m = layer(&spec, &device());
            let x = Tensor::<3>::from_data(x.to_data(), &device());
            let lg = m.log_gates(x.clone());
            let (q, k, v) = m.features(x.clone(), None, 0, &mut None);
            let want = m.heads.merge(naive_decay_attention(&q, &k, &v, &lg, norm == "sum"));
            assert_close(
                m.forward(x, MixContext::causal()).output,
                want,
                1e-4,
                &format!("{spec}: forward vs naive"),
            );
        }
    }
}

/// A prompt (chunked from the empty state), single tokens (recurrent) and a 3-token piece
/// (chunked from the carried state) give the forward's outputs, under RoPE, for every gate,
/// both norms and a non-identity map.
#[test]
fn step_equals_forward() {
    let d = device();
    let rope = RotaryEncodingConfig::new(32, 4).init(&d);
    for gate in Gate::ALL {
        // The denominator with positive features only (signed ones make it ill-conditioned).
        for options in [
            "",
            ":map=elu1:norm=sum:chunk=2",
            ":map=performer:features=8:norm=sum:form=parallel",
            ":map=cosformer:form=recurrent",
            ":conv=4:chunk=3",
            ":conv=2:map=elu1:norm=sum:form=recurrent",
        ] {
            let spec = format!("{}{options}", gate.name());
            let m = layer(&spec, &d);
            crate::testing::assert_decoding_equals_forward(
                &m,
                randn([2, 10, 8], 1600, &d),
                Some(&rope),
                &spec,
            );
        }
    }
}

/// The gates are the formulas of the header, computed by hand from the parameters.
#[test]
fn gates_match_their_formulas() {
    let d = device();
    let x = randn([1, 3, 8], 1700, &d);
    let xs = values(x.clone());
    let dot = |w: &[f32], cols: usize, col: usize, t: usize| {
        (0..8).map(|i| xs[t * 8 + i] * w[i * cols + col]).sum::<f32>()
    };
    let softplus = |z: f32| if z > 20.0 { z } else { z.exp().ln_1p() };

    let retnet = layer("retnet", &d);
    let got = values(retnet.log_gates(x.clone())); // [1, 2, 3, 1]
    for h in 0..2 {
        let want = (1.0 - 2f64.powi(-5 - h as i32)).ln() as f32;
        assert!(
            got[h * 3..h * 3 + 3].iter().all(|g| (g - want).abs() < 1e-7),
            "retnet head {h}: {got:?} vs {want}"
        );
    }

    let mamba = layer("mamba2", &d);
    let (w, b) = (
        values(mamba.dt.as_ref().unwrap().weight.val()),
        values(mamba.dt.as_ref().unwrap().bias.as_ref().unwrap().val()),
    );
    let a_log = values(mamba.a_log.as_ref().unwrap().val());
    let got = values(mamba.log_gates(x.clone()));
    for h in 0..2 {
        for t in 0..3 {
            let want = -softplus(dot(&w, 2, h, t) + b[h]) * a_log[h].exp();
            assert!(
                (got[h * 3 + t] - want).abs() < 1e-5 * want.abs().max(1.0),
                "mamba2 ({h},{t}): {} vs {want}",
                got[h * 3 + t]
            );
        }
    }

    let gla = layer("gla", &d);
    let (w, b) = (
        values(gla.alpha.as_ref().unwrap().weight.val()),
        values(gla.alpha.as_ref().unwrap().bias.as_ref().unwrap().val()),
    );
    let got = values(gla.log_gates(x)); // [1, 2, 3, 4]
    for h in 0..2 {
        for t in 0..3 {
            for f in 0..4 {
                let want = -softplus(-(dot(&w, 8, h * 4 + f, t) + b[h * 4 + f])) / 16.0;
                let g = got[(h * 3 + t) * 4 + f];
                assert!((g - want).abs() < 1e-6, "gla ({h},{t},{f}): {g} vs {want}");
            }
        }
    }
}

/// `decay:forget`'s gate is `ln σ(w_h·x + b_h)` per head, `b_h` starting at 5.
#[test]
fn forget_gate_matches_its_formula() {
    let d = device();
    let x = randn([1, 3, 8], 1750, &d);
    let xs = values(x.clone());
    let m = layer("forget", &d);
    let (w, b) = (
        values(m.alpha.as_ref().unwrap().weight.val()),
        values(m.alpha.as_ref().unwrap().bias.as_ref().unwrap().val()),
    );
    assert_eq!(b, vec![crate::gates::FORGET_BIAS_INIT; 2]);
    let got = values(m.log_gates(x)); // [1, 2, 3, 1]
    for h in 0..2 {
        for t in 0..3 {
            let z: f32 = (0..8).map(|i| xs[t * 8 + i] * w[i * 2 + h]).sum::<f32>() + b[h];
            let want = -(-z).exp().ln_1p();
            assert!(
                (got[h * 3 + t] - want).abs() < 1e-6,
                "forget ({h},{t}): {} vs {want}",
                got[h * 3 + t]
            );
        }
    }
}

/// Mamba-2's gate draws A from (1, 16) (its ranges and seeding are tested in `gates`).
#[test]
fn mamba2_rates_start_in_range() {
    let m = config("mamba2")
        .init(&MixerDims { seed: 5, layer: 1, ..MixerDims::new(64, 64, 32) }, &device());
    for a in values(m.a_log.as_ref().unwrap().val()) {
        assert!((0.0..=16f32.ln() + 1e-6).contains(&a), "A_log = {a}");
    }
}

#[test]
fn specs_parse_print_and_size() {
    for spec in [
        "retnet",
        "mamba2",
        "gla",
        "gla:map=elu1:norm=sum",
        "mamba2:chunk=16:form=recurrent",
        "retnet:feature_dim=8:map=taylor",
    ] {
        assert_eq!(config(spec).to_string(), spec);
    }
    assert_eq!(config("gla:chunk=64:form=chunked:map=identity:norm=none").to_string(), "gla");
    for (spec, needle) in [
        ("", "needs a gate"),
        ("fast", "unknown gate 'fast'"),
        ("gla:map=gelu", "'map'"),
        ("gla:feature_dim=8", "belongs to map=taylor"),
        ("gla:chunk=0", "chunk must be at least 1"),
        ("gla:gate=1", "unknown option"),
        ("gla:conv=1", "not a short convolution"),
    ] {
        let parts: Vec<&str> = if spec.is_empty() { vec![] } else { spec.split(':').collect() };
        let err = DecayAttentionConfig::parse(&parts, spec).unwrap_err().to_string();
        assert!(err.contains(needle), "{spec}: {err}");
    }
    // d_model 8, 2 heads of 4: S is 4 × 4 per head, z adds 4 per head; Taylor d' = 2 gives F = 7.
    let dims = dims();
    assert_eq!(config("gla").decode_state_floats(&dims, 100), 2 * 16);
    assert_eq!(config("retnet:norm=sum").decode_state_floats(&dims, 100), 2 * (16 + 4));
    assert_eq!(config("mamba2:map=taylor:feature_dim=2").decode_state_floats(&dims, 5), 2 * 7 * 4);
    assert_eq!(
        config("gla:map=cosformer").init(&dims, &device()).alpha.unwrap().weight.val().dims(),
        [8, 2 * 8]
    );
    // conv=4 keeps the last 3 of q, k, v: 3 · (2 · 8 + 8).
    assert_eq!(config("gla:conv=4").decode_state_floats(&dims, 100), 2 * 16 + 3 * 24);
    assert_eq!(config("gla:conv=4").to_string(), "gla:conv=4");
}

/// Diagnostics are the parallel form's weights: under `norm=sum` each row sums to one, and
/// weighting `v` by them gives the output.
#[test]
fn diagnostics_are_the_implied_weights() {
    let d = device();
    for gate in Gate::ALL {
        let m = layer(&format!("{}:norm=sum:map=elu1", gate.name()), &d);
        let x = randn([1, 6, 8], 1800, &d);
        let out = m.forward(x, MixContext::causal().with_diagnostics(true));
        let diag = out.diagnostics.expect("diagnostics");
        assert_eq!(diag.weights.dims(), [1, 2, 6, 6]);
        for s in values(diag.weights.clone().sum_dim(3)) {
            assert!((s - 1.0).abs() < 1e-5, "{}: row sum {s}", gate.name());
        }
        let above = values(
            diag.weights
                .clone()
                .mask_fill(
                    causal_mask(6, 6, 0, &d).bool_not().unsqueeze::<4>().expand([1, 2, 6, 6]),
                    0.0,
                )
                .abs()
                .sum(),
        );
        assert_eq!(above, vec![0.0], "{}: weight on future keys", gate.name());
    }
}
