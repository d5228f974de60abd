//! The kernel against the naive oracle for every scaling, with FoX's bias and the sink; Bernhard's
//! divisors and the length-aware variants by hand; the fused packed kernel against the composed
//! formula.

use super::*;
use crate::fused;
use crate::testing::{assert_close, device, output_and_grads, randn, values};
use burn::tensor::activation::log_sigmoid;

/// The kernel against the oracle on fresh inputs: outputs and the gradients of q, k, v, the
/// forget gates' input and the sink logit.
fn check_against_reference(scaling: Scaling, forget: bool, sink: bool, causal: bool, seed: u64) {
    check_windowed(scaling, forget, sink, causal, None, seed)
}

/// [`check_against_reference`] with a sliding window.
fn check_windowed(
    scaling: Scaling,
    forget: bool,
    sink: bool,
    causal: bool,
    window: Option<usize>,
    seed: u64,
) {
    let d = device();
    let (b, h, t, dh) = (2, 3, 7, 4);
    let inputs = [
        randn([b, h, t, dh], seed, &d),
        randn([b, h, t, dh], seed + 1, &d),
        randn([b, h, t, dh], seed + 2, &d),
        randn([b, h, t, 1], seed + 3, &d),
        randn([1, h, 1, 1], seed + 4, &d),
    ];
    let scale = scaling.has_parameter().then(|| randn([h], seed + 5, &d).abs() + 0.1);
    let log_forget = |raw: &Tensor<4>| log_sigmoid(raw.clone() + 1.0).reshape([b, h, t]);
    let (fast, fast_g) = output_and_grads(&inputs, seed + 6, |x| {
        let c = forget.then(|| log_forget(&x[3]).cumsum(2));
        let terms = ScoreTerms {
            scale: scale.clone().map(|s| Tensor::from_data(s.to_data(), &x[0].device())),
            forget: c.map(|c| (c.clone(), c)),
            sink: sink.then(|| x[4].clone().reshape([h])),
            log_n_temp: (DEFAULT_FLOOR_SCALE, DEFAULT_ATTN_SCALE),
            window,
            key_start: 0,
        };
        // Unused inputs still need a (zero) gradient for the helper.
        let unused = (x[3].clone().sum() + x[4].clone().sum()).reshape([1, 1, 1, 1]) * 0.0;
        softmax_attention(x[0].clone(), x[1].clone(), x[2].clone(), scaling, &terms, causal, 0).0
            + unused
    });
    let (slow, slow_g) = output_and_grads(&inputs, seed + 6, |x| {
        let s = scale.clone().map(values);
        let lf = log_forget(&x[3]);
        let extras =
            Extras { log_forget: forget.then_some(&lf), sink: sink.then_some(&x[4]), window };
        let unused = (x[3].clone().sum() + x[4].clone().sum()).reshape([1, 1, 1, 1]) * 0.0;
        naive_softmax_attention(&x[0], &x[1], &x[2], scaling, s.as_deref(), extras, causal) + unused
    });
    let what =
        format!("{} forget={forget} sink={sink} causal={causal} window={window:?}", scaling.name());
    assert_close(fast, slow, 1e-4, &format!("{what} output"));
    for (i, (f, s)) in fast_g.into_iter().zip(slow_g).enumerate() {
        assert_close(f, s, 1e-4, &format!("{what} grad of input {i}"));
    }
}

#[test]
fn every_scaling_matches_the_reference_causal() {
    for (i, s) in Scaling::ALL.into_iter().enumerate() {
        check_against_reference(s, false, false, true, 100 + 10 * i as u64);
    }
}

#[test]
fn every_scaling_matches_the_reference_bidirectional() {
    for (i, s) in Scaling::ALL.into_iter().enumerate() {
        check_against_reference(s, false, false, false, 200 + 10 * i as u64);
    }
}

/// FoX's bias and the sink on top of every scaling, causal and not.
#[test]
fn forget_and_sink_match_the_reference() {
    let mut seed = 300;
    for s in Scaling::ALL {
        for (forget, sink) in [(true, false), (false, true), (true, true)] {
            if sink && s == Scaling::Softpick {
                continue;
            }
            for causal in [true, false] {
                seed += 10;
                check_against_reference(s, forget, sink, causal, seed);
            }
        }
    }
}

/// A sliding window shorter than the sequence (7 positions), on every scaling, with FoX's bias
/// and the sink, causal and bidirectional: the oracle attends over exactly the window's keys.
#[test]
fn sliding_window_matches_the_reference_past_the_window() {
    let mut seed = 700;
    for s in Scaling::ALL {
        for window in [1, 3] {
            for causal in [true, false] {
                seed += 10;
                let sink = s != Scaling::Softpick;
                check_windowed(s, false, false, causal, Some(window), seed);
                check_windowed(s, true, sink, causal, Some(window), seed + 5);
            }
        }
    }
}

/// Hand-computed divisors on a 1-head, 3-key case: keys of norm 3, 0 and 4 (a 3-4-5 key).
#[test]
fn bernhard_divisors_match_hand_computed_values() {
    let d = device();
    let k = Tensor::<1>::from_floats([3.0, 0.0, 0.0, 0.0, 0.0, 4.0], &d).reshape([1, 1, 3, 2]);
    let q = Tensor::<1>::from_floats([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], &d).reshape([1, 1, 3, 2]);
    let v = Tensor::<1>::from_floats([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], &d).reshape([1, 1, 3, 2]);
    // q·k = [3, 0, 4] for every query.
    let weights = |scaling, causal| {
        values(
            softmax_attention(
                q.clone(),
                k.clone(),
                v.clone(),
                scaling,
                &ScoreTerms::default(),
                causal,
                0,
            )
            .1,
        )
    };
    let sm = |z: &[f32]| {
        let m: f32 = z.iter().map(|x| x.exp()).sum();
        z.iter().map(|x| x.exp() / m).collect::<Vec<_>>()
    };
    // sum_key_norms, causal: divisors 3, 3+0, 3+0+4 = 7.
    let mut expect = sm(&[3.0 / 3.0]);
    expect.extend([0.0, 0.0]);
    expect.extend(sm(&[3.0 / 3.0, 0.0]));
    expect.push(0.0);
    expect.extend(sm(&[3.0 / 7.0, 0.0, 4.0 / 7.0]));
    close(&weights(Scaling::SumKeyNorms, true), &expect);
    // bidirectional: every query divides by 7.
    let row = sm(&[3.0 / 7.0, 0.0, 4.0 / 7.0]);
    close(&weights(Scaling::SumKeyNorms, false), &[row.clone(), row.clone(), row].concat());
    // num_keys, causal: divisors 1, 2, 3.
    let mut expect = sm(&[3.0]);
    expect.extend([0.0, 0.0]);
    expect.extend(sm(&[1.5, 0.0]));
    expect.push(0.0);
    expect.extend(sm(&[1.0, 0.0, 4.0 / 3.0]));
    close(&weights(Scaling::NumKeys, true), &expect);
}

/// The composed formula the packed kernel replaces: split, `softmax_attention`, merge.
fn composed_attention(
    qkv: Tensor<3>,
    (heads, kv_heads): (usize, usize),
    scaling: Scaling,
    causal: bool,
    window: Option<usize>,
) -> Tensor<3> {
    let [b, t, w] = qkv.dims();
    let d = w / (heads + 2 * kv_heads);
    let part = |start: usize, n: usize| {
        let x = qkv.clone().narrow(2, start * d, n * d).reshape([b, t, n, d]).swap_dims(1, 2);
        // Each key/value head copied to its `heads / kv_heads` query heads, in order.
        x.reshape([b, n, 1, t, d]).expand([b, n, heads / n, t, d]).reshape([b, heads, t, d])
    };
    let (q, k, v) = (part(0, heads), part(heads, kv_heads), part(heads + kv_heads, kv_heads));
    let terms = ScoreTerms { window, ..ScoreTerms::default() };
    let (y, _) = softmax_attention(q, k, v, scaling, &terms, causal, 0);
    y.swap_dims(1, 2).reshape([b, t, heads * d])
}

/// Packed fused attention equals the composed formula on fresh random inputs, outputs and
/// gradients, causal and bidirectional, for both constant scalings, odd lengths included, with
/// as many key/value heads as queries and with fewer (grouped-query, multi-query), with and
/// without a sliding window, in both of its kernels (kept probabilities, and blocks of queries
/// from 128 tokens on or with a window).
#[test]
fn fused_packed_attention_matches_the_composed_formula() {
    let d = device();
    let cases = [
        (2, 13, 3, 3, 4, None),
        (1, 1, 2, 2, 8, None),
        (3, 9, 1, 1, 16, None),
        (2, 11, 6, 2, 4, None),
        (1, 7, 4, 1, 8, None),
        (2, 13, 2, 1, 4, Some(4)),
        (1, 9, 2, 2, 4, Some(1)),
        (1, 5, 1, 1, 4, Some(8)),
        // Past 128 tokens the blocked kernel takes over; the window spans blocks of 64.
        (1, 150, 2, 1, 4, None),
        (1, 150, 2, 1, 4, Some(70)),
    ];
    for (seed, (b, t, h, kv, dh, window)) in cases.into_iter().enumerate() {
        for causal in [true, false] {
            for (scaling, scale) in
                [(Scaling::SqrtD, (dh as f32).sqrt().recip()), (Scaling::None, 1.0)]
            {
                let qkv = randn([b, t, (h + 2 * kv) * dh], 40 + seed as u64, &d) * 1.5;
                let what = format!(
                    "b{b} t{t} h{h} kv{kv} d{dh} window {window:?} causal={causal} {}",
                    scaling.name()
                );
                let fused = |qkv| {
                    fused::softmax_attention_packed(qkv, h, kv, scale, causal, window)
                        .expect("flex")
                };
                let composed = |qkv| composed_attention(qkv, (h, kv), scaling, causal, window);
                assert_close(
                    fused(qkv.clone()),
                    composed(qkv.clone()),
                    1e-5,
                    &format!("{what}: no autodiff"),
                );
                let (fast, fast_g) =
                    output_and_grads(std::slice::from_ref(&qkv), 50, |v| fused(v[0].clone()));
                let (slow, slow_g) = output_and_grads(&[qkv], 50, |v| composed(v[0].clone()));
                assert_close(fast, slow, 1e-5, &format!("{what}: output"));
                // Past one block the key and value gradients add up block by block, in another
                // order than the composed formula's single product: f32 rounding of ~1e-5.
                let tol = if t > 64 { 3e-5 } else { 1e-5 };
                assert_close(
                    fast_g[0].clone(),
                    slow_g[0].clone(),
                    tol,
                    &format!("{what}: gradient"),
                );
            }
        }
    }
}

/// Known answers: SSMax at the training length equals √d scaling (its initialisation's
/// promise); softpick and the zero sink on hand-made logits.
#[test]
fn length_aware_known_answers() {
    let d = device();
    let dims = dims(); // L = 16, head dim 4
    let (q, k, v) = (
        randn([1, 2, 16, 4], 420, &d),
        randn([1, 2, 16, 4], 421, &d),
        randn([1, 2, 16, 4], 422, &d),
    );
    let ssmax = SoftmaxAttentionConfig::new(Scaling::Ssmax).init(&dims, &d);
    let terms = ssmax.terms(None, None, 0);
    let (_, w) =
        softmax_attention(q.clone(), k.clone(), v.clone(), Scaling::Ssmax, &terms, true, 0);
    let (_, w0) = softmax_attention(q, k, v, Scaling::SqrtD, &ScoreTerms::default(), true, 0);
    assert_close(w.narrow(2, 15, 1), w0.narrow(2, 15, 1), 1e-5, "ssmax at n = L vs sqrt_d");

    // Logits [ln 2, 0, ln ½]: e^z − 1 = [1, 0, −½], softpick = [1/1.5, 0, 0].
    let z = Tensor::<1>::from_floats([2f32.ln(), 0.0, 0.5f32.ln()], &d).reshape([1, 1, 1, 3]);
    close(&values(softpick(z.clone(), None)), &[1.0 / (1.5 + SOFTPICK_EPS), 0.0, 0.0]);
    // The zero sink: logits [0, 0] -> each 1/3, the sink takes the last third.
    let z = Tensor::<4>::zeros([1, 1, 1, 2], &d);
    close(&values(softmax_with_sink(z, None, Tensor::zeros([1], &d))), &[1.0 / 3.0, 1.0 / 3.0]);
    // log_n_temp's temperature: 1 up to position 6, then ln 2·0.1 + 1 from position 7.
    let one = Tensor::<4>::ones([1, 1, 9, 1], &d);
    let terms = ScoreTerms { log_n_temp: (8.0, 0.1), ..ScoreTerms::default() };
    // With d = 1, q = k = 1 and two keys per row (bidirectional over 2 keys) the weights stay
    // uniform; use q·k differences instead: key 0 = 1, key 1 = 0.
    let keys = Tensor::<1>::from_floats([1.0, 0.0], &d).reshape([1, 1, 2, 1]);
    let (_, w) = softmax_attention(
        one,
        keys,
        Tensor::zeros([1, 1, 2, 1], &d),
        Scaling::LogNTemp,
        &terms,
        false,
        0,
    );
    let w = values(w);
    for p in 0..9 {
        let tau = if p >= 7 { 2f32.ln() * 0.1 + 1.0 } else { 1.0 };
        let want = 1.0 / (1.0 + (-tau).exp());
        assert!((w[2 * p] - want).abs() < 1e-6, "position {p}: {} vs {want}", w[2 * p]);
    }
}
