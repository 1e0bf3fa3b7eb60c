//! What the core keeps per connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use wire::{BlockRef, Connection, PieceIndex};

use crate::bitfield::Bitfield;
use crate::{DetMap, DetSet};

pub(crate) struct Peer {
    pub addr: SocketAddr,
    /// The id from its handshake: two connections with one peer are told apart by it.
    pub peer_id: wire::PeerId,
    pub incoming: bool,
    /// The one copy of who chokes whom and who is interested.
    pub conn: Connection,
    pub bitfield: Bitfield,
    /// Pieces it has that we want and lack: interest without scanning its bitfield at every piece
    /// we verify (`TorrentCore::wanted_from`).
    pub wanted: u32,
    /// Where the peer accepts connections: the address we dialled, or for incoming connections its IP
    /// with the port from its extension handshake. What peer exchange passes on.
    pub listen: Option<SocketAddr>,
    /// The client it names in its extension handshake, cleaned (`client_name`).
    pub client: Option<String>,
    /// Payload bytes from / to this peer, and the totals at the last choker round.
    pub downloaded: u64,
    pub uploaded: u64,
    pub down_mark: u64,
    pub up_mark: u64,
    pub rate_down: f64,
    pub rate_up: f64,
    pub optimistic: bool,
    /// Its socket has taken none of what we queued for a while (a slow or hostile reader): it holds no
    /// upload slot and the choker passes it over until the socket drains again.
    pub stalled: Option<Instant>,
    /// When we last sent it a block, or unchoked it (see `Limits::slot_idle`).
    pub last_upload: Instant,
    /// Times we unchoked it: a slot that frees goes to a peer that has had the fewest turns.
    pub turns: u32,
    /// Misuse on record for its IP when it connected, plus its own since: the choker serves peers with
    /// fewer before any with more, and a full peer table makes room by dropping the one with the most.
    pub misuse: u32,
    /// Our requests to it.
    pub outstanding: DetSet<BlockRef>,
    pub queue_target: usize,
    pub last_block: Instant,
    pub received_since_tick: u64,
    pub snubbed: bool,
    /// Its requests to us that we accepted and that have not left yet.
    pub uploads: UploadQueue,
    /// Requests refused since we last unchoked the peer, and how many it may have before it is
    /// dropped (set at the first refusal, from its misuse then).
    pub refused: usize,
    pub max_refused: Option<usize>,
    /// The ids the peer wants `ut_metadata` and `ut_pex` messages under.
    pub their_ut_metadata: Option<u8>,
    pub their_ut_pex: Option<u8>,
    /// The id it wants `ut_holepunch` messages under, and the rendezvous it has asked of us lately.
    pub their_ut_holepunch: Option<u8>,
    pub rendezvous: crate::holepunch::RendezvousBudget,
    /// When our next exchange to it is due, what it has been told of (and whether as a seed), and
    /// when we last took one.
    pub next_pex: Option<Instant>,
    pub pex_told: BTreeMap<SocketAddr, bool>,
    pub pex_in: Option<Instant>,
    pub last_received: Instant,
    pub last_sent: Instant,
    /// When it connected.
    pub since: Instant,
    /// Pieces it suggested (BEP 6) that we would still start, oldest first, at most `MAX_SUGGESTED`.
    pub suggested: Vec<PieceIndex>,
    /// Pieces we suggested to it while seeding that it has not yet asked for, at most
    /// `CoreConfig::suggest`.
    pub offered: Vec<PieceIndex>,
}

impl Peer {
    pub(crate) fn new(
        addr: SocketAddr,
        incoming: bool,
        conn: Connection,
        pieces: u32,
        misuse: u32,
        queue: usize,
        now: Instant,
    ) -> Peer {
        Peer {
            addr,
            peer_id: wire::PeerId::new([0; 20]),
            incoming,
            conn,
            bitfield: Bitfield::new(pieces),
            wanted: 0,
            listen: (!incoming).then_some(addr),
            client: None,
            downloaded: 0,
            uploaded: 0,
            down_mark: 0,
            up_mark: 0,
            rate_down: 0.0,
            rate_up: 0.0,
            optimistic: false,
            stalled: None,
            last_upload: now,
            turns: 0,
            misuse,
            outstanding: DetSet::default(),
            queue_target: queue,
            last_block: now,
            received_since_tick: 0,
            snubbed: false,
            uploads: UploadQueue::default(),
            refused: 0,
            max_refused: None,
            their_ut_metadata: None,
            their_ut_pex: None,
            their_ut_holepunch: None,
            rendezvous: crate::holepunch::RendezvousBudget::new(),
            next_pex: None,
            pex_told: BTreeMap::new(),
            pex_in: None,
            last_received: now,
            last_sent: now,
            since: now,
            suggested: Vec::new(),
            offered: Vec::new(),
        }
    }

    /// Unchoked, reading what we send, and asking for more.
    pub(crate) fn holds_slot(&self, now: Instant, idle: std::time::Duration) -> bool {
        !self.conn.am_choking
            && self.stalled.is_none()
            && now.saturating_duration_since(self.last_upload) < idle
    }

    /// Interested in us, choked, and reading: waiting for a slot.
    pub(crate) fn waiting(&self) -> bool {
        self.conn.peer_interested && self.conn.am_choking && self.stalled.is_none()
    }
}

/// Requests from the peer that we accepted and have not yet written out. A block leaves the set exactly
/// once: when the writer commits it, or when a cancel, a choke or a failed read takes it back, so a
/// request never gets both a piece and a reject (BEP 6).
#[derive(Default)]
pub(crate) struct UploadQueue {
    pending: DetSet<BlockRef>,
    bytes: usize,
    per_piece: DetMap<PieceIndex, u32>,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Accepted {
    Yes,
    Duplicate,
    /// Over the peer's cap of queued requests or bytes.
    Full,
}

impl UploadQueue {
    /// Takes a request on, unless it is already pending or the peer has too many.
    pub(crate) fn accept(&mut self, b: BlockRef, max: usize, max_bytes: usize) -> Accepted {
        if self.pending.contains(&b) {
            return Accepted::Duplicate;
        }
        if self.pending.len() >= max || self.bytes + b.length as usize > max_bytes {
            return Accepted::Full;
        }
        self.pending.insert(b);
        self.bytes += b.length as usize;
        *self.per_piece.entry(b.index).or_default() += 1;
        Accepted::Yes
    }

    pub(crate) fn is_pending(&self, b: &BlockRef) -> bool {
        self.pending.contains(b)
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Requests pending in piece `index`.
    pub(crate) fn in_piece(&self, index: PieceIndex) -> u32 {
        self.per_piece.get(&index).copied().unwrap_or(0)
    }

    /// Whether `b` was still pending; whoever gets `true` answers it.
    pub(crate) fn take(&mut self, b: &BlockRef) -> bool {
        if !self.pending.remove(b) {
            return false;
        }
        self.bytes -= b.length as usize;
        if let Some(n) = self.per_piece.get_mut(&b.index) {
            *n -= 1;
            if *n == 0 {
                self.per_piece.remove(&b.index);
            }
        }
        true
    }

    /// Every pending request, in block order.
    pub(crate) fn take_all(&mut self) -> Vec<BlockRef> {
        self.bytes = 0;
        self.per_piece.clear();
        let mut all: Vec<BlockRef> = self.pending.drain().collect();
        all.sort_unstable_by_key(|b| (b.index, b.begin, b.length));
        all
    }
}
