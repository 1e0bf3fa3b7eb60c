//! The daemon's state directory: settings, the API token, and per torrent its metainfo, its record
//! (options and totals) and its fast-resume data. Every file is replaced atomically (write a temporary
//! file, fsync, rename, fsync the directory), so a kill -9 at any moment leaves the old or the new
//! version, never a torn one.

use engine::InfoHash;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::Context;
use metainfo::Torrent;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub download_dir: PathBuf,
    pub max_active_downloads: usize,
    pub max_active_seeds: usize,
    /// Connections over all torrents, and per torrent.
    pub max_peers_total: usize,
    pub max_peers_per_torrent: usize,
    pub max_upload_rate: Option<u64>,
    pub max_download_rate: Option<u64>,
    pub seed_ratio: Option<f64>,
    /// Seconds.
    pub seed_time: Option<u64>,
    /// Directories besides `download_dir` (and below them) where the API may put a torrent's data.
    /// Set only in the config file, on the command line or in settings.json, never through the API.
    pub allowed_dirs: Vec<PathBuf>,
    /// Incoming peer connections that have not sent their handshake: at once, per IP, and the seconds
    /// they get to send it.
    pub max_peer_handshakes: usize,
    pub max_peer_handshakes_per_ip: usize,
    pub peer_handshake_timeout: u64,
    /// API connections at once and per IP; seconds an API connection may sit silent between requests,
    /// and seconds a request's headers may take.
    pub api_max_connections: usize,
    pub api_max_connections_per_ip: usize,
    pub api_idle_timeout: u64,
    pub api_header_timeout: u64,
    /// Credentials the Transmission RPC takes by HTTP basic auth besides the API token (both set, or
    /// neither). Set only in the config file or settings.json; the API never shows the password.
    pub rpc_username: Option<String>,
    pub rpc_password: Option<String>,
    /// Whether torrents added through the Transmission RPC without `paused` start at once.
    pub start_added_torrents: bool,
    /// Alternative ("turtle") speed limits, bytes/s, in force while `alt_speed_enabled`, or by the
    /// weekly schedule: from `alt_speed_time_begin` to `alt_speed_time_end` (minutes after local
    /// midnight; an end before the begin runs past midnight) on the days of `alt_speed_time_day`
    /// (Transmission's bits: 1 Sunday, 2 Monday, ..., 64 Saturday).
    pub alt_speed_up: u64,
    pub alt_speed_down: u64,
    pub alt_speed_enabled: bool,
    pub alt_speed_time_enabled: bool,
    pub alt_speed_time_begin: u32,
    pub alt_speed_time_end: u32,
    pub alt_speed_time_day: u8,
    /// A directory polled every 2 s for .torrent files to add (renamed `.torrent.added` after, or
    /// `.torrent.invalid`). Only read: it need not be inside the allowed directories.
    pub watch_dir: Option<PathBuf>,
    /// Bytes of memory for serving uploads, over every torrent (engine::set_upload_memory).
    pub upload_memory: u64,
    /// Ask the router to forward the peer port (UPnP IGD, PCP, NAT-PMP); read at start.
    pub port_mapping: bool,
    /// Transports for peer connections (`utp,tcp`, `tcp`, `utp`); read at start.
    pub transports: String,
    /// Message Stream Encryption: `prefer`, `require` or `off`. Incoming peers follow a change at
    /// once; outgoing connections of torrents started afterwards.
    pub encryption: Encryption,
}

/// The `encryption` setting, as the config file and the API spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    #[default]
    Prefer,
    Require,
    Off,
}

impl From<Encryption> for engine::Encryption {
    fn from(e: Encryption) -> engine::Encryption {
        match e {
            Encryption::Prefer => engine::Encryption::Prefer,
            Encryption::Require => engine::Encryption::Require,
            Encryption::Off => engine::Encryption::Off,
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            download_dir: std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join("Downloads"))
                .unwrap_or_else(|| PathBuf::from("downloads")),
            max_active_downloads: 5,
            max_active_seeds: 2000,
            max_peers_total: 500,
            max_peers_per_torrent: 50,
            max_upload_rate: None,
            max_download_rate: None,
            seed_ratio: None,
            seed_time: None,
            allowed_dirs: Vec::new(),
            max_peer_handshakes: 64,
            max_peer_handshakes_per_ip: 4,
            peer_handshake_timeout: 5,
            api_max_connections: 64,
            api_max_connections_per_ip: 32,
            api_idle_timeout: 60,
            api_header_timeout: 10,
            rpc_username: None,
            rpc_password: None,
            start_added_torrents: true,
            alt_speed_up: 50_000,
            alt_speed_down: 50_000,
            alt_speed_enabled: false,
            alt_speed_time_enabled: false,
            alt_speed_time_begin: 9 * 60,
            alt_speed_time_end: 17 * 60,
            alt_speed_time_day: 0x7f,
            watch_dir: None,
            upload_memory: engine::DEFAULT_UPLOAD_MEMORY as u64,
            port_mapping: true,
            encryption: Encryption::Prefer,
            transports: engine::Transports::default().to_string(),
        }
    }
}

/// What the daemon keeps about one torrent besides its metainfo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Set for torrents added by magnet link (their metainfo is only the info dictionary).
    pub magnet: Option<String>,
    pub download_dir: PathBuf,
    pub added: u64,
    pub paused: bool,
    /// Its seed goal was reached.
    pub finished: bool,
    /// All pieces of the selected files were verified at the last save.
    pub complete: bool,
    /// Selection by file index (`None`: all).
    pub files: Option<Vec<bool>>,
    /// Priority by file index (engine::PRIORITY_*; `None`: all normal).
    #[serde(default)]
    pub priorities: Option<Vec<u8>>,
    pub seed_ratio: Option<f64>,
    pub seed_time: Option<u64>,
    pub max_upload_rate: Option<u64>,
    pub max_download_rate: Option<u64>,
    pub downloaded: u64,
    pub uploaded: u64,
    pub seeding_secs: u64,
    /// Labels set through the Transmission RPC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Where it stands in the queue: queued torrents start lowest first (dense from 0 over all torrents).
    #[serde(default)]
    pub queue_position: u64,
    /// When the selected files were first complete (seconds since the epoch).
    #[serde(default)]
    pub done: Option<u64>,
    /// The announce list in use when changed from the torrent's own (tiers of URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trackers: Option<Vec<Vec<String>>>,
    /// A move of its data to this directory is under way (`download_dir` still holds the data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<PathBuf>,
    /// A move from this directory is done; the copies left there are to be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<PathBuf>,
    /// Files and folders renamed on disk (`torrent-rename-path`): a path prefix as the torrent names it
    /// (components joined by '/', which no component holds) → the new last component. The torrent's
    /// own paths stay what they are; these only say where on disk its files are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub renames: BTreeMap<String, String>,
}

/// Fast-resume data: which pieces were verified, and what the files looked like when that was saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeFile {
    pub pieces: u32,
    /// The verified-pieces bitfield, base64.
    pub have: String,
    /// (size, mtime in ns) of every file, in torrent order, taken before the bitfield.
    pub files: Vec<Option<(u64, u128)>>,
    /// When it was saved, ns since the epoch.
    pub saved_at: u128,
}

use metainfo::atomic::TEMP_SUFFIX;
pub use metainfo::atomic::{write_atomic, write_atomic_mode};

/// Deletes the temporary files a crash left in `dir`: their write never finished, so the file they
/// were to replace is still whole.
fn remove_leftover_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(TEMP_SUFFIX)) {
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!("cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}

/// One torrent's gate to its state files: writes go through it one at a time, and none once the
/// torrent is removed, so a save racing a removal cannot bring its files back after they are deleted.
#[derive(Default)]
pub struct WriteGate {
    removed: Mutex<bool>,
}

impl WriteGate {
    /// Runs `write` unless the torrent was removed (`None` then).
    pub fn write<T>(&self, write: impl FnOnce() -> T) -> Option<T> {
        let removed = self.removed.lock();
        if *removed {
            return None;
        }
        Some(write())
    }

    /// Shuts the gate for good, after any write in progress finished: the files can be deleted then.
    pub fn close(&self) {
        *self.removed.lock() = true;
    }
}

pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        fs::create_dir_all(dir.join("torrents"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        remove_leftover_temps(dir);
        remove_leftover_temps(&dir.join("torrents"));
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The API token, created on first start, readable by the owner only.
    pub fn token(&self) -> anyhow::Result<String> {
        let path = self.dir.join("api-token");
        if let Ok(t) = fs::read_to_string(&path) {
            let t = t.trim().to_string();
            if t.len() >= 32 {
                return Ok(t);
            }
        }
        let token = random_hex(24)?;
        write_atomic_mode(&path, token.as_bytes(), 0o600)?;
        Ok(token)
    }

    pub fn settings(&self) -> anyhow::Result<Settings> {
        match fs::read(self.dir.join("settings.json")) {
            Ok(b) => serde_json::from_slice(&b).context("settings.json"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn save_settings(&self, s: &Settings) -> anyhow::Result<()> {
        Ok(write_atomic(
            &self.dir.join("settings.json"),
            &serde_json::to_vec_pretty(s)?,
        )?)
    }

    fn path(&self, id: &InfoHash, ext: &str) -> PathBuf {
        self.dir
            .join("torrents")
            .join(format!("{}.{ext}", id.to_hex()))
    }

    pub fn save_metainfo(&self, id: &InfoHash, torrent_file: &[u8]) -> anyhow::Result<()> {
        Ok(write_atomic(&self.path(id, "torrent"), torrent_file)?)
    }

    pub fn save_record(&self, id: &InfoHash, r: &Record) -> anyhow::Result<()> {
        Ok(write_atomic(
            &self.path(id, "json"),
            &serde_json::to_vec_pretty(r)?,
        )?)
    }

    pub fn save_resume(&self, id: &InfoHash, r: &ResumeFile) -> anyhow::Result<()> {
        Ok(write_atomic(
            &self.path(id, "resume"),
            &serde_json::to_vec(r)?,
        )?)
    }

    pub fn load_resume(&self, id: &InfoHash) -> Option<ResumeFile> {
        serde_json::from_slice(&fs::read(self.path(id, "resume")).ok()?).ok()
    }

    pub fn remove(&self, id: &InfoHash) {
        for ext in ["torrent", "json", "resume"] {
            let _ = fs::remove_file(self.path(id, ext));
        }
    }

    /// Every saved torrent: id, record, and its metainfo when known.
    pub fn load_all(&self) -> Vec<(InfoHash, Record, Option<Torrent>)> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.dir.join("torrents")) else {
            return out;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).and_then(parse_id) else {
                continue;
            };
            let record: Record = match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice(&b)?))
            {
                Ok(r) => r,
                Err(e) => {
                    // Left in place, so the torrent comes back once the file is repaired.
                    tracing::warn!(
                        "skipping torrent {}: its record {} cannot be read: {e:#}",
                        id.to_hex(),
                        path.display()
                    );
                    continue;
                }
            };
            let torrent = self.load_metainfo(&id);
            out.push((id, record, torrent));
        }
        out.sort_by_key(|(_, r, _)| (r.queue_position, r.added));
        out
    }

    /// The saved .torrent (for a magnet link, written once its metadata arrived).
    fn load_metainfo(&self, id: &InfoHash) -> Option<Torrent> {
        let path = self.path(id, "torrent");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            // A magnet link's, until its metadata arrives.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("{}: {e}", path.display());
                return None;
            }
        };
        match Torrent::from_bytes(&bytes) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("{}: not a valid torrent: {e}", path.display());
                None
            }
        }
    }
}

/// `bytes` random bytes from the OS, in hex.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(metainfo::hex(&buf))
}

pub fn parse_id(hex: &str) -> Option<InfoHash> {
    InfoHash::from_hex(hex)
}

/// (size, mtime) of each of the torrent's files under `dir`, `None` where it is missing.
pub fn file_stamps(torrent: &Torrent, dir: &Path) -> Vec<Option<(u64, u128)>> {
    torrent
        .files
        .iter()
        .map(|f| {
            if f.attr.pad {
                return None;
            }
            let meta = fs::metadata(file_path(dir, f)).ok()?;
            let mtime = meta
                .modified()
                .ok()?
                .duration_since(UNIX_EPOCH)
                .ok()?
                .as_nanos();
            Some((meta.len(), mtime))
        })
        .collect()
}

/// The torrent as it lies on disk: its file paths (and its name, the first component) with `renames`
/// applied. Shared unchanged when nothing was renamed.
pub fn on_disk(t: &Arc<Torrent>, renames: &BTreeMap<String, String>) -> Arc<Torrent> {
    if renames.is_empty() {
        return t.clone();
    }
    let mut out = (**t).clone();
    for f in out.files.iter_mut() {
        f.path = disk_path(&f.path, renames);
    }
    if let Some(first) = out.files.iter().find(|f| !f.attr.pad) {
        if let Some(top) = first.path.first() {
            out.name = top.clone();
        }
    }
    Arc::new(out)
}

/// One file's path with `renames` applied, component by component from the top.
pub fn disk_path(path: &[String], renames: &BTreeMap<String, String>) -> Vec<String> {
    let mut key = String::new();
    path.iter()
        .map(|c| {
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(c);
            renames.get(&key).cloned().unwrap_or_else(|| c.clone())
        })
        .collect()
}

/// Where a file of the torrent lives below the download directory (its path, which starts with the
/// torrent's name for multi-file torrents, was validated when the torrent was parsed).
pub fn file_path(dir: &Path, f: &metainfo::FileEntry) -> PathBuf {
    f.path.iter().fold(dir.to_path_buf(), |p, c| p.join(c))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn leftover_temporary_files_are_removed_at_open_and_never_loaded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let torrents = dir.path().join("torrents");
        fs::create_dir_all(&torrents).expect("mkdir");
        let id = metainfo::hex(&[7u8; 20]);
        // A record's name with a temporary suffix, and the name the old scheme used.
        let half_written = torrents.join(format!("{id}.json.12-3.tmp"));
        let old_style = torrents.join(format!("{id}.tmp"));
        let settings = dir.path().join("settings.json.1-0.tmp");
        for p in [&half_written, &old_style, &settings] {
            fs::write(p, b"{").expect("write");
        }
        let store = Store::open(dir.path()).expect("open");
        for p in [&half_written, &old_style, &settings] {
            assert!(!p.exists(), "{} left", p.display());
        }
        assert!(store.load_all().is_empty());
    }

    #[test]
    fn a_closed_gate_refuses_writes() {
        let gate = WriteGate::default();
        assert_eq!(gate.write(|| 1), Some(1));
        gate.close();
        let mut ran = false;
        assert_eq!(gate.write(|| ran = true), None);
        assert!(!ran);
    }

    #[test]
    fn closing_the_gate_waits_for_the_write_in_progress() {
        let gate = Arc::new(WriteGate::default());
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (entered, inside) = std::sync::mpsc::channel();
        let writer = {
            let (gate, finished) = (gate.clone(), finished.clone());
            std::thread::spawn(move || {
                gate.write(|| {
                    let _ = entered.send(());
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    finished.store(true, Ordering::SeqCst);
                })
            })
        };
        inside.recv().expect("writer started");
        gate.close();
        assert!(
            finished.load(Ordering::SeqCst),
            "closed while a write was still going on"
        );
        writer.join().expect("writer thread");
    }
}
