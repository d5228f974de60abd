//! A training run's memory, estimated from its config before anything is allocated, so a
//! config that cannot fit (`model.d_model = 1000000`, `train.batch_size = 10000000`) is refused
//! with one line naming the key, instead of aborting in the allocator or being killed by the
//! kernel after minutes of swapping.
//!
//! The estimate is a floor, not a forecast: weights, gradients and the two AdamW moments
//! (16 bytes per parameter), and the activations every layer keeps for the backward pass
//! whatever its mixer (the block's input, q/k/v and output, the MLP's hidden units, the logits).
//! Mixer-specific extras (softmax's T² scores, gates, states) and allocator slack come on top, so
//! a refused config could never have run, and a config near the limit is left to try.

use attnlab_model::block::MlpKind;
use attnlab_model::{ModelConfig, ModelInput, ModelIo};

/// What a run needs at least, and the sizes it was computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Footprint {
    pub params: f64,
    /// Weights, gradients and AdamW moments, bytes.
    pub state_bytes: f64,
    /// Activations kept for the backward pass of one micro-batch, bytes.
    pub activation_bytes: f64,
}

impl Footprint {
    pub fn bytes(&self) -> f64 {
        self.state_bytes + self.activation_bytes
    }
}

/// The sizes the estimate reads, in elements.
#[derive(Clone, Debug)]
struct Sizes {
    d_model: f64,
    n_layers: f64,
    n_heads: f64,
    head_dim: f64,
    kv_heads: f64,
    mlp_hidden: f64,
    swiglu: bool,
    vocab_in: f64,
    output_dim: f64,
    tied: bool,
    batch: f64,
    seq_len: f64,
}

fn sizes(model: &ModelConfig, io: &ModelIo, batch_size: usize, seq_len: usize) -> Sizes {
    let d = model.d_model as f64;
    let heads = model.n_heads.max(1) as f64;
    let head_dim = if model.head_dim > 0 { model.head_dim as f64 } else { (d / heads).max(1.0) };
    let hidden =
        if model.mlp_hidden > 0 { model.mlp_hidden } else { model.mlp_ratio * model.d_model };
    let (vocab_in, tokens) = match io.input {
        ModelInput::Tokens { vocab } => (vocab as f64, true),
        ModelInput::Vectors { dim } => (dim as f64, false),
    };
    Sizes {
        d_model: d,
        n_layers: model.n_layers as f64,
        n_heads: heads,
        head_dim,
        kv_heads: if model.n_kv_heads > 0 { model.n_kv_heads as f64 } else { heads },
        mlp_hidden: hidden as f64,
        swiglu: model.mlp == MlpKind::Swiglu,
        vocab_in,
        output_dim: io.output_dim as f64,
        tied: model.tie_embeddings && tokens,
        batch: batch_size as f64,
        seq_len: seq_len as f64,
    }
}

fn estimate(s: &Sizes) -> Footprint {
    let (d, hd) = (s.d_model, s.head_dim);
    let attention = 2.0 * d * s.n_heads * hd + 2.0 * d * s.kv_heads * hd;
    let mlp = if s.swiglu { 3.0 } else { 2.0 } * d * s.mlp_hidden;
    let head = if s.tied { 0.0 } else { d * s.output_dim };
    let params = s.n_layers * (attention + mlp) + s.vocab_in * d + head;
    let positions = s.batch * s.seq_len;
    let per_layer = 2.0 * d + (s.n_heads + 2.0 * s.kv_heads) * hd + s.n_heads * hd + s.mlp_hidden;
    let activations = positions * (s.n_layers * per_layer + s.output_dim);
    Footprint { params, state_bytes: 16.0 * params, activation_bytes: 4.0 * activations }
}

/// The floor of what training `model` on batches of `batch_size` sequences of `seq_len`
/// positions needs.
pub fn of(model: &ModelConfig, io: &ModelIo, batch_size: usize, seq_len: usize) -> Footprint {
    estimate(&sizes(model, io, batch_size, seq_len))
}

/// Sets one size in [`Sizes`] (to the ordinary value [`culprit`] tries).
type SetSize = fn(&mut Sizes, f64);

/// The size key that most inflates the estimate: the one whose return to an ordinary value
/// (the defaults a config starts from) shrinks it the most. `(key, value)`.
pub fn culprit(
    model: &ModelConfig,
    io: &ModelIo,
    batch_size: usize,
    seq_len: usize,
) -> (String, usize) {
    let base = sizes(model, io, batch_size, seq_len);
    let ordinary = ModelConfig::default();
    let candidates: [(&str, usize, usize, SetSize); 5] = [
        ("model.d_model", model.d_model, ordinary.d_model, |s, v| {
            s.mlp_hidden *= v / s.d_model;
            s.head_dim *= v / s.d_model;
            s.d_model = v;
        }),
        ("model.n_layers", model.n_layers, ordinary.n_layers, |s, v| s.n_layers = v),
        ("model.mlp_hidden", model.mlp_hidden, 4 * model.d_model, |s, v| s.mlp_hidden = v),
        ("train.batch_size", batch_size, 12, |s, v| s.batch = v),
        ("the task's sequence length", seq_len, 256, |s, v| s.seq_len = v),
    ];
    let mut best = ("model.d_model".to_string(), model.d_model, f64::INFINITY);
    for (key, value, usual, set) in candidates {
        if value <= usual {
            continue;
        }
        let mut s = base.clone();
        set(&mut s, usual as f64);
        let left = estimate(&s).bytes();
        if left < best.2 {
            best = (key.to_string(), value, left);
        }
    }
    (best.0, best.1)
}

/// Memory this process may still use, bytes: the smaller of the kernel's `MemAvailable` plus
/// free swap and the cgroup's limit less its usage; `None` where neither can be read.
pub fn available_bytes() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let field = |name: &str| -> Option<f64> {
        let line = meminfo.as_deref()?.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    };
    let system = field("MemAvailable:").map(|a| a + field("SwapFree:").unwrap_or(0.0));
    let read = |p: &str| std::fs::read_to_string(p).ok()?.trim().parse::<f64>().ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .map(|max| max - read("/sys/fs/cgroup/memory.current").unwrap_or(0.0));
    match (system, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `bytes` for a person: `12.0 TB`, `20.1 GiB`-style, decimal units above a gigabyte.
pub fn human(bytes: f64) -> String {
    let units = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (unit, size) in units {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes / size);
        }
    }
    format!("{bytes:.0} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(vocab: usize) -> ModelIo {
        ModelIo { input: ModelInput::Tokens { vocab }, output_dim: vocab }
    }

    /// The parameter count is exact for the plain GPT block (no biases, no positions, which
    /// it leaves out as a floor), and each size key is named when it is the one blown up.
    #[test]
    fn the_floor_counts_a_plain_block_and_names_the_key_that_inflates_it() {
        let model = ModelConfig { d_model: 64, n_heads: 4, n_layers: 2, ..Default::default() };
        let f = of(&model, &tokens(100), 8, 32);
        // Per layer 4·64² attention + 2·64·256 MLP; embedding and head 100·64 each.
        assert_eq!(f.params, 2.0 * (4.0 * 64.0 * 64.0 + 2.0 * 64.0 * 256.0) + 2.0 * 6400.0);
        assert_eq!(f.state_bytes, 16.0 * f.params);
        let blown = |m: ModelConfig, batch, len| culprit(&m, &tokens(100), batch, len);
        let wide = ModelConfig { d_model: 1_000_000, ..model.clone() };
        assert_eq!(blown(wide.clone(), 8, 32), ("model.d_model".into(), 1_000_000));
        assert!(of(&wide, &tokens(100), 8, 32).bytes() > 1e13);
        let deep = ModelConfig { n_layers: 100_000, ..model.clone() };
        assert_eq!(blown(deep, 8, 32), ("model.n_layers".into(), 100_000));
        assert_eq!(blown(model.clone(), 10_000_000, 32), ("train.batch_size".into(), 10_000_000));
        assert!(of(&model, &tokens(100), 10_000_000, 32).activation_bytes > 1e12);
    }
}
