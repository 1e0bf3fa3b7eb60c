//! A hostile peer for tests and `benches/hostile-seed.sh`: it handshakes, says it is interested, then
//! requests 16 KiB blocks spread over every piece and never reads a byte of the answers. Half the
//! connections flood requests without end; the other half send as many as a seed takes from one peer
//! (500) and then only keep-alives, holding the seed's answers unread. Every other connection announces
//! the fast extension. A connection the seed closes is opened again. Shared by `tests/hostile_seed.rs` and the
//! `hostile_peer` example through `#[path]`.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use wire::{BlockRef, Handshake, Message, PieceIndex};

const BLOCK: u32 = 16 * 1024;
/// Requests per write.
const BURST: u32 = 500;

/// Connections flooding a seed, until dropped.
pub struct Attack {
    stop: Arc<AtomicBool>,
    /// Requests written so far, over every connection.
    pub sent: Arc<AtomicU64>,
    /// Connections opened (reconnections included).
    pub connects: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Attack {
    /// `connections` hostile peers against `addr`, for a torrent of `pieces` pieces of `piece_length`
    /// bytes.
    pub fn start(
        addr: SocketAddr,
        info_hash: [u8; 20],
        pieces: u32,
        piece_length: u32,
        connections: usize,
    ) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let connects = Arc::new(AtomicU64::new(0));
        let threads = (0..connections)
            .map(|i| {
                let (stop, sent, connects) = (stop.clone(), sent.clone(), connects.clone());
                std::thread::spawn(move || {
                    let mut n = i as u64 * 7919;
                    while !stop.load(Ordering::Relaxed) {
                        connects.fetch_add(1, Ordering::Relaxed);
                        let fast = i % 2 == 0;
                        let endless = (i / 2) % 2 == 0;
                        let how = (fast, endless);
                        flood(
                            addr,
                            info_hash,
                            how,
                            pieces,
                            piece_length,
                            &mut n,
                            &stop,
                            &sent,
                        );
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
            })
            .collect();
        Attack {
            stop,
            sent,
            connects,
            threads,
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One connection's life: returns when the seed closes it or `stop` is set.
#[allow(clippy::too_many_arguments)]
fn flood(
    addr: SocketAddr,
    info_hash: [u8; 20],
    (fast, endless): (bool, bool),
    pieces: u32,
    piece_length: u32,
    n: &mut u64,
    stop: &AtomicBool,
    sent: &AtomicU64,
) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return;
    };
    if stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return;
    }
    let mut ours = Handshake::new(
        info_hash.into(),
        wire::PeerId::new(*b"-XX0000-hostilepeer!"),
        false,
    );
    if !fast {
        ours.reserved[7] &= !0x04;
    }
    let mut out = BytesMut::new();
    out.extend_from_slice(&ours.encode());
    Message::Interested.encode(&mut out);
    if !write_all(&mut stream, &out, stop) {
        return;
    }
    let blocks = (piece_length / BLOCK).max(1);
    loop {
        out.clear();
        for _ in 0..BURST {
            // Across every piece first, so each request wants a different piece than the last.
            let piece = (*n % u64::from(pieces)) as u32;
            let block = ((*n / u64::from(pieces)) % u64::from(blocks)) as u32;
            *n += 1;
            Message::Request(BlockRef {
                index: PieceIndex::new(piece),
                begin: block * BLOCK,
                length: BLOCK,
            })
            .encode(&mut out);
        }
        if !write_all(&mut stream, &out, stop) {
            return;
        }
        sent.fetch_add(u64::from(BURST), Ordering::Relaxed);
        if !endless {
            break;
        }
    }
    // Keep-alives only, which also notice when the seed has closed the connection.
    out.clear();
    Message::KeepAlive.encode(&mut out);
    while write_all(&mut stream, &out, stop) {
        for _ in 0..10 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Writes all of `data`, waiting while the seed does not read; `false` once the connection is gone or
/// `stop` is set.
fn write_all(stream: &mut TcpStream, mut data: &[u8], stop: &AtomicBool) -> bool {
    while !data.is_empty() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        match stream.write(data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Peak and current resident memory of process `pid` in bytes (VmHWM and VmRSS).
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
