//! The discrete-event loop: a queue of (virtual time, sequence number) events drives every
//! peer's `TorrentCore` and the links between them. See the crate documentation for the model.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;
use torrent_core::{
    Action, AnnounceEvent, Bitfield, CoreConfig, Limits, PeerEvent, PeerKey, TorrentCore, BLOCK,
};
use wire::{BlockRef, Handshake, Message, PieceIndex};

use crate::config::{Arrivals, Departure, SwarmConfig};
use crate::queue::{Queue, Time};
use crate::rng::Rng;

pub type NodeId = u32;
type ConnId = u32;

const INFO_HASH: [u8; 20] = *b"spore-sim-torrent-01";
/// The unit of loss: a TCP-sized chunk of a message.
const SEGMENT: u64 = 16 * 1024;
const MIN_RTO: Time = 200_000_000;
/// Tracker round trip beyond the peer's own access latency.
const TRACKER_DELAY: Time = 20_000_000;

fn nanos(d: Duration) -> Time {
    d.as_nanos().min(u128::from(u64::MAX)) as Time
}

fn seconds(t: Time) -> f64 {
    t as f64 / 1e9
}

/// The address the simulated network gives peer `id`: 10.x.y.z, so it maps back without a table.
pub fn node_addr(id: NodeId) -> SocketAddr {
    let [_, a, b, c] = id.to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, a, b, c), 6881))
}

fn addr_node(addr: &SocketAddr) -> Option<NodeId> {
    match addr {
        SocketAddr::V4(v4) if v4.port() == 6881 && v4.ip().octets()[0] == 10 => {
            let [_, a, b, c] = v4.ip().octets();
            Some(u32::from_be_bytes([0, a, b, c]))
        }
        _ => None,
    }
}

enum Ev {
    Arrive(NodeId),
    Timer(NodeId),
    /// A control message reaches side `to` of `conn` (boxed, and `Have`s, most of them, go as `Have`:
    /// a small event keeps the heap fast).
    Deliver {
        conn: ConnId,
        to: u8,
        msg: Box<Message>,
    },
    Have {
        conn: ConnId,
        to: u8,
        piece: PieceIndex,
    },
    /// A block reaches side `to` of `conn`.
    Data {
        conn: ConnId,
        to: u8,
        block: BlockRef,
    },
    /// The node's uplink finished sending its current block.
    LinkDone(NodeId),
    /// TCP and BitTorrent handshakes done: both cores meet.
    Dialled {
        from: NodeId,
        to: NodeId,
    },
    TrackerReply {
        node: NodeId,
        peers: Box<[SocketAddr]>,
    },
    /// Side `to` of `conn` learns the other side closed it.
    Closed {
        conn: ConnId,
        to: u8,
    },
    Leave(NodeId),
}

struct Conn {
    ends: [NodeId; 2],
    keys: [PeerKey; 2],
    /// Side `i` still has the connection open (it has neither closed it nor seen it closed).
    open: [bool; 2],
    /// When the last message toward side `i` arrives: a later one never overtakes it (one TCP stream).
    last: [Time; 2],
    owd: Time,
}

/// What one peer did over the run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerStats {
    pub group: usize,
    pub seed: bool,
    pub arrived: Option<Duration>,
    pub completed: Option<Duration>,
    pub left: Option<Duration>,
    /// Payload bytes that left its uplink and reached theirs.
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes of pieces it verified.
    pub verified: u64,
}

impl PeerStats {
    /// Seconds from arrival to completion.
    pub fn download_time(&self) -> Option<f64> {
        Some((self.completed? - self.arrived?).as_secs_f64())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub peers: Vec<PeerStats>,
    /// Virtual time of the last event handled.
    pub end: Duration,
    pub events: u64,
    /// Payload bytes that left an uplink but found their connection closed on arrival.
    pub dropped: u64,
    /// Payload bytes that left an uplink and were still on the way when the run ended.
    pub in_flight: u64,
    /// When a peer with `Departure::WhenCopyOut` left.
    pub copy_out_departure: Option<Duration>,
    /// When the leechers first held every piece between them (one full copy out of the seeds).
    pub copy_out: Option<Duration>,
    /// Everyone who arrived without the file completed it.
    pub all_done: bool,
}

struct Node {
    group: usize,
    core: Option<TorrentCore>,
    hs: Handshake,
    up: f64,
    down: f64,
    lat: Time,
    /// Connection of each of the core's peer keys (keys count up from 0 and are never reused).
    keys: Vec<ConnId>,
    uplink: VecDeque<(ConnId, u8, BlockRef)>,
    sending: Option<(ConnId, u8, BlockRef)>,
    /// When the downlink has delivered everything scheduled on it.
    down_free: Time,
    /// The earliest timer event in the heap for this node.
    timer: Option<Time>,
    verify: Vec<PieceIndex>,
    /// Dials that found nobody, to report to the core once its actions are drained.
    failed: Vec<SocketAddr>,
    /// Pieces it has verified, for the full-copy count.
    has: Vec<bool>,
    departure: Departure,
    stats: PeerStats,
}

const NO_CONN: ConnId = ConnId::MAX;

impl Node {
    fn conn(&self, key: PeerKey) -> Option<ConnId> {
        let c = *self.keys.get(usize::try_from(key.0).ok()?)?;
        (c != NO_CONN).then_some(c)
    }

    fn remember(&mut self, key: PeerKey, conn: ConnId) {
        let Ok(i) = usize::try_from(key.0) else {
            return;
        };
        if self.keys.len() <= i {
            self.keys.resize(i + 1, NO_CONN);
        }
        self.keys[i] = conn;
    }

    fn forget(&mut self, key: PeerKey) {
        if let Some(c) = usize::try_from(key.0)
            .ok()
            .and_then(|i| self.keys.get_mut(i))
        {
            *c = NO_CONN;
        }
    }
}

pub struct Sim {
    cfg: SwarmConfig,
    base: Instant,
    now: Time,
    queue: Queue<Ev>,
    rng: Rng,
    nodes: Vec<Node>,
    conns: Vec<Conn>,
    /// Present peers, for the tracker (with each one's index in it).
    present: Vec<NodeId>,
    slot: Vec<Option<usize>>,
    payload: Bytes,
    /// How many leechers hold each piece, and how many pieces at least one holds.
    holders: Vec<u32>,
    covered: u32,
    waiting: usize,
    events: u64,
    dropped: u64,
    copy_out_departure: Option<Duration>,
    copy_out: Option<Duration>,
}

impl Sim {
    pub fn new(cfg: SwarmConfig) -> Sim {
        let mut rng = Rng::new(cfg.seed);
        let mut nodes = Vec::new();
        let mut arrivals = Vec::new();
        for (g, group) in cfg.groups.iter().enumerate() {
            let mut t = 0.0;
            for i in 0..group.count {
                let at = match group.arrivals {
                    Arrivals::At(d) => d.as_secs_f64(),
                    Arrivals::Spread { start, span } => {
                        start.as_secs_f64()
                            + span.as_secs_f64() * i as f64 / group.count.max(1) as f64
                    }
                    Arrivals::Poisson { start, mean } => {
                        t += rng.exp(mean.as_secs_f64());
                        start.as_secs_f64() + t
                    }
                };
                let id = nodes.len() as NodeId;
                let (lo, hi) = (nanos(cfg.latency.0), nanos(cfg.latency.1));
                let lat = lo + (rng.unit() * hi.saturating_sub(lo) as f64) as Time;
                let mut peer_id = *b"-SP0001-000000000000";
                peer_id[8..].copy_from_slice(format!("{id:012}").as_bytes());
                nodes.push(Node {
                    group: g,
                    core: None,
                    hs: Handshake::new(
                        ids::InfoHash::new(INFO_HASH),
                        ids::PeerId::new(peer_id),
                        false,
                    ),
                    up: group.upload,
                    down: group.download,
                    lat,
                    keys: Vec::new(),
                    uplink: VecDeque::new(),
                    sending: None,
                    down_free: 0,
                    timer: None,
                    verify: Vec::new(),
                    failed: Vec::new(),
                    has: Vec::new(),
                    departure: group.departure,
                    stats: PeerStats {
                        group: g,
                        seed: group.seed,
                        ..PeerStats::default()
                    },
                });
                arrivals.push((id, (at * 1e9) as Time));
            }
        }
        let waiting = nodes.iter().filter(|n| !n.stats.seed).count();
        let n = nodes.len();
        let mut sim = Sim {
            base: Instant::now(),
            now: 0,
            queue: Queue::default(),
            rng,
            nodes,
            conns: Vec::new(),
            present: Vec::new(),
            slot: vec![None; n],
            payload: Bytes::from(vec![0u8; cfg.piece_size as usize]),
            holders: vec![0; cfg.pieces as usize],
            covered: 0,
            waiting,
            events: 0,
            dropped: 0,
            copy_out_departure: None,
            copy_out: None,
            cfg,
        };
        for (id, at) in arrivals {
            sim.push(at, Ev::Arrive(id));
        }
        sim
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    /// Runs until every leecher has completed or the time limit, and returns what happened.
    pub fn run(self) -> Outcome {
        self.run_with_progress(Duration::MAX, |_| {})
    }

    /// As [`Sim::run`], calling `report` every `every` of virtual time with (virtual time, leechers
    /// still downloading, events so far).
    pub fn run_with_progress(
        mut self,
        every: Duration,
        mut report: impl FnMut((Duration, usize, u64)),
    ) -> Outcome {
        let limit = nanos(self.cfg.time_limit);
        let every = nanos(every).max(1);
        let mut next_report = every;
        while self.waiting > 0 {
            let Some(entry) = self.queue.pop() else { break };
            if entry.at > limit {
                break;
            }
            while entry.at >= next_report {
                report((Duration::from_nanos(next_report), self.waiting, self.events));
                next_report = next_report.saturating_add(every);
            }
            self.now = entry.at;
            self.events += 1;
            self.handle(entry.ev);
        }
        let all_done = self.waiting == 0;
        Outcome {
            end: Duration::from_nanos(self.now),
            events: self.events,
            dropped: self.dropped,
            in_flight: self
                .queue
                .iter()
                .map(|e| match e.ev {
                    Ev::Data { block, .. } => u64::from(block.length),
                    _ => 0,
                })
                .sum(),
            copy_out_departure: self.copy_out_departure,
            copy_out: self.copy_out,
            all_done,
            peers: self.nodes.into_iter().map(|n| n.stats).collect(),
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive(id) => self.arrive(id),
            Ev::Timer(id) => {
                let now = self.instant();
                let node = &mut self.nodes[id as usize];
                if node.timer == Some(self.now) {
                    node.timer = None;
                }
                if let Some(core) = node.core.as_mut() {
                    if core.poll_timeout().is_some_and(|t| t <= now) {
                        core.handle_timeout(now);
                    }
                    self.drain(id);
                }
            }
            Ev::Deliver { conn, to, msg } => self.deliver(conn, to, PeerEvent::Message(*msg)),
            Ev::Have { conn, to, piece } => {
                self.deliver(conn, to, PeerEvent::Message(Message::Have(piece)))
            }
            Ev::Data { conn, to, block } => {
                let c = &self.conns[conn as usize];
                if !c.open[to as usize] {
                    self.dropped += u64::from(block.length);
                    return;
                }
                self.nodes[c.ends[to as usize] as usize].stats.downloaded +=
                    u64::from(block.length);
                let data = self.payload.slice(0..block.length as usize);
                let msg = Message::Piece {
                    index: block.index,
                    begin: block.begin,
                    data,
                };
                self.deliver(conn, to, PeerEvent::Message(msg));
            }
            Ev::LinkDone(id) => self.link_done(id),
            Ev::Dialled { from, to } => self.dialled(from, to),
            Ev::TrackerReply { node, peers } => {
                let now = self.instant();
                let interval = self.cfg.announce_interval;
                if let Some(core) = self.nodes[node as usize].core.as_mut() {
                    core.announced(Some(interval), now);
                    core.add_addresses(peers.into_vec(), now);
                    self.drain(node);
                }
            }
            Ev::Closed { conn, to } => {
                let c = &mut self.conns[conn as usize];
                if !c.open[to as usize] {
                    return;
                }
                c.open[to as usize] = false;
                let (node, key) = (c.ends[to as usize], c.keys[to as usize]);
                let now = self.instant();
                let n = &mut self.nodes[node as usize];
                n.forget(key);
                if let Some(core) = n.core.as_mut() {
                    core.handle_event(key, PeerEvent::Closed, now);
                    self.drain(node);
                }
            }
            Ev::Leave(id) => self.leave(id),
        }
    }

    fn deliver(&mut self, conn: ConnId, to: u8, event: PeerEvent) {
        let c = &self.conns[conn as usize];
        if !c.open[to as usize] {
            return;
        }
        let (node, key) = (c.ends[to as usize], c.keys[to as usize]);
        let now = self.instant();
        if let Some(core) = self.nodes[node as usize].core.as_mut() {
            core.handle_event(key, event, now);
            self.drain(node);
        }
    }

    fn arrive(&mut self, id: NodeId) {
        let cfg = &self.cfg;
        let group = &cfg.groups[self.nodes[id as usize].group];
        let have = if group.seed {
            Bitfield::full(cfg.pieces)
        } else {
            Bitfield::new(cfg.pieces)
        };
        let seed = cfg.seed ^ (u64::from(id) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut config = CoreConfig::new(vec![cfg.piece_size; cfg.pieces as usize], seed);
        config.have = have;
        config.block_size = cfg.block_size;
        config.trackers = true;
        config.upload_slots = cfg.upload_slots;
        config.choke_interval = cfg.choke_interval;
        config.optimistic_interval = cfg.optimistic_interval;
        config.max_peers = cfg.max_peers;
        config.listen = Some(node_addr(id));
        scale_queues(&mut config.limits, cfg.block_size);
        let seed = group.seed;
        let core = TorrentCore::new(config, self.instant());
        let node = &mut self.nodes[id as usize];
        node.core = Some(core);
        node.has = vec![seed; self.cfg.pieces as usize];
        node.stats.arrived = Some(Duration::from_nanos(self.now));
        self.slot[id as usize] = Some(self.present.len());
        self.present.push(id);
        self.drain(id);
        if node_departs_on_copy(&self.nodes[id as usize]) {
            self.check_copy_out();
        }
    }

    /// Carries out everything the node's core asked for, then re-arms its timer.
    fn drain(&mut self, id: NodeId) {
        loop {
            let Some(action) = self.nodes[id as usize]
                .core
                .as_mut()
                .and_then(|c| c.poll_action())
            else {
                let now = self.instant();
                let node = &mut self.nodes[id as usize];
                if !node.failed.is_empty() {
                    let failed = std::mem::take(&mut node.failed);
                    if let Some(core) = node.core.as_mut() {
                        for addr in failed {
                            core.dial_failed(addr, now);
                        }
                    }
                    continue;
                }
                if node.verify.is_empty() {
                    break;
                }
                // Hashing is taken as instant and always right: the sim has no bad peers.
                let pieces = std::mem::take(&mut node.verify);
                for piece in pieces {
                    self.verified(id, piece);
                    if let Some(core) = self.nodes[id as usize].core.as_mut() {
                        core.piece_checked(piece, true, now);
                    }
                }
                continue;
            };
            self.act(id, action);
        }
        let node = &mut self.nodes[id as usize];
        let Some(core) = node.core.as_ref() else {
            return;
        };
        if let Some(at) = core.poll_timeout() {
            let at = (at.saturating_duration_since(self.base).as_nanos() as Time).max(self.now);
            if node.timer.is_none_or(|t| at < t) {
                node.timer = Some(at);
                self.push(at, Ev::Timer(id));
            }
        }
    }

    fn act(&mut self, id: NodeId, action: Action) {
        match action {
            Action::Send { peer, message } => {
                let Some(conn) = self.nodes[id as usize].conn(peer) else {
                    return;
                };
                let to = self.other_side(conn, id);
                if let Message::Piece { index, begin, data } = message {
                    let block = BlockRef {
                        index,
                        begin,
                        length: data.len() as u32,
                    };
                    self.enqueue_block(id, conn, to, block);
                } else {
                    let at = self.arrival(conn, to, 64, self.now);
                    let ev = match message {
                        Message::Have(piece) => Ev::Have { conn, to, piece },
                        msg => Ev::Deliver {
                            conn,
                            to,
                            msg: Box::new(msg),
                        },
                    };
                    self.push(at, ev);
                }
            }
            Action::ReadBlock { peer, block } => {
                if let Some(conn) = self.nodes[id as usize].conn(peer) {
                    let to = self.other_side(conn, id);
                    self.enqueue_block(id, conn, to, block);
                }
            }
            Action::CancelRead { peer, block } => {
                let node = &mut self.nodes[id as usize];
                if let Some(conn) = node.conn(peer) {
                    node.uplink.retain(|&(c, _, b)| !(c == conn && b == block));
                }
            }
            Action::StoreBlock { .. }
            | Action::ServeMetadata { .. }
            | Action::ServeHashes { .. }
            | Action::Banned { .. }
            | Action::SeenAs { .. }
            | Action::Introduced { .. }
            | Action::Punch { .. } => {}
            Action::VerifyPiece { piece } => self.nodes[id as usize].verify.push(piece),
            Action::Disconnect { peer, .. } => {
                let node = &mut self.nodes[id as usize];
                if let Some(conn) = node.conn(peer) {
                    node.forget(peer);
                    self.close(conn, id);
                }
            }
            Action::Connect { addr } => {
                let Some(to) = addr_node(&addr).filter(|&t| (t as usize) < self.nodes.len()) else {
                    self.nodes[id as usize].failed.push(addr);
                    return;
                };
                // SYN, SYN-ACK, then the two BitTorrent handshakes: one and a half round trips.
                let owd = self.nodes[id as usize].lat + self.nodes[to as usize].lat;
                self.push(self.now + 3 * owd, Ev::Dialled { from: id, to });
            }
            Action::Announce { event } => {
                if event == AnnounceEvent::Stopped {
                    return;
                }
                let peers = self.sample(id);
                let at = self.now + 2 * self.nodes[id as usize].lat + TRACKER_DELAY;
                let peers = peers.into_boxed_slice();
                self.push(at, Ev::TrackerReply { node: id, peers });
            }
            Action::Completed => {
                let node = &mut self.nodes[id as usize];
                if node.stats.completed.is_none() && !node.stats.seed {
                    node.stats.completed = Some(Duration::from_nanos(self.now));
                    self.waiting -= 1;
                    if let Departure::AfterDone(d) = node.departure {
                        self.push(self.now + nanos(d), Ev::Leave(id));
                    }
                }
            }
        }
    }

    fn other_side(&self, conn: ConnId, me: NodeId) -> u8 {
        u8::from(self.conns[conn as usize].ends[0] == me)
    }

    /// When a message of `bytes` sent at `sent` reaches side `to`: one-way delay, plus a retransmission
    /// timeout if one of its segments is lost, never before what was sent earlier on the connection.
    fn arrival(&mut self, conn: ConnId, to: u8, bytes: u64, sent: Time) -> Time {
        let owd = self.conns[conn as usize].owd;
        let mut at = sent + owd;
        if self.cfg.loss > 0.0 {
            let segments = bytes.div_ceil(SEGMENT).max(1) as i32;
            let p_any = 1.0 - (1.0 - self.cfg.loss).powi(segments);
            if self.rng.unit() < p_any {
                at += MIN_RTO.max(4 * owd);
            }
        }
        let c = &mut self.conns[conn as usize];
        at = at.max(c.last[to as usize]);
        c.last[to as usize] = at;
        at
    }

    fn enqueue_block(&mut self, id: NodeId, conn: ConnId, to: u8, block: BlockRef) {
        let node = &mut self.nodes[id as usize];
        node.uplink.push_back((conn, to, block));
        if node.sending.is_none() {
            self.start_next(id);
        }
    }

    /// Puts the next block of the uplink's FIFO on the wire: it occupies the link for size / upload.
    fn start_next(&mut self, id: NodeId) {
        let now = self.instant();
        let node = &mut self.nodes[id as usize];
        while let Some((conn, to, block)) = node.uplink.pop_front() {
            let c = &self.conns[conn as usize];
            if !c.open[to as usize] || !c.open[1 - to as usize] {
                continue;
            }
            // The writer's last word with the core: a block cancelled or choked away meanwhile stays.
            let key = c.keys[1 - to as usize];
            if !node
                .core
                .as_mut()
                .is_some_and(|core| core.commit_upload(key, block, now))
            {
                continue;
            }
            node.sending = Some((conn, to, block));
            let busy = (f64::from(block.length) / node.up * 1e9) as Time;
            self.push(self.now + busy.max(1), Ev::LinkDone(id));
            return;
        }
    }

    fn link_done(&mut self, id: NodeId) {
        let Some((conn, to, block)) = self.nodes[id as usize].sending.take() else {
            return;
        };
        let c = &self.conns[conn as usize];
        if c.open[0] && c.open[1] {
            let receiver = c.ends[to as usize];
            let len = u64::from(block.length);
            let start = self.now - (len as f64 / self.nodes[id as usize].up * 1e9) as Time;
            let r = &self.nodes[receiver as usize];
            let on_down = (len as f64 / r.down * 1e9) as Time;
            // Cut-through: the block arrives one-way delay after its last byte left, unless the
            // receiver's downlink (busy with earlier blocks, or slower than this uplink) holds it.
            let earliest = (start + c.owd + on_down).max(r.down_free + on_down);
            let at = self.arrival(conn, to, len, self.now).max(earliest);
            let c = &mut self.conns[conn as usize];
            c.last[to as usize] = at;
            self.nodes[receiver as usize].down_free = at;
            self.nodes[id as usize].stats.uploaded += len;
            self.push(at, Ev::Data { conn, to, block });
        }
        self.start_next(id);
        self.drain(id);
    }

    fn dialled(&mut self, from: NodeId, to: NodeId) {
        let now = self.instant();
        let (f, t) = (&self.nodes[from as usize], &self.nodes[to as usize]);
        if f.core.is_none() {
            return;
        }
        let (hs_from, hs_to) = (f.hs, t.hs);
        let Some(Ok(key_to)) = self.nodes[to as usize]
            .core
            .as_mut()
            .map(|c| c.add_peer(node_addr(from), true, &hs_to, &hs_from, now))
        else {
            // Nobody there, or it turned us away: the dial failed.
            self.nodes[from as usize].failed.push(node_addr(to));
            self.drain(from);
            return;
        };
        let conn = self.conns.len() as ConnId;
        let owd = self.nodes[from as usize].lat + self.nodes[to as usize].lat;
        let Some(Ok(key_from)) = self.nodes[from as usize]
            .core
            .as_mut()
            .map(|c| c.add_peer(node_addr(to), false, &hs_from, &hs_to, now))
        else {
            // The dialler turned it down after all: the other side sees the connection close.
            self.nodes[from as usize].failed.push(node_addr(to));
            self.conns.push(Conn {
                ends: [from, to],
                keys: [key_to, key_to],
                open: [false, true],
                last: [0, 0],
                owd,
            });
            self.nodes[to as usize].remember(key_to, conn);
            self.push(self.now + owd, Ev::Closed { conn, to: 1 });
            self.drain(to);
            self.drain(from);
            return;
        };
        self.conns.push(Conn {
            ends: [from, to],
            keys: [key_from, key_to],
            open: [true, true],
            last: [0, 0],
            owd,
        });
        self.nodes[from as usize].remember(key_from, conn);
        self.nodes[to as usize].remember(key_to, conn);
        self.drain(to);
        self.drain(from);
    }

    /// Node `me` closes `conn`: the other side learns it one way later, after what was already sent.
    fn close(&mut self, conn: ConnId, me: NodeId) {
        let to = self.other_side(conn, me);
        let c = &mut self.conns[conn as usize];
        c.open[1 - to as usize] = false;
        if c.open[to as usize] {
            let at = (self.now + c.owd).max(c.last[to as usize]);
            self.push(at, Ev::Closed { conn, to });
        }
    }

    fn leave(&mut self, id: NodeId) {
        let now = self.instant();
        let Some(core) = self.nodes[id as usize].core.as_mut() else {
            return;
        };
        // Stopping closes every connection (`Disconnect` actions) and says goodbye to the tracker.
        core.stop(now);
        self.drain(id);
        let node = &mut self.nodes[id as usize];
        node.core = None;
        node.stats.left = Some(Duration::from_nanos(self.now));
        node.uplink.clear();
        node.sending = None;
        let conns: Vec<ConnId> = std::mem::take(&mut node.keys)
            .into_iter()
            .filter(|&c| c != NO_CONN)
            .collect();
        for conn in conns {
            self.close(conn, id);
        }
        if let Some(i) = self.slot[id as usize].take() {
            self.present.swap_remove(i);
            if let Some(&moved) = self.present.get(i) {
                self.slot[moved as usize] = Some(i);
            }
        }
        let node = &mut self.nodes[id as usize];
        if !node.stats.seed {
            if node.stats.completed.is_none() {
                self.waiting -= 1;
            }
            let has = std::mem::take(&mut node.has);
            for (p, h) in has.into_iter().enumerate() {
                if h {
                    self.holders[p] -= 1;
                    if self.holders[p] == 0 {
                        self.covered -= 1;
                    }
                }
            }
        }
    }

    /// Up to `tracker_peers` present peers other than `id`, drawn at random.
    fn sample(&mut self, id: NodeId) -> Vec<SocketAddr> {
        let want = self
            .cfg
            .tracker_peers
            .min(self.present.len().saturating_sub(1));
        let mut picked: Vec<NodeId> = Vec::with_capacity(want);
        let mut tries = 0;
        while picked.len() < want && tries < want * 20 {
            tries += 1;
            let cand = self.present[self.rng.below(self.present.len())];
            if cand != id && !picked.contains(&cand) {
                picked.push(cand);
            }
        }
        picked.into_iter().map(node_addr).collect()
    }

    fn verified(&mut self, id: NodeId, piece: PieceIndex) {
        let node = &mut self.nodes[id as usize];
        node.stats.verified += u64::from(self.cfg.piece_size);
        if node.stats.seed {
            return;
        }
        if let Some(h) = node.has.get_mut(piece.as_usize()) {
            if !*h {
                *h = true;
                self.holders[piece.as_usize()] += 1;
                if self.holders[piece.as_usize()] == 1 {
                    self.covered += 1;
                    self.check_copy_out();
                }
            }
        }
    }

    /// Sends away the peers that leave once the others hold a full copy, if they now do.
    fn check_copy_out(&mut self) {
        if self.covered < self.cfg.pieces {
            return;
        }
        self.copy_out.get_or_insert(Duration::from_nanos(self.now));
        for id in 0..self.nodes.len() as NodeId {
            let node = &self.nodes[id as usize];
            if node.core.is_some() && node_departs_on_copy(node) {
                self.copy_out_departure
                    .get_or_insert(Duration::from_nanos(self.now));
                self.push(self.now, Ev::Leave(id));
            }
        }
    }
}

fn node_departs_on_copy(node: &Node) -> bool {
    node.departure == Departure::WhenCopyOut
}

/// Seconds, for reports.
pub fn secs(d: Duration) -> f64 {
    seconds(nanos(d))
}

/// The core's request-queue bounds are counted in blocks of 16 KiB; with bigger simulated blocks they
/// keep the same bytes in flight.
fn scale_queues(limits: &mut Limits, block_size: u32) {
    let per = (block_size / BLOCK).max(1) as usize;
    limits.initial_queue = (limits.initial_queue / per).max(1);
    limits.min_queue = (limits.min_queue / per).max(1);
    limits.max_queue = (limits.max_queue / per).max(limits.min_queue);
}
