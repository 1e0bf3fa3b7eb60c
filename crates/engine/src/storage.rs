//! Pieces on disk: maps piece space onto the torrent's files with positional reads and writes, and checks
//! pieces against their hashes (v1 SHA-1, v2 merkle roots, both for hybrid).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use metainfo::{merkle, Torrent, Version};

use crate::aligned::ALIGN;
use parking_lot::Mutex;
use sha1::{Digest, Sha1};

struct Slot {
    path: PathBuf,
    offset: u64,
    length: u64,
    pad: bool,
    handle: Mutex<Option<File>>,
    /// The file opened with O_DIRECT for aligned writes; `Some(None)` where the file system refuses it.
    direct: Mutex<Option<Option<File>>>,
}

pub struct Storage {
    slots: Vec<Slot>,
    torrent_version: Version,
}

impl Storage {
    /// Lays the torrent's files out below `dir`. Paths come from a validated torrent (no `..`, no absolute
    /// components), so every one of them is inside `dir`.
    pub fn new(torrent: &Torrent, dir: &Path) -> Storage {
        let slots = torrent
            .files
            .iter()
            .map(|f| Slot {
                path: f.path.iter().fold(dir.to_path_buf(), |p, c| p.join(c)),
                offset: f.offset,
                length: f.length,
                pad: f.attr.pad,
                handle: Mutex::new(None),
                direct: Mutex::new(None),
            })
            .collect();
        Storage {
            slots,
            torrent_version: torrent.version,
        }
    }

    /// Creates the directories and (empty) files for `selected` files (`None`: all), so a finished
    /// download has every file, empty ones included.
    pub fn create_files(&self, selected: Option<&[bool]>) -> io::Result<()> {
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.pad || selected.is_some_and(|s| !s.get(i).copied().unwrap_or(true)) {
                continue;
            }
            if let Some(parent) = slot.path.parent() {
                fs::create_dir_all(parent)?;
            }
            // Existing files are left as they are: the recheck decides what in them is good.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&slot.path)?;
        }
        Ok(())
    }

    fn with_file<T>(&self, slot: &Slot, f: impl FnOnce(&File) -> io::Result<T>) -> io::Result<T> {
        let mut handle = slot.handle.lock();
        if handle.is_none() {
            if let Some(parent) = slot.path.parent() {
                fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&slot.path)?;
            *handle = Some(file);
        }
        match handle.as_ref() {
            Some(file) => f(file),
            None => Err(io::Error::other("file handle missing")),
        }
    }

    /// Calls `f(slot, offset within file, range within the buffer)` for each file overlapping piece space
    /// `start..start + len`.
    fn spans(
        &self,
        start: u64,
        len: u64,
        mut f: impl FnMut(&Slot, u64, std::ops::Range<usize>) -> io::Result<()>,
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
    pub fn write(&self, start: u64, data: &[u8]) -> io::Result<()> {
        self.spans(start, data.len() as u64, |slot, file_offset, range| {
            if slot.pad {
                return Ok(());
            }
            let part = &data[range];
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
        })
    }

    /// Writes aligned bytes with O_DIRECT; `false` if this file system does not support it.
    fn write_direct(&self, slot: &Slot, data: &[u8], offset: u64) -> io::Result<bool> {
        let mut direct = slot.direct.lock();
        if direct.is_none() {
            if let Some(parent) = slot.path.parent() {
                fs::create_dir_all(parent)?;
            }
            use std::os::unix::fs::OpenOptionsExt;
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_DIRECT)
                .open(&slot.path)
                .ok();
            *direct = Some(file);
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
pub fn piece_matches(torrent: &Torrent, index: u32, data: &[u8]) -> bool {
    let v1_ok = || {
        torrent
            .pieces_v1
            .get(index as usize)
            .is_some_and(|expected| Sha1::digest(data).as_slice() == expected)
    };
    let v2_ok = || {
        let start = u64::from(index) * torrent.piece_length;
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
