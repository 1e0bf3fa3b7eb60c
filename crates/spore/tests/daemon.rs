//! `spore daemon` end to end on loopback: every API endpoint (and its refusals), the CLI that drives
//! it, fast resume across restarts, and SIGKILL at random moments losing no verified piece.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A torrent over `len` bytes of data in `dir/data/name`, announcing to `tracker`.
fn content(dir: &Path, name: &str, len: usize, tracker: &str, piece: &str) -> (PathBuf, PathBuf) {
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let file = data_dir.join(name);
    std::fs::write(&file, data(len as u64 + 7, len)).unwrap();
    let torrent = dir.join(format!("{name}.torrent"));
    create_torrent(&file, &torrent, piece, Some(tracker));
    (data_dir, torrent)
}

fn seeder(dir: &Path, torrent: &Path, data_dir: &Path, extra: &[&str]) -> Proc {
    let extra = [&["--no-dht"][..], extra].concat();
    start_seed(dir, torrent, data_dir, "127.0.0.1:0", &extra).0
}

#[test]
fn every_api_endpoint_and_its_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (data_dir, torrent) = content(dir.path(), "multi.bin", 3_000_000, &url, "64K");
    let _seed = seeder(dir.path(), &torrent, &data_dir, &[]);
    let dl = dir.path().join("dl");
    let d = start_daemon(&dir.path().join("state"), &dl, "daemon.err", None);

    // Refusals: no token, a wrong one, a foreign Host (DNS rebinding).
    let (status, body) = http(d.api, "GET", "/api/torrents", &[], b"");
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["error"].is_string());
    let (status, _) = http(
        d.api,
        "GET",
        "/api/torrents",
        &[("Authorization", "Bearer 00")],
        b"",
    );
    assert_eq!(status, 401);
    let auth = format!("Bearer {}", d.token);
    let (status, _) = http(
        d.api,
        "GET",
        "/api/torrents",
        &[("Authorization", &auth), ("Host", "evil.example:80")],
        b"",
    );
    assert_eq!(status, 403);
    // The page never carries the token (hostile_api.rs has the login through a one-time link).
    let (status, page) = http(d.api, "GET", "/", &[], b"");
    assert_eq!(status, 200);
    assert!(!String::from_utf8_lossy(&page).contains(&d.token));

    // Bad input: each a clear 4xx with a JSON error.
    let (status, v) = d.call(
        "POST",
        "/api/torrents",
        Some(json!({"magnet": "magnet:?xt=urn:btih:zz"})),
    );
    assert_eq!(status, 400, "{v}");
    let (status, v) = d.call(
        "POST",
        "/api/torrents",
        Some(json!({"torrent_base64": "ZDM6Zm9vZQ=="})),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("torrent"), "{v}");
    let (status, v) = d.call("POST", "/api/torrents", Some(json!({})));
    assert_eq!(status, 400, "{v}");
    // Bad bodies: each a 4xx with a JSON error naming the problem.
    let huge = vec![b'x'; 17 << 20];
    let bad_bodies: [(&str, &[u8], u16, &str); 3] = [
        ("application/x-bittorrent", &huge, 413, "larger"),
        ("application/x-bittorrent", b"d4:infoi3ee", 400, "torrent"),
        ("application/json", b"{\"magnet\": ", 400, "invalid JSON"),
    ];
    for (content_type, body, want_status, want_error) in bad_bodies {
        let (status, bytes) = http(
            d.api,
            "POST",
            "/api/torrents",
            &[("Authorization", &auth), ("Content-Type", content_type)],
            body,
        );
        assert_eq!(status, want_status, "{}", String::from_utf8_lossy(&bytes));
        let v: Value = serde_json::from_slice(&bytes).expect("a JSON error body");
        assert!(v["error"].as_str().unwrap().contains(want_error), "{v}");
    }
    // The event stream needs the token like every other call.
    for path in ["/api/events", "/api/events?token=00"] {
        let (status, bytes) = http(d.api, "GET", path, &[], b"");
        assert_eq!(status, 401, "{path}: {}", String::from_utf8_lossy(&bytes));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["error"].is_string(), "{v}");
    }
    let (status, _) = d.call("GET", "/api/torrents/nothex", None);
    assert_eq!(status, 400);
    let (status, _) = d.call("GET", &format!("/api/torrents/{}", "ab".repeat(20)), None);
    assert_eq!(status, 404);
    let (status, _) = d.call("PUT", "/api/settings", Some(json!({"no_such": 1})));
    assert_eq!(status, 400);

    // Add by upload, paused; a second add is a conflict.
    let bytes = std::fs::read(&torrent).unwrap();
    let (status, body) = http(
        d.api,
        "POST",
        "/api/torrents?paused=true",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-bittorrent"),
        ],
        &bytes,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let added: Value = serde_json::from_slice(&body).unwrap();
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(added["state"], "paused");
    let (status, _) = d.call("POST", "/api/torrents", Some(json!({"path": s(&torrent)})));
    assert_eq!(status, 409);

    // Settings round trip.
    let settings = d.ok(
        "PUT",
        "/api/settings",
        Some(json!({"max_active_downloads": 2, "seed_ratio": 50.0})),
    );
    assert_eq!(settings["max_active_downloads"], 2);
    assert_eq!(d.ok("GET", "/api/settings", None)["seed_ratio"], 50.0);

    // Detail, per-torrent options, then resume and let it finish.
    let detail = d.torrent(&id);
    assert_eq!(detail["files"].as_array().unwrap().len(), 1);
    assert_eq!(detail["trackers"][0]["url"], url.as_str());
    let updated = d.ok(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"max_upload_rate": 1000000, "seed_time": 3600})),
    );
    assert_eq!(d.torrent(&id)["max_upload_rate"], 1000000);
    assert_eq!(updated["id"], id.as_str());
    // A change with one bad field changes nothing, the fields before it included.
    for change in [
        json!({"max_upload_rate": 5, "seed_time": "soon"}),
        json!({"seed_ratio": 1.0, "zzz": 1}),
    ] {
        let (status, v) = d.call("PUT", &format!("/api/torrents/{id}"), Some(change));
        assert_eq!(status, 400, "{v}");
    }
    let detail = d.torrent(&id);
    assert_eq!(detail["max_upload_rate"], 1000000);
    assert_eq!(detail["seed_ratio"], Value::Null);
    let (status, _) = d.call(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"files": [true, false]})),
    );
    assert_eq!(status, 400);
    let (status, _) = d.call(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"priorities": ["urgent"]})),
    );
    assert_eq!(status, 400);
    d.ok(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"priorities": ["high"]})),
    );
    let detail = d.torrent(&id);
    assert_eq!(detail["files"][0]["priority"], "high");
    assert_eq!(detail["state"], "paused", "a paused torrent stays paused");
    d.ok("POST", &format!("/api/torrents/{id}/resume"), None);
    let done = d.wait(&id, "seeding", T, |t| t["state"] == "seeding");
    assert_eq!(done["progress"], 1.0);
    assert_eq!(done["pieces_have"], done["pieces"]);
    assert_eq!(
        sha256(&dl.join("multi.bin")),
        sha256(&data_dir.join("multi.bin"))
    );
    let list = d.ok("GET", "/api/torrents", None);
    assert_eq!(list["torrents"].as_array().unwrap().len(), 1);
    assert!(list["torrents"][0]["downloaded"].as_u64().unwrap() >= 3_000_000);

    // Events: the first is the torrent list, token in the query string.
    let mut stream = TcpStream::connect(d.api).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /api/events?token={} HTTP/1.1\r\nHost: {}\r\n\r\n",
        d.token, d.api
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(&id) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "event stream closed");
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("text/event-stream") && text.contains("event: torrents"),
        "{text}"
    );

    // Metrics are open on a loopback-bound API.
    let (status, metrics) = http(d.api, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("spore_torrents{state=\"seeding\"} 1"),
        "{metrics}"
    );

    // Pause, resume, remove with data.
    assert_eq!(
        d.ok("POST", &format!("/api/torrents/{id}/pause"), None)["state"],
        "paused"
    );
    d.ok("POST", &format!("/api/torrents/{id}/resume"), None);
    d.wait(&id, "seeding again", T, |t| t["state"] == "seeding");
    let removed = d.ok(
        "DELETE",
        &format!("/api/torrents/{id}?delete_data=true"),
        None,
    );
    assert_eq!(removed["removed"], id.as_str());
    assert!(!dl.join("multi.bin").exists());
    assert!(dl.exists(), "only the torrent's own files go");
    assert_eq!(
        d.ok("GET", "/api/torrents", None)["torrents"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // The byte counters keep what the removed torrent moved: a counter never goes down.
    let (_, metrics) = http(d.api, "GET", "/metrics", &[], b"");
    let metrics = String::from_utf8_lossy(&metrics);
    let downloaded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spore_downloaded_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(downloaded >= 3_000_000, "{metrics}");
}

#[test]
fn the_cli_drives_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (data_dir, torrent) = content(dir.path(), "cli.bin", 1_500_000, &url, "32K");
    let _seed = seeder(dir.path(), &torrent, &data_dir, &[]);
    let dl = dir.path().join("dl");
    let d = start_daemon(&dir.path().join("state"), &dl, "daemon.err", None);

    let out = d.cli(&["add", s(&torrent), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = added["id"].as_str().unwrap().to_string();
    d.wait(&id, "seeding", T, |t| t["state"] == "seeding");

    let out = d.cli(&["list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["torrents"][0]["id"], id.as_str());
    let out = d.cli(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("100.0%") && text.contains("cli.bin"),
        "{text}"
    );

    // A unique prefix of the id is enough.
    let out = d.cli(&["pause", &id[..6], "--json"]);
    let paused: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(paused["state"], "paused");
    let out = d.cli(&["resume", &id[..6]]);
    assert!(out.status.success());

    let out = d.cli(&["add", s(&torrent)]);
    assert_eq!(out.status.code(), Some(2), "a duplicate is bad input");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already"));
    let out = d.cli(&["pause", "ffffffff"]);
    assert_eq!(out.status.code(), Some(2));

    let out = d.cli(&["remove", &id]);
    assert!(out.status.success());
    assert!(
        dl.join("cli.bin").exists(),
        "data stays without --delete-data"
    );
    let out = d.cli(&["list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list["torrents"].as_array().unwrap().is_empty());

    // A wrong token is refused.
    let api = d.api.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["list", "--api", &api, "--token", "wrong"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A few pseudo-random fractions, different on every run, so kills land at different moments.
fn random_fractions() -> [f64; 3] {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 1000) as f64 / 1000.0
    };
    [0.1 + 0.2 * next(), 0.4 + 0.15 * next(), 0.65 + 0.2 * next()]
}

#[test]
fn sigkill_at_three_moments_loses_no_verified_piece() {
    const SIZE: usize = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (data_dir, torrent) = content(dir.path(), "big.bin", SIZE, &url, "256K");
    // The seed is a second daemon, so its upload total is there to read; its rate is capped so the
    // download lasts long enough to be killed three times.
    let seed = start_daemon(&dir.path().join("seed-state"), &data_dir, "seed.err", None);
    seed.ok(
        "PUT",
        "/api/settings",
        Some(json!({"max_upload_rate": 64_000_000})),
    );
    let id = seed.ok("POST", "/api/torrents", Some(json!({"path": s(&torrent)})))["id"]
        .as_str()
        .unwrap()
        .to_string();
    seed.wait(&id, "seed ready", T, |t| t["state"] == "seeding");

    let state = dir.path().join("state");
    let dl = dir.path().join("dl");
    let mut d = start_daemon(&state, &dl, "daemon-0.err", None);
    d.ok("POST", "/api/torrents", Some(json!({"path": s(&torrent)})));
    let pieces = d.torrent(&id)["pieces"].as_u64().unwrap();
    for (round, fraction) in random_fractions().into_iter().enumerate() {
        let target = (pieces as f64 * fraction) as u64;
        let before = d.wait(
            &id,
            "progress before the kill",
            Duration::from_secs(120),
            |t| t["pieces_have"].as_u64().unwrap() >= target,
        )["pieces_have"]
            .as_u64()
            .unwrap();
        unsafe {
            libc::kill(d.proc.child.id() as i32, libc::SIGKILL);
        }
        d.proc.wait_exit(T);
        let api = d.api;
        drop(d);
        d = start_daemon(&state, &dl, &format!("daemon-{}.err", round + 1), Some(api));
        let after = d.wait(&id, "restarted", T, |t| {
            t["state"] == "downloading" || t["state"] == "seeding"
        })["pieces_have"]
            .as_u64()
            .unwrap();
        eprintln!("kill {round} at {before}/{pieces} pieces; {after} verified after the restart");
        assert!(
            after >= before,
            "lost verified pieces: {before} before the kill, {after} after"
        );
    }
    d.wait(&id, "complete", Duration::from_secs(120), |t| {
        t["state"] == "seeding"
    });
    assert_eq!(
        sha256(&dl.join("big.bin")),
        sha256(&data_dir.join("big.bin"))
    );

    // Re-downloaded at most what was in flight at each kill (pieces requested, in buffers or sockets).
    let uploaded = seed.torrent(&id)["uploaded"].as_u64().unwrap();
    let extra = uploaded.saturating_sub(SIZE as u64);
    eprintln!("the seed uploaded {uploaded} bytes for {SIZE}: {extra} extra over three kills");
    assert!(extra <= 3 * (24 << 20), "re-downloaded {extra} bytes");

    // A clean restart of the finished torrent trusts its resume data: no rehash.
    d.proc.terminate();
    d.proc.wait_exit(T);
    let api = d.api;
    drop(d);
    let started = Instant::now();
    let d = start_daemon(&state, &dl, "daemon-final.err", Some(api));
    d.wait(&id, "seeding after a clean restart", T, |t| {
        t["state"] == "seeding"
    });
    let restart = started.elapsed();
    d.proc.wait_stderr("(fast resume)", T);
    eprintln!("restart to seeding: {restart:?}");
}

#[test]
fn queueing_seed_goals_and_moving_data() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (data_a, torrent_a) = content(&dir.path().join("a"), "a.bin", 4_000_000, &url, "64K");
    let (data_b, torrent_b) = content(&dir.path().join("b"), "b.bin", 1_000_000, &url, "64K");
    // A slow seed for the first torrent keeps it downloading while the second waits its turn.
    let _seed_a = seeder(
        &dir.path().join("a"),
        &torrent_a,
        &data_a,
        &["--max-up", "1M"],
    );
    let _seed_b = seeder(&dir.path().join("b"), &torrent_b, &data_b, &[]);
    let dl = dir.path().join("dl");
    let d = start_daemon(&dir.path().join("state"), &dl, "daemon.err", None);
    d.ok(
        "PUT",
        "/api/settings",
        Some(json!({"max_active_downloads": 1})),
    );

    let a = d.ok(
        "POST",
        "/api/torrents",
        Some(json!({"path": s(&torrent_a)})),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.wait(&a, "a downloading", T, |t| t["state"] == "downloading");
    let b = d.ok(
        "POST",
        "/api/torrents",
        Some(json!({"path": s(&torrent_b)})),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(d.torrent(&b)["state"], "queued", "one download at a time");
    assert_eq!(d.torrent(&a)["state"], "downloading");
    // A seed goal of ratio 0 is met at once: b stops as finished when it completes.
    d.ok(
        "PUT",
        &format!("/api/torrents/{b}"),
        Some(json!({"seed_ratio": 0.0})),
    );
    d.wait(&a, "a complete", T, |t| t["state"] == "seeding");
    let done = d.wait(&b, "b finished", T, |t| t["state"] == "finished");
    assert_eq!(done["progress"], 1.0);
    assert_eq!(sha256(&dl.join("b.bin")), sha256(&data_b.join("b.bin")));

    // Moving a finished torrent's data keeps it finished, in its new place.
    let moved = dir.path().join("moved");
    let v = d.ok(
        "PUT",
        &format!("/api/torrents/{b}"),
        Some(json!({"download_dir": s(&moved)})),
    );
    assert_eq!(v["state"], "finished");
    assert!(!dl.join("b.bin").exists());
    assert_eq!(sha256(&moved.join("b.bin")), sha256(&data_b.join("b.bin")));
    // Resumed, it checks the data where it now is and seeds.
    d.ok(
        "PUT",
        &format!("/api/torrents/{b}"),
        Some(json!({"seed_ratio": null})),
    );
    d.ok("POST", &format!("/api/torrents/{b}/resume"), None);
    d.wait(&b, "b seeding from its new place", T, |t| {
        t["state"] == "seeding"
    });
}

#[test]
fn a_config_file_sets_the_settings_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        "max_active_downloads = 7\nmax_upload_rate = 5000000\nseed_ratio = 2.5\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let mut command = Command::new(env!("CARGO_BIN_EXE_spore"));
    command.args([
        "daemon",
        "--state-dir",
        s(&state),
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--config",
        s(&config),
    ]);
    let proc = Proc::spawn(command, dir.path().join("daemon.err"));
    let line = proc.wait_for("api listening on http://", T);
    let d = Daemon {
        api: line
            .trim_start_matches("api listening on http://")
            .trim()
            .parse()
            .unwrap(),
        token: std::fs::read_to_string(state.join("api-token"))
            .unwrap()
            .trim()
            .to_string(),
        state: state.clone(),
        proc,
    };
    let settings = d.ok("GET", "/api/settings", None);
    assert_eq!(settings["max_active_downloads"], 7);
    assert_eq!(settings["max_upload_rate"], 5000000);
    assert_eq!(settings["seed_ratio"], 2.5);
    drop(d);

    std::fs::write(&config, "max_active_downloadz = 7\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args([
            "daemon",
            "--state-dir",
            s(&state),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--api", "127.0.0.1:0", "--config", s(&config)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_active_downloadz"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn the_global_peer_limit_holds_across_torrents() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (data_a, torrent_a) = content(&dir.path().join("a"), "a.bin", 2_000_000, &url, "64K");
    let (data_b, torrent_b) = content(&dir.path().join("b"), "b.bin", 1_000_000, &url, "64K");
    let _seed_a = seeder(
        &dir.path().join("a"),
        &torrent_a,
        &data_a,
        &["--max-up", "1M"],
    );
    let _seed_b = seeder(
        &dir.path().join("b"),
        &torrent_b,
        &data_b,
        &["--max-up", "1M"],
    );
    let dl = dir.path().join("dl");
    let d = start_daemon(&dir.path().join("state"), &dl, "daemon.err", None);
    d.ok("PUT", "/api/settings", Some(json!({"max_peers_total": 1})));
    for t in [&torrent_a, &torrent_b] {
        d.ok("POST", "/api/torrents", Some(json!({"path": s(t)})));
    }
    let deadline = Instant::now() + T;
    let mut most = 0;
    loop {
        let list = d.ok("GET", "/api/torrents", None);
        let torrents = list["torrents"].as_array().unwrap();
        let peers: u64 = torrents.iter().map(|t| t["peers"].as_u64().unwrap()).sum();
        most = most.max(peers);
        assert!(peers <= 1, "{peers} connections with a limit of 1: {list}");
        if torrents.iter().all(|t| t["state"] == "seeding") {
            break;
        }
        assert!(Instant::now() < deadline, "not both complete: {list}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(most, 1);
    assert_eq!(sha256(&dl.join("a.bin")), sha256(&data_a.join("a.bin")));
    assert_eq!(sha256(&dl.join("b.bin")), sha256(&data_b.join("b.bin")));
}

#[test]
fn a_magnet_link_added_to_the_daemon_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (data_dir, torrent) = content(dir.path(), "m.bin", 1_200_000, &url, "32K");
    let _seed = seeder(dir.path(), &torrent, &data_dir, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&torrent)])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let state = dir.path().join("state");
    let dl = dir.path().join("dl");
    let mut d = start_daemon(&state, &dl, "daemon.err", None);
    let added = d.ok("POST", "/api/torrents", Some(json!({"magnet": magnet})));
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(
        added["name"], "m.bin",
        "the magnet's dn names it before the metadata arrives"
    );
    d.wait(&id, "seeding", T, |t| t["state"] == "seeding");
    assert_eq!(sha256(&dl.join("m.bin")), sha256(&data_dir.join("m.bin")));
    // The metadata fetched from peers is kept: a restart needs no peer to know the torrent again.
    d.proc.terminate();
    d.proc.wait_exit(T);
    let api = d.api;
    drop(d);
    let d = start_daemon(&state, &dl, "daemon-2.err", Some(api));
    let t = d.wait(&id, "seeding after the restart", T, |t| {
        t["state"] == "seeding"
    });
    assert_eq!(t["pieces_have"], t["pieces"]);
    assert_eq!(d.torrent(&id)["trackers"][0]["url"], url.as_str());
}

/// The record the daemon keeps for a torrent in its state directory.
fn record(state: &Path, id: &str) -> Value {
    let path = state.join("torrents").join(format!("{id}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// Adds `torrent` with `data_dir` as its download directory, so it is checked and then seeds.
fn add_where_its_data_is(d: &Daemon, torrent: &Path, data_dir: &Path) -> String {
    d.ok(
        "POST",
        "/api/torrents",
        Some(json!({"path": s(torrent), "download_dir": s(data_dir)})),
    )["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn seeding_time_adds_up_over_pauses_and_restarts_toward_the_goal() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (data_dir, torrent) = content(dir.path(), "st.bin", 300_000, &url, "32K");
    let state = dir.path().join("state");
    let mut d = start_daemon(&state, &dir.path().join("dl"), "daemon.err", None);
    // Added where its data already is, it seeds once checked.
    let id = add_where_its_data_is(&d, &torrent, &data_dir);
    let seconds = |v: &Value| v["seeding_secs"].as_u64().unwrap();

    // Its clock starts at the first tick seeding (within a second), so 5 s give at least 4.
    d.wait(&id, "seeding", T, |t| t["state"] == "seeding");
    std::thread::sleep(Duration::from_secs(5));
    d.ok("POST", &format!("/api/torrents/{id}/pause"), None);
    let after_pause = seconds(&record(&state, &id));
    assert!(after_pause >= 4, "{after_pause} s saved after a pause");

    d.ok("POST", &format!("/api/torrents/{id}/resume"), None);
    d.wait(&id, "seeding again", T, |t| t["state"] == "seeding");
    std::thread::sleep(Duration::from_secs(5));
    d.proc.terminate();
    d.proc.wait_exit(T);
    let api = d.api;
    drop(d);
    let total = seconds(&record(&state, &id));
    assert!(
        total >= after_pause + 4,
        "{total} s saved at shutdown, {after_pause} s before"
    );

    // A goal already met by earlier sessions ends seeding at once; counted from this session only,
    // it would take `total` seconds more.
    let d = start_daemon(&state, &dir.path().join("dl"), "daemon-2.err", Some(api));
    let started = Instant::now();
    d.ok(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"seed_time": total})),
    );
    d.wait(&id, "finished", T, |t| t["state"] == "finished");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(total - 1),
        "finished {took:?} after the restart, with {total} s seeded before"
    );
    assert!(seconds(&record(&state, &id)) >= total);
}

#[test]
fn a_move_that_fails_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let data_dir = dir.path().join("data");
    let content = data_dir.join("t");
    std::fs::create_dir_all(content.join("d1")).unwrap();
    std::fs::create_dir_all(content.join("d2")).unwrap();
    std::fs::write(content.join("d1/a.bin"), data(1, 200_000)).unwrap();
    std::fs::write(content.join("d2/b.bin"), data(2, 150_000)).unwrap();
    let torrent = dir.path().join("t.torrent");
    spore_ok(&[
        "create",
        s(&content),
        "-t",
        &url,
        "--piece-length",
        "32K",
        "-o",
        s(&torrent),
    ]);
    let sums = |root: &Path| {
        (
            sha256(&root.join("t/d1/a.bin")),
            sha256(&root.join("t/d2/b.bin")),
        )
    };
    let before = sums(&data_dir);
    let state = dir.path().join("state");
    let mut d = start_daemon(&state, &dir.path().join("dl"), "daemon.err", None);
    let id = add_where_its_data_is(&d, &torrent, &data_dir);
    let t = d.wait(&id, "seeding", T, |t| t["state"] == "seeding");
    assert_eq!(t["files"][0]["path"], "t/d1/a.bin", "moved first");
    let unchanged = |d: &Daemon| {
        let t = d.wait(&id, "seeding where it was", T, |t| t["state"] == "seeding");
        assert_eq!(t["download_dir"], s(&data_dir));
        assert_eq!(record(&state, &id)["download_dir"], s(&data_dir));
        assert_eq!(record(&state, &id)["paused"], false);
        assert_eq!(sums(&data_dir), before);
    };

    // A file of the torrent's already in the new place is never overwritten.
    let occupied = dir.path().join("occupied");
    std::fs::create_dir_all(occupied.join("t/d2")).unwrap();
    std::fs::write(occupied.join("t/d2/b.bin"), b"someone else's").unwrap();
    let (status, v) = d.call(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"download_dir": s(&occupied)})),
    );
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("exists"), "{v}");
    assert_eq!(
        std::fs::read(occupied.join("t/d2/b.bin")).unwrap(),
        b"someone else's"
    );
    assert!(!occupied.join("t/d1").exists());
    unchanged(&d);

    // The second file cannot go (a file where its directory should be): the first comes back.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(blocked.join("t")).unwrap();
    std::fs::write(blocked.join("t/d2"), b"in the way").unwrap();
    let (status, v) = d.call(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"download_dir": s(&blocked), "seed_ratio": 9.0})),
    );
    assert_eq!(status, 500, "{v}");
    assert!(v["error"].as_str().unwrap().contains("stays in"), "{v}");
    assert!(
        !blocked.join("t/d1").exists(),
        "the directory it made is gone"
    );
    assert_eq!(d.torrent(&id)["seed_ratio"], Value::Null);
    unchanged(&d);

    // Out of the way, the move goes through.
    std::fs::remove_file(blocked.join("t/d2")).unwrap();
    let v = d.ok(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"download_dir": s(&blocked)})),
    );
    assert_eq!(v["download_dir"], s(&blocked));
    assert_eq!(sums(&blocked), before);
    assert!(!content.exists(), "the old directories are gone");
    d.wait(&id, "seeding from its new place", T, |t| {
        t["state"] == "seeding"
    });

    // Removed, it stays removed across a restart.
    d.ok("DELETE", &format!("/api/torrents/{id}"), None);
    d.proc.terminate();
    d.proc.wait_exit(T);
    let api = d.api;
    drop(d);
    let left: Vec<_> = std::fs::read_dir(state.join("torrents"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let d = start_daemon(&state, &dir.path().join("dl"), "daemon-2.err", Some(api));
    let list = d.ok("GET", "/api/torrents", None);
    assert!(list["torrents"].as_array().unwrap().is_empty(), "{list}");
}

#[test]
fn a_broken_record_is_reported_and_leftover_temporary_files_go() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let torrents = state.join("torrents");
    std::fs::create_dir_all(&torrents).unwrap();
    let broken = "ab".repeat(20);
    std::fs::write(torrents.join(format!("{broken}.json")), b"{\"magnet\": ").unwrap();
    let leftover = torrents.join(format!("{}.json.4242-0.tmp", "cd".repeat(20)));
    std::fs::write(&leftover, b"{\"half\": ").unwrap();
    let d = start_daemon(&state, &dir.path().join("dl"), "daemon.err", None);
    let list = d.ok("GET", "/api/torrents", None);
    assert!(list["torrents"].as_array().unwrap().is_empty(), "{list}");
    let log = std::fs::read_to_string(&d.proc.stderr).unwrap();
    assert!(
        log.contains("WARN") && log.contains(&format!("skipping torrent {broken}")),
        "{log}"
    );
    assert!(!leftover.exists());
    assert!(
        torrents.join(format!("{broken}.json")).exists(),
        "kept for repair"
    );
}

#[test]
fn a_wildcard_api_serves_any_host_but_only_with_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let d = start_daemon(
        &state,
        &dir.path().join("dl"),
        "daemon.err",
        Some("0.0.0.0:0".parse().unwrap()),
    );
    let mode = std::fs::metadata(state.join("api-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let api: SocketAddr = format!("127.0.0.1:{}", d.api.port()).parse().unwrap();
    let host = [("Host", "nas.example:9091")];
    let (status, _) = http(api, "GET", "/api/torrents", &host, b"");
    assert_eq!(status, 401);
    let (status, _) = http(api, "GET", "/metrics", &host, b"");
    assert_eq!(status, 401, "metrics need the token off loopback");
    let auth = format!("Bearer {}", d.token);
    let (status, body) = http(
        api,
        "GET",
        "/api/torrents",
        &[host[0], ("Authorization", &auth)],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, page) = http(api, "GET", "/", &host, b"");
    assert_eq!(status, 200);
    assert!(
        !String::from_utf8_lossy(&page).contains(&d.token),
        "the page under a foreign name carries no token"
    );
}

/// The pieces a torrent's saved resume data lists as verified.
fn resume_pieces(state: &Path, id: &str) -> u32 {
    let path = state.join("torrents").join(format!("{id}.resume"));
    let resume: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let have = data_encoding::BASE64
        .decode(resume["have"].as_str().unwrap().as_bytes())
        .unwrap();
    have.iter().map(|b| b.count_ones()).sum()
}

#[test]
fn a_full_disk_stops_the_torrent_with_an_error_and_resume_finishes_it() {
    const SIZE: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (data_dir, torrent) = content(dir.path(), "full.bin", SIZE, &url, "256K");
    let _seed = seeder(dir.path(), &torrent, &data_dir, &[]);
    let state = dir.path().join("state");
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    // 12 MiB of tmpfs, 7 MiB of it taken by another file: room for about 5 MiB of the 8.
    let mut command = daemon_command(&state, None);
    command.args(["--download-dir", s(&mnt)]);
    let Some(command) = in_private_tmpfs(&mnt, "12m", &command) else {
        return;
    };
    let d = spawn_daemon(command, &state, &dir.path().join("daemon.err"));
    let pid = d.proc.child.id();
    let filler = in_namespace_of(pid, &mnt.join("filler"));
    std::fs::write(&filler, vec![1u8; 7 << 20]).unwrap();

    let id = d.ok("POST", "/api/torrents", Some(json!({"path": s(&torrent)})))["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Before the fix it stays `downloading` for ever, fetching the same pieces again.
    let t = d.wait(&id, "error state", T, |t| t["state"] == "error");
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("full.bin: No space left on device"),
        "{error}"
    );
    let have = t["pieces_have"].as_u64().unwrap() as u32;
    assert!(have > 0 && have < 32, "{t}");
    // It stays stopped: no more pieces fetched, no error flood in the log.
    std::thread::sleep(Duration::from_secs(2));
    let later = d.torrent(&id);
    assert_eq!(later["state"], "error");
    assert_eq!(later["pieces_have"].as_u64().unwrap() as u32, have);
    let log = std::fs::read_to_string(&d.proc.stderr).unwrap();
    assert!(
        log.matches("No space left").count() <= 2,
        "the error is logged once: {log}"
    );
    // The reason shows in `spore list`, and the verified pieces are in the resume data.
    let list = d.cli(&["list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("error") && listed.contains("No space left on device"),
        "{listed}"
    );
    assert_eq!(resume_pieces(&state, &id), have);

    // Room again, and `spore resume`: the error clears, the kept pieces are not fetched again, and the
    // download completes.
    std::fs::remove_file(&filler).unwrap();
    let out = d.cli(&["resume", &id]);
    assert!(out.status.success(), "{out:?}");
    let t = d.wait(&id, "restarted", T, |t| {
        t["state"] == "downloading" || t["state"] == "seeding"
    });
    assert!(t["error"].is_null(), "{t}");
    assert!(t["pieces_have"].as_u64().unwrap() as u32 >= have, "{t}");
    d.wait(&id, "complete", T, |t| t["state"] == "seeding");
    d.proc.wait_stderr("(fast resume)", T);
    assert_eq!(
        sha256(&in_namespace_of(pid, &mnt.join("full.bin"))),
        sha256(&data_dir.join("full.bin"))
    );
}

#[test]
fn delete_data_never_follows_a_link_out_of_the_torrent_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let data_dir = dir.path().join("data");
    let content_dir = data_dir.join("t");
    std::fs::create_dir_all(content_dir.join("sub")).unwrap();
    std::fs::write(content_dir.join("a.bin"), data(1, 100_000)).unwrap();
    std::fs::write(content_dir.join("sub/b.bin"), data(2, 100_000)).unwrap();
    std::fs::write(content_dir.join("c.bin"), data(3, 100_000)).unwrap();
    let torrent = dir.path().join("t.torrent");
    create_torrent(&content_dir, &torrent, "32K", Some(&url));
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon.err",
        None,
    );
    let id = add_where_its_data_is(&d, &torrent, &data_dir);
    d.wait(&id, "seeding", T, |t| t["state"] == "seeding");

    // Files of the same names outside, reached through links where the torrent's directory and file
    // are.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("b.bin"), b"precious b").unwrap();
    std::fs::write(outside.join("c.bin"), b"precious c").unwrap();
    std::fs::remove_dir_all(content_dir.join("sub")).unwrap();
    symlink(&outside, content_dir.join("sub")).unwrap();
    std::fs::remove_file(content_dir.join("c.bin")).unwrap();
    symlink(outside.join("c.bin"), content_dir.join("c.bin")).unwrap();

    d.ok(
        "DELETE",
        &format!("/api/torrents/{id}?delete_data=true"),
        None,
    );
    assert_eq!(std::fs::read(outside.join("b.bin")).unwrap(), b"precious b");
    assert_eq!(std::fs::read(outside.join("c.bin")).unwrap(), b"precious c");
    // The torrent's own file and the links themselves are gone, and so is its directory.
    assert!(
        !content_dir.exists() && content_dir.symlink_metadata().is_err(),
        "{:?}",
        std::fs::read_dir(&content_dir).map(|r| r.count())
    );
}
