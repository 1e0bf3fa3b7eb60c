//! The discrete-event loop: a queue of (virtual time, tie-break) events drives every peer's
//! `TorrentCore` and the links between them. See the crate documentation for the model.
//!
//! Events run in conservative windows: nothing one peer does reaches another sooner than
//! `lookahead` (the smallest one-way delay between two peers, or to the tracker), so within a window
//! no peer's events depend on another's, and each peer runs all of its events of the window in a row
//! (its core stays in cache). Every peer owns its state: its core, its random numbers, its side of
//! each connection; the tracker is a node of its own. A run is the same whatever the window size up
//! to `lookahead` (`windows_of_any_size_up_to_the_lookahead_give_the_same_run`).

use std::collections::{BinaryHeap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;
use torrent_core::{
    Action, AnnounceEvent, Bitfield, CoreConfig, Limits, PeerEvent, PeerKey, TorrentCore, BLOCK,
};
use wire::{BlockRef, Handshake, Message};

use crate::config::{Arrivals, Departure, SwarmConfig};
use crate::queue::{Entry, Queue, Time};
use crate::rng::Rng;

pub type NodeId = u32;
type ConnId = u32;

const INFO_HASH: [u8; 20] = *b"spore-sim-torrent-01";
/// The unit of loss: a TCP-sized chunk of a message.
const SEGMENT: u64 = 16 * 1024;
const MIN_RTO: Time = 200_000_000;
/// Tracker round trip beyond the peer's own access latency (half of it each way).
const TRACKER_DELAY: Time = 20_000_000;
/// Bits of an event's tie-break that count the sender's events; the sender's id is above them.
const SEQ_BITS: u32 = 40;

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
        piece: u32,
    },
    /// A block reaches side `to` of `conn`; `ready` once it has also passed the receiver's downlink.
    Data {
        conn: ConnId,
        to: u8,
        block: BlockRef,
        ready: bool,
    },
    /// The node's uplink finished sending its current block.
    LinkDone(NodeId),
    /// The dialler's handshake reaches `to`, which takes the connection or turns it away.
    Dialled {
        from: NodeId,
        to: NodeId,
    },
    /// `to` took the connection: its handshake reaches the dialler (side 0 of `conn`).
    Accepted {
        conn: ConnId,
    },
    /// Nobody at `to`, or it turned the dialler away.
    DialFailed {
        from: NodeId,
        to: NodeId,
    },
    /// An announce reaches the tracker.
    Announce {
        node: NodeId,
        stopped: bool,
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
    /// A message that waited behind blocks on the receiver's downlink, now due.
    Held(Box<Ev>),
}

struct Conn {
    ends: [NodeId; 2],
    keys: [PeerKey; 2],
    /// Side `i` still has the connection open (it has neither closed it nor seen it closed).
    open: [bool; 2],
    /// When the last message toward side `i` arrives: a later one never overtakes it (one TCP stream).
    /// Written by the sender's side only.
    last: [Time; 2],
    /// Blocks toward side `i` held by its downlink, and when the last of them passes it: messages
    /// behind them wait. Written by side `i` only.
    holding: [u32; 2],
    held: [Time; 2],
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
    verify: Vec<u32>,
    /// Dials that found nobody, to report to the core once its actions are drained.
    failed: Vec<SocketAddr>,
    /// Pieces it has verified, for the full-copy count.
    has: Vec<bool>,
    departure: Departure,
    stats: PeerStats,
    /// Its own random numbers (loss on what it sends), so that peers can run in any order.
    rng: Rng,
    /// Events it has scheduled: the tie-break among equal times, with its id.
    pushes: u64,
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
    /// Every event beyond the current window, with the node it happens at.
    queue: Queue<(NodeId, Ev)>,
    /// The node whose events are running, and its events of the window still to run.
    running: NodeId,
    local: BinaryHeap<Entry<Ev>>,
    window_end: Time,
    /// The shortest time in which one node's event can cause another's.
    lookahead: Time,
    /// The window size (`lookahead`; smaller only to test that it makes no difference).
    window: Time,
    batch: Vec<Entry<(NodeId, Ev)>>,
    nodes: Vec<Node>,
    conns: Vec<Conn>,
    /// The tracker's node id (one past the peers), random numbers and scheduled events.
    tracker: NodeId,
    tracker_rng: Rng,
    tracker_pushes: u64,
    /// Present peers, as the tracker knows them (with each one's index in it).
    present: Vec<NodeId>,
    slot: Vec<Option<usize>>,
    /// Pieces a leecher got first or lost by leaving in this window: (time, node, piece, got).
    holding: Vec<(Time, NodeId, u32, bool)>,
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
                    rng: Rng::new(rng.next_u64()),
                    pushes: 0,
                });
                arrivals.push((id, (at * 1e9) as Time));
            }
        }
        let waiting = nodes.iter().filter(|n| !n.stats.seed).count();
        let n = nodes.len();
        let mut lats: Vec<Time> = nodes.iter().map(|n| n.lat).collect();
        lats.sort_unstable();
        let pair = match lats[..] {
            [a, b, ..] => a + b,
            _ => Time::MAX,
        };
        let to_tracker = lats.first().map_or(Time::MAX, |&a| a + TRACKER_DELAY / 2);
        let lookahead = pair.min(to_tracker).max(1);
        let tracker_rng = Rng::new(rng.next_u64());
        let mut sim = Sim {
            base: Instant::now(),
            now: 0,
            queue: Queue::default(),
            running: 0,
            local: BinaryHeap::new(),
            window_end: 0,
            lookahead,
            window: lookahead,
            batch: Vec::new(),
            nodes,
            conns: Vec::new(),
            tracker: n as NodeId,
            tracker_rng,
            tracker_pushes: 0,
            present: Vec::new(),
            slot: vec![None; n],
            holding: Vec::new(),
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
            sim.running = id;
            sim.push(at, id, Ev::Arrive(id));
        }
        sim
    }

    /// Runs the simulation in windows of `window` instead of the lookahead (no bigger than it): the
    /// run must not change.
    pub fn window(mut self, window: Duration) -> Sim {
        self.window = nanos(window).clamp(1, self.lookahead);
        self
    }

    /// Schedules `ev` at node `to`, sent by the running node.
    fn push(&mut self, at: Time, to: NodeId, ev: Ev) {
        let src = self.running;
        let count = match self.nodes.get_mut(src as usize) {
            Some(n) => &mut n.pushes,
            None => &mut self.tracker_pushes,
        };
        *count += 1;
        let seq = (u64::from(src) << SEQ_BITS) | *count;
        if to == src && at < self.window_end {
            self.local.push(Entry { at, seq, ev });
        } else {
            debug_assert!(
                at >= self.window_end,
                "an event reached another node within the lookahead"
            );
            self.queue.push_seq(at, seq, (to, ev));
        }
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
        let limit = nanos(self.cfg.time_limit).saturating_add(1);
        let every = nanos(every).max(1);
        let mut next_report = every;
        // Once everyone is done, the run goes on to the next multiple of the lookahead, so that it
        // ends at the same point whatever the window.
        let mut stop = limit;
        let mut batch = std::mem::take(&mut self.batch);
        let mut latest = 0;
        loop {
            let Some(first) = self.queue.pop_before(stop) else {
                break;
            };
            let start = first.at - first.at % self.window;
            self.window_end = (start + self.window).min(stop);
            while start >= next_report {
                report((Duration::from_nanos(next_report), self.waiting, self.events));
                next_report = next_report.saturating_add(every);
            }
            batch.push(first);
            while let Some(e) = self.queue.pop_before(self.window_end) {
                batch.push(e);
            }
            // Stable: each node's events stay in (time, tie-break) order.
            batch.sort_by_key(|e| e.ev.0);
            let mut events = batch.drain(..).peekable();
            while let Some(e) = events.next() {
                let node = e.ev.0;
                self.running = node;
                self.local.push(Entry {
                    at: e.at,
                    seq: e.seq,
                    ev: e.ev.1,
                });
                while let Some(e) = events.next_if(|e| e.ev.0 == node) {
                    self.local.push(Entry {
                        at: e.at,
                        seq: e.seq,
                        ev: e.ev.1,
                    });
                }
                while let Some(e) = self.local.pop() {
                    self.now = e.at;
                    latest = latest.max(e.at);
                    self.events += 1;
                    self.handle(e.ev);
                }
            }
            drop(events);
            self.end_window();
            if self.waiting == 0 && stop == limit {
                stop = self.window_end.div_ceil(self.lookahead) * self.lookahead;
            }
        }
        self.batch = batch;
        let all_done = self.waiting == 0;
        Outcome {
            end: Duration::from_nanos(latest),
            events: self.events,
            dropped: self.dropped,
            in_flight: self
                .queue
                .iter()
                .map(|e| match e.ev.1 {
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
        if let Ev::Deliver { conn, to, .. } | Ev::Have { conn, to, .. } | Ev::Closed { conn, to } =
            ev
        {
            let c = &self.conns[conn as usize];
            let side = to as usize;
            if c.holding[side] > 0 && c.open[side] {
                // Blocks that reached the receiver before it are still on its downlink.
                let at = c.held[side];
                self.push(at, self.running, Ev::Held(Box::new(ev)));
                return;
            }
        }
        self.run_event(ev);
    }

    fn run_event(&mut self, ev: Ev) {
        match ev {
            Ev::Held(ev) => self.run_event(*ev),
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
            Ev::Data {
                conn,
                to,
                block,
                ready,
            } => {
                let c = &mut self.conns[conn as usize];
                let side = to as usize;
                if !c.open[side] {
                    self.dropped += u64::from(block.length);
                    if ready {
                        c.holding[side] -= 1;
                    }
                    return;
                }
                let node = &mut self.nodes[c.ends[side] as usize];
                if ready {
                    c.holding[side] -= 1;
                } else {
                    // The receiver's downlink passes blocks in the order they reach it, at its rate;
                    // a block behind others, and whatever follows it on its connection, waits.
                    let on_down = (f64::from(block.length) / node.down * 1e9) as Time;
                    let at = (node.down_free + on_down).max(self.now);
                    node.down_free = at;
                    if at > self.now || c.holding[side] > 0 {
                        let at = at.max(c.held[side]);
                        c.holding[side] += 1;
                        c.held[side] = at;
                        let ev = Ev::Data {
                            conn,
                            to,
                            block,
                            ready: true,
                        };
                        self.push(at, self.running, ev);
                        return;
                    }
                }
                node.stats.downloaded += u64::from(block.length);
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
            Ev::Accepted { conn } => self.accepted(conn),
            Ev::DialFailed { from, to } => {
                self.nodes[from as usize].failed.push(node_addr(to));
                self.drain(from);
            }
            Ev::Announce { node, stopped } => self.announce(node, stopped),
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
        self.drain(id);
        if node_departs_on_copy(&self.nodes[id as usize]) && self.covered >= self.cfg.pieces {
            self.push(self.now, id, Ev::Leave(id));
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
                self.push(at, id, Ev::Timer(id));
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
                    let node = self.conns[conn as usize].ends[to as usize];
                    let ev = match message {
                        Message::Have(piece) => Ev::Have { conn, to, piece },
                        msg => Ev::Deliver {
                            conn,
                            to,
                            msg: Box::new(msg),
                        },
                    };
                    self.push(at, node, ev);
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
                // SYN, SYN-ACK, then the two BitTorrent handshakes: the dialler's reaches `to` after
                // one round trip, `to`'s the dialler one way later.
                let owd = self.nodes[id as usize].lat + self.nodes[to as usize].lat;
                self.push(self.now + 2 * owd, to, Ev::Dialled { from: id, to });
            }
            Action::Announce { event } => {
                let at = self.now + self.nodes[id as usize].lat + TRACKER_DELAY / 2;
                let stopped = event == AnnounceEvent::Stopped;
                self.push(at, self.tracker, Ev::Announce { node: id, stopped });
            }
            Action::Completed => {
                let node = &mut self.nodes[id as usize];
                if node.stats.completed.is_none() && !node.stats.seed {
                    node.stats.completed = Some(Duration::from_nanos(self.now));
                    self.waiting -= 1;
                    if let Departure::AfterDone(d) = node.departure {
                        self.push(self.now + nanos(d), id, Ev::Leave(id));
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
            let sender = self.running as usize;
            if self.nodes[sender].rng.unit() < p_any {
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
            // Only its own side: a close by the other side reaches it one way later.
            let c = &self.conns[conn as usize];
            if !c.open[1 - to as usize] {
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
            self.push(self.now + busy.max(1), id, Ev::LinkDone(id));
            return;
        }
    }

    fn link_done(&mut self, id: NodeId) {
        let Some((conn, to, block)) = self.nodes[id as usize].sending.take() else {
            return;
        };
        let c = &self.conns[conn as usize];
        if c.open[1 - to as usize] {
            let receiver = c.ends[to as usize];
            let len = u64::from(block.length);
            let start = self.now - (len as f64 / self.nodes[id as usize].up * 1e9) as Time;
            let on_down = (len as f64 / self.nodes[receiver as usize].down * 1e9) as Time;
            // Cut-through: the block reaches the receiver one-way delay after its last byte left, or
            // after its first byte arrived plus its time on a slower downlink; there it waits for the
            // blocks ahead of it on the downlink (see the `Data` event).
            let earliest = start + c.owd + on_down;
            let at = self.arrival(conn, to, len, self.now).max(earliest);
            self.conns[conn as usize].last[to as usize] = at;
            self.nodes[id as usize].stats.uploaded += len;
            let ev = Ev::Data {
                conn,
                to,
                block,
                ready: false,
            };
            self.push(at, receiver, ev);
        }
        self.start_next(id);
        self.drain(id);
    }

    /// The dialler's handshake reaches `to` (running): it takes the connection or turns it away.
    fn dialled(&mut self, from: NodeId, to: NodeId) {
        let now = self.instant();
        let owd = self.nodes[from as usize].lat + self.nodes[to as usize].lat;
        let (hs_from, hs_to) = (self.nodes[from as usize].hs, self.nodes[to as usize].hs);
        let Some(Ok(key_to)) = self.nodes[to as usize]
            .core
            .as_mut()
            .map(|c| c.add_peer(node_addr(from), true, &hs_to, &hs_from, now))
        else {
            // Nobody there, or it turned us away: the dial failed.
            self.push(self.now + owd, from, Ev::DialFailed { from, to });
            return;
        };
        let conn = self.conns.len() as ConnId;
        self.conns.push(Conn {
            ends: [from, to],
            keys: [PeerKey(u64::MAX), key_to],
            open: [true, true],
            last: [self.now + owd, 0],
            holding: [0, 0],
            held: [0, 0],
            owd,
        });
        self.nodes[to as usize].remember(key_to, conn);
        // Before anything `to` sends on the connection.
        self.push(self.now + owd, from, Ev::Accepted { conn });
        self.drain(to);
    }

    /// `to`'s handshake reaches the dialler (running): its core meets `to` too, or turns it down after
    /// all (or has left), and `to` sees the connection close.
    fn accepted(&mut self, conn: ConnId) {
        let now = self.instant();
        let [from, to] = self.conns[conn as usize].ends;
        let (hs_from, hs_to) = (self.nodes[from as usize].hs, self.nodes[to as usize].hs);
        let Some(core) = self.nodes[from as usize].core.as_mut() else {
            self.close(conn, from);
            return;
        };
        match core.add_peer(node_addr(to), false, &hs_from, &hs_to, now) {
            Ok(key) => {
                self.conns[conn as usize].keys[0] = key;
                self.nodes[from as usize].remember(key, conn);
            }
            Err(_) => {
                self.nodes[from as usize].failed.push(node_addr(to));
                self.close(conn, from);
            }
        }
        self.drain(from);
    }

    /// Node `me` closes `conn`: the other side learns it one way later, after what was already sent.
    fn close(&mut self, conn: ConnId, me: NodeId) {
        let to = self.other_side(conn, me);
        let c = &mut self.conns[conn as usize];
        c.open[1 - to as usize] = false;
        let at = (self.now + c.owd).max(c.last[to as usize]);
        let node = c.ends[to as usize];
        self.push(at, node, Ev::Closed { conn, to });
    }

    /// An announce reaches the tracker (running): it learns who is present, and answers all but a
    /// goodbye with a sample of the others.
    fn announce(&mut self, id: NodeId, stopped: bool) {
        if stopped {
            if let Some(i) = self.slot[id as usize].take() {
                self.present.swap_remove(i);
                if let Some(&moved) = self.present.get(i) {
                    self.slot[moved as usize] = Some(i);
                }
            }
            return;
        }
        if self.slot[id as usize].is_none() {
            self.slot[id as usize] = Some(self.present.len());
            self.present.push(id);
        }
        let peers = self.sample(id).into_boxed_slice();
        let at = self.now + self.nodes[id as usize].lat + TRACKER_DELAY / 2;
        self.push(at, id, Ev::TrackerReply { node: id, peers });
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
        let node = &mut self.nodes[id as usize];
        if !node.stats.seed {
            if node.stats.completed.is_none() {
                self.waiting -= 1;
            }
            let has = std::mem::take(&mut node.has);
            for (p, h) in has.into_iter().enumerate() {
                if h {
                    self.holding.push((self.now, id, p as u32, false));
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
            let cand = self.present[self.tracker_rng.below(self.present.len())];
            if cand != id && !picked.contains(&cand) {
                picked.push(cand);
            }
        }
        picked.into_iter().map(node_addr).collect()
    }

    fn verified(&mut self, id: NodeId, piece: u32) {
        let node = &mut self.nodes[id as usize];
        node.stats.verified += u64::from(self.cfg.piece_size);
        if node.stats.seed {
            return;
        }
        if let Some(h) = node.has.get_mut(piece as usize) {
            if !*h {
                *h = true;
                self.holding.push((self.now, id, piece, true));
            }
        }
    }

    /// Counts the pieces leechers got or lost in the window, in time order; once they hold every
    /// piece between them, the peers that leave then learn it (one lookahead later, as from a tracker).
    fn end_window(&mut self) {
        if self.holding.is_empty() {
            return;
        }
        let mut changes = std::mem::take(&mut self.holding);
        // Stable: a node's own changes keep their order.
        changes.sort_by_key(|&(at, node, _, _)| (at, node));
        for &(at, _, piece, got) in &changes {
            let h = &mut self.holders[piece as usize];
            if got {
                *h += 1;
                if *h == 1 {
                    self.covered += 1;
                }
            } else {
                *h -= 1;
                if *h == 0 {
                    self.covered -= 1;
                }
            }
            // Every piece is out now (again, if a leecher's leaving had taken one away).
            if got && *h == 1 && self.covered == self.cfg.pieces {
                self.copy_out.get_or_insert(Duration::from_nanos(at));
                for id in 0..self.nodes.len() as NodeId {
                    let node = &self.nodes[id as usize];
                    if node.core.is_some() && node_departs_on_copy(node) {
                        let leave = at + self.lookahead;
                        self.copy_out_departure
                            .get_or_insert(Duration::from_nanos(leave));
                        self.running = id;
                        self.push(leave, id, Ev::Leave(id));
                    }
                }
            }
        }
        changes.clear();
        self.holding = changes;
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
