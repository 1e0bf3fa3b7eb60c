//! Spore against real BitTorrent clients, peer to peer, in both directions: libtorrent 2.0
//! (python3-libtorrent, the engine of qBittorrent and Deluge), aria2 1.36 and Transmission 3.00.
//!
//! Every test runs on loopback only, every peer on its own 127.0.0.N with its listening and outgoing
//! sockets bound there, DHT/LSD/PEX/UPnP/NAT-PMP/uTP off everywhere, and its own `spore tracker` on
//! port 0. Peers find each other through that tracker wherever the client can; Transmission never
//! dials loopback peers it learns from a tracker, so Spore dials it (`--peer`). Data is deterministic
//! pseudo-random bytes, and every downloaded file is checked by length and SHA-256.
//!
//! Each test has a time budget; every child process is killed (with its process group) when the test
//! ends, fails or times out, and dies with the test thread (PR_SET_PDEATHSIG) if the runner is killed.
//! On failure the tail of every log is printed: Spore runs with SPORE_LOG=debug (override with
//! SPORE_INTEROP_LOG), libtorrent's alerts, aria2's log and Transmission's log. Set
//! SPORE_INTEROP_KEEP=1 to keep a failed test's directory, SPORE_INTEROP_KEEP=always to keep every one.
//!
//! A missing tool skips its tests with a message, unless CI=true, where it fails them.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

// Only for `check_skipped_files`; this file keeps its own process and logging helpers.
mod common;
// Message Stream Encryption against the same clients (tests/interop_peers/encryption.rs).
#[path = "interop_peers/encryption.rs"]
mod encryption;

// ---------------------------------------------------------------------------------------------
// Test context: a temporary directory, a deadline, and the logs to show if the test fails.

struct Ctx {
    name: &'static str,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    started: Instant,
    deadline: Instant,
    logs: RefCell<Vec<(String, PathBuf)>>,
}

impl Ctx {
    fn new(name: &'static str, budget: Duration) -> Ctx {
        let dir = tempfile::Builder::new()
            .prefix(&format!("spore-peers-{name}-"))
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        let started = Instant::now();
        Ctx {
            name,
            dir: Some(dir),
            root,
            started,
            deadline: started + budget,
            logs: RefCell::new(Vec::new()),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn add_log(&self, label: String, path: PathBuf) {
        self.logs.borrow_mut().push((label, path));
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Notes a milestone with the time since the test started (shown with --nocapture).
    fn step(&self, what: &str) {
        eprintln!("{} [{:6.2}s] {what}", self.name, self.elapsed());
    }

    /// Polls `probe` every 100 ms until it returns Some, failing the test at the deadline.
    fn poll<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if self.expired() {
                panic!(
                    "{}: timed out after {:.1}s waiting for {what}",
                    self.name,
                    self.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== {} failed after {:.1}s; logs follow",
                self.name,
                self.elapsed()
            );
            for (label, path) in self.logs.borrow().iter() {
                let text = tail(path, 64 * 1024);
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(120);
                eprintln!(
                    "----- {label} ({}, last {} of {} lines)",
                    path.display(),
                    lines.len() - from,
                    lines.len()
                );
                for l in &lines[from..] {
                    eprintln!("{l}");
                }
            }
        } else {
            eprintln!("{}: passed in {:.1}s", self.name, self.elapsed());
        }
        let keep = std::env::var("SPORE_INTEROP_KEEP").unwrap_or_default();
        if keep == "always" || (!keep.is_empty() && std::thread::panicking()) {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept {}", dir.keep().display());
            }
        }
    }
}

/// The last `max` bytes of a file, lossily decoded (logs can be large with SPORE_LOG=trace).
fn tail(path: &Path, max: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Child processes that die with the test.

struct Peer {
    label: String,
    child: Child,
    lines: Receiver<String>,
}

impl Peer {
    /// Starts `cmd` in its own process group with stdout lines on a channel (and in LABEL.out) and
    /// stderr in LABEL.err. Its stdin is a pipe kept open until the Peer is dropped.
    fn spawn(ctx: &Ctx, label: &str, mut cmd: Command) -> Peer {
        let out_log = ctx.path(&format!("{label}.out"));
        let err_log = ctx.path(&format!("{label}.err"));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&err_log).unwrap())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({cmd:?}): {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let mut file = BufWriter::new(File::create(&out_log).unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                let _ = file.flush();
                let _ = tx.send(line);
            }
        });
        ctx.add_log(format!("{label} stdout"), out_log);
        ctx.add_log(format!("{label} stderr"), err_log);
        Peer {
            label: label.to_string(),
            child,
            lines,
        }
    }

    /// The first stdout line (from now on) that satisfies `pred`.
    fn wait_line(&mut self, ctx: &Ctx, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.next_line(ctx, what, pred) {
            Ok(line) => line,
            Err(status) => panic!(
                "{}: {} exited ({status:?}) before printing {what}",
                ctx.name, self.label
            ),
        }
    }

    /// As `wait_line`, but a child that exits first is an `Err` with its exit status (if it is
    /// known within 5 s) rather than a failed test.
    fn next_line(
        &mut self,
        ctx: &Ctx,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, Option<ExitStatus>> {
        loop {
            match self.lines.recv_timeout(ctx.left()) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: timed out after {:.1}s waiting for {} to print {what}",
                    ctx.name,
                    ctx.elapsed(),
                    self.label
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    // A child can close stdout and linger; look for its exit status only briefly.
                    return Err((0..50).find_map(|_| {
                        let status = self.try_exit();
                        if status.is_none() {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        status
                    }));
                }
            }
        }
    }

    fn wait_for(&mut self, ctx: &Ctx, needle: &str) -> String {
        self.wait_line(ctx, needle, |l| l.contains(needle))
    }

    /// Address from a `listening on IP:PORT` line.
    fn listening(&mut self, ctx: &Ctx) -> String {
        let line = self.wait_for(ctx, "listening on ");
        line.split("listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .to_string()
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    fn wait_exit(&mut self, ctx: &Ctx) -> ExitStatus {
        let label = self.label.clone();
        ctx.poll(&format!("{label} to exit"), || self.try_exit())
    }

    /// Fails the test if the process has died.
    fn assert_alive(&mut self, ctx: &Ctx) {
        if let Some(status) = self.try_exit() {
            panic!("{}: {} died early ({status})", ctx.name, self.label);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of the process group we created for this child.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Tools.

fn runs(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `tool` can be used: outside CI a missing tool skips the test, with CI=true it fails it.
fn need(tool: &str, present: bool) -> bool {
    if !present {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required in CI but is not installed");
        }
        eprintln!("SKIP: {tool} is not installed");
    }
    present
}

fn have_libtorrent() -> bool {
    need(
        "python3-libtorrent (/usr/bin/python3 -c 'import libtorrent')",
        runs(Command::new("/usr/bin/python3").args(["-c", "import libtorrent"])),
    )
}

fn have_aria2() -> bool {
    need("aria2c", runs(Command::new("aria2c").arg("--version")))
}

fn have_transmission() -> bool {
    need(
        "transmission-daemon",
        runs(Command::new("transmission-daemon").arg("--version")),
    ) && need(
        "transmission-remote",
        runs(Command::new("transmission-remote").arg("--version")),
    )
}

/// A TCP port that is free on `ip` right now.
fn free_port(ip: &str) -> u16 {
    let [port] = free_ports(ip);
    port
}

/// `N` distinct TCP ports free on `ip` right now. The listeners are held until all are picked:
/// the kernel may hand a just-released port out again, as it once gave Transmission's peer
/// port to its RPC server too (its peer listener then failed to bind, and nobody could connect).
fn free_ports<const N: usize>(ip: &str) -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((ip, 0)).unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Spore.

fn spore_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spore"));
    let level = std::env::var("SPORE_INTEROP_LOG").unwrap_or_else(|_| "debug".into());
    cmd.env("SPORE_LOG", level).args(args);
    cmd
}

fn spore_out(args: &[&str]) -> String {
    let out = spore_cmd(args).output().unwrap();
    assert!(
        out.status.success(),
        "spore {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn spore(ctx: &Ctx, label: &str, args: &[&str]) -> Peer {
    Peer::spawn(ctx, label, spore_cmd(args))
}

/// `spore get`, loopback only: bound to `ip`, DHT off, plus `extra` arguments.
fn spore_get(ctx: &Ctx, fx: &Fixture, dir: &Path, ip: &str, extra: &[&str]) -> Peer {
    let listen = format!("{ip}:0");
    let mut args = vec![
        "get",
        s(&fx.torrent),
        "-o",
        s(dir),
        "--listen",
        &listen,
        "--no-dht",
    ];
    args.extend_from_slice(extra);
    spore(ctx, "spore-get", &args)
}

/// `spore seed` of the fixture's data, loopback only: bound to `ip`, DHT off, plus `extra`.
fn spore_seed(ctx: &Ctx, fx: &Fixture, ip: &str, extra: &[&str]) -> (Peer, String) {
    let listen = format!("{ip}:0");
    let mut args = vec![
        "seed",
        s(&fx.torrent),
        "--data",
        s(&fx.src),
        "--listen",
        &listen,
        "--no-dht",
    ];
    args.extend_from_slice(extra);
    let mut p = spore(ctx, "spore-seed", &args);
    let addr = p.listening(ctx);
    p.wait_for(ctx, "seeding ");
    ctx.step(&format!("spore seeding on {addr}"));
    (p, addr)
}

// ---------------------------------------------------------------------------------------------
// `spore tracker` and scrapes of it.

struct Tracker {
    _proc: Peer,
    http: String,
    udp: String,
}

fn start_tracker(ctx: &Ctx) -> Tracker {
    let mut p = spore(
        ctx,
        "tracker",
        &["tracker", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
    );
    let mut http = None;
    let mut udp = None;
    while http.is_none() || udp.is_none() {
        let line = p.wait_for(ctx, "tracker: ");
        if let Some(u) = line.split("HTTP on ").nth(1) {
            http = Some(u.trim().to_string());
        }
        if let Some(u) = line.split("UDP on ").nth(1) {
            udp = Some(u.trim().to_string());
        }
    }
    Tracker {
        _proc: p,
        http: http.unwrap(),
        udp: udp.unwrap(),
    }
}

impl Tracker {
    /// How many seeders the tracker has for the 20-byte info-hash `ih` (hex), by HTTP scrape.
    fn seeders(&self, ih: &str) -> Option<u64> {
        let rest = self.http.strip_prefix("http://")?;
        let (host, path) = rest.split_once('/')?;
        let scrape = path.replace("announce", "scrape");
        let mut query = String::new();
        for i in (0..ih.len()).step_by(2) {
            query.push('%');
            query.push_str(&ih[i..i + 2]);
        }
        let mut conn = TcpStream::connect(host).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            conn,
            "GET /{scrape}?info_hash={query} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).ok()?;
        let text = String::from_utf8_lossy(&reply);
        let after = text.split("8:completei").nth(1)?;
        after.split('e').next()?.parse().ok()
    }

    /// Waits until the tracker knows at least `n` seeders of the fixture's torrent.
    fn wait_seeders(&self, ctx: &Ctx, fx: &Fixture, n: u64) {
        ctx.poll(&format!("{n} seeder(s) at the tracker"), || {
            self.seeders(&fx.scrape_hash).filter(|&k| k >= n)
        });
        ctx.step(&format!("tracker knows {n} seeder(s)"));
    }
}

// ---------------------------------------------------------------------------------------------
// Content: deterministic files and a torrent of them.

struct FileSpec {
    /// Path relative to the save directory, e.g. "set/docs/beta.bin" (or "clip.bin" single-file).
    rel: String,
    len: u64,
    sha: Vec<u8>,
}

struct Fixture {
    /// Directory holding the content (a seeder's save path).
    src: PathBuf,
    name: String,
    files: Vec<FileSpec>,
    torrent: PathBuf,
    /// Hex info-hash to scrape the tracker with (v1, or v2 truncated to 20 bytes).
    scrape_hash: String,
}

/// Writes `len` pseudo-random bytes (xorshift64*, seeded) to `path`, returning their SHA-256.
fn write_data(path: &Path, seed: u64, len: u64) -> Vec<u8> {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = BufWriter::new(File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = len;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
    hasher.finalize().to_vec()
}

/// Makes `files` (paths inside the torrent, sizes) under ctx/`tag`/src and a torrent of them.
/// With one file and `multi` false the torrent is single-file, named after it; otherwise the
/// files live in a directory `name`.
#[allow(clippy::too_many_arguments)]
fn fixture(
    ctx: &Ctx,
    tag: &str,
    name: &str,
    multi: bool,
    files: &[(&str, u64)],
    trackers: &[&str],
    piece_length: &str,
    version: &str,
) -> Fixture {
    let src = ctx.path(&format!("{tag}/src"));
    let mut specs = Vec::new();
    for (i, (path, len)) in files.iter().enumerate() {
        let rel = if multi {
            format!("{name}/{path}")
        } else {
            assert_eq!(files.len(), 1);
            name.to_string()
        };
        let seed = 0x5EED_0000 + 131 * i as u64 + tag.len() as u64 * 7 + *len;
        let sha = write_data(&src.join(&rel), seed, *len);
        specs.push(FileSpec {
            rel,
            len: *len,
            sha,
        });
    }
    let torrent = ctx.path(&format!("{tag}/{name}.torrent"));
    let content = src.join(name);
    let mut args = vec![
        "create",
        s(&content),
        "-o",
        s(&torrent),
        "--piece-length",
        piece_length,
        "--no-date",
        version,
    ];
    for t in trackers {
        args.push("-t");
        args.push(t);
    }
    spore_out(&args);
    let info: serde_json::Value =
        serde_json::from_str(&spore_out(&["info", "--json", s(&torrent)])).unwrap();
    let scrape_hash = match info["info_hash_v1"].as_str() {
        Some(h) => h.to_string(),
        None => info["info_hash_v2"].as_str().unwrap()[..40].to_string(),
    };
    // `--files` numbers are the non-pad files in `spore info` order; keep ours in that order.
    let listed: Vec<String> = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["pad"].as_bool().unwrap_or(false))
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    let ordered: Vec<FileSpec> = listed
        .iter()
        .map(|p| {
            let i = specs
                .iter()
                .position(|f| &f.rel == p)
                .unwrap_or_else(|| panic!("torrent lists {p}, not one of ours"));
            specs.swap_remove(i)
        })
        .collect();
    assert!(specs.is_empty(), "torrent misses files");
    Fixture {
        src,
        name: name.to_string(),
        files: ordered,
        torrent,
        scrape_hash,
    }
}

fn sha256_file(path: &Path) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether file `i` of the fixture is under `dir` with the right length and SHA-256.
fn file_ok(fx: &Fixture, dir: &Path, i: usize) -> Result<(), String> {
    let f = &fx.files[i];
    let path = dir.join(&f.rel);
    let len = std::fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len != f.len {
        return Err(format!(
            "{}: {len} bytes, expected {}",
            path.display(),
            f.len
        ));
    }
    let got = sha256_file(&path);
    if got != f.sha {
        return Err(format!(
            "{}: SHA-256 {} expected {}",
            path.display(),
            hex(&got),
            hex(&f.sha)
        ));
    }
    Ok(())
}

/// Asserts that the files numbered `which` (all if None) are under `dir`, byte for byte.
fn assert_files(ctx: &Ctx, fx: &Fixture, dir: &Path, which: Option<&[usize]>) {
    let all: Vec<usize> = (0..fx.files.len()).collect();
    for &i in which.unwrap_or(&all) {
        if let Err(e) = file_ok(fx, dir, i) {
            panic!("{}: file {i} is wrong: {e}", ctx.name);
        }
    }
}

/// Checks the unselected files against what partial downloads may legitimately write: see
/// `common::check_skipped_files`. File offsets come from the torrent, pad files included.
fn skipped_ok(fx: &Fixture, dl: &Path, selected: &[usize]) -> Result<(), String> {
    let info: serde_json::Value =
        serde_json::from_str(&spore_out(&["info", "--json", s(&fx.torrent)])).unwrap();
    let piece_length = info["piece_length"].as_u64().unwrap();
    // `--files` numbers count the non-pad files only.
    let mut number = 0;
    let files: Vec<common::Laid> = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let pad = f["pad"].as_bool().unwrap_or(false);
            let path = f["path"].as_str().unwrap();
            let selected = !pad && {
                number += 1;
                selected.contains(&(number - 1))
            };
            common::Laid {
                got: dl.join(path),
                want: fx.src.join(path),
                len: f["length"].as_u64().unwrap(),
                pad,
                selected,
            }
        })
        .collect();
    common::check_skipped_files(&files, piece_length)
}

/// Describes what is on disk for the unselected files, for failure messages.
fn describe_others(fx: &Fixture, dir: &Path, selected: &[usize]) -> String {
    let mut out = Vec::new();
    for (i, f) in fx.files.iter().enumerate() {
        if selected.contains(&i) {
            continue;
        }
        let p = dir.join(&f.rel);
        let state = match std::fs::metadata(&p) {
            Err(_) => "absent".to_string(),
            Ok(m) if m.len() == f.len && sha256_file(&p) == f.sha => "complete".to_string(),
            Ok(m) => format!("{} of {} bytes on disk, not complete", m.len(), f.len),
        };
        out.push(format!("{i} {}: {state}", f.rel));
    }
    out.join("; ")
}

// ---------------------------------------------------------------------------------------------
// libtorrent (tests/interop/lt_transfer.py).

/// A libtorrent peer (tests/interop/lt_transfer.py) and what it takes to start it again.
struct Libtorrent {
    peer: Peer,
    mode: String,
    args: Vec<String>,
    restarted: bool,
}

fn libtorrent(
    ctx: &Ctx,
    mode: &str,
    fx: &Fixture,
    save: &Path,
    ip: &str,
    peers: &[&str],
) -> Libtorrent {
    libtorrent_with(ctx, mode, fx, save, ip, peers, &[])
}

/// [`libtorrent`] with its peers over `transports`: `tcp`, `utp` (TCP off both ways) or `both`.
fn libtorrent_over(
    ctx: &Ctx,
    mode: &str,
    fx: &Fixture,
    save: &Path,
    ip: &str,
    peers: &[&str],
    transports: &str,
) -> Libtorrent {
    libtorrent_with(
        ctx,
        mode,
        fx,
        save,
        ip,
        peers,
        &["--transports", transports],
    )
}

/// As `libtorrent`, with `extra` arguments for lt_transfer.py (e.g. `--encryption forced`).
fn libtorrent_with(
    ctx: &Ctx,
    mode: &str,
    fx: &Fixture,
    save: &Path,
    ip: &str,
    peers: &[&str],
    extra: &[&str],
) -> Libtorrent {
    let mut args: Vec<String> = [mode, s(&fx.torrent), s(save), "--ip", ip]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
    for p in peers {
        args.extend(["--peer".to_string(), p.to_string()]);
    }
    let peer = spawn_libtorrent(ctx, &format!("libtorrent-{mode}"), &args);
    Libtorrent {
        peer,
        mode: mode.to_string(),
        args,
        restarted: false,
    }
}

fn spawn_libtorrent(ctx: &Ctx, label: &str, args: &[String]) -> Peer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_transfer.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script)
        .args(args)
        .args(["--timeout", &ctx.left().as_secs().to_string()]);
    let mut p = Peer::spawn(ctx, label, cmd);
    p.wait_for(ctx, "\"listening\"");
    p
}

/// Waits for libtorrent's `done` event, failing early on a timeout event or exit.
///
/// Debian's libtorrent 2.0.8 has been seen (once in CI) to die of SIGSEGV about a second after
/// start, before it had touched any peer; its faulthandler trace is kept in the log. Such a crash
/// of the other program, killed by a signal with no peer ever connected, is restarted once, with
/// the same arguments, and said so; a second crash, any other exit, or a crash after a peer
/// connected fails the test.
fn libtorrent_done(ctx: &Ctx, lt: &mut Libtorrent) -> String {
    let is_done =
        |l: &str| l.contains("\"event\": \"done\"") || l.contains("\"event\": \"timeout\"");
    let line = loop {
        match lt.peer.next_line(ctx, "done", is_done) {
            Ok(line) => break line,
            Err(status) => {
                let signal = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
                let err_log = ctx.path(&format!("{}.err", lt.peer.label));
                let stderr = std::fs::read_to_string(&err_log).unwrap_or_default();
                let saw_peer = stderr.contains("peer_connect_alert")
                    || stderr.contains("incoming_connection_alert")
                    || stderr.contains("peer_disconnected_alert");
                let crashed = matches!(signal, Some(libc::SIGSEGV | libc::SIGBUS | libc::SIGABRT));
                if !crashed || saw_peer || lt.restarted {
                    panic!(
                        "{}: {} exited ({status:?}) before printing done",
                        ctx.name, lt.peer.label
                    );
                }
                ctx.step(&format!(
                    "libtorrent crashed (signal {}) before any peer connected; starting it once more",
                    signal.unwrap_or(0)
                ));
                lt.restarted = true;
                lt.peer =
                    spawn_libtorrent(ctx, &format!("libtorrent-{}-restarted", lt.mode), &lt.args);
            }
        }
    };
    assert!(line.contains("\"done\""), "libtorrent gave up: {line}");
    ctx.step(&format!("libtorrent has every piece: {line}"));
    line
}

// ---------------------------------------------------------------------------------------------
// aria2.

fn aria2(ctx: &Ctx, mode: &str, fx: &Fixture, dir: &Path, ip: &str) -> Peer {
    aria2_with(ctx, mode, fx, dir, ip, &[])
}

/// As `aria2`, with `extra` options (e.g. `--bt-require-crypto=true`).
fn aria2_with(ctx: &Ctx, mode: &str, fx: &Fixture, dir: &Path, ip: &str, extra: &[&str]) -> Peer {
    let log = ctx.path(&format!("aria2-{mode}.log"));
    let mut cmd = Command::new("aria2c");
    cmd.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        &format!("--interface={ip}"),
        &format!("--listen-port={}", free_port(ip)),
        "--file-allocation=none",
        "--auto-file-renaming=false",
        "--summary-interval=0",
        "--show-console-readout=false",
        "--console-log-level=notice",
        &format!("--log={}", s(&log)),
        "--log-level=info",
        &format!("--stop-with-process={}", std::process::id()),
        "--bt-tracker-connect-timeout=5",
        "--bt-tracker-timeout=10",
        "-d",
        s(dir),
    ]);
    if mode == "seed" {
        // Check the data, then seed regardless of ratio until killed.
        cmd.args(["-V", "--bt-hash-check-seed=true", "--seed-ratio=0.0"]);
    } else {
        cmd.args(["--seed-time=0"]);
    }
    cmd.args(extra);
    cmd.arg(s(&fx.torrent));
    ctx.add_log(format!("aria2-{mode} log"), log);
    Peer::spawn(ctx, &format!("aria2-{mode}"), cmd)
}

// ---------------------------------------------------------------------------------------------
// Transmission 3.00: transmission-daemon driven by transmission-remote.

struct Transmission {
    proc: Peer,
    rpc: String,
    peer_addr: String,
}

fn transmission(ctx: &Ctx, ip: &str) -> Transmission {
    transmission_with(ctx, ip, serde_json::json!({}))
}

/// As `transmission`, with `extra` keys for its settings.json (e.g. `"encryption": 2`).
fn transmission_with(ctx: &Ctx, ip: &str, extra: serde_json::Value) -> Transmission {
    let conf = ctx.path("transmission");
    std::fs::create_dir_all(&conf).unwrap();
    let [peer_port, rpc_port] = free_ports(ip);
    let settings = serde_json::json!({
        "dht-enabled": false,
        "lpd-enabled": false,
        "pex-enabled": false,
        "utp-enabled": false,
        "port-forwarding-enabled": false,
        "bind-address-ipv4": ip,
        "bind-address-ipv6": "::1",
        "peer-port": peer_port,
        "peer-port-random-on-start": false,
        "rpc-enabled": true,
        "rpc-bind-address": ip,
        "rpc-port": rpc_port,
        "rpc-authentication-required": false,
        "rpc-whitelist-enabled": false,
        "rpc-host-whitelist-enabled": false,
        "download-dir": s(&ctx.path("transmission-downloads")),
        "incomplete-dir-enabled": false,
        "rename-partial-files": false,
        "start-added-torrents": true,
        "ratio-limit-enabled": false,
        "idle-seeding-limit-enabled": false,
        "speed-limit-up-enabled": false,
        "speed-limit-down-enabled": false,
        "message-level": 2,
    });
    let mut settings = settings;
    if let (Some(all), Some(more)) = (settings.as_object_mut(), extra.as_object()) {
        all.extend(more.clone());
    }
    std::fs::write(conf.join("settings.json"), settings.to_string()).unwrap();
    let mut cmd = Command::new("transmission-daemon");
    // It keeps a session-id file in TMPDIR and removes it only on a clean exit: in the test's
    // directory, killing it leaves nothing behind in /tmp.
    cmd.args(["-f", "-g", s(&conf)]).env("TMPDIR", &conf);
    let mut proc = Peer::spawn(ctx, "transmission", cmd);
    let rpc = format!("{ip}:{rpc_port}");
    ctx.poll("transmission-daemon's RPC", || {
        proc.assert_alive(ctx);
        runs(Command::new("transmission-remote").args([&rpc, "-l"])).then_some(())
    });
    ctx.step("transmission-daemon answers");
    Transmission {
        proc,
        rpc,
        peer_addr: format!("{ip}:{peer_port}"),
    }
}

impl Transmission {
    fn remote(&self, args: &[&str]) -> String {
        let out = Command::new("transmission-remote")
            .arg(&self.rpc)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "transmission-remote {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn add(&self, fx: &Fixture, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let out = self.remote(&["-a", s(&fx.torrent), "-w", s(dir)]);
        assert!(out.contains("success"), "adding the torrent: {out}");
    }

    /// (percent done, state) of the daemon's only torrent.
    fn status(&self) -> (f64, String) {
        let info = self.remote(&["-t", "1", "-i"]);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let pct = field("Percent Done:")
            .trim_end_matches('%')
            .parse()
            .unwrap_or(0.0);
        (pct, field("State:"))
    }

    /// Waits until the torrent is checked and running (not queued, verifying or stopped).
    fn wait_ready(&mut self, ctx: &Ctx, complete: bool) {
        let what = if complete {
            "Transmission to verify the data as complete"
        } else {
            "Transmission to start the torrent"
        };
        ctx.poll(what, || {
            self.proc.assert_alive(ctx);
            let (pct, state) = self.status();
            let busy = state.is_empty()
                || state.contains("Verif")
                || state.contains("Queued")
                || state.contains("Stopped")
                || state.contains("Will Verify");
            (!busy && (!complete || pct >= 100.0)).then_some(())
        });
        ctx.step(&format!("transmission ready: {:?}", self.status()));
    }

    fn wait_complete(&mut self, ctx: &Ctx) {
        ctx.poll("Transmission to complete the download", || {
            self.proc.assert_alive(ctx);
            (self.status().0 >= 100.0).then_some(())
        });
        ctx.step("transmission download complete");
    }
}

// ---------------------------------------------------------------------------------------------
// Content used by the tests.

const BUDGET: Duration = Duration::from_secs(100);

/// Four files of different sizes, none a multiple of the 256 KiB piece; the 100-byte one sits
/// inside a piece shared with both neighbours.
const MIXED: &[(&str, u64)] = &[
    ("alpha.bin", 1_500_001),
    ("docs/beta.bin", 3 * 262_144 + 12_345),
    ("docs/gamma.txt", 100),
    ("zeta.bin", 6_000_000),
];

// ---------------------------------------------------------------------------------------------
// 1. Spore seeds, a real client downloads.

/// `spore seed` announces over UDP; libtorrent finds it there and downloads a 12 MiB single file.
#[test]
fn spore_seeds_libtorrent_downloads_over_udp_tracker() {
    if !have_libtorrent() {
        return;
    }
    let ctx = Ctx::new("spore_seeds_libtorrent", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "c",
        "clip.bin",
        false,
        &[("clip.bin", 12 * 1024 * 1024 + 12_345)],
        &[&tracker.udp],
        "256K",
        "--v1",
    );
    let (mut seeder, _) = spore_seed(&ctx, &fx, "127.0.0.101", &[]);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("lt-dl");
    let mut lt = libtorrent(&ctx, "get", &fx, &dl, "127.0.0.102", &[]);
    libtorrent_done(&ctx, &mut lt);
    assert_files(&ctx, &fx, &dl, None);
    seeder.assert_alive(&ctx);
}

/// `spore seed` announces over HTTP; aria2 finds it there and downloads three files (aria2 1.36
/// has no UDP tracker support), then exits 0.
#[test]
fn spore_seeds_aria2_downloads_over_http_tracker() {
    if !have_aria2() {
        return;
    }
    let ctx = Ctx::new("spore_seeds_aria2", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "a",
        "album",
        true,
        &[
            ("01.flac", 3_000_017),
            ("02.flac", 5 * 1024 * 1024),
            ("cover.jpg", 70_001),
        ],
        &[&tracker.http],
        "128K",
        "--v1",
    );
    let (mut seeder, _) = spore_seed(&ctx, &fx, "127.0.0.103", &[]);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("aria2-dl");
    let mut a = aria2(&ctx, "get", &fx, &dl, "127.0.0.104");
    let status = a.wait_exit(&ctx);
    ctx.step("aria2 exited");
    assert!(status.success(), "aria2c exited with {status}");
    assert_files(&ctx, &fx, &dl, None);
    seeder.assert_alive(&ctx);
}

/// Transmission has the torrent with an empty directory; `spore seed --peer` dials it and
/// Transmission downloads all three files. Transmission only declares interest on its 10-second
/// timer, so this takes about 15 s whatever the size.
#[test]
fn spore_seeds_transmission_downloads() {
    if !have_transmission() {
        return;
    }
    let ctx = Ctx::new("spore_seeds_transmission", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "p",
        "photos",
        true,
        &[
            ("raw/1.raw", 4 * 1024 * 1024 + 1),
            ("raw/2.raw", 2_000_000),
            ("notes.txt", 999),
        ],
        &[&tracker.http],
        "256K",
        "--v1",
    );
    // Transmission first (it only accepts connections on loopback), then Spore dials it.
    let mut tr = transmission(&ctx, "127.0.0.106");
    let dl = ctx.path("tr-dl");
    tr.add(&fx, &dl);
    tr.wait_ready(&ctx, false);
    let peer = tr.peer_addr.clone();
    let (mut seeder, _) = spore_seed(&ctx, &fx, "127.0.0.105", &["--peer", &peer]);
    tr.wait_complete(&ctx);
    assert_files(&ctx, &fx, &dl, None);
    seeder.assert_alive(&ctx);
}

// ---------------------------------------------------------------------------------------------
// 2. A real client seeds, Spore downloads.

/// libtorrent seeds 24 MiB; `spore get --no-seed` finds it through the HTTP tracker, completes and
/// exits 0.
#[test]
fn libtorrent_seeds_spore_downloads_over_http_tracker() {
    if !have_libtorrent() {
        return;
    }
    let ctx = Ctx::new("libtorrent_seeds_spore", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "d",
        "disk.img",
        false,
        &[("disk.img", 24 * 1024 * 1024 + 3)],
        &[&tracker.http],
        "512K",
        "--v1",
    );
    let mut lt = libtorrent(&ctx, "seed", &fx, &fx.src, "127.0.0.107", &[]);
    libtorrent_done(&ctx, &mut lt);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(&ctx, &fx, &dl, "127.0.0.108", &["--no-seed"]);
    get.wait_for(&ctx, &format!("complete: {}", fx.name));
    ctx.step("spore get complete");
    let status = get.wait_exit(&ctx);
    assert!(status.success(), "spore get exited with {status}");
    assert_files(&ctx, &fx, &dl, None);
}

/// aria2 checks and seeds three files; `spore get` finds it through the tracker.
#[test]
fn aria2_seeds_spore_downloads_over_http_tracker() {
    if !have_aria2() {
        return;
    }
    let ctx = Ctx::new("aria2_seeds_spore", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "t",
        "tracks",
        true,
        &[
            ("side-a.wav", 6_000_000),
            ("side-b.wav", 4 * 1024 * 1024),
            ("sleeve.txt", 4_321),
        ],
        &[&tracker.http],
        "256K",
        "--v1",
    );
    // aria2 announces once its hash check finds the data complete.
    let _seeder = aria2(&ctx, "seed", &fx, &fx.src, "127.0.0.109");
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(&ctx, &fx, &dl, "127.0.0.110", &["--no-seed"]);
    get.wait_for(&ctx, &format!("complete: {}", fx.name));
    ctx.step("spore get complete");
    let status = get.wait_exit(&ctx);
    assert!(status.success(), "spore get exited with {status}");
    assert_files(&ctx, &fx, &dl, None);
}

/// Transmission verifies and seeds three files; `spore get --peer` dials it. Transmission unchokes
/// new peers only on its 10-second rechoke, so this takes about 13 s whatever the size.
#[test]
fn transmission_seeds_spore_downloads() {
    if !have_transmission() {
        return;
    }
    let ctx = Ctx::new("transmission_seeds_spore", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "v",
        "video",
        true,
        &[
            ("part1.mkv", 7_000_003),
            ("part2.mkv", 3 * 1024 * 1024),
            ("subs/en.srt", 12_001),
        ],
        &[&tracker.http],
        "256K",
        "--v1",
    );
    let mut tr = transmission(&ctx, "127.0.0.111");
    tr.add(&fx, &fx.src);
    tr.wait_ready(&ctx, true);
    let peer = tr.peer_addr.clone();
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(
        &ctx,
        &fx,
        &dl,
        "127.0.0.112",
        &["--no-seed", "--peer", &peer],
    );
    get.wait_for(&ctx, &format!("complete: {}", fx.name));
    ctx.step("spore get complete");
    let status = get.wait_exit(&ctx);
    assert!(status.success(), "spore get exited with {status}");
    assert_files(&ctx, &fx, &dl, None);
}

// ---------------------------------------------------------------------------------------------
// 3. A partial selection (`--files`) of a multi-file torrent, from each real client.

fn partial_check(ctx: &Ctx, fx: &Fixture, dl: &Path, selected: &[usize], get: &mut Peer) {
    get.wait_for(ctx, &format!("complete: {}", fx.name));
    ctx.step("spore get complete");
    let status = get.wait_exit(ctx);
    assert!(status.success(), "spore get exited with {status}");
    assert_files(ctx, fx, dl, Some(selected));
    if let Err(e) = skipped_ok(fx, dl, selected) {
        panic!(
            "{}: {e}; unselected files: {}",
            ctx.name,
            describe_others(fx, dl, selected)
        );
    }
}

/// `--files 1,3` of MIXED from libtorrent: beta and zeta, around the unselected 100-byte gamma.
#[test]
fn partial_selection_from_libtorrent() {
    if !have_libtorrent() {
        return;
    }
    let ctx = Ctx::new("partial_from_libtorrent", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "m",
        "mixed",
        true,
        MIXED,
        &[&tracker.http],
        "256K",
        "--v1",
    );
    let mut lt = libtorrent(&ctx, "seed", &fx, &fx.src, "127.0.0.113", &[]);
    libtorrent_done(&ctx, &mut lt);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(
        &ctx,
        &fx,
        &dl,
        "127.0.0.114",
        &["--no-seed", "--files", "1,3"],
    );
    partial_check(&ctx, &fx, &dl, &[1, 3], &mut get);
}

/// `--files 0,2` of MIXED from aria2: alpha and the 100-byte gamma, whose piece it shares with
/// unselected neighbours on both sides.
#[test]
fn partial_selection_from_aria2() {
    if !have_aria2() {
        return;
    }
    let ctx = Ctx::new("partial_from_aria2", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "m",
        "mixed",
        true,
        MIXED,
        &[&tracker.http],
        "256K",
        "--v1",
    );
    let _seeder = aria2(&ctx, "seed", &fx, &fx.src, "127.0.0.115");
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(
        &ctx,
        &fx,
        &dl,
        "127.0.0.116",
        &["--no-seed", "--files", "0,2"],
    );
    partial_check(&ctx, &fx, &dl, &[0, 2], &mut get);
}

/// `--files 1-2` of MIXED from Transmission (dialed with `--peer`): beta and gamma.
#[test]
fn partial_selection_from_transmission() {
    if !have_transmission() {
        return;
    }
    let ctx = Ctx::new("partial_from_transmission", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "m",
        "mixed",
        true,
        MIXED,
        &[&tracker.http],
        "256K",
        "--v1",
    );
    let mut tr = transmission(&ctx, "127.0.0.117");
    tr.add(&fx, &fx.src);
    tr.wait_ready(&ctx, true);
    let peer = tr.peer_addr.clone();
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(
        &ctx,
        &fx,
        &dl,
        "127.0.0.118",
        &["--no-seed", "--files", "1-2", "--peer", &peer],
    );
    partial_check(&ctx, &fx, &dl, &[1, 2], &mut get);
}

// ---------------------------------------------------------------------------------------------
// 4. BitTorrent v2 and hybrid torrents (BEP 52) with libtorrent, the one real client here that
//    speaks v2. Multi-file, so v2's per-file merkle trees and the hybrid's pad files are exercised.

const V2_FILES: &[(&str, u64)] = &[
    ("a.bin", 2_500_000),
    ("b/c.bin", 1_048_576),
    ("b/d.txt", 3_333),
    ("e.bin", 4_000_001),
];

fn spore_seeds_libtorrent_downloads_version(name: &'static str, version: &str, ips: [&str; 2]) {
    if !have_libtorrent() {
        return;
    }
    // These transfers take about a second; a stall should not hold the suite for long.
    let ctx = Ctx::new(name, Duration::from_secs(45));
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "s",
        "tree",
        true,
        V2_FILES,
        &[&tracker.http],
        "64K",
        version,
    );
    let (mut seeder, _) = spore_seed(&ctx, &fx, ips[0], &[]);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("lt-dl");
    let mut lt = libtorrent(&ctx, "get", &fx, &dl, ips[1], &[]);
    libtorrent_done(&ctx, &mut lt);
    assert_files(&ctx, &fx, &dl, None);
    seeder.assert_alive(&ctx);
}

fn libtorrent_seeds_spore_downloads_version(name: &'static str, version: &str, ips: [&str; 2]) {
    if !have_libtorrent() {
        return;
    }
    let ctx = Ctx::new(name, Duration::from_secs(45));
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "l",
        "tree",
        true,
        V2_FILES,
        &[&tracker.http],
        "64K",
        version,
    );
    let mut lt = libtorrent(&ctx, "seed", &fx, &fx.src, ips[0], &[]);
    libtorrent_done(&ctx, &mut lt);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(&ctx, &fx, &dl, ips[1], &["--no-seed"]);
    get.wait_for(&ctx, &format!("complete: {}", fx.name));
    ctx.step("spore get complete");
    let status = get.wait_exit(&ctx);
    assert!(status.success(), "spore get exited with {status}");
    assert_files(&ctx, &fx, &dl, None);
}

/// libtorrent 2.0 treats every file of a v2-only torrent as padded to a whole piece (as if it had
/// BEP 47 pad files) and asks for the block at the end of a file with the full 16 KiB length, e.g.
/// `Request { index: 55, begin: 0, length: 16384 }` for a 3,333-byte file that is one piece. Spore
/// must answer with the file's bytes followed by zeros; a Reject makes libtorrent ask again at once,
/// forever.
#[test]
fn spore_seeds_libtorrent_downloads_v2() {
    spore_seeds_libtorrent_downloads_version(
        "spore_seeds_libtorrent_v2",
        "--v2",
        ["127.0.0.119", "127.0.0.120"],
    );
}

/// A hybrid torrent (BEP 47 pad files between files) seeded by Spore, downloaded by libtorrent.
#[test]
fn spore_seeds_libtorrent_downloads_hybrid() {
    spore_seeds_libtorrent_downloads_version(
        "spore_seeds_libtorrent_hybrid",
        "--hybrid",
        ["127.0.0.121", "127.0.0.122"],
    );
}

/// A v2-only torrent seeded by libtorrent, downloaded by Spore (per-file pieces, merkle checks).
#[test]
fn libtorrent_seeds_spore_downloads_v2() {
    libtorrent_seeds_spore_downloads_version(
        "libtorrent_seeds_spore_v2",
        "--v2",
        ["127.0.0.123", "127.0.0.124"],
    );
}

/// A hybrid torrent seeded by libtorrent, downloaded by Spore.
#[test]
fn libtorrent_seeds_spore_downloads_hybrid() {
    libtorrent_seeds_spore_downloads_version(
        "libtorrent_seeds_spore_hybrid",
        "--hybrid",
        ["127.0.0.125", "127.0.0.126"],
    );
}

// ---------------------------------------------------------------------------------------------
// 5. All three real clients at once, each direction.

/// One `spore seed` serves libtorrent and aria2 (through the tracker) and Transmission (dialed)
/// at the same time; all three end up with every file.
#[test]
fn spore_seeds_three_clients_at_once() {
    if !have_libtorrent() || !have_aria2() || !have_transmission() {
        return;
    }
    let ctx = Ctx::new("spore_seeds_three_clients", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "x",
        "bundle",
        true,
        &[
            ("big.bin", 5_000_000),
            ("mid.bin", 2 * 1024 * 1024 + 7),
            ("small.txt", 5_555),
        ],
        &[&tracker.http],
        "128K",
        "--v1",
    );
    let mut tr = transmission(&ctx, "127.0.0.129");
    let tr_dl = ctx.path("tr-dl");
    tr.add(&fx, &tr_dl);
    tr.wait_ready(&ctx, false);
    let peer = tr.peer_addr.clone();
    let (mut seeder, _) = spore_seed(&ctx, &fx, "127.0.0.127", &["--peer", &peer]);
    tracker.wait_seeders(&ctx, &fx, 1);
    let lt_dl = ctx.path("lt-dl");
    let aria_dl = ctx.path("aria2-dl");
    let mut lt = libtorrent(&ctx, "get", &fx, &lt_dl, "127.0.0.128", &[]);
    let mut a = aria2(&ctx, "get", &fx, &aria_dl, "127.0.0.130");
    libtorrent_done(&ctx, &mut lt);
    let status = a.wait_exit(&ctx);
    ctx.step("aria2 exited");
    assert!(status.success(), "aria2c exited with {status}");
    tr.wait_complete(&ctx);
    for dl in [&lt_dl, &aria_dl, &tr_dl] {
        assert_files(&ctx, &fx, dl, None);
    }
    seeder.assert_alive(&ctx);
}

/// libtorrent, aria2 and Transmission all seed; `spore get` learns the first two (and Transmission
/// itself) from the tracker, dials Transmission too, and assembles the files from whoever serves.
#[test]
fn spore_downloads_from_three_clients_at_once() {
    if !have_libtorrent() || !have_aria2() || !have_transmission() {
        return;
    }
    let ctx = Ctx::new("spore_gets_from_three_clients", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "y",
        "bundle",
        true,
        &[
            ("big.bin", 9_000_000),
            ("mid.bin", 3 * 1024 * 1024 + 7),
            ("small.txt", 5_555),
        ],
        &[&tracker.http],
        "128K",
        "--v1",
    );
    let mut tr = transmission(&ctx, "127.0.0.131");
    tr.add(&fx, &fx.src);
    tr.wait_ready(&ctx, true);
    let mut lt = libtorrent(&ctx, "seed", &fx, &fx.src, "127.0.0.132", &[]);
    libtorrent_done(&ctx, &mut lt);
    let _aria = aria2(&ctx, "seed", &fx, &fx.src, "127.0.0.133");
    // Transmission, libtorrent and aria2 all announce as seeders before Spore asks the tracker.
    tracker.wait_seeders(&ctx, &fx, 3);
    let peer = tr.peer_addr.clone();
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(
        &ctx,
        &fx,
        &dl,
        "127.0.0.134",
        &["--no-seed", "--peer", &peer],
    );
    get.wait_for(&ctx, &format!("complete: {}", fx.name));
    ctx.step("spore get complete");
    let status = get.wait_exit(&ctx);
    assert!(status.success(), "spore get exited with {status}");
    assert_files(&ctx, &fx, &dl, None);
}

// ---------------------------------------------------------------------------------------------
// 6. A `--peer` that is not up yet when Spore starts.

/// A `--peer` that refuses the first connection (it is not listening yet) must be dialled again:
/// with `--no-trackers` nothing else would ever hand the address back. Here aria2 starts seeding on
/// the given address two seconds after Spore.
#[test]
fn spore_retries_a_peer_that_comes_up_late() {
    if !have_aria2() {
        return;
    }
    let ctx = Ctx::new("late_peer", Duration::from_secs(40));
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "z",
        "late.bin",
        false,
        &[("late.bin", 3_000_000)],
        &[&tracker.http],
        "256K",
        "--v1",
    );
    let ip = "127.0.0.136";
    let port = free_port(ip);
    let peer = format!("{ip}:{port}");
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(
        &ctx,
        &fx,
        &dl,
        "127.0.0.135",
        &["--no-seed", "--no-trackers", "--peer", &peer],
    );
    get.listening(&ctx);
    std::thread::sleep(Duration::from_secs(2)); // the point of the test: the peer comes up late
    let mut cmd = Command::new("aria2c");
    cmd.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        &format!("--interface={ip}"),
        &format!("--listen-port={port}"),
        "--summary-interval=0",
        "--console-log-level=notice",
        &format!("--stop-with-process={}", std::process::id()),
        "-V",
        "--bt-hash-check-seed=true",
        "--seed-ratio=0.0",
        "-d",
        s(&fx.src),
        s(&fx.torrent),
    ]);
    let _aria = Peer::spawn(&ctx, "aria2-seed", cmd);
    ctx.step("aria2 started on the --peer address");
    get.wait_for(&ctx, &format!("complete: {}", fx.name));
    assert!(get.wait_exit(&ctx).success());
    assert_files(&ctx, &fx, &dl, None);
}

// ---------------------------------------------------------------------------------------------
// 6. uTP (BEP 29): with TCP off on one side or both, and the fall-back to TCP.

/// Whether Spore's debug log at LABEL.err says a peer connection ran over `carrier` (`Utp`, `Tcp`).
fn spore_log_says(ctx: &Ctx, label: &str, needle: &str) -> bool {
    std::fs::read_to_string(ctx.path(&format!("{label}.err")))
        .unwrap_or_default()
        .contains(needle)
}

/// libtorrent with TCP off both ways seeds; `spore get --transports utp` (no TCP either) finds it
/// through the tracker and dials it over uTP.
#[test]
fn libtorrent_seeds_spore_downloads_over_utp_only() {
    if !have_libtorrent() {
        return;
    }
    let ctx = Ctx::new("libtorrent_seeds_spore_utp", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "u",
        "utp.img",
        false,
        &[("utp.img", 16 * 1024 * 1024 + 7)],
        &[&tracker.http],
        "256K",
        "--v1",
    );
    let mut lt = libtorrent_over(&ctx, "seed", &fx, &fx.src, "127.0.0.140", &[], "utp");
    libtorrent_done(&ctx, &mut lt);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(
        &ctx,
        &fx,
        &dl,
        "127.0.0.141",
        &["--no-seed", "--transports", "utp"],
    );
    get.wait_for(&ctx, &format!("complete: {}", fx.name));
    assert!(get.wait_exit(&ctx).success());
    assert_files(&ctx, &fx, &dl, None);
    assert!(spore_log_says(&ctx, "spore-get", "dialled over Utp"));
}

/// `spore seed --transports utp` (its TCP listener closed); libtorrent with TCP off both ways finds
/// it through the tracker and downloads over uTP: Spore's incoming uTP path, through the gate.
#[test]
fn spore_seeds_libtorrent_downloads_over_utp_only() {
    if !have_libtorrent() {
        return;
    }
    let ctx = Ctx::new("spore_seeds_libtorrent_utp", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "w",
        "wave.bin",
        false,
        &[("wave.bin", 12 * 1024 * 1024 + 5)],
        &[&tracker.udp],
        "256K",
        "--v1",
    );
    let (mut seeder, _) = spore_seed(&ctx, &fx, "127.0.0.142", &["--transports", "utp"]);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("lt-dl");
    let mut lt = libtorrent_over(&ctx, "get", &fx, &dl, "127.0.0.143", &[], "utp");
    libtorrent_done(&ctx, &mut lt);
    assert_files(&ctx, &fx, &dl, None);
    seeder.assert_alive(&ctx);
    assert!(spore_log_says(&ctx, "spore-seed", "accepted over Utp"));
}

/// Transmission with uTP on: `spore seed --transports utp --peer` dials it over uTP (Spore has no
/// TCP at all) and Transmission downloads.
#[test]
fn spore_seeds_transmission_downloads_over_utp() {
    if !have_transmission() {
        return;
    }
    let ctx = Ctx::new("spore_seeds_transmission_utp", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "q",
        "quartet",
        true,
        &[("one.flac", 3 * 1024 * 1024 + 3), ("two.flac", 2_000_001)],
        &[&tracker.http],
        "256K",
        "--v1",
    );
    let mut tr = transmission_with(
        &ctx,
        "127.0.0.144",
        serde_json::json!({"utp-enabled": true}),
    );
    let dl = ctx.path("tr-dl");
    tr.add(&fx, &dl);
    tr.wait_ready(&ctx, false);
    let peer = tr.peer_addr.clone();
    let (mut seeder, _) = spore_seed(
        &ctx,
        &fx,
        "127.0.0.145",
        &["--transports", "utp", "--peer", &peer],
    );
    tr.wait_complete(&ctx);
    assert_files(&ctx, &fx, &dl, None);
    seeder.assert_alive(&ctx);
    assert!(spore_log_says(&ctx, "spore-seed", "dialled over Utp"));
}

/// Spore to Spore with the default transports: the dial goes over uTP.
#[test]
fn spore_to_spore_prefers_utp() {
    let ctx = Ctx::new("spore_to_spore_utp", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "s",
        "both.bin",
        false,
        &[("both.bin", 10 * 1024 * 1024 + 1)],
        &[&tracker.http],
        "256K",
        "--v1",
    );
    let (mut seeder, addr) = spore_seed(&ctx, &fx, "127.0.0.146", &["--no-trackers"]);
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(
        &ctx,
        &fx,
        &dl,
        "127.0.0.147",
        &["--no-seed", "--no-trackers", "--peer", &addr],
    );
    get.wait_for(&ctx, &format!("complete: {}", fx.name));
    assert!(get.wait_exit(&ctx).success());
    assert_files(&ctx, &fx, &dl, None);
    seeder.assert_alive(&ctx);
    assert!(spore_log_says(&ctx, "spore-get", "dialled over Utp"));
    assert!(spore_log_says(&ctx, "spore-seed", "accepted over Utp"));
}

/// A peer without uTP (`spore seed --transports tcp`: no UDP socket at all): the default
/// `spore get` dials uTP, hears nothing for its head start, and connects over TCP.
#[test]
fn spore_falls_back_to_tcp_for_a_peer_without_utp() {
    let ctx = Ctx::new("utp_fallback_to_tcp", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = fixture(
        &ctx,
        "f",
        "fallback.bin",
        false,
        &[("fallback.bin", 4 * 1024 * 1024 + 9)],
        &[&tracker.http],
        "256K",
        "--v1",
    );
    let (mut seeder, addr) = spore_seed(
        &ctx,
        &fx,
        "127.0.0.148",
        &["--no-trackers", "--transports", "tcp"],
    );
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(
        &ctx,
        &fx,
        &dl,
        "127.0.0.149",
        &["--no-seed", "--no-trackers", "--peer", &addr],
    );
    get.wait_for(&ctx, &format!("complete: {}", fx.name));
    assert!(get.wait_exit(&ctx).success());
    assert_files(&ctx, &fx, &dl, None);
    seeder.assert_alive(&ctx);
    assert!(spore_log_says(&ctx, "spore-get", "dialling over TCP too"));
    assert!(spore_log_says(&ctx, "spore-get", "dialled over Tcp"));
}
