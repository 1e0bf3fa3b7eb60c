//! BEP 55 `ut_holepunch` messages: a peer asks a peer both are connected to (the relay) to introduce it
//! to a third one it cannot reach; the relay tells both to connect to each other at once, so that each
//! side's NAT or firewall sees its own outgoing packets before the other's arrive.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::WireError;

/// What one `ut_holepunch` message asks or says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolepunchKind {
    /// To the relay: introduce me to the peer at `addr`.
    Rendezvous,
    /// From the relay: connect to `addr` now (it is connecting to you).
    Connect,
    /// From the relay: the rendezvous with `addr` cannot be made.
    Error(HolepunchError),
}

/// Why a relay refused a rendezvous (BEP 55's error codes; codes it does not define are kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolepunchError {
    /// The address is not a valid peer.
    NoSuchPeer,
    /// The relay has no connection to that peer.
    NotConnected,
    /// That peer does not speak `ut_holepunch`.
    NoSupport,
    /// The address is the relay itself.
    NoSelf,
    Other(u32),
}

impl HolepunchError {
    pub fn code(self) -> u32 {
        match self {
            HolepunchError::NoSuchPeer => 1,
            HolepunchError::NotConnected => 2,
            HolepunchError::NoSupport => 3,
            HolepunchError::NoSelf => 4,
            HolepunchError::Other(code) => code,
        }
    }

    fn from_code(code: u32) -> HolepunchError {
        match code {
            1 => HolepunchError::NoSuchPeer,
            2 => HolepunchError::NotConnected,
            3 => HolepunchError::NoSupport,
            4 => HolepunchError::NoSelf,
            other => HolepunchError::Other(other),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolepunchMessage {
    pub kind: HolepunchKind,
    pub addr: SocketAddr,
}

/// The longest payload: type, address type, an IPv6 address, port, error code.
pub const MAX_HOLEPUNCH_LEN: usize = 1 + 1 + 16 + 2 + 4;

impl HolepunchMessage {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, error) = match self.kind {
            HolepunchKind::Rendezvous => (0u8, 0u32),
            HolepunchKind::Connect => (1, 0),
            HolepunchKind::Error(e) => (2, e.code()),
        };
        let mut out = Vec::with_capacity(MAX_HOLEPUNCH_LEN);
        out.push(kind);
        match self.addr.ip() {
            IpAddr::V4(ip) => {
                out.push(0);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(1);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&self.addr.port().to_be_bytes());
        out.extend_from_slice(&error.to_be_bytes());
        out
    }

    /// Parses a payload of exactly the length its address type implies. BEP 55 puts a zero error code
    /// at the end of every message; libtorrent 2.0 sends it only in error messages, so a rendezvous or
    /// connect without it is taken too.
    pub fn decode(payload: &[u8]) -> Result<HolepunchMessage, WireError> {
        let bad = |why: &str| WireError::BadExtension(format!("ut_holepunch: {why}"));
        let (&kind, rest) = payload.split_first().ok_or_else(|| bad("empty"))?;
        let (&addr_type, rest) = rest.split_first().ok_or_else(|| bad("no address type"))?;
        let ip_len = match addr_type {
            0 => 4,
            1 => 16,
            other => return Err(bad(&format!("address type {other}"))),
        };
        let error_code = rest.len() == ip_len + 2 + 4;
        if rest.len() != ip_len + 2 && !error_code {
            return Err(bad(&format!("{} bytes", payload.len())));
        }
        let (ip, rest) = rest.split_at(ip_len);
        let ip: IpAddr = match <[u8; 4]>::try_from(ip) {
            Ok(v4) => Ipv4Addr::from(v4).into(),
            Err(_) => {
                let v6 = <[u8; 16]>::try_from(ip).map_err(|_| bad("address"))?;
                Ipv6Addr::from(v6).into()
            }
        };
        let port = u16::from_be_bytes([rest[0], rest[1]]);
        let kind = match kind {
            0 => HolepunchKind::Rendezvous,
            1 => HolepunchKind::Connect,
            2 if error_code => {
                let code = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
                HolepunchKind::Error(HolepunchError::from_code(code))
            }
            2 => return Err(bad("error without its code")),
            other => return Err(bad(&format!("message type {other}"))),
        };
        Ok(HolepunchMessage {
            kind,
            addr: SocketAddr::new(ip, port),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_as_bep_55_gives_it() {
        let m = HolepunchMessage {
            kind: HolepunchKind::Connect,
            addr: "10.1.2.3:6881".parse().unwrap(),
        };
        assert_eq!(m.encode(), [1, 0, 10, 1, 2, 3, 0x1a, 0xe1, 0, 0, 0, 0]);
        let e = HolepunchMessage {
            kind: HolepunchKind::Error(HolepunchError::NotConnected),
            addr: "[2001:db8::1]:1".parse().unwrap(),
        };
        let bytes = e.encode();
        assert_eq!(bytes.len(), MAX_HOLEPUNCH_LEN);
        assert_eq!(&bytes[..2], &[2, 1]);
        assert_eq!(&bytes[20..], &[0, 0, 0, 2]);
        for msg in [m, e] {
            assert_eq!(HolepunchMessage::decode(&msg.encode()), Ok(msg));
        }
    }

    /// What libtorrent 2.0.8 sent in the hole punching lab: a rendezvous with no error code.
    #[test]
    fn libtorrents_messages_without_the_error_code_are_taken() {
        let rendezvous = [0, 0, 11, 11, 12, 1, 0x1a, 0xe1];
        assert_eq!(
            HolepunchMessage::decode(&rendezvous),
            Ok(HolepunchMessage {
                kind: HolepunchKind::Rendezvous,
                addr: "11.11.12.1:6881".parse().unwrap(),
            })
        );
        let mut connect_v6 = vec![1, 1];
        connect_v6.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        connect_v6.extend_from_slice(&[0, 80]);
        assert_eq!(
            HolepunchMessage::decode(&connect_v6).map(|m| m.kind),
            Ok(HolepunchKind::Connect)
        );
    }

    #[test]
    fn wrong_lengths_and_types_are_refused() {
        let good = HolepunchMessage {
            kind: HolepunchKind::Rendezvous,
            addr: "192.0.2.1:80".parse().unwrap(),
        }
        .encode();
        for cut in (0..good.len()).filter(|&cut| cut != 8) {
            assert!(HolepunchMessage::decode(&good[..cut]).is_err(), "{cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(HolepunchMessage::decode(&long).is_err());
        let mut kind = good.clone();
        kind[0] = 3;
        assert!(HolepunchMessage::decode(&kind).is_err());
        let mut family = good;
        family[1] = 2;
        assert!(HolepunchMessage::decode(&family).is_err());
        let no_code = [2, 0, 1, 2, 3, 4, 0, 5];
        assert!(
            HolepunchMessage::decode(&no_code).is_err(),
            "an error needs its code"
        );
        let unknown = [2, 0, 1, 2, 3, 4, 0, 5, 0, 0, 0, 9];
        assert_eq!(
            HolepunchMessage::decode(&unknown).map(|m| m.kind),
            Ok(HolepunchKind::Error(HolepunchError::Other(9)))
        );
    }
}
