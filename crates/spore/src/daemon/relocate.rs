//! Moving a torrent's data to another directory without ever losing it. Each file is renamed when the
//! new place is on the same file system, or else copied (the original kept). Copied data is verified at
//! the new place (every piece that checks at the old place must check there), and only then does the
//! torrent's record switch to the new directory; the originals of copies are deleted after that. The
//! record carries the move in progress (`moving_to`, then `moved_from`), so a daemon killed at any
//! moment finds, on its next start, either the old copy whole (the move undone: renamed files go back,
//! copies are deleted) or the new one whole and verified (the old copies' deletion finished).
//!
//! No link below either directory is followed: files are opened, renamed and deleted through
//! `metainfo::beneath`, relative to directory descriptors opened without following links.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, Context};
use metainfo::{beneath, Torrent};

/// Bytes done and to do in a move (copies count twice: the copy and the verification).
#[derive(Default, Debug)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

impl Progress {
    /// 0.0 to 1.0.
    pub fn fraction(&self) -> f64 {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return 0.0;
        }
        (self.done.load(Ordering::Relaxed) as f64 / total as f64).min(1.0)
    }

    fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// How one file went to the new place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Renamed,
    Copied,
}

/// Why a move failed, and whether what it had done was undone.
pub struct Failure {
    pub error: anyhow::Error,
    pub rolled_back: bool,
}

/// The directory holding `rel`'s last component, opened below `root` without following links, and
/// that component.
fn parent_of<'a>(
    root: &Path,
    rel: &'a [String],
    create: bool,
) -> std::io::Result<(OwnedFd, &'a str)> {
    let (name, dirs) = rel
        .split_last()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    Ok((beneath::open_dir(root, dirs, create)?, name.as_str()))
}

fn cstr(name: &str) -> std::io::Result<CString> {
    CString::new(std::ffi::OsStr::new(name).as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Whether `root/rel` exists (as anything, a link included), following no link on the way. A link on
/// the way counts as existing: nothing may be put there.
pub fn exists(root: &Path, rel: &[String]) -> bool {
    match parent_of(root, rel, false) {
        Ok((dir, name)) => {
            let Ok(c) = cstr(name) else { return true };
            // SAFETY: a valid C string relative to a directory we hold; `st` is written by the call.
            unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                libc::fstatat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                ) == 0
            }
        }
        // Nothing there (a file where a directory should be: the move fails later, changing nothing).
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            false
        }
        // A link on the way: nothing may be put behind it.
        Err(_) => true,
    }
}

/// Renames `from/rel` to `to/rel` (creating `to`'s directories), following no link; `EXDEV` when the
/// two are on different file systems.
fn rename(from: &Path, to: &Path, rel: &[String]) -> std::io::Result<()> {
    // The source must be a regular file, not a link (which a rename would move as a link).
    drop(beneath::open(from, rel, beneath::Open::READ)?);
    let (src_dir, name) = parent_of(from, rel, false)?;
    let (dst_dir, _) = parent_of(to, rel, true)?;
    let c = cstr(name)?;
    rename_at(&src_dir, &c, &dst_dir, &c)
}

/// `renameat(2)` of `old` in `old_dir` to `new` in `new_dir`: names relative to directories we hold,
/// so no path is resolved again, and a link is renamed itself, never what it points to.
fn rename_at(
    old_dir: &OwnedFd,
    old: &CString,
    new_dir: &OwnedFd,
    new: &CString,
) -> std::io::Result<()> {
    // SAFETY: valid C strings and open directory descriptors; the result is checked.
    let r = unsafe {
        libc::renameat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Renames `dir/from` (a file or a folder, the link itself if it is one) to `dir/to`, both paths
/// differing only in their last component, following no link on the way. Refused when `to` exists
/// (`AlreadyExists`). Nothing there yet (a file not created) is no error: nothing to rename.
pub fn rename_in_place(dir: &Path, from: &[String], to: &[String]) -> std::io::Result<()> {
    let (parent, old) = match parent_of(dir, from, false) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let new = to
        .last()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    if exists(dir, to) {
        return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
    }
    if !exists(dir, from) {
        return Ok(());
    }
    let (a, b) = (cstr(old)?, cstr(new)?);
    rename_at(&parent, &a, &parent, &b)
}

/// Copies `from/rel` to a new file `to/rel`, synced, counting the bytes in `progress`.
fn copy(from: &Path, to: &Path, rel: &[String], progress: &Progress) -> anyhow::Result<()> {
    let mut src = beneath::open(from, rel, beneath::Open::READ)
        .with_context(|| format!("opening {}", join(from, rel)))?;
    let (dst_dir, name) = parent_of(to, rel, true)
        .with_context(|| format!("creating the directory of {}", join(to, rel)))?;
    let c = cstr(name)?;
    // SAFETY: a valid C string relative to a directory we hold; the descriptor is checked and owned.
    let fd = unsafe {
        libc::openat(
            dst_dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o666,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("creating {}", join(to, rel)));
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    let mut dst = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src
            .read(&mut buf)
            .with_context(|| format!("reading {}", join(from, rel)))?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n])
            .with_context(|| format!("writing {}", join(to, rel)))?;
        progress.add(n as u64);
    }
    dst.sync_all()
        .with_context(|| format!("writing {}", join(to, rel)))?;
    Ok(())
}

fn join(root: &Path, rel: &[String]) -> String {
    rel.iter()
        .fold(root.to_path_buf(), |p, c| p.join(c))
        .display()
        .to_string()
}

/// The torrent's files (not pad files) that exist at `dir`, as (index, path, size).
fn present(t: &Torrent, dir: &Path) -> Vec<(usize, Vec<String>, u64)> {
    t.files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.attr.pad)
        .filter_map(|(i, f)| {
            let file = beneath::open(dir, &f.path, beneath::Open::READ).ok()?;
            let size = file.metadata().ok()?.len();
            Some((i, f.path.clone(), size))
        })
        .collect()
}

/// The first of the torrent's file paths that already exists at `to`, whether or not the file is at
/// the old place yet: a move must not replace it, and [`undo`] takes whatever is at `to` under the
/// torrent's paths for the move's own.
pub fn occupied(t: &Torrent, to: &Path) -> Option<String> {
    t.files
        .iter()
        .filter(|f| !f.attr.pad)
        .find(|f| exists(to, &f.path))
        .map(|f| join(to, &f.path))
}

/// Moves the torrent's files from `from` to `to`: renames, or copies then verifies. On failure what
/// was done is undone (renamed files back, copies deleted). The originals of copies are left for
/// [`delete_originals`] once the caller has recorded the new place.
pub fn move_files(
    t: &Torrent,
    from: &Path,
    to: &Path,
    progress: &Progress,
) -> Result<Vec<(usize, How)>, Failure> {
    let files = present(t, from);
    // The directory the user named (links allowed there, as for any download directory).
    if let Err(e) = std::fs::create_dir_all(to) {
        return Err(Failure {
            error: anyhow::Error::from(e).context(format!("creating {}", to.display())),
            rolled_back: true,
        });
    }
    progress
        .total
        .store(files.iter().map(|(_, _, s)| s).sum(), Ordering::Relaxed);
    let mut done: Vec<(usize, How)> = Vec::new();
    let result = (|| {
        for (i, rel, size) in &files {
            match rename(from, to, rel) {
                Ok(()) => {
                    done.push((*i, How::Renamed));
                    progress.add(*size);
                }
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    // Counted twice from here: the copy, then its verification.
                    progress.total.fetch_add(*size, Ordering::Relaxed);
                    let copied = copy(from, to, rel, progress);
                    // Undone with the others if the copy failed half way.
                    done.push((*i, How::Copied));
                    copied?;
                }
                Err(e) => {
                    return Err(anyhow::Error::from(e).context(format!(
                        "moving {} to {}",
                        join(from, rel),
                        to.display()
                    )))
                }
            }
        }
        let copied: Vec<usize> = done
            .iter()
            .filter(|(_, h)| *h == How::Copied)
            .map(|(i, _)| *i)
            .collect();
        verify(t, from, to, &copied, progress)
    })();
    match result {
        Ok(()) => Ok(done),
        Err(error) => {
            let rolled_back = undo(t, from, to);
            Err(Failure { error, rolled_back })
        }
    }
}

/// Every piece touching a copied file that checks at `from` must check at `to`.
fn verify(
    t: &Torrent,
    from: &Path,
    to: &Path,
    copied: &[usize],
    progress: &Progress,
) -> anyhow::Result<()> {
    if copied.is_empty() {
        return Ok(());
    }
    let (old, new) = (engine::Storage::new(t, from), engine::Storage::new(t, to));
    let mut pieces: Vec<u64> = copied
        .iter()
        .filter_map(|i| t.files.get(*i))
        .filter(|f| f.length > 0)
        .flat_map(|f| (f.offset / t.piece_length)..=((f.offset + f.length - 1) / t.piece_length))
        .collect();
    pieces.sort_unstable();
    pieces.dedup();
    let mut buf = Vec::new();
    for p in pieces {
        let len = t.piece_size(p) as usize;
        buf.resize(len, 0);
        let start = p * t.piece_length;
        let index = u32::try_from(p)
            .map(engine::PieceIndex::new)
            .context("piece index")?;
        let at_new = new.read(start, &mut buf).is_ok() && engine::piece_matches(t, index, &buf);
        if !at_new {
            // A piece the old place did not have either (not downloaded yet) is no loss.
            let at_old = old.read(start, &mut buf).is_ok() && engine::piece_matches(t, index, &buf);
            if at_old {
                return Err(anyhow!(
                    "piece {p} does not check at {} after the copy",
                    to.display()
                ));
            }
        }
        progress.add(len as u64);
    }
    Ok(())
}

/// Puts every file back at `from`: a file that is there already has its copy at `to` deleted; one
/// that is only at `to` was renamed and is renamed back. True when nothing is left split.
pub fn undo(t: &Torrent, from: &Path, to: &Path) -> bool {
    let mut whole = true;
    for f in t.files.iter().filter(|f| !f.attr.pad) {
        if !exists(to, &f.path) {
            continue;
        }
        let back = if exists(from, &f.path) {
            beneath::remove_file(to, &f.path)
        } else {
            rename(to, from, &f.path)
        };
        if let Err(e) = back {
            tracing::error!("undoing the move of {}: {e}", join(to, &f.path));
            whole = false;
        }
    }
    super::remove_empty_dirs(t, to);
    whole
}

/// After the new place is recorded: deletes the files at `from` whose copy is at `to`.
pub fn delete_originals(t: &Torrent, from: &Path, to: &Path) {
    for f in t.files.iter().filter(|f| !f.attr.pad) {
        if exists(to, &f.path) && exists(from, &f.path) {
            if let Err(e) = beneath::remove_file(from, &f.path) {
                tracing::warn!("removing {} after the move: {e}", join(from, &f.path));
            }
        }
    }
    super::remove_empty_dirs(t, from);
}
