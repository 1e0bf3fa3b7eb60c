//! Hostile peers against a real `spore seed`: connections that flood requests over many 4 MiB pieces and
//! never read the answers must not grow the seed's memory with connections × requests × piece length,
//! and a legitimate download must still complete while they do.

mod common;
#[path = "hostile/peer.rs"]
mod hostile;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{create_torrent, s, sha256, start_seed, Proc, T};

const PIECE: u32 = 4 << 20;
/// 40 pieces: more than the 32 an upload cache could hold, so pieces are evicted and read again.
const PIECES: u32 = 40;
const HOSTILE: usize = 8;
/// The seed's peak resident memory while attacked, at most. Before the upload memory budget it went past
/// 1 GB here; with it, about 64 MiB of pieces and the process itself.
const MAX_PEAK: u64 = 150 << 20;

#[test]
fn a_seed_flooded_with_unread_requests_stays_small_and_still_serves_a_download() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let content = d.join("seed");
    std::fs::create_dir_all(&content).unwrap();
    let file = content.join("big.bin");
    {
        let mut f = std::fs::File::create(&file).unwrap();
        for i in 0..u64::from(PIECES) {
            f.write_all(&common::data(i + 1, PIECE as usize)).unwrap();
        }
    }
    let torrent = d.join("t.torrent");
    create_torrent(&file, &torrent, "4M", None);
    let info_hash =
        engine::wire_id(&metainfo::Torrent::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap());
    let quiet = ["--no-trackers", "--no-dht", "--no-lsd", "--no-pex"];
    let (seeder, seed_addr) = start_seed(d, &torrent, &content, "127.0.0.1:0", &quiet);
    let pid = seeder.child.id();

    let attack = hostile::Attack::start(seed_addr, info_hash.into(), PIECES, PIECE, HOSTILE);
    // Under way: every connection has had time to queue far more than a seed should hold for it.
    let deadline = Instant::now() + T;
    while attack.sent.load(Ordering::Relaxed) < HOSTILE as u64 * 2000 {
        assert!(
            Instant::now() < deadline,
            "the hostile peers could not send"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = d.join("dl");
    let seed_peer = seed_addr.to_string();
    let started = Instant::now();
    let mut args = vec![
        "get",
        s(&torrent),
        "-o",
        s(&out),
        "--listen",
        "127.0.0.3:0",
        "--peer",
        &seed_peer,
        "--no-seed",
    ];
    args.extend_from_slice(&quiet);
    let mut getter = Proc::start(&args, d.join("get.err"));
    // Wait for the download, watching the seed's memory meanwhile.
    let mut peak = 0;
    let status = loop {
        if let Some((hwm, _)) = hostile::memory(pid) {
            peak = peak.max(hwm);
        }
        if let Some(status) = getter.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the download did not complete within 120 s under attack (seed peak {} MiB); stderr: {}",
            peak >> 20,
            std::fs::read_to_string(d.join("get.err")).unwrap_or_default()
        );
        assert!(
            peak < MAX_PEAK,
            "seed peak RSS {} MiB while attacked, bound {} MiB",
            peak >> 20,
            MAX_PEAK >> 20
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    assert!(status.success(), "the download under attack failed");
    assert_eq!(sha256(&out.join("big.bin")), sha256(&file));
    // The attack went on throughout: the hostile peers kept sending.
    let sent = attack.sent.load(Ordering::Relaxed);
    drop(attack);
    let (hwm, rss) = hostile::memory(pid).expect("the seed is running");
    peak = peak.max(hwm);
    eprintln!(
        "download under attack: {:.1} s; seed peak {} MiB, now {} MiB; {sent} hostile requests",
        took.as_secs_f64(),
        peak >> 20,
        rss >> 20
    );
    assert!(
        peak < MAX_PEAK,
        "seed peak RSS {} MiB while attacked, bound {} MiB",
        peak >> 20,
        MAX_PEAK >> 20
    );
}
