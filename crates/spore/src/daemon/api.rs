//! The daemon's HTTP face: the JSON API (docs/api.md), Server-Sent Events, Prometheus metrics and the
//! web page.

use engine::InfoHash;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::{ApiError, Daemon, Source};

const MAX_BODY: usize = 16 << 20;
const PAGE: &str = include_str!("web/index.html");

/// How long a one-time login link may wait to be opened.
pub const LINK_TTL: Duration = Duration::from_secs(120);
/// One-time links not yet used; a new one beyond this drops the oldest.
const MAX_LINKS: usize = 16;
/// How long a browser session lasts after its login.
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Browser sessions at once; a login beyond this ends the oldest.
const MAX_SESSIONS: usize = 32;
/// The largest `POST /login` body: a JSON object with one 64-hex-digit secret.
const MAX_LOGIN_BODY: usize = 1024;

/// The web page's credentials. The page never holds the API token: `spore daemon` and `spore web` (which
/// asks the daemon with the token, so only who can read the token file) print a one-time login link;
/// the page it opens posts the link's secret and gets a session token back, which it keeps in
/// `sessionStorage` and sends as `Authorization: Bearer`. Never a cookie: a browser sends a host's
/// cookies to every port of that host, so another user's server on another port would receive it,
/// while storage and headers a script sets are bound to the page's origin (scheme, host and port).
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<SessionsInner>,
}

#[derive(Default)]
struct SessionsInner {
    /// (secret, expiry) of each one-time link not yet used.
    links: Vec<(String, Instant)>,
    sessions: Vec<Session>,
}

struct Session {
    /// What the page sends as `Authorization: Bearer`.
    token: String,
    /// The `?token=` of the page's stream links (`GET`/`HEAD /stream/...` only), for what cannot send a
    /// header: a link opened in a new tab, a URL copied into a media player. Not the session token,
    /// so a URL that leaks (history, a player's log) opens files and nothing else.
    stream: String,
    expiry: Instant,
}

/// Takes the entry whose secret is `secret` out of `list`, comparing with every entry in constant time.
fn take_secret(list: &mut Vec<(String, Instant)>, secret: &str, now: Instant) -> bool {
    list.retain(|(_, expiry)| *expiry > now);
    let mut found = None;
    for (i, (s, _)) in list.iter().enumerate() {
        if same(s, secret) {
            found = Some(i);
        }
    }
    found.map(|i| list.remove(i)).is_some()
}

fn push_bounded(list: &mut Vec<(String, Instant)>, secret: String, expiry: Instant, max: usize) {
    let now = Instant::now();
    list.retain(|(_, e)| *e > now);
    if list.len() >= max {
        list.remove(0);
    }
    list.push((secret, expiry));
}

impl Sessions {
    /// A new one-time login secret, valid for [`LINK_TTL`].
    pub fn new_link(&self) -> std::io::Result<String> {
        let secret = super::store::random_hex(32)?;
        let mut inner = self.inner.lock();
        push_bounded(
            &mut inner.links,
            secret.clone(),
            Instant::now() + LINK_TTL,
            MAX_LINKS,
        );
        Ok(secret)
    }

    /// Uses up the one-time secret `once`; a new session's (token, stream token) if it was valid.
    fn redeem(&self, once: &str) -> Option<(String, String)> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if !take_secret(&mut inner.links, once, now) {
            return None;
        }
        let token = super::store::random_hex(32).ok()?;
        let stream = super::store::random_hex(32).ok()?;
        inner.sessions.retain(|s| s.expiry > now);
        if inner.sessions.len() >= MAX_SESSIONS {
            inner.sessions.remove(0);
        }
        inner.sessions.push(Session {
            token: token.clone(),
            stream: stream.clone(),
            expiry: now + SESSION_TTL,
        });
        Some((token, stream))
    }

    /// Whether `token` is a live session's token.
    fn valid(&self, token: &str) -> bool {
        self.any(|s| same(&s.token, token))
    }

    /// Whether `key` is a live session's stream token.
    fn stream_valid(&self, key: &str) -> bool {
        self.any(|s| same(&s.stream, key))
    }

    /// Whether a live session matches, trying every one so the time taken does not say which.
    fn any(&self, matches: impl Fn(&Session) -> bool) -> bool {
        let now = Instant::now();
        let inner = self.inner.lock();
        inner
            .sessions
            .iter()
            .fold(false, |ok, s| ok | (matches(s) && s.expiry > now))
    }
}

/// How a request to the API proved itself.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Auth {
    Token,
    Session,
    /// A session's stream token, on `GET`/`HEAD /stream/...`.
    Stream,
    /// `/metrics` on a loopback-bound API.
    Open,
}

#[derive(Clone)]
struct Ctx {
    daemon: Arc<Daemon>,
    bound: SocketAddr,
}

pub fn router(daemon: Arc<Daemon>, bound: SocketAddr) -> Router {
    // The Transmission RPC does its own authentication (basic auth and the session-id handshake).
    let rpc = super::rpc::router(daemon.clone());
    let ctx = Ctx { daemon, bound };
    let api = Router::new()
        .route("/api/torrents", get(list).post(add))
        .route("/api/torrents/{id}", get(detail).put(update).delete(remove))
        .route("/api/torrents/{id}/pause", post(pause))
        .route("/api/torrents/{id}/resume", post(resume))
        .route("/api/settings", get(settings).put(put_settings))
        .route("/api/events", get(events))
        .route("/api/login-link", post(login_link))
        .route("/metrics", get(metrics))
        .route("/stream/{id}/{index}", get(stream_file))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), authorize));
    Router::new()
        .route("/", get(page))
        .route("/login", get(page).post(login))
        .merge(api)
        .merge(rpc)
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
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
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
pub(super) fn host_name(host: &str) -> &str {
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
/// names, its addresses on each network), so any Host is served: the token or a session token is the
/// defence there, and a foreign page has neither (both travel in a header a page can set only for
/// its own origin, from storage only its own origin can read).
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

/// The token a request carries in `Authorization: Bearer` or `X-Spore-Token`, or else in `?token=` of
/// `query`.
pub(super) fn token_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    header_token(headers).or_else(|| query_token(query))
}

fn header_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    headers
        .get("x-spore-token")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_string)
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from response times.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether a request from a browser comes from the daemon's own page, by the browser's word on its
/// origin. A session token can only be sent by the page that holds it, so this is a second line (a
/// page on another port of this host, which any local user can serve, is another origin). A
/// state-changing call must carry an `Origin` naming this host (browsers send it with every POST,
/// PUT and DELETE) or `Sec-Fetch-Site: same-origin`; any call carrying either must agree.
pub(super) fn same_origin(headers: &HeaderMap, method: &Method) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let fetch_site = text("sec-fetch-site");
    if fetch_site.is_some_and(|s| s != "same-origin") {
        return false;
    }
    let host = text("host").unwrap_or("");
    let origin_ok = text("origin").map(|o| {
        o.split_once("://")
            .is_some_and(|(_, rest)| !host.is_empty() && rest.eq_ignore_ascii_case(host))
    });
    match origin_ok {
        Some(ok) => ok,
        None => matches!(*method, Method::GET | Method::HEAD) || fetch_site == Some("same-origin"),
    }
}

async fn authorize(State(ctx): State<Ctx>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let stream = path.starts_with("/stream/");
    // The query-string token is only for the event stream and file streams (for clients that cannot
    // add headers: EventSource, media players).
    let query = (path == "/api/events" || stream)
        .then(|| req.uri().query())
        .flatten();
    let open_metrics = path == "/metrics" && ctx.bound.ip().is_loopback();
    let sessions = &ctx.daemon.sessions;
    // Cookies are never read: a browser sends them to every port of the host.
    let in_header = header_token(req.headers());
    let in_query = query_token(query);
    let is_token = |t: &Option<String>| t.as_deref().is_some_and(|t| same(t, &ctx.daemon.token));
    let auth = if is_token(&in_header) || is_token(&in_query) {
        Auth::Token
    } else if in_header.as_deref().is_some_and(|t| sessions.valid(t)) {
        if !same_origin(req.headers(), req.method()) {
            return error(
                StatusCode::FORBIDDEN,
                "cross-origin request refused: a session is for the daemon's own page",
            );
        }
        Auth::Session
    } else if stream
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && in_query
            .as_deref()
            .is_some_and(|k| sessions.stream_valid(k))
    {
        Auth::Stream
    } else if open_metrics {
        Auth::Open
    } else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (see api-token in the state directory) or session (run `spore web`)",
        );
    };
    req.extensions_mut().insert(auth);
    next.run(req).await
}

/// Headers for the HTML pages: never cached, never framed, nothing loaded from elsewhere.
fn html(body: &str, status: StatusCode, csp: &'static str) -> Response {
    let mut response = (status, Html(body.to_string())).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    response
}

const PAGE_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

/// `GET /` and `GET /login?once=SECRET`: the web page, to anyone (it holds no secret and shows nothing
/// without a session). Opened as a login link, its script posts the secret to `POST /login` and
/// takes it out of the address bar; a GET never uses a link up, so a link previewer cannot spend it.
async fn page() -> Response {
    html(PAGE, StatusCode::OK, PAGE_CSP)
}

/// `POST /login` `{"once": SECRET}` from the daemon's own page: the one-time secret traded for a
/// session, `{"token", "stream_token", "expires_in"}`.
async fn login(State(ctx): State<Ctx>, req: Request) -> Response {
    if !same_origin(req.headers(), req.method()) {
        return error(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: a login is for the daemon's own page",
        );
    }
    let once = match axum::body::to_bytes(req.into_body(), MAX_LOGIN_BODY).await {
        Ok(body) => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("once").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let Some((token, stream)) = ctx.daemon.sessions.redeem(&once) else {
        return error(
            StatusCode::FORBIDDEN,
            "this login link is not valid: it was used already, it expired, or the daemon restarted since",
        );
    };
    let mut response = axum::Json(json!({
        "token": token,
        "stream_token": stream,
        "expires_in": SESSION_TTL.as_secs(),
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /api/login-link`: a fresh one-time login link, for `spore web`. Only with the token: a
/// session cannot make more of itself.
async fn login_link(State(ctx): State<Ctx>, req: Request) -> Result<Response, ApiError> {
    if req.extensions().get::<Auth>() != Some(&Auth::Token) {
        return Err(ApiError::Forbidden(
            "a login link needs the API token".into(),
        ));
    }
    let once = ctx
        .daemon
        .sessions
        .new_link()
        .map_err(|e| ApiError::Internal(format!("random bytes: {e}")))?;
    Ok(axum::Json(json!({
        "path": format!("/login?once={once}"),
        "expires_in": LINK_TTL.as_secs(),
    }))
    .into_response())
}

fn parse_id(id: &str) -> Result<InfoHash, ApiError> {
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

/// A query parameter, decoded as a form (`+` is a space, as the web page's URLSearchParams sends it).
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
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
    let (source, dir, paused, labels) = if content_type.starts_with("application/x-bittorrent") {
        (
            Source::TorrentFile(body.to_vec()),
            query_param(query.as_deref(), "download_dir").map(PathBuf::from),
            query_param(query.as_deref(), "paused").is_some_and(|p| p == "true"),
            query_param(query.as_deref(), "labels")
                .map(|l| l.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
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
        let labels: Vec<String> = match v.get("labels") {
            None | Some(Value::Null) => Vec::new(),
            Some(l) => serde_json::from_value(l.clone())
                .map_err(|_| ApiError::BadRequest("labels: expected a list of strings".into()))?,
        };
        (
            sources.remove(0),
            text("download_dir").map(PathBuf::from),
            v.get("paused").and_then(Value::as_bool).unwrap_or(false),
            labels,
        )
    };
    let view = ctx.daemon.add(source, dir, paused, labels).await?;
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
    axum::Json(super::settings_view(&ctx.daemon.settings.lock())).into_response()
}

async fn put_settings(State(ctx): State<Ctx>, req: Request) -> Result<Response, ApiError> {
    let change = parse_json(&read_body(req).await?)?;
    Ok(axum::Json(ctx.daemon.update_settings(&change).await?).into_response())
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

/// `GET`/`HEAD /stream/{id}/{index}`: a file with byte ranges, while it downloads (`stream.rs`).
async fn stream_file(
    State(ctx): State<Ctx>,
    Path((id, index)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::stream::serve(
        ctx.daemon.clone(),
        parse_id(&id)?,
        &index,
        &method,
        &headers,
    )
    .await
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
    fn query_parameters_decode_as_a_form() {
        let q = Some("labels=new+show,tv&download_dir=%2Fa%20b%2Bc");
        assert_eq!(query_param(q, "labels").as_deref(), Some("new show,tv"));
        assert_eq!(query_param(q, "download_dir").as_deref(), Some("/a b+c"));
        assert_eq!(query_param(q, "paused"), None);
    }

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
    fn a_login_secret_works_once_and_only_before_it_expires() {
        let now = Instant::now();
        let secret = "a".repeat(64);
        let list = vec![(secret.clone(), now + LINK_TTL)];
        assert!(!take_secret(&mut list.clone(), &"b".repeat(64), now));
        let late = now + LINK_TTL + Duration::from_secs(1);
        assert!(!take_secret(&mut list.clone(), &secret, late));
        let mut list = list;
        assert!(take_secret(&mut list, &secret, now));
        assert!(!take_secret(&mut list, &secret, now), "used twice");
    }

    #[test]
    fn a_login_gives_a_session_token_and_a_stream_token_that_do_not_stand_in_for_each_other() {
        let sessions = Sessions::default();
        let once = sessions.new_link().expect("random bytes");
        let (token, stream) = sessions.redeem(&once).expect("a fresh link");
        assert!(sessions.redeem(&once).is_none(), "used twice");
        assert_ne!(token, stream);
        assert!(sessions.valid(&token) && sessions.stream_valid(&stream));
        assert!(!sessions.valid(&stream) && !sessions.stream_valid(&token));
        assert!(!sessions.valid("") && !sessions.stream_valid(""));
        // Past the cap, the oldest session (and its stream token) ends.
        for _ in 0..MAX_SESSIONS {
            let once = sessions.new_link().expect("random bytes");
            sessions.redeem(&once).expect("a fresh link");
        }
        assert!(!sessions.valid(&token) && !sessions.stream_valid(&stream));
    }

    #[test]
    fn the_token_is_read_from_headers_and_only_then_the_query() {
        let mut h = HeaderMap::new();
        assert_eq!(token_of(&h, Some("a=1&token=q")).as_deref(), Some("q"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("spore_session=c; token=c"),
        );
        assert_eq!(token_of(&h, None), None, "a cookie is never a credential");
        h.insert("x-spore-token", HeaderValue::from_static(" x "));
        assert_eq!(token_of(&h, Some("token=q")).as_deref(), Some("x"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(header_token(&h).as_deref(), Some("b"));
    }

    #[test]
    fn a_session_call_must_come_from_the_daemons_own_origin() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9091"));
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let own = [("origin", "http://127.0.0.1:9091")];
        assert!(same_origin(&headers(&own), &Method::PUT));
        assert!(same_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            &Method::DELETE
        ));
        assert!(same_origin(&headers(&[]), &Method::GET));
        for bad in [
            &[("origin", "http://127.0.0.1:8080")][..],
            &[("origin", "http://evil.example")],
            &[("origin", "null")],
            &[("sec-fetch-site", "same-site")],
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://127.0.0.1:9091"),
            ],
            &[],
        ] {
            assert!(!same_origin(&headers(bad), &Method::POST), "{bad:?}");
        }
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "cross-site")]),
            &Method::GET
        ));
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
