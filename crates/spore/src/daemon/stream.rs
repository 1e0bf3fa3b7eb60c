//! `GET /stream/{id}/{file-index}`: a torrent's file over HTTP with byte ranges, served while it
//! downloads. A read waits for the pieces it covers, which the engine fetches before anything else
//! (time-critical pieces) together with a read-ahead window; only verified pieces are read, from disk.

use engine::InfoHash;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{ApiError, Daemon};

/// Streams served at once; one more gets 503 with `Retry-After`.
pub const MAX_STREAMS: usize = 16;
/// Bytes read from disk and sent at a time: what one stream holds in memory.
pub const CHUNK: usize = 256 << 10;
/// How far past the read position the engine fetches first (cut at the end of the range).
pub const READ_AHEAD: u64 = 8 << 20;
/// How long a read waits for its pieces. Kept under the API's idle timeout (60 s by default), which
/// would close the connection of a response that sends nothing for that long anyway.
pub const READ_WAIT: Duration = Duration::from_secs(45);

static STREAMS: Semaphore = Semaphore::const_new(MAX_STREAMS);

/// The `Content-Type` for a file name, by its extension.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "txt" => "text/plain; charset=utf-8",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    /// No range (or one we do not serve, such as several at once): the whole file, 200.
    Whole,
    /// The bytes `start..end`, 206.
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Parses a single `bytes=` range: `a-b`, `a-` (to the end) or `-n` (the last `n` bytes). A header that
/// is not one of these is ignored, as RFC 9110 allows, and the whole file served.
pub fn parse_range(header: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let num = |s: &str| -> Option<Option<u64>> {
        let s = s.trim();
        if s.is_empty() {
            Some(None)
        } else if s.bytes().all(|c| c.is_ascii_digit()) {
            // Past u64: larger than any file, so as good as the maximum.
            Some(Some(s.parse().unwrap_or(u64::MAX)))
        } else {
            None
        }
    };
    let (Some(a), Some(b)) = (num(a), num(b)) else {
        return Wanted::Whole;
    };
    match (a, b) {
        (Some(start), end) => {
            if end.is_some_and(|e| e < start) {
                return Wanted::Whole;
            }
            if start >= len {
                return Wanted::Unsatisfiable;
            }
            let end = end.map_or(len, |e| e.saturating_add(1).min(len));
            Wanted::Part(start, end)
        }
        (None, Some(suffix)) => {
            if suffix == 0 || len == 0 {
                return Wanted::Unsatisfiable;
            }
            Wanted::Part(len - suffix.min(len), len)
        }
        (None, None) => Wanted::Whole,
    }
}

/// Where the bytes come from: the running torrent (waiting for pieces), or the finished data of one
/// that is not running.
enum Source {
    Live(engine::Reader),
    Done(Arc<engine::Storage>),
}

impl Source {
    async fn read(&self, offset: u64, len: usize, ahead_end: u64) -> Result<Bytes, String> {
        match self {
            Source::Live(reader) => reader
                .read(offset, len, ahead_end, READ_WAIT)
                .await
                .map_err(|e| e.to_string()),
            Source::Done(storage) => {
                let storage = storage.clone();
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len];
                    storage.read(offset, &mut buf).map(|()| Bytes::from(buf))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("reading the data: {e}"))
            }
        }
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// Serves `GET`/`HEAD /stream/{id}/{index}` (authorized already).
pub async fn serve(
    daemon: Arc<Daemon>,
    id: InfoHash,
    index: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let index: usize = index
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{index:?} is not a file index")))?;
    let slot = daemon.slot(&id)?;
    // Its files are going from one place to another: nothing to read from either for now.
    daemon.not_moving(&slot)?;
    let handle = daemon.handle(&id);
    let (torrent, handle, dir, selected, complete) = {
        let e = slot.lock();
        let Some(torrent) = e.disk_torrent() else {
            return Err(ApiError::Conflict(
                "the torrent's metadata has not arrived yet".into(),
            ));
        };
        let selected = e
            .record
            .files
            .as_ref()
            .is_none_or(|f| f.get(index).copied().unwrap_or(true));
        (
            torrent,
            handle,
            e.record.download_dir.clone(),
            selected,
            e.record.complete,
        )
    };
    let file = torrent
        .files
        .get(index)
        .filter(|f| !f.attr.pad)
        .ok_or(ApiError::NotFound)?;
    if !selected {
        return Err(ApiError::Conflict(
            "the file is not selected for download".into(),
        ));
    }
    let len = file.length;
    let name = file.path.last().map_or("", String::as_str);
    let wanted = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (start, end, status) = match wanted {
        Wanted::Whole => (0, len, StatusCode::OK),
        Wanted::Part(a, b) => (a, b, StatusCode::PARTIAL_CONTENT),
        Wanted::Unsatisfiable => {
            let mut r = refuse(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "the range is outside the file",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r.headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return Ok(r);
        }
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    if *method == Method::HEAD || start == end {
        return Ok(response);
    }
    let source = match handle {
        Some(handle) => Source::Live(handle.reader()),
        None if complete => Source::Done(Arc::new(engine::Storage::new(&torrent, &dir))),
        None => {
            return Ok(refuse(
                StatusCode::CONFLICT,
                "the torrent is not running: resume it to stream its files",
            ))
        }
    };
    let Ok(permit) = STREAMS.try_acquire() else {
        let mut r = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{MAX_STREAMS} streams are being served already"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(r);
    };
    // Piece space: the file's bytes start at its offset there.
    let base = file.offset;
    let body = Chunks {
        source,
        permit,
        pos: base + start,
        end: base + end,
    };
    // The first chunk before the headers: a read that cannot be served is an error status, not a
    // truncated body.
    let asked = std::time::Instant::now();
    let first = body.next().await;
    tracing::debug!(
        "stream {}/{index}: bytes {start}-{end} of {len}, first chunk in {:?}",
        id.to_hex(),
        asked.elapsed()
    );
    let (first, body) = match first {
        Ok(Some(pair)) => pair,
        Ok(None) => return Ok(response),
        Err(e) => return Ok(refuse(StatusCode::SERVICE_UNAVAILABLE, &e)),
    };
    let stream =
        futures_util::stream::unfold((Some(first), Some(body)), |(first, body)| async move {
            if let Some(chunk) = first {
                return Some((Ok(chunk), (None, body)));
            }
            match body?.next().await {
                Ok(Some((chunk, body))) => Some((Ok(chunk), (None, Some(body)))),
                Ok(None) => None,
                Err(e) => {
                    tracing::info!("stream ended early: {e}");
                    Some((Err(std::io::Error::other(e)), (None, None)))
                }
            }
        });
    *response.body_mut() = axum::body::Body::from_stream(stream);
    Ok(response)
}

/// The rest of a response's bytes: one chunk read at a time, so a stream holds at most one in memory.
struct Chunks {
    source: Source,
    /// A place among the [`MAX_STREAMS`], given back when the response is done or dropped.
    #[allow(dead_code)]
    permit: SemaphorePermit<'static>,
    pos: u64,
    end: u64,
}

impl Chunks {
    async fn next(mut self) -> Result<Option<(Bytes, Chunks)>, String> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let len = (self.end - self.pos).min(CHUNK as u64);
        let ahead = self.pos.saturating_add(READ_AHEAD).min(self.end);
        let chunk = self.source.read(self.pos, len as usize, ahead).await?;
        self.pos += chunk.len() as u64;
        Ok(Some((chunk, self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(Some(h), 1000);
        assert_eq!(parse_range(None, 1000), Wanted::Whole);
        assert_eq!(r("bytes=0-99"), Wanted::Part(0, 100));
        assert_eq!(r("bytes=500-"), Wanted::Part(500, 1000));
        assert_eq!(r("bytes=-100"), Wanted::Part(900, 1000));
        assert_eq!(r("bytes=-5000"), Wanted::Part(0, 1000));
        assert_eq!(r("bytes=990-5000"), Wanted::Part(990, 1000));
        assert_eq!(r("bytes=1000-"), Wanted::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Wanted::Unsatisfiable);
        assert_eq!(r("bytes=5-1"), Wanted::Whole);
        assert_eq!(r("bytes=0-1,5-6"), Wanted::Whole);
        assert_eq!(r("items=0-1"), Wanted::Whole);
        assert_eq!(r("bytes=a-b"), Wanted::Whole);
        assert_eq!(r("bytes=99999999999999999999999-"), Wanted::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a/Movie.MKV"), "video/x-matroska");
        assert_eq!(content_type("x.mp4"), "video/mp4");
        assert_eq!(content_type("index.html"), "application/octet-stream");
        assert_eq!(content_type("README"), "application/octet-stream");
    }
}
