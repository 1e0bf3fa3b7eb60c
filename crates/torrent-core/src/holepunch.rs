//! BEP 55 as a relay sees it: which rendezvous to answer and how, with no access to the peer table.
//! The torrent finds the peers; this decides.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use wire::HolepunchError;

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
        let fresh = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= RENDEZVOUS_WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used >= MAX_RENDEZVOUS {
            return false;
        }
        self.used += 1;
        true
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
