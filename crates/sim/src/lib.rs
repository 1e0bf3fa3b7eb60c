//! A swarm simulator: many `TorrentCore`s, the real policy of Spore's torrents, exchanging real wire
//! messages over a simulated network in virtual time.
//!
//! # The model
//! - **Time** is virtual: events are ordered by (time, sequence), so equal times run in the order
//!   they were scheduled and a run is a pure function of its configuration and seed (the queue is a
//!   timing wheel, `queue.rs`, that pops in exactly a binary heap's order).
//! - **Links**: every peer has an upload and a download capacity. Its uplink sends one block at a time,
//!   first come first served across its connections, each for `size / upload`; the block then arrives
//!   one-way delay after its last byte left (cut-through), unless the receiver's downlink, which
//!   passes `download` bytes per second in arrival order, is still busy, in which case it queues
//!   there. The uplink is not slowed by a busy receiver: the core's request pipeline bounds how much can
//!   pile up. Control messages take no capacity, only the one-way delay.
//! - **Latency**: each peer has an access latency; a message between two peers takes the sum. Messages
//!   on one connection never overtake each other (one TCP stream).
//! - **Loss** is a delay, not a drop: each 16 KiB segment is lost with probability `loss`, and a message
//!   that loses any arrives one retransmission timeout (max(200 ms, 2 RTT)) late, holding back what
//!   follows on its connection as TCP's head-of-line blocking does. Throughput loss from congestion
//!   control is not modelled.
//! - **Churn**: groups of peers arrive at a time, spread over an interval, or as a Poisson stream, and
//!   leave never, some time after completing, or once a full copy is out among the others. A leaving
//!   peer's connections close; the others see the close one way later.
//! - **Tracker**: an announce returns a random sample of present peers (`add_addresses`); connecting
//!   takes 1.5 round trips, then both cores get `add_peer` with the two `wire::Handshake`s.
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
