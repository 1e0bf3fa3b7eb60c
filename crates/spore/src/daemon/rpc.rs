//! The Transmission RPC (`POST /transmission/rpc`, Transmission's docs/rpc-spec.md) over what the
//! daemon does, so transmission-remote, remote GUIs and automation drive Spore unchanged. Both
//! dialects: 4.0's `{"method", "arguments", "tag"}` with its kebab-case and camelCase names, and
//! 4.1's JSON-RPC 2.0 with snake_case ones (translated to the 4.0 names on the way in and back on
//! the way out). docs/api.md lists what is implemented and what is not.

use engine::InfoHash;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::store::Encryption;
use super::{api, ApiError, Daemon, Phase, Slot, Source};

/// The largest request body: a `torrent-add` carries a whole .torrent file in base64.
pub const MAX_RPC_BODY: usize = (super::paths::MAX_TORRENT_FILE as usize) / 3 * 4 + (1 << 20);
/// How long a removed torrent's number is reported in `removed` of a `recently-active` get, and how
/// long a torrent counts as recently active after it was added or moved bytes.
const RECENT: Duration = Duration::from_secs(60);
/// Removed torrents remembered for `removed`; older ones beyond this are dropped.
const MAX_REMOVED: usize = 1024;

const SESSION_HEADER: &str = "x-transmission-session-id";
pub const RPC_VERSION: u64 = 17;
pub const RPC_VERSION_MINIMUM: u64 = 14;
const RPC_VERSION_SEMVER: &str = "5.3.0";
const VERSION: &str = concat!("4.0.6 (spore ", env!("CARGO_PKG_VERSION"), ")");
/// Transmission's speed unit: kB/s of 1000 bytes.
const KB: u64 = 1000;

struct Rpc {
    daemon: Arc<Daemon>,
    /// The CSRF token a client must echo in `X-Transmission-Session-Id` (`None` if the system had no
    /// random bytes for one: every request then fails with 503).
    session_id: Option<String>,
    ids: Mutex<Ids>,
    started: Instant,
}

/// Torrent numbers: small, given in order of appearance, never reused while the daemon runs.
#[derive(Default)]
struct Ids {
    by_hash: HashMap<InfoHash, u64>,
    next: u64,
    /// Numbers of removed torrents and when they went.
    removed: Vec<(u64, Instant)>,
    /// When each torrent was last seen active (bytes moving) or added.
    active: HashMap<InfoHash, Instant>,
}

pub fn router<S: Clone + Send + Sync + 'static>(daemon: Arc<Daemon>) -> Router<S> {
    let session_id = super::store::random_hex(24);
    if let Err(e) = &session_id {
        tracing::error!("no Transmission RPC: no random bytes for its session id: {e}");
    }
    let rpc = Arc::new(Rpc {
        daemon,
        session_id: session_id.ok(),
        ids: Mutex::new(Ids {
            next: 1,
            ..Ids::default()
        }),
        started: Instant::now(),
    });
    Router::new()
        .route("/transmission/rpc", post(handle).get(handle))
        // transmission-remote asks for the path with a trailing slash.
        .route("/transmission/rpc/", post(handle).get(handle))
        .with_state(rpc)
}

/// Whether the request carries the API token (as a basic-auth password under any user name, or
/// as the rest of the API takes it). Never a cookie: a browser sends it to every port of the host.
fn authorized(daemon: &Daemon, headers: &HeaderMap) -> bool {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| data_encoding::BASE64.decode(b.trim().as_bytes()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if let Some(userpass) = basic {
        let (user, password) = userpass.split_once(':').unwrap_or((&userpass, ""));
        // The configured credentials, when both are set, must match together; the API token as the
        // password works under any user name in any case.
        let configured = {
            let s = daemon.settings.lock();
            match (&s.rpc_username, &s.rpc_password) {
                (Some(u), Some(p)) => api::same(user, u) & api::same(password, p),
                _ => false,
            }
        };
        return configured || api::same(password, &daemon.token);
    }
    api::token_of(headers, None).is_some_and(|t| api::same(&t, &daemon.token))
}

async fn handle(State(rpc): State<Arc<Rpc>>, req: Request) -> Response {
    let Some(session_id) = rpc.session_id.clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the Transmission RPC is off: no random bytes for its session id",
        )
            .into_response();
    };
    if !authorized(&rpc.daemon, req.headers()) {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            "401: Unauthorized. Use the API token (api-token in the state directory) as the password.",
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Transmission\""),
        );
        return r;
    }
    let sent = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !api::same(sent, &session_id) {
        let mut r = (
            StatusCode::CONFLICT,
            format!(
                "409: Conflict. Your request had an invalid session id: send the header {SESSION_HEADER}: {}",
                session_id
            ),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&session_id) {
            r.headers_mut().insert(SESSION_HEADER, v);
        }
        return r;
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_RPC_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {MAX_RPC_BODY} bytes"),
            )
                .into_response()
        }
    };
    let reply = match serde_json::from_slice::<Value>(&body) {
        // A JSON-RPC 2.0 batch: the replies in order, notifications left out.
        Ok(Value::Array(batch)) if !batch.is_empty() => {
            let mut replies = Vec::new();
            for request in batch {
                replies.extend(rpc.answer(request).await);
            }
            (!replies.is_empty()).then_some(Value::Array(replies))
        }
        Ok(request) => rpc.answer(request).await,
        Err(e) => Some(json!({
            "result": format!("invalid JSON: {e}"),
            "arguments": {},
        })),
    };
    let mut r = match reply {
        Some(v) => axum::Json(v).into_response(),
        // A JSON-RPC notification.
        None => StatusCode::NO_CONTENT.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&session_id) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r
}

/// Why a method failed: the kind decides the JSON-RPC 2.0 error code; the 4.0 dialect sends the
/// message as its `result`.
#[derive(Debug)]
enum Fail {
    Method(String),
    Params(String),
    Failed(String),
}

fn params(m: impl Into<String>) -> Fail {
    Fail::Params(m.into())
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Fail {
        match e {
            ApiError::BadRequest(m) | ApiError::Conflict(m) | ApiError::Forbidden(m) => {
                Fail::Failed(m)
            }
            ApiError::NotFound => Fail::Failed("torrent not found".into()),
            ApiError::TooLarge => Fail::Failed("too large".into()),
            ApiError::Internal(m) => Fail::Failed(m),
        }
    }
}

impl Fail {
    fn message(&self) -> &str {
        match self {
            Fail::Method(m) | Fail::Params(m) | Fail::Failed(m) => m,
        }
    }
}

/// Every name of the 4.0 dialect the daemon knows, so a 4.1 snake_case name can be mapped back.
#[rustfmt::skip]
const NAMES: &[&str] = &[
    // methods
    "torrent-start", "torrent-start-now", "torrent-stop", "torrent-verify", "torrent-reannounce",
    "torrent-set", "torrent-get", "torrent-add", "torrent-remove", "torrent-set-location",
    "torrent-rename-path", "session-set", "session-get", "session-stats", "blocklist-update",
    "port-test", "session-close", "queue-move-top", "queue-move-up", "queue-move-down",
    "queue-move-bottom", "free-space", "group-set", "group-get",
    // arguments
    "ids", "fields", "format", "recently-active", "delete-local-data", "location", "move", "path",
    "name", "filename", "metainfo", "download-dir", "paused", "labels", "files-wanted",
    "files-unwanted", "priority-high", "priority-low", "priority-normal", "peer-limit",
    "bandwidthPriority", "cookies", "downloadLimit", "downloadLimited", "uploadLimit",
    "uploadLimited", "seedRatioLimit", "seedRatioMode", "seedRatioLimited", "seedIdleLimit",
    "seedIdleMode", "queuePosition", "honorsSessionLimits", "trackerAdd", "trackerRemove",
    "trackerReplace", "trackerList", "speed-limit-down", "speed-limit-down-enabled",
    "speed-limit-up", "speed-limit-up-enabled", "peer-limit-global", "peer-limit-per-torrent",
    "download-queue-size", "download-queue-enabled", "seed-queue-size", "seed-queue-enabled",
    "start-added-torrents", "idle-seeding-limit", "idle-seeding-limit-enabled",
    // session-get keys
    "version", "rpc-version", "rpc-version-minimum", "rpc-version-semver", "session-id",
    "download-dir-free-space", "incomplete-dir", "incomplete-dir-enabled", "alt-speed-down",
    "alt-speed-up", "alt-speed-enabled", "alt-speed-time-enabled", "alt-speed-time-begin",
    "alt-speed-time-end", "alt-speed-time-day", "queue-stalled-enabled", "queue-stalled-minutes",
    "peer-port", "peer-port-random-on-start", "port-forwarding-enabled", "dht-enabled",
    "pex-enabled", "lpd-enabled", "utp-enabled", "encryption", "blocklist-enabled",
    "blocklist-size", "blocklist-url", "cache-size-mb", "rename-partial-files",
    "trash-original-torrent-files", "default-trackers", "config-dir", "units",
    "script-torrent-added-enabled", "script-torrent-added-filename", "script-torrent-done-enabled",
    "script-torrent-done-filename", "script-torrent-done-seeding-enabled",
    "script-torrent-done-seeding-filename",
    // torrent-get fields
    "activityDate", "addedDate", "comment", "corruptEver", "creator", "dateCreated",
    "desiredAvailable", "doneDate", "downloadDir", "downloadedEver", "editDate", "error",
    "errorString", "eta", "etaIdle", "file-count", "files", "fileStats", "group", "hashString",
    "haveUnchecked", "haveValid", "id", "isFinished", "isPrivate", "isStalled", "leftUntilDone",
    "magnetLink", "manualAnnounceTime", "maxConnectedPeers", "metadataPercentComplete", "peers",
    "peersConnected", "peersFrom", "peersGettingFromUs", "peersSendingToUs", "percentComplete",
    "percentDone", "pieces", "pieceCount", "pieceSize", "priorities", "primary-mime-type",
    "rateDownload", "rateUpload", "recheckProgress", "secondsDownloading", "secondsSeeding",
    "sizeWhenDone", "startDate", "status", "trackers", "trackerStats", "totalSize", "torrentFile",
    "uploadedEver", "uploadRatio", "wanted", "webseeds", "webseedsSendingToUs", "source", "sequentialDownload",
];

/// A 4.0 name in 4.1 spelling: `hashString` → `hash_string`, `peer-limit` → `peer_limit`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c == '-' {
            out.push('_');
        } else if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The 4.0 name of a 4.1 one (unknown names are kept: they are ignored anyway).
fn old_name(name: &str) -> String {
    NAMES
        .iter()
        .find(|n| snake(n) == name)
        .map_or_else(|| name.to_string(), |n| n.to_string())
}

/// A 4.0 answer's names in 4.1 spelling, at every depth (and the key row of a table).
fn snake_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (snake(&k), snake_keys(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(snake_keys).collect()),
        other => other,
    }
}

impl Rpc {
    /// The reply to one request, `None` for a JSON-RPC notification.
    async fn answer(self: &Arc<Self>, request: Value) -> Option<Value> {
        let jsonrpc = request.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
        if !jsonrpc {
            let tag = request.get("tag").cloned();
            let method = request.get("method").and_then(Value::as_str);
            let args = match request.get("arguments") {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(_) => Err(params("arguments must be an object")),
            };
            let result = match (method, args) {
                (None, _) => Err(Fail::Method("no method name".into())),
                (_, Err(e)) => Err(e),
                (Some(m), Ok(args)) => self.call(m, args).await,
            };
            let mut reply = match result {
                Ok(args) => json!({"result": "success", "arguments": args}),
                Err(fail) => json!({"result": fail.message(), "arguments": {}}),
            };
            if let Some(tag) = tag {
                reply["tag"] = tag;
            }
            return Some(reply);
        }
        let id = request.get("id").cloned();
        let result = match (
            request.get("method").and_then(Value::as_str),
            request.get("params"),
        ) {
            (None, _) => Err((
                -32600,
                "Invalid Request".to_string(),
                "no method".to_string(),
            )),
            (Some(_), Some(p)) if !p.is_object() && !p.is_null() => Err((
                -32602,
                "Invalid params".into(),
                "params must be an object".into(),
            )),
            (Some(m), p) => {
                let args: Map<String, Value> = p
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| {
                                let k = old_name(k);
                                let v = match (k.as_str(), v) {
                                    ("fields", Value::Array(f)) => Value::Array(
                                        f.iter()
                                            .map(|x| {
                                                x.as_str().map_or(x.clone(), |s| old_name(s).into())
                                            })
                                            .collect(),
                                    ),
                                    ("ids", Value::String(s)) => old_name(s).into(),
                                    _ => v.clone(),
                                };
                                (k, v)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let method = old_name(m);
                self.call(&method, args).await.map_err(|f| match f {
                    Fail::Method(m) => (-32601, "Method not found".into(), m),
                    Fail::Params(m) => (-32602, "Invalid params".into(), m),
                    Fail::Failed(m) => (1, "Failed".into(), m),
                })
            }
        };
        let id = id?;
        Some(match result {
            Ok(args) => {
                let mut result = snake_keys(Value::Object(args));
                // A table's first row holds field names.
                if let Some(Value::Array(names)) = result.pointer_mut("/torrents/0") {
                    for n in names.iter_mut() {
                        if let Some(s) = n.as_str() {
                            *n = snake(s).into();
                        }
                    }
                }
                json!({"jsonrpc": "2.0", "result": result, "id": id})
            }
            Err((code, message, detail)) => json!({
                "jsonrpc": "2.0",
                "error": {"code": code, "message": message, "data": {"error_string": detail}},
                "id": id,
            }),
        })
    }

    async fn call(
        self: &Arc<Self>,
        method: &str,
        args: Map<String, Value>,
    ) -> Result<Map<String, Value>, Fail> {
        let none = Ok(Map::new());
        match method {
            "session-get" => {
                // statvfs off the runtime: a hung network file system must not hold a worker.
                let dir = self.daemon.settings.lock().download_dir.clone();
                let free = super::blocking(move || free_bytes(&dir)).await?;
                Ok(self.session_get(&args, free.map(|(f, _)| f)))
            }
            "session-set" => self.session_set(&args).await.and(none),
            "session-stats" => Ok(self.session_stats()),
            // The daemon is stopped by its signal, not by a remote: closing the session is a no-op.
            "session-close" => none,
            "torrent-get" => self.torrent_get(&args),
            "torrent-add" => self.torrent_add(&args).await,
            "torrent-start" | "torrent-start-now" => {
                for (_, slot) in self.select(&args)? {
                    let id = slot.lock().id;
                    self.daemon
                        .resume_with(&id, method == "torrent-start-now")
                        .await?;
                }
                none
            }
            "torrent-stop" => {
                for (_, slot) in self.select(&args)? {
                    let id = slot.lock().id;
                    self.daemon.pause(&id).await?;
                }
                none
            }
            "torrent-verify" => {
                for (_, slot) in self.select(&args)? {
                    self.verify(&slot).await?;
                }
                none
            }
            "torrent-reannounce" => {
                // Running torrents announce now; stopped ones have nobody to announce for.
                for (_, slot) in self.select(&args)? {
                    let id = slot.lock().id;
                    if let Some(h) = self.daemon.handle(&id) {
                        h.reannounce();
                    }
                }
                none
            }
            "torrent-remove" => {
                let delete = bool_arg(&args, "delete-local-data")?.unwrap_or(false);
                for (_, slot) in self.select(&args)? {
                    let id = slot.lock().id;
                    self.daemon.remove(&id, delete).await?;
                }
                none
            }
            "torrent-set-location" => {
                let location = str_arg(&args, "location")?
                    .ok_or_else(|| params("torrent-set-location needs a location"))?;
                let move_data = bool_arg(&args, "move")?.unwrap_or(false);
                for (_, slot) in self.select(&args)? {
                    self.set_location(&slot, PathBuf::from(&location), move_data).await?;
                }
                none
            }
            "torrent-set" => self.torrent_set(&args).await.and(none),
            "free-space" => self.free_space(&args).await,
            "port-test" => Err(Fail::Failed(
                "port-test is not supported: Spore cannot test its peer port from outside this network"
                    .into(),
            )),
            "blocklist-update" => Err(Fail::Failed("Spore has no blocklist".into())),
            "queue-move-top" | "queue-move-up" | "queue-move-down" | "queue-move-bottom" => {
                let how = method
                    .strip_prefix("queue-move-")
                    .and_then(super::QueueMove::parse)
                    .ok_or_else(|| Fail::Method("method name not recognized".into()))?;
                let ids: Vec<InfoHash> = self
                    .select(&args)?
                    .iter()
                    .map(|(_, s)| s.lock().id)
                    .collect();
                self.daemon.queue_move(&ids, how);
                none
            }
            "torrent-rename-path" => {
                let path = str_arg(&args, "path")?
                    .ok_or_else(|| params("torrent-rename-path needs a path"))?;
                let name = str_arg(&args, "name")?
                    .ok_or_else(|| params("torrent-rename-path needs a name"))?;
                let mut chosen = self.select(&args)?;
                if chosen.len() != 1 {
                    return Err(params("torrent-rename-path takes exactly one torrent"));
                }
                let (number, slot) = chosen.remove(0);
                let id = slot.lock().id;
                let (path, name) = self.daemon.rename_path(&id, &path, &name).await?;
                let mut m = Map::new();
                m.insert("path".into(), json!(path));
                m.insert("name".into(), json!(name));
                m.insert("id".into(), json!(number));
                Ok(m)
            }
            "group-get" => {
                let mut m = Map::new();
                m.insert("group".into(), json!([]));
                Ok(m)
            }
            "group-set" => Err(Fail::Failed("Spore has no bandwidth groups".into())),
            _ => Err(Fail::Method("method name not recognized".into())),
        }
    }

    /// Every torrent with its number, in number order; numbers are given to torrents first seen.
    fn numbered(&self) -> Vec<(u64, Slot)> {
        let slots: Vec<(InfoHash, Slot)> = self
            .daemon
            .entries
            .lock()
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        let mut ids = self.ids.lock();
        let now = Instant::now();
        let present: std::collections::HashSet<InfoHash> =
            slots.iter().map(|(id, _)| *id).collect();
        let gone: Vec<InfoHash> = ids
            .by_hash
            .keys()
            .filter(|h| !present.contains(*h))
            .copied()
            .collect();
        for h in gone {
            if let Some(n) = ids.by_hash.remove(&h) {
                ids.removed.push((n, now));
            }
            ids.active.remove(&h);
        }
        ids.removed
            .retain(|(_, at)| now.duration_since(*at) < RECENT);
        let excess = ids.removed.len().saturating_sub(MAX_REMOVED);
        ids.removed.drain(..excess);
        let mut new: Vec<(u64, InfoHash)> = slots
            .iter()
            .filter(|(h, _)| !ids.by_hash.contains_key(h))
            .map(|(h, s)| (s.lock().record.added, *h))
            .collect();
        new.sort();
        for (_, h) in new {
            let n = ids.next;
            ids.next += 1;
            ids.by_hash.insert(h, n);
            ids.active.insert(h, now);
        }
        let mut out: Vec<(u64, Slot)> = slots
            .into_iter()
            .filter_map(|(h, s)| ids.by_hash.get(&h).map(|n| (*n, s)))
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out
    }

    /// The torrents `ids` names (all when absent), per the spec's 3.1.
    fn select(&self, args: &Map<String, Value>) -> Result<Vec<(u64, Slot)>, Fail> {
        let all = self.numbered();
        let wanted = match args.get("ids") {
            None | Some(Value::Null) => return Ok(all),
            Some(Value::String(s)) if s == "recently-active" => {
                let ids = self.ids.lock();
                let now = Instant::now();
                return Ok(all
                    .into_iter()
                    .filter(|(_, slot)| {
                        let e = slot.lock();
                        let busy = self.daemon.handle(&e.id).is_some_and(|h| {
                            let s = h.status();
                            s.download_rate > 0.0 || s.upload_rate > 0.0
                        });
                        busy || ids
                            .active
                            .get(&e.id)
                            .is_some_and(|at| now.duration_since(*at) < RECENT)
                    })
                    .collect());
            }
            Some(v @ (Value::String(_) | Value::Number(_))) => vec![v.clone()],
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                return Err(params(
                    "ids: expected a number, a list or \"recently-active\"",
                ))
            }
        };
        let mut out = Vec::new();
        for w in wanted {
            let found = match &w {
                Value::Number(n) => {
                    let n = n
                        .as_u64()
                        .ok_or_else(|| params(format!("ids: {n} is not a torrent id")))?;
                    all.iter().find(|(m, _)| *m == n)
                }
                Value::String(s) => {
                    let hash = super::store::parse_id(&s.to_ascii_lowercase())
                        .ok_or_else(|| params(format!("ids: {s:?} is not a torrent id or hash")))?;
                    all.iter().find(|(_, slot)| slot.lock().id == hash)
                }
                other => return Err(params(format!("ids: {other} is not a torrent id"))),
            };
            // Transmission skips ids it does not know.
            if let Some((n, slot)) = found {
                if !out.iter().any(|(m, _): &(u64, Slot)| m == n) {
                    out.push((*n, slot.clone()));
                }
            }
        }
        Ok(out)
    }

    fn session_get(&self, args: &Map<String, Value>, free: Option<u64>) -> Map<String, Value> {
        let s = self.daemon.settings.lock().clone();
        let kb = |r: Option<u64>| r.map_or(0, |r| r.div_ceil(KB));
        let discovery = self.daemon.client.discovery();
        let all = json!({
            "version": VERSION,
            "rpc-version": RPC_VERSION,
            "rpc-version-minimum": RPC_VERSION_MINIMUM,
            "rpc-version-semver": RPC_VERSION_SEMVER,
            "session-id": self.session_id,
            "download-dir": s.download_dir,
            "download-dir-free-space": free.map_or(-1, |f| f as i64),
            "incomplete-dir": s.download_dir,
            "incomplete-dir-enabled": false,
            "speed-limit-down": kb(s.max_download_rate),
            "speed-limit-down-enabled": s.max_download_rate.is_some(),
            "speed-limit-up": kb(s.max_upload_rate),
            "speed-limit-up-enabled": s.max_upload_rate.is_some(),
            "alt-speed-down": s.alt_speed_down.div_ceil(KB),
            "alt-speed-up": s.alt_speed_up.div_ceil(KB),
            "alt-speed-enabled": s.alt_speed_enabled,
            "alt-speed-time-enabled": s.alt_speed_time_enabled,
            "alt-speed-time-begin": s.alt_speed_time_begin,
            "alt-speed-time-end": s.alt_speed_time_end,
            "alt-speed-time-day": s.alt_speed_time_day,
            "peer-limit-global": s.max_peers_total,
            "peer-limit-per-torrent": s.max_peers_per_torrent,
            "download-queue-enabled": true,
            "download-queue-size": s.max_active_downloads,
            "seed-queue-enabled": true,
            "seed-queue-size": s.max_active_seeds,
        });
        let more = json!({
            "queue-stalled-enabled": false,
            "queue-stalled-minutes": 0,
            "seedRatioLimit": s.seed_ratio.unwrap_or(2.0),
            "seedRatioLimited": s.seed_ratio.is_some(),
            "idle-seeding-limit": 30,
            "idle-seeding-limit-enabled": false,
            "peer-port": self.daemon.listen.port(),
            "peer-port-random-on-start": false,
            "port-forwarding-enabled": self.daemon.port_mapping,
            "dht-enabled": discovery.dht,
            "pex-enabled": discovery.pex,
            "lpd-enabled": discovery.lsd,
            "utp-enabled": self.daemon.transports.utp,
            "encryption": match s.encryption {
                Encryption::Require => "required",
                Encryption::Prefer => "preferred",
                Encryption::Off => "tolerated",
            },
            "blocklist-enabled": false,
            "blocklist-size": 0,
            "blocklist-url": "",
            "cache-size-mb": 0,
            "rename-partial-files": false,
            "start-added-torrents": s.start_added_torrents,
            "trash-original-torrent-files": false,
            "script-torrent-added-enabled": false,
            "script-torrent-added-filename": "",
            "script-torrent-done-enabled": false,
            "script-torrent-done-filename": "",
            "script-torrent-done-seeding-enabled": false,
            "script-torrent-done-seeding-filename": "",
            "default-trackers": "",
            "config-dir": "",
            "units": {
                "speed-units": ["kB/s", "MB/s", "GB/s", "TB/s"],
                "speed-bytes": KB,
                "size-units": ["kB", "MB", "GB", "TB"],
                "size-bytes": KB,
                "memory-units": ["KiB", "MiB", "GiB", "TiB"],
                "memory-bytes": 1024,
            },
        });
        let (Value::Object(mut all), Value::Object(more)) = (all, more) else {
            return Map::new();
        };
        all.extend(more);
        if let Some(Value::Array(fields)) = args.get("fields") {
            let keep: Vec<&str> = fields.iter().filter_map(Value::as_str).collect();
            if !keep.is_empty() {
                all.retain(|k, _| keep.contains(&k.as_str()));
            }
        }
        all
    }

    /// `session-set`: the settings Spore has; the rest is ignored, as Transmission ignores unknown keys.
    async fn session_set(&self, args: &Map<String, Value>) -> Result<(), Fail> {
        let current = self.daemon.settings.lock().clone();
        let mut change = Map::new();
        if let Some(dir) = str_arg(args, "download-dir")? {
            change.insert("download_dir".into(), dir.into());
        }
        for (value, enabled, key, now) in [
            (
                "speed-limit-down",
                "speed-limit-down-enabled",
                "max_download_rate",
                current.max_download_rate,
            ),
            (
                "speed-limit-up",
                "speed-limit-up-enabled",
                "max_upload_rate",
                current.max_upload_rate,
            ),
        ] {
            let bytes = rate_arg(args, value)?;
            let on = bool_arg(args, enabled)?;
            let rate = match (on, bytes) {
                (Some(false), _) => Some(Value::Null),
                (Some(true), Some(r)) => Some(json!(r)),
                (Some(true), None) => None,
                (None, Some(r)) if now.is_some() => Some(json!(r)),
                // A limit given while limits are off is kept by Transmission for later; Spore has
                // one value per limit, so it waits for `…-enabled`.
                (None, _) => None,
            };
            if let Some(rate) = rate {
                change.insert(key.into(), rate);
            }
        }
        for (name, key) in [
            ("peer-limit-global", "max_peers_total"),
            ("peer-limit-per-torrent", "max_peers_per_torrent"),
            ("download-queue-size", "max_active_downloads"),
            ("seed-queue-size", "max_active_seeds"),
        ] {
            if let Some(n) = u64_arg(args, name)? {
                change.insert(key.into(), json!(n));
            }
        }
        for (name, key) in [
            ("alt-speed-down", "alt_speed_down"),
            ("alt-speed-up", "alt_speed_up"),
        ] {
            if let Some(bytes) = rate_arg(args, name)? {
                change.insert(key.into(), json!(bytes));
            }
        }
        for (name, key) in [
            ("alt-speed-enabled", "alt_speed_enabled"),
            ("alt-speed-time-enabled", "alt_speed_time_enabled"),
            ("start-added-torrents", "start_added_torrents"),
        ] {
            if let Some(on) = bool_arg(args, name)? {
                change.insert(key.into(), json!(on));
            }
        }
        for (name, key) in [
            ("alt-speed-time-begin", "alt_speed_time_begin"),
            ("alt-speed-time-end", "alt_speed_time_end"),
            ("alt-speed-time-day", "alt_speed_time_day"),
        ] {
            if let Some(n) = u64_arg(args, name)? {
                change.insert(key.into(), json!(n));
            }
        }
        // Transmission's "tolerated" (plaintext preferred, encryption accepted) is closest to off.
        if let Some(mode) = str_arg(args, "encryption")? {
            let value = match mode.as_str() {
                "required" => "require",
                "preferred" => "prefer",
                "tolerated" => "off",
                _ => {
                    return Err(params(format!(
                        "encryption {mode:?}: required, preferred or tolerated"
                    )))
                }
            };
            change.insert("encryption".into(), value.into());
        }
        let ratio = f64_arg(args, "seedRatioLimit")?;
        match (bool_arg(args, "seedRatioLimited")?, ratio) {
            (Some(false), _) => {
                change.insert("seed_ratio".into(), Value::Null);
            }
            (Some(true), r) => {
                change.insert(
                    "seed_ratio".into(),
                    json!(r.or(current.seed_ratio).unwrap_or(2.0)),
                );
            }
            (None, Some(r)) if current.seed_ratio.is_some() => {
                change.insert("seed_ratio".into(), json!(r));
            }
            (None, _) => {}
        }
        if !change.is_empty() {
            self.daemon.update_settings(&Value::Object(change)).await?;
        }
        Ok(())
    }

    fn session_stats(&self) -> Map<String, Value> {
        let (torrents, (removed_down, removed_up)) = self.daemon.totals();
        let (mut down, mut up, mut rd, mut ru, mut active, mut paused) =
            (0u64, 0u64, 0.0, 0.0, 0, 0);
        for t in &torrents {
            down += t["downloaded"].as_u64().unwrap_or(0);
            up += t["uploaded"].as_u64().unwrap_or(0);
            rd += t["download_rate"].as_f64().unwrap_or(0.0);
            ru += t["upload_rate"].as_f64().unwrap_or(0.0);
            match t["state"].as_str().unwrap_or("") {
                "downloading" | "seeding" | "checking" | "fetching_metadata" => active += 1,
                "paused" | "finished" | "error" => paused += 1,
                _ => {}
            }
        }
        let stats = json!({
            "uploadedBytes": up + removed_up,
            "downloadedBytes": down + removed_down,
            "filesAdded": torrents.len(),
            "sessionCount": 1,
            "secondsActive": self.started.elapsed().as_secs(),
        });
        let v = json!({
            "activeTorrentCount": active,
            "pausedTorrentCount": paused,
            "torrentCount": torrents.len(),
            "downloadSpeed": rd as u64,
            "uploadSpeed": ru as u64,
            "current-stats": stats,
            "cumulative-stats": stats,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn torrent_get(&self, args: &Map<String, Value>) -> Result<Map<String, Value>, Fail> {
        let fields: Vec<String> = match args.get("fields") {
            Some(Value::Array(f)) => f
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| params("fields: expected strings"))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(params("torrent-get needs a fields list")),
        };
        // Each once, in the order asked.
        let mut seen = std::collections::HashSet::new();
        let fields: Vec<String> = fields
            .into_iter()
            .filter(|f| seen.insert(f.clone()))
            .collect();
        let table = match args.get("format").and_then(Value::as_str) {
            None | Some("objects") => false,
            Some("table") => true,
            Some(other) => {
                return Err(params(format!("format: {other:?} is not objects or table")))
            }
        };
        let recently = args.get("ids").and_then(Value::as_str) == Some("recently-active");
        let selected = self.select(args)?;
        let settings = self.daemon.settings.lock().clone();
        let mut rows = Vec::new();
        for (n, slot) in &selected {
            let obj = self.torrent_object(*n, slot, &fields, &settings);
            rows.push(obj);
        }
        let torrents = if table {
            let keys: Vec<&String> = fields
                .iter()
                .filter(|f| rows.first().is_none_or(|r| r.contains_key(*f)))
                .collect();
            let mut t = vec![json!(keys)];
            for r in &rows {
                t.push(Value::Array(
                    keys.iter()
                        .map(|k| r.get(*k).cloned().unwrap_or(Value::Null))
                        .collect(),
                ));
            }
            Value::Array(t)
        } else {
            Value::Array(rows.into_iter().map(Value::Object).collect())
        };
        let mut out = Map::new();
        out.insert("torrents".into(), torrents);
        if recently {
            let removed: Vec<u64> = self.ids.lock().removed.iter().map(|(n, _)| *n).collect();
            out.insert("removed".into(), json!(removed));
        }
        Ok(out)
    }

    /// One torrent's values for `fields` (unknown fields are left out, as Transmission does).
    fn torrent_object(
        &self,
        number: u64,
        slot: &Slot,
        fields: &[String],
        settings: &super::store::Settings,
    ) -> Map<String, Value> {
        const DETAIL: &[&str] = &[
            "files",
            "fileStats",
            "priorities",
            "wanted",
            "peers",
            "trackers",
            "trackerStats",
            "trackerList",
            "peersSendingToUs",
            "peersGettingFromUs",
        ];
        let detail = fields.iter().any(|f| DETAIL.contains(&f.as_str()));
        let view = self.daemon.view(slot, detail);
        let e = slot.lock();
        let handle = self.daemon.handle(&e.id);
        let phase = self.daemon.phase_of(&e.id);
        let status = handle.as_ref().map(|h| h.status());
        let torrent = e.torrent.clone();
        let size = view["size"].as_u64().unwrap_or(0);
        let progress = view["progress"].as_f64().unwrap_or(0.0);
        let left = match &status {
            Some(s) => s.left,
            None => ((1.0 - progress) * size as f64).round().max(0.0) as u64,
        };
        let complete = status.as_ref().map_or(e.record.complete, |s| s.complete);
        let code = match (&phase, complete) {
            (Phase::Paused | Phase::Finished | Phase::Error(_), _) => 0,
            // Transmission has no state for a move; its verification is the closest.
            (Phase::Checking | Phase::Moving, _) => 2,
            (Phase::Queued, false) => 3,
            (Phase::Queued, true) => 5,
            (Phase::FetchingMetadata, _) | (Phase::Running, false) => 4,
            (Phase::Running, true) => 6,
        };
        let error_string = match &phase {
            Phase::Error(m) => m.to_string(),
            _ => String::new(),
        };
        let rate_down = view["download_rate"].as_f64().unwrap_or(0.0) as u64;
        let rate_up = view["upload_rate"].as_f64().unwrap_or(0.0) as u64;
        let peer_list: Vec<Value> = if detail {
            view["peers"].as_array().cloned().unwrap_or_default()
        } else {
            Vec::new()
        };
        let files: Vec<Value> = view["files"].as_array().cloned().unwrap_or_default();
        let bytes_completed = |f: &Value| {
            let len = f["size"].as_u64().unwrap_or(0);
            (f["progress"].as_f64().unwrap_or(0.0) * len as f64).round() as u64
        };
        let priority = |f: &Value| match f["priority"].as_str() {
            Some("low") => -1,
            Some("high") => 1,
            _ => 0,
        };
        let kb = |r: Option<u64>| r.map_or(0, |r| r.div_ceil(KB));
        let ratio_mode = if e.record.seed_ratio.is_some() { 1 } else { 0 };
        let seconds_seeding = self.daemon.seeding_secs(&e);
        let mut out = Map::new();
        for f in fields {
            let v = match f.as_str() {
                "id" => json!(number),
                "hashString" => view["id"].clone(),
                "name" => view["name"].clone(),
                "status" => json!(code),
                "percentDone" => json!(progress),
                "percentComplete" => json!(match (&torrent, &status) {
                    (Some(t), Some(s)) if t.piece_count() > 0 => s.pieces_have as f64 / t.piece_count() as f64,
                    _ => progress,
                }),
                "metadataPercentComplete" => json!(if torrent.is_some() { 1.0 } else { 0.0 }),
                "rateDownload" => json!(rate_down),
                "rateUpload" => json!(rate_up),
                "eta" => json!(view["eta"].as_u64().map_or(-1, |s| s as i64)),
                "etaIdle" => json!(-1),
                "totalSize" => view["total_size"].clone(),
                "sizeWhenDone" => json!(size),
                "leftUntilDone" => json!(left),
                "haveValid" => json!(size.saturating_sub(left)),
                "haveUnchecked" | "corruptEver" | "desiredAvailable" | "webseedsSendingToUs" => json!(0),
                "downloadDir" => view["download_dir"].clone(),
                "error" => json!(if error_string.is_empty() { 0 } else { 3 }),
                "errorString" => json!(error_string),
                "peersConnected" => json!(status.as_ref().map_or(0, |s| s.peers)),
                "peersSendingToUs" => json!(peer_list.iter().filter(|p| p["download_rate"].as_f64().unwrap_or(0.0) > 0.0).count()),
                "peersGettingFromUs" => json!(peer_list.iter().filter(|p| p["upload_rate"].as_f64().unwrap_or(0.0) > 0.0).count()),
                "peersFrom" => json!({"fromCache": 0, "fromDht": 0, "fromIncoming": 0, "fromLpd": 0, "fromLtep": 0, "fromPex": 0, "fromTracker": 0}),
                "uploadRatio" => view["ratio"].clone(),
                "uploadedEver" => view["uploaded"].clone(),
                "downloadedEver" => view["downloaded"].clone(),
                "addedDate" => json!(e.record.added),
                "doneDate" => json!(e.record.done.unwrap_or(0)),
                "startDate" | "editDate" | "manualAnnounceTime" => json!(0),
                "activityDate" => json!(if rate_down + rate_up > 0 { super::store::now_secs() } else { 0 }),
                "dateCreated" => json!(torrent.as_ref().and_then(|t| t.creation_date).unwrap_or(0)),
                "comment" => json!(torrent.as_ref().and_then(|t| t.comment.clone()).unwrap_or_default()),
                "creator" => json!(torrent.as_ref().and_then(|t| t.created_by.clone()).unwrap_or_default()),
                "source" => json!(torrent.as_ref().and_then(|t| t.source.clone()).unwrap_or_default()),
                "isFinished" => json!(phase == Phase::Finished),
                "isPrivate" => view["private"].clone(),
                "isStalled" => json!(false),
                "labels" => json!(e.record.labels),
                "file-count" => json!(files.len()),
                "files" => json!(files.iter().map(|f| json!({
                    "name": f["path"],
                    "length": f["size"],
                    "bytesCompleted": bytes_completed(f),
                })).collect::<Vec<_>>()),
                "fileStats" => json!(files.iter().map(|f| json!({
                    "bytesCompleted": bytes_completed(f),
                    "wanted": f["selected"].as_bool().unwrap_or(true),
                    "priority": priority(f),
                })).collect::<Vec<_>>()),
                "priorities" => json!(files.iter().map(priority).collect::<Vec<_>>()),
                "wanted" => json!(files.iter().map(|f| u8::from(f["selected"].as_bool().unwrap_or(true))).collect::<Vec<_>>()),
                "trackers" => json!(trackers(&view).into_iter().map(|(id, tier, url)| json!({
                    "id": id, "tier": tier, "announce": url, "scrape": scrape_url(&url), "sitename": sitename(&url),
                })).collect::<Vec<_>>()),
                "trackerStats" => json!(trackers(&view).into_iter().map(|(id, tier, url)| {
                    let s = &view["trackers"][id];
                    let has = s["announce_ok"].is_boolean();
                    // Transmission's tr_tracker_state: 0 inactive, 1 waiting, 3 active.
                    let state = if s["announcing"] == true { 3 } else if s["next_announce"].is_u64() { 1 } else { 0 };
                    json!({
                    "id": id, "tier": tier, "announce": url, "scrape": scrape_url(&url),
                    "sitename": sitename(&url), "host": sitename(&url),
                    "announceState": state, "scrapeState": 0, "downloadCount": -1,
                    "leecherCount": s["leechers"].as_u64().map_or(-1, |n| n as i64),
                    "seederCount": s["seeders"].as_u64().map_or(-1, |n| n as i64),
                    "lastAnnouncePeerCount": s["last_peers"].as_u64().unwrap_or(0),
                    "lastAnnounceResult": match s["last_result"].as_str() { Some("ok") => "Success", Some(e) => e, None => "" },
                    "lastAnnounceStartTime": 0,
                    "lastAnnounceTime": s["last_announce"].as_u64().unwrap_or(0),
                    "lastAnnounceSucceeded": s["announce_ok"] == true,
                    "lastAnnounceTimedOut": false, "lastScrapeResult": "", "lastScrapeStartTime": 0,
                    "lastScrapeTime": 0, "lastScrapeSucceeded": false, "lastScrapeTimedOut": false,
                    "hasAnnounced": has, "hasScraped": false, "isBackup": false,
                    "nextAnnounceTime": s["next_announce"].as_u64().unwrap_or(0), "nextScrapeTime": 0,
                })}).collect::<Vec<_>>()),
                "trackerList" => {
                    let mut text = String::new();
                    let mut last = None;
                    for (_, tier, url) in trackers(&view) {
                        if last.is_some_and(|t| t != tier) {
                            text.push('\n');
                        }
                        text += &url;
                        text.push('\n');
                        last = Some(tier);
                    }
                    json!(text)
                }
                "peers" => json!(peer_list.iter().map(|p| {
                    let addr: Option<std::net::SocketAddr> = p["addr"].as_str().and_then(|a| a.parse().ok());
                    let down = p["download_rate"].as_f64().unwrap_or(0.0) as u64;
                    let up = p["upload_rate"].as_f64().unwrap_or(0.0) as u64;
                    let incoming = p["incoming"] == true;
                    let utp = p["utp"] == true;
                    let uploading = up > 0 || p["uploading_to"] == true;
                    // Transmission's letters: D downloading from it, U uploading to it, E
                    // encrypted, I it connected to us, T over uTP.
                    let encrypted = p["encrypted"] == true;
                    let mut flags = String::new();
                    if down > 0 { flags.push('D'); }
                    if uploading { flags.push('U'); }
                    if encrypted { flags.push('E'); }
                    if incoming { flags.push('I'); }
                    if utp { flags.push('T'); }
                    json!({
                        "address": addr.map_or(String::new(), |a| a.ip().to_string()),
                        "port": addr.map_or(0, |a| a.port()),
                        "clientName": p["client"].as_str().unwrap_or(""), "flagStr": flags, "progress": 0.0,
                        "rateToClient": down, "rateToPeer": up,
                        "isDownloadingFrom": down > 0, "isUploadingTo": uploading,
                        "clientIsChoked": false, "clientIsInterested": false,
                        "peerIsChoked": false, "peerIsInterested": false,
                        "isEncrypted": encrypted, "isIncoming": incoming, "isUTP": utp,
                    })
                }).collect::<Vec<_>>()),
                "magnetLink" => view["magnet"].clone(),
                "queuePosition" => json!(e.record.queue_position),
                "seedRatioLimit" => json!(e.record.seed_ratio.or(settings.seed_ratio).unwrap_or(2.0)),
                "seedRatioMode" => json!(ratio_mode),
                "seedIdleLimit" => json!(30),
                "seedIdleMode" => json!(0),
                "secondsSeeding" => json!(seconds_seeding),
                "secondsDownloading" => json!(0),
                "recheckProgress" => json!(e.moving.as_ref().map_or(0.0, |p| p.fraction())),
                "pieceCount" => view["pieces"].clone(),
                "pieceSize" => json!(torrent.as_ref().map_or(0, |t| t.piece_length)),
                "pieces" => {
                    let bytes = match (&handle, &torrent) {
                        (Some(h), _) => h.have().to_bytes().to_vec(),
                        (None, Some(t)) => {
                            let n = t.piece_count() as usize;
                            let mut b = vec![if e.record.complete { 0xff } else { 0 }; n.div_ceil(8)];
                            if e.record.complete && !n.is_multiple_of(8) {
                                if let Some(last) = b.last_mut() {
                                    *last = 0xffu8 << (8 - n % 8);
                                }
                            }
                            b
                        }
                        _ => Vec::new(),
                    };
                    json!(data_encoding::BASE64.encode(&bytes))
                }
                "downloadLimit" => json!(kb(e.record.max_download_rate)),
                "downloadLimited" => json!(e.record.max_download_rate.is_some()),
                "uploadLimit" => json!(kb(e.record.max_upload_rate)),
                "uploadLimited" => json!(e.record.max_upload_rate.is_some()),
                "honorsSessionLimits" => json!(true),
                "bandwidthPriority" => json!(0),
                "peer-limit" | "maxConnectedPeers" => json!(settings.max_peers_per_torrent),
                "primary-mime-type" => json!("application/octet-stream"),
                "webseeds" => json!(torrent.as_ref().map_or_else(Vec::new, |t| t.web_seeds.clone())),
                "group" | "torrentFile" => json!(""),
                "sequentialDownload" => json!(false),
                _ => continue,
            };
            out.insert(f.clone(), v);
        }
        out
    }

    async fn torrent_add(
        self: &Arc<Self>,
        args: &Map<String, Value>,
    ) -> Result<Map<String, Value>, Fail> {
        let source = match (str_arg(args, "filename")?, str_arg(args, "metainfo")?) {
            (Some(_), Some(_)) => return Err(params("give filename or metainfo, not both")),
            (None, None) => return Err(params("torrent-add needs filename or metainfo")),
            (None, Some(b64)) => {
                let clean: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let bytes = data_encoding::BASE64
                    .decode(clean.as_bytes())
                    .map_err(|_| Fail::Failed("invalid or corrupt torrent file".into()))?;
                Source::TorrentFile(bytes)
            }
            (Some(name), None) => {
                let lower = name.to_ascii_lowercase();
                if lower.starts_with("magnet:") {
                    Source::Magnet(name)
                } else if lower.starts_with("http://") || lower.starts_with("https://") {
                    Source::Url(name)
                } else {
                    Source::Path(PathBuf::from(name))
                }
            }
        };
        let dir = str_arg(args, "download-dir")?.map(PathBuf::from);
        let start_added = self.daemon.settings.lock().start_added_torrents;
        let paused = bool_arg(args, "paused")?.unwrap_or(!start_added);
        let labels = labels_arg(args)?;
        let selection = FileChange::parse(args)?;
        let added = self
            .daemon
            .add(
                source,
                dir,
                paused || !selection.is_empty(),
                labels.unwrap_or_default(),
            )
            .await;
        let (key, hash) = match added {
            Ok(view) => (
                "torrent-added",
                view["id"].as_str().unwrap_or("").to_string(),
            ),
            Err(ApiError::Conflict(m)) => match m
                .split_whitespace()
                .find(|w| super::store::parse_id(w).is_some())
            {
                Some(hash) => ("torrent-duplicate", hash.to_string()),
                None => return Err(Fail::Failed("duplicate torrent".into())),
            },
            Err(e) => return Err(e.into()),
        };
        let id = super::store::parse_id(&hash)
            .ok_or_else(|| Fail::Failed("added torrent has no id".into()))?;
        if key == "torrent-added" && !selection.is_empty() {
            let slot = self.daemon.slot(&id)?;
            // A magnet link's files are not known yet: like Transmission, its selection is
            // left for a `torrent-set` once they are.
            let known = slot.lock().torrent.is_some();
            let change = match selection.to_change(&slot) {
                Ok(change) => change.filter(|_| known),
                Err(fail) if known => {
                    // A bad file index: the add is undone, as if it had been refused outright.
                    self.daemon.remove(&id, false).await?;
                    return Err(fail);
                }
                Err(_) => None,
            };
            if let Some(change) = change {
                self.daemon.update(&id, &change).await?;
            }
            if !paused {
                self.daemon.resume(&id).await?;
            }
        }
        let number = self
            .numbered()
            .into_iter()
            .find(|(_, s)| s.lock().id == id)
            .map(|(n, _)| n)
            .ok_or_else(|| Fail::Failed("torrent not found".into()))?;
        self.ids.lock().active.insert(id, Instant::now());
        let name = self.daemon.view(&self.daemon.slot(&id)?, false)["name"].clone();
        let mut out = Map::new();
        out.insert(
            key.into(),
            json!({"id": number, "name": name, "hashString": hash}),
        );
        Ok(out)
    }

    async fn torrent_set(&self, args: &Map<String, Value>) -> Result<(), Fail> {
        let selection = FileChange::parse(args)?;
        let labels = labels_arg(args)?;
        let location = str_arg(args, "location")?;
        let mut limits = Vec::new();
        for (value, enabled, key) in [
            ("downloadLimit", "downloadLimited", "max_download_rate"),
            ("uploadLimit", "uploadLimited", "max_upload_rate"),
        ] {
            limits.push((key, bool_arg(args, enabled)?, rate_arg(args, value)?));
        }
        let ratio = f64_arg(args, "seedRatioLimit")?;
        if ratio.is_some_and(|r| r < 0.0) {
            return Err(params("seedRatioLimit must not be negative"));
        }
        let ratio_mode = u64_arg(args, "seedRatioMode")?;
        if ratio_mode.is_some_and(|m| m > 2) {
            return Err(params("seedRatioMode: expected 0, 1 or 2"));
        }
        let queue_position = u64_arg(args, "queuePosition")?;
        let tracker_add: Option<Vec<String>> = list_arg(args, "trackerAdd", "URLs")?;
        let tracker_remove: Option<Vec<u64>> = list_arg(args, "trackerRemove", "tracker ids")?;
        let tracker_list = str_arg(args, "trackerList")?.map(|t| parse_tracker_list(&t));
        let global_ratio = self.daemon.settings.lock().seed_ratio;
        if ratio_mode == Some(2) && global_ratio.is_some() {
            return Err(Fail::Failed(
                "seedRatioMode 2 (unlimited) cannot override Spore's global seed ratio".into(),
            ));
        }
        for (_, slot) in self.select(args)? {
            let id = slot.lock().id;
            if let Some(labels) = &labels {
                self.set_labels(&id, labels.clone())?;
            }
            let (down_now, up_now, ratio_now) = {
                let e = slot.lock();
                (
                    e.record.max_download_rate,
                    e.record.max_upload_rate,
                    e.record.seed_ratio,
                )
            };
            let mut c = Map::new();
            for (i, &(key, on, rate)) in limits.iter().enumerate() {
                let limited = if i == 0 { down_now } else { up_now }.is_some();
                // Transmission keeps a limit apart from whether it is on; Spore keeps one value,
                // so a limit given while off waits for `…Limited`, as it would have no effect there.
                match (on, rate) {
                    (Some(false), _) => {
                        c.insert(key.into(), Value::Null);
                    }
                    (Some(true), Some(r)) => {
                        c.insert(key.into(), json!(r));
                    }
                    (None, Some(r)) if limited => {
                        c.insert(key.into(), json!(r));
                    }
                    _ => {}
                }
            }
            // Likewise a ratio given without seedRatioMode takes effect only in mode 1.
            match (ratio_mode, ratio) {
                (Some(0 | 2), _) => {
                    c.insert("seed_ratio".into(), Value::Null);
                }
                (Some(_), r) => {
                    let r = r.or(ratio_now).or(global_ratio).unwrap_or(2.0);
                    c.insert("seed_ratio".into(), json!(r));
                }
                (None, Some(r)) if ratio_now.is_some() => {
                    c.insert("seed_ratio".into(), json!(r));
                }
                (None, _) => {}
            }
            if let Some(Value::Object(files)) = selection.to_change(&slot)? {
                c.extend(files);
            }
            if let Some(n) = queue_position {
                c.insert("queue_position".into(), json!(n));
            }
            if tracker_add.is_some() || tracker_remove.is_some() || tracker_list.is_some() {
                let mut tiers = match &tracker_list {
                    Some(list) => list.clone(),
                    None => {
                        let e = slot.lock();
                        e.record
                            .trackers
                            .clone()
                            .or_else(|| e.torrent.as_ref().map(|t| t.trackers.clone()))
                            .unwrap_or_default()
                    }
                };
                if let Some(remove) = &tracker_remove {
                    // Tracker ids are positions in the list `trackers` shows, in tier order.
                    let mut n = 0u64;
                    for tier in &mut tiers {
                        tier.retain(|_| {
                            let keep = !remove.contains(&n);
                            n += 1;
                            keep
                        });
                    }
                }
                for url in tracker_add.iter().flatten() {
                    if !tiers.iter().flatten().any(|u| u == url) {
                        tiers.push(vec![url.clone()]);
                    }
                }
                tiers.retain(|t| !t.is_empty());
                c.insert("trackers".into(), json!(tiers));
            }
            if !c.is_empty() {
                self.daemon.update(&id, &Value::Object(c)).await?;
            }
            if let Some(dir) = &location {
                self.set_location(&slot, PathBuf::from(dir), false).await?;
            }
        }
        Ok(())
    }

    fn set_labels(&self, id: &InfoHash, labels: Vec<String>) -> Result<(), Fail> {
        let slot = self.daemon.slot(id)?;
        slot.lock().record.labels = labels;
        self.daemon.save(&slot, false);
        Ok(())
    }

    /// `torrent-set-location`: with `move`, the data goes along (the daemon's move: rename, or copy
    /// and delete across file systems); without, the torrent looks for its data there (a recheck).
    async fn set_location(&self, slot: &Slot, dir: PathBuf, move_data: bool) -> Result<(), Fail> {
        let id = slot.lock().id;
        if move_data {
            self.daemon
                .update(&id, &json!({"download_dir": dir}))
                .await?;
            return Ok(());
        }
        if !dir.is_absolute() {
            return Err(params("location must be an absolute path"));
        }
        self.daemon.not_moving(slot)?;
        self.daemon.check_dir(&dir).await?;
        let before = self.daemon.client.hold(&id).await;
        {
            let mut e = slot.lock();
            e.record.download_dir = dir;
            e.record.complete = false;
        }
        self.forget_resume(slot);
        self.daemon.save(slot, true);
        if let Some(before) = before {
            self.daemon.client.release(&id, before, true);
        }
        Ok(())
    }

    /// Makes the next start check every piece: resume data that fits no torrent is not used.
    fn forget_resume(&self, slot: &Slot) {
        let (id, gate) = {
            let e = slot.lock();
            (e.id, e.gate.clone())
        };
        let empty = super::store::ResumeFile {
            pieces: 0,
            have: String::new(),
            files: Vec::new(),
            saved_at: 0,
        };
        gate.write(|| {
            if let Err(err) = self.daemon.store.save_resume(&id, &empty) {
                tracing::error!("clearing resume data: {err:#}");
            }
        });
    }

    /// `torrent-verify`: stops the torrent, forgets its resume data, and starts it again, which
    /// checks every piece. A stopped torrent is checked when it is next started.
    async fn verify(&self, slot: &Slot) -> Result<(), Fail> {
        self.daemon.not_moving(slot)?;
        let id = slot.lock().id;
        let before = self.daemon.phase_of(&id);
        if before == Phase::FetchingMetadata {
            return Ok(());
        }
        let active = matches!(before, Phase::Running | Phase::Checking | Phase::Queued);
        let held = if active {
            self.daemon.client.hold(&id).await
        } else {
            None
        };
        self.forget_resume(slot);
        if let Some(before) = held {
            slot.lock().record.complete = false;
            self.daemon.save(slot, true);
            self.daemon.client.release(&id, before, true);
        }
        Ok(())
    }

    async fn free_space(&self, args: &Map<String, Value>) -> Result<Map<String, Value>, Fail> {
        let path = str_arg(args, "path")?.ok_or_else(|| params("free-space needs a path"))?;
        let dir = PathBuf::from(&path);
        self.daemon.check_dir(&dir).await?;
        let (free, total) = super::blocking(move || free_bytes(&dir))
            .await?
            .ok_or_else(|| Fail::Failed(format!("cannot read the free space of {path}")))?;
        let mut out = Map::new();
        out.insert("path".into(), json!(path));
        out.insert("size-bytes".into(), json!(free));
        out.insert("total_size".into(), json!(total));
        Ok(out)
    }
}

/// (free, total) bytes of the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((
        (st.f_bavail as u64).saturating_mul(unit),
        (st.f_blocks as u64).saturating_mul(unit),
    ))
}

/// (tracker number, tier, announce URL) from a detailed view.
fn trackers(view: &Value) -> Vec<(usize, u64, String)> {
    view["trackers"]
        .as_array()
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        i,
                        t["tier"].as_u64().unwrap_or(0),
                        t["url"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The scrape URL of an announce URL (BEP 48 convention), or "" when it has none.
fn scrape_url(announce: &str) -> String {
    match announce.rfind('/') {
        Some(i) if announce[i + 1..].starts_with("announce") => {
            format!(
                "{}/scrape{}",
                &announce[..i],
                &announce[i + 1 + "announce".len()..]
            )
        }
        _ => String::new(),
    }
}

fn sitename(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    api::host_name(host).to_string()
}

/// File selection and priorities from `files-wanted`, `files-unwanted`, `priority-*` (indices into the
/// torrent's files as Transmission lists them: pad files left out; an empty list means every file).
#[derive(Default)]
struct FileChange {
    wanted: Option<Vec<usize>>,
    unwanted: Option<Vec<usize>>,
    high: Option<Vec<usize>>,
    low: Option<Vec<usize>>,
    normal: Option<Vec<usize>>,
}

impl FileChange {
    fn parse(args: &Map<String, Value>) -> Result<FileChange, Fail> {
        let list = |key: &str| -> Result<Option<Vec<usize>>, Fail> {
            match args.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_u64()
                            .map(|n| n as usize)
                            .ok_or_else(|| params(format!("{key}: expected file indices")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(params(format!("{key}: expected a list of file indices"))),
            }
        };
        Ok(FileChange {
            wanted: list("files-wanted")?,
            unwanted: list("files-unwanted")?,
            high: list("priority-high")?,
            low: list("priority-low")?,
            normal: list("priority-normal")?,
        })
    }

    fn is_empty(&self) -> bool {
        self.wanted.is_none()
            && self.unwanted.is_none()
            && self.high.is_none()
            && self.low.is_none()
            && self.normal.is_none()
    }

    /// The daemon's `files`/`priorities` change for this torrent, `None` when there is nothing to do.
    fn to_change(&self, slot: &Slot) -> Result<Option<Value>, Fail> {
        if self.is_empty() {
            return Ok(None);
        }
        let (pads, files, levels) = {
            let e = slot.lock();
            let Some(t) = e.torrent.as_ref() else {
                return Err(Fail::Failed(
                    "the torrent's metadata is not known yet: select files once it is".into(),
                ));
            };
            let pads: Vec<bool> = t.files.iter().map(|f| f.attr.pad).collect();
            (pads, e.record.files.clone(), e.record.priorities.clone())
        };
        self.change(&pads, files, levels).map(Some)
    }

    /// The change for a torrent whose files are pad files or not as `pads` says, its selection and
    /// priorities now `files` and `levels` (by the torrent's own file index).
    fn change(
        &self,
        pads: &[bool],
        files: Option<Vec<bool>>,
        levels: Option<Vec<u8>>,
    ) -> Result<Value, Fail> {
        let n = pads.len();
        // Transmission's file index → the torrent's.
        let real: Vec<usize> = (0..n).filter(|i| !pads[*i]).collect();
        let map = |list: &Vec<usize>| -> Result<Vec<usize>, Fail> {
            if list.is_empty() {
                return Ok(real.clone());
            }
            list.iter()
                .map(|i| {
                    real.get(*i)
                        .copied()
                        .ok_or_else(|| params(format!("file index {i} is out of range")))
                })
                .collect()
        };
        let mut change = Map::new();
        if self.wanted.is_some() || self.unwanted.is_some() {
            let mut files = files.unwrap_or_else(|| vec![true; n]);
            files.resize(n, true);
            if let Some(wanted) = &self.wanted {
                for i in map(wanted)? {
                    files[i] = true;
                }
            }
            if let Some(unwanted) = &self.unwanted {
                for i in map(unwanted)? {
                    files[i] = false;
                }
            }
            change.insert("files".into(), json!(files));
        }
        if self.high.is_some() || self.low.is_some() || self.normal.is_some() {
            let mut levels = levels.unwrap_or_else(|| vec![engine::PRIORITY_NORMAL; n]);
            levels.resize(n, engine::PRIORITY_NORMAL);
            for (list, level) in [
                (&self.normal, engine::PRIORITY_NORMAL),
                (&self.low, engine::PRIORITY_LOW),
                (&self.high, engine::PRIORITY_HIGH),
            ] {
                if let Some(list) = list {
                    for i in map(list)? {
                        levels[i] = level;
                    }
                }
            }
            let names: Vec<&str> = levels.iter().map(|l| super::priority_name(*l)).collect();
            change.insert("priorities".into(), json!(names));
        }
        Ok(Value::Object(change))
    }
}

fn str_arg(args: &Map<String, Value>, key: &str) -> Result<Option<String>, Fail> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(params(format!("{key}: expected a string"))),
    }
}

fn bool_arg(args: &Map<String, Value>, key: &str) -> Result<Option<bool>, Fail> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        // Some clients send 0/1.
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 1) => {
            Ok(Some(n.as_u64() == Some(1)))
        }
        Some(_) => Err(params(format!("{key}: expected a boolean"))),
    }
}

fn u64_arg(args: &Map<String, Value>, key: &str) -> Result<Option<u64>, Fail> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x < 1e15)
                    .map(|x| x as u64)
            })
            .map(Some)
            .ok_or_else(|| params(format!("{key}: expected a non-negative integer"))),
    }
}

/// A speed in Transmission's kB/s, as bytes per second.
fn rate_arg(args: &Map<String, Value>, key: &str) -> Result<Option<u64>, Fail> {
    u64_arg(args, key)?
        .map(|kb| {
            kb.checked_mul(KB)
                .ok_or_else(|| params(format!("{key}: too large")))
        })
        .transpose()
}

fn f64_arg(args: &Map<String, Value>, key: &str) -> Result<Option<f64>, Fail> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| params(format!("{key}: expected a number"))),
    }
}

fn labels_arg(args: &Map<String, Value>) -> Result<Option<Vec<String>>, Fail> {
    let Some(v) = args.get("labels").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let list: Vec<String> = serde_json::from_value(v.clone())
        .map_err(|_| params("labels: expected a list of strings"))?;
    super::check_labels(list).map(Some).map_err(params)
}

/// A list of strings (`trackerAdd`) or of numbers (`trackerRemove`), `None` when absent.
fn list_arg<T: serde::de::DeserializeOwned>(
    args: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<Vec<T>>, Fail> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|_| params(format!("{key}: expected a list of {what}"))),
    }
}

/// Transmission's `trackerList`: announce URLs one per line, a blank line between tiers.
fn parse_tracker_list(text: &str) -> Vec<Vec<String>> {
    let mut tiers: Vec<Vec<String>> = vec![Vec::new()];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            if tiers.last().is_some_and(|t| !t.is_empty()) {
                tiers.push(Vec::new());
            }
        } else if let Some(tier) = tiers.last_mut() {
            if !tier.iter().any(|u| u == line) {
                tier.push(line.to_string());
            }
        }
    }
    tiers.retain(|t| !t.is_empty());
    tiers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_to_snake_case_and_back() {
        assert_eq!(snake("hashString"), "hash_string");
        assert_eq!(snake("peer-limit"), "peer_limit");
        assert_eq!(snake("rpc-version-semver"), "rpc_version_semver");
        assert_eq!(old_name("percent_done"), "percentDone");
        assert_eq!(old_name("torrent_get"), "torrent-get");
        assert_eq!(old_name("files_wanted"), "files-wanted");
        assert_eq!(old_name("recently_active"), "recently-active");
        assert_eq!(old_name("no_such_thing"), "no_such_thing");
    }

    #[test]
    fn file_indices_leave_out_pad_files() {
        let args = |v: Value| v.as_object().cloned().unwrap_or_default();
        // Files a, pad, b, pad, c: Transmission's 0, 1, 2 are the torrent's 0, 2, 4.
        let pads = [false, true, false, true, false];
        let c = FileChange::parse(&args(json!({"files-unwanted": [1], "priority-high": [2]})))
            .map_err(|f| f.message().to_string());
        let c = c.expect("valid");
        let v = c
            .change(&pads, None, None)
            .map_err(|f| f.message().to_string());
        assert_eq!(
            v,
            Ok(json!({
                "files": [true, true, false, true, true],
                "priorities": ["normal", "normal", "normal", "normal", "high"],
            }))
        );
        // An empty list means every file; the selection kept starts from the current one.
        let c = FileChange::parse(&args(json!({"files-wanted": []}))).expect("valid");
        let v = c
            .change(&pads, Some(vec![false; 5]), None)
            .map_err(|f| f.message().to_string());
        assert_eq!(v, Ok(json!({"files": [true, false, true, false, true]})));
        // Past the last real file.
        let c = FileChange::parse(&args(json!({"files-wanted": [3]}))).expect("valid");
        assert!(c.change(&pads, None, None).is_err());
        assert!(FileChange::parse(&args(json!({"files-wanted": [-1]}))).is_err());
        assert!(FileChange::parse(&args(json!({"priority-low": "all"}))).is_err());
    }

    #[test]
    fn scrape_urls_follow_the_announce_convention() {
        assert_eq!(
            scrape_url("http://t.example:80/announce"),
            "http://t.example:80/scrape"
        );
        assert_eq!(
            scrape_url("http://t.example/x/announce.php?k=1"),
            "http://t.example/x/scrape.php?k=1"
        );
        assert_eq!(scrape_url("http://t.example/a"), "");
        assert_eq!(sitename("udp://[::1]:6969/announce"), "::1");
        assert_eq!(sitename("http://t.example:80/announce"), "t.example");
    }
}
