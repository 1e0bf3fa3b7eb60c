//! Hostile HTTP clients against the tracker on loopback: full scrapes that are never read. (The rest of
//! the hostile suite runs the real binary: crates/spore/tests/tracker_hostile.rs.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tracker::store::Family;
use tracker::Config;
use tracker_proto::Event;

/// A GET /scrape from `local` whose socket takes in little and is not read.
fn stalled_full_scrape(local: &str, server: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(&local.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&server.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.write_all(b"GET /scrape HTTP/1.0\r\nHost: t\r\n\r\n")
        .unwrap();
    // Read just past the start of the body, so the scrape is known to be under way.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\nd5:files") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
        assert!(head.len() < 4096, "{}", String::from_utf8_lossy(&head));
    }
    s
}

/// The first bytes of a full scrape's body from `local`, and whether the body was complete.
fn full_scrape_head(local: &str, server: SocketAddr) -> (Vec<u8>, bool) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&local.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&server.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /scrape HTTP/1.0\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut resp = Vec::new();
    let complete = s.read_to_end(&mut resp).is_ok();
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |p| p + 4);
    let body = &resp[at..];
    let complete = complete && body.ends_with(b"ee");
    (body[..body.len().min(64)].to_vec(), complete)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_scrapes_in_flight_are_capped_and_a_stalled_reader_gives_its_slot_back() {
    let mut config = Config::from_toml(
        "http = \"127.0.0.1:0\"\nudp = \"\"\nfull_scrape_interval = 0\nhttp_idle_timeout = 2\n",
    )
    .unwrap();
    config.udp_workers = 1;
    let running = tracker::start(config).await.unwrap();
    // 200 000 swarms, 100 from each of 2000 sources: about 14 MB of full scrape, far more than
    // socket buffers hold.
    let (mut o4, mut o6) = (Vec::new(), Vec::new());
    for s in 0..2000u32 {
        let peer = SocketAddr::from(([10, 0, (s / 250) as u8, (s % 250) as u8], 6881));
        for i in 0..100u32 {
            let mut hash = [0u8; 20];
            hash[..4].copy_from_slice(&s.to_le_bytes());
            hash[4..8].copy_from_slice(&i.to_le_bytes());
            hash[0] ^= i as u8;
            running.state.store.announce(
                &hash.into(),
                peer,
                1,
                Event::Started,
                Some(0),
                Family::V4,
                &mut o4,
                &mut o6,
            );
        }
    }
    assert_eq!(running.state.store.totals().0, 200_000);
    let addr = running.http_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        // Two clients start a full scrape and never read it.
        let stalled: Vec<TcpStream> = (1..=2)
            .map(|i| stalled_full_scrape(&format!("127.9.0.{i}:0"), addr))
            .collect();
        // A third is turned away while those two are being sent.
        let started = Instant::now();
        let (head, _) = full_scrape_head("127.9.0.3:0", addr);
        assert!(
            head.starts_with(b"d14:failure reason")
                && String::from_utf8_lossy(&head).contains("busy"),
            "a third full scrape was served while two were in flight: {}",
            String::from_utf8_lossy(&head)
        );
        // The stalled replies fail after the 2 s deadline, which gives their slots back.
        loop {
            let (head, complete) = full_scrape_head("127.9.0.4:0", addr);
            if complete && head.starts_with(b"d5:files") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "stalled full scrapes kept their slots"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(stalled);
    })
    .await
    .unwrap();
    running.shutdown().await;
}
