//! A small, version-stable random generator (SplitMix64).
//!
//! The data stream must be identical across runs, machines and dependency
//! upgrades for exact resume, so the shuffling and augmentation randomness is
//! defined here rather than borrowed from a crate whose streams may change.

/// SplitMix64 (Steele, Lea & Flood 2014).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A generator for one (seed, epoch, item) triple.
    pub(crate) fn for_item(seed: u64, epoch: u64, item: u64) -> Self {
        let mut g = SplitMix64(seed ^ 0x5851_f42d_4c95_7f2d);
        let a = g.next_u64() ^ epoch;
        let mut g = SplitMix64(a);
        SplitMix64(g.next_u64() ^ item.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n) without modulo bias (Lemire's method).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A Fisher-Yates permutation of 0..n.
    pub(crate) fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_permutations_and_seeded() {
        let p = SplitMix64::new(1).permutation(100);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(p, SplitMix64::new(1).permutation(100));
        assert_ne!(p, SplitMix64::new(2).permutation(100));
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut g = SplitMix64::new(9);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[g.below(6) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        assert!((0..1000).map(|_| g.unit()).all(|u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn item_streams_differ() {
        let a = SplitMix64::for_item(1, 0, 0).next_u64();
        assert_ne!(a, SplitMix64::for_item(1, 0, 1).next_u64());
        assert_ne!(a, SplitMix64::for_item(1, 1, 0).next_u64());
        assert_ne!(a, SplitMix64::for_item(2, 0, 0).next_u64());
        assert_eq!(a, SplitMix64::for_item(1, 0, 0).next_u64());
    }
}
