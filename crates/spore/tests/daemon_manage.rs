//! `spore daemon`'s management features beyond the basics: labels through the JSON API and the CLI,
//! the watch directory.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A torrent over some bytes nobody seeds, in `dir/src/name`; its .torrent.
fn unseeded(dir: &Path, name: &str) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let content = src.join(name);
    std::fs::write(&content, data(name.len() as u64 + 11, 50_000)).unwrap();
    let torrent = dir.join(format!("{name}.torrent"));
    create_torrent(&content, &torrent, "32K", None);
    torrent
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn labels_through_the_api_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let one = unseeded(dir.path(), "one.bin");
    let two = unseeded(dir.path(), "two.bin");
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon.err",
        None,
    );

    // `spore add --label`, shown by `spore list`.
    let out = d.cli(&[
        "add",
        s(&one),
        "--label",
        "tv",
        "--label",
        "new show",
        "--json",
    ]);
    let added: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(added["labels"], json!(["tv", "new show"]), "{added}");
    let id = added["id"].as_str().unwrap().to_string();
    let list = stdout(&d.cli(&["list"]));
    assert!(list.contains("labels: tv, new show"), "{list}");

    // The JSON API: given when adding, changed by PUT, checked as Transmission checks them.
    let body = json!({"torrent_base64": data_encoding::BASE64.encode(&std::fs::read(&two).unwrap()),
        "labels": ["films"]});
    let v = d.ok("POST", "/api/torrents", Some(body));
    assert_eq!(v["labels"], json!(["films"]), "{v}");
    let v = d.ok(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"labels": ["kept", "kept", " spaced "]})),
    );
    assert_eq!(v["labels"], json!(["kept", "spaced"]), "{v}");
    for bad in [json!(["a,b"]), json!([""]), json!("tv"), json!([1])] {
        let (status, v) = d.call(
            "PUT",
            &format!("/api/torrents/{id}"),
            Some(json!({"labels": bad})),
        );
        assert_eq!(status, 400, "{bad}: {v}");
    }
    assert_eq!(d.torrent(&id)["labels"], json!(["kept", "spaced"]));
    let (status, _) = d.call(
        "POST",
        "/api/torrents",
        Some(json!({"magnet": format!("magnet:?xt=urn:btih:{}", "ab".repeat(20)), "labels": ["x,y"]})),
    );
    assert_eq!(status, 400, "a bad label refuses the add");
    assert_eq!(
        d.ok("GET", "/api/torrents", None)["torrents"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Kept across a restart.
    let state = d.state.clone();
    drop(d);
    let d = start_daemon(&state, &dir.path().join("dl"), "daemon2.err", None);
    assert_eq!(d.torrent(&id)["labels"], json!(["kept", "spaced"]));
}

/// Waits for `path` to exist.
fn wait_file(path: &Path, d: &Daemon) {
    let deadline = Instant::now() + T;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear; log: {}",
            path.display(),
            std::fs::read_to_string(&d.proc.stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_watch_directory_adds_dropped_torrents() {
    let dir = tempfile::tempdir().unwrap();
    let good = unseeded(dir.path(), "dropped.bin");
    let watch = dir.path().join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon.err",
        None,
    );
    let (status, _) = d.call(
        "PUT",
        "/api/settings",
        Some(json!({"watch_dir": "relative/watch"})),
    );
    assert_eq!(status, 400);
    d.ok("PUT", "/api/settings", Some(json!({"watch_dir": watch})));

    // Dropped as a file manager does it: written elsewhere, moved in.
    let staged = dir.path().join("staged");
    std::fs::copy(&good, &staged).unwrap();
    std::fs::rename(&staged, watch.join("dropped.torrent")).unwrap();
    std::fs::write(watch.join("bad.torrent"), b"d4:infoi3ee").unwrap();
    // Over the 16 MiB cap for a .torrent: not read, marked invalid (sparse, so nothing is written).
    let huge = std::fs::File::create(watch.join("huge.torrent")).unwrap();
    huge.set_len((16 << 20) + 1).unwrap();
    drop(huge);
    std::fs::write(watch.join("notes.txt"), b"not a torrent").unwrap();

    wait_file(&watch.join("dropped.torrent.added"), &d);
    wait_file(&watch.join("bad.torrent.invalid"), &d);
    wait_file(&watch.join("huge.torrent.invalid"), &d);
    assert!(
        watch.join("notes.txt").exists(),
        "other files are left alone"
    );
    let list = d.ok("GET", "/api/torrents", None);
    let names: Vec<&str> = list["torrents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dropped.bin"], "{list}");
    let log = std::fs::read_to_string(&d.proc.stderr).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("bad.torrent") && l.contains("not a valid torrent")),
        "{log}"
    );

    // The same torrent dropped again: a duplicate, renamed too, still one torrent.
    std::fs::copy(&good, &staged).unwrap();
    std::fs::rename(&staged, watch.join("again.torrent")).unwrap();
    wait_file(&watch.join("again.torrent.added"), &d);
    assert_eq!(
        d.ok("GET", "/api/torrents", None)["torrents"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

/// Files of the torrent below `dir/pack` that exist.
fn pack_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("pack"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_move_across_file_systems_copies_verifies_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let Some(holder) = tmpfs_holder(&mnt, "256m", dir.path().join("holder.err")) else {
        return;
    };
    let inside = |p: &Path| in_namespace_of(holder.child.id(), p);
    // Six files of 12 MB: moving them takes long enough to be caught in the middle.
    let src = dir.path().join("src");
    let content = src.join("pack");
    std::fs::create_dir_all(&content).unwrap();
    let names: Vec<String> = (1..=6).map(|i| format!("part{i}.bin")).collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(content.join(name), data(i as u64 + 40, 12 << 20)).unwrap();
    }
    let sums: Vec<Vec<u8>> = names.iter().map(|n| sha256(&content.join(n))).collect();
    let torrent = dir.path().join("pack.torrent");
    create_torrent(&content, &torrent, "256K", None);

    let state = dir.path().join("state");
    let start = |log: &str| {
        let mut command = daemon_command(&state, None);
        command.args(["--download-dir", s(&src), "--allowed-dir", s(dir.path())]);
        spawn_daemon(
            in_mount_namespace_of(holder.child.id(), &command),
            &state,
            &dir.path().join(log),
        )
    };
    let d = start("daemon.err");
    let id = d.ok("POST", "/api/torrents", Some(json!({"path": torrent})))["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.wait(&id, "seeding its own data", T, |t| t["state"] == "seeding");

    // Onto the tmpfs: another file system, so a copy, verified; seen as `moving` with a percentage.
    let on_tmpfs = mnt.join("dst");
    let (api, token, path) = (d.api, d.token.clone(), format!("/api/torrents/{id}"));
    let to = on_tmpfs.clone();
    let mover = std::thread::spawn(move || {
        let auth = format!("Bearer {token}");
        let body = json!({"download_dir": to}).to_string();
        http(
            api,
            "PUT",
            &path,
            &[("Authorization", &auth)],
            body.as_bytes(),
        )
        .0
    });
    let seen = d.wait(&id, "moving", T, |t| {
        t["state"] == "moving" && t["move_progress"].as_f64().is_some()
    });
    assert!(seen["move_progress"].as_f64().unwrap() <= 1.0, "{seen}");
    assert_eq!(mover.join().unwrap(), 200);
    let t = d.wait(&id, "seeding at the new place", T, |t| {
        t["state"] == "seeding"
    });
    assert_eq!(t["download_dir"], s(&on_tmpfs), "{t}");
    assert!(t["move_progress"].is_null(), "{t}");
    for (name, sum) in names.iter().zip(&sums) {
        assert_eq!(
            &sha256(&inside(&on_tmpfs.join("pack").join(name))),
            sum,
            "{name}"
        );
    }
    assert!(pack_files(&src).is_empty(), "the old copies are deleted");

    // Back to the disk, killed with SIGKILL once the second file is being copied.
    let back = dir.path().join("back");
    let (api, token, path) = (d.api, d.token.clone(), format!("/api/torrents/{id}"));
    let to = back.clone();
    let _mover = std::thread::spawn(move || {
        let auth = format!("Bearer {token}");
        let body = json!({"download_dir": to}).to_string();
        // The connection dies with the daemon.
        let _ = std::panic::catch_unwind(|| {
            http(
                api,
                "PUT",
                &path,
                &[("Authorization", &auth)],
                body.as_bytes(),
            )
        });
    });
    let deadline = Instant::now() + T;
    while pack_files(&back).len() < 2 {
        assert!(Instant::now() < deadline, "the move did not begin");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut d = d;
    d.proc.child.kill().unwrap();
    let _ = d.proc.child.wait();
    let at_kill = pack_files(&back);
    drop(d);

    // On restart one whole copy is where the record says, and nothing is left at the other place.
    let d = start("daemon2.err");
    let t = d.wait(&id, "whole again", T, |t| {
        t["state"] == "seeding" || t["state"] == "error"
    });
    assert_eq!(t["state"], "seeding", "{t}; files at the kill: {at_kill:?}");
    let (kept, other) = if t["download_dir"] == s(&back) {
        (back.clone(), inside(&on_tmpfs))
    } else {
        assert_eq!(t["download_dir"], s(&on_tmpfs), "{t}");
        (inside(&on_tmpfs), back.clone())
    };
    for (name, sum) in names.iter().zip(&sums) {
        assert_eq!(&sha256(&kept.join("pack").join(name)), sum, "{name}");
    }
    assert!(
        pack_files(&other).is_empty(),
        "left at {}: {:?}",
        other.display(),
        pack_files(&other)
    );
    let log = std::fs::read_to_string(&d.proc.stderr).unwrap();
    assert!(
        log.contains("interrupted") || log.contains("old copies"),
        "{log}"
    );
    eprintln!(
        "killed with {at_kill:?} at the new place; after the restart the data is in {}",
        kept.display()
    );
}

#[test]
fn a_move_never_takes_over_a_file_of_the_torrents_name_at_the_new_place() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing of it downloaded yet: the old place has no file to move.
    let torrent = unseeded(dir.path(), "mine.bin");
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon.err",
        None,
    );
    let body = json!({"torrent_base64": data_encoding::BASE64.encode(&std::fs::read(&torrent).unwrap()),
        "paused": true});
    let id = d.ok("POST", "/api/torrents", Some(body))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("mine.bin"), b"someone else's file").unwrap();
    let (status, v) = d.call(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"download_dir": elsewhere})),
    );
    assert_eq!(status, 409, "{v}");
    assert_eq!(
        std::fs::read(elsewhere.join("mine.bin")).unwrap(),
        b"someone else's file"
    );
    assert_eq!(d.torrent(&id)["download_dir"], s(&dir.path().join("dl")));
}

#[test]
fn the_config_file_checks_the_new_settings_and_makes_the_watch_dir_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run = |config: &str| {
        let file = dir.path().join("spore.toml");
        std::fs::write(&file, config).unwrap();
        let mut command = daemon_command(&state, None);
        command
            .args([
                "--download-dir",
                s(&dir.path().join("dl")),
                "--config",
                s(&file),
            ])
            .current_dir(dir.path());
        command
    };
    for (bad, why) in [
        ("rpc_username = \"alice\"\n", "go together"),
        ("alt_speed_time_begin = 1440\n", "minutes after midnight"),
        ("alt_speed_time_day = 128\n", "bitmask"),
    ] {
        let out = run(bad).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(why), "{bad}: {err}");
    }
    let d = spawn_daemon(
        run("watch_dir = \"drop\"\nalt_speed_time_day = 65\n"),
        &state,
        &dir.path().join("daemon.err"),
    );
    let settings = d.ok("GET", "/api/settings", None);
    assert_eq!(
        settings["watch_dir"],
        s(&dir.path().join("drop")),
        "{settings}"
    );
    assert_eq!(settings["alt_speed_time_day"], 65);
}
