//! BEP 55 as a relay sees it (which rendezvous to answer and how) and as a home peer does (whom to
//! ask for an introduction to a peer we cannot reach, when to ask again, and which dials and
//! connections come from a relay's `connect`), with no access to the peer table. The torrent finds
//! the peers; this decides.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use wire::HolepunchError;

use crate::DetMap;

/// `ut_holepunch` messages taken from one peer per window, at most: each rendezvous makes us write to
/// two peers and a target dial out, so a peer may not turn us into a stream of introductions (its
/// budget is tested in tests/core.rs, in virtual time).
pub const MAX_RENDEZVOUS: u32 = 20;
/// The window `MAX_RENDEZVOUS` counts over.
pub const RENDEZVOUS_WINDOW: Duration = Duration::from_secs(60);

/// What the relay knows of the peer a rendezvous names.
pub(crate) struct Target {
    /// The address to hand the requester for it.
    pub addr: SocketAddr,
    pub speaks_holepunch: bool,
    pub is_requester: bool,
}

/// What to do with one rendezvous.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Tell the requester to connect to the first address and the target to the second.
    Introduce {
        requester_to: SocketAddr,
        target_to: SocketAddr,
    },
    Refuse(HolepunchError),
    /// Neither: too many asked, or an introduction across the boundary of a private network.
    Ignore,
}

/// The answer to a rendezvous from the peer reachable at `requester` for the peer `asked_for`.
pub(crate) fn answer(
    requester: SocketAddr,
    asked_for: SocketAddr,
    target: Option<Target>,
) -> Answer {
    let Some(target) = target else {
        return Answer::Refuse(HolepunchError::NotConnected);
    };
    if target.is_requester {
        return Answer::Refuse(HolepunchError::NoSelf);
    }
    if !target.speaks_holepunch {
        return Answer::Refuse(HolepunchError::NoSupport);
    }
    // As libtorrent: a peer outside a private network is not introduced to one inside it, which would
    // tell it that peer's private address (and the other way round is of no use to either).
    if is_local(requester.ip()) != is_local(target.addr.ip()) {
        return Answer::Ignore;
    }
    Answer::Introduce {
        requester_to: asked_for,
        target_to: requester,
    }
}

/// Whether a `Connect` naming `addr` from a peer at `relay` may be dialled: a relay outside a private
/// network cannot know an address inside one, so that is refused, as libtorrent does.
pub(crate) fn may_dial(relay: IpAddr, addr: SocketAddr) -> bool {
    addr.port() != 0 && !addr.ip().is_unspecified() && (is_local(relay) || !is_local(addr.ip()))
}

fn is_local(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Rendezvous taken from one peer in the current window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RendezvousBudget {
    window_start: Option<Instant>,
    used: u32,
}

impl RendezvousBudget {
    pub(crate) fn new() -> RendezvousBudget {
        RendezvousBudget {
            window_start: None,
            used: 0,
        }
    }

    /// Takes one; false when the window's allowance is spent.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.take_up_to(now, MAX_RENDEZVOUS)
    }

    /// Takes one of an allowance of `max` per window.
    fn take_up_to(&mut self, now: Instant, max: u32) -> bool {
        let fresh = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= RENDEZVOUS_WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used >= max {
            return false;
        }
        self.used += 1;
        true
    }
}

/// Addresses whose peer-exchange source we remember, at most (as many as we keep to dial).
pub const MAX_LEADS: usize = crate::config::MAX_KNOWN;
/// Rendezvous we send one relay per [`RENDEZVOUS_WINDOW`], at most: half of what a Spore relay takes
/// from one peer, so our asks never make it ignore the rest.
pub const MAX_ASKED: u32 = MAX_RENDEZVOUS / 2;
/// After asking for a peer, how long before we may ask for it again (doubling up to the second while
/// the punches fail).
pub const ASK_BACKOFF: (Duration, Duration) = (Duration::from_secs(120), Duration::from_secs(1800));
/// After a relay's error message about a peer, how long before we ask anyone for it again.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(600);
/// How long after a relay's `connect` a dial to that address goes in holepunch mode, and a connection
/// with it counts as punched: the other side dials within a round trip of us, and a uTP dial gives up
/// after a few seconds.
pub const PUNCH_WINDOW: Duration = Duration::from_secs(20);

/// Who told us of an address, by peer exchange (BEP 11).
#[derive(Debug, Clone, Copy)]
struct Lead {
    /// The informant's key in the peer table.
    relay: u64,
}

/// When we may next ask for an address, and how long we then wait after that.
#[derive(Debug, Clone, Copy)]
struct Asked {
    /// When we last asked (a connection soon after comes from the punch).
    at: Option<Instant>,
    next: Instant,
    backoff: Duration,
}

/// The home peer's side of BEP 55 for one torrent, bounded: leads and asks at most [`MAX_LEADS`]
/// each, the oldest forgotten first; punches in progress at most [`MAX_LEADS`].
#[derive(Default)]
pub(crate) struct Punches {
    leads: DetMap<SocketAddr, Lead>,
    lead_order: VecDeque<SocketAddr>,
    asked: DetMap<SocketAddr, Asked>,
    asked_order: VecDeque<SocketAddr>,
    /// Addresses a relay told us to connect to, and when.
    told: DetMap<SocketAddr, Instant>,
    told_order: VecDeque<SocketAddr>,
    /// Our rendezvous per relay in the current window.
    budgets: DetMap<u64, RendezvousBudget>,
}

/// Inserts `key` into a map bounded by `order` (oldest first), forgetting the oldest when full.
fn bounded_insert<V>(
    map: &mut DetMap<SocketAddr, V>,
    order: &mut VecDeque<SocketAddr>,
    key: SocketAddr,
    value: V,
) {
    if map.insert(key, value).is_none() {
        order.push_back(key);
        while order.len() > MAX_LEADS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
}

impl Punches {
    /// Peer `relay` listed `addr` in a peer exchange: it is connected to that peer, so it may
    /// introduce us if we cannot reach it. The latest informant is the one kept.
    pub(crate) fn learned(&mut self, addr: SocketAddr, relay: u64) {
        match self.leads.get_mut(&addr) {
            Some(lead) => lead.relay = relay,
            None => bounded_insert(&mut self.leads, &mut self.lead_order, addr, Lead { relay }),
        }
    }

    /// Peer `relay` said it dropped `addr`: it can no longer introduce us.
    pub(crate) fn dropped(&mut self, addr: SocketAddr, relay: u64) {
        if self.leads.get(&addr).is_some_and(|l| l.relay == relay) {
            self.leads.remove(&addr);
        }
    }

    /// Peer `relay`'s connection ended.
    pub(crate) fn relay_gone(&mut self, relay: u64) {
        self.budgets.remove(&relay);
    }

    /// A dial to `addr` found nobody: the relay to ask for a rendezvous now, if any. `usable` says
    /// whether a peer is still connected and takes `ut_holepunch` messages. A dial made on a relay's
    /// `connect` that fails is not asked for again before the back-off, nor is one asked for lately.
    pub(crate) fn unreachable(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        usable: impl Fn(u64) -> bool,
    ) -> Option<u64> {
        if self.is_punching(addr, now) {
            // The punch itself failed: what we asked then waits out its back-off.
            return None;
        }
        if self.asked.get(&addr).is_some_and(|a| now < a.next) {
            return None;
        }
        let relay = self.leads.get(&addr)?.relay;
        if !usable(relay) {
            return None;
        }
        if !self
            .budgets
            .entry(relay)
            .or_insert_with(RendezvousBudget::new)
            .take_up_to(now, MAX_ASKED)
        {
            return None;
        }
        let backoff = self
            .asked
            .get(&addr)
            .map_or(ASK_BACKOFF.0, |a| (a.backoff * 2).min(ASK_BACKOFF.1));
        let asked = Asked {
            at: Some(now),
            next: now + backoff,
            backoff,
        };
        match self.asked.get_mut(&addr) {
            Some(a) => *a = asked,
            None => bounded_insert(&mut self.asked, &mut self.asked_order, addr, asked),
        }
        Some(relay)
    }

    /// A relay answered our rendezvous for `addr` with an error: nobody is asked for it for a while.
    pub(crate) fn refused(&mut self, addr: SocketAddr, now: Instant) {
        let next = now + REFUSED_BACKOFF;
        match self.asked.get_mut(&addr) {
            Some(a) => a.next = a.next.max(next),
            None => bounded_insert(
                &mut self.asked,
                &mut self.asked_order,
                addr,
                Asked {
                    at: None,
                    next,
                    backoff: ASK_BACKOFF.0,
                },
            ),
        }
    }

    /// A relay told us to connect to `addr` now.
    pub(crate) fn told(&mut self, addr: SocketAddr, now: Instant) {
        match self.told.get_mut(&addr) {
            Some(at) => *at = now,
            None => bounded_insert(&mut self.told, &mut self.told_order, addr, now),
        }
    }

    /// Whether a dial to `addr` is one a relay asked for lately: it goes over uTP, as the other side's
    /// does, whatever is remembered of the peer.
    pub(crate) fn is_punching(&self, addr: SocketAddr, now: Instant) -> bool {
        self.told
            .get(&addr)
            .is_some_and(|at| now.saturating_duration_since(*at) < PUNCH_WINDOW)
    }

    /// Whether a connection with `addr` just made is the punched one: with an address a relay named
    /// or we asked one for lately, or, incoming, from its IP (over TCP its port is not the one it
    /// listens on). The target's dial may come in before the relay's `connect` reaches us.
    pub(crate) fn punched(&self, addr: SocketAddr, incoming: bool, now: Instant) -> bool {
        let fresh = |at: Instant| now.saturating_duration_since(at) < PUNCH_WINDOW;
        let asked_at = |a: &SocketAddr| self.asked.get(a).and_then(|a| a.at);
        if self.is_punching(addr, now) || asked_at(&addr).is_some_and(fresh) {
            return true;
        }
        incoming
            && (self
                .told
                .iter()
                .any(|(a, at)| a.ip() == addr.ip() && fresh(*at))
                || self
                    .asked
                    .iter()
                    .any(|(a, x)| a.ip() == addr.ip() && x.at.is_some_and(fresh)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn target(addr: &str, speaks: bool, is_requester: bool) -> Option<Target> {
        Some(Target {
            addr: a(addr),
            speaks_holepunch: speaks,
            is_requester,
        })
    }

    #[test]
    fn answers_as_bep_55_says() {
        let (req, asked) = (a("203.0.113.1:6881"), a("198.51.100.2:7000"));
        assert_eq!(
            answer(req, asked, target("198.51.100.2:7000", true, false)),
            Answer::Introduce {
                requester_to: asked,
                target_to: req
            }
        );
        assert_eq!(
            answer(req, asked, None),
            Answer::Refuse(HolepunchError::NotConnected)
        );
        assert_eq!(
            answer(req, asked, target("198.51.100.2:7000", false, false)),
            Answer::Refuse(HolepunchError::NoSupport)
        );
        assert_eq!(
            answer(req, req, target("203.0.113.1:6881", true, true)),
            Answer::Refuse(HolepunchError::NoSelf)
        );
        // Across a private network's edge: not introduced, not answered.
        assert_eq!(
            answer(
                req,
                a("192.168.1.5:1"),
                target("192.168.1.5:1", true, false)
            ),
            Answer::Ignore
        );
        assert!(matches!(
            answer(
                a("10.0.0.1:1"),
                a("10.0.0.2:2"),
                target("10.0.0.2:2", true, false)
            ),
            Answer::Introduce { .. }
        ));
    }

    /// Leads, asks and punches all go through `bounded_insert` (tests/core.rs drives them in
    /// virtual time; no clock is read here).
    #[test]
    fn leads_asks_and_punches_are_bounded_oldest_first() {
        let addr = |i: usize| SocketAddr::from(([198, 51, (i >> 8) as u8, i as u8], 7000));
        let mut p = Punches::default();
        for i in 0..=MAX_LEADS {
            p.learned(addr(i), 1);
        }
        assert_eq!(p.leads.len(), MAX_LEADS);
        assert!(!p.leads.contains_key(&addr(0)));
        assert!(p.leads.contains_key(&addr(MAX_LEADS)));
        // Learning again of one known moves nothing out, and the latest informant is kept.
        p.learned(addr(MAX_LEADS), 2);
        assert_eq!((p.leads.len(), p.lead_order.len()), (MAX_LEADS, MAX_LEADS));
        assert_eq!(p.leads[&addr(MAX_LEADS)].relay, 2);
        p.dropped(addr(MAX_LEADS), 1);
        assert!(p.leads.contains_key(&addr(MAX_LEADS)), "not its informant");
        p.dropped(addr(MAX_LEADS), 2);
        assert!(!p.leads.contains_key(&addr(MAX_LEADS)));

        let (mut map, mut order) = (DetMap::default(), VecDeque::new());
        for i in 0..MAX_LEADS + 10 {
            bounded_insert(&mut map, &mut order, addr(i), i);
        }
        assert_eq!((map.len(), order.len()), (MAX_LEADS, MAX_LEADS));
        assert_eq!(order.front(), Some(&addr(10)));
        assert!(!map.contains_key(&addr(9)));
    }

    #[test]
    fn a_public_relay_cannot_send_us_into_a_private_network() {
        assert!(!may_dial(
            "203.0.113.1".parse().unwrap(),
            a("192.168.0.10:80")
        ));
        assert!(!may_dial("203.0.113.1".parse().unwrap(), a("[fe80::1]:80")));
        assert!(!may_dial(
            "203.0.113.1".parse().unwrap(),
            a("198.51.100.1:0")
        ));
        assert!(may_dial(
            "203.0.113.1".parse().unwrap(),
            a("198.51.100.1:80")
        ));
        assert!(may_dial("10.1.1.1".parse().unwrap(), a("10.1.1.2:80")));
    }
}
