//! `GET /stream/{id}/{index}` of `spore daemon` while the file downloads from a rate-limited `spore
//! seed`: `curl` range reads return the source's bytes, `ffprobe` reads a video's duration, both before
//! the download has finished. With CI=true a missing curl or ffmpeg fails the tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;
use serde_json::{json, Value};

/// A seed of `file` (alone in its directory) rate-limited to `rate`, and a daemon downloading it; the
/// torrent's id once it downloads.
struct Setup {
    _tracker: Proc,
    _seed: Proc,
    daemon: Daemon,
    id: String,
}

fn setup(dir: &Path, file: &Path, piece: &str, rate: &str) -> Setup {
    let (tracker, url) = tracker(dir);
    let torrent = dir.join("t.torrent");
    create_torrent(file, &torrent, piece, Some(&url));
    let data_dir = file.parent().unwrap();
    let (seed, _) = start_seed(
        dir,
        &torrent,
        data_dir,
        "127.0.0.1:0",
        &["--no-dht", "--max-up", rate],
    );
    let daemon = start_daemon(&dir.join("state"), &dir.join("dl"), "daemon.err", None);
    let id = daemon.ok("POST", "/api/torrents", Some(json!({"path": s(&torrent)})))["id"]
        .as_str()
        .unwrap()
        .to_string();
    daemon.wait(&id, "downloading", T, |t| t["state"] == "downloading");
    Setup {
        _tracker: tracker,
        _seed: seed,
        daemon,
        id,
    }
}

/// `curl` of `url` with `extra` arguments: (status, response head, body).
fn curl(
    dir: &Path,
    name: &str,
    token: Option<&str>,
    url: &str,
    extra: &[&str],
) -> (u16, String, Vec<u8>) {
    let head = dir.join(format!("{name}.head"));
    let body = dir.join(format!("{name}.body"));
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "--max-time",
        "120",
        "-D",
        s(&head),
        "-o",
        s(&body),
        "-w",
        "%{http_code}",
    ]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = command.args(extra).arg(url).output().unwrap();
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        status,
        std::fs::read_to_string(&head).unwrap_or_default(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn progress(d: &Daemon, id: &str) -> f64 {
    d.torrent(id)["progress"].as_f64().unwrap()
}

#[test]
fn range_reads_of_a_file_still_downloading_return_its_bytes() {
    if !have_tool("curl", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    // 40 MiB at 2 MB/s: twenty seconds at the very least before it is complete.
    let len: u64 = 40 << 20;
    let source = data(99, len as usize);
    let file = data_dir.join("big.bin");
    std::fs::write(&file, &source).unwrap();
    let setup = setup(dir.path(), &file, "256K", "2M");
    let d = &setup.daemon;
    let url = format!("http://{}/stream/{}/0", d.api, setup.id);
    let token = d.token.clone();

    // Refusals first: no credentials, an unsatisfiable range, no such file; HEAD says what GET would.
    let (status, _, _) = curl(dir.path(), "noauth", None, &url, &["-r", "0-9"]);
    assert_eq!(status, 401);
    let (status, head, _) = curl(
        dir.path(),
        "416",
        Some(&token),
        &url,
        &["-r", &format!("{len}-")],
    );
    assert_eq!(status, 416, "{head}");
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    let missing = format!("http://{}/stream/{}/1", d.api, setup.id);
    assert_eq!(curl(dir.path(), "404", Some(&token), &missing, &[]).0, 404);
    let (status, head, _) = curl(dir.path(), "head", Some(&token), &url, &["-I"]);
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "content-length"),
        Some(len.to_string().as_str())
    );
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    assert_eq!(
        header(&head, "content-type"),
        Some("application/octet-stream")
    );

    // Start, middle, end, a suffix range, an open range, and two overlapping ones, all at once.
    let mid = len / 2;
    let ranges: Vec<(String, u64, u64)> = vec![
        ("0-99999".into(), 0, 100_000),
        (format!("{}-{}", mid, mid + 300_000 - 1), mid, mid + 300_000),
        (format!("{}-{}", len - 100_000, len - 1), len - 100_000, len),
        ("-500".into(), len - 500, len),
        (format!("{}-", len - 70_000), len - 70_000, len),
        (
            format!("{}-{}", mid - 200_000, mid + 99_999),
            mid - 200_000,
            mid + 100_000,
        ),
        (
            format!("{}-{}", mid + 50_000, mid + 700_000),
            mid + 50_000,
            mid + 700_001,
        ),
    ];
    let started = Instant::now();
    let results: Vec<(u16, String, Vec<u8>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .enumerate()
            .map(|(i, (r, _, _))| {
                let (dir, token, url) = (dir.path(), &token, &url);
                scope.spawn(move || curl(dir, &format!("r{i}"), Some(token), url, &["-r", r]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = started.elapsed();
    let progress_then = progress(d, &setup.id);
    for ((r, start, end), (status, head, body)) in ranges.iter().zip(&results) {
        assert_eq!(*status, 206, "range {r}: {head}");
        assert_eq!(
            header(head, "content-range"),
            Some(format!("bytes {start}-{}/{len}", end - 1).as_str()),
            "range {r}"
        );
        assert!(
            body.as_slice() == &source[*start as usize..*end as usize],
            "range {r}: {} bytes, not the source's",
            body.len()
        );
    }
    eprintln!(
        "{} range reads in {took:?}, progress then {progress_then:.3}",
        ranges.len()
    );
    // The pieces under the reads came first: in the picker's usual order they arrive anywhere in the
    // download (all seven at about 90 % when this was checked without the deadlines).
    assert!(
        progress_then < 0.5,
        "the reads returned only at {progress_then:.3} of the download ({took:?})"
    );
    // The whole file through the stream, as it arrives, is the source.
    let (status, _, body) = curl(dir.path(), "whole", Some(&token), &url, &[]);
    assert_eq!(status, 200);
    assert!(
        body == source,
        "the whole file differs from the source: {} bytes, first difference at {:?}; log: {}",
        body.len(),
        body.iter().zip(&source).position(|(a, b)| a != b),
        std::fs::read_to_string(&d.proc.stderr).unwrap_or_default()
    );

    // At most 16 streams at once: 16 slow readers hold theirs, the 17th is told to come back later.
    let readers: Vec<Proc> = (0..16)
        .map(|i| {
            let mut command = Command::new("curl");
            command.args(["-s", "--limit-rate", "1k", "-o", "/dev/null", "-D"]);
            command.arg(dir.path().join(format!("slow{i}.head")));
            command.args(["-H", &format!("Authorization: Bearer {token}"), &url]);
            Proc::spawn(command, dir.path().join(format!("slow{i}.err")))
        })
        .collect();
    let deadline = Instant::now() + T;
    while !(0..16).all(|i| {
        std::fs::read_to_string(dir.path().join(format!("slow{i}.head")))
            .is_ok_and(|h| h.contains("\r\n\r\n"))
    }) {
        assert!(Instant::now() < deadline, "16 streams did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, head, _) = curl(dir.path(), "17th", Some(&token), &url, &["-r", "0-9"]);
    assert_eq!(status, 503, "{head}");
    assert_eq!(header(&head, "retry-after"), Some("5"));
    drop(readers);
}

#[test]
fn ffprobe_reads_a_video_duration_before_the_download_finishes() {
    if !have_tool("ffprobe", &["-version"]) || !have_tool("ffmpeg", &["-version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let video: PathBuf = data_dir.join("clip.mp4");
    // Ten seconds of noisy test pattern, about 10 MB, its index (moov) at the end as ffmpeg writes it
    // by default: ffprobe reads the start, then seeks to the end.
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=duration=10:size=320x240:rate=25,noise=alls=40:allf=t")
        .args(["-c:v", "mpeg4", "-q:v", "2"])
        .arg(&video)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&video).unwrap().len();
    // At 400 kB/s, over twenty seconds to download.
    let setup = setup(dir.path(), &video, "64K", "400K");
    let d = &setup.daemon;
    let url = format!("http://{}/stream/{}/0", d.api, setup.id);
    let (status, head, _) = curl(dir.path(), "head", Some(&d.token), &url, &["-I"]);
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("video/mp4"));

    let started = Instant::now();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "60000000", "-headers"])
        .arg(format!("Authorization: Bearer {}\r\n", d.token))
        .args(["-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(&url)
        .output()
        .unwrap();
    let took = started.elapsed();
    let progress_then = progress(d, &setup.id);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ffprobe: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duration: f64 = stdout.trim().parse().unwrap_or(0.0);
    eprintln!("ffprobe of a {size}-byte video: duration {duration} in {took:?}, progress then {progress_then:.3}");
    assert!((duration - 10.0).abs() < 0.1, "duration {stdout:?}");
    assert!(
        progress_then < 1.0,
        "the download had finished before ffprobe answered ({took:?})"
    );
    let t: Value = d.torrent(&setup.id);
    assert_ne!(t["state"], "seeding", "{t}");
}

#[test]
fn file_priorities_change_while_the_torrent_runs() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("data").join("pack");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("a.bin"), data(1, 8 << 20)).unwrap();
    std::fs::write(pack.join("b.bin"), data(2, 8 << 20)).unwrap();
    // 16 MiB at 1 MB/s.
    let setup = setup(dir.path(), &pack, "64K", "1M");
    let d = &setup.daemon;
    let path = format!("/api/torrents/{}", setup.id);
    let t = d.ok("PUT", &path, Some(json!({"priorities": ["low", "high"]})));
    assert_eq!(
        t["state"], "downloading",
        "a priority change does not restart the torrent: {t}"
    );
    let file_progress = |t: &Value, i: usize| t["files"][i]["progress"].as_f64().unwrap();
    let t = d.wait(&setup.id, "b.bin complete", T, |t| {
        file_progress(t, 1) >= 1.0
    });
    assert_eq!(t["files"][1]["priority"], "high");
    assert!(
        file_progress(&t, 0) < 0.5,
        "the high-priority file came first: {}",
        t["files"]
    );
    // Kept across a restart of the daemon.
    let Setup {
        _tracker,
        _seed,
        mut daemon,
        id,
    } = setup;
    daemon.proc.terminate();
    daemon.proc.wait_exit(T);
    let d = start_daemon(
        &dir.path().join("state"),
        &dir.path().join("dl"),
        "daemon-2.err",
        None,
    );
    let t = d.torrent(&id);
    assert_eq!(t["files"][0]["priority"], "low", "{t}");
    assert_eq!(t["files"][1]["priority"], "high", "{t}");
    // "skip" is not wanted: the selection changes with it.
    let (status, v) = d.call(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"priorities": ["skip", "high"], "files": [true, true]})),
    );
    assert_eq!(status, 400, "{v}");
    d.ok(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some(json!({"priorities": ["skip", "high"]})),
    );
    let t = d.torrent(&id);
    assert_eq!(t["files"][0]["selected"], false, "{t}");
    assert_eq!(t["files"][1]["selected"], true, "{t}");
}
