//! Test helpers: devices, seeded random tensors, and closeness checks with one tolerance rule.

use burn::tensor::{Device, Distribution, Tensor};

/// The plain CPU device the tests run on.
pub fn device() -> Device {
    Device::flex()
}

/// The same device with autodiff, for gradient tests.
pub fn ad_device() -> Device {
    Device::flex().autodiff()
}

/// A standard-normal tensor; `seed` makes each test's inputs fresh but repeatable.
pub fn randn<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    crate::seeding::with_seed(device, seed, || {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    })
}

/// Seeded values in `[lo, hi)` from an xorshift: fresh inputs for the kernels that work on raw
/// `f32` slices, without a tensor backend.
pub fn uniform_values(n: usize, seed: u64, (lo, hi): (f32, f32)) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lo + (hi - lo) * ((x >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// A `[b, h, t, d]` tensor's values in f64, read row by row: what the per-query oracles of the
/// block-sparse families (MoBA, NSA) need.
pub struct F64Rows {
    pub dims: [usize; 4],
    data: Vec<f64>,
}

impl F64Rows {
    pub fn of(x: &Tensor<4>) -> Self {
        Self { dims: x.dims(), data: values(x.clone()).into_iter().map(f64::from).collect() }
    }

    /// Row `i` of head `h` in batch `b`, `d` values.
    pub fn row(&self, b: usize, h: usize, i: usize) -> &[f64] {
        let [_, hs, t, d] = self.dims;
        let start = ((b * hs + h) * t + i) * d;
        &self.data[start..start + d]
    }
}

pub fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `softmax(z)` in f64, shifted by the maximum.
pub fn softmax64(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|z| (z - m).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|e| e / total).collect()
}

/// Asserts `|a - b| <= tol * max(1, |b|)` elementwise (absolute for small values, relative for
/// large ones), naming the worst element on failure.
#[track_caller]
pub fn assert_close<const D: usize>(a: Tensor<D>, b: Tensor<D>, tol: f32, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let (a, b) = (values(a), values(b));
    let mut worst = (0usize, 0f32);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(x.is_finite() && y.is_finite(), "{what}: non-finite value at {i}: {x} vs {y}");
        let err = (x - y).abs() / y.abs().max(1.0);
        if err > worst.1 {
            worst = (i, err);
        }
    }
    assert!(
        worst.1 <= tol,
        "{what}: element {} differs: {} vs {} (scaled error {:.2e} > {tol:.0e})",
        worst.0,
        a[worst.0],
        b[worst.0],
        worst.1
    );
}

/// Runs `f` on fresh leaf tensors built from `inputs` and returns the output together with the
/// gradient of `sum(output * probe)` with respect to each input (a random probe so every output
/// element contributes with a different weight).
pub fn output_and_grads<const D: usize, const E: usize>(
    inputs: &[Tensor<D>],
    probe_seed: u64,
    f: impl Fn(Vec<Tensor<D>>) -> Tensor<E>,
) -> (Tensor<E>, Vec<Tensor<D>>) {
    let ad = ad_device();
    let leaves: Vec<Tensor<D>> =
        inputs.iter().map(|t| Tensor::from_data(t.to_data(), &ad).require_grad()).collect();
    let out = f(leaves.clone());
    let probe = randn(out.dims(), probe_seed, &ad);
    let grads = (out.clone() * probe).sum().backward();
    let g = leaves.iter().map(|l| l.grad(&grads).expect("input has no gradient")).collect();
    (Tensor::from_data(out.to_data(), &device()), g)
}

/// The rows a naive (per-query) attention oracle walks: for each query `i`, `q_i`
/// (`[b, h, 1, d]`) with exactly the keys and values it may see (`0..=i` when causal, all
/// otherwise). Each family's tests build their slow, obviously-right formula on these.
pub fn visible_rows(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    causal: bool,
) -> Vec<(Tensor<4>, Tensor<4>, Tensor<4>)> {
    let t = q.dims()[2];
    (0..t)
        .map(|i| {
            let n = if causal { i + 1 } else { k.dims()[2] };
            (q.clone().narrow(2, i, 1), k.clone().narrow(2, 0, n), v.clone().narrow(2, 0, n))
        })
        .collect()
}

/// The module `F` builds for `spec` (the parts after the family name, `""` for none) on `dims`,
/// every weight drawn now under the seeded generator's lock: lazily drawn weights would take
/// numbers from the shared stream while another test holds it.
pub fn seeded_layer<F: crate::mixer::MixerFamily>(
    spec: &str,
    dims: &crate::mixer::MixerDims,
    device: &Device,
) -> F::Module {
    let parts: Vec<&str> = if spec.is_empty() { vec![] } else { spec.split(':').collect() };
    let config = F::parse(&parts, spec).unwrap_or_else(|e| panic!("{e}"));
    crate::seeding::with_seed(device, 9, || {
        let m = config.init(dims, device);
        crate::seeding::materialize(&m);
        m
    })
}

/// Decoding `x` (`[batch, 10, d_model]`) as a 4-token prompt, three single tokens and a 3-token
/// piece gives the causal forward's outputs: the prompt and the piece go through a family's
/// multi-token step from the carried state, the single tokens through its one-token step.
#[track_caller]
pub fn assert_decoding_equals_forward<M: crate::mixer::SequenceMixer>(
    m: &M,
    x: Tensor<3>,
    rope: Option<&burn::nn::RotaryEncoding>,
    what: &str,
) {
    assert_eq!(x.dims()[1], 10, "{what}: the schedule covers 10 tokens");
    let full = m.forward(x.clone(), crate::mixer::MixContext::causal().with_rope(rope)).output;
    let mut state = m.empty_state();
    let mut outs = vec![m.step(x.clone().narrow(1, 0, 4), &mut state, rope)];
    for t in 4..7 {
        outs.push(m.step(x.clone().narrow(1, t, 1), &mut state, rope));
    }
    outs.push(m.step(x.narrow(1, 7, 3), &mut state, rope));
    assert_close(Tensor::cat(outs, 1), full, 1e-4, &format!("{what}: decode vs forward"));
}

/// `m`'s output on `x` (which requires grad), the gradient of its sum with respect to `x`
/// and the attention weights its diagnostics report are all finite: the NaN-safety check at
/// several times the training length.
#[track_caller]
pub fn assert_forward_finite<M: crate::mixer::SequenceMixer>(
    m: &M,
    x: Tensor<3>,
    ctx: crate::mixer::MixContext<'_>,
    what: &str,
) {
    let out = m.forward(x.clone(), ctx.with_diagnostics(true));
    let y = out.output;
    let g = x.grad(&y.clone().sum().backward()).expect("input gradient");
    let weights = out.diagnostics.expect("diagnostics were asked for").weights;
    for (part, v) in [("output", values(y)), ("gradient", values(g)), ("weights", values(weights))]
    {
        assert!(v.iter().all(|x| x.is_finite()), "{what}: non-finite {part}");
    }
}

/// [`assert_close`] on an output and each of its gradients, as [`output_and_grads`] returns
/// them, against the same from a reference (`1e-4`).
#[track_caller]
pub fn assert_output_and_grads_close<const D: usize>(
    what: &str,
    (out, grads): (Tensor<D>, Vec<Tensor<D>>),
    (want, want_grads): &(Tensor<D>, Vec<Tensor<D>>),
) {
    assert_close(out, want.clone(), 1e-4, &format!("{what}: output"));
    assert_eq!(grads.len(), want_grads.len(), "{what}: number of gradients");
    for (i, (g, w)) in grads.into_iter().zip(want_grads.clone()).enumerate() {
        assert_close(g, w, 1e-4, &format!("{what}: gradient {i}"));
    }
}

/// [`assert_close`] on values already read out of tensors (`1e-4`), naming their count.
#[track_caller]
pub fn assert_values_close(got: &[f32], want: &[f32], what: &str) {
    let device = device();
    assert_close(
        Tensor::<1>::from_floats(got, &device),
        Tensor::<1>::from_floats(want, &device),
        1e-4,
        &format!("{what} ({})", got.len()),
    );
}
