//! The naive delta rule (fla's reference recurrence) and the naive DeltaProduct (its definition,
//! Householder matrices built and multiplied token by token) the forms are checked against, and
//! the helpers the tests share: `forms.rs` tests the forms against the oracles, `layer.rs` the
//! module (β, gates, features, decoding, specs and diagnostics), `product.rs` DeltaProduct,
//! `kda.rs` Kimi Delta Attention (with its own oracle from the formula).

mod forms;
mod kda;
mod layer;
mod product;

use super::*;
use crate::testing::{device, randn};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

/// The textbook recurrence (fla's `naive_recurrent_gated_delta_rule`), one token at a time,
/// products by broadcasting: `S ← a S`, `v' = β (v − Σ_i k_i S_i·)`, `S ← S + k v'ᵀ`,
/// `o = Σ_i q_i S_i·`. Returns the outputs and the final state.
fn naive_delta_rule(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    beta: &Tensor<4>,
    log_g: &Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, t, dk] = q.dims();
    let dv = v.dims()[3];
    let mut s = Tensor::<4>::zeros([b, h, dk, dv], &q.device());
    let mut out = Vec::new();
    for i in 0..t {
        let at = |x: &Tensor<4>| x.clone().narrow(2, i, 1);
        let gate = at(log_g).exp(); // [b, h, 1, 1]
        let key = at(k).reshape([b, h, dk, 1]);
        s = s * gate;
        let predicted = (key.clone() * s.clone()).sum_dim(2); // [b, h, 1, dv]
        let new_value = (at(v) - predicted) * at(beta);
        s = s + key * new_value;
        out.push((at(q).reshape([b, h, dk, 1]) * s.clone()).sum_dim(2));
    }
    (Tensor::cat(out, 2), s)
}

/// DeltaProduct as Siems et al. define it, a plain loop with every matrix explicit: per token,
/// `S ← a_t S`, then for `j = 1..N`: `S ← (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S + β_{t,j} k_{t,j} v_{t,j}ᵀ`,
/// then `o_t = Sᵀ q_t`. Each token's `N` keys and values sit side by side in the last axis.
/// Returns the outputs and the final state.
///
/// # Shapes
/// - `q`: `[b, h, t, d_k]`, `k`: `[b, h, t, N·d_k]`, `v`: `[b, h, t, N·d_v]`, `beta`: `[b, h, t, N]`,
///   `log_g`: `[b, h, t, G]` (`G = 1`, or `d_k` scaling row `i` of `S`) -> (`[b, h, t, d_v]`,
///   `[b, h, d_k, d_v]`)
fn naive_delta_product(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    beta: &Tensor<4>,
    log_g: &Tensor<4>,
    n: usize,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, t, dk] = q.dims();
    let dv = v.dims()[3] / n;
    let device = q.device();
    let identity = Tensor::<2>::eye(dk, &device).reshape([1, 1, dk, dk]);
    let mut s = Tensor::<4>::zeros([b, h, dk, dv], &device);
    let mut out = Vec::new();
    for i in 0..t {
        let at = |x: &Tensor<4>| x.clone().narrow(2, i, 1);
        // The decay scales the state's rows: one factor per head (G = 1) or per key channel.
        let decay = at(log_g).exp();
        let g = decay.dims()[3];
        s = s * decay.reshape([b, h, g, 1]);
        for j in 0..n {
            let key = at(k).narrow(3, j * dk, dk).reshape([b, h, dk, 1]);
            let value = at(v).narrow(3, j * dv, dv).reshape([b, h, 1, dv]);
            let strength = at(beta).narrow(3, j, 1); // [b, h, 1, 1]
            let householder = identity.clone()
                - key.clone().matmul(key.clone().swap_dims(2, 3)) * strength.clone();
            s = householder.matmul(s) + key.matmul(value) * strength;
        }
        out.push(at(q).matmul(s.clone()));
    }
    (Tensor::cat(out, 2), s)
}

/// How β is drawn from a free input: near 0, in (0, 1), near 2 (`neg_eigval`'s edge).
#[derive(Clone, Copy, Debug)]
enum BetaRange {
    Small,
    Unit,
    NearTwo,
}

fn beta_from(raw: Tensor<4>, range: BetaRange) -> Tensor<4> {
    match range {
        BetaRange::Small => sigmoid(raw) * 1e-3,
        BetaRange::Unit => sigmoid(raw),
        BetaRange::NearTwo => sigmoid(raw + 6.0) * 2.0,
    }
}

/// Log gates in `[−1.5·scale, −0.5·scale]`, or exactly 0 (the ungated rule) for scale 0.
fn log_gates_from(raw: Tensor<4>, scale: f32) -> Tensor<4> {
    (sigmoid(raw) + 0.5) * (-scale)
}

/// Raw q, k (`d_k = 4`), v (`d_v = 3`), β and gate inputs for `seq` tokens.
fn inputs(seq: usize, seed: u64) -> [Tensor<4>; 5] {
    let dev = device();
    [
        randn([2, 2, seq, 4], seed, &dev),
        randn([2, 2, seq, 4], seed + 1, &dev),
        randn([2, 2, seq, 3], seed + 2, &dev),
        randn([2, 2, seq, 1], seed + 3, &dev),
        randn([2, 2, seq, 1], seed + 4, &dev),
    ]
}

type Form<'a> = &'a dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>;

/// The gradient of every parameter the family has besides the shared heads: β, DeltaProduct's
/// further keys and values, the gate, the convolution.
fn own_param_grads(m: &DeltaAttention, grads: &burn::tensor::Gradients) -> Vec<Vec<f32>> {
    use crate::testing::values;
    let mut out = Vec::new();
    for layer in [Some(&m.beta), m.householder_kv.as_ref(), m.dt.as_ref()].into_iter().flatten() {
        out.push(values(layer.weight.val().grad(grads).expect("weight grad")));
        out.push(values(layer.bias.as_ref().unwrap().val().grad(grads).expect("bias grad")));
    }
    if let Some(a) = &m.a_log {
        out.push(values(a.val().grad(grads).expect("a_log grad")));
    }
    if let Some(c) = &m.conv {
        out.push(values(c.weight.val().grad(grads).expect("conv grad")));
    }
    out
}

/// The module's three forms give the same output and the same gradients of the input and of
/// every parameter the family has of its own (`params` of them), on `x` with the output probed
/// by `probe`.
#[track_caller]
fn assert_module_forms_agree(
    base: &DeltaAttention,
    x: &Tensor<3>,
    probe: &Tensor<3>,
    params: usize,
    what: &str,
) {
    use crate::mixer::SequenceMixer;
    use crate::testing::{assert_values_close, values};
    let ad = probe.device();
    let run = |form: LinearForm| {
        let mut m = base.clone();
        m.form = form;
        let x = Tensor::<3>::from_data(x.to_data(), &ad).require_grad();
        let y = m.forward(x.clone(), crate::mixer::MixContext::causal()).output;
        let grads = (y.clone() * probe.clone()).sum().backward();
        (values(y), values(x.grad(&grads).unwrap()), own_param_grads(&m, &grads))
    };
    let (want, want_x, want_params) = run(LinearForm::Recurrent);
    assert_eq!(want_params.len(), params, "{what}: parameters");
    for form in [LinearForm::Chunked, LinearForm::Parallel] {
        let (y, gx, gp) = run(form);
        let close = |a: &[f32], b: &[f32], part: &str| {
            assert_values_close(a, b, &format!("{what} {form:?}: {part}"))
        };
        close(&y, &want, "output");
        close(&gx, &want_x, "input gradient");
        for (i, (g, w)) in gp.iter().zip(&want_params).enumerate() {
            close(g, w, &format!("parameter gradient {i}"));
        }
    }
}

/// The recurrent, parallel and chunked forms (each chunk size in `chunks`), each given to
/// `run` (which returns a form's outputs and input gradients), against `want`.
#[track_caller]
fn assert_every_form_close(
    what: &str,
    run: impl Fn(Form<'_>) -> (Tensor<4>, Vec<Tensor<4>>),
    want: &(Tensor<4>, Vec<Tensor<4>>),
    chunks: &[usize],
) {
    use crate::testing::assert_output_and_grads_close;
    assert_output_and_grads_close(
        &format!("{what} recurrent"),
        run(&|q, k, v, b, g| recurrent(q, k, v, b, g, None).0),
        want,
    );
    assert_output_and_grads_close(
        &format!("{what} parallel"),
        run(&|q, k, v, b, g| parallel(q, k, v, b, g)),
        want,
    );
    for &c in chunks {
        assert_output_and_grads_close(
            &format!("{what} chunk={c}"),
            run(&|q, k, v, b, g| chunked(q, k, v, b, g, c, None).0),
            want,
        );
    }
}

fn dims() -> MixerDims {
    MixerDims { seed: 5, layer: 1, bias: true, ..MixerDims::new(8, 2, 32) }
}

fn config(spec: &str) -> DeltaAttentionConfig {
    let parts: Vec<&str> = if spec.is_empty() { vec![] } else { spec.split(':').collect() };
    DeltaAttentionConfig::parse(&parts, spec).unwrap_or_else(|e| panic!("{e}"))
}

fn layer(spec: &str, device: &Device) -> DeltaAttention {
    crate::testing::seeded_layer::<DeltaAttentionConfig>(spec, &dims(), device)
}

/// Each `(spec, dims)` layer decodes a prompt, single tokens and a 3-token piece from the
/// carried state to the forward's outputs under RoPE (`crate::testing::assert_decoding_equals_forward`).
fn assert_specs_decode_to_the_forward(cases: &[(&str, MixerDims)], seed: u64) {
    let d = device();
    let rope = burn::nn::RotaryEncodingConfig::new(32, 4).init(&d);
    for (spec, dims) in cases {
        let m = crate::testing::seeded_layer::<DeltaAttentionConfig>(spec, dims, &d);
        crate::testing::assert_decoding_equals_forward(
            &m,
            randn([2, 10, 8], seed, &d),
            Some(&rope),
            &format!("delta:{spec} kv={}", dims.n_kv_heads),
        );
    }
}

/// Changing the tokens from position 5 on leaves every output before it unchanged, in every
/// form, and does change the outputs from there (so a layer that ignored its input would fail).
fn assert_every_form_ignores_later_tokens(specs: &[&str], seed: u64) {
    use crate::mixer::{MixContext, SequenceMixer};
    use crate::testing::{assert_close, values};
    let d = device();
    let x = randn([2, 9, 8], seed, &d);
    let changed =
        Tensor::cat(vec![x.clone().narrow(1, 0, 5), randn([2, 4, 8], seed + 1, &d) * 3.0], 1);
    for spec in specs {
        for form in [LinearForm::Recurrent, LinearForm::Parallel, LinearForm::Chunked] {
            let mut m = layer(spec, &d);
            m.form = form;
            let y = |x: &Tensor<3>| m.forward(x.clone(), MixContext::causal()).output;
            let (a, b) = (y(&x), y(&changed));
            assert_close(
                a.clone().narrow(1, 0, 5),
                b.clone().narrow(1, 0, 5),
                1e-6,
                &format!("{spec} {form:?}: the past"),
            );
            let moved = values(a.narrow(1, 5, 4)) != values(b.narrow(1, 5, 4));
            assert!(moved, "{spec} {form:?}: the changed tokens changed nothing");
        }
    }
}

/// The module end to end for each `(spec, own parameter count)`: every form equals `naive`
/// (an oracle run on the module's own features and gates; causal and bidirectional, under
/// RoPE), and the three forms agree on outputs and gradients ([`assert_module_forms_agree`]).
fn assert_module_matches_the_oracle(
    cases: &[(&str, usize)],
    seed: u64,
    naive: impl Fn(&DeltaAttention, Tensor<3>, Option<&burn::nn::RotaryEncoding>, bool) -> Tensor<3>,
) {
    use crate::mixer::{MixContext, SequenceMixer};
    let (d, ad) = (device(), crate::testing::ad_device());
    let rope = burn::nn::RotaryEncodingConfig::new(32, 4).init(&d);
    for (s, &(spec, params)) in cases.iter().enumerate() {
        let x = randn([2, 7, 8], seed + s as u64, &d);
        for form in [LinearForm::Recurrent, LinearForm::Parallel, LinearForm::Chunked] {
            let mut m = layer(spec, &d);
            m.form = form;
            for causal in [true, false] {
                let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
                crate::testing::assert_close(
                    m.forward(x.clone(), ctx.with_rope(Some(&rope))).output,
                    naive(&m, x.clone(), Some(&rope), causal),
                    1e-4,
                    &format!("delta:{spec} {form:?} causal={causal}: forward vs naive"),
                );
            }
        }
        let base = layer(spec, &ad);
        let probe = randn([2, 7, 8], seed + 10 + s as u64, &ad);
        assert_module_forms_agree(&base, &x, &probe, params, spec);
    }
}

/// The fused token-by-token kernel against the composed chunked form with chunk `c`, outputs
/// and input gradients, on `x = [q, k, v, raw β, raw gates]` (q and k L2-normalised, β from
/// `range`, the log gates from `gates`).
fn assert_fused_equals_chunked(
    x: &[Tensor<4>; 5],
    probe_seed: u64,
    c: usize,
    range: BetaRange,
    gates: impl Fn(Tensor<4>) -> Tensor<4>,
    what: &str,
) {
    use crate::testing::{assert_output_and_grads_close, output_and_grads};
    let run = |fused: bool| {
        output_and_grads(x, probe_seed, |x| {
            let (q, k, v) = (l2_normalize(x[0].clone()), l2_normalize(x[1].clone()), x[2].clone());
            let (b, g) = (beta_from(x[3].clone(), range), gates(x[4].clone()));
            if fused {
                crate::fused::gated_recurrence(q, k, v, g, Some(b), c)
                    .map_err(|_| "flex")
                    .expect("the fused kernel runs on flex")
            } else {
                chunked(q, k, v, b, g, c, None).0
            }
        })
    };
    assert_output_and_grads_close(what, run(true), &run(false));
}
