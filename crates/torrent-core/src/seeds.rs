//! [`SeedAddrs`]: addresses known to be seeds, so a seed does not dial them.
//!
//! Two seeds have nothing to give each other: a seed that dials one connects, finds both are seeds,
//! disconnects, and learns the address again by peer exchange or from the tracker. In a flash crowd
//! every finished peer did that over and over (tens of thousands of both-seeds disconnects in a
//! 150-peer run). libtorrent marks a peer entry as a seed from the PEX `added.f` flag and from a
//! both-seeds disconnect and does not connect to such entries while seeding; this is that mark.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::DetSet;

/// A bounded set of addresses, the oldest forgotten first when full: peer exchange is chosen by
/// strangers and may name any number of addresses as seeds.
#[derive(Debug, Default)]
pub(crate) struct SeedAddrs {
    order: VecDeque<SocketAddr>,
    set: DetSet<SocketAddr>,
}

impl SeedAddrs {
    /// Marks `addr` a seed, forgetting the oldest mark past `cap`.
    pub(crate) fn insert(&mut self, addr: SocketAddr, cap: usize) {
        if cap == 0 || !self.set.insert(addr) {
            return;
        }
        self.order.push_back(addr);
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    pub(crate) fn contains(&self, addr: &SocketAddr) -> bool {
        self.set.contains(addr)
    }

    /// Unmarks `addr` (it turned out to lack pieces: another peer may use the address now).
    pub(crate) fn remove(&mut self, addr: &SocketAddr) {
        // Rare (a mark proved wrong), so a walk over at most `cap` entries is fine.
        if self.set.remove(addr) {
            self.order.retain(|a| a != addr);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.order.clear();
        self.set.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn the_oldest_mark_goes_when_full() {
        let mut s = SeedAddrs::default();
        for p in 1..=4 {
            s.insert(a(p), 3);
        }
        s.insert(a(4), 3);
        assert_eq!(s.set.len(), 3);
        assert_eq!(s.order.len(), 3);
        assert!(!s.contains(&a(1)));
        assert!((2..=4).all(|p| s.contains(&a(p))));
        s.remove(&a(3));
        assert!(!s.contains(&a(3)));
        s.insert(a(5), 3);
        s.insert(a(6), 3);
        assert_eq!(s.set.len(), 3);
        assert_eq!(s.order.len(), 3);
        assert!(!s.contains(&a(2)));
    }
}
