//! BEP 14 local service discovery between `spore` processes on loopback: a multicast group joined on the
//! loopback interface (hidden `--lsd-addr`, which also overrides the loopback-means-off policy), so nothing
//! reaches the real LAN group.

use std::path::Path;

mod common;
use common::*;

/// A group port of our own, so test runs in parallel do not hear each other.
fn group(offset: u32) -> String {
    format!(
        "239.192.152.143:{}",
        40_000 + (std::process::id() * 3 + offset) % 20_000
    )
}

/// Reads the number before `what` in a `stopped:` line.
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

fn create(d: &Path, name: &str, size: usize, seed: u64, extra: &[&str]) {
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed").join(name), data(seed, size)).unwrap();
    let content = d.join("seed").join(name);
    let torrent = d.join("t.torrent");
    let mut args = vec![
        "create",
        s(&content),
        "-o",
        s(&torrent),
        "--piece-length",
        "32K",
    ];
    args.extend_from_slice(extra);
    spore_ok(&args);
}

#[test]
fn two_peers_find_each_other_through_lsd_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No tracker in the torrent, no --peer, and the DHT is off (loopback without bootstrap nodes).
    create(d, "local.bin", 4_000_000, 21, &[]);
    let lsd = group(0);
    let seeder = Proc::start(
        &[
            "seed",
            s(&d.join("t.torrent")),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.2:0",
            "--lsd-addr",
            &lsd,
        ],
        d.join("seed.err"),
    );
    let seed_addr = seeder.addr(T);
    seeder.wait_for("seeding", T);
    let mut getter = Proc::start(
        &[
            "get",
            s(&d.join("t.torrent")),
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
            "--lsd-addr",
            &lsd,
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: local.bin", T);
    let line = getter.wait_for("stopped:", T);
    assert!(getter.wait_exit(T).success());
    assert!(count_before(&line, "LSD announces") >= 1, "{line}");
    assert_eq!(
        sha256(&d.join("dl/local.bin")),
        sha256(&d.join("seed/local.bin"))
    );

    // Without an explicit group, a client on loopback keeps LSD off.
    let mut plain = Proc::start(
        &[
            "get",
            s(&d.join("t.torrent")),
            "-o",
            s(&d.join("dl2")),
            "--listen",
            "127.0.0.4:0",
            "--no-seed",
            "--peer",
            &seed_addr.to_string(),
        ],
        d.join("plain.err"),
    );
    let line = plain.wait_for("stopped:", T);
    assert!(plain.wait_exit(T).success());
    assert_eq!(count_before(&line, "LSD announces"), 0, "{line}");
}

#[test]
fn private_torrents_never_announce_on_lsd_and_public_ones_do() {
    for private in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (_tracker, url) = tracker(d);
        let mut extra = vec!["-t", url.as_str()];
        if private {
            extra.push("--private");
        }
        create(d, "p.bin", 500_000, 22, &extra);
        // LSD is asked for explicitly everywhere; only the public torrent may use it.
        let lsd = group(1 + u32::from(private));
        let seeder = Proc::start(
            &[
                "seed",
                s(&d.join("t.torrent")),
                "--data",
                s(&d.join("seed")),
                "--listen",
                "127.0.0.2:0",
                "--lsd-addr",
                &lsd,
            ],
            d.join("seed.err"),
        );
        seeder.wait_for("seeding", T);
        let getters: Vec<Proc> = (0..2)
            .map(|i| {
                Proc::start(
                    &[
                        "get",
                        s(&d.join("t.torrent")),
                        "-o",
                        s(&d.join(format!("dl{i}"))),
                        "--listen",
                        &format!("127.0.0.{}:0", 5 + i),
                        "--seed-time",
                        "1s",
                        "--lsd-addr",
                        &lsd,
                    ],
                    d.join(format!("get{i}.err")),
                )
            })
            .collect();
        let sent: u64 = getters
            .iter()
            .map(|g| count_before(&g.wait_for("stopped:", T), "LSD announces"))
            .sum();
        for i in 0..2 {
            assert_eq!(
                sha256(&d.join(format!("dl{i}/p.bin"))),
                sha256(&d.join("seed/p.bin"))
            );
        }
        if private {
            assert_eq!(sent, 0, "a private torrent sent LSD announces");
        } else {
            assert!(sent >= 2, "the public control sent {sent} LSD announces");
        }
    }
}
