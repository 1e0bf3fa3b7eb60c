//! Replacing a file whole, for every file Spore saves (torrents, the daemon's state, the DHT's routing
//! table): the data goes to a temporary file beside the target, is synced, and is renamed over it, and
//! the directory is synced, so after a crash the file is the old one or the new one, never half.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How temporary files end: what a crash leaves behind, which a reader of the directory may delete.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Distinguishes the temporary files of writes in flight, so two writes never share one.
static WRITE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A write that failed: what was being done to which file.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct WriteError {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

/// Where a write of `path` puts its data before the rename: next to it, named after the whole file
/// name (files that share a stem, like a torrent's `.json` and `.resume`, never collide), the process
/// and a number of its own.
pub fn temp_path(path: &Path) -> Result<PathBuf, WriteError> {
    let name = path.file_name().ok_or_else(|| WriteError {
        action: "writing",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let seq = WRITE_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut temp = name.to_os_string();
    temp.push(format!(".{}-{seq}{TEMP_SUFFIX}", std::process::id()));
    Ok(path.with_file_name(temp))
}

/// Replaces `path` with `data`, a new file readable by all (less the umask).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), WriteError> {
    write_atomic_mode(path, data, 0o666)
}

/// As [`write_atomic`], the file created with `mode` (less the umask) from its first byte on, so a
/// secret is never readable by others, not even between a write and a chmod. The temporary file is
/// removed when the write fails.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = temp_path(path)?;
    let fail = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError {
            action,
            path,
            source,
        }
    };
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(fail("writing", &tmp))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .map_err(fail("writing", &tmp))?;
        fs::rename(&tmp, path).map_err(fail("replacing", path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temps_in(dir: &Path) -> Vec<std::ffi::OsString> {
        fs::read_dir(dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().ends_with(TEMP_SUFFIX))
            .collect()
    }

    #[test]
    fn files_sharing_a_stem_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = dir.path().join("abc");
        let json = temp_path(&base.with_extension("json")).expect("temp path");
        let resume = temp_path(&base.with_extension("resume")).expect("temp path");
        let again = temp_path(&base.with_extension("json")).expect("temp path");
        assert_ne!(json, resume);
        assert_ne!(
            json, again,
            "two writes of one file need two temporary files"
        );
        assert_eq!(json.parent(), Some(dir.path()));
    }

    #[test]
    fn concurrent_writes_of_sibling_files_keep_each_its_own_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = dir.path().join("abc");
        let threads: Vec<_> = ["json", "resume", "torrent"]
            .into_iter()
            .map(|ext| {
                let path = base.with_extension(ext);
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let data = format!("{ext} {i}");
                        write_atomic(&path, data.as_bytes()).expect("write");
                        let read = fs::read_to_string(&path).expect("read");
                        assert!(read.starts_with(ext), "{ext} holds {read:?}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        assert!(temps_in(dir.path()).is_empty());
    }

    #[test]
    fn the_mode_is_kept_and_a_replaced_file_takes_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        fs::write(&path, b"old").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic_mode(&path, b"x", 0o600).expect("write");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read(&path).expect("read"), b"x");
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A non-empty directory where the file should be: the rename fails after the data is written.
        let path = dir.path().join("taken");
        fs::create_dir(&path).expect("mkdir");
        fs::write(path.join("inside"), b"kept").expect("write");
        let e = write_atomic(&path, b"new").expect_err("renaming over a directory fails");
        assert_eq!(e.action, "replacing");
        assert!(
            temps_in(dir.path()).is_empty(),
            "{:?}",
            temps_in(dir.path())
        );
        assert_eq!(fs::read(path.join("inside")).expect("read"), b"kept");
    }

    #[test]
    fn a_path_without_a_file_name_is_an_error() {
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
