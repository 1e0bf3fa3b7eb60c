//! The driver against a scripted PCP / NAT-PMP server on loopback: map, renew before the lease ends,
//! delete on stop; and the fall back to NAT-PMP when the server does not speak PCP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use portmap::{Mapper, MapperConfig, Outcome, Protocol, Via};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// What the fake router saw: (speaks PCP?, protocol number or NAT-PMP opcode, internal port, lifetime).
type Seen = (bool, u8, u16, u32);

/// Answers like a router granting 1-second leases; `pcp` false answers PCP with NAT-PMP's
/// "unsupported version".
async fn fake_router(pcp: bool) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 1100];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let req = &buf[..n];
            let reply: Vec<u8> = match (req[0], n) {
                (0, 2) => vec![0, 128, 0, 0, 0, 0, 0, 7, 11, 11, 11, 1],
                (0, 12) => {
                    let lifetime = u32::from_be_bytes([req[8], req[9], req[10], req[11]]);
                    let _ = tx.send((
                        false,
                        req[1],
                        u16::from_be_bytes([req[4], req[5]]),
                        lifetime,
                    ));
                    let mut r = vec![0, 128 + req[1], 0, 0, 0, 0, 0, 7];
                    r.extend_from_slice(&req[4..6]);
                    r.extend_from_slice(if lifetime == 0 { &[0, 0] } else { &req[4..6] });
                    r.extend_from_slice(&lifetime.min(1).to_be_bytes());
                    r
                }
                (2, 60) if !pcp => vec![0, 0x81, 0, 1, 0, 0, 0, 7],
                (2, 60) => {
                    let lifetime = u32::from_be_bytes([req[4], req[5], req[6], req[7]]);
                    let internal = u16::from_be_bytes([req[40], req[41]]);
                    let _ = tx.send((true, req[36], internal, lifetime));
                    let mut r = vec![2, 0x81, 0, 0];
                    r.extend_from_slice(&lifetime.min(1).to_be_bytes());
                    r.extend_from_slice(&[0, 0, 0, 7]);
                    r.extend_from_slice(&[0; 12]);
                    r.extend_from_slice(&req[24..40]); // nonce, protocol, reserved
                    r.extend_from_slice(&req[40..42]);
                    r.extend_from_slice(&req[40..42]);
                    r.extend_from_slice(&Ipv4Addr::new(11, 11, 11, 1).to_ipv6_mapped().octets());
                    r
                }
                _ => continue,
            };
            let _ = socket.send_to(&reply, from).await;
        }
    });
    (addr, rx)
}

fn config(gateway: SocketAddr) -> MapperConfig {
    let mut c = MapperConfig::new(
        vec![(Protocol::Tcp, 6881), (Protocol::Udp, 6881)],
        "test".into(),
    );
    c.gateway = Some(gateway);
    c.upnp = false;
    c.min_renew = Duration::from_millis(100);
    c
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the router heard nothing")
        .expect("the router stopped")
}

async fn map_renew_delete(pcp: bool) {
    let (gateway, mut seen) = fake_router(pcp).await;
    let mut mapper = Mapper::start(config(gateway));
    match mapper.outcome().await {
        Outcome::Mapped {
            via,
            external_ip,
            mappings,
        } => {
            assert_eq!(via, if pcp { Via::Pcp } else { Via::NatPmp });
            assert_eq!(external_ip, Some(IpAddr::V4(Ipv4Addr::new(11, 11, 11, 1))));
            assert_eq!(mappings.len(), 2);
            assert!(mappings.iter().all(|m| m.external == 6881));
        }
        other => panic!("{other:?}"),
    }
    // Two maps, then renewals of both before the 1-second lease runs out.
    let mut renewals = 0;
    while renewals < 4 {
        let (speaks_pcp, _, internal, lifetime) = next(&mut seen).await;
        assert_eq!((speaks_pcp, internal), (pcp, 6881));
        assert!(lifetime > 0);
        renewals += 1;
    }
    mapper.stop().await;
    // Whatever renewals were in flight, the last two requests delete both mappings.
    let mut last = Vec::new();
    while let Ok(s) = seen.try_recv() {
        last.push(s);
    }
    let deletes: Vec<&Seen> = last.iter().filter(|s| s.3 == 0).collect();
    assert_eq!(deletes.len(), 2, "{last:?}");
    assert!(last.ends_with(&[*deletes[0], *deletes[1]]), "{last:?}");
}

#[tokio::test]
async fn pcp_maps_renews_before_the_lease_ends_and_deletes_on_stop() {
    map_renew_delete(true).await;
}

#[tokio::test]
async fn a_nat_pmp_only_router_gets_nat_pmp() {
    map_renew_delete(false).await;
}

#[tokio::test]
async fn nobody_at_the_gateway_is_a_failure_not_a_hang() {
    // A port nobody listens on: ICMP port unreachable comes back at once.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let mut mapper = Mapper::start(config(addr));
    let outcome = tokio::time::timeout(Duration::from_secs(10), mapper.outcome())
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    mapper.stop().await;
}
