//! What a [`crate::TorrentCore`] is made from, and the limits it enforces.

use std::net::SocketAddr;
use std::time::Duration;

use crate::bitfield::Bitfield;
use crate::picker::BLOCK;

/// Fewest and most blocks kept requested from one peer: the queue is sized to about two seconds of the
/// peer's rate (the bandwidth-delay product with room to spare) between these.
pub const MIN_QUEUE: usize = 16;
/// See [`MIN_QUEUE`].
pub const MAX_QUEUE: usize = 500;
/// With requests outstanding and no block for this long, the peer is snubbing us.
pub const SNUB_TIMEOUT: Duration = Duration::from_secs(30);
/// A keep-alive goes to a peer we have sent nothing for this long.
pub const KEEPALIVE: Duration = Duration::from_secs(90);
/// Requests a peer may have outstanding with us, and their bytes: 500 blocks of 16 KiB, what we
/// advertise (`reqq`) and what a fast peer keeps queued. Requests beyond either are rejected (BEP 6), or
/// without the fast extension the peer is choked, which voids them all (BEP 3).
pub const MAX_PEER_REQUESTS: usize = 500;
/// See [`MAX_PEER_REQUESTS`].
pub const MAX_PEER_QUEUED_BYTES: usize = 8 << 20;
/// Requests refused since the peer was last unchoked (over its cap, or sent while choked) before it is
/// dropped: a peer keeps at most its queue (500 here) in flight, so past twice that it is flooding, and
/// reading and refusing its requests would cost us CPU at the speed of the link.
pub const MAX_REFUSED_REQUESTS: usize = 2 * MAX_PEER_REQUESTS;
/// The fewest refused requests before a drop: a peer whose IP has misuse on record (it flooded us or
/// stalled an upload slot before) is allowed half as many per misuse, down to this, so a flooder that
/// keeps reconnecting costs little to turn away.
pub const MIN_REFUSED_REQUESTS: usize = 32;
/// BEP 11 has peers send at most one exchange a minute; ours come every 60 s. Some slack for timer
/// jitter, but a peer sending more often is ignored so it cannot flood our queue of addresses to dial.
pub const PEX_MIN_GAP: Duration = Duration::from_secs(45);
/// Addresses waiting to be dialled, at most: trackers, PEX, LSD and the DHT can offer far more than a
/// torrent will ever connect to, and what PEX and the DHT offer is chosen by strangers.
pub const MAX_KNOWN: usize = 2000;
/// Addresses remembered as seeds (from a peer exchange's seed flag or a both-seeds disconnect), at
/// most, the oldest forgotten first: while we seed we do not dial them. As many as the addresses we
/// queue, so a swarm's worth fits while strangers' claims cannot grow it.
pub const MAX_SEED_ADDRS: usize = 2000;
/// Addresses whose dials failed lately (refused, often for a full peer table, or unanswered), at
/// most: each is not dialled again before its back-off ends. Past this the record starts over.
pub const MAX_FAILED_ADDRS: usize = 2000;
/// Suggestions (BEP 6 Suggest Piece) kept per peer, the oldest dropped first: a peer may send any number.
pub const MAX_SUGGESTED: usize = 32;
/// The id we ask peers to use for `ut_pex` messages to us.
pub const UT_PEX_ID: u8 = 2;
/// The id we ask peers to use for `ut_holepunch` messages to us (BEP 55).
pub const UT_HOLEPUNCH_ID: u8 = 4;

/// Timings and caps; [`Limits::default`] holds the engine's values.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Blocks requested from a peer before its rate is known.
    pub initial_queue: usize,
    /// See [`MIN_QUEUE`].
    pub min_queue: usize,
    /// See [`MAX_QUEUE`].
    pub max_queue: usize,
    /// Seconds of a peer's rate its request queue holds.
    pub queue_seconds: f64,
    /// See [`SNUB_TIMEOUT`].
    pub snub_timeout: Duration,
    /// A peer silent this long is dropped (it should send keep-alives every two minutes at most).
    pub idle_timeout: Duration,
    /// See [`KEEPALIVE`].
    pub keepalive: Duration,
    /// See [`MAX_PEER_REQUESTS`].
    pub max_peer_requests: usize,
    /// See [`MAX_PEER_QUEUED_BYTES`].
    pub max_peer_queued_bytes: usize,
    /// See [`MAX_REFUSED_REQUESTS`].
    pub max_refused_requests: usize,
    /// See [`MIN_REFUSED_REQUESTS`].
    pub min_refused_requests: usize,
    /// An unchoked peer that asks for nothing holds no upload slot once this has gone by since we last
    /// sent it a block or unchoked it, so peers that take a slot and never use it cannot keep a
    /// downloader waiting.
    pub slot_idle: Duration,
    /// A peer whose socket has taken nothing this long after it was reported stalled is choked.
    pub stall_choke: Duration,
    /// The first exchange goes this long after the peer's extension handshake, then every `pex_interval`.
    pub pex_first: Duration,
    /// See `pex_first`.
    pub pex_interval: Duration,
    /// See [`PEX_MIN_GAP`].
    pub pex_min_gap: Duration,
    /// See [`MAX_KNOWN`].
    pub max_known: usize,
    /// See [`MAX_SEED_ADDRS`].
    pub max_seed_addrs: usize,
    /// A dial that failed is not tried again before this, doubling with each failure in a row up to
    /// the second (trackers and peer exchange name the address again meanwhile).
    pub dial_backoff: (Duration, Duration),
    /// See [`MAX_FAILED_ADDRS`].
    pub max_failed_addrs: usize,
    /// IPs whose misuse is remembered, at most: when full, the record starts over.
    pub max_misuse_records: usize,
    /// Every this long each IP's misuse on record is halved (and forgotten at zero), so an address
    /// that misbehaved once, or that a later user inherits, is not held to half measures forever.
    pub misuse_half_life: Duration,
    /// How often per-peer upkeep runs (queue sizing, snubbing, keep-alives, idle peers, PEX).
    pub tick: Duration,
    /// How often, between choker rounds, slots that peers stopped using are given to waiting peers.
    pub slot_check: Duration,
    /// Peers given in the configuration are dialled again while not connected, backing off from the
    /// first to the second.
    pub redial: (Duration, Duration),
    /// When to announce again after an announce that gave no interval (it failed).
    pub announce_retry: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            initial_queue: 64,
            min_queue: MIN_QUEUE,
            max_queue: MAX_QUEUE,
            queue_seconds: 2.0,
            snub_timeout: SNUB_TIMEOUT,
            idle_timeout: Duration::from_secs(180),
            keepalive: KEEPALIVE,
            max_peer_requests: MAX_PEER_REQUESTS,
            max_peer_queued_bytes: MAX_PEER_QUEUED_BYTES,
            max_refused_requests: MAX_REFUSED_REQUESTS,
            min_refused_requests: MIN_REFUSED_REQUESTS,
            slot_idle: Duration::from_millis(500),
            stall_choke: Duration::from_secs(10),
            pex_first: Duration::from_secs(2),
            pex_interval: Duration::from_secs(60),
            pex_min_gap: PEX_MIN_GAP,
            max_known: MAX_KNOWN,
            max_seed_addrs: MAX_SEED_ADDRS,
            dial_backoff: (Duration::from_secs(30), Duration::from_secs(10 * 60)),
            max_failed_addrs: MAX_FAILED_ADDRS,
            max_misuse_records: 4096,
            misuse_half_life: Duration::from_secs(15 * 60),
            tick: Duration::from_secs(1),
            slot_check: Duration::from_millis(500),
            redial: (Duration::from_secs(2), Duration::from_secs(60)),
            announce_retry: Duration::from_secs(60),
        }
    }
}

/// What our extension handshake (BEP 10) and opening messages say.
#[derive(Debug, Clone, Default)]
pub struct ExtensionInfo {
    /// The id we take `ut_metadata` messages under, if we serve metadata (BEP 9).
    pub ut_metadata: Option<u8>,
    /// Size of the info dictionary we serve.
    pub metadata_size: Option<u64>,
    /// The port we accept peers on.
    pub listen_port: Option<u16>,
    /// Our client name (`v`).
    pub client: Option<String>,
    /// Our DHT node's port, sent to peers that set the DHT bit (never for private torrents).
    pub dht_port: Option<u16>,
}

/// One torrent as the core sees it.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Each piece's size in bytes.
    pub piece_sizes: Vec<u32>,
    /// Pieces already verified.
    pub have: Bitfield,
    /// Per piece, 0 (not wanted) or how urgent, higher first.
    pub priorities: Vec<u8>,
    /// Bytes per requested block: `BLOCK` (16 KiB) on the wire; a simulator may use bigger units.
    pub block_size: u32,
    /// A private torrent (BEP 27): no peer exchange, no DHT port.
    pub private: bool,
    /// Peer exchange (BEP 11), never for private torrents.
    pub pex: bool,
    /// Whether announces are timed (a torrent without trackers gets no `Announce` actions).
    pub trackers: bool,
    /// Regular upload slots; one optimistic slot comes on top.
    pub upload_slots: usize,
    /// Time between choker rounds.
    pub choke_interval: Duration,
    /// Time between rotations of the optimistic unchoke.
    pub optimistic_interval: Duration,
    /// Connections, established or being dialled.
    pub max_peers: usize,
    /// Seeds every random choice (optimistic unchoke, rarest-first tie-break, free slots).
    pub seed: u64,
    /// Pick pieces in order (streaming) instead of rarest first.
    pub sequential: bool,
    /// While seeding, how many pieces we keep suggested (BEP 6 Suggest Piece) to each unchoked peer
    /// that has the fast extension: pieces we have given out least, so our upload goes to first copies
    /// (0: none). Spore and libtorrent request suggested pieces first.
    pub suggest: usize,
    /// Accept requests for a piece's bytes as if every piece had the size of the largest (zeros past
    /// the end): libtorrent asks for a v2 file's tail piece that way.
    pub full_tail_requests: bool,
    /// Peers given by the user: dialled again while not connected.
    pub peers: Vec<SocketAddr>,
    /// Our own listening address: never dialled.
    pub listen: Option<SocketAddr>,
    /// What the opening messages say.
    pub extension: ExtensionInfo,
    /// Timings and caps.
    pub limits: Limits,
}

impl CoreConfig {
    /// A torrent of pieces of `piece_sizes` bytes, none had, all wanted at normal priority, with the
    /// engine's defaults: 4 upload slots, 10 s rounds, 30 s optimistic rotation, 50 peers, PEX on.
    pub fn new(piece_sizes: Vec<u32>, seed: u64) -> CoreConfig {
        let n = piece_sizes.len();
        CoreConfig {
            have: Bitfield::new(n as u32),
            priorities: vec![2; n],
            piece_sizes,
            block_size: BLOCK,
            private: false,
            pex: true,
            trackers: false,
            upload_slots: 4,
            choke_interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
            max_peers: 50,
            seed,
            sequential: false,
            suggest: 8,
            full_tail_requests: false,
            peers: Vec::new(),
            listen: None,
            extension: ExtensionInfo::default(),
            limits: Limits::default(),
        }
    }

    /// Whether peers are exchanged.
    pub(crate) fn uses_pex(&self) -> bool {
        self.pex && !self.private
    }
}
