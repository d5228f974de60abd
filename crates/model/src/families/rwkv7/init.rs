//! RWKV-7's initial values, as fla's `RWKV7Attention._initialize_weights` sets them: schedules
//! over the channels that depend on the layer's depth in the stack, orthogonal projections, a
//! zero output projection, and LoRAs whose first map is zero.

use super::layer::{Lora, Rwkv7Attention};
use crate::gates::uniform;
use crate::mixer::MixerDims;
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;

/// The exponents `p_c` of the six token-shift mixes `μ_c = 1 − (n/D)^{p_c·ρ₁}`, rows r, w, k,
/// v, a, g.
const MIX_POWERS: [f64; 6] = [0.2, 0.9, 0.7, 0.7, 0.9, 0.2];

/// The per-channel schedules over the `H·d_h` key channels: `(lin, zigzag, www)`.
///
/// `lin_n = n/(C − 1) − ½`; `zigzag` runs −1..1 within each head, squared with its sign;
/// `www_n = −6 + 6·(n/(C − 1))^{1 + ρ₀^0.3}`. Widths of 1 (a 0/0 in fla) read as 0.
fn schedules(channels: usize, d_head: usize, rho0: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let frac = |n: usize| if channels > 1 { n as f64 / (channels - 1) as f64 } else { 0.0 };
    let half = (d_head as f64 - 1.0) / 2.0;
    let lin = (0..channels).map(|n| frac(n) - 0.5).collect();
    let zigzag = (0..channels)
        .map(|n| {
            let z = if half > 0.0 { ((n % d_head) as f64 - half) / half } else { 0.0 };
            z * z.abs()
        })
        .collect();
    let www = (0..channels).map(|n| -6.0 + 6.0 * frac(n).powf(1.0 + rho0.powf(0.3))).collect();
    (lin, zigzag, www)
}

/// A `rows × cols` matrix (row-major) whose `min(rows, cols)` rows or columns are orthonormal,
/// times `gain`: torch's `orthogonal_` (Gram–Schmidt on Gaussian draws instead of QR).
fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut StdRng) -> Vec<f32> {
    let (len, count) = (rows.max(cols), rows.min(cols));
    let mut normal = || {
        // Box–Muller on the family's own stream.
        let (u1, u2) = (1.0 - uniform(rng, 0.0, 1.0), uniform(rng, 0.0, 1.0));
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(count);
    while basis.len() < count {
        let mut v: Vec<f64> = (0..len).map(|_| normal()).collect();
        for u in &basis {
            let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        // A draw (numerically) inside the span so far is drawn again.
        if norm > 1e-6 {
            basis.push(v.into_iter().map(|a| a / norm).collect());
        }
    }
    let mut m = vec![0.0f32; rows * cols];
    for (j, u) in basis.iter().enumerate() {
        for (i, &x) in u.iter().enumerate() {
            // Vectors run along the longer side: columns of a tall matrix, rows of a wide one.
            let at = if rows >= cols { i * cols + j } else { j * cols + i };
            m[at] = (x * gain) as f32;
        }
    }
    m
}

fn param1(values: Vec<f64>, device: &Device) -> Param<Tensor<1>> {
    let v: Vec<f32> = values.into_iter().map(|x| x as f32).collect();
    Param::from_tensor(Tensor::<1>::from_floats(v.as_slice(), device))
}

/// A Burn `Linear` `d_in → d_out` (`weight: [d_in, d_out]`) with the given weights and bias.
fn linear(
    weight: Vec<f32>,
    d_in: usize,
    d_out: usize,
    bias: Option<Vec<f64>>,
    device: &Device,
) -> Linear {
    Linear {
        weight: Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(weight, [d_in, d_out]),
            device,
        )),
        bias: bias.map(|b| param1(b, device)),
    }
}

/// fla's `LoRA`: `down` zero, `up` orthogonal with gain `0.1·√(rank/out)` when `rank > out`
/// (else 0.1), `up`'s bias `bias` when the map has one.
fn lora(
    d_in: usize,
    rank: usize,
    out: usize,
    bias: Option<Vec<f64>>,
    rng: &mut StdRng,
    device: &Device,
) -> Lora {
    let gain = if rank > out { (rank as f64 / out as f64).sqrt() } else { 1.0 };
    Lora {
        down: linear(vec![0.0; d_in * rank], d_in, rank, None, device),
        up: linear(orthogonal(rank, out, 0.1 * gain, rng), rank, out, bias, device),
    }
}

/// The layer for `dims` with LoRA ranks `(decay, a, gate)`, running the chunked form with
/// `chunk` tokens per chunk when given (the recurrence otherwise), every value drawn from `rng`.
pub(super) fn build(
    dims: &MixerDims,
    (decay_rank, a_rank, gate_rank): (usize, usize, usize),
    chunk: Option<usize>,
    rng: &mut StdRng,
    device: &Device,
) -> Rwkv7Attention {
    let (d, h, dh) = (dims.d_model, dims.n_heads, dims.head_dim());
    let c = h * dh;
    // A layer index past the stated depth (a test's hand-built dims) reads as the last layer.
    let layers = dims.n_layers.max(dims.layer + 1);
    let depth = dims.layer as f64;
    let rho0 = if layers > 1 { depth / (layers - 1) as f64 } else { 0.0 };
    let rho1 = 1.0 - depth / layers as f64;
    let mu: Vec<f32> = MIX_POWERS
        .iter()
        .flat_map(|p| (0..d).map(move |n| (1.0 - (n as f64 / d as f64).powf(p * rho1)) as f32))
        .collect();
    let (lin, zigzag, www) = schedules(c, dh, rho0);
    let w0 = (0..c).map(|n| www[n] + 0.5 + 2.5 * zigzag[n]).collect();
    let a0 = (0..c).map(|n| -0.19 + 0.3 * zigzag[n] + 0.4 * lin[n]).collect();
    let k_k = lin.iter().map(|l| 0.71 - 0.1 * l).collect();
    let bias = |width: usize, on: bool| on.then(|| vec![0.0; width]);
    let projection = |gain: f64, rng: &mut StdRng| {
        linear(orthogonal(d, c, gain, rng), d, c, bias(c, dims.bias), device)
    };
    let r_proj = projection(1.0, rng);
    let k_proj = projection(0.1, rng);
    let v_proj = projection(1.0, rng);
    Rwkv7Attention {
        mu: Param::from_tensor(Tensor::<2>::from_data(TensorData::new(mu, [6, d]), device)),
        r_proj,
        k_proj,
        v_proj,
        w_lora: lora(d, decay_rank, c, Some(w0), rng, device),
        a_lora: lora(d, a_rank, c, Some(a0), rng, device),
        g_lora: lora(d, gate_rank, c, None, rng, device),
        k_k: param1(k_k, device),
        k_a: param1(vec![1.02; c], device),
        r_k: Param::from_tensor(Tensor::<2>::full([h, dh], -0.04, device)),
        g_norm_weight: param1(vec![((depth + 1.0) / layers as f64).powf(0.7); c], device),
        g_norm_bias: param1(vec![0.0; c], device),
        o_proj: linear(vec![0.0; c * d], c, d, bias(d, dims.out_bias), device),
        n_heads: h,
        chunk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn orthogonal_matrices_have_orthonormal_short_sides() {
        let mut rng = StdRng::seed_from_u64(3);
        for (rows, cols) in [(5, 3), (3, 5), (4, 4)] {
            let m = orthogonal(rows, cols, 2.0, &mut rng);
            let (tall, n) = (rows >= cols, rows.min(cols));
            let at = |v: usize, i: usize| if tall { m[i * cols + v] } else { m[v * cols + i] };
            for a in 0..n {
                for b in 0..n {
                    let dot: f32 = (0..rows.max(cols)).map(|i| at(a, i) * at(b, i)).sum();
                    let want = if a == b { 4.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-5, "{rows}x{cols} ({a}, {b}): {dot}");
                }
            }
        }
    }

    #[test]
    fn schedules_follow_fla_at_the_ends() {
        let (lin, zigzag, www) = schedules(8, 4, 0.0);
        assert_eq!((lin[0], lin[7]), (-0.5, 0.5));
        // Within a head of 4: (−1.5, −0.5, 0.5, 1.5)/1.5, squared with their sign.
        assert!((zigzag[0] + 1.0).abs() < 1e-12 && (zigzag[1] + 1.0 / 9.0).abs() < 1e-12);
        assert!((zigzag[4] + 1.0).abs() < 1e-12 && (zigzag[7] - 1.0).abs() < 1e-12);
        assert_eq!((www[0], www[7]), (-6.0, 0.0));
    }
}
