//! Fetching a torrent's info dictionary from peers (BEP 9), for magnet links.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail};

pub use crate::error::MetadataError;
use bytes::BytesMut;
use ids::{InfoHash, PeerId};
use metainfo::merkle::{self, Hash256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tracker_proto::{Announce, Event as TrackerEvent};
use wire::{
    Decoder, ExtensionHandshake, Handshake, HashRange, Message, MetadataMessage, MAX_METADATA,
    METADATA_PIECE,
};

/// The id we ask peers to use for `ut_metadata` messages to us.
pub const UT_METADATA_ID: u8 = 1;
const PEER_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// What we dial peers with (MSE or plaintext), as a torrent's own connections.
    pub encryption: crate::Encryption,
}

/// What a magnet link's peers gave us.
pub struct Metadata {
    /// The info dictionary, matching every expected hash.
    pub info: Vec<u8>,
    /// For a v2-only torrent, the piece layer of each file longer than a piece (BEP 52 hash requests),
    /// each proven against its file's `pieces root`. Empty otherwise.
    pub piece_layers: HashMap<Hash256, Vec<Hash256>>,
}

/// Whether `info` has every hash the magnet link names.
fn matches(request_v1: Option<[u8; 20]>, request_v2: Option<[u8; 32]>, info: &[u8]) -> bool {
    use sha1::Digest;
    (request_v1.is_some() || request_v2.is_some())
        && request_v1.is_none_or(|h| sha1::Sha1::digest(info).as_slice() == h)
        && request_v2.is_none_or(|h| sha2::Sha256::digest(info).as_slice() == h)
}

/// Downloads the info dictionary (and a v2-only torrent's piece layers) from the first peer that has
/// them right. Gives up after `timeout`.
pub async fn fetch_metadata(
    request: &MetadataRequest,
    timeout: Duration,
) -> Result<Metadata, MetadataError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tried: HashSet<SocketAddr> = HashSet::new();
    let mut attempts = JoinSet::new();
    let bind = Some(request.listen.ip()).filter(|ip| !ip.is_unspecified());
    let mut next_announce = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_announce {
            let mut found = request.peers.clone();
            let params = Announce {
                info_hash: request.info_hash,
                peer_id: request.peer_id,
                port: request.listen.port(),
                uploaded: 0,
                downloaded: 0,
                left: 1,
                event: TrackerEvent::Started,
                numwant: Some(50),
                key: None,
                ip: None,
            };
            for url in &request.trackers {
                match crate::tracker::announce(url, &params, bind).await {
                    Ok(r) => found.extend(r.peers),
                    Err(e) => tracing::warn!("tracker {url}: {e:#}"),
                }
            }
            if let Some(node) = &request.dht {
                if let Ok(peers) =
                    tokio::time::timeout(Duration::from_secs(15), node.get_peers(request.info_hash))
                        .await
                {
                    found.extend(peers);
                }
            }
            for addr in found {
                if addr != request.listen && addr.port() != 0 && tried.insert(addr) {
                    let (hash, id) = (request.info_hash, request.peer_id);
                    let expect = (request.expect_v1, request.expect_v2);
                    let dial = Dial {
                        addr,
                        bind,
                        encryption: request.encryption,
                    };
                    attempts.spawn(async move { (addr, from_peer(dial, hash, id, expect).await) });
                }
            }
            next_announce = tokio::time::Instant::now() + Duration::from_secs(10);
        }
        let wake = next_announce.min(deadline);
        tokio::select! {
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                if let Ok((addr, result)) = done {
                    match result {
                        Ok(metadata) => return Ok(metadata),
                        Err(e) => tracing::debug!("metadata from {addr}: {e:#}"),
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(MetadataError::Timeout { secs: timeout.as_secs() });
                }
            }
        }
    }
}

/// Where and how to connect to one peer.
struct Dial {
    addr: SocketAddr,
    bind: Option<std::net::IpAddr>,
    encryption: crate::Encryption,
}

async fn from_peer(
    dial: Dial,
    info_hash: InfoHash,
    peer_id: PeerId,
    (expect_v1, expect_v2): (Option<[u8; 20]>, Option<[u8; 32]>),
) -> anyhow::Result<Metadata> {
    tokio::time::timeout(PEER_TIMEOUT, async {
        let ours = Handshake::new(info_hash, peer_id, false);
        let bind = dial.bind.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let (mut stream, theirs) =
            crate::encryption::outgoing(dial.encryption, &ours, PEER_TIMEOUT, || {
                crate::peer::dial_tcp(dial.addr, bind)
            })
            .await?;
        if theirs.info_hash != info_hash || !theirs.supports_extensions() {
            bail!("peer cannot send metadata");
        }
        let mut m = std::collections::BTreeMap::new();
        m.insert("ut_metadata".to_string(), UT_METADATA_ID);
        let ext = ExtensionHandshake {
            extensions: m,
            ..Default::default()
        };
        let mut out = BytesMut::new();
        Message::Extended {
            id: 0,
            payload: ext.encode().into(),
        }
        .encode(&mut out);
        stream.write_all(&out).await?;

        let decoder = Decoder::default();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut info: Option<InfoFetch> = None;
        let mut their_id = 0;
        let mut layers: Option<LayerFetch> = None;
        loop {
            while let Some(message) = decoder.decode(&mut buf)? {
                let (id, payload) = match message {
                    Message::Extended { id, payload } => (id, payload),
                    Message::Hashes { range, hashes } => {
                        if let Some(fetch) = layers.as_mut() {
                            fetch.received(range, &hashes)?;
                            if fetch.done() {
                                let info = info.take().map(|f| f.info).unwrap_or_default();
                                return Ok(Metadata {
                                    info,
                                    piece_layers: std::mem::take(&mut fetch.layers),
                                });
                            }
                        }
                        continue;
                    }
                    Message::HashReject(_) => bail!("peer rejected our hash request"),
                    _ => continue,
                };
                if id == 0 {
                    let theirs = ExtensionHandshake::decode(&payload)?;
                    their_id = theirs
                        .id_of("ut_metadata")
                        .ok_or_else(|| anyhow!("peer has no ut_metadata"))?;
                    let size = theirs
                        .metadata_size
                        .filter(|&s| s > 0 && s as usize <= MAX_METADATA)
                        .ok_or_else(|| anyhow!("peer gave no usable metadata_size"))?
                        as usize;
                    let mut fetch = InfoFetch::new(size);
                    request_pieces(&mut stream, their_id, fetch.requests()).await?;
                    info = Some(fetch);
                } else if id == UT_METADATA_ID {
                    let Some(fetch) = info.as_mut() else { continue };
                    match MetadataMessage::decode(&payload)? {
                        MetadataMessage::Data {
                            piece,
                            total_size,
                            data,
                        } => fetch.received(piece, total_size, data)?,
                        MetadataMessage::Reject { piece } => {
                            bail!("peer rejected metadata piece {piece}")
                        }
                        MetadataMessage::Request { .. } => {}
                    }
                    request_pieces(&mut stream, their_id, fetch.requests()).await?;
                    if fetch.done() && layers.is_none() {
                        let info = &fetch.info;
                        if !matches(expect_v1, expect_v2, info) {
                            bail!("metadata does not match the info-hash");
                        }
                        let torrent = metainfo::Torrent::from_info_bytes(info)
                            .map_err(|e| anyhow!("metadata: {e}"))?;
                        let fetch = LayerFetch::new(&torrent);
                        if fetch.done() {
                            return Ok(Metadata {
                                info: info.clone(),
                                piece_layers: HashMap::new(),
                            });
                        }
                        let mut out = BytesMut::new();
                        for range in &fetch.pending {
                            Message::HashRequest(*range).encode(&mut out);
                        }
                        stream.write_all(&out).await?;
                        layers = Some(fetch);
                    }
                }
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("peer closed the connection");
            }
        }
    })
    .await
    .map_err(|_| anyhow!("timed out"))?
}

async fn request_pieces(
    stream: &mut crate::transport::PeerStream,
    their_id: u8,
    pieces: Vec<u32>,
) -> anyhow::Result<()> {
    if pieces.is_empty() {
        return Ok(());
    }
    let mut out = BytesMut::new();
    for piece in pieces {
        Message::Extended {
            id: their_id,
            payload: MetadataMessage::Request { piece }.encode().into(),
        }
        .encode(&mut out);
    }
    stream.write_all(&out).await?;
    Ok(())
}

/// Metadata pieces asked for at a time.
const INFO_WINDOW: u32 = 16;

/// An info dictionary arriving piece by piece. The size a peer claims in its extension handshake costs
/// nothing by itself: pieces are asked for a window at a time and kept in order, so what we hold is
/// never more than what the peer has sent, plus at most a window of early pieces.
struct InfoFetch {
    size: usize,
    pieces: u32,
    /// The pieces received so far, in order from the first.
    info: Vec<u8>,
    have: u32,
    next_request: u32,
    /// Pieces that came before one asked for earlier, all within the window.
    early: BTreeMap<u32, Vec<u8>>,
}

impl InfoFetch {
    fn new(size: usize) -> InfoFetch {
        InfoFetch {
            size,
            pieces: size.div_ceil(METADATA_PIECE) as u32,
            info: Vec::new(),
            have: 0,
            next_request: 0,
            early: BTreeMap::new(),
        }
    }

    /// Pieces to ask for now, to keep a window in flight.
    fn requests(&mut self) -> Vec<u32> {
        let end = self.pieces.min(self.have + INFO_WINDOW);
        let ask: Vec<u32> = (self.next_request..end).collect();
        self.next_request = self.next_request.max(end);
        ask
    }

    fn received(&mut self, piece: u32, total_size: u64, data: Vec<u8>) -> anyhow::Result<()> {
        if piece >= self.next_request {
            bail!("metadata piece {piece} was not asked for");
        }
        if piece < self.have || self.early.contains_key(&piece) {
            // A repeat; the first copy stands (the hash check judges the whole).
            return Ok(());
        }
        let start = piece as usize * METADATA_PIECE;
        let expected = (self.size - start).min(METADATA_PIECE);
        if total_size != self.size as u64 || data.len() != expected {
            bail!("metadata piece {piece} has the wrong size");
        }
        self.early.insert(piece, data);
        while let Some(data) = self.early.remove(&self.have) {
            self.info.extend_from_slice(&data);
            self.have += 1;
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.have == self.pieces
    }
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

    fn done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes an answer to one of our requests once its proof holds.
    fn received(&mut self, range: HashRange, hashes: &[Hash256]) -> anyhow::Result<()> {
        let Some(at) = self.pending.iter().position(|r| {
            r.pieces_root == range.pieces_root && r.index == range.index && r.length == range.length
        }) else {
            return Ok(());
        };
        let (index, length) = (range.index as usize, range.length as usize);
        let proven = merkle::verify_proof(hashes, index, length, self.pad, range.pieces_root)
            .ok_or_else(|| anyhow!("piece-layer hashes that do not prove the file root"))?;
        let Some((pieces, layer)) = self.files.get_mut(&range.pieces_root) else {
            return Ok(());
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(fetch: &InfoFetch, i: u32) -> Vec<u8> {
        let len = (fetch.size - i as usize * METADATA_PIECE).min(METADATA_PIECE);
        vec![i as u8; len]
    }

    #[tokio::test]
    async fn an_info_dictionary_of_many_windows_is_fetched_from_a_seed() {
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
        assert!(
            info_len > (INFO_WINDOW as usize + 1) * METADATA_PIECE,
            "{info_len}"
        );
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
            encryption: crate::Encryption::Require,
        };
        let got = fetch_metadata(&request, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(got.info == torrent.info_bytes, "the fetched info differs");
    }

    #[test]
    fn a_claimed_size_costs_nothing_until_pieces_arrive() {
        let mut fetch = InfoFetch::new(MAX_METADATA);
        assert_eq!(fetch.info.capacity(), 0);
        assert_eq!(fetch.requests(), (0..INFO_WINDOW).collect::<Vec<_>>());
        assert!(fetch.requests().is_empty(), "one window in flight");
        for i in 0..4 {
            fetch
                .received(i, MAX_METADATA as u64, piece(&fetch, i))
                .unwrap();
        }
        assert_eq!(fetch.info.len(), 4 * METADATA_PIECE);
        assert!(
            fetch.info.capacity() <= 8 * METADATA_PIECE,
            "{}",
            fetch.info.capacity()
        );
        // The window slides only as pieces complete in order.
        assert_eq!(
            fetch.requests(),
            (INFO_WINDOW..INFO_WINDOW + 4).collect::<Vec<_>>()
        );
        let beyond = INFO_WINDOW + 4;
        assert!(fetch
            .received(beyond, MAX_METADATA as u64, piece(&fetch, beyond))
            .is_err());
    }

    #[test]
    fn pieces_out_of_order_assemble_in_order_and_bad_ones_are_refused() {
        let size = 3 * METADATA_PIECE + 100;
        let mut fetch = InfoFetch::new(size);
        assert_eq!(fetch.requests(), vec![0, 1, 2, 3]);
        let total = size as u64;
        assert!(fetch.received(1, total + 1, piece(&fetch, 1)).is_err());
        assert!(fetch.received(3, total, vec![3; METADATA_PIECE]).is_err());
        for i in [3, 1, 2] {
            fetch.received(i, total, piece(&fetch, i)).unwrap();
        }
        assert!(fetch.info.is_empty() && !fetch.done());
        fetch.received(0, total, piece(&fetch, 0)).unwrap();
        fetch.received(2, total, vec![9; METADATA_PIECE]).unwrap();
        assert!(fetch.done());
        let expected: Vec<u8> = (0..4).flat_map(|i| piece(&fetch, i)).collect();
        assert_eq!(fetch.info, expected);
    }
}
