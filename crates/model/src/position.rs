//! Position information: added to the input (`learned`, `sinusoidal`), rotated into queries
//! and keys (`rope`, Su et al. 2021, arXiv 2104.09864, adjacent-pair layout), or absent (`none`).
//!
//! Sinusoidal (Vaswani et al. 2017): `pe[t, 2i] = sin(t / 10000^(2i/D))`,
//! `pe[t, 2i+1] = cos(t / 10000^(2i/D))`, computed on the fly (nothing to store).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, RotaryEncoding, RotaryEncodingConfig};
use burn::tensor::{Device, Int, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionKind {
    #[default]
    Learned,
    Sinusoidal,
    Rope,
    None,
}

#[derive(Module, Debug)]
pub struct Positions {
    /// `learned` only: `weight: [max_seq_len, d_model]`.
    pub learned: Option<Embedding>,
    /// `rope` only (no parameters).
    pub rope: Option<RotaryEncoding>,
    #[module(skip)]
    kind: PositionKind,
}

impl Positions {
    /// `rope_dim` is the per-head width RoPE rotates.
    pub fn new(
        kind: PositionKind,
        max_seq_len: usize,
        d_model: usize,
        rope_dim: usize,
        device: &Device,
    ) -> Self {
        Self {
            learned: (kind == PositionKind::Learned)
                .then(|| EmbeddingConfig::new(max_seq_len, d_model).init(device)),
            rope: (kind == PositionKind::Rope)
                .then(|| RotaryEncodingConfig::new(max_seq_len, rope_dim).init(device)),
            kind,
        }
    }

    pub fn kind(&self) -> PositionKind {
        self.kind
    }

    /// Adds position information for tokens at `offset..offset + seq` (a no-op for rope/none).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn add(&self, x: Tensor<3>, offset: usize) -> Tensor<3> {
        let [_, t, d] = x.dims();
        let device = x.device();
        match self.kind {
            PositionKind::Learned => {
                let ids = Tensor::<1, Int>::arange(offset as i64..(offset + t) as i64, &device)
                    .reshape([1, t]);
                x + self.learned.as_ref().expect("learned positions").forward(ids)
            }
            PositionKind::Sinusoidal => x + sinusoidal(offset, t, d, &device).unsqueeze::<3>(),
            PositionKind::Rope | PositionKind::None => x,
        }
    }
}

/// `[seq, d_model]` sinusoidal table for positions `offset..offset + seq`.
pub fn sinusoidal(offset: usize, seq: usize, d_model: usize, device: &Device) -> Tensor<2> {
    let mut table = Vec::with_capacity(seq * d_model);
    for t in offset..offset + seq {
        for c in 0..d_model {
            let freq = 10000f64.powf(-((c / 2 * 2) as f64) / d_model as f64);
            let angle = t as f64 * freq;
            table.push(if c % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    Tensor::<1>::from_floats(table.as_slice(), device).reshape([seq, d_model])
}
