//! BEP 11 peer exchange (`ut_pex`): peers a peer has connected to or dropped since its last message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bencode::{DictBuilder, Owned, Value};

use crate::WireError;

/// Most peers taken from one message (BEP 11 asks senders for at most 50 added and 50 dropped).
pub const MAX_PEX_PEERS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PexMessage {
    pub added: Vec<SocketAddr>,
    pub dropped: Vec<SocketAddr>,
}

fn compact(addrs: &[SocketAddr], v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for a in addrs
        .iter()
        .filter(|a| a.is_ipv6() == v6)
        .take(MAX_PEX_PEERS)
    {
        match a.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
    out
}

fn parse(bytes: Option<&[u8]>, v6: bool) -> Vec<SocketAddr> {
    let size = if v6 { 18 } else { 6 };
    bytes
        .unwrap_or_default()
        .chunks_exact(size)
        .take(MAX_PEX_PEERS)
        .map(|c| {
            let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
            let ip: IpAddr = if v6 {
                let mut b = [0u8; 16];
                b.copy_from_slice(&c[..16]);
                Ipv6Addr::from(b).into()
            } else {
                Ipv4Addr::new(c[0], c[1], c[2], c[3]).into()
            };
            SocketAddr::new(ip, port)
        })
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
        .collect()
}

impl PexMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut d = DictBuilder::new();
        let added4 = compact(&self.added, false);
        let added6 = compact(&self.added, true);
        // One flag byte per added peer; 0 claims nothing (no encryption, seed or uTP hints).
        d.insert("added.f", Owned::Bytes(vec![0; added4.len() / 6]))
            .insert("added", Owned::Bytes(added4))
            .insert("dropped", Owned::Bytes(compact(&self.dropped, false)));
        if !added6.is_empty() {
            d.insert("added6.f", Owned::Bytes(vec![0; added6.len() / 18]))
                .insert("added6", Owned::Bytes(added6));
        }
        let dropped6 = compact(&self.dropped, true);
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
        let mut added = parse(get(b"added"), false);
        added.extend(parse(get(b"added6"), true));
        let mut dropped = parse(get(b"dropped"), false);
        dropped.extend(parse(get(b"dropped6"), true));
        added.truncate(MAX_PEX_PEERS);
        dropped.truncate(MAX_PEX_PEERS);
        Ok(PexMessage { added, dropped })
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
}
