//! The daemon's connection limits: every cap fitted into the open-file limit ([`fit`]), and what API
//! clients can hold open: connections in total and per IP address, how long one may sit
//! silent, and how long a request's headers may take to arrive. When the daemon is full, the
//! connection that has been quiet longest (one not in the middle of a request) is closed to make room,
//! so idle sockets never keep a real request out. Accept errors (out of descriptors) back off instead
//! of spinning.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use super::store::Settings;

/// The settings' connection caps after fitting them into the descriptors the process has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    pub peers_total: usize,
    pub peers_per_torrent: usize,
    pub handshake: engine::HandshakeLimits,
    pub api: ApiLimits,
}

/// Checks the connection settings and lowers the caps (logging it) so that peers, connections waiting
/// for a handshake and API connections together fit in the open-file limit less its file reserve.
pub fn fit(settings: &Settings) -> Result<Fitted, String> {
    for (name, secs) in [
        ("peer_handshake_timeout", settings.peer_handshake_timeout),
        ("api_idle_timeout", settings.api_idle_timeout),
        ("api_header_timeout", settings.api_header_timeout),
    ] {
        if secs == 0 {
            return Err(format!("{name} must be at least 1 (seconds)"));
        }
    }
    if settings.api_max_connections == 0 || settings.api_max_connections_per_ip == 0 {
        return Err("api_max_connections and api_max_connections_per_ip must be at least 1".into());
    }
    let mut peers = settings.max_peers_total;
    let mut handshakes = settings.max_peer_handshakes;
    let mut api = settings.api_max_connections;
    engine::FdBudget::current().fit(&mut [
        ("max_peers_total", &mut peers),
        ("max_peer_handshakes", &mut handshakes),
        ("api_max_connections", &mut api),
    ]);
    Ok(Fitted {
        peers_total: peers,
        peers_per_torrent: settings.max_peers_per_torrent.clamp(1, peers.max(1)),
        handshake: engine::HandshakeLimits {
            total: handshakes,
            per_ip: settings.max_peer_handshakes_per_ip.min(handshakes),
            timeout: Duration::from_secs(settings.peer_handshake_timeout),
        },
        api: ApiLimits {
            total: api,
            per_ip: settings.api_max_connections_per_ip.min(api),
            idle: Duration::from_secs(settings.api_idle_timeout),
            header: Duration::from_secs(settings.api_header_timeout),
        },
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    pub total: usize,
    pub per_ip: usize,
    /// A connection with no bytes either way for this long, outside a request being handled, is closed.
    pub idle: Duration,
    /// A request's headers must all arrive within this long of its first byte.
    pub header: Duration,
}

/// One connection as the table sees it.
struct Ctl {
    ip: IpAddr,
    /// Headers complete, no response byte written yet: a handler is working on it.
    busy: AtomicBool,
    /// It has sent a whole request's headers at least once.
    requested: AtomicBool,
    evicted: AtomicBool,
    /// Milliseconds since the table's epoch at the last byte either way.
    last: AtomicU64,
    waker: AtomicWaker,
}

#[derive(Default)]
struct Table {
    per_ip: HashMap<IpAddr, usize>,
    conns: BTreeMap<u64, Arc<Ctl>>,
    next_id: u64,
}

impl Table {
    fn release(&mut self, id: u64) -> Option<Arc<Ctl>> {
        let ctl = self.conns.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&ctl.ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ctl.ip);
            }
        }
        Some(ctl)
    }

    /// Closes the quietest connection not busy with a request, among those from `ip` (or all): one
    /// that never sent a request if there is any (an event stream between its keep-alives is quiet
    /// too, but not idle); false if every one is busy.
    fn evict_quietest(&mut self, ip: Option<IpAddr>) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| ip.is_none_or(|ip| c.ip == ip) && !c.busy.load(Ordering::Acquire))
            .min_by_key(|(_, c)| {
                (
                    c.requested.load(Ordering::Relaxed),
                    c.last.load(Ordering::Relaxed),
                )
            })
            .map(|(&id, _)| id);
        let Some(ctl) = victim.and_then(|id| self.release(id)) else {
            return false;
        };
        ctl.evicted.store(true, Ordering::Release);
        ctl.waker.wake();
        true
    }
}

/// The connection table and its limits, shared by the listener and the settings that change them.
pub struct ApiConns {
    limits: Mutex<ApiLimits>,
    table: Mutex<Table>,
    epoch: Instant,
}

impl ApiConns {
    pub fn new(limits: ApiLimits) -> Arc<ApiConns> {
        Arc::new(ApiConns {
            limits: Mutex::new(limits),
            table: Mutex::default(),
            epoch: Instant::now(),
        })
    }

    /// New limits apply to connections accepted from now on (timeouts: to their next request).
    pub fn set_limits(&self, limits: ApiLimits) {
        *self.limits.lock() = limits;
    }

    fn limits(&self) -> ApiLimits {
        *self.limits.lock()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<(u64, Arc<Ctl>)> {
        let limits = self.limits();
        let mut table = self.table.lock();
        if table.per_ip.get(&ip).copied().unwrap_or(0) >= limits.per_ip
            && !table.evict_quietest(Some(ip))
        {
            return None;
        }
        if table.conns.len() >= limits.total && !table.evict_quietest(None) {
            return None;
        }
        let ctl = Arc::new(Ctl {
            ip,
            busy: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            last: AtomicU64::new(self.now_ms()),
            waker: AtomicWaker::new(),
        });
        let id = table.next_id;
        table.next_id += 1;
        *table.per_ip.entry(ip).or_insert(0) += 1;
        table.conns.insert(id, ctl.clone());
        Some((id, ctl))
    }
}

/// The API's listening socket with the table in front of it.
pub struct ApiListener {
    inner: TcpListener,
    conns: Arc<ApiConns>,
    backoff: engine::AcceptBackoff,
}

impl ApiListener {
    pub fn new(inner: TcpListener, conns: Arc<ApiConns>) -> ApiListener {
        ApiListener {
            inner,
            conns,
            backoff: engine::AcceptBackoff::new("API listener"),
        }
    }
}

impl Listener for ApiListener {
    type Io = ApiStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ApiStream, SocketAddr) {
        loop {
            let (stream, addr) = self.backoff.accept(&self.inner).await;
            // Refused (its address has only busy connections, or the daemon does): closed at once.
            let Some((id, ctl)) = self.conns.admit(engine::ip_group(addr.ip())) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let limits = self.conns.limits();
            return (
                ApiStream {
                    stream,
                    id,
                    ctl,
                    conns: self.conns.clone(),
                    phase: Phase::Waiting,
                    header_at: None,
                    matched: 0,
                    deadline: Instant::now() + limits.idle,
                    timer: Box::pin(tokio::time::sleep(limits.idle)),
                },
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before a request or after a response started: idle timeout.
    Waiting,
    /// Reading a request's headers: the header deadline too.
    Headers,
    /// Handling a request: no timeout until the response starts.
    Busy,
}

/// A connection of the API, closed when its time is up or when it is evicted to make room.
pub struct ApiStream {
    stream: TcpStream,
    id: u64,
    ctl: Arc<Ctl>,
    conns: Arc<ApiConns>,
    phase: Phase,
    header_at: Option<Instant>,
    /// Line ends in a row at the end of the bytes read so far (two end the headers).
    matched: u8,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Drop for ApiStream {
    fn drop(&mut self) {
        self.conns.table.lock().release(self.id);
    }
}

impl ApiStream {
    fn activity(&mut self) {
        self.ctl.last.store(self.conns.now_ms(), Ordering::Relaxed);
        let idle = Instant::now() + self.conns.limits().idle;
        self.deadline = match self.header_at {
            Some(h) if self.phase == Phase::Headers => idle.min(h),
            _ => idle,
        };
    }

    /// Fails the connection if it was evicted or its deadline passed; otherwise arms the timer.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.ctl.waker.register(cx.waker());
        if self.ctl.evicted.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room",
            ));
        }
        if self.phase == Phase::Busy {
            return Ok(());
        }
        if self.timer.deadline() != self.deadline {
            let deadline = self.deadline;
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "API connection timed out",
            ));
        }
        Ok(())
    }

    fn read_bytes(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Waiting {
            self.phase = Phase::Headers;
            self.matched = 0;
            self.header_at = Some(Instant::now() + self.conns.limits().header);
        }
        if self.phase == Phase::Headers {
            for &b in bytes {
                // Line ends in a row, bare LF accepted as the parser accepts it.
                self.matched = match b {
                    b'\n' => self.matched + 1,
                    b'\r' => self.matched,
                    _ => 0,
                };
                if self.matched == 2 {
                    self.phase = Phase::Busy;
                    self.header_at = None;
                    self.ctl.busy.store(true, Ordering::Release);
                    self.ctl.requested.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        self.activity();
    }

    fn wrote(&mut self) {
        // A response has begun, so its request was read.
        if self.phase != Phase::Waiting {
            self.header_at = None;
            self.phase = Phase::Waiting;
            self.ctl.busy.store(false, Ordering::Release);
        }
        self.activity();
    }
}

impl AsyncRead for ApiStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check(cx)?;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                let filled = buf.filled()[before..].to_vec();
                this.read_bytes(&filled);
            }
        }
        polled
    }
}

impl AsyncWrite for ApiStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check(cx)?;
        let polled = Pin::new(&mut this.stream).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                this.wrote();
            }
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check(cx)?;
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                this.wrote();
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> ApiLimits {
        ApiLimits {
            total,
            per_ip,
            idle: Duration::from_secs(60),
            header: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_quietest_idle_connection_never_a_busy_one() {
        let conns = ApiConns::new(limits(2, 2));
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let (_, first) = conns.admit(a).expect("room");
        let (_, second) = conns.admit(a).expect("room");
        // Per IP: the quietest of a's goes.
        let (_, third) = conns.admit(a).expect("room made");
        assert!(first.evicted.load(Ordering::Acquire));
        // Busy ones stay: with both busy there is no room.
        second.busy.store(true, Ordering::Release);
        third.busy.store(true, Ordering::Release);
        assert!(conns.admit(b).is_none());
        third.busy.store(false, Ordering::Release);
        assert!(conns.admit(b).is_some());
        assert!(third.evicted.load(Ordering::Acquire));
        assert!(!second.evicted.load(Ordering::Acquire));

        // Quiet connections that never asked for anything go before one that did (an event stream).
        let conns = ApiConns::new(limits(2, 2));
        let (_, stream) = conns.admit(a).expect("room");
        stream.requested.store(true, Ordering::Relaxed);
        let (_, silent) = conns.admit(a).expect("room");
        silent.last.store(u64::MAX, Ordering::Relaxed);
        assert!(conns.admit(a).is_some());
        assert!(silent.evicted.load(Ordering::Acquire));
        assert!(!stream.evicted.load(Ordering::Acquire));
    }

    #[test]
    fn connection_settings_are_checked_and_the_per_torrent_cap_stays_under_the_total() {
        let ok = Settings {
            max_peers_total: 20,
            max_peers_per_torrent: 50,
            max_peer_handshakes_per_ip: 100,
            ..Settings::default()
        };
        let fitted = fit(&ok).expect("valid");
        assert_eq!(fitted.peers_total, 20);
        assert_eq!(fitted.peers_per_torrent, 20);
        assert_eq!(fitted.handshake.per_ip, fitted.handshake.total);
        assert_eq!(fitted.api.idle, Duration::from_secs(60));
        for bad in [
            Settings {
                peer_handshake_timeout: 0,
                ..Settings::default()
            },
            Settings {
                api_header_timeout: 0,
                ..Settings::default()
            },
            Settings {
                api_max_connections: 0,
                ..Settings::default()
            },
        ] {
            assert!(fit(&bad).is_err());
        }
    }
}
