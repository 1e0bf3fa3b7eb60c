//! One torrent's policy without I/O, driven quinn-proto style: the caller feeds in what happened
//! ([`TorrentCore::handle_event`], [`TorrentCore::piece_checked`], [`TorrentCore::handle_timeout`]) with
//! the time it happened, and takes out what to do ([`TorrentCore::poll_action`]) and when to call back
//! ([`TorrentCore::poll_timeout`]). It owns the picker, the peer table and each peer's
//! `wire::Connection` (the one copy of choke and interest state), the choker, strikes and bans,
//! endgame cancels, request-queue sizing, snub detection, peer turnover, a seed's piece suggestions
//! (`suggest.rs`), PEX and announce timing, and upload queue budgets.
//!
//! Nothing here reads a clock, opens a socket or a file, starts a thread or asks the OS for randomness
//! (`tests/purity.rs` checks the sources): the same inputs and seed give the same actions, which is what
//! lets the engine run it over real sockets and a simulator run a thousand of it in virtual time.

#![warn(missing_docs)]

pub mod bitfield;
mod config;
mod holepunch;
pub mod metadata;
mod peer;
pub mod picker;
pub mod rng;
mod seeds;
mod suggest;
mod table;
mod torrent;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, DefaultHasher};

pub use bitfield::Bitfield;
pub use config::{
    CoreConfig, ExtensionInfo, Limits, KEEPALIVE, MAX_FAILED_ADDRS, MAX_KNOWN,
    MAX_PEER_QUEUED_BYTES, MAX_PEER_REQUESTS, MAX_QUEUE, MAX_REFUSED_REQUESTS, MAX_SEED_ADDRS,
    MAX_SUGGESTED, MIN_QUEUE, MIN_REFUSED_REQUESTS, PEX_MIN_GAP, SNUB_TIMEOUT, UT_HOLEPUNCH_ID,
    UT_PEX_ID,
};
pub use holepunch::{
    ASK_BACKOFF, MAX_ASKED, MAX_LEADS, MAX_RENDEZVOUS, PUNCH_WINDOW, REFUSED_BACKOFF,
    RENDEZVOUS_WINDOW,
};
pub use metadata::{MetaAction, MetaDisconnect, MetadataConfig, MetadataCore};
pub use picker::{Picker, Received, BLOCK};
pub use rng::Rng;
pub use torrent::{
    client_name, Action, DisconnectReason, PeerEvent, PeerKey, PeerSnapshot, PunchStep, Refused,
    Stats, TorrentCore, MAX_CLIENT_NAME,
};
/// The tracker event an [`Action::Announce`] asks for.
pub use tracker_proto::Event as AnnounceEvent;

/// Maps and sets whose iteration order depends only on what was put in (std's fixed-key SipHash), so
/// a seed replays a run exactly.
pub(crate) type DetMap<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;
pub(crate) type DetSet<T> = HashSet<T, BuildHasherDefault<DefaultHasher>>;
