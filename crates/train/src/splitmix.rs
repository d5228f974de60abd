//! SplitMix64 (Steele, Lea and Flood): the 64-bit mixer every derived seed goes through
//! ([`crate::seed`]), and a tiny generator for resampling indices (eval's bootstrap).

/// SplitMix64: tiny, fast, and good enough for seeds and resampling indices; not for
/// cryptography.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform index in `0..n` via a widening multiply; the bias is at most `n / 2^64`,
    /// negligible for sample sizes.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// A bijective mix of 64 bits: the first output of [`SplitMix64`] seeded with `z`.
pub fn splitmix64(z: u64) -> u64 {
    SplitMix64::new(z).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_and_range() {
        // Reference output of SplitMix64 seeded with 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[rng.below(3)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 900), "{counts:?}");
    }
}
