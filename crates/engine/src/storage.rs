//! Pieces on disk: maps piece space onto the torrent's files with positional reads and writes, and checks
//! pieces against their hashes (v1 SHA-1, v2 merkle roots, both for hybrid). Files are opened through
//! `metainfo::beneath`: no symbolic link below the download directory is ever followed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metainfo::beneath::{self, Open};
use metainfo::{merkle, Torrent, Version};
use wire::PieceIndex;

use crate::aligned::ALIGN;
use parking_lot::Mutex;
use sha1::{Digest, Sha1};

struct Slot {
    /// The file's path components below `Storage::dir`.
    rel: Vec<String>,
    offset: u64,
    length: u64,
    pad: bool,
    handle: Mutex<Option<File>>,
    /// The file opened with O_DIRECT for aligned writes; `Some(None)` where the file system refuses it.
    direct: Mutex<Option<Option<File>>>,
}

impl Slot {
    fn open(&self, dir: &Path, how: Open) -> io::Result<File> {
        beneath::open(dir, &self.rel, how)
    }
}

/// A failed disk operation on one of the torrent's files.
#[derive(Debug, Clone)]
pub struct DiskError {
    /// "writing", "reading" or "creating".
    pub action: &'static str,
    pub path: PathBuf,
    pub source: Arc<io::Error>,
}

impl std::fmt::Display for DiskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if beneath::is_link_refused(&self.source) {
            // It names the path already.
            write!(f, "{}", self.source)
        } else {
            write!(
                f,
                "{} {}: {}",
                self.action,
                self.path.display(),
                self.source
            )
        }
    }
}

/// No `source()`: the message includes it already, and error chains would print it twice.
impl std::error::Error for DiskError {}

impl DiskError {
    /// The OS error number, when there is one (ENOSPC, EIO, EROFS, EDQUOT...).
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// File paths given for a torrent's files that are not usable.
#[derive(Debug, thiserror::Error)]
#[error("bad file path: {0}")]
pub struct FilePathsError(String);

pub struct Storage {
    dir: PathBuf,
    slots: Vec<Slot>,
    torrent_version: Version,
}

impl Storage {
    /// Lays the torrent's files out below `dir`. Paths come from a validated torrent (no `..`, no absolute
    /// components), and no link below `dir` is followed, so every one of them is inside `dir`.
    pub fn new(torrent: &Torrent, dir: &Path) -> Storage {
        let slots = torrent
            .files
            .iter()
            .map(|f| Slot {
                rel: f.path.clone(),
                offset: f.offset,
                length: f.length,
                pad: f.attr.pad,
                handle: Mutex::new(None),
                direct: Mutex::new(None),
            })
            .collect();
        Storage {
            dir: dir.to_path_buf(),
            slots,
            torrent_version: torrent.version,
        }
    }

    /// Like `new`, with the files at `paths` (components below `dir`, one path per file of the
    /// torrent) instead of their torrent paths; `None` is `new`. Every component is checked as a torrent's
    /// own are, so nothing named here escapes `dir` either.
    pub fn with_paths(
        torrent: &Torrent,
        dir: &Path,
        paths: Option<&[Vec<String>]>,
    ) -> Result<Storage, FilePathsError> {
        let mut storage = Storage::new(torrent, dir);
        let Some(paths) = paths else {
            return Ok(storage);
        };
        if paths.len() != storage.slots.len() {
            return Err(FilePathsError(format!(
                "{} file paths for {} files",
                paths.len(),
                storage.slots.len()
            )));
        }
        for (slot, path) in storage.slots.iter_mut().zip(paths) {
            if path.is_empty() {
                return Err(FilePathsError("an empty file path".into()));
            }
            for c in path {
                metainfo::validate_component(c).map_err(|e| FilePathsError(e.to_string()))?;
            }
            slot.rel = path.clone();
        }
        Ok(storage)
    }

    fn error(&self, action: &'static str, slot: &Slot, e: io::Error) -> DiskError {
        let path = slot.rel.iter().fold(self.dir.clone(), |p, c| p.join(c));
        DiskError {
            action,
            path,
            source: Arc::new(e),
        }
    }

    /// Creates the directories and (empty) files for `selected` files (`None`: all), so a finished
    /// download has every file, empty ones included. A link where a file or directory should be is an
    /// error naming it.
    pub fn create_files(&self, selected: Option<&[bool]>) -> Result<(), DiskError> {
        let mut root_made = false;
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.pad || selected.is_some_and(|s| !s.get(i).copied().unwrap_or(true)) {
                continue;
            }
            if !root_made {
                // The download directory itself, as the user named it (links followed: their choice).
                std::fs::create_dir_all(&self.dir).map_err(|e| DiskError {
                    action: "creating",
                    path: self.dir.clone(),
                    source: Arc::new(e),
                })?;
                root_made = true;
            }
            // Existing files are left as they are: the recheck decides what in them is good. Not kept
            // open: a torrent of many files would hold a descriptor for each.
            slot.open(&self.dir, Open::READ_WRITE_CREATE)
                .map_err(|e| self.error("creating", slot, e))?;
        }
        Ok(())
    }

    fn with_file<T>(&self, slot: &Slot, f: impl FnOnce(&File) -> io::Result<T>) -> io::Result<T> {
        let mut handle = slot.handle.lock();
        if handle.is_none() {
            *handle = Some(slot.open(&self.dir, Open::READ_WRITE_CREATE)?);
        }
        match handle.as_ref() {
            Some(file) => f(file),
            None => Err(io::Error::other("file handle missing")),
        }
    }

    /// Calls `f(slot, offset within file, range within the buffer)` for each file overlapping piece space
    /// `start..start + len`.
    fn spans<'a>(
        &'a self,
        start: u64,
        len: u64,
        mut f: impl FnMut(&'a Slot, u64, std::ops::Range<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = start + len;
        for slot in &self.slots {
            let (s, e) = (slot.offset, slot.offset + slot.length);
            if e <= start || s >= end || slot.length == 0 {
                continue;
            }
            let from = start.max(s);
            let to = end.min(e);
            f(
                slot,
                from - s,
                (from - start) as usize..(to - start) as usize,
            )?;
        }
        Ok(())
    }

    /// Writes a verified piece. Bytes of pad files are not written. Where the file offset and the
    /// buffer are page-aligned, whole pages go straight to the device (O_DIRECT); the rest through the
    /// page cache.
    pub fn write(&self, start: u64, data: &[u8]) -> Result<(), DiskError> {
        let mut failed = None;
        let result = self.spans(start, data.len() as u64, |slot, file_offset, range| {
            self.write_span(slot, file_offset, &data[range])
                .inspect_err(|_| failed = Some(slot))
        });
        result.map_err(|e| match failed {
            Some(slot) => self.error("writing", slot, e),
            None => DiskError {
                action: "writing",
                path: self.dir.clone(),
                source: Arc::new(e),
            },
        })
    }

    fn write_span(&self, slot: &Slot, file_offset: u64, part: &[u8]) -> io::Result<()> {
        if slot.pad {
            return Ok(());
        }
        let aligned = file_offset.is_multiple_of(ALIGN as u64)
            && (part.as_ptr() as usize).is_multiple_of(ALIGN);
        let direct_len = if aligned {
            part.len() / ALIGN * ALIGN
        } else {
            0
        };
        let written =
            direct_len > 0 && self.write_direct(slot, &part[..direct_len], file_offset)?;
        let (rest, at) = if written {
            (&part[direct_len..], file_offset + direct_len as u64)
        } else {
            (part, file_offset)
        };
        if rest.is_empty() {
            return Ok(());
        }
        self.with_file(slot, |file| file.write_all_at(rest, at))
    }

    /// Writes aligned bytes with O_DIRECT; `false` if this file system does not support it.
    fn write_direct(&self, slot: &Slot, data: &[u8], offset: u64) -> io::Result<bool> {
        let mut direct = slot.direct.lock();
        if direct.is_none() {
            let how = Open {
                write: true,
                read: false,
                create: true,
                direct: true,
            };
            match slot.open(&self.dir, how) {
                Ok(file) => *direct = Some(Some(file)),
                // A file system without O_DIRECT refuses it at open.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => *direct = Some(None),
                Err(e) => return Err(e),
            }
        }
        let Some(Some(file)) = direct.as_ref() else {
            return Ok(false);
        };
        match file.write_all_at(data, offset) {
            Ok(()) => Ok(true),
            // Opened, but the device wants a larger alignment: use the page cache from now on.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                *direct = Some(None);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads piece space `start..start + buf.len()`; pad files read as zeros.
    pub fn read(&self, start: u64, buf: &mut [u8]) -> io::Result<()> {
        self.spans(start, buf.len() as u64, |slot, file_offset, range| {
            if slot.pad {
                buf[range].fill(0);
                return Ok(());
            }
            self.with_file(slot, |file| {
                file.read_exact_at(&mut buf[range], file_offset)
            })
        })
    }

    /// Flushes written data to disk.
    pub fn sync(&self) -> io::Result<()> {
        for slot in &self.slots {
            if let Some(file) = slot.handle.lock().as_ref() {
                file.sync_data()?;
            }
            if let Some(Some(file)) = slot.direct.lock().as_ref() {
                file.sync_data()?;
            }
        }
        Ok(())
    }

    pub fn version(&self) -> Version {
        self.torrent_version
    }
}

/// Whether `data` is piece `index` of `torrent`: SHA-1 for v1, the merkle piece root for v2, both for
/// hybrid torrents.
pub fn piece_matches(torrent: &Torrent, index: PieceIndex, data: &[u8]) -> bool {
    let v1_ok = || {
        torrent
            .pieces_v1
            .get(index.as_usize())
            .is_some_and(|expected| Sha1::digest(data).as_slice() == expected)
    };
    let v2_ok = || {
        let start = u64::from(index.get()) * torrent.piece_length;
        let Some(file) = torrent.files.iter().find(|f| {
            !f.attr.pad && f.length > 0 && f.offset <= start && start < f.offset + f.length
        }) else {
            return false;
        };
        let k = ((start - file.offset) / torrent.piece_length) as usize;
        let in_file = ((file.offset + file.length - start).min(torrent.piece_length)) as usize;
        let Some(content) = data.get(..in_file) else {
            return false;
        };
        let blocks = (torrent.piece_length as usize) / merkle::BLOCK_SIZE;
        let root = merkle::piece_root(content, blocks, file.length > torrent.piece_length);
        let expected = if file.length > torrent.piece_length {
            torrent.piece_layer(file).and_then(|layer| layer.get(k))
        } else {
            file.pieces_root.as_ref()
        };
        expected == Some(&root)
    };
    match torrent.version {
        Version::V1 => v1_ok(),
        Version::V2 => v2_ok(),
        // A torrent from a magnet link has no piece layers (they are not in the info dictionary); its v1
        // hashes still cover every byte.
        Version::Hybrid => v1_ok() && (torrent.piece_layers.is_empty() || v2_ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metainfo::beneath::{with_resolver, Resolver};
    use std::os::unix::fs::symlink;
    use std::sync::atomic::AtomicU64;

    /// A two-file torrent `t/{a.bin,sub/b.bin}` and its content.
    fn torrent(dir: &Path) -> (Torrent, Vec<u8>) {
        let content = dir.join("src/t");
        std::fs::create_dir_all(content.join("sub")).expect("mkdir");
        let a: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
        let b: Vec<u8> = (0..30_000u32).map(|i| (i * 13) as u8).collect();
        std::fs::write(content.join("a.bin"), &a).expect("write");
        std::fs::write(content.join("sub/b.bin"), &b).expect("write");
        let options = metainfo::CreateOptions {
            piece_length: Some(16 * 1024),
            ..Default::default()
        };
        let created = metainfo::create(&content, &options, &AtomicU64::new(0)).expect("create");
        (created.torrent, [a, b].concat())
    }

    /// Every way of resolving paths: what the kernel has, openat2 itself, the per-component walk, and
    /// the fallback from an openat2 that answers ENOSYS.
    const RESOLVERS: [Resolver; 4] = [
        Resolver::Auto,
        Resolver::Openat2,
        Resolver::Walk,
        Resolver::Enosys,
    ];

    #[test]
    fn files_go_to_the_paths_given_and_bad_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, bytes) = torrent(dir.path());
        let out = dir.path().join("out");
        let paths = vec![
            vec!["T2".to_string(), "first.bin".to_string()],
            vec!["T2".to_string(), "sub".to_string(), "b.bin".to_string()],
        ];
        let storage = Storage::with_paths(&t, &out, Some(&paths)).expect("paths");
        storage.create_files(None).expect("create");
        storage.write(0, &bytes).expect("write");
        storage.sync().expect("sync");
        assert_eq!(
            std::fs::read(out.join("T2/first.bin")).expect("read"),
            bytes[..40_000]
        );
        assert_eq!(
            std::fs::read(out.join("T2/sub/b.bin")).expect("read"),
            bytes[40_000..]
        );
        assert!(!out.join("t").exists());
        for bad in [
            vec![vec!["..".to_string(), "a".to_string()], paths[1].clone()],
            vec![vec!["/etc".to_string()], paths[1].clone()],
            vec![vec![], paths[1].clone()],
            vec![paths[0].clone()],
        ] {
            assert!(
                Storage::with_paths(&t, &out, Some(&bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pieces_are_written_and_read_back_under_every_resolver() {
        for r in RESOLVERS {
            with_resolver(r, || {
                let dir = tempfile::tempdir().expect("tempdir");
                let (t, bytes) = torrent(dir.path());
                // Missing, as a daemon's download directory may be: created.
                let out = dir.path().join("out/deeper");
                let storage = Storage::new(&t, &out);
                storage.create_files(None).expect("create");
                // Page-aligned, so the O_DIRECT path is taken where the file system has it.
                let mut buf = crate::aligned::AlignedBuf::reused(bytes.len());
                buf.copy_from_slice(&bytes);
                storage.write(0, &buf).expect("write");
                storage.sync().expect("sync");
                let mut back = vec![0u8; bytes.len()];
                storage.read(0, &mut back).expect("read");
                assert!(back == bytes, "{r:?}");
                assert!(
                    metainfo::verify(&t, &out, &AtomicU64::new(0)).ok(),
                    "{r:?}: the recheck finds it"
                );
            });
        }
    }

    #[test]
    fn links_below_the_download_directory_are_never_followed() {
        for r in RESOLVERS {
            with_resolver(r, || {
                let dir = tempfile::tempdir().expect("tempdir");
                let (t, bytes) = torrent(dir.path());
                let outside = dir.path().join("outside");
                std::fs::create_dir_all(outside.join("sub")).expect("mkdir");
                std::fs::write(outside.join("a.bin"), b"precious").expect("write");

                // The torrent's directory is a link to a directory outside.
                let out = dir.path().join("out1");
                std::fs::create_dir(&out).expect("mkdir");
                symlink(&outside, out.join("t")).expect("symlink");
                let storage = Storage::new(&t, &out);
                let e = storage.create_files(None).expect_err("refused");
                assert!(
                    e.to_string().contains("out1/t is a symbolic link"),
                    "{r:?}: {e}"
                );
                let e = storage.write(0, &bytes).expect_err("refused");
                assert!(beneath::is_link_refused(&e.source), "{r:?}: {e}");
                let mut back = vec![0u8; 100];
                assert!(storage.read(0, &mut back).is_err());

                // A file is a link to a file outside; a directory deeper down is a link.
                let out = dir.path().join("out2");
                std::fs::create_dir_all(out.join("t")).expect("mkdir");
                symlink(outside.join("a.bin"), out.join("t/a.bin")).expect("symlink");
                symlink(outside.join("sub"), out.join("t/sub")).expect("symlink");
                let storage = Storage::new(&t, &out);
                let e = storage.create_files(None).expect_err("refused");
                assert!(
                    e.to_string().contains("out2/t/a.bin is a symbolic link"),
                    "{r:?}: {e}"
                );
                assert!(storage.write(0, &bytes).is_err());
                let last = bytes.len() as u64 - 100;
                assert!(storage.write(last, &bytes[..100]).is_err());
                // The recheck reads nothing through them either.
                let report = metainfo::verify(&t, &out, &AtomicU64::new(0));
                assert!(report.piece_ok.iter().all(|ok| !ok), "{r:?}");

                assert_eq!(
                    std::fs::read(outside.join("a.bin")).expect("read"),
                    b"precious"
                );
                assert_eq!(
                    std::fs::read_dir(outside.join("sub")).expect("dir").count(),
                    0,
                    "{r:?}: nothing written outside"
                );
            });
        }
    }
}
