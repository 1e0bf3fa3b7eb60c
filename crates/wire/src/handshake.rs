//! The 68-byte handshake.

use ids::{InfoHash, PeerId};

use crate::WireError;

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;

/// `pstrlen`, `pstr`, reserved bits, info-hash and peer ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
}

impl Handshake {
    /// A handshake announcing the extension protocol (BEP 10), the fast extension (BEP 6) and, if asked,
    /// DHT (BEP 5).
    pub fn new(info_hash: InfoHash, peer_id: PeerId, dht: bool) -> Self {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10;
        reserved[7] |= 0x04;
        if dht {
            reserved[7] |= 0x01;
        }
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash[..]);
        out[48..68].copy_from_slice(&self.peer_id[..]);
        out
    }

    /// Parses a full handshake. `bytes` must hold at least [`HANDSHAKE_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Handshake, WireError> {
        if bytes.len() < HANDSHAKE_LEN || bytes[0] != 19 || &bytes[1..20] != PROTOCOL {
            return Err(WireError::BadHandshake);
        }
        let mut h = Handshake {
            reserved: [0; 8],
            info_hash: InfoHash::default(),
            peer_id: PeerId::default(),
        };
        h.reserved.copy_from_slice(&bytes[20..28]);
        h.info_hash.0.copy_from_slice(&bytes[28..48]);
        h.peer_id.0.copy_from_slice(&bytes[48..68]);
        Ok(h)
    }

    /// Whether a partial handshake (the first bytes received) can still become a valid one: lets a
    /// listener drop non-BitTorrent connections after the first byte or two.
    pub fn plausible_prefix(bytes: &[u8]) -> bool {
        let header = [&[19u8][..], &PROTOCOL[..]].concat();
        let n = bytes.len().min(header.len());
        bytes[..n] == header[..n]
    }
}
