//! MoBA against its formula: the block choice and the kernel (outputs and gradients) against a
//! naive per-query oracle in f64, a choice by hand, the limit of plain causal softmax,
//! causality, decoding, long inputs, the reported selection and specs.

use super::*;
use crate::heads::{causal_mask, masked_softmax};
use crate::mixer::{MixContext, SequenceMixer};
use crate::testing::{
    F64Rows, ad_device, assert_close, assert_decoding_equals_forward, assert_forward_finite,
    device, dot64, output_and_grads, randn, seeded_layer, softmax64, values,
};
use burn::nn::RotaryEncodingConfig;
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};

/// The past blocks query `i` (at `q_offset + i`) of head `(b, h)` chooses, from the formula:
/// every candidate block's `q·mean(K_j)` in f64, sorted high to low (ties: lower `j` first),
/// the first `topk` kept.
fn naive_choice(
    q: &F64Rows,
    k: &F64Rows,
    (b, h, i): (usize, usize, usize),
    block: usize,
    topk: usize,
    causal: bool,
    q_offset: usize,
) -> Vec<usize> {
    let (seq_k, d) = (k.dims[2], k.dims[3]);
    let own = (q_offset + i) / block;
    let mut scored: Vec<(usize, f64)> = (0..seq_k.div_ceil(block))
        .filter(|&j| if causal { j < own } else { j != own })
        .map(|j| {
            let keys: Vec<usize> = (j * block..((j + 1) * block).min(seq_k)).collect();
            let mean: Vec<f64> = (0..d)
                .map(|c| keys.iter().map(|&l| k.row(b, h, l)[c]).sum::<f64>() / keys.len() as f64)
                .collect();
            (j, dot64(q.row(b, h, i), &mean))
        })
        .collect();
    scored.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    let mut chosen: Vec<usize> = scored.into_iter().take(topk).map(|(j, _)| j).collect();
    chosen.sort();
    chosen
}

/// The keys query `i` reads: its chosen blocks' and its own block's (up to itself, causal).
fn naive_keys(
    choice: &[usize],
    i: usize,
    seq_k: usize,
    block: usize,
    causal: bool,
    q_offset: usize,
) -> Vec<usize> {
    let p = q_offset + i;
    (0..seq_k)
        .filter(|&l| {
            let own = l / block == p / block && (!causal || l <= p);
            own || choice.contains(&(l / block))
        })
        .collect()
}

/// The oracle's key lists, `[b][h][i]`.
fn naive_selection(
    q: &Tensor<4>,
    k: &Tensor<4>,
    block: usize,
    topk: usize,
    causal: bool,
    q_offset: usize,
) -> Vec<Vec<Vec<Vec<usize>>>> {
    let (qv, kv) = (F64Rows::of(q), F64Rows::of(k));
    let [b, h, t, _] = q.dims();
    (0..b)
        .map(|bi| {
            (0..h)
                .map(|hi| {
                    (0..t)
                        .map(|i| {
                            let c =
                                naive_choice(&qv, &kv, (bi, hi, i), block, topk, causal, q_offset);
                            naive_keys(&c, i, k.dims()[2], block, causal, q_offset)
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The output in f64: per query, a plain softmax of `q·k/√d` over exactly its keys.
fn naive_output(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    keys: &[Vec<Vec<Vec<usize>>>],
) -> Tensor<4> {
    let (qv, kv, vv) = (F64Rows::of(q), F64Rows::of(k), F64Rows::of(v));
    let [b, h, t, d] = q.dims();
    let dv = v.dims()[3];
    assert_eq!((keys.len(), keys[0].len()), (b, h), "a key list per batch row and head");
    let mut out = Vec::with_capacity(b * h * t * dv);
    for (bi, heads) in keys.iter().enumerate() {
        for (hi, rows) in heads.iter().enumerate() {
            for (i, row) in rows.iter().enumerate() {
                let z: Vec<f64> = row
                    .iter()
                    .map(|&l| dot64(qv.row(bi, hi, i), kv.row(bi, hi, l)) / (d as f64).sqrt())
                    .collect();
                let w = softmax64(&z);
                out.extend((0..dv).map(|c| {
                    row.iter().zip(&w).map(|(&l, w)| w * vv.row(bi, hi, l)[c]).sum::<f64>() as f32
                }));
            }
        }
    }
    Tensor::<1>::from_floats(out.as_slice(), &device()).reshape([b, h, t, dv])
}

/// The same rows as tensor operations on the given key lists (for gradients): each query's
/// keys and values gathered, softmax over them.
fn gathered_rows(x: &[Tensor<4>], keys: &[Vec<Vec<Vec<usize>>>]) -> Tensor<4> {
    let (q, k, v) = (&x[0], &x[1], &x[2]);
    let d = q.dims()[3] as f32;
    let part = |t: &Tensor<4>, b: usize, h: usize| t.clone().narrow(0, b, 1).narrow(1, h, 1);
    let batches = keys.iter().enumerate().map(|(b, heads)| {
        let heads = heads.iter().enumerate().map(|(h, rows)| {
            let rows = rows.iter().enumerate().map(|(i, row)| {
                let ids: Vec<i64> = row.iter().map(|&l| l as i64).collect();
                let ids =
                    Tensor::<1, Int>::from_data(TensorData::new(ids, [row.len()]), &q.device());
                let keys = part(k, b, h).select(2, ids.clone());
                let vals = part(v, b, h).select(2, ids);
                let qi = part(q, b, h).narrow(2, i, 1);
                softmax(qi.matmul(keys.swap_dims(2, 3)) / d.sqrt(), 3).matmul(vals)
            });
            Tensor::cat(rows.collect(), 2)
        });
        Tensor::cat(heads.collect(), 1)
    });
    Tensor::cat(batches.collect(), 0)
}

fn qkv(t_q: usize, t_k: usize, seed: u64) -> [Tensor<4>; 3] {
    let d = device();
    [
        randn([2, 2, t_q, 4], seed, &d) * 1.5,
        randn([2, 2, t_k, 4], seed + 1, &d),
        randn([2, 2, t_k, 3], seed + 2, &d),
    ]
}

/// The composed kernel against the oracle on fresh inputs: the choice exactly, the output
/// against f64, the gradients against the gathered rows. 13 keys leave the last block short;
/// the last case's queries sit at positions 8..13 over all 13 keys (a decoding step's layout).
#[test]
fn the_kernel_matches_the_naive_oracle_in_choice_outputs_and_gradients() {
    let cases = [
        // (causal, block, topk, queries, q_offset)
        (true, 4, 2, 13, 0),
        (true, 3, 1, 13, 0),
        (true, 2, 3, 13, 0),
        (false, 4, 1, 13, 0),
        (true, 4, 0, 13, 0),
        (true, 3, 2, 5, 8),
    ];
    let mut routed_away = 0;
    for (n, (causal, block, topk, t_q, offset)) in cases.into_iter().enumerate() {
        let what = format!("causal={causal} block={block} topk={topk} offset={offset}");
        let seed = 900 + 10 * n as u64;
        let inputs = qkv(t_q, 13, seed);
        let [q, k, v] = inputs.clone();
        let keys = naive_selection(&q, &k, block, topk, causal, offset);
        // The choice, block by block.
        let chosen =
            values(selected_blocks(q.clone(), k.clone(), block, topk, causal, offset).float());
        let n_blocks = 13usize.div_ceil(block);
        for (r, row) in keys.iter().flatten().flatten().enumerate() {
            let i = r % t_q;
            let own = (offset + i) / block;
            let want: Vec<f32> = (0..n_blocks)
                .map(|j| if j != own && row.iter().any(|&l| l / block == j) { 1.0 } else { 0.0 })
                .collect();
            assert_eq!(
                &chosen[r * n_blocks..(r + 1) * n_blocks],
                want.as_slice(),
                "{what}: row {r}"
            );
            // A row that skipped its most recent past block was routed by the gate.
            if causal && own >= 2 && want[own - 1] == 0.0 {
                routed_away += 1;
            }
        }
        let (fast, fg) = output_and_grads(&inputs, seed + 3, |x| {
            moba_attention(x[0].clone(), x[1].clone(), x[2].clone(), block, topk, causal, offset).0
        });
        assert_close(fast, naive_output(&q, &k, &v, &keys), 1e-4, &format!("{what}: output"));
        let (_, sg) = output_and_grads(&inputs, seed + 3, |x| gathered_rows(&x, &keys));
        for (i, (f, s)) in fg.into_iter().zip(sg).enumerate() {
            assert_close(f, s, 1e-4, &format!("{what}: gradient {i}"));
        }
    }
    assert!(routed_away >= 5, "the gate skipped the most recent block only {routed_away} times");
}

/// The fused span kernel (the training forward's form) against the dense masked kernel on fresh
/// inputs: outputs and the gradients of q, k and v, causal and bidirectional, a short last
/// block, more blocks asked for than exist, and no past block at all.
#[test]
fn the_span_kernel_equals_the_dense_masked_kernel() {
    let cases = [
        // (causal, block, topk, length)
        (true, 4, 2, 13),
        (true, 3, 1, 13),
        (true, 2, 3, 16),
        (false, 4, 1, 13),
        (false, 3, 2, 12),
        (true, 4, 0, 13),
        (true, 4, 9, 13),
        (true, 8, 2, 40),
    ];
    for (n, (causal, block, topk, t)) in cases.into_iter().enumerate() {
        let what = format!("causal={causal} block={block} topk={topk} t={t}");
        let seed = 1700 + 10 * n as u64;
        let inputs = qkv(t, t, seed);
        let (dense, dg) = output_and_grads(&inputs, seed + 3, |x| {
            moba_attention(x[0].clone(), x[1].clone(), x[2].clone(), block, topk, causal, 0).0
        });
        let (blocks, bg) = output_and_grads(&inputs, seed + 3, |x| {
            moba_attention_blocks(x[0].clone(), x[1].clone(), x[2].clone(), block, topk, causal)
        });
        assert_close(blocks, dense, 1e-5, &format!("{what}: output"));
        for (i, (g, d)) in bg.into_iter().zip(dg).enumerate() {
            assert_close(g, d, 1e-5, &format!("{what}: gradient {i}"));
        }
        // Without autodiff too (evaluation).
        let [q, k, v] = inputs.clone();
        let plain = moba_attention_blocks(q.clone(), k.clone(), v.clone(), block, topk, causal);
        let dense = moba_attention(q, k, v, block, topk, causal, 0).0;
        assert_close(plain, dense, 1e-5, &format!("{what}: plain output"));
    }
}

/// By hand, `block=2`, one head of width 2: block 0's keys are `(1, 0)`, block 1's `(0, 1)`.
/// Query 4 `= (0, 2)` scores them 0 and 2 and takes block 1; query 5 `= (1, 1)` scores 1 and 1
/// and takes block 0, the lower of the tie; queries 2 and 3 have block 0 only, 0 and 1 none.
/// Query 4 then reads keys 2, 3 (`q·k/√2 = √2`) and 4 (`= 0`): `e^√2/(2e^√2 + 1)` each on keys
/// 2 and 3, `1/(2e^√2 + 1)` on key 4.
#[test]
fn the_gate_routes_by_the_block_means_and_breaks_ties_low() {
    let dev = device();
    let t = |rows: [[f32; 2]; 6]| Tensor::<2>::from_floats(rows, &dev).reshape([1, 1, 6, 2]);
    let q = t([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0], [0.0, 2.0], [1.0, 1.0]]);
    let k = t([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [3.0, -1.0]]);
    let v = Tensor::<2>::eye(6, &dev).reshape([1, 1, 6, 6]); // y_i is row i's weights
    let chosen = values(selected_blocks(q.clone(), k.clone(), 2, 1, true, 0).float());
    let want = [[0., 0., 0.], [0., 0., 0.], [1., 0., 0.], [1., 0., 0.], [0., 1., 0.], [1., 0., 0.]];
    assert_eq!(chosen, want.concat());
    let (y, weights) = moba_attention(q.clone(), k.clone(), v.clone(), 2, 1, true, 0);
    // The training form's gate, computed on the host, makes the same choice, the tie included.
    assert_close(moba_attention_blocks(q, k, v, 2, 1, true), y.clone(), 1e-6, "span kernel");
    let e = 2f64.sqrt().exp();
    let (w, w4) = ((e / (2.0 * e + 1.0)) as f32, (1.0 / (2.0 * e + 1.0)) as f32);
    let row4 = values(y.narrow(2, 4, 1));
    for (got, want) in row4.iter().zip([0.0, 0.0, w, w, w4, 0.0]) {
        assert!((got - want).abs() < 1e-6, "row 4: {row4:?}");
    }
    let row5 = values(weights.narrow(2, 5, 1));
    assert!(row5[0] > 0.0 && row5[1] > 0.0 && row5[2] == 0.0 && row5[3] == 0.0, "{row5:?}");
}

/// With `topk` at least the number of past blocks every query reads everything it may: plain
/// causal (or bidirectional) softmax attention.
#[test]
fn enough_blocks_is_plain_softmax_attention() {
    for causal in [true, false] {
        let [q, k, v] = qkv(13, 13, 970 + causal as u64);
        let (y, _) = moba_attention(q.clone(), k.clone(), v.clone(), 4, 3, causal, 0);
        let mask = causal.then(|| causal_mask(13, 13, 0, &q.device()));
        let want = masked_softmax(q.matmul(k.swap_dims(2, 3)) / 2.0, mask).matmul(v);
        assert_close(y, want, 1e-5, &format!("causal={causal}"));
    }
}

/// Changing the tokens from position 7 on leaves the outputs before it as they were (the gate
/// looks only at past blocks) and changes the ones after.
#[test]
fn outputs_before_a_change_do_not_see_it() {
    let dev = device();
    let m = seeded_layer::<MobaAttentionConfig>("block=3:topk=1", &MixerDims::new(16, 2, 16), &dev);
    let x = randn([2, 12, 16], 980, &dev);
    let changed = Tensor::cat(vec![x.clone().narrow(1, 0, 7), randn([2, 5, 16], 981, &dev)], 1);
    let run = |x: Tensor<3>| m.forward(x, MixContext::causal()).output;
    let (a, b) = (run(x), run(changed));
    assert_close(a.clone().narrow(1, 0, 7), b.clone().narrow(1, 0, 7), 1e-6, "past outputs");
    let later = values((a.narrow(1, 7, 5) - b.narrow(1, 7, 5)).abs().max());
    assert!(later[0] > 1e-3, "later outputs did not react: {later:?}");
}

/// Decoding through the KV cache (a prompt, single tokens, a piece) equals the forward pass,
/// with and without RoPE and grouped-query attention.
#[test]
fn step_equals_forward() {
    let dev = device();
    let rope = RotaryEncodingConfig::new(32, 8).init(&dev);
    for (spec, kv) in [("block=3:topk=1", 2), ("block=2:topk=2", 1), ("", 2)] {
        let dims = MixerDims { n_kv_heads: kv, ..MixerDims::new(16, 2, 16) };
        let m = seeded_layer::<MobaAttentionConfig>(spec, &dims, &dev);
        for rope in [None, Some(&rope)] {
            assert_decoding_equals_forward(
                &m,
                randn([2, 10, 16], 990, &dev) * 2.0,
                rope,
                &format!("moba:{spec} kv={kv} rope={}", rope.is_some()),
            );
        }
    }
}

/// Eight times the training length (`max_seq_len` 16, T = 128) with logits in the hundreds:
/// outputs, input gradients and the reported weights stay finite, causal and not, under RoPE.
#[test]
fn long_inputs_with_large_logits_stay_finite() {
    let ad = ad_device();
    let rope = RotaryEncodingConfig::new(128, 8).init(&ad);
    let m = seeded_layer::<MobaAttentionConfig>("", &MixerDims::new(16, 2, 16), &ad);
    for causal in [true, false] {
        let x = (randn([1, 128, 16], 995, &ad) * 30.0).require_grad();
        let ctx = if causal { MixContext::causal() } else { MixContext::bidirectional() };
        assert_forward_finite(&m, x, ctx.with_rope(Some(&rope)), &format!("causal={causal}"));
    }
}

/// The layer's selection: each causal query chooses `min(topk, past blocks)` past blocks; the
/// reported weights sum to one over exactly the chosen blocks' and its own block's keys, and
/// their normalised entropy (over the keys a row reads) lies in [0, 1].
#[test]
fn the_selection_and_the_diagnostics_agree() {
    let dev = device();
    let (block, topk, t) = (2, 2, 11);
    let m = seeded_layer::<MobaAttentionConfig>("block=2:topk=2", &MixerDims::new(16, 2, 16), &dev);
    let x = randn([2, t, 16], 1000, &dev);
    let ctx = MixContext::causal().with_diagnostics(true);
    let chosen = m.selection(x.clone(), ctx);
    let n_blocks = t.div_ceil(block);
    assert_eq!(chosen.dims(), [2, 2, t, n_blocks]);
    let chosen = values(chosen.float());
    let diag = m.forward(x, ctx).diagnostics.expect("diagnostics");
    let weights = values(diag.weights);
    for (r, row) in chosen.chunks(n_blocks).enumerate() {
        let i = r % t;
        let own = i / block;
        assert_eq!(row.iter().sum::<f32>(), topk.min(own) as f32, "row {r}: {row:?}");
        assert!(row[own..].iter().all(|&c| c == 0.0), "row {r} chose a future block: {row:?}");
        let w = &weights[r * t..(r + 1) * t];
        for (l, &wl) in w.iter().enumerate() {
            let read = (l / block == own && l <= i) || row[l / block] == 1.0;
            assert_eq!(wl > 0.0, read, "row {r}, key {l}: weight {wl}");
        }
        assert!(
            (w.iter().sum::<f32>() - 1.0).abs() < 1e-5,
            "row {r} sums to {}",
            w.iter().sum::<f32>()
        );
    }
    let e = values(diag.normalized_entropy);
    assert!(e.iter().all(|x| (0.0..=1.0 + 1e-5).contains(x)), "{e:?}");
}

#[test]
fn specs_parse_print_and_size() {
    let parse = |parts: &[&str]| MobaAttentionConfig::parse(parts, "moba");
    assert_eq!(parse(&[]).unwrap(), MobaAttentionConfig { block: 8, topk: 2 });
    assert_eq!(parse(&[]).unwrap().to_string(), "");
    assert_eq!(parse(&["topk=1", "block=4"]).unwrap().to_string(), "block=4:topk=1");
    assert_eq!(parse(&["topk=0"]).unwrap().topk, 0);
    for (parts, needle) in [
        (&["block=0"][..], "block"),
        (&["block=x"][..], "number"),
        (&["k=2"][..], "unknown option"),
    ] {
        let err = parse(parts).unwrap_err().to_string();
        assert!(err.contains(needle), "{parts:?}: {err}");
    }
    let dims = MixerDims { n_kv_heads: 1, ..MixerDims::new(16, 2, 16) };
    let config = MobaAttentionConfig::default();
    assert_eq!(config.decode_state_floats(&dims, 10), 2 * 10 * 8);
}

/// Not a check: forward + backward of the dense masked kernel against the fused span kernel at
/// the lengths training and `bench --only scaling` meet, for choosing the module's form. Run with
/// `cargo test --release -p attnlab-model --lib moba_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn moba_timing() {
    let time = |f: &mut dyn FnMut()| {
        f();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let start = std::time::Instant::now();
            f();
            best = best.min(start.elapsed().as_secs_f64());
        }
        best * 1e3
    };
    for (b, h, t, d, block, topk) in [
        (8, 4, 64, 32, 8, 2),
        (8, 4, 128, 32, 8, 2),
        (4, 4, 256, 32, 8, 2),
        (1, 4, 1024, 32, 8, 2),
        (1, 4, 4096, 32, 8, 2),
        (1, 4, 1024, 32, 64, 3),
        (1, 4, 4096, 32, 64, 3),
    ] {
        let ad = ad_device();
        let inputs: Vec<Tensor<4>> =
            (0..3).map(|i| randn([b, h, t, d], 50 + i, &ad).require_grad()).collect();
        let run = |fused: bool| {
            let [q, k, v] = [0, 1, 2].map(|i| inputs[i].clone());
            let y = if fused {
                moba_attention_blocks(q, k, v, block, topk, true)
            } else {
                moba_attention(q, k, v, block, topk, true, 0).0
            };
            drop(y.sum().backward());
        };
        let dense = time(&mut || run(false));
        let fused = time(&mut || run(true));
        println!(
            "[{b}, {h}, {t}, {d}] block {block} topk {topk}: dense {dense:.2} ms, blocks {fused:.2} ms"
        );
    }
}
