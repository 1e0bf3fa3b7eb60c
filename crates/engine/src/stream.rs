//! Reading a torrent's data while it downloads: a read waits for the pieces it covers, which the picker
//! fetches before anything else (time-critical pieces, as libtorrent's `set_piece_deadline`), together
//! with a read-ahead window after them. Only verified pieces are read, from disk through the storage.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wire::PieceIndex;

use crate::torrent::{Shared, TorrentHandle};

/// Why a read gave up.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the torrent stopped")]
    Stopped,
    #[error("the data did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("reading the data: {0}")]
    Io(#[from] std::io::Error),
    #[error("the range is outside the torrent")]
    OutOfRange,
}

/// One reader of a torrent's data (an HTTP stream, say). Its time-critical pieces are cleared when it
/// is dropped.
pub struct Reader {
    shared: Arc<Shared>,
    id: u64,
}

impl TorrentHandle {
    /// A new reader of this torrent's data.
    pub fn reader(&self) -> Reader {
        Reader {
            id: self.shared.next_reader.fetch_add(1, Ordering::Relaxed),
            shared: self.shared.clone(),
        }
    }
}

impl Reader {
    /// Reads up to `len` bytes at `offset` in piece space (a file's bytes start at its `offset` there):
    /// waits at most `wait` for the piece at `offset`, then returns the bytes of it and of the verified
    /// pieces that follow it without a gap, so what has arrived is passed on at once. The pieces of the
    /// whole read, then the ones up to
    /// `ahead_end` (exclusive; the read-ahead window, cut at the end of what the caller will read),
    /// become this reader's time-critical pieces, in order.
    pub async fn read(
        &self,
        offset: u64,
        mut len: usize,
        ahead_end: u64,
        wait: Duration,
    ) -> Result<Bytes, ReadError> {
        let shared = &self.shared;
        let piece_length = shared.torrent.piece_length;
        let total: u64 = shared.piece_sizes.iter().map(|&s| u64::from(s)).sum();
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= total && len > 0)
            .ok_or(ReadError::OutOfRange)?;
        let first = (offset / piece_length) as u32;
        let last = ((end - 1) / piece_length) as u32;
        let ahead_last = (ahead_end.clamp(end, total) - 1) / piece_length;
        let window: Vec<u32> = (u64::from(first)..=ahead_last).map(|p| p as u32).collect();
        let deadline = tokio::time::Instant::now() + wait;
        let mut stopping = shared.stopping();
        let id = self.id;
        shared.with_core_now(|core, _| {
            let pending: Vec<PieceIndex> = window
                .iter()
                .copied()
                .filter(|&p| !core.have().get(p))
                .map(PieceIndex::new)
                .collect();
            core.set_deadlines(id, pending);
        });
        loop {
            let notified = shared.piece_done.notified();
            if *stopping.borrow_and_update() || shared.failure().is_some() {
                return Err(ReadError::Stopped);
            }
            let ready = {
                let st = shared.state.lock();
                (first..=last).take_while(|&p| st.core.have().get(p)).last()
            };
            if let Some(had) = ready {
                // The bytes up to the end of the last verified piece in a row, or of the read.
                let had_end = (u64::from(had) + 1) * piece_length;
                len = (had_end.min(end) - offset) as usize;
                break;
            }
            tokio::select! {
                _ = notified => {}
                _ = stopping.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Err(ReadError::TimedOut(wait)),
            }
        }
        let reading = shared.clone();
        let data = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            reading.storage.read(offset, &mut buf).map(|()| buf)
        })
        .await
        .map_err(|e| ReadError::Io(std::io::Error::other(e)))??;
        Ok(Bytes::from(data))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let id = self.id;
        self.shared
            .with_core_now(|core, _| core.set_deadlines(id, Vec::new()));
    }
}
