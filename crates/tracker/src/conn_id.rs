//! UDP connection IDs (BEP 15): a keyed hash of the time window and the client's address, so they cannot
//! be forged or replayed from another address, and need no server-side state. Windows count from the
//! Unix epoch, so nodes sharing the key (through a cluster) issue and accept the same IDs.

use std::hash::Hasher;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use siphasher::sip::SipHasher13;

/// Seconds per window. An ID is accepted in its own window and the next: 1 to 2 minutes of life.
const WINDOW_SECS: u64 = 60;

pub struct ConnectionIds {
    keys: (u64, u64),
}

impl ConnectionIds {
    pub fn new(keys: (u64, u64)) -> Self {
        ConnectionIds { keys }
    }

    fn window(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            / WINDOW_SECS
    }

    fn id_for(&self, window: u64, addr: &SocketAddr) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write_u64(window);
        match addr {
            SocketAddr::V4(a) => h.write(&a.ip().octets()),
            SocketAddr::V6(a) => h.write(&a.ip().octets()),
        }
        h.write_u16(addr.port());
        h.finish()
    }

    pub fn issue(&self, addr: &SocketAddr) -> u64 {
        self.id_for(self.window(), addr)
    }

    pub fn valid(&self, id: u64, addr: &SocketAddr) -> bool {
        let w = self.window();
        id == self.id_for(w, addr) || (w > 0 && id == self.id_for(w - 1, addr))
    }

    #[cfg(test)]
    fn valid_at(&self, id: u64, addr: &SocketAddr, window: u64) -> bool {
        id == self.id_for(window, addr) || (window > 0 && id == self.id_for(window - 1, addr))
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
        let id = ids.issue(&a);
        assert!(ids.valid(id, &a));
        assert!(!ids.valid(id, &b));
        assert!(!ids.valid(id ^ 1, &a));
        assert!(
            !ConnectionIds::new((1, 3)).valid(id, &a),
            "another key gives other IDs"
        );
        let w = ids.window();
        assert!(
            ids.valid_at(id, &a, w + 1),
            "still valid in the next window"
        );
        assert!(!ids.valid_at(id, &a, w + 2), "expired after two windows");
    }
}
