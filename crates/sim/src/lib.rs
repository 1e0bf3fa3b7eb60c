//! A swarm simulator: many `TorrentCore`s, the real policy of Spore's torrents, exchanging real wire
//! messages over a simulated network in virtual time.
//!
//! # The model
//! - **Time** is virtual: each peer's events run in (time, sender, sender's count) order, so a run is
//!   a pure function of its configuration and seed. Peers run in conservative windows of the shortest
//!   delay between two nodes, node by node and split between threads (`sim.rs`): the same run for any
//!   window up to that delay and any number of threads.
//! - **Links**: every peer has an upload and a download capacity. Its uplink sends one block at a time,
//!   first come first served across its connections, each for `size / upload`; the block then arrives
//!   one-way delay after its last byte left (cut-through), unless the receiver's downlink, which
//!   passes `download` bytes per second in the order blocks reach it, is still busy, in which case it
//!   queues there (and what follows on its connection waits behind it). The uplink is not slowed by a busy receiver: the core's request pipeline bounds how much can
//!   pile up. Control messages take no capacity, only the one-way delay.
//! - **Latency**: each peer has an access latency; a message between two peers takes the sum. Messages
//!   on one connection never overtake each other (one TCP stream).
//! - **`Have`s may be written together**: with `have_batch` set (`--have-batch-ms`; zero by default,
//!   as the engine sends them) a peer's `Have`s on a connection wait for its next multiple of it
//!   and leave as one write, as do four at once, or whatever waits
//!   when another control message goes out on the connection (it follows them; a block does not
//!   take them along, and `Have`s held while it left arrive after it). The receiving core takes
//!   them with `TorrentCore::handle_haves`, the same as one by one. Most of a large run's messages
//!   are `Have`s, and one event each was most of its time; the delay moves the flash crowd's figures
//!   by about 1 % (BENCHMARKS.md). `have_batch` zero sends each at once, as the engine does.
//! - **Loss** is a delay, not a drop: each 16 KiB segment is lost with probability `loss`, and a message
//!   that loses any arrives one retransmission timeout (max(200 ms, 2 RTT)) late, holding back what
//!   follows on its connection as TCP's head-of-line blocking does. Throughput loss from congestion
//!   control is not modelled.
//! - **Churn**: groups of peers arrive at a time, spread over an interval, or as a Poisson stream, and
//!   leave never, some time after completing, or once a full copy is out among the others. A leaving
//!   peer's connections close; the others see the close one way later.
//! - **Tracker**: a node of its own, 10 ms beyond a peer's access latency; it learns who is present
//!   from announces and answers with a random sample of them (`add_addresses`). Connecting: the
//!   dialled core gets `add_peer` one round trip after the dial, the dialler one way later.
//! - **Blocks** are as big as the wire allows by default (128 KiB, `wire::Connection`'s request cap, with
//!   the core's queue limits scaled to keep the same bytes in flight): the event count, not the byte
//!   count, is what a run costs. Hashing is instant and always succeeds; there is no disk.
//! - **Not modelled**: write stalls (`PeerEvent::WriteStalled` is never sent), dropped connections, bad
//!   data, NAT.

pub mod bound;
pub mod config;
pub mod queue;
pub mod report;
pub mod rng;
pub mod scenarios;
pub mod sim;

pub use bound::fluid_lower_bound;
pub use config::{Arrivals, Departure, Group, SwarmConfig, KIB, MIB};
pub use sim::{node_addr, Outcome, PeerStats, Sim};
