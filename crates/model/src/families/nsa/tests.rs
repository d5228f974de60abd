//! NSA against its formula: the selection, the three branches and their gated sum (outputs and
//! gradients) against a naive per-query oracle in f64, a selection and a compressed output by
//! hand (including a tie), the limits that are plain causal softmax, causality, decoding, long
//! inputs, the reported selection, gates and weights, and specs.

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

/// The mean of rows `j·block .. (j + 1)·block` of head `(b, h)`.
fn block_mean(x: &F64Rows, (b, h): (usize, usize), j: usize, block: usize) -> Vec<f64> {
    let d = x.dims[3];
    (0..d)
        .map(|c| {
            (j * block..(j + 1) * block).map(|l| x.row(b, h, l)[c]).sum::<f64>() / block as f64
        })
        .collect()
}

/// What the oracle decides for one query: the complete blocks its compressed branch sees, the
/// blocks its selected branch reads and the window's keys.
struct Query {
    complete: Vec<usize>,
    selected: Vec<usize>,
    window: Vec<usize>,
}

/// The blocks of query `i` (at `q_offset + i`) of head `(b, h)`, from the formula: the blocks
/// that end at or before it; the importance of each past block, its compressed probability
/// summed over the `group` query heads sharing `h`'s key/value head; the own block and the
/// `topk − 1` most important past blocks (ties: lower first); the last `window` keys.
fn naive_query(
    q: &F64Rows,
    k: &F64Rows,
    (b, h, i): (usize, usize, usize),
    pattern: NsaPattern,
    group: usize,
    q_offset: usize,
) -> Query {
    let NsaPattern { block, topk, window } = pattern;
    let (d, t) = (q.dims[3], q_offset + i);
    let complete: Vec<usize> =
        (0..k.dims[2] / block).filter(|j| (j + 1) * block <= t + 1).collect();
    let probs = |head: usize| -> Vec<f64> {
        let z: Vec<f64> = complete
            .iter()
            .map(|&j| {
                dot64(q.row(b, head, i), &block_mean(k, (b, head), j, block)) / (d as f64).sqrt()
            })
            .collect();
        softmax64(&z)
    };
    let own = t / block;
    let first = h / group * group;
    let mut importance: Vec<(usize, f64)> = (0..own).map(|j| (j, 0.0)).collect();
    for head in first..first + group {
        for (&j, p) in complete.iter().zip(probs(head)) {
            if j < own {
                importance[j].1 += p;
            }
        }
    }
    importance.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    let mut selected: Vec<usize> =
        importance.into_iter().take(topk - 1).map(|(j, _)| j).chain([own]).collect();
    selected.sort();
    let window = ((t + 1).saturating_sub(window)..=t).collect();
    Query { complete, selected, window }
}

/// The oracle's decisions, `[b][h][i]`.
fn naive_queries(
    q: &Tensor<4>,
    k: &Tensor<4>,
    pattern: NsaPattern,
    group: usize,
    q_offset: usize,
) -> Vec<Vec<Vec<Query>>> {
    let (qv, kv) = (F64Rows::of(q), F64Rows::of(k));
    let [b, h, t, _] = q.dims();
    (0..b)
        .map(|bi| {
            (0..h)
                .map(|hi| {
                    (0..t)
                        .map(|i| naive_query(&qv, &kv, (bi, hi, i), pattern, group, q_offset))
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The selected branch's keys: the selected blocks' keys up to the query.
fn selected_keys(query: &Query, t: usize, block: usize) -> Vec<usize> {
    (0..=t).filter(|l| query.selected.contains(&(l / block))).collect()
}

/// NSA in f64 on the oracle's decisions: per query the three softmaxes, summed under the gates.
fn naive_output(
    x: &[Tensor<4>],
    decisions: &[Vec<Vec<Query>>],
    block: usize,
    q_offset: usize,
) -> Tensor<4> {
    let [q, k, v, g] = [0, 1, 2, 3].map(|n| F64Rows::of(&x[n]));
    let [bs, hs, ts, d] = q.dims;
    assert_eq!((decisions.len(), decisions[0].len()), (bs, hs), "decisions per batch row and head");
    let dv = v.dims[3];
    let scale = (d as f64).sqrt();
    let attend = |(b, h, i): (usize, usize, usize), keys: &[Vec<f64>], vals: &[Vec<f64>]| {
        let z: Vec<f64> = keys.iter().map(|key| dot64(q.row(b, h, i), key) / scale).collect();
        let p = softmax64(&z);
        (0..dv).map(|c| p.iter().zip(vals).map(|(p, v)| p * v[c]).sum::<f64>()).collect::<Vec<_>>()
    };
    let mut out = Vec::with_capacity(bs * hs * ts * dv);
    for (b, heads) in decisions.iter().enumerate() {
        for (h, rows) in heads.iter().enumerate() {
            for (i, query) in rows.iter().enumerate() {
                let t = q_offset + i;
                let cmp = if query.complete.is_empty() {
                    vec![0.0; dv]
                } else {
                    let means = |x: &F64Rows| -> Vec<Vec<f64>> {
                        query.complete.iter().map(|&j| block_mean(x, (b, h), j, block)).collect()
                    };
                    attend((b, h, i), &means(&k), &means(&v))
                };
                let rows = |x: &F64Rows, ls: &[usize]| -> Vec<Vec<f64>> {
                    ls.iter().map(|&l| x.row(b, h, l).to_vec()).collect()
                };
                let sel = selected_keys(query, t, block);
                let slc = attend((b, h, i), &rows(&k, &sel), &rows(&v, &sel));
                let win = attend((b, h, i), &rows(&k, &query.window), &rows(&v, &query.window));
                let gate = g.row(b, h, i);
                out.extend(
                    (0..dv)
                        .map(|c| (gate[0] * cmp[c] + gate[1] * slc[c] + gate[2] * win[c]) as f32),
                );
            }
        }
    }
    Tensor::<1>::from_floats(out.as_slice(), &device()).reshape([bs, hs, ts, dv])
}

/// The same rows as tensor operations on the oracle's decisions (for gradients): per query the
/// block means by `mean_dim`, the keys and values gathered, three softmaxes, the gates.
fn gathered_rows(
    x: &[Tensor<4>],
    decisions: &[Vec<Vec<Query>>],
    block: usize,
    q_offset: usize,
) -> Tensor<4> {
    let (q, k, v, g) = (&x[0], &x[1], &x[2], &x[3]);
    let [_, _, _, d] = q.dims();
    let dv = v.dims()[3];
    let dev = q.device();
    let part = |t: &Tensor<4>, b: usize, h: usize| t.clone().narrow(0, b, 1).narrow(1, h, 1);
    let attend = |qi: Tensor<4>, keys: Tensor<4>, vals: Tensor<4>| {
        softmax(qi.matmul(keys.swap_dims(2, 3)) / (d as f32).sqrt(), 3).matmul(vals)
    };
    let gather = |t: Tensor<4>, ls: &[usize]| {
        let ids: Vec<i64> = ls.iter().map(|&l| l as i64).collect();
        t.select(2, Tensor::<1, Int>::from_data(TensorData::new(ids, [ls.len()]), &dev))
    };
    let batches = decisions.iter().enumerate().map(|(b, heads)| {
        let heads = heads.iter().enumerate().map(|(h, rows)| {
            let rows = rows.iter().enumerate().map(|(i, query)| {
                let t = q_offset + i;
                let (kh, vh) = (part(k, b, h), part(v, b, h));
                let qi = part(q, b, h).narrow(2, i, 1);
                let gate = |n: usize| part(g, b, h).narrow(2, i, 1).narrow(3, n, 1);
                let cmp = if query.complete.is_empty() {
                    Tensor::<4>::zeros([1, 1, 1, dv], &dev)
                } else {
                    let means = |x: &Tensor<4>| {
                        let blocks = query
                            .complete
                            .iter()
                            .map(|&j| x.clone().narrow(2, j * block, block).mean_dim(2));
                        Tensor::cat(blocks.collect(), 2)
                    };
                    attend(qi.clone(), means(&kh), means(&vh))
                };
                let sel = selected_keys(query, t, block);
                let slc = attend(qi.clone(), gather(kh.clone(), &sel), gather(vh.clone(), &sel));
                let win = attend(qi, gather(kh, &query.window), gather(vh, &query.window));
                cmp * gate(0) + slc * gate(1) + win * gate(2)
            });
            Tensor::cat(rows.collect(), 2)
        });
        Tensor::cat(heads.collect(), 1)
    });
    Tensor::cat(batches.collect(), 0)
}

/// Queries, keys and values for `heads` query heads over `heads / group` key/value heads
/// (repeated, as the layer hands them to the kernel), and gates in (0, 1).
fn inputs(heads: usize, group: usize, t_q: usize, t_k: usize, seed: u64) -> [Tensor<4>; 4] {
    let d = device();
    let kv = heads / group;
    let repeat = |x: Tensor<4>| {
        let [b, _, t, w] = x.dims();
        x.reshape([b, kv, 1, t, w]).expand([b, kv, group, t, w]).reshape([b, heads, t, w])
    };
    [
        randn([2, heads, t_q, 4], seed, &d) * 1.5,
        repeat(randn([2, kv, t_k, 4], seed + 1, &d)),
        repeat(randn([2, kv, t_k, 3], seed + 2, &d)),
        burn::tensor::activation::sigmoid(randn([2, heads, t_q, 3], seed + 3, &d)),
    ]
}

/// The kernel against the oracle on fresh inputs: the selection exactly, the output against
/// f64, the gradients (q, k, v, gates) against the gathered rows. 13 keys leave the last block
/// short; one case shares the selection across 2 query heads per key/value head; the last case's
/// queries sit at positions 8..13 over all 13 keys (a decoding step's layout).
#[test]
fn the_kernel_matches_the_naive_oracle_in_selection_outputs_and_gradients() {
    let cases = [
        // (block, topk, window, heads, group, queries, q_offset)
        (4, 2, 5, 2, 1, 13, 0),
        (3, 2, 3, 2, 1, 13, 0),
        (2, 3, 4, 4, 2, 13, 0),
        (4, 1, 16, 2, 1, 13, 0),
        (3, 3, 2, 2, 2, 5, 8),
    ];
    let mut routed_away = 0;
    for (n, (block, topk, window, heads, group, t_q, offset)) in cases.into_iter().enumerate() {
        let pattern = NsaPattern { block, topk, window };
        let what = format!("{pattern:?} heads={heads} group={group} offset={offset}");
        let seed = 1100 + 10 * n as u64;
        let x = inputs(heads, group, t_q, 13, seed);
        let decisions = naive_queries(&x[0], &x[1], pattern, group, offset);
        let branches =
            nsa_branches(x[0].clone(), x[1].clone(), x[2].clone(), pattern, group, offset);
        let chosen = values(branches.selection.float());
        let n_blocks = 13usize.div_ceil(block);
        for (r, query) in decisions.iter().flatten().flatten().enumerate() {
            let want: Vec<f32> = (0..n_blocks)
                .map(|j| if query.selected.contains(&j) { 1.0 } else { 0.0 })
                .collect();
            assert_eq!(
                &chosen[r * n_blocks..(r + 1) * n_blocks],
                want.as_slice(),
                "{what}: row {r}"
            );
            // A query that skipped its most recent past block was routed by the importance.
            let own = (offset + r % t_q) / block;
            if topk >= 2 && own >= 2 && !query.selected.contains(&(own - 1)) {
                routed_away += 1;
            }
        }
        let (fast, fast_grads) = output_and_grads(&x, seed + 5, |x| {
            let [q, k, v, g] = [0, 1, 2, 3].map(|n| x[n].clone());
            nsa_attention(q, k, v, g, pattern, group, offset).0
        });
        assert_close(
            fast,
            naive_output(&x, &decisions, block, offset),
            1e-4,
            &format!("{what}: output"),
        );
        let (_, slow_grads) =
            output_and_grads(&x, seed + 5, |x| gathered_rows(&x, &decisions, block, offset));
        for (i, (f, s)) in fast_grads.into_iter().zip(slow_grads).enumerate() {
            assert_close(f, s, 1e-4, &format!("{what}: gradient {i}"));
        }
    }
    assert!(
        routed_away >= 5,
        "the importance skipped the most recent block only {routed_away} times"
    );
}

/// The span-kernel form (training's: all three branches on the kernel, the selection on the
/// host) against the dense kernel on fresh inputs: outputs and the gradients of q, k, v and the
/// gates; a short last block, shared selections, a window wider than the sequence and one
/// narrower than a block, no complete block.
#[test]
fn the_span_kernel_form_equals_the_dense_kernel() {
    let cases = [
        // (block, topk, window, heads, group, length)
        (4, 2, 5, 2, 1, 13),
        (3, 2, 3, 2, 1, 13),
        (2, 3, 4, 4, 2, 16),
        (4, 1, 16, 2, 1, 13),
        (8, 3, 2, 2, 2, 40),
        // No block complete yet: the compressed branch is zero.
        (16, 2, 4, 2, 1, 13),
    ];
    for (n, (block, topk, window, heads, group, t)) in cases.into_iter().enumerate() {
        let pattern = NsaPattern { block, topk, window };
        let what = format!("{pattern:?} heads={heads} group={group} t={t}");
        let x = inputs(heads, group, t, t, 1900 + 10 * n as u64);
        let seed = 1905 + 10 * n as u64;
        let (dense, dg) = output_and_grads(&x, seed, |x| {
            let [q, k, v, g] = [0, 1, 2, 3].map(|n| x[n].clone());
            nsa_attention(q, k, v, g, pattern, group, 0).0
        });
        let (spans, sg) = output_and_grads(&x, seed, |x| {
            let [q, k, v, g] = [0, 1, 2, 3].map(|n| x[n].clone());
            nsa_attention_spans(q, k, v, g, pattern, group)
        });
        assert_close(spans, dense, 1e-5, &format!("{what}: output"));
        for (i, (s, d)) in sg.into_iter().zip(dg).enumerate() {
            assert_close(s, d, 1e-5, &format!("{what}: gradient {i}"));
        }
    }
}

/// By hand, `block=2`, `topk=2`, one head: keys 0..4 are equal, so blocks 0 and 1 have the same
/// mean, the same compressed probability and tie: queries 4 and 5 take block 0, the lower.
/// Queries 0 and 1 have no past block (own block only), 2 and 3 block 0. Query 0 sees no
/// complete block (compressed output 0); query 1 sees block 0 alone (compressed output its mean
/// value `(v_0 + v_1)/2`).
#[test]
fn the_selection_follows_the_importance_and_breaks_ties_low() {
    let dev = device();
    let same = randn([1, 1, 1, 4], 1200, &dev).expand([1, 1, 4, 4]);
    let k = Tensor::cat(vec![same, randn([1, 1, 2, 4], 1201, &dev)], 2);
    let q = randn([1, 1, 6, 4], 1202, &dev);
    let v = randn([1, 1, 6, 3], 1203, &dev);
    let pattern = NsaPattern { block: 2, topk: 2, window: 2 };
    let branches = nsa_branches(q, k, v.clone(), pattern, 1, 0);
    let want = [[1., 0., 0.], [1., 0., 0.], [1., 1., 0.], [1., 1., 0.], [1., 0., 1.], [1., 0., 1.]];
    assert_eq!(values(branches.selection.float()), want.concat());
    let cmp = values(branches.compressed);
    assert_eq!(&cmp[0..3], &[0.0; 3], "query 0 has no complete block");
    let mean = values((v.clone().narrow(2, 0, 1) + v.narrow(2, 1, 1)) / 2.0);
    for (got, want) in cmp[3..6].iter().zip(&mean) {
        assert!((got - want).abs() < 1e-6, "query 1: {cmp:?} vs {mean:?}");
    }
}

/// `topk` at least the number of blocks makes the selected branch plain causal softmax; a
/// window at least the length makes the window branch plain causal softmax (both exactly the
/// same masks, so to rounding).
#[test]
fn enough_blocks_or_window_is_plain_causal_softmax() {
    let [q, k, v, _] = inputs(2, 1, 13, 13, 1210);
    let want = masked_softmax(
        q.clone().matmul(k.clone().swap_dims(2, 3)) / 2.0,
        Some(causal_mask(13, 13, 0, &q.device())),
    )
    .matmul(v.clone());
    let pattern = NsaPattern { block: 4, topk: 4, window: 13 };
    let branches = nsa_branches(q, k, v, pattern, 1, 0);
    assert_close(branches.selected, want.clone(), 1e-5, "selected branch");
    assert_close(branches.window, want, 1e-5, "window branch");
}

/// Changing the tokens from position 7 on leaves the outputs before it as they were and changes
/// the ones after.
#[test]
fn outputs_before_a_change_do_not_see_it() {
    let dev = device();
    let dims = MixerDims::new(16, 2, 16);
    let m = seeded_layer::<NsaAttentionConfig>("block=3:topk=2:window=4", &dims, &dev);
    let x = randn([2, 12, 16], 1220, &dev);
    let changed = Tensor::cat(vec![x.clone().narrow(1, 0, 7), randn([2, 5, 16], 1221, &dev)], 1);
    let run = |x: Tensor<3>| m.forward(x, MixContext::causal()).output;
    let (a, b) = (run(x), run(changed));
    assert_close(a.clone().narrow(1, 0, 7), b.clone().narrow(1, 0, 7), 1e-6, "past outputs");
    let later = values((a.narrow(1, 7, 5) - b.narrow(1, 7, 5)).abs().max());
    assert!(later[0] > 1e-3, "later outputs did not react: {later:?}");
}

/// Decoding through the KV cache (a prompt, single tokens, a piece) equals the forward pass,
/// with and without RoPE, grouped-query attention and Qwen3's q/k norm.
#[test]
fn step_equals_forward() {
    let dev = device();
    let rope = RotaryEncodingConfig::new(32, 8).init(&dev);
    for (spec, kv, norm) in [
        ("block=3:topk=2:window=4", 2, None),
        ("block=2:topk=3:window=3", 1, Some(1e-6)),
        ("", 2, None),
    ] {
        let dims = MixerDims { n_kv_heads: kv, qk_head_norm: norm, ..MixerDims::new(16, 2, 16) };
        let m = seeded_layer::<NsaAttentionConfig>(spec, &dims, &dev);
        for rope in [None, Some(&rope)] {
            assert_decoding_equals_forward(
                &m,
                randn([2, 10, 16], 1230, &dev) * 2.0,
                rope,
                &format!("nsa:{spec} kv={kv} rope={}", rope.is_some()),
            );
        }
    }
}

/// Eight times the training length (`max_seq_len` 16, T = 128) with logits in the hundreds:
/// outputs, input gradients and the reported weights stay finite, under RoPE.
#[test]
fn long_inputs_with_large_logits_stay_finite() {
    let ad = ad_device();
    let rope = RotaryEncodingConfig::new(128, 8).init(&ad);
    let m = seeded_layer::<NsaAttentionConfig>("", &MixerDims::new(16, 2, 16), &ad);
    let x = (randn([1, 128, 16], 1240, &ad) * 30.0).require_grad();
    assert_forward_finite(&m, x, MixContext::causal().with_rope(Some(&rope)), "nsa at 8x");
}

/// The layer's selection, gates and weights agree: each query reads `min(topk, own + 1)` blocks,
/// its own among them and none in its future, the two heads of a key/value head the same ones;
/// the reported weights sit on exactly the keys some branch reads and sum, per row, to the sum
/// of its gates (the compressed gate only once a block is complete).
#[test]
fn the_selection_gates_and_diagnostics_agree() {
    let dev = device();
    let (block, topk, window, t) = (2, 2, 3, 11);
    let dims = MixerDims { n_kv_heads: 1, ..MixerDims::new(16, 2, 16) };
    let m = seeded_layer::<NsaAttentionConfig>("block=2:topk=2:window=3", &dims, &dev);
    let x = randn([2, t, 16], 1250, &dev);
    let ctx = MixContext::causal().with_diagnostics(true);
    let chosen = m.selection(x.clone(), ctx);
    let n_blocks = t.div_ceil(block);
    assert_eq!(chosen.dims(), [2, 2, t, n_blocks]);
    let chosen = values(chosen.float());
    let gates = values(m.gates(x.clone()));
    let weights = values(m.forward(x, ctx).diagnostics.expect("diagnostics").weights);
    for (r, row) in chosen.chunks(n_blocks).enumerate() {
        let i = r % t;
        let own = i / block;
        assert_eq!(row.iter().sum::<f32>(), topk.min(own + 1) as f32, "row {r}: {row:?}");
        assert!(row[own] == 1.0 && row[own + 1..].iter().all(|&c| c == 0.0), "row {r}: {row:?}");
        let other_head = (r / t) ^ 1;
        assert_eq!(row, &chosen[(other_head * t + i) * n_blocks..][..n_blocks], "row {r}: shared");
        let w = &weights[r * t..(r + 1) * t];
        for (l, &wl) in w.iter().enumerate() {
            let compressed = l < (i + 1) / block * block;
            let read = l <= i && (compressed || row[l / block] == 1.0 || l + window > i);
            assert_eq!(wl > 0.0, read, "row {r}, key {l}: weight {wl}");
        }
        let g = &gates[r * 3..r * 3 + 3];
        let want = if i + 1 >= block { g[0] } else { 0.0 } + g[1] + g[2];
        assert!(
            (w.iter().sum::<f32>() - want).abs() < 1e-5,
            "row {r}: {} vs {want}",
            w.iter().sum::<f32>()
        );
    }
}

#[test]
fn specs_parse_print_and_size() {
    let parse = |parts: &[&str]| NsaAttentionConfig::parse(parts, "nsa");
    assert_eq!(parse(&[]).unwrap(), NsaAttentionConfig { block: 8, topk: 2, window: 16 });
    assert_eq!(parse(&[]).unwrap().to_string(), "");
    assert_eq!(parse(&["window=8", "topk=2", "block=4"]).unwrap().to_string(), "block=4:window=8");
    for (parts, needle) in [
        (&["block=0"][..], "block"),
        (&["topk=0"][..], "own block"),
        (&["window=0"][..], "window"),
        (&["block=x"][..], "number"),
        (&["k=2"][..], "unknown option"),
    ] {
        let err = parse(parts).unwrap_err().to_string();
        assert!(err.contains(needle), "{parts:?}: {err}");
    }
    let dims = MixerDims { n_kv_heads: 1, ..MixerDims::new(16, 2, 16) };
    let config = NsaAttentionConfig::default();
    assert_eq!(config.decode_state_floats(&dims, 10), 2 * 10 * 8);
    assert!(config.validate(&dims).is_ok());
    let err = config.validate(&MixerDims { causal: false, ..dims }).unwrap_err().to_string();
    assert!(err.contains("bidirectional") && err.contains("model.causal = true"), "{err}");
}
