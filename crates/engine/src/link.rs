//! What the torrent holds of one peer connection to reach its tasks: the writer's queue, a way to end
//! the connection, and the upload counters the reader, the writer and the torrent share. Only bytes
//! and signals here: what to send and when is the torrent core's.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use wire::{BlockRef, Message};

/// Items a peer's writer queue holds at most: every control message is queued or the connection
/// ends (never dropped), so this only bounds a peer that reads nothing while we keep telling it things;
/// its writer drops it after a while anyway.
pub(crate) const WRITER_QUEUE: usize = 1 << 16;

/// Bytes of hash and metadata replies queued for a peer and not yet taken by its writer; a request
/// beyond this is rejected, so a peer that does not read cannot make us build up replies.
const MAX_PEER_REPLY_BYTES: usize = 1 << 20;

/// Whole pieces read from disk for one peer may exceed twice what it was sent by this much: beyond, its
/// requests are answered by reading just their blocks. A downloader that asks for whole pieces uses every
/// byte read; one that asks a block here and there, or does not read, gets no 256-fold amplification.
const WHOLE_READ_ALLOWANCE: u64 = 16 << 20;

/// What the writer is handed: a message, a hash or metadata reply and the bytes reserved for it
/// (`UploadIo::reserve_reply`), or a request to answer once the writer gets to it (it reads the block's
/// bytes then, so queued requests pin no piece buffer).
pub(crate) enum Out {
    Message(Message),
    Reply(Message, usize),
    Block(BlockRef),
}

/// Connections allowed across many torrents.
#[derive(Debug)]
pub struct PeerBudget {
    max: AtomicUsize,
    used: AtomicUsize,
}

impl PeerBudget {
    pub fn new(max: usize) -> PeerBudget {
        PeerBudget {
            max: max.into(),
            used: 0.into(),
        }
    }

    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn has_room(&self) -> bool {
        self.used() < self.max.load(Ordering::Relaxed)
    }

    pub(crate) fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max.load(Ordering::Relaxed)).then_some(used + 1)
            })
            .is_ok()
    }

    pub(crate) fn give_back(&self) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_sub(1)
            });
    }
}

/// Upload bookkeeping that is about bytes and memory, not policy.
#[derive(Default)]
pub(crate) struct UploadIo {
    /// Bytes of hash and metadata replies queued for the writer.
    replies: AtomicUsize,
    /// Whole pieces read from disk for this peer, and block bytes sent to it.
    whole_reads: AtomicU64,
    pub sent: AtomicU64,
    /// Read-ahead tasks of this peer under way.
    pub warming: AtomicUsize,
}

impl UploadIo {
    /// Whether a reply of `bytes` may be queued now; if so it is counted until the writer takes it.
    pub(crate) fn reserve_reply(&self, bytes: usize) -> bool {
        self.replies
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + bytes <= MAX_PEER_REPLY_BYTES).then_some(queued + bytes)
            })
            .is_ok()
    }

    /// A reserved reply left (written, or never built).
    pub(crate) fn release_reply(&self, bytes: usize) {
        self.replies.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Whether reading a whole piece of `size` bytes for this peer keeps within its allowance; if so
    /// the read is counted.
    pub(crate) fn read_whole(&self, size: u32) -> bool {
        let allowed = self.sent.load(Ordering::Relaxed) * 2 + WHOLE_READ_ALLOWANCE;
        self.whole_reads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |read| {
                (read + u64::from(size) <= allowed).then_some(read + u64::from(size))
            })
            .is_ok()
    }
}

/// One registered connection, as the torrent reaches it.
pub(crate) struct PeerIo {
    /// The connection's remote address, for log lines.
    pub addr: std::net::SocketAddr,
    pub out: mpsc::Sender<Out>,
    /// Ends the peer's tasks (a permit is kept if they are not waiting yet).
    pub close: Arc<Notify>,
    pub uploads: Arc<UploadIo>,
    /// The unit of a shared connection budget this connection holds, given back when it goes.
    pub budget: Option<Arc<PeerBudget>>,
    /// The connection runs over MSE with RC4.
    pub encrypted: bool,
    /// What carries the connection (for status views).
    pub carrier: crate::transport::Carrier,
}

impl Drop for PeerIo {
    fn drop(&mut self) {
        self.close.notify_one();
        if let Some(budget) = &self.budget {
            budget.give_back();
        }
    }
}
