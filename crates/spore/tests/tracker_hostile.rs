//! Hostile tracker clients against the real `spore tracker`: a full-scrape flood, a swarm-creation
//! flood, a slow-loris client, descriptor exhaustion, port-0 peers, and private-tracker crediting and
//! state, each with the bound the tracker must keep.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tracker_proto::http::{self as proto, AnnounceResponse, HttpAnnounce};
use tracker_proto::udp::Response;
use tracker_proto::Event;

/// A config file in `dir` with `lines`, as `--config` flags.
fn config(dir: &Path, lines: &str) -> Vec<String> {
    let path = dir.join("tracker.toml");
    std::fs::write(&path, lines).unwrap();
    vec!["--config".into(), path.to_str().unwrap().into()]
}

fn start(dir: &Path, lines: &str, extra: &[&str]) -> TrackerProc {
    let mut args = config(dir, lines);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tracker_with(dir, &args, |_| {})
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A pseudo-random info-hash, different for every (a, b).
fn hash_of(a: u32, b: u32) -> [u8; 20] {
    let mut x = (u64::from(a) << 32 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut h = [0u8; 20];
    for byte in h.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    h
}

/// Checks a full scrape body (too big for `ScrapeResponse::decode`'s cap) and counts its swarms: one
/// dictionary of 20-byte keys in ascending order, each with its counts.
fn full_scrape_entries(body: &[u8]) -> usize {
    let mut rest = body.strip_prefix(b"d5:filesd").unwrap_or_else(|| {
        panic!(
            "{:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    });
    let mut last: Option<&[u8]> = None;
    let mut n = 0;
    while rest.first() != Some(&b'e') {
        let entry = rest.strip_prefix(b"20:").expect("a 20-byte key");
        let (hash, stats) = entry.split_at(20);
        assert!(last < Some(hash), "keys out of order");
        last = Some(hash);
        assert!(stats.starts_with(b"d8:completei"));
        let end = stats
            .windows(2)
            .position(|w| w == b"ee")
            .expect("end of counts");
        rest = &stats[end + 2..];
        n += 1;
    }
    assert_eq!(rest, b"ee");
    n
}

#[test]
fn full_scrape_flood_keeps_tracker_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(
        dir.path(),
        "udp_workers = 2\nfull_scrape_interval = 0\n",
        &[],
    );
    // 120 000 swarms from 1200 sources, 100 each (a real tracker's table after a random-hash flood).
    const SOURCES: u32 = 1200;
    const PER_SOURCE: u32 = 100;
    for s in 0..SOURCES {
        let udp = Udp::connect(&format!("127.1.{}.{}:0", s / 200, s % 200 + 1), t.udp);
        udp.announce_many((0..PER_SOURCE).map(|i| hash_of(s, i)));
    }
    let swarms = metric(t.http, "spore_tracker_swarms").unwrap();
    assert!(
        swarms >= u64::from(SOURCES * PER_SOURCE) * 95 / 100,
        "only {swarms} swarms"
    );
    let pid = t.proc.child.id();
    let before = status_kib(pid, "VmHWM:");
    // Four clients, three rounds of parallel full scrapes each.
    let bodies: Vec<(usize, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=4)
            .map(|c| {
                let http = t.http;
                scope.spawn(move || {
                    let (mut full, mut busy) = (0, 0);
                    for _ in 0..3 {
                        let (_, body) =
                            get_from(&format!("127.2.0.{c}:0"), http, "/scrape").unwrap();
                        if body.starts_with(b"d14:failure reason") {
                            let reason = String::from_utf8_lossy(&body);
                            assert!(reason.contains("busy"), "{reason}");
                            busy += 1;
                            continue;
                        }
                        let files = full_scrape_entries(&body);
                        assert!(files as u64 >= swarms, "{files} of {swarms} swarms");
                        full += 1;
                    }
                    (full, busy)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = status_kib(pid, "VmHWM:");
    let full: usize = bodies.iter().map(|b| b.0).sum();
    eprintln!("VmHWM {before} kB before the scrapes, {after} kB after; {bodies:?} (full, busy)");
    assert!(full >= 1, "no full scrape was served");
    // Each full body is about 8.6 MB; built whole, four at once cost hundreds of MB.
    assert!(
        after - before < 40 * 1024,
        "full scrapes raised peak RSS from {before} kB to {after} kB"
    );
}

#[test]
fn swarm_creation_flood_from_one_source_leaves_room_for_real_torrents() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path(), "udp_workers = 1\nmax_swarms = 5000\n", &[]);
    // One source announces 20 000 random info-hashes, four times the table.
    let flood = Udp::connect("127.3.0.1:0", t.udp);
    let replies = flood.announce_many((0..20_000).map(|i| hash_of(7, i)));
    assert!(replies > 19_000, "{replies} replies");
    let swarms = metric(t.http, "spore_tracker_swarms").unwrap();
    assert!(swarms <= 1000, "one source created {swarms} swarms");
    // A real new torrent from another source is still tracked.
    let hash = [0x5a; 20];
    let seed = Udp::connect("127.3.0.2:0", t.udp);
    seed.announce(announce(hash, 2, 7002, Event::Started), b"");
    let leech = Udp::connect("127.3.0.3:0", t.udp);
    match leech.announce(announce(hash, 3, 7003, Event::Started), b"") {
        Some(Response::Announce { peers, .. }) => assert_eq!(
            peers,
            vec!["127.3.0.2:7002".parse::<SocketAddr>().unwrap()],
            "the new torrent was not tracked"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_slow_loris_client_is_cut_off_at_the_request_deadline() {
    let dir = tempfile::tempdir().unwrap();
    // http_idle_timeout is the old name of http_request_timeout.
    let t = start(dir.path(), "http_idle_timeout = 2\n", &[]);
    let mut s = bind_tcp("127.5.0.1:0", t.http).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let request = b"GET /announce?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&uploaded=0&downloaded=0&left=0 HTTP/1.1\r\nHost: t\r\n";
    let started = Instant::now();
    let mut sent = 0;
    let closed_after = loop {
        // One byte every 250 ms: never idle, never done.
        if s.write_all(&request[sent % request.len()..][..1]).is_err() {
            break started.elapsed();
        }
        sent += 1;
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(_) => panic!("an incomplete request was answered"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break started.elapsed(),
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "a client trickling {sent} bytes kept its connection past the 2 s deadline"
        );
    };
    assert!(
        closed_after >= Duration::from_millis(1500),
        "cut off too early: {closed_after:?}"
    );
}

#[test]
fn descriptor_exhaustion_neither_spins_nor_floods_the_log_and_announces_come_back() {
    let dir = tempfile::tempdir().unwrap();
    // 256 descriptors, soft and hard, so the tracker cannot raise the limit.
    let t = tracker_with(dir.path(), &[], |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let pid = t.proc.child.id();
    // Five addresses open 64 connections each (the per-address cap), more than the limit allows.
    let mut held = Vec::new();
    for a in 1..=5 {
        for _ in 0..64 {
            if let Ok(s) = bind_tcp(&format!("127.6.0.{a}:0"), t.http) {
                held.push(s);
            }
        }
    }
    let cpu_before = cpu_ticks(pid);
    let watch = Instant::now();
    // Hold them for 3 s.
    let deadline = watch + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = cpu_ticks(pid) - cpu_before;
    let stderr = std::fs::read_to_string(dir.path().join("tracker.err")).unwrap();
    let accept_errors = stderr.matches("accept failed").count();
    eprintln!(
        "{} connections held; {cpu} ticks of CPU in {:?}; {accept_errors} accept-failure lines",
        held.len(),
        watch.elapsed()
    );
    assert!(
        accept_errors <= 1,
        "accept failures logged {accept_errors} times:\n{stderr}"
    );
    assert!(cpu < 100, "{cpu} clock ticks of CPU in 3 s at the limit");
    assert!(
        stderr.contains("http_max_connections lowered"),
        "no word of the lowered cap:\n{stderr}"
    );

    drop(held);
    // Once the connections are gone a legitimate announce is served.
    let q = proto::encode_announce(&HttpAnnounce {
        announce: announce([0x77; 20], 9, 7009, Event::Started),
        compact: true,
        no_peer_id: true,
        tracker_id: None,
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((status, body)) = get_from("127.6.1.1:0", t.http, &format!("/announce?{q}")) {
            if status.contains("200") && AnnounceResponse::decode(&body).is_ok() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no announce served after the flood"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn accept_failures_back_off_and_are_logged_once_per_episode() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker_with(dir.path(), &[], |_| {});
    let pid = t.proc.child.id();
    // Lower its limit under it to 64 descriptors, below the connection cap it computed at start, so
    // accepts fail with EMFILE.
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: prlimit reads `limit` and writes nothing (no old-limit pointer).
    let r = unsafe {
        libc::prlimit(
            pid as i32,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let mut held = Vec::new();
    for a in 1..=2 {
        for _ in 0..64 {
            if let Ok(s) = bind_tcp(&format!("127.6.2.{a}:0"), t.http) {
                held.push(s);
            }
        }
    }
    let cpu_before = cpu_ticks(pid);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = cpu_ticks(pid) - cpu_before;
    let stderr = std::fs::read_to_string(dir.path().join("tracker.err")).unwrap();
    let accept_errors = stderr.matches("accept failed").count();
    eprintln!("{cpu} ticks of CPU in 3 s; {accept_errors} accept-failure lines");
    assert!(
        stderr.contains("Too many open files"),
        "accepts never failed:\n{stderr}"
    );
    // One episode (two if a connection happened to close and free a descriptor in between).
    assert!(
        (1..=2).contains(&accept_errors),
        "accept failures logged {accept_errors} times:\n{stderr}"
    );
    assert!(cpu < 100, "{cpu} clock ticks of CPU in 3 s");
    drop(held);
    // Once the connections are gone, accepts succeed again (after at most a second of back-off).
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_from("127.6.3.1:0", t.http, "/stats").is_err() {
        assert!(
            Instant::now() < deadline,
            "no request served after the flood"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn port_zero_peers_are_refused_on_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path(), "", &[]);
    let hash = [0x30; 20];
    let q = proto::encode_announce(&HttpAnnounce {
        announce: announce(hash, 1, 0, Event::Started),
        compact: true,
        no_peer_id: true,
        tracker_id: None,
    });
    let (_, body) = get_from("127.7.0.1:0", t.http, &format!("/announce?{q}")).unwrap();
    match AnnounceResponse::decode(&body) {
        Err(proto::ResponseError::Failure(reason)) => assert!(reason.contains("port"), "{reason}"),
        other => panic!("a port-0 HTTP announce was accepted: {other:?}"),
    }
    let udp = Udp::connect("127.7.0.2:0", t.udp);
    match udp.announce(announce(hash, 2, 0, Event::Started), b"") {
        Some(Response::Error { message, .. }) => assert!(message.contains("port"), "{message}"),
        other => panic!("a port-0 UDP announce was accepted: {other:?}"),
    }
    // Nobody was stored or is handed out.
    let other = Udp::connect("127.7.0.3:0", t.udp);
    match other.announce(announce(hash, 3, 7003, Event::Started), b"") {
        Some(Response::Announce { peers, .. }) => assert_eq!(peers, vec![]),
        other => panic!("{other:?}"),
    }
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn add_user(db: &Path, name: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["tracker", "user", "add", name, "--db", s(db)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_users_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.redb");
    add_user(&db, "alice");
    assert_eq!(mode_of(&db), 0o600, "a new users database");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["tracker", "user", "list", "--db", s(&db)])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(mode_of(&db), 0o600, "an existing readable database");
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by other users"));
}

fn private_announce(server: SocketAddr, key: &str, peer: u8, uploaded: u64, event: Event) {
    let mut a = announce([0x11; 20], peer, 6000 + u16::from(peer), event);
    a.uploaded = uploaded;
    let q = proto::encode_announce(&HttpAnnounce {
        announce: a,
        compact: true,
        no_peer_id: true,
        tracker_id: None,
    });
    let (_, body) = get_from("127.8.0.1:0", server, &format!("/announce/{key}?{q}")).unwrap();
    AnnounceResponse::decode(&body).unwrap();
}

#[test]
fn a_private_tracker_credits_deltas_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.redb");
    let key = add_user(&db, "mallory");
    let mut t = start(dir.path(), "", &["--mode", "private", "--db", s(&db)]);
    // 500 bytes really uploaded; then the same client under a new peer_id, and a second `started`.
    private_announce(t.http, &key, 1, 1000, Event::Started);
    private_announce(t.http, &key, 1, 1500, Event::None);
    private_announce(t.http, &key, 2, 1500, Event::None);
    private_announce(t.http, &key, 3, 1500, Event::Started);
    private_announce(t.http, &key, 1, 1500, Event::Started);
    t.proc.terminate();
    assert!(t.proc.wait_exit(T).success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["tracker", "user", "list", "--json", "--db", s(&db)])
        .output()
        .unwrap();
    let users: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(users[0]["uploaded"], 500, "{users}");
}

#[test]
fn a_private_tracker_forgets_peers_that_went_silent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.redb");
    let key = add_user(&db, "trent");
    let t = start(
        dir.path(),
        "peer_timeout = 2\n",
        &["--mode", "private", "--db", s(&db)],
    );
    for peer in 1..=20 {
        private_announce(t.http, &key, peer, 0, Event::Started);
    }
    assert_eq!(metric(t.http, "spore_tracker_private_peers"), Some(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(t.http, "spore_tracker_private_peers") != Some(0) {
        assert!(
            Instant::now() < deadline,
            "silent private peers still remembered"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(metric(t.http, "spore_tracker_swarms"), Some(0));
}
