//! The `spore` binary end to end: create, info, verify, magnet, exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn spore(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run spore")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn create_info_verify_magnet_round() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("album");
    std::fs::create_dir_all(content.join("cd1")).unwrap();
    std::fs::write(content.join("cd1/track.flac"), vec![7u8; 300_000]).unwrap();
    std::fs::write(content.join("cover.jpg"), vec![9u8; 12_345]).unwrap();

    let created = json(&spore(
        &[
            "create",
            "album",
            "-o",
            "album.torrent",
            "--hybrid",
            "-t",
            "http://127.0.0.1:1/announce",
            "-t",
            "udp://127.0.0.1:2",
            "--tier",
            "--piece-length",
            "32K",
            "--comment",
            "hello",
            "--source",
            "SRC",
            "--private",
            "--no-date",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(created["version"], "hybrid");
    assert_eq!(created["piece_length"], 32768);
    assert_eq!(created["total_size"], 312_345);
    assert_eq!(created["private"], true);
    assert_eq!(created["creation_date"], serde_json::Value::Null);
    assert_eq!(
        created["trackers"],
        serde_json::json!([["http://127.0.0.1:1/announce", "udp://127.0.0.1:2"]])
    );

    let info = json(&spore(&["info", "album.torrent", "--json"], dir.path()));
    for key in [
        "info_hash_v1",
        "info_hash_v2",
        "piece_count",
        "files",
        "magnet",
        "comment",
        "source",
    ] {
        assert_eq!(info[key], created[key], "{key}");
    }
    let paths: Vec<&str> = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["pad"] == false)
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["album/cd1/track.flac", "album/cover.jpg"]);

    let human = spore(&["info", "album.torrent"], dir.path());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains(info["info_hash_v1"].as_str().unwrap()));
    assert!(text.contains("album/cover.jpg"));

    let magnet = spore(&["magnet", "album.torrent"], dir.path());
    assert_eq!(
        String::from_utf8_lossy(&magnet.stdout).trim(),
        info["magnet"].as_str().unwrap()
    );

    let ok = spore(&["verify", "album.torrent", "."], dir.path());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let mut track = std::fs::read(content.join("cd1/track.flac")).unwrap();
    track[100_000] ^= 0xff;
    std::fs::write(content.join("cd1/track.flac"), track).unwrap();
    let bad = spore(&["verify", "album.torrent", "album", "--json"], dir.path());
    assert_eq!(bad.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["bad_pieces"], serde_json::json!([3]));
    assert_eq!(report["files"][0]["bad_pieces"], 1);
    assert_eq!(report["files"][1]["ok"], true);
}

#[test]
fn default_output_name_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), b"hello").unwrap();
    let out = spore(&["create", "f.bin"], dir.path());
    assert!(out.status.success());
    assert!(dir.path().join("f.bin.torrent").exists());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("info-hash v1: ") && stdout.contains("magnet:?xt=urn:btih:"));

    for args in [
        &["create", "f.bin", "--piece-length", "1000"][..],
        &["create", "f.bin", "--piece-length", "lots"],
        &["create", "missing-file"],
        &["create", "f.bin", "--v1", "--v2"],
        &["verify", "f.bin.torrent", "nowhere"],
        &["get", "f.bin.torrent", "--seed-time", "300000000000000d"],
        &["bogus"],
    ] {
        let out = spore(args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let missing = spore(&["info", "nope.torrent"], dir.path());
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
