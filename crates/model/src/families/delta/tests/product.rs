//! DeltaProduct (`householders=N`): the three forms on the interleaved sub-steps against the
//! naive product of Householder steps (outputs and gradients), its implied weights, the module
//! against the oracle on its own features, decoding, causality, long inputs, the layout of its
//! projections, its specs, and `N = 1` being the delta rule op for op.

use super::*;
use crate::mixer::{MixContext, SequenceMixer};
use crate::recurrent_layer::RecurrentLayer;
use crate::testing::{ad_device, assert_close, assert_forward_finite, output_and_grads, values};
use burn::nn::RotaryEncoding;

/// Raw q (`d_k = 4`), the `N` keys (`d_k = 4`) and values (`d_v = 3`) of each token side by
/// side, `N` strengths and a gate input per token, for `seq` tokens.
fn product_inputs(seq: usize, n: usize, seed: u64) -> [Tensor<4>; 5] {
    let dev = device();
    [
        randn([2, 2, seq, 4], seed, &dev),
        randn([2, 2, seq, n * 4], seed + 1, &dev),
        randn([2, 2, seq, n * 3], seed + 2, &dev),
        randn([2, 2, seq, n], seed + 3, &dev),
        randn([2, 2, seq, 1], seed + 4, &dev),
    ]
}

/// The side-by-side layout `[b, h, t, N·d]` as the interleaved sequence `[b, h, t·N, d]` the
/// forms run on (token `t`'s sub-step `j` at `t·N + j`: the same memory, read in rows of `d`).
fn substeps(x: Tensor<4>, n: usize) -> Tensor<4> {
    let [b, h, t, w] = x.dims();
    x.reshape([b, h, t * n, w / n])
}

/// Every form on the interleaved sequence against the naive product, outputs and the
/// gradients of q, k, v, β and the gate, for N = 1, 2, 3: ungated and gated (moderate and
/// strong decay), β in (0, 1) and near 2 (`neg_eigval`), near 0 once; chunks of one sub-step,
/// chunks that split a token's sub-steps, and one chunk over everything.
#[test]
fn every_form_matches_the_naive_product_of_householder_steps() {
    let mut seed = 5000;
    for n in [1, 2, 3] {
        for (scale, range) in [
            (0.0, BetaRange::Unit),
            (0.0, BetaRange::NearTwo),
            (0.3, BetaRange::Unit),
            (0.3, BetaRange::NearTwo),
            (10.0, BetaRange::Small),
        ] {
            seed += 10;
            let x = product_inputs(7, n, seed);
            // Keys are normalised one sub-step at a time, in both the oracle and the forms.
            let prepared = |x: Vec<Tensor<4>>| {
                let [b, h, t, _] = x[0].dims();
                let keys = l2_normalize(substeps(x[1].clone(), n));
                let beta = beta_from(x[3].clone(), range);
                (
                    l2_normalize(x[0].clone()),
                    keys.reshape([b, h, t, n * 4]),
                    x[2].clone(),
                    beta,
                    log_gates_from(x[4].clone(), scale),
                )
            };
            let want = output_and_grads(&x, seed + 7, |x| {
                let (q, k, v, b, g) = prepared(x);
                naive_delta_product(&q, &k, &v, &b, &g, n).0
            });
            let run = |f: Form<'_>| {
                output_and_grads(&x, seed + 7, |x| {
                    let (q, k, v, b, g) = prepared(x);
                    let y = f(
                        queries_on_last_substep(q, n),
                        substeps(k, n),
                        substeps(v, n),
                        substeps(b, n),
                        gate_on_first_substep(g, n),
                    );
                    last_substeps(y, n)
                })
            };
            let what = format!("N={n} log gate≈−{scale} β {range:?}");
            assert_every_form_close(&what, run, &want, &[1, 4, 64]);
        }
    }
}

/// The implied weights times the interleaved values give the naive product's outputs, causal
/// and bidirectional (the reversed pass reverses the tokens, not each token's sub-steps), with
/// one gate per head and one per key channel (KDA × DeltaProduct).
#[test]
fn product_weights_are_the_implied_weights() {
    for (n, per_channel) in [(1, false), (2, false), (3, false), (2, true), (3, true)] {
        let seed = 5100 + 10 * n as u64 + per_channel as u64;
        let [q, k, v, b, g] = product_inputs(6, n, seed);
        let g = if per_channel { randn([2, 2, 6, 4], seed + 5, &device()) } else { g };
        let (q, k, b, g) = (
            l2_normalize(q),
            l2_normalize(substeps(k, n)).reshape([2, 2, 6, n * 4]),
            beta_from(b, BetaRange::NearTwo),
            log_gates_from(g, 0.3),
        );
        let forward = naive_delta_product(&q, &k, &v, &b, &g, n).0;
        let flip = |x: &Tensor<4>| x.clone().flip([2]);
        let backward =
            naive_delta_product(&flip(&q), &flip(&k), &flip(&v), &flip(&b), &flip(&g), n).0;
        for causal in [true, false] {
            let got = product_weights(
                q.clone(),
                substeps(k.clone(), n),
                substeps(b.clone(), n),
                gate_on_first_substep(g.clone(), n),
                n,
                causal,
            )
            .matmul(substeps(v.clone(), n));
            let want = if causal { forward.clone() } else { forward.clone() + flip(&backward) };
            let what = format!("N={n} per_channel={per_channel} causal={causal}");
            assert_close(got, want, 1e-4, &what);
        }
    }
}

/// The module's output from the naive product on its own features and gates (each token's
/// keys, values and β side by side), causal or both ways.
fn naive_module(
    m: &DeltaAttention,
    x: Tensor<3>,
    rope: Option<&RotaryEncoding>,
    causal: bool,
) -> Tensor<3> {
    let n = m.householders;
    let (q, k, v) = m.features(x.clone(), rope, 0, &mut None);
    let [b, h, t, dk] = q.dims();
    let dv = v.dims()[3];
    let (k, v) = (k.reshape([b, h, t, n * dk]), v.reshape([b, h, t, n * dv]));
    let (beta, log_g) = (m.betas(x.clone()).reshape([b, h, t, n]), m.log_gates(x));
    let forward = naive_delta_product(&q, &k, &v, &beta, &log_g, n).0;
    let y = if causal {
        forward
    } else {
        let flip = |x: &Tensor<4>| x.clone().flip([2]);
        forward
            + naive_delta_product(&flip(&q), &flip(&k), &flip(&v), &flip(&beta), &flip(&log_g), n)
                .0
                .flip([2])
    };
    m.heads.merge(y)
}

/// The module end to end, N = 2 and 3: each form equals the naive product on the module's own
/// features (causal and bidirectional, under RoPE), and the three forms give the same
/// gradients with respect to the input and every parameter of the family's own.
#[test]
fn module_forms_match_the_naive_product() {
    assert_module_matches_the_oracle(
        &[
            ("householders=2:chunk=3", 4),
            ("gated:householders=3:neg_eigval=true:conv=4:chunk=4", 8),
            ("gated:householders=2", 7),
            // KDA × DeltaProduct: the per-channel decay once per token, then N steps.
            ("kda:householders=2:conv=4:chunk=3", 8),
            ("kda:householders=3:neg_eigval=true", 7),
        ],
        5200,
        naive_module,
    );
}

/// Decoding (a prompt, single tokens, a piece from the carried state) gives the forward's
/// outputs, under RoPE, with and without the convolution, in every form, and under
/// grouped-query attention with Qwen3's key norm (the further keys repeated and normalised as
/// the first).
#[test]
fn decoding_equals_the_forward() {
    let gqa = MixerDims { n_kv_heads: 1, qk_head_norm: Some(1e-6), ..dims() };
    assert_specs_decode_to_the_forward(
        &[
            ("householders=2", dims()),
            ("gated:householders=3:neg_eigval=true:conv=4:chunk=2", dims()),
            ("householders=2:form=recurrent", dims()),
            ("gated:householders=3:conv=3:form=parallel", dims()),
            ("gated:householders=2:conv=4", gqa),
            ("kda:householders=2:conv=4:chunk=2", dims()),
            ("kda:householders=2", gqa),
        ],
        5300,
    );
}

/// Changing the tokens from position 5 on leaves every output before it unchanged, in every
/// form (a sub-step leaking into an earlier token's read would show here).
#[test]
fn outputs_ignore_later_tokens() {
    assert_every_form_ignores_later_tokens(
        &[
            "householders=2",
            "gated:householders=3:neg_eigval=true:conv=4:chunk=4",
            "kda:householders=2:chunk=4",
        ],
        5400,
    );
}

/// Eight times the training length (`max_seq_len` 32, T = 256, so 768 sub-steps at N = 3) with
/// inputs scaled by 30: outputs, input gradients and the reported weights stay finite, causal
/// and not.
#[test]
fn long_inputs_stay_finite() {
    let ad = ad_device();
    let t = 8 * dims().max_seq_len;
    for spec in ["householders=2", "gated:householders=3:neg_eigval=true:conv=4"] {
        let m = layer(spec, &ad);
        for causal in [true, false] {
            let x = (randn([1, t, 8], 5500, &ad) * 30.0).require_grad();
            let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
            assert_forward_finite(&m, x, ctx, &format!("delta:{spec} causal={causal}"));
        }
    }
}

/// `σ(x W_β + b)` per sub-step in the documented columns (`j·H + h`), and each sub-step's key
/// and value from its documented columns: sub-step 1 from `heads.qkv`, the others from
/// `householder_kv` (`[k_2 | … | k_N | v_2 | … | v_N]`, head-major), through SiLU and the L2 norm.
#[test]
fn householder_projections_are_laid_out_as_documented() {
    let d = device();
    let (n, h, dk, dm) = (3, 2, 4, 8);
    let m = layer("householders=3", &d);
    let x = randn([1, 3, dm], 5600, &d);
    let xs = values(x.clone());
    let affine = |weight: &burn::nn::Linear, t: usize, col: usize| {
        let [_, width] = weight.weight.dims();
        let (w, b) = (values(weight.weight.val()), values(weight.bias.as_ref().unwrap().val()));
        (0..dm).map(|i| xs[t * dm + i] * w[i * width + col]).sum::<f32>() + b[col]
    };
    let got = values(m.betas(x.clone())); // [1, h, 3·n, 1]
    for head in 0..h {
        for t in 0..3 {
            for j in 0..n {
                let want = 1.0 / (1.0 + (-affine(&m.beta, t, j * h + head)).exp());
                let g = got[head * 3 * n + t * n + j];
                assert!((g - want).abs() < 1e-6, "β head {head} token {t} step {j}: {g} vs {want}");
            }
        }
    }
    let silu = |z: f32| z / (1.0 + (-z).exp());
    let (_, k, v) = m.features(x, None, 0, &mut None); // [1, h, 3·n, 4] each (d_v = 4)
    let (k, v) = (values(k), values(v));
    let extra = m.householder_kv.as_ref().expect("N > 1 projects more keys and values");
    for head in 0..h {
        for t in 0..3 {
            for j in 0..n {
                let column = |what: usize, i: usize| match j {
                    0 => affine(&m.heads.qkv, t, (1 + what) * h * dk + head * dk + i),
                    _ => {
                        affine(extra, t, what * (n - 1) * h * dk + (j - 1) * h * dk + head * dk + i)
                    }
                };
                let key: Vec<f32> = (0..dk).map(|i| silu(column(0, i))).collect();
                let norm = (key.iter().map(|x| x * x).sum::<f32>() + L2_EPS).sqrt();
                let value: Vec<f32> = (0..dk).map(|i| silu(column(1, i))).collect();
                let at = (head * 3 * n + t * n + j) * dk;
                for i in 0..dk {
                    let what = format!("head {head} token {t} step {j} [{i}]");
                    assert!((k[at + i] - key[i] / norm).abs() < 1e-5, "key {what}");
                    assert!((v[at + i] - value[i]).abs() < 1e-5, "value {what}");
                }
            }
        }
    }
}

/// `householders=1` is the delta rule op for op: the module's forward (every form, gated or
/// not, with and without the convolution) equals, bit for bit, the delta rule composed as it
/// was before DeltaProduct (heads' `[q | k | v]`, one β per head, the forms on the tokens), and
/// the module has the same parameters.
#[test]
fn one_householder_is_the_delta_rule_op_for_op() {
    let d = device();
    let x = randn([2, 7, 8], 5700, &d);
    for spec in ["form=recurrent", "gated:neg_eigval=true:form=parallel", "gated:chunk=3", "conv=4"]
    {
        let m = layer(spec, &d);
        assert_eq!(config(spec), config(&format!("{spec}:householders=1")), "{spec}");
        assert!(m.householder_kv.is_none(), "{spec}: no further projection");
        assert_eq!(m.beta.weight.dims(), [8, 2], "{spec}: one β per head");
        let qkv = m.heads.project(x.clone());
        let qkv = match &m.conv {
            Some(conv) => conv.continue_from(qkv, &mut None),
            None => crate::fused::silu(qkv),
        };
        let (_, _, v) = m.heads.split_packed(qkv.clone());
        let (q, k) = (
            normalized_heads(&qkv, 0, 2, 4, 1.0 / 4f64.sqrt()),
            normalized_heads(&qkv, 8, 2, 4, 1.0),
        );
        let beta = sigmoid(crate::fused::affine(&m.beta, x.clone()));
        let beta = if m.neg_eigval { beta * 2.0 } else { beta };
        let beta = beta.swap_dims(1, 2).reshape([2, 2, 7, 1]);
        let log_g = m.log_gates(x.clone());
        let y = match m.form {
            LinearForm::Recurrent => recurrent(q, k, v, beta, log_g, None).0,
            LinearForm::Parallel => parallel(q, k, v, beta, log_g),
            LinearForm::Chunked => {
                crate::fused::gated_recurrence(q, k, v, log_g, Some(beta), m.chunk).unwrap_or_else(
                    |inputs| {
                        let (q, k, v, log_g, beta) = *inputs;
                        chunked(q, k, v, beta.expect("given"), log_g, m.chunk, None).0
                    },
                )
            }
        };
        assert_eq!(
            values(m.forward(x.clone(), MixContext::causal()).output),
            values(m.heads.merge(y)),
            "delta:{spec}"
        );
    }
}

/// Specs print canonically (a default `householders=1` prints nothing), `householders=0` and
/// non-numbers are refused with a message naming the option, and the decoding state is the
/// one `S` per head whatever N is (plus the convolution's history of all `1 + 2N` parts).
#[test]
fn householder_specs_parse_print_refuse_and_size() {
    for spec in [
        "householders=2",
        "gated:householders=3:neg_eigval=true",
        "gated:conv=4:householders=2",
        "chunk=16:form=parallel:householders=4",
    ] {
        assert_eq!(config(spec).to_string(), spec);
    }
    assert_eq!(config("householders=1").to_string(), "");
    assert_eq!(
        config("gated:neg_eigval=true:householders=3").to_string(),
        "gated:householders=3:neg_eigval=true"
    );
    let refused = |spec: &str| {
        DeltaAttentionConfig::parse(&spec.split(':').collect::<Vec<_>>(), spec)
            .unwrap_err()
            .to_string()
    };
    assert!(
        refused("householders=0").contains(
            "householders must be at least 1 (1 is the delta rule, 2 or more DeltaProduct)"
        ),
        "{}",
        refused("householders=0")
    );
    assert!(refused("gated:householders=0").contains("householders must be at least 1"));
    for spec in ["householders=two", "householders=-1", "householders=1.5"] {
        assert!(refused(spec).contains("householders"), "{spec}: {}", refused(spec));
    }
    // d_model 8, 2 heads of 4: S is 4 × 4 per head for any N; conv=4 keeps the last 3 inputs
    // of q | k_1..N | v_1..N, (1 + 2N)·8 wide.
    for n in [1, 2, 3] {
        assert_eq!(
            config(&format!("gated:householders={n}")).decode_state_floats(&dims(), 100),
            2 * 16
        );
        assert_eq!(
            config(&format!("householders={n}:conv=4")).decode_state_floats(&dims(), 7),
            2 * 16 + 3 * (1 + 2 * n) * 8
        );
    }
}
