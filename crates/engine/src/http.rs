//! HTTP(S) GET for tracker announces and scrapes and for `.torrent` URLs, and requests to the daemon's
//! API: the engine's side of the `http-client` crate (which writes requests and reads responses).
//!
//! Hand-written HTTP/1.0 rather than a client library: the announce query carries raw `info_hash` and
//! `peer_id` bytes that tracker-proto percent-encodes, and the request must carry exactly those bytes
//! (a library's query builder would re-encode them). `https://` URLs go through rustls on the ring
//! provider, trusting the roots `rustls-native-certs` finds (the system store, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` when set, as with OpenSSL and curl). Redirects are followed, never from https to http.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use crate::error::HttpError;
use http_client::{
    exchange, host_header, is_tls, normalise_scheme, parse_url, redirect_target, shown, Limits,
    Request, Response, UrlError, Version,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};

/// One request, from DNS to the last byte (TLS handshake included).
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Redirect hops followed before giving up (a `.torrent` behind a CDN or a forge takes one or two).
pub const MAX_REDIRECTS: usize = 5;
/// A response's status line and headers.
const MAX_HEAD: usize = 64 * 1024;

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

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

async fn get_once(url: &str, bind: Option<IpAddr>, max_len: usize) -> Result<Reply, HttpError> {
    let tls = is_tls(url).ok_or_else(|| UrlError::NotHttp(shown(url).to_string()))?;
    let u = if tls {
        parse_url(url, "https", 443)?
    } else {
        parse_url(url, "http", 80)?
    };
    // Missing roots are the same error for every https URL: say so before touching the network.
    let tls_config = if tls { Some(client_config()?) } else { None };
    let host = host_header(u.host, u.port);
    let user_agent = concat!("Spore/", env!("CARGO_PKG_VERSION"));
    let request = Request {
        method: "GET",
        target: u.path,
        host: &host,
        version: Version::Http10,
        headers: &[("User-Agent", user_agent), ("Accept-Encoding", "identity")],
        body: b"",
    };
    let limits = Limits::new(MAX_HEAD, max_len);
    // Only a 200's body is used: a redirect needs its Location, an error its status.
    let wanted = |head: &http_client::Head| head.status == 200;
    let fetch = async {
        let addr = resolve(u.host, u.port, bind).await?;
        let mut stream = connect(addr, bind).await?;
        match tls_config {
            None => Ok::<_, HttpError>(exchange(&mut stream, &request, limits, wanted).await?),
            Some(config) => {
                let name = ServerName::try_from(u.host.to_string()).map_err(|_| {
                    HttpError::Tls(format!("{} is not a valid TLS server name", u.host))
                })?;
                let mut stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .map_err(|e| {
                        HttpError::Tls(format!("TLS handshake with {host} failed: {e}"))
                    })?;
                Ok(exchange(&mut stream, &request, limits, wanted).await?)
            }
        }
    };
    let response = tokio::time::timeout(HTTP_TIMEOUT, fetch)
        .await
        .map_err(|_| HttpError::Timeout(HTTP_TIMEOUT.as_secs()))??;
    reply(response)
}

/// Errors say what the server did ("answered HTTP 404"); the caller puts the URL in front.
fn reply(response: Response) -> Result<Reply, HttpError> {
    match response.status() {
        200 => Ok(Reply::Body(response.body)),
        status if is_redirect(status) => {
            let location = response.head.header("location").ok_or_else(|| {
                HttpError::Reply(format!("answered HTTP {status} without a Location"))
            })?;
            Ok(Reply::Redirect(location.to_string()))
        }
        status => Err(HttpError::Reply(format!("answered HTTP {status}"))),
    }
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
    let host = req.addr.to_string();
    let request = Request {
        method: req.method,
        target: req.path,
        host: &host,
        version: Version::Http11,
        headers: req.headers,
        body: req.body,
    };
    let limits = Limits::new(MAX_HEAD, req.max_len);
    let response = tokio::time::timeout(req.timeout, async {
        let mut stream = connect(req.addr, None).await?;
        Ok::<_, HttpError>(exchange(&mut stream, &request, limits, |_| true).await?)
    })
    .await
    .map_err(|_| HttpError::Timeout(req.timeout.as_secs()))??;
    Ok((response.status(), response.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn reply_to(bytes: &[u8]) -> Result<Reply, HttpError> {
        let limits = Limits::new(MAX_HEAD, 100);
        let response = http_client::parse(bytes, Some(http_client::End::Clean), limits)
            .unwrap()
            .unwrap();
        reply(response)
    }

    #[test]
    fn a_200_gives_its_body_a_redirect_its_location_and_anything_else_an_error() {
        assert_eq!(
            reply_to(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc").unwrap(),
            Reply::Body(b"abc".to_vec())
        );
        for code in ["301", "302", "303", "307", "308"] {
            let r = format!("HTTP/1.1 {code} X\r\nLocation: /y\r\n\r\n");
            assert_eq!(
                reply_to(r.as_bytes()).unwrap(),
                Reply::Redirect("/y".into())
            );
        }
        let e = reply_to(b"HTTP/1.1 302 Found\r\n\r\n").unwrap_err();
        assert_eq!(format!("{e}"), "answered HTTP 302 without a Location");
        let e = reply_to(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err();
        assert_eq!(format!("{e}"), "answered HTTP 404");
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

        // The status is what matters when its body would not be used, however large it says it is.
        let addr = serve(vec![
            "HTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Length: 1000000\r\n\r\n".into(),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 1000000\r\n\r\n".into(),
        ])
        .await;
        let e = http_get(&format!("http://{addr}/a"), None, 100)
            .await
            .unwrap_err();
        assert_eq!(
            format!("{e}"),
            format!("redirected to http://{addr}/b: answered HTTP 404")
        );
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
