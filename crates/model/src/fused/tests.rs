use super::*;
use crate::testing::{assert_close, device, output_and_grads, randn};

/// The fused GELU equals Burn's composed GELU on fresh random inputs, outputs and gradients,
/// with and without autodiff.
#[test]
fn fused_gelu_matches_burn_gelu() {
    let d = device();
    let x = randn([3, 17, 40], 7, &d) * 3.0;
    assert_close(
        gelu(x.clone()),
        burn::tensor::activation::gelu(x.clone()),
        1e-6,
        "gelu, no autodiff",
    );
    let (fast, fast_g) = output_and_grads(std::slice::from_ref(&x), 8, |v| gelu(v[0].clone()));
    let (slow, slow_g) =
        output_and_grads(&[x], 8, |v| burn::tensor::activation::gelu(v[0].clone()));
    assert_close(fast, slow, 1e-6, "gelu output");
    assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-6, "gelu gradient");
}

/// The fused cross-entropy equals the composed `−log_softmax(x)[id]` on fresh random logits
/// (a strided view and a contiguous view at an offset among them), outputs, argmax and
/// gradients, with and without autodiff.
#[test]
fn fused_cross_entropy_matches_the_composed_formula() {
    use burn::tensor::{Int, TensorData};
    let d = device();
    let (b, t, vocab) = (3, 7, 53);
    let logits = randn([b, vocab, t], 110, &d) * 4.0;
    let ids: Vec<i64> = (0..b * t).map(|i| ((i * 31 + 5) % vocab) as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &d);
    let run = |fused: bool| {
        output_and_grads(std::slice::from_ref(&logits), 111, |v| {
            let x = v[0].clone().swap_dims(1, 2);
            let ids = Tensor::<2, Int>::from_data(ids.to_data(), &x.device());
            let (nll, _) = if fused {
                token_cross_entropy(x, ids)
            } else {
                token_cross_entropy_composed(x, ids)
            };
            nll
        })
    };
    let ((fast, fast_g), (slow, slow_g)) = (run(true), run(false));
    assert_close(fast, slow, 1e-5, "nll");
    assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-5, "gradient of the logits");
    // A contiguous view at an offset into a larger buffer (one batch element's last
    // positions, as `Target::LastPosition` narrows them) whose buffer nothing else holds by
    // the backward pass (the product makes it, the narrowing keeps no reference).
    let wide = randn([1, t + 2, vocab], 112, &d) * 4.0;
    let last = |x: Tensor<3>| (x * 1.0).narrow(1, 2, t);
    let one_ids = |x: &Tensor<3>| {
        let ids: Vec<i64> = (0..t).map(|i| ((i * 17 + 3) % vocab) as i64).collect();
        Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &x.device())
    };
    let run = |fused: bool| {
        output_and_grads(std::slice::from_ref(&wide), 113, |v| {
            let x = last(v[0].clone());
            let ids = one_ids(&x);
            let (nll, _) = if fused {
                token_cross_entropy(x, ids)
            } else {
                token_cross_entropy_composed(x, ids)
            };
            nll
        })
    };
    let ((fast, fast_g), (slow, slow_g)) = (run(true), run(false));
    assert_close(fast, slow, 1e-5, "nll of a narrowed view");
    assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-5, "gradient through a narrowed view");
    let x = logits.swap_dims(1, 2);
    let (nll, argmax) = token_cross_entropy(x.clone(), ids.clone());
    let (want_nll, want_argmax) = token_cross_entropy_composed(x, ids);
    assert_close(nll, want_nll, 1e-5, "nll, no autodiff");
    assert_eq!(argmax.into_data(), want_argmax.into_data(), "argmax");
}

/// The fused affine map equals Burn's on fresh random inputs: outputs and the gradients of
/// input, weight and bias, with and without bias, with a transposed (strided) weight.
#[test]
fn fused_affine_matches_burn_linear() {
    let d = device();
    let x = randn([2, 5, 7], 21, &d);
    let w = randn([7, 4], 22, &d);
    let wt = randn([4, 7], 23, &d);
    let b = randn([4], 24, &d);
    let reference =
        |x: Tensor<3>, w: Tensor<2>, b: Option<Tensor<1>>| burn::tensor::module::linear(x, w, b);
    let cases: [(&str, bool, bool); 4] = [
        ("bias", true, false),
        ("no bias", false, false),
        ("strided weight", true, true),
        ("strided, no bias", false, true),
    ];
    for (name, with_bias, strided) in cases {
        let weight = if strided { wt.clone() } else { w.clone() };
        let run = |f: &dyn Fn(Tensor<3>, Tensor<2>, Option<Tensor<1>>) -> Tensor<3>| {
            // Inputs as 3-D tensors so one closure type covers all three.
            let inputs = [x.clone(), weight.clone().unsqueeze::<3>(), b.clone().unsqueeze::<3>()];
            output_and_grads(&inputs, 25, |v| {
                let w2: Tensor<2> = v[1].clone().squeeze_dim(0);
                let w2 = if strided { w2.transpose() } else { w2 };
                let y = f(v[0].clone(), w2, with_bias.then(|| v[2].clone().reshape([4])));
                // An unused bias still needs a (zero) gradient for the helper.
                y + v[2].clone().sum().reshape([1, 1, 1]) * 0.0
            })
        };
        let (fast, fast_g) = run(&|x, w, b| affine_map(x, w, b));
        let (slow, slow_g) = run(&|x, w, b| reference(x, w, b));
        assert_close(fast, slow, 1e-5, &format!("{name}: output"));
        let parts = if with_bias { 3 } else { 2 };
        for (i, (f, s)) in fast_g.into_iter().zip(slow_g).take(parts).enumerate() {
            assert_close(f, s, 1e-5, &format!("{name}: gradient {i}"));
        }
    }
    // Without autodiff.
    let plain = affine_map(x.clone(), w.clone(), Some(b.clone()));
    assert_close(plain, reference(x, w, Some(b)), 1e-5, "no autodiff");
}

/// The fused layer norm equals Burn's on fresh random inputs (outputs and the gradients of
/// input, γ and β), with and without bias and autodiff, over more rows than one task holds.
#[test]
fn fused_layer_norm_matches_burn_layer_norm() {
    use burn::nn::LayerNormConfig;
    let d = device();
    for bias in [true, false] {
        let x = randn([3, 50, 20], 70, &d) * 2.0 + 0.5;
        let inputs =
            [x, randn([20], 71, &d).reshape([1, 1, 20]), randn([20], 72, &d).reshape([1, 1, 20])];
        let run = |fused: bool| {
            output_and_grads(&inputs, 73, |v| {
                let (gamma, beta) =
                    (v[1].clone().reshape([20]), bias.then(|| v[2].clone().reshape([20])));
                let y = if fused {
                    layer_norm_with(v[0].clone(), gamma, beta, 1e-5)
                } else {
                    burn::tensor::module::layer_norm(v[0].clone(), gamma, beta, 1e-5)
                };
                // An unused bias still needs a (zero) gradient for the helper.
                y + v[2].clone().sum().reshape([1, 1, 1]) * 0.0
            })
        };
        let ((fast, fast_g), (slow, slow_g)) = (run(true), run(false));
        assert_close(fast, slow, 1e-5, &format!("bias={bias}: output"));
        for (i, (f, s)) in fast_g.into_iter().zip(slow_g).enumerate() {
            assert_close(f, s, 1e-4, &format!("bias={bias}: gradient {i}"));
        }
    }
    let layer = LayerNormConfig::new(20).init(&d);
    let x = randn([130, 20], 74, &d);
    assert_close(
        layer_norm(&layer, x.clone(), 1e-5),
        layer.forward(x),
        1e-5,
        "a layer, no autodiff",
    );
}

/// The fused RMS norm equals Burn's `RmsNorm` on fresh random inputs (outputs and the
/// gradients of input and γ), with and without autodiff, over more rows than one task holds.
#[test]
fn fused_rms_norm_matches_burn_rms_norm() {
    use burn::nn::RmsNormConfig;
    let d = device();
    let x = randn([3, 50, 20], 80, &d) * 2.0 + 0.5;
    let gamma = randn([20], 81, &d).reshape([1, 1, 20]);
    let run = |fused: bool| {
        output_and_grads(&[x.clone(), gamma.clone()], 82, |v| {
            let (x, gamma) = (v[0].clone(), v[1].clone().reshape([20]));
            if fused { rms_norm_with(x, gamma, 1e-5) } else { rms_norm_composed(x, gamma, 1e-5) }
        })
    };
    let ((fast, fast_g), (slow, slow_g)) = (run(true), run(false));
    assert_close(fast, slow, 1e-5, "rms norm output");
    for (i, (f, s)) in fast_g.into_iter().zip(slow_g).enumerate() {
        assert_close(f, s, 1e-4, &format!("rms norm gradient {i}"));
    }
    let layer = RmsNormConfig::new(20).with_epsilon(1e-6).init(&d);
    let x = randn([130, 20], 83, &d);
    assert_close(rms_norm(&layer, x.clone()), layer.forward(x), 1e-5, "a layer, no autodiff");
}

/// Fused `elu + 1` equals the composed formula on a strided input, outputs and gradients.
#[test]
fn fused_elu_plus_one_matches_the_composed_formula() {
    let d = device();
    let x = randn([4, 9, 33], 90, &d) * 3.0;
    let (fast, fast_g) = output_and_grads(std::slice::from_ref(&x), 91, |v| {
        elu_plus_one(v[0].clone().swap_dims(1, 2))
    });
    let (slow, slow_g) = output_and_grads(&[x], 91, |v| {
        super::pointwise::elu_plus_one_composed(v[0].clone().swap_dims(1, 2))
    });
    assert_close(fast, slow, 1e-6, "elu+1 output");
    assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-6, "elu+1 gradient");
}

/// Fused `ln σ` equals Burn's on fresh random inputs, strided, large magnitudes included,
/// outputs and gradients.
#[test]
fn fused_log_sigmoid_matches_burn_log_sigmoid() {
    let d = device();
    let x = randn([4, 9, 33], 94, &d) * 30.0;
    assert_close(
        log_sigmoid(x.clone()),
        burn::tensor::activation::log_sigmoid(x.clone()),
        1e-5,
        "log σ, no autodiff",
    );
    let (fast, fast_g) = output_and_grads(std::slice::from_ref(&x), 95, |v| {
        log_sigmoid(v[0].clone().swap_dims(1, 2))
    });
    let (slow, slow_g) = output_and_grads(&[x], 95, |v| {
        burn::tensor::activation::log_sigmoid(v[0].clone().swap_dims(1, 2))
    });
    assert_close(fast, slow, 1e-5, "log σ output");
    assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-5, "log σ gradient");
}

/// Fused SiLU equals Burn's on fresh random inputs, strided, outputs and gradients, with
/// and without autodiff.
#[test]
fn fused_silu_matches_burn_silu() {
    let d = device();
    let x = randn([4, 9, 33], 92, &d) * 4.0;
    assert_close(
        silu(x.clone()),
        burn::tensor::activation::silu(x.clone()),
        1e-6,
        "silu, no autodiff",
    );
    let (fast, fast_g) =
        output_and_grads(std::slice::from_ref(&x), 93, |v| silu(v[0].clone().swap_dims(1, 2)));
    let (slow, slow_g) = output_and_grads(&[x], 93, |v| {
        burn::tensor::activation::silu(v[0].clone().swap_dims(1, 2))
    });
    assert_close(fast, slow, 1e-6, "silu output");
    assert_close(fast_g[0].clone(), slow_g[0].clone(), 1e-6, "silu gradient");
}

/// A strided (transposed) input gives the same values as its contiguous copy.
#[test]
fn fused_gelu_reads_strided_inputs() {
    let d = device();
    let x = randn([5, 9], 11, &d).swap_dims(0, 1);
    let contiguous = Tensor::<2>::from_data(x.to_data(), &d);
    assert_close(gelu(x), gelu(contiguous), 0.0, "strided vs contiguous");
}

/// The kernels' backend check: flex `f32` tensors, plain or under autodiff, take the fused path.
#[test]
fn flex_f32_tensors_run_fused() {
    assert!(runs_fused(&randn([2, 3], 96, &device())));
    assert!(runs_fused(&randn([2, 3], 97, &crate::testing::ad_device())));
}
