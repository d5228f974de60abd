//! Text generation from a trained language model with the incremental path (KV cache for
//! softmax-type attention, recurrent state for linear attention).
//!
//! The context window: the model sees the tokens since the last window reset. When the window
//! reaches `max_seq_len`, it restarts from the newest `max_seq_len / 2` tokens (one prefill),
//! so generation can run past the context length at amortised O(1) prefills per token.
//! [`generate_by_full_forward`] applies the same window rule with a full forward per token; the
//! two give identical tokens (tested).

use crate::seed;
use attnlab_model::{LmInput, Model};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::RngExt;
use rand::rngs::StdRng;

/// How the next token is drawn from the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingOptions {
    /// Tokens to generate after the prompt.
    pub tokens: usize,
    /// Softmax temperature; 0 = greedy (argmax).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens; 0 = all.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`; 1 = all.
    pub top_p: f64,
    pub seed: u64,
}

/// Options that cannot sample, or a model whose output stopped being finite.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    #[error("--temperature {value} must be >= 0 (0 = greedy)")]
    Temperature { value: f64 },
    #[error("--top-p {value} must be in (0, 1]")]
    TopP { value: f64 },
    /// The logits before generated token `token` hold `value`.
    #[error("the model's logits are not finite ({value}) at generated token {token}")]
    NonFiniteLogits { value: f32, token: usize },
}

impl SamplingOptions {
    pub fn validate(&self) -> Result<(), SampleError> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(SampleError::Temperature { value: self.temperature });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SampleError::TopP { value: self.top_p });
        }
        Ok(())
    }
}

/// Picks a token from `logits` (one row) under the options, drawing from `rng`.
pub fn pick(logits: &[f32], opts: &SamplingOptions, rng: &mut StdRng) -> u32 {
    if opts.temperature == 0.0 {
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if opts.top_k > 0 {
        order.truncate(opts.top_k);
    }
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> =
        order.iter().map(|&i| ((logits[i] as f64 - max) / opts.temperature).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if opts.top_p < 1.0 {
        let mut mass = 0.0;
        let keep = probs.iter().position(|p| {
            mass += p;
            mass >= opts.top_p
        });
        let keep = keep.map_or(probs.len(), |i| i + 1);
        order.truncate(keep);
        probs.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut r = rng.random::<f64>() * total;
    for (&i, &p) in order.iter().zip(&probs) {
        if r < p {
            return i as u32;
        }
        r -= p;
    }
    order[order.len() - 1] as u32
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn ids_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::<2, Int>::from_data(TensorData::new(v, [1, ids.len()]), device)
}

fn last_row(logits: Tensor<3>) -> Vec<f32> {
    let [_, t, v] = logits.dims();
    logits
        .narrow(1, t - 1, 1)
        .reshape([v])
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32 logits")
}

/// The newest `keep` tokens of `tokens`.
fn tail(tokens: &[u32], keep: usize) -> &[u32] {
    &tokens[tokens.len().saturating_sub(keep)..]
}

/// Generates `opts.tokens` tokens after `prompt` with the incremental path, or says at which
/// token the model's output stopped being finite (a sample from NaN logits would be noise
/// presented as text).
pub fn generate(
    model: &Model,
    prompt: &[u32],
    opts: &SamplingOptions,
    device: &Device,
) -> Result<Vec<u32>, SampleError> {
    assert!(!prompt.is_empty(), "a prompt needs at least one token");
    let max = model.max_seq_len();
    let mut rng = seed::rng(opts.seed, "sample", 0);
    let mut tokens = prompt.to_vec();
    let mut window = tail(&tokens, max).to_vec();
    let mut state = model.empty_state();
    let mut logits = last_row(model.step(LmInput::Tokens(ids_tensor(&window, device)), &mut state));
    for i in 0..opts.tokens {
        if let Some(&value) = logits.iter().find(|v| !v.is_finite()) {
            return Err(SampleError::NonFiniteLogits { value, token: i });
        }
        let next = pick(&logits, opts, &mut rng);
        tokens.push(next);
        if window.len() == max {
            window = tail(&tokens, (max / 2).max(1)).to_vec();
            state = model.empty_state();
            logits = last_row(model.step(LmInput::Tokens(ids_tensor(&window, device)), &mut state));
        } else {
            window.push(next);
            logits = last_row(model.step(LmInput::Tokens(ids_tensor(&[next], device)), &mut state));
        }
    }
    Ok(tokens[prompt.len()..].to_vec())
}

/// The same generation with a full forward over the window for every token: the slow,
/// obviously-right reference for [`generate`].
pub fn generate_by_full_forward(
    model: &Model,
    prompt: &[u32],
    opts: &SamplingOptions,
    device: &Device,
) -> Vec<u32> {
    let max = model.max_seq_len();
    let mut rng = seed::rng(opts.seed, "sample", 0);
    let mut tokens = prompt.to_vec();
    let mut window = tail(&tokens, max).to_vec();
    for _ in 0..opts.tokens {
        let logits = last_row(model.forward(LmInput::Tokens(ids_tensor(&window, device))));
        let next = pick(&logits, opts, &mut rng);
        tokens.push(next);
        if window.len() == max {
            window = tail(&tokens, (max / 2).max(1)).to_vec();
        } else {
            window.push(next);
        }
    }
    tokens[prompt.len()..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use attnlab_model::{ModelConfig, ModelInput, ModelIo};

    fn opts(temperature: f64, top_k: usize, top_p: f64) -> SamplingOptions {
        SamplingOptions { tokens: 40, temperature, top_k, top_p, seed: 9 }
    }

    #[test]
    fn top_k_and_top_p_restrict_the_choice() {
        let logits = [0.0f32, 3.0, 2.9, -1.0, 1.0];
        let mut rng = seed::rng(1, "t", 0);
        for _ in 0..200 {
            let k = pick(&logits, &opts(1.0, 2, 1.0), &mut rng);
            assert!(k == 1 || k == 2);
            // p(1) ≈ 0.47 and p(2) ≈ 0.43 under temperature 1: top_p 0.5 keeps both, 0.4 only one.
            assert_eq!(pick(&logits, &opts(1.0, 0, 0.4), &mut rng), 1);
        }
        assert_eq!(pick(&logits, &opts(0.0, 0, 1.0), &mut rng), 1);
    }

    /// Sampling through the KV cache / recurrent state gives exactly the tokens of recomputing
    /// the full forward, past the context length (window resets included).
    #[test]
    fn incremental_sampling_equals_full_recompute() {
        let device = Device::flex();
        for spec in ["softmax", "linear:elu1", "softmax:sum_key_norms,linear:taylor:feature_dim=4"]
        {
            let cfg = ModelConfig {
                d_model: 16,
                n_heads: 2,
                n_layers: 2,
                max_seq_len: 12,
                mixer: spec.parse().unwrap(),
                ..ModelConfig::default()
            };
            let io = ModelIo { input: ModelInput::Tokens { vocab: 7 }, output_dim: 7 };
            let model = cfg.init(&io, 3, &device).unwrap();
            for o in [opts(0.0, 0, 1.0), opts(1.0, 0, 1.0), opts(0.8, 4, 0.9)] {
                let fast = generate(&model, &[1, 2, 3], &o, &device).unwrap();
                let slow = generate_by_full_forward(&model, &[1, 2, 3], &o, &device);
                assert_eq!(fast.len(), 40);
                assert_eq!(fast, slow, "{spec} {o:?}");
            }
        }
    }
}
