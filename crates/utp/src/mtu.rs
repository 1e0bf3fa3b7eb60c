//! Path MTU discovery, as libtorrent does it for uTP: a binary search for the largest datagram
//! the path carries, between a floor known to pass and a ceiling known (or assumed) not to.
//!
//! Ordinary packets are at most the floor. Now and then one packet (the probe) is the midpoint
//! instead, sent with the IP "don't fragment" bit by the driver: acked, the floor rises to it;
//! lost (declared so by the acks of the packets around it, by a timeout with nothing else in
//! flight, or refused by the local stack with `EMSGSIZE`), the ceiling drops below it. A probe
//! is only sent once the window holds more than three floor-sized packets, so that its loss is
//! told apart from the loss of a whole window. A lost probe does not shrink the congestion
//! window, and no other loss moves the floor or the ceiling.
//!
//! Sizes are UDP payload bytes (the uTP header included).

/// IPv4's minimum reassembly size (576) less its header and UDP's: the floor to start from.
pub const MIN_DATAGRAM: usize = 576 - IPV4_HEADER - UDP_HEADER;
/// The ceiling is never above what an Ethernet MTU carries, whatever the route says (loopback
/// says 65536): libtorrent clamps at this too, and datagrams beyond it are rare on the internet.
pub const ETHERNET_MTU: usize = 1500;
pub const IPV4_HEADER: usize = 20;
pub const IPV6_HEADER: usize = 40;
pub const UDP_HEADER: usize = 8;
/// The search stops once floor and ceiling are this close: a few bytes more per packet are not
/// worth the probes.
pub const SEARCH_DONE: usize = 16;
/// A probe waits until the window holds more than this many floor-sized packets.
pub const PROBE_CWND_PACKETS: usize = 3;

/// The largest UDP payload worth trying to a peer: the route's MTU (when known) clamped to
/// [`ETHERNET_MTU`], less the IP and UDP headers. Never below [`MIN_DATAGRAM`].
pub fn ceiling_for(route_mtu: Option<usize>, ipv6: bool) -> usize {
    let ip = if ipv6 { IPV6_HEADER } else { IPV4_HEADER };
    let mtu = route_mtu.unwrap_or(ETHERNET_MTU).min(ETHERNET_MTU);
    mtu.saturating_sub(ip + UDP_HEADER).max(MIN_DATAGRAM)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathMtu {
    floor: usize,
    ceiling: usize,
    /// The probe in flight: its sequence number and datagram size.
    probe: Option<(u16, usize)>,
}

impl PathMtu {
    /// A search up to `ceiling` (a datagram size), from [`MIN_DATAGRAM`] or `ceiling` if lower.
    pub fn new(ceiling: usize) -> PathMtu {
        PathMtu {
            floor: MIN_DATAGRAM.min(ceiling),
            ceiling,
            probe: None,
        }
    }

    /// Largest datagram known to pass: what ordinary packets are sized to.
    pub fn floor(&self) -> usize {
        self.floor
    }

    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// Lowers the ceiling (the route's MTU became known, or is narrower than thought).
    pub fn limit(&mut self, ceiling: usize) {
        self.ceiling = self.ceiling.min(ceiling);
        self.floor = self.floor.min(self.ceiling);
        if self.probe.is_some_and(|(_, size)| size > self.ceiling) {
            self.probe = None;
        }
    }

    pub fn searching(&self) -> bool {
        self.ceiling.saturating_sub(self.floor) >= SEARCH_DONE
    }

    /// The size the next packet should be as a probe, when one is due: none in flight, the search
    /// not done, and a window of more than [`PROBE_CWND_PACKETS`] floor-sized packets.
    pub fn probe_size(&self, cwnd: usize) -> Option<usize> {
        if self.probe.is_some() || !self.searching() || cwnd <= PROBE_CWND_PACKETS * self.floor {
            return None;
        }
        Some((self.floor + self.ceiling).div_ceil(2))
    }

    /// A probe of `size` bytes went out as sequence number `seq`. A packet no larger than the
    /// floor proves nothing and is not recorded.
    pub fn probe_sent(&mut self, seq: u16, size: usize) {
        if size > self.floor {
            self.probe = Some((seq, size));
        }
    }

    pub fn probe_seq(&self) -> Option<u16> {
        self.probe.map(|(seq, _)| seq)
    }

    /// Packet `seq` was acknowledged; returns whether it was the probe (the floor rises to it).
    pub fn acked(&mut self, seq: u16) -> bool {
        match self.probe {
            Some((s, size)) if s == seq => {
                self.floor = self.floor.max(size).min(self.ceiling);
                self.probe = None;
                true
            }
            _ => false,
        }
    }

    /// Packet `seq` was declared lost; returns whether it was the probe (the ceiling drops below
    /// it). Any other loss leaves floor and ceiling alone: it is congestion, not size.
    pub fn lost(&mut self, seq: u16) -> bool {
        match self.probe {
            Some((s, size)) if s == seq => {
                self.too_big(size);
                true
            }
            _ => false,
        }
    }

    /// A datagram of `size` bytes did not pass (a lost probe, or `EMSGSIZE` from the local
    /// stack): the ceiling drops below it. Should that go below the floor (the path narrowed),
    /// the search starts again from halfway down to [`MIN_DATAGRAM`], as libtorrent does.
    pub fn too_big(&mut self, size: usize) {
        self.probe = None;
        let ceiling = size.saturating_sub(1).max(MIN_DATAGRAM.min(self.ceiling));
        self.ceiling = self.ceiling.min(ceiling);
        if self.floor > self.ceiling {
            self.floor = (MIN_DATAGRAM.min(self.ceiling) + self.ceiling) / 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_from_route_clamped_to_ethernet() {
        assert_eq!(ceiling_for(None, false), 1472);
        assert_eq!(ceiling_for(Some(65536), false), 1472, "loopback");
        assert_eq!(ceiling_for(Some(65536), true), 1452);
        assert_eq!(ceiling_for(Some(1420), false), 1392, "a WireGuard route");
        assert_eq!(ceiling_for(Some(100), false), MIN_DATAGRAM);
    }

    #[test]
    fn no_probe_until_the_window_holds_more_than_three_floors() {
        let m = PathMtu::new(1472);
        assert_eq!(m.floor(), MIN_DATAGRAM);
        assert_eq!(m.probe_size(3 * MIN_DATAGRAM), None);
        assert_eq!(m.probe_size(3 * MIN_DATAGRAM + 1), Some((548 + 1472) / 2));
    }

    #[test]
    fn acked_probe_raises_floor_lost_probe_lowers_ceiling_converges_on_path() {
        let path = 1400; // what the path carries, unknown to the search
        let mut m = PathMtu::new(1472);
        let mut seq = 0u16;
        let mut probes = 0;
        while let Some(size) = m.probe_size(1 << 20) {
            seq += 5;
            m.probe_sent(seq, size);
            assert_eq!(m.probe_size(1 << 20), None, "one probe at a time");
            let (floor, ceiling) = (m.floor(), m.ceiling());
            if size <= path {
                assert!(m.acked(seq));
                assert_eq!((m.floor(), m.ceiling()), (size, ceiling));
            } else {
                assert!(m.lost(seq));
                assert_eq!((m.floor(), m.ceiling()), (floor, size - 1));
            }
            probes += 1;
        }
        assert!(probes <= 8, "binary search: {probes} probes");
        assert!(m.floor() <= path && path - m.floor() < SEARCH_DONE);
        assert!(m.ceiling() >= path);
    }

    #[test]
    fn other_packets_lost_or_acked_move_nothing() {
        let mut m = PathMtu::new(1472);
        m.probe_sent(10, 1010);
        assert!(!m.lost(9));
        assert!(!m.acked(11));
        assert_eq!(
            (m.floor(), m.ceiling(), m.probe_seq()),
            (548, 1472, Some(10))
        );
        // A floor-sized packet is no probe.
        let mut n = PathMtu::new(1472);
        n.probe_sent(3, 548);
        assert_eq!(n.probe_seq(), None);
    }

    #[test]
    fn emsgsize_and_narrowed_path_restart_from_halfway_down() {
        let mut m = PathMtu::new(1472);
        m.probe_sent(1, 1010);
        assert!(m.acked(1));
        assert_eq!(m.floor(), 1010);
        // The local stack refuses a datagram under the floor: the route narrowed.
        m.too_big(900);
        assert_eq!(m.ceiling(), 899);
        assert_eq!(m.floor(), (548 + 899) / 2);
        // Never below the minimum.
        m.too_big(10);
        assert_eq!((m.floor(), m.ceiling()), (548, 548));
        assert!(!m.searching());
    }

    #[test]
    fn limit_lowers_ceiling_and_drops_a_probe_above_it() {
        let mut m = PathMtu::new(1472);
        m.probe_sent(4, 1010);
        m.limit(1000);
        assert_eq!((m.floor(), m.ceiling(), m.probe_seq()), (548, 1000, None));
        m.limit(1400);
        assert_eq!(m.ceiling(), 1000, "only lowers");
        let small = PathMtu::new(300);
        assert_eq!((small.floor(), small.ceiling()), (300, 300));
        assert!(!small.searching());
    }
}
