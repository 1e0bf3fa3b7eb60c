//! The daemon's API against a hostile local user: no token from the web page, a one-time login link
//! that works once, a session that is never a cookie (a browser sends cookies to every port of the
//! host) and is refused cross-origin, no data written outside the allowed
//! directories, API `path`s that cannot freeze the daemon, fill its memory or reveal what a file holds,
//! and relative path settings made absolute at start.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The value of the response header `name` (lower case), if there is one.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The `path?query` part of an http:// link.
fn path_of(link: &str) -> &str {
    let rest = link.trim_start_matches("http://");
    &rest[rest.find('/').expect("a path")..]
}

/// Opens a one-time login link; (status, response head).
fn open_link(api: SocketAddr, link: &str) -> (u16, String) {
    let (status, head, _) = http_full(api, "GET", path_of(link), &[], b"");
    (status, head)
}

/// A small torrent of one file, its data in `dir/data`.
fn small_torrent(dir: &Path, name: &str, tracker: Option<&str>) -> std::path::PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(name), common::data(5, 200_000)).unwrap();
    let torrent = dir.join(format!("{name}.torrent"));
    create_torrent(&data.join(name), &torrent, "32K", tracker);
    torrent
}

#[test]
fn the_page_has_no_token_and_a_one_time_link_signs_the_browser_in() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "d.err",
        None,
    );
    let host = d.api.to_string();
    let origin = format!("http://{host}");
    let other_port = format!("http://127.0.0.1:{}", d.api.port() ^ 1);

    // Any local process may load the page: it gets neither the token nor a way to one.
    let (status, head, page) = http_full(d.api, "GET", "/", &[], b"");
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 200);
    assert!(
        !page.contains(&d.token) && !head.contains(&d.token),
        "the page hands out the token"
    );
    assert!(
        page.contains("spore web"),
        "the page says how to sign in: {page}"
    );
    assert!(header(&head, "set-cookie").is_none(), "{head}");

    // Opening a link only loads the page, whose script posts the secret: a GET uses nothing up (a
    // link previewer cannot spend it) and sets no cookie.
    let link = d.start_link();
    assert!(!link.contains(&d.token));
    // Whatever a browser keeps from opening the link must not open the API: it would send a cookie
    // to every port of this host, another user's server included (the link used to set one).
    let (_, head) = open_link(d.api, &link);
    let kept = header(&head, "set-cookie").map_or("", |c| c.split(';').next().unwrap_or(""));
    let (status, _) = http(
        d.api,
        "GET",
        "/api/torrents",
        &[("Cookie", kept), ("Origin", &origin)],
        b"",
    );
    assert_eq!(
        status, 401,
        "a cookie from the login link opens the API: {kept}"
    );
    for path in ["/login", "/login?once=", "/login?once=00", path_of(&link)] {
        let (status, head) = open_link(d.api, &format!("http://{host}{path}"));
        assert_eq!(status, 200, "{path}: {head}");
        assert!(header(&head, "set-cookie").is_none(), "{path}: {head}");
    }
    for bad in ["", "00", &"0".repeat(64)] {
        let (status, v) = d.sign_in(&format!("{origin}/login?once={bad}"));
        assert_eq!(status, 403, "{bad:?}: {v}");
        assert!(v.get("token").is_none(), "{v}");
    }
    // The secret is posted by the daemon's own page only; a refused post does not use it up.
    let body = json!({ "once": path_of(&link).split_once("once=").unwrap().1 }).to_string();
    for foreign in [&[("Origin", other_port.as_str())][..], &[]] {
        let (status, _) = http(d.api, "POST", "/login", foreign, body.as_bytes());
        assert_eq!(status, 403, "{foreign:?}");
    }
    let (status, _) = http(d.api, "POST", "/api/login-link", &[], b"");
    assert_eq!(status, 401, "a login link needs the token");

    // The link works once: a session token and a stream token, in the body, not in a cookie.
    let (status, head, body) = http_full(
        d.api,
        "POST",
        "/login",
        &[("Origin", &origin), ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{head}");
    assert!(header(&head, "set-cookie").is_none(), "{head}");
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let session = v["token"].as_str().expect("a session token").to_string();
    let stream = v["stream_token"]
        .as_str()
        .expect("a stream token")
        .to_string();
    assert_eq!(v["expires_in"], 86400);
    assert!(session != stream && !session.contains(&d.token) && !stream.contains(&d.token));
    let (status, v) = d.sign_in(&link);
    assert_eq!(status, 403, "a used link works again: {v}");

    // The session as the page sends it, a header from its own origin: the API works.
    let bearer = format!("Bearer {session}");
    let (status, body) = http(
        d.api,
        "GET",
        "/api/torrents",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let change = json!({"max_active_downloads": 3}).to_string();
    let (status, body) = http(
        d.api,
        "PUT",
        "/api/settings",
        &[("Authorization", &bearer), ("Origin", &origin)],
        change.as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // The session in a cookie, as a browser would send it to any other port of this host (where
    // another user's server may read it), opens nothing, whatever the request says of its origin.
    let cookie = format!("spore_session={session}");
    let as_cookie: [&[(&str, &str)]; 3] = [
        &[("Cookie", &cookie)],
        &[("Cookie", &cookie), ("Origin", &origin)],
        &[("Cookie", &cookie), ("Sec-Fetch-Site", "same-origin")],
    ];
    for headers in as_cookie {
        for (method, path, body) in [
            ("GET", "/api/torrents", &b""[..]),
            ("GET", "/api/events", b""),
            ("PUT", "/api/settings", change.as_bytes()),
            (
                "POST",
                "/transmission/rpc",
                b"{\"method\": \"session-get\"}",
            ),
        ] {
            let (status, _) = http(d.api, method, path, headers, body);
            assert_eq!(status, 401, "{method} {path} {headers:?}");
        }
    }
    // With the header, a state-changing call from any other origin or with no word on its origin is
    // refused too.
    let foreign: [&[(&str, &str)]; 4] = [
        &[("Origin", "http://evil.example")],
        &[("Origin", &other_port)],
        &[("Sec-Fetch-Site", "same-site")],
        &[],
    ];
    for extra in foreign {
        let mut headers = vec![("Authorization", bearer.as_str())];
        headers.extend_from_slice(extra);
        let (status, _) = http(d.api, "PUT", "/api/settings", &headers, change.as_bytes());
        assert_eq!(status, 403, "{extra:?}");
    }

    // The stream token opens file streams (404: no such torrent, past the door) and nothing else;
    // the session token never goes in a URL.
    let no_torrent = format!("/stream/{}/0", "0".repeat(40));
    let (status, _) = http(
        d.api,
        "GET",
        &format!("{no_torrent}?token={stream}"),
        &[],
        b"",
    );
    assert_eq!(status, 404);
    let (status, _) = http(
        d.api,
        "GET",
        &format!("{no_torrent}?token={session}"),
        &[],
        b"",
    );
    assert_eq!(status, 401);
    let stream_bearer = format!("Bearer {stream}");
    for (path, headers) in [
        (format!("/api/events?token={stream}"), &[][..]),
        (format!("/api/events?token={session}"), &[]),
        (
            "/api/torrents".to_string(),
            &[("Authorization", stream_bearer.as_str())],
        ),
    ] {
        let (status, _) = http(d.api, "GET", &path, headers, b"");
        assert_eq!(status, 401, "{path} {headers:?}");
    }

    // A session cannot mint links; the token holder can, with `spore web`.
    let (status, _) = http(
        d.api,
        "POST",
        "/api/login-link",
        &[("Authorization", &bearer), ("Origin", &origin)],
        b"",
    );
    assert_eq!(status, 403);
    let out = d.cli(&["web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        fresh.starts_with(&format!("http://{host}/login?once=")),
        "{fresh}"
    );
    assert_eq!(d.sign_in(&fresh).0, 200);
    assert_eq!(d.sign_in(&fresh).0, 403);
    // Without the token file, `spore web` gets nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["web", "--api", &host, "--state-dir", s(dir.path())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn an_add_outside_the_allowed_directories_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, url) = tracker(dir.path());
    let torrent = small_torrent(dir.path(), "t.bin", Some(&url));
    let (_seed, _) = start_seed(
        dir.path(),
        &torrent,
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--no-dht"],
    );
    let dl = dir.path().join("dl");
    // A private directory of the daemon's user, like its ~/.ssh.
    let victim = dir.path().join("victim");
    for p in [&dl, &victim] {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&victim, dl.join("link")).unwrap();
    let state = dir.path().join("state");
    let mut command = daemon_command(&state, None);
    command.args(["--download-dir", s(&dl)]);
    let d = spawn_daemon(command, &state, &dir.path().join("d.err"));
    let body = |to: &Path| {
        json!({
            "torrent_base64": data_encoding::BASE64.encode(&std::fs::read(&torrent).unwrap()),
            "download_dir": s(to),
        })
    };

    for to in [
        victim.clone(),
        victim.join("deeper"),
        dl.join("link"),
        dl.join("link/new"),
        dl.join("../victim"),
    ] {
        let (status, v) = d.call("POST", "/api/torrents", Some(body(&to)));
        assert_eq!(status, 403, "{}: {v}", to.display());
        assert!(v["error"].as_str().unwrap().contains("outside"), "{v}");
    }
    // Nor through the settings: download_dir stays within, allowed_dirs is not the API's to widen.
    for change in [
        json!({"download_dir": s(&victim)}),
        json!({"allowed_dirs": [s(&victim)]}),
    ] {
        let (status, v) = d.call("PUT", "/api/settings", Some(change));
        assert_eq!(status, 403, "{v}");
    }
    let settings = d.ok("GET", "/api/settings", None);
    assert_eq!(settings["download_dir"], s(&dl));
    // The same whole settings sent back are fine.
    d.ok("PUT", "/api/settings", Some(settings));

    // Inside the download directory it downloads; a move out of it is refused.
    let v = d.ok("POST", "/api/torrents", Some(body(&dl.join("sub"))));
    let id = v["id"].as_str().unwrap().to_string();
    d.wait(&id, "seeding", T, |t| t["state"] == "seeding");
    assert!(dl.join("sub/t.bin").is_file());
    for to in [&victim, &dl.join("link")] {
        let (status, v) = d.call(
            "PUT",
            &format!("/api/torrents/{id}"),
            Some(json!({"download_dir": s(to)})),
        );
        assert_eq!(status, 403, "{v}");
    }
    assert!(dl.join("sub/t.bin").is_file());
    let left: Vec<_> = std::fs::read_dir(&victim).unwrap().collect();
    assert!(
        left.is_empty(),
        "written in the private directory: {left:?}"
    );
}

/// A raw POST whose answer (status) comes on a channel, so a daemon that never answers cannot hang
/// the test.
fn post_in_background(api: SocketAddr, token: &str, body: Value) -> mpsc::Receiver<Option<u16>> {
    let (tx, rx) = mpsc::channel();
    let request = format!(
        "POST /api/torrents HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.to_string().len()
    );
    std::thread::spawn(move || {
        let status = (|| {
            let mut stream = TcpStream::connect(api).ok()?;
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .ok()?;
            stream.write_all(request.as_bytes()).ok()?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).ok()?;
            String::from_utf8_lossy(&response)
                .split(' ')
                .nth(1)?
                .parse()
                .ok()
        })();
        let _ = tx.send(status);
    });
    rx
}

#[test]
fn a_fifo_path_neither_freezes_the_daemon_nor_waits() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "d.err",
        None,
    );
    let fifo = dir.path().join("fifo.torrent");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // More adds than the daemon has runtime workers, all at once, with no writer on the FIFO.
    let pending: Vec<_> = (0..8)
        .map(|_| post_in_background(d.api, &d.token, json!({"path": s(&fifo)})))
        .collect();
    let bound = Duration::from_secs(10);
    let started = Instant::now();
    for rx in &pending {
        let left = bound.saturating_sub(started.elapsed());
        let status = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("an add of a FIFO got no answer within {bound:?}"));
        assert_eq!(status, Some(400));
    }
    // The daemon still answers everything else at once.
    let t = Instant::now();
    let list = post_in_background(d.api, &d.token, json!({}));
    assert_eq!(list.recv_timeout(bound).ok().flatten(), Some(400));
    assert!(t.elapsed() < bound);
    eprintln!("8 FIFO adds answered in {:?}", started.elapsed());
}

/// Kilobytes of the process's peak resident set.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn dev_zero_is_refused_at_once_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "d.err",
        None,
    );
    d.ok("GET", "/api/torrents", None);
    let before = vm_hwm_kib(d.proc.child.id());
    let started = Instant::now();
    let (status, v) = d.call("POST", "/api/torrents", Some(json!({"path": "/dev/zero"})));
    let took = started.elapsed();
    let after = vm_hwm_kib(d.proc.child.id());
    eprintln!("/dev/zero refused in {took:?}; peak RSS {before} kB before, {after} kB after");
    assert!(
        after < before + 32 * 1024,
        "peak RSS went from {before} kB to {after} kB"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"], "cannot use /dev/zero as a torrent file");
}

#[test]
fn path_errors_name_only_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "d.err",
        None,
    );
    let missing = dir.path().join("missing.torrent");
    let text = dir.path().join("secret.txt");
    std::fs::write(&text, b"Zsecret: the first byte is Z").unwrap();
    // Valid bencode, not a torrent: a parse error would tell the caller what it holds.
    let not_torrent = dir.path().join("list.torrent");
    std::fs::write(&not_torrent, b"li42ee").unwrap();
    let torrent = small_torrent(dir.path(), "ok.bin", None);
    for p in [&missing, &text, &not_torrent, &dir.path().to_path_buf()] {
        let (status, v) = d.call("POST", "/api/torrents", Some(json!({"path": s(p)})));
        assert_eq!(status, 400, "{}: {v}", p.display());
        let error = v["error"].as_str().unwrap();
        assert_eq!(error, format!("cannot use {} as a torrent file", s(p)));
        for leak in ["os error", "No such file", "'Z'", "offset", "42", "list"] {
            let without_path = error.replace(s(p), "");
            assert!(!without_path.contains(leak), "{error}");
        }
    }
    // A real one is read as before.
    let (status, v) = d.call("POST", "/api/torrents", Some(json!({"path": s(&torrent)})));
    assert_eq!(status, 201, "{v}");
}

#[test]
fn a_relative_download_dir_is_resolved_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let torrent = small_torrent(dir.path(), "rel.bin", None);
    let state = dir.path().join("state");
    let mut command = daemon_command(Path::new("state"), None);
    command
        .args(["--download-dir", "dl"])
        .current_dir(dir.path());
    let d = spawn_daemon(command, &state, &dir.path().join("d.err"));
    let out = d.cli(&["add", s(&torrent), "--paused", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["download_dir"], s(&dir.path().join("dl")));
    let settings = d.ok("GET", "/api/settings", None);
    assert_eq!(settings["download_dir"], s(&dir.path().join("dl")));
}

#[test]
fn allowed_dirs_from_the_command_line_widen_where_the_api_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let torrent = small_torrent(dir.path(), "x.bin", None);
    let state = dir.path().join("state");
    let mut command = daemon_command(&state, None);
    // Relative, like --download-dir: resolved against the daemon's working directory.
    command
        .args([
            "--download-dir",
            "dl",
            "--allowed-dir",
            "extra",
            "--allowed-dir",
            "more",
        ])
        .current_dir(dir.path());
    let d = spawn_daemon(command, &state, &dir.path().join("d.err"));
    let settings = d.ok("GET", "/api/settings", None);
    let (extra, more) = (dir.path().join("extra"), dir.path().join("more"));
    assert_eq!(settings["allowed_dirs"], json!([s(&extra), s(&more)]));
    let out = d.cli(&[
        "add",
        s(&torrent),
        "--paused",
        "-o",
        s(&dir.path().join("elsewhere")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside"));
    let out = d.cli(&[
        "add",
        s(&torrent),
        "--paused",
        "--json",
        "-o",
        s(&more.join("x")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    d.ok(
        "PUT",
        &format!("/api/torrents/{}", added["id"].as_str().unwrap()),
        Some(json!({"download_dir": s(&extra)})),
    );
    // Saved: the next start without the flags keeps them.
    assert!(std::fs::read_to_string(state.join("settings.json"))
        .unwrap()
        .contains(s(&more)));
}
