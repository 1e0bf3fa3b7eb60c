//! `spore get` against hostile or failing disks: a full file system stops the download with one clear
//! error instead of fetching the same pieces for ever, and symbolic links in the output directory are
//! never followed.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn get_command(torrent: &Path, out: &Path, peer: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spore"));
    command.args([
        "get",
        s(torrent),
        "-o",
        s(out),
        "--listen",
        "127.0.0.1:0",
        "--peer",
        peer,
        "--no-seed",
        "--no-dht",
        "--no-trackers",
    ]);
    command
}

#[test]
fn get_into_a_full_file_system_exits_with_one_clear_error() {
    const SIZE: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data_dir = d.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("big.bin"), data(11, SIZE)).unwrap();
    let torrent = d.join("big.torrent");
    create_torrent(&data_dir.join("big.bin"), &torrent, "256K", None);
    let (_seed, addr) = start_seed(d, &torrent, &data_dir, "127.0.0.1:0", &["--no-dht"]);

    // 4 MiB of room for 8 MiB of data.
    let mnt = d.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let Some(command) =
        in_private_tmpfs(&mnt, "4m", &get_command(&torrent, &mnt, &addr.to_string()))
    else {
        return;
    };
    let started = Instant::now();
    let mut getter = Proc::spawn(command, d.join("get.err"));
    // Before the fix it never exits (pieces fetched and failed again and again).
    let status = getter.wait_exit(Duration::from_secs(90));
    let took = started.elapsed();
    let stderr = std::fs::read_to_string(d.join("get.err")).unwrap();
    eprintln!("exit {status} after {took:?}; stderr:\n{stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("No space left"))
        .collect();
    assert_eq!(lines.len(), 1, "one line says why: {stderr}");
    let line = lines[0];
    assert!(
        line.starts_with("spore: error: stopped: writing ")
            && line.contains("big.bin: No space left on device"),
        "{line}"
    );
    // Pieces verified before the disk filled are kept (and said so).
    let kept: u32 = line
        .split("the ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of kept pieces: {line}"));
    assert!(kept > 0 && kept < 32, "{line}");
}

/// A torrent of `t/a.bin` and `t/sub/b.bin`, seeded.
fn two_file_torrent(d: &Path) -> (std::path::PathBuf, Proc, String) {
    let content = d.join("data/t");
    std::fs::create_dir_all(content.join("sub")).unwrap();
    std::fs::write(content.join("a.bin"), data(3, 300_000)).unwrap();
    std::fs::write(content.join("sub/b.bin"), data(4, 200_000)).unwrap();
    let torrent = d.join("t.torrent");
    create_torrent(&content, &torrent, "32K", None);
    let (seed, addr) = start_seed(d, &torrent, &d.join("data"), "127.0.0.1:0", &["--no-dht"]);
    (torrent, seed, addr.to_string())
}

#[test]
fn links_in_the_output_directory_are_refused_and_nothing_outside_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // A single-file torrent whose name is a link to a file outside.
    let data_dir = d.join("single");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("one.bin"), data(5, 100_000)).unwrap();
    let one = d.join("one.torrent");
    create_torrent(&data_dir.join("one.bin"), &one, "32K", None);
    let (_seed1, addr1) = start_seed(d, &one, &data_dir, "127.0.0.1:0", &["--no-dht"]);
    let outside = d.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"precious").unwrap();
    let out1 = d.join("out1");
    std::fs::create_dir(&out1).unwrap();
    symlink(outside.join("victim"), out1.join("one.bin")).unwrap();
    let mut get = Proc::spawn(
        get_command(&one, &out1, &addr1.to_string()),
        d.join("get1.err"),
    );
    let status = get.wait_exit(T);
    let stderr = std::fs::read_to_string(d.join("get1.err")).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is a symbolic link; refusing to follow it",
            out1.join("one.bin").display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"precious");

    // A multi-file torrent whose top directory is a link to a directory outside.
    let (two, _seed2, addr2) = two_file_torrent(d);
    let victim_dir = d.join("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    let out2 = d.join("out2");
    std::fs::create_dir(&out2).unwrap();
    symlink(&victim_dir, out2.join("t")).unwrap();
    let mut get = Proc::spawn(get_command(&two, &out2, &addr2), d.join("get2.err"));
    let status = get.wait_exit(T);
    let stderr = std::fs::read_to_string(d.join("get2.err")).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&victim_dir).unwrap().count(),
        0,
        "files were written through the link"
    );

    // The root itself may be a link (the user's choice): that download works.
    let real = d.join("real-out");
    std::fs::create_dir(&real).unwrap();
    let out3 = d.join("out3");
    symlink(&real, &out3).unwrap();
    let mut get = Proc::spawn(get_command(&two, &out3, &addr2), d.join("get3.err"));
    assert!(get.wait_exit(T).success());
    assert_eq!(
        sha256(&real.join("t/sub/b.bin")),
        sha256(&d.join("data/t/sub/b.bin"))
    );
}
