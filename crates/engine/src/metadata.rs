//! A magnet link's metadata phase (BEP 9, and BEP 52 piece layers), as I/O for
//! `torrent_core::MetadataCore` on the torrent's own peer stack: connections are dialled by
//! `peer::dial`, frames decoded by `wire::Decoder`, and when the info dictionary is checked every live
//! connection is handed over ([`CarriedPeers`]) to the torrent, which `engine::start` makes from it,
//! with what each peer said meanwhile (its extension handshake, bitfield, haves, interest).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ids::{InfoHash, PeerId};
use metainfo::merkle::{self, Hash256};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use torrent_core::{MetaAction, MetadataConfig, MetadataCore, PeerKey};
use tracker_proto::{Announce, Event as TrackerEvent};
use wire::{Decoder, Handshake, HashRange, Message};

pub use crate::carry::CarriedPeers;
use crate::carry::{Carried, CarriedPeer};
pub use crate::error::MetadataError;
use crate::peer::Dial;
use crate::transport::{IncomingPeer, PeerStream};
pub use torrent_core::metadata::UT_METADATA_ID;

/// Messages queued for one peer's socket in the metadata phase; a peer that lets more pile up (it
/// asks for metadata and does not read our rejects) is dropped.
const LINK_QUEUE: usize = 256;
/// How long live connections have to finish their writes when the metadata is complete.
const HANDOVER_GRACE: Duration = Duration::from_secs(2);

/// What to fetch and from where.
pub struct MetadataRequest {
    /// The 20-byte id used in handshakes and announces.
    pub info_hash: InfoHash,
    /// The hashes the info dictionary must have (at least one): SHA-1 (v1) and SHA-256 (v2).
    pub expect_v1: Option<[u8; 20]>,
    pub expect_v2: Option<[u8; 32]>,
    pub trackers: Vec<String>,
    pub peers: Vec<SocketAddr>,
    /// Our listen address (its IP is used for outgoing connections; its port is announced).
    pub listen: SocketAddr,
    pub peer_id: PeerId,
    /// Also look the info-hash up in the DHT.
    pub dht: Option<crate::dht::DhtNode>,
    /// Connections at most.
    pub max_peers: usize,
    /// MSE for the connections (a plaintext retry under `Prefer`, as the torrent's own dials).
    pub encryption: crate::Encryption,
}

/// What a magnet link's peers gave us.
pub struct Metadata {
    /// The info dictionary, matching every expected hash.
    pub info: Vec<u8>,
    /// For a v2-only torrent, the piece layer of each file longer than a piece (BEP 52 hash requests),
    /// each proven against its file's `pieces root`. Empty otherwise.
    pub piece_layers: HashMap<Hash256, Vec<Hash256>>,
    /// The connections that fetched it, to download over.
    pub peers: CarriedPeers,
    /// The peer id they know us by.
    pub peer_id: PeerId,
}

/// Whether `info` has every hash the magnet link names.
fn matches(request_v1: Option<[u8; 20]>, request_v2: Option<[u8; 32]>, info: &[u8]) -> bool {
    use sha1::Digest;
    (request_v1.is_some() || request_v2.is_some())
        && request_v1.is_none_or(|h| sha1::Sha1::digest(info).as_slice() == h)
        && request_v2.is_none_or(|h| sha2::Sha256::digest(info).as_slice() == h)
}

struct State {
    core: MetadataCore,
    links: HashMap<PeerKey, mpsc::Sender<Message>>,
    info: Option<Vec<u8>>,
    layers: Option<LayerFetch>,
}

struct Hub {
    state: Mutex<State>,
    expect: (Option<[u8; 20]>, Option<[u8; 32]>),
    dial: mpsc::UnboundedSender<SocketAddr>,
    done: watch::Sender<bool>,
    timer: tokio::sync::Notify,
}

impl Hub {
    fn with_core<R>(&self, f: impl FnOnce(&mut MetadataCore, Instant) -> R) -> R {
        let mut st = self.state.lock();
        let now = Instant::now();
        let r = f(&mut st.core, now);
        self.pump(&mut st, now);
        r
    }

    /// Carries out the core's actions until it has none.
    fn pump(&self, st: &mut State, now: Instant) {
        while let Some(action) = st.core.poll_action() {
            match action {
                MetaAction::Send { peer, message } => {
                    let sent = st.links.get(&peer).map(|l| l.try_send(message));
                    if let Some(Err(_)) = sent {
                        // Never dropped silently: a peer that cannot take it is let go.
                        st.links.remove(&peer);
                        st.core.closed(peer, now);
                    }
                }
                MetaAction::Connect { addr } => {
                    let _ = self.dial.send(addr);
                }
                MetaAction::Disconnect { peer, reason } => {
                    tracing::debug!("metadata peer {}: {reason}", peer.0);
                    st.links.remove(&peer);
                }
                MetaAction::Banned { ip } => tracing::info!("banned {ip}: bad metadata"),
                MetaAction::CheckInfo { info } => {
                    let layers = self.check_info(&info);
                    let ranges = layers.as_ref().map(|l| l.pending.clone());
                    if layers.is_some() {
                        st.info = Some(info);
                    } else {
                        tracing::debug!("metadata does not match the info-hash");
                    }
                    st.layers = layers;
                    st.core.info_checked(ranges, now);
                }
                MetaAction::CheckHashes {
                    peer,
                    range,
                    hashes,
                } => {
                    let ok = st
                        .layers
                        .as_mut()
                        .is_some_and(|l| l.received(range, &hashes));
                    st.core.hashes_checked(peer, range, ok, now);
                }
                MetaAction::Done => {
                    let _ = self.done.send(true);
                }
            }
        }
        self.timer.notify_one();
    }

    /// The piece layers still to fetch when `info` is the torrent's, `None` when it is not.
    fn check_info(&self, info: &[u8]) -> Option<LayerFetch> {
        if !matches(self.expect.0, self.expect.1, info) {
            return None;
        }
        match metainfo::Torrent::from_info_bytes(info) {
            Ok(torrent) => Some(LayerFetch::new(&torrent)),
            Err(e) => {
                tracing::warn!("metadata matches the info-hash but is not a torrent: {e}");
                None
            }
        }
    }
}

/// Downloads the info dictionary (and a v2-only torrent's piece layers) from the peers, keeping the
/// connections for the download. Gives up after `timeout`.
pub async fn fetch_metadata(
    request: &MetadataRequest,
    timeout: Duration,
) -> Result<Metadata, MetadataError> {
    fetch_metadata_with(request, timeout, None).await
}

/// [`fetch_metadata`], also answering the peers that dial us for the torrent (a session hands them
/// over on `incoming`).
pub(crate) async fn fetch_metadata_with(
    request: &MetadataRequest,
    timeout: Duration,
    mut incoming: Option<mpsc::UnboundedReceiver<IncomingPeer>>,
) -> Result<Metadata, MetadataError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (dial_tx, mut dial_rx) = mpsc::unbounded_channel();
    let (done, mut done_rx) = watch::channel(false);
    let config = MetadataConfig {
        max_peers: request.max_peers.max(1),
        listen: Some(request.listen),
        client: Some(format!("Spore {}", env!("CARGO_PKG_VERSION"))),
        ..MetadataConfig::default()
    };
    let hub = Arc::new(Hub {
        state: Mutex::new(State {
            core: MetadataCore::new(config, Instant::now()),
            links: HashMap::new(),
            info: None,
            layers: None,
        }),
        expect: (request.expect_v1, request.expect_v2),
        dial: dial_tx,
        done,
        timer: tokio::sync::Notify::new(),
    });
    let how = Arc::new(Dial {
        holepunch: false,
        bind: request.listen,
        info_hash: request.info_hash,
        peer_id: request.peer_id,
        dht: request.dht.is_some(),
        encryption: request.encryption,
        // No uTP socket exists before the torrent starts: the metadata phase dials over TCP.
        utp: None,
        transports: crate::Transports {
            tcp: true,
            utp: false,
        },
    });
    let discovery = tokio::spawn(discover(
        hub.clone(),
        request.info_hash,
        request.peer_id,
        request.listen,
        request.trackers.clone(),
        request.peers.clone(),
        request.dht.clone(),
    ));
    let _discovery = AbortOnDrop(discovery);
    let mut tasks: JoinSet<Option<CarriedPeer>> = JoinSet::new();
    let mut peers = Vec::new();
    loop {
        let next = hub.state.lock().core.poll_timeout();
        let wake = next
            .map(tokio::time::Instant::from_std)
            .map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            addr = dial_rx.recv() => {
                let Some(addr) = addr else { continue };
                let (hub, how, done) = (hub.clone(), how.clone(), hub.done.subscribe());
                tasks.spawn(async move {
                    let dialled = tokio::select! {
                        r = crate::peer::dial(&how, addr) => r,
                        _ = until_done(done) => return None,
                    };
                    match dialled {
                        Ok((stream, ours, theirs)) => {
                            connection(hub, stream, addr, true, ours, theirs).await
                        }
                        Err(e) => {
                            tracing::debug!("metadata peer {addr}: {e:#}");
                            hub.with_core(|core, now| core.dial_failed(addr, now));
                            None
                        }
                    }
                });
            }
            peer = next_incoming(&mut incoming) => {
                let Some(IncomingPeer { mut stream, addr, theirs }) = peer else {
                    incoming = None;
                    continue;
                };
                let ours = Handshake::new(request.info_hash, request.peer_id, request.dht.is_some());
                let hub = hub.clone();
                tasks.spawn(async move {
                    if let Err(e) = stream.write_all(&ours.encode()).await {
                        tracing::debug!("incoming metadata peer {addr}: {e}");
                        return None;
                    }
                    connection(hub, stream, addr, false, ours, theirs).await
                });
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                // A connection hands itself over as soon as the metadata is complete.
                if let Ok(Some(peer)) = joined {
                    peers.push(peer);
                }
            }
            _ = hub.timer.notified() => {}
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(MetadataError::Timeout { secs: timeout.as_secs() });
                }
                hub.with_core(|core, now| core.handle_timeout(now));
            }
            _ = done_rx.changed() => break,
        }
    }
    // The live connections finish what they were writing and hand themselves over.
    let grace = tokio::time::Instant::now() + HANDOVER_GRACE;
    while let Ok(Some(joined)) = tokio::time::timeout_at(grace, tasks.join_next()).await {
        if let Ok(Some(peer)) = joined {
            peers.push(peer);
        }
    }
    tasks.abort_all();
    let mut st = hub.state.lock();
    let info = st.info.take().unwrap_or_default();
    let piece_layers = st.layers.take().map(|l| l.layers).unwrap_or_default();
    let banned = st.core.banned().copied().collect();
    drop(st);
    tracing::debug!("metadata fetched; {} connections carry over", peers.len());
    Ok(Metadata {
        info,
        piece_layers,
        peers: CarriedPeers::new(Carried { peers, banned }),
        peer_id: request.peer_id,
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next peer a session hands over; never, without a session or once it stopped handing over.
async fn next_incoming(
    incoming: &mut Option<mpsc::UnboundedReceiver<IncomingPeer>>,
) -> Option<IncomingPeer> {
    match incoming {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn until_done(mut done: watch::Receiver<bool>) {
    while !*done.borrow_and_update() {
        if done.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Finds peers every 10 s until the fetch ends: the link's and the caller's, its trackers, the DHT.
async fn discover(
    hub: Arc<Hub>,
    info_hash: InfoHash,
    peer_id: PeerId,
    listen: SocketAddr,
    trackers: Vec<String>,
    given: Vec<SocketAddr>,
    dht: Option<crate::dht::DhtNode>,
) {
    loop {
        hub.with_core(|core, now| core.add_addresses(given.clone(), now));
        let params = Announce {
            info_hash,
            peer_id,
            port: listen.port(),
            uploaded: 0,
            downloaded: 0,
            left: 1,
            event: TrackerEvent::Started,
            numwant: Some(50),
            // The same key on every announce (BEP 7: one client announcing from two addresses).
            key: Some(u32::from_le_bytes([
                peer_id[8],
                peer_id[9],
                peer_id[10],
                peer_id[11],
            ])),
            ip: None,
        };
        for url in &trackers {
            match crate::tracker::announce(url, &params, listen.ip()).await {
                Ok(r) => hub.with_core(|core, now| core.add_addresses(r.peers, now)),
                Err(e) => tracing::warn!("tracker {url}: {e:#}"),
            }
        }
        if let Some(node) = &dht {
            let lookup = tokio::time::timeout(Duration::from_secs(15), node.get_peers(info_hash));
            if let Ok(peers) = lookup.await {
                hub.with_core(|core, now| core.add_addresses(peers, now));
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// One connection in the metadata phase: frames in to the core, its messages out, until the core lets
/// it go (`None`) or the metadata is complete (the connection, for the torrent).
async fn connection(
    hub: Arc<Hub>,
    stream: PeerStream,
    addr: SocketAddr,
    outgoing: bool,
    ours: Handshake,
    theirs: Handshake,
) -> Option<CarriedPeer> {
    let (tx, mut rx) = mpsc::channel(LINK_QUEUE);
    let key = {
        let mut st = hub.state.lock();
        let now = Instant::now();
        match st.core.add_peer(addr, &ours, &theirs, now) {
            Ok(key) => {
                st.links.insert(key, tx);
                hub.pump(&mut st, now);
                key
            }
            Err(e) => {
                tracing::debug!("metadata peer {addr}: {e}");
                if outgoing {
                    st.core.dial_failed(addr, now);
                    hub.pump(&mut st, now);
                }
                return None;
            }
        }
    };
    let (carrier, encrypted) = (stream.carrier(), stream.encrypted());
    let (mut read, mut write) = stream.into_split();
    let decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::new();
    let mut done = hub.done.subscribe();
    let result: anyhow::Result<()> = async {
        loop {
            if *done.borrow_and_update() {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = done.changed() => {}
                message = rx.recv() => {
                    let Some(message) = message else {
                        anyhow::bail!("let go by the metadata phase");
                    };
                    message.encode(&mut out);
                    while let Ok(m) = rx.try_recv() {
                        m.encode(&mut out);
                    }
                    write.write_all(&out).await?;
                    out.clear();
                }
                n = read.read_buf(&mut buf) => {
                    if n? == 0 {
                        anyhow::bail!("peer closed the connection");
                    }
                    let mut frames = Vec::new();
                    let decoded = loop {
                        match decoder.decode(&mut buf) {
                            Ok(Some(m)) => frames.push(m),
                            Ok(None) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    };
                    hub.with_core(|core, now| {
                        for m in frames {
                            core.handle_message(key, m, now);
                        }
                    });
                    decoded?;
                    if buf.capacity() - buf.len() < 16 * 1024 {
                        buf.reserve(64 * 1024);
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("metadata peer {addr}: {e:#}");
        let mut st = hub.state.lock();
        let now = Instant::now();
        st.links.remove(&key);
        st.core.closed(key, now);
        if outgoing {
            st.core.dial_failed(addr, now);
        }
        hub.pump(&mut st, now);
        return None;
    }
    // What the core queued last goes out before the torrent's first messages.
    while let Ok(m) = rx.try_recv() {
        m.encode(&mut out);
    }
    if !out.is_empty() && write.write_all(&out).await.is_err() {
        return None;
    }
    let said = {
        let mut st = hub.state.lock();
        st.links.remove(&key)?;
        st.core.take_carried(key)
    };
    Some(CarriedPeer {
        stream: PeerStream::from_halves(read, write, carrier, encrypted),
        addr,
        outgoing,
        ours,
        theirs,
        buffered: buf,
        said,
    })
}

/// Most hashes asked for in one BEP 52 request (libtorrent refuses more than 8192 and, when it
/// receives piece-layer hashes, anything but 512 or the rest of the file).
const HASHES_PER_REQUEST: usize = 512;

/// The piece layers a v2-only torrent from a magnet link lacks (they are outside the info dictionary),
/// asked for in aligned chunks, each proven up to its file's `pieces root`.
struct LayerFetch {
    pending: Vec<HashRange>,
    /// Per file root: its piece count, and the layer as it fills in.
    files: HashMap<Hash256, (usize, Vec<Hash256>)>,
    layers: HashMap<Hash256, Vec<Hash256>>,
    /// The piece-layer hash of the absent pieces past a file's end.
    pad: Hash256,
}

impl LayerFetch {
    fn new(torrent: &metainfo::Torrent) -> LayerFetch {
        let blocks = (torrent.piece_length / merkle::BLOCK_SIZE as u64) as usize;
        let mut fetch = LayerFetch {
            pending: Vec::new(),
            files: HashMap::new(),
            layers: HashMap::new(),
            pad: merkle::pad_root(blocks, [0; 32]),
        };
        // Hybrid torrents are checked by their v1 hashes alone until layers are known.
        if torrent.version != metainfo::Version::V2 {
            return fetch;
        }
        let piece_level = blocks.trailing_zeros();
        for f in torrent
            .files
            .iter()
            .filter(|f| f.length > torrent.piece_length)
        {
            let Some(root) = f.pieces_root else { continue };
            if fetch.files.contains_key(&root) {
                continue;
            }
            let pieces = f.length.div_ceil(torrent.piece_length) as usize;
            // As libtorrent asks: chunks of 512 and the rest, with proof layers up to just below
            // the root (uncles for the layers a chunk does not span).
            let proof_layers = pieces.next_power_of_two().trailing_zeros() - 1;
            for index in (0..pieces).step_by(HASHES_PER_REQUEST) {
                fetch.pending.push(HashRange {
                    pieces_root: root,
                    base_layer: piece_level,
                    index: index as u32,
                    length: (pieces - index).min(HASHES_PER_REQUEST) as u32,
                    proof_layers,
                });
            }
            fetch.files.insert(root, (pieces, vec![[0; 32]; pieces]));
        }
        fetch
    }

    /// Takes an answer to one of our requests if its proof holds (`false` if not).
    fn received(&mut self, range: HashRange, hashes: &[Hash256]) -> bool {
        let Some(at) = self.pending.iter().position(|r| {
            r.pieces_root == range.pieces_root && r.index == range.index && r.length == range.length
        }) else {
            return false;
        };
        let (index, length) = (range.index as usize, range.length as usize);
        let Some(proven) = merkle::verify_proof(hashes, index, length, self.pad, range.pieces_root)
        else {
            return false;
        };
        let Some((pieces, layer)) = self.files.get_mut(&range.pieces_root) else {
            return false;
        };
        let end = (index + length).min(*pieces);
        layer[index..end].copy_from_slice(&proven[..end - index]);
        self.pending.remove(at);
        if !self
            .pending
            .iter()
            .any(|r| r.pieces_root == range.pieces_root)
        {
            if let Some((_, layer)) = self.files.remove(&range.pieces_root) {
                self.layers.insert(range.pieces_root, layer);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_info_dictionary_of_many_windows_is_fetched_from_a_seed_over_one_connection_kept() {
        // Thousands of long file names make an info dictionary of more than 16 metadata pieces,
        // so the window has to slide for the fetch to finish.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("content/many");
        std::fs::create_dir_all(&root).unwrap();
        for i in 0..2500 {
            let name = format!("{i:05}-{}", "n".repeat(110));
            std::fs::write(root.join(name), [i as u8]).unwrap();
        }
        let created = metainfo::create(
            &root,
            &metainfo::CreateOptions::default(),
            &std::sync::atomic::AtomicU64::new(0),
        )
        .unwrap();
        let info_len = created.torrent.info_bytes.len();
        let window = torrent_core::metadata::INFO_WINDOW as usize;
        assert!(info_len > (window + 1) * wire::METADATA_PIECE, "{info_len}");
        let torrent = std::sync::Arc::new(created.torrent);
        let mut config =
            crate::torrent::TorrentConfig::new(torrent.clone(), dir.path().join("content"));
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.use_trackers = false;
        let seed = crate::start(config).await.unwrap();
        let request = MetadataRequest {
            info_hash: crate::torrent::wire_id(&torrent),
            expect_v1: torrent.info_hash_v1,
            expect_v2: None,
            trackers: Vec::new(),
            peers: vec![seed.listen_addr()],
            listen: SocketAddr::from(([127, 0, 0, 1], 1)),
            peer_id: crate::torrent::new_peer_id(),
            dht: None,
            max_peers: 50,
            encryption: crate::Encryption::Require,
        };
        let got = fetch_metadata(&request, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(got.info == torrent.info_bytes, "the fetched info differs");
        assert_eq!(got.peers.len(), 1, "the seed's connection carries over");
        let carried = got.peers.take().unwrap();
        let peer = &carried.peers[0];
        assert_eq!(peer.addr, seed.listen_addr());
        // The seed's extension handshake and its have-all (or bitfield) wait for the torrent core.
        assert!(
            peer.said
                .iter()
                .any(|m| matches!(m, Message::Extended { id: 0, .. })),
            "{:?}",
            peer.said
        );
        assert!(
            peer.said
                .iter()
                .any(|m| matches!(m, Message::HaveAll | Message::Bitfield(_))),
            "{} messages",
            peer.said.len()
        );
    }
}
