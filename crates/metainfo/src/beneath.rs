//! Opening a torrent's files below a root directory without following symbolic links.
//!
//! The root (a download directory the user named) is taken as it is, link or not; every component below
//! it is resolved without following links, so a link planted at `OUT/name` or `OUT/name/sub` can neither
//! redirect a write out of the directory nor make us read (and seed) a file from elsewhere. Where the
//! kernel has `openat2` (Linux 5.6) one call resolves the whole path with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`; otherwise, or when directories must be created, the path is walked one
//! component at a time with `openat(O_NOFOLLOW)` and `mkdirat`.

use std::cell::Cell;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

/// How to open a file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open {
    pub write: bool,
    /// Also readable when `write` is set.
    pub read: bool,
    /// Create the file, and any missing directory on the way, when absent.
    pub create: bool,
    /// O_DIRECT.
    pub direct: bool,
}

impl Open {
    pub const READ: Open = Open {
        write: false,
        read: true,
        create: false,
        direct: false,
    };
    pub const READ_WRITE_CREATE: Open = Open {
        write: true,
        read: true,
        create: true,
        direct: false,
    };

    fn flags(self) -> libc::c_int {
        let mut flags = match (self.read, self.write) {
            (_, false) => libc::O_RDONLY,
            (true, true) => libc::O_RDWR,
            (false, true) => libc::O_WRONLY,
        };
        if self.create {
            flags |= libc::O_CREAT;
        }
        if self.direct {
            flags |= libc::O_DIRECT;
        }
        flags
    }
}

/// A symbolic link where a torrent's file or directory should be.
#[derive(Debug, thiserror::Error)]
#[error("{} is a symbolic link; refusing to follow it (remove it, or choose another directory)", path.display())]
pub struct LinkRefused {
    pub path: PathBuf,
}

/// Whether `e` is a [`LinkRefused`].
pub fn is_link_refused(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LinkRefused>())
}

/// How paths are resolved: `Auto` uses `openat2` when the kernel has it. The others exist so tests can
/// take each path on any kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    Auto,
    /// `openat2` only (as if the kernel had it, which the caller must know).
    Openat2,
    /// One component at a time with `O_NOFOLLOW`, as on kernels without `openat2`.
    Walk,
    /// `openat2` answers ENOSYS, as a kernel before 5.6 (or a seccomp filter) would.
    Enosys,
}

thread_local! {
    static FORCED: Cell<Resolver> = const { Cell::new(Resolver::Auto) };
}

/// 0: not tried yet, 1: the kernel has `openat2`, 2: it does not.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// Runs `f` with this thread's opens resolved by `resolver` (for tests).
#[doc(hidden)]
pub fn with_resolver<T>(resolver: Resolver, f: impl FnOnce() -> T) -> T {
    let before = FORCED.with(|c| c.replace(resolver));
    let out = f();
    FORCED.with(|c| c.set(before));
    out
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn fd_result(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a file descriptor the kernel just returned, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
    }
}

fn openat(dir: RawFd, name: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let name = cstring(name)?;
    loop {
        // SAFETY: a valid C string and flags; the result is checked.
        let ret = unsafe { libc::openat(dir, name.as_ptr(), flags, libc::c_uint::from(mode)) };
        match fd_result(libc::c_long::from(ret)) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dir, path, flags, mode, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`; `None` when the kernel has
/// no `openat2` (or the resolver says not to use it).
fn openat2(
    dir: RawFd,
    rel: &[&OsStr],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Option<io::Result<OwnedFd>> {
    let forced = FORCED.with(Cell::get);
    match forced {
        Resolver::Walk => return None,
        Resolver::Auto if OPENAT2.load(Ordering::Relaxed) == 2 => return None,
        _ => {}
    }
    let mut joined = Vec::new();
    for (i, c) in rel.iter().enumerate() {
        if i > 0 {
            joined.push(b'/');
        }
        joined.extend_from_slice(c.as_bytes());
    }
    let path = match CString::new(joined) {
        Ok(p) => p,
        Err(_) => return Some(Err(io::Error::from(io::ErrorKind::InvalidInput))),
    };
    let how = OpenHow {
        flags: flags as u32 as u64,
        // The kernel refuses a mode without O_CREAT.
        mode: if flags & libc::O_CREAT != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
    };
    let result = loop {
        let result = if forced == Resolver::Enosys {
            Err(io::Error::from_raw_os_error(libc::ENOSYS))
        } else {
            // SAFETY: a valid C string and an `open_how` of the size passed; the result is checked.
            fd_result(unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    dir,
                    path.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            })
        };
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // Also what a seccomp filter that does not know the call answers.
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                if forced == Resolver::Auto {
                    OPENAT2.store(2, Ordering::Relaxed);
                }
                return None;
            }
            // Asked for an `open_how` feature this kernel lacks: walk instead.
            Err(e) if e.raw_os_error() == Some(libc::E2BIG) => return None,
            other => break other,
        }
    };
    if forced == Resolver::Auto {
        OPENAT2.store(1, Ordering::Relaxed);
    }
    Some(result)
}

fn is_symlink(dir: RawFd, name: &OsStr) -> bool {
    let Ok(name) = cstring(name) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid C string and a buffer of the right type; read only on success.
    let ret = unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // SAFETY: initialised by a successful fstatat.
    ret == 0 && (unsafe { st.assume_init() }.st_mode & libc::S_IFMT) == libc::S_IFLNK
}

fn refused(root: &Path, rel: &[&OsStr]) -> io::Error {
    let path = rel.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    io::Error::other(LinkRefused { path })
}

/// Whether `e`, from opening component `name` in `dir`, is because `name` is a link.
fn link_error(e: &io::Error, dir: RawFd, name: &OsStr) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EMLINK)
    ) && is_symlink(dir, name)
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let root = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    openat(
        libc::AT_FDCWD,
        root.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
    )
}

const DIR_FLAGS: libc::c_int =
    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// Walks `rel` below `dir` one directory at a time, never through a link, creating what is missing
/// when `create`.
fn walk_dirs(
    root_fd: &OwnedFd,
    root: &Path,
    rel: &[&OsStr],
    create: bool,
) -> io::Result<Option<OwnedFd>> {
    let mut dir: Option<OwnedFd> = None;
    for (i, name) in rel.iter().enumerate() {
        let at = dir.as_ref().unwrap_or(root_fd).as_raw_fd();
        let mut made = false;
        let next = loop {
            match openat(at, name, DIR_FLAGS, 0) {
                Ok(fd) => break fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create && !made => {
                    let c = cstring(name)?;
                    // SAFETY: a valid C string; the result is checked.
                    if unsafe { libc::mkdirat(at, c.as_ptr(), 0o777) } != 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(e);
                        }
                    }
                    made = true;
                }
                Err(e) if link_error(&e, at, name) => return Err(refused(root, &rel[..=i])),
                Err(e) => return Err(e),
            }
        };
        dir = Some(next);
    }
    Ok(dir)
}

fn components<S: AsRef<OsStr>>(rel: &[S]) -> io::Result<Vec<&OsStr>> {
    let parts: Vec<&OsStr> = rel.iter().map(AsRef::as_ref).collect();
    if parts.is_empty()
        || parts
            .iter()
            .any(|c| c.is_empty() || *c == ".." || *c == "." || c.as_bytes().contains(&b'/'))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a relative path of plain components",
        ));
    }
    Ok(parts)
}

/// Opens the directory `root/rel...` without following a link below `root`, creating missing
/// directories when `create`.
pub fn open_dir<S: AsRef<OsStr>>(root: &Path, rel: &[S], create: bool) -> io::Result<OwnedFd> {
    let root_fd = open_root(root)?;
    if rel.is_empty() {
        return Ok(root_fd);
    }
    let parts = components(rel)?;
    match openat2(root_fd.as_raw_fd(), &parts, DIR_FLAGS, 0) {
        Some(Ok(fd)) => return Ok(fd),
        Some(Err(e)) if !needs_walk(&e, create) => return Err(e),
        _ => {}
    }
    walk_dirs(&root_fd, root, &parts, create)?
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// Errors from `openat2` that the walk resolves or explains: a link (named in the walk's error), a
/// missing directory to create.
fn needs_walk(e: &io::Error, create: bool) -> bool {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR) => true,
        Some(libc::ENOENT) => create,
        _ => false,
    }
}

/// Opens the regular file `root/rel...` as `how` says, following no link below `root`. A link anywhere
/// on the way is a [`LinkRefused`] error naming it; something other than a regular file is refused
/// too (a FIFO would block a read for ever).
pub fn open<S: AsRef<OsStr>>(root: &Path, rel: &[S], how: Open) -> io::Result<File> {
    let parts = components(rel)?;
    let root_fd = open_root(root)?;
    let flags = how.flags() | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let fd = match openat2(root_fd.as_raw_fd(), &parts, flags, 0o666) {
        Some(Ok(fd)) => fd,
        Some(Err(e)) if !needs_walk(&e, how.create) => return Err(e),
        _ => {
            let (name, dirs) = parts
                .split_last()
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            let dir = walk_dirs(&root_fd, root, dirs, how.create)?;
            let at = dir.as_ref().unwrap_or(&root_fd).as_raw_fd();
            match openat(at, name, flags, 0o666) {
                Ok(fd) => fd,
                Err(e) if link_error(&e, at, name) => return Err(refused(root, &parts)),
                Err(e) => return Err(e),
            }
        }
    };
    regular_blocking(fd, || {
        rel.iter()
            .fold(root.to_path_buf(), |p, c| p.join(c.as_ref()))
    })
}

/// Opens a file the user named (links followed: the user's choice), refusing what is not a regular
/// file.
pub fn open_named(path: &Path) -> io::Result<File> {
    let fd = openat(
        libc::AT_FDCWD,
        path.as_os_str(),
        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK,
        0,
    )?;
    regular_blocking(fd, || path.to_path_buf())
}

/// The file behind `fd` if it is a regular one, switched back to blocking I/O.
fn regular_blocking(fd: OwnedFd, path: impl FnOnce() -> PathBuf) -> io::Result<File> {
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path().display()
        )));
    }
    let raw = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; results checked.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// Removes `root/rel...` if it is a file or a link (the link itself, never its target), without
/// following a link on the way: a file below a linked directory is left alone (a [`LinkRefused`]
/// error).
pub fn remove_file<S: AsRef<OsStr>>(root: &Path, rel: &[S]) -> io::Result<()> {
    unlink(root, rel, false)
}

/// Removes the directory `root/rel...` if it is empty (a link in its place is not a directory: an
/// error). Nothing on the way is followed.
pub fn remove_dir<S: AsRef<OsStr>>(root: &Path, rel: &[S]) -> io::Result<()> {
    unlink(root, rel, true)
}

fn unlink<S: AsRef<OsStr>>(root: &Path, rel: &[S], dir: bool) -> io::Result<()> {
    let parts = components(rel)?;
    let (name, dirs) = parts
        .split_last()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let parent = open_dir(root, dirs, false)?;
    let c = cstring(name)?;
    let at = parent.as_raw_fd();
    let flag = if dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: a valid C string relative to a directory we hold; the result is checked.
    if unsafe { libc::unlinkat(at, c.as_ptr(), flag) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where a file of a torrent lies: `rel` below `root`, opened without following links below the root
/// (a link in the download directory must not make us read, and seed, a file from elsewhere). An empty
/// `rel` is the file the user named itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub root: PathBuf,
    pub rel: Vec<String>,
}

impl Location {
    pub fn path(&self) -> PathBuf {
        self.rel.iter().fold(self.root.clone(), |p, c| p.join(c))
    }

    /// Opens the file for reading (see this module).
    pub fn open(&self) -> std::io::Result<std::fs::File> {
        if self.rel.is_empty() {
            open_named(&self.root)
        } else {
            open(&self.root, &self.rel, Open::READ)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const ALL: [Resolver; 4] = [
        Resolver::Auto,
        Resolver::Openat2,
        Resolver::Walk,
        Resolver::Enosys,
    ];

    fn kernel_has_openat2() -> bool {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"x").expect("write");
        let root = open_root(dir.path()).expect("root");
        let name = OsStr::new("f");
        with_resolver(Resolver::Openat2, || {
            openat2(root.as_raw_fd(), &[name], libc::O_RDONLY, 0).is_some()
        })
    }

    fn each(f: impl Fn(Resolver)) {
        let openat2 = kernel_has_openat2();
        for r in ALL {
            if r == Resolver::Openat2 && !openat2 {
                continue;
            }
            with_resolver(r, || f(r));
        }
    }

    #[test]
    fn files_open_and_directories_are_created_below_the_root() {
        each(|r| {
            let dir = tempfile::tempdir().expect("tempdir");
            // The root itself may be a link: the user's choice.
            let real = dir.path().join("real");
            std::fs::create_dir(&real).expect("mkdir");
            let root = dir.path().join("root");
            symlink(&real, &root).expect("symlink");
            let f = open(&root, &["a", "b", "c.bin"], Open::READ_WRITE_CREATE)
                .unwrap_or_else(|e| panic!("{r:?}: {e}"));
            use std::os::unix::fs::FileExt;
            f.write_all_at(b"hello", 0).expect("write");
            assert_eq!(
                std::fs::read(real.join("a/b/c.bin")).expect("read"),
                b"hello"
            );
            let f = open(&root, &["a", "b", "c.bin"], Open::READ).expect("reopen");
            let mut buf = [0u8; 5];
            f.read_exact_at(&mut buf, 0).expect("read");
            assert_eq!(&buf, b"hello");
            let missing = open(&root, &["a", "nope"], Open::READ).expect_err("missing");
            assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{r:?}");
        });
    }

    #[test]
    fn a_link_anywhere_below_the_root_is_refused_and_nothing_outside_changes() {
        each(|r| {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().join("out");
            let outside = dir.path().join("outside");
            std::fs::create_dir_all(&root).expect("mkdir");
            std::fs::create_dir_all(&outside).expect("mkdir");
            std::fs::write(outside.join("victim"), b"keep").expect("write");
            // A link as the file, as a directory on the way, and a dangling one.
            symlink(outside.join("victim"), root.join("file")).expect("symlink");
            symlink(&outside, root.join("dir")).expect("symlink");
            symlink(outside.join("new"), root.join("dangling")).expect("symlink");
            std::fs::create_dir(root.join("sub")).expect("mkdir");
            symlink(&outside, root.join("sub/deeper")).expect("symlink");
            for (rel, at) in [
                (&["file"][..], "file"),
                (&["dir", "victim"][..], "dir"),
                (&["dangling"][..], "dangling"),
                (&["sub", "deeper", "x", "victim"][..], "sub/deeper"),
            ] {
                for how in [Open::READ, Open::READ_WRITE_CREATE] {
                    let e = open(&root, rel, how).expect_err("a link is refused");
                    assert!(is_link_refused(&e), "{r:?} {rel:?}: {e}");
                    assert!(
                        e.to_string()
                            .contains(&format!("out/{at} is a symbolic link")),
                        "{e}"
                    );
                }
            }
            let e = open_dir(&root, &["dir"], true).expect_err("linked directory");
            assert!(is_link_refused(&e), "{r:?}: {e}");
            assert_eq!(
                std::fs::read(outside.join("victim")).expect("read"),
                b"keep"
            );
            assert!(!outside.join("new").exists() && !outside.join("x").exists());
        });
    }

    #[test]
    fn removal_unlinks_links_and_never_goes_through_them() {
        each(|r| {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().join("out");
            let outside = dir.path().join("outside");
            std::fs::create_dir_all(root.join("t")).expect("mkdir");
            std::fs::create_dir_all(&outside).expect("mkdir");
            std::fs::write(outside.join("a"), b"keep").expect("write");
            symlink(&outside, root.join("t/sub")).expect("symlink");
            symlink(outside.join("a"), root.join("t/a")).expect("symlink");
            let e = remove_file(&root, &["t", "sub", "a"]).expect_err("through a link");
            assert!(is_link_refused(&e), "{r:?}: {e}");
            remove_file(&root, &["t", "a"]).expect("the link itself");
            assert!(remove_dir(&root, &["t", "sub"]).is_err(), "not a directory");
            remove_file(&root, &["t", "sub"]).expect("the link itself");
            remove_dir(&root, &["t"]).expect("now empty");
            assert!(!root.join("t").exists());
            assert_eq!(std::fs::read(outside.join("a")).expect("read"), b"keep");
        });
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        each(|_| {
            let dir = tempfile::tempdir().expect("tempdir");
            let fifo = dir.path().join("fifo");
            let c = CString::new(fifo.as_os_str().as_bytes()).expect("cstring");
            // SAFETY: a valid C string.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            assert!(open(dir.path(), &["fifo"], Open::READ).is_err());
            assert!(open_named(&fifo).is_err());
        });
    }

    #[test]
    fn bad_components_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for rel in [&[][..], &[".."][..], &["a/b"][..], &[""][..]] {
            assert!(open(dir.path(), rel, Open::READ_WRITE_CREATE).is_err());
        }
    }
}
