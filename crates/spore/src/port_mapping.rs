//! Port mapping for `share`, `get`, `seed` and the daemon: which ports to ask the router for, and the
//! one line `share` prints when no router helps. The protocols live in the `portmap` crate.

use std::net::{IpAddr, SocketAddr};

use portmap::{Mapper, MapperConfig, Outcome, Protocol};

/// Whether to map at all: not when switched off, and not for a client bound to loopback (nothing
/// outside could reach it anyway, and tests must not talk to a real router).
pub(crate) fn wanted(disabled: bool, listen: IpAddr) -> bool {
    !disabled && !listen.is_loopback()
}

/// The peer port over TCP and UDP (uTP on UDP), `extra` ports (TCP and UDP each), and the DHT's UDP
/// port when it has its own.
pub(crate) fn ports(peer_port: u16, extra: &[u16], dht: Option<u16>) -> Vec<(Protocol, u16)> {
    let mut out = Vec::new();
    let both = std::iter::once(peer_port)
        .chain(extra.iter().copied())
        .flat_map(|port| [(Protocol::Tcp, port), (Protocol::Udp, port)]);
    let dht = dht.map(|port| (Protocol::Udp, port));
    for wanted in both.chain(dht) {
        if wanted.1 != 0 && !out.contains(&wanted) {
            out.push(wanted);
        }
    }
    out
}

/// Starts mapping `ports` in the background (on the current runtime), or nothing when not `wanted`.
pub(crate) fn start(wanted: bool, ports: Vec<(Protocol, u16)>) -> Option<Mapper> {
    (wanted && !ports.is_empty()).then(|| {
        Mapper::start(MapperConfig::new(
            ports,
            format!("Spore {}", env!("CARGO_PKG_VERSION")),
        ))
    })
}

/// For `get`, `seed` and the daemon: logs what the router did, without holding anything up. `dht` is
/// the DHT's UDP port ([`engine::Discovery::settle_dht_port`]).
pub(crate) fn start_quiet(wanted: bool, listen: SocketAddr, dht: Option<u16>) -> Option<Mapper> {
    start(wanted, ports(listen.port(), &[], dht))
}

/// Removes the mappings, if any.
pub(crate) async fn stop(mapper: Option<Mapper>) {
    if let Some(m) = mapper {
        m.stop().await;
    }
}

/// The external port the router gave for `internal` over `protocol`, or `internal` if it mapped none.
pub(crate) fn external_port(outcome: &Outcome, protocol: Protocol, internal: u16) -> u16 {
    match outcome {
        Outcome::Mapped { mappings, .. } => mappings
            .iter()
            .find(|m| m.protocol == protocol && m.internal == internal)
            .map_or(internal, |m| m.external),
        Outcome::Failed(_) => internal,
    }
}

/// The line `share` prints when no router mapped the ports: who cannot connect and what to forward.
pub(crate) fn unreachable_hint(
    local: IpAddr,
    ports: &[u16],
    dht: Option<u16>,
    why: &str,
) -> String {
    let list: Vec<String> = ports
        .iter()
        .filter(|p| **p != 0)
        .map(u16::to_string)
        .collect();
    let dht = dht
        .filter(|p| *p != 0 && !ports.contains(p))
        .map_or_else(String::new, |p| format!(" (and UDP port {p} for the DHT)"));
    format!(
        "warning: no router mapped our ports ({why}); friends outside this network may not reach you: \
         forward TCP and UDP port{} {}{dht} to {local} on your router and pass --public-ip YOUR_PUBLIC_IP",
        if list.len() == 1 { "" } else { "s" },
        list.join(" and ")
    )
}

/// What `share` learned from the router: the address and ports friends use, and the mapper to stop
/// on exit.
pub(crate) struct ShareReach {
    pub mapper: Option<Mapper>,
    pub public_ip: IpAddr,
    pub peer_port: u16,
    /// The embedded tracker's HTTP (TCP) and UDP ports as seen from outside.
    pub tracker_ports: (u16, u16),
}

/// Maps the peer and tracker ports for `share` and waits for the router's answer (a few seconds at
/// most). `--public-ip` wins over the router's external address; with neither, the local address
/// stays and one line says what to forward by hand.
pub(crate) async fn share_reach(
    wanted: bool,
    local_ip: IpAddr,
    explicit_ip: Option<IpAddr>,
    peer_port: u16,
    tracker_ports: (u16, u16),
    dht: Option<u16>,
) -> ShareReach {
    let (http, udp) = tracker_ports;
    let mut reach = ShareReach {
        mapper: start(wanted, ports(peer_port, &[http, udp], dht)),
        public_ip: explicit_ip.unwrap_or(local_ip),
        peer_port,
        tracker_ports,
    };
    let Some(mapper) = reach.mapper.as_mut() else {
        return reach;
    };
    match mapper.outcome().await {
        outcome @ Outcome::Mapped { .. } => {
            if let Outcome::Mapped {
                via, external_ip, ..
            } = &outcome
            {
                println!(
                    "port mapping: {via} on the router, external address {}",
                    external_ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
                );
                if let Some(ip) = external_ip.filter(|ip| !portmap::is_public(*ip)) {
                    println!(
                        "warning: the router's external address {ip} is private: another NAT (your \
                         provider's) sits in front of it, and friends outside may not reach you"
                    );
                }
                if explicit_ip.is_none() {
                    if let Some(ip) = external_ip {
                        reach.public_ip = *ip;
                    }
                }
            }
            reach.peer_port = external_port(&outcome, Protocol::Tcp, peer_port);
            reach.tracker_ports = (
                external_port(&outcome, Protocol::Tcp, http),
                external_port(&outcome, Protocol::Udp, udp),
            );
        }
        Outcome::Failed(why) => {
            let mut all = vec![peer_port];
            for p in [http, udp] {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
            println!("{}", unreachable_hint(local_ip, &all, dht, &why));
        }
    }
    reach
}

/// Registers our seed in the embedded tracker under `addr` (the external address: a router without
/// hairpin NAT refuses our own announce to it), again before the tracker would forget it.
pub(crate) fn register_seed(
    state: std::sync::Arc<tracker::State>,
    ids: Vec<tracker_proto::InfoHash>,
    addr: SocketAddr,
) -> tokio::task::JoinHandle<()> {
    let every =
        std::time::Duration::from_secs(u64::from((state.config.peer_timeout / 2).clamp(30, 900)));
    tokio::spawn(async move {
        let mut event = tracker_proto::Event::Started;
        loop {
            for id in &ids {
                let (mut out4, mut out6) = (Vec::new(), Vec::new());
                state.store.announce(
                    id,
                    addr,
                    0,
                    event,
                    Some(0),
                    tracker::store::Family::Both,
                    &mut out4,
                    &mut out6,
                );
            }
            event = tracker_proto::Event::None;
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_tcp_and_udp_once_each() {
        assert_eq!(
            ports(6881, &[6969, 6881, 0], None),
            vec![
                (Protocol::Tcp, 6881),
                (Protocol::Udp, 6881),
                (Protocol::Tcp, 6969),
                (Protocol::Udp, 6969)
            ]
        );
        assert!(ports(0, &[], None).is_empty());
    }

    #[test]
    fn the_dht_port_is_udp_only() {
        assert_eq!(
            ports(6881, &[], Some(6882)),
            vec![
                (Protocol::Tcp, 6881),
                (Protocol::Udp, 6881),
                (Protocol::Udp, 6882)
            ]
        );
        assert_eq!(
            ports(6881, &[], Some(6881)).len(),
            2,
            "shared with the peer port"
        );
    }

    #[test]
    fn loopback_or_switched_off_means_no_mapping() {
        assert!(!wanted(true, "0.0.0.0".parse().unwrap()));
        assert!(!wanted(false, "127.0.0.2".parse().unwrap()));
        assert!(wanted(false, "0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn external_ports_come_from_the_mapping_of_that_protocol() {
        let mapped = Outcome::Mapped {
            via: portmap::Via::Upnp,
            external_ip: None,
            mappings: vec![
                portmap::Mapping {
                    protocol: Protocol::Tcp,
                    internal: 6969,
                    external: 6970,
                },
                portmap::Mapping {
                    protocol: Protocol::Udp,
                    internal: 6969,
                    external: 6971,
                },
            ],
        };
        assert_eq!(external_port(&mapped, Protocol::Tcp, 6969), 6970);
        assert_eq!(external_port(&mapped, Protocol::Udp, 6969), 6971);
        assert_eq!(external_port(&mapped, Protocol::Tcp, 6881), 6881);
        assert_eq!(
            external_port(&Outcome::Failed("x".into()), Protocol::Tcp, 6881),
            6881
        );
    }

    #[test]
    fn the_hint_is_one_line_naming_ports_and_address() {
        let ip = "192.168.1.5".parse().unwrap();
        let h = unreachable_hint(ip, &[6881, 6969], None, "no reply");
        assert!(!h.contains('\n'));
        assert!(h.contains("6881 and 6969 to 192.168.1.5"), "{h}");
        let h = unreachable_hint(ip, &[6881], Some(6882), "no reply");
        assert!(
            h.contains("port 6881 (and UDP port 6882 for the DHT) to 192.168.1.5"),
            "{h}"
        );
    }
}
