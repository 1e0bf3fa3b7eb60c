//! The BitTorrent DHT over IPv6: BEP 5's KRPC (ping, find_node, get_peers, announce_peer) with BEP 32's
//! IPv6 node lists (`nodes6`, 38 bytes a node) and 18-byte peer values, as a sans-IO state machine in
//! the quinn-proto style: datagrams and the time in ([`Node::handle_datagram`],
//! [`Node::handle_timeout`]), datagrams, events and the next deadline out ([`Node::poll_transmit`],
//! [`Node::poll_event`], [`Node::poll_timeout`]). No clock, socket or OS randomness: time is
//! milliseconds from any origin the caller picks, randomness comes from [`Config::seed`].
//!
//! Spore's IPv4 DHT is the `mainline` crate, which has no IPv6; this crate is the IPv6 half only (a
//! node keeps one routing table, of IPv6 nodes). Not here: BEP 42 node ids, BEP 44 storage, BEP 51.

mod krpc;
mod node;
mod table;

pub use krpc::{Body, DecodeError, Message, Query, MAX_DATAGRAM};
pub use node::{Config, Event, LookupId, Node, Transmit};
pub use table::{distance, NodeId, Table, K};
