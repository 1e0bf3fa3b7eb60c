//! A python3-libtorrent peer run by a crate's `tests/libtorrent_peer.py`, shared by the interop tests
//! of `mse` and `utp` (each includes this file with `#[path]`). The script prints one line, its port
//! and the torrent's v1 and truncated v2 info-hashes in hex, then takes commands on stdin.

// Each including crate uses only part of it (mse never reads the script's later output).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub struct Libtorrent {
    child: Child,
    pub stdin: ChildStdin,
    /// The script's output after its first line, for tests that follow its progress.
    pub stdout: Option<BufReader<ChildStdout>>,
    pub port: u16,
    /// The v1 info-hash.
    pub info_hash: [u8; 20],
    /// The v2 info-hash truncated to 20 bytes: what libtorrent puts in its handshake (and, with
    /// encryption, in SKEY) for a hybrid torrent when it connects.
    pub info_hash_v2: [u8; 20],
    _dir: tempfile::TempDir,
}

impl Drop for Libtorrent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether /usr/bin/python3 can import libtorrent; with CI=true a missing one fails the test.
pub fn have_libtorrent() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("python3-libtorrent is missing (CI=true: not skipping)");
    }
    if !ok {
        eprintln!("skipped: /usr/bin/python3 cannot import libtorrent");
    }
    ok
}

/// Starts `script` with a fresh data directory, `ip` and `mode`, and reads its first line.
pub fn start(script: &str, ip: &str, mode: &str) -> Libtorrent {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(dir.path())
        .args([ip, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // The script gives up after 60 s without starting, which ends this read.
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let mut words = line.split_whitespace();
    let port: u16 = words
        .next()
        .and_then(|p| p.parse().ok())
        .expect("libtorrent printed no port");
    let mut hash = || {
        let hex = words.next().expect("libtorrent printed no info-hash");
        let mut h = [0u8; 20];
        for (i, b) in h.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        h
    };
    let (info_hash, info_hash_v2) = (hash(), hash());
    Libtorrent {
        child,
        stdin,
        stdout: Some(stdout),
        port,
        info_hash,
        info_hash_v2,
        _dir: dir,
    }
}
