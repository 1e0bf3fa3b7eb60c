//! The tracker over real loopback sockets: UDP connect/announce/scrape, connection-ID checks, HTTP
//! announce/scrape, modes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use tracker::{Config, Mode};
use tracker_proto::http::{self as proto, AnnounceResponse, HttpAnnounce, ScrapeResponse};
use tracker_proto::udp::{Request, Response};
use tracker_proto::{Announce, Event};

fn config() -> Config {
    Config {
        http: "127.0.0.1:0".into(),
        udp: "127.0.0.1:0".into(),
        udp_workers: 2,
        ..Config::default()
    }
}

fn announce(hash: [u8; 20], peer: u8, port: u16, left: u64, event: Event) -> Announce {
    Announce {
        info_hash: tracker_proto::InfoHash(hash),
        peer_id: tracker_proto::PeerId([peer; 20]),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        numwant: None,
        key: None,
        ip: None,
    }
}

struct Udp {
    socket: UdpSocket,
    tracker: SocketAddr,
}

impl Udp {
    fn new(tracker: SocketAddr, local: &str) -> Udp {
        let socket = UdpSocket::bind(local).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        Udp { socket, tracker }
    }

    fn exchange_raw(&self, packet: &[u8]) -> Option<Vec<u8>> {
        self.socket.send_to(packet, self.tracker).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    fn exchange(&self, req: Request) -> Option<Response> {
        let mut out = Vec::new();
        req.write(&mut out);
        self.exchange_raw(&out)
            .map(|b| Response::parse(&b, false).unwrap())
    }

    fn connect(&self) -> u64 {
        match self.exchange(Request::Connect { transaction_id: 77 }) {
            Some(Response::Connect {
                transaction_id: 77,
                connection_id,
            }) => connection_id,
            other => panic!("connect failed: {other:?}"),
        }
    }
}

fn http_get(addr: SocketAddr, path_and_query: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path_and_query} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response");
    assert!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let body = &resp[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    }
}

/// The data of a chunked HTTP/1.1 body (a full scrape is streamed).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line]).unwrap().trim(), 16).unwrap();
        body = &body[line + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_announce_scrape_and_connection_ids() {
    let running = tracker::start(config()).await.unwrap();
    let addr = running.udp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let hash = [9u8; 20];
        let seeder = Udp::new(addr, "127.0.0.2:0");
        let leecher = Udp::new(addr, "127.0.0.3:0");

        // Connect: 16 bytes in, 16 bytes out.
        let reply = seeder
            .exchange_raw(&[
                0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0, 0, 0, 1,
            ])
            .unwrap();
        assert_eq!(reply.len(), 16);

        let id = seeder.connect();
        let r = seeder.exchange(Request::Announce {
            connection_id: id,
            transaction_id: 1,
            announce: announce(hash, 1, 6881, 0, Event::Started),
            url_data: vec![],
        });
        assert_eq!(
            r,
            Some(Response::Announce {
                transaction_id: 1,
                interval: 1800,
                leechers: 0,
                seeders: 1,
                peers: vec![]
            })
        );

        let lid = leecher.connect();
        assert_ne!(lid, id, "IDs are bound to the client address");
        let r = leecher.exchange(Request::Announce {
            connection_id: lid,
            transaction_id: 2,
            announce: announce(hash, 2, 7000, 100, Event::Started),
            url_data: vec![],
        });
        assert_eq!(
            r,
            Some(Response::Announce {
                transaction_id: 2,
                interval: 1800,
                leechers: 1,
                seeders: 1,
                peers: vec!["127.0.0.2:6881".parse().unwrap()],
            })
        );

        // Another client's ID, a made-up ID, and garbage all get silence.
        for bad in [id, 12345] {
            let r = leecher.exchange(Request::Announce {
                connection_id: bad,
                transaction_id: 3,
                announce: announce(hash, 2, 7000, 100, Event::None),
                url_data: vec![],
            });
            assert_eq!(r, None);
        }
        assert_eq!(leecher.exchange_raw(b"hello tracker, please reply"), None);
        assert_eq!(
            leecher.exchange(Request::Scrape {
                connection_id: 1,
                transaction_id: 4,
                info_hashes: vec![tracker_proto::InfoHash(hash)]
            }),
            None
        );

        let r = leecher.exchange(Request::Scrape {
            connection_id: lid,
            transaction_id: 5,
            info_hashes: vec![
                tracker_proto::InfoHash(hash),
                tracker_proto::InfoHash([0; 20]),
            ],
        });
        match r {
            Some(Response::Scrape {
                transaction_id: 5,
                stats,
            }) => {
                assert_eq!((stats[0].seeders, stats[0].leechers), (1, 1));
                assert_eq!(stats[1], Default::default());
            }
            other => panic!("{other:?}"),
        }

        // Stopping leaves the swarm.
        leecher.exchange(Request::Announce {
            connection_id: lid,
            transaction_id: 6,
            announce: announce(hash, 2, 7000, 100, Event::Stopped),
            url_data: vec![],
        });
        match seeder.exchange(Request::Scrape {
            connection_id: id,
            transaction_id: 7,
            info_hashes: vec![tracker_proto::InfoHash(hash)],
        }) {
            Some(Response::Scrape { stats, .. }) => {
                assert_eq!((stats[0].seeders, stats[0].leechers), (1, 0))
            }
            other => panic!("{other:?}"),
        }
    })
    .await
    .unwrap();
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_announce_scrape_and_full_scrape_limit() {
    let running = tracker::start(config()).await.unwrap();
    let addr = running.http_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let hash = *b"\x00\xff%&=+ binary hash!!";
        let query = |peer: u8, port: u16, left: u64, compact: bool| {
            proto::encode_announce(&HttpAnnounce {
                announce: announce(hash, peer, port, left, Event::Started),
                compact,
                no_peer_id: false,
                tracker_id: None,
            })
        };
        let first = AnnounceResponse::decode(&http_get(
            addr,
            &format!("/announce?{}", query(1, 5001, 0, true)),
        ))
        .unwrap();
        assert_eq!(
            (first.complete, first.incomplete, first.peers.len()),
            (1, 0, 0)
        );
        let second = AnnounceResponse::decode(&http_get(
            addr,
            &format!("/announce?{}", query(2, 5002, 9, false)),
        ))
        .unwrap();
        assert_eq!((second.complete, second.incomplete), (1, 1));
        assert_eq!(second.peers[0].addr, "127.0.0.1:5001".parse().unwrap());
        assert_eq!(second.interval, 1800);
        assert_eq!(second.min_interval, Some(300));
        // BEP 24: each requester learns the address it was seen at.
        assert_eq!(first.external_ip, Some("127.0.0.1".parse().unwrap()));

        let scrape = ScrapeResponse::decode(&http_get(
            addr,
            &format!(
                "/scrape?{}",
                proto::encode_scrape(&[tracker_proto::InfoHash(hash)])
            ),
        ))
        .unwrap();
        assert_eq!(scrape.files.len(), 1);
        assert_eq!(
            (scrape.files[0].1.seeders, scrape.files[0].1.leechers),
            (1, 1)
        );

        let full = ScrapeResponse::decode(&http_get(addr, "/scrape")).unwrap();
        assert_eq!(full.files[0].0, hash);
        match ScrapeResponse::decode(&http_get(addr, "/scrape")) {
            Err(proto::ResponseError::Failure(reason)) => assert!(reason.contains("rate limit")),
            other => panic!("second full scrape allowed: {other:?}"),
        }

        match AnnounceResponse::decode(&http_get(addr, "/announce?info_hash=short")) {
            Err(proto::ResponseError::Failure(reason)) => assert_eq!(reason, "invalid info_hash"),
            other => panic!("{other:?}"),
        }
        let metrics = String::from_utf8(http_get(addr, "/metrics")).unwrap();
        assert!(
            metrics.contains("spore_tracker_announces_total{protocol=\"http\"} 3"),
            "{metrics}"
        );
        assert!(metrics.contains("spore_tracker_swarms 1"));
        let stats = String::from_utf8(http_get(addr, "/stats")).unwrap();
        assert!(stats.contains("<td>swarms<td>1"));
    })
    .await
    .unwrap();
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_mode_needs_a_known_passkey_on_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.redb");
    let passkey = tracker::add_user(&db, "alice").unwrap();
    let running = tracker::start(Config {
        mode: Mode::Private,
        db: Some(db.clone()),
        ..config()
    })
    .await
    .unwrap();
    let (http, udp) = (running.http_addr.unwrap(), running.udp_addr.unwrap());
    let key = passkey.clone();
    tokio::task::spawn_blocking(move || {
        let hash = [3u8; 20];
        let mut a = announce(hash, 1, 5001, 0, Event::Started);
        a.uploaded = 1000;
        let q = proto::encode_announce(&HttpAnnounce {
            announce: a,
            compact: true,
            no_peer_id: false,
            tracker_id: None,
        });
        for path in [
            "/announce".to_string(),
            "/announce/0123456789abcdef".to_string(),
        ] {
            match AnnounceResponse::decode(&http_get(http, &format!("{path}?{q}"))) {
                Err(proto::ResponseError::Failure(r)) => assert_eq!(r, "unknown passkey"),
                other => panic!("{path}: {other:?}"),
            }
        }
        assert!(AnnounceResponse::decode(&http_get(http, &format!("/announce/{key}?{q}"))).is_ok());
        // Private trackers offer no full scrape.
        assert!(ScrapeResponse::decode(&http_get(http, "/scrape")).is_err());

        let client = Udp::new(udp, "127.0.0.4:0");
        let id = client.connect();
        let send = |url: &[u8]| {
            client.exchange(Request::Announce {
                connection_id: id,
                transaction_id: 9,
                announce: announce(hash, 2, 5002, 10, Event::Started),
                url_data: url.to_vec(),
            })
        };
        assert_eq!(
            send(b"/announce/bogus"),
            Some(Response::Error {
                transaction_id: 9,
                message: "unknown passkey".into()
            })
        );
        assert_eq!(
            send(b""),
            Some(Response::Error {
                transaction_id: 9,
                message: "unknown passkey".into()
            })
        );
        match send(format!("/announce/{key}").as_bytes()) {
            Some(Response::Announce {
                seeders: 1,
                leechers: 1,
                peers,
                ..
            }) => {
                assert_eq!(peers, vec!["127.0.0.1:5001".parse::<SocketAddr>().unwrap()])
            }
            other => panic!("{other:?}"),
        }
    })
    .await
    .unwrap();
    running.shutdown().await;
    // Totals were saved at shutdown. Each peer announced once: a first report is a baseline, never
    // credited (tests/hostile.rs has the deltas).
    let users = tracker::list_users(&db).unwrap();
    assert_eq!(users[0].name, "alice");
    assert_eq!(users[0].uploaded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_list_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("deny.txt");
    std::fs::write(&list, format!("{}\n", "11".repeat(20))).unwrap();
    let running = tracker::start(Config {
        mode: Mode::Deny,
        list: Some(list.clone()),
        ..config()
    })
    .await
    .unwrap();
    let http = running.http_addr.unwrap();
    let ask = move |hash: [u8; 20]| {
        let q = proto::encode_announce(&HttpAnnounce {
            announce: announce(hash, 1, 5001, 0, Event::Started),
            compact: true,
            no_peer_id: false,
            tracker_id: None,
        });
        AnnounceResponse::decode(&http_get(http, &format!("/announce?{q}")))
    };
    let (a, b) = tokio::task::spawn_blocking(move || (ask([0x11; 20]), ask([0x22; 20])))
        .await
        .unwrap();
    assert!(a.is_err() && b.is_ok());
    std::fs::write(&list, format!("{}\n", "22".repeat(20))).unwrap();
    running.reload().unwrap();
    let (a, b) = tokio::task::spawn_blocking(move || (ask([0x11; 20]), ask([0x22; 20])))
        .await
        .unwrap();
    assert!(a.is_ok() && b.is_err());
    running.shutdown().await;
}

/// Whether the server closed `s` (end of file or reset) within `wait`.
fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn connect_from(local: &str, server: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&local.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&server.into()).unwrap();
    socket.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_flood_from_one_address_gets_only_its_own_slots() {
    let running = tracker::start(Config {
        http_max_connections_per_ip: 4,
        http_request_timeout: 3,
        ..config()
    })
    .await
    .unwrap();
    let addr = running.http_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        // One address opens 20 connections: 4 are served, the rest are closed on accept.
        let mut flood: Vec<TcpStream> =
            (0..20).map(|_| connect_from("127.0.0.7:0", addr)).collect();
        let mut closed = 0;
        for s in &mut flood {
            // Refused ones read EOF at once; the 4 open ones take the 100 ms each (well within the
            // idle timeout for all 20).
            closed += usize::from(closed_by_server(s, Duration::from_millis(100)));
        }
        assert_eq!(closed, 16, "4 of 20 connections should stay open");
        // The flooding address's open slots still answer, and another address is not affected.
        let mut kept: Vec<TcpStream> = flood
            .into_iter()
            .filter_map(|mut s| {
                (write!(s, "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n").is_ok()).then_some(s)
            })
            .collect();
        let mut answered = 0;
        for s in &mut kept {
            let mut head = [0u8; 12];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            if s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200" {
                answered += 1;
            }
        }
        assert_eq!(answered, 4);
        let stats = String::from_utf8(http_get(addr, "/stats")).unwrap();
        assert!(stats.contains("<td>swarms<td>0"), "{stats}");
        let metrics = String::from_utf8(http_get(addr, "/metrics")).unwrap();
        assert!(
            metrics.contains("spore_tracker_http_refused_total 16"),
            "{metrics}"
        );

        // A connection that sends nothing is closed after the idle timeout and frees its slot.
        let mut idle = connect_from("127.0.0.8:0", addr);
        assert!(
            !closed_by_server(&mut idle, Duration::from_millis(1000)),
            "closed before the idle timeout"
        );
        assert!(
            closed_by_server(&mut idle, Duration::from_secs(5)),
            "an idle connection stayed open"
        );
        drop(kept);
        // With the flood's sockets gone its address gets slots again (they are returned on close).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut s = connect_from("127.0.0.7:0", addr);
            if !closed_by_server(&mut s, Duration::from_millis(200)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "slots not returned after close"
            );
        }
    })
    .await
    .unwrap();
    running.shutdown().await;
}

/// A CA and a server certificate for 127.0.0.1 it signed, as PEM files in `dir`; returns the client
/// settings that trust that CA.
fn tls_files(dir: &std::path::Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A GET over TLS from `local`; the whole response.
fn https_get(
    client: &std::sync::Arc<rustls::ClientConfig>,
    local: &str,
    server: SocketAddr,
    path: &str,
) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let tcp = connect_from(local, server);
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(tls, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    out
}

fn body(response: &[u8]) -> &[u8] {
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP headers");
    &response[at + 4..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_same_routes_under_the_same_limits_and_bounds_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let client = tls_files(dir.path());
    let running = tracker::start(Config {
        https: "127.0.0.1:0".into(),
        tls_cert: Some(dir.path().join("cert.pem")),
        tls_key: Some(dir.path().join("key.pem")),
        tls_handshake_timeout: 2,
        http_request_timeout: 30,
        http_max_connections_per_ip: 2,
        ..config()
    })
    .await
    .unwrap();
    let https = running.https_addr.unwrap();
    let http = running.http_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        // Announce and scrape answer over TLS as over HTTP.
        let hash = [0x42; 20];
        let q = proto::encode_announce(&HttpAnnounce {
            announce: announce(hash, 1, 6881, 0, Event::Started),
            compact: true,
            no_peer_id: true,
            tracker_id: None,
        });
        let r = https_get(&client, "127.0.0.10:0", https, &format!("/announce?{q}"));
        let a = AnnounceResponse::decode(body(&r)).unwrap();
        assert_eq!(a.complete, 1);
        let r = https_get(
            &client,
            "127.0.0.10:0",
            https,
            &format!(
                "/scrape?{}",
                proto::encode_scrape(&[tracker_proto::InfoHash(hash)])
            ),
        );
        let scrape = ScrapeResponse::decode(body(&r)).unwrap();
        assert_eq!(scrape.files.len(), 1);
        let r = https_get(&client, "127.0.0.10:0", https, "/stats");
        assert!(String::from_utf8_lossy(&r).contains("<td>swarms<td>1"));

        // Stalled handshakes (a byte of a ClientHello, then a trickle) hold a slot each, within the
        // per-address cap shared with plain HTTP, and are cut off at the handshake deadline though
        // they never sit idle.
        let started = std::time::Instant::now();
        let mut stalled: Vec<TcpStream> = (0..2)
            .map(|_| connect_from("127.0.0.11:0", https))
            .collect();
        for s in &mut stalled {
            s.write_all(&[0x16]).unwrap();
        }
        // A third over HTTPS is accepted after the two (one listener takes connections in order), so
        // its refusal shows both hold their slots; then one over plain HTTP is turned away too (one
        // table for both listeners). Probing over HTTP first could take a slot before the HTTPS accept
        // loop got to the stalled ones.
        let mut third = connect_from("127.0.0.11:0", https);
        assert!(
            closed_by_server(&mut third, Duration::from_millis(1000)),
            "a third connection from the address got in over HTTPS"
        );
        let mut over = connect_from("127.0.0.11:0", http);
        assert!(
            closed_by_server(&mut over, Duration::from_millis(1000)),
            "a third connection from the address got in over HTTP"
        );
        let mut closed = 0;
        for s in &mut stalled {
            loop {
                if closed_by_server(s, Duration::from_millis(200)) {
                    closed += 1;
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(6),
                    "a stalled handshake was never cut off"
                );
                let _ = s.write_all(&[0x03]);
            }
        }
        assert_eq!(closed, 2);
        assert!(
            started.elapsed() >= Duration::from_millis(1900),
            "cut off too early"
        );
        // Their slots are back: the address completes a handshake again.
        let r = https_get(&client, "127.0.0.11:0", https, "/metrics");
        let metrics = String::from_utf8_lossy(&r);
        assert!(
            metrics.contains("spore_tracker_tls_failed_total 2"),
            "{metrics}"
        );
    })
    .await
    .unwrap();
    running.shutdown().await;
}

#[tokio::test]
async fn https_needs_a_certificate_and_key_that_load() {
    let dir = tempfile::tempdir().unwrap();
    let e = tracker::start(Config {
        https: "127.0.0.1:0".into(),
        ..config()
    })
    .await
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("tls_cert"), "{e:#}");
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    let e = tracker::start(Config {
        https: "127.0.0.1:0".into(),
        tls_cert: Some(dir.path().join("bad.pem")),
        tls_key: Some(dir.path().join("bad.pem")),
        ..config()
    })
    .await
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("bad.pem"), "{e:#}");
}

/// BEP 7 on a dual-stack tracker: one client announcing from its IPv4 and its IPv6 address is one
/// peer in each list, every requester gets both (`peers6` included), and `ip=`, `ipv4=`, `ipv6=`
/// register nothing: only a request's source address is ever recorded, so nobody can have the
/// tracker hand out a third party's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_announces_and_address_parameters() {
    let running = tracker::start(Config {
        http: "[::]:0".into(),
        udp: "[::]:0".into(),
        ..config()
    })
    .await
    .unwrap();
    let port = running.http_addr.unwrap().port();
    let udp_port = running.udp_addr.unwrap().port();
    tokio::task::spawn_blocking(move || {
        let hash = [0x77; 20];
        let query = |peer: u8, port: u16, extra: &str| {
            let q = proto::encode_announce(&HttpAnnounce {
                announce: announce(hash, peer, port, 9, Event::Started),
                compact: true,
                no_peer_id: true,
                tracker_id: None,
            });
            format!("/announce?{q}{extra}")
        };
        let v4: SocketAddr = ([127, 0, 0, 1], port).into();
        let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        // The same client from both families, naming third-party addresses as it goes.
        let spoof = "&ip=192.0.2.7&ipv4=192.0.2.8%3A9&ipv6=%5B2001%3Adb8%3A%3A9%5D%3A9";
        AnnounceResponse::decode(&http_get(v4, &query(1, 6001, spoof))).unwrap();
        let from_v6 = AnnounceResponse::decode(&http_get(v6, &query(1, 6001, spoof))).unwrap();
        assert_eq!(from_v6.external_ip, Some("::1".parse().unwrap()));
        assert_eq!(
            from_v6.peers.iter().map(|p| p.addr).collect::<Vec<_>>(),
            vec!["127.0.0.1:6001".parse::<SocketAddr>().unwrap()],
            "its own IPv6 entry left out, no spoofed address anywhere"
        );
        // Another peer over IPv4 gets both of the first one's addresses, IPv6 in `peers6`.
        let body = http_get(v4, &query(2, 6002, ""));
        assert!(body.windows(7).any(|w| w == b"peers6:"), "no peers6 key");
        let mut peers: Vec<SocketAddr> = AnnounceResponse::decode(&body)
            .unwrap()
            .peers
            .iter()
            .map(|p| p.addr)
            .collect();
        peers.sort();
        let mut want: Vec<SocketAddr> = vec![
            "[::1]:6001".parse().unwrap(),
            "127.0.0.1:6001".parse().unwrap(),
        ];
        want.sort();
        assert_eq!(peers, want);
        // UDP (BEP 15) answers in the requester's family: 18-byte entries to an IPv6 client.
        let udp = Udp::new(format!("[::1]:{udp_port}").parse().unwrap(), "[::1]:0");
        let connection_id = udp.connect();
        let mut out = Vec::new();
        Request::Announce {
            connection_id,
            transaction_id: 5,
            announce: announce(hash, 3, 6003, 9, Event::Started),
            url_data: Vec::new(),
        }
        .write(&mut out);
        let reply = udp.exchange_raw(&out).unwrap();
        match Response::parse(&reply, true).unwrap() {
            Response::Announce { peers, .. } => {
                assert_eq!(peers, vec!["[::1]:6001".parse::<SocketAddr>().unwrap()])
            }
            other => panic!("{other:?}"),
        }
    })
    .await
    .unwrap();
    running.shutdown().await;
}
