//! The parallel, chunked, recurrent and fused forms against the naive delta rule (gates, β
//! ranges, chunk sizes, strong decay, carried states, both directions), the exact unit-lower
//! inverse, and the rule's defining property on orthonormal keys.

use super::super::forms::diagonal_and_above;
use super::*;
use crate::chunking::unit_lower_inverse;
use crate::testing::{assert_close, output_and_grads, randn, values};

/// parallel, chunked and recurrent against the naive recurrence, outputs and the gradients
/// of q, k, v, β and the gate: ungated; gates near 1 (log ≈ −1e-3), moderate and near 0
/// (log ≈ −10); β near 0, in (0, 1) and near 2; chunks that divide the length, do not, are
/// 1, or exceed it.
#[test]
fn every_form_matches_the_naive_recurrence() {
    let mut seed = 2000;
    for scale in [0.0, 1e-3, 0.3, 10.0] {
        for range in [BetaRange::Small, BetaRange::Unit, BetaRange::NearTwo] {
            for seq in [9, 10] {
                seed += 10;
                let x = inputs(seq, seed);
                let run = |f: Form<'_>| {
                    output_and_grads(&x, seed + 7, |x| {
                        f(
                            l2_normalize(x[0].clone()),
                            l2_normalize(x[1].clone()),
                            x[2].clone(),
                            beta_from(x[3].clone(), range),
                            log_gates_from(x[4].clone(), scale),
                        )
                    })
                };
                let want = run(&|q, k, v, b, g| naive_delta_rule(&q, &k, &v, &b, &g).0);
                let what = format!("log gate≈−{scale} β {range:?} T={seq}");
                assert_every_form_close(&what, run, &want, &[1, 3, 4, 16]);
            }
        }
    }
}

/// The fused recurrence (flex) against the composed WY chunked form, outputs and the
/// gradients of q, k, v, β and the gate, on fresh inputs: ungated and gated (weak, moderate,
/// strong decay), β in (0, 1) and near 2, checkpoint intervals that do and do not divide T.
#[test]
fn fused_recurrence_matches_the_composed_chunked_form() {
    let mut seed = 3000;
    for (scale, range) in [
        (0.0, BetaRange::Unit),
        (1e-3, BetaRange::NearTwo),
        (0.3, BetaRange::Unit),
        (10.0, BetaRange::Small),
    ] {
        for c in [1, 3, 16] {
            seed += 10;
            assert_fused_equals_chunked(
                &inputs(10, seed),
                seed + 7,
                c,
                range,
                |raw| log_gates_from(raw, scale),
                &format!("fused log gate≈−{scale} β {range:?} chunk={c}"),
            );
        }
    }
}

/// As above with heads wide enough (`d = 32`) for the flex glue to run the chunked kernels
/// (`fused::chunked_delta`) forward and backward: outputs and
/// gradients against the composed chunked form, moderate and strong decay, `β` in (0, 1) and
/// near 2, a checkpoint interval that does not divide the length and one longer than it.
#[test]
fn chunked_fused_kernels_match_the_composed_chunked_form() {
    let dev = device();
    let mut seed = 3500;
    for (scale, range, c) in
        [(0.3, BetaRange::Unit, 16), (10.0, BetaRange::NearTwo, 64), (0.0, BetaRange::Small, 13)]
    {
        seed += 10;
        let x = [32, 32, 32, 1, 1].map(|d| {
            seed += 1;
            randn([1, 2, 30, d], seed, &dev)
        });
        assert_fused_equals_chunked(
            &x,
            seed + 7,
            c,
            range,
            |raw| log_gates_from(raw, scale),
            &format!("chunked fused d=32 log gate≈−{scale} β {range:?} chunk={c}"),
        );
    }
}

/// The block-doubling inverse against forward substitution in f64, for sizes that are and
/// are not powers of two, on random entries and on repeated keys (all `k_i·k_j = 1`, the
/// case where a power series `Σ (−A)^n` would need terms of size `C choose n`).
#[test]
fn unit_lower_inverse_is_forward_substitution() {
    for c in [1, 2, 3, 5, 8, 17, 64] {
        for repeated in [false, true] {
            let a = if repeated {
                Tensor::<4>::ones([1, 2, c, c], &device())
            } else {
                randn([1, 2, c, c], 2100 + c as u64, &device()) * 0.5
            };
            let a = a.mask_fill(
                diagonal_and_above(c, &device()).unsqueeze::<4>().expand([1, 2, c, c]),
                0.0,
            );
            let got = values(unit_lower_inverse(a.clone()));
            let a = values(a);
            for m in 0..2 {
                let at = |i: usize, j: usize| a[(m * c + i) * c + j] as f64;
                // Row i of T: e_i − Σ_{j<i} A_ij T_j.
                let mut t = vec![vec![0f64; c]; c];
                for i in 0..c {
                    t[i][i] = 1.0;
                    for j in 0..i {
                        let row = t[j].clone();
                        for (l, r) in row.iter().enumerate() {
                            t[i][l] -= at(i, j) * r;
                        }
                    }
                }
                for i in 0..c {
                    for j in 0..c {
                        let g = got[(m * c + i) * c + j] as f64;
                        assert!(
                            (g - t[i][j]).abs() <= 1e-4 * t[i][j].abs().max(1.0),
                            "c={c} repeated={repeated} ({i},{j}): {g} vs {}",
                            t[i][j]
                        );
                    }
                }
            }
        }
    }
}

/// The delta rule's defining property: with β = 1 and orthonormal keys, the state holds
/// exactly the last value written under each key, in every form, where plain linear
/// attention (which adds) would hold their sum.
#[test]
fn orthonormal_keys_retrieve_the_last_value_written() {
    let dev = device();
    let writes = [0usize, 1, 2, 0, 3, 1, 0, 2, 2];
    let t = writes.len();
    let keys: Vec<f32> =
        writes.iter().flat_map(|&w| (0..4).map(move |i| if i == w { 1.0 } else { 0.0 })).collect();
    let k = Tensor::<1>::from_floats(keys.as_slice(), &dev).reshape([1, 1, t, 4]);
    let v = randn([1, 1, t, 3], 2200, &dev);
    let beta = Tensor::<4>::ones([1, 1, t, 1], &dev);
    let log_g = Tensor::<4>::zeros([1, 1, t, 1], &dev);
    // Query the key written at each step: the output is the value just written.
    let (y, state) = recurrent(k.clone(), k.clone(), v.clone(), beta.clone(), log_g.clone(), None);
    assert_close(y, v.clone(), 1e-6, "recurrent: read back");
    let vs = values(v.clone());
    for key in 0..4 {
        let last = writes.iter().rposition(|&w| w == key);
        let row = &values(state.clone())[key * 3..key * 3 + 3];
        let want: Vec<f32> = last.map_or(vec![0.0; 3], |p| vs[p * 3..p * 3 + 3].to_vec());
        for (g, w) in row.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "key {key}: state row {row:?}, last value {want:?}");
        }
    }
    for c in [2, 4, 9] {
        let (y, s) = chunked(k.clone(), k.clone(), v.clone(), beta.clone(), log_g.clone(), c, None);
        assert_close(y, v.clone(), 1e-5, &format!("chunk={c}: read back"));
        assert_close(s, state.clone(), 1e-5, &format!("chunk={c}: state"));
    }
    assert_close(parallel(k.clone(), k, v.clone(), beta, log_g), v, 1e-5, "parallel: read back");
}

/// Strong forgetting (log gates ≈ −30 per token) over a 40-token chunk stays finite and equal.
#[test]
fn strong_decay_over_long_chunks_stays_finite() {
    let [q, k, v, b, g] = inputs(40, 2300);
    let (q, k, b, g) =
        (l2_normalize(q), l2_normalize(k), beta_from(b, BetaRange::Unit), log_gates_from(g, 30.0));
    let (want, _) = naive_delta_rule(&q, &k, &v, &b, &g);
    assert_close(
        chunked(q.clone(), k.clone(), v.clone(), b.clone(), g.clone(), 40, None).0,
        want.clone(),
        1e-4,
        "chunked",
    );
    assert_close(
        parallel(q.clone(), k.clone(), v.clone(), b.clone(), g.clone()),
        want.clone(),
        1e-4,
        "parallel",
    );
    assert_close(recurrent(q, k, v, b, g, None).0, want, 1e-4, "recurrent");
}

/// Continuing from a carried state equals one pass over the whole sequence (decoding relies
/// on it), for the chunked and the recurrent form, and the final states agree.
#[test]
fn carried_state_continues_the_sequence() {
    for scale in [0.0, 0.3] {
        let [q, k, v, b, g] = inputs(10, 2400 + scale as u64);
        let (q, k, b, g) = (
            l2_normalize(q),
            l2_normalize(k),
            beta_from(b, BetaRange::Unit),
            log_gates_from(g, scale),
        );
        let (full, final_state) = naive_delta_rule(&q, &k, &v, &b, &g);
        let part = |x: &Tensor<4>, a: usize, n: usize| x.clone().narrow(2, a, n);
        let first = |x: &Tensor<4>| part(x, 0, 6);
        let rest = |x: &Tensor<4>| part(x, 6, 4);
        let (head, state) = chunked(first(&q), first(&k), first(&v), first(&b), first(&g), 4, None);
        let (tail, end) =
            chunked(rest(&q), rest(&k), rest(&v), rest(&b), rest(&g), 3, Some(&state));
        assert_close(Tensor::cat(vec![head, tail], 2), full.clone(), 1e-4, "chunked with state");
        assert_close(end, final_state.clone(), 1e-4, "chunked final state");
        let (_, state) = recurrent(first(&q), first(&k), first(&v), first(&b), first(&g), None);
        let (tail, end) = recurrent(rest(&q), rest(&k), rest(&v), rest(&b), rest(&g), Some(&state));
        assert_close(tail, full.narrow(2, 6, 4), 1e-4, "recurrent with state");
        assert_close(end, final_state, 1e-4, "recurrent final state");
    }
}

/// Bidirectional weights are the forward recurrence plus the reversed one.
#[test]
fn bidirectional_runs_both_ways() {
    let [q, k, v, b, g] = inputs(7, 2500);
    let (q, k, b, g) =
        (l2_normalize(q), l2_normalize(k), beta_from(b, BetaRange::Unit), log_gates_from(g, 0.3));
    let flip = |x: &Tensor<4>| x.clone().flip([2]);
    let want = naive_delta_rule(&q, &k, &v, &b, &g).0
        + naive_delta_rule(&flip(&q), &flip(&k), &flip(&v), &flip(&b), &flip(&g)).0.flip([2]);
    assert_close(weights(q, k, b, g, false).matmul(v), want, 1e-4, "bidirectional");
}
