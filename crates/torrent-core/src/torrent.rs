//! [`TorrentCore`]: the peer table and every policy decision of one torrent.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wire::{BlockRef, Connection, Event, ExtensionHandshake, Handshake, Message, PieceIndex};

use crate::bitfield::Bitfield;
use crate::config::{CoreConfig, MAX_SUGGESTED, UT_HOLEPUNCH_ID, UT_PEX_ID};
use crate::holepunch::{self, Answer};
use crate::peer::{Accepted, Peer};
use crate::picker::{Picker, Received};
use crate::rng::Rng;
use crate::seeds::SeedAddrs;
use crate::suggest::Suggester;
use crate::table::KeyTable;
use crate::{AnnounceEvent, DetMap, DetSet};

/// The core's handle for one connection; never reused within a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub u64);

/// Why [`TorrentCore::add_peer`] turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Its IP sent data that failed the hash check.
    #[error("banned")]
    Banned,
    /// The peer table is full and no peer in it has a worse record than the newcomer.
    #[error("peer limit reached")]
    Full,
    /// Its peer id is ours.
    #[error("connected to ourselves")]
    Ourselves,
    /// The torrent is stopping.
    #[error("stopping")]
    Stopped,
    /// We have a connection with this peer (its id, from its IP) already, the one to keep.
    #[error("already connected to this peer")]
    Duplicate,
}

/// Why the core ends a connection ([`Action::Disconnect`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectReason {
    /// Its IP is banned (it sent data that failed the hash check).
    #[error("banned")]
    Banned,
    /// It sent more refused requests than it may.
    #[error("{0} requests refused: flooding")]
    Flooding(usize),
    /// The peer table was full and it had the worst record.
    #[error("dropped for a newcomer")]
    Evicted,
    /// Both sides are seeds: the connection would only hold a slot a downloader could use.
    #[error("both sides are seeds")]
    BothSeeds,
    /// It sent nothing for too long.
    #[error("peer idle")]
    Idle,
    /// It broke the protocol.
    #[error("protocol: {0}")]
    Protocol(#[from] wire::ConnectionError),
    /// Its extension handshake did not decode.
    #[error("bad extension handshake")]
    BadExtension,
    /// The torrent stops.
    #[error("torrent stopped")]
    Stopped,
    /// The table was full with addresses waiting, and it had exchanged the least with us lately: its
    /// place goes to a new connection (peer turnover).
    #[error("turned over for a new peer")]
    Turnover,
    /// A second connection with the same peer (two dialled each other at once, as in a hole punch)
    /// is kept instead, the one both ends choose.
    #[error("duplicate connection")]
    Duplicate,
}

/// One step of a hole punch (BEP 55) as the peer behind a NAT takes it: worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunchStep {
    /// We could not reach the target and asked `relay`, which told us of it, to introduce us.
    Asked {
        /// Where the relay is.
        relay: SocketAddr,
    },
    /// `relay` could not introduce us; nobody is asked for the target for a while.
    Refused {
        /// Where the relay is.
        relay: SocketAddr,
        /// What it said.
        error: wire::HolepunchError,
    },
    /// `relay` told us to connect to the target now (it tells the target the same): dialled at once.
    Told {
        /// Where the relay is.
        relay: SocketAddr,
    },
    /// A connection with the target, made while a punch to it was under way.
    Connected {
        /// It dialled us (its dial got through our NAT first).
        incoming: bool,
    },
}

/// What happened on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A decoded frame from the peer; the core checks it with the peer's `wire::Connection`.
    Message(Message),
    /// The peer's socket stopped taking what we queued (`true`) or drained again.
    WriteStalled(bool),
    /// The block of a [`Action::ReadBlock`] went to the socket: counted as uploaded (see
    /// [`TorrentCore::commit_upload`], which also says whether it was still wanted).
    BlockSent(BlockRef),
    /// The block of a [`Action::ReadBlock`] could not be read: the request is rejected (BEP 6).
    ReadFailed(BlockRef),
    /// The connection is gone.
    Closed,
}

/// Something for the I/O layer to do. Every `Send` must reach the peer's writer or end the
/// connection: control messages are never dropped silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `message` to the peer.
    Send {
        /// To whom.
        peer: PeerKey,
        /// What.
        message: Message,
    },
    /// Serve a request: read the block's bytes (zeros past a piece's end) and send it as a piece,
    /// unless [`TorrentCore::commit_upload`] says it was taken back meanwhile.
    ReadBlock {
        /// For whom.
        peer: PeerKey,
        /// Which bytes.
        block: BlockRef,
    },
    /// A request taken back (cancel, choke) before it was sent: a read for it may stop.
    CancelRead {
        /// Whose.
        peer: PeerKey,
        /// Which.
        block: BlockRef,
    },
    /// Keep a received block for its piece.
    StoreBlock {
        /// From whom.
        peer: PeerKey,
        /// Where in the torrent.
        block: BlockRef,
        /// Its bytes.
        data: Bytes,
    },
    /// Every block of a piece is stored: hash it, write it, and report with
    /// [`TorrentCore::piece_checked`].
    VerifyPiece {
        /// Which.
        piece: PieceIndex,
    },
    /// End the connection (the core has forgotten the peer already).
    Disconnect {
        /// Which.
        peer: PeerKey,
        /// Why.
        reason: DisconnectReason,
    },
    /// Dial an address; report failure with [`TorrentCore::dial_failed`], success with
    /// [`TorrentCore::add_peer`].
    Connect {
        /// Whom.
        addr: SocketAddr,
    },
    /// Announce to the trackers, then report with [`TorrentCore::announced`].
    Announce {
        /// Which event.
        event: AnnounceEvent,
    },
    /// Every wanted piece is verified.
    Completed,
    /// An IP is banned from now on (its connections get `Disconnect` actions): worth a log line.
    Banned {
        /// Which.
        ip: IpAddr,
    },
    /// Two peers were told to connect to each other (a BEP 55 rendezvous): worth a log line.
    Introduced {
        /// The peer that asked, at the address the other was given.
        requester: SocketAddr,
        /// The peer it asked for.
        target: SocketAddr,
    },
    /// A hole punch (BEP 55) with `target` moved on: worth a log line.
    Punch {
        /// The peer we cannot reach or are connecting to.
        target: SocketAddr,
        /// What happened.
        step: PunchStep,
    },
    /// A peer says in its extension handshake (BEP 10 `yourip`) at which address it sees us: one
    /// vote towards our external address.
    SeenAs {
        /// The peer's IP (one vote per voter).
        voter: IpAddr,
        /// Our address as it sees it.
        ip: IpAddr,
    },
    /// Answer a BEP 9 request for a piece of the info dictionary (or reject it).
    ServeMetadata {
        /// For whom.
        peer: PeerKey,
        /// The id the peer takes `ut_metadata` messages under.
        reply_id: u8,
        /// Which metadata piece.
        piece: u32,
    },
    /// Answer a BEP 52 hash request (or reject it).
    ServeHashes {
        /// For whom.
        peer: PeerKey,
        /// What it asks for.
        range: wire::HashRange,
    },
}

/// One connection as a status view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSnapshot {
    /// The core's handle.
    pub key: PeerKey,
    /// Its address.
    pub addr: SocketAddr,
    /// It connected to us.
    pub incoming: bool,
    /// Payload bytes from and to it.
    pub downloaded: u64,
    /// See `downloaded`.
    pub uploaded: u64,
    /// Bytes per second over the last choker round.
    pub rate_down: f64,
    /// See `rate_down`.
    pub rate_up: f64,
    /// The client name from its extension handshake, cleaned.
    pub client: Option<String>,
    /// We do not choke it.
    pub unchoked: bool,
    /// It holds the optimistic unchoke.
    pub optimistic: bool,
    /// It wants data from us.
    pub interested: bool,
    /// We want data from it.
    pub am_interested: bool,
    /// It chokes us.
    pub peer_choking: bool,
    /// Its socket takes nothing we send.
    pub stalled: bool,
    /// It sits on our requests.
    pub snubbed: bool,
    /// Misuse on record for it.
    pub misuse: u32,
    /// Our requests to it not yet answered, and how many we aim to keep.
    pub outstanding: usize,
    /// See `outstanding`.
    pub queue_target: usize,
    /// Its requests we accepted and have not sent.
    pub uploads_pending: usize,
    /// Pieces it has.
    pub pieces: u32,
}

/// Totals over the torrent's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payload bytes taken (first copies of wanted blocks).
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Bytes of pieces that failed their hash.
    pub wasted: u64,
    /// Peer-exchange messages sent.
    pub pex_sent: u64,
    /// Rendezvous relayed (BEP 55): two peers told to connect to each other.
    pub introductions: u64,
    /// Choker rounds run.
    pub choke_rounds: u64,
}

/// Longest client name kept from a peer's extension handshake, in characters.
pub const MAX_CLIENT_NAME: usize = 64;

/// A peer's self-declared client name made safe to show: control characters dropped, cut to
/// `MAX_CLIENT_NAME` characters, `None` when nothing is left.
pub fn client_name(v: &str) -> Option<String> {
    let name: String = v
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CLIENT_NAME)
        .collect();
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

struct Announces {
    next: Option<Instant>,
    event: AnnounceEvent,
    in_flight: bool,
    completed_sent: bool,
}

/// Whether we want piece `i` and lack it.
fn wants(picker: &Picker, i: PieceIndex) -> bool {
    picker.priority_of(i) > 0 && !picker.have().get(i.get())
}

/// Pieces of `bits` we want and lack.
fn wanted_from(picker: &Picker, bits: &Bitfield) -> u32 {
    bits.ones()
        .filter(|&i| wants(picker, PieceIndex::new(i)))
        .count() as u32
}

/// One torrent's state and policy; see the crate documentation.
pub struct TorrentCore {
    config: CoreConfig,
    picker: Picker,
    piece_length: u32,
    peers: KeyTable<Peer>,
    next_key: u64,
    /// Addresses we may connect to, and those with a live or pending connection.
    known: VecDeque<SocketAddr>,
    connected: DetSet<SocketAddr>,
    /// Addresses known to be seeds: not queued or dialled while we are one, since two seeds only
    /// connect to disconnect again.
    seeds: SeedAddrs,
    /// Addresses whose dials failed in a row, and when each may be dialled again.
    failed: DetMap<SocketAddr, (u32, Instant)>,
    strikes: DetMap<IpAddr, u32>,
    /// Times a peer from this IP held an upload slot and stopped reading, or flooded us with requests
    /// past its cap. Kept across connections, since a hostile peer that is dropped reconnects with a
    /// clean slate otherwise and is as likely as an honest newcomer to get the next free slot.
    misuse: DetMap<IpAddr, u32>,
    banned: DetSet<IpAddr>,
    /// IPs that sent blocks of each piece being downloaded.
    contributors: DetMap<PieceIndex, Vec<IpAddr>>,
    actions: VecDeque<Action>,
    /// Peers whose request queues may need topping up before the next action is handed out.
    to_fill: BTreeSet<u64>,
    /// Peers that unchoke us and got fewer requests than their queue holds at their last top-up: they
    /// are topped up again when a requested block opens up (a choke, a reject, a peer gone), so a
    /// peer is re-picked only when something it could give us may have changed.
    hungry: BTreeSet<u64>,
    /// The earliest peer exchange due (kept, not recomputed over every peer at each `poll_timeout`).
    pex_due: Option<Instant>,
    /// What we suggest while seeding (made when first needed).
    suggester: Option<Suggester>,
    /// Picks the optimistic unchoke and free slots, so every choked peer gets its turn.
    rng: Rng,
    now: Instant,
    next_tick: Instant,
    last_tick: Instant,
    /// When the misuse on record is next halved.
    next_misuse_fade: Instant,
    next_slot_check: Instant,
    next_choke: Instant,
    last_choke: Instant,
    last_optimistic: Instant,
    announces: Announces,
    redial_backoff: Duration,
    next_redial: Instant,
    /// Rendezvous we ask for and punches under way (BEP 55, as a peer behind a NAT).
    punches: holepunch::Punches,
    stats: Stats,
    completed: bool,
    stopped: bool,
    /// A connection was turned away for a full table since the last turnover: someone waits for a
    /// place even when we know no address to dial.
    turned_away: bool,
    /// A priority changed between wanted and not: every peer's `wanted` count is recounted at the next
    /// interest check.
    wanted_stale: bool,
}

impl TorrentCore {
    /// A torrent with no peers yet, its clock started at `now`. With trackers on, the first action is
    /// the `started` announce.
    pub fn new(config: CoreConfig, now: Instant) -> TorrentCore {
        let mut picker = Picker::with_block_size(
            config.piece_sizes.clone(),
            config.have.clone(),
            config.priorities.clone(),
            config.seed,
            config.block_size,
        );
        picker.set_sequential(config.sequential);
        let completed = picker.done();
        let piece_length = config.piece_sizes.iter().copied().max().unwrap_or(0);
        let announces = Announces {
            next: config.trackers.then_some(now),
            event: AnnounceEvent::Started,
            in_flight: false,
            completed_sent: completed,
        };
        let mut core = TorrentCore {
            rng: Rng::new(config.seed ^ 0x6368_6f6b_6572),
            picker,
            piece_length,
            peers: KeyTable::default(),
            next_key: 0,
            known: VecDeque::new(),
            connected: DetSet::default(),
            seeds: SeedAddrs::default(),
            failed: DetMap::default(),
            strikes: DetMap::default(),
            misuse: DetMap::default(),
            banned: DetSet::default(),
            contributors: DetMap::default(),
            actions: VecDeque::new(),
            to_fill: BTreeSet::new(),
            hungry: BTreeSet::new(),
            pex_due: None,
            suggester: None,
            now,
            next_tick: now + config.limits.tick,
            last_tick: now,
            next_misuse_fade: now + config.limits.misuse_half_life,
            next_slot_check: now + config.limits.slot_check,
            next_choke: now + config.choke_interval,
            last_choke: now,
            last_optimistic: now,
            announces,
            redial_backoff: config.limits.redial.0,
            next_redial: now + config.limits.redial.0,
            punches: holepunch::Punches::default(),
            stats: Stats::default(),
            completed,
            stopped: false,
            turned_away: false,
            wanted_stale: false,
            config,
        };
        let fixed = core.config.peers.clone();
        core.add_addresses(fixed, now);
        core
    }

    fn advance(&mut self, now: Instant) {
        // Time never runs backwards here, whatever the caller's clocks do.
        self.now = self.now.max(now);
    }

    // ----- what the I/O layer reports -----

    /// Registers a connection whose handshakes are done, and queues our opening messages (bitfield or
    /// have-all/none, DHT port, extension handshake). A full table makes room by dropping the peer with
    /// the worst record if it is worse than the newcomer's (a `Disconnect` action).
    pub fn add_peer(
        &mut self,
        addr: SocketAddr,
        incoming: bool,
        ours: &Handshake,
        theirs: &Handshake,
        now: Instant,
    ) -> Result<PeerKey, Refused> {
        self.advance(now);
        if self.stopped {
            return Err(Refused::Stopped);
        }
        if theirs.peer_id == ours.peer_id {
            return Err(Refused::Ourselves);
        }
        if self.banned.contains(&addr.ip()) {
            return Err(Refused::Banned);
        }
        if let Some(other) = self.duplicate_of(addr, incoming, ours, theirs)? {
            self.remove_peer(other, Some(DisconnectReason::Duplicate));
        }
        let misuse = self.misuse.get(&addr.ip()).copied().unwrap_or(0);
        if self.peers.len() >= self.config.max_peers {
            // Full: make room by dropping the peer with the worst record, if it is worse than the
            // newcomer's, so connections that misuse us cannot keep an honest peer out.
            let worst = self
                .peers
                .iter()
                .filter(|(_, p)| p.misuse > misuse)
                .max_by_key(|(k, p)| (p.misuse, Reverse(**k)))
                .map(|(k, _)| *k)
                .ok_or_else(|| {
                    self.turned_away = true;
                    Refused::Full
                })?;
            self.remove_peer(worst, Some(DisconnectReason::Evicted));
        }
        let key = self.next_key;
        self.next_key += 1;
        let pieces = self.config.piece_sizes.len() as u32;
        let conn = Connection::new(pieces, ours, theirs);
        let queue = self.config.limits.initial_queue;
        let mut peer = Peer::new(addr, incoming, conn, pieces, misuse, queue, self.now);
        peer.peer_id = theirs.peer_id;
        if self.peers.len() == 0 {
            // The per-peer timers slept while the table was empty (see `poll_timeout`): rates are
            // measured from now, not from the last tick before it emptied.
            self.last_tick = self.now;
            self.next_tick = self.now + self.config.limits.tick;
        }
        self.peers.insert(key, peer);
        self.connected.insert(addr);
        self.failed.remove(&addr);
        if self.punches.punched(addr, incoming, self.now) {
            self.actions.push_back(Action::Punch {
                target: addr,
                step: PunchStep::Connected { incoming },
            });
        }
        self.opening(key, theirs.supports_dht());
        Ok(PeerKey(key))
    }

    /// The connection already in the table with the same peer (its id, from the same IP), if there
    /// is one: the one to drop for the newcomer, or `Duplicate` when the newcomer goes.
    ///
    /// Clients disagree on which of two connections to keep, and when both ends drop a different
    /// one the pair is left with none. aria2 drops whichever comes second (its source says so), and
    /// dials a peer it is connected to when peer exchange names that peer's listen address (its
    /// connection came from another port), so the first must stay. libtorrent never dials an
    /// address it is connected to; when two dials cross it keeps the one made by the end with the
    /// lower listen port and drops the other whatever its age, so for libtorrent (and clients built
    /// on it) and for Spore the port rule is followed. Of two in the same direction the first stays.
    fn duplicate_of(
        &self,
        addr: SocketAddr,
        incoming: bool,
        ours: &Handshake,
        theirs: &Handshake,
    ) -> Result<Option<u64>, Refused> {
        let Some((&other, p)) = self
            .peers
            .iter()
            .find(|(_, p)| p.peer_id == theirs.peer_id && p.addr.ip() == addr.ip())
        else {
            return Ok(None);
        };
        let keep_newcomer = match self.config.extension.listen_port {
            Some(our_port)
                if p.incoming != incoming && settles_duplicates_by_port(&theirs.peer_id) =>
            {
                // The address we dialled is their listen address.
                let their_port = if incoming { p.addr.port() } else { addr.port() };
                let our_dial_stays = match our_port.cmp(&their_port) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    // libtorrent picks at random here; between Spores the greater id's dial stays.
                    std::cmp::Ordering::Equal => ours.peer_id.0 > theirs.peer_id.0,
                };
                // The newcomer is our dial when it is not incoming.
                our_dial_stays != incoming
            }
            _ => false,
        };
        if keep_newcomer {
            Ok(Some(other))
        } else {
            Err(Refused::Duplicate)
        }
    }

    fn opening(&mut self, key: u64, their_dht: bool) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let (fast, extensions) = (p.conn.fast(), p.conn.extensions());
        let have = self.picker.have();
        let first = if fast && have.count() == 0 {
            Some(Message::HaveNone)
        } else if fast && have.is_complete() {
            Some(Message::HaveAll)
        } else {
            (have.count() > 0).then(|| Message::Bitfield(have.to_bytes()))
        };
        if let Some(m) = first {
            self.send(key, m);
        }
        let ext = &self.config.extension;
        if let (Some(port), true, false) = (ext.dht_port, their_dht, self.config.private) {
            self.send(key, Message::Port(port));
        }
        if extensions {
            let ext = &self.config.extension;
            let mut extensions = BTreeMap::new();
            if let Some(id) = ext.ut_metadata {
                extensions.insert("ut_metadata".to_string(), id);
            }
            // Introductions, like exchanges, hand out peers the tracker did not: not in private
            // torrents, and not where peer exchange is turned off.
            if self.config.uses_pex() {
                extensions.insert("ut_pex".to_string(), UT_PEX_ID);
                extensions.insert("ut_holepunch".to_string(), UT_HOLEPUNCH_ID);
            }
            let addr = self.peers[&key].addr;
            let hs = ExtensionHandshake {
                extensions,
                metadata_size: ext.metadata_size,
                listen_port: ext.listen_port,
                client: ext.client.clone(),
                request_queue: Some(self.config.limits.max_peer_requests as u32),
                your_ip: Some(addr.ip()),
            };
            self.send(
                key,
                Message::Extended {
                    id: 0,
                    payload: hs.encode().into(),
                },
            );
        }
    }

    /// Feeds what happened on one connection. Events of peers the core no longer knows are ignored.
    pub fn handle_event(&mut self, peer: PeerKey, event: PeerEvent, now: Instant) {
        self.advance(now);
        let key = peer.0;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        match event {
            PeerEvent::Message(m) => {
                p.last_received = self.now;
                match p.conn.receive(m) {
                    Ok(event) => self.on_wire_event(key, event),
                    Err(e) => self.remove_peer(key, Some(e.into())),
                }
            }
            PeerEvent::WriteStalled(stalled) => self.set_stalled(key, stalled),
            PeerEvent::BlockSent(b) => {
                self.commit_upload(peer, b, now);
            }
            PeerEvent::ReadFailed(b) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.uploads.take(&b) && p.conn.fast() {
                        self.send(key, Message::Reject(b));
                    }
                }
            }
            PeerEvent::Closed => self.remove_peer(key, None),
        }
    }

    /// `Have`s of one peer read together, in order: the same as feeding each as a
    /// [`PeerEvent::Message`]. A batch touches the peer's state while it is in cache, which is what
    /// a `Have` costs in a swarm of many cores (the simulator's case).
    pub fn handle_haves(&mut self, peer: PeerKey, pieces: &[PieceIndex], now: Instant) {
        self.advance(now);
        let key = peer.0;
        for &i in pieces {
            let Some(p) = self.peers.get_mut(&key) else {
                return;
            };
            p.last_received = self.now;
            match p.conn.receive(Message::Have(i)) {
                Ok(event) => self.on_wire_event(key, event),
                Err(e) => {
                    self.remove_peer(key, Some(e.into()));
                    return;
                }
            }
        }
    }

    /// The writer is about to send the block of a [`Action::ReadBlock`]: `true` if it is still wanted
    /// (it is then counted as uploaded and leaves the peer's queue), `false` if a cancel or a choke
    /// took it back. Exactly one of the piece and a reject goes out for every request.
    pub fn commit_upload(&mut self, peer: PeerKey, block: BlockRef, now: Instant) -> bool {
        self.advance(now);
        let Some(p) = self.peers.get_mut(&peer.0) else {
            return false;
        };
        if !p.uploads.take(&block) {
            return false;
        }
        let len = u64::from(block.length);
        p.uploaded += len;
        p.last_upload = self.now;
        self.stats.uploaded += len;
        if let Some(s) = self.suggester.as_mut() {
            s.uploaded(block.index, len);
        }
        true
    }

    /// Whether a request of the peer's is still waiting to be sent (a writer may skip reading it).
    pub fn upload_pending(&self, peer: PeerKey, block: &BlockRef) -> bool {
        self.peers
            .get(&peer.0)
            .is_some_and(|p| p.uploads.is_pending(block))
    }

    /// Requests of the peer's pending in piece `index` (the upload path reads a whole piece when a peer
    /// asks for more than one block of it).
    pub fn pending_in_piece(&self, peer: PeerKey, index: PieceIndex) -> u32 {
        self.peers
            .get(&peer.0)
            .map_or(0, |p| p.uploads.in_piece(index))
    }

    /// The result of a [`Action::VerifyPiece`]: `ok` when it matched its hash and was written. A good
    /// piece is announced to every peer (`Have`); a bad one gives each contributor a strike (two for a
    /// sole contributor), and two strikes ban the IP and drop its connections.
    pub fn piece_checked(&mut self, piece: PieceIndex, ok: bool, now: Instant) {
        self.advance(now);
        let contributors = self.contributors.remove(&piece).unwrap_or_default();
        if ok {
            if wants(&self.picker, piece) {
                for p in self.peers.values_mut() {
                    if p.bitfield.get(piece.get()) {
                        p.wanted = p.wanted.saturating_sub(1);
                    }
                }
            }
            self.picker.verified(piece);
            let keys: Vec<u64> = self.peers.keys().copied().collect();
            for k in &keys {
                self.send(*k, Message::Have(piece));
            }
            if self.picker.done() && !self.completed {
                self.completed = true;
                self.actions.push_back(Action::Completed);
                let seeds = &self.seeds;
                self.known.retain(|a| !seeds.contains(a));
                if self.config.trackers && !self.announces.completed_sent {
                    self.announces.completed_sent = true;
                    self.announces.event = AnnounceEvent::Completed;
                    self.announces.next = Some(self.now);
                }
            }
            // A piece we now have may end our interest in a peer, or leave two seeds connected.
            for k in keys {
                self.update_interest(k);
            }
            return;
        }
        self.picker.failed(piece);
        self.stats.wasted += u64::from(
            self.config
                .piece_sizes
                .get(piece.as_usize())
                .copied()
                .unwrap_or(0),
        );
        // A piece that had a banned peer among its contributors is explained by that peer: blocks it
        // sent before the ban keep failing pieces for a while, and striking the honest peers that
        // filled the rest of them would ban those too and leave nobody to download from.
        let explained = contributors.iter().any(|ip| self.banned.contains(ip));
        if !explained {
            // Everyone who contributed gets a strike; a peer that sent the whole piece alone gets two.
            let weight = if contributors.len() == 1 { 2 } else { 1 };
            for ip in contributors {
                let strikes = self.strikes.entry(ip).or_insert(0);
                *strikes += weight;
                if *strikes >= 2 {
                    self.ban(ip);
                }
            }
        }
        self.fill_all();
    }

    /// A verified piece could not be written (the torrent is failing): download it again, no strikes.
    pub fn piece_abandoned(&mut self, piece: PieceIndex, now: Instant) {
        self.advance(now);
        self.contributors.remove(&piece);
        self.picker.failed(piece);
    }

    /// Bans `ip` and drops its connections.
    pub fn ban(&mut self, ip: IpAddr) {
        if self.banned.insert(ip) {
            self.actions.push_back(Action::Banned { ip });
        }
        let keys: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.addr.ip() == ip)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.remove_peer(k, Some(DisconnectReason::Banned));
        }
    }

    /// Addresses to connect to (from trackers, the DHT, LSD, PEX): queued (at most `MAX_KNOWN`, the
    /// oldest dropped first, since fresh addresses are likelier to answer), and dialled within the
    /// connection limit (`Connect` actions).
    pub fn add_addresses(&mut self, addrs: impl IntoIterator<Item = SocketAddr>, now: Instant) {
        self.advance(now);
        for addr in addrs {
            if Some(addr) == self.config.listen
                || addr.port() == 0
                || self.banned.contains(&addr.ip())
                || self.is_connected_to(addr)
                || (self.completed && self.seeds.contains(&addr))
                || self.backing_off(addr)
            {
                continue;
            }
            self.queue_known(addr);
        }
        self.dial();
    }

    /// A `Connect` failed (or its connection ended before `add_peer`): the address is free again.
    pub fn dial_failed(&mut self, addr: SocketAddr, now: Instant) {
        self.advance(now);
        if !self.peers.values().any(|p| p.addr == addr) {
            self.connected.remove(&addr);
            self.note_failure(addr);
        }
        self.dial();
    }

    /// Backs `addr` off: a peer whose table is full refuses every dial until it turns peers over,
    /// and without this each time a tracker or peer exchange named it again we dialled it again.
    fn note_failure(&mut self, addr: SocketAddr) {
        let (first, most) = self.config.limits.dial_backoff;
        if first.is_zero() || self.config.peers.contains(&addr) {
            return;
        }
        let now = self.now;
        if self.failed.len() >= self.config.limits.max_failed_addrs
            && !self.failed.contains_key(&addr)
        {
            self.failed.retain(|_, (_, until)| *until > now);
            if self.failed.len() >= self.config.limits.max_failed_addrs {
                self.failed.clear();
            }
        }
        let entry = self.failed.entry(addr).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        let wait = first.saturating_mul(1 << (entry.0 - 1).min(16)).min(most);
        entry.1 = now + wait;
    }

    fn backing_off(&self, addr: SocketAddr) -> bool {
        self.failed
            .get(&addr)
            .is_some_and(|(_, until)| *until > self.now)
    }

    /// A `Connect` reached nobody (no answer, refused, or no handshake): as `dial_failed`, and when a
    /// connected peer that takes `ut_holepunch` messages told us of the address by peer exchange, so
    /// is connected to it, that peer is asked to introduce us (BEP 55 rendezvous; budgeted, and asked
    /// again for the same address only after a back-off).
    pub fn unreachable(&mut self, addr: SocketAddr, now: Instant) {
        self.advance(now);
        if !self.stopped && self.config.uses_pex() && !self.peers.values().any(|p| p.addr == addr) {
            let peers = &self.peers;
            let usable = |k: u64| {
                peers
                    .get(&k)
                    .is_some_and(|p| p.their_ut_holepunch.is_some())
            };
            if let Some(relay) = self.punches.unreachable(addr, self.now, usable) {
                if let Some(p) = self.peers.get(&relay) {
                    let (id, relay_addr) = (p.their_ut_holepunch, p.addr);
                    if let Some(id) = id {
                        let ask = wire::HolepunchMessage {
                            kind: wire::HolepunchKind::Rendezvous,
                            addr,
                        };
                        self.send(
                            relay,
                            Message::Extended {
                                id,
                                payload: ask.encode().into(),
                            },
                        );
                        self.actions.push_back(Action::Punch {
                            target: addr,
                            step: PunchStep::Asked { relay: relay_addr },
                        });
                    }
                }
            }
        }
        self.dial_failed(addr, now);
    }

    /// Whether a dial to `addr` answers a relay's `connect` (BEP 55) made lately: the peer dials us
    /// at the same moment, so the dial should go over uTP whatever is remembered of the peer.
    pub fn is_punching(&self, addr: SocketAddr) -> bool {
        self.punches.is_punching(addr, self.now)
    }

    /// A `Connect` the I/O layer could not start yet (a limit shared with other torrents): the address
    /// goes back to the front of the queue and is dialled again at a later timeout.
    pub fn dial_deferred(&mut self, addr: SocketAddr, now: Instant) {
        self.advance(now);
        if !self.peers.values().any(|p| p.addr == addr) {
            self.connected.remove(&addr);
        }
        if !self.known.contains(&addr) {
            self.known.push_front(addr);
            self.known.truncate(self.config.limits.max_known);
        }
    }

    /// The result of an [`Action::Announce`]: the next regular one is due after `interval` (after the
    /// retry time when it failed), sooner if something happened meanwhile.
    pub fn announced(&mut self, interval: Option<Duration>, now: Instant) {
        self.advance(now);
        self.announces.in_flight = false;
        if self.announces.next.is_none() {
            let wait = interval.unwrap_or(self.config.limits.announce_retry);
            self.announces.next = Some(self.now + wait);
        }
    }

    /// Announces now instead of at the end of the interval.
    pub fn reannounce(&mut self, now: Instant) {
        self.advance(now);
        if self.config.trackers {
            self.announces.next = Some(self.now);
        }
    }

    /// Stops: every connection ends, no new one is taken, and trackers hear `stopped`.
    pub fn stop(&mut self, now: Instant) {
        self.advance(now);
        if self.stopped {
            return;
        }
        self.stopped = true;
        let keys: Vec<u64> = self.peers.keys().copied().collect();
        for k in keys {
            self.remove_peer(k, Some(DisconnectReason::Stopped));
        }
        self.known.clear();
        self.seeds.clear();
        self.failed.clear();
        if self.config.trackers {
            self.announces.next = None;
            self.actions.push_back(Action::Announce {
                event: AnnounceEvent::Stopped,
            });
        }
    }

    // ----- timers -----

    /// When [`TorrentCore::handle_timeout`] is next due (`None`: nothing is until an event).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        // The tick, the slot check and the choker only look after peers: with none connected they
        // sleep (a daemon's thousand idle seeds woke three thousand times a second for nothing) and
        // the first peer to arrive finds them due.
        let earliest = |next: Option<Instant>, at: Instant| Some(next.map_or(at, |n| n.min(at)));
        let mut next = None;
        if self.peers.len() > 0 {
            next = Some(
                self.next_tick
                    .min(self.next_slot_check)
                    .min(self.next_choke),
            );
        } else {
            // The fade runs in the tick: waking before the tick is due would find nothing to do, and
            // again at once, until it is.
            if !self.misuse.is_empty() {
                next = Some(self.next_misuse_fade.max(self.next_tick));
            }
            // Addresses wait with room to dial them: a dial the I/O layer deferred (a shared budget
            // of connections was spent) is tried again at each tick.
            if !self.known.is_empty() && self.connected.len() < self.config.max_peers {
                next = earliest(next, self.next_tick);
            }
        }
        if let (Some(at), false) = (self.announces.next, self.announces.in_flight) {
            next = earliest(next, at);
        }
        if !self.config.peers.is_empty() {
            next = earliest(next, self.next_redial);
        }
        // Peer exchanges go when due, not at the next tick: the first one is 2 s after the extension
        // handshake, and a swarm that finishes in 3 s has little time to spare.
        if let Some(pex) = self.next_pex_due() {
            next = earliest(next, pex);
        }
        next
    }

    /// Runs what is due by `now`: choker rounds and the optimistic rotation, free slots, per-peer upkeep
    /// (queue sizing, snubbing, keep-alives, idle peers, stalled sockets, PEX), announces, redials.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.stopped {
            return;
        }
        let now = self.now;
        if now >= self.next_choke {
            self.choke_round();
            self.next_choke = now + self.config.choke_interval;
            self.next_slot_check = now + self.config.limits.slot_check;
        } else if now >= self.next_slot_check {
            // Between rounds, slots that unchoked peers stopped using go to waiting peers.
            let slots = self.config.upload_slots + 1;
            for _ in 0..slots {
                self.fill_free_slot(None);
            }
            self.next_slot_check = now + self.config.limits.slot_check;
        }
        if now >= self.next_tick {
            self.tick();
            self.next_tick = now + self.config.limits.tick;
        }
        if self.next_pex_due().is_some_and(|due| due <= now) {
            let keys: Vec<u64> = self.peers.keys().copied().collect();
            for k in keys {
                self.maybe_pex(k);
            }
            self.refresh_pex_due();
        }
        if let (Some(at), false) = (self.announces.next, self.announces.in_flight) {
            if now >= at {
                self.announces.next = None;
                self.announces.in_flight = true;
                let event = std::mem::take(&mut self.announces.event);
                self.actions.push_back(Action::Announce { event });
            }
        }
        if !self.config.peers.is_empty() && now >= self.next_redial {
            self.redial_backoff = (self.redial_backoff * 2).min(self.config.limits.redial.1);
            self.next_redial = now + self.redial_backoff;
            let fixed = self.config.peers.clone();
            self.add_addresses(fixed, now);
        }
        self.dial();
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            let keys = std::mem::take(&mut self.to_fill);
            for k in keys {
                self.request_more(k);
            }
        }
        self.actions.pop_front()
    }

    // ----- settings and views -----

    /// Chokes a peer now (its pending requests void, or rejected under BEP 6) and gives its slot to a
    /// waiting peer.
    pub fn choke_peer(&mut self, peer: PeerKey, now: Instant) {
        self.advance(now);
        self.choke_and_refill(peer.0);
    }

    /// Changes a piece's priority (0: not wanted).
    pub fn set_piece_priority(&mut self, piece: PieceIndex, priority: u8) {
        if (self.picker.priority_of(piece) > 0) != (priority > 0) {
            self.wanted_stale = true;
        }
        self.picker.set_priority(piece, priority);
        self.fill_all();
    }

    /// Sets reader `reader`'s time-critical pieces, most urgent first (see [`Picker::set_deadlines`]).
    pub fn set_deadlines(&mut self, reader: u64, pieces: Vec<PieceIndex>) {
        self.picker.set_deadlines(reader, pieces);
        self.fill_all();
    }

    /// Picks pieces in order instead of rarest first.
    pub fn set_sequential(&mut self, on: bool) {
        self.picker.set_sequential(on);
    }

    /// Changes the number of regular upload slots.
    pub fn set_upload_slots(&mut self, slots: usize) {
        self.config.upload_slots = slots;
    }

    /// Changes the connection limit.
    pub fn set_max_peers(&mut self, max: usize) {
        self.config.max_peers = max;
    }

    /// The verified pieces.
    pub fn have(&self) -> &Bitfield {
        self.picker.have()
    }

    /// The picker, to read (priorities, bytes left, deadlines).
    pub fn picker(&self) -> &Picker {
        &self.picker
    }

    /// Whether every wanted piece is verified.
    pub fn is_complete(&self) -> bool {
        self.completed
    }

    /// The configuration the core runs with.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Totals.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every connection, by key.
    pub fn peers(&self) -> Vec<PeerSnapshot> {
        self.peers
            .keys()
            .filter_map(|k| self.peer(PeerKey(*k)))
            .collect()
    }

    /// Connections in the table.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// One connection, if the core knows it.
    pub fn peer(&self, key: PeerKey) -> Option<PeerSnapshot> {
        let p = self.peers.get(&key.0)?;
        Some(PeerSnapshot {
            key,
            addr: p.addr,
            incoming: p.incoming,
            downloaded: p.downloaded,
            uploaded: p.uploaded,
            rate_down: p.rate_down,
            rate_up: p.rate_up,
            client: p.client.clone(),
            unchoked: !p.conn.am_choking,
            optimistic: p.optimistic,
            interested: p.conn.peer_interested,
            am_interested: p.conn.am_interested,
            peer_choking: p.conn.peer_choking,
            stalled: p.stalled.is_some(),
            snubbed: p.snubbed,
            misuse: p.misuse,
            outstanding: p.outstanding.len(),
            queue_target: p.queue_target,
            uploads_pending: p.uploads.len(),
            pieces: p.bitfield.count(),
        })
    }

    /// Whether the peer negotiated the fast extension (BEP 6).
    pub fn peer_fast(&self, key: PeerKey) -> bool {
        self.peers.get(&key.0).is_some_and(|p| p.conn.fast())
    }

    /// Whether `ip` is banned.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.banned.contains(&ip)
    }

    /// IPs banned.
    pub fn banned_count(&self) -> usize {
        self.banned.len()
    }

    /// Addresses waiting to be dialled, oldest first.
    pub fn known(&self) -> impl Iterator<Item = &SocketAddr> {
        self.known.iter()
    }

    /// Addresses connected or being dialled.
    pub fn connected_count(&self) -> usize {
        self.connected.len()
    }

    // ----- inside -----

    fn send(&mut self, key: u64, message: Message) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.last_sent = self.now;
        }
        self.actions.push_back(Action::Send {
            peer: PeerKey(key),
            message,
        });
    }

    fn fill_all(&mut self) {
        self.to_fill.extend(self.peers.keys().copied());
    }

    fn queue_known(&mut self, addr: SocketAddr) {
        if self.known.contains(&addr) {
            return;
        }
        if self.known.len() >= self.config.limits.max_known {
            self.known.pop_front();
        }
        self.known.push_back(addr);
    }

    /// Dials queued addresses while connections (dials in flight count too) stay under the limit.
    fn dial(&mut self) {
        if self.stopped {
            return;
        }
        while self.peers.len().max(self.connected.len()) < self.config.max_peers {
            let Some(addr) = self.known.pop_front() else {
                break;
            };
            if self.is_connected_to(addr) {
                continue;
            }
            self.connected.insert(addr);
            self.actions.push_back(Action::Connect { addr });
        }
    }

    /// Whether `addr` is dialled or connected already, as the address of a connection or the listen
    /// address a peer that dialled us gave: dialling that peer again would make a second connection.
    fn is_connected_to(&self, addr: SocketAddr) -> bool {
        self.connected.contains(&addr) || self.peers.values().any(|p| p.listen == Some(addr))
    }

    /// Takes a peer out of the table (its connection told to end when `reason` is given), gives its
    /// requests back to the picker and its upload slot away.
    fn remove_peer(&mut self, key: u64, reason: Option<DisconnectReason>) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        for b in &p.outstanding {
            self.picker.abandoned(b);
        }
        self.picker.peer_gone(&p.bitfield);
        // A duplicate being dropped leaves the address connected.
        if !self.peers.values().any(|q| q.addr == p.addr) {
            self.connected.remove(&p.addr);
        }
        self.punches.relay_gone(key);
        self.to_fill.remove(&key);
        self.hungry.remove(&key);
        if p.their_ut_pex.is_some() && p.next_pex.is_some() {
            self.refresh_pex_due();
        }
        if !p.outstanding.is_empty() {
            self.reopened();
        }
        if let Some(reason) = reason {
            self.actions.push_back(Action::Disconnect {
                peer: PeerKey(key),
                reason,
            });
        }
        if !p.conn.am_choking {
            self.fill_free_slot(None);
        }
        self.dial();
    }

    fn on_wire_event(&mut self, key: u64, event: Event) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let pieces = p.bitfield.len();
        match event {
            Event::KeepAlive | Event::DhtPort(_) | Event::AllowedFast(_) => {}
            Event::Suggest(i) => {
                if self.picker.would_start(i) && !p.suggested.contains(&i) {
                    if p.suggested.len() >= MAX_SUGGESTED {
                        p.suggested.remove(0);
                    }
                    p.suggested.push(i);
                    self.to_fill.insert(key);
                }
            }
            Event::Extended { id: 0, payload } => {
                let Ok(theirs) = ExtensionHandshake::decode(&payload) else {
                    self.remove_peer(key, Some(DisconnectReason::BadExtension));
                    return;
                };
                p.their_ut_metadata = theirs.id_of("ut_metadata");
                if let Some(name) = theirs.client.as_deref().and_then(client_name) {
                    p.client = Some(name);
                }
                if self.config.uses_pex() {
                    p.their_ut_pex = theirs.id_of("ut_pex");
                    p.their_ut_holepunch = theirs.id_of("ut_holepunch");
                    // A first exchange soon after connecting, then at most once a minute (BEP 11).
                    p.next_pex = Some(now + self.config.limits.pex_first);
                    let due = now + self.config.limits.pex_first;
                    if p.their_ut_pex.is_some() && self.pex_due.is_none_or(|d| due < d) {
                        self.pex_due = Some(due);
                    }
                }
                if let Some(port) = theirs.listen_port {
                    p.listen = Some(SocketAddr::new(p.addr.ip(), port));
                }
                if let Some(ip) = theirs.your_ip {
                    let voter = p.addr.ip();
                    self.actions.push_back(Action::SeenAs { voter, ip });
                }
            }
            Event::Extended { id, payload } if id == UT_PEX_ID => {
                let gap = self.config.limits.pex_min_gap;
                // One ignored does not restart the wait.
                let admit = self.config.uses_pex()
                    && p.pex_in
                        .is_none_or(|last| now.saturating_duration_since(last) >= gap);
                if admit {
                    p.pex_in = Some(now);
                    if let Ok(pex) = wire::PexMessage::decode(&payload) {
                        // The decoder caps added and added6 together already; this cap holds even if
                        // it changes, as BEP 11's 50 per message is what bounds our dialing queue.
                        let cap = self.config.limits.max_seed_addrs;
                        for (i, a) in pex.added.iter().enumerate().take(wire::MAX_PEX_PEERS) {
                            if pex.flags_of(i) & wire::PEX_SEED != 0 {
                                self.seeds.insert(*a, cap);
                            }
                        }
                        let added: Vec<SocketAddr> =
                            pex.added.into_iter().take(wire::MAX_PEX_PEERS).collect();
                        // The sender is connected to what it lists: the one to ask for an
                        // introduction if we cannot reach them (the holepunch flag is not required,
                        // as a relay says so itself if that peer cannot take one).
                        for a in &added {
                            self.punches.learned(*a, key);
                        }
                        for d in pex.dropped.iter().take(wire::MAX_PEX_PEERS) {
                            self.punches.dropped(*d, key);
                        }
                        self.add_addresses(added, now);
                    }
                }
            }
            Event::Extended { id, payload } if id == UT_HOLEPUNCH_ID && self.config.uses_pex() => {
                // One we cannot read is ignored, as libtorrent does: clients differ in the details.
                if let Ok(message) = wire::HolepunchMessage::decode(&payload) {
                    self.on_holepunch(key, message);
                }
            }
            Event::Extended { id, payload } if Some(id) == self.config.extension.ut_metadata => {
                if let (Ok(wire::MetadataMessage::Request { piece }), Some(reply_id)) =
                    (wire::MetadataMessage::decode(&payload), p.their_ut_metadata)
                {
                    self.actions.push_back(Action::ServeMetadata {
                        peer: PeerKey(key),
                        reply_id,
                        piece,
                    });
                }
            }
            Event::Extended { .. } => {}
            Event::HashRequest(range) => self.actions.push_back(Action::ServeHashes {
                peer: PeerKey(key),
                range,
            }),
            // We only ask for hashes while fetching a magnet link's metadata.
            Event::Hashes { .. } | Event::HashReject(_) => {}
            Event::Bitfield(bits) => {
                self.set_peer_bits(key, Bitfield::from_bytes(&bits, pieces));
                self.update_interest(key);
                self.to_fill.insert(key);
            }
            Event::HaveAll => {
                self.set_peer_bits(key, Bitfield::full(pieces));
                self.update_interest(key);
                self.to_fill.insert(key);
            }
            Event::HaveNone => self.set_peer_bits(key, Bitfield::new(pieces)),
            Event::Have(i) => {
                if p.bitfield.set(i.get()) {
                    self.picker.peer_has(i);
                    if wants(&self.picker, i) {
                        p.wanted += 1;
                        // Only a piece we would start can give it more to pick.
                        if self.picker.would_start(i) {
                            self.to_fill.insert(key);
                        }
                    }
                }
                let interested = p.conn.am_interested;
                if let Some(at) = p.offered.iter().position(|&o| o == i) {
                    // It got a piece we suggested elsewhere: suggest another.
                    p.offered.swap_remove(at);
                    self.suggest_to(key);
                }
                if !interested {
                    self.update_interest(key);
                }
            }
            Event::Choked => {
                // Requests are void after a choke unless the fast extension will reject them one by one.
                if !p.conn.fast() {
                    self.abandon_all(key);
                }
                self.hungry.remove(&key);
            }
            Event::Unchoked => {
                p.snubbed = false;
                p.last_block = now;
                self.to_fill.insert(key);
            }
            Event::Interested => self.fill_free_slot(None),
            Event::NotInterested => {}
            Event::Block { index, begin, data } => {
                let block = BlockRef {
                    index,
                    begin,
                    length: data.len() as u32,
                };
                if p.outstanding.remove(&block) {
                    p.last_block = now;
                    p.snubbed = false;
                    p.received_since_tick += data.len() as u64;
                    p.downloaded += data.len() as u64;
                    let ip = p.addr.ip();
                    self.to_fill.insert(key);
                    self.block_received(key, ip, block, data);
                }
            }
            Event::Rejected(b) => {
                if p.outstanding.remove(&b) {
                    self.picker.abandoned(&b);
                    self.to_fill.insert(key);
                    self.reopened();
                }
            }
            Event::Request(b) => {
                if let Some(at) = p.offered.iter().position(|&o| o == b.index) {
                    // It took up a suggestion: the next piece makes up for it.
                    p.offered.swap_remove(at);
                }
                self.suggest_to(key);
                self.serve(key, b);
            }
            Event::RequestWhileChoked(b) => {
                if self.refuse(key) {
                    return;
                }
                if self.peer_fast(PeerKey(key)) {
                    self.send(key, Message::Reject(b));
                }
            }
            Event::Cancel(b) => {
                // Too late if the writer has committed the piece: then the piece is the answer.
                if p.uploads.take(&b) {
                    let fast = p.conn.fast();
                    self.actions.push_back(Action::CancelRead {
                        peer: PeerKey(key),
                        block: b,
                    });
                    if fast {
                        self.send(key, Message::Reject(b));
                    }
                }
            }
        }
    }

    fn set_peer_bits(&mut self, key: u64, bits: Bitfield) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        self.picker.peer_gone(&p.bitfield);
        self.picker.peer_has_all(&bits);
        p.wanted = wanted_from(&self.picker, &bits);
        if !bits.is_complete() {
            // Whoever is at a marked address now lacks pieces: a seed that left, a new peer there.
            if !p.incoming {
                self.seeds.remove(&p.addr);
            }
            if let Some(listen) = p.listen {
                self.seeds.remove(&listen);
            }
        }
        p.bitfield = bits;
    }

    /// Ends a connection where both sides are seeds, and marks the peer's address a seed so it is not
    /// dialled again while we seed (peer exchange and the tracker keep naming it).
    fn both_seeds(&mut self, key: u64) {
        if let Some(p) = self.peers.get(&key) {
            let cap = self.config.limits.max_seed_addrs;
            // An incoming peer's address has its ephemeral port; the one to dial is its listen port.
            let (addr, listen) = (p.addr, p.listen);
            if !p.incoming {
                self.seeds.insert(addr, cap);
            }
            if let Some(listen) = listen {
                self.seeds.insert(listen, cap);
            }
            self.known.retain(|a| *a != addr && Some(*a) != listen);
        }
        self.remove_peer(key, Some(DisconnectReason::BothSeeds));
    }

    /// Declares interest when the peer has a piece we want, withdraws it when not; ends the connection
    /// when both sides are seeds.
    fn update_interest(&mut self, key: u64) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.bitfield.is_complete() && self.completed {
            self.both_seeds(key);
            return;
        }
        if self.wanted_stale {
            self.wanted_stale = false;
            for p in self.peers.values_mut() {
                p.wanted = wanted_from(&self.picker, &p.bitfield);
            }
        }
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if let Some(m) = p.conn.set_interested(p.wanted > 0) {
            if p.conn.am_interested {
                self.to_fill.insert(key);
            }
            self.send(key, m);
        }
    }

    fn abandon_all(&mut self, key: u64) {
        if let Some(p) = self.peers.get_mut(&key) {
            let any = !p.outstanding.is_empty();
            for b in p.outstanding.drain() {
                self.picker.abandoned(&b);
            }
            if any {
                self.reopened();
            }
        }
    }

    /// Requested blocks opened up again: peers that had nothing left to pick may now.
    fn reopened(&mut self) {
        self.to_fill.extend(self.hungry.iter().copied());
    }

    /// Tops the peer's requests up to its queue target (one while it snubs us).
    fn request_more(&mut self, key: u64) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.conn.peer_choking || !p.conn.am_interested {
            self.hungry.remove(&key);
            return;
        }
        let target = if p.snubbed { 1 } else { p.queue_target };
        if p.outstanding.len() >= target {
            self.hungry.remove(&key);
            return;
        }
        let mut picked = Vec::new();
        self.picker.pick(
            &p.bitfield,
            &p.suggested,
            target - p.outstanding.len(),
            &mut picked,
        );
        if !p.suggested.is_empty() {
            let picker = &self.picker;
            p.suggested.retain(|&i| picker.would_start(i));
        }
        if picked.is_empty() && p.outstanding.is_empty() {
            picked.extend(self.picker.pick_duplicate(&p.bitfield));
        }
        // A block the picker hands back already asked of this very peer was counted as a second
        // request, which is undone.
        let picker = &mut self.picker;
        picked.retain(|b| {
            let new = p.outstanding.insert(*b);
            if !new {
                picker.abandoned(b);
            }
            new
        });
        if p.outstanding.len() < target {
            self.hungry.insert(key);
        } else {
            self.hungry.remove(&key);
        }
        for b in picked {
            self.send(key, Message::Request(b));
        }
    }

    fn block_received(&mut self, key: u64, from: IpAddr, block: BlockRef, data: Bytes) {
        let outcome = self.picker.received(&block);
        if outcome == Received::Unexpected {
            // Unrequested, duplicate (endgame) or malformed: the first good copy counts.
            return;
        }
        if self.picker.last_was_duplicated() {
            let others: Vec<u64> = self
                .peers
                .iter_mut()
                .filter_map(|(k, p)| (*k != key && p.outstanding.remove(&block)).then_some(*k))
                .collect();
            for k in others {
                self.send(k, Message::Cancel(block));
                self.to_fill.insert(k);
            }
        }
        let contributors = self.contributors.entry(block.index).or_default();
        if !contributors.contains(&from) {
            contributors.push(from);
        }
        self.stats.downloaded += u64::from(block.length);
        self.actions.push_back(Action::StoreBlock {
            peer: PeerKey(key),
            block,
            data,
        });
        if outcome == Received::PieceComplete {
            self.actions
                .push_back(Action::VerifyPiece { piece: block.index });
        }
    }

    /// Answers a request from a verified piece (`ReadBlock`), or refuses it.
    fn serve(&mut self, key: u64, b: BlockRef) {
        let size = self
            .config
            .piece_sizes
            .get(b.index.as_usize())
            .copied()
            .unwrap_or(0);
        let limit = if self.config.full_tail_requests {
            self.piece_length
        } else {
            size
        };
        let in_range = size > 0 && u64::from(b.begin) + u64::from(b.length) <= u64::from(limit);
        let have = self.picker.have().get(b.index.get());
        let limits = &self.config.limits;
        let (max, max_bytes) = (limits.max_peer_requests, limits.max_peer_queued_bytes);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let fast = p.conn.fast();
        let accepted = if have && in_range {
            p.uploads.accept(b, max, max_bytes)
        } else {
            Accepted::Duplicate
        };
        match accepted {
            Accepted::Yes => self.actions.push_back(Action::ReadBlock {
                peer: PeerKey(key),
                block: b,
            }),
            _ if self.refuse(key) => {}
            Accepted::Full if !fast => {
                // No way to refuse one request: choking voids them all, and the choker may unchoke the
                // peer again later.
                self.choke_and_refill(key);
            }
            Accepted::Full | Accepted::Duplicate => {
                if fast {
                    self.send(key, Message::Reject(b));
                }
            }
        }
    }

    /// Counts a refused request; `true` (and the peer dropped) once it is flooding.
    fn refuse(&mut self, key: u64) -> bool {
        let limits = &self.config.limits;
        let (most, fewest) = (limits.max_refused_requests, limits.min_refused_requests);
        let Some(p) = self.peers.get_mut(&key) else {
            return true;
        };
        p.refused += 1;
        let misuse = p.misuse.min(16);
        let max = *p
            .max_refused
            .get_or_insert_with(|| (most >> misuse).max(fewest));
        if p.refused > max {
            let refused = p.refused;
            self.note_misuse(key);
            self.remove_peer(key, Some(DisconnectReason::Flooding(refused)));
            return true;
        }
        false
    }

    /// Puts one more misuse on the record of the peer's IP (and the peer's own).
    fn note_misuse(&mut self, key: u64) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        p.misuse = p.misuse.saturating_add(1);
        let ip = p.addr.ip();
        if self.misuse.len() >= self.config.limits.max_misuse_records
            && !self.misuse.contains_key(&ip)
        {
            self.misuse.clear();
        }
        let n = self.misuse.entry(ip).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// Chokes the peer: its pending requests are void (BEP 3), or each rejected under BEP 6.
    fn choke(&mut self, key: u64) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        p.optimistic = false;
        let Some(m) = p.conn.set_choking(true) else {
            return;
        };
        p.offered.clear();
        // Taken back before the choke is queued, so no piece can follow it.
        let dropped = p.uploads.take_all();
        let fast = p.conn.fast();
        for b in &dropped {
            self.actions.push_back(Action::CancelRead {
                peer: PeerKey(key),
                block: *b,
            });
        }
        self.send(key, m);
        if fast {
            for b in dropped {
                self.send(key, Message::Reject(b));
            }
        }
    }

    fn unchoke(&mut self, key: u64) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if let Some(m) = p.conn.set_choking(false) {
            p.refused = 0;
            p.last_upload = now;
            p.turns += 1;
            // Suggestions first, so the peer's first requests already follow them.
            for _ in 0..self.config.suggest.min(MAX_SUGGESTED) {
                self.suggest_to(key);
            }
            self.send(key, m);
        }
    }

    /// While we seed: suggests to an unchoked peer with the fast extension a piece it lacks that we have
    /// given out least (`Suggester`), so our upload goes to first copies. At most `CoreConfig::suggest`
    /// are open per peer; each one it takes up or gets elsewhere makes room for the next, and a choke
    /// withdraws them.
    fn suggest_to(&mut self, key: u64) {
        let n = self.config.piece_sizes.len();
        let want = self.config.suggest.min(MAX_SUGGESTED);
        if want == 0 || n == 0 || !self.picker.have().is_complete() {
            return;
        }
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        if p.conn.am_choking || !p.conn.fast() || p.offered.len() >= want {
            return;
        }
        let suggester = self
            .suggester
            .get_or_insert_with(|| Suggester::new(&self.config.piece_sizes, self.config.seed));
        let Some(piece) = suggester.next(&p.bitfield, &p.offered) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&key) {
            p.offered.push(piece);
        }
        self.send(key, Message::Suggest(piece));
    }

    /// Chokes a peer (a slow reader, or one over its request cap without the fast extension) and gives
    /// its slot away.
    fn choke_and_refill(&mut self, key: u64) {
        self.choke(key);
        // Not to the same peer: the choke is what voids its requests, and an unchoke right after would
        // let it fill its queue again at once. A later pass may unchoke it again.
        self.fill_free_slot(Some(key));
    }

    /// A peer's socket stopped taking data or drained again: a stalled peer gives its upload slot to
    /// an interested peer waiting for one.
    fn set_stalled(&mut self, key: u64, stalled: bool) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.stalled.is_some() == stalled {
            return;
        }
        p.stalled = stalled.then_some(now);
        if stalled {
            if !p.conn.am_choking {
                // It held a slot and stopped reading.
                self.note_misuse(key);
            }
            self.fill_free_slot(None);
        }
    }

    /// Unchokes one interested, choked peer that is not stalled if fewer than the slots (regular and
    /// optimistic) are held: of those with the least misuse on record (stalling a slot, flooding
    /// requests), one of those that have had the fewest turns, so an honest newcomer goes before peers
    /// that misused a slot or had one and did not use it.
    ///
    /// When every slot is held, a waiting peer with less misuse than a holder takes that holder's slot:
    /// a peer with misuse on record keeps a slot only while no cleaner peer waits.
    fn fill_free_slot(&mut self, except: Option<u64>) {
        let slots = self.config.upload_slots + 1;
        let (now, idle) = (self.now, self.config.limits.slot_idle);
        let Some(best) = self
            .peers
            .iter()
            .filter(|(k, p)| p.waiting() && Some(**k) != except)
            .map(|(_, p)| p)
            .map(|p| (p.misuse, p.turns))
            .min()
        else {
            return;
        };
        let held = self
            .peers
            .values()
            .filter(|p| p.holds_slot(now, idle))
            .count();
        if held >= slots {
            let worst = self
                .peers
                .iter()
                .filter(|(_, p)| p.holds_slot(now, idle) && p.misuse > best.0)
                .max_by_key(|(k, p)| (p.misuse, **k))
                .map(|(k, _)| *k);
            let Some(worst) = worst else {
                return;
            };
            self.choke(worst);
        }
        let waiting: Vec<u64> = self
            .peers
            .iter()
            .filter(|(k, p)| p.waiting() && (p.misuse, p.turns) == best && Some(**k) != except)
            .map(|(k, _)| *k)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let pick = waiting[self.rng.below(waiting.len())];
        self.unchoke(pick);
    }

    /// One choker round: the best `upload_slots` interested peers (by what they give us while we
    /// download, by what we give them while we seed) plus one optimistic unchoke, rotated every
    /// `optimistic_interval` over the choked interested peers at random.
    fn choke_round(&mut self) {
        let now = self.now;
        let elapsed = now
            .saturating_duration_since(self.last_choke)
            .as_secs_f64()
            .max(1e-3);
        self.last_choke = now;
        self.stats.choke_rounds += 1;
        let seeding = self.picker.done();
        for p in self.peers.values_mut() {
            p.rate_down = (p.downloaded - p.down_mark) as f64 / elapsed;
            p.rate_up = (p.uploaded - p.up_mark) as f64 / elapsed;
            p.down_mark = p.downloaded;
            p.up_mark = p.uploaded;
        }
        if now.saturating_duration_since(self.last_optimistic) >= self.config.optimistic_interval {
            self.turnover();
        }
        // Peers with less misuse on record first, then by rate.
        let mut candidates: Vec<(u64, u32, f64)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.conn.peer_interested && p.stalled.is_none())
            .map(|(k, p)| (*k, p.misuse, if seeding { p.rate_up } else { p.rate_down }))
            .collect();
        candidates.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
        let cleanest = candidates.first().map_or(0, |c| c.1);
        let regular: BTreeSet<u64> = candidates
            .iter()
            .take(self.config.upload_slots)
            .map(|c| c.0)
            .collect();
        let rotate =
            now.saturating_duration_since(self.last_optimistic) >= self.config.optimistic_interval;
        let mut optimistic: Option<u64> = self
            .peers
            .iter()
            .find(|(k, p)| {
                p.optimistic
                    && p.conn.peer_interested
                    && p.stalled.is_none()
                    && !regular.contains(k)
            })
            .map(|(k, _)| *k);
        if rotate || optimistic.is_none() {
            let others: Vec<u64> = candidates
                .iter()
                .filter(|c| c.1 == cleanest)
                .map(|c| c.0)
                .filter(|k| !regular.contains(k) && Some(*k) != optimistic)
                .collect();
            if !others.is_empty() {
                optimistic = Some(others[self.rng.below(others.len())]);
                self.last_optimistic = now;
            }
        }
        let keys: Vec<u64> = self.peers.keys().copied().collect();
        for k in keys {
            if regular.contains(&k) || Some(k) == optimistic {
                self.unchoke(k);
            } else {
                self.choke(k);
            }
            if let Some(p) = self.peers.get_mut(&k) {
                p.optimistic = Some(k) == optimistic;
            }
        }
    }

    /// Peer turnover, at each optimistic rotation: with the table full and others waiting (addresses to
    /// dial, or connections turned away for a full table since the last rotation), the
    /// peers that exchanged least with us over the last round, then over the connection, make room for
    /// new connections, `max_peers / 25` at a time (4 %, as libtorrent's `peer_turnover`); never one
    /// that holds one of our slots, has our requests, or is a seed while we download. Without it, the first peers of a swarm fill each other's tables
    /// and everyone who comes later is turned away from them, and from the seed, until they finish.
    fn turnover(&mut self) {
        let max = self.config.max_peers;
        // Peers we turned away for a full table wait as much as addresses we know: in a flash crowd
        // the first arrivals fill each other's tables, learn of nobody new (their peer exchanges
        // name one another), and would otherwise turn every later arrival away until they finish.
        let waiting = !self.known.is_empty() || self.turned_away;
        self.turned_away = false;
        if self.peers.len() < max || !waiting {
            return;
        }
        let (now, min_age) = (self.now, self.config.optimistic_interval);
        let downloading = !self.completed;
        let mut idle: Vec<(f64, u64, u64)> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.conn.am_choking
                    && p.outstanding.is_empty()
                    && !(downloading && p.bitfield.is_complete())
                    && now.saturating_duration_since(p.since) >= min_age
            })
            .map(|(k, p)| (p.rate_down + p.rate_up, p.downloaded + p.uploaded, *k))
            .collect();
        idle.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for (_, _, k) in idle.into_iter().take((max / 25).max(1)) {
            self.remove_peer(k, Some(DisconnectReason::Turnover));
        }
    }

    /// Per-peer upkeep, once a `tick`.
    fn tick(&mut self) {
        let now = self.now;
        let elapsed = now
            .saturating_duration_since(self.last_tick)
            .as_secs_f64()
            .max(1e-3);
        self.last_tick = now;
        if now >= self.next_misuse_fade {
            self.misuse.retain(|_, n| {
                *n /= 2;
                *n > 0
            });
            self.next_misuse_fade = now + self.config.limits.misuse_half_life;
        }
        let limits = self.config.limits.clone();
        let block = f64::from(self.config.block_size.max(1));
        let keys: Vec<u64> = self.peers.keys().copied().collect();
        for k in keys {
            let Some(p) = self.peers.get_mut(&k) else {
                continue;
            };
            if now.saturating_duration_since(p.last_received) > limits.idle_timeout {
                self.remove_peer(k, Some(DisconnectReason::Idle));
                continue;
            }
            if now.saturating_duration_since(p.last_sent) > limits.keepalive {
                self.send(k, Message::KeepAlive);
            }
            let Some(p) = self.peers.get_mut(&k) else {
                continue;
            };
            if p.bitfield.is_complete() && self.completed {
                self.both_seeds(k);
                continue;
            }
            // The request queue holds about two seconds of this peer's rate (the bandwidth-delay
            // product with room to spare).
            let rate = p.received_since_tick as f64 / elapsed;
            p.received_since_tick = 0;
            p.queue_target = ((rate * limits.queue_seconds / block) as usize)
                .clamp(limits.min_queue, limits.max_queue);
            if !p.outstanding.is_empty()
                && now.saturating_duration_since(p.last_block) > limits.snub_timeout
            {
                p.snubbed = true;
                self.abandon_all(k);
            }
            let Some(p) = self.peers.get(&k) else {
                continue;
            };
            if p.stalled
                .is_some_and(|since| now.saturating_duration_since(since) >= limits.stall_choke)
                && !p.conn.am_choking
            {
                self.choke_and_refill(k);
            }
            self.to_fill.insert(k);
        }
    }

    /// A `ut_holepunch` message (BEP 55), from a peer that said it speaks it. As the relay, a
    /// rendezvous is answered with a `Connect` to each side or an error; as a side, a `Connect` has
    /// the address dialled at once, since the other side is dialling us now. Both count against the
    /// sender's budget of rendezvous.
    fn on_holepunch(&mut self, key: u64, message: wire::HolepunchMessage) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(reply_id) = p.their_ut_holepunch else {
            return;
        };
        if !p.rendezvous.take(now) {
            return;
        }
        let (relay_addr, requester) = (p.addr, p.listen.unwrap_or(p.addr));
        let relay_ip = relay_addr.ip();
        let asked = message.addr;
        match message.kind {
            wire::HolepunchKind::Rendezvous => {
                let found = self
                    .peers
                    .iter()
                    .find(|(_, q)| q.addr == asked || q.listen == Some(asked))
                    .map(|(k, q)| (*k, q.their_ut_holepunch));
                let target = found.map(|(k, id)| holepunch::Target {
                    addr: asked,
                    speaks_holepunch: id.is_some(),
                    is_requester: k == key,
                });
                let reply = |kind, addr| Message::Extended {
                    id: reply_id,
                    payload: wire::HolepunchMessage { kind, addr }.encode().into(),
                };
                match holepunch::answer(requester, asked, target) {
                    Answer::Introduce {
                        requester_to,
                        target_to,
                    } => {
                        let Some((target_key, Some(target_id))) = found else {
                            return;
                        };
                        self.send(key, reply(wire::HolepunchKind::Connect, requester_to));
                        let to_target = wire::HolepunchMessage {
                            kind: wire::HolepunchKind::Connect,
                            addr: target_to,
                        };
                        self.send(
                            target_key,
                            Message::Extended {
                                id: target_id,
                                payload: to_target.encode().into(),
                            },
                        );
                        self.stats.introductions += 1;
                        self.actions.push_back(Action::Introduced {
                            requester: target_to,
                            target: requester_to,
                        });
                    }
                    Answer::Refuse(e) => {
                        self.send(key, reply(wire::HolepunchKind::Error(e), asked))
                    }
                    Answer::Ignore => {}
                }
            }
            wire::HolepunchKind::Connect => {
                let ours = Some(asked) == self.config.listen;
                if holepunch::may_dial(relay_ip, asked)
                    && !ours
                    && !self.banned.contains(&asked.ip())
                    && !self.connected.contains(&asked)
                {
                    self.punches.told(asked, now);
                    self.actions.push_back(Action::Punch {
                        target: asked,
                        step: PunchStep::Told { relay: relay_addr },
                    });
                    self.known.retain(|a| *a != asked);
                    self.known.push_front(asked);
                    self.dial();
                }
            }
            wire::HolepunchKind::Error(error) => {
                self.punches.refused(asked, now);
                self.actions.push_back(Action::Punch {
                    target: asked,
                    step: PunchStep::Refused {
                        relay: relay_addr,
                        error,
                    },
                });
            }
        }
    }

    /// The earliest peer exchange due.
    fn next_pex_due(&self) -> Option<Instant> {
        self.pex_due
    }

    /// Recomputes the earliest peer exchange due, after a peer's changed or it left.
    fn refresh_pex_due(&mut self) {
        self.pex_due = self
            .peers
            .values()
            .filter(|p| p.their_ut_pex.is_some())
            .filter_map(|p| p.next_pex)
            .min();
    }

    /// Tells the peer which peers we are connected to now and which we dropped (BEP 11), when due.
    fn maybe_pex(&mut self, key: u64) {
        let now = self.now;
        let interval = self.config.limits.pex_interval;
        // Every peer is asked when any one is due: only a due one pays for the list below.
        let due = self
            .peers
            .get(&key)
            .is_some_and(|p| p.their_ut_pex.is_some() && p.next_pex.is_some_and(|d| now >= d));
        if !due {
            return;
        }
        // Each listen address with the flags BEP 11 lets us claim for it: a seed, and one that takes
        // introductions (BEP 55), so a peer that cannot reach it may ask us for one.
        let listens: BTreeMap<SocketAddr, u8> = self
            .peers
            .iter()
            .filter(|(k, _)| **k != key)
            .filter_map(|(_, p)| {
                let mut flags = 0;
                if p.their_ut_holepunch.is_some() {
                    flags |= wire::PEX_HOLEPUNCH;
                }
                if p.bitfield.is_complete() {
                    flags |= wire::PEX_SEED;
                }
                Some((p.listen?, flags))
            })
            .collect();
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let (Some(id), Some(due)) = (p.their_ut_pex, p.next_pex) else {
            return;
        };
        if now < due {
            return;
        }
        p.next_pex = Some(now + interval);
        // A peer told of as a downloader that has finished since is named again with the seed flag:
        // seeds that learn it do not dial it, which is most of what finished peers dialled before.
        let added: Vec<SocketAddr> = listens
            .iter()
            .filter(|(a, f)| match p.pex_told.get(a) {
                None => true,
                Some(&as_seed) => !as_seed && **f & wire::PEX_SEED != 0,
            })
            .map(|(a, _)| *a)
            .take(wire::MAX_PEX_PEERS)
            .collect();
        let message = wire::PexMessage {
            added_flags: added.iter().map(|a| listens[a]).collect(),
            added,
            dropped: p
                .pex_told
                .keys()
                .filter(|a| !listens.contains_key(a))
                .copied()
                .take(wire::MAX_PEX_PEERS)
                .collect(),
        };
        if message.added.is_empty() && message.dropped.is_empty() {
            return;
        }
        for (a, f) in message.added.iter().zip(&message.added_flags) {
            p.pex_told.insert(*a, f & wire::PEX_SEED != 0);
        }
        for d in &message.dropped {
            p.pex_told.remove(d);
        }
        self.stats.pex_sent += 1;
        self.send(
            key,
            Message::Extended {
                id,
                payload: message.encode().into(),
            },
        );
    }
}

/// Whether the client a peer id names settles two connections between the same pair by the
/// listen-port rule ([`TorrentCore::add_peer`]): libtorrent (`-LT`), qBittorrent (`-qB`) and Deluge
/// (`-DE`), which are built on it, and Spore (`-SO`).
fn settles_duplicates_by_port(id: &wire::PeerId) -> bool {
    let id = &id.0;
    id[0] == b'-' && matches!(&id[1..3], b"LT" | b"qB" | b"DE" | b"SO")
}
