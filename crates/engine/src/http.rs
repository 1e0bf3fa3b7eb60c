//! HTTP(S) GET for tracker announces and scrapes and for `.torrent` URLs.
//!
//! Hand-written HTTP/1.0 rather than a client library: the announce query carries raw `info_hash` and
//! `peer_id` bytes that tracker-proto percent-encodes, and the request must carry exactly those bytes
//! (a library's query builder would re-encode them). `https://` URLs go through rustls on the ring
//! provider, trusting the roots `rustls-native-certs` finds (the system store, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` when set, as with OpenSSL and curl). Redirects are followed, never from https to http.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use crate::error::HttpError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};

/// One request, from DNS to the last byte (TLS handshake included).
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Redirect hops followed before giving up (a `.torrent` behind a CDN or a forge takes one or two).
pub const MAX_REDIRECTS: usize = 5;
/// Room for the status line and headers on top of a body of `max_len`.
const HEADER_ROOM: usize = 64 * 1024;

/// The parts of a URL a request needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Url<'a> {
    pub host: &'a str,
    pub port: u16,
    /// Path and query, starting with `/`; never the fragment.
    pub path: &'a str,
}

/// Splits `scheme://host[:port][/path]`; IPv6 hosts in brackets, returned without them.
pub(crate) fn parse_url<'a>(
    url: &'a str,
    scheme: &str,
    default_port: u16,
) -> Result<Url<'a>, HttpError> {
    let bad = |what: &str| HttpError::Url(format!("{what} {url}"));
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| bad(&format!("not a {scheme} URL:")))?;
    // A fragment names a place in the document; it is never sent.
    let rest = rest.split('#').next().unwrap_or(rest);
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
        // "http://host?x" has an empty path; the request still needs a "/" before the query, which a
        // borrowed slice cannot add, so such a URL is refused rather than sent wrong.
        Some(_) => return Err(HttpError::Url(format!("{url} has a query but no path"))),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(bad("user names in URLs are not supported:"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or_else(|| bad("bad IPv6 host in"))?;
        let port = match &v6[end + 1..] {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| bad("bad port in"))?,
            ),
        };
        (&v6[..end], port.unwrap_or(default_port))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port in"))?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("no host in"));
    }
    Ok(Url { host, port, path })
}

/// Whether `url` is `https://` (true) or `http://` (false); schemes are case-insensitive.
fn is_tls(url: &str) -> Option<bool> {
    let scheme = url.split_once("://")?.0.to_ascii_lowercase();
    match scheme.as_str() {
        "http" => Some(false),
        "https" => Some(true),
        _ => None,
    }
}

/// The URL with its scheme in lower case, so the rest of the code compares one spelling.
fn normalise_scheme(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
        None => url.to_string(),
    }
}

/// The URL without its query, for messages: an announce query is a few hundred bytes of
/// percent-encoded hashes that say nothing to a person.
pub(crate) fn shown(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// Where a redirect's `Location` points, seen from `from` (an http or https URL): absolute, scheme
/// relative (`//host/x`), absolute path (`/x`) or relative to `from`'s directory (`x`). A redirect
/// from https to http is refused: it would hand an authenticated request to anyone on the path.
pub(crate) fn redirect_target(from: &str, location: &str) -> Result<String, HttpError> {
    let location = location.trim();
    let from_tls =
        is_tls(from).ok_or_else(|| HttpError::Url(format!("not an http(s) URL: {from}")))?;
    let scheme = if from_tls { "https" } else { "http" };
    let after_scheme = &from[scheme.len() + 3..];
    let authority_end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let origin = &from[..scheme.len() + 3 + authority_end];
    let target = if location.is_empty() {
        return Err(HttpError::Url("redirected with an empty Location".into()));
    } else if location.contains("://") {
        let target = normalise_scheme(location);
        if is_tls(&target).is_none() {
            return Err(HttpError::Url(format!(
                "redirected to an unsupported URL {}",
                shown(location)
            )));
        }
        target
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let path = shown(&from[origin.len()..]);
        let dir = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "/",
        };
        format!("{origin}{dir}{location}")
    };
    if from_tls && is_tls(&target) == Some(false) {
        return Err(HttpError::Url(format!(
            "redirected from https to http ({}); refused",
            shown(&target)
        )));
    }
    Ok(target)
}

/// The client TLS settings, built once: loading the system's roots reads a few hundred files.
fn client_config() -> Result<Arc<ClientConfig>, HttpError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(build_client_config)
        .clone()
        .map_err(HttpError::Tls)
}

fn build_client_config() -> Result<Arc<ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "no trusted root certificates for https{why}; set SSL_CERT_FILE or SSL_CERT_DIR to PEM CA certificates"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A GET of at most `max_len` body bytes over HTTP or HTTPS, sent from `bind` if given, following up
/// to [`MAX_REDIRECTS`] redirects. The URL's query is sent exactly as written.
///
/// Errors do not repeat `url`: every caller already puts it (or the tracker's name) in front. A
/// failure after a redirect names the URL that failed.
pub async fn http_get(
    url: &str,
    bind: Option<IpAddr>,
    max_len: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut current = normalise_scheme(url);
    let mut visited: Vec<String> = Vec::new();
    loop {
        let reply = get_once(&current, bind, max_len).await.map_err(|e| {
            if visited.is_empty() {
                e
            } else {
                HttpError::Redirected {
                    url: shown(&current).to_string(),
                    source: Box::new(e),
                }
            }
        })?;
        match reply {
            Reply::Body(body) => return Ok(body),
            Reply::Redirect(location) => {
                let next = redirect_target(&current, &location)?;
                visited.push(std::mem::replace(&mut current, next));
                if visited.contains(&current) {
                    return Err(HttpError::Redirects(format!(
                        "redirects in a loop (back to {})",
                        shown(&current)
                    )));
                }
                if visited.len() > MAX_REDIRECTS {
                    return Err(HttpError::Redirects(format!(
                        "redirected more than {MAX_REDIRECTS} times"
                    )));
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Body(Vec<u8>),
    /// The `Location` of a 301, 302, 303, 307 or 308.
    Redirect(String),
}

/// What came back on one connection.
struct Raw {
    bytes: Vec<u8>,
    /// More than the cap arrived; the rest was not read.
    overflow: bool,
    /// The stream ended properly (for TLS: with close_notify, so an attacker cannot cut it short).
    clean_end: bool,
}

async fn get_once(url: &str, bind: Option<IpAddr>, max_len: usize) -> Result<Reply, HttpError> {
    let tls =
        is_tls(url).ok_or_else(|| HttpError::Url(format!("not an http(s) URL: {}", shown(url))))?;
    let u = if tls {
        parse_url(url, "https", 443)?
    } else {
        parse_url(url, "http", 80)?
    };
    // Missing roots are the same error for every https URL: say so before touching the network.
    let tls_config = if tls { Some(client_config()?) } else { None };
    let host_header = if u.host.contains(':') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: Spore/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        u.path,
        env!("CARGO_PKG_VERSION")
    );
    let cap = max_len.saturating_add(HEADER_ROOM);
    let fetch = async {
        let addr = resolve(u.host, u.port, bind).await?;
        let stream = connect(addr, bind).await?;
        match tls_config {
            None => Ok::<_, HttpError>(exchange(stream, request.as_bytes(), cap).await?),
            Some(config) => {
                let name = ServerName::try_from(u.host.to_string()).map_err(|_| {
                    HttpError::Tls(format!("{} is not a valid TLS server name", u.host))
                })?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .map_err(|e| {
                        HttpError::Tls(format!("TLS handshake with {host_header} failed: {e}"))
                    })?;
                Ok(exchange(stream, request.as_bytes(), cap).await?)
            }
        }
    };
    let raw: Raw = tokio::time::timeout(HTTP_TIMEOUT, fetch)
        .await
        .map_err(|_| HttpError::Timeout(HTTP_TIMEOUT.as_secs()))??;
    parse_response(&raw, max_len)
}

pub(crate) async fn resolve(
    host: &str,
    port: u16,
    family_of: Option<IpAddr>,
) -> Result<SocketAddr, HttpError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| HttpError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    // An unspecified source address still names its family (one of a dual-stack client's announces).
    addrs
        .iter()
        .find(|a| family_of.is_none_or(|ip| ip.is_ipv4() == a.is_ipv4()))
        .or(addrs.first())
        .copied()
        .ok_or_else(|| HttpError::NoAddress(host.to_string()))
}

/// Connects from `bind` when it is of the target's family and not the unspecified address, so a
/// tracker sees the address we listen on.
async fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> Result<TcpStream, HttpError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4() && !ip.is_unspecified()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket
        .connect(addr)
        .await
        .map_err(|source| HttpError::Connect { addr, source })
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    cap: usize,
) -> io::Result<Raw> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => {
                return Ok(Raw {
                    bytes,
                    overflow: false,
                    clean_end: true,
                })
            }
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                if bytes.len() > cap {
                    return Ok(Raw {
                        bytes,
                        overflow: true,
                        clean_end: false,
                    });
                }
            }
            // rustls reports a TCP close without close_notify this way. Many servers end HTTP/1.0
            // responses like that, so it is accepted when the headers say how long the body is.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Raw {
                    bytes,
                    overflow: false,
                    clean_end: false,
                })
            }
            Err(e) => return Err(e),
        }
    }
}

/// The value of header `name` (case-insensitive) in `head`, the lines after the status line.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A reply's status and its headers (the lines after the status line), and where its body starts.
fn split_reply(raw: &Raw, max_len: usize) -> Result<(String, String, usize), HttpError> {
    if raw.overflow {
        return Err(HttpError::Reply(format!("sent more than {max_len} bytes")));
    }
    let split = raw
        .bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| HttpError::Reply("sent no HTTP headers".into()))?;
    let head = String::from_utf8_lossy(&raw.bytes[..split]).into_owned();
    let mut status_line = head.split("\r\n").next().unwrap_or("").split_whitespace();
    if !status_line.next().is_some_and(|v| v.starts_with("HTTP/")) {
        return Err(HttpError::Reply("did not answer in HTTP".into()));
    }
    let status = status_line.next().unwrap_or("").to_string();
    Ok((status, head, split + 4))
}

/// The body after `head`: de-chunked, or cut to its Content-Length, at most `max_len` bytes.
fn read_body(raw: &Raw, head: &str, start: usize, max_len: usize) -> Result<Vec<u8>, HttpError> {
    let body = &raw.bytes[start..];
    let chunked = header(head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let payload = if chunked {
        // The terminating zero-size chunk shows the body is whole, even without close_notify.
        dechunk(body)
            .ok_or_else(|| HttpError::Reply("sent bad or truncated chunked data".into()))?
    } else if let Some(length) = header(head, "content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| HttpError::Reply(format!("sent a bad Content-Length {length:?}")))?;
        if length > max_len {
            return Err(HttpError::Reply(format!("sent more than {max_len} bytes")));
        }
        body.get(..length)
            .ok_or_else(|| {
                HttpError::Reply("closed the connection before the end of the body".into())
            })?
            .to_vec()
    } else if raw.clean_end {
        body.to_vec()
    } else {
        return Err(HttpError::Reply("closed the TLS connection without close_notify and without a length: the body may be cut short".into()));
    };
    if payload.len() > max_len {
        return Err(HttpError::Reply(format!("sent more than {max_len} bytes")));
    }
    Ok(payload)
}

/// Errors say what the server did ("answered HTTP 404"); the caller puts the URL in front.
fn parse_response(raw: &Raw, max_len: usize) -> Result<Reply, HttpError> {
    let (status, head, start) = split_reply(raw, max_len)?;
    match status.as_str() {
        "200" => Ok(Reply::Body(read_body(raw, &head, start, max_len)?)),
        "301" | "302" | "303" | "307" | "308" => {
            let location = header(&head, "location").ok_or_else(|| {
                HttpError::Reply(format!("answered HTTP {status} without a Location"))
            })?;
            Ok(Reply::Redirect(location.to_string()))
        }
        _ => Err(HttpError::Reply(format!("answered HTTP {status}"))),
    }
}

/// A request to a plain-HTTP API at a known address (the daemon's, from the CLI): unlike
/// [`http_get`], any method, headers and body, and the reply comes back whatever its status.
#[derive(Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    pub addr: SocketAddr,
    pub method: &'a str,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    /// Headers besides Host, Content-Length and Connection.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// The longest body accepted.
    pub max_len: usize,
    /// For the whole exchange, from connecting to the last byte.
    pub timeout: Duration,
}

/// Sends `req` and returns the reply's status and body.
pub async fn api_request(req: &ApiRequest<'_>) -> Result<(u16, Vec<u8>), HttpError> {
    use std::fmt::Write as _;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        req.method,
        req.path,
        req.addr,
        req.body.len()
    );
    for (name, value) in req.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(req.body);
    let cap = req.max_len.saturating_add(HEADER_ROOM);
    let raw = tokio::time::timeout(req.timeout, async {
        let stream = connect(req.addr, None).await?;
        Ok::<_, HttpError>(exchange(stream, &message, cap).await?)
    })
    .await
    .map_err(|_| HttpError::Timeout(req.timeout.as_secs()))??;
    let (status, head, start) = split_reply(&raw, req.max_len)?;
    let code = status
        .parse()
        .map_err(|_| HttpError::Reply(format!("sent a bad status {status:?}")))?;
    Ok((code, read_body(&raw, &head, start, req.max_len)?))
}

/// What `crate::fuzzing::http_response` runs: parsing, then the redirect resolution a `Location` gets.
pub(crate) fn fuzz_response(
    raw: &[u8],
    clean_end: bool,
    max_len: usize,
) -> Option<Result<usize, String>> {
    let raw = Raw {
        bytes: raw.to_vec(),
        overflow: false,
        clean_end,
    };
    match parse_response(&raw, max_len).ok()? {
        Reply::Body(body) => Some(Ok(body.len())),
        Reply::Redirect(location) => redirect_target("https://tracker.example/a/b?c", &location)
            .ok()
            .map(Err),
    }
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size.checked_add(2)?..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:6969/announce/key?x=1", "http", 80).unwrap();
        assert_eq!(
            (u.host, u.port, u.path),
            ("127.0.0.1", 6969, "/announce/key?x=1")
        );
        let u = parse_url("udp://[::1]:7/announce", "udp", 80).unwrap();
        assert_eq!((u.host, u.port, u.path), ("::1", 7, "/announce"));
        let u = parse_url("http://tracker.example", "http", 80).unwrap();
        assert_eq!((u.host, u.port, u.path), ("tracker.example", 80, "/"));
        let u = parse_url("https://tracker.example/a#frag", "https", 443).unwrap();
        assert_eq!((u.host, u.port, u.path), ("tracker.example", 443, "/a"));
        let u = parse_url("https://[2001:db8::1]/announce", "https", 443).unwrap();
        assert_eq!((u.host, u.port), ("2001:db8::1", 443));
        assert!(parse_url("ftp://x", "http", 80).is_err());
        assert!(parse_url("http://:80/x", "http", 80).is_err());
        assert!(parse_url("http://h:port/x", "http", 80).is_err());
        assert!(parse_url("http://[::1]x/", "http", 80).is_err());
        assert!(parse_url("http://user:pw@h/x", "http", 80).is_err());
        assert!(parse_url("http://h?x=1", "http", 80).is_err());
        assert_eq!(is_tls("HTTPS://h/"), Some(true));
        assert_eq!(is_tls("http://h/"), Some(false));
        assert_eq!(is_tls("udp://h/"), None);
        assert_eq!(
            shown("https://h/announce?info_hash=%00"),
            "https://h/announce"
        );
    }

    #[test]
    fn redirects_resolve_against_the_url_that_answered() {
        let from = "http://a.example:8080/dir/x.torrent?k=v";
        let to = |l: &str| redirect_target(from, l).unwrap();
        assert_eq!(
            to("https://b.example/y.torrent"),
            "https://b.example/y.torrent"
        );
        assert_eq!(to("HTTPS://b.example/y"), "https://b.example/y");
        assert_eq!(to("//c.example/z"), "http://c.example/z");
        assert_eq!(to("/top.torrent"), "http://a.example:8080/top.torrent");
        assert_eq!(
            to("other.torrent"),
            "http://a.example:8080/dir/other.torrent"
        );
        assert_eq!(to("  /spaced "), "http://a.example:8080/spaced");
        assert_eq!(redirect_target("https://h", "x").unwrap(), "https://h/x");
        assert_eq!(
            redirect_target("https://h/a/b", "//i/c").unwrap(),
            "https://i/c"
        );
        // Downgrades and other schemes are refused, with a message that says why.
        let e = redirect_target("https://h/a", "http://h/a").unwrap_err();
        assert!(format!("{e}").contains("https to http"), "{e}");
        assert!(redirect_target("https://h/a", "ftp://h/a").is_err());
        assert!(redirect_target("https://h/a", "").is_err());
    }

    fn raw(bytes: &[u8], clean_end: bool) -> Raw {
        Raw {
            bytes: bytes.to_vec(),
            overflow: false,
            clean_end,
        }
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// Whatever a server sends (headers, chunk sizes, lengths, redirects), parsing returns a
        /// result and never more than the cap.
        #[test]
        fn parsing_any_response_never_panics(
            status in proptest::sample::select(vec!["200", "302", "404", "x"]),
            headers in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["Content-Length", "Transfer-Encoding", "Location", "X"]),
                    proptest::prop_oneof![
                        "[ -~]{0,12}",
                        proptest::sample::select(vec!["chunked", "5", "18446744073709551616", "-1", ""])
                            .prop_map(String::from),
                    ],
                ),
                0..4,
            ),
            body in proptest::prop_oneof![
                proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                // Chunk framing with arbitrary sizes, so the chunked path is reached often.
                proptest::collection::vec(("[0-9a-fA-F]{1,17}", "[a-z]{0,40}"), 0..4).prop_map(|chunks| {
                    chunks.iter().flat_map(|(size, data)| format!("{size}\r\n{data}\r\n").into_bytes()).collect()
                }),
            ],
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            clean in proptest::bool::ANY,
        ) {
            let mut bytes = format!("HTTP/1.1 {status} X\r\n").into_bytes();
            for (k, v) in &headers {
                bytes.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&body);
            for input in [&bytes, &noise] {
                if let Ok(Reply::Body(b)) = parse_response(&raw(input, clean), 100) {
                    proptest::prop_assert!(b.len() <= 100);
                }
            }
            let _ = dechunk(&body);
        }
    }

    #[test]
    fn responses() {
        let ok = |b: &[u8], clean| parse_response(&raw(b, clean), 100);
        assert_eq!(
            ok(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", false).unwrap(),
            Reply::Body(b"abc".to_vec())
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\n\r\nabc", true).unwrap(),
            Reply::Body(b"abc".to_vec())
        );
        // A TLS stream cut without close_notify and no length could be a truncation attack.
        assert!(ok(b"HTTP/1.1 200 OK\r\n\r\nabc", false).is_err());
        assert!(ok(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nabc", true).is_err());
        assert!(ok(b"HTTP/1.0 200 OK\r\nContent-Length: 101\r\n\r\n", true).is_err());
        assert!(ok(b"HTTP/1.0 200 OK\r\nContent-Length: x\r\n\r\n", true).is_err());
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                false
            )
            .unwrap(),
            Reply::Body(b"abc".to_vec())
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 302 Found\r\nlocation:  https://h/x \r\n\r\n",
                true
            )
            .unwrap(),
            Reply::Redirect("https://h/x".into())
        );
        for code in ["301", "303", "307", "308"] {
            let r = format!("HTTP/1.1 {code} X\r\nLocation: /y\r\n\r\n");
            assert_eq!(
                ok(r.as_bytes(), true).unwrap(),
                Reply::Redirect("/y".into())
            );
        }
        assert!(ok(b"HTTP/1.1 302 Found\r\n\r\n", true).is_err());
        let e = ok(b"HTTP/1.1 404 Not Found\r\n\r\n", true).unwrap_err();
        assert_eq!(format!("{e}"), "answered HTTP 404");
        assert!(ok(b"SSH-2.0-x\r\n\r\n", true).is_err());
        assert!(ok(b"HTTP/1.1 200 OK\r\n", true).is_err());
        let big = Raw {
            bytes: vec![b'x'; 10],
            overflow: true,
            clean_end: false,
        };
        assert!(parse_response(&big, 100).is_err());
    }

    #[test]
    fn chunked() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_none());
        assert!(dechunk(b"ffffffffffffffff\r\nab").is_none());
    }

    /// A loopback server answering each connection with the next canned response.
    async fn serve(responses: Vec<String>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for r in responses {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(r.replace("{addr}", &addr.to_string()).as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn follows_redirects_and_stops_at_loops_and_limits() {
        let addr = serve(vec![
            "HTTP/1.1 302 Found\r\nLocation: /b\r\n\r\n".into(),
            "HTTP/1.1 301 Moved\r\nLocation: http://{addr}/c/d\r\n\r\n".into(),
            "HTTP/1.1 307 Again\r\nLocation: e\r\n\r\n".into(),
            "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\ndone".into(),
        ])
        .await;
        let body = http_get(&format!("http://{addr}/a"), None, 100)
            .await
            .unwrap();
        assert_eq!(body, b"done");

        let addr = serve(vec![
            "HTTP/1.1 302 Found\r\nLocation: /b\r\n\r\n".into(),
            "HTTP/1.1 302 Found\r\nLocation: /a\r\n\r\n".into(),
        ])
        .await;
        let e = http_get(&format!("http://{addr}/a"), None, 100)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("loop"), "{e:#}");

        let hops = (0..=MAX_REDIRECTS)
            .map(|i| format!("HTTP/1.1 302 Found\r\nLocation: /{}\r\n\r\n", i + 1))
            .collect();
        let addr = serve(hops).await;
        let e = http_get(&format!("http://{addr}/0"), None, 100)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("more than 5"), "{e:#}");
    }

    #[tokio::test]
    async fn an_http_server_on_an_https_url_is_a_tls_error() {
        let addr = serve(vec!["HTTP/1.0 200 OK\r\n\r\nplain".into()]).await;
        let e = http_get(&format!("https://{addr}/x"), None, 100)
            .await
            .unwrap_err();
        let text = format!("{e:#}");
        // Either no roots on this machine or a failed handshake; never a body.
        assert!(text.contains("TLS") || text.contains("root"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[tokio::test]
    async fn an_api_request_sends_its_method_headers_and_body_and_returns_any_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // The whole request: headers, then the 7-byte body.
            while !request.ends_with(b"\r\n\r\n{\"a\":1}") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "request cut short: {request:?}");
                request.extend_from_slice(&buf[..n]);
            }
            s.write_all(
                b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\n{\"err\r\n5\r\nor\":1\r\n1\r\n}\r\n0\r\n\r\n",
            )
            .await
            .unwrap();
            String::from_utf8(request).unwrap()
        });
        let request = ApiRequest {
            addr,
            method: "POST",
            path: "/api/x?y=1",
            headers: &[("Authorization", "Bearer t")],
            body: b"{\"a\":1}",
            max_len: 1000,
            timeout: Duration::from_secs(10),
        };
        let (status, body) = api_request(&request).await.unwrap();
        assert_eq!((status, body.as_slice()), (404, &b"{\"error\":1}"[..]));
        let sent = server.await.unwrap();
        assert!(sent.starts_with("POST /api/x?y=1 HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains("\r\nAuthorization: Bearer t\r\n"), "{sent}");
        assert!(sent.contains("\r\nContent-Length: 7\r\n"), "{sent}");
    }
}
