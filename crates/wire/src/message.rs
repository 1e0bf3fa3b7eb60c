//! Peer messages (BEP 3, BEP 6, BEP 10) and their byte layout.

use bytes::{BufMut, Bytes, BytesMut};

use crate::WireError;

/// A block: `length` bytes at `begin` within piece `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    pub index: u32,
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
    Have(u32),
    Bitfield(Bytes),
    Request(BlockRef),
    Piece {
        index: u32,
        begin: u32,
        data: Bytes,
    },
    Cancel(BlockRef),
    /// DHT port (BEP 5).
    Port(u16),
    /// BEP 6.
    Suggest(u32),
    HaveAll,
    HaveNone,
    Reject(BlockRef),
    AllowedFast(u32),
    /// BEP 10: id 0 is the extension handshake, others are the ids the receiver assigned.
    Extended {
        id: u8,
        payload: Bytes,
    },
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
        index: u32_at(payload, 0),
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
                let index = u32_at(p, 0);
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
                    index: u32_at(p, 0),
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
            other => return Err(WireError::UnknownId(other)),
        })
    }

    /// Appends the message with its 4-byte length prefix.
    pub fn encode(&self, out: &mut BytesMut) {
        let simple = |out: &mut BytesMut, id: u8| {
            out.put_u32(1);
            out.put_u8(id);
        };
        let index_msg = |out: &mut BytesMut, id: u8, index: u32| {
            out.put_u32(5);
            out.put_u8(id);
            out.put_u32(index);
        };
        let block_msg = |out: &mut BytesMut, id: u8, b: &BlockRef| {
            out.put_u32(13);
            out.put_u8(id);
            out.put_u32(b.index);
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
                out.put_u32(*index);
                out.put_u32(*begin);
                out.put_slice(data);
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
        }
    }
}
