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
