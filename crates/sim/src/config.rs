//! What a simulated swarm is made of: the torrent, the network, the core's settings and the groups of
//! peers with their capacities, arrival pattern and departure rule.

use std::time::Duration;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
/// The largest request a `wire::Connection` accepts (its `MAX_REQUEST`, not exported): the biggest
/// unit the simulated peers can move.
pub const MAX_UNIT: u32 = 128 * 1024;

/// The default [`SwarmConfig::have_batch`]: none, each `Have` leaves at once as the engine sends it,
/// so the figures are the engine's; 100 ms saves about a fifth of a large run's CPU and moves its
/// figures by about 1 % (BENCHMARKS.md), for exploring.
pub const DEFAULT_HAVE_BATCH: Duration = Duration::ZERO;

/// When the peers of a group join.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    /// All at this time.
    At(Duration),
    /// Spread evenly over `span` from `start` (a flash crowd).
    Spread { start: Duration, span: Duration },
    /// A Poisson process from `start`, one every `mean` on average (a steady stream of newcomers).
    Poisson { start: Duration, mean: Duration },
}

/// When a peer of a group leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Departure {
    /// Stays to the end of the run.
    Never,
    /// Leaves this long after it completes (zero: at once).
    AfterDone(Duration),
    /// Leaves once the other peers together hold every piece (one full copy is out in the swarm).
    WhenCopyOut,
}

/// A group of alike peers.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub count: usize,
    /// Starts with the whole torrent.
    pub seed: bool,
    /// Bytes per second.
    pub upload: f64,
    pub download: f64,
    pub arrivals: Arrivals,
    pub departure: Departure,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SwarmConfig {
    /// Same seed, same run, to the event.
    pub seed: u64,
    pub pieces: u32,
    pub piece_size: u32,
    /// The unit the cores request and the network moves: big units keep the event count low, up to
    /// `wire::MAX_REQUEST` (128 KiB), the largest request a `wire::Connection` accepts.
    pub block_size: u32,
    /// Each peer's access latency (one way) is drawn uniformly from this range; a message between two
    /// peers takes the sum of theirs.
    pub latency: (Duration, Duration),
    /// Probability that one 16 KiB segment is lost; a message whose segments lose any is held back by
    /// one retransmission timeout (see the crate documentation).
    pub loss: f64,
    pub max_peers: usize,
    pub upload_slots: usize,
    pub choke_interval: Duration,
    pub optimistic_interval: Duration,
    /// How many present peers the tracker returns per announce.
    pub tracker_peers: usize,
    /// The interval the tracker gives: when each peer announces (and gets a fresh sample) again.
    pub announce_interval: Duration,
    /// The run stops here even if some peers have not finished (reported as unfinished).
    pub time_limit: Duration,
    pub groups: Vec<Group>,
    /// Threads a run may use (each window's peers are split between them; the run is the same).
    pub threads: usize,
    /// `Have`s a peer sends on a connection wait for the next multiple of this (of virtual time) and
    /// leave together, as one write; any other control message on the connection takes the waiting
    /// ones along first (a block, sent when the uplink gets to it, does not: held `Have`s follow it). Zero: each leaves on its own at once. See the crate documentation.
    pub have_batch: Duration,
}

impl SwarmConfig {
    pub fn file_size(&self) -> u64 {
        u64::from(self.pieces) * u64::from(self.piece_size)
    }

    /// Defaults for everything but the torrent size and the peers.
    pub fn new(seed: u64, pieces: u32, piece_size: u32, groups: Vec<Group>) -> SwarmConfig {
        SwarmConfig {
            seed,
            pieces,
            piece_size,
            block_size: piece_size.min(MAX_UNIT),
            latency: (Duration::from_millis(5), Duration::from_millis(40)),
            loss: 0.0005,
            max_peers: 50,
            upload_slots: 4,
            choke_interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
            tracker_peers: 50,
            announce_interval: Duration::from_secs(300),
            time_limit: Duration::from_secs(4 * 3600),
            groups,
            threads: 1,
            have_batch: DEFAULT_HAVE_BATCH,
        }
    }
}
