//! NAT-PMP (RFC 6886) packets. Requests go to the gateway's UDP port 5351; every multi-byte field
//! is big-endian.

use std::net::Ipv4Addr;

use crate::{ParseError, Protocol};

pub const PORT: u16 = 5351;
const VERSION: u8 = 0;
/// Opcode 0 asks for the external address; 1 maps UDP, 2 maps TCP; a reply's opcode is 128 + the request's.
const OP_EXTERNAL: u8 = 0;
const REPLY: u8 = 128;

fn map_opcode(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Udp => 1,
        Protocol::Tcp => 2,
    }
}

/// "What is your external address?" (RFC 6886 §3.2).
pub fn external_address_request() -> [u8; 2] {
    [VERSION, OP_EXTERNAL]
}

/// A mapping request (§3.3). A lifetime of 0 with external port 0 deletes the mapping (§3.4).
pub fn map_request(protocol: Protocol, internal: u16, external: u16, lifetime: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = VERSION;
    b[1] = map_opcode(protocol);
    // b[2..4] reserved, zero.
    b[4..6].copy_from_slice(&internal.to_be_bytes());
    b[6..8].copy_from_slice(&external.to_be_bytes());
    b[8..12].copy_from_slice(&lifetime.to_be_bytes());
    b
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    External {
        result: u16,
        epoch: u32,
        address: Ipv4Addr,
    },
    Map {
        protocol: Protocol,
        result: u16,
        epoch: u32,
        internal: u16,
        external: u16,
        lifetime: u32,
    },
}

impl Reply {
    /// The result code: 0 is success, 1 unsupported version, 2 refused, 3 network failure,
    /// 4 out of resources, 5 unsupported opcode.
    pub fn result(&self) -> u16 {
        match self {
            Reply::External { result, .. } | Reply::Map { result, .. } => *result,
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a reply. A server that does not speak NAT-PMP version 0 answers with its own version and
/// result 1, which shows up as [`ParseError::Version`].
pub fn parse_reply(b: &[u8]) -> Result<Reply, ParseError> {
    if b.len() < 8 {
        return Err(ParseError::Short(b.len()));
    }
    if b.len() > 16 {
        return Err(ParseError::Long(b.len()));
    }
    if b[0] != VERSION {
        return Err(ParseError::Version(b[0]));
    }
    let result = be16(b, 2);
    let epoch = be32(b, 4);
    match b[1] {
        op if op == REPLY + OP_EXTERNAL => {
            if b.len() != 12 {
                return Err(ParseError::Short(b.len()));
            }
            Ok(Reply::External {
                result,
                epoch,
                address: Ipv4Addr::new(b[8], b[9], b[10], b[11]),
            })
        }
        op if op == REPLY + 1 || op == REPLY + 2 => {
            if b.len() != 16 {
                return Err(ParseError::Short(b.len()));
            }
            Ok(Reply::Map {
                protocol: if op == REPLY + 1 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                result,
                epoch,
                internal: be16(b, 8),
                external: be16(b, 10),
                lifetime: be32(b, 12),
            })
        }
        op => Err(ParseError::Opcode(op)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_the_rfc_layout_byte_for_byte() {
        assert_eq!(external_address_request(), [0, 0]);
        // §3.3: version 0, opcode 2 (TCP), reserved, internal 6881, suggested external 6881, 7200 s.
        assert_eq!(
            map_request(Protocol::Tcp, 6881, 6881, 7200),
            [0, 2, 0, 0, 0x1a, 0xe1, 0x1a, 0xe1, 0, 0, 0x1c, 0x20]
        );
        // §3.4: deleting a UDP mapping: lifetime 0 and external port 0.
        assert_eq!(
            map_request(Protocol::Udp, 6881, 0, 0),
            [0, 1, 0, 0, 0x1a, 0xe1, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn replies_are_read_field_by_field() {
        let external = [0, 128, 0, 0, 0, 0, 0x01, 0x00, 11, 11, 11, 1];
        assert_eq!(
            parse_reply(&external),
            Ok(Reply::External {
                result: 0,
                epoch: 256,
                address: Ipv4Addr::new(11, 11, 11, 1)
            })
        );
        let map = [
            0, 130, 0, 0, 0, 0, 0, 9, 0x1a, 0xe1, 0x1a, 0xe2, 0, 0, 0x0e, 0x10,
        ];
        assert_eq!(
            parse_reply(&map),
            Ok(Reply::Map {
                protocol: Protocol::Tcp,
                result: 0,
                epoch: 9,
                internal: 6881,
                external: 6882,
                lifetime: 3600
            })
        );
        let refused = [0, 129, 0, 2, 0, 0, 0, 9, 0x1a, 0xe1, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_reply(&refused).map(|r| r.result()), Ok(2));
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert_eq!(parse_reply(&[0, 128]), Err(ParseError::Short(2)));
        assert_eq!(parse_reply(&[0; 17]), Err(ParseError::Long(17)));
        assert_eq!(parse_reply(&[2; 12]), Err(ParseError::Version(2)));
        assert_eq!(
            parse_reply(&[0, 0, 0, 0, 0, 0, 0, 0]),
            Err(ParseError::Opcode(0))
        );
        assert_eq!(
            parse_reply(&[0, 130, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(ParseError::Short(12))
        );
    }
}
