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

/// Votes are kept per address family: a dual-stack host has one IPv4 and one IPv6 address, and
/// the peers reaching it over one family cannot outvote those reaching it over the other.
#[derive(Debug, Default)]
pub struct ExternalIpVotes {
    v4: FamilyVotes,
    v6: FamilyVotes,
}

#[derive(Debug, Default)]
struct FamilyVotes {
    by_voter: HashMap<Voter, IpAddr>,
}

impl ExternalIpVotes {
    /// Records that `voter` sees us at `seen` (its latest word for that family counts). Returns the
    /// family's majority if this vote changed it.
    pub fn record(&mut self, voter: Voter, seen: IpAddr) -> Option<IpAddr> {
        if seen.is_unspecified() || seen.is_loopback() || seen.is_multicast() {
            return None;
        }
        let family = match seen {
            IpAddr::V4(_) => &mut self.v4,
            IpAddr::V6(_) => &mut self.v6,
        };
        let before = family.majority();
        if family.by_voter.len() >= MAX_VOTERS && !family.by_voter.contains_key(&voter) {
            return None;
        }
        family.by_voter.insert(voter, seen);
        let after = family.majority();
        (after != before).then_some(after).flatten()
    }

    /// Our IPv4 address as most say, else our IPv6 address as most say.
    pub fn majority(&self) -> Option<IpAddr> {
        self.v4.majority().or_else(|| self.v6.majority())
    }

    /// Our IPv6 address as most voters over IPv6 say.
    pub fn majority_v6(&self) -> Option<IpAddr> {
        self.v6.majority()
    }
}

impl FamilyVotes {
    /// The address named by more than half of the votes, with at least [`MIN_VOTES`] of them.
    fn majority(&self) -> Option<IpAddr> {
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
        assert_eq!(v.v4.by_voter.len(), MAX_VOTERS);
        assert_eq!(v.majority(), Some(ip("11.11.11.1")));
    }

    #[test]
    fn each_family_has_its_own_majority() {
        let mut v = ExternalIpVotes::default();
        let tracker = || Voter::Tracker("http://t.example/announce".into());
        // Three peers over IPv4 and two over IPv6: the IPv6 votes are not outvoted by the IPv4 ones.
        for p in ["1.1.1.1", "2.2.2.2", "3.3.3.3"] {
            v.record(peer(p), ip("11.11.11.1"));
        }
        v.record(peer("2001:db8::1"), ip("2001:db8:ff::7"));
        assert_eq!(
            v.record(peer("2001:db8::2"), ip("2001:db8:ff::7")),
            Some(ip("2001:db8:ff::7"))
        );
        assert_eq!(v.majority(), Some(ip("11.11.11.1")));
        assert_eq!(v.majority_v6(), Some(ip("2001:db8:ff::7")));
        // A tracker announced to over both families votes once in each.
        v.record(tracker(), ip("11.11.11.1"));
        v.record(tracker(), ip("2001:db8:ff::7"));
        assert_eq!(v.majority(), Some(ip("11.11.11.1")));
        assert_eq!(v.majority_v6(), Some(ip("2001:db8:ff::7")));
    }
}
