//! The file system as API callers reach it: the `.torrent` files they name by `path`, read off the
//! async runtime and only when they are regular files of bounded size, and the directories they may
//! have data written to (the daemon's `download_dir` and `allowed_dirs`, symbolic links resolved).

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use metainfo::Torrent;
use thiserror::Error;

/// The largest `.torrent` file an API `path` may name (the same as an uploaded one or one fetched by URL).
pub const MAX_TORRENT_FILE: u64 = 16 << 20;

/// Why a `path` given to the API cannot be used. Its message names the path only: whether the file
/// exists, what it holds or why the OS refused it is the daemon's business, not the caller's.
#[derive(Debug, Error)]
pub enum PathError {
    #[error("path must be absolute, got {0}")]
    Relative(PathBuf),
    #[error("cannot use {0} as a torrent file")]
    Unusable(PathBuf),
}

/// Reads and parses the `.torrent` file at `path`. Blocking: call it from `spawn_blocking`.
///
/// Only a regular file will do, checked before it is opened (so a device is not even opened) and again
/// on the open file (so a file swapped in between is caught); a FIFO opened non-blocking does not wait
/// for a writer. Its size is checked before reading, and no more than the cap plus one byte is read
/// in case it grows.
pub fn read_torrent_file(path: &Path) -> Result<(Vec<u8>, Torrent), PathError> {
    if !path.is_absolute() {
        return Err(PathError::Relative(path.to_path_buf()));
    }
    let unusable = |why: &dyn std::fmt::Display| {
        tracing::debug!("API path {}: {why}", path.display());
        PathError::Unusable(path.to_path_buf())
    };
    let regular = |meta: &fs::Metadata| {
        if !meta.is_file() {
            Err(unusable(&"not a regular file"))
        } else if meta.len() > MAX_TORRENT_FILE {
            Err(unusable(&format!("{} bytes", meta.len())))
        } else {
            Ok(meta.len())
        }
    };
    regular(&fs::metadata(path).map_err(|e| unusable(&e))?)?;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| unusable(&e))?;
    let len = regular(&file.metadata().map_err(|e| unusable(&e))?)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_TORRENT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unusable(&e))?;
    if bytes.len() as u64 > MAX_TORRENT_FILE {
        return Err(unusable(&"grew past the cap while read"));
    }
    let torrent = Torrent::from_bytes(&bytes).map_err(|e| unusable(&e))?;
    Ok((bytes, torrent))
}

/// Where `dir` really is: its longest existing ancestor with every symbolic link resolved, followed
/// by the components that do not exist yet (of which none may be `..`). Blocking.
pub fn resolve_dir(dir: &Path) -> std::io::Result<PathBuf> {
    let mut existing = dir.to_path_buf();
    let mut rest = Vec::new();
    let real = loop {
        match fs::canonicalize(&existing) {
            Ok(real) => break real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(name) = existing.file_name() else {
                    return Err(e);
                };
                rest.push(name.to_os_string());
                if !existing.pop() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    };
    // `file_name` is `None` for a path ending in `..`: such a path never gets here.
    let mut out = real;
    for name in rest.iter().rev() {
        out.push(name);
    }
    Ok(out)
}

/// Whether data may be written below `dir`: it must be absolute, free of `..`, and lie, once its
/// links are resolved, inside one of `roots` (themselves resolved the same way). Blocking.
pub fn is_allowed(dir: &Path, roots: &[PathBuf]) -> bool {
    if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    let Ok(real) = resolve_dir(dir) else {
        return false;
    };
    roots
        .iter()
        .filter_map(|r| resolve_dir(r).ok())
        .any(|root| real.starts_with(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_allowed_below_a_root_and_not_through_a_link_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(root.join("sub")).expect("mkdir");
        fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, root.join("out")).expect("link");
        let roots = [root.clone()];
        assert!(is_allowed(&root, &roots));
        assert!(is_allowed(&root.join("sub"), &roots));
        assert!(
            is_allowed(&root.join("new/deeper"), &roots),
            "not there yet"
        );
        assert!(!is_allowed(&outside, &roots));
        assert!(!is_allowed(&root.join("out"), &roots), "a link out");
        assert!(!is_allowed(&root.join("out/new"), &roots));
        assert!(!is_allowed(&root.join("../outside"), &roots));
        assert!(!is_allowed(&root.join("new/../../outside"), &roots));
        assert!(!is_allowed(Path::new("relative"), &roots));
        // A sibling whose name starts like the root is not below it.
        assert!(!is_allowed(&dir.path().join("rootx"), &roots));
        // A root that is itself a link counts where it leads.
        let linked_root = dir.path().join("linked");
        std::os::unix::fs::symlink(&root, &linked_root).expect("link");
        assert!(is_allowed(
            &root.join("sub"),
            std::slice::from_ref(&linked_root)
        ));
        assert!(is_allowed(
            &linked_root.join("sub"),
            std::slice::from_ref(&root)
        ));
    }

    #[test]
    fn only_a_regular_torrent_file_is_read_and_errors_name_only_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.torrent");
        let text = dir.path().join("notes.txt");
        fs::write(&text, b"secret first byte").expect("write");
        for p in [
            missing.as_path(),
            text.as_path(),
            dir.path(),
            Path::new("/dev/zero"),
        ] {
            let e = read_torrent_file(p).expect_err("refused").to_string();
            assert_eq!(e, format!("cannot use {} as a torrent file", p.display()));
        }
        assert!(matches!(
            read_torrent_file(Path::new("x.torrent")),
            Err(PathError::Relative(_))
        ));
    }
}
