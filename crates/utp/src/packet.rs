//! The BEP 29 packet: a 20-byte header, a chain of extensions, then the payload.
//!
//! ```text
//! 0      type<<4 | version(1)
//! 1      first extension type (0 = none)
//! 2..4   connection_id            (big-endian, as every field)
//! 4..8   timestamp_microseconds
//! 8..12  timestamp_difference_microseconds
//! 12..16 wnd_size
//! 16..18 seq_nr
//! 18..20 ack_nr
//! ```
//! Each extension is `next type, length, length bytes`. The selective ack (type 1) is a bitmask
//! of a multiple of 4 bytes: bit i (least significant bit of byte 0 first) acknowledges
//! `ack_nr + 2 + i`. Unknown extensions are skipped. Parsing borrows the datagram: a packet
//! never holds more than the datagram it came from.

use thiserror::Error;

pub const HEADER_LEN: usize = 20;
pub const VERSION: u8 = 1;
/// Extension type of the selective ack.
pub const EXT_SACK: u8 = 1;
/// Longest selective-ack bitmask we send or keep (256 packets past ack_nr + 1). Longer ones are
/// read only up to this many bytes.
pub const MAX_SACK_BYTES: usize = 32;
/// At most this many extensions are walked in one packet (each is at least 2 bytes anyway).
pub const MAX_EXTENSIONS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    Data = 0,
    Fin = 1,
    State = 2,
    Reset = 3,
    Syn = 4,
}

impl PacketType {
    fn from_nibble(n: u8) -> Option<PacketType> {
        Some(match n {
            0 => PacketType::Data,
            1 => PacketType::Fin,
            2 => PacketType::State,
            3 => PacketType::Reset,
            4 => PacketType::Syn,
            _ => return None,
        })
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("datagram of {0} bytes is shorter than a uTP header")]
    Short(usize),
    #[error("uTP version {0}, expected 1")]
    Version(u8),
    #[error("unknown packet type {0}")]
    Type(u8),
    #[error("extension runs past the end of the datagram")]
    ExtensionTruncated,
    #[error("selective ack of {0} bytes (must be a non-zero multiple of 4)")]
    SackLength(usize),
    #[error("more than {MAX_EXTENSIONS} extensions")]
    TooManyExtensions,
}

/// Whether a datagram looks like uTP at all (version 1 and a known type in the first byte, room
/// for a header): what a socket shared with the DHT uses to tell the two apart ('d' = 0x64 is
/// not).
pub fn is_utp(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[0] & 0x0f == VERSION
        && PacketType::from_nibble(datagram[0] >> 4).is_some()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub ty: PacketType,
    pub conn_id: u16,
    pub timestamp: u32,
    pub timestamp_diff: u32,
    pub wnd_size: u32,
    pub seq_nr: u16,
    pub ack_nr: u16,
}

/// A parsed packet, borrowing its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    /// The selective-ack bitmask, at most [`MAX_SACK_BYTES`].
    pub sack: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    pub fn parse(d: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        if d.len() < HEADER_LEN {
            return Err(PacketError::Short(d.len()));
        }
        if d[0] & 0x0f != VERSION {
            return Err(PacketError::Version(d[0] & 0x0f));
        }
        let ty = PacketType::from_nibble(d[0] >> 4).ok_or(PacketError::Type(d[0] >> 4))?;
        let u16_at = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        let header = Header {
            ty,
            conn_id: u16_at(2),
            timestamp: u32_at(4),
            timestamp_diff: u32_at(8),
            wnd_size: u32_at(12),
            seq_nr: u16_at(16),
            ack_nr: u16_at(18),
        };
        let mut next = d[1];
        let mut at = HEADER_LEN;
        let mut sack = None;
        let mut count = 0;
        while next != 0 {
            count += 1;
            if count > MAX_EXTENSIONS {
                return Err(PacketError::TooManyExtensions);
            }
            if d.len() < at + 2 {
                return Err(PacketError::ExtensionTruncated);
            }
            let (ty, len) = (next, d[at + 1] as usize);
            next = d[at];
            at += 2;
            if d.len() < at + len {
                return Err(PacketError::ExtensionTruncated);
            }
            if ty == EXT_SACK {
                if len == 0 || len % 4 != 0 {
                    return Err(PacketError::SackLength(len));
                }
                sack = Some(&d[at..at + len.min(MAX_SACK_BYTES)]);
            }
            at += len;
        }
        Ok(Packet {
            header,
            sack,
            payload: &d[at..],
        })
    }
}

impl Header {
    /// Appends the header, the selective ack if any (its length rounded up to a multiple of 4)
    /// and the payload to `out`.
    pub fn write(&self, sack: Option<&[u8]>, payload: &[u8], out: &mut Vec<u8>) {
        // Laid out in place, then appended at once: a push per field checked the capacity
        // eight times per packet.
        let mut h = [0u8; HEADER_LEN];
        h[0] = ((self.ty as u8) << 4) | VERSION;
        h[1] = if sack.is_some() { EXT_SACK } else { 0 };
        h[2..4].copy_from_slice(&self.conn_id.to_be_bytes());
        h[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        h[8..12].copy_from_slice(&self.timestamp_diff.to_be_bytes());
        h[12..16].copy_from_slice(&self.wnd_size.to_be_bytes());
        h[16..18].copy_from_slice(&self.seq_nr.to_be_bytes());
        h[18..20].copy_from_slice(&self.ack_nr.to_be_bytes());
        out.extend_from_slice(&h);
        if let Some(mask) = sack {
            let mask = &mask[..mask.len().min(MAX_SACK_BYTES)];
            let len = mask.len().max(1).div_ceil(4) * 4;
            out.push(0);
            out.push(len as u8);
            out.extend_from_slice(mask);
            out.resize(out.len() + len - mask.len(), 0);
        }
        out.extend_from_slice(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(ty: PacketType) -> Header {
        Header {
            ty,
            conn_id: 0x1234,
            timestamp: 0x0102_0304,
            timestamp_diff: 0x0a0b_0c0d,
            wnd_size: 0x0010_0000,
            seq_nr: 0xfffe,
            ack_nr: 7,
        }
    }

    #[test]
    fn state_with_sack_byte_for_byte() {
        let mut out = Vec::new();
        header(PacketType::State).write(Some(&[0b0000_0101]), b"", &mut out);
        let want = [
            0x21,
            1,
            0x12,
            0x34,
            1,
            2,
            3,
            4,
            0x0a,
            0x0b,
            0x0c,
            0x0d,
            0,
            0x10,
            0,
            0,
            0xff,
            0xfe,
            0,
            7, // header
            0,
            4,
            0b0000_0101,
            0,
            0,
            0, // sack: next none, 4 bytes
        ];
        assert_eq!(out, want);
        let p = Packet::parse(&out).unwrap();
        assert_eq!(p.header, header(PacketType::State));
        assert_eq!(p.sack, Some(&[5u8, 0, 0, 0][..]));
        assert!(p.payload.is_empty());
    }

    #[test]
    fn syn_and_data_types() {
        let mut out = Vec::new();
        header(PacketType::Syn).write(None, b"", &mut out);
        assert_eq!(out[0], 0x41);
        assert_eq!(out[1], 0);
        out.clear();
        header(PacketType::Data).write(None, b"abc", &mut out);
        assert_eq!(out[0], 0x01);
        assert_eq!(&out[20..], b"abc");
        assert_eq!(Packet::parse(&out).unwrap().payload, b"abc");
    }

    #[test]
    fn unknown_extension_skipped() {
        let mut d = vec![0x01, 3];
        d.extend_from_slice(&[0; 18]);
        d.extend_from_slice(&[EXT_SACK, 2, 9, 9]); // ext 3, 2 bytes, then sack
        d.extend_from_slice(&[0, 4, 1, 0, 0, 0]);
        d.extend_from_slice(b"xy");
        let p = Packet::parse(&d).unwrap();
        assert_eq!(p.sack, Some(&[1u8, 0, 0, 0][..]));
        assert_eq!(p.payload, b"xy");
    }

    #[test]
    fn bad_inputs() {
        assert_eq!(Packet::parse(&[0x01; 19]), Err(PacketError::Short(19)));
        let mut d = vec![0x02; 20];
        assert_eq!(Packet::parse(&d), Err(PacketError::Version(2)));
        d[0] = 0x51;
        assert_eq!(Packet::parse(&d), Err(PacketError::Type(5)));
        d[0] = 0x01;
        d[1] = 1;
        assert_eq!(Packet::parse(&d), Err(PacketError::ExtensionTruncated));
        d.extend_from_slice(&[0, 8, 1, 2, 3, 4]);
        assert_eq!(Packet::parse(&d), Err(PacketError::ExtensionTruncated));
        d.truncate(20);
        d.extend_from_slice(&[0, 3, 1, 2, 3]);
        assert_eq!(Packet::parse(&d), Err(PacketError::SackLength(3)));
        assert!(!is_utp(
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
        ));
        assert!(is_utp(&[0x41; 20]));
    }

    fn any_type() -> impl Strategy<Value = PacketType> {
        prop_oneof![
            Just(PacketType::Data),
            Just(PacketType::Fin),
            Just(PacketType::State),
            Just(PacketType::Reset),
            Just(PacketType::Syn),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(ty in any_type(), conn_id: u16, timestamp: u32, timestamp_diff: u32,
                      wnd_size: u32, seq_nr: u16, ack_nr: u16,
                      sack in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=8usize).prop_map(|mut v| { v.resize(v.len().div_ceil(4) * 4, 0); v })),
                      payload in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let h = Header { ty, conn_id, timestamp, timestamp_diff, wnd_size, seq_nr, ack_nr };
            let mut out = Vec::new();
            h.write(sack.as_deref(), &payload, &mut out);
            let p = Packet::parse(&out).unwrap();
            prop_assert_eq!(p.header, h);
            prop_assert_eq!(p.sack, sack.as_deref());
            prop_assert_eq!(p.payload, &payload[..]);
        }

        #[test]
        fn noise_never_panics(d in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::parse(&d) {
                prop_assert!(p.payload.len() <= d.len());
                prop_assert!(p.sack.is_none_or(|s| s.len() <= MAX_SACK_BYTES));
            }
        }
    }
}
