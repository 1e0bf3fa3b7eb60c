//! BEP 11 peer exchange (`ut_pex`): peers a peer has connected to or dropped since its last message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bencode::{DictBuilder, Owned, Value};

use crate::WireError;

/// Most peers taken from one message (BEP 11 asks senders for at most 50 added and 50 dropped).
pub const MAX_PEX_PEERS: usize = 50;

/// Flag bits of an added peer (BEP 11's `added.f`, as libtorrent sets them).
pub const PEX_ENCRYPTION: u8 = 0x01;
pub const PEX_SEED: u8 = 0x02;
/// The peer speaks uTP.
pub const PEX_UTP: u8 = 0x04;
/// The peer speaks `ut_holepunch` (BEP 55): ask the sender to introduce us if we cannot reach it.
pub const PEX_HOLEPUNCH: u8 = 0x08;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PexMessage {
    pub added: Vec<SocketAddr>,
    pub dropped: Vec<SocketAddr>,
    /// One flag byte per `added` address, in the same order; a missing byte means 0 (nothing claimed).
    pub added_flags: Vec<u8>,
}

/// The compact form of the addresses of one family, and their flag bytes.
fn compact(addrs: &[SocketAddr], flags: &[u8], v6: bool) -> (Vec<u8>, Vec<u8>) {
    let mut out = Vec::new();
    let mut out_flags = Vec::new();
    for (i, a) in addrs
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_ipv6() == v6)
        .take(MAX_PEX_PEERS)
    {
        match a.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
        out.extend_from_slice(&a.port().to_be_bytes());
        out_flags.push(flags.get(i).copied().unwrap_or(0));
    }
    (out, out_flags)
}

/// Addresses of one family with their flag bytes (0 where `flags` is short).
fn parse(bytes: Option<&[u8]>, flags: Option<&[u8]>, v6: bool) -> Vec<(SocketAddr, u8)> {
    let size = if v6 { 18 } else { 6 };
    let flags = flags.unwrap_or_default();
    bytes
        .unwrap_or_default()
        .chunks_exact(size)
        .take(MAX_PEX_PEERS)
        .enumerate()
        .map(|(i, c)| {
            let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
            let ip: IpAddr = if v6 {
                let mut b = [0u8; 16];
                b.copy_from_slice(&c[..16]);
                Ipv6Addr::from(b).into()
            } else {
                Ipv4Addr::new(c[0], c[1], c[2], c[3]).into()
            };
            (
                SocketAddr::new(ip, port),
                flags.get(i).copied().unwrap_or(0),
            )
        })
        .filter(|(a, _)| a.port() != 0 && !a.ip().is_unspecified())
        .collect()
}

impl PexMessage {
    /// The flag byte sent or received with `added[i]`.
    pub fn flags_of(&self, i: usize) -> u8 {
        self.added_flags.get(i).copied().unwrap_or(0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = DictBuilder::new();
        let (added4, flags4) = compact(&self.added, &self.added_flags, false);
        let (added6, flags6) = compact(&self.added, &self.added_flags, true);
        d.insert("added.f", Owned::Bytes(flags4))
            .insert("added", Owned::Bytes(added4))
            .insert(
                "dropped",
                Owned::Bytes(compact(&self.dropped, &[], false).0),
            );
        if !added6.is_empty() {
            d.insert("added6.f", Owned::Bytes(flags6))
                .insert("added6", Owned::Bytes(added6));
        }
        let dropped6 = compact(&self.dropped, &[], true).0;
        if !dropped6.is_empty() {
            d.insert("dropped6", Owned::Bytes(dropped6));
        }
        d.build().encode()
    }

    pub fn decode(payload: &[u8]) -> Result<PexMessage, WireError> {
        let limits = bencode::Limits {
            max_depth: 4,
            max_values: 64,
            max_input: 64 * 1024,
        };
        let value = bencode::decode_with(payload, bencode::Mode::Tolerant, limits)
            .map_err(|e| WireError::BadExtension(format!("ut_pex: {e}")))?;
        let dict = value
            .as_dict()
            .ok_or_else(|| WireError::BadExtension("ut_pex: not a dictionary".into()))?;
        let get = |k: &[u8]| dict.get(k).and_then(Value::as_bytes);
        let mut added = parse(get(b"added"), get(b"added.f"), false);
        added.extend(parse(get(b"added6"), get(b"added6.f"), true));
        added.truncate(MAX_PEX_PEERS);
        let mut dropped: Vec<SocketAddr> = parse(get(b"dropped"), None, false)
            .into_iter()
            .chain(parse(get(b"dropped6"), None, true))
            .map(|(a, _)| a)
            .collect();
        dropped.truncate(MAX_PEX_PEERS);
        Ok(PexMessage {
            added_flags: added.iter().map(|(_, f)| *f).collect(),
            added: added.into_iter().map(|(a, _)| a).collect(),
            dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let m = PexMessage {
            added: vec![
                "127.0.0.2:6881".parse().unwrap(),
                "[::1]:7000".parse().unwrap(),
            ],
            dropped: vec!["10.0.0.1:1".parse().unwrap()],
            added_flags: vec![0, 0],
        };
        let bytes = m.encode();
        assert!(bytes.starts_with(b"d5:added6:\x7f\x00\x00\x02\x1a\xe17:added.f1:\x00"));
        assert_eq!(PexMessage::decode(&bytes).unwrap(), m);
        // Port 0 and unspecified addresses are dropped; so is anything past 50 peers.
        let mut many = b"d5:added".to_vec();
        let body: Vec<u8> = (0..60u8)
            .flat_map(|i| [10, 0, 0, i, 0, 1])
            .chain([0, 0, 0, 0, 0, 5])
            .collect();
        many.extend_from_slice(format!("{}:", body.len()).as_bytes());
        many.extend_from_slice(&body);
        many.push(b'e');
        assert_eq!(PexMessage::decode(&many).unwrap().added.len(), 50);
        assert!(PexMessage::decode(b"i1e").is_err());
    }

    #[test]
    fn added_and_added6_share_one_cap_of_fifty() {
        let field = |key: &str, body: Vec<u8>| {
            let mut out = format!("{}:{key}{}:", key.len(), body.len()).into_bytes();
            out.extend_from_slice(&body);
            out
        };
        let v4: Vec<u8> = (0..30u8).flat_map(|i| [10, 0, 0, i, 0, 1]).collect();
        let v6: Vec<u8> = (0..30u8)
            .flat_map(|i| {
                let mut a = [0u8; 18];
                a[0] = 0x20;
                a[15] = i + 1;
                a[17] = 1;
                a
            })
            .collect();
        let mut msg = b"d".to_vec();
        msg.extend(field("added", v4));
        msg.extend(field("added6", v6));
        msg.push(b'e');
        let added = PexMessage::decode(&msg).unwrap().added;
        assert_eq!(added.len(), MAX_PEX_PEERS);
        assert_eq!(added.iter().filter(|a| a.is_ipv4()).count(), 30);
    }

    #[test]
    fn flags_travel_with_their_address_in_either_family() {
        let m = PexMessage {
            added: vec![
                "[2001:db8::7]:7000".parse().unwrap(),
                "192.0.2.5:6881".parse().unwrap(),
                "192.0.2.6:6881".parse().unwrap(),
            ],
            dropped: vec![],
            added_flags: vec![PEX_UTP, PEX_HOLEPUNCH | PEX_UTP, PEX_SEED],
        };
        let bytes = m.encode();
        assert!(bytes
            .windows(b"7:added.f2:\x0c\x02".len())
            .any(|w| w == b"7:added.f2:\x0c\x02"));
        let back = PexMessage::decode(&bytes).unwrap();
        // Decoded IPv4 first, then IPv6; each flag still with its own address.
        let flag_of = |a: &str| {
            let a: SocketAddr = a.parse().unwrap();
            back.flags_of(back.added.iter().position(|x| *x == a).unwrap())
        };
        assert_eq!(flag_of("192.0.2.5:6881"), PEX_HOLEPUNCH | PEX_UTP);
        assert_eq!(flag_of("192.0.2.6:6881"), PEX_SEED);
        assert_eq!(flag_of("[2001:db8::7]:7000"), PEX_UTP);
        // A peer that sends fewer flag bytes than addresses claims nothing for the rest; an address
        // with port 0 is dropped without shifting the flags of those after it.
        let short =
            b"d5:added12:\x0a\x00\x00\x01\x00\x00\x0a\x00\x00\x02\x00\x017:added.f2:\x08\x04e";
        let back = PexMessage::decode(short).unwrap();
        assert_eq!(
            back.added,
            vec!["10.0.0.2:1".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(back.flags_of(0), PEX_UTP);
    }
}
