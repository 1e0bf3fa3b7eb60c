//! The daemon's web page in a real browser: headless Chromium, driven by Playwright
//! (tests/browser/add_torrent.mjs), signs in through the daemon's one-time login link, adds a
//! torrent through the page and watches it download from a seeder on loopback. The screenshot it takes is kept in `target/browser-artifacts/`.
//!
//! Needs node, /usr/bin/chromium and `npm ci` in tests/browser. Without them the test skips, except
//! under CI=true where it fails, so CI cannot pass without having run it.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What is missing to run the browser, if anything.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("node".to_string());
    }
    if !Path::new(CHROMIUM).exists() {
        missing.push(CHROMIUM.to_string());
    }
    if !script_dir().join("node_modules/playwright-core").is_dir() {
        missing.push("playwright-core (run `npm ci` in crates/spore/tests/browser)".to_string());
    }
    missing
}

/// `target/browser-artifacts`, next to the tests' scratch directory Cargo names.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// node and the Chromium it started, killed together when the test ends, however it ends.
struct BrowserGroup(Proc);

impl Drop for BrowserGroup {
    fn drop(&mut self) {
        unsafe {
            libc::kill(-(self.0.child.id() as i32), libc::SIGKILL);
        }
    }
}

#[test]
fn add_a_torrent_in_the_web_page_and_watch_it_complete() {
    let missing = missing_tools();
    if !missing.is_empty() {
        let why = format!("browser test needs {}", missing.join(", "));
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipping: {why}");
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_tracker, tracker_url) = tracker(d);

    // Two files, so the detail panel has a file list to show.
    let content = d.join("seed/spore-demo");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("video.bin"), data(11, 3_000_000)).unwrap();
    std::fs::write(content.join("notes.txt"), data(12, 40_000)).unwrap();
    let torrent = d.join("spore-demo.torrent");
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["create", s(&content), "-t", &tracker_url, "--piece-length"])
        .args(["64K", "--json", "-o", s(&torrent)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["info_hash_v1"].as_str().unwrap().to_string();

    let seed = Proc::start(
        &[
            "seed",
            s(&torrent),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.1:0",
            "--no-dht",
        ],
        d.join("seed.err"),
    );
    let seed_addr = seed.addr(T);
    seed.wait_for("seeding ", T);

    let state = d.join("state");
    let downloads = d.join("downloads");
    let mut command = Command::new(env!("CARGO_BIN_EXE_spore"));
    command.args([
        "daemon",
        "--state-dir",
        s(&state),
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--download-dir",
        s(&downloads),
        "--no-dht",
    ]);
    let daemon = Proc::spawn(command, d.join("daemon.err"));
    let line = daemon.wait_for("api listening on http://", T);
    let api = line
        .trim_start_matches("api listening on ")
        .trim()
        .to_string();
    // The page signs in through the one-time link the daemon prints; it never sees the token.
    let login = daemon.wait_for("/login?once=", T);
    let login = login[login.find("http://").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();

    let screenshot = artifacts().join("add_torrent.png");
    // Pictures from an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(&screenshot);
    let _ = std::fs::remove_file(screenshot.with_file_name("add_torrent-failed.png"));
    let mut node = Command::new("node");
    node.arg(script_dir().join("add_torrent.mjs"))
        .current_dir(script_dir())
        .env("SPORE_URL", format!("{api}/"))
        .env("SPORE_LOGIN", &login)
        .env("SPORE_TOKEN", token.trim())
        .env("SPORE_TORRENT", &torrent)
        .env("SPORE_ID", &id)
        .env("SPORE_TRACKER", &tracker_url)
        .env("SPORE_SEED", seed_addr.to_string())
        .env("SPORE_SCREENSHOT", &screenshot)
        .env("CHROMIUM", CHROMIUM);
    // Its own process group, so a hung run takes Chromium down with node (see BrowserGroup).
    node.process_group(0);
    let mut browser = BrowserGroup(Proc::spawn(node, d.join("browser.err")));
    // The script prints "browser test passed" last; a failure closes its stdout first, which ends
    // the wait at once.
    browser
        .0
        .wait_for("browser test passed", Duration::from_secs(150));
    let status = browser.0.wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "browser script: {status}; {}",
        std::fs::read_to_string(d.join("browser.err")).unwrap_or_default()
    );
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );

    // What the page showed as 100% is really on disk.
    for name in ["video.bin", "notes.txt"] {
        assert_eq!(
            sha256(&downloads.join("spore-demo").join(name)),
            sha256(&content.join(name)),
            "{name}"
        );
    }
    eprintln!("screenshot: {}", screenshot.display());
}
