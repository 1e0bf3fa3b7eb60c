//! Tracker client: HTTP and HTTPS (through [`crate::http`], a hand-written HTTP/1.0 GET, so
//! `info_hash` bytes are encoded exactly) and UDP (BEP 15 with BEP 41 URL data), and BEP 12 tiers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tracker_proto::http::{self as proto, AnnounceResponse, HttpAnnounce};
use tracker_proto::udp::{Request, Response};
use tracker_proto::{Announce, InfoHash};

pub use crate::error::TrackerError;
pub use crate::http::{http_get, HttpError};
use crate::http::{parse_url, resolve};

const UDP_ATTEMPT: Duration = Duration::from_secs(3);
const UDP_ATTEMPTS: usize = 3;

/// The peers and timing a tracker gave us.
#[derive(Debug, Clone, Default)]
pub struct Announced {
    pub interval: Duration,
    pub peers: Vec<SocketAddr>,
    pub seeders: u32,
    pub leechers: u32,
    /// Our address as the tracker saw it (BEP 24; HTTP trackers only).
    pub external_ip: Option<IpAddr>,
}

/// Announces to one tracker URL. `bind` is the local address to send from (so the tracker records the
/// address we listen on).
pub async fn announce(
    url: &str,
    announce: &Announce,
    bind: Option<IpAddr>,
) -> Result<Announced, TrackerError> {
    if url.starts_with("udp://") {
        announce_udp(url, announce, bind).await
    } else if url.starts_with("http://") || url.starts_with("https://") {
        announce_http(url, announce, bind).await
    } else {
        Err(TrackerError::Unsupported(url.to_string()))
    }
}

async fn announce_http(
    url: &str,
    a: &Announce,
    bind: Option<IpAddr>,
) -> Result<Announced, TrackerError> {
    let query = proto::encode_announce(&HttpAnnounce {
        announce: a.clone(),
        compact: true,
        no_peer_id: true,
        tracker_id: None,
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    let payload = http_get(&format!("{url}{sep}{query}"), bind, proto::MAX_RESPONSE_LEN).await?;
    let r = AnnounceResponse::decode(&payload)?;
    Ok(Announced {
        interval: Duration::from_secs(u64::from(
            r.interval.max(r.min_interval.unwrap_or(0)).max(30),
        )),
        peers: r.peers.iter().map(|p| p.addr).collect(),
        seeders: r.complete,
        leechers: r.incomplete,
        external_ip: r.external_ip,
    })
}

async fn udp_exchange(
    socket: &UdpSocket,
    request: &Request,
    ipv6: bool,
) -> Result<Response, TrackerError> {
    let mut out = Vec::new();
    request.write(&mut out);
    let mut buf = vec![0u8; 65536];
    for _ in 0..UDP_ATTEMPTS {
        socket.send(&out).await?;
        match tokio::time::timeout(UDP_ATTEMPT, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let response = Response::parse(&buf[..n], ipv6)?;
                let tid = match &response {
                    Response::Connect { transaction_id, .. }
                    | Response::Announce { transaction_id, .. }
                    | Response::Scrape { transaction_id, .. }
                    | Response::Error { transaction_id, .. } => *transaction_id,
                };
                if tid != request.transaction_id() {
                    continue;
                }
                if let Response::Error { message, .. } = response {
                    return Err(TrackerError::Refused(message));
                }
                return Ok(response);
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => continue,
        }
    }
    Err(TrackerError::NoAnswer)
}

fn transaction_id() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ 0x5bd1_e995
}

/// A UDP tracker session: a socket connected to the tracker and a connection ID from it (BEP 15).
struct UdpSession {
    socket: UdpSocket,
    connection_id: u64,
    ipv6: bool,
}

async fn udp_connect(
    url: &str,
    bind: Option<IpAddr>,
) -> Result<(UdpSession, String), TrackerError> {
    let u = parse_url(url, "udp", 80)?;
    let addr = resolve(u.host, u.port, bind).await?;
    let local = match bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        Some(ip) => SocketAddr::new(ip, 0),
        None if addr.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        None => SocketAddr::from(([0u16; 8], 0)),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    let ipv6 = addr.is_ipv6();
    let connection_id = match udp_exchange(
        &socket,
        &Request::Connect {
            transaction_id: transaction_id(),
        },
        ipv6,
    )
    .await?
    {
        Response::Connect { connection_id, .. } => connection_id,
        other => {
            return Err(TrackerError::Unexpected(format!(
                "unexpected reply to connect: {other:?}"
            )))
        }
    };
    Ok((
        UdpSession {
            socket,
            connection_id,
            ipv6,
        },
        u.path.to_string(),
    ))
}

async fn announce_udp(
    url: &str,
    a: &Announce,
    bind: Option<IpAddr>,
) -> Result<Announced, TrackerError> {
    let (
        UdpSession {
            socket,
            connection_id,
            ipv6,
        },
        path,
    ) = udp_connect(url, bind).await?;
    let url_data = if path == "/" {
        Vec::new()
    } else {
        path.into_bytes()
    };
    let request = Request::Announce {
        connection_id,
        transaction_id: transaction_id().wrapping_add(1),
        announce: a.clone(),
        url_data,
    };
    match udp_exchange(&socket, &request, ipv6).await? {
        Response::Announce {
            interval,
            leechers,
            seeders,
            peers,
            ..
        } => Ok(Announced {
            interval: Duration::from_secs(u64::from(interval.max(30))),
            peers,
            seeders,
            leechers,
            external_ip: None,
        }),
        other => Err(TrackerError::Unexpected(format!(
            "unexpected reply to announce: {other:?}"
        ))),
    }
}

/// Swarm counts for each info-hash, from the tracker's scrape (BEP 48 over HTTP, BEP 15 over UDP).
pub async fn scrape(
    url: &str,
    hashes: &[InfoHash],
    bind: Option<IpAddr>,
) -> Result<Vec<tracker_proto::ScrapeStats>, TrackerError> {
    if url.starts_with("udp://") {
        let (
            UdpSession {
                socket,
                connection_id,
                ipv6,
            },
            _,
        ) = udp_connect(url, bind).await?;
        let request = Request::Scrape {
            connection_id,
            transaction_id: transaction_id().wrapping_add(2),
            info_hashes: hashes.to_vec(),
        };
        match udp_exchange(&socket, &request, ipv6).await? {
            Response::Scrape { stats, .. } if stats.len() == hashes.len() => Ok(stats),
            other => Err(TrackerError::Unexpected(format!(
                "unexpected reply to scrape: {other:?}"
            ))),
        }
    } else {
        let scrape =
            proto::scrape_url(url).ok_or_else(|| TrackerError::NoScrape(url.to_string()))?;
        let sep = if scrape.contains('?') { '&' } else { '?' };
        let body = http_get(
            &format!("{scrape}{sep}{}", proto::encode_scrape(hashes)),
            bind,
            proto::MAX_RESPONSE_LEN,
        )
        .await?;
        let response = proto::ScrapeResponse::decode(&body)?;
        Ok(hashes
            .iter()
            .map(|h| {
                response
                    .files
                    .iter()
                    .find(|(k, _)| k == h)
                    .map(|(_, s)| *s)
                    .unwrap_or_default()
            })
            .collect())
    }
}
