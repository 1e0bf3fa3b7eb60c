//! One request and its response over a byte stream the caller has opened (TCP, TLS over TCP).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::request::{Request, RequestError};
use crate::response::{Decoder, End, Head, Limits, Response, ResponseError};

/// Bytes read from the stream at a time.
const READ_BUF: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Response(#[from] ResponseError),
}

/// Sends `request` on `stream` and reads its response within `limits`. Once the head is in,
/// `want_body` says whether the body is read; if not, the response comes back with an empty body and
/// the rest of the stream is left unread (a redirect's or an error page's body serves no one).
///
/// Reading stops at the end of the response, so a server that keeps the connection open despite
/// `Connection: close` costs nothing more. No timeout: the caller bounds connecting and this together.
pub async fn exchange<S>(
    stream: &mut S,
    request: &Request<'_>,
    limits: Limits,
    want_body: impl FnOnce(&Head) -> bool,
) -> Result<Response, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    stream.write_all(&request.to_bytes()?).await?;
    stream.flush().await?;
    let mut decoder = Decoder::new(limits);
    let mut want_body = Some(want_body);
    let mut buf = vec![0u8; READ_BUF];
    let end = loop {
        match stream.read(&mut buf).await {
            Ok(0) => break End::Clean,
            Ok(n) => {
                let pushed = decoder.push(&buf[..n]);
                // A body no one will use cannot fail the exchange: its head is all that counts.
                if let Some(head) = decoder.head() {
                    if let Some(wanted) = want_body.take() {
                        if !wanted(head) {
                            return Ok(decoder.head_only().ok_or(ResponseError::NoHead)?);
                        }
                    }
                }
                pushed?;
            }
            // rustls reports a TCP close without close_notify this way. Many servers end responses
            // like that; it is accepted where the head says how long the body is.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break End::Cut,
            Err(e) => return Err(e.into()),
        }
        if decoder.is_done() {
            break End::Clean;
        }
    };
    Ok(decoder.finish(end)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Version;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncWriteExt, ReadBuf};

    const GET: Request<'static> = Request {
        method: "GET",
        target: "/x",
        host: "h:80",
        version: Version::Http11,
        headers: &[],
        body: b"",
    };
    const LIMITS: Limits = Limits::new(1024, 1024);

    /// Runs an exchange against a peer that reads the request and answers `reply`, then closes, or
    /// with `hold` keeps the connection open.
    async fn against(
        reply: &'static [u8],
        hold: bool,
        want: bool,
    ) -> (Result<Response, Error>, Vec<u8>) {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        let server = tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 64];
            while !request.ends_with(b"\r\n\r\n") {
                let n = theirs.read(&mut buf).await.unwrap();
                assert!(n > 0);
                request.extend_from_slice(&buf[..n]);
            }
            theirs.write_all(reply).await.unwrap();
            if hold {
                // Held open until the client has gone.
                let _ = theirs.read(&mut buf).await;
            }
            request
        });
        let result = exchange(&mut ours, &GET, LIMITS, |_| want).await;
        drop(ours);
        (result, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_response_ends_at_its_length_even_if_the_server_holds_on() {
        let (r, request) = against(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            true,
            true,
        )
        .await;
        assert_eq!(r.unwrap().body, b"hi");
        assert!(request.starts_with(b"GET /x HTTP/1.1\r\nHost: h:80\r\nConnection: close\r\n"));
        let (r, _) = against(b"HTTP/1.1 200 OK\r\n\r\nto the end", false, true).await;
        assert_eq!(r.unwrap().body, b"to the end");
    }

    #[tokio::test]
    async fn an_unwanted_body_is_not_read() {
        let (r, _) = against(
            b"HTTP/1.1 302 Found\r\nLocation: /y\r\nContent-Length: 999\r\n\r\n",
            true,
            false,
        )
        .await;
        let r = r.unwrap();
        assert_eq!(
            (r.status(), r.head.header("location"), r.body.len()),
            (302, Some("/y"), 0)
        );
        // Neither a body over the cap nor broken chunks matter when the body is not wanted.
        let (r, _) = against(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 99999\r\n\r\n",
            true,
            false,
        )
        .await;
        assert_eq!(r.unwrap().status(), 404);
        let (r, _) = against(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            true,
            false,
        )
        .await;
        assert_eq!(r.unwrap().status(), 404);
        // Wanted, they fail at once, without waiting for the server to close.
        let (r, _) = against(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n",
            true,
            true,
        )
        .await;
        assert!(
            matches!(r, Err(Error::Response(ResponseError::BodyTooLong(1024)))),
            "{r:?}"
        );
        let (r, _) = against(
            b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\nab",
            false,
            true,
        )
        .await;
        assert!(
            matches!(r, Err(Error::Response(ResponseError::Truncated))),
            "{r:?}"
        );
    }

    /// A stream that gives `bytes` and then fails as rustls does for a close without close_notify.
    struct CutTls(&'static [u8]);

    impl AsyncRead for CutTls {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.0.is_empty() {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            let n = self.0.len().min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for CutTls {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_cut_tls_stream_is_refused_only_where_it_may_have_cut_the_body() {
        let mut s = CutTls(b"HTTP/1.1 200 OK\r\n\r\nabc");
        let r = exchange(&mut s, &GET, LIMITS, |_| true).await;
        assert!(
            matches!(r, Err(Error::Response(ResponseError::Unterminated))),
            "{r:?}"
        );
        let mut s =
            CutTls(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(
            exchange(&mut s, &GET, LIMITS, |_| true).await.unwrap().body,
            b"abc"
        );
    }

    #[tokio::test]
    async fn a_request_that_would_inject_headers_is_not_sent() {
        let mut s = CutTls(b"");
        let bad = Request {
            target: "/\r\nX: y",
            ..GET
        };
        let r = exchange(&mut s, &bad, LIMITS, |_| true).await;
        assert!(matches!(r, Err(Error::Request(_))), "{r:?}");
    }
}
