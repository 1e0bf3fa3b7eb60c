//! Checking data on disk against a torrent.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

pub use crate::beneath::Location;
use crate::hashing::{Job, Plan, ReadSource};
use crate::torrent::{Torrent, Version};

/// How one file of the torrent fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Path relative to the download directory, as in [`crate::FileEntry::path`].
    pub path: Vec<String>,
    pub length: u64,
    /// Size on disk, `None` when the file is missing.
    pub size_on_disk: Option<u64>,
    /// Pieces touching this file that failed, out of `pieces`.
    pub bad_pieces: u64,
    pub pieces: u64,
}

impl FileReport {
    pub fn ok(&self) -> bool {
        self.bad_pieces == 0 && self.size_on_disk == Some(self.length)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Whether each piece matched its hash(es).
    pub piece_ok: Vec<bool>,
    /// Real files only (pad files are not on disk).
    pub files: Vec<FileReport>,
}

impl VerifyReport {
    pub fn bad_pieces(&self) -> Vec<u64> {
        (0..self.piece_ok.len() as u64)
            .filter(|&i| !self.piece_ok[i as usize])
            .collect()
    }

    pub fn ok(&self) -> bool {
        self.piece_ok.iter().all(|&ok| ok) && self.files.iter().all(FileReport::ok)
    }
}

/// Where each file of `torrent` lies when its data is at `path` (`None` for pad files).
///
/// `path` may be the directory holding the torrent's content (the download directory) or the content
/// itself: the file of a single-file torrent, or the top directory of a multi-file one.
pub fn data_locations(torrent: &Torrent, path: &Path) -> Vec<Option<Location>> {
    let content_given = if torrent.multi_file {
        !path.join(&torrent.name).is_dir()
    } else {
        !path.is_dir()
    };
    torrent
        .files
        .iter()
        .map(|f| {
            if f.attr.pad {
                return None;
            }
            let rel = if !content_given {
                f.path.clone()
            } else if torrent.multi_file {
                f.path[1..].to_vec()
            } else {
                Vec::new()
            };
            Some(Location {
                root: path.to_path_buf(),
                rel,
            })
        })
        .collect()
}

/// The paths of [`data_locations`].
pub fn resolve_data_root(torrent: &Torrent, path: &Path) -> Vec<Option<PathBuf>> {
    data_locations(torrent, path)
        .into_iter()
        .map(|l| l.map(|l| l.path()))
        .collect()
}

/// Hashes the data at `path` (see [`resolve_data_root`]) against every piece of `torrent`, on all cores.
/// Missing or short files fail the pieces they cover; they are not an error. Hybrid torrents must match
/// both their v1 and their v2 hashes.
pub fn verify(torrent: &Torrent, path: &Path, progress: &AtomicU64) -> VerifyReport {
    let disk = data_locations(torrent, path);
    let source = ReadSource::open_present(&disk);
    let plan = Plan {
        files: &torrent.files,
        piece_length: torrent.piece_length,
        space_len: torrent.piece_space_len(),
    };
    let jobs = plan.jobs(torrent.version.has_v1(), torrent.version.has_v2());
    let results = plan.run(&jobs, &source, progress);
    let mut piece_ok = vec![false; torrent.piece_count() as usize];
    for (job, result) in jobs.iter().zip(results) {
        let Ok(hash) = result else { continue };
        match *job {
            Job::V1Piece(i) => {
                piece_ok[i as usize] = hash.v1.as_ref() == torrent.pieces_v1.get(i as usize);
            }
            Job::FilePiece { file, k, .. } => {
                let entry = &torrent.files[file];
                let index = (entry.offset / torrent.piece_length + k) as usize;
                let expected_v2 = if entry.length > torrent.piece_length {
                    torrent
                        .piece_layer(entry)
                        .and_then(|layer| layer.get(k as usize))
                } else {
                    entry.pieces_root.as_ref()
                };
                // Without piece layers (a torrent built from a magnet link's info dictionary), a hybrid
                // torrent's v1 hashes are what can be checked.
                let layers_missing = torrent.version == Version::Hybrid
                    && torrent.piece_layers.is_empty()
                    && entry.length > torrent.piece_length;
                let v2_ok =
                    layers_missing || (hash.v2.is_some() && hash.v2.as_ref() == expected_v2);
                let v1_ok = torrent.version != Version::Hybrid
                    || hash.v1.as_ref() == torrent.pieces_v1.get(index);
                if index < piece_ok.len() {
                    piece_ok[index] = v1_ok && v2_ok;
                }
            }
        }
    }

    let piece_length = torrent.piece_length;
    let files = torrent
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.attr.pad)
        .map(|(index, f)| {
            let (first, end) = if f.length == 0 {
                (0, 0)
            } else {
                (
                    f.offset / piece_length,
                    (f.offset + f.length).div_ceil(piece_length),
                )
            };
            FileReport {
                path: f.path.clone(),
                length: f.length,
                // The file as opened (no link followed), not whatever the path names now.
                size_on_disk: source.len(index),
                bad_pieces: (first..end).filter(|&i| !piece_ok[i as usize]).count() as u64,
                pieces: end - first,
            }
        })
        .collect();
    VerifyReport { piece_ok, files }
}
