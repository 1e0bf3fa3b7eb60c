//! Spore's BitTorrent engine: downloads and seeds one torrent at a time over TCP, with a rarest-first
//! picker, tit-for-tat choking, verified storage, hostile-peer banning, and HTTP/UDP tracker announces.

mod aligned;
mod carry;
mod conns;
pub mod dht;
mod dht6;
mod dht_lookup;
pub mod discovery;
mod encryption;
mod error;
pub mod external_ip;
mod handle;
mod http;
mod launch;
pub mod lifecycle;
mod link;
pub mod lsd;
pub mod managed;
pub mod metadata;
mod peer;
mod rate;
mod rng;
mod seed_goal;
mod session;
mod storage;
mod stream;
mod torrent;
pub mod tracker;
mod transport;
mod upload;
mod utp_listen;
mod utp_transport;

#[cfg(test)]
mod testutil;

pub use conns::{
    ip_group, raise_nofile_limit, AcceptBackoff, FdBudget, HandshakeLimits, FILE_RESERVE,
};
pub use discovery::Discovery;
pub use encryption::{BadEncryption, Encryption};
pub use error::{DiscoveryError, HttpError, MagnetError, MetadataError, StartError, TrackerError};
pub use http::{api_request, ApiRequest};
pub use ids::{InfoHash, PeerId, PieceIndex};
pub use launch::start;
pub use managed::Client;
pub use rate::Limiter;
pub use seed_goal::{SeedClock, SeedGoal};
pub use session::Session;
pub use storage::{piece_matches, DiskError, FilePathsError, Storage};
pub use stream::{ReadError, Reader};
pub use torrent::{
    new_peer_id, wire_id, wire_id_of, PeerBudget, PeerInfo, Resume, Status, TorrentConfig,
    TorrentError, TorrentHandle, TrackerStats, PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL,
};
/// The piece set lives in the pure `torrent-core` crate; owners see it (resume data, a file's
/// progress). The picker and the rest of a torrent's policy are not re-exported: an owner of a torrent
/// reaches it only through `TorrentHandle`.
pub(crate) use torrent_core::bitfield;
pub use torrent_core::Bitfield;
pub use upload::{
    set_upload_memory, upload_memory_limit, upload_memory_used, DEFAULT_UPLOAD_MEMORY,
};
pub use utp_transport::{
    Transports, TransportsError, UtpEndpoint, NO_UTP_MEMORY, UTP_DIAL_TIMEOUT, UTP_HEAD_START,
};
