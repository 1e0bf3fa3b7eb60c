//! The BitTorrent peer wire protocol without I/O: the handshake, every BEP 3 message, the fast extension
//! (BEP 6), the extension protocol (BEP 10), BEP 14 local discovery announces, a length-capped codec, and
//! a per-connection state machine that checks what a peer may send when. Bytes in, messages and errors
//! out; the engine owns the sockets.

mod codec;
mod extension;
mod handshake;
mod holepunch;
mod lsd;
mod message;
mod metadata;
mod pex;
mod state;

pub use codec::{Decoder, DEFAULT_MAX_MESSAGE};
pub use extension::ExtensionHandshake;
pub use handshake::{Handshake, HANDSHAKE_LEN, PROTOCOL};
pub use holepunch::{HolepunchError, HolepunchKind, HolepunchMessage, MAX_HOLEPUNCH_LEN};
pub use ids::{InfoHash, PeerId, PieceIndex};
pub use lsd::{
    LsdAnnounce, LsdError, LSD_GROUP_V4, LSD_GROUP_V6, LSD_PORT, MAX_LSD_COOKIE, MAX_LSD_DATAGRAM,
    MAX_LSD_INFOHASHES, MAX_LSD_PACKET,
};
pub use message::{BlockRef, HashRange, Message};
pub use metadata::{MetadataMessage, MAX_METADATA, METADATA_PIECE};
pub use pex::{PexMessage, MAX_PEX_PEERS, PEX_ENCRYPTION, PEX_HOLEPUNCH, PEX_SEED, PEX_UTP};
pub use state::{Connection, ConnectionError, Event};

/// Why bytes from a peer were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a BitTorrent handshake")]
    BadHandshake,
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: u32, max: u32 },
    #[error("message id {id} has a payload of {len} bytes, expected {expected}")]
    BadLength {
        id: u8,
        len: usize,
        expected: &'static str,
    },
    #[error("unknown message id {0}")]
    UnknownId(u8),
    #[error("bad extension handshake: {0}")]
    BadExtension(String),
}
