//! The discrete-event loop: a queue of (virtual time, tie-break) events drives every peer's
//! `TorrentCore` and the links between them. See the crate documentation for the model.
//!
//! Events run in conservative windows: nothing one peer does reaches another sooner than
//! `lookahead` (the smallest one-way delay between two peers, or to the tracker), so within a window
//! no peer's events depend on another's, and each peer runs all of its events of the window in a row
//! (its core stays in cache). Every peer owns its state: its core, its random numbers, its side of
//! each connection; the tracker is a node of its own. A run is the same whatever the window size up
//! to `lookahead` and however the peers are split between threads
//! (`windows_and_threads_do_not_change_a_run`).

use std::collections::{BinaryHeap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use torrent_core::{
    Action, AnnounceEvent, Bitfield, CoreConfig, Limits, PeerEvent, PeerKey, TorrentCore, BLOCK,
};
use wire::{BlockRef, Handshake, Message, PieceIndex};

use crate::config::{Arrivals, Departure, SwarmConfig};
use crate::queue::{Entry, Time, Windows};
use crate::rng::Rng;

pub type NodeId = u32;
/// A connection end's index in its node's `ends`.
type EndId = u32;

const INFO_HASH: [u8; 20] = *b"spore-sim-torrent-01";
/// The unit of loss: a TCP-sized chunk of a message.
const SEGMENT: u64 = 16 * 1024;
const MIN_RTO: Time = 200_000_000;
/// Tracker round trip beyond the peer's own access latency (half of it each way).
const TRACKER_DELAY: Time = 20_000_000;
/// Bits of an event's tie-break that count the sender's events; the sender's id is above them.
const SEQ_BITS: u32 = 40;
/// `Have`s one write carries at most (`Ev::Haves`): a fifth sends the four waiting at once.
const HAVES_INLINE: usize = 4;

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
    Arrive,
    Timer,
    /// A control message reaches the node's end `end` (boxed, and `Have`s, most of them, go as
    /// `Have`: a small event keeps the queue fast).
    Deliver {
        end: EndId,
        msg: Box<Message>,
    },
    Have {
        end: EndId,
        piece: PieceIndex,
    },
    /// `Have`s the peer wrote together (`SwarmConfig::have_batch`), in the order sent: the first
    /// `count` of `pieces` (inline, as a box per event cost more than the batch saved).
    Haves {
        end: EndId,
        count: u8,
        pieces: [PieceIndex; HAVES_INLINE],
    },
    /// The node's `Have`s waiting on its connections leave.
    FlushHaves,
    /// A block reaches end `end`; `ready` once it has also passed the node's downlink.
    Data {
        end: EndId,
        block: BlockRef,
        ready: bool,
    },
    /// The node's uplink finished sending its current block.
    LinkDone,
    /// The handshake of `from` (dialling from its end `from_end`) reaches the node, which takes the
    /// connection or turns it away.
    Dialled {
        from: NodeId,
        from_end: EndId,
    },
    /// The dialled peer took the connection on its end `peer_end`: its handshake reaches the dialler.
    Accepted {
        end: EndId,
        peer_end: EndId,
    },
    /// Nobody there, or it turned the dialler away.
    DialFailed {
        end: EndId,
    },
    /// An announce of `node` reaches the tracker.
    Announce {
        node: NodeId,
        stopped: bool,
    },
    TrackerReply {
        peers: Box<[SocketAddr]>,
    },
    /// End `end` learns the other side closed the connection.
    Closed {
        end: EndId,
    },
    Leave,
    /// A message that waited behind blocks on the node's downlink, now due.
    Held(Box<Ev>),
}

/// A node's end of a connection: everything on it is written by that node only, so nodes can run
/// side by side.
struct End {
    peer: NodeId,
    /// The peer's end (`NO_END` while a dial is under way).
    peer_end: EndId,
    key: PeerKey,
    /// Not closed by this node, nor seen closed.
    open: bool,
    /// When the last message toward the peer arrives: a later one never overtakes it (one TCP stream).
    last_out: Time,
    /// Blocks that reached this node on it and wait for its downlink, and when the last passes it:
    /// messages behind them wait too.
    holding: u32,
    held: Time,
    owd: Time,
    /// `Have`s waiting to leave together (`SwarmConfig::have_batch`): the first `waiting`. Inline,
    /// not a vector: a buffer of its own was one cache miss more per `Have`.
    haves: [PieceIndex; HAVES_INLINE],
    waiting: u8,
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

/// What other nodes may read of a node: fixed for the run.
struct Profile {
    hs: Handshake,
    up: f64,
    down: f64,
    lat: Time,
}

struct Node {
    group: usize,
    core: Option<TorrentCore>,
    /// Its connection ends, and the end of each of the core's peer keys (keys count up from 0 and are
    /// never reused).
    ends: Vec<End>,
    keys: Vec<EndId>,
    uplink: VecDeque<(EndId, BlockRef)>,
    sending: Option<(EndId, BlockRef)>,
    /// When the downlink has passed everything that reached it.
    down_free: Time,
    /// The earliest timer event scheduled for this node.
    timer: Option<Time>,
    verify: Vec<PieceIndex>,
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
    /// Its ends with `Have`s waiting (or sent early since): non-empty while a `FlushHaves` is due.
    batched: Vec<EndId>,
}

const NO_END: EndId = EndId::MAX;

impl Node {
    fn end_of(&self, key: PeerKey) -> Option<EndId> {
        let e = *self.keys.get(usize::try_from(key.0).ok()?)?;
        (e != NO_END).then_some(e)
    }

    fn remember(&mut self, key: PeerKey, end: EndId) {
        let Ok(i) = usize::try_from(key.0) else {
            return;
        };
        if self.keys.len() <= i {
            self.keys.resize(i + 1, NO_END);
        }
        self.keys[i] = end;
    }

    fn forget(&mut self, key: PeerKey) {
        if let Some(e) = usize::try_from(key.0)
            .ok()
            .and_then(|i| self.keys.get_mut(i))
        {
            *e = NO_END;
        }
    }
}

/// The tracker, a node of its own: who is present as far as it has heard.
struct Tracker {
    present: Vec<NodeId>,
    slot: Vec<Option<usize>>,
    rng: Rng,
    pushes: u64,
}

/// What every node may read during a window.
struct World {
    cfg: SwarmConfig,
    base: Instant,
    payload: Bytes,
    profiles: Vec<Profile>,
    tracker: NodeId,
    /// The leechers hold every piece between them (as of the window's start; written between
    /// windows only).
    copy_is_out: AtomicBool,
}

fn seq(src: NodeId, count: u64) -> u64 {
    (u64::from(src) << SEQ_BITS) | count
}

pub struct Sim {
    world: World,
    nodes: Vec<Node>,
    tracker: Tracker,
    /// Every node's arrival.
    arrivals: Vec<Entry<(NodeId, Ev)>>,
    /// The shortest time in which one node's event can cause another's.
    lookahead: Time,
    /// The window size (`lookahead`; smaller only to test that it makes no difference).
    window: Time,
    threads: usize,
}

/// What one shard tells the others, and the leader tells everyone, between windows.
struct Exchange {
    shards: usize,
    /// Events for another shard's nodes: `mail[from * shards + to]`.
    mail: Vec<Mutex<Vec<Routed>>>,
    reports: Vec<Mutex<Report>>,
    control: Mutex<Control>,
    barrier: Barrier,
}

impl Exchange {
    fn wait(&self) {
        if self.shards > 1 {
            self.barrier.wait();
        }
    }
}

/// A shard's account of the window it ran.
#[derive(Default)]
struct Report {
    events: u64,
    dropped: u64,
    finished: usize,
    latest: Time,
    holding: Vec<(Time, NodeId, u32, bool)>,
    /// Its earliest window with an event, counting what it mailed to others.
    next: Option<u64>,
    /// Its nodes present that leave once a copy is out.
    leave_on_copy: usize,
}

/// The leader's word for the next window.
#[derive(Default)]
struct Control {
    /// The window to run and when it ends (`None`: the run is over).
    window: Option<(u64, Time)>,
    /// Times at which the nodes present that leave once a copy is out leave.
    leaves: Vec<Time>,
}

/// The run's totals and the copy count, kept by the leader (shard 0's thread) between windows.
struct Leader {
    lookahead: Time,
    window: Time,
    pieces: u32,
    /// How many leechers hold each piece, and how many pieces at least one holds.
    holders: Vec<u32>,
    covered: u32,
    waiting: usize,
    events: u64,
    dropped: u64,
    latest: Time,
    copy_out_departure: Option<Duration>,
    copy_out: Option<Duration>,
    limit: Time,
    stop: Time,
    every: Time,
    next_report: Time,
    /// The end of the window being run.
    last_end: Option<Time>,
}

impl Sim {
    pub fn new(cfg: SwarmConfig) -> Sim {
        let mut rng = Rng::new(cfg.seed);
        let mut nodes = Vec::new();
        let mut profiles = Vec::new();
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
                profiles.push(Profile {
                    hs: Handshake::new(
                        ids::InfoHash::new(INFO_HASH),
                        ids::PeerId::new(peer_id),
                        false,
                    ),
                    up: group.upload,
                    down: group.download,
                    lat,
                });
                nodes.push(Node {
                    group: g,
                    core: None,
                    ends: Vec::new(),
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
                    batched: Vec::new(),
                });
                arrivals.push((id, (at * 1e9) as Time));
            }
        }
        let n = nodes.len();
        let mut lats: Vec<Time> = profiles.iter().map(|p| p.lat).collect();
        lats.sort_unstable();
        let pair = match lats[..] {
            [a, b, ..] => a + b,
            _ => Time::MAX,
        };
        let to_tracker = lats.first().map_or(Time::MAX, |&a| a + TRACKER_DELAY / 2);
        let lookahead = pair.min(to_tracker).max(1);
        let tracker = Tracker {
            present: Vec::new(),
            slot: vec![None; n],
            rng: Rng::new(rng.next_u64()),
            pushes: 0,
        };
        let cfg_threads = cfg.threads.max(1);
        let arrivals = arrivals
            .into_iter()
            .map(|(id, at)| {
                let node = &mut nodes[id as usize];
                node.pushes += 1;
                Entry {
                    at,
                    seq: seq(id, node.pushes),
                    ev: (id, Ev::Arrive),
                }
            })
            .collect();
        Sim {
            world: World {
                base: Instant::now(),
                payload: Bytes::from(vec![0u8; cfg.piece_size as usize]),
                profiles,
                tracker: n as NodeId,
                copy_is_out: AtomicBool::new(false),
                cfg,
            },
            nodes,
            tracker,
            arrivals,
            lookahead,
            window: lookahead,
            threads: cfg_threads,
        }
    }

    /// Runs the simulation in windows of `window` instead of the lookahead (no bigger than it): the
    /// run must not change.
    pub fn window(mut self, window: Duration) -> Sim {
        self.window = nanos(window).clamp(1, self.lookahead);
        self
    }

    /// Splits the peers between `threads` threads (the run must not change; for tests).
    pub fn threads(mut self, threads: usize) -> Sim {
        self.threads = threads.max(1);
        self
    }

    /// Runs until every leecher has completed or the time limit, and returns what happened.
    pub fn run(self) -> Outcome {
        self.run_with_progress(Duration::MAX, |_| {})
    }

    /// As [`Sim::run`], calling `report` every `every` of virtual time with (virtual time, leechers
    /// still downloading, events so far).
    ///
    /// The nodes are dealt out to shards, node `i` to shard `i % shards` (the tracker, node `n`, too),
    /// one thread each for the whole run. Each shard keeps its nodes' events; per window it runs
    /// them, keeps what its nodes sent themselves for later and mails the rest to the shards of their
    /// receivers; shard 0's thread then, as leader, adds up the window and picks the next one.
    pub fn run_with_progress(
        self,
        every: Duration,
        mut report: impl FnMut((Duration, usize, u64)),
    ) -> Outcome {
        let Sim {
            world,
            nodes,
            tracker,
            arrivals,
            lookahead,
            window,
            threads,
        } = self;
        let n = nodes.len();
        let shards = threads.clamp(1, n.max(1));
        let limit = nanos(world.cfg.time_limit).saturating_add(1);
        let every = nanos(every).max(1);
        let mut leader = Leader {
            lookahead,
            window,
            pieces: world.cfg.pieces,
            holders: vec![0; world.cfg.pieces as usize],
            covered: 0,
            waiting: nodes.iter().filter(|n| !n.stats.seed).count(),
            events: 0,
            dropped: 0,
            latest: 0,
            copy_out_departure: None,
            copy_out: None,
            limit,
            // Once everyone is done, the run goes on to the next multiple of the lookahead, so
            // that it ends at the same point whatever the window.
            stop: limit,
            every,
            next_report: every,
            last_end: None,
        };
        let mut workers: Vec<Worker> = (0..shards)
            .map(|s| Worker {
                world: &world,
                nodes: Vec::new(),
                shard: s,
                shards,
                tracker: None,
                queue: Windows::new(window),
                batch: Vec::new(),
                now: 0,
                running: 0,
                window_end: 0,
                local: BinaryHeap::new(),
                out: Vec::new(),
                events: 0,
                dropped: 0,
                finished: 0,
                holding: Vec::new(),
                latest: 0,
            })
            .collect();
        for (i, node) in nodes.into_iter().enumerate() {
            workers[i % shards].nodes.push(node);
        }
        workers[n % shards].tracker = Some(tracker);
        for e in arrivals {
            let s = e.ev.0 as usize % shards;
            workers[s].queue.push(e);
        }
        let exchange = Exchange {
            shards,
            mail: (0..shards * shards).map(|_| Mutex::default()).collect(),
            reports: (0..shards).map(|_| Mutex::default()).collect(),
            control: Mutex::default(),
            barrier: Barrier::new(shards),
        };
        let mut first = workers.remove(0);
        let rest = thread::scope(|s| {
            let handles: Vec<_> = workers
                .into_iter()
                .map(|mut w| {
                    let exchange = &exchange;
                    s.spawn(move || {
                        w.run_shard(exchange, None);
                        w
                    })
                })
                .collect();
            let progress: &mut dyn FnMut((Duration, usize, u64)) = &mut report;
            first.run_shard(&exchange, Some((&mut leader, progress)));
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect::<Vec<Worker>>()
        });
        let mut workers = vec![first];
        workers.extend(rest);
        // Events mailed in the last window and never taken in are still on the way too.
        let mailed: Vec<Entry<(NodeId, Ev)>> = exchange
            .mail
            .into_iter()
            .flat_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let in_flight = workers
            .iter()
            .flat_map(|w| w.queue.iter())
            .chain(mailed.iter())
            .map(|e| match e.ev.1 {
                Ev::Data { block, .. } => u64::from(block.length),
                _ => 0,
            })
            .sum();
        let mut stats: Vec<Option<PeerStats>> = vec![None; n];
        for w in workers {
            for (j, node) in w.nodes.into_iter().enumerate() {
                stats[j * shards + w.shard] = Some(node.stats);
            }
        }
        Outcome {
            end: Duration::from_nanos(leader.latest),
            events: leader.events,
            dropped: leader.dropped,
            in_flight,
            copy_out_departure: leader.copy_out_departure,
            copy_out: leader.copy_out,
            all_done: leader.waiting == 0,
            peers: stats.into_iter().flatten().collect(),
        }
    }
}

type Progress<'r> = &'r mut dyn FnMut((Duration, usize, u64));

/// An event with the node it happens at.
type Routed = Entry<(NodeId, Ev)>;

impl Leader {
    /// Adds up the shards' reports of the window just run and picks the next window (`None`: done).
    fn next_window(&mut self, reports: &[Mutex<Report>], progress: Progress) -> Control {
        let mut holding = Vec::new();
        let mut next: Option<u64> = None;
        let mut leave_on_copy = 0;
        for r in reports {
            let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
            self.events += r.events;
            self.dropped += r.dropped;
            self.waiting -= r.finished;
            self.latest = self.latest.max(r.latest);
            holding.append(&mut r.holding);
            next = match (next, r.next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            leave_on_copy += r.leave_on_copy;
            *r = Report::default();
        }
        let ran = self.last_end.take();
        if let Some(end) = ran {
            self.window_ran(end);
        }
        // A window that ended at the stop ran everything before it.
        if ran.is_some_and(|end| end >= self.stop) {
            next = None;
        }
        let leaves = self.count_holders(holding, leave_on_copy > 0);
        if let Some(&at) = leaves.first() {
            let w = at / self.window;
            next = Some(next.map_or(w, |n| n.min(w)));
        }
        let window = next.and_then(|w| {
            let start = w * self.window;
            if start >= self.stop {
                return None;
            }
            while start >= self.next_report {
                progress((
                    Duration::from_nanos(self.next_report),
                    self.waiting,
                    self.events,
                ));
                self.next_report = self.next_report.saturating_add(self.every);
            }
            Some((w, (start + self.window).min(self.stop)))
        });
        self.last_end = window.map(|(_, end)| end);
        Control { window, leaves }
    }

    /// After a window ending at `end` has run: once everyone is done, the run stops at the next
    /// multiple of the lookahead.
    fn window_ran(&mut self, end: Time) {
        if self.waiting == 0 && self.stop == self.limit {
            self.stop = end.div_ceil(self.lookahead) * self.lookahead;
        }
    }

    /// Counts the pieces leechers got or lost in the window, in time order; once they hold every
    /// piece between them, the peers that leave then learn it (one lookahead later, as from a
    /// tracker): the times they leave are returned.
    fn count_holders(
        &mut self,
        mut changes: Vec<(Time, NodeId, u32, bool)>,
        any_leave: bool,
    ) -> Vec<Time> {
        // Stable: a node's own changes keep their order.
        changes.sort_by_key(|&(at, node, _, _)| (at, node));
        let mut leaves = Vec::new();
        for (at, _, piece, got) in changes {
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
            if got && *h == 1 && self.covered == self.pieces {
                self.copy_out.get_or_insert(Duration::from_nanos(at));
                let leave = at + self.lookahead;
                if any_leave {
                    self.copy_out_departure
                        .get_or_insert(Duration::from_nanos(leave));
                }
                leaves.push(leave);
            }
        }
        leaves
    }
}

/// One thread's nodes (node `i` is `nodes[i / shards]` of shard `i % shards`) with their events, and
/// its share of each window's work.
struct Worker<'a> {
    world: &'a World,
    nodes: Vec<Node>,
    shard: usize,
    shards: usize,
    tracker: Option<Tracker>,
    /// Its nodes' events of later windows.
    queue: Windows<(NodeId, Ev)>,
    batch: Vec<Entry<(NodeId, Ev)>>,
    now: Time,
    /// The node whose events are running, and its events of the window beyond the batch.
    running: NodeId,
    window_end: Time,
    local: BinaryHeap<Local>,
    /// Events for later windows.
    out: Vec<Entry<(NodeId, Ev)>>,
    events: u64,
    dropped: u64,
    /// Leechers that completed, or left before they did.
    finished: usize,
    /// Pieces a leecher got first or lost by leaving: (time, node, piece, got).
    holding: Vec<(Time, NodeId, u32, bool)>,
    latest: Time,
}

/// An event a node scheduled for itself within the window: earliest first, then first scheduled.
struct Local(Entry<Ev>);

impl PartialEq for Local {
    fn eq(&self, other: &Self) -> bool {
        (self.0.at, self.0.seq) == (other.0.at, other.0.seq)
    }
}
impl Eq for Local {}
impl PartialOrd for Local {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Local {
    // Reversed: the heap's top is the earliest.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.0.at, other.0.seq).cmp(&(self.0.at, self.0.seq))
    }
}

impl<'a> Worker<'a> {
    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize / self.shards]
    }

    fn cfg(&self) -> &'a SwarmConfig {
        &self.world.cfg
    }

    fn instant(&self) -> Instant {
        self.world.base + Duration::from_nanos(self.now)
    }

    /// The shard's side of the run: tells what it ran, waits for the leader's word, takes in its
    /// mail and runs the window, until the leader says the run is over. The leader (shard 0's
    /// thread) decides between the two barriers, while the others wait.
    fn run_shard(&mut self, x: &Exchange, mut leader: Option<(&mut Leader, Progress)>) {
        let me = self.shard;
        let mut next = self.queue.next();
        loop {
            {
                let mut r = x.reports[me].lock().unwrap_or_else(|e| e.into_inner());
                r.events = std::mem::take(&mut self.events);
                r.dropped = std::mem::take(&mut self.dropped);
                r.finished = std::mem::take(&mut self.finished);
                r.latest = self.latest;
                r.holding = std::mem::take(&mut self.holding);
                r.next = next;
                r.leave_on_copy = self
                    .nodes
                    .iter()
                    .filter(|n| n.core.is_some() && node_departs_on_copy(n))
                    .count();
            }
            x.wait();
            if let Some((l, progress)) = leader.as_mut() {
                let control = l.next_window(&x.reports, &mut **progress);
                self.world
                    .copy_is_out
                    .store(l.covered == l.pieces, Ordering::Relaxed);
                *x.control.lock().unwrap_or_else(|e| e.into_inner()) = control;
            }
            x.wait();
            let (window, leaves) = {
                let c = x.control.lock().unwrap_or_else(|e| e.into_inner());
                (c.window, c.leaves.clone())
            };
            let Some((w, end)) = window else {
                break;
            };
            for from in 0..x.shards {
                if from != me {
                    let mut m = x.mail[from * x.shards + me]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    for e in m.drain(..) {
                        self.queue.push(e);
                    }
                }
            }
            for leave in leaves {
                for j in 0..self.nodes.len() {
                    let node = &mut self.nodes[j];
                    if node.core.is_some() && node_departs_on_copy(node) {
                        let id = (j * self.shards + me) as NodeId;
                        node.pushes += 1;
                        let seq = seq(id, node.pushes);
                        self.queue.push(Entry {
                            at: leave,
                            seq,
                            ev: (id, Ev::Leave),
                        });
                    }
                }
            }
            let mut batch = std::mem::take(&mut self.batch);
            self.queue.take(w, &mut batch);
            if batch.iter().any(|e| e.at >= end) {
                // The last window, cut short by the stop: what lies past it stays unrun.
                let (now, later): (Vec<_>, Vec<_>) = batch.into_iter().partition(|e| e.at < end);
                for e in later {
                    self.queue.push(e);
                }
                batch = now;
            }
            // (time, tie-break) are unique: this is each node's events in order.
            batch.sort_unstable_by_key(|e| (e.ev.0, e.at, e.seq));
            self.batch = batch;
            self.window_end = end;
            self.run();
            // What its own nodes sent each other stays; the rest goes to the receivers' shards.
            let mut next_mailed: Option<u64> = None;
            let mut mailbags: Vec<_> = (0..x.shards)
                .map(|to| {
                    (to != me).then(|| {
                        x.mail[me * x.shards + to]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                    })
                })
                .collect();
            for e in self.out.drain(..) {
                let to = e.ev.0 as usize % x.shards;
                match mailbags[to].as_mut() {
                    Some(bag) => {
                        let w = self.queue.window_of(e.at);
                        next_mailed = Some(next_mailed.map_or(w, |n| n.min(w)));
                        bag.push(e);
                    }
                    None => self.queue.push(e),
                }
            }
            drop(mailbags);
            next = match (self.queue.next(), next_mailed) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    fn run(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let mut events = batch.into_iter().peekable();
        while let Some(next) = events.peek() {
            let node = next.ev.0;
            self.running = node;
            loop {
                // The node's next event: from the batch, or one it scheduled for itself meanwhile.
                let from_batch = match (events.peek(), self.local.peek()) {
                    (Some(b), Some(l)) if b.ev.0 == node => (b.at, b.seq) < (l.0.at, l.0.seq),
                    (Some(b), None) => b.ev.0 == node,
                    (_, Some(_)) => false,
                    (_, None) => break,
                };
                let (at, ev) = if from_batch {
                    match events.next() {
                        Some(e) => (e.at, e.ev.1),
                        None => break,
                    }
                } else {
                    match self.local.pop() {
                        Some(e) => (e.0.at, e.0.ev),
                        None => break,
                    }
                };
                self.now = at;
                self.latest = self.latest.max(at);
                self.events += 1;
                self.handle(node, ev);
            }
        }
    }

    /// Schedules `ev` at node `to`, sent by the running node.
    fn push(&mut self, at: Time, to: NodeId, ev: Ev) {
        let src = self.running;
        let count = if src == self.world.tracker {
            match self.tracker.as_mut() {
                Some(t) => &mut t.pushes,
                None => return,
            }
        } else {
            &mut self.node(src).pushes
        };
        *count += 1;
        let seq = seq(src, *count);
        if to == src && at < self.window_end {
            self.local.push(Local(Entry { at, seq, ev }));
        } else {
            debug_assert!(
                at >= self.window_end,
                "an event reached another node within the lookahead"
            );
            self.out.push(Entry {
                at,
                seq,
                ev: (to, ev),
            });
        }
    }

    fn handle(&mut self, id: NodeId, ev: Ev) {
        if id == self.world.tracker {
            if let Ev::Announce { node, stopped } = ev {
                self.announce(node, stopped);
            }
            return;
        }
        if let Ev::Deliver { end, .. }
        | Ev::Have { end, .. }
        | Ev::Haves { end, .. }
        | Ev::Closed { end } = ev
        {
            let e = &self.node(id).ends[end as usize];
            if e.holding > 0 && e.open {
                // Blocks that reached the node before it are still on its downlink.
                let at = e.held;
                self.push(at, id, Ev::Held(Box::new(ev)));
                return;
            }
        }
        self.run_event(id, ev);
    }

    fn run_event(&mut self, id: NodeId, ev: Ev) {
        match ev {
            Ev::Held(ev) => self.run_event(id, *ev),
            Ev::Arrive => self.arrive(id),
            Ev::Timer => {
                let now = self.instant();
                let t = self.now;
                let node = self.node(id);
                if node.timer == Some(t) {
                    node.timer = None;
                }
                if let Some(core) = node.core.as_mut() {
                    if core.poll_timeout().is_some_and(|t| t <= now) {
                        core.handle_timeout(now);
                    }
                    self.drain(id);
                }
            }
            Ev::Deliver { end, msg } => self.deliver(id, end, PeerEvent::Message(*msg)),
            Ev::Have { end, piece } => {
                self.deliver(id, end, PeerEvent::Message(Message::Have(piece)))
            }
            Ev::Haves { end, count, pieces } => {
                self.deliver_haves(id, end, &pieces[..usize::from(count)])
            }
            Ev::FlushHaves => {
                for end in std::mem::take(&mut self.node(id).batched) {
                    self.flush_haves(id, end);
                }
            }
            Ev::Data { end, block, ready } => self.data(id, end, block, ready),
            Ev::LinkDone => self.link_done(id),
            Ev::Dialled { from, from_end } => self.dialled(id, from, from_end),
            Ev::Accepted { end, peer_end } => self.accepted(id, end, peer_end),
            Ev::DialFailed { end } => {
                let node = self.node(id);
                let e = &mut node.ends[end as usize];
                e.open = false;
                let addr = node_addr(e.peer);
                node.failed.push(addr);
                self.drain(id);
            }
            Ev::Announce { .. } => {}
            Ev::TrackerReply { peers } => {
                let now = self.instant();
                let interval = self.cfg().announce_interval;
                if let Some(core) = self.node(id).core.as_mut() {
                    core.announced(Some(interval), now);
                    core.add_addresses(peers.into_vec(), now);
                    self.drain(id);
                }
            }
            Ev::Closed { end } => {
                let now = self.instant();
                let node = self.node(id);
                let e = &mut node.ends[end as usize];
                if !e.open {
                    return;
                }
                e.open = false;
                let key = e.key;
                node.forget(key);
                if let Some(core) = node.core.as_mut() {
                    core.handle_event(key, PeerEvent::Closed, now);
                    self.drain(id);
                }
            }
            Ev::Leave => self.leave(id),
        }
    }

    fn data(&mut self, id: NodeId, end: EndId, block: BlockRef, ready: bool) {
        let now = self.now;
        let e = &mut self.node(id).ends[end as usize];
        if ready {
            e.holding -= 1;
        }
        if !e.open {
            self.dropped += u64::from(block.length);
            return;
        }
        if !ready {
            // The downlink passes blocks in the order they reach it, at its rate; a block behind
            // others, and whatever follows it on its connection, waits.
            let rate = self.world.profiles[id as usize].down;
            let node = self.node(id);
            let on_down = (f64::from(block.length) / rate * 1e9) as Time;
            let at = (node.down_free + on_down).max(now);
            node.down_free = at;
            let e = &mut node.ends[end as usize];
            if at > now || e.holding > 0 {
                let at = at.max(e.held);
                e.holding += 1;
                e.held = at;
                let ev = Ev::Data {
                    end,
                    block,
                    ready: true,
                };
                self.push(at, id, ev);
                return;
            }
        }
        self.node(id).stats.downloaded += u64::from(block.length);
        let data = self.world.payload.slice(0..block.length as usize);
        let msg = Message::Piece {
            index: block.index,
            begin: block.begin,
            data,
        };
        self.deliver(id, end, PeerEvent::Message(msg));
    }

    fn deliver(&mut self, id: NodeId, end: EndId, event: PeerEvent) {
        self.feed_core(id, end, |core, key, now| core.handle_event(key, event, now));
    }

    fn deliver_haves(&mut self, id: NodeId, end: EndId, pieces: &[PieceIndex]) {
        self.feed_core(id, end, |core, key, now| {
            core.handle_haves(key, pieces, now)
        });
    }

    /// Hands what arrived on an open end to the node's core, then carries out what the core does.
    fn feed_core(
        &mut self,
        id: NodeId,
        end: EndId,
        feed: impl FnOnce(&mut TorrentCore, PeerKey, Instant),
    ) {
        let now = self.instant();
        let node = self.node(id);
        let e = &node.ends[end as usize];
        if !e.open {
            return;
        }
        let key = e.key;
        if let Some(core) = node.core.as_mut() {
            feed(core, key, now);
            self.drain(id);
        }
    }

    /// Holds a `Have` on end `end` until the node's next multiple of `have_batch`.
    fn hold_have(&mut self, id: NodeId, end: EndId, piece: PieceIndex) {
        let every = nanos(self.cfg().have_batch);
        let now = self.now;
        let node = self.node(id);
        let first = node.batched.is_empty();
        let e = &mut node.ends[end as usize];
        if e.waiting == 0 {
            node.batched.push(end);
        }
        e.haves[usize::from(e.waiting)] = piece;
        e.waiting += 1;
        let full = usize::from(e.waiting) == HAVES_INLINE;
        if first {
            self.push((now / every + 1) * every, id, Ev::FlushHaves);
        }
        if full {
            // A full write buffer goes out at once.
            self.flush_haves(id, end);
        }
    }

    /// Sends the `Have`s waiting on end `end` now, as one write.
    fn flush_haves(&mut self, id: NodeId, end: EndId) {
        let now = self.now;
        let e = &mut self.node(id).ends[end as usize];
        let count = std::mem::take(&mut e.waiting);
        // Closed by the other side: nothing more goes out on it.
        if count == 0 || !e.open {
            return;
        }
        let (to, peer_end, pieces) = (e.peer, e.peer_end, e.haves);
        // 9 bytes each on the wire.
        let at = self.arrival(id, end, 9 * u64::from(count), now);
        let ev = Ev::Haves {
            end: peer_end,
            count,
            pieces,
        };
        self.push(at, to, ev);
    }

    fn arrive(&mut self, id: NodeId) {
        let cfg = self.cfg();
        let group = &cfg.groups[self.nodes[id as usize / self.shards].group];
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
        let pieces = cfg.pieces as usize;
        let core = TorrentCore::new(config, self.instant());
        let now = self.now;
        let node = self.node(id);
        node.core = Some(core);
        node.has = vec![seed; pieces];
        node.stats.arrived = Some(Duration::from_nanos(now));
        self.drain(id);
        if node_departs_on_copy(self.node(id)) && self.world.copy_is_out.load(Ordering::Relaxed) {
            self.push(now, id, Ev::Leave);
        }
    }

    /// Carries out everything the node's core asked for, then re-arms its timer.
    fn drain(&mut self, id: NodeId) {
        loop {
            let Some(action) = self.node(id).core.as_mut().and_then(|c| c.poll_action()) else {
                let now = self.instant();
                let node = self.node(id);
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
                    if let Some(core) = self.node(id).core.as_mut() {
                        core.piece_checked(piece, true, now);
                    }
                }
                continue;
            };
            self.act(id, action);
        }
        let (base, now) = (self.world.base, self.now);
        let node = self.node(id);
        let Some(core) = node.core.as_ref() else {
            return;
        };
        if let Some(at) = core.poll_timeout() {
            let at = (at.saturating_duration_since(base).as_nanos() as Time).max(now);
            if node.timer.is_none_or(|t| at < t) {
                node.timer = Some(at);
                self.push(at, id, Ev::Timer);
            }
        }
    }

    fn act(&mut self, id: NodeId, action: Action) {
        let now = self.now;
        match action {
            Action::Send { peer, message } => {
                let Some(end) = self.node(id).end_of(peer) else {
                    return;
                };
                if let Message::Piece { index, begin, data } = message {
                    let block = BlockRef {
                        index,
                        begin,
                        length: data.len() as u32,
                    };
                    self.enqueue_block(id, end, block);
                } else if let (Message::Have(piece), false) =
                    (&message, self.cfg().have_batch.is_zero())
                {
                    self.hold_have(id, end, *piece);
                } else {
                    // What waits goes first: messages on a connection keep their order.
                    self.flush_haves(id, end);
                    let at = self.arrival(id, end, 64, now);
                    let e = &self.node(id).ends[end as usize];
                    let (to, peer_end) = (e.peer, e.peer_end);
                    let ev = match message {
                        Message::Have(piece) => Ev::Have {
                            end: peer_end,
                            piece,
                        },
                        msg => Ev::Deliver {
                            end: peer_end,
                            msg: Box::new(msg),
                        },
                    };
                    self.push(at, to, ev);
                }
            }
            Action::ReadBlock { peer, block } => {
                if let Some(end) = self.node(id).end_of(peer) {
                    self.enqueue_block(id, end, block);
                }
            }
            Action::CancelRead { peer, block } => {
                let node = self.node(id);
                if let Some(end) = node.end_of(peer) {
                    node.uplink.retain(|&(e, b)| !(e == end && b == block));
                }
            }
            Action::StoreBlock { .. }
            | Action::ServeMetadata { .. }
            | Action::ServeHashes { .. }
            | Action::Banned { .. }
            | Action::SeenAs { .. }
            | Action::Introduced { .. }
            | Action::Punch { .. } => {}
            Action::VerifyPiece { piece } => self.node(id).verify.push(piece),
            Action::Disconnect { peer, .. } => {
                let node = self.node(id);
                if let Some(end) = node.end_of(peer) {
                    node.forget(peer);
                    self.close(id, end);
                }
            }
            Action::Connect { addr } => {
                let world: &'a World = self.world;
                let profiles = &world.profiles;
                let Some(to) = addr_node(&addr).filter(|&t| (t as usize) < profiles.len()) else {
                    self.node(id).failed.push(addr);
                    return;
                };
                // SYN, SYN-ACK, then the two BitTorrent handshakes: the dialler's reaches `to` after
                // one round trip, `to`'s the dialler one way later.
                let owd = profiles[id as usize].lat + profiles[to as usize].lat;
                let node = self.node(id);
                let from_end = node.ends.len() as EndId;
                node.ends.push(End {
                    peer: to,
                    peer_end: NO_END,
                    key: PeerKey(u64::MAX),
                    open: true,
                    last_out: 0,
                    holding: 0,
                    held: 0,
                    owd,
                    haves: [PieceIndex::new(0); HAVES_INLINE],
                    waiting: 0,
                });
                self.push(now + 2 * owd, to, Ev::Dialled { from: id, from_end });
            }
            Action::Announce { event } => {
                let at = now + self.world.profiles[id as usize].lat + TRACKER_DELAY / 2;
                let stopped = event == AnnounceEvent::Stopped;
                let tracker = self.world.tracker;
                self.push(at, tracker, Ev::Announce { node: id, stopped });
            }
            Action::Completed => {
                let node = self.node(id);
                if node.stats.completed.is_none() && !node.stats.seed {
                    node.stats.completed = Some(Duration::from_nanos(now));
                    let departure = node.departure;
                    self.finished += 1;
                    if let Departure::AfterDone(d) = departure {
                        self.push(now + nanos(d), id, Ev::Leave);
                    }
                }
            }
        }
    }

    /// When a message of `bytes` sent now on end `end` reaches the peer: one-way delay, plus a
    /// retransmission timeout if one of its segments is lost, never before what was sent earlier on
    /// the connection.
    fn arrival(&mut self, id: NodeId, end: EndId, bytes: u64, sent: Time) -> Time {
        let loss = self.cfg().loss;
        let node = self.node(id);
        let owd = node.ends[end as usize].owd;
        let mut at = sent + owd;
        if loss > 0.0 {
            let segments = bytes.div_ceil(SEGMENT).max(1) as i32;
            let p_any = 1.0 - (1.0 - loss).powi(segments);
            if node.rng.unit() < p_any {
                at += MIN_RTO.max(4 * owd);
            }
        }
        let e = &mut node.ends[end as usize];
        at = at.max(e.last_out);
        e.last_out = at;
        at
    }

    fn enqueue_block(&mut self, id: NodeId, end: EndId, block: BlockRef) {
        let node = self.node(id);
        node.uplink.push_back((end, block));
        if node.sending.is_none() {
            self.start_next(id);
        }
    }

    /// Puts the next block of the uplink's FIFO on the wire: it occupies the link for size / upload.
    fn start_next(&mut self, id: NodeId) {
        let now = self.instant();
        let up = self.world.profiles[id as usize].up;
        let t = self.now;
        let node = self.node(id);
        while let Some((end, block)) = node.uplink.pop_front() {
            // Only its own end: a close by the other side reaches it one way later.
            let e = &node.ends[end as usize];
            if !e.open {
                continue;
            }
            // The writer's last word with the core: a block cancelled or choked away meanwhile stays.
            let key = e.key;
            if !node
                .core
                .as_mut()
                .is_some_and(|core| core.commit_upload(key, block, now))
            {
                continue;
            }
            node.sending = Some((end, block));
            let busy = (f64::from(block.length) / up * 1e9) as Time;
            self.push(t + busy.max(1), id, Ev::LinkDone);
            return;
        }
    }

    fn link_done(&mut self, id: NodeId) {
        let now = self.now;
        let Some((end, block)) = self.node(id).sending.take() else {
            return;
        };
        let e = &self.node(id).ends[end as usize];
        if e.open {
            let (to, peer_end, owd) = (e.peer, e.peer_end, e.owd);
            let len = u64::from(block.length);
            let world: &'a World = self.world;
            let profiles = &world.profiles;
            let start = now - (len as f64 / profiles[id as usize].up * 1e9) as Time;
            let on_down = (len as f64 / profiles[to as usize].down * 1e9) as Time;
            // Cut-through: the block reaches the receiver one-way delay after its last byte left, or
            // after its first byte arrived plus its time on a slower downlink; there it waits for the
            // blocks ahead of it on the downlink (`Worker::data`).
            let earliest = start + owd + on_down;
            let at = self.arrival(id, end, len, now).max(earliest);
            let node = self.node(id);
            node.ends[end as usize].last_out = at;
            node.stats.uploaded += len;
            let ev = Ev::Data {
                end: peer_end,
                block,
                ready: false,
            };
            self.push(at, to, ev);
        }
        self.start_next(id);
        self.drain(id);
    }

    /// The handshake of `from` reaches `id`: it takes the connection or turns it away.
    fn dialled(&mut self, id: NodeId, from: NodeId, from_end: EndId) {
        let now = self.instant();
        let t = self.now;
        let world: &'a World = self.world;
        let profiles = &world.profiles;
        let owd = profiles[from as usize].lat + profiles[id as usize].lat;
        let (hs_from, hs_to) = (profiles[from as usize].hs, profiles[id as usize].hs);
        let node = self.node(id);
        let Some(Ok(key)) = node
            .core
            .as_mut()
            .map(|c| c.add_peer(node_addr(from), true, &hs_to, &hs_from, now))
        else {
            // Nobody there, or it turned the dialler away.
            self.push(t + owd, from, Ev::DialFailed { end: from_end });
            return;
        };
        let end = node.ends.len() as EndId;
        node.ends.push(End {
            peer: from,
            peer_end: from_end,
            key,
            open: true,
            last_out: 0,
            holding: 0,
            held: 0,
            owd,
            haves: [PieceIndex::new(0); HAVES_INLINE],
            waiting: 0,
        });
        node.remember(key, end);
        // Before anything this side sends on the connection.
        self.push(
            t + owd,
            from,
            Ev::Accepted {
                end: from_end,
                peer_end: end,
            },
        );
        self.drain(id);
    }

    /// The dialled peer's handshake reaches the dialler `id`: its core meets the peer too, or turns it
    /// down after all (or has left), and the peer sees the connection close.
    fn accepted(&mut self, id: NodeId, end: EndId, peer_end: EndId) {
        let now = self.instant();
        let world: &'a World = self.world;
        let node = self.node(id);
        let e = &mut node.ends[end as usize];
        e.peer_end = peer_end;
        let to = e.peer;
        let profiles = &world.profiles;
        let (hs_from, hs_to) = (profiles[id as usize].hs, profiles[to as usize].hs);
        let Some(core) = node.core.as_mut() else {
            self.close(id, end);
            return;
        };
        match core.add_peer(node_addr(to), false, &hs_from, &hs_to, now) {
            Ok(key) => {
                node.ends[end as usize].key = key;
                node.remember(key, end);
            }
            Err(_) => {
                node.failed.push(node_addr(to));
                self.close(id, end);
            }
        }
        self.drain(id);
    }

    /// Node `id` closes its end: the peer learns it one way later, after what was already sent.
    fn close(&mut self, id: NodeId, end: EndId) {
        self.flush_haves(id, end);
        let now = self.now;
        let e = &mut self.node(id).ends[end as usize];
        e.open = false;
        let at = (now + e.owd).max(e.last_out);
        let (to, peer_end) = (e.peer, e.peer_end);
        self.push(at, to, Ev::Closed { end: peer_end });
    }

    /// An announce reaches the tracker: it learns who is present, and answers all but a goodbye with
    /// a sample of the others.
    fn announce(&mut self, id: NodeId, stopped: bool) {
        let want = self.world.cfg.tracker_peers;
        let Some(t) = self.tracker.as_mut() else {
            return;
        };
        if stopped {
            if let Some(i) = t.slot[id as usize].take() {
                t.present.swap_remove(i);
                if let Some(&moved) = t.present.get(i) {
                    t.slot[moved as usize] = Some(i);
                }
            }
            return;
        }
        if t.slot[id as usize].is_none() {
            t.slot[id as usize] = Some(t.present.len());
            t.present.push(id);
        }
        // Up to `tracker_peers` present peers other than `id`, drawn at random.
        let want = want.min(t.present.len().saturating_sub(1));
        let mut picked: Vec<NodeId> = Vec::with_capacity(want);
        let mut tries = 0;
        while picked.len() < want && tries < want * 20 {
            tries += 1;
            let cand = t.present[t.rng.below(t.present.len())];
            if cand != id && !picked.contains(&cand) {
                picked.push(cand);
            }
        }
        let peers: Box<[SocketAddr]> = picked.into_iter().map(node_addr).collect();
        let at = self.now + self.world.profiles[id as usize].lat + TRACKER_DELAY / 2;
        self.push(at, id, Ev::TrackerReply { peers });
    }

    fn leave(&mut self, id: NodeId) {
        let now = self.instant();
        let t = self.now;
        let Some(core) = self.node(id).core.as_mut() else {
            return;
        };
        // Stopping closes every connection (`Disconnect` actions) and says goodbye to the tracker.
        core.stop(now);
        self.drain(id);
        let node = self.node(id);
        node.core = None;
        node.stats.left = Some(Duration::from_nanos(t));
        node.uplink.clear();
        node.sending = None;
        let ends: Vec<EndId> = std::mem::take(&mut node.keys)
            .into_iter()
            .filter(|&e| e != NO_END)
            .collect();
        for end in ends {
            self.close(id, end);
        }
        let node = self.node(id);
        if !node.stats.seed {
            let unfinished = node.stats.completed.is_none();
            let has = std::mem::take(&mut node.has);
            if unfinished {
                self.finished += 1;
            }
            for (p, h) in has.into_iter().enumerate() {
                if h {
                    self.holding.push((t, id, p as u32, false));
                }
            }
        }
    }

    fn verified(&mut self, id: NodeId, piece: PieceIndex) {
        let size = u64::from(self.cfg().piece_size);
        let t = self.now;
        let node = self.node(id);
        node.stats.verified += size;
        if node.stats.seed {
            return;
        }
        if let Some(h) = node.has.get_mut(piece.as_usize()) {
            if !*h {
                *h = true;
                self.holding.push((t, id, piece.get(), true));
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
