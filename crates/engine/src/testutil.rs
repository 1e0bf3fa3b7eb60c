//! In-process fixtures for the engine's own tests: a torrent seeding from a temporary directory.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::torrent::{start, TorrentConfig, TorrentHandle};

pub(crate) struct Seed {
    pub handle: TorrentHandle,
    _dir: tempfile::TempDir,
}

/// A complete single-file torrent of `len` bytes being seeded on loopback, after `tweak` adjusts its
/// configuration. Trackers, DHT, LSD and PEX are off unless `tweak` turns them on.
pub(crate) async fn seed(
    len: usize,
    piece_length: u64,
    tweak: impl FnOnce(&mut TorrentConfig),
) -> Seed {
    let dir = tempfile::tempdir().expect("temp dir");
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).expect("content dir");
    let file = content.join("data.bin");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, bytes).expect("content");
    let options = metainfo::CreateOptions {
        piece_length: Some(piece_length),
        ..Default::default()
    };
    let created = metainfo::create(&file, &options, &AtomicU64::new(0)).expect("torrent");
    let torrent = Arc::new(created.torrent);
    let mut config = TorrentConfig::new(torrent, content);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.use_trackers = false;
    config.pex = false;
    tweak(&mut config);
    let handle = start(config).await.expect("torrent starts");
    assert!(handle.shared.is_complete(), "the fixture seeds");
    Seed { handle, _dir: dir }
}
