//! The chunked kernel against the token kernel and an f64 recurrence, and the timings that
//! chose [`super::block_size`].

use super::super::gated_recurrence as tokens;
use super::*;
use crate::testing::uniform_values;

/// Uniform values in `[0, 1)`.
fn uniform(n: usize, seed: u64) -> Vec<f32> {
    uniform_values(n, seed, (0.0, 1.0))
}

/// Roughly normal values (a sum of four uniforms, centred and scaled to unit variance).
fn normal(n: usize, seed: u64) -> Vec<f32> {
    let u = uniform(4 * n, seed);
    u.chunks_exact(4).map(|c| (c.iter().sum::<f32>() - 2.0) * 3f32.sqrt()).collect()
}

struct Case {
    dims: Dims,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g: Vec<f32>,
    beta: Vec<f32>,
}

/// Unit keys (as the layer's L2 norm makes them), log gates `−scale·(0..2)`, `β` in
/// `[lo, hi)`. Per-channel gates (`gate_width = d_k`) take channel `c`'s scale times
/// `(c mod 3)/2`: no decay, half and full side by side.
fn case(dims: Dims, scale: f32, (lo, hi): (f32, f32), seed: u64) -> Case {
    let (n, dk, dv, gw) = (dims.bh * dims.seq, dims.dk, dims.dv, dims.gate_width);
    let channel = |i: usize| if gw == 1 { 1.0 } else { (i % gw % 3) as f32 / 2.0 };
    let mut k = normal(n * dk, seed + 1);
    for row in k.chunks_exact_mut(dk) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        row.iter_mut().for_each(|x| *x /= norm);
    }
    Case {
        dims,
        q: normal(n * dk, seed),
        k,
        v: normal(n * dv, seed + 2),
        g: uniform(n * gw, seed + 3)
            .iter()
            .enumerate()
            .map(|(i, u)| -2.0 * scale * channel(i) * u)
            .collect(),
        beta: if dims.delta {
            uniform(n, seed + 4).iter().map(|u| lo + (hi - lo) * u).collect()
        } else {
            Vec::new()
        },
    }
}

/// The recurrence token by token in f64: outputs and the state at every chunk's start.
fn naive(c: &Case) -> (Vec<f64>, Vec<f64>) {
    let Dims { bh, seq, dk, dv, chunk, delta, gate_width: gw } = c.dims;
    let (mut y, mut cps) = (Vec::new(), Vec::new());
    for p in 0..bh {
        let mut s = vec![0f64; dk * dv];
        for t in 0..seq {
            if t % chunk == 0 {
                cps.extend_from_slice(&s);
            }
            let r = p * seq + t;
            let (q, k) = (&c.q[r * dk..(r + 1) * dk], &c.k[r * dk..(r + 1) * dk]);
            let v = &c.v[r * dv..(r + 1) * dv];
            for (i, row) in s.chunks_exact_mut(dv).enumerate() {
                let a = (c.g[r * gw + i % gw] as f64).exp();
                row.iter_mut().for_each(|e| *e *= a);
            }
            let u: Vec<f64> = (0..dv)
                .map(|j| {
                    if !delta {
                        return v[j] as f64;
                    }
                    let read: f64 = (0..dk).map(|i| s[i * dv + j] * k[i] as f64).sum();
                    c.beta[r] as f64 * (v[j] as f64 - read)
                })
                .collect();
            for i in 0..dk {
                for j in 0..dv {
                    s[i * dv + j] += k[i] as f64 * u[j];
                }
            }
            y.extend((0..dv).map(|j| (0..dk).map(|i| s[i * dv + j] * q[i] as f64).sum::<f64>()));
        }
    }
    (y, cps)
}

/// The largest `|a − b| / max(1, |b|)`.
fn worst(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&a, &b)| (a as f64 - b).abs() / b.abs().max(1.0)).fold(0.0, f64::max)
}

/// Lengths that are and are not a multiple of the checkpoint interval, blocks that divide it,
/// do not, and exceed it, `d_k ≠ d_v`, no gate, weak, moderate and strong decay (`e^{−20}` a
/// token), `β` near 0, in (0, 1) and near 1, and plain accumulation (`decay`):
/// `(dims, block, gate scale, β range)`. Then the same with per-channel gates (`delta:kda`,
/// GLA), where a scale of 10 (down to `e^{−20}` a token) cuts blocks short of `block`.
fn cases() -> [(Dims, usize, f32, (f32, f32)); 11] {
    let dims =
        |bh, seq, dk, dv, chunk, delta| Dims { bh, seq, dk, dv, gate_width: 1, delta, chunk };
    let channels = |bh, seq, dk, dv, chunk, delta| Dims {
        gate_width: dk,
        ..dims(bh, seq, dk, dv, chunk, delta)
    };
    [
        (channels(3, 37, 8, 12, 16, true), 8, 0.3, (0.0, 1.0)),
        (channels(2, 40, 16, 16, 20, true), 7, 10.0, (0.95, 1.0)),
        (channels(2, 64, 32, 32, 64, true), 16, 0.05, (0.0, 1.0)),
        (channels(2, 30, 8, 8, 8, false), 4, 0.3, (0.0, 1.0)),
        (channels(1, 33, 12, 5, 11, false), 64, 10.0, (0.0, 1.0)),
        (dims(3, 37, 8, 12, 16, true), 8, 0.3, (0.0, 1.0)),
        (dims(2, 40, 16, 16, 20, true), 7, 10.0, (0.95, 1.0)),
        (dims(2, 33, 12, 5, 11, true), 64, 1e-3, (0.0, 0.05)),
        (dims(2, 64, 32, 32, 64, true), 16, 0.0, (0.0, 1.0)),
        (dims(2, 30, 8, 8, 8, false), 4, 0.3, (0.0, 1.0)),
        (dims(1, 19, 6, 10, 19, false), 19, 0.0, (0.0, 1.0)),
    ]
}

/// Chunked and token kernels against the f64 recurrence on [`cases`], outputs and checkpoints.
#[test]
fn chunked_forward_matches_the_token_kernel_and_the_naive_recurrence() {
    for (seed, (d, block, scale, range)) in cases().into_iter().enumerate() {
        let c = case(d, scale, range, 100 + 10 * seed as u64);
        let (y, cps) = naive(&c);
        let (yc, sc) = forward(d, block, &c.q, &c.k, &c.v, &c.g, &c.beta);
        let (yt, st) = tokens::forward(d, &c.q, &c.k, &c.v, &c.g, &c.beta);
        let what = format!("{d:?} block {block} gate scale {scale} β {range:?}");
        for (name, got) in [
            ("chunked y", worst(&yc, &y)),
            ("token y", worst(&yt, &y)),
            ("chunked checkpoints", worst(&sc.checkpoints, &cps)),
            ("token checkpoints", worst(&st.checkpoints, &cps)),
        ] {
            assert!(got <= 2e-5, "{what}: {name} off by {got:e}");
        }
    }
}

/// The largest `|a − b| / max(1, |b|)` of two f32 slices.
fn worst32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&a, &b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f32::max)
}

/// The chunked backward pass against the token kernel's on [`cases`], from the same
/// checkpoints and a fresh output gradient: `dq`, `dk`, `dv`, `dg` and `dβ`.
#[test]
fn chunked_backward_matches_the_token_kernel() {
    for (seed, (d, block, scale, range)) in cases().into_iter().enumerate() {
        let c = case(d, scale, range, 300 + 10 * seed as u64);
        let dy = normal(d.bh * d.seq * d.dv, 301 + 10 * seed as u64);
        let (_, saved) = tokens::forward(d, &c.q, &c.k, &c.v, &c.g, &c.beta);
        let want = tokens::backward(d, &c.q, &c.k, &c.v, &c.g, &c.beta, &saved, &dy);
        let got = backward(d, block, &c.q, &c.k, &c.v, &c.g, &c.beta, &saved, &dy);
        let what = format!("{d:?} block {block} gate scale {scale} β {range:?}");
        for (name, got, want) in [
            ("dq", &got.dq, &want.dq),
            ("dk", &got.dk, &want.dk),
            ("dv", &got.dv, &want.dv),
            ("dg", &got.dg, &want.dg),
            ("dβ", &got.dbeta, &want.dbeta),
        ] {
            let err = worst32(got, want);
            assert!(err <= 1e-4, "{what}: {name} off by {err:e}");
        }
    }
}

/// Not a check: the forward and backward passes of each kernel (chunked at several block sizes)
/// on the shapes training meets, for choosing [`block_size`]. Run with
/// `cargo test --release -p attnlab-model --lib chunked_delta_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn chunked_delta_timing() {
    let time = |f: &mut dyn FnMut()| {
        f();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            for _ in 0..10 {
                f();
            }
            best = best.min(start.elapsed().as_secs_f64() / 10.0);
        }
        best * 1e6
    };
    let shapes = [
        (48, 64, 32, 64),
        (64, 32, 32, 32),
        (8, 1024, 32, 64),
        (24, 256, 64, 64),
        (48, 64, 16, 64),
        (48, 64, 32, 4),
    ];
    let kinds = [(true, 1), (false, 1), (true, 0), (false, 0)];
    for ((delta, gates), (bh, seq, d, chunk)) in
        kinds.into_iter().flat_map(|k| shapes.into_iter().map(move |s| (k, s)))
    {
        // `gates` 0: one per key channel.
        let gate_width = if gates == 0 { d } else { gates };
        let dims = Dims { bh, seq, dk: d, dv: d, gate_width, delta, chunk };
        let c = case(dims, 0.3, (0.0, 1.0), 7);
        let dy = normal(bh * seq * d, 9);
        let (_, saved) = tokens::forward(dims, &c.q, &c.k, &c.v, &c.g, &c.beta);
        let fwd = time(&mut || drop(tokens::forward(dims, &c.q, &c.k, &c.v, &c.g, &c.beta)));
        let bwd = time(&mut || {
            drop(tokens::backward(dims, &c.q, &c.k, &c.v, &c.g, &c.beta, &saved, &dy))
        });
        let mut line = format!(
            "delta {delta} gates {gate_width} [{bh}, {seq}, {d}, {chunk}]: tokens {fwd:.0} / {bwd:.0} µs; chunked"
        );
        for block in [8, 12, 16, 32] {
            let f = time(&mut || drop(forward(dims, block, &c.q, &c.k, &c.v, &c.g, &c.beta)));
            let b = time(&mut || {
                drop(backward(dims, block, &c.q, &c.k, &c.v, &c.g, &c.beta, &saved, &dy))
            });
            line += &format!(" {block}: {f:.0} / {b:.0}");
        }
        eprintln!("{line}");
    }
}

/// Per-channel blocks: cut where one channel's log decay within the block would pass
/// `channels::SPAN`, a gate wider than that alone in its block, and full blocks elsewhere.
#[test]
fn per_channel_blocks_stop_before_a_factor_could_overflow() {
    use super::channels::blocks::{SPAN, partition};
    let dims = Dims { bh: 1, seq: 12, dk: 2, dv: 1, gate_width: 2, delta: true, chunk: 12 };
    // Channel 1 decays by 7 a token from token 4 on, and by 40 at token 9; channel 0 never.
    let mut g = vec![0.0; 24];
    (4..12).for_each(|t| g[2 * t + 1] = -7.0);
    g[2 * 9 + 1] = -40.0;
    // From token 0 the decays after the first token add up to 7, 14, 21, 28 (tokens 4-7);
    // token 8 would make 35 > SPAN: cut. From 8, token 9 alone adds 40: cut again. From 9
    // (its −40 now in the reference b_0, which the relative factors cancel) 7 and 14 fit.
    assert_eq!(partition(dims, &g, 0, 12, 16), [(0, 8), (8, 1), (9, 3)]);
    // A checkpoint boundary and the block size cut too.
    assert_eq!(partition(dims, &g, 0, 6, 16), [(0, 6)]);
    assert_eq!(partition(dims, &g, 0, 12, 3), [(0, 3), (3, 3), (6, 3), (9, 3)]);
    assert!((28.0..35.0).contains(&SPAN) && SPAN < 40.0);
}
