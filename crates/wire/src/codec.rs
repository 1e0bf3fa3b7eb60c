//! Framing: 4-byte big-endian length prefixes, with a hard cap checked before any payload is buffered.

use bytes::{Buf, BytesMut};

use crate::{Message, WireError};

/// Largest message accepted by default: a 16 KiB block is 16 393 bytes framed, a bitfield for a million
/// pieces 128 KiB; nothing legitimate comes near 1 MiB.
pub const DEFAULT_MAX_MESSAGE: u32 = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max: u32,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            max: DEFAULT_MAX_MESSAGE,
        }
    }
}

impl Decoder {
    pub fn new(max: u32) -> Self {
        Decoder { max }
    }

    /// Takes one message off the front of `buf` when it is complete. A length prefix over the cap is an
    /// error at once, before its payload arrives, so a peer cannot make us buffer it.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len > self.max {
            return Err(WireError::TooLong { len, max: self.max });
        }
        if len == 0 {
            buf.advance(4);
            return Ok(Some(Message::KeepAlive));
        }
        let total = 4 + len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(4);
        let mut frame = buf.split_to(len as usize);
        let id = frame[0];
        frame.advance(1);
        Message::parse(id, frame.freeze()).map(Some)
    }

    /// How many more bytes the message at the front of `buf` needs (0 if complete or unknown), so a reader
    /// can size its next read.
    pub fn missing(&self, buf: &BytesMut) -> usize {
        if buf.len() < 4 {
            return 4 - buf.len();
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]).min(self.max) as usize;
        (4 + len).saturating_sub(buf.len())
    }
}
