//! SSDP discovery (UPnP Device Architecture 1.1 §1.3): an M-SEARCH multicast to 239.255.255.250:1900,
//! and the unicast HTTP-over-UDP replies that name the device description's `LOCATION`.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::ParseError;

pub const MULTICAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
/// Read at most this much of one reply datagram; real replies are a few hundred bytes.
pub const MAX_REPLY: usize = 2048;
/// A `LOCATION` longer than this is not a router's URL.
pub const MAX_LOCATION: usize = 512;

/// The search targets: the IGD device (v1, then v2) finds the most routers; some answer only to the
/// WAN connection services.
pub const TARGETS: [&str; 4] = [
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// An M-SEARCH for `target`, asking devices to answer within `mx` seconds.
pub fn search_request(target: &str, mx: u8) -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: {mx}\r\nST: {target}\r\n\r\n"
    )
    .into_bytes()
}

/// The `LOCATION` of a search reply (`HTTP/1.1 200 OK` with an http:// URL), or why not.
pub fn parse_reply(datagram: &[u8]) -> Result<String, ParseError> {
    if datagram.len() > MAX_REPLY {
        return Err(ParseError::Long(datagram.len()));
    }
    let text = std::str::from_utf8(datagram).map_err(|_| ParseError::Malformed("not UTF-8"))?;
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let status = lines.next().unwrap_or_default();
    let mut words = status.split_whitespace();
    if !words.next().is_some_and(|v| v.starts_with("HTTP/1.")) || words.next() != Some("200") {
        return Err(ParseError::Malformed("not an HTTP 200 reply"));
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("location") {
            let value = value.trim();
            if value.len() > MAX_LOCATION {
                return Err(ParseError::Malformed("LOCATION too long"));
            }
            if !value.to_ascii_lowercase().starts_with("http://") {
                return Err(ParseError::Malformed("LOCATION is not an http:// URL"));
            }
            return Ok(value.to_string());
        }
    }
    Err(ParseError::Malformed("no LOCATION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_request_is_the_uda_form() {
        let r = String::from_utf8(search_request(TARGETS[0], 2)).unwrap();
        assert!(r.starts_with("M-SEARCH * HTTP/1.1\r\n"));
        assert!(r.contains("\r\nMAN: \"ssdp:discover\"\r\n"));
        assert!(r.contains("\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn location_of_a_reply() {
        let reply = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nUSN: uuid:x::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\nlocation: http://192.168.77.1:41057/rootDesc.xml\r\n\r\n";
        assert_eq!(
            parse_reply(reply).as_deref(),
            Ok("http://192.168.77.1:41057/rootDesc.xml")
        );
    }

    #[test]
    fn bad_replies() {
        assert!(parse_reply(b"NOTIFY * HTTP/1.1\r\nLOCATION: http://a/\r\n\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 404 Not Found\r\nLOCATION: http://a/\r\n\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_reply(&[0xff; 10]).is_err());
        assert_eq!(
            parse_reply(&[b'a'; MAX_REPLY + 1]),
            Err(ParseError::Long(MAX_REPLY + 1))
        );
    }
}
