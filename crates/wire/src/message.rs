//! Peer messages (BEP 3, BEP 6, BEP 10) and their byte layout.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{PieceIndex, WireError};

/// A block: `length` bytes at `begin` within piece `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    pub index: PieceIndex,
    pub begin: u32,
    pub length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(PieceIndex),
    Bitfield(Bytes),
    Request(BlockRef),
    Piece {
        index: PieceIndex,
        begin: u32,
        data: Bytes,
    },
    Cancel(BlockRef),
    /// DHT port (BEP 5).
    Port(u16),
    /// BEP 6.
    Suggest(PieceIndex),
    HaveAll,
    HaveNone,
    Reject(BlockRef),
    AllowedFast(PieceIndex),
    /// BEP 10: id 0 is the extension handshake, others are the ids the receiver assigned.
    Extended {
        id: u8,
        payload: Bytes,
    },
    /// BEP 52: asks for hashes of one file's merkle tree.
    HashRequest(HashRange),
    /// BEP 52: `range.length` hashes of the base layer, then one uncle hash for each proof layer.
    Hashes {
        range: HashRange,
        hashes: Vec<[u8; 32]>,
    },
    HashReject(HashRange),
}

/// Which hashes of a v2 file tree (BEP 52): `length` consecutive hashes from `index` of layer
/// `base_layer` (0 is the 16 KiB leaves), plus the uncles of `proof_layers` layers above them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashRange {
    pub pieces_root: [u8; 32],
    pub base_layer: u32,
    pub index: u32,
    pub length: u32,
    pub proof_layers: u32,
}

const HASH_RANGE_LEN: usize = 48;

impl HashRange {
    fn parse(p: &[u8]) -> HashRange {
        let mut pieces_root = [0u8; 32];
        pieces_root.copy_from_slice(&p[..32]);
        HashRange {
            pieces_root,
            base_layer: u32_at(p, 32),
            index: u32_at(p, 36),
            length: u32_at(p, 40),
            proof_layers: u32_at(p, 44),
        }
    }

    fn put(&self, out: &mut BytesMut) {
        out.put_slice(&self.pieces_root);
        out.put_u32(self.base_layer);
        out.put_u32(self.index);
        out.put_u32(self.length);
        out.put_u32(self.proof_layers);
    }
}

mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 13;
    pub const HAVE_ALL: u8 = 14;
    pub const HAVE_NONE: u8 = 15;
    pub const REJECT: u8 = 16;
    pub const ALLOWED_FAST: u8 = 17;
    pub const EXTENDED: u8 = 20;
    pub const HASH_REQUEST: u8 = 21;
    pub const HASHES: u8 = 22;
    pub const HASH_REJECT: u8 = 23;
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn exact(id: u8, payload: &[u8], len: usize, expected: &'static str) -> Result<(), WireError> {
    if payload.len() == len {
        Ok(())
    } else {
        Err(WireError::BadLength {
            id,
            len: payload.len(),
            expected,
        })
    }
}

fn block(payload: &[u8]) -> BlockRef {
    BlockRef {
        index: PieceIndex::new(u32_at(payload, 0)),
        begin: u32_at(payload, 4),
        length: u32_at(payload, 8),
    }
}

impl Message {
    /// Builds a message from its id and payload (the bytes after the id).
    pub fn parse(message_id: u8, payload: Bytes) -> Result<Message, WireError> {
        let p = &payload[..];
        Ok(match message_id {
            id::CHOKE
            | id::UNCHOKE
            | id::INTERESTED
            | id::NOT_INTERESTED
            | id::HAVE_ALL
            | id::HAVE_NONE => {
                exact(message_id, p, 0, "0")?;
                match message_id {
                    id::CHOKE => Message::Choke,
                    id::UNCHOKE => Message::Unchoke,
                    id::INTERESTED => Message::Interested,
                    id::NOT_INTERESTED => Message::NotInterested,
                    id::HAVE_ALL => Message::HaveAll,
                    _ => Message::HaveNone,
                }
            }
            id::HAVE | id::SUGGEST | id::ALLOWED_FAST => {
                exact(message_id, p, 4, "4")?;
                let index = PieceIndex::new(u32_at(p, 0));
                match message_id {
                    id::HAVE => Message::Have(index),
                    id::SUGGEST => Message::Suggest(index),
                    _ => Message::AllowedFast(index),
                }
            }
            id::BITFIELD => Message::Bitfield(payload),
            id::REQUEST | id::CANCEL | id::REJECT => {
                exact(message_id, p, 12, "12")?;
                let b = block(p);
                match message_id {
                    id::REQUEST => Message::Request(b),
                    id::CANCEL => Message::Cancel(b),
                    _ => Message::Reject(b),
                }
            }
            id::PIECE => {
                if p.len() < 8 {
                    return Err(WireError::BadLength {
                        id: message_id,
                        len: p.len(),
                        expected: "at least 8",
                    });
                }
                Message::Piece {
                    index: PieceIndex::new(u32_at(p, 0)),
                    begin: u32_at(p, 4),
                    data: payload.slice(8..),
                }
            }
            id::PORT => {
                exact(message_id, p, 2, "2")?;
                Message::Port(u16::from_be_bytes([p[0], p[1]]))
            }
            id::EXTENDED => {
                if p.is_empty() {
                    return Err(WireError::BadLength {
                        id: message_id,
                        len: 0,
                        expected: "at least 1",
                    });
                }
                Message::Extended {
                    id: p[0],
                    payload: payload.slice(1..),
                }
            }
            id::HASH_REQUEST | id::HASH_REJECT => {
                exact(message_id, p, HASH_RANGE_LEN, "48")?;
                let range = HashRange::parse(p);
                if message_id == id::HASH_REQUEST {
                    Message::HashRequest(range)
                } else {
                    Message::HashReject(range)
                }
            }
            id::HASHES => {
                if p.len() < HASH_RANGE_LEN || !(p.len() - HASH_RANGE_LEN).is_multiple_of(32) {
                    return Err(WireError::BadLength {
                        id: message_id,
                        len: p.len(),
                        expected: "48 plus a multiple of 32",
                    });
                }
                Message::Hashes {
                    range: HashRange::parse(p),
                    hashes: p[HASH_RANGE_LEN..]
                        .chunks_exact(32)
                        .map(|c| {
                            let mut h = [0u8; 32];
                            h.copy_from_slice(c);
                            h
                        })
                        .collect(),
                }
            }
            other => return Err(WireError::UnknownId(other)),
        })
    }

    /// Appends the message with its 4-byte length prefix.
    pub fn encode(&self, out: &mut BytesMut) {
        if let Some(block) = self.encode_head(out) {
            out.put_slice(block);
        }
    }

    /// Appends the message like `encode`, except that a `Piece` stops after its header and its block is
    /// returned: a writer can then pass the block to a vectored write instead of copying it, which is
    /// most of what a seeder would otherwise copy.
    pub fn encode_head(&self, out: &mut BytesMut) -> Option<&Bytes> {
        let simple = |out: &mut BytesMut, id: u8| {
            out.put_u32(1);
            out.put_u8(id);
        };
        let index_msg = |out: &mut BytesMut, id: u8, index: PieceIndex| {
            out.put_u32(5);
            out.put_u8(id);
            out.put_u32(index.get());
        };
        let block_msg = |out: &mut BytesMut, id: u8, b: &BlockRef| {
            out.put_u32(13);
            out.put_u8(id);
            out.put_u32(b.index.get());
            out.put_u32(b.begin);
            out.put_u32(b.length);
        };
        match self {
            Message::KeepAlive => out.put_u32(0),
            Message::Choke => simple(out, id::CHOKE),
            Message::Unchoke => simple(out, id::UNCHOKE),
            Message::Interested => simple(out, id::INTERESTED),
            Message::NotInterested => simple(out, id::NOT_INTERESTED),
            Message::HaveAll => simple(out, id::HAVE_ALL),
            Message::HaveNone => simple(out, id::HAVE_NONE),
            Message::Have(i) => index_msg(out, id::HAVE, *i),
            Message::Suggest(i) => index_msg(out, id::SUGGEST, *i),
            Message::AllowedFast(i) => index_msg(out, id::ALLOWED_FAST, *i),
            Message::Bitfield(bits) => {
                out.put_u32(1 + bits.len() as u32);
                out.put_u8(id::BITFIELD);
                out.put_slice(bits);
            }
            Message::Request(b) => block_msg(out, id::REQUEST, b),
            Message::Cancel(b) => block_msg(out, id::CANCEL, b),
            Message::Reject(b) => block_msg(out, id::REJECT, b),
            Message::Piece { index, begin, data } => {
                out.put_u32(9 + data.len() as u32);
                out.put_u8(id::PIECE);
                out.put_u32(index.get());
                out.put_u32(*begin);
                return Some(data);
            }
            Message::Port(port) => {
                out.put_u32(3);
                out.put_u8(id::PORT);
                out.put_u16(*port);
            }
            Message::Extended { id: ext, payload } => {
                out.put_u32(2 + payload.len() as u32);
                out.put_u8(id::EXTENDED);
                out.put_u8(*ext);
                out.put_slice(payload);
            }
            Message::HashRequest(range) | Message::HashReject(range) => {
                out.put_u32(1 + HASH_RANGE_LEN as u32);
                out.put_u8(if matches!(self, Message::HashRequest(_)) {
                    id::HASH_REQUEST
                } else {
                    id::HASH_REJECT
                });
                range.put(out);
            }
            Message::Hashes { range, hashes } => {
                out.put_u32(1 + HASH_RANGE_LEN as u32 + 32 * hashes.len() as u32);
                out.put_u8(id::HASHES);
                range.put(out);
                for h in hashes {
                    out.put_slice(h);
                }
            }
        }
        None
    }
}
