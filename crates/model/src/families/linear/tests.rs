//! The linear family's tests: every feature map and form against a per-query oracle, the
//! fused kernels (split and packed) against the composed chunked form.

use super::*;
use crate::testing::{assert_close, device, output_and_grads, randn, visible_rows};

/// The slow, obviously-right oracle on feature-mapped queries and keys, one query at a time
/// over exactly the keys it sees: `y_i = Σ_j (φq_i·φk_j) v_j / Σ_j φq_i·φk_j`.
fn naive_linear_attention(
    fq: &Tensor<4>,
    fk: &Tensor<4>,
    v: &Tensor<4>,
    normalize: bool,
    causal: bool,
) -> Tensor<4> {
    let out = visible_rows(fq, fk, v, causal).into_iter().map(|(qi, keys, vals)| {
        let sims = qi.matmul(keys.swap_dims(2, 3)); // [b,h,1,n]
        let num = sims.clone().matmul(vals);
        if normalize { num / safe_denominator(sims.sum_dim(3)) } else { num }
    });
    Tensor::cat(out.collect(), 2)
}

fn dims() -> MixerDims {
    MixerDims { seed: 5, layer: 1, bias: true, ..MixerDims::new(8, 2, 32) }
}

/// Raw q, k, v for `seq` tokens with head width `d`.
fn qkv(seq: usize, d: usize, seed: u64) -> [Tensor<4>; 3] {
    let dev = device();
    [
        randn([2, 2, seq, d], seed, &dev),
        randn([2, 2, seq, d], seed + 1, &dev),
        randn([2, 2, seq, 3], seed + 2, &dev),
    ]
}

/// Every feature map, with and without the denominator, causal and bidirectional: the
/// chunked (training) path and the bidirectional path against the per-query reference.
#[test]
fn every_feature_map_matches_the_reference() {
    for (m, kind) in FeatureMapKind::ALL.into_iter().enumerate() {
        for normalize in [true, false] {
            for causal in [true, false] {
                let seed = 400 + 20 * m as u64 + 2 * normalize as u64 + causal as u64;
                let map = FeatureMap::new(kind, 4, 16, &dims(), &device());
                let inputs = qkv(7, 4, seed);
                let fast_fn = |x: Vec<Tensor<4>>| {
                    let (fq, fk) = (map.apply(x[0].clone(), 0), map.apply(x[1].clone(), 0));
                    if causal {
                        chunked::causal(fq, fk, x[2].clone(), 3, normalize, None).0
                    } else {
                        bidirectional(fq, fk, x[2].clone(), normalize)
                    }
                };
                let slow_fn = |x: Vec<Tensor<4>>| {
                    let (fq, fk) = (map.apply(x[0].clone(), 0), map.apply(x[1].clone(), 0));
                    naive_linear_attention(&fq, &fk, &x[2], normalize, causal)
                };
                let what = format!("{} normalize={normalize} causal={causal}", kind.name());
                let (fast, fg) = output_and_grads(&inputs, seed + 9, fast_fn);
                let (slow, sg) = output_and_grads(&inputs, seed + 9, slow_fn);
                assert_close(fast, slow, 1e-4, &format!("{what} output"));
                for (i, (f, s)) in fg.into_iter().zip(sg).enumerate() {
                    assert_close(f, s, 1e-4, &format!("{what} grad {i}"));
                }
            }
        }
    }
}

/// parallel = chunked = recurrent, outputs and gradients, for chunk sizes that divide the
/// sequence (1, 3 of 9, 9), do not (2, 4), or exceed it (16).
#[test]
fn the_three_causal_forms_agree() {
    let map = FeatureMap::new(FeatureMapKind::Elu1, 4, 0, &dims(), &device());
    for normalize in [true, false] {
        let inputs = qkv(9, 4, 500 + normalize as u64);
        let run = |form: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            output_and_grads(&inputs, 77, |x| {
                form(map.apply(x[0].clone(), 0), map.apply(x[1].clone(), 0), x[2].clone())
            })
        };
        let (par, par_g) = run(&|q, k, v| parallel::causal(q, k, v, normalize));
        let (rec, rec_g) = run(&|q, k, v| recurrent::causal(q, k, v, normalize, None).0);
        assert_close(rec, par.clone(), 1e-4, "recurrent vs parallel");
        for (r, p) in rec_g.into_iter().zip(par_g.clone()) {
            assert_close(r, p, 1e-4, "recurrent vs parallel grad");
        }
        for chunk in [1, 2, 3, 4, 9, 16] {
            let (ch, ch_g) = run(&|q, k, v| chunked::causal(q, k, v, chunk, normalize, None).0);
            assert_close(ch, par.clone(), 1e-4, &format!("chunk={chunk} vs parallel"));
            for (c, p) in ch_g.into_iter().zip(par_g.clone()) {
                assert_close(c, p, 1e-4, &format!("chunk={chunk} grad"));
            }
        }
    }
}

/// Continuing from a carried state equals running over the concatenated sequence, for the
/// chunked and the recurrent form (the decoding path relies on this).
#[test]
fn carried_state_continues_the_sequence() {
    let [q, k, v] = qkv(10, 4, 600);
    let full = parallel::causal(q.clone(), k.clone(), v.clone(), true);
    let (first, state) = chunked::causal(
        q.clone().narrow(2, 0, 6),
        k.clone().narrow(2, 0, 6),
        v.clone().narrow(2, 0, 6),
        4,
        true,
        None,
    );
    let (rest, _) = chunked::causal(
        q.clone().narrow(2, 6, 4),
        k.clone().narrow(2, 6, 4),
        v.clone().narrow(2, 6, 4),
        3,
        true,
        Some(&state),
    );
    assert_close(Tensor::cat(vec![first, rest], 2), full.clone(), 1e-4, "chunked with state");
    let (_, state) = recurrent::causal(
        q.clone().narrow(2, 0, 6),
        k.clone().narrow(2, 0, 6),
        v.clone().narrow(2, 0, 6),
        true,
        None,
    );
    let (rest, _) = recurrent::causal(
        q.narrow(2, 6, 4),
        k.narrow(2, 6, 4),
        v.narrow(2, 6, 4),
        true,
        Some(&state),
    );
    assert_close(rest, full.narrow(2, 6, 4), 1e-4, "recurrent with state");
}

/// Fused chunked linear attention equals the composed chunked form on fresh random inputs,
/// outputs and all three gradients: normalised or not, chunks that divide the length or not,
/// positive features (elu+1) and signed ones (identity, whose denominators cross zero).
#[test]
fn fused_linear_attention_matches_the_composed_chunked_form() {
    let d = device();
    for (seed, (b, h, t, f, dv, chunk)) in
        [(2, 2, 13, 4, 3, 4), (1, 3, 16, 8, 8, 8), (1, 1, 5, 3, 2, 64)].into_iter().enumerate()
    {
        for normalize in [true, false] {
            for positive in [true, false] {
                let feats = |x: Tensor<4>| {
                    if positive { burn::tensor::activation::elu(x, 1.0) + 1.0 } else { x }
                };
                let inputs = [
                    randn([b, h, t, f], 80 + seed as u64, &d),
                    randn([b, h, t, f], 81 + seed as u64, &d),
                    randn([b, h, t, f.max(dv)], 82, &d),
                ];
                let what = format!(
                    "b{b} h{h} t{t} f{f} dv{dv} chunk{chunk} normalize={normalize} positive={positive}"
                );
                let v_of = |x: &Tensor<4>| x.clone().narrow(3, 0, dv);
                let (fast, fast_g) = output_and_grads(&inputs, 83, |x| {
                    crate::fused::causal_linear_attention(
                        feats(x[0].clone()),
                        feats(x[1].clone()),
                        v_of(&x[2]),
                        chunk,
                        normalize,
                        DENOMINATOR_EPS,
                    )
                    .expect("flex")
                });
                let (slow, slow_g) = output_and_grads(&inputs, 83, |x| {
                    chunked::causal(
                        feats(x[0].clone()),
                        feats(x[1].clone()),
                        v_of(&x[2]),
                        chunk,
                        normalize,
                        None,
                    )
                    .0
                });
                assert_close(fast, slow, 1e-4, &format!("{what}: output"));
                for (i, (f, s)) in fast_g.into_iter().zip(slow_g).enumerate() {
                    assert_close(f, s, 1e-3, &format!("{what}: gradient {i}"));
                }
            }
        }
    }
}
/// The packed kernel (φ inside, heads read from `[q | k | v]` rows) equals splitting the
/// heads, mapping them and running the composed chunked form: outputs and the packed input's
/// gradient, for each pointwise map, normalised or not, chunks that divide the length or not.
#[test]
fn packed_kernel_matches_the_split_path() {
    use crate::fused::PointMap;
    let d = device();
    let maps = [
        (PointMap::Identity, FeatureMapKind::Identity),
        (PointMap::Elu1, FeatureMapKind::Elu1),
        (PointMap::Relu, FeatureMapKind::Relu),
    ];
    for (case, (b, h, t, f, dv, chunk)) in
        [(2, 2, 13, 4, 3, 4), (1, 3, 16, 8, 8, 8), (1, 1, 5, 3, 2, 64)].into_iter().enumerate()
    {
        for (point, kind) in maps {
            for normalize in [true, false] {
                let seed = 900 + 10 * case as u64 + 2 * kind as u64 + normalize as u64;
                let map = FeatureMap::new(kind, f, 0, &dims(), &d);
                let inputs = [randn([b, t, h * (2 * f + dv)], seed, &d)];
                let what = format!(
                    "{} b{b} h{h} t{t} f{f} dv{dv} chunk{chunk} normalize={normalize}",
                    kind.name()
                );
                let (fast, fast_g) = output_and_grads(&inputs, seed + 1, |x| {
                    crate::fused::causal_linear_attention_packed(
                        x[0].clone(),
                        h,
                        f,
                        point,
                        chunk,
                        normalize,
                        DENOMINATOR_EPS,
                    )
                    .expect("flex")
                });
                let (slow, slow_g) = output_and_grads(&inputs, seed + 1, |x| {
                    let heads = |start: usize, width: usize| {
                        x[0].clone()
                            .narrow(2, start, h * width)
                            .reshape([b, t, h, width])
                            .swap_dims(1, 2)
                    };
                    let (q, k, v) = (heads(0, f), heads(h * f, f), heads(2 * h * f, dv));
                    let y = chunked::causal(
                        map.apply(q, 0),
                        map.apply(k, 0),
                        v,
                        chunk,
                        normalize,
                        None,
                    )
                    .0;
                    y.swap_dims(1, 2).reshape([b, t, h * dv])
                });
                assert_close(fast, slow, 1e-4, &format!("{what}: output"));
                assert_close(
                    fast_g[0].clone(),
                    slow_g[0].clone(),
                    1e-3,
                    &format!("{what}: gradient"),
                );
            }
        }
    }
}

/// A layer takes the packed path where it can (causal, no diagnostics) and gives the split
/// path's output (which diagnostics force), with RoPE and without.
#[test]
fn layer_output_is_the_same_on_either_path() {
    let d = device();
    let layer = LinearAttentionConfig::new(FeatureMapKind::Elu1).init(&dims(), &d);
    let rope = burn::nn::RotaryEncodingConfig::new(16, 4).init(&d);
    let x = randn([2, 9, 8], 950, &d);
    for rope in [None, Some(&rope)] {
        let ctx = |diagnostics| MixContext { causal: true, rope, diagnostics };
        let packed = layer.forward(x.clone(), ctx(false)).output;
        let split = layer.forward(x.clone(), ctx(true)).output;
        assert_close(packed, split, 1e-5, &format!("rope={}", rope.is_some()));
    }
}
