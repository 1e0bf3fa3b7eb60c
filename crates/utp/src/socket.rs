//! The tokio edge: one UDP socket, its connections demultiplexed by (peer address, connection
//! id), a task that moves datagrams and timers into the sans-IO [`Connection`]s, and
//! [`UtpStream`] for the bytes.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::conn::{Config, Connection, Micros, State, UtpError};
use crate::packet::{is_utp, Header, Packet, PacketType, HEADER_LEN};

/// Connections waiting in `accept`; SYNs beyond are dropped (the peer retries).
pub const ACCEPT_BACKLOG: usize = 64;
/// Datagrams read at most between two passes over the connections.
const RECV_BATCH: usize = 64;
/// Largest datagram read; a longer one is truncated and then fails to parse as uTP sensibly.
const MAX_DATAGRAM: usize = 65536;

type Key = (SocketAddr, u16);

struct Slot {
    conn: Connection,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// The stream was dropped: forget the connection once it has finished.
    dropped: bool,
}

type Shared = Arc<Mutex<Slot>>;

fn lock(s: &Shared) -> MutexGuard<'_, Slot> {
    // A panic elsewhere while holding the lock leaves a usable connection: take it anyway.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    socket: UdpSocket,
    conns: Mutex<HashMap<Key, Shared>>,
    wake: Notify,
    epoch: Instant,
    config: Config,
}

impl Inner {
    fn now(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }
    fn conns(&self) -> MutexGuard<'_, HashMap<Key, Shared>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A UDP socket speaking uTP. Datagrams that are not uTP go to the `other` channel given to
/// [`UtpSocket::bind`] (dropped when it is full or absent), so the DHT can share the port.
pub struct UtpSocket {
    inner: Arc<Inner>,
    accept_rx: tokio::sync::Mutex<mpsc::Receiver<(UtpStream, SocketAddr)>>,
    task: JoinHandle<()>,
}

impl Drop for UtpSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random_u16(salt: u64) -> u16 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish() as u16
}

impl UtpSocket {
    pub async fn bind(
        addr: SocketAddr,
        config: Config,
        other: Option<mpsc::Sender<(Vec<u8>, SocketAddr)>>,
    ) -> io::Result<UtpSocket> {
        UtpSocket::from_socket(UdpSocket::bind(addr).await?, config, other)
    }

    /// Speaks uTP on a socket the caller made (with the options it wants: dual-stack, buffer
    /// sizes). Must be called within a tokio runtime.
    pub fn from_socket(
        socket: UdpSocket,
        config: Config,
        other: Option<mpsc::Sender<(Vec<u8>, SocketAddr)>>,
    ) -> io::Result<UtpSocket> {
        let inner = Arc::new(Inner {
            socket,
            conns: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            epoch: Instant::now(),
            config,
        });
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_BACKLOG);
        let task = tokio::spawn(drive(inner.clone(), accept_tx, other));
        Ok(UtpSocket {
            inner,
            accept_rx: tokio::sync::Mutex::new(accept_rx),
            task,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.socket.local_addr()
    }

    /// Connections the socket holds: dialling, open, or closing until their FIN is acknowledged.
    pub fn connections(&self) -> usize {
        self.inner.conns().len()
    }

    /// Sends a datagram that is not uTP (a DHT message) from the shared socket.
    pub async fn send_other(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.inner.socket.send_to(datagram, to).await
    }

    /// The next incoming connection.
    pub async fn accept(&self) -> io::Result<(UtpStream, SocketAddr)> {
        self.accept_rx
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::other("uTP socket task ended"))
    }

    /// Dials `addr`; resolves once the peer has answered the SYN. Cancel-safe: a dial dropped
    /// before it resolves (a caller's timeout), refused or timed out is forgotten at once.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<UtpStream> {
        let (key, shared) = {
            let mut conns = self.inner.conns();
            let mut salt = self.inner.now();
            let id = loop {
                let id = random_u16(salt);
                // Ours is id; the peer's packets to us carry id, its SYN-answering side sends id.
                if !conns.contains_key(&(addr, id))
                    && !conns.contains_key(&(addr, id.wrapping_add(1)))
                {
                    break id;
                }
                salt += 1;
            };
            let conn = Connection::connect(self.inner.config.clone(), id, self.inner.now());
            let shared = new_slot(conn);
            conns.insert((addr, id), shared.clone());
            ((addr, id), shared)
        };
        self.inner.wake.notify_one();
        let mut pending = PendingDial {
            inner: &self.inner,
            key: Some(key),
        };
        poll_fn(|cx| -> Poll<io::Result<()>> {
            let mut slot = lock(&shared);
            match slot.conn.state() {
                State::SynSent => {
                    slot.write_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                State::Reset => Poll::Ready(Err(io::ErrorKind::ConnectionRefused.into())),
                State::TimedOut => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
                _ => Poll::Ready(Ok(())),
            }
        })
        .await?;
        pending.key = None;
        Ok(UtpStream {
            shared,
            inner: self.inner.clone(),
        })
    }
}

/// A dial not yet answered: its connection leaves the table unless the dial succeeded.
struct PendingDial<'a> {
    inner: &'a Arc<Inner>,
    key: Option<Key>,
}

impl Drop for PendingDial<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.inner.conns().remove(&key);
        }
    }
}

fn new_slot(conn: Connection) -> Shared {
    Arc::new(Mutex::new(Slot {
        conn,
        read_waker: None,
        write_waker: None,
        dropped: false,
    }))
}

fn finished(conn: &Connection) -> bool {
    matches!(conn.state(), State::Closed | State::Reset | State::TimedOut)
}

async fn drive(
    inner: Arc<Inner>,
    accept_tx: mpsc::Sender<(UtpStream, SocketAddr)>,
    other: Option<mpsc::Sender<(Vec<u8>, SocketAddr)>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
    loop {
        let now = inner.now();
        let mut next: Option<Micros> = None;
        {
            let mut conns = inner.conns();
            conns.retain(|&(addr, _), shared| {
                let mut slot = lock(shared);
                slot.conn.handle_timeout(now);
                while let Some(d) = slot.conn.poll_transmit(now) {
                    out.push((d, addr));
                }
                if let Some(t) = slot.conn.poll_timeout() {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
                // A task is woken when it can make progress: bytes to read, room to write, or a
                // state other than open (connected, closed, failed: it sees which). Waking every
                // task on every datagram cost a context switch per packet.
                let open = slot.conn.state() == State::Connected;
                if !open || slot.conn.readable() > 0 || slot.conn.is_eof() {
                    if let Some(w) = slot.read_waker.take() {
                        w.wake();
                    }
                }
                if !open || slot.conn.writable() > 0 {
                    if let Some(w) = slot.write_waker.take() {
                        w.wake();
                    }
                }
                !(slot.dropped
                    && (finished(&slot.conn) || slot.conn.is_flushed() && slot.conn.fin_acked()))
            });
        }
        for (d, addr) in out.drain(..) {
            // A full socket buffer or an unreachable peer loses the datagram: uTP retransmits.
            let _ = inner.socket.send_to(&d, addr).await;
        }
        let sleep = next.map_or(Duration::from_secs(3600), |t| {
            Duration::from_micros(t.saturating_sub(inner.now()))
        });
        tokio::select! {
            r = inner.socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                handle_datagram(&inner, &buf[..n], from, &accept_tx, other.as_ref()).await;
                // What else has arrived is handled before the connections are polled again:
                // one pass over them per batch, not per datagram.
                for _ in 1..RECV_BATCH {
                    let Ok((n, from)) = inner.socket.try_recv_from(&mut buf) else {
                        break;
                    };
                    handle_datagram(&inner, &buf[..n], from, &accept_tx, other.as_ref()).await;
                }
            }
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

async fn handle_datagram(
    inner: &Arc<Inner>,
    d: &[u8],
    from: SocketAddr,
    accept_tx: &mpsc::Sender<(UtpStream, SocketAddr)>,
    other: Option<&mpsc::Sender<(Vec<u8>, SocketAddr)>>,
) {
    if !is_utp(d) {
        if let Some(other) = other {
            let _ = other.try_send((d.to_vec(), from));
        }
        return;
    }
    if let Some(reset) = dispatch(inner, d, from, accept_tx) {
        let _ = inner.socket.send_to(&reset, from).await;
    }
}

/// Hands the datagram to its connection or accepts a SYN; returns a RESET to send back for a
/// packet of a connection we do not know (as libtorrent does, so the peer gives up at once).
fn dispatch(
    inner: &Arc<Inner>,
    d: &[u8],
    from: SocketAddr,
    accept_tx: &mpsc::Sender<(UtpStream, SocketAddr)>,
) -> Option<Vec<u8>> {
    let p = Packet::parse(d).ok()?;
    let now = inner.now();
    let mut conns = inner.conns();
    let key = if p.header.ty == PacketType::Syn {
        (from, p.header.conn_id.wrapping_add(1))
    } else {
        (from, p.header.conn_id)
    };
    if let Some(shared) = conns.get(&key) {
        let _ = lock(shared).conn.handle_datagram(d, now);
        return None;
    }
    match p.header.ty {
        PacketType::Syn => {}
        PacketType::Reset => return None,
        _ => {
            let mut reset = Vec::with_capacity(HEADER_LEN);
            Header {
                ty: PacketType::Reset,
                conn_id: p.header.conn_id,
                timestamp: now as u32,
                timestamp_diff: (now as u32).wrapping_sub(p.header.timestamp),
                wnd_size: 0,
                seq_nr: random_u16(now),
                ack_nr: p.header.seq_nr,
            }
            .write(None, b"", &mut reset);
            return Some(reset);
        }
    }
    let seq = random_u16(now ^ u64::from(p.header.conn_id));
    let conn = Connection::accept(inner.config.clone(), d, seq, now).ok()?;
    let shared = new_slot(conn);
    let stream = UtpStream {
        shared: shared.clone(),
        inner: inner.clone(),
    };
    if accept_tx.try_send((stream, from)).is_ok() {
        conns.insert(key, shared);
    }
    None
}

/// One uTP connection as a byte stream. Dropping it closes our direction (a FIN after the
/// written bytes); the socket forgets the connection once that is acknowledged.
pub struct UtpStream {
    shared: Shared,
    inner: Arc<Inner>,
}

impl Drop for UtpStream {
    fn drop(&mut self) {
        let mut slot = lock(&self.shared);
        slot.conn.close();
        slot.dropped = true;
        drop(slot);
        self.inner.wake.notify_one();
    }
}

fn io_error(e: UtpError) -> io::Error {
    match e {
        UtpError::Reset => io::ErrorKind::ConnectionReset.into(),
        UtpError::TimedOut => io::ErrorKind::TimedOut.into(),
        UtpError::Closed => io::ErrorKind::BrokenPipe.into(),
        e => io::Error::other(e),
    }
}

impl AsyncRead for UtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut slot = lock(&self.shared);
        // Only what is there to read is zeroed first, not the caller's whole buffer (a peer
        // reader hands 256 KiB).
        let want = slot.conn.readable().clamp(1, buf.remaining().max(1));
        match slot
            .conn
            .read(buf.initialize_unfilled_to(want.min(buf.remaining())))
        {
            Ok(n) => {
                buf.advance(n);
                drop(slot);
                if n > 0 {
                    // Reading may reopen the window the peer waits on.
                    self.inner.wake.notify_one();
                }
                Poll::Ready(Ok(()))
            }
            Err(UtpError::WouldBlock) => {
                slot.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

impl AsyncWrite for UtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut slot = lock(&self.shared);
        match slot.conn.write(data) {
            Ok(0) if !data.is_empty() => {
                slot.write_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Ok(n) => {
                drop(slot);
                self.inner.wake.notify_one();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }

    /// Written bytes are already the connection's to deliver; flushing waits for nothing.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.shared).conn.close();
        self.inner.wake.notify_one();
        Poll::Ready(Ok(()))
    }
}
