//! A loopback UDP announce load for the tracker, in one process: the tracker with one UDP worker, and
//! client threads each keeping a window of announces in flight over many swarms.
//!
//! `cargo run --release -p tracker --example udp_load -- [SECONDS] [redis://HOST:PORT,...]`
//! prints responses/s and, on a cluster, the requests and round trips the tracker made.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracker_proto::udp::{Request, Response};
use tracker_proto::{Announce, Event};

const CLIENTS: usize = 2;
const WINDOW: usize = 64;
const SWARMS: u64 = 10_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let cluster = args.get(2).cloned().unwrap_or_default();
    let mut toml = String::from(
        "http = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\nudp_workers = 1\nswarm_creation_burst = 0\n",
    );
    if !cluster.is_empty() {
        toml.push_str(&format!("cluster = \"{cluster}\"\n"));
    }
    // Extra settings, e.g. UDP_LOAD_TOML="cluster_view_ttl_ms = 0" for no view.
    if let Ok(extra) = std::env::var("UDP_LOAD_TOML") {
        toml.push_str(&extra);
        toml.push('\n');
    }
    let config = tracker::Config::from_toml(&toml)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let running = runtime.block_on(tracker::start(config))?;
    let target = running.udp_addr.ok_or_else(|| anyhow::anyhow!("no UDP"))?;
    let http = running
        .http_addr
        .ok_or_else(|| anyhow::anyhow!("no HTTP"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let responses = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (stop, responses) = (stop.clone(), responses.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let socket = UdpSocket::bind(format!("127.0.1.{}:0", c + 1))?;
                socket.set_read_timeout(Some(Duration::from_millis(200)))?;
                socket.connect(target)?;
                let mut buf = [0u8; 4096];
                let mut out = Vec::new();
                Request::Connect { transaction_id: 0 }.write(&mut out);
                socket.send(&out)?;
                let n = socket.recv(&mut buf)?;
                let Ok(Response::Connect { connection_id, .. }) = Response::parse(&buf[..n], false)
                else {
                    anyhow::bail!("no connect reply");
                };
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ c as u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..WINDOW {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let mut hash = [0u8; 20];
                        hash[..8].copy_from_slice(
                            &(x % SWARMS)
                                .wrapping_mul(0x2545_F491_4F6C_DD1D)
                                .to_le_bytes(),
                        );
                        out.clear();
                        Request::Announce {
                            connection_id,
                            transaction_id: 1,
                            announce: Announce {
                                info_hash: tracker_proto::InfoHash(hash),
                                peer_id: tracker_proto::PeerId([1; 20]),
                                port: 1000 + (x % 50_000) as u16,
                                uploaded: 0,
                                downloaded: 0,
                                left: x % 2,
                                event: Event::None,
                                numwant: Some(30),
                                key: None,
                                ip: None,
                            },
                            url_data: vec![],
                        }
                        .write(&mut out);
                        socket.send(&out)?;
                    }
                    for _ in 0..WINDOW {
                        match socket.recv(&mut buf) {
                            Ok(_) => {
                                responses.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => break,
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    let warm = Duration::from_secs(2);
    std::thread::sleep(warm);
    let start_count = responses.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let count = responses.load(Ordering::Relaxed) - start_count;
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    println!(
        "{}: {:.0} responses/s over {secs:.1} s",
        if cluster.is_empty() {
            "memory"
        } else {
            "cluster"
        },
        count as f64 / secs
    );
    // The tracker's own counts of what it sent to the cluster.
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(http)?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        body
    };
    let value = |name: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.parse::<f64>().ok())
        })
    };
    if let (Some(requests), Some(batches)) = (
        value("spore_tracker_cluster_requests_total"),
        value("spore_tracker_cluster_batches_total"),
    ) {
        let announces = value("spore_tracker_announces_total{protocol=\"udp\"}").unwrap_or(0.0);
        println!(
            "cluster: {requests} script calls in {batches} batches ({:.1} per batch) for {announces} \
             announces ({:.3} calls per announce; {} answered from the view), {} errors, {} queue full",
            requests / batches.max(1.0),
            requests / announces.max(1.0),
            value("spore_tracker_cluster_view_answers_total").unwrap_or(0.0),
            value("spore_tracker_cluster_errors_total").unwrap_or(0.0),
            value("spore_tracker_cluster_queue_full_total").unwrap_or(0.0),
        );
    }
    runtime.block_on(running.shutdown());
    Ok(())
}
