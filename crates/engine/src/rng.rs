//! A small generator for choices that must differ from run to run and from client to client, such as
//! which choked peer gets the optimistic unchoke. Nothing here has to be unpredictable to an attacker,
//! so a xorshift seeded once from the OS is enough and needs no extra dependency.

use std::hash::{BuildHasher, Hasher};

pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from the keys of std's `RandomState`, which come from the operating system's random
    /// source, mixed with the clock so two generators made in one thread still differ.
    pub(crate) fn from_os() -> Rng {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        h.write_u64(nanos);
        // xorshift must never hold zero, or it stays zero.
        Rng(h.finish() | 1)
    }

    /// xorshift64* (Vigna).
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0); the multiply-shift keeps the high bits, the best ones of xorshift*.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn covers_a_small_range_and_differs_between_generators() {
        let mut rng = Rng::from_os();
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[rng.below(7)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 700), "{seen:?}");
        let (mut a, mut b) = (Rng::from_os(), Rng::from_os());
        let a: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let b: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_ne!(a, b);
    }
}
