//! One torrent: recheck, the shared download/upload state, the listener, the tracker loop, the choker, and
//! piece verification.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ids::{InfoHash, PeerId};
use metainfo::Torrent;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};
use tracker_proto::{Announce, Event as TrackerEvent};
use wire::Message;

use crate::bitfield::Bitfield;
use crate::picker::{Picker, Received};
use crate::rate::Limiter;
use crate::storage::{piece_matches, DiskError, Storage};

/// What to download and how.
#[derive(Debug, Clone)]
pub struct TorrentConfig {
    pub torrent: Arc<Torrent>,
    /// Downloaded files go below this directory (at their torrent paths).
    pub download_dir: PathBuf,
    /// Address to accept peers on (port 0 picks one). Outgoing connections and tracker requests are sent
    /// from its IP when it is not unspecified.
    pub listen: SocketAddr,
    /// Peers to connect to directly.
    pub peers: Vec<SocketAddr>,
    /// Which files to download (`None`: all).
    pub selected_files: Option<Vec<bool>>,
    /// Per file, how urgent among the selected ones: `PRIORITY_LOW`, `_NORMAL` (the default) or `_HIGH`.
    /// The picker takes every wanted piece of a higher priority first.
    pub file_priorities: Option<Vec<u8>>,
    pub sequential: bool,
    /// Whether to use the torrent's trackers.
    pub use_trackers: bool,
    /// Connections to peers, established or being dialled.
    pub max_peers: usize,
    /// Caps on incoming connections that have not sent their handshake yet (on our own listener; a
    /// `Session` has its own).
    pub handshake: crate::conns::HandshakeLimits,
    pub upload_slots: usize,
    pub peer_id: PeerId,
    /// Bytes per second; `None` is unlimited.
    pub max_upload_rate: Option<u64>,
    pub max_download_rate: Option<u64>,
    /// A DHT node to find and announce peers through (never used for private torrents).
    pub dht: Option<crate::dht::DhtNode>,
    /// Peer exchange (BEP 11; never for private torrents).
    pub pex: bool,
    /// Limits shared with other torrents (a daemon's global rates), on top of this torrent's own.
    pub global_upload: Option<Arc<Limiter>>,
    pub global_download: Option<Arc<Limiter>>,
    /// A cap on connections shared with other torrents (a daemon's global peer limit).
    pub peer_budget: Option<Arc<PeerBudget>>,
    /// What a previous session knew, to start without rehashing everything.
    pub resume: Option<Resume>,
    /// Accept no connections of our own: a `Session` owns the listening socket at this address and
    /// hands us the peers that ask for this torrent.
    pub session_listener: Option<SocketAddr>,
    /// Local service discovery (BEP 14; never for private torrents) through this multicast group.
    pub lsd: bool,
    pub lsd_group: SocketAddr,
    /// The announce list to use instead of the torrent's own (`None`: the torrent's).
    pub trackers: Option<Vec<Vec<String>>>,
    /// Per file, the path components below `download_dir` where its data lives, when they differ from
    /// the torrent's own paths (a renamed file or folder). Each component must be a valid file name
    /// (`metainfo::validate_component`: no `..`, no separators), so every path stays inside the
    /// directory; the storage opens them through `metainfo::beneath` like the torrent's own.
    pub file_paths: Option<Vec<Vec<String>>>,
}

/// The last announce to one tracker, as a status view shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// When the last announce finished.
    pub last_announce: Option<SystemTime>,
    /// `Ok(())`, or why it failed.
    pub result: Option<Result<(), String>>,
    /// Peers, seeders and leechers the last successful reply gave (its `complete`/`incomplete`).
    pub peers: usize,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    /// When the next regular announce is due.
    pub next_announce: Option<SystemTime>,
    /// An announce to it is under way.
    pub announcing: bool,
}

/// Connections allowed across many torrents.
#[derive(Debug)]
pub struct PeerBudget {
    max: std::sync::atomic::AtomicUsize,
    used: std::sync::atomic::AtomicUsize,
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
    fn has_room(&self) -> bool {
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

pub const PRIORITY_LOW: u8 = 1;
pub const PRIORITY_NORMAL: u8 = 2;
pub const PRIORITY_HIGH: u8 = 3;

/// Fast-resume data: the pieces verified in an earlier session. Pieces not listed are hashed again
/// when `check_unlisted` is set (data may have been written after the list was saved).
#[derive(Debug, Clone)]
pub struct Resume {
    pub have: Bitfield,
    pub check_unlisted: bool,
}

impl TorrentConfig {
    pub fn new(torrent: Arc<Torrent>, download_dir: PathBuf) -> TorrentConfig {
        TorrentConfig {
            torrent,
            download_dir,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            peers: Vec::new(),
            selected_files: None,
            file_priorities: None,
            sequential: false,
            use_trackers: true,
            max_peers: 50,
            handshake: crate::conns::HandshakeLimits::default(),
            upload_slots: 4,
            peer_id: new_peer_id(),
            max_upload_rate: None,
            max_download_rate: None,
            dht: None,
            pex: true,
            global_upload: None,
            global_download: None,
            resume: None,
            session_listener: None,
            peer_budget: None,
            lsd: false,
            lsd_group: crate::lsd::DEFAULT_GROUP,
            trackers: None,
            file_paths: None,
        }
    }
}

/// `-SO0100-` and twelve random bytes, Azureus style (`SP` is BitSpirit's).
pub fn new_peer_id() -> PeerId {
    let mut id = *b"-SO0100-000000000000";
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id()) << 32;
    for b in id[8..].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = b"0123456789abcdefghijklmnopqrstuvwxyz"[(x % 36) as usize];
    }
    PeerId::new(id)
}

/// The 20-byte id a torrent goes by on the wire and at trackers: the v1 info-hash, or the v2 one
/// truncated (BEP 52).
pub fn wire_id(torrent: &Torrent) -> InfoHash {
    wire_id_of(torrent.info_hash_v1, torrent.info_hash_v2).unwrap_or_default()
}

/// The wire id from the info-hashes alone (as a magnet link gives them).
pub fn wire_id_of(v1: Option<[u8; 20]>, v2: Option<[u8; 32]>) -> Option<InfoHash> {
    match (v1, v2) {
        (Some(v1), _) => Some(InfoHash::new(v1)),
        (None, Some(v2)) => {
            let mut id = [0u8; 20];
            id.copy_from_slice(&v2[..20]);
            Some(InfoHash::new(id))
        }
        (None, None) => None,
    }
}

/// Commands from the torrent to one peer's task.
#[derive(Debug)]
pub(crate) enum Command {
    Send(Message),
    /// Another peer delivered this block first (endgame): cancel our request if we made one.
    Cancel(wire::BlockRef),
    Choke(bool),
    Disconnect,
}

pub(crate) struct PeerEntry {
    pub addr: SocketAddr,
    pub tx: mpsc::Sender<Command>,
    pub bitfield: Bitfield,
    pub peer_interested: bool,
    pub am_choking: bool,
    /// Payload bytes from / to this peer, and the totals at the last choker round.
    pub downloaded: u64,
    pub uploaded: u64,
    pub down_mark: u64,
    pub up_mark: u64,
    pub rate_down: f64,
    pub rate_up: f64,
    pub optimistic: bool,
    /// Where the peer accepts connections: the address we dialled, or for incoming connections its IP
    /// with the port from its extension handshake. What peer exchange passes on.
    pub listen: Option<SocketAddr>,
    /// Its socket has taken none of what we queued for a while (a slow or hostile reader): it holds no
    /// upload slot and the choker passes it over until the socket drains again.
    pub stalled: bool,
    /// When we last sent it a block, or unchoked it: an unchoked peer that asks for nothing holds no
    /// upload slot once `SLOT_IDLE` has gone by, so peers that take a slot and never use it cannot keep
    /// a downloader waiting.
    pub last_upload: Instant,
    /// Times we unchoked it: a slot that frees goes to a peer that has had the fewest turns.
    pub turns: u32,
    /// Misuse on record for its IP when it connected, plus its own since (`State::misuse`): the choker
    /// serves peers with fewer before any with more, and a full peer table makes room by dropping the
    /// one with the most.
    pub misuse: u32,
    /// The client it names in its extension handshake (`v`), cleaned (`client_name`).
    pub client: Option<String>,
    /// It connected to us.
    pub incoming: bool,
}

/// IPs whose misuse `State::misuse` remembers, at most: when full, the record starts over.
const MAX_MISUSE_RECORDS: usize = 4096;

impl PeerEntry {
    /// Unchoked, reading what we send, and asking for more (see `State::active_unchoked`).
    fn holds_slot(&self) -> bool {
        !self.am_choking && !self.stalled && self.last_upload.elapsed() < SLOT_IDLE
    }
}

pub(crate) use torrent_core::client_name;

/// See `PeerEntry::last_upload`.
const SLOT_IDLE: Duration = Duration::from_millis(500);

struct PieceBuf {
    data: crate::aligned::AlignedBuf,
    contributors: HashSet<IpAddr>,
}

pub(crate) struct State {
    pub picker: Picker,
    buffers: HashMap<u32, PieceBuf>,
    pub peers: HashMap<u64, PeerEntry>,
    next_peer: u64,
    /// Addresses we may connect to, and those with a live or pending connection.
    pub known: VecDeque<SocketAddr>,
    pub connected: HashSet<SocketAddr>,
    strikes: HashMap<IpAddr, u32>,
    /// Times a peer from this IP held an upload slot and stopped reading, or flooded us with requests
    /// past its cap. Kept across connections, since a hostile peer that is dropped reconnects with a
    /// clean slate otherwise and is as likely as an honest newcomer to get the next free slot.
    misuse: HashMap<IpAddr, u32>,
    pub banned: HashSet<IpAddr>,
    /// Recently used pieces; an entry being read from disk is an empty cell others wait on, so many
    /// requests for one piece cause one read.
    cache: VecDeque<(u32, Arc<tokio::sync::OnceCell<Bytes>>)>,
    last_optimistic: Instant,
    /// Picks the optimistic unchoke, so every choked peer gets its turn.
    rng: crate::rng::Rng,
}

/// Pieces kept in memory for serving uploads.
const CACHE_PIECES: usize = 32;
/// Addresses waiting to be dialled, at most: trackers, PEX, LSD and the DHT can offer far more than a
/// torrent will ever connect to, and what PEX and the DHT offer is chosen by strangers.
const MAX_KNOWN: usize = 2000;

/// Everything the torrent's tasks share.
pub struct Shared {
    pub torrent: Arc<Torrent>,
    /// The announce list in the order it is tried (BEP 12): each tier shuffled once, and a URL that
    /// answered moved to the front of its tier.
    tiers: Mutex<Vec<Vec<String>>>,
    pub(crate) config: TorrentConfig,
    pub(crate) storage: Storage,
    pub(crate) state: Mutex<State>,
    pub id: InfoHash,
    pub listen_addr: SocketAddr,
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    /// Bytes that failed verification.
    pub wasted: AtomicU64,
    pub pex_sent: AtomicU64,
    /// Our address as connected peers report it (BEP 10 `yourip`).
    pub(crate) external_votes: Mutex<crate::external_ip::ExternalIpVotes>,
    pub dht_announces: AtomicU64,
    pub lsd_announces: AtomicU64,
    complete: AtomicBool,
    /// Signalled on completion and on `failure`.
    complete_notify: Notify,
    /// Set once when the torrent stops by itself (a disk error); never cleared: a restart is a new
    /// torrent handle.
    failure: Mutex<Option<TorrentError>>,
    /// Signalled when addresses are queued for connecting.
    new_peers: Notify,
    /// Signalled whenever a piece is verified and written (what a [`crate::Reader`] waits on).
    pub(crate) piece_done: Notify,
    /// Numbers the readers, whose time-critical pieces the picker keeps apart.
    pub(crate) next_reader: AtomicU64,
    /// Signalled to announce at once rather than at the end of the interval.
    announce_now: Notify,
    /// What each tracker (by URL) answered last, for status views.
    tracker_stats: Mutex<HashMap<String, TrackerStats>>,
    stopping: watch::Sender<bool>,
    pub(crate) piece_sizes: Vec<u32>,
    /// Whole pieces waiting to be hashed and written. A peer that completes a piece waits for a slot
    /// (and so stops reading its socket): when the network outruns hashing, TCP slows the sender
    /// instead of finished pieces piling up in memory.
    verify_slots: Arc<tokio::sync::Semaphore>,
    /// This torrent's own rate limits (changeable while it runs).
    pub down_limit: Limiter,
    pub up_limit: Limiter,
    /// (when, downloaded, uploaded, download rate, upload rate) at the last status sample.
    rates: Mutex<(Instant, u64, u64, f64, f64)>,
    /// Merkle trees over files' piece layers, built once per file on the first BEP 52 hash request
    /// for it (off the async workers), and how many have been built.
    hash_trees: Mutex<HashMap<[u8; 32], Arc<tokio::sync::OnceCell<HashTree>>>>,
    pub(crate) hash_tree_builds: AtomicU64,
}

/// Every layer of a file's tree from its piece layer up to the root (`metainfo::merkle::layers`).
pub(crate) type HashTree = Arc<Vec<Vec<[u8; 32]>>>;

/// How many finished pieces may wait for hashing at once: 32 MiB of them, but at least 4 so that both
/// cores can hash while a write is under way.
fn verify_slots(piece_length: u64) -> usize {
    ((32 << 20) / piece_length.max(1)).clamp(4, 256) as usize
}

/// Why a torrent stopped by itself. It stops rather than fetch the same pieces again for ever; pieces
/// verified before stay verified (on disk, and in [`Shared::have`] for resume data).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TorrentError {
    /// Writing verified data failed: disk full (ENOSPC, EDQUOT, EFBIG), an I/O error, a read-only file
    /// system, no permission, or a link where a file should be. Every write error counts: none of them
    /// goes away by downloading the piece again.
    #[error("stopped: {0}")]
    Disk(DiskError),
}

impl From<DiskError> for TorrentError {
    fn from(e: DiskError) -> TorrentError {
        TorrentError::Disk(e)
    }
}

impl TorrentError {
    /// The OS error number behind it, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            TorrentError::Disk(e) => e.errno(),
        }
    }
}

/// A snapshot for progress displays.
#[derive(Debug, Clone)]
pub struct Status {
    pub pieces_have: u32,
    pub pieces_total: u32,
    /// Bytes still to download among wanted pieces.
    pub left: u64,
    pub wanted: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: f64,
    pub upload_rate: f64,
    pub peers: usize,
    pub complete: bool,
    pub banned: usize,
    /// Peer-exchange messages sent, DHT and LSD announces made (always 0 for private torrents).
    pub pex_sent: u64,
    pub dht_announces: u64,
    pub lsd_announces: u64,
    /// Our address as most connected peers see it (BEP 10 `yourip`; at least two must agree).
    pub external_ip: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes per second over the last choker round.
    pub rate_down: f64,
    pub rate_up: f64,
    /// The client name from its extension handshake, cleaned.
    pub client: Option<String>,
    /// It connected to us.
    pub incoming: bool,
    /// We do not choke it, and it wants data from us.
    pub uploading_to: bool,
}

pub struct TorrentHandle {
    pub(crate) shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    /// Whether this torrent exchanges peers (never private torrents).
    pub(crate) fn uses_pex(&self) -> bool {
        self.config.pex && !self.torrent.private
    }

    /// Whether this torrent uses the DHT (never for private torrents).
    pub(crate) fn uses_dht(&self) -> bool {
        self.config.dht.is_some() && !self.torrent.private
    }

    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    pub(crate) async fn pass_upload(&self, bytes: usize) {
        self.up_limit.acquire(bytes).await;
        if let Some(global) = &self.config.global_upload {
            global.acquire(bytes).await;
        }
    }

    pub(crate) async fn pass_download(&self, bytes: usize) {
        self.down_limit.acquire(bytes).await;
        if let Some(global) = &self.config.global_download {
            global.acquire(bytes).await;
        }
    }

    /// The verified pieces: what fast-resume data records.
    pub fn have(&self) -> Bitfield {
        self.state.lock().picker.have().clone()
    }

    /// Connected peers: address and payload bytes from and to each.
    pub fn peer_list(&self) -> Vec<PeerInfo> {
        self.state
            .lock()
            .peers
            .values()
            .map(|p| PeerInfo {
                addr: p.addr,
                downloaded: p.downloaded,
                uploaded: p.uploaded,
                rate_down: p.rate_down,
                rate_up: p.rate_up,
                client: p.client.clone(),
                incoming: p.incoming,
                uploading_to: !p.am_choking && p.peer_interested,
            })
            .collect()
    }

    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    pub(crate) fn piece_start(&self, index: u32) -> u64 {
        u64::from(index) * self.torrent.piece_length
    }

    /// Registers a connected peer; `None` if we are full or the address is banned.
    pub(crate) fn add_peer(
        &self,
        addr: SocketAddr,
        outgoing: bool,
        tx: mpsc::Sender<Command>,
    ) -> Option<u64> {
        if *self.stopping.borrow() {
            return None;
        }
        let mut st = self.state.lock();
        if st.banned.contains(&addr.ip()) {
            return None;
        }
        let misuse = st.misuse.get(&addr.ip()).copied().unwrap_or(0);
        if st.peers.len() >= self.config.max_peers {
            // Full: make room by dropping the peer with the worst record, if it is worse than the
            // newcomer's, so connections that misuse us cannot keep an honest peer out.
            let worst = st
                .peers
                .iter()
                .filter(|(_, p)| p.misuse > misuse)
                .max_by_key(|(k, p)| (p.misuse, std::cmp::Reverse(**k)))
                .map(|(k, _)| *k)?;
            tracing::debug!(
                "peer table full: dropping {} for {addr}",
                st.peers[&worst].addr
            );
            self.remove_entry(&mut st, worst);
        }
        if let Some(budget) = &self.config.peer_budget {
            if !budget.try_take() {
                // Another torrent took the last slot between our room check and now: dial this peer
                // again when a slot frees, or a torrent whose only peer this was would wait for its next
                // tracker announce.
                if outgoing {
                    st.queue_known(addr);
                }
                return None;
            }
        }
        let key = st.next_peer;
        st.next_peer += 1;
        let pieces = self.piece_sizes.len() as u32;
        st.peers.insert(
            key,
            PeerEntry {
                addr,
                tx,
                bitfield: Bitfield::new(pieces),
                peer_interested: false,
                am_choking: true,
                downloaded: 0,
                uploaded: 0,
                down_mark: 0,
                up_mark: 0,
                rate_down: 0.0,
                rate_up: 0.0,
                optimistic: false,
                listen: outgoing.then_some(addr),
                stalled: false,
                last_upload: Instant::now(),
                turns: 0,
                misuse,
                client: None,
                incoming: !outgoing,
            },
        );
        st.connected.insert(addr);
        Some(key)
    }

    pub(crate) fn remove_peer(&self, key: u64) {
        let mut st = self.state.lock();
        self.remove_entry(&mut st, key);
    }

    /// Takes a peer out of the table (its connection is told to end) and gives its upload slot away.
    fn remove_entry(&self, st: &mut State, key: u64) {
        if let Some(peer) = st.peers.remove(&key) {
            let _ = peer.tx.try_send(Command::Disconnect);
            st.picker.peer_gone(&peer.bitfield);
            st.connected.remove(&peer.addr);
            if let Some(budget) = &self.config.peer_budget {
                budget.give_back();
            }
            if !peer.am_choking {
                st.fill_free_slot(self.config.upload_slots + 1);
            }
        }
    }

    /// Misuse on record for a peer (see `PeerEntry::misuse`).
    pub(crate) fn misuse_of(&self, key: u64) -> u32 {
        self.state.lock().peers.get(&key).map_or(0, |p| p.misuse)
    }

    /// A peer flooded us with requests past its cap: on the record of its IP (see `State::misuse`).
    pub(crate) fn flooded(&self, key: u64) {
        self.state.lock().note_misuse(key);
    }

    /// Stores a received block; when its piece is complete, verifies and writes it in the background,
    /// once one of the torrent's verification slots is free.
    pub(crate) async fn block_received(
        self: &Arc<Self>,
        peer: u64,
        from: IpAddr,
        block: wire::BlockRef,
        data: &[u8],
    ) {
        let Some(buf) = self.store_block(peer, from, block, data) else {
            return;
        };
        let Ok(slot) = self.verify_slots.clone().acquire_owned().await else {
            return;
        };
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            shared.verify_and_store(block.index, buf);
            drop(slot);
        });
    }

    /// Copies a block into its piece's buffer; returns the buffer when that completed the piece.
    fn store_block(
        &self,
        peer: u64,
        from: IpAddr,
        block: wire::BlockRef,
        data: &[u8],
    ) -> Option<PieceBuf> {
        let complete_piece = {
            let mut st = self.state.lock();
            if let Some(p) = st.peers.get_mut(&peer) {
                p.downloaded += data.len() as u64;
            }
            let outcome = st.picker.received(&block);
            if outcome == Received::Unexpected {
                // Unrequested, duplicate (endgame) or malformed: the first good copy counts.
                return None;
            }
            if st.picker.last_was_duplicated() {
                for (k, p) in &st.peers {
                    if *k != peer {
                        let _ = p.tx.try_send(Command::Cancel(block));
                    }
                }
            }
            let size = self.piece_sizes[block.index as usize] as usize;
            let end = block.begin as usize + data.len();
            let buf = st.buffers.entry(block.index).or_insert_with(|| PieceBuf {
                data: crate::aligned::AlignedBuf::reused(size),
                contributors: HashSet::new(),
            });
            buf.data[block.begin as usize..end].copy_from_slice(data);
            buf.contributors.insert(from);
            if outcome == Received::PieceComplete {
                st.buffers.remove(&block.index)
            } else {
                None
            }
        };
        self.downloaded
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        complete_piece
    }

    fn verify_and_store(self: &Arc<Self>, index: u32, buf: PieceBuf) {
        if self.failure.lock().is_some() {
            // Stopped on a disk error: nothing more is written.
            self.state.lock().picker.failed(index);
            return;
        }
        let ok = piece_matches(&self.torrent, index, &buf.data);
        let written = ok && {
            match self.storage.write(self.piece_start(index), &buf.data) {
                Ok(()) => true,
                Err(e) => {
                    self.state.lock().picker.failed(index);
                    self.fail(TorrentError::Disk(e));
                    return;
                }
            }
        };
        let mut st = self.state.lock();
        if written {
            st.picker.verified(index);
            // Kept for uploads if the upload memory budget has room (the buffer is dropped otherwise).
            if let Some(charge) = st.make_room(buf.data.len()) {
                st.cache_insert(
                    index,
                    Arc::new(tokio::sync::OnceCell::new_with(Some(
                        crate::upload::charged(buf.data, charge),
                    ))),
                );
            }
            for peer in st.peers.values() {
                let _ = peer.tx.try_send(Command::Send(Message::Have(index)));
            }
            self.piece_done.notify_waiters();
            if st.picker.done() && !self.complete.swap(true, Ordering::AcqRel) {
                drop(st);
                if let Err(e) = self.storage.sync() {
                    tracing::error!("syncing data: {e}");
                }
                self.complete_notify.notify_waiters();
            }
        } else {
            st.picker.failed(index);
            self.wasted
                .fetch_add(buf.data.len() as u64, Ordering::Relaxed);
            // A piece that had a banned peer among its contributors is explained by that peer: blocks it
            // sent before the ban keep failing pieces for a while, and striking the honest peers that
            // filled the rest of them would ban those too and leave nobody to download from.
            let explained = buf.contributors.iter().any(|ip| st.banned.contains(ip));
            if !ok && !explained {
                // Everyone who contributed gets a strike; a peer that sent the whole piece alone gets two.
                let weight = if buf.contributors.len() == 1 { 2 } else { 1 };
                let mut to_ban = Vec::new();
                for ip in &buf.contributors {
                    let strikes = st.strikes.entry(*ip).or_insert(0);
                    *strikes += weight;
                    if *strikes >= 2 {
                        to_ban.push(*ip);
                    }
                }
                for ip in to_ban {
                    tracing::warn!("banning {ip}: sent data that failed the hash check");
                    st.banned.insert(ip);
                    for peer in st.peers.values().filter(|p| p.addr.ip() == ip) {
                        let _ = peer.tx.try_send(Command::Disconnect);
                    }
                }
            }
        }
    }

    /// Stops the torrent on an error it cannot get past by itself: closes every connection, ends its
    /// tasks (trackers hear `stopped`), flushes what was written, and wakes `wait_done`. The first
    /// error is kept and logged once; later ones (pieces that were being written at the time) are not.
    pub(crate) fn fail(&self, error: TorrentError) {
        {
            let mut failure = self.failure.lock();
            if failure.is_some() {
                tracing::debug!("{}: also {error}", self.torrent.name);
                return;
            }
            // Logged by whoever reads it from the handle (`get` prints it, the daemon shows it).
            tracing::info!("{}: {error}", self.torrent.name);
            *failure = Some(error);
        }
        let _ = self.stopping.send(true);
        for peer in self.state.lock().peers.values() {
            let _ = peer.tx.try_send(Command::Disconnect);
        }
        if let Err(e) = self.storage.sync() {
            tracing::warn!("{}: syncing data: {e}", self.torrent.name);
        }
        self.complete_notify.notify_waiters();
    }

    /// Why the torrent stopped by itself, if it did.
    pub fn failure(&self) -> Option<TorrentError> {
        self.failure.lock().clone()
    }

    /// Waits until the torrent is complete (`Ok`) or stopped by an error (`Err`).
    pub async fn wait_done(&self) -> Result<(), TorrentError> {
        loop {
            let notified = self.complete_notify.notified();
            if let Some(e) = self.failure() {
                return Err(e);
            }
            if self.is_complete() {
                return Ok(());
            }
            notified.await;
        }
    }

    /// A verified piece's bytes if they are in memory now.
    pub(crate) fn cached_piece(&self, index: u32) -> Option<Bytes> {
        let st = self.state.lock();
        if !st.picker.have().get(index) {
            return None;
        }
        st.cache
            .iter()
            .find(|(i, _)| *i == index)
            .and_then(|(_, cell)| cell.get().cloned())
    }

    /// A verified piece's bytes, from the cache or the disk; `None` also when the upload memory budget
    /// has no room for another piece (the caller reads just the block it needs).
    pub(crate) async fn piece_data(self: &Arc<Self>, index: u32) -> Option<Bytes> {
        let size = *self.piece_sizes.get(index as usize)? as usize;
        let (cell, charge) = {
            let mut st = self.state.lock();
            if !st.picker.have().get(index) {
                return None;
            }
            match st.cache.iter().find(|(i, _)| *i == index) {
                Some((_, cell)) => (cell.clone(), None),
                None => {
                    let charge = st.make_room(size)?;
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    st.cache_insert(index, cell.clone());
                    (cell, Some(charge))
                }
            }
        };
        let shared = self.clone();
        let data = cell
            .get_or_try_init(|| async move {
                // A reader whose read failed leaves the cell empty; whoever tries next pays anew.
                let charge = match charge {
                    Some(charge) => charge,
                    None => crate::upload::Charge::try_new(size).ok_or(())?,
                };
                let data = tokio::task::spawn_blocking(move || {
                    // `read` fills every byte, so stale contents of a reused buffer never escape.
                    let mut buf = crate::aligned::AlignedBuf::reused(size);
                    shared
                        .storage
                        .read(shared.piece_start(index), &mut buf)
                        .map(|()| buf)
                })
                .await
                .map_err(|_| ())?
                .map_err(|e| tracing::error!("reading piece {index}: {e}"))?;
                Ok::<Bytes, ()>(crate::upload::charged(data, charge))
            })
            .await
            .ok()?;
        Some(data.clone())
    }

    /// Just the bytes of block `b` of a verified piece, read from disk (zeros past the piece's end, for
    /// a v2 file's tail piece asked for as if full length): what a request costs when its piece is not
    /// worth caching or the upload memory budget is spent.
    pub(crate) async fn block_from_disk(self: &Arc<Self>, b: wire::BlockRef) -> Option<Bytes> {
        let size = *self.piece_sizes.get(b.index as usize)?;
        if !self.state.lock().picker.have().get(b.index) {
            return None;
        }
        let on_disk = size
            .min(b.begin.saturating_add(b.length))
            .saturating_sub(b.begin) as usize;
        let charge = crate::upload::Charge::force(b.length as usize);
        let shared = self.clone();
        let data = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; b.length as usize];
            let start = shared.piece_start(b.index) + u64::from(b.begin);
            shared
                .storage
                .read(start, &mut buf[..on_disk])
                .map(|()| buf)
        })
        .await
        .ok()?
        .map_err(|e| tracing::error!("reading block of piece {}: {e}", b.index))
        .ok()?;
        Some(crate::upload::charged(data, charge))
    }

    /// A peer's socket stopped taking data (`true`) or drained again: a stalled peer gives its upload
    /// slot to an interested peer waiting for one.
    pub(crate) fn set_stalled(&self, key: u64, stalled: bool) {
        let mut st = self.state.lock();
        let Some(p) = st.peers.get_mut(&key) else {
            return;
        };
        if p.stalled == stalled {
            return;
        }
        p.stalled = stalled;
        if stalled {
            if !p.am_choking {
                // It held a slot and stopped reading.
                st.note_misuse(key);
            }
            st.fill_free_slot(self.config.upload_slots + 1);
        }
    }

    /// Chokes a peer (a slow reader, or one over its request cap without the fast extension).
    pub(crate) fn choke_peer(&self, key: u64) {
        let mut st = self.state.lock();
        if let Some(p) = st.peers.get_mut(&key) {
            if !p.am_choking {
                p.am_choking = true;
                p.optimistic = false;
                let _ = p.tx.try_send(Command::Choke(true));
            }
        }
        st.fill_free_slot(self.config.upload_slots + 1);
    }

    /// The tree a BEP 52 hash request for our piece layers is answered from; `None` (a reject) for
    /// anything else, block-layer hashes included.
    pub(crate) async fn hash_tree(&self, range: &wire::HashRange) -> Option<HashTree> {
        let torrent = &self.torrent;
        let blocks = torrent.piece_length / metainfo::merkle::BLOCK_SIZE as u64;
        if range.base_layer != blocks.trailing_zeros() || range.length > 8192 {
            return None;
        }
        let file = torrent.files.iter().find(|f| {
            f.pieces_root == Some(range.pieces_root) && f.length > torrent.piece_length
        })?;
        let layer = torrent.piece_layer(file)?;
        let cell = self
            .hash_trees
            .lock()
            .entry(range.pieces_root)
            .or_default()
            .clone();
        let tree = cell
            .get_or_try_init(|| async {
                self.hash_tree_builds.fetch_add(1, Ordering::Relaxed);
                let layer = layer.to_vec();
                tokio::task::spawn_blocking(move || {
                    let pad = metainfo::merkle::pad_root(blocks as usize, [0; 32]);
                    Arc::new(metainfo::merkle::layers(
                        &layer,
                        layer.len().next_power_of_two(),
                        pad,
                    ))
                })
                .await
            })
            .await
            .ok()?;
        Some(tree.clone())
    }

    /// Unchokes a newly interested peer at once when a slot is free (the choker rebalances later).
    /// (The free slot goes to the best waiting peer, which is this one unless its record is worse.)
    pub(crate) fn peer_interested(&self, key: u64, interested: bool) {
        let mut st = self.state.lock();
        if let Some(p) = st.peers.get_mut(&key) {
            p.peer_interested = interested;
            if interested {
                st.fill_free_slot(self.config.upload_slots + 1);
            }
        }
    }

    /// One choker round: the best `upload_slots` interested peers (by what they give us while we
    /// download, by what we give them while we seed) plus one optimistic unchoke rotated every 30 s.
    fn choke_round(&self, elapsed: f64) {
        let mut st = self.state.lock();
        let seeding = st.picker.done();
        for p in st.peers.values_mut() {
            p.rate_down = (p.downloaded - p.down_mark) as f64 / elapsed;
            p.rate_up = (p.uploaded - p.up_mark) as f64 / elapsed;
            p.down_mark = p.downloaded;
            p.up_mark = p.uploaded;
        }
        // Peers with less misuse on record first, then by rate.
        let mut candidates: Vec<(u64, u32, f64)> = st
            .peers
            .iter()
            .filter(|(_, p)| p.peer_interested && !p.stalled)
            .map(|(k, p)| (*k, p.misuse, if seeding { p.rate_up } else { p.rate_down }))
            .collect();
        candidates.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
        let cleanest = candidates.first().map_or(0, |c| c.1);
        let regular: HashSet<u64> = candidates
            .iter()
            .take(self.config.upload_slots)
            .map(|c| c.0)
            .collect();
        let rotate = st.last_optimistic.elapsed() >= Duration::from_secs(30);
        let mut optimistic: Option<u64> = st
            .peers
            .iter()
            .find(|(k, p)| p.optimistic && p.peer_interested && !p.stalled && !regular.contains(k))
            .map(|(k, _)| *k);
        if rotate || optimistic.is_none() {
            let others: Vec<u64> = candidates
                .iter()
                .filter(|c| c.1 == cleanest)
                .map(|c| c.0)
                .filter(|k| !regular.contains(k) && Some(*k) != optimistic)
                .collect();
            if !others.is_empty() {
                let pick = st.rng.below(others.len());
                optimistic = Some(others[pick]);
                st.last_optimistic = Instant::now();
            }
        }
        for (k, p) in st.peers.iter_mut() {
            let unchoke = regular.contains(k) || Some(*k) == optimistic;
            p.optimistic = Some(*k) == optimistic;
            if unchoke == p.am_choking {
                p.am_choking = !unchoke;
                p.last_upload = Instant::now();
                p.turns += u32::from(unchoke);
                let _ = p.tx.try_send(Command::Choke(!unchoke));
            }
        }
    }

    pub fn status(&self) -> Status {
        let st = self.state.lock();
        let (down, up) = {
            let mut r = self.rates.lock();
            let elapsed = r.0.elapsed().as_secs_f64();
            if elapsed >= 1.0 {
                let (d, u) = (
                    self.downloaded.load(Ordering::Relaxed),
                    self.uploaded.load(Ordering::Relaxed),
                );
                // Smoothed over a few samples so the display does not flicker, and dropped to zero
                // once traffic stops instead of fading forever.
                let smooth = |old: f64, bytes: u64| {
                    let now = bytes as f64 / elapsed;
                    let rate = 0.5 * old + 0.5 * now;
                    if bytes == 0 && rate < 16384.0 {
                        0.0
                    } else {
                        rate
                    }
                };
                r.3 = smooth(r.3, d - r.1);
                r.4 = smooth(r.4, u - r.2);
                *r = (Instant::now(), d, u, r.3, r.4);
            }
            (r.3, r.4)
        };
        let wanted: u64 = (0..self.piece_sizes.len())
            .filter(|&i| st.picker.priority_of(i as u32) > 0)
            .map(|i| u64::from(self.piece_sizes[i]))
            .sum();
        Status {
            pieces_have: st.picker.have().count(),
            pieces_total: self.piece_sizes.len() as u32,
            left: st.picker.wanted_left(),
            wanted,
            downloaded: self.downloaded.load(Ordering::Relaxed),
            uploaded: self.uploaded.load(Ordering::Relaxed),
            download_rate: down,
            upload_rate: up,
            peers: st.peers.len(),
            complete: self.is_complete(),
            banned: st.banned.len(),
            pex_sent: self.pex_sent.load(Ordering::Relaxed),
            external_ip: self.external_votes.lock().majority(),
            dht_announces: self.dht_announces.load(Ordering::Relaxed),
            lsd_announces: self.lsd_announces.load(Ordering::Relaxed),
        }
    }

    /// Listen addresses of connected peers other than `except`, for peer exchange.
    pub(crate) fn pex_candidates(&self, except: u64) -> Vec<SocketAddr> {
        let st = self.state.lock();
        st.peers
            .iter()
            .filter(|(k, _)| **k != except)
            .filter_map(|(_, p)| p.listen)
            .collect()
    }

    /// Queues addresses to connect to.
    pub fn add_peers(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let mut st = self.state.lock();
        for addr in addrs {
            if addr == self.listen_addr || addr.port() == 0 || st.banned.contains(&addr.ip()) {
                continue;
            }
            if !st.connected.contains(&addr) {
                st.queue_known(addr);
            }
        }
        drop(st);
        self.new_peers.notify_one();
    }

    fn announce_params(&self, event: TrackerEvent) -> Announce {
        let left = self.state.lock().picker.wanted_left();
        Announce {
            info_hash: self.id,
            peer_id: self.config.peer_id,
            port: self.listen_addr.port(),
            uploaded: self.uploaded.load(Ordering::Relaxed),
            downloaded: self.downloaded.load(Ordering::Relaxed),
            left,
            event,
            numwant: Some(50),
            key: Some(u32::from_le_bytes([
                self.config.peer_id[8],
                self.config.peer_id[9],
                self.config.peer_id[10],
                self.config.peer_id[11],
            ])),
            ip: None,
        }
    }

    fn bind_ip(&self) -> Option<IpAddr> {
        Some(self.config.listen.ip()).filter(|ip| !ip.is_unspecified())
    }

    /// Announces to each tier (first URL that answers, BEP 12); returns the shortest interval.
    async fn announce_all(&self, event: TrackerEvent) -> Option<Duration> {
        let params = self.announce_params(event);
        let mut interval: Option<Duration> = None;
        // A copy: the lock is not held across the network calls.
        let tiers = self.tiers.lock().clone();
        for (t, tier) in tiers.iter().enumerate() {
            for (position, url) in tier.iter().enumerate() {
                self.note_tracker(url, |s| s.announcing = true);
                let answer = crate::tracker::announce(url, &params, self.bind_ip()).await;
                self.note_tracker(url, |s| {
                    s.announcing = false;
                    s.last_announce = Some(SystemTime::now());
                    match &answer {
                        Ok(r) => {
                            s.result = Some(Ok(()));
                            s.peers = r.peers.len();
                            s.seeders = Some(r.seeders);
                            s.leechers = Some(r.leechers);
                        }
                        Err(e) => s.result = Some(Err(format!("{e:#}"))),
                    }
                });
                match answer {
                    Ok(r) => {
                        tracing::debug!("{url}: {} peers", r.peers.len());
                        if let Some(seen) = r.external_ip {
                            let voter = crate::external_ip::Voter::Tracker(url.clone());
                            if let Some(ip) = self.external_votes.lock().record(voter, seen) {
                                tracing::info!("peers and trackers see us at {ip}");
                            }
                        }
                        self.add_peers(r.peers);
                        interval = Some(interval.map_or(r.interval, |i| i.min(r.interval)));
                        if let Some(tier) = self.tiers.lock().get_mut(t) {
                            promote(tier, position);
                        }
                        break;
                    }
                    Err(e) => tracing::warn!("tracker {url}: {e:#}"),
                }
            }
        }
        interval
    }

    /// Changes what is known of tracker `url`'s announces. At most one entry per URL of the announce
    /// list: entries of URLs no longer in it are dropped here.
    fn note_tracker(&self, url: &str, change: impl FnOnce(&mut TrackerStats)) {
        let tiers = self.tiers.lock().clone();
        let mut stats = self.tracker_stats.lock();
        stats.retain(|u, _| tiers.iter().flatten().any(|t| t == u));
        if tiers.iter().flatten().any(|t| t == url) {
            change(stats.entry(url.to_string()).or_default());
        }
    }

    /// What each tracker of the announce list answered last, by URL.
    pub fn tracker_stats(&self) -> HashMap<String, TrackerStats> {
        self.tracker_stats.lock().clone()
    }

    pub async fn wait_complete(&self) {
        loop {
            let notified = self.complete_notify.notified();
            if self.is_complete() {
                return;
            }
            notified.await;
        }
    }
}

/// Each tier of an announce list in random order (BEP 12), so clients spread over a tier's trackers.
fn shuffled_tiers(tiers: &[Vec<String>], rng: &mut crate::rng::Rng) -> Vec<Vec<String>> {
    tiers
        .iter()
        .map(|tier| {
            let mut tier = tier.clone();
            for i in (1..tier.len()).rev() {
                tier.swap(i, rng.below(i + 1));
            }
            tier
        })
        .collect()
}

/// Moves the tracker at `position` to the front of its tier, keeping the others' order (BEP 12).
fn promote(tier: &mut [String], position: usize) {
    if position < tier.len() {
        tier[..=position].rotate_right(1);
    }
}

/// Each piece's priority: 0 for pieces of no selected file, else the highest priority of the selected
/// files it touches (`PRIORITY_NORMAL` for files without one).
fn piece_priorities(
    torrent: &Torrent,
    piece_count: u32,
    selected: Option<&[bool]>,
    file_priorities: Option<&[u8]>,
) -> Vec<u8> {
    let mut priority = vec![0u8; piece_count as usize];
    for (i, f) in torrent.files.iter().enumerate() {
        if f.attr.pad || f.length == 0 {
            continue;
        }
        if selected.is_some_and(|s| !s.get(i).copied().unwrap_or(true)) {
            continue;
        }
        let file_priority = file_priorities
            .and_then(|p| p.get(i).copied())
            .unwrap_or(PRIORITY_NORMAL)
            .clamp(PRIORITY_LOW, PRIORITY_HIGH);
        let first = f.offset / torrent.piece_length;
        let last = (f.offset + f.length - 1) / torrent.piece_length;
        for p in first..=last.min(u64::from(piece_count).saturating_sub(1)) {
            // A piece shared by two files is as urgent as the more urgent one.
            priority[p as usize] = priority[p as usize].max(file_priority);
        }
    }
    priority
}

/// Starts a torrent: rechecks data already in the download directory, then serves and downloads.
pub async fn start(config: TorrentConfig) -> Result<TorrentHandle, crate::StartError> {
    let torrent = config.torrent.clone();
    let piece_count = torrent.piece_count();
    let piece_count = u32::try_from(piece_count).map_err(|_| crate::StartError::TooManyPieces)?;
    let piece_sizes: Vec<u32> = (0..u64::from(piece_count))
        .map(|i| torrent.piece_size(i) as u32)
        .collect();

    let priority = piece_priorities(
        &torrent,
        piece_count,
        config.selected_files.as_deref(),
        config.file_priorities.as_deref(),
    );

    let file_paths = config.file_paths.clone();
    let storage = Storage::with_paths(&torrent, &config.download_dir, file_paths.as_deref())?;
    // Files first, so the recheck finds the content where the storage will write it.
    storage.create_files(config.selected_files.as_deref())?;
    let resume = config
        .resume
        .clone()
        .filter(|r| r.have.len() == piece_count);
    let recheck_torrent = torrent.clone();
    let dir = config.download_dir.clone();
    let recheck_storage = Storage::with_paths(&torrent, &dir, file_paths.as_deref())?;
    // The full check reads the files where they are on disk.
    let verify_torrent = match &file_paths {
        Some(paths) => {
            let mut t = (*torrent).clone();
            for (f, p) in t.files.iter_mut().zip(paths) {
                f.path = p.clone();
            }
            Arc::new(t)
        }
        None => torrent.clone(),
    };
    let have = tokio::task::spawn_blocking(move || match resume {
        Some(resume) if !resume.check_unlisted => resume.have,
        Some(resume) => {
            // Pieces verified after the resume data was saved are on disk already: find them.
            let storage = recheck_storage;
            let mut have = resume.have;
            let mut buf = Vec::new();
            for i in 0..piece_count {
                if have.get(i) {
                    continue;
                }
                buf.resize(recheck_torrent.piece_size(u64::from(i)) as usize, 0);
                let start = u64::from(i) * recheck_torrent.piece_length;
                if storage.read(start, &mut buf).is_ok() && piece_matches(&recheck_torrent, i, &buf)
                {
                    have.set(i);
                }
            }
            have
        }
        None => {
            let report = metainfo::verify(&verify_torrent, &dir, &AtomicU64::new(0));
            let mut have = Bitfield::new(piece_count);
            for (i, ok) in report.piece_ok.iter().enumerate() {
                if *ok {
                    have.set(i as u32);
                }
            }
            have
        }
    })
    .await?;

    let mut picker = Picker::new(piece_sizes.clone(), have, priority, crate::rng::os_seed());
    picker.set_sequential(config.sequential);
    let already_done = picker.done();

    let (listener, listen_addr) = match config.session_listener {
        Some(addr) => (None, addr),
        None => {
            let listener = crate::peer::listen(config.listen)?;
            let addr = listener.local_addr()?;
            (Some(listener), addr)
        }
    };
    let (stopping, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        id: wire_id(&torrent),
        tiers: Mutex::new(shuffled_tiers(
            config.trackers.as_ref().unwrap_or(&torrent.trackers),
            &mut crate::rng::from_os(),
        )),
        torrent,
        storage,
        state: Mutex::new(State {
            picker,
            buffers: HashMap::new(),
            peers: HashMap::new(),
            next_peer: 0,
            known: VecDeque::new(),
            connected: HashSet::new(),
            strikes: HashMap::new(),
            misuse: HashMap::new(),
            banned: HashSet::new(),
            cache: VecDeque::new(),
            last_optimistic: Instant::now(),
            rng: crate::rng::from_os(),
        }),
        listen_addr,
        downloaded: AtomicU64::new(0),
        uploaded: AtomicU64::new(0),
        wasted: AtomicU64::new(0),
        pex_sent: AtomicU64::new(0),
        external_votes: Mutex::new(Default::default()),
        dht_announces: AtomicU64::new(0),
        lsd_announces: AtomicU64::new(0),
        complete: AtomicBool::new(already_done),
        complete_notify: Notify::new(),
        failure: Mutex::new(None),
        new_peers: Notify::new(),
        piece_done: Notify::new(),
        next_reader: AtomicU64::new(0),
        announce_now: Notify::new(),
        tracker_stats: Mutex::new(HashMap::new()),
        stopping,
        verify_slots: Arc::new(tokio::sync::Semaphore::new(verify_slots(
            config.torrent.piece_length,
        ))),
        piece_sizes,
        rates: Mutex::new((Instant::now(), 0, 0, 0.0, 0.0)),
        hash_trees: Mutex::new(HashMap::new()),
        hash_tree_builds: AtomicU64::new(0),
        down_limit: Limiter::new(config.max_download_rate.unwrap_or(0)),
        up_limit: Limiter::new(config.max_upload_rate.unwrap_or(0)),
        config,
    });
    shared.add_peers(shared.config.peers.clone());

    let mut tasks = Vec::new();
    if let Some(listener) = listener {
        let gate = crate::conns::HandshakeGate::new(shared.config.handshake);
        tasks.push(tokio::spawn(crate::peer::accept_loop(
            shared.clone(),
            listener,
            gate,
        )));
    }
    tasks.push(tokio::spawn(connect_loop(shared.clone())));
    tasks.push(tokio::spawn(choke_loop(shared.clone())));
    // Also with no trackers yet: `set_trackers` may give it some.
    if shared.config.use_trackers {
        tasks.push(tokio::spawn(tracker_loop(shared.clone())));
    }
    if let (Some(node), false) = (shared.config.dht.clone(), shared.torrent.private) {
        tasks.push(tokio::spawn(dht_loop(shared.clone(), node)));
    }
    if shared.config.lsd && !shared.torrent.private {
        let group = shared.config.lsd_group;
        tasks.push(tokio::spawn(crate::lsd::run(shared.clone(), group)));
    }
    Ok(TorrentHandle {
        shared,
        tasks: Mutex::new(tasks),
    })
}

async fn connect_loop(shared: Arc<Shared>) {
    let mut stop = shared.stopping();
    // Peers given by the user are dialled again while not connected (they may come up later than us),
    // backing off from 2 s to a minute.
    let mut redial_backoff = Duration::from_secs(2);
    let mut redial_at = Instant::now() + redial_backoff;
    loop {
        if !shared.config.peers.is_empty() && Instant::now() >= redial_at {
            shared.add_peers(shared.config.peers.iter().copied());
            redial_backoff = (redial_backoff * 2).min(Duration::from_secs(60));
            redial_at = Instant::now() + redial_backoff;
        }
        loop {
            let next = {
                let mut st = shared.state.lock();
                // Dials in flight count against the caps too (`connected` holds them and the peers;
                // each holds a unit of the shared budget until its handshake ends), or one burst of
                // addresses would open thousands of sockets at once.
                let open = st.peers.len().max(st.connected.len());
                let budget = shared.config.peer_budget.as_ref();
                if open >= shared.config.max_peers
                    || st.known.is_empty()
                    || budget.is_some_and(|b| !b.try_take())
                {
                    None
                } else {
                    st.known.pop_front().inspect(|addr| {
                        st.connected.insert(*addr);
                    })
                }
            };
            let Some(addr) = next else { break };
            tokio::spawn(crate::peer::connect(shared.clone(), addr));
        }
        // New addresses wake the loop at once; the timer retries when a slot frees up, and rarely
        // when there is nobody to dial (a daemon runs many idle torrents).
        let idle = shared.state.lock().known.is_empty();
        let mut retry = Duration::from_millis(if idle { 5000 } else { 500 });
        if !shared.config.peers.is_empty() {
            retry = retry.min(redial_at.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            _ = shared.new_peers.notified() => {}
            _ = tokio::time::sleep(retry) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn choke_loop(shared: Arc<Shared>) {
    let mut stop = shared.stopping();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
        if last.elapsed() < Duration::from_secs(10) {
            // Between rounds, slots that unchoked peers stopped using (`SLOT_IDLE`) go to waiting peers.
            let slots = shared.config.upload_slots + 1;
            let mut st = shared.state.lock();
            for _ in 0..slots {
                st.fill_free_slot(slots);
            }
            continue;
        }
        let elapsed = last.elapsed().as_secs_f64();
        last = Instant::now();
        shared.choke_round(elapsed);
    }
}

async fn tracker_loop(shared: Arc<Shared>) {
    let mut stop = shared.stopping();
    let mut event = TrackerEvent::Started;
    let mut announced_complete = shared.is_complete();
    loop {
        let interval = shared
            .announce_all(event)
            .await
            .unwrap_or(Duration::from_secs(60));
        let next = SystemTime::now() + interval;
        for s in shared.tracker_stats.lock().values_mut() {
            s.next_announce = Some(next);
        }
        event = TrackerEvent::None;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shared.announce_now.notified() => {}
            _ = shared.wait_complete(), if !announced_complete => {
                announced_complete = true;
                event = TrackerEvent::Completed;
            }
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(5), shared.announce_all(TrackerEvent::Stopped)).await;
                return;
            }
        }
    }
}

/// Looks peers up in the DHT and announces ourselves: every 15 s while we have few peers and are still
/// downloading, every 5 minutes otherwise.
async fn dht_loop(shared: Arc<Shared>, node: crate::dht::DhtNode) {
    let mut stop = shared.stopping();
    loop {
        let lookup = tokio::time::timeout(Duration::from_secs(30), node.get_peers(shared.id));
        if let Ok(peers) = lookup.await {
            tracing::debug!("DHT: {} peers", peers.len());
            shared.add_peers(peers);
        }
        shared.dht_announces.fetch_add(1, Ordering::Relaxed);
        node.announce(shared.id, shared.listen_addr.port()).await;
        let few = shared.state.lock().peers.len() < 5;
        let wait = if few && !shared.is_complete() {
            15
        } else {
            300
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            _ = stop.changed() => {
                node.save().await;
                return;
            }
        }
    }
}

impl State {
    /// Queues an address to dial unless it is queued already; when the queue is full the oldest entry
    /// goes, since fresh addresses are likelier to answer.
    fn queue_known(&mut self, addr: SocketAddr) {
        if self.known.contains(&addr) {
            return;
        }
        if self.known.len() >= MAX_KNOWN {
            self.known.pop_front();
        }
        self.known.push_back(addr);
    }

    /// Unchoked peers that hold an upload slot: a stalled one does not, nor one that has asked for
    /// nothing for a while.
    fn active_unchoked(&self) -> usize {
        self.peers.values().filter(|p| p.holds_slot()).count()
    }

    /// Puts one more misuse on the record of the peer's IP (and the peer's own).
    fn note_misuse(&mut self, key: u64) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        p.misuse = p.misuse.saturating_add(1);
        let ip = p.addr.ip();
        if self.misuse.len() >= MAX_MISUSE_RECORDS && !self.misuse.contains_key(&ip) {
            self.misuse.clear();
        }
        let n = self.misuse.entry(ip).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// Unchokes one interested, choked peer that is not stalled if fewer than `slots` peers hold a slot:
    /// of those with the least misuse on record (stalling a slot, flooding requests), one of those that
    /// have had the fewest turns, so an honest newcomer goes before peers that misused a slot or had
    /// one and did not use it.
    ///
    /// When every slot is held, a waiting peer with less misuse than a holder takes that holder's slot:
    /// a peer with misuse on record keeps a slot only while no cleaner peer waits.
    fn fill_free_slot(&mut self, slots: usize) {
        let waiting = |p: &PeerEntry| p.peer_interested && p.am_choking && !p.stalled;
        let Some(best) = self
            .peers
            .values()
            .filter(|p| waiting(p))
            .map(|p| (p.misuse, p.turns))
            .min()
        else {
            return;
        };
        if self.active_unchoked() >= slots {
            let worst = self
                .peers
                .iter()
                .filter(|(_, p)| p.holds_slot() && p.misuse > best.0)
                .max_by_key(|(k, p)| (p.misuse, **k))
                .map(|(k, _)| *k);
            let Some(p) = worst.and_then(|k| self.peers.get_mut(&k)) else {
                return;
            };
            p.am_choking = true;
            p.optimistic = false;
            let _ = p.tx.try_send(Command::Choke(true));
        }
        let waiting: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| waiting(p) && (p.misuse, p.turns) == best)
            .map(|(k, _)| *k)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let pick = waiting[self.rng.below(waiting.len())];
        if let Some(p) = self.peers.get_mut(&pick) {
            p.am_choking = false;
            p.last_upload = Instant::now();
            p.turns += 1;
            let _ = p.tx.try_send(Command::Choke(false));
        }
    }

    /// A charge for `bytes` more of cached pieces, evicting the oldest until it fits; `None` (and the
    /// cache left alone) when the budget is held elsewhere, by blocks on their way out or by other
    /// torrents' caches, so that emptying this cache would not make room.
    fn make_room(&mut self, bytes: usize) -> Option<crate::upload::Charge> {
        if let Some(charge) = crate::upload::Charge::try_new(bytes) {
            return Some(charge);
        }
        let cached: usize = self
            .cache
            .iter()
            .filter_map(|(_, cell)| cell.get().map(Bytes::len))
            .sum();
        let used = crate::upload::upload_memory_used();
        if used.saturating_sub(cached) + bytes > crate::upload::upload_memory_limit() {
            return None;
        }
        loop {
            self.cache.pop_front()?;
            if let Some(charge) = crate::upload::Charge::try_new(bytes) {
                return Some(charge);
            }
        }
    }

    fn cache_insert(&mut self, index: u32, cell: Arc<tokio::sync::OnceCell<Bytes>>) {
        self.cache.retain(|(i, _)| *i != index);
        if self.cache.len() >= CACHE_PIECES {
            self.cache.pop_front();
        }
        self.cache.push_back((index, cell));
    }
}

impl TorrentHandle {
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen_addr
    }

    /// Waits until the download is complete, or the torrent stopped by itself (a disk error: see
    /// [`TorrentError`]).
    pub async fn wait_complete(&self) -> Result<(), TorrentError> {
        self.shared.wait_done().await
    }

    /// Why the torrent stopped by itself, if it did; it then neither downloads nor uploads, and a
    /// restart (a new `start` with its resume data) retries.
    pub fn error(&self) -> Option<TorrentError> {
        self.shared.failure()
    }

    /// Changes the files' priorities (`PRIORITY_LOW`..`PRIORITY_HIGH`, by file index; files not listed
    /// are normal) while the torrent runs: the picker takes pieces of higher priority first from its
    /// next pick on. The file selection stays what the torrent was started with.
    pub fn set_file_priorities(&self, levels: &[u8]) {
        let shared = &self.shared;
        let priority = piece_priorities(
            &shared.torrent,
            shared.piece_sizes.len() as u32,
            shared.config.selected_files.as_deref(),
            Some(levels),
        );
        let mut st = shared.state.lock();
        for (i, p) in priority.into_iter().enumerate() {
            st.picker.set_priority(i as u32, p);
        }
    }

    /// Announces to the trackers now instead of at the end of the interval (as a `None` event).
    pub fn reannounce(&self) {
        self.shared.announce_now.notify_one();
    }

    /// Replaces the announce list (tiers of URLs) while the torrent runs, and announces to it at once.
    pub fn set_trackers(&self, tiers: &[Vec<String>]) {
        *self.shared.tiers.lock() = shuffled_tiers(tiers, &mut crate::rng::from_os());
        self.shared.announce_now.notify_one();
    }

    /// The announce list in use, tiers in order.
    pub fn trackers(&self) -> Vec<Vec<String>> {
        self.shared.tiers.lock().clone()
    }

    /// Tells trackers we stop, closes every connection, and flushes data.
    pub async fn stop(&self) {
        let _ = self.shared.stopping.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
        }
        let peers: Vec<mpsc::Sender<Command>> = self
            .shared
            .state
            .lock()
            .peers
            .values()
            .map(|p| p.tx.clone())
            .collect();
        for tx in peers {
            let _ = tx.try_send(Command::Disconnect);
        }
        let _ = self.shared.storage.sync();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_names_are_cleaned_and_capped() {
        use super::client_name;
        use torrent_core::MAX_CLIENT_NAME;
        assert_eq!(
            client_name("qBittorrent 4.6.2"),
            Some("qBittorrent 4.6.2".into())
        );
        assert_eq!(
            client_name("evil\u{1b}[31m\nname\0"),
            Some("evil[31mname".into())
        );
        assert_eq!(client_name(" \t\r "), None);
        let long = "x".repeat(1000);
        assert_eq!(
            client_name(&long).map(|n| n.chars().count()),
            Some(MAX_CLIENT_NAME)
        );
    }
    #[tokio::test]
    async fn the_queue_of_addresses_to_dial_is_bounded_and_keeps_the_newest() {
        // No peer slots, so nothing is dialled and the queue only fills.
        let seed = crate::testutil::seed(16 * 1024, 16 * 1024, |c| c.max_peers = 0).await;
        let shared = &seed.handle.shared;
        let addr = |i: u32| {
            std::net::SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881))
        };
        shared.add_peers((0..5000).map(addr));
        shared.add_peers((4990..5000).map(addr));
        let st = shared.state.lock();
        assert_eq!(st.known.len(), super::MAX_KNOWN);
        assert_eq!(st.known.back(), Some(&addr(4999)));
        assert_eq!(
            st.known.front(),
            Some(&addr(5000 - super::MAX_KNOWN as u32))
        );
    }

    #[test]
    fn tiers_are_shuffled_once_and_a_tracker_that_answers_leads_its_tier() {
        let urls = |n: usize| (0..n).map(|i| format!("udp://t{i}:1")).collect::<Vec<_>>();
        let tiers = vec![urls(5), vec!["http://solo/announce".to_string()]];
        let mut rng = crate::rng::from_os();
        let mut orders = HashSet::new();
        for _ in 0..50 {
            let shuffled = super::shuffled_tiers(&tiers, &mut rng);
            let mut sorted = shuffled[0].clone();
            sorted.sort();
            assert_eq!(sorted, tiers[0], "a shuffle keeps every tracker");
            assert_eq!(shuffled[1], tiers[1]);
            orders.insert(shuffled[0].clone());
        }
        assert!(orders.len() > 10, "tiers are not shuffled: {orders:?}");

        let mut tier = urls(4);
        super::promote(&mut tier, 2);
        assert_eq!(
            tier,
            ["udp://t2:1", "udp://t0:1", "udp://t1:1", "udp://t3:1"]
        );
        super::promote(&mut tier, 0);
        super::promote(&mut tier, 9);
        assert_eq!(
            tier,
            ["udp://t2:1", "udp://t0:1", "udp://t1:1", "udp://t3:1"]
        );
    }

    use super::{Command, PeerBudget, Shared};
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_freed_upload_slot_goes_to_a_newcomer_before_reconnections_from_an_ip_that_stalled_slots(
    ) {
        let seed = crate::testutil::seed(64 * 1024, 16 * 1024, |c| {
            c.upload_slots = 1;
            c.max_peers = 100;
        })
        .await;
        let shared = &seed.handle.shared;
        let mut receivers = Vec::new();
        let mut add = |shared: &Shared, ip: [u8; 4], port: u16| {
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            receivers.push(rx);
            let key = shared
                .add_peer(SocketAddr::from((ip, port)), false, tx)
                .expect("room");
            shared.peer_interested(key, true);
            key
        };
        // Two slots (one regular, one optimistic): two peers from the hostile IP take them and stall.
        let hostile = [127, 0, 0, 9];
        let first: Vec<u64> = (0..2).map(|i| add(shared, hostile, 1000 + i)).collect();
        for k in &first {
            assert!(
                !shared.state.lock().peers[k].am_choking,
                "a free slot is taken at once"
            );
            shared.set_stalled(*k, true);
            shared.remove_peer(*k);
        }
        // They come back on new connections (no turns yet), with many more, and the honest peer last.
        let again: Vec<u64> = (0..60).map(|i| add(shared, hostile, 2000 + i)).collect();
        let honest = add(shared, [127, 0, 0, 3], 3000);
        let holding = |shared: &Shared| -> Vec<u64> {
            let st = shared.state.lock();
            again
                .iter()
                .copied()
                .filter(|k| !st.peers[k].am_choking && !st.peers[k].stalled)
                .collect()
        };
        // Two reconnections took the slots before the honest peer came. The honest peer must take one
        // of them at once; each slot a hostile peer gets, it stalls, and by chance among 59 peers with
        // no turns the honest peer would rarely get the next.
        let mut given = 0;
        while shared.state.lock().peers[&honest].am_choking && given < 20 {
            let held = holding(shared);
            assert!(!held.is_empty(), "the slots are held");
            shared.set_stalled(held[0], true);
            given += 1;
        }
        assert!(
            !shared.state.lock().peers[&honest].am_choking,
            "the honest peer holds a slot"
        );
        assert_eq!(
            given, 0,
            "the honest peer took a hostile peer's slot at once"
        );
    }

    #[tokio::test]
    async fn a_full_peer_table_drops_the_peer_with_the_worst_record_for_a_newcomer() {
        let seed = crate::testutil::seed(64 * 1024, 16 * 1024, |c| c.max_peers = 3).await;
        let shared = &seed.handle.shared;
        let mut receivers = Vec::new();
        let mut add = |shared: &Shared, ip: [u8; 4], port: u16| {
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            receivers.push(rx);
            shared.add_peer(SocketAddr::from((ip, port)), false, tx)
        };
        let clean = add(shared, [127, 0, 0, 5], 1).expect("room");
        let flooder = add(shared, [127, 0, 0, 9], 1).expect("room");
        add(shared, [127, 0, 0, 6], 1).expect("room");
        // Full, nobody misbehaved: a newcomer is refused, nobody is dropped.
        assert!(add(shared, [127, 0, 0, 7], 1).is_none());
        shared.flooded(flooder);
        // The flooder's IP cannot take its own place back, but an honest newcomer takes it.
        assert!(add(shared, [127, 0, 0, 9], 2).is_none());
        let newcomer = add(shared, [127, 0, 0, 7], 2).expect("the flooder makes room");
        let st = shared.state.lock();
        assert!(!st.peers.contains_key(&flooder), "the flooder was dropped");
        assert!(st.peers.contains_key(&clean) && st.peers.contains_key(&newcomer));
        assert_eq!(st.peers.len(), 3);
        drop(st);
        assert!(
            matches!(receivers[1].try_recv(), Ok(Command::Disconnect)),
            "the flooder's connection is told to end"
        );
    }

    #[tokio::test]
    async fn the_optimistic_unchoke_rotates_over_every_choked_interested_peer() {
        let seed = crate::testutil::seed(64 * 1024, 16 * 1024, |c| c.upload_slots = 1).await;
        let shared = &seed.handle.shared;
        // Registered directly: the choker only looks at the shared table, not at connections.
        let mut receivers = Vec::new();
        let mut keys = Vec::new();
        for i in 0..10u16 {
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            let addr = SocketAddr::from(([127, 0, 0, 2], 10_000 + i));
            keys.push(shared.add_peer(addr, true, tx).expect("room for ten"));
            receivers.push(rx);
        }
        for p in shared.state.lock().peers.values_mut() {
            p.peer_interested = true;
        }
        let mut picked = HashSet::new();
        for _ in 0..300 {
            shared.state.lock().last_optimistic = Instant::now()
                .checked_sub(Duration::from_secs(31))
                .expect("a clock older than 31 s");
            shared.choke_round(10.0);
            let st = shared.state.lock();
            let optimistic: Vec<u64> = st
                .peers
                .iter()
                .filter(|(_, p)| p.optimistic)
                .map(|(k, _)| *k)
                .collect();
            assert_eq!(optimistic.len(), 1, "one optimistic slot");
            picked.insert(optimistic[0]);
        }
        // With every rate at zero the one regular slot goes to the lowest key; all nine others must
        // have had a turn (a fixed pick would alternate between two at most).
        let others: HashSet<u64> = keys[1..].iter().copied().collect();
        assert_eq!(picked, others);
    }

    #[tokio::test]
    async fn a_write_error_stops_the_torrent_with_a_typed_error() {
        let seed = crate::testutil::seed(256 * 1024, 16 * 1024, |_| {}).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&out).expect("mkdir");
        std::fs::write(&outside, b"precious").expect("write");
        let mut config = super::TorrentConfig::new(seed.handle.shared.torrent.clone(), out.clone());
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.use_trackers = false;
        config.pex = false;
        let handle = super::start(config).await.expect("starts");
        // The file the torrent created is swapped for a link before any piece arrives: every write
        // fails (as on a full disk, any write error does the same).
        std::fs::remove_file(out.join("data.bin")).expect("rm");
        std::os::unix::fs::symlink(&outside, out.join("data.bin")).expect("symlink");
        handle.shared.add_peers([seed.handle.listen_addr()]);
        let result = tokio::time::timeout(Duration::from_secs(60), handle.wait_complete())
            .await
            .expect("stops instead of fetching the pieces again for ever");
        let Err(super::TorrentError::Disk(e)) = result else {
            panic!("completed through a link");
        };
        assert!(metainfo::beneath::is_link_refused(&e.source), "{e}");
        assert_eq!(
            handle.error().map(|e| e.to_string()),
            Some(format!("stopped: {e}"))
        );
        // Stopped: no new connections, the existing ones closed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while handle.status().peers > 0 {
            assert!(Instant::now() < deadline, "peers still connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(handle
            .shared
            .add_peer(
                seed.handle.listen_addr(),
                true,
                tokio::sync::mpsc::channel(1).0
            )
            .is_none());
        assert_eq!(std::fs::read(&outside).expect("read"), b"precious");
        handle.stop().await;
    }

    #[test]
    fn a_peer_budget_is_shared_and_never_overdrawn() {
        let budget = PeerBudget::new(2);
        assert!(budget.try_take() && budget.try_take());
        assert!(!budget.try_take() && !budget.has_room());
        budget.give_back();
        assert!(budget.has_room() && budget.try_take());
        budget.set_max(5);
        assert_eq!(budget.used(), 2);
        assert!(budget.has_room());
        for _ in 0..10 {
            budget.give_back();
        }
        assert_eq!(budget.used(), 0, "never below zero");
    }
}
