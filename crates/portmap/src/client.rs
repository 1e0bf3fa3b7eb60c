//! The driver: finds the router, maps the ports, renews the leases, removes the mappings on stop.
//! Sockets and clocks live here; the bytes come from the sans-IO modules.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};

use crate::http::{self, Url};
use crate::igd::{self, Service, SoapReply};
use crate::{natpmp, pcp, ssdp, Protocol};

/// How long SSDP replies are awaited; routers answer within a second.
pub const SSDP_WAIT: Duration = Duration::from_secs(2);
/// Replies considered per search; anything past is a flood.
pub const SSDP_MAX_REPLIES: usize = 16;
/// One HTTP exchange with the router.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
/// PCP / NAT-PMP retransmissions: first wait, doubled each time (RFC 6886 §3.1 starts at 250 ms).
pub const UDP_FIRST_WAIT: Duration = Duration::from_millis(250);
pub const UDP_TRIES: u32 = 4;
/// The lease asked for; renewed at half of what the router grants.
pub const LEASE: u32 = 3600;
/// Renewals never come closer together than this, whatever short lease a router grants.
pub const MIN_RENEW: Duration = Duration::from_secs(30);
/// Removing the mappings on stop is bounded by this in all.
pub const STOP_BUDGET: Duration = Duration::from_secs(4);

/// What to map.
#[derive(Clone, Debug)]
pub struct MapperConfig {
    /// Internal ports with their transport; the same external port is asked for.
    pub ports: Vec<(Protocol, u16)>,
    /// The PCP / NAT-PMP server [default: the default route's gateway, port 5351].
    pub gateway: Option<SocketAddr>,
    /// Whether to look for a UPnP IGD too (SSDP multicast).
    pub upnp: bool,
    /// Shown in the router's UPnP table.
    pub description: String,
    /// Renewals never come closer together than this, whatever short lease a router grants.
    pub min_renew: Duration,
}

impl MapperConfig {
    /// Every protocol, the system's gateway, renewals at most every [`MIN_RENEW`].
    pub fn new(ports: Vec<(Protocol, u16)>, description: String) -> MapperConfig {
        MapperConfig {
            ports,
            gateway: None,
            upnp: true,
            description,
            min_renew: MIN_RENEW,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Upnp,
    Pcp,
    NatPmp,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Upnp => "UPnP IGD",
            Via::Pcp => "PCP",
            Via::NatPmp => "NAT-PMP",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub protocol: Protocol,
    pub internal: u16,
    pub external: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Mapped {
        via: Via,
        external_ip: Option<IpAddr>,
        mappings: Vec<Mapping>,
    },
    /// No router answered, or it refused every mapping.
    Failed(String),
}

/// Whether peers on the Internet could reach `ip`: not a private, shared (carrier-grade NAT),
/// loopback, link-local or unspecified address. A router reporting such an "external" address sits
/// behind another NAT.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b);
            !(v4.is_private()
                || shared
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            let unique_local = v6.segments()[0] & 0xfe00 == 0xfc00;
            let link_local = v6.segments()[0] & 0xffc0 == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || unique_local || link_local)
        }
    }
}

/// When to renew a lease the router granted for `granted` seconds: at half of it, not sooner than
/// `floor`.
pub fn renew_after(granted: u32, floor: Duration) -> Duration {
    if granted == 0 {
        // A permanent UPnP mapping: re-add it now and then anyway, in case the router restarted.
        return Duration::from_secs(u64::from(LEASE) / 2);
    }
    Duration::from_millis(u64::from(granted) * 500).max(floor)
}

/// A running port mapper. Dropping it without [`Mapper::stop`] leaves the leases to expire.
pub struct Mapper {
    outcome: watch::Receiver<Option<Outcome>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mapper {
    /// Starts mapping on the current tokio runtime.
    pub fn start(config: MapperConfig) -> Mapper {
        let (tx, rx) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(config, tx, stop_rx));
        Mapper {
            outcome: rx,
            stop: Some(stop_tx),
            task,
        }
    }

    /// The first outcome: mapped, or why not.
    pub async fn outcome(&mut self) -> Outcome {
        match self.outcome.wait_for(Option::is_some).await {
            Ok(o) => o
                .clone()
                .unwrap_or_else(|| Outcome::Failed("no outcome".into())),
            Err(_) => Outcome::Failed("the port mapper stopped".into()),
        }
    }

    /// Removes the mappings (bounded by [`STOP_BUDGET`]) and ends the task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(STOP_BUDGET + Duration::from_secs(1), &mut self.task).await;
        self.task.abort();
    }
}

/// The router we found and how to talk to it.
enum Router {
    Upnp {
        service: Service,
        local: IpAddr,
    },
    PortControl {
        gateway: SocketAddr,
        local: IpAddr,
        nat_pmp_only: bool,
    },
}

/// One mapping held, with what renewing and removing it needs.
struct Held {
    mapping: Mapping,
    nonce: [u8; 12],
}

async fn run(
    config: MapperConfig,
    tx: watch::Sender<Option<Outcome>>,
    mut stop: oneshot::Receiver<()>,
) {
    let discovered = tokio::select! {
        r = discover(config.gateway, config.upnp) => r,
        _ = &mut stop => return,
    };
    let candidates = match discovered {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!("port mapping: {why}");
            let _ = tx.send(Some(Outcome::Failed(why)));
            return;
        }
    };
    // The first router protocol that maps anything is kept; a UPnP IGD that refuses every mapping
    // leaves the way to PCP / NAT-PMP on the same router.
    let mut held: Vec<Held> = Vec::new();
    let mut errors = Vec::new();
    let mut chosen = None;
    for mut router in candidates {
        let (outcome, granted) = map_all(&mut router, &config, &mut held).await;
        match outcome {
            Outcome::Mapped { .. } => {
                chosen = Some((router, outcome, granted));
                break;
            }
            Outcome::Failed(why) => errors.push(why),
        }
    }
    let Some((mut router, outcome, mut granted)) = chosen else {
        let why = errors.join("; ");
        tracing::warn!("port mapping failed: {why}");
        let _ = tx.send(Some(Outcome::Failed(why)));
        return;
    };
    if let Outcome::Mapped {
        via,
        external_ip,
        mappings,
    } = &outcome
    {
        tracing::info!("port mapping via {via}: {mappings:?}, external address {external_ip:?}");
    }
    let _ = tx.send(Some(outcome));
    loop {
        let wait = renew_after(granted, config.min_renew);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => break,
        }
        let (outcome, lease) = map_all(&mut router, &config, &mut held).await;
        granted = lease;
        match outcome {
            Outcome::Mapped { .. } => {
                let _ = tx.send(Some(outcome));
            }
            // Renewal failed: the leases held run on; try again at the floor interval.
            Outcome::Failed(why) => {
                tracing::warn!("port mapping renewal failed: {why}");
                granted = 1;
            }
        }
    }
    let _ = tokio::time::timeout(STOP_BUDGET, unmap_all(&router, &held)).await;
}

/// The routers that answered, UPnP first.
async fn discover(gateway: Option<SocketAddr>, upnp: bool) -> Result<Vec<Router>, String> {
    let gateway = gateway.or_else(|| {
        crate::route::system_default_gateway().map(|gw| SocketAddr::from((gw, natpmp::PORT)))
    });
    let upnp = async {
        if upnp {
            discover_upnp().await
        } else {
            Err("not asked for".to_string())
        }
    };
    let control = async {
        match gateway {
            Some(gw) => probe_port_control(gw).await,
            None => Err("no default gateway".to_string()),
        }
    };
    let (upnp, control) = tokio::join!(upnp, control);
    let why = match (&upnp, &control) {
        (Err(u), Err(c)) => Some(format!("no UPnP IGD ({u}), no PCP/NAT-PMP ({c})")),
        _ => None,
    };
    let found: Vec<Router> = [upnp.ok(), control.ok()].into_iter().flatten().collect();
    match why {
        Some(why) => Err(why),
        None => Ok(found),
    }
}

async fn discover_upnp() -> Result<Router, String> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| e.to_string())?;
    for target in ssdp::TARGETS {
        socket
            .send_to(
                &ssdp::search_request(target, 1),
                SocketAddr::V4(ssdp::MULTICAST),
            )
            .await
            .map_err(|e| format!("SSDP search: {e}"))?;
    }
    let mut locations: Vec<String> = Vec::new();
    let mut buf = [0u8; ssdp::MAX_REPLY];
    let deadline = tokio::time::Instant::now() + SSDP_WAIT;
    let mut replies = 0;
    while replies < SSDP_MAX_REPLIES {
        let Ok(got) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await else {
            break;
        };
        let Ok((n, _)) = got else { break };
        replies += 1;
        if let Ok(location) = ssdp::parse_reply(&buf[..n]) {
            if !locations.contains(&location) {
                locations.push(location.clone());
                // The first router that works is ours; do not wait out the others.
                if let Ok(r) = try_location(&location).await {
                    return Ok(r);
                }
            }
        }
    }
    Err(if locations.is_empty() {
        "no SSDP reply".into()
    } else {
        format!("no usable IGD at {locations:?}")
    })
}

async fn try_location(location: &str) -> Result<Router, String> {
    let url = Url::parse(location).map_err(|e| e.to_string())?;
    let (reply, _) = http::exchange("GET", &url, &[], &[], HTTP_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if reply.status() != 200 {
        return Err(format!("description: HTTP {}", reply.status()));
    }
    let service = igd::find_service(&reply.body, &url).map_err(|e| e.to_string())?;
    let (_, local) = soap(&service, igd::get_external_ip(&service)).await?;
    Ok(Router::Upnp {
        service,
        local: local.ip(),
    })
}

/// Sends a SOAP action; the reply body on success, the fault as an error.
async fn soap(service: &Service, action: igd::Action) -> Result<(Vec<u8>, SocketAddr), String> {
    let headers = [
        ("Content-Type", "text/xml; charset=\"utf-8\""),
        ("SOAPAction", action.soap_action.as_str()),
    ];
    let (reply, local) = http::exchange(
        "POST",
        &service.control,
        &headers,
        &action.body,
        HTTP_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())?;
    match igd::parse_soap(&reply.body).map_err(|e| e.to_string())? {
        SoapReply::Fault(code, text) => Err(format!("UPnP error {code} {text}")),
        SoapReply::Ok if reply.status() == 200 => Ok((reply.body, local)),
        SoapReply::Ok => Err(format!("HTTP {}", reply.status())),
    }
}

/// Sends `request` to the gateway and waits for a reply `accept` takes, retransmitting with doubling
/// waits.
async fn udp_exchange<T>(
    gateway: SocketAddr,
    request: &[u8],
    accept: impl Fn(&[u8]) -> Option<T>,
) -> Result<(T, IpAddr), String> {
    let any: IpAddr = match gateway {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0)).await.map_err(|e| e.to_string())?;
    socket.connect(gateway).await.map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?.ip();
    let mut wait = UDP_FIRST_WAIT;
    let mut buf = [0u8; pcp::MAX_MESSAGE + 1];
    for _ in 0..UDP_TRIES {
        socket.send(request).await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                // ICMP port unreachable: nobody listens on 5351.
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(n)) => {
                    if let Some(v) = accept(&buf[..n]) {
                        return Ok((v, local));
                    }
                }
            }
        }
        wait *= 2;
    }
    Err(format!("no answer from {gateway}"))
}

/// Asks the gateway for its external address over NAT-PMP: any well-formed answer, even a PCP
/// server's "unsupported version", shows it speaks one of the two.
async fn probe_port_control(gateway: SocketAddr) -> Result<Router, String> {
    let request = natpmp::external_address_request();
    let (nat_pmp_only, local) = udp_exchange(gateway, &request, |b| match natpmp::parse_reply(b) {
        // A NAT-PMP answer does not tell whether PCP is spoken too: the first MAP finds out.
        Ok(natpmp::Reply::External { .. }) => Some(false),
        Err(crate::ParseError::Version(2)) => Some(false),
        _ => None,
    })
    .await?;
    Ok(Router::PortControl {
        gateway,
        local,
        nat_pmp_only,
    })
}

fn nonce() -> [u8; 12] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 12];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

/// Maps (or renews) every configured port. Returns the outcome and the shortest lease granted.
async fn map_all(
    router: &mut Router,
    config: &MapperConfig,
    held: &mut Vec<Held>,
) -> (Outcome, u32) {
    let mut errors = Vec::new();
    let mut external_ip = None;
    let mut granted = u32::MAX;
    let mut done: Vec<Held> = Vec::new();
    for &(protocol, internal) in &config.ports {
        let previous = held
            .iter()
            .find(|h| h.mapping.protocol == protocol && h.mapping.internal == internal);
        let nonce = previous.map_or_else(nonce, |h| h.nonce);
        let external = previous.map_or(internal, |h| h.mapping.external);
        let result = match router {
            Router::Upnp { service, local } => {
                map_upnp(
                    service,
                    *local,
                    protocol,
                    internal,
                    external,
                    &config.description,
                )
                .await
            }
            Router::PortControl {
                gateway,
                local,
                nat_pmp_only,
            } => {
                map_port_control(
                    *gateway,
                    *local,
                    nat_pmp_only,
                    protocol,
                    internal,
                    external,
                    nonce,
                )
                .await
            }
        };
        match result {
            Ok((external, lease, ip)) => {
                external_ip = external_ip.or(ip);
                granted = granted.min(lease);
                done.push(Held {
                    mapping: Mapping {
                        protocol,
                        internal,
                        external,
                    },
                    nonce,
                });
            }
            Err(e) => errors.push(format!("{} {internal}: {e}", protocol.upnp_name())),
        }
    }
    let via = match router {
        Router::Upnp { service, .. } => {
            if external_ip.is_none() {
                external_ip = soap(service, igd::get_external_ip(service))
                    .await
                    .ok()
                    .and_then(|(body, _)| igd::parse_external_ip(&body).ok());
            }
            Via::Upnp
        }
        Router::PortControl {
            nat_pmp_only: true, ..
        } => Via::NatPmp,
        Router::PortControl { .. } => Via::Pcp,
    };
    // A mapping the router answered for this time replaces the one held; one it did not answer for
    // is kept (its lease runs on until it expires or we remove it).
    for d in done.iter() {
        held.retain(|h| {
            !(h.mapping.protocol == d.mapping.protocol && h.mapping.internal == d.mapping.internal)
        });
    }
    let mapped: Vec<Mapping> = done.iter().map(|d| d.mapping.clone()).collect();
    held.extend(done);
    if mapped.is_empty() {
        return (Outcome::Failed(errors.join("; ")), 0);
    }
    if !errors.is_empty() {
        tracing::warn!("port mapping: {}", errors.join("; "));
    }
    // An unspecified address says nothing; a private one (a router behind another NAT) is kept, and
    // the caller can tell with `is_public`.
    let external_ip = external_ip.filter(|ip| !ip.is_unspecified());
    (
        Outcome::Mapped {
            via,
            external_ip,
            mappings: mapped,
        },
        granted,
    )
}

async fn map_upnp(
    service: &Service,
    local: IpAddr,
    protocol: Protocol,
    internal: u16,
    external: u16,
    description: &str,
) -> Result<(u16, u32, Option<IpAddr>), String> {
    let mut lease = LEASE;
    let mut external = external;
    // A few other external ports when this one is held by another machine (error 718).
    for _ in 0..4 {
        let action = igd::add_port_mapping(
            service,
            protocol,
            external,
            local,
            internal,
            lease,
            description,
        );
        match soap(service, action).await {
            Ok(_) => return Ok((external, lease, None)),
            Err(e)
                if e.contains(&format!("error {} ", igd::ONLY_PERMANENT_LEASES)) && lease != 0 =>
            {
                lease = 0;
            }
            Err(e) if e.contains(&format!("error {} ", igd::CONFLICT_IN_MAPPING)) => {
                external = external.checked_add(1).unwrap_or(1024);
            }
            Err(e) => return Err(e),
        }
    }
    Err("every external port tried is taken".into())
}

async fn map_port_control(
    gateway: SocketAddr,
    local: IpAddr,
    nat_pmp_only: &mut bool,
    protocol: Protocol,
    internal: u16,
    external: u16,
    nonce: [u8; 12],
) -> Result<(u16, u32, Option<IpAddr>), String> {
    if !*nat_pmp_only {
        let request = pcp::map_request(nonce, protocol, local, internal, external, LEASE);
        let reply = udp_exchange(gateway, &request, |b| match pcp::parse_reply(b) {
            Ok(r) if r.result != pcp::SUCCESS || r.nonce == nonce => Some(Some(r)),
            Err(crate::ParseError::Version(0)) => Some(None),
            _ => None,
        })
        .await?;
        match reply.0 {
            Some(r) if r.result == pcp::SUCCESS => {
                return Ok((r.external, r.lifetime, Some(r.external_ip)))
            }
            Some(r) if r.result != pcp::UNSUPP_VERSION => {
                return Err(format!("PCP result {}", r.result))
            }
            // The server speaks NAT-PMP only: use that from now on.
            _ => *nat_pmp_only = true,
        }
    }
    let request = natpmp::map_request(protocol, internal, external, LEASE);
    let (reply, _) = udp_exchange(gateway, &request, |b| match natpmp::parse_reply(b) {
        Ok(r @ natpmp::Reply::Map { .. }) => Some(r),
        _ => None,
    })
    .await?;
    let natpmp::Reply::Map {
        result,
        external,
        lifetime,
        ..
    } = reply
    else {
        return Err("unexpected NAT-PMP reply".into());
    };
    if result != 0 {
        return Err(format!("NAT-PMP result {result}"));
    }
    let (ip, _) =
        udp_exchange(
            gateway,
            &natpmp::external_address_request(),
            |b| match natpmp::parse_reply(b) {
                Ok(natpmp::Reply::External {
                    result: 0, address, ..
                }) => Some(address),
                _ => None,
            },
        )
        .await
        .map_or((None, local), |(a, l)| (Some(IpAddr::V4(a)), l));
    Ok((external, lifetime, ip))
}

async fn unmap_all(router: &Router, held: &[Held]) {
    for h in held {
        let m = &h.mapping;
        let result = match router {
            Router::Upnp { service, .. } => soap(
                service,
                igd::delete_port_mapping(service, m.protocol, m.external),
            )
            .await
            .map(|_| ()),
            Router::PortControl {
                gateway,
                local,
                nat_pmp_only,
            } => {
                if *nat_pmp_only {
                    let request = natpmp::map_request(m.protocol, m.internal, 0, 0);
                    udp_exchange(*gateway, &request, |b| natpmp::parse_reply(b).ok())
                        .await
                        .map(|_| ())
                } else {
                    let request = pcp::map_request(h.nonce, m.protocol, *local, m.internal, 0, 0);
                    udp_exchange(*gateway, &request, |b| pcp::parse_reply(b).ok())
                        .await
                        .map(|_| ())
                }
            }
        };
        match result {
            Ok(()) => tracing::info!("removed port mapping {m:?}"),
            Err(e) => tracing::warn!("cannot remove port mapping {m:?}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_half_the_lease_but_not_too_often() {
        assert_eq!(renew_after(7200, MIN_RENEW), Duration::from_secs(3600));
        assert_eq!(renew_after(10, MIN_RENEW), MIN_RENEW);
        assert_eq!(renew_after(1, Duration::ZERO), Duration::from_millis(500));
        assert_eq!(renew_after(0, MIN_RENEW), Duration::from_secs(1800));
    }

    #[test]
    fn private_and_shared_addresses_are_not_public() {
        for ip in [
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "fd00::1",
            "fe80::1",
            "::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["11.11.11.1", "100.128.0.1", "8.8.8.8", "2a00:1450::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }
}
