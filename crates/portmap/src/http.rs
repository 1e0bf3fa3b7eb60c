//! The little HTTP a UPnP control point needs, on the `http-client` crate: http:// URLs with an IP
//! literal host, one request per connection, replies bounded by [`LIMITS`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_client::{Limits, Request, Response, Version};

use crate::ParseError;

/// Status line and headers of a reply.
pub const MAX_HEAD: usize = 8 * 1024;
/// A device description or a SOAP reply; real ones are a few KiB.
pub const MAX_BODY: usize = 64 * 1024;
/// What one reply from the router may cost.
pub const LIMITS: Limits = Limits::new(MAX_HEAD, MAX_BODY);

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
        Url::parse_any_length(text)
    }

    fn parse_any_length(text: &str) -> Result<Url, ParseError> {
        let text = http_client::normalise_scheme(text);
        let u = http_client::parse_url(&text, "http", 80)?;
        let ip: IpAddr = u
            .host
            .parse()
            .map_err(|_| ParseError::Malformed("host is not an IP address"))?;
        Ok(Url {
            addr: SocketAddr::new(ip, u.port),
            path: u.path.to_string(),
        })
    }

    /// `reference` (absolute, or a path, or relative to this URL's directory) resolved against this URL.
    pub fn join(&self, reference: &str) -> Result<Url, ParseError> {
        if reference.len() > crate::ssdp::MAX_LOCATION {
            return Err(ParseError::Long(reference.len()));
        }
        Url::parse_any_length(&http_client::redirect_target(&self.to_string(), reference)?)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.addr, self.path)
    }
}

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Http(#[from] http_client::Error),
}

/// One exchange with `url`, the whole of it bounded by `timeout`. Returns the local address used too
/// (the address the router sees us at).
pub async fn exchange(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<(Response, SocketAddr), FetchError> {
    let host = url.addr.to_string();
    let request = Request {
        method,
        target: &url.path,
        host: &host,
        version: Version::Http11,
        headers,
        body,
    };
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(url.addr).await?;
        let local = stream.local_addr()?;
        let reply = http_client::exchange(&mut stream, &request, LIMITS, |_| true).await?;
        Ok((reply, local))
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
        assert_eq!(Url::parse("HTTP://10.0.0.1/d").unwrap().path, "/d");
        assert_eq!(deep.join("//10.0.0.3/y").unwrap().addr.port(), 80);
        assert!(deep.join("https://10.0.0.2/x").is_err());
        // Each part within the SSDP bound; joined, they may be longer.
        let long = format!("http://10.0.0.1/{}", "a".repeat(400));
        let joined = Url::parse(&long).unwrap().join(&"b".repeat(500)).unwrap();
        assert_eq!(joined.path.len(), 501);
        assert_eq!(
            joined.to_string(),
            format!("http://10.0.0.1:80/{}", "b".repeat(500))
        );
    }

    #[tokio::test]
    async fn an_exchange_returns_any_status_and_the_address_the_router_saw() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/ctl", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, peer) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n<x/>") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "request cut short: {request:?}");
                request.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfau\n\r\n2\r\nlt\r\n0\r\n\r\n")
                .await
                .unwrap();
            (String::from_utf8(request).unwrap(), peer)
        });
        let (reply, local) = exchange(
            "POST",
            &url,
            &[("SOAPAction", "\"a#b\"")],
            b"<x/>",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(
            (reply.status(), reply.body.as_slice()),
            (500, &b"fau\nlt"[..])
        );
        let (request, peer) = server.await.unwrap();
        assert_eq!(local, peer);
        assert!(request.starts_with("POST /ctl HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nSOAPAction: \"a#b\"\r\n"), "{request}");
        assert!(request.contains("\r\nContent-Length: 4\r\n"), "{request}");
    }
}
