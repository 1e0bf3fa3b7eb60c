//! [`MetadataCore`]: the metadata phase of a magnet link, as a deterministic state machine beside
//! [`crate::TorrentCore`]. It runs on the same connections the download will use: it sends our
//! extension handshake, asks peers that offer `ut_metadata` (BEP 9) for the info dictionary a window of
//! pieces at a time, hands the whole to the caller to check against the link's hashes
//! ([`MetaAction::CheckInfo`]), and for a v2 torrent asks for the piece layers (BEP 52 hash requests)
//! and hands each answer over to be proven ([`MetaAction::CheckHashes`]).
//!
//! What a peer says meanwhile that the download needs (its extension handshake, bitfield, have-all,
//! haves, interest, choke state, requests) is kept, bounded, and given back with
//! [`MetadataCore::take_carried`], so the caller can feed it to the `TorrentCore` that takes the
//! connection over once the piece count is known. Like the torrent core it hashes nothing itself and
//! reads no clock: the caller checks, and passes the time in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use wire::{ExtensionHandshake, Handshake, HashRange, Message, MetadataMessage};

use crate::torrent::{PeerKey, Refused};
use crate::{DetMap, DetSet};

/// The id we ask peers to use for `ut_metadata` messages to us (also while serving metadata).
pub const UT_METADATA_ID: u8 = 1;
/// Metadata pieces (16 KiB each) asked for beyond the first missing one, over all peers.
pub const INFO_WINDOW: u32 = 16;
/// Messages kept per peer for the download while the metadata is fetched; a peer that sends more
/// (after bitfields collapse what came before them) is dropped.
pub const MAX_CARRIED: usize = 4096;
/// A metadata piece or hash request unanswered this long goes to another peer, and the peer is not
/// asked for metadata again.
pub const METADATA_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// What a [`MetadataCore`] is made from.
#[derive(Debug, Clone)]
pub struct MetadataConfig {
    /// Connections, established or being dialled.
    pub max_peers: usize,
    /// Our own listening address: never dialled.
    pub listen: Option<SocketAddr>,
    /// Our client name (`v` of the extension handshake).
    pub client: Option<String>,
    /// See [`INFO_WINDOW`].
    pub window: u32,
    /// See [`METADATA_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`MAX_CARRIED`].
    pub max_carried: usize,
    /// Addresses waiting to be dialled, at most (see [`crate::MAX_KNOWN`]).
    pub max_known: usize,
}

impl Default for MetadataConfig {
    fn default() -> MetadataConfig {
        MetadataConfig {
            max_peers: 50,
            listen: None,
            client: None,
            window: INFO_WINDOW,
            request_timeout: METADATA_REQUEST_TIMEOUT,
            max_carried: MAX_CARRIED,
            max_known: crate::MAX_KNOWN,
        }
    }
}

/// Why the metadata core ends a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaDisconnect {
    /// Its IP sent metadata that failed the check.
    #[error("banned")]
    Banned,
    /// It sent a metadata piece of the wrong size.
    #[error("bad metadata piece")]
    BadPiece,
    /// Its extension handshake did not decode.
    #[error("bad extension handshake")]
    BadExtension,
    /// It sent more than [`MAX_CARRIED`] messages before the metadata was known.
    #[error("too many messages before the metadata")]
    TooManyMessages,
    /// Its piece-layer hashes did not prove the file root.
    #[error("bad piece-layer hashes")]
    BadHashes,
}

/// Something for the I/O layer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaAction {
    /// Write `message` to the peer.
    Send {
        /// To whom.
        peer: PeerKey,
        /// What.
        message: Message,
    },
    /// Dial an address; report with [`MetadataCore::add_peer`] or [`MetadataCore::dial_failed`].
    Connect {
        /// Whom.
        addr: SocketAddr,
    },
    /// End the connection (the core has forgotten the peer already).
    Disconnect {
        /// Which.
        peer: PeerKey,
        /// Why.
        reason: MetaDisconnect,
    },
    /// An IP is banned from now on: worth a log line, and a ban to carry into the torrent.
    Banned {
        /// Which.
        ip: IpAddr,
    },
    /// The info dictionary is complete: check it against the link's hashes, parse it, and answer
    /// with [`MetadataCore::info_checked`].
    CheckInfo {
        /// Its bytes.
        info: Vec<u8>,
    },
    /// A peer answered a hash request: prove the hashes to the file root and answer with
    /// [`MetadataCore::hashes_checked`].
    CheckHashes {
        /// From whom.
        peer: PeerKey,
        /// Which range.
        range: HashRange,
        /// The hashes and their proof.
        hashes: Vec<[u8; 32]>,
    },
    /// The info dictionary and every piece layer asked for are checked: the torrent can start, with
    /// the live connections ([`MetadataCore::take_carried`]).
    Done,
}

struct MetaPeer {
    addr: SocketAddr,
    /// The id it takes `ut_metadata` under, and the size it claims.
    their_id: Option<u8>,
    size: Option<usize>,
    /// It rejected a request or let one time out: not asked for metadata again.
    useless: bool,
    /// Metadata pieces asked of it, and when.
    asked: BTreeMap<u32, Instant>,
    /// What the download will need to hear of what it said.
    carried: Vec<Message>,
}

/// The info dictionary arriving piece by piece, kept in order: what we hold is never more than what
/// peers sent, plus at most a window of early pieces.
struct InfoFetch {
    size: usize,
    pieces: u32,
    info: Vec<u8>,
    have: u32,
    early: BTreeMap<u32, Vec<u8>>,
    /// Who is asked for each piece in flight.
    asked: BTreeMap<u32, u64>,
    /// IPs that sent pieces of it.
    contributors: Vec<IpAddr>,
}

impl InfoFetch {
    fn new(size: usize) -> InfoFetch {
        InfoFetch {
            size,
            pieces: size.div_ceil(wire::METADATA_PIECE) as u32,
            info: Vec::new(),
            have: 0,
            early: BTreeMap::new(),
            asked: BTreeMap::new(),
            contributors: Vec::new(),
        }
    }

    fn piece_len(&self, piece: u32) -> usize {
        (self.size - piece as usize * wire::METADATA_PIECE).min(wire::METADATA_PIECE)
    }
}

struct LayerAsk {
    range: HashRange,
    /// Who has it now (and since when), or its answer is being checked.
    asked: Option<(u64, Instant)>,
    checking: bool,
    /// Peers that rejected it or failed to answer.
    tried: BTreeSet<u64>,
}

enum Phase {
    Info(Option<InfoFetch>),
    Checking(Vec<IpAddr>),
    Layers(Vec<LayerAsk>),
    Done,
}

/// The metadata phase of one magnet link; see the module documentation.
pub struct MetadataCore {
    config: MetadataConfig,
    peers: BTreeMap<u64, MetaPeer>,
    next_key: u64,
    known: VecDeque<SocketAddr>,
    connected: DetSet<SocketAddr>,
    strikes: DetMap<IpAddr, u32>,
    banned: DetSet<IpAddr>,
    phase: Phase,
    actions: VecDeque<MetaAction>,
    now: Instant,
}

impl MetadataCore {
    /// A fetch with no peers yet, its clock started at `now`.
    pub fn new(config: MetadataConfig, now: Instant) -> MetadataCore {
        MetadataCore {
            config,
            peers: BTreeMap::new(),
            next_key: 0,
            known: VecDeque::new(),
            connected: DetSet::default(),
            strikes: DetMap::default(),
            banned: DetSet::default(),
            phase: Phase::Info(None),
            actions: VecDeque::new(),
            now,
        }
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Registers a connection whose handshakes are done and sends our extension handshake (only
    /// `ut_metadata`; the torrent sends its full one when it takes the connection over).
    pub fn add_peer(
        &mut self,
        addr: SocketAddr,
        ours: &Handshake,
        theirs: &Handshake,
        now: Instant,
    ) -> Result<PeerKey, Refused> {
        self.advance(now);
        if matches!(self.phase, Phase::Done) {
            return Err(Refused::Stopped);
        }
        if theirs.peer_id == ours.peer_id {
            return Err(Refused::Ourselves);
        }
        if self.banned.contains(&addr.ip()) {
            return Err(Refused::Banned);
        }
        if self.peers.len() >= self.config.max_peers {
            return Err(Refused::Full);
        }
        let key = self.next_key;
        self.next_key += 1;
        self.peers.insert(
            key,
            MetaPeer {
                addr,
                their_id: None,
                size: None,
                useless: false,
                asked: BTreeMap::new(),
                carried: Vec::new(),
            },
        );
        self.connected.insert(addr);
        if theirs.supports_extensions() {
            let mut extensions = BTreeMap::new();
            extensions.insert("ut_metadata".to_string(), UT_METADATA_ID);
            let hs = ExtensionHandshake {
                extensions,
                client: self.config.client.clone(),
                your_ip: Some(addr.ip()),
                ..Default::default()
            };
            self.send(
                key,
                Message::Extended {
                    id: 0,
                    payload: hs.encode().into(),
                },
            );
        }
        // A peer without the extension protocol cannot send metadata; it stays for the download.
        Ok(PeerKey(key))
    }

    /// A decoded frame from a peer. Events of peers the core no longer knows are ignored.
    pub fn handle_message(&mut self, peer: PeerKey, message: Message, now: Instant) {
        self.advance(now);
        let key = peer.0;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        match message {
            Message::Extended { id: 0, payload } => {
                let Ok(theirs) = ExtensionHandshake::decode(&payload) else {
                    self.remove_peer(key, Some(MetaDisconnect::BadExtension));
                    return;
                };
                p.their_id = theirs.id_of("ut_metadata");
                p.size = theirs
                    .metadata_size
                    .filter(|&s| s > 0 && s as usize <= wire::MAX_METADATA)
                    .map(|s| s as usize);
                self.carry(key, Message::Extended { id: 0, payload });
            }
            Message::Extended { id, payload } if id == UT_METADATA_ID => {
                match MetadataMessage::decode(&payload) {
                    Ok(MetadataMessage::Data {
                        piece,
                        total_size,
                        data,
                    }) => self.on_data(key, piece, total_size, data),
                    Ok(MetadataMessage::Reject { .. }) => {
                        if let Some(p) = self.peers.get_mut(&key) {
                            p.useless = true;
                            p.asked.clear();
                        }
                        self.unassign(key);
                    }
                    // We have nothing to serve yet.
                    Ok(MetadataMessage::Request { piece }) => {
                        if let Some(id) = p.their_id {
                            let reject = MetadataMessage::Reject { piece }.encode();
                            self.send(
                                key,
                                Message::Extended {
                                    id,
                                    payload: reject.into(),
                                },
                            );
                        }
                    }
                    Err(_) => {}
                }
            }
            Message::Hashes { range, hashes } => self.on_hashes(key, range, hashes),
            Message::HashReject(range) => self.layer_refused(key, &range),
            Message::KeepAlive | Message::Piece { .. } | Message::Extended { .. } => {}
            other => self.carry(key, other),
        }
        self.assign();
    }

    /// The connection is gone.
    pub fn closed(&mut self, peer: PeerKey, now: Instant) {
        self.advance(now);
        self.remove_peer(peer.0, None);
    }

    /// Addresses to connect to: queued (at most `max_known`, the oldest dropped) and dialled within
    /// the connection limit.
    pub fn add_addresses(&mut self, addrs: impl IntoIterator<Item = SocketAddr>, now: Instant) {
        self.advance(now);
        for addr in addrs {
            if Some(addr) == self.config.listen
                || addr.port() == 0
                || self.banned.contains(&addr.ip())
                || self.connected.contains(&addr)
                || self.known.contains(&addr)
            {
                continue;
            }
            if self.known.len() >= self.config.max_known {
                self.known.pop_front();
            }
            self.known.push_back(addr);
        }
        self.dial();
    }

    /// A `Connect` failed (or its connection ended before `add_peer`): the address is free again.
    pub fn dial_failed(&mut self, addr: SocketAddr, now: Instant) {
        self.advance(now);
        if !self.peers.values().any(|p| p.addr == addr) {
            self.connected.remove(&addr);
        }
        self.dial();
    }

    /// The answer to [`MetaAction::CheckInfo`]: `None` when the info dictionary does not match the
    /// link's hashes (or does not parse), else the piece-layer ranges still to fetch (none for v1 and
    /// hybrid torrents). A bad one strikes every IP that sent part of it (two for a sole sender, and
    /// two strikes ban) and the fetch starts over.
    pub fn info_checked(&mut self, layers: Option<Vec<HashRange>>, now: Instant) {
        self.advance(now);
        let Phase::Checking(contributors) = std::mem::replace(&mut self.phase, Phase::Info(None))
        else {
            return;
        };
        match layers {
            None => {
                let weight = if contributors.len() == 1 { 2 } else { 1 };
                for ip in contributors {
                    let strikes = self.strikes.entry(ip).or_insert(0);
                    *strikes += weight;
                    if *strikes >= 2 {
                        self.ban(ip);
                    }
                }
            }
            Some(ranges) if ranges.is_empty() => self.finish(),
            Some(ranges) => {
                let asks = ranges
                    .into_iter()
                    .map(|range| LayerAsk {
                        range,
                        asked: None,
                        checking: false,
                        tried: BTreeSet::new(),
                    })
                    .collect();
                self.phase = Phase::Layers(asks);
            }
        }
        self.assign();
    }

    /// The answer to [`MetaAction::CheckHashes`]: a range that does not prove its file root ends
    /// the connection of the peer that sent it and is asked of another.
    pub fn hashes_checked(&mut self, peer: PeerKey, range: HashRange, ok: bool, now: Instant) {
        self.advance(now);
        let Phase::Layers(asks) = &mut self.phase else {
            return;
        };
        let Some(at) = asks.iter().position(|a| same_range(&a.range, &range)) else {
            return;
        };
        if ok {
            asks.remove(at);
            if asks.is_empty() {
                self.finish();
                return;
            }
        } else {
            let ask = &mut asks[at];
            ask.checking = false;
            ask.asked = None;
            ask.tried.insert(peer.0);
            self.remove_peer(peer.0, Some(MetaDisconnect::BadHashes));
        }
        self.assign();
    }

    /// When [`MetadataCore::handle_timeout`] is next due: the oldest request's deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.config.request_timeout;
        let info = self.peers.values().flat_map(|p| p.asked.values());
        let layers = match &self.phase {
            Phase::Layers(asks) => asks
                .iter()
                .filter(|a| !a.checking)
                .filter_map(|a| a.asked.map(|(_, t)| t))
                .collect(),
            _ => Vec::new(),
        };
        info.copied().chain(layers).min().map(|t| t + timeout)
    }

    /// Requests unanswered past the timeout go to other peers; the slow peer is not asked again.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let timeout = self.config.request_timeout;
        let now = self.now;
        let late = |t: &Instant| now.saturating_duration_since(*t) >= timeout;
        let slow: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.asked.values().any(late))
            .map(|(k, _)| *k)
            .collect();
        for k in slow {
            if let Some(p) = self.peers.get_mut(&k) {
                p.useless = true;
                p.asked.clear();
            }
            self.unassign(k);
        }
        if let Phase::Layers(asks) = &mut self.phase {
            for a in asks.iter_mut().filter(|a| !a.checking) {
                if let Some((k, t)) = a.asked {
                    if late(&t) {
                        a.tried.insert(k);
                        a.asked = None;
                    }
                }
            }
        }
        self.assign();
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<MetaAction> {
        self.actions.pop_front()
    }

    /// What `peer` said that the download needs, in order, for the `TorrentCore` taking the
    /// connection over (empty for a peer the core does not know).
    pub fn take_carried(&mut self, peer: PeerKey) -> Vec<Message> {
        self.peers
            .get_mut(&peer.0)
            .map(|p| std::mem::take(&mut p.carried))
            .unwrap_or_default()
    }

    /// IPs banned during the fetch, for the torrent to keep banning.
    pub fn banned(&self) -> impl Iterator<Item = &IpAddr> {
        self.banned.iter()
    }

    /// Whether `ip` is banned.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.banned.contains(&ip)
    }

    /// Connections in the table.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Whether the metadata is complete and checked.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    // ----- inside -----

    fn send(&mut self, key: u64, message: Message) {
        self.actions.push_back(MetaAction::Send {
            peer: PeerKey(key),
            message,
        });
    }

    fn dial(&mut self) {
        if matches!(self.phase, Phase::Done) {
            return;
        }
        while self.peers.len().max(self.connected.len()) < self.config.max_peers {
            let Some(addr) = self.known.pop_front() else {
                break;
            };
            self.connected.insert(addr);
            self.actions.push_back(MetaAction::Connect { addr });
        }
    }

    fn finish(&mut self) {
        self.phase = Phase::Done;
        self.known.clear();
        self.actions.push_back(MetaAction::Done);
    }

    fn ban(&mut self, ip: IpAddr) {
        if self.banned.insert(ip) {
            self.actions.push_back(MetaAction::Banned { ip });
        }
        let keys: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.addr.ip() == ip)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.remove_peer(k, Some(MetaDisconnect::Banned));
        }
    }

    fn remove_peer(&mut self, key: u64, reason: Option<MetaDisconnect>) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        self.connected.remove(&p.addr);
        self.unassign(key);
        if let Some(reason) = reason {
            self.actions.push_back(MetaAction::Disconnect {
                peer: PeerKey(key),
                reason,
            });
        }
        self.dial();
        self.assign();
    }

    /// Keeps a message for the download. A bitfield, have-all or have-none replaces what the peer said
    /// of its pieces before.
    fn carry(&mut self, key: u64, message: Message) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if matches!(
            message,
            Message::Bitfield(_) | Message::HaveAll | Message::HaveNone
        ) {
            p.carried.retain(|m| {
                !matches!(
                    m,
                    Message::Bitfield(_) | Message::HaveAll | Message::HaveNone | Message::Have(_)
                )
            });
        }
        p.carried.push(message);
        if p.carried.len() > self.config.max_carried {
            self.remove_peer(key, Some(MetaDisconnect::TooManyMessages));
        }
    }

    fn on_data(&mut self, key: u64, piece: u32, total_size: u64, data: Vec<u8>) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        // Unasked (or asked of it before a timeout gave it to another): ignored.
        if p.asked.remove(&piece).is_none() {
            return;
        }
        let ip = p.addr.ip();
        let Phase::Info(Some(fetch)) = &mut self.phase else {
            return;
        };
        if fetch.asked.get(&piece) == Some(&key) {
            fetch.asked.remove(&piece);
        }
        if total_size != fetch.size as u64 || data.len() != fetch.piece_len(piece) {
            self.remove_peer(key, Some(MetaDisconnect::BadPiece));
            return;
        }
        if piece < fetch.have || fetch.early.contains_key(&piece) {
            // A repeat: the first copy stands (the check judges the whole).
            return;
        }
        if !fetch.contributors.contains(&ip) {
            fetch.contributors.push(ip);
        }
        fetch.early.insert(piece, data);
        while let Some(data) = fetch.early.remove(&fetch.have) {
            fetch.info.extend_from_slice(&data);
            fetch.have += 1;
        }
        if fetch.have == fetch.pieces {
            let info = std::mem::take(&mut fetch.info);
            let contributors = std::mem::take(&mut fetch.contributors);
            for p in self.peers.values_mut() {
                p.asked.clear();
            }
            self.phase = Phase::Checking(contributors);
            self.actions.push_back(MetaAction::CheckInfo { info });
        }
    }

    fn on_hashes(&mut self, key: u64, range: HashRange, hashes: Vec<[u8; 32]>) {
        let Phase::Layers(asks) = &mut self.phase else {
            return;
        };
        let Some(ask) = asks
            .iter_mut()
            .find(|a| same_range(&a.range, &range) && a.asked.is_some_and(|(k, _)| k == key))
        else {
            return;
        };
        if ask.checking {
            return;
        }
        ask.checking = true;
        self.actions.push_back(MetaAction::CheckHashes {
            peer: PeerKey(key),
            range,
            hashes,
        });
    }

    fn layer_refused(&mut self, key: u64, range: &HashRange) {
        if let Phase::Layers(asks) = &mut self.phase {
            for a in asks.iter_mut().filter(|a| same_range(&a.range, range)) {
                if a.asked.is_some_and(|(k, _)| k == key) && !a.checking {
                    a.asked = None;
                    a.tried.insert(key);
                }
            }
        }
    }

    /// Takes back what was asked of a peer, to be asked of others.
    fn unassign(&mut self, key: u64) {
        match &mut self.phase {
            Phase::Info(Some(fetch)) => fetch.asked.retain(|_, k| *k != key),
            Phase::Layers(asks) => {
                for a in asks.iter_mut().filter(|a| !a.checking) {
                    if a.asked.is_some_and(|(k, _)| k == key) {
                        a.asked = None;
                    }
                }
            }
            _ => {}
        }
    }

    /// Asks peers for what is missing: metadata pieces within the window, spread over the peers that
    /// offer the fetch's size, or each pending hash range of one peer not yet tried for it.
    fn assign(&mut self) {
        let now = self.now;
        match &mut self.phase {
            Phase::Info(fetch) => {
                if fetch.is_none() {
                    // The size the first usable peer claims; a liar's fails the check and is struck.
                    let size = self
                        .peers
                        .values()
                        .filter(|p| !p.useless && p.their_id.is_some())
                        .find_map(|p| p.size);
                    match size {
                        Some(size) => *fetch = Some(InfoFetch::new(size)),
                        None => return,
                    }
                }
                let Some(fetch) = fetch.as_mut() else { return };
                let end = fetch.pieces.min(fetch.have + self.config.window);
                let mut sources: Vec<(usize, u64)> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| {
                        !p.useless && p.their_id.is_some() && p.size == Some(fetch.size)
                    })
                    .map(|(k, p)| (p.asked.len(), *k))
                    .collect();
                if sources.is_empty() {
                    return;
                }
                for piece in fetch.have..end {
                    if fetch.early.contains_key(&piece) || fetch.asked.contains_key(&piece) {
                        continue;
                    }
                    // The least busy peer, lowest key first.
                    sources.sort_unstable();
                    let (busy, key) = &mut sources[0];
                    *busy += 1;
                    let key = *key;
                    fetch.asked.insert(piece, key);
                    let Some(p) = self.peers.get_mut(&key) else {
                        continue;
                    };
                    p.asked.insert(piece, now);
                    let Some(id) = p.their_id else { continue };
                    let payload = MetadataMessage::Request { piece }.encode();
                    self.actions.push_back(MetaAction::Send {
                        peer: PeerKey(key),
                        message: Message::Extended {
                            id,
                            payload: payload.into(),
                        },
                    });
                }
            }
            Phase::Layers(asks) => {
                for a in asks.iter_mut().filter(|a| a.asked.is_none()) {
                    // Peers that spoke BEP 10 and offered metadata: others may not know hash requests.
                    let Some(key) = self
                        .peers
                        .iter()
                        .find(|(k, p)| p.their_id.is_some() && !a.tried.contains(k))
                        .map(|(k, _)| *k)
                    else {
                        continue;
                    };
                    a.asked = Some((key, now));
                    self.actions.push_back(MetaAction::Send {
                        peer: PeerKey(key),
                        message: Message::HashRequest(a.range),
                    });
                }
            }
            Phase::Checking(_) | Phase::Done => {}
        }
    }
}

fn same_range(a: &HashRange, b: &HashRange) -> bool {
    a.pieces_root == b.pieces_root
        && a.base_layer == b.base_layer
        && a.index == b.index
        && a.length == b.length
}
