//! Spore's BitTorrent engine: downloads and seeds one torrent at a time over TCP, with a rarest-first
//! picker, tit-for-tat choking, verified storage, hostile-peer banning, and HTTP/UDP tracker announces.

mod aligned;
mod bitfield;
pub mod dht;
mod http;
pub mod lsd;
pub mod metadata;
mod peer;
mod picker;
mod rate;
mod rng;
mod session;
mod storage;
mod torrent;
pub mod tracker;

#[cfg(test)]
mod testutil;

pub use bitfield::Bitfield;
pub use picker::{Picker, Received, BLOCK};
pub use rate::Limiter;
pub use session::Session;
pub use storage::{piece_matches, Storage};
pub use torrent::{
    new_peer_id, start, wire_id, wire_id_of, PeerBudget, PeerInfo, Resume, Status, TorrentConfig,
    TorrentHandle, PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL,
};
