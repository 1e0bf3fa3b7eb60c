//! The HTTP front end: announce and scrape (optionally with a passkey path), `/stats` and `/metrics`.
//!
//! Queries are read raw (`RawQuery`) and parsed by `tracker-proto` byte for byte: `info_hash` and
//! `peer_id` are binary and must not pass through a text decoder.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, RawQuery, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bencode::{DictBuilder, Owned};
use tracker_proto::http::{self as proto, ScrapeResponse};

use crate::http_limits::{ConnectionLimits, LimitedListener, RemoteAddr};
use crate::metrics::Counters;
use crate::store::Family;
use crate::tls::TlsListener;
use crate::State;

type Shared = Arc<State>;

fn router(state: &Shared) -> Router {
    Router::new()
        .route("/announce", get(announce))
        .route("/announce/{passkey}", get(announce_with_key))
        .route("/scrape", get(scrape))
        .route("/scrape/{passkey}", get(scrape_with_key))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
}

fn limited(listener: tokio::net::TcpListener, state: &Shared) -> LimitedListener {
    let limits = ConnectionLimits {
        total: state.config.http_max_connections,
        per_ip: state.config.http_max_connections_per_ip,
        deadline: std::time::Duration::from_secs(state.config.http_request_timeout),
    };
    LimitedListener::new(listener, limits, state.clone())
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let result = axum::serve(
        limited(listener, &state),
        router(&state).into_make_service_with_connect_info::<RemoteAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = shutdown.await;
    })
    .await;
    if let Err(e) = result {
        tracing::error!("HTTP tracker stopped: {e}");
    }
}

/// The same routes over TLS. Connections are admitted by the same limits before their handshake, so
/// a handshake in progress holds a slot, and one that does not finish in time is dropped.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Shared,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let timeout = std::time::Duration::from_secs(state.config.tls_handshake_timeout);
    let listener = TlsListener::new(limited(listener, &state), acceptor, timeout, state.clone());
    let result = axum::serve(
        listener,
        router(&state).into_make_service_with_connect_info::<RemoteAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = shutdown.await;
    })
    .await;
    if let Err(e) = result {
        tracing::error!("HTTPS tracker stopped: {e}");
    }
}

fn bencoded(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

fn failure(state: &State, reason: &str) -> Response {
    Counters::add(&state.counters.errors);
    bencoded(proto::failure(reason))
}

async fn announce(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(RemoteAddr(remote)): ConnectInfo<RemoteAddr>,
    RawQuery(query): RawQuery,
) -> Response {
    do_announce(&state, remote, query.as_deref().unwrap_or(""), None).await
}

async fn announce_with_key(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(RemoteAddr(remote)): ConnectInfo<RemoteAddr>,
    Path(passkey): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    do_announce(
        &state,
        remote,
        query.as_deref().unwrap_or(""),
        Some(passkey.as_bytes()),
    )
    .await
}

async fn do_announce(
    state: &State,
    remote: SocketAddr,
    query: &str,
    passkey: Option<&[u8]>,
) -> Response {
    Counters::add(&state.counters.http_announces);
    let req = match proto::parse_announce(query.as_bytes()) {
        Ok(r) => r,
        Err(e) => return failure(state, &e.to_string()),
    };
    let a = &req.announce;
    if let Some(reason) = crate::refuse_announce(a) {
        return failure(state, reason);
    }
    if let Err(refusal) = state.access.check(&a.info_hash, passkey) {
        return failure(state, refusal.reason());
    }
    if let Some(key) = passkey {
        state.access.account(
            key,
            &a.info_hash,
            &a.peer_id,
            a.uploaded,
            a.downloaded,
            a.event,
        );
    }
    // IPv4-mapped sources (a dual-stack listener) are IPv4 clients.
    let peer = SocketAddr::new(remote.ip().to_canonical(), a.port);
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    let outcome = match &state.cluster {
        None => state.store.announce(
            &a.info_hash,
            peer,
            a.left,
            a.event,
            a.numwant,
            Family::Both,
            &mut v4,
            &mut v6,
        ),
        Some(cluster) => {
            let job = crate::cluster::Job {
                hash: a.info_hash,
                peer,
                left: a.left,
                event: a.event,
                want: crate::cluster::want(&state.config, a.numwant),
                family: Family::Both,
                may_create: state.store.may_create(&a.info_hash, peer),
            };
            let answer = cluster.announce(&job).await;
            match crate::cluster::complete(state, &job, answer) {
                Ok(answer) => {
                    (v4, v6) = (answer.v4, answer.v6);
                    crate::store::AnnounceOutcome {
                        seeders: answer.seeders,
                        leechers: answer.leechers,
                    }
                }
                Err(reason) => return failure(state, reason),
            }
        }
    };
    let mut d = DictBuilder::new();
    d.insert("interval", Owned::Int(i64::from(state.config.interval)))
        .insert(
            "min interval",
            Owned::Int(i64::from(state.config.min_interval)),
        )
        .insert("complete", Owned::Int(i64::from(outcome.seeders)))
        .insert("incomplete", Owned::Int(i64::from(outcome.leechers)))
        // BEP 24: a peer behind a NAT learns the address it is seen at.
        .insert(
            "external ip",
            Owned::Bytes(proto::external_ip_bytes(peer.ip())),
        );
    if req.compact {
        d.insert("peers", Owned::Bytes(v4));
        if !v6.is_empty() {
            d.insert("peers6", Owned::Bytes(v6));
        }
    } else {
        // Peer IDs are not stored (peers are kept compact), so the dictionary form has ip and port only.
        let mut list: Vec<Owned> = Vec::new();
        for (chunk, size) in [(&v4, 6usize), (&v6, 18)] {
            for c in chunk.chunks_exact(size) {
                let ip: std::net::IpAddr = if size == 6 {
                    std::net::Ipv4Addr::new(c[0], c[1], c[2], c[3]).into()
                } else {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&c[..16]);
                    std::net::Ipv6Addr::from(b).into()
                };
                let mut e = DictBuilder::new();
                e.insert("ip", Owned::str(&ip.to_string())).insert(
                    "port",
                    Owned::Int(i64::from(u16::from_be_bytes([c[size - 2], c[size - 1]]))),
                );
                list.push(e.build());
            }
        }
        d.insert("peers", Owned::List(list));
    }
    bencoded(d.build().encode())
}

async fn scrape(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(RemoteAddr(remote)): ConnectInfo<RemoteAddr>,
    RawQuery(query): RawQuery,
) -> Response {
    do_scrape(&state, remote, query.as_deref().unwrap_or(""), None).await
}

async fn scrape_with_key(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(RemoteAddr(remote)): ConnectInfo<RemoteAddr>,
    Path(passkey): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    do_scrape(
        &state,
        remote,
        query.as_deref().unwrap_or(""),
        Some(passkey.as_bytes()),
    )
    .await
}

async fn do_scrape(
    state: &Shared,
    remote: SocketAddr,
    query: &str,
    passkey: Option<&[u8]>,
) -> Response {
    Counters::add(&state.counters.http_scrapes);
    let hashes = match proto::parse_scrape(query.as_bytes()) {
        Ok(h) => h,
        Err(e) => return failure(state, &e.to_string()),
    };
    if hashes.is_empty() {
        // A full scrape lists every public swarm; private and list-controlled trackers do not offer it.
        if state.access.mode() != crate::Mode::Open || !state.config.full_scrape {
            return failure(state, "full scrape is not available on this tracker");
        }
        let Some(slot) = FullScrapeSlot::take(state) else {
            return failure(state, "full scrape busy: try again later");
        };
        if !state.allow_full_scrape(remote.ip()) {
            return failure(state, "full scrape rate limit: try again later");
        }
        return (
            [(header::CONTENT_TYPE, "text/plain")],
            axum::body::Body::new(FullScrape {
                state: state.clone(),
                next: 0,
                _slot: slot,
            }),
        )
            .into_response();
    }
    let hashes: Vec<tracker_proto::InfoHash> = hashes
        .into_iter()
        .filter(|h| state.access.check(h, passkey).is_ok())
        .collect();
    let files = match &state.cluster {
        None => hashes.iter().map(|h| (*h, state.store.scrape(h))).collect(),
        Some(cluster) => {
            // From the view where it is fresh; the others from the cluster in one round trip, or
            // from this node's own table if the cluster fails.
            let files: Vec<_> = hashes
                .iter()
                .map(|h| (*h, cluster.scrape_from_view(h)))
                .collect();
            let missing: Vec<tracker_proto::InfoHash> = files
                .iter()
                .filter(|(_, s)| s.is_none())
                .map(|(h, _)| *h)
                .collect();
            let mut fetched = if missing.is_empty() {
                Vec::new()
            } else {
                cluster.scrape_all(&missing).await
            }
            .into_iter();
            files
                .into_iter()
                .map(|(h, s)| {
                    let stats = s.or_else(|| fetched.next().and_then(Result::ok));
                    (h, stats.unwrap_or_else(|| state.store.scrape(&h)))
                })
                .collect()
        }
    };
    bencoded(ScrapeResponse { files }.encode())
}

/// One of the `full_scrape_max_concurrent` full scrapes allowed at a time, given back on drop (when its
/// body is finished or its connection is gone).
struct FullScrapeSlot(Shared);

impl FullScrapeSlot {
    fn take(state: &Shared) -> Option<FullScrapeSlot> {
        state
            .full_scrapes_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < state.config.full_scrape_max_concurrent).then_some(n + 1)
            })
            .ok()
            .map(|_| FullScrapeSlot(state.clone()))
    }
}

impl Drop for FullScrapeSlot {
    fn drop(&mut self) {
        self.0.full_scrapes_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A full scrape as a response body made while it is sent: each frame is the swarms whose info-hash
/// starts with one byte value (in order, so the dictionary's keys stay sorted), encoded as
/// `ScrapeResponse::encode` would. A slow reader holds one frame, not the whole table's worth.
struct FullScrape {
    state: Shared,
    /// The next first byte to walk; 256 means the closing bytes, 257 the end.
    next: u16,
    _slot: FullScrapeSlot,
}

impl http_body::Body for FullScrape {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let mut out = Vec::new();
        match self.next {
            0..=255 => {
                if self.next == 0 {
                    out.extend_from_slice(b"d5:filesd");
                }
                let mut files = Vec::new();
                self.state
                    .store
                    .scrape_first_byte(self.next as u8, &mut files);
                for (hash, s) in &files {
                    out.extend_from_slice(b"20:");
                    out.extend_from_slice(&hash[..]);
                    let _ = write!(
                        Bytes(&mut out),
                        "d8:completei{}e10:downloadedi{}e10:incompletei{}ee",
                        s.seeders,
                        s.completed,
                        s.leechers
                    );
                }
            }
            256 => out.extend_from_slice(b"ee"),
            _ => return Poll::Ready(None),
        }
        self.next += 1;
        Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from(out)))))
    }

    fn is_end_stream(&self) -> bool {
        self.next > 256
    }
}

/// `fmt::Write` into a byte vector.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

async fn stats(AxumState(state): AxumState<Shared>) -> Response {
    let (swarms, seeders, leechers) = state.store.totals();
    let (announce_rate, scrape_rate) = state.rates.get();
    let c = &state.counters;
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><meta charset=utf-8><title>Spore tracker</title>\
         <h1>Spore tracker</h1><table>\
         <tr><td>mode<td>{:?}\
         <tr><td>swarms<td>{swarms}\
         <tr><td>peers<td>{}\
         <tr><td>seeders<td>{seeders}\
         <tr><td>leechers<td>{leechers}\
         <tr><td>announces/s<td>{announce_rate:.1}\
         <tr><td>scrapes/s<td>{scrape_rate:.1}\
         <tr><td>announces (HTTP / UDP)<td>{} / {}\
         <tr><td>scrapes (HTTP / UDP)<td>{} / {}\
         <tr><td>errors<td>{}\
         <tr><td>dropped UDP packets<td>{}\
         <tr><td>refused HTTP connections<td>{}\
         <tr><td>failed TLS handshakes<td>{}\
         </table>",
        state.access.mode(),
        seeders + leechers,
        c.http_announces.load(Ordering::Relaxed),
        c.udp_announces.load(Ordering::Relaxed),
        c.http_scrapes.load(Ordering::Relaxed),
        c.udp_scrapes.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        c.dropped.load(Ordering::Relaxed),
        c.http_refused.load(Ordering::Relaxed),
        c.tls_failed.load(Ordering::Relaxed),
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

async fn metrics(AxumState(state): AxumState<Shared>) -> Response {
    let (swarms, seeders, leechers) = state.store.totals();
    let c = &state.counters;
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(text, "{name}{labels} {value}");
        }
    };
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    metric(
        "spore_tracker_announces_total",
        "counter",
        "Announce requests received.",
        &[
            ("{protocol=\"http\"}", load(&c.http_announces)),
            ("{protocol=\"udp\"}", load(&c.udp_announces)),
        ],
    );
    metric(
        "spore_tracker_scrapes_total",
        "counter",
        "Scrape requests received.",
        &[
            ("{protocol=\"http\"}", load(&c.http_scrapes)),
            ("{protocol=\"udp\"}", load(&c.udp_scrapes)),
        ],
    );
    if let Some(cluster) = &state.cluster {
        metric(
            "spore_tracker_cluster_up",
            "gauge",
            "1 while the cluster answers, 0 since a request to it failed.",
            &[("", u64::from(cluster.is_up()))],
        );
        metric(
            "spore_tracker_cluster_requests_total",
            "counter",
            "Script calls sent to the cluster (one per announce sent at once, per swarm flushed, per scraped info-hash).",
            &[("", load(&cluster.requests))],
        );
        metric(
            "spore_tracker_cluster_batches_total",
            "counter",
            "Sets of requests sent to the cluster together (one round trip per cluster node each).",
            &[("", load(&cluster.batches))],
        );
        metric(
            "spore_tracker_cluster_errors_total",
            "counter",
            "Requests to the cluster that failed.",
            &[("", load(&cluster.errors))],
        );
        metric(
            "spore_tracker_cluster_view_answers_total",
            "counter",
            "Announces answered from this node's view of the swarm (their writes queued).",
            &[("", load(&cluster.view_answers))],
        );
        metric(
            "spore_tracker_cluster_view_scrapes_total",
            "counter",
            "Scraped info-hashes answered from this node's view of the swarm.",
            &[("", load(&cluster.view_scrapes))],
        );
        metric(
            "spore_tracker_cluster_queued",
            "gauge",
            "Writes waiting for the next flush to the cluster.",
            &[("", cluster.queue.len() as u64)],
        );
        metric(
            "spore_tracker_cluster_queue_full_total",
            "counter",
            "Announces sent to the cluster at once because the write queue was full.",
            &[("", load(&cluster.queue.full))],
        );
        metric(
            "spore_tracker_cluster_waiting",
            "gauge",
            "UDP requests waiting on the cluster (their worker went on serving).",
            &[("", cluster.waiting.count() as u64)],
        );
        metric(
            "spore_tracker_cluster_busy_total",
            "counter",
            "UDP requests answered busy because too many were waiting on the cluster.",
            &[("", load(&cluster.waiting.busy))],
        );
        metric(
            "spore_tracker_cluster_writes_lost_total",
            "counter",
            "Queued writes dropped: the cluster failed them and the queue had no room to retry.",
            &[("", load(&cluster.queue.lost))],
        );
    }
    metric(
        "spore_tracker_udp_connects_total",
        "counter",
        "UDP connect requests answered.",
        &[("", load(&c.udp_connects))],
    );
    metric(
        "spore_tracker_errors_total",
        "counter",
        "Requests refused or malformed.",
        &[("", load(&c.errors))],
    );
    metric(
        "spore_tracker_udp_dropped_total",
        "counter",
        "UDP packets dropped without reply.",
        &[("", load(&c.dropped))],
    );
    metric(
        "spore_tracker_http_refused_total",
        "counter",
        "HTTP connections closed at once: too many open from one address or in all.",
        &[("", load(&c.http_refused))],
    );
    metric(
        "spore_tracker_tls_failed_total",
        "counter",
        "HTTPS connections closed because their TLS handshake failed or timed out.",
        &[("", load(&c.tls_failed))],
    );
    metric(
        "spore_tracker_swarms",
        "gauge",
        "Torrents with peers.",
        &[("", swarms)],
    );
    metric(
        "spore_tracker_private_peers",
        "gauge",
        "Private peers remembered for crediting transfer deltas.",
        &[("", state.access.tracked_peers() as u64)],
    );
    metric(
        "spore_tracker_peers",
        "gauge",
        "Peers by state.",
        &[
            ("{state=\"seeder\"}", seeders),
            ("{state=\"leecher\"}", leechers),
        ],
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}
