//! BEP 14 Local Service Discovery announces: `BT-SEARCH * HTTP/1.1` datagrams sent to a multicast group,
//! naming the sender's peer port and the info-hashes it is in. Built and parsed here without sockets.
//!
//! Parsing is strict about what we rely on (the request line, one decimal port, 40-hex-digit info-hashes,
//! bounded sizes and counts) and lenient about the rest (header case, unknown headers, a missing final
//! blank line), because any host on the LAN can send us one.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ids::InfoHash;

/// The IPv4 group and port of BEP 14.
pub const LSD_GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
/// The IPv6 group of BEP 14 (site-local scope).
pub const LSD_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f);
pub const LSD_PORT: u16 = 6771;
/// BEP 14 asks senders to stay under this many bytes, so an announce is never fragmented.
pub const MAX_LSD_PACKET: usize = 1400;
/// The largest datagram we parse: a full Ethernet payload, a little more than senders should use.
pub const MAX_LSD_DATAGRAM: usize = 1500;
/// Info-hashes in one announce: 24 lines of 52 bytes fit a 1400-byte packet beside the other headers.
pub const MAX_LSD_INFOHASHES: usize = 24;
/// Cookies are ours to echo back to ourselves; anything longer than this is not one of ours.
pub const MAX_LSD_COOKIE: usize = 64;
const MAX_HOST: usize = 64;
const MAX_HEADERS: usize = 64;
const REQUEST_LINE: &str = "BT-SEARCH * HTTP/1.1";

/// One announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsdAnnounce {
    /// The group the announce was sent to, as `ip:port` (`[ip]:port` for IPv6); informational.
    pub host: String,
    /// Where the sender accepts peer connections (its address is the datagram's source).
    pub port: u16,
    pub info_hashes: Vec<InfoHash>,
    /// An opaque tag that lets a sender recognise its own announces coming back to it.
    pub cookie: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LsdError {
    #[error("datagram of {0} bytes is too long for an LSD announce")]
    TooLong(usize),
    #[error("not a BT-SEARCH request")]
    NotBtSearch,
    #[error("not UTF-8 text")]
    NotText,
    #[error("malformed header line")]
    BadHeader,
    #[error("too many header lines")]
    TooManyHeaders,
    #[error("missing or duplicate Port header")]
    Port,
    #[error("bad port {0:?}")]
    BadPort(String),
    #[error("bad info-hash {0:?}")]
    BadInfoHash(String),
    #[error("no info-hash")]
    NoInfoHash,
    #[error("more than {MAX_LSD_INFOHASHES} info-hashes")]
    TooManyInfoHashes,
    #[error("bad Host header")]
    BadHost,
    #[error("bad or duplicate cookie")]
    BadCookie,
}

/// Header values go on one line of an HTTP-like message: no control characters, nothing but ASCII.
fn printable(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl LsdAnnounce {
    /// The announce as bytes. Callers keep `info_hashes` within what fits one packet; `encode_all` splits
    /// longer lists.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::with_capacity(128 + 52 * self.info_hashes.len());
        s.push_str(REQUEST_LINE);
        s.push_str("\r\n");
        let _ = write!(s, "Host: {}\r\nPort: {}\r\n", self.host, self.port);
        for h in &self.info_hashes {
            let _ = write!(s, "Infohash: {}\r\n", h.to_hex());
        }
        if let Some(c) = &self.cookie {
            let _ = write!(s, "cookie: {c}\r\n");
        }
        // BEP 14 ends an announce with two empty lines.
        s.push_str("\r\n\r\n");
        s.into_bytes()
    }

    /// As many packets as it takes to announce every hash, each at most `MAX_LSD_PACKET` bytes.
    pub fn encode_all(
        host: &str,
        port: u16,
        info_hashes: &[InfoHash],
        cookie: Option<&str>,
    ) -> Vec<Vec<u8>> {
        let mut packets = Vec::new();
        let mut rest = info_hashes;
        while !rest.is_empty() {
            let mut take = rest.len().min(MAX_LSD_INFOHASHES);
            loop {
                let packet = LsdAnnounce {
                    host: host.to_string(),
                    port,
                    info_hashes: rest[..take].to_vec(),
                    cookie: cookie.map(str::to_string),
                }
                .encode();
                if packet.len() <= MAX_LSD_PACKET || take == 1 {
                    packets.push(packet);
                    break;
                }
                take -= 1;
            }
            rest = &rest[take..];
        }
        packets
    }

    pub fn decode(datagram: &[u8]) -> Result<LsdAnnounce, LsdError> {
        if datagram.len() > MAX_LSD_DATAGRAM {
            return Err(LsdError::TooLong(datagram.len()));
        }
        let text = std::str::from_utf8(datagram).map_err(|_| LsdError::NotText)?;
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        if lines.next() != Some(REQUEST_LINE) {
            return Err(LsdError::NotBtSearch);
        }
        let mut host = None;
        let mut port = None;
        let mut info_hashes = Vec::new();
        let mut cookie = None;
        for (count, line) in lines.enumerate() {
            if line.is_empty() {
                break;
            }
            if count >= MAX_HEADERS {
                return Err(LsdError::TooManyHeaders);
            }
            let (name, value) = line.split_once(':').ok_or(LsdError::BadHeader)?;
            let value = value.trim_matches([' ', '\t']);
            if name.eq_ignore_ascii_case("port") {
                if port.is_some() {
                    return Err(LsdError::Port);
                }
                // Digits only: `u16::from_str` would also take a leading '+'.
                let ok = !value.is_empty()
                    && value.len() <= 5
                    && value.bytes().all(|b| b.is_ascii_digit());
                let p: u16 = value
                    .parse()
                    .ok()
                    .filter(|&p| ok && p != 0)
                    .ok_or_else(|| LsdError::BadPort(value.chars().take(16).collect()))?;
                port = Some(p);
            } else if name.eq_ignore_ascii_case("infohash") {
                if info_hashes.len() >= MAX_LSD_INFOHASHES {
                    return Err(LsdError::TooManyInfoHashes);
                }
                let h = InfoHash::from_hex(value)
                    .ok_or_else(|| LsdError::BadInfoHash(value.chars().take(48).collect()))?;
                if !info_hashes.contains(&h) {
                    info_hashes.push(h);
                }
            } else if name.eq_ignore_ascii_case("host") {
                if host.is_some() || value.len() > MAX_HOST || !printable(value) {
                    return Err(LsdError::BadHost);
                }
                host = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("cookie") {
                if cookie.is_some() || value.len() > MAX_LSD_COOKIE || !printable(value) {
                    return Err(LsdError::BadCookie);
                }
                cookie = Some(value.to_string());
            }
            // Other headers are allowed by the HTTP-like format and carry nothing for us.
        }
        let port = port.ok_or(LsdError::Port)?;
        if info_hashes.is_empty() {
            return Err(LsdError::NoInfoHash);
        }
        Ok(LsdAnnounce {
            host: host.unwrap_or_default(),
            port,
            info_hashes,
            cookie,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> LsdAnnounce {
        LsdAnnounce {
            host: "239.192.152.143:6771".into(),
            port: 6881,
            info_hashes: vec![InfoHash::new([0xab; 20]), InfoHash::new([0x01; 20])],
            cookie: Some("spore-1a2b3c".into()),
        }
    }

    #[test]
    fn encodes_the_bep_14_layout() {
        let text = String::from_utf8(sample().encode()).unwrap();
        assert_eq!(
            text,
            "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n\
             Infohash: abababababababababababababababababababab\r\n\
             Infohash: 0101010101010101010101010101010101010101\r\n\
             cookie: spore-1a2b3c\r\n\r\n\r\n"
        );
        assert_eq!(LsdAnnounce::decode(text.as_bytes()).unwrap(), sample());
    }

    #[test]
    fn reads_what_other_clients_send() {
        // Upper-case hex, other header case, extra headers, bare newlines, no cookie, no final blank line.
        let text = "BT-SEARCH * HTTP/1.1\nHOST: 239.192.152.143:6771\nport:51413\nX-Other: 1\n\
                    INFOHASH: ABABABABABABABABABABABABABABABABABABABAB";
        let a = LsdAnnounce::decode(text.as_bytes()).unwrap();
        assert_eq!(a.port, 51413);
        assert_eq!(a.info_hashes, vec![InfoHash::new([0xab; 20])]);
        assert_eq!(a.cookie, None);
    }

    #[test]
    fn refuses_what_is_not_an_announce() {
        let cases: &[(&str, LsdError)] = &[
            ("M-SEARCH * HTTP/1.1\r\n\r\n", LsdError::NotBtSearch),
            ("BT-SEARCH * HTTP/1.1\r\nInfohash: 00\r\n\r\n", LsdError::BadInfoHash("00".into())),
            (
                "BT-SEARCH * HTTP/1.1\r\nInfohash: abababababababababababababababababababab\r\n\r\n",
                LsdError::Port,
            ),
            ("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\n", LsdError::NoInfoHash),
            ("BT-SEARCH * HTTP/1.1\r\nPort: 0\r\n", LsdError::BadPort("0".into())),
            ("BT-SEARCH * HTTP/1.1\r\nPort: +80\r\n", LsdError::BadPort("+80".into())),
            ("BT-SEARCH * HTTP/1.1\r\nPort: 65536\r\n", LsdError::BadPort("65536".into())),
            ("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nPort: 2\r\n", LsdError::Port),
            ("BT-SEARCH * HTTP/1.1\r\nno colon\r\n", LsdError::BadHeader),
        ];
        for (text, err) in cases {
            assert_eq!(
                LsdAnnounce::decode(text.as_bytes()),
                Err(err.clone()),
                "{text:?}"
            );
        }
        let long = vec![b'x'; MAX_LSD_DATAGRAM + 1];
        assert_eq!(
            LsdAnnounce::decode(&long),
            Err(LsdError::TooLong(long.len()))
        );
        let mut many = String::from("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n");
        for i in 0..=MAX_LSD_INFOHASHES {
            many.push_str(&format!("infohash:{i:040x}\n"));
        }
        assert_eq!(
            LsdAnnounce::decode(many.as_bytes()),
            Err(LsdError::TooManyInfoHashes)
        );
    }

    #[test]
    fn many_hashes_split_into_packets_that_fit() {
        let hashes: Vec<InfoHash> = (0..100u8).map(|i| InfoHash::new([i; 20])).collect();
        let packets = LsdAnnounce::encode_all("239.192.152.143:6771", 1, &hashes, Some("c"));
        let mut seen = Vec::new();
        for p in &packets {
            assert!(p.len() <= MAX_LSD_PACKET);
            seen.extend(LsdAnnounce::decode(p).unwrap().info_hashes);
        }
        assert_eq!(seen, hashes);
    }

    proptest! {
        #[test]
        fn never_panics_on_noise(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = LsdAnnounce::decode(&data);
        }

        #[test]
        fn never_panics_on_mutated_announces(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut data = sample().encode();
            for (at, b) in edits {
                let i = at % data.len();
                data[i] = b;
            }
            data.truncate(cut % (data.len() + 1));
            if let Ok(a) = LsdAnnounce::decode(&data) {
                prop_assert!(a.port != 0 && !a.info_hashes.is_empty());
                prop_assert!(a.info_hashes.len() <= MAX_LSD_INFOHASHES);
            }
        }

        #[test]
        fn round_trips(
            port in 1u16..,
            hashes in proptest::collection::vec(any::<[u8; 20]>().prop_map(InfoHash::new), 1..=20),
            cookie in proptest::option::of("[!-~]{0,64}"),
        ) {
            let mut unique = Vec::new();
            for h in hashes {
                if !unique.contains(&h) {
                    unique.push(h);
                }
            }
            let a = LsdAnnounce {
                host: "[ff15::efc0:988f]:6771".into(),
                port,
                info_hashes: unique,
                cookie: cookie.map(|c| c.trim_matches([' ', '\t']).to_string()),
            };
            prop_assert_eq!(LsdAnnounce::decode(&a.encode()), Ok(a));
        }
    }
}
