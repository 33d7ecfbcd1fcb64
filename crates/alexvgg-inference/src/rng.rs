//! A small seeded random source for data order and augmentation, so that a run's randomness is a
//! pure function of its seed and position (epoch, step, sample) and `--resume` can replay it.

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, fast, and good enough for shuffling and crops.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
}

/// Derives an independent seed from a base seed and a position (e.g. `[epoch, step]`).
pub fn derive(seed: u64, parts: &[u64]) -> u64 {
    let mut g = SplitMix64::new(seed);
    let mut h = g.next_u64();
    for &p in parts {
        g = SplitMix64::new(h ^ p.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        h = g.next_u64();
    }
    h
}

/// A uniformly random permutation of `0..n` (Fisher-Yates).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut g = SplitMix64::new(seed);
    for i in (1..n).rev() {
        order.swap(i, g.below(i + 1));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_permutations_and_depend_on_the_seed() {
        let a = permutation(100, 1);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, permutation(100, 2));
        assert_eq!(a, permutation(100, 1));
    }

    #[test]
    fn derived_seeds_differ_by_position() {
        assert_ne!(derive(7, &[0, 1]), derive(7, &[1, 0]));
        assert_eq!(derive(7, &[3, 4]), derive(7, &[3, 4]));
        let mut g = SplitMix64::new(derive(7, &[1]));
        let mean = (0..10_000).map(|_| g.uniform()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
