//! Real clients around Spore's tracker and magnet links, on loopback, every result checked by SHA-256:
//! a magnet link whose metadata comes from libtorrent, and real clients (libtorrent, aria2,
//! Transmission) finding each other only through `spore tracker` over HTTP and UDP. Peer-to-peer
//! transfers between Spore and each real client are in `interop_peers.rs`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn have(check: &mut Command) -> bool {
    check.output().is_ok_and(|o| o.status.success())
}

/// Whether the tool is there; outside CI a missing tool skips the test, in CI it fails it.
fn need(name: &str, available: bool) -> bool {
    if !available {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing in CI"
        );
        eprintln!("SKIP: {name} is not installed");
    }
    available
}

fn libtorrent() -> bool {
    need(
        "python3-libtorrent",
        have(Command::new("/usr/bin/python3").args(["-c", "import libtorrent"])),
    )
}

fn have_aria2() -> bool {
    need("aria2c", have(Command::new("aria2c").arg("--version")))
}

fn lt_peer(
    mode: &str,
    torrent: &Path,
    save: &Path,
    ip: &str,
    peers: &[String],
    log: &Path,
) -> Proc {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_peer.py");
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(script)
        .args([mode, s(torrent), s(save), ip])
        .args(peers);
    Proc::spawn(command, log.to_path_buf())
}

fn aria2(torrent: &Path, dir: &Path, ip: &str, seed: bool, log: &Path) -> Proc {
    let mut command = Command::new("aria2c");
    command.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        &format!("--interface={ip}"),
        "--listen-port=51500-51599",
        "--file-allocation=none",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--bt-tracker-connect-timeout=5",
        "-d",
        s(dir),
    ]);
    if seed {
        command.args([
            "-V",
            "--bt-hash-check-seed=true",
            "--seed-ratio=0.0",
            "--seed-time=60",
        ]);
    } else {
        command.args(["--seed-time=0"]);
    }
    command.arg(s(torrent));
    Proc::spawn(command, log.to_path_buf())
}

/// A torrent of `files` (name, size) under `root/name`, announcing to `tracker`.
fn make_content(root: &Path, name: &str, files: &[(&str, usize)], tracker: &str, torrent: &Path) {
    for (i, (file, size)) in files.iter().enumerate() {
        let path = root.join(name).join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data(100 + i as u64, *size)).unwrap();
    }
    let content = root.join(name);
    let target = if files.len() == 1 {
        content.join(files[0].0)
    } else {
        content
    };
    spore_ok(&[
        "create",
        s(&target),
        "-o",
        s(torrent),
        "-t",
        tracker,
        "--piece-length",
        "64K",
    ]);
}

fn same(a: &Path, b: &Path) {
    assert_eq!(
        sha256(a),
        sha256(b),
        "{} differs from {}",
        a.display(),
        b.display()
    );
}

const LONG: Duration = Duration::from_secs(90);

#[test]
fn a_magnet_link_served_by_libtorrent() {
    if !libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_t, url) = tracker(d);
    make_content(
        &d.join("seed"),
        "m",
        &[("clip.bin", 3_000_000)],
        &url,
        &d.join("t.torrent"),
    );
    let lt = lt_peer(
        "seed",
        &d.join("t.torrent"),
        &d.join("seed/m"),
        "127.0.0.11",
        &[],
        &d.join("lt.err"),
    );
    lt.wait_for("\"done\"", LONG);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&d.join("t.torrent"))])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut getter = Proc::start(
        &[
            "get",
            &magnet,
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.12:0",
            "--no-seed",
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: clip.bin", LONG);
    assert!(getter.wait_exit(T).success());
    same(&d.join("dl/clip.bin"), &d.join("seed/m/clip.bin"));
}

/// Announce URLs of a `spore tracker` started on loopback: (HTTP, UDP).
fn tracker_both(dir: &Path) -> (Proc, String, String) {
    let p = Proc::start(
        &["tracker", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
        dir.join("tracker.err"),
    );
    let http = p
        .wait_for("tracker: HTTP on ", T)
        .trim_start_matches("tracker: HTTP on ")
        .trim()
        .to_string();
    let udp = p
        .wait_for("tracker: UDP on ", T)
        .trim_start_matches("tracker: UDP on ")
        .trim()
        .to_string();
    (p, http, udp)
}

fn announces(metrics: &str, protocol: &str) -> u64 {
    let key = format!("spore_tracker_announces_total{{protocol=\"{protocol}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn metrics(http_announce: &str) -> String {
    let base = http_announce.trim_end_matches("/announce");
    let out = Command::new("curl")
        .args(["-s", &format!("{base}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn real_clients_find_each_other_only_through_spores_tracker() {
    if !libtorrent() || !have_aria2() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_t, http, udp) = tracker_both(d);

    // Over HTTP: libtorrent seeds, aria2 downloads.
    make_content(
        &d.join("a"),
        "h",
        &[("over-http.bin", 3_000_000)],
        &http,
        &d.join("http.torrent"),
    );
    let lt = lt_peer(
        "seed",
        &d.join("http.torrent"),
        &d.join("a/h"),
        "127.0.0.20",
        &[],
        &d.join("lt1.err"),
    );
    lt.wait_for("\"done\"", LONG);
    let mut a = aria2(
        &d.join("http.torrent"),
        &d.join("aria-dl"),
        "127.0.0.21",
        false,
        &d.join("aria1.err"),
    );
    assert!(a.wait_exit(LONG).success(), "aria2 failed over HTTP");
    same(
        &d.join("aria-dl/over-http.bin"),
        &d.join("a/h/over-http.bin"),
    );
    drop(lt);

    // Over UDP: libtorrent seeds and Spore downloads (Debian's aria2 1.36 answers UDP tracker URLs with
    // "udp is not supported yet"; two real clients over UDP are Transmission and libtorrent, below).
    make_content(
        &d.join("b"),
        "u",
        &[("over-udp.bin", 3_000_000)],
        &udp,
        &d.join("udp.torrent"),
    );
    let lt2 = lt_peer(
        "seed",
        &d.join("udp.torrent"),
        &d.join("b/u"),
        "127.0.0.22",
        &[],
        &d.join("lt2.err"),
    );
    lt2.wait_for("\"done\"", LONG);
    let mut getter = Proc::start(
        &[
            "get",
            s(&d.join("udp.torrent")),
            "-o",
            s(&d.join("spore-dl")),
            "--listen",
            "127.0.0.23:0",
            "--no-seed",
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: over-udp.bin", LONG);
    assert!(getter.wait_exit(T).success());
    same(
        &d.join("spore-dl/over-udp.bin"),
        &d.join("b/u/over-udp.bin"),
    );

    let m = metrics(&http);
    assert!(
        announces(&m, "http") >= 2 && announces(&m, "udp") >= 2,
        "{m}"
    );
}

/// A Transmission daemon on `ip`, its own config directory, DHT/LPD/PEX/uTP off; returns it and its RPC
/// address once it answers.
fn transmission(dir: &Path, ip: &str, peer_port: u16, rpc_port: u16) -> (Proc, String) {
    let conf = dir.join("transmission");
    std::fs::create_dir_all(&conf).unwrap();
    let settings = format!(
        r#"{{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
            "port-forwarding-enabled": false, "bind-address-ipv4": "{ip}", "peer-port": {peer_port},
            "peer-port-random-on-start": false, "rpc-port": {rpc_port}, "rpc-bind-address": "127.0.0.1",
            "rpc-authentication-required": false, "rpc-whitelist-enabled": false, "encryption": 0,
            "download-dir": "{}", "incomplete-dir-enabled": false, "start-added-torrents": true}}"#,
        s(dir)
    );
    std::fs::write(conf.join("settings.json"), settings).unwrap();
    let mut command = Command::new("transmission-daemon");
    // It keeps a session-id file in TMPDIR and removes it only on a clean exit: in the test's
    // directory, killing it leaves nothing behind in /tmp.
    command.args(["-f", "-g", s(&conf)]).env("TMPDIR", &conf);
    let p = Proc::spawn(command, dir.join("transmission.err"));
    let rpc = format!("127.0.0.1:{rpc_port}");
    for _ in 0..200 {
        if have(Command::new("transmission-remote").args([&rpc, "-l"])) {
            return (p, rpc);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("transmission-daemon did not answer on {rpc}");
}

#[test]
fn transmission_seeds_over_udp_and_libtorrent_downloads() {
    if !libtorrent()
        || !need(
            "transmission-daemon",
            have(Command::new("transmission-daemon").arg("--version")),
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_t, http, udp) = tracker_both(d);
    make_content(
        &d.join("seed"),
        "tr",
        &[("via-udp.bin", 2_000_000)],
        &udp,
        &d.join("t.torrent"),
    );
    // Ports from the process id, so parallel test runs do not collide.
    let base = 20_000 + (std::process::id() % 20_000) as u16;
    let (_daemon, rpc) = transmission(d, "127.0.0.30", base, base + 1);
    assert!(have(Command::new("transmission-remote").args([
        &rpc,
        "-a",
        s(&d.join("t.torrent")),
        "-w",
        s(&d.join("seed/tr"))
    ])));
    // Transmission never dials loopback peers it learns from a tracker; libtorrent dials it.
    for _ in 0..600 {
        if announces(&metrics(&http), "udp") >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let lt = lt_peer(
        "get",
        &d.join("t.torrent"),
        &d.join("lt"),
        "127.0.0.31",
        &[],
        &d.join("lt.err"),
    );
    lt.wait_for("\"done\"", LONG);
    same(&d.join("lt/via-udp.bin"), &d.join("seed/tr/via-udp.bin"));
}

/// aria2 as one downloader of a swarm: peer exchange on (its default, BEP 11 `ut_pex`), DHT and LPD off,
/// seeding on after completion (so the data it has stays in the swarm), and a hook that writes `done` when
/// the download completes. Its info-level log (`DIR.log`) records the ut_pex messages it gets.
fn aria2_in_swarm(torrent: &Path, dir: &Path, ip: &str, done: &Path, log: &Path) -> Proc {
    let hook = dir.with_extension("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch '{}'\n", s(done))).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut command = Command::new("aria2c");
    command.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=true",
        &format!("--interface={ip}"),
        "--listen-port=51600-51699",
        "--file-allocation=none",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--bt-tracker-connect-timeout=5",
        "--seed-ratio=0.0",
        "--seed-time=10",
        &format!("--on-bt-download-complete={}", s(&hook)),
        &format!("--log={}", s(&dir.with_extension("log"))),
        "--log-level=info",
        "-d",
        s(dir),
        s(torrent),
    ]);
    Proc::spawn(command, log.to_path_buf())
}

/// The swarm-outlives-its-seed test of swarm.rs with two of the ten downloaders real clients: libtorrent
/// and aria2 on their own loopback addresses (DHT, LSD, UPnP off). The original seed and the tracker are
/// killed the moment any downloader completes; all ten must still finish, from each other alone.
#[test]
fn the_swarm_outlives_its_seed_and_tracker_with_libtorrent_and_aria2_in_it() {
    if !libtorrent() || !have_aria2() {
        return;
    }
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
    let lt = lt_peer(
        "get",
        &d.join("t.torrent"),
        &d.join("lt"),
        "127.0.0.90",
        &[],
        &d.join("lt.err"),
    );
    let aria_done = d.join("aria.done");
    let _aria = aria2_in_swarm(
        &d.join("t.torrent"),
        &d.join("aria"),
        "127.0.0.91",
        &aria_done,
        &d.join("aria.err"),
    );
    // The real clients must be in the swarm before it loses its seed and tracker: wait until the
    // tracker has heard from them (and the seed) before the Spore downloaders start.
    let deadline = std::time::Instant::now() + T;
    while announces(&metrics(&url), "http") < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "libtorrent and aria2 never announced"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let spores: Vec<Proc> = (0..8)
        .map(|i| {
            Proc::start(
                &[
                    "get",
                    s(&d.join("t.torrent")),
                    "-o",
                    s(&d.join(format!("dl{i}"))),
                    "--listen",
                    &format!("127.0.0.{}:0", 80 + i),
                    "--seed-time",
                    "10m",
                ],
                d.join(format!("get{i}.err")),
            )
        })
        .collect();
    // Who has completed: the eight Spore peers, then libtorrent, then aria2.
    let mut done = [false; 10];
    let mut lt_pex = 0u64;
    let poll = |done: &mut [bool; 10], lt_pex: &mut u64| {
        for (i, p) in spores.iter().enumerate() {
            while let Ok(line) = p.lines.try_recv() {
                done[i] |= line.contains("complete: keep.bin");
            }
        }
        while let Ok(line) = lt.lines.try_recv() {
            done[8] |= line.contains("\"done\"");
            if let Some(n) = line.strip_prefix("{\"pex_peers\": ") {
                *lt_pex = (*lt_pex).max(n.trim_end_matches('}').trim().parse().unwrap_or(0));
            }
        }
        done[9] |= aria_done.exists();
    };
    let deadline = std::time::Instant::now() + LONG;
    while !done.iter().any(|d| *d) {
        assert!(
            std::time::Instant::now() < deadline,
            "nobody completed while the seed was up"
        );
        std::thread::sleep(Duration::from_millis(10));
        poll(&mut done, &mut lt_pex);
    }
    seeder.child.kill().unwrap();
    tracker_proc.child.kill().unwrap();
    let first = done;
    println!(
        "seed and tracker killed when these had completed: {first:?} [spore x8, libtorrent, aria2]"
    );
    let deadline = std::time::Instant::now() + LONG;
    while !done.iter().all(|d| *d) {
        assert!(
            std::time::Instant::now() < deadline,
            "after the seed and tracker left, only {done:?} completed (first: {first:?}; \
             [spore x8, libtorrent, aria2]); aria2: {}",
            std::fs::read_to_string(d.join("aria.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
        poll(&mut done, &mut lt_pex);
    }
    // Spore's peer exchange reaches libtorrent: it reports peers it heard of through ut_pex (the first
    // exchange comes 2 s after the extension handshake).
    let deadline = std::time::Instant::now() + T;
    while lt_pex == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "libtorrent heard of no peer through PEX"
        );
        std::thread::sleep(Duration::from_millis(50));
        poll(&mut done, &mut lt_pex);
    }
    // And aria2 (1.36, which speaks ut_pex by default) logs the exchanges it receives from Spore peers
    // (the downloaders on 127.0.0.8x or the original seed on 127.0.0.2).
    let aria_heard_pex = || {
        std::fs::read_to_string(d.join("aria.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| {
                (l.contains("From: 127.0.0.8") || l.contains("From: 127.0.0.2:"))
                    && l.contains("extended ut_pex added=")
            })
    };
    let deadline = std::time::Instant::now() + T;
    while !aria_heard_pex() {
        assert!(
            std::time::Instant::now() < deadline,
            "aria2 got no PEX message from a Spore peer; its log's ut_pex and Spore lines: {}",
            std::fs::read_to_string(d.join("aria.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ut_pex") || l.contains("127.0.0.8"))
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let expected = sha256(&d.join("seed/keep.bin"));
    for i in 0..8 {
        assert_eq!(
            sha256(&d.join(format!("dl{i}/keep.bin"))),
            expected,
            "spore downloader {i}"
        );
    }
    assert_eq!(sha256(&d.join("lt/keep.bin")), expected, "libtorrent");
    assert_eq!(sha256(&d.join("aria/keep.bin")), expected, "aria2");
}

/// A v2-only torrent (BEP 52) of three files: one over 512 pieces (its piece layer comes in two
/// requests, each proven by an uncle hash), one of a few pieces, one smaller than a piece (no layer).
fn v2_content(d: &Path, tracker: &str) -> String {
    let root = d.join("seed/v2");
    std::fs::create_dir_all(&root).unwrap();
    for (i, (name, size)) in [
        ("big.bin", 40_000_000),
        ("mid.bin", 3_000_000),
        ("tiny.txt", 1000),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(root.join(name), data(300 + i as u64, *size)).unwrap();
    }
    let torrent = d.join("v2.torrent");
    spore_ok(&[
        "create",
        s(&root),
        "--v2",
        "-o",
        s(&torrent),
        "-t",
        tracker,
        "--piece-length",
        "64K",
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&torrent)])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        magnet.contains("xt=urn:btmh:") && !magnet.contains("btih"),
        "{magnet}"
    );
    magnet
}

fn same_v2(d: &Path, dl: &Path) {
    for name in ["big.bin", "mid.bin", "tiny.txt"] {
        same(&dl.join("v2").join(name), &d.join("seed/v2").join(name));
    }
}

/// A btmh-only magnet link: the info dictionary and the piece layers (BEP 52 hash requests) both come
/// from libtorrent.
#[test]
fn a_v2_only_magnet_link_served_by_libtorrent() {
    if !libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_t, url) = tracker(d);
    let magnet = v2_content(d, &url);
    let lt = lt_peer(
        "seed",
        &d.join("v2.torrent"),
        &d.join("seed"),
        "127.0.0.13",
        &[],
        &d.join("lt.err"),
    );
    lt.wait_for("\"done\"", LONG);
    let mut getter = Proc::start(
        &[
            "get",
            &magnet,
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.14:0",
            "--no-seed",
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: v2", LONG);
    assert!(getter.wait_exit(T).success());
    same_v2(d, &d.join("dl"));
}

/// The other way: libtorrent fetches a btmh-only magnet from a Spore seed, asking Spore for the
/// metadata and for piece-layer hashes with proofs.
#[test]
fn libtorrent_fetches_a_v2_only_magnet_link_from_spore() {
    if !libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_t, url) = tracker(d);
    let magnet = v2_content(d, &url);
    let seed = Proc::start(
        &[
            "seed",
            s(&d.join("v2.torrent")),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.15:0",
        ],
        d.join("seed.err"),
    );
    seed.wait_for("seeding ", LONG);
    let lt = Proc::spawn(
        {
            let mut c = Command::new("/usr/bin/python3");
            c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_peer.py"))
                .args(["get", &magnet, s(&d.join("lt")), "127.0.0.16"]);
            c
        },
        d.join("lt.err"),
    );
    lt.wait_for("\"done\"", LONG);
    same_v2(d, &d.join("lt"));
}

/// `spore daemon` with libtorrent, both directions, through its one peer port (the `Session` that hands
/// each incoming connection to the torrent its handshake names): libtorrent downloads a torrent the
/// daemon seeds, and the daemon downloads another that libtorrent seeds.
#[test]
fn the_daemon_trades_with_libtorrent_both_ways() {
    if !libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_t, url) = tracker(d);
    make_content(
        &d.join("daemon-seed"),
        "out",
        &[("to-lt.bin", 2_500_000)],
        &url,
        &d.join("out.torrent"),
    );
    make_content(
        &d.join("lt-seed"),
        "in",
        &[("from-lt.bin", 2_000_000)],
        &url,
        &d.join("in.torrent"),
    );
    let state = d.join("state");
    let mut daemon_cmd = Command::new(env!("CARGO_BIN_EXE_spore"));
    daemon_cmd.args([
        "daemon",
        "--state-dir",
        s(&state),
        "--listen",
        "127.0.0.17:0",
        "--api",
        "127.0.0.1:0",
        "--download-dir",
        s(&d.join("daemon-dl")),
        // The seed's data stays where it was made, outside download_dir.
        "--allowed-dir",
        s(&d.join("daemon-seed")),
        "--no-dht",
    ]);
    let daemon = Proc::spawn(daemon_cmd, d.join("daemon.err"));
    let api = daemon
        .wait_for("api listening on http://", T)
        .trim_start_matches("api listening on http://")
        .trim()
        .to_string();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_spore"))
            .args(args)
            .args(["--api", &api, "--state-dir", s(&state)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The daemon seeds what is already in its directory, and fetches the other torrent.
    cli(&[
        "add",
        s(&d.join("out.torrent")),
        "-o",
        s(&d.join("daemon-seed/out")),
    ]);
    cli(&["add", s(&d.join("in.torrent"))]);
    let lt_seed = lt_peer(
        "seed",
        &d.join("in.torrent"),
        &d.join("lt-seed/in"),
        "127.0.0.18",
        &[],
        &d.join("lt-seed.err"),
    );
    lt_seed.wait_for("\"done\"", LONG);
    let lt_get = lt_peer(
        "get",
        &d.join("out.torrent"),
        &d.join("lt-dl"),
        "127.0.0.19",
        &[],
        &d.join("lt-get.err"),
    );
    lt_get.wait_for("\"done\"", LONG);
    same(
        &d.join("lt-dl/to-lt.bin"),
        &d.join("daemon-seed/out/to-lt.bin"),
    );
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let list: serde_json::Value = serde_json::from_str(&cli(&["list", "--json"])).unwrap();
        let seeding = list["torrents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "seeding")
            .count();
        if seeding == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon not done: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    same(
        &d.join("daemon-dl/from-lt.bin"),
        &d.join("lt-seed/in/from-lt.bin"),
    );
}
