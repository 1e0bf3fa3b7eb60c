//! BEP 14 local service discovery for one torrent: announce our peer port to a multicast group on start
//! and every 5 minutes, and queue the peers whose announces name our info-hash. Public torrents only
//! (BEP 27); the caller never starts this for a private one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use wire::LsdAnnounce;

use crate::torrent::Shared;

/// BEP 14's IPv4 group and port.
pub use crate::torrent::LSD_GROUP as DEFAULT_GROUP;

/// How often we announce a torrent. BEP 14 leaves the rate to us; once per 5 minutes keeps a busy LAN
/// quiet while a newcomer still finds us at once (every peer answers its first announce by dialling it).
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(300);

/// Anyone on the LAN can send announces; one host gets one peer queued per this long, so a flood of
/// announces with made-up ports cannot fill our list of addresses to dial.
const PER_HOST: Duration = Duration::from_secs(10);
const MAX_HOSTS: usize = 1024;

/// The interface our multicast goes out of and is received on: the listen address when it names one.
fn interface(listen: IpAddr) -> Ipv4Addr {
    match listen {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

/// A socket bound to the group's port that has joined the group on `iface`. Several processes on one
/// host share the port (SO_REUSEADDR/SO_REUSEPORT), and each gets every announce.
fn receiver(group: SocketAddrV4, iface: Ipv4Addr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Bound to the group address rather than 0.0.0.0, so unicast to this port and other groups the host
    // joined do not reach us.
    socket.bind(&SocketAddr::V4(group).into())?;
    socket.join_multicast_v4(group.ip(), &iface)?;
    UdpSocket::from_std(socket.into())
}

/// A socket that sends from our listen IP out of its interface, looping back to other processes here.
fn sender(iface: Ipv4Addr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((iface, 0)).into())?;
    if !iface.is_unspecified() {
        socket.set_multicast_if_v4(&iface)?;
    }
    socket.set_multicast_loop_v4(true)?;
    // One hop: LSD is for the local network, and 239.192/14 is not routed beyond it anyway.
    socket.set_multicast_ttl_v4(1)?;
    UdpSocket::from_std(socket.into())
}

/// Eight random-looking hex digits from the peer id, so our own announces can be told from others'.
fn cookie(peer_id: &[u8; 20]) -> String {
    peer_id[8..]
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })
        .to_string()
        .chars()
        .take(12)
        .collect()
}

/// Runs until the torrent stops. Socket errors are logged once and end LSD for this torrent: the other
/// peer sources keep working.
pub(crate) async fn run(shared: Arc<Shared>, group: SocketAddr) {
    let SocketAddr::V4(group) = group else {
        tracing::warn!("LSD: only IPv4 groups are supported, not {group}");
        return;
    };
    let iface = interface(shared.config.listen.ip());
    let (recv, send) = match (receiver(group, iface), sender(iface)) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("LSD: cannot use {group} on {iface}: {e}");
            return;
        }
    };
    let cookie = cookie(&shared.config.peer_id);
    let packet = LsdAnnounce {
        host: group.to_string(),
        port: shared.listen_addr.port(),
        info_hashes: vec![shared.id],
        cookie: Some(cookie.clone()),
    }
    .encode();
    let mut stop = shared.stopping();
    let mut next = tokio::time::Instant::now();
    // One byte more than we parse, so an oversized datagram shows as too long instead of cut short.
    let mut buf = vec![0u8; wire::MAX_LSD_DATAGRAM + 1];
    let mut heard: HashMap<IpAddr, tokio::time::Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                match send.send_to(&packet, SocketAddr::V4(group)).await {
                    Ok(_) => {
                        shared.lsd_announces.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!("LSD announce to {group}: {e}"),
                }
                next = tokio::time::Instant::now() + ANNOUNCE_INTERVAL;
            }
            got = recv.recv_from(&mut buf) => {
                let (n, from) = match got {
                    Ok(got) => got,
                    Err(e) => {
                        // Not expected on an unconnected socket; do not spin if it keeps failing.
                        tracing::debug!("LSD receive: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(announce) = LsdAnnounce::decode(&buf[..n]) else {
                    tracing::debug!("LSD: malformed announce from {from}");
                    continue;
                };
                if announce.cookie.as_deref() == Some(cookie.as_str())
                    || !announce.info_hashes.contains(&shared.id)
                {
                    continue;
                }
                let now = tokio::time::Instant::now();
                if heard.get(&from.ip()).is_some_and(|t| now.duration_since(*t) < PER_HOST) {
                    continue;
                }
                if heard.len() >= MAX_HOSTS {
                    heard.retain(|_, t| now.duration_since(*t) < PER_HOST);
                    if heard.len() >= MAX_HOSTS {
                        continue;
                    }
                }
                heard.insert(from.ip(), now);
                let peer = SocketAddr::new(from.ip(), announce.port);
                tracing::debug!("LSD: peer {peer}");
                shared.add_peers([peer]);
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_differ_between_peer_ids_and_fit_the_header_limit() {
        let a = cookie(b"-SP0100-aaaaaaaaaaaa");
        let b = cookie(b"-SP0100-aaaaaaaaaaab");
        assert_ne!(a, b);
        assert!(!a.is_empty() && a.len() <= wire::MAX_LSD_COOKIE);
    }
}
