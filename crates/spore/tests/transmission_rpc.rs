//! The Transmission RPC of `spore daemon` driven by real clients: `transmission-remote` (Debian
//! transmission-cli) and the Python `transmission-rpc` library (pinned in transmission_rpc/
//! requirements.txt), plus its refusals. With CI=true a missing client fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const RPC: &str = "/transmission/rpc";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether `program` runs; without it the test is skipped, or fails under CI.
fn have(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(!ci(), "{program} is required when CI=true");
        eprintln!("skipped: {program} is not available");
    }
    ok
}

/// Basic auth with the API token as password, as transmission-remote's `-n user:TOKEN` sends it.
fn basic(token: &str) -> String {
    format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("anyone:{token}").as_bytes())
    )
}

/// The session id from a 409's headers.
fn session_id(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-transmission-session-id")
            .then(|| v.trim().to_string())
    })
}

/// One RPC call with the token and the session id (fetched by the 409 handshake); the reply.
fn rpc(d: &Daemon, body: &Value) -> Value {
    let auth = basic(&d.token);
    let (status, head, _) = http_full(d.api, "POST", RPC, &[("Authorization", &auth)], b"");
    assert_eq!(status, 409);
    let sid = session_id(&head).expect("session id header");
    let (status, bytes) = http(
        d.api,
        "POST",
        RPC,
        &[
            ("Authorization", &auth),
            ("X-Transmission-Session-Id", &sid),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn rpc_refusals_handshake_and_session_get() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon.err",
        None,
    );
    let session_get = json!({"method": "session-get", "tag": 7}).to_string();

    // No credentials, or a wrong password: 401, asking for basic auth.
    let (status, head, _) = http_full(d.api, "POST", RPC, &[], session_get.as_bytes());
    assert_eq!(status, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{head}"
    );
    let wrong = basic("not-the-token");
    let (status, _) = http(d.api, "POST", RPC, &[("Authorization", &wrong)], b"{}");
    assert_eq!(status, 401);

    // Credentials but no session id: 409 with the id to use; a wrong one gets the same.
    let auth = basic(&d.token);
    let (status, head, _) = http_full(
        d.api,
        "POST",
        RPC,
        &[("Authorization", &auth)],
        session_get.as_bytes(),
    );
    assert_eq!(status, 409, "{head}");
    let sid = session_id(&head).expect("409 carries X-Transmission-Session-Id");
    assert!(sid.len() >= 32, "{sid}");
    let (status, head, _) = http_full(
        d.api,
        "POST",
        RPC,
        &[
            ("Authorization", &auth),
            ("X-Transmission-Session-Id", "0000"),
        ],
        session_get.as_bytes(),
    );
    assert_eq!(status, 409);
    assert_eq!(session_id(&head).as_deref(), Some(sid.as_str()));

    // The foreign-Host check of the API applies here too (DNS rebinding).
    let (status, _) = http(
        d.api,
        "POST",
        RPC,
        &[
            ("Authorization", &auth),
            ("X-Transmission-Session-Id", &sid),
            ("Host", "evil.example:9091"),
        ],
        session_get.as_bytes(),
    );
    assert_eq!(status, 403);

    // With both: session-get, its tag echoed.
    let call = |headers: &[(&str, &str)], body: &[u8]| {
        let mut h = vec![("X-Transmission-Session-Id", sid.as_str())];
        h.extend_from_slice(headers);
        let (status, bytes) = http(d.api, "POST", RPC, &h, body);
        (
            status,
            serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
        )
    };
    let (status, v) = call(&[("Authorization", &auth)], session_get.as_bytes());
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "success");
    assert_eq!(v["tag"], 7);
    assert_eq!(v["arguments"]["rpc-version"], 17);
    assert_eq!(v["arguments"]["rpc-version-minimum"], 14);
    assert_eq!(v["arguments"]["version"], "4.0.6 (spore 0.1.0)");
    assert_eq!(v["arguments"]["session-id"], sid.as_str());
    assert_eq!(
        v["arguments"]["download-dir"],
        dir.path().join("dl").to_str().unwrap()
    );
    // The token as the rest of the API takes it works as well.
    let bearer = format!("Bearer {}", d.token);
    let (status, v) = call(&[("Authorization", &bearer)], session_get.as_bytes());
    assert_eq!((status, v["result"].as_str()), (200, Some("success")));
    // The web page's session is no RPC credential, as a header or as a cookie (which a browser would
    // send to any port of this host).
    let link = d.start_link();
    let (status, v) = d.sign_in(&link);
    assert_eq!(status, 200, "{v}");
    let session = v["token"].as_str().unwrap();
    let own = format!("http://{}", d.api);
    let as_bearer = format!("Bearer {session}");
    let as_cookie = format!("spore_session={session}");
    for headers in [
        [
            ("Authorization", as_bearer.as_str()),
            ("Origin", own.as_str()),
        ],
        [("Cookie", as_cookie.as_str()), ("Origin", own.as_str())],
    ] {
        let (status, _) = call(&headers, session_get.as_bytes());
        assert_eq!(status, 401, "{headers:?}");
    }
    // Only the fields asked for.
    let (_, v) = call(
        &[("Authorization", &auth)],
        json!({"method": "session-get", "arguments": {"fields": ["version"]}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(v["arguments"], json!({"version": "4.0.6 (spore 0.1.0)"}));

    // Bad methods and arguments: an error `result`, never a crash or a 500.
    for (body, result) in [
        (json!({"method": "no-such-method"}).to_string(), "method name not recognized"),
        (json!({"arguments": {}}).to_string(), "no method name"),
        ("{\"method\": ".to_string(), "invalid JSON"),
        (json!({"method": "torrent-get", "arguments": []}).to_string(), "arguments must be an object"),
        (json!({"method": "torrent-get", "arguments": {}}).to_string(), "fields"),
        (json!({"method": "torrent-get", "arguments": {"fields": ["id"], "ids": {}}}).to_string(), "ids"),
        (json!({"method": "torrent-get", "arguments": {"fields": ["id"], "ids": ["xyz"]}}).to_string(), "ids"),
        (json!({"method": "torrent-add", "arguments": {}}).to_string(), "filename or metainfo"),
        (json!({"method": "torrent-add", "arguments": {"metainfo": "!!!"}}).to_string(), "invalid or corrupt torrent file"),
        (json!({"method": "torrent-add", "arguments": {"filename": 5}}).to_string(), "filename: expected a string"),
        (json!({"method": "torrent-remove", "arguments": {"delete-local-data": "yes"}}).to_string(), "delete-local-data"),
        (json!({"method": "torrent-set-location", "arguments": {}}).to_string(), "location"),
        (json!({"method": "session-set", "arguments": {"speed-limit-down": -5, "speed-limit-down-enabled": true}}).to_string(), "speed-limit-down"),
        (json!({"method": "port-test"}).to_string(), "cannot test"),
        (json!({"method": "free-space", "arguments": {"path": "/"}}).to_string(), "outside"),
    ] {
        let (status, v) = call(&[("Authorization", &auth)], body.as_bytes());
        assert_eq!(status, 200, "{body}: {v}");
        let got = v["result"].as_str().unwrap_or_default();
        assert!(got != "success" && got.contains(result), "{body}: {v}");
    }
    // Every method with arguments of the wrong kind, against a torrent that is there: each gets a
    // 200 with a `result`, and the daemon keeps answering.
    let content = dir.path().join("junk.bin");
    std::fs::write(&content, data(5, 100_000)).unwrap();
    let torrent = dir.path().join("junk.torrent");
    create_torrent(&content, &torrent, "32K", None);
    let (_, v) = call(
        &[("Authorization", &auth)],
        json!({"method": "torrent-add", "arguments": {"filename": s(&torrent), "paused": true}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(v["result"], "success", "{v}");
    let methods = [
        "session-get",
        "session-set",
        "session-stats",
        "torrent-get",
        "torrent-add",
        "torrent-start",
        "torrent-start-now",
        "torrent-stop",
        "torrent-verify",
        "torrent-reannounce",
        "torrent-set",
        "torrent-set-location",
        "torrent-rename-path",
        "free-space",
        "port-test",
        "queue-move-top",
        "queue-move-up",
        "queue-move-down",
        "queue-move-bottom",
        "blocklist-update",
        "group-get",
        "group-set",
    ];
    let junk = [
        json!({"ids": "x"}),
        json!({"ids": [-1, 1.5, null, {}]}),
        json!({"ids": [1], "fields": 5}),
        json!({"ids": [1], "fields": [1, 2]}),
        json!({"ids": 1, "location": 5}),
        json!({"ids": 1, "location": "relative/dir", "move": true}),
        json!({"ids": 1, "labels": "x"}),
        json!({"ids": 1, "labels": ["a,b"]}),
        json!({"ids": 1, "files-wanted": "a"}),
        json!({"ids": 1, "priority-high": [99999999999u64]}),
        json!({"ids": 1, "seedRatioMode": 9}),
        json!({"ids": 1, "uploadLimit": -1}),
        json!({"ids": 1, "uploadLimit": u64::MAX, "uploadLimited": true,
            "speed-limit-down": u64::MAX, "speed-limit-down-enabled": true}),
        json!({"path": "relative", "download-dir": 7}),
        json!({"filename": "/nonexistent/x.torrent"}),
        json!({"metainfo": "bm90IGEgdG9ycmVudA=="}),
        json!({"peer-limit-global": "many", "seedRatioLimit": "x", "seedRatioLimited": 3}),
    ];
    for method in methods {
        for args in &junk {
            let body = json!({"method": method, "arguments": args}).to_string();
            let (status, v) = call(&[("Authorization", &auth)], body.as_bytes());
            assert_eq!(status, 200, "{body}: {v}");
            assert!(v["result"].is_string(), "{body}: {v}");
        }
    }
    let (_, v) = call(
        &[("Authorization", &auth)],
        json!({"method": "torrent-get", "arguments": {"fields": ["name"]}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(v["arguments"]["torrents"][0]["name"], "junk.bin", "{v}");
    // An unknown session-set key is ignored, as Transmission does.
    let (_, v) = call(
        &[("Authorization", &auth)],
        json!({"method": "session-set", "arguments": {"no-such-setting": 1}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(v["result"], "success", "{v}");

    // A body beyond the cap is refused before it is read whole.
    let huge = vec![b' '; 32 << 20];
    let (status, _) = http(
        d.api,
        "POST",
        RPC,
        &[
            ("Authorization", &auth),
            ("X-Transmission-Session-Id", &sid),
        ],
        &huge,
    );
    assert_eq!(status, 413);

    // The 4.1 dialect: JSON-RPC 2.0 with snake_case names.
    let (_, v) = call(
        &[("Authorization", &auth)],
        json!({"jsonrpc": "2.0", "method": "session_get", "params": {"fields": ["rpc_version", "download_dir"]}, "id": 3})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(v["id"], 3, "{v}");
    assert_eq!(v["result"]["rpc_version"], 17, "{v}");
    assert!(v["result"]["download_dir"].is_string(), "{v}");
    let (_, v) = call(
        &[("Authorization", &auth)],
        json!({"jsonrpc": "2.0", "method": "nope", "id": 4})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(v["error"]["code"], -32601, "{v}");
    // A notification (no id) gets no body.
    let (status, _) = http(
        d.api,
        "POST",
        RPC,
        &[
            ("Authorization", &auth),
            ("X-Transmission-Session-Id", &sid),
        ],
        json!({"jsonrpc": "2.0", "method": "session_get"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 204);
    // A batch: replies in order, the notification's left out.
    let (_, v) = call(
        &[("Authorization", &auth)],
        json!([
            {"jsonrpc": "2.0", "method": "session_get", "params": {"fields": ["version"]}, "id": 1},
            {"jsonrpc": "2.0", "method": "session_stats"},
            {"jsonrpc": "2.0", "method": "torrent_get", "params": {"fields": ["id"]}, "id": 2},
        ])
        .to_string()
        .as_bytes(),
    );
    assert_eq!(v[0]["id"], 1, "{v}");
    assert_eq!(v[0]["result"]["version"], "4.0.6 (spore 0.1.0)", "{v}");
    assert_eq!(v[1]["id"], 2, "{v}");
    assert!(v[1]["result"]["torrents"].is_array(), "{v}");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    let _ = rpc(&d, &json!({"method": "session-stats"}));
}

/// A torrent over `files` (name, length) in `dir/name/` (one file: `dir/name` itself), announcing
/// to `tracker`, seeded by a `spore seed`; (seed, data directory, .torrent).
fn seeded(
    dir: &Path,
    name: &str,
    files: &[(&str, usize)],
    tracker: &str,
) -> (Proc, PathBuf, PathBuf) {
    let data_dir = dir.join(format!("{name}-seed"));
    let content = data_dir.join(name);
    if let [(file, len)] = files {
        assert_eq!(*file, name);
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::write(&content, data(*len as u64, *len)).unwrap();
    } else {
        std::fs::create_dir_all(&content).unwrap();
        for (file, len) in files {
            std::fs::write(content.join(file), data(*len as u64 + 3, *len)).unwrap();
        }
    }
    let torrent = dir.join(format!("{name}.torrent"));
    create_torrent(&content, &torrent, "32K", Some(tracker));
    let (seed, _) = start_seed(dir, &torrent, &data_dir, "127.0.0.1:0", &["--no-dht"]);
    (seed, data_dir, torrent)
}

/// `transmission-remote ADDR -n user:TOKEN ARGS`; its stdout, which it must end successfully.
fn remote(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new("transmission-remote")
        .arg(d.api.to_string())
        .args(["-n", &format!("someone:{}", d.token)])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "transmission-remote {args:?}: {}{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `transmission-remote -l` until `done` accepts its output.
fn wait_list(d: &Daemon, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + T;
    loop {
        let list = remote(d, &["-l"]);
        if done(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; last list:\n{list}\nlog: {}",
            std::fs::read_to_string(&d.proc.stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `-l` line of torrent `id`.
fn line(list: &str, id: u64) -> Option<&str> {
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
}

fn status(d: &Daemon, id: u64) -> Value {
    let v = rpc(
        d,
        &json!({"method": "torrent-get", "arguments": {"ids": [id], "fields": ["status", "percentDone"]}}),
    );
    v["arguments"]["torrents"][0].clone()
}

#[test]
fn transmission_remote_drives_the_daemon() {
    if !have("transmission-remote", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (_seed1, data1, torrent1) = seeded(dir.path(), "one.bin", &[("one.bin", 700_000)], &url);
    let (_seed2, data2, torrent2) = seeded(
        dir.path(),
        "pack",
        &[("a.bin", 300_000), ("b.bin", 90_000)],
        &url,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["magnet", s(&torrent2)])
        .output()
        .unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let dl = dir.path().join("dl");
    let d = start_daemon(&dir.path().join("state"), &dl, "daemon.err", None);

    // Add a .torrent file and a magnet link; both reach 100 %.
    assert!(remote(&d, &["-a", s(&torrent1)]).contains("success"));
    assert!(remote(&d, &["-a", &magnet]).contains("success"));
    let list = wait_list(&d, "both at 100 %", |l| {
        [1, 2]
            .iter()
            .all(|id| line(l, *id).is_some_and(|l| l.contains("100%")))
    });
    assert!(line(&list, 1).unwrap().ends_with("one.bin"), "{list}");
    assert!(line(&list, 2).unwrap().ends_with("pack"), "{list}");
    assert_eq!(sha256(&dl.join("one.bin")), sha256(&data1.join("one.bin")));
    assert_eq!(
        sha256(&dl.join("pack/b.bin")),
        sha256(&data2.join("pack/b.bin"))
    );

    // Info.
    let info = remote(&d, &["-t", "1", "-i"]);
    for want in [
        "Name: one.bin",
        "Percent Done: 100%",
        &format!("Location: {}", dl.display()),
        "Total size: 700.0 kB",
    ] {
        assert!(info.contains(want), "{want:?} not in:\n{info}");
    }
    let hash = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Hash: "))
        .expect("a hash line")
        .to_string();
    assert_eq!(hash.len(), 40);
    // The hash names the same torrent as its number.
    assert!(remote(&d, &["-t", &hash, "-i"]).contains("Name: one.bin"));

    // Verify: checked again, whole.
    assert!(remote(&d, &["-t", "1", "-v"]).contains("success"));
    let deadline = Instant::now() + T;
    while status(&d, 1) != json!({"status": 6, "percentDone": 1.0}) {
        assert!(
            Instant::now() < deadline,
            "not seeding after the check: {}",
            status(&d, 1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Stop, then start again.
    remote(&d, &["-t", "1", "-S"]);
    assert_eq!(status(&d, 1)["status"], 0);
    wait_list(&d, "stopped", |l| {
        line(l, 1).is_some_and(|l| l.contains("Stopped"))
    });
    remote(&d, &["-t", "1", "-s"]);
    let deadline = Instant::now() + T;
    while status(&d, 1)["status"] != 6 {
        assert!(
            Instant::now() < deadline,
            "not seeding again: {}",
            status(&d, 1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Files of the magnet's torrent.
    let files = remote(&d, &["-t", "2", "-f"]);
    assert!(files.contains("pack (2 files)"), "{files}");
    for name in ["pack/a.bin", "pack/b.bin"] {
        let row = files
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not in:\n{files}"));
        assert!(row.contains("100%") && row.contains("Yes"), "{row}");
    }

    // Move: the data is whole at the new place, gone from the old, and the torrent seeds there.
    let moved = dir.path().join("moved");
    remote(&d, &["-t", "1", "--move", s(&moved)]);
    assert_eq!(
        sha256(&moved.join("one.bin")),
        sha256(&data1.join("one.bin"))
    );
    assert!(!dl.join("one.bin").exists());
    assert!(remote(&d, &["-t", "1", "-i"]).contains(&format!("Location: {}", moved.display())));
    let deadline = Instant::now() + T;
    while status(&d, 1)["status"] != 6 {
        assert!(
            Instant::now() < deadline,
            "not seeding after the move: {}",
            status(&d, 1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Remove with the data; the other stays, data and all.
    remote(&d, &["-t", "1", "--remove-and-delete"]);
    let list = remote(&d, &["-l"]);
    assert!(
        line(&list, 1).is_none() && line(&list, 2).is_some(),
        "{list}"
    );
    assert!(!moved.join("one.bin").exists());
    remote(&d, &["-t", "2", "--remove-and-delete"]);
    assert!(!dl.join("pack").exists());
    let list = remote(&d, &["-l"]);
    assert!(line(&list, 2).is_none(), "{list}");
}

#[test]
fn the_python_transmission_rpc_library_drives_the_daemon() {
    if !have("python3", &["-c", "import transmission_rpc"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (_seed, data_dir, torrent) = seeded(
        dir.path(),
        "show",
        &[("e1.mkv", 400_000), ("e2.mkv", 250_000)],
        &url,
    );
    let dl = dir.path().join("dl");
    let d = start_daemon(&dir.path().join("state"), &dl, "daemon.err", None);
    let moved = dir.path().join("library");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transmission_rpc/client.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args([&d.api.port().to_string(), &d.token, s(&torrent), s(&moved)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: killed if it hangs.
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("client.py did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.success(),
        "client.py: {status}\n{stdout}\n{}\nlog: {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&d.proc.stderr).unwrap_or_default()
    );
    let steps: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no step {name} in {stdout}"))
            .clone()
    };
    let session = step("session");
    assert_eq!(session["version"], "4.0.6 (spore 0.1.0)");
    assert_eq!(session["rpc_version"], 17);
    assert_eq!(step("added")["name"], "show");
    let done = step("done");
    assert_eq!(done["missing"], json!([]), "{done}");
    let f = &done["fields"];
    assert_eq!(f["totalSize"], 650_000);
    assert_eq!(f["sizeWhenDone"], 650_000);
    assert_eq!(f["leftUntilDone"], 0);
    assert_eq!(f["downloadDir"], s(&dl));
    assert_eq!(f["error"], 0);
    assert_eq!(f["labels"], json!(["first"]));
    assert_eq!(f["wanted"], json!([1, 1]));
    assert_eq!(f["priorities"], json!([0, 0]));
    assert_eq!(f["trackers"][0]["announce"], url.as_str());
    assert!(f["magnetLink"]
        .as_str()
        .unwrap()
        .starts_with("magnet:?xt=urn:btih:"));
    assert!(f["addedDate"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(
        done["files"],
        json!([
            {"name": "show/e1.mkv", "size": 400_000, "completed": 400_000, "selected": true, "priority": 0},
            {"name": "show/e2.mkv", "size": 250_000, "completed": 250_000, "selected": true, "priority": 0},
        ])
    );
    assert_eq!(step("labels")["labels"], json!(["tv", "hd"]));
    let queue = step("queue");
    assert_eq!(queue["position"], 0, "{queue}");
    assert_eq!(
        queue["trackers"].as_array().and_then(|t| t.last()),
        Some(&json!("http://127.0.0.1:9/announce")),
        "{queue}"
    );
    assert!(queue["done_date"].as_u64() > Some(0), "{queue}");
    assert_eq!(step("stats")["torrents"], 1);
    assert_eq!(step("moved")["download_dir"], s(&moved));
    let renamed = step("renamed");
    assert_eq!(
        renamed["answers"],
        json!([["show/e2.mkv", "e2-renamed.mkv"], ["show", "Show"]]),
        "{renamed}"
    );
    assert_eq!(renamed["name"], "Show", "{renamed}");
    assert_eq!(
        renamed["files"],
        json!(["Show/e1.mkv", "Show/e2-renamed.mkv"]),
        "{renamed}"
    );
    assert_eq!(step("removed")["left"], json!([]));
    assert!(!moved.join("Show").exists());
    // Moved whole, then deleted with the torrent; the seed's copy is what it was.
    assert!(!moved.join("show").exists());
    assert!(!dl.join("show").exists());
    assert!(data_dir.join("show/e1.mkv").exists());
}

/// Polls torrent `id`'s `fields` until `done` accepts them.
fn wait_torrent(
    d: &Daemon,
    id: u64,
    fields: &[&str],
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let v = rpc(
            d,
            &json!({"method": "torrent-get", "arguments": {"ids": id, "fields": fields}}),
        );
        let t = v["arguments"]["torrents"][0].clone();
        if done(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; last {t}; log: {}",
            std::fs::read_to_string(&d.proc.stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rpc_methods_beyond_the_clients_tests() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (_seed, data_dir, torrent) = seeded(
        dir.path(),
        "set",
        &[("x.bin", 200_000), ("y.bin", 150_000)],
        &url,
    );
    let dl = dir.path().join("dl");
    let d = start_daemon(&dir.path().join("state"), &dl, "daemon.err", None);
    let metainfo = data_encoding::BASE64.encode(&std::fs::read(&torrent).unwrap());

    // Added with only the second file wanted, high priority; the first is never written.
    let v = rpc(
        &d,
        &json!({"method": "torrent-add", "arguments": {
            "metainfo": metainfo, "files-unwanted": [0], "priority-high": [1], "labels": ["x"]}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    let added = &v["arguments"]["torrent-added"];
    assert_eq!(
        (added["id"].as_u64(), added["name"].as_str()),
        (Some(1), Some("set")),
        "{v}"
    );
    let hash = added["hashString"].as_str().unwrap().to_string();
    let t = wait_torrent(
        &d,
        1,
        &[
            "percentDone",
            "wanted",
            "priorities",
            "sizeWhenDone",
            "labels",
        ],
        "the wanted file",
        |t| t["percentDone"] == 1.0,
    );
    assert_eq!(t["wanted"], json!([0, 1]), "{t}");
    assert_eq!(t["priorities"], json!([0, 1]), "{t}");
    assert_eq!(t["sizeWhenDone"], 150_000);
    assert_eq!(t["labels"], json!(["x"]));
    // At most the piece it shares with y.bin was written.
    let x_len =
        std::fs::read(dl.join("set/x.bin")).map_or(0, |b| b.iter().filter(|b| **b != 0).count());
    assert!(
        x_len <= 32 * 1024,
        "{x_len} bytes of the unwanted file were written"
    );
    // Adding it again: the duplicate, still a success.
    let v = rpc(
        &d,
        &json!({"method": "torrent-add", "arguments": {"filename": s(&torrent)}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    assert_eq!(
        v["arguments"]["torrent-duplicate"]["hashString"],
        hash.as_str()
    );

    // Now every file: the first one comes too.
    let v = rpc(
        &d,
        &json!({"method": "torrent-set", "arguments": {"ids": [hash], "files-wanted": []}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    wait_torrent(&d, 1, &["percentDone", "sizeWhenDone"], "both files", |t| {
        t["percentDone"] == 1.0 && t["sizeWhenDone"] == 350_000
    });
    assert_eq!(
        sha256(&dl.join("set/x.bin")),
        sha256(&data_dir.join("set/x.bin"))
    );
    let v = rpc(
        &d,
        &json!({"method": "torrent-set", "arguments": {"ids": 1, "files-wanted": [7]}}),
    );
    assert!(
        v["result"].as_str().unwrap().contains("out of range"),
        "{v}"
    );

    // Limits and the seed ratio, read back.
    let v = rpc(
        &d,
        &json!({"method": "torrent-set", "arguments": {
        "ids": 1, "uploadLimit": 50, "uploadLimited": true, "seedRatioLimit": 4.5, "seedRatioMode": 1}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    let t = wait_torrent(
        &d,
        1,
        &[
            "uploadLimit",
            "uploadLimited",
            "seedRatioLimit",
            "seedRatioMode",
            "downloadLimited",
        ],
        "limits",
        |_| true,
    );
    assert_eq!(
        t,
        json!({"uploadLimit": 50, "uploadLimited": true, "seedRatioLimit": 4.5, "seedRatioMode": 1, "downloadLimited": false})
    );

    // The table format: a row of keys, then a row per torrent.
    let v = rpc(
        &d,
        &json!({"method": "torrent-get", "arguments": {"format": "table", "fields": ["id", "name", "no-such-field"]}}),
    );
    assert_eq!(
        v["arguments"]["torrents"],
        json!([["id", "name"], [1, "set"]]),
        "{v}"
    );
    // JSON-RPC 2.0, snake_case.
    let v = rpc(
        &d,
        &json!({"jsonrpc": "2.0", "id": "a", "method": "torrent_get",
        "params": {"ids": [1], "fields": ["hash_string", "percent_done", "file_stats"]}}),
    );
    let t = &v["result"]["torrents"][0];
    assert_eq!(t["hash_string"], hash.as_str(), "{v}");
    assert_eq!(t["file_stats"][1]["bytes_completed"], 150_000, "{v}");
    let v = rpc(
        &d,
        &json!({"jsonrpc": "2.0", "id": 9, "method": "torrent_get",
            "params": {"format": "table", "fields": ["id", "size_when_done", "id"]}}),
    );
    assert_eq!(
        v["result"]["torrents"],
        json!([["id", "size_when_done"], [1, 350_000]]),
        "{v}"
    );

    // Recently active: the torrent, and no removed numbers yet.
    let v = rpc(
        &d,
        &json!({"method": "torrent-get", "arguments": {"ids": "recently-active", "fields": ["id"]}}),
    );
    assert_eq!(v["arguments"]["torrents"], json!([{"id": 1}]), "{v}");
    assert_eq!(v["arguments"]["removed"], json!([]), "{v}");

    // Verify: a corrupted piece is found and fetched again.
    let x = dl.join("set/x.bin");
    let mut bytes = std::fs::read(&x).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&x, &bytes).unwrap();
    let v = rpc(
        &d,
        &json!({"method": "torrent-verify", "arguments": {"ids": [1]}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    wait_torrent(
        &d,
        1,
        &["status", "percentDone"],
        "checked and whole again",
        |t| t["status"] == 6 && t["percentDone"] == 1.0,
    );
    assert_eq!(sha256(&x), sha256(&data_dir.join("set/x.bin")));

    // Set location without moving: the torrent looks for its data there (here: a copy).
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(copy.join("set")).unwrap();
    for f in ["x.bin", "y.bin"] {
        std::fs::copy(dl.join("set").join(f), copy.join("set").join(f)).unwrap();
    }
    let v = rpc(
        &d,
        &json!({"method": "torrent-set-location", "arguments": {"ids": [1], "location": s(&copy), "move": false}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    wait_torrent(
        &d,
        1,
        &["status", "downloadDir", "percentDone"],
        "seeding from the copy",
        |t| t["status"] == 6 && t["downloadDir"] == s(&copy) && t["percentDone"] == 1.0,
    );
    assert!(dl.join("set/x.bin").exists(), "left where it was");
    // Not outside the allowed directories.
    let v = rpc(
        &d,
        &json!({"method": "torrent-set-location", "arguments": {"ids": [1], "location": "/", "move": true}}),
    );
    assert!(v["result"].as_str().unwrap().contains("outside"), "{v}");

    // free-space of the download directory.
    let v = rpc(
        &d,
        &json!({"method": "free-space", "arguments": {"path": s(&dl)}}),
    );
    assert!(v["arguments"]["size-bytes"].as_u64().unwrap() > 0, "{v}");

    // session-set: a global download limit, read back by session-get.
    let v = rpc(
        &d,
        &json!({"method": "session-set", "arguments": {"speed-limit-down": 800, "speed-limit-down-enabled": true, "download-queue-size": 3}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    let v = rpc(
        &d,
        &json!({"method": "session-get", "arguments": {"fields": ["speed-limit-down", "speed-limit-down-enabled", "download-queue-size"]}}),
    );
    assert_eq!(
        v["arguments"],
        json!({"speed-limit-down": 800, "speed-limit-down-enabled": true, "download-queue-size": 3})
    );

    // Removed: its number is reported among the recently removed, and not reused.
    let v = rpc(
        &d,
        &json!({"method": "torrent-remove", "arguments": {"ids": [1]}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    let v = rpc(
        &d,
        &json!({"method": "torrent-get", "arguments": {"ids": "recently-active", "fields": ["id"]}}),
    );
    assert_eq!(v["arguments"]["removed"], json!([1]), "{v}");
    let v = rpc(
        &d,
        &json!({"method": "torrent-add", "arguments": {"filename": s(&torrent), "paused": true, "download-dir": s(&copy)}}),
    );
    assert_eq!(v["arguments"]["torrent-added"]["id"], 2, "{v}");
    assert!(
        copy.join("set/x.bin").exists() && dl.join("set/x.bin").exists(),
        "removed without its data"
    );
}

/// `transmission-remote ADDR -n USER:PASSWORD ARGS`: (success, stdout and stderr).
fn remote_as(d: &Daemon, user_pass: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("transmission-remote")
        .arg(d.api.to_string())
        .args(["-n", user_pass])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn configured_rpc_credentials_work_beside_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spore.toml");
    std::fs::write(
        &config,
        "rpc_username = \"alice\"\nrpc_password = \"s3cret pass\"\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let mut command = daemon_command(&state, None);
    command.args([
        "--download-dir",
        s(&dir.path().join("dl")),
        "--config",
        s(&config),
    ]);
    let d = spawn_daemon(command, &state, &dir.path().join("daemon.err"));
    let with = |user_pass: &str| {
        let auth = format!(
            "Basic {}",
            data_encoding::BASE64.encode(user_pass.as_bytes())
        );
        http(d.api, "POST", RPC, &[("Authorization", &auth)], b"{}").0
    };
    // Authorized: on to the session-id handshake (409); refused: 401.
    assert_eq!(with("alice:s3cret pass"), 409);
    assert_eq!(with("alice:wrong"), 401);
    assert_eq!(with("bob:s3cret pass"), 401);
    assert_eq!(with(":s3cret pass"), 401);
    assert_eq!(
        with(&format!("anyone:{}", d.token)),
        409,
        "the token still works"
    );
    // The API shows the user name, never the password, and does not change them.
    let settings = d.ok("GET", "/api/settings", None);
    assert_eq!(settings["rpc_username"], "alice");
    assert!(settings.get("rpc_password").is_none(), "{settings}");
    let (status, _) = d.call("PUT", "/api/settings", Some(json!({"rpc_password": "x"})));
    assert_eq!(status, 403);
    let (status, _) = d.call("PUT", "/api/settings", Some(json!({"rpc_username": "eve"})));
    assert_eq!(status, 403);
    // Sending back what GET gave is fine.
    d.ok("PUT", "/api/settings", Some(settings));
    if have("transmission-remote", &["--version"]) {
        let (ok, out) = remote_as(&d, "alice:s3cret pass", &["-l"]);
        assert!(ok && out.contains("Sum:"), "{out}");
        let (ok, out) = remote_as(&d, "alice:nope", &["-l"]);
        assert!(!ok, "{out}");
    }
}

/// A tracker that answers every announce with no peers and a 30-minute interval, sending the
/// announce's query on `hits`.
fn fake_tracker() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/announce", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = vec![0u8; 8192];
            let mut got = 0;
            while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") && got < buf.len() {
                match stream.read(&mut buf[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            let body = b"d8:intervali1800e5:peers0:e";
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = stream.write_all(body);
            let line = String::from_utf8_lossy(&buf[..got])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn trackers_change_while_running_reannounce_and_done_date() {
    if !have("transmission-remote", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (_seed, _, torrent) = seeded(dir.path(), "tr.bin", &[("tr.bin", 100_000)], &url);
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon.err",
        None,
    );
    assert!(remote(&d, &["-a", s(&torrent)]).contains("success"));
    let t = wait_torrent(
        &d,
        1,
        &["percentDone", "doneDate", "addedDate"],
        "done",
        |t| t["percentDone"] == 1.0 && t["doneDate"].as_u64() > Some(0),
    );
    // doneDate: when it finished (the daemon's tick notes it within a second).
    let done = t["doneDate"].as_u64().unwrap();
    assert!(done >= t["addedDate"].as_u64().unwrap() && done > 0, "{t}");

    // A tracker added while it runs is announced to at once.
    let (fake, hits) = fake_tracker();
    remote(&d, &["-t", "1", "-td", &fake]);
    let first = hits
        .recv_timeout(T)
        .expect("an announce to the added tracker");
    assert!(first.contains("info_hash="), "{first}");
    let t = wait_torrent(&d, 1, &["trackers"], "two trackers", |t| {
        t["trackers"].as_array().map(Vec::len) == Some(2)
    });
    assert_eq!(t["trackers"][1]["announce"], fake.as_str(), "{t}");
    assert_eq!(t["trackers"][1]["tier"], 1, "{t}");
    // The interval is 30 minutes: nothing more until a reannounce asks for one.
    assert!(hits.recv_timeout(Duration::from_secs(2)).is_err());
    assert!(remote(&d, &["-t", "1", "--reannounce"]).contains("success"));
    hits.recv_timeout(T)
        .expect("an announce after torrent-reannounce");

    // Removed by id (the real tracker is 0): gone from the list and the JSON API.
    remote(&d, &["-t", "1", "-tr", "0"]);
    let t = wait_torrent(&d, 1, &["trackers", "hashString"], "one tracker", |t| {
        t["trackers"].as_array().map(Vec::len) == Some(1)
    });
    assert_eq!(t["trackers"][0]["announce"], fake.as_str(), "{t}");
    let hash = t["hashString"].as_str().unwrap().to_string();
    let view = d.torrent(&hash);
    // Each entry also has its last announce once there was one.
    let entries: Vec<Value> = view["trackers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!({"tier": e["tier"], "url": e["url"]}))
        .collect();
    assert_eq!(entries, vec![json!({"tier": 0, "url": fake})], "{view}");

    // trackerList replaces them all; a bad URL is refused with a result, nothing changed.
    let v = rpc(
        &d,
        &json!({"method": "torrent-set", "arguments": {"ids": [1], "trackerList": "ftp://nope\n"}}),
    );
    assert_ne!(v["result"], "success", "{v}");
    let list = format!("{url}\n\n{fake}\n");
    let v = rpc(
        &d,
        &json!({"method": "torrent-set", "arguments": {"ids": [1], "trackerList": list}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    let t = wait_torrent(&d, 1, &["trackerList"], "the new list", |t| {
        t["trackerList"].is_string()
    });
    assert_eq!(t["trackerList"], list.as_str(), "{t}");
    // Kept across a restart of the daemon, as is the done date.
    drop(d);
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon2.err",
        None,
    );
    let t = wait_torrent(&d, 1, &["trackerList", "doneDate"], "after restart", |t| {
        t["trackerList"].is_string()
    });
    assert_eq!(t["trackerList"], list.as_str(), "{t}");
    assert_eq!(t["doneDate"].as_u64(), Some(done), "{t}");
}

/// Three torrents nobody seeds (they stay downloading), added in order a, b, c; their .torrent files.
fn unseeded(dir: &Path) -> Vec<PathBuf> {
    ["a", "b", "c"]
        .iter()
        .map(|name| {
            let src = dir.join("src");
            std::fs::create_dir_all(&src).unwrap();
            let content = src.join(format!("{name}.bin"));
            std::fs::write(
                &content,
                data(name.len() as u64 + name.as_bytes()[0] as u64, 70_000),
            )
            .unwrap();
            let torrent = dir.join(format!("{name}.torrent"));
            create_torrent(&content, &torrent, "32K", None);
            torrent
        })
        .collect()
}

fn positions(d: &Daemon) -> Vec<(u64, u64, u64)> {
    let v = rpc(
        d,
        &json!({"method": "torrent-get", "arguments": {"fields": ["id", "queuePosition", "status"]}}),
    );
    let mut out: Vec<(u64, u64, u64)> = v["arguments"]["torrents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().unwrap(),
                t["queuePosition"].as_u64().unwrap(),
                t["status"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The ids in queue order.
fn queue_order(d: &Daemon) -> Vec<u64> {
    let mut p = positions(d);
    p.sort_by_key(|(_, pos, _)| *pos);
    p.into_iter().map(|(id, _, _)| id).collect()
}

#[test]
fn queue_positions_move_persist_and_order_the_starts() {
    let dir = tempfile::tempdir().unwrap();
    let torrents = unseeded(dir.path());
    let state = dir.path().join("state");
    let dl = dir.path().join("dl");
    let d = start_daemon(&state, &dl, "daemon.err", None);
    d.ok(
        "PUT",
        "/api/settings",
        Some(json!({"max_active_downloads": 1})),
    );
    for t in &torrents {
        let v = rpc(
            &d,
            &json!({"method": "torrent-add", "arguments": {"filename": s(t)}}),
        );
        assert_eq!(v["result"], "success", "{v}");
    }
    assert_eq!(queue_order(&d), [1, 2, 3]);
    // One slot: the first downloads (4), the others wait (3).
    wait_torrent(&d, 1, &["status"], "a downloading", |t| t["status"] == 4);
    assert_eq!(
        positions(&d).iter().map(|p| p.2).collect::<Vec<_>>(),
        [4, 3, 3]
    );

    let call = |method: &str, ids: Value| {
        let v = rpc(&d, &json!({"method": method, "arguments": {"ids": ids}}));
        assert_eq!(v["result"], "success", "{method}: {v}");
    };
    call("queue-move-top", json!([3]));
    assert_eq!(queue_order(&d), [3, 1, 2]);
    call("queue-move-down", json!([3]));
    assert_eq!(queue_order(&d), [1, 3, 2]);
    call("queue-move-bottom", json!([1]));
    assert_eq!(queue_order(&d), [3, 2, 1]);
    call("queue-move-up", json!([2]));
    assert_eq!(queue_order(&d), [2, 3, 1]);
    let v = rpc(
        &d,
        &json!({"method": "torrent-set", "arguments": {"ids": [3], "queuePosition": 0}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    assert_eq!(queue_order(&d), [3, 2, 1]);

    // The JSON API: by name or number, and shown in the view.
    let hash = |id: u64| {
        let v = rpc(
            &d,
            &json!({"method": "torrent-get", "arguments": {"ids": [id], "fields": ["hashString"]}}),
        );
        v["arguments"]["torrents"][0]["hashString"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (h1, h2, h3) = (hash(1), hash(2), hash(3));
    let v = d.ok(
        "PUT",
        &format!("/api/torrents/{h2}"),
        Some(json!({"queue_position": "top"})),
    );
    assert_eq!(v["queue_position"], 0, "{v}");
    assert_eq!(queue_order(&d), [2, 3, 1]);
    d.ok(
        "PUT",
        &format!("/api/torrents/{h2}"),
        Some(json!({"queue_position": 1})),
    );
    assert_eq!(queue_order(&d), [3, 2, 1]);
    let (status, _) = d.call(
        "PUT",
        &format!("/api/torrents/{h2}"),
        Some(json!({"queue_position": "sideways"})),
    );
    assert_eq!(status, 400);

    // When the slot frees, the first in the queue starts: c, not b (added before it).
    call("torrent-stop", json!([1]));
    wait_torrent(&d, 3, &["status"], "c started first", |t| t["status"] == 4);
    assert_eq!(positions(&d)[1].2, 3, "b still waits: {:?}", positions(&d));
    assert_eq!(d.torrent(&h1)["state"], "paused");
    // torrent-start-now goes past the queue's limit: b runs beside c.
    call("torrent-start-now", json!([2]));
    wait_torrent(&d, 2, &["status"], "b started now", |t| t["status"] == 4);
    assert_eq!(positions(&d)[2].2, 4, "c still runs: {:?}", positions(&d));

    // Kept across a restart.
    drop(d);
    let d = start_daemon(&state, &dl, "daemon2.err", None);
    let order: Vec<String> = {
        let list = d.ok("GET", "/api/torrents", None);
        let mut t: Vec<(u64, String)> = list["torrents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["queue_position"].as_u64().unwrap(),
                    t["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        t.sort();
        t.into_iter().map(|(_, h)| h).collect()
    };
    assert_eq!(order, [h3, h2, h1]);
}

#[test]
fn alternative_speed_limits_are_set_by_transmission_remote_and_slow_the_download() {
    if !have("transmission-remote", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (_seed, _, torrent) = seeded(dir.path(), "slow.bin", &[("slow.bin", 600_000)], &url);
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon.err",
        None,
    );
    remote(&d, &["-asd", "100", "-asu", "70", "-as"]);
    remote(
        &d,
        &[
            "--alt-speed-time-begin",
            "0130",
            "--alt-speed-time-end",
            "2215",
            "--alt-speed-days",
            "1-5",
        ],
    );
    let v = rpc(&d, &json!({"method": "session-get"}));
    let a = &v["arguments"];
    assert_eq!(
        (
            &a["alt-speed-down"],
            &a["alt-speed-up"],
            &a["alt-speed-enabled"],
            &a["alt-speed-time-begin"],
            &a["alt-speed-time-end"],
            &a["alt-speed-time-day"],
        ),
        (
            &json!(100),
            &json!(70),
            &json!(true),
            &json!(90),
            &json!(1335),
            &json!(62)
        ),
        "{v}"
    );
    let settings = d.ok("GET", "/api/settings", None);
    assert_eq!(settings["alt_speed_down"], 100_000, "{settings}");
    assert_eq!(settings["alt_speed_enabled"], true, "{settings}");

    // 600 kB at 100 kB/s: several seconds, where loopback takes a fraction of one.
    let started = Instant::now();
    assert!(remote(&d, &["-a", s(&torrent)]).contains("success"));
    wait_torrent(&d, 1, &["percentDone"], "done", |t| t["percentDone"] == 1.0);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "took {took:?} with alt speed at 100 kB/s"
    );

    // Off again, and the schedule on (it only switches at its edges).
    remote(&d, &["-AS", "-asc"]);
    let v = rpc(
        &d,
        &json!({"method": "session-get", "arguments": {"fields": ["alt-speed-enabled", "alt-speed-time-enabled"]}}),
    );
    assert_eq!(v["arguments"]["alt-speed-time-enabled"], true, "{v}");
}

#[test]
fn start_added_torrents_off_adds_them_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let torrents = unseeded(dir.path());
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon.err",
        None,
    );
    let v = rpc(
        &d,
        &json!({"method": "session-set", "arguments": {"start-added-torrents": false}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    let v = rpc(
        &d,
        &json!({"method": "session-get", "arguments": {"fields": ["start-added-torrents"]}}),
    );
    assert_eq!(v["arguments"]["start-added-torrents"], false, "{v}");
    let v = rpc(
        &d,
        &json!({"method": "torrent-add", "arguments": {"filename": s(&torrents[0])}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    // `paused: false` still starts one.
    let v = rpc(
        &d,
        &json!({"method": "torrent-add", "arguments": {"filename": s(&torrents[1]), "paused": false}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    wait_torrent(&d, 2, &["status"], "the unpaused one runs", |t| {
        t["status"] == 4
    });
    assert_eq!(status(&d, 1)["status"], 0, "added stopped");
}

/// One RPC call expected to fail: its `result` string.
fn rpc_refused(d: &Daemon, body: &Value) -> String {
    let v = rpc(d, body);
    let result = v["result"].as_str().unwrap_or_default().to_string();
    assert_ne!(result, "success", "{body}: {v}");
    assert!(!result.is_empty(), "{v}");
    result
}

#[test]
fn rename_path_renames_on_disk_keeps_seeding_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (_seed, data_dir, torrent) = seeded(
        dir.path(),
        "pair",
        &[("a.bin", 100_000), ("b.bin", 70_000)],
        &url,
    );
    let solo_dir = dir.path().join("solo-src");
    std::fs::create_dir_all(&solo_dir).unwrap();
    std::fs::write(solo_dir.join("solo.bin"), data(9, 50_000)).unwrap();
    let solo = dir.path().join("solo.torrent");
    create_torrent(&solo_dir.join("solo.bin"), &solo, "32K", None);
    let dl = dir.path().join("dl");
    let state = dir.path().join("state");
    let mut d = start_daemon(&state, &dl, "daemon.err", None);
    let v = rpc(
        &d,
        &json!({"method": "torrent-add", "arguments": {"filename": s(&torrent)}}),
    );
    assert_eq!(v["arguments"]["torrent-added"]["id"], 1, "{v}");
    let v = rpc(
        &d,
        &json!({"method": "torrent-add", "arguments": {"filename": s(&solo), "paused": true}}),
    );
    assert_eq!(v["arguments"]["torrent-added"]["id"], 2, "{v}");
    wait_torrent(&d, 1, &["percentDone"], "the download", |t| {
        t["percentDone"] == 1.0
    });

    // Refusals, each a result string, nothing changed.
    let rename = |ids: Value, path: &str, name: &str| json!({"method": "torrent-rename-path", "arguments": {"ids": ids, "path": path, "name": name}});
    for (body, says) in [
        (rename(json!([1]), "pair/a.bin", "x/y"), "separator"),
        (rename(json!([1]), "pair/a.bin", ".."), "bad name"),
        (rename(json!([1]), "pair/a.bin", "b.bin"), "already"),
        (
            rename(json!([1]), "pair/nothing", "c.bin"),
            "no file or folder",
        ),
        (rename(json!([1, 2]), "pair/a.bin", "c.bin"), "exactly one"),
        (
            json!({"method": "torrent-rename-path", "arguments": {"path": "pair", "name": "c"}}),
            "exactly one",
        ),
    ] {
        let result = rpc_refused(&d, &body);
        assert!(result.contains(says), "{body}: {result}");
    }
    assert!(dl.join("pair/a.bin").is_file());

    // A file, then the top folder.
    let v = rpc(&d, &rename(json!([1]), "pair/a.bin", "first.bin"));
    assert_eq!(v["result"], "success", "{v}");
    assert_eq!(
        v["arguments"],
        json!({"path": "pair/a.bin", "name": "first.bin", "id": 1})
    );
    let v = rpc(&d, &rename(json!([1]), "pair", "Pair2"));
    assert_eq!(v["result"], "success", "{v}");
    let want_a = std::fs::read(data_dir.join("pair/a.bin")).unwrap();
    let want_b = std::fs::read(data_dir.join("pair/b.bin")).unwrap();
    assert_eq!(std::fs::read(dl.join("Pair2/first.bin")).unwrap(), want_a);
    assert_eq!(std::fs::read(dl.join("Pair2/b.bin")).unwrap(), want_b);
    assert!(!dl.join("pair").exists());
    // The single-file torrent's name is its file's: renamed before it has any data.
    let v = rpc(&d, &rename(json!([2]), "solo.bin", "alone.bin"));
    assert_eq!(v["result"], "success", "{v}");

    let names = |d: &Daemon| {
        let v = rpc(
            d,
            &json!({"method": "torrent-get", "arguments": {"ids": [1, 2], "fields": ["id", "name", "files", "percentDone"]}}),
        );
        let t = &v["arguments"]["torrents"];
        let files: Vec<Value> = t[0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].clone())
            .collect();
        (t[0]["name"].clone(), files, t[1]["name"].clone())
    };
    let want = (
        json!("Pair2"),
        vec![json!("Pair2/first.bin"), json!("Pair2/b.bin")],
        json!("alone.bin"),
    );
    assert_eq!(names(&d), want);
    // Started again from its resume data: whole, and seeding to a new downloader.
    wait_torrent(&d, 1, &["percentDone", "status"], "seeding again", |t| {
        t["percentDone"] == 1.0 && t["status"] == 6
    });
    let port = rpc(&d, &json!({"method": "session-get"}))["arguments"]["peer-port"]
        .as_u64()
        .unwrap();
    let out = dir.path().join("out");
    spore_ok(&[
        "get",
        s(&torrent),
        "-o",
        s(&out),
        "--listen",
        "127.0.0.1:0",
        "--peer",
        &format!("127.0.0.1:{port}"),
        "--no-seed",
        "--no-dht",
        "--no-trackers",
    ]);
    assert_eq!(std::fs::read(out.join("pair/a.bin")).unwrap(), want_a);
    assert_eq!(std::fs::read(out.join("pair/b.bin")).unwrap(), want_b);

    // Kept across a restart, without a full check.
    d.proc.terminate();
    d.proc.wait_exit(T);
    let d = start_daemon(&state, &dl, "daemon2.err", None);
    assert_eq!(names(&d), want);
    wait_torrent(
        &d,
        1,
        &["percentDone", "status"],
        "seeding after the restart",
        |t| t["percentDone"] == 1.0 && t["status"] == 6,
    );
    d.proc.wait_stderr("(fast resume)", T);
    assert!(!dl.join("pair").exists());

    // A move takes the files at their new names; a removal with data finds them there.
    let lib = dir.path().join("lib");
    let v = rpc(
        &d,
        &json!({"method": "torrent-set-location", "arguments": {"ids": [1], "location": s(&lib), "move": true}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    assert_eq!(std::fs::read(lib.join("Pair2/first.bin")).unwrap(), want_a);
    assert_eq!(std::fs::read(lib.join("Pair2/b.bin")).unwrap(), want_b);
    assert!(!dl.join("Pair2").exists());
    let v = rpc(
        &d,
        &json!({"method": "torrent-remove", "arguments": {"ids": [1], "delete-local-data": true}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    assert!(!lib.join("Pair2").exists());
}

#[test]
fn tracker_stats_report_the_real_announce_results() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (_seed, _data_dir, torrent) = seeded(dir.path(), "stats", &[("stats", 120_000)], &url);
    let dl = dir.path().join("dl");
    let d = start_daemon(&dir.path().join("state"), &dl, "daemon.err", None);
    let v = rpc(
        &d,
        &json!({"method": "torrent-add", "arguments": {"filename": s(&torrent)}}),
    );
    let hash = v["arguments"]["torrent-added"]["hashString"]
        .as_str()
        .unwrap()
        .to_string();
    wait_torrent(&d, 1, &["percentDone"], "the download", |t| {
        t["percentDone"] == 1.0
    });
    // A second tracker nobody answers on.
    let dead = "http://127.0.0.1:9/announce";
    let v = rpc(
        &d,
        &json!({"method": "torrent-set", "arguments": {"ids": [1], "trackerAdd": [dead]}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = wait_torrent(
        &d,
        1,
        &["trackerStats"],
        "both trackers announced to",
        |t| {
            let s = &t["trackerStats"];
            s[0]["hasAnnounced"] == true && s[1]["hasAnnounced"] == true
        },
    );
    let (ok, bad) = (&t["trackerStats"][0], &t["trackerStats"][1]);
    assert_eq!(ok["announce"], url.as_str(), "{t}");
    assert_eq!(ok["lastAnnounceSucceeded"], true, "{ok}");
    assert_eq!(ok["lastAnnounceResult"], "Success", "{ok}");
    // The seed and this daemon, both complete.
    assert!(ok["seederCount"].as_i64() >= Some(1), "{ok}");
    assert!(ok["leecherCount"].as_i64() >= Some(0), "{ok}");
    assert!(
        ok["lastAnnounceTime"].as_u64() >= Some(before - 120),
        "{ok}"
    );
    assert!(
        ok["nextAnnounceTime"].as_u64() > ok["lastAnnounceTime"].as_u64(),
        "{ok}"
    );
    assert_eq!(bad["announce"], dead, "{t}");
    assert_eq!(bad["lastAnnounceSucceeded"], false, "{bad}");
    assert!(
        bad["lastAnnounceResult"]
            .as_str()
            .is_some_and(|r| r.contains("connect")),
        "{bad}"
    );
    assert_eq!(bad["seederCount"], -1, "{bad}");
    // The JSON API's tracker entries carry the same.
    let view = d.torrent(&hash);
    let entries = &view["trackers"];
    assert_eq!(entries[0]["last_result"], "ok", "{view}");
    assert!(entries[0]["seeders"].as_u64() >= Some(1), "{view}");
    assert!(
        entries[1]["last_result"]
            .as_str()
            .is_some_and(|r| r != "ok"),
        "{view}"
    );
}

#[test]
fn peers_show_their_client_names_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let (_seed, _data_dir, torrent) = seeded(dir.path(), "peers", &[("peers", 800_000)], &url);
    let dl = dir.path().join("dl");
    let d = start_daemon(&dir.path().join("state"), &dl, "daemon.err", None);
    let v = rpc(
        &d,
        &json!({"method": "torrent-add", "arguments": {"filename": s(&torrent)}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    wait_torrent(&d, 1, &["percentDone"], "the download", |t| {
        t["percentDone"] == 1.0
    });
    // A slow downloader that connects to the daemon.
    let port = rpc(&d, &json!({"method": "session-get"}))["arguments"]["peer-port"]
        .as_u64()
        .unwrap();
    let peer = format!("127.0.0.1:{port}");
    let out = dir.path().join("out");
    let _get = Proc::start(
        &[
            "get",
            s(&torrent),
            "-o",
            s(&out),
            "--listen",
            "127.0.0.1:0",
            "--peer",
            &peer,
            "--no-seed",
            "--no-dht",
            "--no-trackers",
            "--max-down",
            "100K",
        ],
        dir.path().join("get.err"),
    );
    let t = wait_torrent(&d, 1, &["peers"], "the downloader uploaded to", |t| {
        t["peers"].as_array().is_some_and(|peers| {
            peers.iter().any(|p| {
                p["isIncoming"] == true && p["flagStr"].as_str().is_some_and(|f| f.contains('U'))
            })
        })
    });
    let peers = t["peers"].as_array().unwrap();
    let incoming = peers.iter().find(|p| p["isIncoming"] == true).unwrap();
    assert!(
        incoming["clientName"]
            .as_str()
            .is_some_and(|c| c.starts_with("Spore ")),
        "{t}"
    );
    assert!(incoming["flagStr"].as_str().unwrap().contains('I'), "{t}");
    // Both Spores run the defaults: `--encryption prefer` (RC4 between two Spores) and uTP first, so
    // the downloader dialled the daemon's session over uTP, encrypted.
    assert!(incoming["flagStr"].as_str().unwrap().contains('E'), "{t}");
    assert_eq!(incoming["isEncrypted"], true, "{t}");
    assert_eq!(incoming["isUTP"], true, "{t}");
    assert!(incoming["flagStr"].as_str().unwrap().contains('T'), "{t}");
    // The seed the daemon dialled is no incoming peer.
    for p in peers.iter().filter(|p| p["isIncoming"] == false) {
        assert!(!p["flagStr"].as_str().unwrap().contains('I'), "{t}");
    }
}

/// `encryption` through `session-set` in Transmission's words, read back by `session-get` and the
/// JSON API; once "required", a peer sending a plaintext handshake to the daemon's port is closed
/// unanswered and the log (info level) names it.
#[test]
fn encryption_set_through_the_rpc_and_required_refuses_plaintext_peers() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon.err",
        None,
    );
    let get =
        json!({"method": "session-get", "arguments": {"fields": ["encryption", "peer-port"]}});
    let v = rpc(&d, &get);
    assert_eq!(v["arguments"]["encryption"], "preferred", "{v}");
    let port = v["arguments"]["peer-port"].as_u64().unwrap() as u16;
    rpc_refused(
        &d,
        &json!({"method": "session-set", "arguments": {"encryption": "sometimes"}}),
    );
    let v = rpc(
        &d,
        &json!({"method": "session-set", "arguments": {"encryption": "required"}}),
    );
    assert_eq!(v["result"], "success", "{v}");
    assert_eq!(rpc(&d, &get)["arguments"]["encryption"], "required");
    assert_eq!(d.ok("GET", "/api/settings", None)["encryption"], "require");

    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0u8; 48]);
    conn.write_all(&hs).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = [0u8; 68];
    match conn.read(&mut reply) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("the daemon answered {n} bytes to a plaintext handshake"),
    }
    let us = conn.local_addr().unwrap();
    let want = format!("peer {us}: refused a plaintext connection: encryption is required");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&d.proc.stderr)
        .unwrap_or_default()
        .contains(&want)
    {
        assert!(Instant::now() < deadline, "no {want:?} in the daemon's log");
        std::thread::sleep(Duration::from_millis(50));
    }
}
