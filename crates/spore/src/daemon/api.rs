//! The daemon's HTTP face: the JSON API (docs/api.md), Server-Sent Events, Prometheus metrics and the
//! web page.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::{ApiError, Daemon, Source};

const MAX_BODY: usize = 16 << 20;
const PAGE: &str = include_str!("web/index.html");

#[derive(Clone)]
struct Ctx {
    daemon: Arc<Daemon>,
    bound: SocketAddr,
}

pub fn router(daemon: Arc<Daemon>, bound: SocketAddr) -> Router {
    let ctx = Ctx { daemon, bound };
    let api = Router::new()
        .route("/api/torrents", get(list).post(add))
        .route("/api/torrents/{id}", get(detail).put(update).delete(remove))
        .route("/api/torrents/{id}/pause", post(pause))
        .route("/api/torrents/{id}/resume", post(resume))
        .route("/api/settings", get(settings).put(put_settings))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), authorize));
    Router::new()
        .route("/", get(page))
        .merge(api)
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(ctx.clone(), check_host))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctx)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "no such torrent or endpoint".into()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {MAX_BODY} bytes"),
            ),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        error(status, &message)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// The name in a `Host` header, without its port or an IPv6 address's brackets.
fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let name = host_name(host);
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a request naming `host` may be served on an API bound to `bound`.
///
/// Bound to one address, only that address or a loopback name will do, so a web page whose domain
/// was pointed at this machine (DNS rebinding) cannot talk to the daemon. Bound to a wildcard
/// address, the API is meant to be reached under names the daemon cannot know (the machine's
/// names, its addresses on each network), so any Host is served: the token is the defence there,
/// and such a page never sees it (the web page carries it only to a loopback client naming a
/// loopback host, and /metrics needs it on a non-loopback bind).
fn host_allowed(host: &str, bound: SocketAddr) -> bool {
    bound.ip().is_unspecified()
        || is_loopback_host(host)
        || host_name(host)
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip == bound.ip())
}

async fn check_host(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, ctx.bound) {
        return error(StatusCode::FORBIDDEN, "unexpected Host header");
    }
    next.run(req).await
}

fn token_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    if let Some(v) = headers.get("x-spore-token").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_string)
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from response times.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn authorize(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // The query-string token is only for the event stream (browsers cannot add headers to it).
    let query = (path == "/api/events").then(|| req.uri().query()).flatten();
    let open_metrics = path == "/metrics" && ctx.bound.ip().is_loopback();
    let ok =
        open_metrics || token_of(req.headers(), query).is_some_and(|t| same(&t, &ctx.daemon.token));
    if !ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (see api-token in the state directory)",
        );
    }
    next.run(req).await
}

async fn page(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let host_loopback = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(is_loopback_host);
    // Only a browser on this machine talking to a loopback name gets the token handed to it.
    let token = if peer.ip().is_loopback() && host_loopback {
        ctx.daemon.token.as_str()
    } else {
        ""
    };
    let mut response = Html(PAGE.replace("{{TOKEN}}", token)).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    h.insert("x-frame-options", "DENY".parse().expect("static"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
            .parse()
            .expect("static"),
    );
    response
}

fn parse_id(id: &str) -> Result<[u8; 20], ApiError> {
    super::store::parse_id(&id.to_ascii_lowercase())
        .ok_or_else(|| ApiError::BadRequest(format!("{id:?} is not a 40-hex-digit torrent id")))
}

/// The request body, refused with 413 beyond the limit.
async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| ApiError::TooLarge)
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

async fn list(State(ctx): State<Ctx>) -> Response {
    axum::Json(ctx.daemon.list()).into_response()
}

async fn add(State(ctx): State<Ctx>, req: Request) -> Result<Response, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let query = req.uri().query().map(str::to_string);
    let body = read_body(req).await?;
    let (source, dir, paused) = if content_type.starts_with("application/x-bittorrent") {
        (
            Source::TorrentFile(body.to_vec()),
            query_param(query.as_deref(), "download_dir").map(PathBuf::from),
            query_param(query.as_deref(), "paused").is_some_and(|p| p == "true"),
        )
    } else {
        let v = parse_json(&body)?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let mut sources = Vec::new();
        if let Some(m) = text("magnet") {
            sources.push(Source::Magnet(m));
        }
        if let Some(u) = text("url") {
            sources.push(Source::Url(u));
        }
        if let Some(p) = text("path") {
            sources.push(Source::Path(PathBuf::from(p)));
        }
        if let Some(b) = text("torrent_base64") {
            let bytes = data_encoding::BASE64
                .decode(b.as_bytes())
                .map_err(|e| ApiError::BadRequest(format!("torrent_base64: {e}")))?;
            sources.push(Source::TorrentFile(bytes));
        }
        if sources.len() != 1 {
            return Err(ApiError::BadRequest(
                "give exactly one of magnet, url, path, torrent_base64".into(),
            ));
        }
        (
            sources.remove(0),
            text("download_dir").map(PathBuf::from),
            v.get("paused").and_then(Value::as_bool).unwrap_or(false),
        )
    };
    let view = ctx.daemon.add(source, dir, paused).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

async fn detail(State(ctx): State<Ctx>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let slot = ctx.daemon.slot(&parse_id(&id)?)?;
    Ok(axum::Json(ctx.daemon.view(&slot, true)).into_response())
}

async fn update(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let change = parse_json(&read_body(req).await?)?;
    let view = ctx.daemon.update(&parse_id(&id)?, &change).await?;
    Ok(axum::Json(view).into_response())
}

async fn remove(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let delete_data = query_param(req.uri().query(), "delete_data").is_some_and(|v| v == "true");
    let v = ctx.daemon.remove(&parse_id(&id)?, delete_data).await?;
    Ok(axum::Json(v).into_response())
}

async fn pause(State(ctx): State<Ctx>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(axum::Json(ctx.daemon.pause(&parse_id(&id)?).await?).into_response())
}

async fn resume(State(ctx): State<Ctx>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(axum::Json(ctx.daemon.resume(&parse_id(&id)?).await?).into_response())
}

async fn settings(State(ctx): State<Ctx>) -> Response {
    axum::Json(json!(*ctx.daemon.settings.lock())).into_response()
}

async fn put_settings(State(ctx): State<Ctx>, req: Request) -> Result<Response, ApiError> {
    let change = parse_json(&read_body(req).await?)?;
    Ok(axum::Json(ctx.daemon.update_settings(&change)?).into_response())
}

async fn events(
    State(ctx): State<Ctx>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let first = ("torrents".to_string(), ctx.daemon.list().to_string());
    let rx = ctx.daemon.events.subscribe();
    let stream = futures_util::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        if let Some((name, data)) = first {
            return Some((Ok(Event::default().event(name).data(data)), (None, rx)));
        }
        loop {
            match rx.recv().await {
                Ok((name, data)) => {
                    return Some((Ok(Event::default().event(name).data(data)), (None, rx)))
                }
                // A slow reader skips to the newest state.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let (torrents, (mut down, mut up)) = ctx.daemon.totals();
    let mut by_state = std::collections::BTreeMap::<String, u64>::new();
    let (mut rd, mut ru, mut peers) = (0.0, 0.0, 0u64);
    for t in &torrents {
        *by_state
            .entry(t["state"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        down += t["downloaded"].as_u64().unwrap_or(0);
        up += t["uploaded"].as_u64().unwrap_or(0);
        rd += t["download_rate"].as_f64().unwrap_or(0.0);
        ru += t["upload_rate"].as_f64().unwrap_or(0.0);
        peers += t["peers"].as_u64().unwrap_or(0);
    }
    let mut out = String::from("# TYPE spore_torrents gauge\n");
    for (state, n) in by_state {
        out += &format!("spore_torrents{{state=\"{state}\"}} {n}\n");
    }
    out += &format!(
        "# TYPE spore_downloaded_bytes_total counter\nspore_downloaded_bytes_total {down}\n\
         # TYPE spore_uploaded_bytes_total counter\nspore_uploaded_bytes_total {up}\n\
         # TYPE spore_download_rate_bytes gauge\nspore_download_rate_bytes {rd:.0}\n\
         # TYPE spore_upload_rate_bytes gauge\nspore_upload_rate_bytes {ru:.0}\n\
         # TYPE spore_peers gauge\nspore_peers {peers}\n"
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_must_name_the_bound_address_or_loopback() {
        let one: SocketAddr = "192.168.1.5:9091".parse().expect("address");
        for host in [
            "192.168.1.5:9091",
            "192.168.1.5",
            "localhost:9091",
            "127.0.0.1:9091",
            "[::1]:9091",
        ] {
            assert!(host_allowed(host, one), "{host}");
        }
        for host in ["evil.example", "evil.example:9091", "192.168.1.6:9091", ""] {
            assert!(!host_allowed(host, one), "{host}");
        }
        let loopback: SocketAddr = "127.0.0.1:9091".parse().expect("address");
        assert!(host_allowed("localhost", loopback));
        assert!(!host_allowed("evil.example:9091", loopback));
        let v6: SocketAddr = "[2001:db8::1]:9091".parse().expect("address");
        assert!(host_allowed("[2001:db8::1]:9091", v6));
        assert!(!host_allowed("[2001:db8::2]:9091", v6));
    }

    #[test]
    fn a_wildcard_bind_serves_any_host() {
        for bound in ["0.0.0.0:9091", "[::]:9091"] {
            let bound: SocketAddr = bound.parse().expect("address");
            assert!(host_allowed("nas.home:9091", bound));
            assert!(host_allowed("evil.example", bound));
        }
    }
}
