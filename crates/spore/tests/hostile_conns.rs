//! Connection floods against the real binary under a small open-file limit: a seed's peer port and the
//! daemon's API, each given more silent connections than it has descriptors. Neither may spin on
//! failed accepts, and a real downloader or API request must still be served.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Soft and hard open-file limit of the process under attack.
const FD_LIMIT: u64 = 128;

/// Opens `count` connections to `to` that never send a byte, from 127.0.0.2 upwards (`per_ip` from
/// each address, so per-address caps do not refuse them all). Connections the target refuses or
/// closes are kept too: they still cost it an accept.
fn flood(to: SocketAddr, count: usize, per_ip: usize) -> Vec<tokio::net::TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out = Vec::with_capacity(count);
    rt.block_on(async {
        for i in 0..count {
            let n = 2 + (i / per_ip) as u8;
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from(([127, 0, 0, n], 0))).unwrap();
            // A connect the target's backlog cannot take times out rather than hangs the test.
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), socket.connect(to)).await
            {
                out.push(stream);
            }
        }
    });
    // The streams stay registered with a runtime that is gone; they are only held, never polled.
    std::mem::forget(rt);
    out
}

/// The CPU share `pid` used over at least `window`, measured from `since` with `cpu_then` spent then.
fn cpu_share(pid: u32, since: Instant, cpu_then: Duration, window: Duration) -> f64 {
    let left = window.saturating_sub(since.elapsed());
    // A measurement window, not a wait for an event.
    std::thread::sleep(left);
    let used = cpu_time(pid).saturating_sub(cpu_then);
    let share = used.as_secs_f64() / since.elapsed().as_secs_f64();
    eprintln!(
        "CPU {used:?} in {:?}: {:.1} %",
        since.elapsed(),
        share * 100.0
    );
    share
}

#[test]
fn a_seed_flooded_past_its_fd_limit_stays_idle_and_serves_a_real_peer() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content.bin");
    std::fs::write(&content, data(41, 4 << 20)).unwrap();
    let torrent = dir.path().join("t.torrent");
    create_torrent(&content, &torrent, "256K", None);
    let (seed, addr) = start_seed_with(
        dir.path(),
        &torrent,
        &content,
        "127.0.0.1:0",
        &["--no-trackers"],
        |c| limit_open_files(c, FD_LIMIT, FD_LIMIT),
    );
    let pid = seed.child.id();

    // Three times the fd limit, two per source address.
    let _flood = flood(addr, 3 * FD_LIMIT as usize, 2);
    let since = Instant::now();
    let cpu_then = cpu_time(pid);

    let out = dir.path().join("out");
    let get = Proc::start(
        &[
            "get",
            s(&torrent),
            "-o",
            s(&out),
            "--listen",
            "127.0.0.1:0",
            "--peer",
            &addr.to_string(),
            "--no-trackers",
            "--no-seed",
        ],
        dir.path().join("get.err"),
    );
    get.wait_for("complete:", T);
    assert_eq!(sha256(&out.join("content.bin")), sha256(&content));

    // A spinning accept loop burns a whole core; an idle seed next to nothing.
    let share = cpu_share(pid, since, cpu_then, Duration::from_secs(4));
    assert!(
        share < 0.15,
        "the seed used {:.0} % of a CPU during the flood",
        share * 100.0
    );
    let log = std::fs::read_to_string(dir.path().join("seed.err")).unwrap();
    assert!(
        log.contains("connection caps lowered to fit"),
        "no line about fitting the caps into {FD_LIMIT} descriptors: {log}"
    );
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content.bin");
    std::fs::write(&content, data(42, 64 << 10)).unwrap();
    let torrent = dir.path().join("t.torrent");
    create_torrent(&content, &torrent, "16K", None);
    let (seed, _) = start_seed_with(
        dir.path(),
        &torrent,
        &content,
        "127.0.0.1:0",
        &["--no-trackers"],
        |c| limit_open_files(c, 100, 3000),
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", seed.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(soft[3], "3000", "{line}");
}

/// `spore daemon` with `settings` (TOML) and at most `FD_LIMIT` open files; its API address.
fn start_daemon(dir: &Path, settings: &str) -> (Proc, SocketAddr) {
    let config = dir.join("settings.toml");
    std::fs::write(&config, settings).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_spore"));
    command.args([
        "daemon",
        "--state-dir",
        s(&dir.join("state")),
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--download-dir",
        s(&dir.join("dl")),
        "--config",
        s(&config),
    ]);
    limit_open_files(&mut command, FD_LIMIT, FD_LIMIT);
    let proc = Proc::spawn(command, dir.join("daemon.err"));
    let line = proc.wait_for("api listening on http://", T);
    let api = line
        .trim_start_matches("api listening on http://")
        .trim()
        .parse()
        .unwrap();
    (proc, api)
}

/// The status of `GET path` (open to loopback clients without a token), or why there was none.
fn get_status(api: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect_timeout(&api, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("read: {e}"))?;
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .map_err(|e| format!("status: {e}"))
}

/// Waits for the daemon to close `stream` (which sends nothing more); how long after `since`.
fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => {
                return since.elapsed()
            }
            Err(e) => panic!("not closed within 30 s: {e}"),
        }
    }
}

#[test]
fn daemon_api_idle_connections_neither_lock_out_a_request_nor_live_past_their_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, api) = start_daemon(dir.path(), "api_idle_timeout = 3\napi_header_timeout = 3\n");
    let pid = daemon.child.id();

    let _flood = flood(api, 2 * FD_LIMIT as usize, 2);
    let since = Instant::now();
    let cpu_then = cpu_time(pid);
    assert_eq!(
        get_status(api, "/metrics"),
        Ok(200),
        "a request during the flood"
    );
    let share = cpu_share(pid, since, cpu_then, Duration::from_secs(3));
    assert!(
        share < 0.15,
        "the daemon used {:.0} % of a CPU during the flood",
        share * 100.0
    );

    // Silent: closed after the idle timeout.
    let start = Instant::now();
    let mut idle = TcpStream::connect(api).unwrap();
    let t = closed_after(&mut idle, start);
    assert!(
        t >= Duration::from_secs(3) && t < Duration::from_secs(20),
        "an idle API connection closed after {t:?} (timeout 3 s)"
    );

    // Trickling a header byte a second: the header deadline holds even though bytes keep coming.
    let start = Instant::now();
    let mut slow = TcpStream::connect(api).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let trickle = slow.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        let mut trickle = trickle;
        for _ in 0..30 {
            if trickle.write_all(b"X").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let t = closed_after(&mut slow, start);
    assert!(
        t < Duration::from_secs(10),
        "headers trickled for {t:?} past a 3 s header deadline"
    );
    let _ = trickler.join();
    assert_eq!(
        get_status(api, "/metrics"),
        Ok(200),
        "a request after the flood"
    );
}
