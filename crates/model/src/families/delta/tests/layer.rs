//! The delta module end to end: its forms agree on outputs and every gradient, decoding equals
//! the forward, β and the features are their formulas, and specs parse, print and size.

use super::*;
use crate::mixer::{MixContext, SequenceMixer};
use crate::recurrent_layer::RecurrentLayer;
use crate::testing::{ad_device, assert_close, randn, values};

/// The module end to end: the three forms give the same output and the same gradients with
/// respect to the input and every gate parameter, and the output equals the naive recurrence
/// on the module's own features and gates.
#[test]
fn module_forms_agree_on_outputs_input_and_gate_gradients() {
    let ad = ad_device();
    for (s, (spec, params)) in
        [("chunk=3", 2), ("gated:chunk=3", 5), ("gated:neg_eigval=true:conv=4:chunk=3", 6)]
            .into_iter()
            .enumerate()
    {
        let base = layer(spec, &ad);
        let x = randn([2, 7, 8], 2600 + s as u64, &device());
        let probe = randn([2, 7, 8], 2610 + s as u64, &ad);
        assert_module_forms_agree(&base, &x, &probe, params, spec);
        let m = layer(spec, &device());
        let x = Tensor::<3>::from_data(x.to_data(), &device());
        let (beta, log_g) = (m.betas(x.clone()), m.log_gates(x.clone()));
        let (q, k, v) = m.features(x.clone(), None, 0, &mut None);
        let want = m.heads.merge(naive_delta_rule(&q, &k, &v, &beta, &log_g).0);
        assert_close(
            m.forward(x, MixContext::causal()).output,
            want,
            1e-4,
            &format!("{spec}: forward vs naive"),
        );
    }
}

/// A prompt (chunked from the empty state), single tokens (recurrent) and a 3-token piece
/// (chunked from the carried state) give the forward's outputs, under RoPE, with and without
/// the convolution.
#[test]
fn step_equals_forward() {
    let cases: Vec<(&str, MixerDims)> = [
        "",
        "gated",
        "gated:conv=4:chunk=2",
        "neg_eigval=true:conv=3:form=parallel",
        "gated:form=recurrent",
    ]
    .into_iter()
    .map(|spec| (spec, dims()))
    .collect();
    assert_specs_decode_to_the_forward(&cases, 2700);
}

/// β, the gate and the normalised features are the formulas of the header.
#[test]
fn betas_and_features_match_their_formulas() {
    let d = device();
    let x = randn([1, 3, 8], 2800, &d);
    let xs = values(x.clone());
    for (spec, scale) in [("", 1.0), ("neg_eigval=true", 2.0)] {
        let m = layer(spec, &d);
        let (w, b) = (values(m.beta.weight.val()), values(m.beta.bias.as_ref().unwrap().val()));
        let got = values(m.betas(x.clone())); // [1, 2, 3, 1]
        for h in 0..2 {
            for t in 0..3 {
                let z: f32 = (0..8).map(|i| xs[t * 8 + i] * w[i * 2 + h]).sum::<f32>() + b[h];
                let want = scale / (1.0 + (-z).exp());
                assert!(
                    (got[h * 3 + t] - want).abs() < 1e-6,
                    "{spec} β ({h},{t}): {} vs {want}",
                    got[h * 3 + t]
                );
            }
        }
        assert_eq!(values(m.log_gates(x.clone())), vec![0.0; 6], "ungated");
    }
    let m = layer("gated", &d);
    let (q, k, _) = m.features(x.clone(), None, 0, &mut None);
    for (name, t, norm) in [("q", q, 0.5f32), ("k", k, 1.0)] {
        // ‖k‖ = 1 and ‖q‖ = 1/√d_k (d_k = 4), up to the ε inside the norm.
        for n in values(t.powi_scalar(2).sum_dim(3).sqrt()) {
            assert!((n - norm).abs() < 1e-4, "{name}: norm {n}, want {norm}");
        }
    }
    assert!(values(m.log_gates(x)).iter().all(|g| *g < 0.0), "gated: log gates negative");
}

#[test]
fn specs_parse_print_and_size() {
    for spec in [
        "",
        "gated",
        "gated:conv=4",
        "neg_eigval=true",
        "chunk=16:conv=2:form=recurrent:neg_eigval=true",
        "gated:form=parallel",
    ] {
        assert_eq!(config(spec).to_string(), spec);
    }
    assert_eq!(config("gated:chunk=64:conv=0:form=chunked:neg_eigval=false").to_string(), "gated");
    for (spec, needle) in [
        ("fast", "unknown delta variant 'fast'"),
        ("gated:beta=1", "unknown option"),
        ("chunk=0", "chunk must be at least 1"),
        ("gated:conv=1", "not a short convolution"),
        ("neg_eigval=maybe", "neg_eigval"),
    ] {
        let err = DeltaAttentionConfig::parse(&spec.split(':').collect::<Vec<_>>(), spec)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{spec}: {err}");
    }
    // d_model 8, 2 heads of 4: S is 4 × 4 per head; conv=4 keeps the last 3 of q, k, v (24 wide).
    assert_eq!(config("gated").decode_state_floats(&dims(), 100), 2 * 16);
    assert_eq!(config("conv=4").decode_state_floats(&dims(), 7), 2 * 16 + 3 * 24);
}

/// Diagnostics are the parallel form's weights: weighting `v` by them gives each head's output.
#[test]
fn diagnostics_are_the_implied_weights() {
    let d = device();
    for spec in ["", "gated:neg_eigval=true"] {
        let m = layer(spec, &d);
        let x = randn([1, 6, 8], 2900, &d);
        let diag = m
            .forward(x.clone(), MixContext::causal().with_diagnostics(true))
            .diagnostics
            .expect("diagnostics");
        let (q, k, v) = m.features(x.clone(), None, 0, &mut None);
        let (beta, log_g) = (m.betas(x.clone()), m.log_gates(x));
        assert_close(
            diag.weights.matmul(v.clone()),
            naive_delta_rule(&q, &k, &v, &beta, &log_g).0,
            1e-4,
            &format!("delta:{spec}"),
        );
    }
}

/// The fused heads-and-norm is the composed `c · x/√(‖x‖² + ε)` on split heads: outputs and the
/// packed input's gradient on fresh random rows (a narrowed view, read in place, and a whole
/// tensor), with rows near zero (where ε matters) among them.
#[test]
fn fused_normalized_heads_are_the_composed_ones() {
    use crate::testing::output_and_grads;
    let cases = [(0, 2, 32, 0.125, 7), (64, 3, 16, 1.0, 7), (5, 2, 5, 2.0, 3), (0, 4, 8, 1.0, 0)];
    for (seed, (start, count, d, c, after)) in cases.into_iter().enumerate() {
        let width = start + count * d + after;
        let rows = randn([2, 6, width], 2700 + seed as u64, &device());
        let tiny = rows.clone().narrow(1, 0, 1) * 1e-4;
        let inputs = [Tensor::cat(vec![tiny, rows.narrow(1, 1, 5)], 1)];
        let probe = 2710 + seed as u64;
        let what = format!("start={start} count={count} d={d} c={c}");
        let (fast, fast_g) =
            output_and_grads(&inputs, probe, |x| normalized_heads(&x[0], start, count, d, c));
        let (slow, slow_g) = output_and_grads(&inputs, probe, |x| {
            let part = x[0].clone().narrow(2, start, count * d);
            l2_normalize(part.reshape([2, 6, count, d]).swap_dims(1, 2)) * c
        });
        assert_close(fast, slow, 1e-5, &format!("{what}: output"));
        assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-4, &format!("{what}: gradient"));
    }
}
