//! A `spore daemon` under test and the HTTP it is driven with (daemon.rs, hostile_api.rs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{s, Proc, T};

pub struct Daemon {
    pub proc: Proc,
    pub api: SocketAddr,
    pub token: String,
    pub state: PathBuf,
}

/// `spore daemon` with its state in `state` and its downloads in `download_dir`, allowed to write
/// anywhere in the test's directory (the parent of `state`), its stderr in `log` there.
pub fn start_daemon(
    state: &Path,
    download_dir: &Path,
    log: &str,
    api: Option<SocketAddr>,
) -> Daemon {
    let dir = state.parent().unwrap();
    let mut command = daemon_command(state, api);
    command.args(["--download-dir", s(download_dir), "--allowed-dir", s(dir)]);
    spawn_daemon(command, state, &dir.join(log))
}

/// The command line of `spore daemon` with its state in `state`, peers and API on loopback; add to it
/// and start it with [`spawn_daemon`].
pub fn daemon_command(state: &Path, api: Option<SocketAddr>) -> Command {
    let api_arg = api.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
    let mut command = Command::new(env!("CARGO_BIN_EXE_spore"));
    command
        .args([
            "daemon",
            "--state-dir",
            s(state),
            "--listen",
            "127.0.0.1:0",
            "--api",
            &api_arg,
        ])
        .env("SPORE_LOG", "info");
    command
}

/// Starts `command` and waits until its API listens.
pub fn spawn_daemon(command: Command, state: &Path, log: &Path) -> Daemon {
    let proc = Proc::spawn(command, log.to_path_buf());
    let line = proc.wait_for("api listening on http://", T);
    let api = line
        .trim_start_matches("api listening on http://")
        .trim()
        .parse()
        .unwrap();
    let token = std::fs::read_to_string(state.join("api-token"))
        .unwrap()
        .trim()
        .to_string();
    Daemon {
        proc,
        api,
        token,
        state: state.to_path_buf(),
    }
}

/// One HTTP/1.1 request; (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (status, _, body) = http_full(addr, method, path, headers, body);
    (status, body)
}

/// One HTTP/1.1 request; (status, response head, body).
pub fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head += &format!("Host: {addr}\r\n");
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    // A server may refuse a huge body before reading it all.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let len =
            usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap();
        data = &data[end + 2..];
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&data[..len]);
        data = &data[len + 2..];
    }
}

impl Daemon {
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, bytes) = http(
            self.api,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, v)
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    pub fn torrent(&self, id: &str) -> Value {
        self.ok("GET", &format!("/api/torrents/{id}"), None)
    }

    /// Polls the torrent until `done` accepts it.
    pub fn wait(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.torrent(id);
            if done(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached in {timeout:?}; last {t}; log: {}",
                std::fs::read_to_string(&self.proc.stderr).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let api = self.api.to_string();
        Command::new(env!("CARGO_BIN_EXE_spore"))
            .args(args)
            .args(["--api", &api, "--state-dir", s(&self.state)])
            .output()
            .unwrap()
    }

    /// The one-time login link the daemon printed when it started.
    pub fn start_link(&self) -> String {
        let line = self.proc.wait_for("/login?once=", T);
        let at = line.find("http://").expect("a link");
        line[at..].split_whitespace().next().unwrap().to_string()
    }

    /// Signs in as the web page does with a login link (`http://HOST/login?once=SECRET`): posts its
    /// secret from the daemon's own origin. (status, JSON reply: `token`, `stream_token` or `error`).
    pub fn sign_in(&self, link: &str) -> (u16, Value) {
        let once = link.split_once("once=").map_or("", |(_, s)| s);
        let origin = format!("http://{}", self.api);
        let body = serde_json::json!({ "once": once }).to_string();
        let (status, body) = http(
            self.api,
            "POST",
            "/login",
            &[("Origin", &origin), ("Content-Type", "application/json")],
            body.as_bytes(),
        );
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}
