//! The engine's random seeds. The generator itself is `torrent_core::Rng`, seeded by its caller; here it
//! gets a seed from the OS, so choices differ from run to run and from client to client.

use std::hash::{BuildHasher, Hasher};

pub(crate) use torrent_core::Rng;

/// A seed from the keys of std's `RandomState`, which come from the operating system's random source,
/// mixed with the clock so two seeds taken in one thread still differ.
pub(crate) fn os_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    h.write_u64(nanos);
    h.finish()
}

/// A generator seeded from the OS.
pub(crate) fn from_os() -> Rng {
    Rng::new(os_seed())
}

#[cfg(test)]
mod tests {
    #[test]
    fn generators_from_the_os_differ() {
        let (mut a, mut b) = (super::from_os(), super::from_os());
        let a: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let b: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_ne!(a, b);
    }
}
