//! Bounds on what HTTP clients can hold open: connections in total and per IP address, and how long a
//! connection may sit without sending a byte. Without them one address could open sockets until the
//! tracker runs out of file descriptors, or park idle connections until no one else gets in.

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
    pub idle: Duration,
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
}

impl LimitedListener {
    pub fn new(inner: TcpListener, limits: ConnectionLimits, state: Arc<crate::State>) -> Self {
        LimitedListener {
            inner,
            limits,
            open: state.http_open.clone(),
            state,
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
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or similar: wait for connections to close rather than spin.
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!("HTTP accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            };
            // An IPv4 client on a dual-stack listener counts under its IPv4 address.
            match self.admit(addr.ip().to_canonical()) {
                Some(slot) => {
                    let _ = stream.set_nodelay(true);
                    let idle = self.limits.idle;
                    return (
                        LimitedStream {
                            stream,
                            _slot: slot,
                            idle,
                            deadline: Box::pin(tokio::time::sleep(idle)),
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

/// An accepted connection holding its slot, failing reads once it has been idle too long.
pub struct LimitedStream {
    stream: TcpStream,
    _slot: Slot,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
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
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
