//! UDP connection IDs (BEP 15): a keyed hash of the time window and the client's address, so they cannot
//! be forged or replayed from another address, and need no server-side state. Windows count from the
//! Unix epoch, so nodes sharing the key (through a cluster) issue and accept the same IDs.

use std::hash::Hasher;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use siphasher::sip::SipHasher13;

/// Seconds per window. An ID is accepted in its own window and the next: 1 to 2 minutes of life.
const WINDOW_SECS: u64 = 60;

/// Windows per key period: on a cluster the key changes every hour (each period's key is the cluster's,
/// fetched ahead), and an ID is checked with the key of its own window's period, so the previous
/// period's key is accepted for the minute after a change.
pub const PERIOD_WINDOWS: u64 = 60;

/// A slot's period when one key serves every period (a tracker without a cluster).
const ANY_PERIOD: u64 = u64::MAX;

/// Keys for three periods (previous, current, next), slot `period % 3`, behind a sequence lock: readers
/// (every UDP packet) take no lock and retry in the rare case they overlap a change.
pub struct ConnectionIds {
    seq: AtomicU64,
    /// Per slot: period, key 0, key 1.
    slots: [[AtomicU64; 3]; 3],
}

pub fn period_of(window: u64) -> u64 {
    window / PERIOD_WINDOWS
}

pub fn current_window() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        / WINDOW_SECS
}

impl ConnectionIds {
    /// One key for all time.
    pub fn new(keys: (u64, u64)) -> Self {
        let ids = ConnectionIds {
            seq: AtomicU64::new(0),
            slots: Default::default(),
        };
        for slot in 0..3 {
            ids.write_slot(slot, ANY_PERIOD, keys);
        }
        ids
    }

    /// No key yet: each period's comes from the cluster (`set_period_key`).
    pub fn rotating() -> Self {
        let ids = ConnectionIds {
            seq: AtomicU64::new(0),
            slots: Default::default(),
        };
        for slot in 0..3 {
            // Period 0 is 1970: never asked for.
            ids.write_slot(slot, 0, (0, 0));
        }
        ids
    }

    fn write_slot(&self, slot: usize, period: u64, keys: (u64, u64)) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.slots[slot][0].store(period, Ordering::Relaxed);
        self.slots[slot][1].store(keys.0, Ordering::Relaxed);
        self.slots[slot][2].store(keys.1, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Sets the key of `period` (from the cluster). One writer at a time.
    pub fn set_period_key(&self, period: u64, keys: (u64, u64)) {
        self.write_slot((period % 3) as usize, period, keys);
    }

    /// The key for `period`, if known.
    fn key_for(&self, period: u64) -> Option<(u64, u64)> {
        let slot = &self.slots[(period % 3) as usize];
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            let (p, k0, k1) = (
                slot[0].load(Ordering::Relaxed),
                slot[1].load(Ordering::Relaxed),
                slot[2].load(Ordering::Relaxed),
            );
            fence(Ordering::Acquire);
            if s1.is_multiple_of(2) && self.seq.load(Ordering::Relaxed) == s1 {
                return (p == period || p == ANY_PERIOD).then_some((k0, k1));
            }
            std::hint::spin_loop();
        }
    }

    fn id_for(&self, window: u64, addr: &SocketAddr) -> Option<u64> {
        let keys = self.key_for(period_of(window))?;
        let mut h = SipHasher13::new_with_keys(keys.0, keys.1);
        h.write_u64(window);
        match addr {
            SocketAddr::V4(a) => h.write(&a.ip().octets()),
            SocketAddr::V6(a) => h.write(&a.ip().octets()),
        }
        h.write_u16(addr.port());
        Some(h.finish())
    }

    /// An ID for `addr`, or None if this period's key is not known (a node that lost its cluster for
    /// longer than a period): the connect then goes unanswered and the client retries.
    pub fn issue(&self, addr: &SocketAddr) -> Option<u64> {
        self.id_for(current_window(), addr)
    }

    pub fn valid(&self, id: u64, addr: &SocketAddr) -> bool {
        self.valid_at(id, addr, current_window())
    }

    fn valid_at(&self, id: u64, addr: &SocketAddr, window: u64) -> bool {
        Some(id) == self.id_for(window, addr)
            || (window > 0 && Some(id) == self.id_for(window - 1, addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_to_address_key_and_time() {
        let ids = ConnectionIds::new((1, 2));
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let id = ids.issue(&a).unwrap();
        assert!(ids.valid(id, &a));
        assert!(!ids.valid(id, &b));
        assert!(!ids.valid(id ^ 1, &a));
        assert!(
            !ConnectionIds::new((1, 3)).valid(id, &a),
            "another key gives other IDs"
        );
        let w = current_window();
        assert!(
            ids.valid_at(id, &a, w + 1),
            "still valid in the next window"
        );
        assert!(!ids.valid_at(id, &a, w + 2), "expired after two windows");
    }

    #[test]
    fn rotated_keys_by_period_and_the_previous_period_accepted_for_a_minute() {
        let ids = ConnectionIds::new((0, 0));
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let p = 1000;
        let last = (p + 1) * PERIOD_WINDOWS - 1;
        ids.set_period_key(p, (1, 1));
        ids.set_period_key(p + 1, (2, 2));
        ids.set_period_key(p + 2, (3, 3));
        let old = ids.id_for(last, &a).unwrap();
        let new = ids.id_for(last + 1, &a).unwrap();
        assert_ne!(old, new);
        assert!(
            ids.valid_at(old, &a, last + 1),
            "previous period, next window"
        );
        assert!(!ids.valid_at(old, &a, last + 2));
        assert!(ids.valid_at(new, &a, last + 1));
        // Another node with the same period keys agrees.
        let other = ConnectionIds::new((9, 9));
        other.set_period_key(p + 1, (2, 2));
        assert_eq!(other.id_for(last + 1, &a), Some(new));
        // A period whose key is unknown gets no ID and accepts none.
        assert_eq!(ids.id_for((p + 5) * PERIOD_WINDOWS, &a), None);
    }
}
