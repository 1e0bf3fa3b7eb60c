//! In-process fixtures for the engine's own tests: a torrent seeding from a temporary directory, and a
//! scripted peer that speaks the wire protocol to it over loopback.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::{Decoder, Handshake, Message, HANDSHAKE_LEN};

use crate::launch::start;
use crate::torrent::{TorrentConfig, TorrentHandle};

pub(crate) struct Seed {
    pub handle: TorrentHandle,
    pub info_hash: [u8; 20],
    _dir: tempfile::TempDir,
}

/// A complete single-file torrent of `len` bytes being seeded on loopback, after `tweak` adjusts its
/// configuration. Trackers, DHT, LSD and PEX are off unless `tweak` turns them on.
pub(crate) async fn seed(
    len: usize,
    piece_length: u64,
    tweak: impl FnOnce(&mut TorrentConfig),
) -> Seed {
    seed_version(len, piece_length, metainfo::Version::V1, tweak).await
}

/// [`seed`] of a torrent of the given version (v1, v2 or hybrid).
pub(crate) async fn seed_version(
    len: usize,
    piece_length: u64,
    version: metainfo::Version,
    tweak: impl FnOnce(&mut TorrentConfig),
) -> Seed {
    let (dir, content, torrent) = made(len, piece_length, version);
    let info_hash = crate::torrent::wire_id(&torrent);
    let mut config = TorrentConfig::new(torrent, content);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.use_trackers = false;
    config.pex = false;
    tweak(&mut config);
    let handle = start(config).await.expect("torrent starts");
    assert!(handle.shared.is_complete(), "the fixture seeds");
    Seed {
        handle,
        info_hash: *info_hash,
        _dir: dir,
    }
}

/// A single-file torrent of `len` bytes of pseudo-random data, the data written below `content` in a
/// new temporary directory: (the directory, `content`, the torrent).
pub(crate) fn made(
    len: usize,
    piece_length: u64,
    version: metainfo::Version,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<metainfo::Torrent>,
) {
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
        version,
        ..Default::default()
    };
    let created = metainfo::create(&file, &options, &AtomicU64::new(0)).expect("torrent");
    let torrent = Arc::new(created.torrent);
    (dir, content, torrent)
}

/// The far end of one connection, driven by the test.
pub(crate) struct FakePeer {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    pub theirs: Handshake,
}

impl FakePeer {
    /// Connects and handshakes; `fast` sets the fast-extension bit (the extension protocol is always
    /// announced).
    pub(crate) async fn connect(addr: SocketAddr, info_hash: [u8; 20], fast: bool) -> FakePeer {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Each its own id: two connections with one id from one IP are one peer's duplicates.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let mut id = *b"-XX0000-scriptedpeer";
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        id[16..].copy_from_slice(&n.to_be_bytes());
        let mut ours = Handshake::new(wire::InfoHash(info_hash), wire::PeerId::new(id), false);
        if !fast {
            ours.reserved[7] &= !0x04;
        }
        stream.write_all(&ours.encode()).await.expect("handshake");
        let mut hs = [0u8; HANDSHAKE_LEN];
        stream.read_exact(&mut hs).await.expect("their handshake");
        FakePeer {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::default(),
            theirs: Handshake::decode(&hs).expect("a handshake"),
        }
    }

    pub(crate) async fn send(&mut self, messages: &[Message]) {
        let mut out = BytesMut::new();
        for m in messages {
            m.encode(&mut out);
        }
        self.stream.write_all(&out).await.expect("send");
    }

    /// The next message, or `None` if none comes within `wait` (or the connection closed).
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(m) = self.decoder.decode(&mut self.buf).expect("valid messages") {
                return Some(m);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Reads until a message satisfies `pred`, panicking after `wait`.
    pub(crate) async fn wait_for(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&Message) -> bool,
    ) -> Message {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(m) if pred(&m) => return m,
                Some(_) => {}
                None => panic!("no {what} within {wait:?}"),
            }
        }
    }
}
