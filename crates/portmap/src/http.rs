//! The little HTTP/1.1 a UPnP control point needs: http:// URLs with an IP literal host, one request
//! per connection, and replies read into a bounded buffer (Content-Length, chunked, or to EOF).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ParseError;

/// Status line and headers of a reply.
pub const MAX_HEAD: usize = 8 * 1024;
/// A device description or a SOAP reply; real ones are a few KiB.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub addr: SocketAddr,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl Url {
    /// Parses `http://IP[:PORT][/PATH]`. Routers name themselves by address; a host name would need a
    /// resolver and is refused.
    pub fn parse(text: &str) -> Result<Url, ParseError> {
        if text.len() > crate::ssdp::MAX_LOCATION {
            return Err(ParseError::Long(text.len()));
        }
        let rest = text
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &text[7..])
            .ok_or(ParseError::Malformed("not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .ok_or(ParseError::Malformed("bad IPv6 host"))?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let ip: IpAddr = host
            .parse()
            .map_err(|_| ParseError::Malformed("host is not an IP address"))?;
        let port = match port {
            Some(p) => p.parse().map_err(|_| ParseError::Malformed("bad port"))?,
            None => 80,
        };
        Ok(Url {
            addr: SocketAddr::new(ip, port),
            path: path.to_string(),
        })
    }

    /// `reference` (absolute, or a path, or relative to this URL's directory) resolved against this URL.
    pub fn join(&self, reference: &str) -> Result<Url, ParseError> {
        let reference = reference.trim();
        if reference.len() > crate::ssdp::MAX_LOCATION {
            return Err(ParseError::Long(reference.len()));
        }
        if reference
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        {
            return Url::parse(reference);
        }
        let path = if reference.starts_with('/') {
            reference.to_string()
        } else {
            let dir = self.path.rfind('/').map_or("/", |i| &self.path[..=i]);
            format!("{dir}{reference}")
        };
        Ok(Url {
            addr: self.addr,
            path,
        })
    }

    fn host_header(&self) -> String {
        self.addr.to_string()
    }
}

/// A request with `Connection: close`.
pub fn request(method: &str, url: &Url, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        url.path,
        url.host_header(),
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A whole reply: status and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Reads a reply from `buf`. `Ok(None)` means more bytes are needed; `eof` says no more will come
/// (a reply without a length then ends where the bytes do).
pub fn parse_reply(buf: &[u8], eof: bool) -> Result<Option<Reply>, ParseError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(ParseError::Long(buf.len()));
        }
        return if eof {
            Err(ParseError::Short(buf.len()))
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(ParseError::Long(end));
    }
    let head =
        std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::Malformed("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    if !words.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(ParseError::Malformed("not an HTTP reply"));
    }
    let status: u16 = words
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::Malformed("bad status"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| ParseError::Malformed("bad Content-Length"))?;
            if n > MAX_BODY {
                return Err(ParseError::Long(n));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    let body = &buf[end + 4..];
    if chunked {
        return dechunk(body, eof).map(|b| b.map(|body| Reply { status, body }));
    }
    match length {
        Some(n) if body.len() >= n => Ok(Some(Reply {
            status,
            body: body[..n].to_vec(),
        })),
        Some(_) if eof => Err(ParseError::Short(body.len())),
        Some(_) => Ok(None),
        None if body.len() > MAX_BODY => Err(ParseError::Long(body.len())),
        None if eof => Ok(Some(Reply {
            status,
            body: body.to_vec(),
        })),
        None => Ok(None),
    }
}

fn dechunk(mut rest: &[u8], eof: bool) -> Result<Option<Vec<u8>>, ParseError> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return if eof || rest.len() > 32 {
                Err(ParseError::Malformed("bad chunk"))
            } else {
                Ok(None)
            };
        };
        let size_text = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| ParseError::Malformed("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ParseError::Malformed("bad chunk size"))?;
        if size > MAX_BODY || out.len() + size > MAX_BODY {
            return Err(ParseError::Long(out.len().saturating_add(size)));
        }
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if rest.len() < size + 2 {
            return if eof {
                Err(ParseError::Short(rest.len()))
            } else {
                Ok(None)
            };
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Parse(#[from] ParseError),
}

/// One exchange with `url`, the whole of it bounded by `timeout`. Returns the local address used too
/// (the address the router sees us at).
pub async fn exchange(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<(Reply, SocketAddr), FetchError> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(url.addr).await?;
        let local = stream.local_addr()?;
        stream
            .write_all(&request(method, url, headers, body))
            .await?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if buf.len() + n > MAX_HEAD + MAX_BODY {
                return Err(ParseError::Long(buf.len() + n).into());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(reply) = parse_reply(&buf, n == 0)? {
                return Ok((reply, local));
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| FetchError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_joins() {
        let base = Url::parse("http://192.168.77.1:41057/rootDesc.xml").unwrap();
        assert_eq!(base.addr, "192.168.77.1:41057".parse().unwrap());
        assert_eq!(base.path, "/rootDesc.xml");
        assert_eq!(base.join("/ctl/IPConn").unwrap().path, "/ctl/IPConn");
        assert_eq!(base.join("ctl/IPConn").unwrap().path, "/ctl/IPConn");
        let deep = Url::parse("http://10.0.0.1/a/b/desc.xml").unwrap();
        assert_eq!(deep.addr.port(), 80);
        assert_eq!(deep.join("ctl").unwrap().path, "/a/b/ctl");
        assert_eq!(
            deep.join("http://10.0.0.2:5000/x").unwrap().addr,
            "10.0.0.2:5000".parse().unwrap()
        );
        assert!(Url::parse("http://router.lan/desc.xml").is_err());
        assert!(Url::parse("https://10.0.0.1/").is_err());
        assert!(Url::parse("http://10.0.0.1:99999/").is_err());
        assert_eq!(Url::parse("http://[fe80::1]:80/d").unwrap().addr.port(), 80);
    }

    #[test]
    fn replies_with_length_chunks_or_eof() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_reply(&full[..20], false), Ok(None));
        assert_eq!(parse_reply(&full[..full.len() - 1], false), Ok(None));
        assert_eq!(
            parse_reply(full, false),
            Ok(Some(Reply {
                status: 200,
                body: b"hello".to_vec()
            }))
        );
        let chunked = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_reply(chunked, false),
            Ok(Some(Reply {
                status: 500,
                body: b"abcde".to_vec()
            }))
        );
        let eof = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(parse_reply(eof, false), Ok(None));
        assert_eq!(parse_reply(eof, true).unwrap().unwrap().body, b"body");
    }

    #[test]
    fn oversized_or_broken_replies() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(parse_reply(big.as_bytes(), false).is_err());
        assert!(parse_reply(&vec![b'a'; MAX_HEAD + 1], false).is_err());
        assert!(parse_reply(b"SSH-2.0\r\n\r\n", false).is_err());
        assert!(parse_reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n",
            false
        )
        .is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", true).is_err());
    }

    #[test]
    fn request_has_host_length_and_close() {
        let url = Url::parse("http://10.0.0.1:5000/ctl").unwrap();
        let r =
            String::from_utf8(request("POST", &url, &[("SOAPAction", "\"a#b\"")], b"xy")).unwrap();
        assert_eq!(
            r,
            "POST /ctl HTTP/1.1\r\nHost: 10.0.0.1:5000\r\nConnection: close\r\nContent-Length: 2\r\nSOAPAction: \"a#b\"\r\n\r\nxy"
        );
    }
}
