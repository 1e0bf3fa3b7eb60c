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
    command.args(["-f", "-g", s(&conf)]);
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
