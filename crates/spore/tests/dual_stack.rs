//! IPv4 and IPv6 together (issue 15 part 4), in network namespaces this test makes: a `dual`
//! namespace holding a tracker and a seed, linked to a `v4` namespace by IPv4 only and to a `v6`
//! namespace by IPv6 only. The tracker's name, `tracker.test`, has both addresses in `dual` (its
//! `/etc/netns/NS/hosts`) and one each in the others. The seed, with no `--listen` (so on `[::]`),
//! must announce over both families (BEP 7) for a downloader in `v4` and one in `v6` to find it, over
//! HTTP and over UDP. Nothing leaves the machine: the namespaces have no route anywhere else, and DNS
//! inside them points at their own loopback. Root and `ip` are needed (a failure when CI=true).
//!
//! And the DHT over IPv6 alone (BEP 32): `spore dht` nodes, a seed and a downloader all on `::1`,
//! which run no IPv4 DHT at all, the downloader starting from a trackerless magnet link; and with
//! libtorrent (python3-libtorrent) on either side of that IPv6 DHT.

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::netns::ip;
use common::*;

const DUAL_V4: &str = "10.77.4.1";
const V4_IP: &str = "10.77.4.2";
const DUAL_V6: &str = "fd77:6::1";
const V6_IP: &str = "fd77:6::2";

/// Three namespaces, removed on drop (with their processes) whether the test passed or not.
struct Lab {
    dual: String,
    v4: String,
    v6: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            dual: format!("spore-dual-{tag}-{pid}"),
            v4: format!("spore-v4-{tag}-{pid}"),
            v6: format!("spore-v6-{tag}-{pid}"),
            dir: tempfile::tempdir().unwrap(),
        };
        let hosts = [
            (
                &lab.dual,
                format!("{DUAL_V4} tracker.test\n{DUAL_V6} tracker.test\n"),
            ),
            (&lab.v4, format!("{DUAL_V4} tracker.test\n")),
            (&lab.v6, format!("{DUAL_V6} tracker.test\n")),
        ];
        for (ns, hosts) in hosts {
            ip(&["netns", "add", ns]);
            // `ip netns exec` bind-mounts /etc/netns/NS/{hosts,resolv.conf} over /etc's.
            let etc = PathBuf::from("/etc/netns").join(ns);
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
            std::fs::write(
                etc.join("hosts"),
                format!("127.0.0.1 localhost\n::1 localhost\n{hosts}"),
            )
            .unwrap();
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        for (peer, dev) in [(&lab.v4, "l4"), (&lab.v6, "l6")] {
            ip(&[
                "link", "add", dev, "netns", &lab.dual, "type", "veth", "peer", "name", dev,
                "netns", peer,
            ]);
        }
        for (ns, dev, addr) in [
            (&lab.dual, "l4", "10.77.4.1/24"),
            (&lab.v4, "l4", "10.77.4.2/24"),
            (&lab.dual, "l6", "fd77:6::1/64"),
            (&lab.v6, "l6", "fd77:6::2/64"),
        ] {
            let mut args = vec!["-n", ns, "addr", "add", addr, "dev", dev];
            if addr.contains(':') {
                // Usable at once, without duplicate address detection's wait.
                args.push("nodad");
            }
            ip(&args);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    fn spore(&self, ns: &str, args: &[&str], log: &str) -> Proc {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_spore")])
            .args(args)
            .env(
                "XDG_DATA_HOME",
                self.dir.path().join(format!("state-{log}")),
            )
            .env("SPORE_LOG", "debug");
        Proc::spawn(c, self.dir.path().join(format!("{log}.err")))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.dual, &self.v4, &self.v6] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
    }
}

/// Whether this machine can build the lab; a failure when CI=true.
fn lab_available() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "the dual-stack lab needs root when CI=true"
        );
        eprintln!("skipped: not root");
        return false;
    }
    have_tool("ip", &["-V"])
}

/// Waits until the log file at `path` has every one of `needles`.
fn wait_for_log(path: &std::path::Path, needles: &[&str]) {
    let deadline = std::time::Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if needles.iter().all(|n| text.contains(n)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all of {needles:?} in {}: {text}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_dual_stack_seed_is_found_over_ipv4_and_over_ipv6() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("trk");
    let dir = lab.dir.path();
    let content = dir.join("dual.bin");
    std::fs::write(&content, data(46, 3_000_000)).unwrap();
    let http = "http://tracker.test:6969/announce";
    let udp = "udp://tracker.test:6969/announce";
    // One torrent naming both trackers for the seed, one per tracker for the downloaders: the
    // trackers are outside the info dictionary, so all three are the same torrent.
    let both = dir.join("both.torrent");
    spore_ok(&[
        "create",
        s(&content),
        "-o",
        s(&both),
        "--piece-length",
        "262144",
        "-t",
        http,
        "-t",
        udp,
    ]);
    let only = |url: &str, name: &str| {
        let t = dir.join(name);
        create_torrent(&content, &t, "262144", Some(url));
        t
    };
    let (http_only, udp_only) = (only(http, "http.torrent"), only(udp, "udp.torrent"));

    let tracker = lab.spore(
        &lab.dual,
        &["tracker", "--http", "[::]:6969", "--udp", "[::]:6969"],
        "tracker",
    );
    tracker.wait_for("tracker: UDP on ", T);
    let seed = lab.spore(
        &lab.dual,
        &[
            "seed",
            s(&both),
            "--data",
            s(dir),
            "--no-dht",
            "--no-lsd",
            "--no-port-mapping",
        ],
        "seed",
    );
    let listening = seed.wait_for("listening on ", T);
    assert!(listening.contains("[::]:6881"), "{listening}");
    // Both trackers heard from the seed over each family.
    wait_for_log(
        &seed.stderr,
        &[
            &format!("tracker {http}: announced over IPv4"),
            &format!("tracker {http}: announced over IPv6"),
            &format!("tracker {udp}: announced over IPv4"),
            &format!("tracker {udp}: announced over IPv6"),
        ],
    );

    // Each downloader can reach the seed over one family only.
    for (ns, family, torrent, tag) in [
        (&lab.v4, V4_IP, &http_only, "v4-http"),
        (&lab.v4, V4_IP, &udp_only, "v4-udp"),
        (&lab.v6, V6_IP, &http_only, "v6-http"),
        (&lab.v6, V6_IP, &udp_only, "v6-udp"),
    ] {
        let out = dir.join(tag);
        let mut get = lab.spore(
            ns,
            &[
                "get",
                s(torrent),
                "-o",
                s(&out),
                "--no-seed",
                "--no-dht",
                "--no-lsd",
                "--no-port-mapping",
            ],
            tag,
        );
        get.wait_for("complete: dual.bin", T);
        assert!(get.wait_exit(T).success(), "{tag}");
        assert_eq!(sha256(&out.join("dual.bin")), sha256(&content), "{tag}");
        let log = std::fs::read_to_string(&get.stderr).unwrap_or_default();
        let seed_addr = if family == V4_IP {
            format!("{DUAL_V4}:6881")
        } else {
            format!("[{DUAL_V6}]:6881")
        };
        assert!(log.contains(&seed_addr), "{tag}: no {seed_addr} in {log}");
    }
    drop(tracker);
}

/// A `spore dht` node on `[::1]`, with `extra` flags; returns it and its address.
fn dht6_node(dir: &std::path::Path, n: usize, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["dht", "--listen", "[::1]:0"];
    args.extend_from_slice(extra);
    let p = Proc::start(&args, dir.join(format!("dht-{n}.err")));
    let addr = p
        .wait_for("dht: node on ", T)
        .trim_start_matches("dht: node on ")
        .trim()
        .to_string();
    assert!(addr.starts_with("[::1]:"), "{addr}");
    (p, addr)
}

#[test]
fn the_dht_finds_a_peer_over_ipv6_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_first, boot) = dht6_node(d, 0, &[]);
    let _others: Vec<(Proc, String)> = (1..4)
        .map(|i| dht6_node(d, i, &["--bootstrap", &boot]))
        .collect();
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/six.bin"), data(32, 2_000_000)).unwrap();
    // No tracker at all.
    spore_ok(&[
        "create",
        s(&d.join("seed/six.bin")),
        "-o",
        s(&d.join("t.torrent")),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&d.join("t.torrent"))])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!magnet.contains("tr="));
    let mut seed = Command::new(env!("CARGO_BIN_EXE_spore"));
    seed.args([
        "seed",
        s(&d.join("t.torrent")),
        "--data",
        s(&d.join("seed")),
        "--listen",
        "[::1]:0",
        "--dht-bootstrap",
        &boot,
    ])
    .env("SPORE_LOG", "debug");
    let seeder = Proc::spawn(seed, d.join("seed.err"));
    seeder.wait_for("seeding", T);
    // Its announce reached the IPv6 DHT (nodes that took it, then "nodes").
    wait_for_log(&seeder.stderr, &["DHT (IPv6): announced to "]);
    let log = std::fs::read_to_string(&seeder.stderr).unwrap();
    assert!(
        !log.contains("DHT (IPv6): announced to 0 nodes"),
        "the first announce found no node: {log}"
    );
    let mut getter = Proc::start(
        &[
            "get",
            &magnet,
            "-o",
            s(&d.join("dl")),
            "--listen",
            "[::1]:0",
            "--no-seed",
            "--dht-bootstrap",
            &boot,
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: six.bin", T);
    assert!(getter.wait_exit(T).success());
    assert_eq!(
        sha256(&d.join("dl/six.bin")),
        sha256(&d.join("seed/six.bin"))
    );
}

/// libtorrent (tests/interop/lt_dht.py) seeding or getting over the DHT through `node`, on `::1`.
fn lt_dht(
    mode: &str,
    torrent: &str,
    save: &std::path::Path,
    node: &str,
    log: &std::path::Path,
) -> Proc {
    let port = node.rsplit(':').next().unwrap();
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_dht.py"))
        .args([mode, torrent, s(save), "::1", "::1", port]);
    Proc::spawn(command, log.to_path_buf())
}

#[test]
fn spore_and_libtorrent_find_each_other_over_the_ipv6_dht() {
    if !libtorrent_available() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "python3-libtorrent is needed when CI=true"
        );
        eprintln!("skipped: no python3-libtorrent");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_boot_node, boot) = dht6_node(d, 0, &[]);
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/lt.bin"), data(33, 1_500_000)).unwrap();
    spore_ok(&[
        "create",
        s(&d.join("seed/lt.bin")),
        "-o",
        s(&d.join("t.torrent")),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&d.join("t.torrent"))])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // libtorrent seeds and announces to Spore's DHT node; Spore's download finds it there.
    let lt_seed = lt_dht(
        "seed",
        s(&d.join("t.torrent")),
        &d.join("seed"),
        &boot,
        &d.join("lt-seed.log"),
    );
    lt_seed.wait_for("\"done\"", T);
    let get = |out: &str| {
        let mut p = Proc::start(
            &[
                "get",
                &magnet,
                "-o",
                s(&d.join(out)),
                "--listen",
                "[::1]:0",
                "--no-seed",
                "--dht-bootstrap",
                &boot,
            ],
            d.join(format!("{out}.err")),
        );
        p.wait_for("complete: lt.bin", T);
        assert!(p.wait_exit(T).success());
        assert_eq!(
            sha256(&d.join(out).join("lt.bin")),
            sha256(&d.join("seed/lt.bin"))
        );
    };
    // libtorrent announces once its lookup is done: until then Spore may find nobody and look again
    // 15 s later, well within the wait.
    get("from-lt");
    drop(lt_seed);

    // Spore seeds; libtorrent's lookup through the same node finds it.
    let mut seed = Command::new(env!("CARGO_BIN_EXE_spore"));
    seed.args([
        "seed",
        s(&d.join("t.torrent")),
        "--data",
        s(&d.join("seed")),
        "--listen",
        "[::1]:0",
        "--dht-bootstrap",
        &boot,
    ])
    .env("SPORE_LOG", "debug");
    let spore_seed = Proc::spawn(seed, d.join("spore-seed.err"));
    spore_seed.wait_for("seeding", T);
    wait_for_log(&spore_seed.stderr, &["DHT (IPv6): announced to "]);
    let lt_get = lt_dht(
        "get",
        &magnet,
        &d.join("lt-dl"),
        &boot,
        &d.join("lt-get.log"),
    );
    lt_get.wait_for("\"done\"", T);
    assert_eq!(
        sha256(&d.join("lt-dl/lt.bin")),
        sha256(&d.join("seed/lt.bin"))
    );
}
