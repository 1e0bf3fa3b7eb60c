//! The response decoder: status line and headers, then a body framed by Content-Length, by chunks or
//! by the end of the connection, decoded as the bytes arrive. What it keeps is bounded by [`Limits`]
//! whatever the server sends: the head, the body, and one chunk-size line; bytes past the end of the
//! response are never looked at.

/// The longest chunk-size line (size and extensions, without its CRLF); real ones are a few bytes.
pub const MAX_CHUNK_LINE: usize = 256;

/// What one response may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Status line and headers, up to (not counting) the blank line.
    pub head: usize,
    /// The body, after de-chunking.
    pub body: usize,
    /// Chunks of a chunked body (the final empty one not counted).
    pub chunks: usize,
}

impl Limits {
    /// `head` and `body` as given; chunks: 64 and one per 256 bytes of `body`, so the framing of a
    /// chunked body (at most [`MAX_CHUNK_LINE`] + 4 bytes a chunk) costs about as much as the body
    /// itself at worst, and 1-byte chunks cannot turn a body cap into hundreds of times the work.
    pub const fn new(head: usize, body: usize) -> Limits {
        Limits {
            head,
            body,
            chunks: 64 + body / 256,
        }
    }
}

/// How the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A TCP FIN, or TLS with close_notify: the bytes before it are all the server meant to send.
    Clean,
    /// TLS closed without close_notify: an attacker on the path may have cut the stream, so a body
    /// that ends only with the connection is refused.
    Cut,
}

/// Why a response could not be read. Messages say what the server did; callers put its name in front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("sent no HTTP headers")]
    NoHead,
    #[error("sent more than {0} bytes of headers")]
    HeadTooLong(usize),
    #[error("did not answer in HTTP")]
    NotHttp,
    #[error("sent a bad status line {0:?}")]
    BadStatus(String),
    /// Not a number, or two that differ.
    #[error("sent a bad Content-Length {0:?}")]
    BadLength(String),
    #[error("sent more than {0} bytes")]
    BodyTooLong(usize),
    #[error("sent bad chunked data")]
    BadChunk,
    #[error("sent a body in more than {0} chunks")]
    TooManyChunks(usize),
    #[error("closed the connection before the end of the body")]
    Truncated,
    #[error("closed the TLS connection without close_notify and without a length: the body may be cut short")]
    Unterminated,
}

/// The status line and headers of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Status line and header lines, separated by CRLF (bytes that are not UTF-8 replaced).
    text: String,
}

impl Head {
    /// Every header, in order, name and value trimmed; lines without a colon are skipped.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text.split("\r\n").skip(1).filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim(), value.trim()))
        })
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// A whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Body bytes still to come of a Content-Length.
    Length(usize),
    /// No length: the body is what comes before the end of the connection.
    ToEnd,
    ChunkLine,
    /// Bytes of the current chunk still to come.
    ChunkData(usize),
    /// How much of the CRLF after a chunk's data has come.
    ChunkEnd(usize),
    /// The head announced a body over the cap: an error at the next push or at the end, so a caller
    /// has the head first and may not want the body anyway.
    TooLong,
    Done,
}

/// Decodes one response from bytes pushed as they arrive.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    state: State,
    /// The head, or a chunk-size line, while it is incomplete (bounded by its limit).
    line: Vec<u8>,
    head: Option<Head>,
    body: Vec<u8>,
    chunks: usize,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            state: State::Head,
            line: Vec::new(),
            head: None,
            body: Vec::new(),
            chunks: 0,
        }
    }

    /// Takes the next bytes of the stream. Bytes after the end of the response are ignored. After an
    /// error the decoder is of no further use, but [`head`](Self::head) gives the head if it was read
    /// (a body over the cap, bad chunks).
    pub fn push(&mut self, mut data: &[u8]) -> Result<(), ResponseError> {
        loop {
            if data.is_empty() && self.state != State::TooLong {
                return Ok(());
            }
            let used = match self.state {
                State::Head => {
                    let max = self.limits.head;
                    let Some(used) = collect(&mut self.line, data, b"\r\n\r\n", max)
                        .map_err(|()| ResponseError::HeadTooLong(max))?
                    else {
                        return Ok(());
                    };
                    let (head, state) = read_head(&self.line, &self.limits)?;
                    self.head = Some(head);
                    self.state = state;
                    self.line = Vec::new();
                    if state == State::TooLong {
                        return Err(ResponseError::BodyTooLong(self.limits.body));
                    }
                    used
                }
                State::Length(left) => {
                    let n = left.min(data.len());
                    self.body.extend_from_slice(&data[..n]);
                    self.state = if n == left {
                        State::Done
                    } else {
                        State::Length(left - n)
                    };
                    n
                }
                State::ToEnd => {
                    if data.len() > self.limits.body - self.body.len() {
                        return Err(ResponseError::BodyTooLong(self.limits.body));
                    }
                    self.body.extend_from_slice(data);
                    data.len()
                }
                State::ChunkLine => {
                    let Some(used) = collect(&mut self.line, data, b"\r\n", MAX_CHUNK_LINE)
                        .map_err(|()| ResponseError::BadChunk)?
                    else {
                        return Ok(());
                    };
                    let size = chunk_size(&self.line).ok_or(ResponseError::BadChunk)?;
                    self.line.clear();
                    if size == 0 {
                        // The trailer section that may follow carries nothing we use.
                        self.state = State::Done;
                    } else {
                        self.chunks += 1;
                        if self.chunks > self.limits.chunks {
                            return Err(ResponseError::TooManyChunks(self.limits.chunks));
                        }
                        if size > self.limits.body - self.body.len() {
                            return Err(ResponseError::BodyTooLong(self.limits.body));
                        }
                        self.state = State::ChunkData(size);
                    }
                    used
                }
                State::ChunkData(left) => {
                    let n = left.min(data.len());
                    self.body.extend_from_slice(&data[..n]);
                    self.state = if n == left {
                        State::ChunkEnd(0)
                    } else {
                        State::ChunkData(left - n)
                    };
                    n
                }
                State::ChunkEnd(seen) => {
                    if data[0] != b"\r\n"[seen] {
                        return Err(ResponseError::BadChunk);
                    }
                    self.state = if seen == 1 {
                        State::ChunkLine
                    } else {
                        State::ChunkEnd(1)
                    };
                    1
                }
                State::TooLong => return Err(ResponseError::BodyTooLong(self.limits.body)),
                State::Done => return Ok(()),
            };
            data = &data[used..];
        }
    }

    /// The status line and headers, once they are in.
    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// Whether the whole response is in.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The response once the connection has ended (`end`), or before if it [`is_done`](Self::is_done).
    pub fn finish(self, end: End) -> Result<Response, ResponseError> {
        match (self.state, end) {
            (State::Done, _) | (State::ToEnd, End::Clean) => Ok(Response {
                head: self.head.ok_or(ResponseError::NoHead)?,
                body: self.body,
            }),
            (State::Head, _) => Err(ResponseError::NoHead),
            (State::ToEnd, End::Cut) => Err(ResponseError::Unterminated),
            (State::TooLong, _) => Err(ResponseError::BodyTooLong(self.limits.body)),
            _ => Err(ResponseError::Truncated),
        }
    }

    /// The head with an empty body, for a caller that has no use for this status's body.
    pub fn head_only(self) -> Option<Response> {
        Some(Response {
            head: self.head?,
            body: Vec::new(),
        })
    }
}

/// Decodes `bytes`: `Ok(None)` while the response is incomplete and more may come (`end` is `None`).
pub fn parse(
    bytes: &[u8],
    end: Option<End>,
    limits: Limits,
) -> Result<Option<Response>, ResponseError> {
    let mut decoder = Decoder::new(limits);
    decoder.push(bytes)?;
    match end {
        _ if decoder.is_done() => decoder.finish(End::Clean).map(Some),
        Some(end) => decoder.finish(end).map(Some),
        None => Ok(None),
    }
}

/// Gathers a line ending in `term` into `line` across pushes, taking bytes of `data`: `Some(n)` once
/// the line is whole (in `line`, without `term`; `n` bytes of `data` taken), `None` while it goes on.
/// Err when the line is longer than `max`, found out as soon as the bytes show it, however they are
/// split.
fn collect(line: &mut Vec<u8>, data: &[u8], term: &[u8], max: usize) -> Result<Option<usize>, ()> {
    let had = line.len();
    // Never hold more than a line of `max` and its terminator.
    let room = max.saturating_add(term.len());
    let take = data.len().min(room.saturating_sub(had));
    line.extend_from_slice(&data[..take]);
    // The terminator may have begun in the bytes we had.
    let from = had.saturating_sub(term.len() - 1);
    match line[from..].windows(term.len()).position(|w| w == term) {
        Some(i) => {
            let end = from + i;
            if end > max {
                return Err(());
            }
            line.truncate(end);
            Ok(Some(end + term.len() - had))
        }
        // A terminator not in `line` starts at len - term.len() + 1 or later.
        None if line.len() >= room => Err(()),
        None => Ok(None),
    }
}

fn read_head(bytes: &[u8], limits: &Limits) -> Result<(Head, State), ResponseError> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let status_line = text.split("\r\n").next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    if !words.next().is_some_and(|v| v.starts_with("HTTP/")) {
        return Err(ResponseError::NotHttp);
    }
    let status = words
        .next()
        .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ResponseError::BadStatus(status_line.chars().take(64).collect()))?;
    let head = Head { status, text };
    let chunked = head.headers().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let mut length = None;
    // Chunks frame the body whatever a Content-Length says (RFC 9112 §6.3).
    for (_, value) in head
        .headers()
        .filter(|(k, _)| !chunked && k.eq_ignore_ascii_case("content-length"))
    {
        let bad = || ResponseError::BadLength(value.chars().take(64).collect());
        let n: usize = Some(value)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        if length.is_some_and(|l| l != n) {
            return Err(bad());
        }
        length = Some(n);
    }
    let state = match length {
        _ if chunked => State::ChunkLine,
        // These never have a body, whatever the headers say.
        _ if matches!(status, 204 | 304) => State::Done,
        Some(n) if n > limits.body => State::TooLong,
        Some(0) => State::Done,
        Some(n) => State::Length(n),
        None => State::ToEnd,
    };
    Ok((head, state))
}

/// A chunk-size line's size (hexadecimal digits, then any `;extension`s).
fn chunk_size(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?;
    let digits = text.split(';').next()?.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    usize::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits::new(8 * 1024, 100);

    fn whole(bytes: &[u8], end: End) -> Result<Response, ResponseError> {
        parse(bytes, Some(end), LIMITS).map(|r| r.expect("an end gives an answer"))
    }

    fn body(bytes: &[u8]) -> Vec<u8> {
        whole(bytes, End::Clean).unwrap().body
    }

    #[test]
    fn bodies_by_length_chunks_or_end() {
        assert_eq!(
            body(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabcdef"),
            b"abc"
        );
        assert_eq!(body(b"HTTP/1.1 200 OK\r\n\r\nabc"), b"abc");
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\nContent-Length: 1\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n"),
            b"abcde"
        );
        // Length and chunks show the end: no close_notify needed.
        let cut = whole(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", End::Cut);
        assert_eq!(cut.unwrap().body, b"abc");
        let chunked = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let r = whole(chunked, End::Cut).unwrap();
        assert_eq!((r.status(), r.body.as_slice()), (500, &b"abc"[..]));
        assert_eq!(
            body(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"),
            b""
        );
        let r = whole(
            b"HTTP/1.1 302 Found\r\nlocation:  https://h/x \r\nX:\r\nnocolon\r\n\r\n",
            End::Clean,
        )
        .unwrap();
        assert_eq!(r.head.header("Location"), Some("https://h/x"));
        assert_eq!(r.head.header("x"), Some(""));
        assert_eq!(r.head.headers().count(), 2);
    }

    #[test]
    fn incomplete_responses_wait_for_more_until_the_end() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse(&full[..20], None, LIMITS), Ok(None));
        assert_eq!(parse(&full[..full.len() - 1], None, LIMITS), Ok(None));
        assert_eq!(parse(full, None, LIMITS).unwrap().unwrap().body, b"hello");
        let eof = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(parse(eof, None, LIMITS), Ok(None));
        assert_eq!(
            parse(eof, Some(End::Clean), LIMITS).unwrap().unwrap().body,
            b"body"
        );
    }

    #[test]
    fn broken_or_oversized_responses_fail_with_what_went_wrong() {
        use ResponseError::*;
        let e = |b: &[u8]| whole(b, End::Clean).unwrap_err();
        // A TLS stream cut without close_notify and no length could be a truncation attack.
        assert_eq!(
            whole(b"HTTP/1.1 200 OK\r\n\r\nabc", End::Cut),
            Err(Unterminated)
        );
        assert_eq!(
            e(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nabc"),
            Truncated
        );
        assert_eq!(
            e(b"HTTP/1.0 200 OK\r\nContent-Length: 101\r\n\r\n"),
            BodyTooLong(100)
        );
        assert_eq!(
            e(b"HTTP/1.0 200 OK\r\nContent-Length: x\r\n\r\n"),
            BadLength("x".into())
        );
        assert_eq!(
            e(b"HTTP/1.0 200 OK\r\nContent-Length: +3\r\n\r\nabc"),
            BadLength("+3".into())
        );
        assert_eq!(
            e(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
            BadLength("4".into())
        );
        assert_eq!(
            body(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
            b"abc"
        );
        assert_eq!(
            e(b"HTTP/1.0 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n"),
            BadLength("18446744073709551616".into())
        );
        assert_eq!(
            e(&[b'x'; 101]
                .iter()
                .fold(b"HTTP/1.0 200 OK\r\n\r\n".to_vec(), |mut v, b| {
                    v.push(*b);
                    v
                })),
            BodyTooLong(100)
        );
        assert_eq!(e(b"SSH-2.0-x\r\n\r\n"), NotHttp);
        assert_eq!(
            e(b"HTTP/1.1 2000 OK\r\n\r\n"),
            BadStatus("HTTP/1.1 2000 OK".into())
        );
        assert_eq!(e(b"HTTP/1.1\r\n\r\n"), BadStatus("HTTP/1.1".into()));
        assert_eq!(e(b"HTTP/1.1 200 OK\r\n"), NoHead);
        assert_eq!(e(b""), NoHead);
        assert_eq!(e(&vec![b'a'; 8 * 1024 + 4]), HeadTooLong(8 * 1024));
        let mut long_head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long_head.resize(8 * 1024, b'a');
        assert_eq!(body(&[&long_head[..], b"\r\n\r\nab"].concat()), b"ab");
        long_head.push(b'a');
        assert_eq!(
            e(&[&long_head[..], b"\r\n\r\nab"].concat()),
            HeadTooLong(8 * 1024)
        );
    }

    #[test]
    fn chunked() {
        let chunked = |chunks: &[u8]| {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(chunks);
            whole(&r, End::Clean).map(|r| r.body)
        };
        use ResponseError::*;
        assert_eq!(
            chunked(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert_eq!(
            chunked(b"A \r\n0123456789\r\n0\r\n").unwrap(),
            b"0123456789"
        );
        assert_eq!(chunked(b"5\r\nab"), Err(Truncated));
        assert_eq!(chunked(b"3\r\nabc\r\n"), Err(Truncated));
        assert_eq!(chunked(b"3\r\nabcX\n0\r\n"), Err(BadChunk));
        assert_eq!(chunked(b"+3\r\nabc\r\n0\r\n"), Err(BadChunk));
        assert_eq!(chunked(b"\r\nabc\r\n0\r\n"), Err(BadChunk));
        assert_eq!(chunked(b"ffffffffffffffff\r\nab"), Err(BodyTooLong(100)));
        assert_eq!(chunked(b"10000000000000000\r\nab"), Err(BadChunk));
        assert_eq!(chunked(b"65\r\n"), Err(BodyTooLong(100)));
        assert_eq!(chunked(b"64\r\n"), Err(Truncated));
        let mut long = b"1;".to_vec();
        long.resize(MAX_CHUNK_LINE, b'x');
        assert_eq!(
            chunked(&[&long[..], b"\r\na\r\n0\r\n"].concat()).unwrap(),
            b"a"
        );
        long.push(b'x');
        assert_eq!(
            chunked(&[&long[..], b"\r\na\r\n0\r\n"].concat()),
            Err(BadChunk)
        );
        let small = Limits {
            chunks: 3,
            ..LIMITS
        };
        let framed = |n: usize| {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(&b"1\r\na\r\n".repeat(n));
            r.extend_from_slice(b"0\r\n");
            parse(&r, Some(End::Clean), small).map(|r| r.map(|r| r.body.len()))
        };
        assert_eq!(framed(3), Ok(Some(3)));
        assert_eq!(framed(4), Err(TooManyChunks(3)));
    }

    #[test]
    fn the_default_chunk_cap_follows_the_body_cap() {
        assert_eq!(Limits::new(1, 0).chunks, 64);
        assert_eq!(Limits::new(1, 64 * 1024).chunks, 64 + 256);
    }

    use proptest::prelude::*;

    /// A response whose framing is right or nearly so, to reach deep into the decoder often.
    fn response() -> impl Strategy<Value = Vec<u8>> {
        let status = prop::sample::select(vec!["200", "204", "302", "404", "x", "2000"]);
        let headers = prop::collection::vec(
            (
                prop::sample::select(vec!["Content-Length", "Transfer-Encoding", "Location", "X"]),
                prop_oneof![
                    "[ -~]{0,12}",
                    prop::sample::select(vec!["chunked", "5", "18446744073709551616", "-1", ""])
                        .prop_map(String::from),
                ],
            ),
            0..4,
        );
        let body = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            // Chunk framing with arbitrary sizes, so the chunked path is reached often.
            prop::collection::vec(("[0-9a-fA-F]{1,17}", "[a-z]{0,40}"), 0..4).prop_map(|chunks| {
                chunks
                    .iter()
                    .flat_map(|(size, data)| format!("{size}\r\n{data}\r\n").into_bytes())
                    .collect()
            }),
        ];
        (status, headers, body).prop_map(|(status, headers, body)| {
            let mut bytes = format!("HTTP/1.1 {status} X\r\n").into_bytes();
            for (k, v) in &headers {
                bytes.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&body);
            bytes
        })
    }

    /// Decodes `bytes` pushed in the pieces `cuts` makes of them.
    fn in_pieces(
        bytes: &[u8],
        cuts: &[usize],
        end: End,
        limits: Limits,
    ) -> Result<Response, ResponseError> {
        let mut decoder = Decoder::new(limits);
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([bytes.len()]) {
            decoder.push(&bytes[at..cut])?;
            at = cut;
        }
        decoder.finish(end)
    }

    proptest! {
        /// Whatever a server sends, decoding returns a result, never a body over the cap, and the same
        /// result however the bytes are split across reads.
        #[test]
        fn any_response_decodes_the_same_however_it_arrives(
            bytes in prop_oneof![response(), prop::collection::vec(any::<u8>(), 0..300)],
            cuts in prop::collection::vec(any::<usize>(), 0..8),
            cut_short in any::<bool>(),
            head in 8usize..64,
            body in 0usize..120,
            chunks in 0usize..6,
        ) {
            let end = if cut_short { End::Cut } else { End::Clean };
            let limits = Limits { head, body, chunks };
            let at_once = parse(&bytes, Some(end), limits).map(|r| r.expect("ended"));
            if let Ok(r) = &at_once {
                prop_assert!(r.body.len() <= body);
            }
            prop_assert_eq!(&in_pieces(&bytes, &cuts, end, limits), &at_once);
            // Bytes still arriving never read as a different response than they do at the end.
            if let Ok(Some(open)) = parse(&bytes, None, limits) {
                prop_assert_eq!(Ok(open), at_once);
            }
        }

        /// Any body cut into any chunks, with or without extensions, comes back whole.
        #[test]
        fn chunked_bodies_come_back_whole(
            data in prop::collection::vec(any::<u8>(), 0..2000),
            sizes in prop::collection::vec(1usize..300, 0..20),
            extension in prop::option::of("[a-z]{1,8}(=[a-z0-9]{0,8})?"),
            upper in any::<bool>(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let mut framed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let mut rest = &data[..];
            let mut sizes = sizes.into_iter();
            while !rest.is_empty() {
                let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
                let size = if upper { format!("{n:X}") } else { format!("{n:x}") };
                framed.extend_from_slice(size.as_bytes());
                if let Some(ext) = &extension {
                    framed.extend_from_slice(format!(";{ext}").as_bytes());
                }
                framed.extend_from_slice(b"\r\n");
                framed.extend_from_slice(&rest[..n]);
                framed.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            framed.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
            let limits = Limits::new(1024, data.len());
            let r = in_pieces(&framed, &cuts, End::Cut, limits).unwrap();
            prop_assert_eq!(r.body, data.clone());
            // One byte less of room and the same body is refused.
            if !data.is_empty() {
                let tight = Limits { body: data.len() - 1, ..limits };
                prop_assert_eq!(
                    in_pieces(&framed, &cuts, End::Cut, tight),
                    Err(ResponseError::BodyTooLong(data.len() - 1))
                );
            }
        }
    }
}
