//! Our address as others see it: the `yourip` of peers' BEP 10 extension handshakes and the
//! `external ip` of trackers' replies (BEP 24), one vote per peer address or tracker URL, and the
//! address most of them name.

use std::collections::HashMap;
use std::net::IpAddr;

/// Voters remembered; past this a new voter replaces nobody (the early majority stands).
pub const MAX_VOTERS: usize = 256;
/// Fewer votes than this decide nothing: one peer alone could say anything.
pub const MIN_VOTES: usize = 2;

/// Who says where we are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Voter {
    Peer(IpAddr),
    Tracker(String),
}

#[derive(Debug, Default)]
pub struct ExternalIpVotes {
    by_voter: HashMap<Voter, IpAddr>,
}

impl ExternalIpVotes {
    /// Records that `voter` sees us at `seen` (its latest word counts). Returns the majority if this
    /// vote changed it.
    pub fn record(&mut self, voter: Voter, seen: IpAddr) -> Option<IpAddr> {
        if seen.is_unspecified() || seen.is_loopback() || seen.is_multicast() {
            return None;
        }
        let before = self.majority();
        if self.by_voter.len() >= MAX_VOTERS && !self.by_voter.contains_key(&voter) {
            return None;
        }
        self.by_voter.insert(voter, seen);
        let after = self.majority();
        (after != before).then_some(after).flatten()
    }

    /// The address named by more than half of the votes, with at least [`MIN_VOTES`] of them.
    pub fn majority(&self) -> Option<IpAddr> {
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for seen in self.by_voter.values() {
            *counts.entry(*seen).or_default() += 1;
        }
        counts
            .into_iter()
            .find(|&(_, n)| n >= MIN_VOTES && n * 2 > self.by_voter.len())
            .map(|(ip, _)| ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peer(s: &str) -> Voter {
        Voter::Peer(ip(s))
    }

    #[test]
    fn a_majority_of_at_least_two_peers_decides() {
        let mut v = ExternalIpVotes::default();
        assert_eq!(v.record(peer("1.1.1.1"), ip("11.11.11.1")), None);
        assert_eq!(v.majority(), None);
        assert_eq!(
            v.record(peer("2.2.2.2"), ip("11.11.11.1")),
            Some(ip("11.11.11.1"))
        );
        // A liar and a second vote from the same peer do not outweigh two others.
        assert_eq!(v.record(peer("3.3.3.3"), ip("6.6.6.6")), None);
        assert_eq!(v.record(peer("3.3.3.3"), ip("6.6.6.6")), None);
        assert_eq!(v.majority(), Some(ip("11.11.11.1")));
        // A tie is no majority.
        v.record(peer("4.4.4.4"), ip("6.6.6.6"));
        assert_eq!(v.majority(), None);
        assert_eq!(v.record(peer("5.5.5.5"), ip("0.0.0.0")), None);
        // A tracker's word counts as one more voter.
        let t = Voter::Tracker("http://t.example/announce".into());
        assert_eq!(v.record(t, ip("11.11.11.1")), Some(ip("11.11.11.1")));
    }

    #[test]
    fn voters_are_bounded() {
        let mut v = ExternalIpVotes::default();
        for i in 0..(MAX_VOTERS as u32 + 50) {
            v.record(Voter::Peer(IpAddr::from(i.to_be_bytes())), ip("11.11.11.1"));
        }
        assert_eq!(v.by_voter.len(), MAX_VOTERS);
        assert_eq!(v.majority(), Some(ip("11.11.11.1")));
    }
}
