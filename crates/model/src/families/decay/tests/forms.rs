//! The parallel, chunked, recurrent and fused forms against the naive recurrence: scalar and
//! vector gates, weak to strong decay, both norms, sub-chunks, both directions, carried states.

use super::super::forms::{divide_out, with_ones};
use super::*;
use crate::testing::{assert_close, assert_output_and_grads_close, output_and_grads};

/// parallel, chunked and recurrent against the naive recurrence, outputs and the gradients
/// of q, k, v and the gate: scalar and vector gates; gates near 1 (log ≈ −1e-3, long
/// memory), moderate and near 0 (log ≈ −10); norm none and sum; chunks (and the vector gate's
/// parallel blocks) that divide the length, do not, are 1, or exceed it.
#[test]
fn every_form_matches_the_naive_recurrence() {
    let mut seed = 1000;
    for g in [1, 4] {
        for scale in [1e-3, 0.3, 10.0] {
            for normalize in [false, true] {
                for seq in [9, 10] {
                    seed += 10;
                    let x = inputs(seq, g, seed);
                    // Signed features (identity) without the denominator; positive ones
                    // (elu+1) with it, where signed ones make it ill-conditioned near zero.
                    let phi = |x: Tensor<4>| {
                        if normalize { crate::fused::elu_plus_one(x) } else { x }
                    };
                    let run =
                        |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
                            output_and_grads(&x, seed + 7, |x| {
                                f(
                                    phi(x[0].clone()),
                                    phi(x[1].clone()),
                                    x[2].clone(),
                                    log_gates_from(x[3].clone(), scale),
                                )
                            })
                        };
                    let want =
                        run(&|q, k, v, lg| naive_decay_attention(&q, &k, &v, &lg, normalize));
                    let what = format!("g={g} log gate≈−{scale} normalize={normalize} T={seq}");
                    assert_output_and_grads_close(
                        &format!("{what} recurrent"),
                        run(&|q, k, v, lg| recurrent(q, k, v, lg, normalize, None).0),
                        &want,
                    );
                    for c in [1, 3, 4, 16] {
                        assert_output_and_grads_close(
                            &format!("{what} chunk={c}"),
                            run(&|q, k, v, lg| chunked(q, k, v, lg, c, normalize, None).0),
                            &want,
                        );
                        assert_output_and_grads_close(
                            &format!("{what} parallel block={c}"),
                            run(&|q, k, v, lg| parallel(q, k, v, lg, normalize, c)),
                            &want,
                        );
                    }
                }
            }
        }
    }
}

/// The fused recurrence (flex) against the composed chunked form, outputs and the gradients
/// of q, k, v and the gate, on fresh inputs: scalar and vector gates, both norms, strong and
/// weak decay, checkpoint intervals that do and do not divide the length.
#[test]
fn fused_recurrence_matches_the_composed_chunked_form() {
    let mut seed = 1900;
    for g in [1, 4] {
        for (scale, normalize) in [(1e-3, false), (0.3, true), (10.0, false)] {
            for c in [1, 3, 16] {
                seed += 10;
                let x = inputs(10, g, seed);
                let phi = |x: Tensor<4>| if normalize { crate::fused::elu_plus_one(x) } else { x };
                let run = |fused: bool| {
                    output_and_grads(&x, seed + 7, |x| {
                        let (q, k, v, lg) = (
                            phi(x[0].clone()),
                            phi(x[1].clone()),
                            x[2].clone(),
                            log_gates_from(x[3].clone(), scale),
                        );
                        if fused {
                            let y = crate::fused::gated_recurrence(
                                q,
                                k,
                                with_ones(v, normalize),
                                lg,
                                None,
                                c,
                            )
                            .map_err(|_| "flex")
                            .expect("the fused kernel runs on flex");
                            divide_out(y, normalize)
                        } else {
                            chunked(q, k, v, lg, c, normalize, None).0
                        }
                    })
                };
                assert_output_and_grads_close(
                    &format!("fused g={g} log gate≈−{scale} normalize={normalize} chunk={c}"),
                    run(true),
                    &run(false),
                );
            }
        }
    }
}

/// As above with heads wide enough (`d = 32`) for the flex glue to run the chunked kernels
/// (`fused::chunked_delta`) forward and backward: scalar gates, both norms, moderate and strong decay, a checkpoint interval that does not divide the length.
#[test]
fn chunked_fused_kernels_match_the_composed_chunked_form() {
    let dev = device();
    for (seed, (scale, normalize)) in [(0.3, true), (10.0, false)].into_iter().enumerate() {
        let seed = 1990 + 10 * seed as u64;
        let x = [32, 32, 32, 1].map(|d| randn([1, 2, 30, d], seed + d as u64, &dev));
        let phi = |x: Tensor<4>| if normalize { crate::fused::elu_plus_one(x) } else { x };
        let run = |fused: bool| {
            output_and_grads(&x, seed + 7, |x| {
                let (q, k, v, lg) = (
                    phi(x[0].clone()),
                    phi(x[1].clone()),
                    x[2].clone(),
                    log_gates_from(x[3].clone(), scale),
                );
                if fused {
                    let y =
                        crate::fused::gated_recurrence(q, k, with_ones(v, normalize), lg, None, 13)
                            .map_err(|_| "flex")
                            .expect("the fused kernel runs on flex");
                    divide_out(y, normalize)
                } else {
                    chunked(q, k, v, lg, 13, normalize, None).0
                }
            })
        };
        assert_output_and_grads_close(
            &format!("chunked fused d=32 log gate≈−{scale} normalize={normalize}"),
            run(true),
            &run(false),
        );
    }
}

/// Sequences longer than a sub-chunk: the vector gate's in-chunk scores go through
/// `VECTOR_SUBCHUNK`-token sub-chunks (a chunk of 20 = 16 + 4, one of 37 = 16 + 16 + 5) and
/// the parallel form's diagonal blocks recurse into them.
#[test]
fn vector_gate_sub_chunks_match_the_naive_recurrence() {
    for (scale, normalize) in [(0.3, false), (10.0, false), (0.3, true)] {
        let x = inputs(37, 4, 1100 + normalize as u64 + scale as u64);
        let phi = |x: Tensor<4>| if normalize { crate::fused::elu_plus_one(x) } else { x };
        let run = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            output_and_grads(&x, 1107, |x| {
                f(
                    phi(x[0].clone()),
                    phi(x[1].clone()),
                    x[2].clone(),
                    log_gates_from(x[3].clone(), scale),
                )
            })
        };
        let want = run(&|q, k, v, lg| naive_decay_attention(&q, &k, &v, &lg, normalize));
        let what = format!("T=37 log gate≈−{scale} normalize={normalize}");
        for c in [20, 64] {
            assert_output_and_grads_close(
                &format!("{what} chunk={c}"),
                run(&|q, k, v, lg| chunked(q, k, v, lg, c, normalize, None).0),
                &want,
            );
        }
        for c in [8, 24, 64] {
            assert_output_and_grads_close(
                &format!("{what} parallel block={c}"),
                run(&|q, k, v, lg| parallel(q, k, v, lg, normalize, c)),
                &want,
            );
        }
    }
}

#[test]
fn bidirectional_weights_decay_both_ways() {
    for (g, normalize) in [(1, false), (1, true), (4, false), (4, true)] {
        let x = inputs(7, g, 1200 + g as u64 + normalize as u64);
        let phi = |x: Tensor<4>| if normalize { crate::fused::elu_plus_one(x) } else { x };
        let run = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            output_and_grads(&x, 1210, |x| {
                f(
                    phi(x[0].clone()),
                    phi(x[1].clone()),
                    x[2].clone(),
                    log_gates_from(x[3].clone(), 0.3),
                )
            })
        };
        let want = run(&|q, k, v, lg| naive_bidirectional(&q, &k, &v, &lg, normalize));
        for block in [2, 7] {
            let got = run(&|q, k, v, lg| weights(q, k, lg, false, normalize, block).matmul(v));
            assert_output_and_grads_close(
                &format!("bidirectional g={g} normalize={normalize} block={block}"),
                got,
                &want,
            );
        }
    }
}

/// Strong forgetting over long chunks: a naive `exp(−b_j)` factorisation would reach
/// `e^{1200}` here; every form stays finite and equal.
#[test]
fn strong_decay_over_long_chunks_stays_finite() {
    for g in [1, 4] {
        let [q, k, v, raw] = inputs(40, g, 1300 + g as u64);
        let (q, k) = (crate::fused::elu_plus_one(q), crate::fused::elu_plus_one(k));
        let lg = log_gates_from(raw, 30.0);
        let want = naive_decay_attention(&q, &k, &v, &lg, true);
        assert_close(
            chunked(q.clone(), k.clone(), v.clone(), lg.clone(), 40, true, None).0,
            want.clone(),
            1e-4,
            "chunked",
        );
        assert_close(
            parallel(q.clone(), k.clone(), v.clone(), lg.clone(), true, 8),
            want.clone(),
            1e-4,
            "parallel",
        );
        assert_close(recurrent(q, k, v, lg, true, None).0, want, 1e-4, "recurrent");
    }
}

/// Continuing from a carried state equals running over the whole sequence, for the chunked
/// and the recurrent form (decoding relies on this), with and without `z`.
#[test]
fn carried_state_continues_the_sequence() {
    for g in [1, 4] {
        for normalize in [false, true] {
            let [q, k, v, raw] = inputs(10, g, 1400 + 2 * g as u64 + normalize as u64);
            let (q, k) = if normalize {
                (crate::fused::elu_plus_one(q), crate::fused::elu_plus_one(k))
            } else {
                (q, k)
            };
            let lg = log_gates_from(raw, 0.3);
            let full = naive_decay_attention(&q, &k, &v, &lg, normalize);
            let part = |x: &Tensor<4>, a: usize, n: usize| x.clone().narrow(2, a, n);
            let what = format!("g={g} normalize={normalize}");
            let (first, state) = chunked(
                part(&q, 0, 6),
                part(&k, 0, 6),
                part(&v, 0, 6),
                part(&lg, 0, 6),
                4,
                normalize,
                None,
            );
            let (rest, _) = chunked(
                part(&q, 6, 4),
                part(&k, 6, 4),
                part(&v, 6, 4),
                part(&lg, 6, 4),
                3,
                normalize,
                Some(&state),
            );
            assert_close(
                Tensor::cat(vec![first, rest], 2),
                full.clone(),
                1e-4,
                &format!("{what}: chunked with state"),
            );
            let (_, state) = recurrent(
                part(&q, 0, 6),
                part(&k, 0, 6),
                part(&v, 0, 6),
                part(&lg, 0, 6),
                normalize,
                None,
            );
            let (rest, state) = recurrent(
                part(&q, 6, 4),
                part(&k, 6, 4),
                part(&v, 6, 4),
                part(&lg, 6, 4),
                normalize,
                Some(&state),
            );
            assert_close(
                rest,
                full.narrow(2, 6, 4),
                1e-4,
                &format!("{what}: recurrent with state"),
            );
            let (_, chunked_state) = chunked(q, k, v, lg, 3, normalize, None);
            assert_close(state, chunked_state, 1e-4, &format!("{what}: final states"));
        }
    }
}
