//! The daemon's state directory: settings, the API token, and per torrent its metainfo, its record
//! (options and totals) and its fast-resume data. Every file is replaced atomically (write a temporary
//! file, fsync, rename, fsync the directory), so a kill -9 at any moment leaves the old or the new
//! version, never a torn one.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context;
use metainfo::Torrent;
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

pub fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("no parent directory")?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        fs::create_dir_all(dir.join("torrents"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
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
        let mut bytes = [0u8; 24];
        fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let token = metainfo::hex(&bytes);
        write_atomic(&path, token.as_bytes())?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
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
        write_atomic(
            &self.dir.join("settings.json"),
            &serde_json::to_vec_pretty(s)?,
        )
    }

    fn path(&self, id: &[u8; 20], ext: &str) -> PathBuf {
        self.dir
            .join("torrents")
            .join(format!("{}.{ext}", metainfo::hex(id)))
    }

    pub fn save_metainfo(&self, id: &[u8; 20], torrent_file: &[u8]) -> anyhow::Result<()> {
        write_atomic(&self.path(id, "torrent"), torrent_file)
    }

    pub fn save_record(&self, id: &[u8; 20], r: &Record) -> anyhow::Result<()> {
        write_atomic(&self.path(id, "json"), &serde_json::to_vec_pretty(r)?)
    }

    pub fn save_resume(&self, id: &[u8; 20], r: &ResumeFile) -> anyhow::Result<()> {
        write_atomic(&self.path(id, "resume"), &serde_json::to_vec(r)?)
    }

    pub fn load_resume(&self, id: &[u8; 20]) -> Option<ResumeFile> {
        serde_json::from_slice(&fs::read(self.path(id, "resume")).ok()?).ok()
    }

    pub fn remove(&self, id: &[u8; 20]) {
        for ext in ["torrent", "json", "resume"] {
            let _ = fs::remove_file(self.path(id, ext));
        }
    }

    /// Every saved torrent: id, record, and its metainfo when known.
    pub fn load_all(&self) -> Vec<([u8; 20], Record, Option<Torrent>)> {
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
                    tracing::error!("{}: {e:#}", path.display());
                    continue;
                }
            };
            let torrent = self.load_metainfo(&id);
            out.push((id, record, torrent));
        }
        out.sort_by_key(|(_, r, _)| r.added);
        out
    }

    /// The saved .torrent (for a magnet link, written once its metadata arrived).
    fn load_metainfo(&self, id: &[u8; 20]) -> Option<Torrent> {
        Torrent::from_bytes(&fs::read(self.path(id, "torrent")).ok()?).ok()
    }
}

pub fn parse_id(hex: &str) -> Option<[u8; 20]> {
    if hex.len() != 40 {
        return None;
    }
    let mut id = [0u8; 20];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
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
