//! Kimi Delta Attention (`delta:kda`): the three forms with per-key-channel gates against KDA
//! written from its formula (outputs and gradients, chunks inside and across GLA's sub-chunks,
//! strong and mixed decays, carried states), the fused kernel against the composed chunked form,
//! per-channel gates that repeat one value per head against Gated DeltaNet (forms and module),
//! and the module end to end: forms agree on outputs and every gradient, decoding equals the
//! forward, causality, long inputs, diagnostics, specs and state size.

use super::*;
use crate::mixer::{MixContext, SequenceMixer};
use crate::recurrent_layer::RecurrentLayer;
use crate::testing::{
    ad_device, assert_close, assert_forward_finite, assert_output_and_grads_close,
    output_and_grads, values,
};
use burn::module::Param;
use burn::nn::{Linear, RotaryEncoding, RotaryEncodingConfig};

/// KDA straight from its definition, every matrix explicit:
/// `S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ`, `o_t = S_tᵀ q_t`, `α_t = e^{log_g_t}`.
/// Returns the outputs and the final state.
///
/// # Shapes
/// - `q, k`: `[b, h, t, d_k]`, `v`: `[b, h, t, d_v]`, `beta`: `[b, h, t, 1]`, `log_g`: `[b, h, t, d_k]`
///   -> (`[b, h, t, d_v]`, `[b, h, d_k, d_v]`)
fn naive_kda(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    beta: &Tensor<4>,
    log_g: &Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, t, dk] = q.dims();
    let dv = v.dims()[3];
    let device = q.device();
    let identity = Tensor::<2>::eye(dk, &device).reshape([1, 1, dk, dk]);
    let mut s = Tensor::<4>::zeros([b, h, dk, dv], &device);
    let mut out = Vec::new();
    for i in 0..t {
        let at = |x: &Tensor<4>| x.clone().narrow(2, i, 1);
        // Diag(α_t): the identity with column j scaled by α_tj.
        let decay = identity.clone() * at(log_g).exp(); // [b, h, dk, dk]
        let key = at(k).reshape([b, h, dk, 1]);
        let strength = at(beta); // [b, h, 1, 1]
        let householder =
            identity.clone() - key.clone().matmul(key.clone().swap_dims(2, 3)) * strength.clone();
        s = householder.matmul(decay.matmul(s)) + key.matmul(at(v)) * strength;
        out.push(at(q).matmul(s.clone()));
    }
    (Tensor::cat(out, 2), s)
}

/// How the per-channel log gates are drawn from a free input.
#[derive(Clone, Copy, Debug)]
enum Gates {
    /// Every channel in `[−1.5·s, −0.5·s]`.
    Uniform(f32),
    /// Channels of very different memory: scales 1e-3, 0.3, 3 and 30 (`d_k = 4`).
    Spread,
}

fn channel_gates(raw: Tensor<4>, gates: Gates) -> Tensor<4> {
    match gates {
        Gates::Uniform(scale) => log_gates_from(raw, scale),
        Gates::Spread => {
            let scales = Tensor::<1>::from_floats([1e-3, 0.3, 3.0, 30.0], &raw.device());
            log_gates_from(raw, 1.0) * scales.reshape([1, 1, 1, 4])
        }
    }
}

/// Raw q, k (`d_k = 4`), v (`d_v = 3`), β and a gate input per key channel, for `seq` tokens.
fn kda_inputs(seq: usize, seed: u64) -> [Tensor<4>; 5] {
    let [q, k, v, b, _] = inputs(seq, seed);
    [q, k, v, b, randn([2, 2, seq, 4], seed + 5, &device())]
}

/// parallel, recurrent and chunked against the naive KDA, outputs and the gradients of q, k,
/// v, β and every channel's gate: weak, moderate, strong and mixed per-channel decays; β near 0,
/// in (0, 1) and near 2; chunks that divide the length, do not, are 1 or exceed it; and at 40
/// tokens chunks longer than a 16-token sub-chunk (the reference-point blocks).
#[test]
fn every_form_matches_the_naive_kda() {
    let mut seed = 6000;
    let cases = [
        (Gates::Uniform(1e-3), BetaRange::Unit),
        (Gates::Uniform(0.3), BetaRange::NearTwo),
        (Gates::Uniform(10.0), BetaRange::Small),
        (Gates::Spread, BetaRange::Unit),
        (Gates::Spread, BetaRange::NearTwo),
    ];
    for (gates, range) in cases {
        for (seq, chunks) in [(9, &[1, 3, 4, 16][..]), (10, &[3, 16][..]), (40, &[20, 37, 64][..])]
        {
            seed += 10;
            let x = kda_inputs(seq, seed);
            let run = |f: Form<'_>| {
                output_and_grads(&x, seed + 7, |x| {
                    f(
                        l2_normalize(x[0].clone()),
                        l2_normalize(x[1].clone()),
                        x[2].clone(),
                        beta_from(x[3].clone(), range),
                        channel_gates(x[4].clone(), gates),
                    )
                })
            };
            let want = run(&|q, k, v, b, g| naive_kda(&q, &k, &v, &b, &g).0);
            let what = format!("kda {gates:?} β {range:?} T={seq}");
            assert_every_form_close(&what, run, &want, chunks);
        }
    }
}

/// A per-channel gate that repeats one value over a head's channels is Gated DeltaNet's scalar
/// gate: each form on the repeated gate gives the scalar form's outputs and gradients (the
/// scalar gate's gradient the sum of its channels'), for weak to strong decays, short chunks,
/// and one chunk longer than a sub-chunk.
#[test]
fn a_gate_repeated_over_channels_is_gated_deltanet() {
    let mut seed = 6100;
    for scale in [1e-3, 0.3, 10.0] {
        for (seq, chunk) in [(10, 3), (10, 16), (40, 40)] {
            seed += 10;
            let x = inputs(seq, seed);
            let run = |per_channel: bool, f: Form<'_>| {
                output_and_grads(&x, seed + 7, |x| {
                    let g = log_gates_from(x[4].clone(), scale);
                    let g = if per_channel { g.repeat_dim(3, 4) } else { g };
                    f(
                        l2_normalize(x[0].clone()),
                        l2_normalize(x[1].clone()),
                        x[2].clone(),
                        beta_from(x[3].clone(), BetaRange::Unit),
                        g,
                    )
                })
            };
            let forms: [(&str, Form<'_>); 3] = [
                ("recurrent", &|q, k, v, b, g| recurrent(q, k, v, b, g, None).0),
                ("parallel", &|q, k, v, b, g| parallel(q, k, v, b, g)),
                ("chunked", &|q, k, v, b, g| chunked(q, k, v, b, g, chunk, None).0),
            ];
            for (name, f) in forms {
                assert_output_and_grads_close(
                    &format!("log gate≈−{scale} T={seq} chunk={chunk} {name}"),
                    run(true, f),
                    &run(false, f),
                );
            }
        }
    }
}

/// The fused recurrence (flex) with per-channel gates and β against the composed WY chunked
/// form, outputs and the gradients of q, k, v, β and every channel's gate: the kernel KDA's
/// training forward takes, on fresh inputs, checkpoint intervals that do and do not divide T.
#[test]
fn fused_recurrence_with_channel_gates_matches_the_composed_chunked_form() {
    let mut seed = 6200;
    for (gates, range) in [
        (Gates::Uniform(1e-3), BetaRange::NearTwo),
        (Gates::Uniform(0.3), BetaRange::Unit),
        (Gates::Spread, BetaRange::Unit),
        (Gates::Uniform(10.0), BetaRange::Small),
    ] {
        for c in [1, 3, 16] {
            seed += 10;
            assert_fused_equals_chunked(
                &kda_inputs(10, seed),
                seed + 7,
                c,
                range,
                |raw| channel_gates(raw, gates),
                &format!("fused kda {gates:?} β {range:?} chunk={c}"),
            );
        }
    }
}

/// Strong per-channel forgetting (log gates ≈ −30, and the mixed scales up to −45) over a
/// 40-token chunk stays finite and equals the naive KDA, in every form.
#[test]
fn strong_channel_decay_over_long_chunks_stays_finite() {
    for (s, gates) in [Gates::Uniform(30.0), Gates::Spread].into_iter().enumerate() {
        let [q, k, v, b, g] = kda_inputs(40, 6300 + s as u64);
        let (q, k, b, g) = (
            l2_normalize(q),
            l2_normalize(k),
            beta_from(b, BetaRange::Unit),
            channel_gates(g, gates),
        );
        let (want, _) = naive_kda(&q, &k, &v, &b, &g);
        let what = |form: &str| format!("{gates:?} {form}");
        for c in [16, 40] {
            assert_close(
                chunked(q.clone(), k.clone(), v.clone(), b.clone(), g.clone(), c, None).0,
                want.clone(),
                1e-4,
                &what(&format!("chunk={c}")),
            );
        }
        assert_close(
            parallel(q.clone(), k.clone(), v.clone(), b.clone(), g.clone()),
            want.clone(),
            1e-4,
            &what("parallel"),
        );
        assert_close(recurrent(q, k, v, b, g, None).0, want, 1e-4, &what("recurrent"));
    }
}

/// Continuing from a carried state equals one pass over the whole sequence, for the chunked
/// and the recurrent form, and the final states agree with the naive KDA's.
#[test]
fn carried_state_continues_the_sequence_with_channel_gates() {
    let [q, k, v, b, g] = kda_inputs(10, 6400);
    let (q, k, b, g) = (
        l2_normalize(q),
        l2_normalize(k),
        beta_from(b, BetaRange::Unit),
        channel_gates(g, Gates::Spread),
    );
    let (full, final_state) = naive_kda(&q, &k, &v, &b, &g);
    let part = |x: &Tensor<4>, a: usize, n: usize| x.clone().narrow(2, a, n);
    let first = |x: &Tensor<4>| part(x, 0, 6);
    let rest = |x: &Tensor<4>| part(x, 6, 4);
    let (head, state) = chunked(first(&q), first(&k), first(&v), first(&b), first(&g), 4, None);
    let (tail, end) = chunked(rest(&q), rest(&k), rest(&v), rest(&b), rest(&g), 3, Some(&state));
    assert_close(Tensor::cat(vec![head, tail], 2), full.clone(), 1e-4, "chunked with state");
    assert_close(end, final_state.clone(), 1e-4, "chunked final state");
    let (_, state) = recurrent(first(&q), first(&k), first(&v), first(&b), first(&g), None);
    let (tail, end) = recurrent(rest(&q), rest(&k), rest(&v), rest(&b), rest(&g), Some(&state));
    assert_close(tail, full.narrow(2, 6, 4), 1e-4, "recurrent with state");
    assert_close(end, final_state, 1e-4, "recurrent final state");
}

/// The module's output from the naive KDA on its own features and gates, causal or both ways.
fn naive_module(
    m: &DeltaAttention,
    x: Tensor<3>,
    rope: Option<&RotaryEncoding>,
    causal: bool,
) -> Tensor<3> {
    let (q, k, v) = m.features(x.clone(), rope, 0, &mut None);
    let (beta, log_g) = (m.betas(x.clone()), m.log_gates(x));
    let y = naive_kda(&q, &k, &v, &beta, &log_g).0;
    let y = if causal {
        y
    } else {
        let flip = |x: &Tensor<4>| x.clone().flip([2]);
        y + naive_kda(&flip(&q), &flip(&k), &flip(&v), &flip(&beta), &flip(&log_g)).0.flip([2])
    };
    m.heads.merge(y)
}

/// The module end to end: each form equals the naive KDA on the module's own features and
/// gates (causal and bidirectional, under RoPE), and the three forms give the same outputs and
/// gradients with respect to the input and every parameter of the family's own (β, the
/// per-channel `dt` and its bias, `A_log`, the convolution).
#[test]
fn module_forms_match_the_naive_kda_and_agree_on_gradients() {
    assert_module_matches_the_oracle(
        &[("kda:chunk=3", 5), ("kda:neg_eigval=true:conv=4:chunk=4", 6), ("kda", 5)],
        6500,
        naive_module,
    );
}

/// `m`'s per-channel gate set to `gated`'s scalar gate repeated over each head's `d_k`
/// channels (columns `h·d_k + i` all head `h`'s), and every other parameter copied from it.
fn kda_as_gated(gated: &DeltaAttention, mut m: DeltaAttention) -> DeltaAttention {
    let dt = gated.dt.as_ref().expect("gated has dt");
    let [d, h] = dt.weight.dims();
    let dk = m.heads.d_qk();
    let weight = dt.weight.val().reshape([d, h, 1]).repeat_dim(2, dk).reshape([d, h * dk]);
    let bias = dt.bias.as_ref().unwrap().val().reshape([h, 1]).repeat_dim(1, dk).reshape([h * dk]);
    m.dt =
        Some(Linear { weight: Param::from_tensor(weight), bias: Some(Param::from_tensor(bias)) });
    m.a_log = gated.a_log.clone();
    m.heads = gated.heads.clone();
    m.beta = gated.beta.clone();
    m.conv = gated.conv.clone();
    m
}

/// KDA with each head's channels given Gated DeltaNet's one gate is Gated DeltaNet, module to
/// module: in every form, causal and both ways, under RoPE, with and without the convolution,
/// and decoding.
#[test]
fn kda_with_one_gate_per_head_is_the_gated_module() {
    let d = device();
    let rope = RotaryEncodingConfig::new(32, 4).init(&d);
    let x = randn([2, 10, 8], 6600, &d);
    for (gated_spec, kda_spec) in [
        ("gated:chunk=3", "kda:chunk=3"),
        ("gated:neg_eigval=true:conv=4", "kda:neg_eigval=true:conv=4"),
    ] {
        for form in [LinearForm::Recurrent, LinearForm::Parallel, LinearForm::Chunked] {
            let mut gated = layer(gated_spec, &d);
            gated.form = form;
            let mut m = kda_as_gated(&gated, layer(kda_spec, &d));
            m.form = form;
            assert_eq!(m.log_gates(x.clone()).dims(), [2, 2, 10, 4], "per channel");
            for causal in [true, false] {
                let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
                let ctx = ctx.with_rope(Some(&rope));
                assert_close(
                    m.forward(x.clone(), ctx).output,
                    gated.forward(x.clone(), ctx).output,
                    1e-5,
                    &format!("{kda_spec} {form:?} causal={causal}"),
                );
            }
            let (mut a, mut b) = (m.empty_state(), gated.empty_state());
            for piece in
                [x.clone().narrow(1, 0, 4), x.clone().narrow(1, 4, 1), x.clone().narrow(1, 5, 5)]
            {
                assert_close(
                    m.step(piece.clone(), &mut a, Some(&rope)),
                    gated.step(piece, &mut b, Some(&rope)),
                    1e-5,
                    &format!("{kda_spec} {form:?}: decoding"),
                );
            }
        }
    }
}

/// A prompt, single tokens and a 3-token piece from the carried state give the forward's
/// outputs, under RoPE, with and without the convolution, in every form, and under
/// grouped-query attention with Qwen3's key norm.
#[test]
fn kda_decoding_equals_the_forward() {
    let gqa = MixerDims { n_kv_heads: 1, qk_head_norm: Some(1e-6), ..dims() };
    assert_specs_decode_to_the_forward(
        &[
            ("kda", dims()),
            ("kda:conv=4:chunk=2", dims()),
            ("kda:neg_eigval=true:conv=3:form=parallel", dims()),
            ("kda:form=recurrent", dims()),
            ("kda:conv=4", gqa),
        ],
        6700,
    );
}

/// Changing the tokens from position 5 on leaves every output before it unchanged, in every
/// form, and changes the outputs from there.
#[test]
fn kda_outputs_ignore_later_tokens() {
    assert_every_form_ignores_later_tokens(
        &["kda:chunk=2", "kda:neg_eigval=true:conv=4:chunk=4"],
        6800,
    );
}

/// Eight times the training length (`max_seq_len` 32, T = 256) with inputs scaled by 30 and
/// decay rates `e^{A} = 64` (per-channel log gates from ≈ 0 to hundreds below it): outputs,
/// input gradients and the reported weights stay finite, in every form, causal and not.
#[test]
fn kda_long_inputs_with_strong_decays_stay_finite() {
    let ad = ad_device();
    let t = 8 * dims().max_seq_len;
    for spec in ["kda", "kda:neg_eigval=true:conv=4"] {
        let mut m = layer(spec, &ad);
        m.a_log = Some(Param::from_tensor(Tensor::<1>::from_floats([64f32.ln(); 2], &ad)));
        for form in [LinearForm::Chunked, LinearForm::Parallel, LinearForm::Recurrent] {
            m.form = form;
            for causal in [true, false] {
                let x = (randn([1, t, 8], 6900, &ad) * 30.0).require_grad();
                let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
                assert_forward_finite(
                    &m,
                    x,
                    ctx,
                    &format!("delta:{spec} {form:?} causal={causal}"),
                );
            }
        }
    }
}

/// Diagnostics are the parallel form's weights: weighting `v` by them gives each head's output.
#[test]
fn kda_diagnostics_are_the_implied_weights() {
    let d = device();
    let m = layer("kda:neg_eigval=true", &d);
    let x = randn([2, 20, 8], 7000, &d);
    let diag =
        m.forward(x.clone(), MixContext::causal().with_diagnostics(true)).diagnostics.unwrap();
    let (q, k, v) = m.features(x.clone(), None, 0, &mut None);
    let (beta, log_g) = (m.betas(x.clone()), m.log_gates(x));
    assert_close(
        diag.weights.matmul(v.clone()),
        naive_kda(&q, &k, &v, &beta, &log_g).0,
        1e-4,
        "kda",
    );
}

/// Specs print canonically (KDA × DeltaProduct too), an unknown variant names `kda` among the
/// choices; the parameters have their documented shapes and the
/// decoding state is `S` per head (plus the convolution's history).
#[test]
fn kda_specs_parse_print_refuse_and_size() {
    for spec in [
        "kda",
        "kda:conv=4",
        "kda:form=parallel:neg_eigval=true",
        "kda:chunk=16",
        "kda:householders=2",
    ] {
        assert_eq!(config(spec).to_string(), spec);
    }
    assert_eq!(config("kda:householders=1:chunk=64").to_string(), "kda");
    assert_eq!(config("kda").gate, DeltaGate::Kda);
    let refused = |spec: &str| {
        DeltaAttentionConfig::parse(&spec.split(':').collect::<Vec<_>>(), spec)
            .unwrap_err()
            .to_string()
    };
    assert!(refused("fast").contains("'delta:kda'"), "{}", refused("fast"));
    let m = layer("kda", &device());
    let dt = m.dt.as_ref().expect("kda has dt");
    assert_eq!(dt.weight.dims(), [8, 2 * 4], "dt: d_model → heads·d_k");
    assert_eq!(dt.bias.as_ref().unwrap().dims(), [8], "dt_bias per channel");
    assert_eq!(m.a_log.as_ref().unwrap().dims(), [2], "A_log per head");
    let a: Vec<f32> = values(m.a_log.as_ref().unwrap().val()).iter().map(|a| a.exp()).collect();
    assert!(a.iter().all(|a| (1.0..=16.0).contains(a)), "A ~ U(1, 16): {a:?}");
    assert!(values(m.log_gates(randn([1, 3, 8], 7100, &device()))).iter().all(|g| *g < 0.0));
    // d_model 8, 2 heads of 4: S is 4 × 4 per head; conv=4 keeps the last 3 of q, k, v (24 wide).
    assert_eq!(config("kda").decode_state_floats(&dims(), 100), 2 * 16);
    assert_eq!(config("kda:conv=4").decode_state_floats(&dims(), 7), 2 * 16 + 3 * 24);
}
