//! Interop tests for torrent creation and reading, against real BitTorrent tools:
//! libtorrent 2.0 (python3-libtorrent, driven by `tests/interop/lt_helper.py`),
//! Transmission 3.00 (`transmission-show`, `transmission-create`) and mktorrent 1.1.
//!
//! * (a) torrents made by `spore create` (v1 single/multi-file, v2, hybrid, with
//!   tracker tiers and web seeds) are read by libtorrent and `transmission-show`
//!   exactly as `spore info --json` describes them, libtorrent parses Spore's
//!   magnet links, and libtorrent's own check of the data finds every piece valid
//!   (v1 SHA-1 pieces and v2 merkle roots/piece layers);
//! * (b) for the same files and piece size, Spore's `--no-date --no-creator`
//!   torrents have the same info-hash as libtorrent's own;
//! * (c) torrents made by transmission-create, mktorrent and libtorrent (v1, v2,
//!   hybrid) are read by `spore info --json` with the info-hashes, file lists,
//!   piece counts and trackers the tools report (v1 info-hashes are also
//!   computed here, from the raw info dictionary, with a tiny bdecoder of our own);
//! * (d) malformed torrents make `spore info` / `spore magnet` fail with exit code 2
//!   and exactly one line on stderr, never a panic.
//!
//! Missing tools make a test print `SKIP:` and pass, unless `CI=true`, where a
//! missing tool is a failure. Every child process is killed after a timeout. No
//! network is used: tracker and web-seed URLs point at 127.0.0.1 and are never
//! contacted.
//!
//! Tool behaviours these tests rely on (seen with the Debian 12 packages):
//! * libtorrent `create_torrent(fs, piece_size, flags=v1_only)` adds no pad files.
//!   With `lt.add_files(fs, dir)` its v1 file order is the directory's readdir
//!   order and hidden files are included, so for comparing info-hashes the
//!   helper builds the `file_storage` itself, in Spore's order (paths sorted
//!   component-wise by bytes, hidden names skipped). v2 and hybrid torrents are
//!   always in that canonical order.
//! * libtorrent always writes "creation date" (the helper drops it from the
//!   generated entry) and writes "created by" only if `set_creator` is called.
//! * libtorrent's default hybrid layout pads after every file *including the
//!   last* (a tail pad file); with `canonical_files_no_tail_padding` it leaves out
//!   the tail pad, which is Spore's layout. Around empty files the two libtorrent
//!   modes place the pad differently (before vs after the empty file), so the
//!   hybrid info-hash comparison uses a tree without empty files.
//! * For v2-only torrents libtorrent's `file_storage` shows synthetic pad files
//!   (v2 files are piece-aligned); they are not in the torrent, so they are left
//!   out when comparing file lists. Such a synthetic tail pad also makes a v2
//!   single-file torrent count as multi-file for libtorrent, which then appends
//!   "/" to its web seeds (libtorrent does that for every multi-file torrent).
//! * libtorrent shuffles the URLs within each tracker tier on load (BEP 12), so
//!   tiers are compared as sets there.
//! * `transmission-show` 3.00 cannot read any v2 or hybrid torrent ("Error parsing
//!   .torrent file"), including libtorrent's own: its bencode parser rejects the
//!   empty dictionary key "" that BEP 52 file trees use (later Transmission
//!   releases learned BEP 52). The tests check that it fails the same way on libtorrent's
//!   torrent and, should a newer Transmission read them, compare what it shows.
//! * `transmission-show` prints sizes rounded (1000-based for files, 1024-based
//!   for piece size); the tests format expected sizes the same way. For
//!   multi-file torrents it appends "/" to web-seed URLs that lack one. It lists
//!   files sorted by path.
//! * `transmission-create` skips empty files and hidden files; `mktorrent` keeps
//!   both and takes piece sizes of 2^15..2^28 only.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha1::{Digest, Sha1};

const SPORE: &str = env!("CARGO_BIN_EXE_spore");
const LT_HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/lt_helper.py");
/// The Debian interpreter: it is the one that sees python3-libtorrent.
const PYTHON: &str = "/usr/bin/python3";
const TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Processes with a time limit
// ---------------------------------------------------------------------------

struct Run {
    desc: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "{} failed\n--- stdout\n{}\n--- stderr\n{}",
            self.desc,
            self.stdout,
            self.stderr
        );
        self
    }
}

fn run(cmd: &mut Command, timeout: Duration) -> Run {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} did not finish within {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
    Run {
        desc,
        code: status.code(),
        stdout,
        stderr,
    }
}

fn spore(args: &[&str]) -> Run {
    run(Command::new(SPORE).args(args), TIMEOUT)
}

fn spore_create(src: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["create", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    spore(&args).ok();
}

fn spore_info(torrent: &Path) -> Value {
    let r = spore(&["info", torrent.to_str().unwrap(), "--json"]).ok();
    serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("spore info --json printed no JSON ({e}):\n{}", r.stdout))
}

fn lt(args: &[&str]) -> Value {
    let r = run(Command::new(PYTHON).arg(LT_HELPER).args(args), TIMEOUT).ok();
    serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("lt_helper printed no JSON ({e}):\n{}", r.stdout))
}

fn lt_info(torrent: &Path) -> Value {
    lt(&["info", torrent.to_str().unwrap()])
}

/// libtorrent checks the data under `save_path` against every hash in `torrent`.
fn lt_verify(torrent: &Path, save_path: &Path) -> Value {
    lt(&[
        "verify",
        torrent.to_str().unwrap(),
        save_path.to_str().unwrap(),
    ])
}

// ---------------------------------------------------------------------------
// Tool availability: skip when missing, but fail under CI=true
// ---------------------------------------------------------------------------

fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

fn need(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("{what} is not available and CI=true: interop tests may not be skipped in CI");
    }
    eprintln!("SKIP: {what} is not available; skipping this part of the interop test");
    false
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn have_tool(name: &str) -> bool {
    need(name, find_in_path(name).is_some())
}

fn have_libtorrent() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        Path::new(PYTHON).is_file()
            && run(
                Command::new(PYTHON).args(["-c", "import libtorrent"]),
                TIMEOUT,
            )
            .code
                == Some(0)
    });
    need(
        "python3-libtorrent (`/usr/bin/python3 -c 'import libtorrent'`)",
        ok,
    )
}

// ---------------------------------------------------------------------------
// Test data: deterministic pseudo-random files
// ---------------------------------------------------------------------------

/// splitmix64: a fixed, tiny generator, so every run hashes the same bytes.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `files` (relative path, length) under `dir/name` and returns that root.
fn make_tree(dir: &Path, name: &str, files: &[(&str, usize)]) -> PathBuf {
    let root = dir.join(name);
    for (i, (rel, len)) in files.iter().enumerate() {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, pseudo_random(i as u64 + 1, *len)).unwrap();
    }
    root
}

/// A tree with nested directories, empty files, hidden entries, a file that is
/// exactly 4 pieces of 16 KiB, and names whose component-wise order ("a" <
/// "a-b.txt" < "a.bin") differs from plain string order of the full paths.
const TREE: &[(&str, usize)] = &[
    ("z.bin", 1),
    ("a.bin", 300_001),
    ("a-b.txt", 1_234),
    ("a/x.dat", 65_536),
    ("B.bin", 50_000),
    ("deep/er/still/nested.bin", 200_000),
    ("deep/zero/empty2", 0),
    ("empty.txt", 0),
    (".hidden", 777),
    (".git/config", 100),
];

/// Spore's promised order for TREE: component-wise by bytes, hidden skipped.
const TREE_ORDER: &[&str] = &[
    "B.bin",
    "a/x.dat",
    "a-b.txt",
    "a.bin",
    "deep/er/still/nested.bin",
    "deep/zero/empty2",
    "empty.txt",
    "z.bin",
];

/// No empty files (see the module comment on hybrid pad placement).
const TREE_NO_EMPTY: &[(&str, usize)] = &[
    ("zz", 50_001),
    ("sub/two.bin", 32_768),
    ("sub/three.bin", 7),
    ("one.bin", 100_000),
];

const SINGLE_LEN: usize = 1_500_001;

const TRACKER_A: &str = "http://127.0.0.1:6969/announce";
const TRACKER_B: &str = "udp://127.0.0.1:6970/announce";
const WEB_SEED_DIR: &str = "http://127.0.0.1:8080/files/";
const WEB_SEED_FILE: &str = "http://127.0.0.1:8080/files/single.bin";

fn tree_len(rel: &str) -> usize {
    TREE.iter().find(|(p, _)| *p == rel).unwrap().1
}

// ---------------------------------------------------------------------------
// A tiny bencode decoder/encoder of our own (independent of crates/bencode)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum B {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<B>),
    Dict(Vec<(Vec<u8>, B)>),
}

impl B {
    fn get(&self, key: &str) -> Option<&B> {
        match self {
            B::Dict(items) => items
                .iter()
                .find(|(k, _)| k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }
    fn str(&self) -> String {
        match self {
            B::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected a string, got {other:?}"),
        }
    }
    fn int(&self) -> i64 {
        match self {
            B::Int(i) => *i,
            other => panic!("expected an integer, got {other:?}"),
        }
    }
    fn list(&self) -> &[B] {
        match self {
            B::List(l) => l,
            other => panic!("expected a list, got {other:?}"),
        }
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    info_span: Option<(usize, usize)>,
}

impl Decoder<'_> {
    fn value(&mut self, depth: usize) -> B {
        assert!(depth < 64, "test decoder: nesting too deep");
        match self.buf[self.pos] {
            b'i' => {
                let end = self.pos
                    + self.buf[self.pos..]
                        .iter()
                        .position(|&c| c == b'e')
                        .unwrap();
                let n = std::str::from_utf8(&self.buf[self.pos + 1..end])
                    .unwrap()
                    .parse()
                    .unwrap();
                self.pos = end + 1;
                B::Int(n)
            }
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.buf[self.pos] != b'e' {
                    items.push(self.value(depth + 1));
                }
                self.pos += 1;
                B::List(items)
            }
            b'd' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.buf[self.pos] != b'e' {
                    let B::Bytes(key) = self.value(depth + 1) else {
                        panic!("non-string key")
                    };
                    let start = self.pos;
                    let v = self.value(depth + 1);
                    if depth == 0 && key == b"info" {
                        self.info_span = Some((start, self.pos));
                    }
                    items.push((key, v));
                }
                self.pos += 1;
                B::Dict(items)
            }
            b'0'..=b'9' => {
                let colon = self.pos
                    + self.buf[self.pos..]
                        .iter()
                        .position(|&c| c == b':')
                        .unwrap();
                let len: usize = std::str::from_utf8(&self.buf[self.pos..colon])
                    .unwrap()
                    .parse()
                    .unwrap();
                let s = self.buf[colon + 1..colon + 1 + len].to_vec();
                self.pos = colon + 1 + len;
                B::Bytes(s)
            }
            c => panic!("test decoder: unexpected byte {c:#x} at {}", self.pos),
        }
    }
}

/// Decodes a whole torrent; also returns SHA-1 of the raw bytes of its info dict.
fn decode_torrent(buf: &[u8]) -> (B, String) {
    let mut d = Decoder {
        buf,
        pos: 0,
        info_span: None,
    };
    let v = d.value(0);
    assert_eq!(d.pos, buf.len(), "trailing bytes after the torrent");
    let (s, e) = d.info_span.expect("torrent has no info dict");
    (v, hex(&Sha1::digest(&buf[s..e])))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode(v: &B, out: &mut Vec<u8>) {
    match v {
        B::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
        B::Bytes(b) => {
            out.extend_from_slice(format!("{}:", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        B::List(l) => {
            out.push(b'l');
            l.iter().for_each(|x| encode(x, out));
            out.push(b'e');
        }
        B::Dict(d) => {
            out.push(b'd');
            for (k, x) in d {
                encode(&B::Bytes(k.clone()), out);
                encode(x, out);
            }
            out.push(b'e');
        }
    }
}

fn bs(s: &str) -> B {
    B::Bytes(s.as_bytes().to_vec())
}

fn dict(items: Vec<(&str, B)>) -> B {
    let mut items: Vec<(Vec<u8>, B)> = items
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v))
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    B::Dict(items)
}

// ---------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq, Clone, PartialOrd, Ord)]
struct FileEntry {
    path: String,
    length: u64,
    pad: bool,
}

fn json_files(v: &Value) -> Vec<FileEntry> {
    v["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files array in {v}"))
        .iter()
        .map(|f| FileEntry {
            path: f["path"].as_str().unwrap().to_string(),
            length: f["length"].as_u64().unwrap(),
            pad: f["pad"].as_bool().unwrap(),
        })
        .collect()
}

fn json_tiers(v: &Value) -> Vec<Vec<String>> {
    serde_json::from_value(v["trackers"].clone()).unwrap()
}

fn json_strings(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap()
}

fn is_multi_file(info: &Value) -> bool {
    let files = json_files(info);
    !(files.len() == 1 && files[0].path == info["name"].as_str().unwrap())
}

/// `spore info --json` of a torrent versus libtorrent's reading of the same file.
fn assert_same_as_libtorrent(sp: &Value, lt: &Value, ctx: &str) {
    let ctx = format!("{ctx}\n  spore:      {sp}\n  libtorrent: {lt}");
    assert_eq!(
        sp["info_hash_v1"], lt["info_hash_v1"],
        "v1 info-hash differs: {ctx}"
    );
    assert_eq!(
        sp["info_hash_v2"], lt["info_hash_v2"],
        "v2 info-hash differs: {ctx}"
    );
    let version = match (
        lt["has_v1"].as_bool().unwrap(),
        lt["has_v2"].as_bool().unwrap(),
    ) {
        (true, false) => "v1",
        (false, true) => "v2",
        (true, true) => "hybrid",
        _ => unreachable!(),
    };
    assert_eq!(sp["version"], version, "version differs: {ctx}");
    assert_eq!(sp["name"], lt["name"], "name differs: {ctx}");
    assert_eq!(
        sp["piece_length"], lt["piece_length"],
        "piece length differs: {ctx}"
    );
    assert_eq!(
        sp["piece_count"], lt["num_pieces"],
        "piece count differs: {ctx}"
    );
    let mut lt_files = json_files(lt);
    if version == "v2" {
        // libtorrent shows v2 files' piece alignment as synthetic pad files.
        lt_files.retain(|f| !f.pad);
    }
    assert_eq!(json_files(sp), lt_files, "file list differs: {ctx}");
    let payload: u64 = lt_files.iter().filter(|f| !f.pad).map(|f| f.length).sum();
    assert_eq!(
        sp["total_size"], payload,
        "total size (without pad files) differs: {ctx}"
    );
    // libtorrent shuffles the URLs inside each tier when it loads a torrent (as
    // BEP 12 asks of clients), so compare tiers in order, each tier as a set.
    let sorted_tiers = |v: &Value| {
        let mut tiers = json_tiers(v);
        tiers.iter_mut().for_each(|t| t.sort());
        tiers
    };
    assert_eq!(sorted_tiers(sp), sorted_tiers(lt), "trackers differ: {ctx}");
    // libtorrent appends "/" to web seeds of torrents whose file_storage has more
    // than one entry, and a v2-only single-file torrent gets a synthetic tail pad
    // there, so it counts as one of those.
    let lt_multi = json_files(lt).len() > 1;
    let seeds: Vec<String> = json_strings(&sp["web_seeds"])
        .into_iter()
        .map(|u| {
            if lt_multi && !u.ends_with('/') {
                u + "/"
            } else {
                u
            }
        })
        .collect();
    assert_eq!(
        seeds,
        json_strings(&lt["web_seeds"]),
        "web seeds differ: {ctx}"
    );
    assert_eq!(sp["private"], lt["private"], "private flag differs: {ctx}");
    let or_empty = |v: &Value| v.as_str().unwrap_or("").to_string();
    assert_eq!(
        or_empty(&sp["comment"]),
        or_empty(&lt["comment"]),
        "comment differs: {ctx}"
    );
    assert_eq!(
        or_empty(&sp["created_by"]),
        or_empty(&lt["creator"]),
        "creator differs: {ctx}"
    );
    assert_eq!(
        sp["creation_date"].as_i64().unwrap_or(0),
        lt["creation_date"].as_i64().unwrap(),
        "creation date differs: {ctx}"
    );
}

/// libtorrent parses Spore's magnet link into the same hashes, name and trackers.
fn assert_magnet_read_by_libtorrent(sp: &Value) {
    let magnet = sp["magnet"].as_str().unwrap();
    let m = lt(&["magnet", magnet]);
    let ctx = format!("magnet {magnet}\n  libtorrent parsed: {m}");
    assert_eq!(m["info_hash_v1"], sp["info_hash_v1"], "{ctx}");
    assert_eq!(m["info_hash_v2"], sp["info_hash_v2"], "{ctx}");
    assert_eq!(m["name"], sp["name"], "{ctx}");
    let all: Vec<String> = json_tiers(sp).concat();
    assert_eq!(json_strings(&m["trackers"]), all, "{ctx}");
}

/// Transmission's size formatting (libtransmission's formatter_get_size_str):
/// the smallest unit is the first one; 2 decimals below 100, else 1.
fn tr_size(bytes: u64, base: u64, units: [&str; 4]) -> String {
    let mut i = 0;
    let mut unit = base;
    while i < 3 && bytes >= unit * base {
        unit *= base;
        i += 1;
    }
    let value = bytes as f64 / unit as f64;
    let prec = if value < 100.0 { 2 } else { 1 };
    format!("{value:.prec$} {}", units[i])
}

fn tr_disk(bytes: u64) -> String {
    tr_size(bytes, 1000, ["kB", "MB", "GB", "TB"])
}

fn tr_mem(bytes: u64) -> String {
    tr_size(bytes, 1024, ["KiB", "MiB", "GiB", "TiB"])
}

#[derive(Debug, Default)]
struct TrShow {
    name: String,
    hash: String,
    piece_count: u64,
    piece_size: String,
    total_size: String,
    privacy: String,
    trackers: Vec<Vec<String>>,
    web_seeds: Vec<String>,
    files: Vec<(String, String)>,
}

fn parse_transmission_show(text: &str) -> TrShow {
    let mut t = TrShow::default();
    let mut section = "";
    for line in text.lines() {
        let Some(l) = line.strip_prefix("  ") else {
            if matches!(line, "GENERAL" | "TRACKERS" | "WEBSEEDS" | "FILES") {
                section = line;
            }
            continue;
        };
        match section {
            "GENERAL" => {
                let (k, v) = l.split_once(':').unwrap_or((l, ""));
                let v = v.strip_prefix(' ').unwrap_or(v).to_string();
                match k {
                    "Name" => t.name = v,
                    "Hash" => t.hash = v,
                    "Piece Count" => t.piece_count = v.parse().unwrap(),
                    "Piece Size" => t.piece_size = v,
                    "Total Size" => t.total_size = v,
                    "Privacy" => t.privacy = v,
                    _ => {}
                }
            }
            "TRACKERS" if l.starts_with("Tier #") => t.trackers.push(Vec::new()),
            "TRACKERS" => t
                .trackers
                .last_mut()
                .expect("tracker before tier")
                .push(l.to_string()),
            "WEBSEEDS" => t.web_seeds.push(l.to_string()),
            "FILES" => {
                let (path, size) = l.rsplit_once(" (").expect("file line");
                t.files
                    .push((path.to_string(), size.trim_end_matches(')').to_string()));
            }
            _ => {}
        }
    }
    t
}

fn transmission_show(torrent: &Path) -> Result<TrShow, Run> {
    let r = run(Command::new("transmission-show").arg(torrent), TIMEOUT);
    if r.code == Some(0) {
        Ok(parse_transmission_show(&r.stdout))
    } else {
        Err(r)
    }
}

fn transmission_version() -> String {
    let r = run(Command::new("transmission-show").arg("--version"), TIMEOUT);
    format!("{}{}", r.stdout, r.stderr).trim().to_string()
}

/// `spore info --json` versus `transmission-show` for a torrent with a v1 part.
fn assert_same_as_transmission(sp: &Value, tr: &TrShow, ctx: &str) {
    let ctx = format!("{ctx}\n  spore: {sp}\n  transmission-show: {tr:?}");
    assert_eq!(
        sp["info_hash_v1"].as_str(),
        Some(tr.hash.as_str()),
        "info-hash differs: {ctx}"
    );
    assert_eq!(
        sp["name"].as_str(),
        Some(tr.name.as_str()),
        "name differs: {ctx}"
    );
    assert_eq!(
        sp["piece_count"], tr.piece_count,
        "piece count differs: {ctx}"
    );
    assert_eq!(
        tr_mem(sp["piece_length"].as_u64().unwrap()),
        tr.piece_size,
        "piece size: {ctx}"
    );
    assert_eq!(
        tr_disk(sp["total_size"].as_u64().unwrap()),
        tr.total_size,
        "total size: {ctx}"
    );
    let privacy = if sp["private"].as_bool().unwrap() {
        "Private torrent"
    } else {
        "Public torrent"
    };
    assert_eq!(privacy, tr.privacy, "private flag differs: {ctx}");
    assert_eq!(json_tiers(sp), tr.trackers, "trackers differ: {ctx}");
    // Transmission 3.00 appends "/" to multi-file web seeds that lack one.
    let multi = is_multi_file(sp);
    let seeds: Vec<String> = json_strings(&sp["web_seeds"])
        .into_iter()
        .map(|u| {
            if multi && !u.ends_with('/') {
                u + "/"
            } else {
                u
            }
        })
        .collect();
    assert_eq!(seeds, tr.web_seeds, "web seeds differ: {ctx}");
    // transmission-show lists files sorted by path, sizes rounded; pads are hidden
    // from it only if it understands them, so compare all entries it shows.
    let mut expected: Vec<(String, String)> = json_files(sp)
        .into_iter()
        .filter(|f| !f.pad)
        .map(|f| (f.path, tr_disk(f.length)))
        .collect();
    expected.sort();
    let mut shown: Vec<(String, String)> = tr
        .files
        .iter()
        .filter(|(p, _)| !p.contains("/.pad/"))
        .cloned()
        .collect();
    shown.sort();
    assert_eq!(expected, shown, "file list differs: {ctx}");
}

/// transmission-show on a torrent with a v2 part. Transmission 3.x cannot parse
/// BEP 52 torrents at all; then it must fail on libtorrent's equivalent torrent
/// (`reference`) in the same way, which shows the limitation is Transmission's.
/// A Transmission that can read them must show what Spore shows.
fn check_transmission_on_v2(sp: &Value, torrent: &Path, reference: Option<&Path>, ctx: &str) {
    match transmission_show(torrent) {
        Ok(tr) => {
            if sp["version"] == "hybrid" {
                assert_same_as_transmission(sp, &tr, ctx);
            } else {
                assert_eq!(sp["name"].as_str(), Some(tr.name.as_str()), "{ctx}");
                assert_eq!(json_tiers(sp), tr.trackers, "{ctx}");
            }
        }
        Err(r) => {
            let version = transmission_version();
            assert!(
                version.contains(" 3."),
                "{version} failed on a {} torrent: {ctx}\n{}\n{}",
                sp["version"],
                r.stdout,
                r.stderr
            );
            assert!(
                r.stderr.contains("Error parsing"),
                "unexpected failure: {}",
                r.stderr
            );
            if let Some(reference) = reference {
                let lt_result = transmission_show(reference);
                assert!(
                    lt_result.is_err(),
                    "transmission-show reads libtorrent's {} torrent but not Spore's: {ctx}",
                    sp["version"]
                );
            }
            eprintln!(
                "note: {version} cannot parse {} torrents (BEP 52 file trees use the empty \
                 key \"\", which its bencode parser rejects); same for libtorrent's: {ctx}",
                sp["version"]
            );
        }
    }
}

/// `spore info --json` versus our own decoding of a v1 (or hybrid) torrent's bytes.
fn assert_same_as_raw_v1(sp: &Value, torrent: &Path, ctx: &str) {
    let bytes = std::fs::read(torrent).unwrap();
    let (root, sha1_of_info) = decode_torrent(&bytes);
    let info = root.get("info").unwrap();
    let ctx = format!("{ctx}\n  spore: {sp}");
    assert_eq!(
        sp["info_hash_v1"].as_str(),
        Some(sha1_of_info.as_str()),
        "info-hash: {ctx}"
    );
    let name = info.get("name").unwrap().str();
    assert_eq!(sp["name"].as_str(), Some(name.as_str()), "name: {ctx}");
    let piece_length = info.get("piece length").unwrap().int();
    assert_eq!(sp["piece_length"], piece_length, "piece length: {ctx}");
    let pieces = match info.get("pieces").unwrap() {
        B::Bytes(p) => p.len() / 20,
        _ => unreachable!(),
    };
    assert_eq!(sp["piece_count"], pieces, "piece count: {ctx}");
    let files: Vec<FileEntry> = match info.get("files") {
        Some(list) => list
            .list()
            .iter()
            .map(|f| {
                let mut path = name.clone();
                for c in f.get("path").unwrap().list() {
                    path.push('/');
                    path.push_str(&c.str());
                }
                let pad = f.get("attr").is_some_and(|a| a.str().contains('p'));
                FileEntry {
                    path,
                    length: f.get("length").unwrap().int() as u64,
                    pad,
                }
            })
            .collect(),
        None => vec![FileEntry {
            path: name.clone(),
            length: info.get("length").unwrap().int() as u64,
            pad: false,
        }],
    };
    assert_eq!(json_files(sp), files, "file list: {ctx}");
    let tiers: Vec<Vec<String>> = match (root.get("announce-list"), root.get("announce")) {
        (Some(l), _) => l
            .list()
            .iter()
            .map(|t| t.list().iter().map(B::str).collect())
            .collect(),
        (None, Some(a)) => vec![vec![a.str()]],
        (None, None) => vec![],
    };
    assert_eq!(json_tiers(sp), tiers, "trackers: {ctx}");
    let seeds: Vec<String> = match root.get("url-list") {
        Some(B::List(l)) => l.iter().map(B::str).collect(),
        Some(s) => vec![s.str()],
        None => vec![],
    };
    assert_eq!(json_strings(&sp["web_seeds"]), seeds, "web seeds: {ctx}");
    let private = info.get("private").is_some_and(|p| p.int() == 1);
    assert_eq!(sp["private"], private, "private: {ctx}");
    let opt = |v: Option<&B>| v.map(B::str);
    assert_eq!(
        sp["comment"].as_str().map(String::from),
        opt(root.get("comment")),
        "{ctx}"
    );
    assert_eq!(
        sp["created_by"].as_str().map(String::from),
        opt(root.get("created by")),
        "{ctx}"
    );
    assert_eq!(
        sp["source"].as_str().map(String::from),
        opt(info.get("source")),
        "{ctx}"
    );
    assert_eq!(
        sp["creation_date"].as_i64(),
        root.get("creation date").map(B::int),
        "{ctx}"
    );
}

/// Spore's hybrid layout: every non-empty file starts on a piece boundary, pads
/// are 1..piece_length-1 bytes, never doubled, and there is no tail pad.
fn assert_hybrid_layout(sp: &Value) {
    let piece = sp["piece_length"].as_u64().unwrap();
    let files = json_files(sp);
    let mut offset = 0;
    for (i, f) in files.iter().enumerate() {
        if f.pad {
            assert!(f.length > 0 && f.length < piece, "bad pad {f:?} in {sp}");
            assert!(i + 1 < files.len(), "tail pad file in {sp}");
            assert!(!files[i + 1].pad, "two pads in a row in {sp}");
            assert!(f.path.contains("/.pad/"), "pad path {f:?}");
        } else if f.length > 0 {
            assert_eq!(
                offset % piece,
                0,
                "{} does not start on a piece boundary: {sp}",
                f.path
            );
        }
        offset += f.length;
    }
}

// ---------------------------------------------------------------------------
// (a) Spore creates, libtorrent and transmission-show read
// ---------------------------------------------------------------------------

/// Makes `src` into a torrent with Spore and checks every reader against
/// `spore info --json`. `mode` is "v1", "v2" or "hybrid". `expected_files` is
/// the payload in Spore's order (paths relative to the torrent, lengths).
fn check_spore_torrent(
    src: &Path,
    mode: &str,
    extra: &[&str],
    expected_files: &[(String, u64)],
    expected_tiers: Vec<Vec<&str>>,
    expected_seeds: Vec<&str>,
) -> PathBuf {
    let tmp = src.parent().unwrap();
    let out = tmp.join(format!("spore-{mode}.torrent"));
    let mode_flag = format!("--{mode}");
    let mut args = vec![mode_flag.as_str()];
    args.extend_from_slice(extra);
    spore_create(src, &out, &args);
    let sp = spore_info(&out);
    let ctx = format!("spore create {mode} {extra:?} of {}", src.display());

    // What Spore promises about its own torrents.
    assert_eq!(sp["version"], mode, "{ctx}: {sp}");
    let payload: Vec<(String, u64)> = json_files(&sp)
        .into_iter()
        .filter(|f| !f.pad)
        .map(|f| (f.path, f.length))
        .collect();
    assert_eq!(
        payload, expected_files,
        "{ctx}: files not in sorted order / hidden not skipped"
    );
    if mode == "hybrid" {
        assert_hybrid_layout(&sp);
    } else {
        assert!(
            json_files(&sp).iter().all(|f| !f.pad),
            "{ctx}: pad files in {sp}"
        );
    }
    assert_eq!(json_tiers(&sp), expected_tiers, "{ctx}");
    assert_eq!(json_strings(&sp["web_seeds"]), expected_seeds, "{ctx}");

    if mode != "v2" {
        assert_same_as_raw_v1(&sp, &out, &ctx);
    }

    let mut lt_reference = None;
    if have_libtorrent() {
        let l = lt_info(&out);
        assert_same_as_libtorrent(&sp, &l, &ctx);
        assert_magnet_read_by_libtorrent(&sp);
        let v = lt_verify(&out, tmp);
        assert_eq!(
            v["checked"], true,
            "{ctx}: libtorrent did not finish checking: {v}"
        );
        assert_eq!(v["error"], "", "{ctx}: libtorrent reports an error: {v}");
        assert_eq!(
            v["valid_pieces"], v["num_pieces"],
            "{ctx}: libtorrent finds pieces of Spore's torrent that do not match the data: {v}"
        );
        assert_eq!(v["is_seeding"], true, "{ctx}: {v}");
        if mode != "v1" {
            // libtorrent's own torrent of the same data, for transmission-show.
            let reference = tmp.join(format!("lt-reference-{mode}.torrent"));
            let piece = sp["piece_length"].to_string();
            let lt_mode = if mode == "v2" { "v2" } else { "hybrid" };
            lt(&[
                "create",
                "--mode",
                lt_mode,
                "--piece-size",
                &piece,
                "--order",
                "sorted",
                src.to_str().unwrap(),
                reference.to_str().unwrap(),
            ]);
            lt_reference = Some(reference);
        }
    }

    if have_tool("transmission-show") {
        if mode == "v1" {
            let tr = transmission_show(&out).unwrap_or_else(|r| {
                panic!(
                    "transmission-show cannot read Spore's v1 torrent: {}\n{sp}",
                    r.stderr
                )
            });
            assert_same_as_transmission(&sp, &tr, &ctx);
        } else {
            check_transmission_on_v2(&sp, &out, lt_reference.as_deref(), &ctx);
        }
    }
    out
}

fn tree_expected(name: &str) -> Vec<(String, u64)> {
    TREE_ORDER
        .iter()
        .map(|p| (format!("{name}/{p}"), tree_len(p) as u64))
        .collect()
}

fn two_tiers() -> Vec<&'static str> {
    vec!["-t", TRACKER_A, "-t", TRACKER_B]
}

#[test]
fn a_spore_single_file_v1_v2_hybrid_read_by_libtorrent_and_transmission() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("single.bin");
    std::fs::write(&src, pseudo_random(99, SINGLE_LEN)).unwrap();
    let expected = vec![("single.bin".to_string(), SINGLE_LEN as u64)];

    // v1: private, two tiers, a web seed, comment and source; auto piece length.
    let mut extra = two_tiers();
    extra.extend([
        "--private",
        "--web-seed",
        WEB_SEED_FILE,
        "--comment",
        "interop test",
    ]);
    extra.extend(["--source", "SPORE-TEST"]);
    let tiers = vec![vec![TRACKER_A], vec![TRACKER_B]];
    check_spore_torrent(
        &src,
        "v1",
        &extra,
        &expected,
        tiers.clone(),
        vec![WEB_SEED_FILE],
    );

    // v2: both trackers in one tier (--tier).
    let mut extra = two_tiers();
    extra.extend(["--tier", "--piece-length", "32768"]);
    check_spore_torrent(
        &src,
        "v2",
        &extra,
        &expected,
        vec![vec![TRACKER_A, TRACKER_B]],
        vec![],
    );

    // hybrid: a single file needs no pad files.
    let mut extra = two_tiers();
    extra.extend(["--web-seed", WEB_SEED_FILE]);
    check_spore_torrent(
        &src,
        "hybrid",
        &extra,
        &expected,
        tiers,
        vec![WEB_SEED_FILE],
    );
}

fn check_tree_mode(mode: &str, piece: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_tree(tmp.path(), "payload", TREE);
    let mut extra = two_tiers();
    extra.extend([
        "--web-seed",
        WEB_SEED_DIR,
        "--piece-length",
        piece,
        "--comment",
        "multi",
    ]);
    let torrent = check_spore_torrent(
        &src,
        mode,
        &extra,
        &tree_expected("payload"),
        vec![vec![TRACKER_A], vec![TRACKER_B]],
        vec![WEB_SEED_DIR],
    );
    if have_libtorrent() {
        // Control: libtorrent's check does notice a damaged piece.
        let victim = src.join("a.bin");
        let mut data = std::fs::read(&victim).unwrap();
        data[100_000] ^= 0xFF;
        std::fs::write(&victim, data).unwrap();
        let v = lt_verify(&torrent, tmp.path());
        assert_eq!(v["checked"], true, "{v}");
        let (valid, all) = (
            v["valid_pieces"].as_u64().unwrap(),
            v["num_pieces"].as_u64().unwrap(),
        );
        assert_eq!(
            valid + 1,
            all,
            "one flipped byte should fail exactly one piece: {v}"
        );
    }
}

#[test]
fn a_spore_multi_file_v1_read_by_libtorrent_and_transmission() {
    check_tree_mode("v1", "16384");
}

#[test]
fn a_spore_multi_file_v2_read_by_libtorrent_and_transmission() {
    check_tree_mode("v2", "16384");
}

#[test]
fn a_spore_multi_file_hybrid_read_by_libtorrent_and_transmission() {
    check_tree_mode("hybrid", "32768");
}

// ---------------------------------------------------------------------------
// (b) Same files, same piece size: same info-hash as libtorrent
// ---------------------------------------------------------------------------

/// Spore's `--MODE --no-date --no-creator` torrent versus libtorrent's
/// (`lt_mode`, file_storage built in Spore's order). Returns (spore, libtorrent).
fn compare_created(src: &Path, mode: &str, lt_mode: &str, piece: u64) -> (Value, Value) {
    let tmp = src.parent().unwrap();
    let sp_out = tmp.join(format!("spore-{mode}-{piece}.torrent"));
    let lt_out = tmp.join(format!("lt-{lt_mode}-{piece}.torrent"));
    let piece_s = piece.to_string();
    let mode_flag = format!("--{mode}");
    spore_create(
        src,
        &sp_out,
        &[
            &mode_flag,
            "--no-date",
            "--no-creator",
            "--piece-length",
            &piece_s,
        ],
    );
    let l = lt(&[
        "create",
        "--mode",
        lt_mode,
        "--piece-size",
        &piece_s,
        "--order",
        "sorted",
        src.to_str().unwrap(),
        lt_out.to_str().unwrap(),
    ]);
    let sp = spore_info(&sp_out);
    let mut ctx = format!(
        "spore {mode} vs libtorrent {lt_mode}, piece {piece}, {}\n  spore:      {sp}\n  libtorrent: {l}",
        src.display()
    );
    if sp["info_hash_v1"] != l["info_hash_v1"] || sp["info_hash_v2"] != l["info_hash_v2"] {
        // Show where the info dictionaries differ.
        let info_of = |p: &Path| {
            let bytes = std::fs::read(p).unwrap();
            let (root, _) = decode_torrent(&bytes);
            let mut info = root.get("info").unwrap().clone();
            if let B::Dict(items) = &mut info {
                for (k, v) in items.iter_mut() {
                    if k == b"pieces" {
                        *v = bs(&format!(
                            "<{} piece hashes>",
                            match v {
                                B::Bytes(b) => b.len() / 20,
                                _ => 0,
                            }
                        ));
                    }
                }
            }
            info
        };
        ctx.push_str(&format!(
            "\n  spore info dict:      {:?}\n  libtorrent info dict: {:?}",
            info_of(&sp_out),
            info_of(&lt_out)
        ));
    }
    assert_eq!(
        sp["info_hash_v1"], l["info_hash_v1"],
        "v1 info-hash differs: {ctx}"
    );
    assert_eq!(
        sp["info_hash_v2"], l["info_hash_v2"],
        "v2 info-hash differs: {ctx}"
    );
    assert_eq!(sp["created_by"], Value::Null, "--no-creator: {ctx}");
    assert_eq!(sp["creation_date"], Value::Null, "--no-date: {ctx}");
    // Both files: no date, no creator, no trackers; the same info dict (and for
    // v1 no "piece layers"), so the whole files should be identical too.
    let (a, b) = (
        std::fs::read(&sp_out).unwrap(),
        std::fs::read(&lt_out).unwrap(),
    );
    assert!(
        a == b,
        "torrent files differ although the info-hashes match: {ctx}"
    );
    (sp, l)
}

#[test]
fn b_v1_info_hash_equals_libtorrent_single_file() {
    if !have_libtorrent() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("single.bin");
    std::fs::write(&src, pseudo_random(7, SINGLE_LEN)).unwrap();
    for piece in [16384, 65536, 262144] {
        compare_created(&src, "v1", "v1", piece);
    }
}

#[test]
fn b_v1_info_hash_equals_libtorrent_multi_file() {
    if !have_libtorrent() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = make_tree(tmp.path(), "payload", TREE);
    for piece in [16384, 32768, 1 << 20] {
        let (_, l) = compare_created(&src, "v1", "v1", piece);
        // libtorrent adds no pad files in v1_only mode.
        assert!(json_files(&l).iter().all(|f| !f.pad), "{l}");
    }
}

#[test]
fn b_v2_and_hybrid_info_hashes_equal_libtorrent() {
    if !have_libtorrent() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // v2 info dicts hold only the file tree, so empty files are no problem.
    let src = make_tree(tmp.path(), "payload", TREE);
    for piece in [16384, 65536] {
        compare_created(&src, "v2", "v2", piece);
    }
    // Hybrid: libtorrent without its tail pad, on a tree without empty files.
    let src2 = make_tree(tmp.path(), "noempty", TREE_NO_EMPTY);
    for piece in [16384, 32768] {
        compare_created(&src2, "hybrid", "hybrid-notail", piece);
    }
    let single = tmp.path().join("single.bin");
    std::fs::write(&single, pseudo_random(5, 100_003)).unwrap();
    compare_created(&single, "v2", "v2", 16384);
    compare_created(&single, "hybrid", "hybrid-notail", 16384);
}

// ---------------------------------------------------------------------------
// (c) Other tools create, Spore reads
// ---------------------------------------------------------------------------

/// Spore reads a v1 torrent made by another tool exactly as it is written, as
/// transmission-show shows it, and as libtorrent reads it.
fn check_spore_reads_v1(torrent: &Path, ctx: &str) -> Value {
    let sp = spore_info(torrent);
    assert_eq!(sp["version"], "v1", "{ctx}: {sp}");
    assert_same_as_raw_v1(&sp, torrent, ctx);
    if have_tool("transmission-show") {
        let tr = transmission_show(torrent)
            .unwrap_or_else(|r| panic!("transmission-show failed on {ctx}: {}", r.stderr));
        assert_same_as_transmission(&sp, &tr, ctx);
    }
    if have_libtorrent() {
        assert_same_as_libtorrent(&sp, &lt_info(torrent), ctx);
    }
    sp
}

#[test]
fn c_spore_reads_transmission_create_torrents() {
    if !have_tool("transmission-create") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = make_tree(tmp.path(), "payload", TREE);
    let single = tmp.path().join("single.bin");
    std::fs::write(&single, pseudo_random(3, SINGLE_LEN)).unwrap();
    for (src, private) in [(&tree, false), (&single, true)] {
        let out = tmp.path().join(format!("tc-{private}.torrent"));
        let mut cmd = Command::new("transmission-create");
        cmd.arg("-o")
            .arg(&out)
            .args(["-t", TRACKER_A, "-t", TRACKER_B, "-s", "32"]);
        cmd.args(["-c", "made by transmission-create"]);
        if private {
            cmd.arg("-p");
        }
        run(cmd.arg(src), TIMEOUT).ok();
        let ctx = format!("transmission-create torrent of {}", src.display());
        let sp = check_spore_reads_v1(&out, &ctx);
        assert_eq!(sp["piece_length"], 32768, "{ctx}");
        assert_eq!(
            json_tiers(&sp),
            vec![vec![TRACKER_A], vec![TRACKER_B]],
            "{ctx}"
        );
        assert_eq!(sp["private"], private, "{ctx}");
        // transmission-create leaves out empty and hidden files.
        if src == &tree {
            let payload: Vec<String> = json_files(&sp).into_iter().map(|f| f.path).collect();
            assert!(
                payload.iter().all(|p| !p.contains("/.")),
                "{ctx}: {payload:?}"
            );
            assert_eq!(payload.len(), TREE_ORDER.len() - 2, "{ctx}: {payload:?}");
        }
    }
}

#[test]
fn c_spore_reads_mktorrent_torrents() {
    if !have_tool("mktorrent") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = make_tree(tmp.path(), "payload", TREE);
    let single = tmp.path().join("single.bin");
    std::fs::write(&single, pseudo_random(4, SINGLE_LEN)).unwrap();
    let tracker_c = "http://127.0.0.2:6969/announce";
    for (src, private) in [(&tree, false), (&single, true)] {
        let out = tmp.path().join(format!("mk-{private}.torrent"));
        let tier1 = format!("{TRACKER_A},{tracker_c}");
        let mut cmd = Command::new("mktorrent");
        cmd.args([
            "-a",
            &tier1,
            "-a",
            TRACKER_B,
            "-l",
            "15",
            "-c",
            "made by mktorrent",
        ]);
        cmd.args([
            "-w",
            if private { WEB_SEED_FILE } else { WEB_SEED_DIR },
            "-t",
            "2",
        ]);
        if private {
            cmd.args(["-p", "-s", "MKSRC"]);
        }
        run(cmd.arg("-o").arg(&out).arg(src), TIMEOUT).ok();
        let ctx = format!("mktorrent torrent of {}", src.display());
        let sp = check_spore_reads_v1(&out, &ctx);
        assert_eq!(sp["piece_length"], 32768, "{ctx}");
        assert_eq!(
            json_tiers(&sp),
            vec![vec![TRACKER_A, tracker_c], vec![TRACKER_B]],
            "{ctx}: BEP 12 tiers"
        );
        if private {
            assert_eq!(sp["source"], "MKSRC", "{ctx}");
        } else {
            // mktorrent keeps hidden and empty files: Spore must read them all.
            assert_eq!(json_files(&sp).len(), TREE.len(), "{ctx}: {sp}");
        }
    }
}

#[test]
fn c_spore_reads_libtorrent_v1_v2_hybrid_torrents() {
    if !have_libtorrent() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = make_tree(tmp.path(), "payload", TREE);
    let single = tmp.path().join("single.bin");
    std::fs::write(&single, pseudo_random(6, SINGLE_LEN)).unwrap();
    for (src, seed) in [(&tree, WEB_SEED_DIR), (&single, WEB_SEED_FILE)] {
        for mode in ["v1", "v2", "hybrid"] {
            let out = tmp.path().join(format!(
                "lt-{mode}-{}.torrent",
                src.file_name().unwrap().to_str().unwrap()
            ));
            let l = lt(&[
                "create",
                "--mode",
                mode,
                "--piece-size",
                "16384",
                "--order",
                "native",
                "--tracker",
                TRACKER_A,
                "0",
                "--tracker",
                TRACKER_B,
                "1",
                "--web-seed",
                seed,
                "--comment",
                "made by libtorrent",
                src.to_str().unwrap(),
                out.to_str().unwrap(),
            ]);
            let ctx = format!("libtorrent {mode} torrent of {}", src.display());
            let sp = spore_info(&out);
            assert_same_as_libtorrent(&sp, &l, &ctx);
            if mode != "v2" {
                assert_same_as_raw_v1(&sp, &out, &ctx);
            }
            if mode == "hybrid" && src == &tree {
                // libtorrent's hybrids end with a tail pad file; Spore must show
                // it as a pad and leave it out of total_size (checked above).
                assert!(json_files(&sp).last().unwrap().pad, "{ctx}: {sp}");
            }
            if mode == "v1" && have_tool("transmission-show") {
                let tr = transmission_show(&out).unwrap_or_else(|r| panic!("{ctx}: {}", r.stderr));
                assert_same_as_transmission(&sp, &tr, &ctx);
            }
            // libtorrent includes hidden files when it walks a directory.
            if src == &tree {
                let n = json_files(&sp).iter().filter(|f| !f.pad).count();
                assert_eq!(n, TREE.len(), "{ctx}: {sp}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (d) Bad input: exit code 2, one line on stderr, no panic
// ---------------------------------------------------------------------------

fn assert_rejected(bytes: &[u8], what: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.torrent");
    std::fs::write(&path, bytes).unwrap();
    let p = path.to_str().unwrap();
    for args in [
        vec!["info", p, "--json"],
        vec!["info", p],
        vec!["magnet", p],
    ] {
        let r = run(Command::new(SPORE).args(&args), Duration::from_secs(30));
        let ctx = format!(
            "{what}: spore {}\n--- exit code {:?}\n--- stdout\n{}\n--- stderr\n{}",
            args[0],
            r.code,
            r.stdout.chars().take(2000).collect::<String>(),
            r.stderr.chars().take(2000).collect::<String>()
        );
        assert!(!r.stderr.contains("panicked"), "panic on {ctx}");
        assert_eq!(r.code, Some(2), "wrong exit code on {ctx}");
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr is not exactly one line on {ctx}");
        assert!(!lines[0].trim().is_empty(), "empty error line on {ctx}");
        assert!(
            r.stderr.ends_with('\n'),
            "error line not terminated on {ctx}"
        );
    }
}

fn v1_torrent(name: &str, files: Option<Vec<(Vec<&str>, i64)>>) -> Vec<u8> {
    let mut info = vec![
        ("name", bs(name)),
        ("piece length", B::Int(16384)),
        ("pieces", B::Bytes(vec![0xAB; 20])),
    ];
    match files {
        Some(files) => info.push((
            "files",
            B::List(
                files
                    .into_iter()
                    .map(|(path, len)| {
                        dict(vec![
                            ("length", B::Int(len)),
                            ("path", B::List(path.into_iter().map(bs).collect())),
                        ])
                    })
                    .collect(),
            ),
        )),
        None => info.push(("length", B::Int(1000))),
    }
    let root = dict(vec![("announce", bs(TRACKER_A)), ("info", dict(info))]);
    let mut out = Vec::new();
    encode(&root, &mut out);
    out
}

#[test]
fn d_rejects_path_traversal() {
    // Sanity: the same shape with harmless names is accepted.
    let ok = v1_torrent("good", Some(vec![(vec!["a", "b"], 10), (vec!["c"], 5)]));
    let tmp = tempfile::tempdir().unwrap();
    let ok_path = tmp.path().join("ok.torrent");
    std::fs::write(&ok_path, &ok).unwrap();
    spore_info(&ok_path);

    assert_rejected(
        &v1_torrent("evil", Some(vec![(vec!["..", "etc"], 10)])),
        "path ['..','etc']",
    );
    assert_rejected(
        &v1_torrent(
            "evil",
            Some(vec![(vec!["a"], 5), (vec!["a", "..", "..", "x"], 10)]),
        ),
        "path ['a','..','..','x']",
    );
    assert_rejected(
        &v1_torrent("..", Some(vec![(vec!["x"], 10)])),
        "torrent name '..'",
    );
    assert_rejected(&v1_torrent("..", None), "single-file name '..'");
}

#[test]
fn d_rejects_truncated_torrents() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_tree(tmp.path(), "payload", &TREE[..5]);
    let out = tmp.path().join("whole.torrent");
    spore_create(
        &src,
        &out,
        &["-t", TRACKER_A, "--piece-length", "16384", "--hybrid"],
    );
    let whole = std::fs::read(&out).unwrap();
    let n = whole.len();
    let mut cuts: Vec<usize> = (1..16).map(|i| n * i / 16).collect();
    cuts.extend([0, 1, 2, n / 2, n - 2, n - 1]);
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        assert_rejected(
            &whole[..cut],
            &format!("torrent truncated to {cut} of {n} bytes"),
        );
    }
}

#[test]
fn d_rejects_huge_length_prefixes() {
    assert_rejected(b"2147483648:", "top-level 2 GB string prefix");
    assert_rejected(b"d4:info2147483648:abc", "info as a 2 GB string");
    assert_rejected(
        b"d8:announce2147483648:http://x",
        "announce with a 2 GB prefix",
    );
    let mut v = b"d4:infod6:lengthi1e4:name1:x12:piece lengthi16384e6:pieces".to_vec();
    v.extend_from_slice(b"2147483648:");
    v.extend_from_slice(&[0u8; 40]);
    assert_rejected(&v, "pieces with a 2 GB prefix");
    assert_rejected(
        b"99999999999999999999999:",
        "length prefix overflowing 64 bits",
    );
}

#[test]
fn d_rejects_deep_nesting() {
    let depth = 100_000;
    let mut lists = vec![b'l'; depth];
    lists.extend(vec![b'e'; depth]);
    assert_rejected(&lists, "100000 nested lists");

    let mut in_info = b"d4:info".to_vec();
    in_info.extend(vec![b'l'; depth]);
    in_info.extend(vec![b'e'; depth]);
    in_info.push(b'e');
    assert_rejected(&in_info, "100000 nested lists as the info value");

    let mut unterminated = b"d8:announce".to_vec();
    unterminated.extend(vec![b'l'; depth]);
    assert_rejected(&unterminated, "100000 unterminated nested lists");

    let mut dicts = b"d4:info".to_vec();
    dicts.extend(b"d1:a".repeat(depth));
    dicts.extend(b"i0e");
    dicts.extend(vec![b'e'; depth + 1]);
    assert_rejected(&dicts, "100000 nested dicts");
}
