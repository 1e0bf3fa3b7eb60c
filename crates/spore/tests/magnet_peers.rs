//! A magnet link's `x.pe` peers serve the download itself, not only the metadata.

use std::process::Command;
use std::time::Duration;

mod common;
use common::*;

#[test]
fn get_downloads_from_the_magnet_x_pe_peer_with_no_tracker_or_dht() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/only.bin"), data(31, 1_500_000)).unwrap();
    create_torrent(&d.join("seed/only.bin"), &d.join("t.torrent"), "auto", None);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&d.join("t.torrent"))])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!magnet.contains("tr="), "{magnet}");
    let (_seed, addr) = start_seed(
        d,
        &d.join("t.torrent"),
        &d.join("seed"),
        "127.0.0.2:0",
        &["--no-trackers"],
    );
    let link = format!("{magnet}&x.pe={addr}");
    let mut getter = Proc::start(
        &[
            "get",
            &link,
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
        ],
        d.join("get.err"),
    );
    // The metadata comes from the x.pe peer either way; before the fix the download then had no peer.
    getter.wait_for("complete: only.bin", Duration::from_secs(30));
    assert!(getter.wait_exit(T).success());
    assert_eq!(
        sha256(&d.join("dl/only.bin")),
        sha256(&d.join("seed/only.bin"))
    );
}

/// A TCP relay in front of `to` that counts the connections made through it.
fn counting_relay(
    to: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.4:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(to) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut into: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    (addr, count)
}

#[test]
fn the_connection_that_fetched_the_metadata_downloads_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/one.bin"), data(32, 2_000_000)).unwrap();
    create_torrent(&d.join("seed/one.bin"), &d.join("t.torrent"), "auto", None);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&d.join("t.torrent"))])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (_seed, addr) = start_seed(
        d,
        &d.join("t.torrent"),
        &d.join("seed"),
        "127.0.0.2:0",
        &["--no-trackers"],
    );
    // The getter reaches the seed only through the relay, which counts its connections.
    let (relay, connections) = counting_relay(addr);
    let link = format!("{magnet}&x.pe={relay}");
    let mut getter = Proc::start(
        &[
            "get",
            &link,
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
        ],
        d.join("get.err"),
    );
    getter.wait_for("complete: one.bin", Duration::from_secs(30));
    assert!(getter.wait_exit(T).success());
    assert_eq!(
        sha256(&d.join("dl/one.bin")),
        sha256(&d.join("seed/one.bin"))
    );
    // Before, the metadata came over one connection and the data over a second.
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one connection for the metadata and the data"
    );
}

#[test]
fn the_daemon_downloads_an_x_pe_magnet_over_the_connection_that_fetched_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/d.bin"), data(33, 1_000_000)).unwrap();
    create_torrent(&d.join("seed/d.bin"), &d.join("t.torrent"), "auto", None);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&d.join("t.torrent"))])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (_seed, addr) = start_seed(
        d,
        &d.join("t.torrent"),
        &d.join("seed"),
        "127.0.0.2:0",
        &["--no-trackers"],
    );
    let (relay, connections) = counting_relay(addr);
    let daemon = start_daemon(&d.join("state"), &d.join("dl"), "daemon.err", None);
    let link = format!("{magnet}&x.pe={relay}");
    let added = daemon.ok(
        "POST",
        "/api/torrents",
        Some(serde_json::json!({ "magnet": link })),
    );
    let id = added["id"].as_str().unwrap().to_string();
    // No tracker, no DHT: the x.pe peer is known to the metadata phase alone, so before the
    // connections carried over the download had nobody to get the data from.
    daemon.wait(&id, "seeding", Duration::from_secs(30), |t| {
        t["state"] == "seeding"
    });
    assert_eq!(sha256(&d.join("dl/d.bin")), sha256(&d.join("seed/d.bin")));
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one connection for the metadata and the data"
    );
}

/// A magnet link that names no peer, with no tracker and no DHT: the daemon's only peer is a seed
/// that dials it. That peer joins the metadata phase, which the session used to turn away ("a
/// torrent we do not have") until the torrent ran, so the metadata never came.
#[test]
fn a_peer_that_dials_the_daemon_serves_a_magnet_in_its_metadata_phase() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/d.bin"), data(34, 600_000)).unwrap();
    create_torrent(&d.join("seed/d.bin"), &d.join("t.torrent"), "auto", None);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&d.join("t.torrent"))])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // The daemon's peer port, for the seed to dial.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let state = d.join("state");
    let mut command = Command::new(env!("CARGO_BIN_EXE_spore"));
    command
        .args(["daemon", "--state-dir", s(&state)])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--api", "127.0.0.1:0", "--download-dir", s(&d.join("dl"))])
        .args(["--allowed-dir", s(d)])
        .env("SPORE_LOG", "info");
    let daemon = spawn_daemon(command, &state, &d.join("daemon.err"));
    let added = daemon.ok(
        "POST",
        "/api/torrents",
        Some(serde_json::json!({ "magnet": magnet })),
    );
    let id = added["id"].as_str().unwrap().to_string();
    let peer = format!("127.0.0.1:{port}");
    let (_seed, _) = start_seed(
        d,
        &d.join("t.torrent"),
        &d.join("seed"),
        "127.0.0.2:0",
        &["--no-trackers", "--peer", &peer],
    );
    daemon.wait(&id, "seeding", Duration::from_secs(30), |t| {
        t["state"] == "seeding"
    });
    assert_eq!(sha256(&d.join("dl/d.bin")), sha256(&d.join("seed/d.bin")));
}
