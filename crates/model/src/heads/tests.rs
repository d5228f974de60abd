use super::*;
use crate::testing::{assert_close, device, values};

/// The fused packed RoPE equals the composed one on fresh random inputs, outputs and
/// gradients, at offsets 0 and past it, two heads with values wider than the keys.
#[test]
fn fused_packed_rope_matches_the_composed_rotation() {
    use crate::testing::{assert_output_and_grads_close, output_and_grads, randn};
    use burn::nn::RotaryEncodingConfig;
    let d = device();
    let ad = crate::testing::ad_device();
    let rope = RotaryEncodingConfig::new(16, 4).init(&ad);
    let dims =
        MixerDims { seed: 1, layer: 0, bias: false, out_bias: false, ..MixerDims::new(12, 2, 16) };
    let heads = HeadProjection::new(&dims, 4, &ad);
    for (offset, t) in [(0, 9), (6, 5)] {
        let qkv = randn([3, t, 2 * 2 * 4 + 2 * 6], 90 + offset as u64, &d);
        let fused = output_and_grads(std::slice::from_ref(&qkv), 91, |v| {
            heads.rotate_packed(v[0].clone(), Some(&rope), offset)
        });
        let composed = output_and_grads(std::slice::from_ref(&qkv), 91, |v| {
            heads.rotate_packed_composed(v[0].clone(), &rope, offset)
        });
        assert_output_and_grads_close(&format!("offset {offset}"), fused, &composed);
        // Without autodiff (evaluation) too.
        let rope_plain = RotaryEncodingConfig::new(16, 4).init(&d);
        assert_close(
            heads.rotate_packed(qkv.clone(), Some(&rope_plain), offset),
            heads.rotate_packed_composed(qkv, &rope_plain, offset),
            1e-6,
            "plain",
        );
    }
}

/// A projection with every weight drawn now under the seeded generator's lock, so a test
/// building one does not take numbers from a stream another test holds.
fn seeded_heads(dims: &MixerDims, d_qk: usize, device: &burn::tensor::Device) -> HeadProjection {
    crate::seeding::with_seed(device, 17, || {
        let heads = HeadProjection::new(dims, d_qk, device);
        crate::seeding::materialize(&heads);
        heads
    })
}

/// Grouped-query attention is multi-head attention whose key/value weights repeat per group:
/// a projection with 1 key/value head of 3 equals a plain one with that head's columns
/// copied three times (Hugging Face's `repeat_kv`), and the KV cache's split keeps 1 head.
#[test]
fn grouped_query_projection_equals_multi_head_with_repeated_key_value_weights() {
    let d = device();
    let dims = MixerDims { n_kv_heads: 1, ..MixerDims::new(12, 3, 8) };
    let gqa = seeded_heads(&dims, 4, &d);
    let w = gqa.qkv.weight.val(); // [12, 3·4 + 4 + 4]
    let b = gqa.qkv.bias.as_ref().unwrap().val();
    let (q, k, v) = (w.clone().narrow(1, 0, 12), w.clone().narrow(1, 12, 4), w.narrow(1, 16, 4));
    let (qb, kb, vb) = (b.clone().narrow(0, 0, 12), b.clone().narrow(0, 12, 4), b.narrow(0, 16, 4));
    let mut mha = seeded_heads(&MixerDims::new(12, 3, 8), 4, &d);
    let repeat3 = |x: Tensor<2>| Tensor::cat(vec![x.clone(), x.clone(), x], 1);
    let repeat3b = |x: Tensor<1>| Tensor::cat(vec![x.clone(), x.clone(), x], 0);
    mha.qkv.weight =
        burn::module::Param::from_tensor(Tensor::cat(vec![q, repeat3(k), repeat3(v)], 1));
    mha.qkv.bias = Some(burn::module::Param::from_tensor(Tensor::cat(
        vec![qb, repeat3b(kb), repeat3b(vb)],
        0,
    )));
    let x = crate::testing::randn([2, 5, 12], 3, &d);
    assert_close(gqa.project(x.clone()), mha.project(x.clone()), 1e-6, "packed");
    let (_, k1, v1) = gqa.split_grouped_rotated(x, None, 0);
    assert_eq!(k1.dims(), [2, 1, 5, 4]);
    assert_eq!(v1.dims(), [2, 1, 5, 4]);
}

/// Qwen3's per-head norm: each head's query and key is `x / √(mean(x²) + ε) · γ` over its own
/// width, before RoPE; values untouched.
#[test]
fn per_head_query_key_norm_is_rms_norm_over_each_head() {
    let d = device();
    let dims = MixerDims { qk_head_norm: Some(1e-6), n_kv_heads: 1, ..MixerDims::new(8, 2, 8) };
    let mut heads = seeded_heads(&dims, 4, &d);
    let gamma = Tensor::<1>::from_floats([0.5, 1.0, 1.5, 2.0], &d);
    heads.q_norm.as_mut().unwrap().gamma = burn::module::Param::from_tensor(gamma.clone());
    let x = crate::testing::randn([1, 3, 8], 5, &d);
    let raw = fused::affine(&heads.qkv, x.clone()); // [1, 3, 2·4 + 4 + 4]
    let normed = heads.project_grouped(x);
    let rms = |v: Tensor<3>| {
        let ms = v.clone().powi_scalar(2).mean_dim(2);
        v / (ms + 1e-6).sqrt()
    };
    for head in 0..2 {
        let expect = rms(raw.clone().narrow(2, 4 * head, 4)) * gamma.clone().reshape([1, 1, 4]);
        assert_close(normed.clone().narrow(2, 4 * head, 4), expect, 1e-5, "query head");
    }
    assert_close(normed.clone().narrow(2, 8, 4), rms(raw.clone().narrow(2, 8, 4)), 1e-5, "key");
    assert_close(normed.narrow(2, 12, 4), raw.narrow(2, 12, 4), 0.0, "values untouched");
}

#[test]
fn causal_mask_hides_exactly_the_future() {
    let d = device();
    let m = causal_mask(2, 4, 1, &d).into_data().try_into_vec::<bool>().unwrap();
    // query 0 sits at position 1 (sees keys 0,1), query 1 at position 2 (sees 0..=2).
    assert_eq!(m, vec![false, false, true, true, false, false, false, true]);
}

#[test]
fn keys_per_query_counts_the_prefix() {
    let d = device();
    assert_eq!(values(keys_per_query(3, 3, 0, true, &d)), vec![1.0, 2.0, 3.0]);
    assert_eq!(values(keys_per_query(2, 5, 3, true, &d)), vec![4.0, 5.0]);
    assert_eq!(values(keys_per_query(2, 5, 0, false, &d)), vec![5.0, 5.0]);
}

#[test]
fn masked_softmax_matches_the_formula_and_is_nan_safe() {
    let d = device();
    let scores =
        Tensor::<1>::from_floats([1.0, 2.0, 3.0, 0.5, -1.0, 4.0], &d).reshape([1, 1, 2, 3]);
    let mask = Tensor::<1, Bool>::from_bool(
        burn::tensor::TensorData::from([false, false, true, true, true, true]),
        &d,
    )
    .reshape([2, 3]);
    let w = values(masked_softmax(scores, Some(mask)));
    let z = 1f32.exp() + 2f32.exp();
    let expect = [1f32.exp() / z, 2f32.exp() / z, 0.0, 0.0, 0.0, 0.0];
    for (a, b) in w.iter().zip(expect) {
        assert!(a.is_finite() && (a - b).abs() < 1e-6, "{w:?}");
    }
}

#[test]
fn entropy_of_uniform_and_one_hot_rows() {
    let d = device();
    // Row 0: one key (n=1, excluded from the normalised mean); row 1: uniform over 2 keys.
    let w = Tensor::<1>::from_floats([1.0, 0.0, 0.5, 0.5], &d).reshape([1, 1, 2, 2]);
    let diag = diagnostics(w, keys_per_query(2, 2, 0, true, &d));
    assert_close(diag.entropy, Tensor::<1>::from_floats([0.5 * 2f32.ln()], &d), 1e-6, "entropy");
    assert_close(diag.normalized_entropy, Tensor::<1>::from_floats([1.0], &d), 1e-6, "normalised");
    // Sink mass over the one row with two keys: 0.5 on position 0.
    assert_close(diag.sink_mass, Tensor::<1>::from_floats([0.5], &d), 1e-6, "sink mass");
}

/// Sink mass per head: the mean over batch and rows (n ≥ 2) of the weight on position 0.
#[test]
fn sink_mass_is_the_mean_weight_on_the_first_position() {
    let d = device();
    // 2 heads, 3 causal rows; row 0 (one key) is left out. Head 0: 0.9 and 0.6 on key 0;
    // head 1: 0.1 and 0.0.
    let w = Tensor::<1>::from_floats(
        [1.0, 0.0, 0.0, 0.9, 0.1, 0.0, 0.6, 0.2, 0.2, 1.0, 0.0, 0.0, 0.1, 0.9, 0.0, 0.0, 0.5, 0.5],
        &d,
    )
    .reshape([1, 2, 3, 3]);
    let diag = diagnostics(w, keys_per_query(3, 3, 0, true, &d));
    assert_close(diag.sink_mass, Tensor::<1>::from_floats([0.75, 0.05], &d), 1e-6, "sink mass");
}
