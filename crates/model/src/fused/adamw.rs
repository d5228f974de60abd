//! One AdamW step (Loshchilov & Hutter 2019, decoupled weight decay) over a parameter's flat
//! buffer, in place and in one pass, computed as burn-optim's `AdamW` computes it:
//! `m ← β₁·m + (1 − β₁)·g`, `v ← β₂·v + (1 − β₂)·g²`,
//! `p ← p·(1 − lr·λ) − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)`.
//! Burn's composed form is a dozen tensor ops per parameter, each a pass over the buffer and an
//! allocation: about 2 ms of a 30-45 ms nanoGPT-recipe step on the Intel host.

use super::inputs::AdamWStep;
use super::simd;

#[inline(always)]
fn step_body(h: AdamWStep, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
    let (f1, f2) = (1.0 - h.beta_1, 1.0 - h.beta_2);
    let (c1, c2) = (1.0 - h.beta_1.powi(h.time), 1.0 - h.beta_2.powi(h.time));
    for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = *m * h.beta_1 + g * f1;
        *v = *v * h.beta_2 + g * g * f2;
        let delta = (*m / c1) / ((*v / c2).sqrt() + h.epsilon);
        *p = *p * h.decay - delta * h.lr;
    }
}

simd::dispatched!(
    /// Updates `param`, `m`, `v` in place from `grad` (all the same length; `m = v = 0` before
    /// the first step).
    step => step_body(h: AdamWStep, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32])
);
