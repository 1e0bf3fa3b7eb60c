//! The engine end to end through the `spore` binary on loopback: tracker discovery, a swarm that shares,
//! a hostile peer, resume, partial selection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::Digest;

mod common;
use common::*;

#[test]
fn seed_and_get_find_each_other_through_the_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    seed_then_get(dir.path(), &url, "127.0.0.2:0", "127.0.0.3:0");
}

/// IPv6 end to end: a tracker, a seed and a downloader all on ::1, once through the HTTP announce
/// (compact `peers6`) and once through the UDP one (BEP 15's 18-byte peers).
#[test]
fn seed_and_get_over_ipv6_through_http_and_udp_trackers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tracker = Proc::start(
        &["tracker", "--http", "[::1]:0", "--udp", "[::1]:0"],
        d.join("tracker.err"),
    );
    let http = tracker.wait_for("tracker: HTTP on ", T);
    let http = http.trim_start_matches("tracker: HTTP on ").trim();
    let udp = tracker.wait_for("tracker: UDP on ", T);
    let udp = udp.trim_start_matches("tracker: UDP on ").trim();
    assert!(http.starts_with("http://[::1]:"), "{http}");
    assert!(udp.starts_with("udp://[::1]:"), "{udp}");
    for (i, url) in [http, udp].into_iter().enumerate() {
        let run = d.join(format!("run{i}"));
        std::fs::create_dir_all(&run).unwrap();
        seed_then_get(&run, url, "[::1]:0", "[::1]:0");
    }
}

/// A seed listening on `[::]` takes peers of both families on one socket: one downloader reaches it over
/// 127.0.0.1, another over ::1. (DHT, LSD and port mapping are off: `[::]` is not a loopback address.)
#[test]
fn a_dual_stack_listener_serves_ipv4_and_ipv6_peers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/file.bin"), data(3, 2_000_000)).unwrap();
    let torrent = d.join("t.torrent");
    create_torrent(&d.join("seed/file.bin"), &torrent, "64K", None);
    let quiet = ["--no-trackers", "--no-dht", "--no-lsd", "--no-port-mapping"];
    let (_seeder, seed_addr) = start_seed(d, &torrent, &d.join("seed"), "[::]:0", &quiet);
    let port = seed_addr.port();
    for (i, peer) in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")]
        .iter()
        .enumerate()
    {
        let out = d.join(format!("dl{i}"));
        let listen = if i == 0 { "127.0.0.3:0" } else { "[::1]:0" };
        let mut args = vec![
            "get",
            s(&torrent),
            "-o",
            s(&out),
            "--listen",
            listen,
            "--peer",
            peer,
            "--no-seed",
        ];
        args.extend_from_slice(&quiet);
        let mut getter = Proc::start(&args, d.join(format!("get{i}.err")));
        assert!(getter.wait_exit(T).success(), "download through {peer}");
        assert_eq!(
            sha256(&out.join("file.bin")),
            sha256(&d.join("seed/file.bin")),
            "through {peer}"
        );
    }
}

/// Creates a 5 MB torrent announcing to `url`, seeds it from `seed_listen` and downloads it to
/// `get_listen` with nothing but the tracker to bring them together; checks the copy.
fn seed_then_get(d: &Path, url: &str, seed_listen: &str, get_listen: &str) {
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/file.bin"), data(1, 5_000_000)).unwrap();
    create_torrent(
        &d.join("seed/file.bin"),
        &d.join("t.torrent"),
        "64K",
        Some(url),
    );
    let _seeder = start_seed(d, &d.join("t.torrent"), &d.join("seed"), seed_listen, &[]);
    // The seeder announces right after it starts listening; give the downloader a tracker that knows it.
    let mut getter = Proc::start(
        &[
            "get",
            s(&d.join("t.torrent")),
            "-o",
            s(&d.join("dl")),
            "--listen",
            get_listen,
            "--no-seed",
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: file.bin", T);
    assert!(getter.wait_exit(T).success());
    assert_eq!(
        sha256(&d.join("dl/file.bin")),
        sha256(&d.join("seed/file.bin"))
    );
}

#[test]
fn a_swarm_shares_so_the_seed_uploads_far_less_than_everyone_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_tracker, url) = tracker(d);
    let size = 8 * 1024 * 1024;
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/swarm.bin"), data(2, size)).unwrap();
    spore_ok(&[
        "create",
        s(&d.join("seed/swarm.bin")),
        "-o",
        s(&d.join("t.torrent")),
        "-t",
        &url,
        "--piece-length",
        "64K",
    ]);
    // A slow seed: the downloaders must get most data from each other.
    let mut seeder = Proc::start(
        &[
            "seed",
            s(&d.join("t.torrent")),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.2:0",
            "--max-up",
            "2M",
        ],
        d.join("seed.err"),
    );
    seeder.wait_for("seeding", T);
    let mut peers: Vec<Proc> = (0..8)
        .map(|i| {
            let out = d.join(format!("dl{i}"));
            let listen = format!("127.0.0.{}:0", 10 + i);
            Proc::start(
                &[
                    "get",
                    s(&d.join("t.torrent")),
                    "-o",
                    s(&out),
                    "--listen",
                    &listen,
                    "--seed-time",
                    "10m",
                ],
                d.join(format!("get{i}.err")),
            )
        })
        .collect();
    let started = Instant::now();
    for p in &peers {
        p.wait_for("complete: swarm.bin", Duration::from_secs(90));
    }
    let elapsed = started.elapsed();
    let expected = sha256(&d.join("seed/swarm.bin"));
    for i in 0..8 {
        assert_eq!(
            sha256(&d.join(format!("dl{i}/swarm.bin"))),
            expected,
            "downloader {i}"
        );
    }
    seeder.terminate();
    let line = seeder.wait_for("stopped: ", T);
    let uploaded = parse_size(
        line.split("uploaded ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("{line}")),
    );
    println!(
        "swarm of 8: {:.1} s, seed uploaded {:.1} MiB of {} MiB downloaded in all",
        elapsed.as_secs_f64(),
        uploaded / 1048576.0,
        8 * size / 1048576
    );
    assert!(
        uploaded < 4.0 * size as f64,
        "seed uploaded {uploaded} bytes for 8 x {size}"
    );
    for p in &mut peers {
        p.terminate();
    }
}

fn parse_size(text: &str) -> f64 {
    let mut parts = text.split_whitespace();
    let n: f64 = parts.next().unwrap().parse().unwrap();
    let unit = parts.next().unwrap_or("B");
    n * match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        "GiB" => 1073741824.0,
        other => panic!("unit {other}"),
    }
}

/// A peer that claims every piece and answers every request with garbage.
fn hostile_peer(info_hash: [u8; 20]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.9:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut hs = [0u8; 68];
                if stream.read_exact(&mut hs).is_err() {
                    return;
                }
                let mut reply = wire::Handshake::new(
                    info_hash.into(),
                    wire::PeerId::new(*b"-XX0000-hostilepeer!"),
                    false,
                );
                reply.reserved = [0; 8];
                let _ = stream.write_all(&reply.encode());
                let mut out = bytes::BytesMut::new();
                // Claim all 80 pieces.
                wire::Message::Bitfield(vec![0xffu8; 10].into()).encode(&mut out);
                wire::Message::Unchoke.encode(&mut out);
                if stream.write_all(&out).is_err() {
                    return;
                }
                let decoder = wire::Decoder::default();
                let mut buf = bytes::BytesMut::new();
                let mut chunk = [0u8; 65536];
                loop {
                    let n = match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Ok(Some(m)) = decoder.decode(&mut buf) {
                        if let wire::Message::Request(b) = m {
                            let mut out = bytes::BytesMut::new();
                            wire::Message::Piece {
                                index: b.index,
                                begin: b.begin,
                                data: vec![0xEE; b.length as usize].into(),
                            }
                            .encode(&mut out);
                            if stream.write_all(&out).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_peer_serving_corrupt_data_is_banned_and_the_download_still_completes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("seed")).unwrap();
    // 80 pieces of 64 KiB: matches the hostile peer's bitfield.
    std::fs::write(d.join("seed/x.bin"), data(3, 80 * 65536)).unwrap();
    spore_ok(&[
        "create",
        s(&d.join("seed/x.bin")),
        "-o",
        s(&d.join("t.torrent")),
        "--piece-length",
        "64K",
    ]);
    let torrent = std::fs::read(d.join("t.torrent")).unwrap();
    let info_start = torrent.windows(6).position(|w| w == b"4:info").unwrap() + 6;
    let info_hash: [u8; 20] =
        <sha1::Sha1 as Digest>::digest(&torrent[info_start..torrent.len() - 1]).into();
    let bad = hostile_peer(info_hash);

    let seeder = Proc::start(
        &[
            "seed",
            s(&d.join("t.torrent")),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.2:0",
            "--no-trackers",
            "--max-up",
            "2M",
        ],
        d.join("seed.err"),
    );
    let good = seeder.addr(T);
    let mut getter = Proc::start(
        &[
            "get",
            s(&d.join("t.torrent")),
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
            "--no-trackers",
            "--peer",
            &bad.to_string(),
            "--peer",
            &good.to_string(),
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: x.bin", T);
    assert!(getter.wait_exit(T).success());
    assert_eq!(sha256(&d.join("dl/x.bin")), sha256(&d.join("seed/x.bin")));
    let log = std::fs::read_to_string(d.join("get.err")).unwrap();
    assert!(
        log.contains("banning 127.0.0.9"),
        "hostile peer not banned: {log}"
    );
}

#[test]
fn resume_rechecks_and_fetches_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 4 * 1024 * 1024;
    std::fs::create_dir_all(d.join("seed/album/cd")).unwrap();
    std::fs::write(d.join("seed/album/cd/a.bin"), data(4, size)).unwrap();
    std::fs::write(d.join("seed/album/b.bin"), data(5, 100_000)).unwrap();
    spore_ok(&[
        "create",
        s(&d.join("seed/album")),
        "-o",
        s(&d.join("t.torrent")),
        "--piece-length",
        "64K",
    ]);
    let seeder = Proc::start(
        &[
            "seed",
            s(&d.join("t.torrent")),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.2:0",
            "--no-trackers",
        ],
        d.join("seed.err"),
    );
    let peer = seeder.addr(T).to_string();
    // Most of the data is already there, with one corrupted piece.
    std::fs::create_dir_all(d.join("dl/album/cd")).unwrap();
    let mut partial = data(4, size);
    partial[3 * 65536 + 7] ^= 1;
    std::fs::write(d.join("dl/album/cd/a.bin"), &partial).unwrap();
    let getter = Proc::start(
        &[
            "get",
            s(&d.join("t.torrent")),
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
            "--no-trackers",
            "--peer",
            &peer,
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: album", T);
    let line = getter.wait_for("stopped: downloaded ", T);
    let downloaded = parse_size(
        line.trim_start_matches("stopped: downloaded ")
            .split(',')
            .next()
            .unwrap(),
    );
    assert!(
        downloaded <= (65536 * 3) as f64,
        "re-downloaded {downloaded} bytes"
    );
    assert_eq!(
        sha256(&d.join("dl/album/cd/a.bin")),
        sha256(&d.join("seed/album/cd/a.bin"))
    );
    assert_eq!(
        sha256(&d.join("dl/album/b.bin")),
        sha256(&d.join("seed/album/b.bin"))
    );
}

#[test]
fn partial_selection_downloads_only_the_chosen_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("seed/set")).unwrap();
    std::fs::write(d.join("seed/set/1-first.bin"), data(6, 1_000_000)).unwrap();
    std::fs::write(d.join("seed/set/2-second.bin"), data(7, 700_001)).unwrap();
    std::fs::write(d.join("seed/set/3-third.bin"), data(8, 1_500_000)).unwrap();
    spore_ok(&[
        "create",
        s(&d.join("seed/set")),
        "-o",
        s(&d.join("t.torrent")),
        "--piece-length",
        "64K",
    ]);
    let seeder = Proc::start(
        &[
            "seed",
            s(&d.join("t.torrent")),
            "--data",
            s(&d.join("seed/set")),
            "--listen",
            "127.0.0.2:0",
            "--no-trackers",
        ],
        d.join("seed.err"),
    );
    let peer = seeder.addr(T).to_string();
    let getter = Proc::start(
        &[
            "get",
            s(&d.join("t.torrent")),
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
            "--no-trackers",
            "--peer",
            &peer,
            "--files",
            "1",
        ],
        d.join("get.err"),
    );
    let line = getter.wait_for("stopped: downloaded ", T);
    let downloaded = parse_size(
        line.trim_start_matches("stopped: downloaded ")
            .split(',')
            .next()
            .unwrap(),
    );
    assert_eq!(
        sha256(&d.join("dl/set/2-second.bin")),
        sha256(&d.join("seed/set/2-second.bin"))
    );
    let layout: Vec<Laid> = [
        ("1-first.bin", 1_000_000),
        ("2-second.bin", 700_001),
        ("3-third.bin", 1_500_000),
    ]
    .into_iter()
    .map(|(name, len)| Laid {
        got: d.join("dl/set").join(name),
        want: d.join("seed/set").join(name),
        len,
        pad: false,
        selected: name == "2-second.bin",
    })
    .collect();
    if let Err(e) = check_skipped_files(&layout, 65536) {
        panic!("{e}");
    }
    // The selected file plus at most its two edge pieces.
    assert!(
        downloaded <= (700_001 + 2 * 65536) as f64,
        "downloaded {downloaded}"
    );
}

/// `--seed-ratio` is measured against what was selected: a downloader of the first 1 MB of a 5 MB
/// torrent that uploads that MB once has reached ratio 1 and stops (measured against the whole torrent
/// it would seed on).
#[test]
fn a_seed_ratio_counts_only_the_selected_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("seed/set")).unwrap();
    std::fs::write(d.join("seed/set/a.bin"), data(11, 1_000_000)).unwrap();
    std::fs::write(d.join("seed/set/b.bin"), data(12, 4_000_000)).unwrap();
    let torrent = d.join("t.torrent");
    create_torrent(&d.join("seed/set"), &torrent, "64K", None);
    let (seeder, seed_addr) = start_seed(
        d,
        &torrent,
        &d.join("seed/set"),
        "127.0.0.2:0",
        &["--no-trackers"],
    );
    let seed_addr = seed_addr.to_string();
    let get = |out: &str, listen: &str, peer: &str, extra: &[&str]| {
        let mut args = vec![
            "get",
            s(&torrent),
            "--no-trackers",
            "--files",
            "0",
            "--listen",
            listen,
        ];
        args.extend_from_slice(&["-o", out, "--peer", peer]);
        args.extend_from_slice(extra);
        Proc::start(&args, d.join(format!("{listen}.err").replace(':', "_")))
    };
    let first_dir = d.join("first");
    let mut first = get(
        s(&first_dir),
        "127.0.0.3:0",
        &seed_addr,
        &["--seed-ratio", "1"],
    );
    let first_addr = first.addr(T).to_string();
    first.wait_for("complete: ", T);
    // Only the first downloader can give the second its data now.
    drop(seeder);
    let second_dir = d.join("second");
    let mut second = get(s(&second_dir), "127.0.0.4:0", &first_addr, &["--no-seed"]);
    assert!(second.wait_exit(T).success());
    assert_eq!(
        sha256(&second_dir.join("set/a.bin")),
        sha256(&d.join("seed/set/a.bin"))
    );
    assert!(
        first.wait_exit(T).success(),
        "the first downloader kept seeding past ratio 1"
    );
}

/// Serves `body` to every HTTP request on a loopback port.
fn http_server(body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    addr
}

#[test]
fn get_takes_a_torrent_url() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/web.bin"), data(9, 300_000)).unwrap();
    create_torrent(&d.join("seed/web.bin"), &d.join("t.torrent"), "32K", None);
    let web = http_server(std::fs::read(d.join("t.torrent")).unwrap());
    let (_seeder, peer) = start_seed(
        d,
        &d.join("t.torrent"),
        &d.join("seed"),
        "127.0.0.2:0",
        &["--no-trackers"],
    );
    let peer = peer.to_string();
    let url = format!("http://{web}/files/t.torrent");
    let mut getter = Proc::start(
        &[
            "get",
            &url,
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
            "--no-trackers",
            "--peer",
            &peer,
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: web.bin", T);
    assert!(getter.wait_exit(T).success());
    assert_eq!(
        sha256(&d.join("dl/web.bin")),
        sha256(&d.join("seed/web.bin"))
    );
}

#[test]
fn a_magnet_link_alone_is_enough() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_tracker, url) = tracker(d);
    std::fs::create_dir_all(d.join("seed/pics")).unwrap();
    std::fs::write(d.join("seed/pics/a.jpg"), data(10, 700_000)).unwrap();
    std::fs::write(d.join("seed/pics/b.jpg"), data(11, 60_000)).unwrap();
    // Hybrid, with more than one metadata piece's worth of info dictionary (small pieces).
    spore_ok(&[
        "create",
        s(&d.join("seed/pics")),
        "-o",
        s(&d.join("t.torrent")),
        "-t",
        &url,
        "--hybrid",
        "--piece-length",
        "16K",
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&d.join("t.torrent"))])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let seeder = Proc::start(
        &[
            "seed",
            s(&d.join("t.torrent")),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.2:0",
        ],
        d.join("seed.err"),
    );
    seeder.wait_for("seeding", T);
    let mut getter = Proc::start(
        &[
            "get",
            &magnet,
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: pics", T);
    assert!(getter.wait_exit(T).success());
    for f in ["a.jpg", "b.jpg"] {
        assert_eq!(
            sha256(&d.join("dl/pics").join(f)),
            sha256(&d.join("seed/pics").join(f)),
            "{f}"
        );
    }
}

/// Reads the number before `what` in a `stopped:` line ("3 peer-exchange", "2 DHT announces").
fn count_before(line: &str, what: &str) -> u64 {
    let before = line
        .split_once(what)
        .unwrap_or_else(|| panic!("{what} in {line}"))
        .0;
    before
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_swarm_outlives_its_seed_and_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut tracker_proc, url) = tracker(d);
    let size = 6 * 1024 * 1024;
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/keep.bin"), data(12, size)).unwrap();
    spore_ok(&[
        "create",
        s(&d.join("seed/keep.bin")),
        "-o",
        s(&d.join("t.torrent")),
        "-t",
        &url,
        "--piece-length",
        "32K",
    ]);
    let mut seeder = Proc::start(
        &[
            "seed",
            s(&d.join("t.torrent")),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.2:0",
            "--max-up",
            "3M",
        ],
        d.join("seed.err"),
    );
    seeder.wait_for("seeding", T);
    let peers: Vec<Proc> = (0..10)
        .map(|i| {
            Proc::start(
                &[
                    "get",
                    s(&d.join("t.torrent")),
                    "-o",
                    s(&d.join(format!("dl{i}"))),
                    "--listen",
                    &format!("127.0.0.{}:0", 20 + i),
                    "--seed-time",
                    "10m",
                ],
                d.join(format!("get{i}.err")),
            )
        })
        .collect();
    // The moment anyone completes, the original seed and the tracker go away.
    // Bounded: a swarm that never completes (or downloaders that died) must fail, not hang.
    let deadline = Instant::now() + Duration::from_secs(90);
    let first = loop {
        if let Some(i) = peers.iter().position(|p| {
            std::iter::from_fn(|| p.lines.try_recv().ok()).any(|l| l.contains("complete: keep.bin"))
        }) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no downloader completed within 90 s while the seed was up; first stderr: {}",
            std::fs::read_to_string(d.join("get0.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    seeder.child.kill().unwrap();
    tracker_proc.child.kill().unwrap();
    for (i, p) in peers.iter().enumerate() {
        if i != first {
            p.wait_for("complete: keep.bin", Duration::from_secs(90));
        }
    }
    let expected = sha256(&d.join("seed/keep.bin"));
    for i in 0..10 {
        assert_eq!(
            sha256(&d.join(format!("dl{i}/keep.bin"))),
            expected,
            "downloader {i}"
        );
    }
}

#[test]
fn private_torrents_never_exchange_peers_and_public_ones_do() {
    for private in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (_tracker, url) = tracker(d);
        // The DHT is on for everyone (through a loopback node); only public torrents may use it.
        let (_node, boot) = dht_node(d, "127.0.0.70", &[]);
        std::fs::create_dir_all(d.join("seed")).unwrap();
        std::fs::write(d.join("seed/p.bin"), data(13, 500_000)).unwrap();
        let (content, torrent) = (d.join("seed/p.bin"), d.join("t.torrent"));
        let mut args = vec![
            "create",
            s(&content),
            "-o",
            s(&torrent),
            "-t",
            &url,
            "--piece-length",
            "32K",
        ];
        if private {
            args.push("--private");
        }
        spore_ok(&args);
        let seed_args = [
            "seed",
            s(&torrent),
            "--data",
            s(content.parent().unwrap()),
            "--listen",
            "127.0.0.2:0",
        ];
        let mut seeder = Proc::start(
            &[&seed_args[..], &["--dht-bootstrap", &boot]].concat(),
            d.join("seed.err"),
        );
        seeder.wait_for("seeding", T);
        // Three downloaders, slowed down so they stay connected (two seeds part at once) long enough
        // for the first exchange, 2 s after the handshake.
        let getters: Vec<Proc> = (0..3)
            .map(|i| {
                let out = d.join(format!("dl{i}"));
                let listen = format!("127.0.0.{}:0", 40 + i);
                let get_args = [
                    "get",
                    s(&torrent),
                    "-o",
                    s(&out),
                    "--listen",
                    &listen,
                    "--seed-time",
                    "4s",
                    "--max-down",
                    "150K",
                ];
                Proc::start(
                    &[&get_args[..], &["--dht-bootstrap", &boot]].concat(),
                    d.join(format!("get{i}.err")),
                )
            })
            .collect();
        let mut lines: Vec<String> = getters.iter().map(|g| g.wait_for("stopped:", T)).collect();
        // The seed's own counts too: it is the peer everyone connects to first.
        seeder.terminate();
        lines.push(seeder.wait_for("stopped:", T));
        let pex: u64 = lines.iter().map(|l| count_before(l, "peer-exchange")).sum();
        let dht: u64 = lines.iter().map(|l| count_before(l, "DHT announces")).sum();
        if private {
            assert_eq!((pex, dht), (0, 0), "a private swarm used PEX or the DHT");
        } else {
            assert!(
                pex > 0 && dht > 0,
                "the public control sent {pex} PEX messages and {dht} DHT announces"
            );
        }
    }
}

#[test]
fn share_then_get_the_printed_magnet_link_with_no_other_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/holiday.mkv"), data(14, 3_000_000)).unwrap();
    let sharer = Proc::start(
        &[
            "share",
            s(&d.join("mine/holiday.mkv")),
            "--public-ip",
            "127.0.0.1",
            "--port",
            "0",
            "--tracker-port",
            "0",
        ],
        d.join("share.err"),
    );
    let torrent = sharer
        .wait_for("torrent: ", T)
        .trim_start_matches("torrent: ")
        .to_string();
    let magnet = sharer
        .wait_for("magnet: ", T)
        .trim_start_matches("magnet: ")
        .to_string();
    assert!(Path::new(&torrent).exists());
    let command = {
        sharer.wait_for("send your friend this command", T);
        sharer.wait_for("spore get", T)
    };
    assert!(command.contains(&magnet));
    let mut friend = Proc::start(
        &[
            "get",
            &magnet,
            "-o",
            s(&d.join("friend")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
        ],
        d.join("friend.err"),
    );
    friend.wait_for("complete: holiday.mkv", T);
    assert!(friend.wait_exit(T).success());
    assert_eq!(
        sha256(&d.join("friend/holiday.mkv")),
        sha256(&d.join("mine/holiday.mkv"))
    );
}

/// Starts a `spore dht` node on `ip`; returns it and its address.
fn dht_node(dir: &Path, ip: &str, extra: &[&str]) -> (Proc, String) {
    let listen = format!("{ip}:0");
    let mut args = vec!["dht", "--listen", listen.as_str()];
    args.extend_from_slice(extra);
    let p = Proc::start(&args, dir.join(format!("dht-{ip}.err")));
    let addr = p
        .wait_for("dht: node on ", T)
        .trim_start_matches("dht: node on ")
        .trim()
        .to_string();
    (p, addr)
}

#[test]
fn trackerless_magnet_through_a_loopback_dht() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_first, boot) = dht_node(d, "127.0.0.50", &[]);
    let _others: Vec<(Proc, String)> = (51..54)
        .map(|i| dht_node(d, &format!("127.0.0.{i}"), &["--bootstrap", &boot]))
        .collect();
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/solo.bin"), data(15, 2_000_000)).unwrap();
    // No tracker at all.
    spore_ok(&[
        "create",
        s(&d.join("seed/solo.bin")),
        "-o",
        s(&d.join("t.torrent")),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&d.join("t.torrent"))])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!magnet.contains("tr="));
    let seeder = Proc::start(
        &[
            "seed",
            s(&d.join("t.torrent")),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.2:0",
            "--dht-bootstrap",
            &boot,
        ],
        d.join("seed.err"),
    );
    seeder.wait_for("seeding", T);
    let mut getter = Proc::start(
        &[
            "get",
            &magnet,
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
            "--dht-bootstrap",
            &boot,
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: solo.bin", Duration::from_secs(90));
    assert!(getter.wait_exit(T).success());
    assert_eq!(
        sha256(&d.join("dl/solo.bin")),
        sha256(&d.join("seed/solo.bin"))
    );
}

#[test]
fn a_dht_node_keeps_its_routing_table_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_first, boot) = dht_node(d, "127.0.0.60", &[]);
    let state = d.join("nodes.txt");
    let (mut node, _) = dht_node(
        d,
        "127.0.0.61",
        &["--bootstrap", &boot, "--state", s(&state)],
    );
    node.terminate();
    node.wait_for("dht: stopped", T);
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains(&boot), "routing table not saved: {saved:?}");
    // Restarted with no bootstrap node, it still knows the network.
    let (mut again, _) = dht_node(d, "127.0.0.61", &["--state", s(&state)]);
    again.terminate();
    let line = again.wait_for("dht: stopped with ", T);
    let nodes: usize = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(nodes >= 1, "{line}");
}

/// A btmh-only magnet link between Spore peers: the info dictionary over BEP 9, the piece layers over
/// BEP 52 hash requests (the larger file's layer in a 512-hash chunk and a smaller one, each proven by
/// uncles), then the data checked against them.
#[test]
fn a_v2_only_magnet_link_between_spore_peers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_tracker, url) = tracker(d);
    std::fs::create_dir_all(d.join("seed/v2")).unwrap();
    std::fs::write(d.join("seed/v2/long.bin"), data(20, 9_000_000)).unwrap();
    std::fs::write(d.join("seed/v2/short.bin"), data(21, 50_000)).unwrap();
    spore_ok(&[
        "create",
        s(&d.join("seed/v2")),
        "-o",
        s(&d.join("t.torrent")),
        "-t",
        &url,
        "--v2",
        "--piece-length",
        "16K",
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&d.join("t.torrent"))])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!magnet.contains("btih"), "{magnet}");
    let seeder = Proc::start(
        &[
            "seed",
            s(&d.join("t.torrent")),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.2:0",
        ],
        d.join("seed.err"),
    );
    seeder.wait_for("seeding", T);
    let mut getter = Proc::start(
        &[
            "get",
            &magnet,
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: v2", T);
    assert!(getter.wait_exit(T).success());
    for f in ["long.bin", "short.bin"] {
        assert_eq!(
            sha256(&d.join("dl/v2").join(f)),
            sha256(&d.join("seed/v2").join(f)),
            "{f}"
        );
    }
}
