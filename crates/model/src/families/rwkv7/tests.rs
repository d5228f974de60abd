//! The naive RWKV-7 layer (plain f64 loops straight from the formula, every matrix explicit) and
//! the tests against it: the recurrence's outputs and gradients against the explicit transition
//! matrix, the chunked form against the recurrence, the module against the naive layer (causal and bidirectional), decoding, causality,
//! NaN-safety at 8× the training length, the decoding state's size, specs and initial values.

use super::*;
use crate::mixer::{MixContext, SequenceMixer};
use crate::testing::{
    ad_device, assert_close, assert_decoding_equals_forward, assert_forward_finite,
    assert_output_and_grads_close, assert_values_close, device, output_and_grads, randn,
    seeded_layer, values,
};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

fn dims() -> MixerDims {
    MixerDims { seed: 5, layer: 1, n_layers: 3, bias: true, ..MixerDims::new(8, 2, 16) }
}

/// Every parameter redrawn `N(0, 0.5²)` (fla's init zeroes `W_o` and the LoRAs' first maps,
/// which would leave most of the layer untested).
fn randomized(m: Rwkv7Attention, seed: u64) -> Rwkv7Attention {
    struct Redraw(u64);
    impl ModuleMapper for Redraw {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            self.0 += 1;
            let seed = self.0;
            p.map(|t| randn(t.dims(), seed, &t.device()) * 0.5)
        }
    }
    m.map(&mut Redraw(seed))
}

fn layer(spec: &str) -> Rwkv7Attention {
    randomized(seeded_layer::<Rwkv7AttentionConfig>(spec, &dims(), &device()), 40)
}

fn flat(t: Tensor<2>) -> Vec<f64> {
    values(t).into_iter().map(f64::from).collect()
}
fn flat1(t: Tensor<1>) -> Vec<f64> {
    values(t).into_iter().map(f64::from).collect()
}

/// `x W + b` for a Burn weight `[d_in, d_out]`.
fn affine(x: &[f64], w: &[f64], b: Option<&[f64]>, d_out: usize) -> Vec<f64> {
    (0..d_out)
        .map(|j| {
            let s: f64 = x.iter().enumerate().map(|(i, xi)| xi * w[i * d_out + j]).sum();
            s + b.map_or(0.0, |b| b[j])
        })
        .collect()
}

fn linear_of(l: &burn::nn::Linear) -> (Vec<f64>, Option<Vec<f64>>) {
    (flat(l.weight.val()), l.bias.as_ref().map(|b| flat1(b.val())))
}

fn sig(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The layer on one sequence `x` (`t × d`, row-major), token by token from the formula in the
/// family's notes: `S` per head a `d_k × d_v` matrix updated as
/// `S ← diag(w) S + β (αᵀ S) + k̃ vᵀ`, `o = Sᵀ r`, then GroupNorm, bonus, gate and `W_o`.
fn naive_layer(m: &Rwkv7Attention, x: &[f64], t: usize) -> Vec<f64> {
    let d = m.mu.val().dims()[1];
    let (h, c) = (m.n_heads, m.k_k.val().dims()[0]);
    let dh = c / h;
    let mu = flat(m.mu.val());
    let lin = |l: &burn::nn::Linear, x: &[f64], width: usize| {
        let (w, b) = linear_of(l);
        affine(x, &w, b.as_deref(), width)
    };
    let lora = |l: &Lora, x: &[f64], f: fn(f64) -> f64| {
        let rank = l.down.weight.val().dims()[1];
        let hidden: Vec<f64> = lin(&l.down, x, rank).into_iter().map(f).collect();
        lin(&l.up, &hidden, c)
    };
    let (k_k, k_a, r_k) = (flat1(m.k_k.val()), flat1(m.k_a.val()), flat(m.r_k.val()));
    let (gn_w, gn_b) = (flat1(m.g_norm_weight.val()), flat1(m.g_norm_bias.val()));
    let mut s = vec![vec![vec![0.0; dh]; dh]; h]; // s[head][i][j], i over d_k, j over d_v
    let mut out = Vec::new();
    for tok in 0..t {
        let xt = &x[tok * d..(tok + 1) * d];
        let prev: Vec<f64> =
            if tok == 0 { vec![0.0; d] } else { x[(tok - 1) * d..tok * d].to_vec() };
        let mix = |row: usize| -> Vec<f64> {
            (0..d).map(|n| xt[n] + (prev[n] - xt[n]) * mu[row * d + n]).collect()
        };
        let r = lin(&m.r_proj, &mix(0), c);
        let w: Vec<f64> = lora(&m.w_lora, &mix(1), f64::tanh)
            .iter()
            .map(|z| (-(-0.5f64).exp() * sig(*z)).exp())
            .collect();
        let k = lin(&m.k_proj, &mix(2), c);
        let v = lin(&m.v_proj, &mix(3), c);
        let a: Vec<f64> = lora(&m.a_lora, &mix(4), |z| z).into_iter().map(sig).collect();
        let g = lora(&m.g_lora, &mix(5), sig);
        let mut y = vec![0.0; c];
        for (hd, state) in s.iter_mut().enumerate() {
            let ch = |i: usize| hd * dh + i;
            let kk: Vec<f64> = (0..dh).map(|i| k[ch(i)] * k_k[ch(i)]).collect();
            let norm = kk.iter().map(|z| z * z).sum::<f64>().sqrt().max(1e-12);
            let kappa: Vec<f64> = kk.iter().map(|z| z / norm).collect();
            let kt: Vec<f64> =
                (0..dh).map(|i| k[ch(i)] * (1.0 + (a[ch(i)] - 1.0) * k_a[ch(i)])).collect();
            let (alpha, beta): (Vec<f64>, Vec<f64>) =
                (0..dh).map(|i| (-kappa[i], kappa[i] * a[ch(i)])).unzip();
            let old = state.clone();
            // αᵀ S_{t−1}: a row over d_v.
            let removed: Vec<f64> =
                (0..dh).map(|j| (0..dh).map(|i| alpha[i] * old[i][j]).sum()).collect();
            for i in 0..dh {
                for j in 0..dh {
                    state[i][j] = w[ch(i)] * old[i][j] + beta[i] * removed[j] + kt[i] * v[ch(j)];
                }
            }
            let o: Vec<f64> =
                (0..dh).map(|j| (0..dh).map(|i| state[i][j] * r[ch(i)]).sum()).collect();
            let mean = o.iter().sum::<f64>() / dh as f64;
            let var = o.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / dh as f64;
            let bonus: f64 = (0..dh).map(|i| r[ch(i)] * kt[i] * r_k[ch(i)]).sum();
            for j in 0..dh {
                let normed =
                    (o[j] - mean) / (var + dh as f64 * 1e-5).sqrt() * gn_w[ch(j)] + gn_b[ch(j)];
                y[ch(j)] = (normed + bonus * v[ch(j)]) * g[ch(j)];
            }
        }
        out.extend(lin(&m.o_proj, &y, d));
    }
    out
}

/// The naive layer over each sequence of a batch `[b, t, d]`, reversed too when bidirectional.
fn naive(m: &Rwkv7Attention, x: &Tensor<3>, causal: bool) -> Vec<f32> {
    let [b, t, d] = x.dims();
    let xs: Vec<f64> = values(x.clone()).into_iter().map(f64::from).collect();
    let mut out = Vec::new();
    for seq in xs.chunks(t * d).take(b) {
        let mut y = naive_layer(m, seq, t);
        if !causal {
            let rev: Vec<f64> = seq.chunks(d).rev().flatten().copied().collect();
            let back = naive_layer(m, &rev, t);
            for (i, row) in back.chunks(d).rev().enumerate() {
                (0..d).for_each(|n| y[i * d + n] += row[n]);
            }
        }
        out.extend(y.into_iter().map(|z| z as f32));
    }
    out
}

#[test]
fn the_module_matches_the_naive_layer_causal_and_bidirectional() {
    for spec in [
        "decay_rank=3:a_rank=2:gate_rank=4",
        "decay_rank=3:a_rank=2:gate_rank=4:form=chunked:chunk=3",
    ] {
        let m = layer(spec);
        let x = randn([2, 7, 8], 11, &device());
        for (ctx, causal) in [(MixContext::causal(), true), (MixContext::bidirectional(), false)] {
            let y = m.forward(x.clone(), ctx).output;
            assert_values_close(
                &values(y),
                &naive(&m, &x, causal),
                &format!("{spec} causal={causal}"),
            );
        }
    }
}

/// The recurrence with its transition written out: `S_t = (diag(w_t) + β_t α_tᵀ) S_{t−1} + k_t v_tᵀ`.
fn explicit_transitions(x: &[Tensor<4>]) -> Tensor<4> {
    let [r, log_w, k, v, alpha, beta] = [0, 1, 2, 3, 4, 5].map(|i| x[i].clone());
    let [b, h, t, dk] = r.dims();
    let dv = v.dims()[3];
    let eye = Tensor::<2>::eye(dk, &r.device()).reshape([1, 1, dk, dk]);
    let mut s = Tensor::<4>::zeros([b, h, dk, dv], &r.device());
    let mut out = Vec::new();
    for i in 0..t {
        let at = |x: &Tensor<4>| x.clone().narrow(2, i, 1); // [b, h, 1, d]
        let transition = eye.clone() * at(&log_w).exp().swap_dims(2, 3)
            + at(&beta).swap_dims(2, 3).matmul(at(&alpha));
        s = transition.matmul(s) + at(&k).swap_dims(2, 3).matmul(at(&v));
        out.push(at(&r).matmul(s.clone()));
    }
    Tensor::cat(out, 2)
}

#[test]
fn the_recurrence_matches_explicit_transitions_with_gradients() {
    let d = device();
    let inputs: Vec<Tensor<4>> = (0..6).map(|i| randn([2, 2, 6, 3], 70 + i, &d)).collect();
    // Inputs in the ranges the layer gives: log w ∈ (−0.61, 0), a unit removal key.
    let shaped = |x: Vec<Tensor<4>>| {
        let log_w = sigmoid(x[1].clone()) * (-0.6);
        let kappa = x[4].clone() / x[4].clone().powi_scalar(2).sum_dim(3).sqrt();
        let beta = kappa.clone() * sigmoid(x[5].clone());
        [x[0].clone(), log_w, x[2].clone(), x[3].clone(), -kappa, beta]
    };
    let fast = output_and_grads(&inputs, 80, |x| {
        let [r, w, k, v, a, b] = shaped(x);
        recurrent(r, w, k, v, a, b, None).0
    });
    let slow = output_and_grads(&inputs, 80, |x| explicit_transitions(&shaped(x)));
    assert_output_and_grads_close("rwkv7 recurrence", fast, &slow);
}

/// The fused kernel (flex, what training's recurrent form runs) equals the composed recurrence
/// in outputs and in the gradients of all six inputs, `d_k ≠ d_v`, with checkpoint intervals of
/// one token, that do and do not divide the length, and past it.
#[test]
fn the_fused_kernel_matches_the_recurrence_with_gradients() {
    let d = device();
    let inputs: Vec<Tensor<4>> =
        (0..6).map(|i| randn([2, 3, 10, if i == 3 { 5 } else { 4 }], 120 + i, &d)).collect();
    let shaped = |x: Vec<Tensor<4>>| {
        let log_w = sigmoid(x[1].clone() + 1.0) * (-0.6065);
        let kappa = x[4].clone() / x[4].clone().powi_scalar(2).sum_dim(3).sqrt();
        let beta = kappa.clone() * sigmoid(x[5].clone());
        [x[0].clone(), log_w, x[2].clone(), x[3].clone(), -kappa, beta]
    };
    let want = output_and_grads(&inputs, 130, |x| {
        let [r, w, k, v, a, b] = shaped(x);
        recurrent(r, w, k, v, a, b, None).0
    });
    for chunk in [1, 3, 5, 64] {
        let got = output_and_grads(&inputs, 130, |x| {
            crate::fused::dplr_recurrence(shaped(x), chunk)
                .map_err(|_| "flex")
                .expect("the fused kernel runs on flex")
        });
        assert_output_and_grads_close(&format!("fused, checkpoints every {chunk}"), got, &want);
    }
}

/// The chunked form equals the recurrence, outputs, final state and gradients, from a carried
/// state, for chunks that divide the length, that do not, of one token and past the length.
#[test]
fn the_chunked_form_matches_the_recurrence_with_gradients() {
    let d = device();
    let mut inputs: Vec<Tensor<4>> = (0..6).map(|i| randn([2, 2, 9, 3], 100 + i, &d)).collect();
    inputs.push(randn([2, 2, 3, 3], 106, &d));
    // The layer's ranges, the decay at its strongest: log w ∈ (−0.61, 0) with many near −0.6.
    let shaped = |x: &[Tensor<4>]| {
        let log_w = sigmoid(x[1].clone() + 2.0) * (-0.6065);
        let kappa = x[4].clone() / x[4].clone().powi_scalar(2).sum_dim(3).sqrt();
        let beta = kappa.clone() * sigmoid(x[5].clone());
        [x[0].clone(), log_w, x[2].clone(), x[3].clone(), -kappa, beta]
    };
    let with_state = |x: Vec<Tensor<4>>, chunk: Option<usize>| {
        let [r, w, k, v, a, b] = shaped(&x);
        let s0 = x[6].clone();
        let (y, s) = match chunk {
            Some(c) => chunked(r, w, k, v, a, b, c, Some(&s0)),
            None => recurrent(r, w, k, v, a, b, Some(&s0)),
        };
        // The final state joins the output so its gradients are checked too.
        Tensor::cat(vec![y, s], 2)
    };
    let want = output_and_grads(&inputs, 110, |x| with_state(x, None));
    for chunk in [1, 3, 4, 9, 16] {
        let got = output_and_grads(&inputs, 110, |x| with_state(x, Some(chunk)));
        assert_output_and_grads_close(&format!("chunk={chunk}"), got, &want);
    }
}

#[test]
fn implied_weights_reproduce_the_recurrence() {
    let d = device();
    let x: Vec<Tensor<4>> = (0..6).map(|i| randn([1, 2, 5, 3], 90 + i, &d)).collect();
    let log_w = sigmoid(x[1].clone()) * (-0.6);
    let (y, _) = recurrent(
        x[0].clone(),
        log_w.clone(),
        x[2].clone(),
        x[3].clone(),
        x[4].clone(),
        x[5].clone(),
        None,
    );
    let a = implied_weights(x[0].clone(), log_w, x[2].clone(), x[4].clone(), x[5].clone());
    assert_close(a.clone().matmul(x[3].clone()), y, 1e-4, "A v");
    let above = a.triu(1).abs().sum();
    assert!(values(above)[0] == 0.0, "weights on later tokens");
}

#[test]
fn decoding_equals_the_forward() {
    // Chunks of 3: the 4-token prompt and the forward over 10 tokens cross chunk boundaries.
    for spec in ["", "form=chunked:chunk=3"] {
        let m = layer(spec);
        assert_decoding_equals_forward(&m, randn([2, 10, 8], 21, &device()), None, spec);
    }
}

#[test]
fn later_tokens_do_not_change_earlier_outputs() {
    let m = layer("");
    let x = randn([1, 9, 8], 31, &device());
    let changed = Tensor::cat(vec![x.clone().narrow(1, 0, 5), randn([1, 4, 8], 32, &device())], 1);
    let y = |x: Tensor<3>| m.forward(x, MixContext::causal()).output.narrow(1, 0, 5);
    assert_close(y(changed), y(x), 1e-6, "first five outputs");
}

#[test]
fn finite_at_eight_times_the_training_length() {
    let ad = ad_device();
    for spec in ["", "form=chunked"] {
        let m = randomized(seeded_layer::<Rwkv7AttentionConfig>(spec, &dims(), &ad), 50);
        let x = (randn([1, 8 * 16, 8], 41, &ad) * 3.0).require_grad();
        assert_forward_finite(&m, x.clone(), MixContext::causal(), spec);
        assert_forward_finite(&m, x, MixContext::bidirectional(), spec);
    }
}

#[test]
fn the_reported_state_size_is_what_decoding_keeps() {
    let c = Rwkv7AttentionConfig::default();
    assert_eq!(c.decode_state_floats(&dims(), 100), 2 * 4 * 4 + 8);
    let m = layer("");
    let mut state = m.empty_state();
    m.step(randn([1, 3, 8], 51, &device()), &mut state, None);
    let held = state.state.unwrap().dims().iter().product::<usize>()
        + state.last_x.unwrap().dims().iter().product::<usize>();
    assert_eq!(held, c.decode_state_floats(&dims(), 3));
}

#[test]
fn specs_parse_print_and_refuse() {
    for spec in ["rwkv7", "rwkv7:a_rank=4:chunk=8:decay_rank=8:form=chunked:gate_rank=16"] {
        let parsed: crate::families::MixerSpec = spec.parse().unwrap();
        assert_eq!(parsed.to_string(), spec);
    }
    for (spec, needle) in [("rwkv7:a_rank=0", "a_rank"), ("rwkv7:chunk=0", "chunk")] {
        let err = spec.parse::<crate::families::MixerSpec>().unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    let gqa = MixerDims { n_kv_heads: 1, ..dims() };
    let err = Rwkv7AttentionConfig::default().validate(&gqa).unwrap_err().to_string();
    assert!(err.contains("n_kv_heads"), "{err}");
    let normed = MixerDims { qk_head_norm: Some(1e-6), ..dims() };
    let err = Rwkv7AttentionConfig::default().validate(&normed).unwrap_err().to_string();
    assert!(err.contains("qk_head_norm"), "{err}");
}

#[test]
fn initial_values_follow_fla() {
    // Layer 1 of 3: ρ₀ = ½, ρ₁ = ⅔.
    let m = seeded_layer::<Rwkv7AttentionConfig>("decay_rank=5", &dims(), &device());
    let mu = values(m.mu.val());
    let want = |p: f64, n: usize| (1.0 - (n as f64 / 8.0).powf(p * 2.0 / 3.0)) as f32;
    assert_values_close(
        &[mu[3], mu[8 + 5], mu[40 + 7]],
        &[want(0.2, 3), want(0.9, 5), want(0.2, 7)],
        "mu",
    );
    assert_values_close(&values(m.k_a.val())[..1], &[1.02], "k_a");
    assert_values_close(&values(m.r_k.val())[..1], &[-0.04], "r_k");
    let w0 = values(m.w_lora.up.bias.as_ref().unwrap().val());
    // Channel 0: −6 + 0.5 + 2.5·(−1); channel 7 (the last): 0 + 0.5 + 2.5.
    assert_values_close(&[w0[0], w0[7]], &[-8.0, 3.0], "w0");
    let gn = values(m.g_norm_weight.val());
    assert_values_close(&gn[..1], &[(2.0f32 / 3.0).powf(0.7)], "g_norm weight");
    assert_eq!(m.w_lora.down.weight.val().dims(), [8, 5]);
    // W_o = 0 (and its bias 0): at the start the layer adds nothing to the residual stream.
    let y = m.forward(randn([1, 4, 8], 61, &device()), MixContext::causal()).output;
    assert!(values(y).iter().all(|v| *v == 0.0));
}
