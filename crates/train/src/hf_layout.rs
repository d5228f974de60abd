//! The two layout conventions attnlab and Hugging Face's Llama-family checkpoints differ in,
//! shared by `import` and `export --format hf`:
//!
//! - PyTorch's `nn.Linear.weight` is `[out, in]`, Burn's `[in, out]`: a transpose.
//! - RoPE pairs: Hugging Face rotates channel `c` of a head with `c + d/2` (`rotate_half`),
//!   attnlab (Burn's `RotaryEncoding`) `2c` with `2c + 1`, both at `θ^(−2c/d)`. Permuting every
//!   query and key head's channels (`adjacent[2c] = half[c]`, `adjacent[2c+1] = half[c + d/2]`)
//!   turns one into the other; `q·k` is unchanged because both sides move the same way.

/// `[rows, cols]` row-major -> `[cols, rows]`.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Which RoPE pairing the channels of a head are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// Hugging Face's: `c` with `c + d/2`.
    HalfSplit,
    /// attnlab's: `2c` with `2c + 1`.
    Adjacent,
}

/// Reorders rows (each `row_len` values) of heads `head_dim` wide, head-major, from pairing
/// `from` to the other one.
pub fn reorder_rope_rows(
    values: &[f32],
    row_len: usize,
    head_dim: usize,
    from: Pairing,
) -> Vec<f32> {
    let rows = values.len() / row_len.max(1);
    let half = head_dim / 2;
    // adjacent[j] = half_split[source(j)]
    let source = |j: usize| if j.is_multiple_of(2) { j / 2 } else { j / 2 + half };
    let mut out = vec![0.0; values.len()];
    for head in 0..rows / head_dim {
        for j in 0..head_dim {
            let (to, from_row) = match from {
                Pairing::HalfSplit => (j, source(j)),
                Pairing::Adjacent => (source(j), j),
            };
            let (dst, src) =
                ((head * head_dim + to) * row_len, (head * head_dim + from_row) * row_len);
            out[dst..dst + row_len].copy_from_slice(&values[src..src + row_len]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_reordering_interleaves_the_halves_and_undoes_itself() {
        // Two heads of width 4, one value per row.
        let half: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let adjacent = reorder_rope_rows(&half, 1, 4, Pairing::HalfSplit);
        assert_eq!(adjacent, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(reorder_rope_rows(&adjacent, 1, 4, Pairing::Adjacent), half);
        // Rows of several values move whole.
        let wide: Vec<f32> = (0..8).collect::<Vec<u8>>().iter().map(|&v| v as f32).collect();
        assert_eq!(
            reorder_rope_rows(&wide, 2, 4, Pairing::HalfSplit),
            vec![0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]
        );
    }

    #[test]
    fn transpose_moves_every_value() {
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
