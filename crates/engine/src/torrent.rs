//! One torrent's shared state: the torrent core (every policy decision, see `torrent_core`) behind a lock,
//! and what is purely I/O around it: piece buffers, the upload cache, the peers' writer queues, rate
//! limits, piece verification and writing, tracker announces. `Shared::pump` carries out the core's
//! actions; the tasks that feed it live in `launch.rs` (timers, trackers, dialling) and `peer.rs`.

use std::collections::{HashMap, VecDeque};
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
use torrent_core::{Action, PeerEvent, PeerKey, PunchStep, Refused, TorrentCore};
use tracker_proto::{Announce, Event as TrackerEvent};
use wire::{Message, PieceIndex};

use crate::bitfield::Bitfield;
pub use crate::link::PeerBudget;
use crate::link::{Out, PeerIo};
use crate::rate::Limiter;
use crate::storage::{piece_matches, DiskError, Storage};

/// What to download and how. Its fields are the engine's: owners set them through the methods below
/// (and `Discovery::apply`, `Carry::into_config`), and cannot read the torrent's internals back.
#[derive(Debug, Clone)]
pub struct TorrentConfig {
    pub(crate) torrent: Arc<Torrent>,
    /// Downloaded files go below this directory (at their torrent paths).
    pub(crate) download_dir: PathBuf,
    /// Address to accept peers on (port 0 picks one). Outgoing connections and tracker requests are sent
    /// from its IP when it is not unspecified.
    pub(crate) listen: SocketAddr,
    /// Peers to connect to directly.
    pub(crate) peers: Vec<SocketAddr>,
    /// Which files to download (`None`: all).
    pub(crate) selected_files: Option<Vec<bool>>,
    /// Per file, how urgent among the selected ones: `PRIORITY_LOW`, `_NORMAL` (the default) or `_HIGH`.
    /// The picker takes every wanted piece of a higher priority first.
    pub(crate) file_priorities: Option<Vec<u8>>,
    pub(crate) sequential: bool,
    /// Whether to use the torrent's trackers.
    pub(crate) use_trackers: bool,
    /// Connections to peers, established or being dialled.
    pub(crate) max_peers: usize,
    /// Caps on incoming connections that have not sent their handshake yet (on our own listener; a
    /// `Session` has its own).
    pub(crate) handshake: crate::conns::HandshakeLimits,
    pub(crate) upload_slots: usize,
    pub(crate) peer_id: PeerId,
    /// Bytes per second; `None` is unlimited.
    pub(crate) max_upload_rate: Option<u64>,
    pub(crate) max_download_rate: Option<u64>,
    /// A DHT node to find and announce peers through (never used for private torrents).
    pub(crate) dht: Option<crate::dht::DhtNode>,
    /// Peer exchange (BEP 11; never for private torrents).
    pub(crate) pex: bool,
    /// Limits shared with other torrents (a daemon's global rates), on top of this torrent's own.
    pub(crate) global_upload: Option<Arc<Limiter>>,
    pub(crate) global_download: Option<Arc<Limiter>>,
    /// A cap on connections shared with other torrents (a daemon's global peer limit).
    pub(crate) peer_budget: Option<Arc<PeerBudget>>,
    /// What a previous session knew, to start without rehashing everything.
    pub(crate) resume: Option<Resume>,
    /// Accept no connections of our own: a `Session` owns the listening socket at this address and
    /// hands us the peers that ask for this torrent.
    pub(crate) session_listener: Option<SocketAddr>,
    /// The `Session`'s uTP socket at that address, through which this torrent dials over uTP.
    pub(crate) session_utp: Option<crate::UtpEndpoint>,
    /// Which transports peer connections use, in and out (uTP first, TCP when it gets no answer).
    pub(crate) transports: crate::Transports,
    /// Local service discovery (BEP 14; never for private torrents) through this multicast group.
    pub(crate) lsd: bool,
    pub(crate) lsd_group: SocketAddr,
    /// The announce list to use instead of the torrent's own (`None`: the torrent's).
    pub(crate) trackers: Option<Vec<Vec<String>>>,
    /// Per file, the path components below `download_dir` where its data lives, when they differ from
    /// the torrent's own paths (a renamed file or folder). Each component must be a valid file name
    /// (`metainfo::validate_component`: no `..`, no separators), so every path stays inside the
    /// directory; the storage opens them through `metainfo::beneath` like the torrent's own.
    pub(crate) file_paths: Option<Vec<Vec<String>>>,
    /// Live connections from a magnet link's metadata phase, taken over when the torrent starts.
    pub(crate) carried: crate::carry::CarriedPeers,
    /// Message Stream Encryption: what we dial with and accept (on our own listener; a `Session`
    /// has its own for incoming peers).
    pub(crate) encryption: crate::encryption::Encryption,
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

/// BEP 14's IPv4 group and port.
pub const LSD_GROUP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    wire::LSD_GROUP_V4,
    wire::LSD_PORT,
));

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
            session_utp: None,
            transports: crate::Transports::default(),
            peer_budget: None,
            lsd: false,
            lsd_group: LSD_GROUP,
            trackers: None,
            file_paths: None,
            carried: Default::default(),
            encryption: crate::encryption::Encryption::Prefer,
        }
    }

    /// Another directory for the downloaded files than the one it was made with (its data moved).
    pub fn download_dir(&mut self, dir: PathBuf) -> &mut Self {
        self.download_dir = dir;
        self
    }

    /// Address to accept peers on (port 0 picks one); outgoing connections and tracker requests are
    /// sent from its IP when it is not unspecified.
    pub fn listen(&mut self, addr: SocketAddr) -> &mut Self {
        self.listen = addr;
        self
    }

    /// Peers to connect to directly, besides those discovery finds.
    pub fn peers(&mut self, peers: impl IntoIterator<Item = SocketAddr>) -> &mut Self {
        self.peers.extend(peers);
        self
    }

    /// Which files to download (`None`: all), and per file how urgent among the selected ones
    /// (`PRIORITY_LOW`, `_NORMAL`, `_HIGH`; `None`: all normal).
    pub fn files(&mut self, selected: Option<Vec<bool>>, priorities: Option<Vec<u8>>) -> &mut Self {
        self.selected_files = selected;
        self.file_priorities = priorities;
        self
    }

    /// Per file, the path components below the download directory where its data lives, when they
    /// differ from the torrent's own (a renamed file or folder); each must be a valid file name.
    pub fn file_paths(&mut self, paths: Option<Vec<Vec<String>>>) -> &mut Self {
        self.file_paths = paths;
        self
    }

    /// Pieces in order (for streaming) rather than rarest first.
    pub fn sequential(&mut self, on: bool) -> &mut Self {
        self.sequential = on;
        self
    }

    /// Whether to announce to trackers at all.
    pub fn use_trackers(&mut self, on: bool) -> &mut Self {
        self.use_trackers = on;
        self
    }

    /// The announce list to use instead of the torrent's own (`None`: the torrent's).
    pub fn trackers(&mut self, tiers: Option<Vec<Vec<String>>>) -> &mut Self {
        self.trackers = tiers;
        self
    }

    /// Connections to peers, established or being dialled, and the caps on incoming connections
    /// that have not sent their handshake yet (on the torrent's own listener).
    pub fn connections(
        &mut self,
        max_peers: usize,
        handshake: crate::conns::HandshakeLimits,
    ) -> &mut Self {
        self.max_peers = max_peers;
        self.handshake = handshake;
        self
    }

    /// Connections to peers, established or being dialled.
    pub fn max_peers(&mut self, max: usize) -> &mut Self {
        self.max_peers = max;
        self
    }

    /// Message Stream Encryption for dialling (and accepting, on the torrent's own listener), and
    /// the transports peer connections use.
    pub fn transport(
        &mut self,
        encryption: crate::encryption::Encryption,
        transports: crate::Transports,
    ) -> &mut Self {
        self.encryption = encryption;
        self.transports = transports;
        self
    }

    /// The torrent's own rate limits, bytes per second (`None`: unlimited).
    pub fn rates(&mut self, upload: Option<u64>, download: Option<u64>) -> &mut Self {
        self.max_upload_rate = upload;
        self.max_download_rate = download;
        self
    }

    /// Limits shared with other torrents (a daemon's global rates and peer cap), on top of the
    /// torrent's own.
    pub fn shared_limits(
        &mut self,
        upload: Arc<Limiter>,
        download: Arc<Limiter>,
        peers: Arc<PeerBudget>,
    ) -> &mut Self {
        self.global_upload = Some(upload);
        self.global_download = Some(download);
        self.peer_budget = Some(peers);
        self
    }

    /// What a previous session knew, to start without rehashing everything.
    pub fn resume(&mut self, resume: Option<Resume>) -> &mut Self {
        self.resume = resume;
        self
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

pub(crate) struct State {
    /// Every policy decision: the peer table, picker, choker, strikes and bans (see `torrent_core`).
    pub core: TorrentCore,
    /// Pieces being downloaded, block by block.
    buffers: HashMap<PieceIndex, crate::aligned::AlignedBuf>,
    /// The registered connections' writer queues.
    links: HashMap<PeerKey, PeerIo>,
    /// Recently used pieces; an entry being read from disk is an empty cell others wait on, so many
    /// requests for one piece cause one read.
    cache: VecDeque<(PieceIndex, Arc<tokio::sync::OnceCell<Bytes>>)>,
    /// What the timer loop sleeps until (`None`: no deadline); an earlier timeout wakes it.
    pub(crate) timer_at: Option<Instant>,
}

impl State {
    pub(crate) fn new(core: TorrentCore) -> State {
        State {
            core,
            buffers: HashMap::new(),
            links: HashMap::new(),
            cache: VecDeque::new(),
            timer_at: None,
        }
    }
}

/// Work that waits until the state's lock is released (`Shared::finish`).
pub(crate) enum After {
    /// Hash and write a completed piece.
    Verify(PieceIndex, crate::aligned::AlignedBuf),
    /// Flush and tell waiters: every wanted piece is verified.
    Completed,
}

/// Pieces kept in memory for serving uploads.
const CACHE_PIECES: usize = 32;

/// Everything the torrent's tasks share.
pub struct Shared {
    pub torrent: Arc<Torrent>,
    /// The announce list in the order it is tried (BEP 12): each tier shuffled once, and a URL that
    /// answered moved to the front of its tier.
    pub(crate) tiers: Mutex<Vec<Vec<String>>>,
    pub(crate) config: TorrentConfig,
    pub(crate) storage: Storage,
    pub(crate) state: Mutex<State>,
    pub id: InfoHash,
    pub listen_addr: SocketAddr,
    /// The uTP socket dials go through (our own, or the session's); `None` without uTP.
    pub(crate) utp: Option<crate::UtpEndpoint>,
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    /// Bytes that failed verification.
    pub wasted: AtomicU64,
    pub dht_announces: AtomicU64,
    pub lsd_announces: AtomicU64,
    /// Our address as connected peers (BEP 10 `yourip`) and trackers (BEP 24) report it.
    pub(crate) external_votes: Mutex<crate::external_ip::ExternalIpVotes>,
    /// Peers that answered our MSE handshake only in plaintext (`prefer` dials them so at once).
    pub(crate) plaintext_peers: Mutex<crate::encryption::PlaintextPeers>,
    pub(crate) complete: AtomicBool,
    /// Signalled on completion and on `failure`.
    pub(crate) complete_notify: Notify,
    /// Set once when the torrent stops by itself (a disk error); never cleared: a restart is a new
    /// torrent handle.
    pub(crate) failure: Mutex<Option<TorrentError>>,
    /// Addresses to dial (the core's `Connect` actions), and announces to make, for the tasks that
    /// do them.
    pub(crate) dial: mpsc::UnboundedSender<SocketAddr>,
    pub(crate) announces: mpsc::UnboundedSender<TrackerEvent>,
    /// Wakes the timer task when the core's next timeout may have come closer.
    pub(crate) timer: Notify,
    /// Signalled whenever a piece is verified and written (what a [`crate::Reader`] waits on).
    pub(crate) piece_done: Notify,
    /// Numbers the readers, whose time-critical pieces the picker keeps apart.
    pub(crate) next_reader: AtomicU64,
    /// What each tracker (by URL) answered last, for status views.
    pub(crate) tracker_stats: Mutex<HashMap<String, TrackerStats>>,
    pub(crate) stopping: watch::Sender<bool>,
    pub(crate) piece_sizes: Vec<u32>,
    /// Whole pieces waiting to be hashed and written. A peer that completes a piece waits for a slot
    /// (and so stops reading its socket): when the network outruns hashing, TCP slows the sender
    /// instead of finished pieces piling up in memory.
    pub(crate) verify_slots: Arc<tokio::sync::Semaphore>,
    /// This torrent's own rate limits (changeable while it runs).
    pub down_limit: Limiter,
    pub up_limit: Limiter,
    /// (when, downloaded, uploaded, download rate, upload rate) at the last status sample.
    pub(crate) rates: Mutex<(Instant, u64, u64, f64, f64)>,
    /// Merkle trees over files' piece layers, built once per file on the first BEP 52 hash request
    /// for it (off the async workers), and how many have been built.
    pub(crate) hash_trees: Mutex<HashMap<[u8; 32], Arc<tokio::sync::OnceCell<HashTree>>>>,
    pub(crate) hash_tree_builds: AtomicU64,
}

/// Every layer of a file's tree from its piece layer up to the root (`metainfo::merkle::layers`).
pub(crate) type HashTree = Arc<Vec<Vec<[u8; 32]>>>;

/// How many finished pieces may wait for hashing at once: 32 MiB of them, but at least 4 so that both
/// cores can hash while a write is under way.
pub(crate) fn verify_slots(piece_length: u64) -> usize {
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
    /// Our address as most connected peers see it (BEP 10 `yourip`; at least two must agree).
    pub external_ip: Option<std::net::IpAddr>,
    pub dht_announces: u64,
    pub lsd_announces: u64,
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
    /// The connection is encrypted (MSE, RC4).
    pub encrypted: bool,
    /// The connection runs over uTP (else TCP).
    pub utp: bool,
}

pub struct TorrentHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    /// Counts one report of our external address; logs when the majority changes.
    fn vote_external(&self, voter: crate::external_ip::Voter, seen: IpAddr) {
        if let Some(ip) = self.external_votes.lock().record(voter, seen) {
            tracing::info!("peers and trackers see us at {ip}");
        }
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

    /// The most a peer's reader should take in one read while a download limit is set. The limiter is
    /// paid after a read, so an unbounded read let a whole receive buffer (hundreds of KiB a peer)
    /// through ahead of the limit: a 500 kB download at 150 kB/s finished in 1.7 s. One block is the
    /// floor, so slow limits do not turn into tiny reads.
    pub(crate) fn download_read_cap(&self) -> Option<usize> {
        const FLOOR: usize = 16 * 1024 + 13;
        let local = self.down_limit.burst();
        let global = self.config.global_download.as_ref().and_then(|g| g.burst());
        let cap = match (local, global) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(cap.max(FLOOR))
    }

    pub(crate) async fn pass_download(&self, bytes: usize) {
        self.down_limit.acquire(bytes).await;
        if let Some(global) = &self.config.global_download {
            global.acquire(bytes).await;
        }
    }

    /// The verified pieces: what fast-resume data records.
    pub fn have(&self) -> Bitfield {
        self.state.lock().core.have().clone()
    }

    /// Connected peers: address and payload bytes from and to each.
    pub fn peer_list(&self) -> Vec<PeerInfo> {
        let st = self.state.lock();
        st.core
            .peers()
            .into_iter()
            .map(|p| PeerInfo {
                encrypted: st.links.get(&p.key).is_some_and(|l| l.encrypted),
                utp: st
                    .links
                    .get(&p.key)
                    .is_some_and(|l| l.carrier == crate::transport::Carrier::Utp),
                addr: p.addr,
                downloaded: p.downloaded,
                uploaded: p.uploaded,
                rate_down: p.rate_down,
                rate_up: p.rate_up,
                incoming: p.incoming,
                uploading_to: p.unchoked && p.interested,
                client: p.client,
            })
            .collect()
    }

    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    pub(crate) fn piece_start(&self, index: PieceIndex) -> u64 {
        u64::from(index.get()) * self.torrent.piece_length
    }

    /// Runs `f` on the torrent core under the lock and carries out every action it queued; returns
    /// `f`'s result and the work that must wait until the lock is released (see [`Shared::finish`]).
    pub(crate) fn with_core<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut TorrentCore, Instant) -> R,
    ) -> (R, Vec<After>) {
        let mut st = self.state.lock();
        let now = Instant::now();
        let result = f(&mut st.core, now);
        let mut after = Vec::new();
        self.pump(&mut st, now, &mut after);
        (result, after)
    }

    /// As [`Shared::with_core`], for callers that wait for nothing: the remaining work runs in a task.
    pub(crate) fn with_core_now<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut TorrentCore, Instant) -> R,
    ) -> R {
        let (result, after) = self.with_core(f);
        self.finish_later(after);
        result
    }

    /// Carries out the core's actions until it has none.
    pub(crate) fn pump(self: &Arc<Self>, st: &mut State, now: Instant, after: &mut Vec<After>) {
        while let Some(action) = st.core.poll_action() {
            self.dispatch(st, action, now, after);
        }
        // An idle core's timer loop may sleep with no deadline (see `TorrentCore::poll_timeout`): what
        // just happened (a first peer, a deferred dial) may have brought a timeout closer.
        if let Some(due) = st.core.poll_timeout() {
            if st.timer_at.is_none_or(|at| due < at) {
                st.timer_at = Some(due);
                self.timer.notify_one();
            }
        }
    }

    fn dispatch(
        self: &Arc<Self>,
        st: &mut State,
        action: Action,
        now: Instant,
        after: &mut Vec<After>,
    ) {
        match action {
            Action::Send { peer, message } => self.deliver(st, peer, Out::Message(message), now),
            Action::ReadBlock { peer, block } => {
                self.warm(st, peer, block);
                self.deliver(st, peer, Out::Block(block), now);
            }
            // The writer asks the core before it sends a block: one taken back is never sent.
            Action::CancelRead { .. } => {}
            Action::StoreBlock { block, data, .. } => {
                let size = self.piece_sizes[block.index.as_usize()] as usize;
                let end = block.begin as usize + data.len();
                let buf = st
                    .buffers
                    .entry(block.index)
                    .or_insert_with(|| crate::aligned::AlignedBuf::reused(size));
                buf[block.begin as usize..end].copy_from_slice(&data);
                self.downloaded
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Action::VerifyPiece { piece } => {
                if let Some(buf) = st.buffers.remove(&piece) {
                    after.push(After::Verify(piece, buf));
                }
            }
            Action::Disconnect { peer, reason } => {
                if let Some(link) = st.links.remove(&peer) {
                    // The connection's own task then ends with "disconnected by the torrent".
                    tracing::debug!("peer {} ({peer:?}): disconnecting: {reason}", link.addr);
                    drop(link);
                }
            }
            Action::Connect { addr } => {
                // Dials in flight count against a shared cap too: each holds a unit of it until its
                // handshake ends, or one burst of addresses would open thousands of sockets at once.
                let budget = self.config.peer_budget.as_ref();
                if budget.is_some_and(|b| !b.try_take()) || self.dial.send(addr).is_err() {
                    st.core.dial_deferred(addr, now);
                }
            }
            Action::Announce { event } => {
                // `stopped` is the tracker loop's own last announce when the torrent stops.
                if event != TrackerEvent::Stopped && self.announces.send(event).is_err() {
                    tracing::debug!("no tracker loop for the {event:?} announce");
                }
            }
            Action::Completed => after.push(After::Completed),
            Action::Banned { ip } => {
                tracing::warn!("banning {ip}: sent data that failed the hash check");
            }
            Action::Introduced { requester, target } => {
                tracing::info!("introduced {requester} to {target}: both dial each other (BEP 55)");
            }
            Action::Punch { target, step } => match step {
                PunchStep::Asked { relay } => tracing::info!(
                    "peer {target} unreachable: asked {relay}, which knows it, to introduce us (BEP 55)"
                ),
                PunchStep::Refused { relay, error } => tracing::info!(
                    "peer {target}: {relay} cannot introduce us ({error:?}); not asking again for a while"
                ),
                PunchStep::Told { relay } => tracing::info!(
                    "peer {target}: {relay} introduced us, dialling it as it dials us (BEP 55)"
                ),
                PunchStep::Connected { incoming } => tracing::info!(
                    "peer {target}: connected through the hole punch ({})",
                    if incoming { "its dial came in" } else { "our dial got through" }
                ),
            },
            Action::SeenAs { voter, ip } => {
                self.vote_external(crate::external_ip::Voter::Peer(voter), ip);
            }
            Action::ServeMetadata {
                peer,
                reply_id,
                piece,
            } => self.serve_metadata(st, peer, reply_id, piece, now),
            Action::ServeHashes { peer, range } => {
                let shared = self.clone();
                tokio::spawn(async move { shared.serve_hashes(peer, range).await });
            }
        }
    }

    /// Queues `out` for a peer's writer. A queue that is full or gone ends the connection (the core
    /// hears it closed): a control message is never dropped while the peer stays connected.
    fn deliver(self: &Arc<Self>, st: &mut State, peer: PeerKey, out: Out, now: Instant) {
        let Some(link) = st.links.get(&peer) else {
            return;
        };
        match link.out.try_send(out) {
            Ok(()) => {}
            Err(e) => {
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    tracing::debug!("peer {peer:?}: its writer queue is full, disconnecting");
                }
                st.links.remove(&peer);
                st.core.handle_event(peer, PeerEvent::Closed, now);
            }
        }
    }

    /// The second request for a piece not in memory starts reading it, so the writer finds it cached
    /// when it gets there (at most four such reads per peer at a time).
    fn warm(self: &Arc<Self>, st: &State, peer: PeerKey, b: wire::BlockRef) {
        let Some(link) = st.links.get(&peer) else {
            return;
        };
        let size = self
            .piece_sizes
            .get(b.index.as_usize())
            .copied()
            .unwrap_or(0);
        let uploads = &link.uploads;
        if st.core.pending_in_piece(peer, b.index) == 2
            && !st.cache.iter().any(|(i, _)| *i == b.index)
            && uploads.warming.load(Ordering::Relaxed) < 4
            && uploads.read_whole(size)
        {
            uploads.warming.fetch_add(1, Ordering::Relaxed);
            let shared = self.clone();
            let uploads = uploads.clone();
            tokio::spawn(async move {
                drop(shared.piece_data(b.index).await);
                uploads.warming.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    /// Queues a reply built by `build` if the peer's queued replies leave room for `bytes`, else
    /// `reject` (also when `build` has no answer).
    fn reply(
        self: &Arc<Self>,
        st: &mut State,
        peer: PeerKey,
        bytes: usize,
        build: impl FnOnce() -> Option<Message>,
        reject: Message,
        now: Instant,
    ) {
        let Some(link) = st.links.get(&peer) else {
            return;
        };
        let uploads = link.uploads.clone();
        let out = if !uploads.reserve_reply(bytes) {
            Out::Message(reject)
        } else if let Some(reply) = build() {
            Out::Reply(reply, bytes)
        } else {
            uploads.release_reply(bytes);
            Out::Message(reject)
        };
        self.deliver(st, peer, out, now);
    }

    /// Answers a BEP 9 request for a piece of our info dictionary.
    fn serve_metadata(
        self: &Arc<Self>,
        st: &mut State,
        peer: PeerKey,
        their_id: u8,
        piece: u32,
        now: Instant,
    ) {
        let info = &self.torrent.info_bytes;
        let start = piece as usize * wire::METADATA_PIECE;
        let extended = |m: wire::MetadataMessage| Message::Extended {
            id: their_id,
            payload: m.encode().into(),
        };
        let reject = extended(wire::MetadataMessage::Reject { piece });
        let build = || {
            (start < info.len()).then(|| {
                let end = (start + wire::METADATA_PIECE).min(info.len());
                extended(wire::MetadataMessage::Data {
                    piece,
                    total_size: info.len() as u64,
                    data: info[start..end].to_vec(),
                })
            })
        };
        self.reply(st, peer, wire::METADATA_PIECE + 64, build, reject, now);
    }

    /// Answers a BEP 52 hash request from trees built once per file; a reply reserves its hashes and
    /// at most 32 uncles, so a peer that does not read gets rejects, not our memory.
    async fn serve_hashes(self: Arc<Self>, peer: PeerKey, range: wire::HashRange) {
        let trees = self.hash_tree(&range).await;
        let bytes = (range.length as usize + 32) * 32;
        let build = || {
            let tree = trees?;
            let hashes = metainfo::merkle::proof(
                &tree,
                range.index as usize,
                range.length as usize,
                range.proof_layers as usize,
            )?;
            Some(Message::Hashes { range, hashes })
        };
        let mut st = self.state.lock();
        let now = Instant::now();
        self.reply(&mut st, peer, bytes, build, Message::HashReject(range), now);
        let mut after = Vec::new();
        self.pump(&mut st, now, &mut after);
        drop(st);
        self.finish_later(after);
    }

    /// Does what had to wait for the lock's release. A verification waits for a slot first: a peer
    /// that completes a piece stops reading its socket until one is free.
    pub(crate) async fn finish(self: &Arc<Self>, after: Vec<After>) {
        for work in after {
            match work {
                After::Verify(index, buf) => {
                    let Ok(slot) = self.verify_slots.clone().acquire_owned().await else {
                        return;
                    };
                    let shared = self.clone();
                    tokio::task::spawn_blocking(move || {
                        shared.verify_and_store(index, buf);
                        drop(slot);
                    });
                }
                After::Completed => {
                    let shared = self.clone();
                    let _ = tokio::task::spawn_blocking(move || shared.completed()).await;
                }
            }
        }
    }

    /// [`Shared::finish`] in a task of its own.
    pub(crate) fn finish_later(self: &Arc<Self>, after: Vec<After>) {
        if !after.is_empty() {
            let shared = self.clone();
            tokio::spawn(async move { shared.finish(after).await });
        }
    }

    /// Every wanted piece is verified: the data is flushed, then waiters hear of it.
    fn completed(&self) {
        if !self.complete.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.storage.sync() {
                tracing::error!("syncing data: {e}");
            }
            self.complete_notify.notify_waiters();
        }
    }

    /// Registers a connection whose handshakes are done: the core decides whether it is taken, and
    /// queues our opening messages to `link`'s writer.
    pub(crate) fn register(
        self: &Arc<Self>,
        addr: SocketAddr,
        outgoing: bool,
        ours: &wire::Handshake,
        theirs: &wire::Handshake,
        link: PeerIo,
    ) -> Result<(PeerKey, Vec<After>), Refused> {
        let mut st = self.state.lock();
        let now = Instant::now();
        let key = st.core.add_peer(addr, !outgoing, ours, theirs, now)?;
        st.links.insert(key, link);
        let mut after = Vec::new();
        self.pump(&mut st, now, &mut after);
        Ok((key, after))
    }

    /// A peer's connection is over (whoever ended it).
    pub(crate) fn unregister(self: &Arc<Self>, key: PeerKey) {
        let link = {
            let mut st = self.state.lock();
            let now = Instant::now();
            let link = st.links.remove(&key);
            st.core.handle_event(key, PeerEvent::Closed, now);
            let mut after = Vec::new();
            self.pump(&mut st, now, &mut after);
            drop(st);
            self.finish_later(after);
            link
        };
        drop(link);
    }

    fn verify_and_store(self: &Arc<Self>, index: PieceIndex, buf: crate::aligned::AlignedBuf) {
        let abandon = |shared: &Arc<Self>| {
            shared.with_core_now(|core, now| core.piece_abandoned(index, now));
        };
        if self.failure.lock().is_some() {
            // Stopped on a disk error: nothing more is written.
            abandon(self);
            return;
        }
        let ok = piece_matches(&self.torrent, index, &buf);
        if ok {
            if let Err(e) = self.storage.write(self.piece_start(index), &buf) {
                abandon(self);
                self.fail(TorrentError::Disk(e));
                return;
            }
            let mut st = self.state.lock();
            // Kept for uploads if the upload memory budget has room (the buffer is dropped otherwise).
            if let Some(charge) = st.make_room(buf.len()) {
                st.cache_insert(
                    index,
                    Arc::new(tokio::sync::OnceCell::new_with(Some(
                        crate::upload::charged(buf, charge),
                    ))),
                );
            }
        } else {
            self.wasted.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        let ((), after) = self.with_core(|core, now| core.piece_checked(index, ok, now));
        if ok {
            self.piece_done.notify_waiters();
        }
        for work in after {
            match work {
                After::Completed => self.completed(),
                other => self.finish_later(vec![other]),
            }
        }
    }

    /// Stops the torrent on an error it cannot get past by itself: closes every connection, ends its
    /// tasks (trackers hear `stopped`), flushes what was written, and wakes `wait_done`. The first
    /// error is kept and logged once; later ones (pieces that were being written at the time) are not.
    pub(crate) fn fail(self: &Arc<Self>, error: TorrentError) {
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
        self.with_core_now(|core, now| core.stop(now));
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
    pub(crate) fn cached_piece(&self, index: PieceIndex) -> Option<Bytes> {
        let st = self.state.lock();
        if !st.core.have().get(index.get()) {
            return None;
        }
        st.cache
            .iter()
            .find(|(i, _)| *i == index)
            .and_then(|(_, cell)| cell.get().cloned())
    }

    /// A verified piece's bytes, from the cache or the disk; `None` also when the upload memory budget
    /// has no room for another piece (the caller reads just the block it needs).
    pub(crate) async fn piece_data(self: &Arc<Self>, index: PieceIndex) -> Option<Bytes> {
        let size = *self.piece_sizes.get(index.as_usize())? as usize;
        let (cell, charge) = {
            let mut st = self.state.lock();
            if !st.core.have().get(index.get()) {
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
        let size = *self.piece_sizes.get(b.index.as_usize())?;
        if !self.state.lock().core.have().get(b.index.get()) {
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
            .filter(|&i| PieceIndex::try_from(i).is_ok_and(|i| st.core.picker().priority_of(i) > 0))
            .map(|i| u64::from(self.piece_sizes[i]))
            .sum();
        Status {
            pieces_have: st.core.have().count(),
            pieces_total: self.piece_sizes.len() as u32,
            left: st.core.picker().wanted_left(),
            wanted,
            downloaded: self.downloaded.load(Ordering::Relaxed),
            uploaded: self.uploaded.load(Ordering::Relaxed),
            download_rate: down,
            upload_rate: up,
            peers: st.core.peer_count(),
            complete: self.is_complete(),
            banned: st.core.banned_count(),
            pex_sent: st.core.stats().pex_sent,
            external_ip: self.external_votes.lock().majority(),
            dht_announces: self.dht_announces.load(Ordering::Relaxed),
            lsd_announces: self.lsd_announces.load(Ordering::Relaxed),
        }
    }

    /// Queues addresses to connect to (dialled within the connection limits).
    pub fn add_peers(self: &Arc<Self>, addrs: impl IntoIterator<Item = SocketAddr>) {
        let addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        self.with_core_now(|core, now| core.add_addresses(addrs, now));
    }

    fn announce_params(&self, event: TrackerEvent) -> Announce {
        let left = self.state.lock().core.picker().wanted_left();
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

    /// Announces to each tier (first URL that answers, BEP 12); returns the shortest interval.
    pub(crate) async fn announce_all(self: &Arc<Self>, event: TrackerEvent) -> Option<Duration> {
        let params = self.announce_params(event);
        let mut interval: Option<Duration> = None;
        // A copy: the lock is not held across the network calls.
        let tiers = self.tiers.lock().clone();
        for (t, tier) in tiers.iter().enumerate() {
            for (position, url) in tier.iter().enumerate() {
                self.note_tracker(url, |s| s.announcing = true);
                let answer = crate::tracker::announce(url, &params, self.config.listen.ip()).await;
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
                            self.vote_external(
                                crate::external_ip::Voter::Tracker(url.clone()),
                                seen,
                            );
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
}

/// Each tier of an announce list in random order (BEP 12), so clients spread over a tier's trackers.
pub(crate) fn shuffled_tiers(tiers: &[Vec<String>], rng: &mut crate::rng::Rng) -> Vec<Vec<String>> {
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
pub(crate) fn piece_priorities(
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

impl State {
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

    fn cache_insert(&mut self, index: PieceIndex, cell: Arc<tokio::sync::OnceCell<Bytes>>) {
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
        shared.with_core_now(|core, _| {
            for (i, p) in priority.into_iter().enumerate() {
                if let Ok(i) = PieceIndex::try_from(i) {
                    core.set_piece_priority(i, p);
                }
            }
        });
    }

    /// Announces to the trackers now instead of at the end of the interval (as a `None` event).
    pub fn reannounce(&self) {
        self.shared.with_core_now(|core, now| core.reannounce(now));
        self.shared.timer.notify_one();
    }

    /// Replaces the announce list (tiers of URLs) while the torrent runs, and announces to it at once.
    pub fn set_trackers(&self, tiers: &[Vec<String>]) {
        *self.shared.tiers.lock() = shuffled_tiers(tiers, &mut crate::rng::from_os());
        self.reannounce();
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
        self.shared.with_core_now(|core, now| core.stop(now));
        let _ = self.shared.storage.sync();
    }
}

#[cfg(test)]
mod tests {
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

    use super::PeerBudget;
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

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
        let handle = crate::start(config).await.expect("starts");
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
        let hs = wire::Handshake::new(
            ids::InfoHash::new([1; 20]),
            ids::PeerId::new([2; 20]),
            false,
        );
        let refused = handle.shared.with_core_now(|core, now| {
            core.add_peer(seed.handle.listen_addr(), true, &hs, &hs, now)
        });
        assert_eq!(refused, Err(torrent_core::Refused::Stopped));
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
