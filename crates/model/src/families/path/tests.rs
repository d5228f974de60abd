//! PaTH against its formula: the kernel's outputs against a naive oracle that multiplies the
//! `d × d` Householder matrices out per query and key in f64, its gradients (of q, k, v, w, β and
//! the forget gate) against central differences of that oracle, a reflection by hand, the
//! `β = 0` limit of plain causal softmax, causality, decoding, long inputs, the state size, the
//! refused bidirectional model and specs.

use super::*;
use crate::config::{ModelConfig, ModelConfigError};
use crate::heads::{causal_mask, masked_softmax};
use crate::mixer::{MixContext, SequenceMixer};
use crate::stack::MixerStack;
use crate::testing::{
    ad_device, assert_close, assert_decoding_equals_forward, assert_forward_finite, device, randn,
    seeded_layer, values,
};
use burn::nn::RotaryEncodingConfig;
use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, sigmoid};

/// The kernel's inputs as f64 values with their shapes: `q [b, H, T, d]`, `k`, `w`
/// `[b, K, T, d]`, `v [b, K, T, d_v]`, `beta [b, K, T, 1]`, `log_f [b, H, T, 1]` (zeros without
/// the gate).
#[derive(Clone)]
struct Inputs {
    dims: [usize; 6], // b, H, K, T, d, d_v
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    w: Vec<f64>,
    beta: Vec<f64>,
    log_f: Vec<f64>,
}

impl Inputs {
    fn part(&mut self, i: usize) -> &mut Vec<f64> {
        [&mut self.q, &mut self.k, &mut self.v, &mut self.w, &mut self.beta, &mut self.log_f][i]
    }
}

fn f64s(x: &Tensor<4>) -> Vec<f64> {
    values(x.clone()).into_iter().map(f64::from).collect()
}

/// The oracle, straight from the formula: for every query `i` and key `j ≤ i` the matrix
/// `P = H_i ⋯ H_{j+1}` (`H_s = I − β_s w_s w_sᵀ` of the query head's key/value head) is
/// multiplied out, `z_ij = (q_iᵀ P k_j + c_i − c_j)/√d`, then a plain softmax over `j ≤ i`.
/// Returns `y [b, H, T, d_v]` flattened.
fn naive(x: &Inputs) -> Vec<f64> {
    let [b, hq, hk, t, d, dv] = x.dims;
    let row = |data: &[f64], heads: usize, bi: usize, h: usize, i: usize, width: usize| {
        let start = ((bi * heads + h) * t + i) * width;
        data[start..start + width].to_vec()
    };
    let mut out = Vec::with_capacity(b * hq * t * dv);
    for bi in 0..b {
        for h in 0..hq {
            let g = h / (hq / hk);
            let c: Vec<f64> = (0..t)
                .scan(0.0, |sum, s| {
                    *sum += x.log_f[(bi * hq + h) * t + s];
                    Some(*sum)
                })
                .collect();
            for i in 0..t {
                let q = row(&x.q, hq, bi, h, i, d);
                let z: Vec<f64> = (0..=i)
                    .map(|j| {
                        let mut p: Vec<Vec<f64>> = (0..d)
                            .map(|r| (0..d).map(|col| f64::from(r == col)).collect())
                            .collect();
                        for s in j + 1..=i {
                            let w = row(&x.w, hk, bi, g, s, d);
                            let beta = x.beta[(bi * hk + g) * t + s];
                            let house: Vec<Vec<f64>> = (0..d)
                                .map(|r| {
                                    (0..d)
                                        .map(|col| f64::from(r == col) - beta * w[r] * w[col])
                                        .collect()
                                })
                                .collect();
                            p = (0..d)
                                .map(|r| {
                                    (0..d)
                                        .map(|col| (0..d).map(|m| house[r][m] * p[m][col]).sum())
                                        .collect()
                                })
                                .collect();
                        }
                        let k = row(&x.k, hk, bi, g, j, d);
                        let qpk: f64 = (0..d)
                            .map(|r| q[r] * (0..d).map(|col| p[r][col] * k[col]).sum::<f64>())
                            .sum();
                        (qpk + c[i] - c[j]) / (d as f64).sqrt()
                    })
                    .collect();
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = z.iter().map(|z| (z - m).exp()).collect();
                let total: f64 = e.iter().sum();
                for col in 0..dv {
                    out.push(
                        (0..=i).map(|j| e[j] / total * row(&x.v, hk, bi, g, j, dv)[col]).sum(),
                    );
                }
            }
        }
    }
    out
}

/// Gradients of `Σ naive(x) ⊙ probe` with respect to every input, by central differences in
/// f64 (step 1e-6: truncation and rounding both far below the 1e-4 the tests ask).
fn naive_grads(x: &Inputs, probe: &[f64]) -> Vec<Vec<f64>> {
    let loss = |x: &Inputs| naive(x).iter().zip(probe).map(|(y, p)| y * p).sum::<f64>();
    let h = 1e-6;
    (0..6)
        .map(|part| {
            let n = x.clone().part(part).len();
            (0..n)
                .map(|e| {
                    let (mut up, mut down) = (x.clone(), x.clone());
                    up.part(part)[e] += h;
                    down.part(part)[e] -= h;
                    (loss(&up) - loss(&down)) / (2.0 * h)
                })
                .collect()
        })
        .collect()
}

/// Fresh kernel inputs: unit `w`, `β = 2σ(·)` over most of `(0, 2)`, gates `logσ(· + 2)`.
fn fresh([b, hq, hk, t, d, dv]: [usize; 6], seed: u64) -> [Tensor<4>; 6] {
    let dev = device();
    let w = randn([b, hk, t, d], seed + 3, &dev);
    let w = w.clone() / w.powi_scalar(2).sum_dim(3).sqrt();
    [
        randn([b, hq, t, d], seed, &dev),
        randn([b, hk, t, d], seed + 1, &dev),
        randn([b, hk, t, dv], seed + 2, &dev),
        w,
        sigmoid(randn([b, hk, t, 1], seed + 4, &dev) * 2.0) * 2.0,
        log_sigmoid(randn([b, hq, t, 1], seed + 5, &dev) + 2.0),
    ]
}

/// The kernel's output and the gradient of `Σ y ⊙ probe` with respect to each input.
fn kernel_and_grads(x: &[Tensor<4>; 6], probe: &Tensor<4>, fox: bool) -> (Vec<f32>, Vec<Vec<f32>>) {
    let ad = ad_device();
    let leaves: Vec<Tensor<4>> =
        x.iter().map(|t| Tensor::from_data(t.to_data(), &ad).require_grad()).collect();
    let [q, k, v, w, beta, lf] = <[Tensor<4>; 6]>::try_from(leaves.clone()).unwrap();
    let (y, _) = path_attention((q, k, v), w, beta, fox.then_some(lf));
    let loss = (y.clone() * Tensor::from_data(probe.to_data(), &ad)).sum();
    let grads = loss.backward();
    let parts = if fox { 6 } else { 5 };
    let g = leaves[..parts].iter().map(|l| values(l.grad(&grads).expect("a gradient"))).collect();
    (values(y), g)
}

fn assert_values(got: &[f32], want: &[f64], what: &str) {
    let dev = device();
    let want: Vec<f32> = want.iter().map(|&x| x as f32).collect();
    assert_close(
        Tensor::<1>::from_floats(got, &dev),
        Tensor::<1>::from_floats(want.as_slice(), &dev),
        1e-4,
        what,
    );
}

/// The kernel against the oracle on fresh inputs: multi-head, grouped-query (two query heads per
/// key/value head) and multi-query, with and without the forget gate; outputs and the gradients
/// of q, k, v, w, β (and the gate) within 1e-4.
#[test]
fn the_kernel_matches_the_naive_oracle_in_outputs_and_gradients() {
    for (n, (dims, fox)) in
        [([2, 2, 2, 7, 4, 3], false), ([1, 4, 2, 6, 4, 3], true), ([2, 2, 1, 5, 3, 2], true)]
            .into_iter()
            .enumerate()
    {
        let what = format!("dims {dims:?} fox={fox}");
        let x = fresh(dims, 1100 + 10 * n as u64);
        let mut inputs = Inputs {
            dims,
            q: f64s(&x[0]),
            k: f64s(&x[1]),
            v: f64s(&x[2]),
            w: f64s(&x[3]),
            beta: f64s(&x[4]),
            log_f: f64s(&x[5]),
        };
        if !fox {
            inputs.log_f.iter_mut().for_each(|c| *c = 0.0);
        }
        let [b, hq, _, t, _, dv] = dims;
        let probe = randn([b, hq, t, dv], 1109 + 10 * n as u64, &device());
        let (y, grads) = kernel_and_grads(&x, &probe, fox);
        assert_values(&y, &naive(&inputs), &format!("{what}: output"));
        let want = naive_grads(&inputs, &f64s(&probe));
        for (i, (got, want)) in grads.iter().zip(&want).enumerate() {
            let name = ["q", "k", "v", "w", "β", "log f"][i];
            assert_values(got, want, &format!("{what}: gradient of {name}"));
        }
    }
}

/// By hand, one head of width 2: `w_1 = (1, 0)` at `β_1 = 2` reflects key 0 `(1, 0)` to
/// `(−1, 0)`, so query 1 `= (1, 0)` scores it `−1/√2` and key 1 `(0, 1)` `0`; with `β_1 = 1`
/// the projection removes key 0 entirely (score 0). `y_1` is row 1's weights (`v = I`).
#[test]
fn a_reflection_flips_the_key_it_passes() {
    let dev = device();
    let t = |rows: [[f32; 2]; 2]| Tensor::<2>::from_floats(rows, &dev).reshape([1, 1, 2, 2]);
    let (q, k) = (t([[0.0, 1.0], [1.0, 0.0]]), t([[1.0, 0.0], [0.0, 1.0]]));
    let (w, v) = (t([[0.0, 1.0], [1.0, 0.0]]), t([[1.0, 0.0], [0.0, 1.0]]));
    for (beta, z0) in [(2.0f32, -(0.5f64.sqrt())), (1.0, 0.0)] {
        let beta = Tensor::<1>::from_floats([0.5, beta], &dev).reshape([1, 1, 2, 1]);
        let (y, _) = path_attention((q.clone(), k.clone(), v.clone()), w.clone(), beta, None);
        let w0 = (z0.exp() / (z0.exp() + 1.0)) as f32;
        let row1 = values(y.narrow(2, 1, 1));
        assert!((row1[0] - w0).abs() < 1e-6 && (row1[1] - (1.0 - w0)).abs() < 1e-6, "{row1:?}");
    }
}

/// `β = 0` makes every `H` the identity: the kernel is plain causal softmax attention without
/// positions, bit for bit, and so is the module whose `β` bias sits at −200 (`2σ(−200)`
/// underflows to 0 in f32).
#[test]
fn beta_zero_is_plain_causal_softmax() {
    let dev = device();
    let [q, k, v, w, beta, _] = fresh([2, 2, 2, 9, 4, 3], 1200);
    let softmax = |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>| {
        let [_, _, t, d] = q.dims();
        let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt();
        masked_softmax(scores, Some(causal_mask(t, t, 0, &dev))).matmul(v)
    };
    let (y, _) = path_attention((q.clone(), k.clone(), v.clone()), w, beta.zeros_like(), None);
    assert_close(y, softmax(q, k, v), 0.0, "kernel");

    let mut m = seeded_layer::<PathAttentionConfig>("", &MixerDims::new(16, 2, 16), &dev);
    m.beta = burn::nn::Linear {
        weight: m.beta.weight.map(|w| w.zeros_like()),
        bias: m.beta.bias.map(|b| b.map(|b| b.zeros_like() - 200.0)),
    };
    let x = randn([2, 9, 16], 1201, &dev);
    let (q, k, v) = m.heads.split_grouped_rotated(x.clone(), None, 0);
    let want = m.heads.merge(softmax(q, k, v));
    assert_close(m.forward(x, MixContext::causal()).output, want, 0.0, "module");
}

/// Changing the tokens from position 7 on leaves the outputs before it as they were (the
/// convolution and the Householders look back only) and changes the ones after.
#[test]
fn outputs_before_a_change_do_not_see_it() {
    let dev = device();
    for spec in ["", "fox=true:conv=4"] {
        let m = seeded_layer::<PathAttentionConfig>(spec, &MixerDims::new(16, 2, 16), &dev);
        let x = randn([2, 12, 16], 1300, &dev);
        let changed =
            Tensor::cat(vec![x.clone().narrow(1, 0, 7), randn([2, 5, 16], 1301, &dev)], 1);
        let run = |x: Tensor<3>| m.forward(x, MixContext::causal()).output;
        let (a, b) = (run(x), run(changed));
        assert_close(a.clone().narrow(1, 0, 7), b.clone().narrow(1, 0, 7), 1e-6, spec);
        let later = values((a.narrow(1, 7, 5) - b.narrow(1, 7, 5)).abs().max());
        assert!(later[0] > 1e-3, "{spec}: later outputs did not react: {later:?}");
    }
}

/// Decoding with the rewritten keys (a prompt, single tokens, a piece) equals the forward pass,
/// with grouped-query heads, the gate, both `w` maps and no convolution; a model's RoPE is
/// ignored by both alike.
#[test]
fn step_equals_forward() {
    let dev = device();
    let rope = RotaryEncodingConfig::new(32, 8).init(&dev);
    for (spec, kv) in [("", 2), ("fox=true", 1), ("conv=0:w_rank=0", 2), ("fox=true:w_rank=4", 2)] {
        let dims = MixerDims { n_kv_heads: kv, ..MixerDims::new(16, 2, 16) };
        let m = seeded_layer::<PathAttentionConfig>(spec, &dims, &dev);
        for rope in [None, Some(&rope)] {
            assert_decoding_equals_forward(
                &m,
                randn([2, 10, 16], 1400, &dev) * 2.0,
                rope,
                &format!("path:{spec} kv={kv} rope={}", rope.is_some()),
            );
        }
    }
}

/// Eight times the training length (`max_seq_len` 16, T = 128) with inputs in the tens:
/// outputs, input gradients and the reported weights stay finite (every `H` has norm ≤ 1).
#[test]
fn long_inputs_with_large_logits_stay_finite() {
    let ad = ad_device();
    for spec in ["", "fox=true"] {
        let m = seeded_layer::<PathAttentionConfig>(spec, &MixerDims::new(16, 2, 16), &ad);
        let x = (randn([1, 128, 16], 1500, &ad) * 30.0).require_grad();
        assert_forward_finite(&m, x, MixContext::causal(), spec);
    }
}

/// The reported state is what decoding holds: after 10 tokens, the keys and values of the key/value
/// heads (softmax's cache: keys are rewritten, never added), the convolution's last inputs and,
/// under `fox`, one `c_j` per query head and cached key.
#[test]
fn the_state_size_is_softmaxs_cache_plus_the_convolution() {
    let dev = device();
    for (spec, kv) in [("", 1), ("fox=true:conv=4", 2), ("conv=0", 2)] {
        let dims = MixerDims { n_kv_heads: kv, ..MixerDims::new(16, 2, 16) };
        let m = seeded_layer::<PathAttentionConfig>(spec, &dims, &dev);
        let mut state = m.empty_state();
        m.step(randn([1, 10, 16], 1600, &dev), &mut state, None);
        let held: usize = [state.keys, state.values, state.forget]
            .into_iter()
            .flatten()
            .map(|t| t.dims().iter().product::<usize>())
            .sum::<usize>()
            + state.w_history.map_or(0, |t| t.dims().iter().product());
        let parts: Vec<&str> = spec.split(':').filter(|p| !p.is_empty()).collect();
        let config = PathAttentionConfig::parse(&parts, spec).unwrap();
        assert_eq!(config.decode_state_floats(&dims, 10), held, "{spec} kv={kv}");
    }
    let dims = MixerDims { n_kv_heads: 1, ..MixerDims::new(16, 2, 16) };
    assert_eq!(PathAttentionConfig::default().decode_state_floats(&dims, 10), 2 * 10 * 8 + 2 * 8);
}

/// A bidirectional model is refused in one line when its config is checked.
#[test]
fn a_bidirectional_model_is_refused() {
    let config = ModelConfig {
        causal: false,
        mixer: MixerStack::uniform("path".parse().unwrap()),
        ..ModelConfig::default()
    };
    let err = config.validate_shape().unwrap_err();
    assert!(matches!(err, ModelConfigError::Mixer(MixerError::Unsupported { .. })), "{err}");
    assert!(err.to_string().contains("model.causal = true") && !err.to_string().contains('\n'));
    assert!(ModelConfig { causal: true, ..config }.validate_shape().is_ok());
}

#[test]
fn specs_parse_print_and_name_their_parameters() {
    let parse = |parts: &[&str]| PathAttentionConfig::parse(parts, "path");
    assert_eq!(parse(&[]).unwrap(), PathAttentionConfig { fox: false, conv: 3, w_rank: 32 });
    assert_eq!(parse(&[]).unwrap().to_string(), "");
    assert_eq!(parse(&["w_rank=0", "fox=true"]).unwrap().to_string(), "fox=true:w_rank=0");
    for (parts, needle) in [
        (&["conv=1"][..], "short convolution"),
        (&["fox=maybe"][..], "fox"),
        (&["rank=2"][..], "unknown option"),
    ] {
        let err = parse(parts).unwrap_err().to_string();
        assert!(err.contains(needle), "{parts:?}: {err}");
    }
    let dims = MixerDims { n_kv_heads: 1, ..MixerDims::new(16, 2, 16) };
    let m = seeded_layer::<PathAttentionConfig>("fox=true:w_rank=4", &dims, &device());
    assert_eq!(m.w_down.as_ref().map(|l| l.weight.dims()), Some([16, 4]));
    assert_eq!(m.w_up.weight.dims(), [4, 8]);
    assert!(m.w_down.as_ref().unwrap().bias.is_none() && m.w_up.bias.is_none());
    assert_eq!(m.w_conv.as_ref().map(|c| c.weight.dims()), Some([3, 8]));
    assert_eq!(m.beta.weight.dims(), [16, 1]);
    assert_eq!(m.forget.as_ref().map(|f| f.weight.dims()), Some([16, 2]));
}
