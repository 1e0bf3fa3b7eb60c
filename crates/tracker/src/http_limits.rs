//! Bounds on what HTTP clients can hold open: connections in total (within the file descriptors the
//! process may open) and per IP address, and how long a client has to send a request. Without them one
//! address could open sockets until the tracker runs out of file descriptors, or park connections (idle,
//! or trickling a byte at a time) until no one else gets in.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::metrics::Counters;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub total: usize,
    pub per_ip: usize,
    /// Time a client has, from the connection's accept or from the tracker's last byte written, to
    /// send a complete request; also the longest a reply may stall on a client that does not read.
    pub deadline: Duration,
}

/// Descriptors kept for everything but HTTP connections: listeners, UDP sockets, the runtime, the
/// database, the list file.
pub const FD_RESERVE: usize = 64;

/// Raises the soft limit on open files to the hard one, and returns how many HTTP connections fit in
/// it: the limit less the descriptors open now, `FD_RESERVE`, and `more` still to be opened (one UDP
/// socket per worker).
pub fn connection_budget(more: usize) -> usize {
    // SAFETY: getrlimit/setrlimit read and write the plain struct passed.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return usize::MAX;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    let open = std::fs::read_dir("/proc/self/fd").map_or(16, |d| d.count());
    usize::try_from(limit.rlim_cur)
        .unwrap_or(usize::MAX)
        .saturating_sub(open + FD_RESERVE + more)
        .max(1)
}

/// Open connections per client address; an entry lives while its count is above zero. One table for
/// the HTTP and the HTTPS listener, so the caps hold for the two together.
#[derive(Default)]
pub struct Open {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// A TCP listener that accepts only connections within the limits; the others are closed at once.
pub struct LimitedListener {
    inner: TcpListener,
    limits: ConnectionLimits,
    open: Arc<Mutex<Open>>,
    state: Arc<crate::State>,
    /// Accepts failed in a row (the current back-off episode).
    failures: u32,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, limits: ConnectionLimits, state: Arc<crate::State>) -> Self {
        LimitedListener {
            inner,
            limits,
            open: state.http_open.clone(),
            state,
            failures: 0,
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock();
        if open.total >= self.limits.total {
            return None;
        }
        let count = open.per_ip.entry(ip).or_insert(0);
        if *count >= self.limits.per_ip {
            return None;
        }
        *count += 1;
        open.total += 1;
        Some(Slot {
            ip,
            open: self.open.clone(),
        })
    }
}

/// Gives a connection's place back when the connection is dropped.
struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<Open>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        open.total -= 1;
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A client address as the handlers see it (axum's own `SocketAddr` info is tied to its listener).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, LimitedListener>> for RemoteAddr {
    fn connect_info(stream: IncomingStream<'_, LimitedListener>) -> Self {
        RemoteAddr(*stream.remote_addr())
    }
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => {
                    if self.failures > 0 {
                        tracing::warn!(
                            "HTTP accepting again after {} failed accepts",
                            self.failures
                        );
                        self.failures = 0;
                    }
                    accepted
                }
                Err(e) => {
                    // The client gave up before we got to it: nothing wrong here.
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) {
                        continue;
                    }
                    // Out of descriptors or similar: wait for connections to close rather than spin,
                    // longer each time (10 ms to 1 s), and say so once per episode, not per attempt.
                    if self.failures == 0 {
                        tracing::warn!(
                            "HTTP accept failed: {e}; backing off until accepts succeed"
                        );
                    }
                    self.failures += 1;
                    let backoff = 10u64 << self.failures.min(7);
                    tokio::time::sleep(Duration::from_millis(backoff.min(1000))).await;
                    continue;
                }
            };
            // An IPv4 client on a dual-stack listener counts under its IPv4 address.
            match self.admit(addr.ip().to_canonical()) {
                Some(slot) => {
                    let _ = stream.set_nodelay(true);
                    let deadline = self.limits.deadline;
                    return (
                        LimitedStream {
                            stream,
                            _slot: slot,
                            deadline,
                            expires: Box::pin(tokio::time::sleep(deadline)),
                        },
                        addr,
                    );
                }
                None => {
                    Counters::add(&self.state.counters.http_refused);
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection holding its slot. Reads fail once `deadline` has passed since the accept
/// or since the last byte the tracker wrote: bytes the client sends do not extend it, so a request
/// trickled a byte at a time is cut off like a silent one. Writes that make no progress for `deadline`
/// fail too.
pub struct LimitedStream {
    stream: TcpStream,
    _slot: Slot,
    deadline: Duration,
    expires: Pin<Box<Sleep>>,
}

impl LimitedStream {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.expires.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl LimitedStream {
    /// A write result: progress restarts the deadline; no progress past it is an error.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) if n > 0 => {
                let next = Instant::now() + self.deadline;
                self.expires.as_mut().reset(next);
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            other => other,
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
