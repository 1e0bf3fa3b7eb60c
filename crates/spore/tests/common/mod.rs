//! Helpers shared by the integration tests: processes that die with the test, deterministic data.

#![allow(dead_code)]

mod api;
pub mod netns;
pub mod redis_cluster;
mod tracker_client;
#[allow(unused_imports)]
pub use api::*;
#[allow(unused_imports)]
pub use tracker_client::*;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A child process killed when dropped, with its stdout lines delivered on a channel.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub stderr: PathBuf,
}

/// Waits until `file` holds `needle` (written by another process as it runs); returns its text.
pub fn wait_file(file: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never said {needle:?} within {timeout:?}: {text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Proc {
    /// Runs `spore` with `args`.
    pub fn start(args: &[&str], stderr: PathBuf) -> Proc {
        let mut command = Command::new(env!("CARGO_BIN_EXE_spore"));
        command.args(args);
        Proc::spawn(command, stderr)
    }

    /// Runs any command, stdout captured line by line, stderr to a file.
    pub fn spawn(mut command: Command, stderr: PathBuf) -> Proc {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            stderr,
        }
    }

    /// Waits until the process's stderr holds `needle`; returns all of it. A line logged just after
    /// the state the test waited for (the API can show a torrent running before its start is
    /// logged) is waited for, not read once.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> String {
        wait_file(&self.stderr, needle, timeout)
    }

    /// Waits for a stdout line containing `needle` and returns it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line with {needle:?} within {timeout:?}; stderr: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ),
            }
        }
    }

    /// Waits for a stdout line containing `needle`; `None` if the process closed its stdout (it
    /// exited) or `timeout` passed first.
    pub fn try_wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The signal that killed the process, once it has exited (waiting up to `timeout`).
    pub fn killed_by(&mut self, timeout: Duration) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.signal();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self, timeout: Duration) -> SocketAddr {
        let line = self.wait_for("listening on ", timeout);
        line.trim_start_matches("listening on ")
            .trim()
            .parse()
            .unwrap()
    }

    pub fn terminate(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

pub fn spore_ok(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const T: Duration = Duration::from_secs(60);

pub fn tracker(dir: &Path) -> (Proc, String) {
    let t = tracker_with(dir, &[], |_| {});
    (t.proc, format!("http://{}/announce", t.http))
}

/// A `spore tracker` on loopback ports, with its addresses.
pub struct TrackerProc {
    pub proc: Proc,
    pub http: SocketAddr,
    pub udp: SocketAddr,
}

/// `spore tracker` with HTTP and UDP on loopback ports and `extra` flags, its command first passed to
/// `prepare` (limits, environment), its stderr in `dir/tracker.err`; returned once both listen.
pub fn tracker_with(dir: &Path, extra: &[&str], prepare: impl FnOnce(&mut Command)) -> TrackerProc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spore"));
    command
        .args(["tracker", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"])
        .args(extra);
    prepare(&mut command);
    let proc = Proc::spawn(command, dir.join("tracker.err"));
    // The listener lines come in order: HTTP, then UDP.
    let addr = |line: String, scheme: &str| -> SocketAddr {
        line.split(scheme)
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    };
    let http = addr(proc.wait_for("tracker: HTTP on ", T), "http://");
    let udp = addr(proc.wait_for("tracker: UDP on ", T), "udp://");
    TrackerProc { proc, http, udp }
}

/// `spore create` of `content` (a file or a folder) into `torrent` with pieces of `piece`, announcing to
/// `tracker` when one is given.
pub fn create_torrent(content: &Path, torrent: &Path, piece: &str, tracker: Option<&str>) {
    let mut args = vec![
        "create",
        s(content),
        "-o",
        s(torrent),
        "--piece-length",
        piece,
    ];
    if let Some(url) = tracker {
        args.extend_from_slice(&["-t", url]);
    }
    spore_ok(&args);
}

/// `spore seed` of `torrent` from `data` on `listen` with `extra` flags, its stderr in `dir/seed.err`;
/// returned with the address it listens on once it says it is seeding.
pub fn start_seed(
    dir: &Path,
    torrent: &Path,
    data: &Path,
    listen: &str,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    start_seed_with(dir, torrent, data, listen, extra, |_| {})
}

/// [`start_seed`], with `tweak` applied to the command first (an environment, an fd limit).
pub fn start_seed_with(
    dir: &Path,
    torrent: &Path,
    data: &Path,
    listen: &str,
    extra: &[&str],
    tweak: impl FnOnce(&mut Command),
) -> (Proc, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spore"));
    command.args(["seed", s(torrent), "--data", s(data), "--listen", listen]);
    command.args(extra);
    tweak(&mut command);
    let p = Proc::spawn(command, dir.join("seed.err"));
    // "listening on" comes first; lines are read in order.
    let addr = p.addr(T);
    p.wait_for("seeding", T);
    (p, addr)
}

/// Makes `command` run with an open-file limit of `soft` (which it may raise up to `hard`).
pub fn limit_open_files(command: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// CPU time (user + system) process `pid` has used, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 of the rest.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One file of a torrent, in torrent order, for [`check_skipped_files`].
pub struct Laid {
    /// Where the download put it (or would have), and the seed's copy.
    pub got: PathBuf,
    pub want: PathBuf,
    pub len: u64,
    pub pad: bool,
    pub selected: bool,
}

/// Checks what a partial download left of the files it skipped. Only pieces touching a selected file
/// are fetched, and a verified piece is written whole, into every file it spans (engine storage.rs),
/// so a skipped file holds exactly the bytes it shares with those edge pieces: the seed's bytes there,
/// zeros (a hole) elsewhere, nothing past the last shared byte. One that shares no fetched piece is
/// never created (or is empty).
pub fn check_skipped_files(files: &[Laid], piece_length: u64) -> Result<(), String> {
    let mut offsets = Vec::with_capacity(files.len());
    let mut at = 0;
    for f in files {
        offsets.push(at);
        at += f.len;
    }
    let pieces = |off: u64, len: u64| off / piece_length..=(off + len - 1) / piece_length;
    let mut wanted = std::collections::HashSet::new();
    for (f, &off) in files.iter().zip(&offsets) {
        if f.selected && !f.pad && f.len > 0 {
            wanted.extend(pieces(off, f.len));
        }
    }
    for (f, &off) in files.iter().zip(&offsets) {
        if f.selected || f.pad || f.len == 0 {
            continue;
        }
        let name = f.got.display();
        // Ranges within the file, in order, that fetched pieces cover.
        let shared: Vec<(usize, usize)> = pieces(off, f.len)
            .filter(|p| wanted.contains(p))
            .map(|p| {
                let from = (p * piece_length).max(off) - off;
                let to = ((p + 1) * piece_length).min(off + f.len) - off;
                (from as usize, to as usize)
            })
            .collect();
        let got = match std::fs::read(&f.got) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && shared.is_empty() => continue,
            Err(e) => {
                return Err(format!(
                    "{name}: {e} (shares pieces {shared:?} with the selection)"
                ))
            }
        };
        let end = shared.last().map_or(0, |r| r.1);
        if got.len() != end {
            return Err(format!(
                "{name}: {} bytes on disk, expected {end}: only the ranges {shared:?} share fetched pieces",
                got.len()
            ));
        }
        let want = std::fs::read(&f.want).map_err(|e| format!("{}: {e}", f.want.display()))?;
        let mut pos = 0;
        for &(from, to) in &shared {
            if let Some(i) = got[pos..from].iter().position(|b| *b != 0) {
                return Err(format!(
                    "{name}: byte {} written, outside the pieces shared with the selection {shared:?}",
                    pos + i
                ));
            }
            if got[from..to] != want[from..to] {
                return Err(format!("{name}: bytes {from}..{to} differ from the seed's"));
            }
            pos = to;
        }
    }
    Ok(())
}

/// `command` run inside its own mount namespace with a `size` tmpfs mounted on `mnt` (which must
/// exist), so a test can fill a file system without touching the machine's: the mount goes when the
/// process exits, and a test reaches it meanwhile through `/proc/PID/root/MNT`. The process is
/// `command` itself (unshare and sh exec into it), so killing it kills the test's process. Needs root
/// (as CI runs); `None` otherwise, and the test is skipped, unless CI=true where that is a failure.
pub fn in_private_tmpfs(mnt: &Path, size: &str, command: &Command) -> Option<Command> {
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test mounts a tmpfs and needs root"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return None;
    }
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o "size=$1" spore-test "$2" && shift 2 && exec "$@""#)
        .args(["sh", size, s(mnt)])
        .arg(command.get_program())
        .args(command.get_args());
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    Some(wrapped)
}

/// A path inside the mount namespace of process `pid` (see [`in_private_tmpfs`]).
pub fn in_namespace_of(pid: u32, path: &Path) -> PathBuf {
    Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path))
}

/// Whether `program args` runs; without it a test is skipped, or fails when `CI=true`.
pub fn have_tool(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{program} is required when CI=true"
        );
        eprintln!("skipped: {program} is not available");
    }
    ok
}

/// A process holding a mount namespace of its own with a `size` tmpfs on `mnt` (which must exist),
/// for tests whose processes come and go (a daemon killed and restarted) while the tmpfs stays: run
/// them in it with [`in_mount_namespace_of`]. The mount goes when the holder is dropped. Root only, as
/// [`in_private_tmpfs`]: `None` otherwise (a failure when CI=true).
pub fn tmpfs_holder(mnt: &Path, size: &str, stderr: PathBuf) -> Option<Proc> {
    let mut holder = Command::new("sleep");
    holder.arg("3600");
    let command = in_private_tmpfs(mnt, size, &holder)?;
    let proc = Proc::spawn(command, stderr);
    // Mounted once the holder runs `sleep` (unshare and sh exec into it).
    let deadline = Instant::now() + T;
    let comm = format!("/proc/{}/comm", proc.child.id());
    while std::fs::read_to_string(&comm).map_or(true, |c| c.trim() != "sleep") {
        assert!(Instant::now() < deadline, "the tmpfs holder did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(proc)
}

/// `command` run in the mount namespace of process `pid` (nsenter execs into it, so the process is
/// `command` itself).
pub fn in_mount_namespace_of(pid: u32, command: &Command) -> Command {
    let mut wrapped = Command::new("nsenter");
    wrapped
        .arg(format!("--mount=/proc/{pid}/ns/mnt"))
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args());
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped
}

/// Whether python3-libtorrent imports in /usr/bin/python3: outside CI its absence skips a test, under
/// CI=true it fails it.
pub fn libtorrent_available() -> bool {
    have_tool("/usr/bin/python3", &["-c", "import libtorrent"])
}

/// libtorrent (tests/interop/lt_peer.py) seeding or getting (`mode`) `torrent` into `save`, bound to
/// `ip`, its stderr in `log`.
pub fn lt_peer(mode: &str, torrent: &Path, save: &Path, ip: &str, log: &Path) -> Proc {
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_peer.py"))
        .args([mode, s(torrent), s(save), ip]);
    Proc::spawn(command, log.to_path_buf())
}
