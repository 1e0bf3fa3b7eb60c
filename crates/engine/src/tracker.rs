//! Tracker client: HTTP and HTTPS (through [`crate::http`], a hand-written HTTP/1.0 GET, so
//! `info_hash` bytes are encoded exactly) and UDP (BEP 15 with BEP 41 URL data), and BEP 12 tiers.
//!
//! A client listening on both families (a dual-stack `[::]` socket) announces once over IPv4 and once
//! over IPv6 to a tracker whose name has addresses of both, each from a socket of that family, so the
//! tracker records both of our addresses (BEP 7 as revised in 2020). The `ipv4=`/`ipv6=` parameters
//! are never sent: BEP 7 now discourages them, since a tracker that trusts them can be made to hand
//! out a victim's address.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tracker_proto::http::{self as proto, AnnounceResponse, HttpAnnounce};
use tracker_proto::udp::{Request, Response};
use tracker_proto::{Announce, InfoHash};

pub use crate::error::TrackerError;
use crate::http::resolve;
pub use crate::http::{http_get, HttpError};
use http_client::parse_url;

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

/// Announces to one tracker URL from the client listening on `listen`: from that address when it is
/// a specific one (so the tracker records the address we listen on); over IPv4 for `0.0.0.0`; and
/// for `[::]` (which takes both families) over each family the tracker's name has addresses of, the
/// peers of both answers merged. It fails only if every announce failed.
pub async fn announce(
    url: &str,
    announce: &Announce,
    listen: IpAddr,
) -> Result<Announced, TrackerError> {
    let sources = match listen {
        IpAddr::V6(v6) if v6.is_unspecified() => dual_sources(url).await,
        ip => vec![Some(ip)],
    };
    let answers = if let [v4, v6] = sources[..] {
        both_families(v4, v6, |bind| {
            let (url, announce) = (url.to_string(), announce.clone());
            async move {
                let answer = announce_from(&url, &announce, bind).await;
                if let Ok(r) = &answer {
                    let family = if bind.is_some_and(|ip| ip.is_ipv4()) {
                        "IPv4"
                    } else {
                        "IPv6"
                    };
                    tracing::debug!(
                        "tracker {url}: announced over {family}, {} peers",
                        r.peers.len()
                    );
                }
                answer
            }
        })
        .await
    } else {
        let mut answers = Vec::with_capacity(sources.len());
        for bind in sources {
            answers.push(announce_from(url, announce, bind).await);
        }
        answers
    };
    merge(answers)
}

/// How long the second family's announce is waited for once the first has succeeded. A host whose
/// IPv6 (or IPv4) route drops packets would otherwise hold every announce's peers back until the
/// slow one times out (15 s over HTTP); past this wait it goes on by itself, so the tracker still
/// learns that address, and only its peers are not merged.
const SECOND_FAMILY_GRACE: Duration = Duration::from_secs(3);

/// The announces from `v4` and `v6` at once (`one` makes each); their answers once both are in, or
/// once one succeeded and the other had [`SECOND_FAMILY_GRACE`] more (it then runs on by itself).
async fn both_families<F, Fut>(
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
    one: F,
) -> Vec<Result<Announced, TrackerError>>
where
    F: Fn(Option<IpAddr>) -> Fut,
    Fut: std::future::Future<Output = Result<Announced, TrackerError>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    running.spawn(one(v4));
    running.spawn(one(v6));
    let mut answers = Vec::with_capacity(2);
    let mut deadline = None;
    loop {
        let next = match deadline {
            None => running.join_next().await,
            Some(at) => match tokio::time::timeout_at(at, running.join_next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        let Some(joined) = next else {
            break;
        };
        let Ok(answer) = joined else {
            continue;
        };
        if answer.is_ok() {
            deadline.get_or_insert(tokio::time::Instant::now() + SECOND_FAMILY_GRACE);
        }
        answers.push(answer);
    }
    running.detach_all();
    answers
}

/// The sources of a `[::]` listener's announce: IPv4 and IPv6 when the tracker's host has addresses
/// of both, else one with no preference.
async fn dual_sources(url: &str) -> Vec<Option<IpAddr>> {
    let parsed = if url.starts_with("udp://") {
        parse_url(url, "udp", 80)
    } else if url.starts_with("https://") {
        parse_url(url, "https", 443)
    } else {
        parse_url(url, "http", 80)
    };
    let Ok(u) = parsed else {
        return vec![None];
    };
    let lookup = tokio::net::lookup_host((u.host, u.port));
    let Ok(Ok(addrs)) = tokio::time::timeout(Duration::from_secs(10), lookup).await else {
        return vec![None];
    };
    let (mut v4, mut v6) = (false, false);
    for a in addrs {
        // A v4-mapped answer is an IPv4 address.
        if a.ip().to_canonical().is_ipv4() {
            v4 = true;
        } else {
            v6 = true;
        }
    }
    if v4 && v6 {
        vec![
            Some(IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED)),
            Some(IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED)),
        ]
    } else {
        vec![None]
    }
}

/// One answer from the announces of one URL: the peers of all (each once), the shortest interval,
/// the largest counts (the same swarm seen twice), the IPv4 external address before the IPv6 one.
/// The first error if none succeeded.
fn merge(answers: Vec<Result<Announced, TrackerError>>) -> Result<Announced, TrackerError> {
    let mut merged: Option<Announced> = None;
    let mut first_error = None;
    for answer in answers {
        match answer {
            Ok(a) => {
                merged = Some(match merged {
                    None => a,
                    Some(mut m) => {
                        m.interval = m.interval.min(a.interval);
                        m.seeders = m.seeders.max(a.seeders);
                        m.leechers = m.leechers.max(a.leechers);
                        let known: HashSet<SocketAddr> = m.peers.iter().copied().collect();
                        m.peers
                            .extend(a.peers.into_iter().filter(|p| !known.contains(p)));
                        m.external_ip = match (m.external_ip, a.external_ip) {
                            (Some(IpAddr::V6(_)), Some(ip @ IpAddr::V4(_))) | (None, Some(ip)) => {
                                Some(ip)
                            }
                            (kept, _) => kept,
                        };
                        m
                    }
                });
            }
            Err(e) => {
                tracing::debug!("one family's announce failed: {e:#}");
                first_error.get_or_insert(e);
            }
        }
    }
    match (merged, first_error) {
        (Some(m), _) => Ok(m),
        (None, Some(e)) => Err(e),
        (None, None) => Err(TrackerError::NoAnswer),
    }
}

/// One announce, sent from `bind` (an unspecified address asks only for its family).
async fn announce_from(
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
    let u = parse_url(url, "udp", 80).map_err(HttpError::from)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(peers: &[&str], interval: u64, seen: &str) -> Announced {
        Announced {
            interval: Duration::from_secs(interval),
            peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
            seeders: 1,
            leechers: peers.len() as u32,
            external_ip: Some(seen.parse().unwrap()),
        }
    }

    #[test]
    fn both_families_answers_merge_into_one() {
        let v6 = answer(&["[2001:db8::1]:1", "10.0.0.1:1"], 1800, "2001:db8::9");
        let v4 = answer(&["10.0.0.1:1", "10.0.0.2:2"], 900, "198.51.100.9");
        let m = merge(vec![Ok(v6), Ok(v4)]).unwrap();
        let peers: Vec<String> = m.peers.iter().map(|p| p.to_string()).collect();
        assert_eq!(peers, ["[2001:db8::1]:1", "10.0.0.1:1", "10.0.0.2:2"]);
        assert_eq!(m.interval, Duration::from_secs(900));
        assert_eq!((m.seeders, m.leechers), (1, 2));
        assert_eq!(m.external_ip, Some("198.51.100.9".parse().unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_family_holds_the_other_back_only_briefly() {
        let start = tokio::time::Instant::now();
        let answers = both_families(
            Some([0, 0, 0, 0].into()),
            Some([0u16; 8].into()),
            |bind| async move {
                if bind.is_some_and(|ip| ip.is_ipv6()) {
                    // A route that drops packets: the HTTP timeout.
                    tokio::time::sleep(Duration::from_secs(15)).await;
                    return Err(TrackerError::NoAnswer);
                }
                Ok(answer(&["10.0.0.1:1"], 60, "198.51.100.9"))
            },
        )
        .await;
        assert_eq!(start.elapsed(), SECOND_FAMILY_GRACE);
        assert_eq!(answers.len(), 1);
        assert!(answers[0].is_ok());
        // Both failing: every answer is waited for.
        let answers = both_families(None, None, |_| async {
            tokio::time::sleep(Duration::from_secs(9)).await;
            Err::<Announced, _>(TrackerError::NoAnswer)
        })
        .await;
        assert_eq!(answers.len(), 2);
    }

    #[test]
    fn one_family_failing_is_not_a_failure() {
        let ok = answer(&["10.0.0.1:1"], 60, "198.51.100.9");
        let m = merge(vec![Err(TrackerError::NoAnswer), Ok(ok)]).unwrap();
        assert_eq!(m.peers.len(), 1);
        let both = merge(vec![
            Err(TrackerError::Refused("first".into())),
            Err(TrackerError::NoAnswer),
        ]);
        assert!(matches!(both, Err(TrackerError::Refused(m)) if m == "first"));
    }
}
