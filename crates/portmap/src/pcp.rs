//! PCP (RFC 6887) MAP requests and replies, the successor of NAT-PMP on the same port (5351).
//! Addresses are 16 bytes; an IPv4 address is written IPv4-mapped (`::ffff:a.b.c.d`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{ParseError, Protocol};

const VERSION: u8 = 2;
const OP_MAP: u8 = 1;
const RESPONSE_BIT: u8 = 0x80;
const HEADER: usize = 24;
const MAP_PAYLOAD: usize = 36;
/// §7: a PCP message is at most 1100 bytes.
pub const MAX_MESSAGE: usize = 1100;

/// Result codes of §7.4 that the driver reacts to.
pub const SUCCESS: u8 = 0;
pub const UNSUPP_VERSION: u8 = 1;

fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn unmapped(b: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(b);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// A MAP request (§11.1): map `internal` on `client` for `lifetime` seconds (0 deletes it, §15).
/// The same `nonce` must be used to renew or delete the mapping.
pub fn map_request(
    nonce: [u8; 12],
    protocol: Protocol,
    client: IpAddr,
    internal: u16,
    suggested_external: u16,
    lifetime: u32,
) -> [u8; HEADER + MAP_PAYLOAD] {
    let mut b = [0u8; HEADER + MAP_PAYLOAD];
    b[0] = VERSION;
    b[1] = OP_MAP;
    b[4..8].copy_from_slice(&lifetime.to_be_bytes());
    b[8..24].copy_from_slice(&mapped(client));
    let p = &mut b[HEADER..];
    p[..12].copy_from_slice(&nonce);
    p[12] = protocol.number();
    p[16..18].copy_from_slice(&internal.to_be_bytes());
    p[18..20].copy_from_slice(&suggested_external.to_be_bytes());
    // No preferred external address: the IPv4-mapped all-zeros address (§11.1).
    let any = match client {
        IpAddr::V4(_) => mapped(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        IpAddr::V6(_) => [0; 16],
    };
    p[20..36].copy_from_slice(&any);
    b
}

/// A MAP reply. When `result` is not [`SUCCESS`] the mapping fields may be zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapReply {
    pub result: u8,
    pub lifetime: u32,
    pub epoch: u32,
    pub nonce: [u8; 12],
    pub protocol: u8,
    pub internal: u16,
    pub external: u16,
    pub external_ip: IpAddr,
}

/// Reads a MAP reply; options after the MAP payload are ignored. An error reply may carry only the
/// header (an unsupported version, §9), which reads as a reply with zero mapping fields.
pub fn parse_reply(b: &[u8]) -> Result<MapReply, ParseError> {
    if b.len() < 4 {
        return Err(ParseError::Short(b.len()));
    }
    if b.len() > MAX_MESSAGE {
        return Err(ParseError::Long(b.len()));
    }
    if b[1] != RESPONSE_BIT | OP_MAP {
        return Err(ParseError::Opcode(b[1]));
    }
    let result = b[3];
    if b[0] != VERSION {
        // A NAT-PMP-only server answers with its own version 0 and "unsupported version".
        return Err(ParseError::Version(b[0]));
    }
    let short = b.len() < HEADER + MAP_PAYLOAD;
    if short && result == SUCCESS {
        return Err(ParseError::Short(b.len()));
    }
    if b.len() < HEADER {
        return Err(ParseError::Short(b.len()));
    }
    let be32 = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut reply = MapReply {
        result,
        lifetime: be32(4),
        epoch: be32(8),
        nonce: [0; 12],
        protocol: 0,
        internal: 0,
        external: 0,
        external_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    if !short {
        let p = &b[HEADER..HEADER + MAP_PAYLOAD];
        reply.nonce.copy_from_slice(&p[..12]);
        reply.protocol = p[12];
        reply.internal = u16::from_be_bytes([p[16], p[17]]);
        reply.external = u16::from_be_bytes([p[18], p[19]]);
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&p[20..36]);
        reply.external_ip = unmapped(ip);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn map_request_matches_the_rfc_layout_byte_for_byte() {
        let client = IpAddr::V4(Ipv4Addr::new(192, 168, 77, 2));
        let got = map_request(NONCE, Protocol::Tcp, client, 6881, 6881, 7200);
        let mut want = vec![2, 1, 0, 0, 0, 0, 0x1c, 0x20];
        want.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 77, 2]);
        want.extend(NONCE);
        want.extend([6, 0, 0, 0, 0x1a, 0xe1, 0x1a, 0xe1]);
        want.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(got.to_vec(), want);
        let delete = map_request(NONCE, Protocol::Udp, client, 6881, 0, 0);
        assert_eq!(&delete[4..8], &[0, 0, 0, 0]);
        assert_eq!(delete[HEADER + 12], 17);
    }

    fn reply(result: u8) -> Vec<u8> {
        let mut b = vec![2, 0x81, 0, result, 0, 0, 0x0e, 0x10, 0, 0, 0, 42];
        b.extend([0; 12]);
        b.extend(NONCE);
        b.extend([17, 0, 0, 0, 0x1a, 0xe1, 0x1a, 0xe2]);
        b.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 11, 11, 11, 1]);
        b
    }

    #[test]
    fn replies_are_read_field_by_field() {
        let r = parse_reply(&reply(0)).unwrap();
        assert_eq!(
            r,
            MapReply {
                result: 0,
                lifetime: 3600,
                epoch: 42,
                nonce: NONCE,
                protocol: 17,
                internal: 6881,
                external: 6882,
                external_ip: IpAddr::V4(Ipv4Addr::new(11, 11, 11, 1)),
            }
        );
        // Options after the payload are skipped.
        let mut with_option = reply(0);
        with_option.extend([1, 0, 0, 0]);
        assert_eq!(parse_reply(&with_option).unwrap().external, 6882);
    }

    #[test]
    fn error_replies_and_garbage() {
        // A header-only error reply (§9).
        let header_only = &reply(2)[..HEADER];
        assert_eq!(parse_reply(header_only).unwrap().result, 2);
        assert_eq!(
            parse_reply(&reply(0)[..HEADER]),
            Err(ParseError::Short(HEADER))
        );
        // A NAT-PMP server's "unsupported version" reply to a PCP request.
        assert_eq!(
            parse_reply(&[0, 0x81, 0, 1, 0, 0, 0, 0]),
            Err(ParseError::Version(0))
        );
        assert_eq!(parse_reply(&[2, 0x01, 0, 0]), Err(ParseError::Opcode(1)));
        assert_eq!(parse_reply(&[2]), Err(ParseError::Short(1)));
        assert_eq!(
            parse_reply(&[0; MAX_MESSAGE + 1]),
            Err(ParseError::Long(MAX_MESSAGE + 1))
        );
    }
}
