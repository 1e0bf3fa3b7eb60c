//! The tokio edge: one UDP socket, its connections demultiplexed by (peer address, connection
//! id), a task that moves datagrams and timers into the sans-IO [`Connection`]s, and
//! [`UtpStream`] for the bytes.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::conn::{Config, Connection, Micros, State, UtpError};
use crate::packet::{is_utp, Header, Packet, PacketType, HEADER_LEN};
use crate::sys;

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
    /// Trains of datagrams to one peer go in one UDP GSO send, until the kernel refuses one.
    gso: AtomicBool,
}

/// A datagram to send (its bytes in [`Outbox::bytes`]), and the connection it is a path MTU
/// probe of (to tell it of `EMSGSIZE`).
struct Out {
    range: Range<usize>,
    to: SocketAddr,
    probe: Option<Shared>,
}

/// What a pass over the connections sends, the datagrams back to back in one buffer: no
/// allocation per datagram, and a train to one peer is one slice for one GSO send.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    list: Vec<Out>,
}

/// Bytes an [`Outbox`] keeps allocated between passes: a window or so.
const OUTBOX_KEEP: usize = 2 << 20;

impl Inner {
    fn now(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }
    fn conns(&self) -> MutexGuard<'_, HashMap<Key, Shared>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new connection to `peer` searches for the path MTU up to what its route allows.
fn limit_to_route(conn: &mut Connection, peer: SocketAddr) {
    let v6 = sys::wire_ip(&peer).is_ipv6();
    conn.limit_mtu(crate::mtu::ceiling_for(sys::route_mtu(peer), v6));
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
        // Ordinary packets are no larger than the path has carried, so they may go without
        // "don't fragment"; probes set it for their send (see `send_probe`). Best effort: a
        // system without the option sends its probes as it sends everything.
        let _ = sys::set_dont_fragment(&socket, false);
        #[cfg(target_os = "linux")]
        let _ = sys::enable_gro(&socket);
        let inner = Arc::new(Inner {
            gso: AtomicBool::new(cfg!(target_os = "linux")),
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
            let mut conn = Connection::connect(self.inner.config.clone(), id, self.inner.now());
            limit_to_route(&mut conn, addr);
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
    let mut out = Outbox::default();
    let mut resets = Vec::new();
    loop {
        let now = inner.now();
        let mut next: Option<Micros> = None;
        {
            let mut conns = inner.conns();
            conns.retain(|&(addr, _), shared| {
                let mut slot = lock(shared);
                slot.conn.handle_timeout(now);
                loop {
                    let start = out.bytes.len();
                    let Some(probe) = slot.conn.poll_transmit_into(now, &mut out.bytes) else {
                        break;
                    };
                    out.list.push(Out {
                        range: start..out.bytes.len(),
                        to: addr,
                        probe: probe.then(|| shared.clone()),
                    });
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
                // A writer waits for a quarter of the send buffer, not for the first byte of
                // room: woken on every ack it wrote a packet's worth at a time, a context switch
                // and a lock round per packet (TCP wakes its writers at a third).
                if !open || slot.conn.writable() * 4 >= inner.config.send_buffer.max(1) {
                    if let Some(w) = slot.write_waker.take() {
                        w.wake();
                    }
                }
                !(slot.dropped
                    && (finished(&slot.conn) || slot.conn.is_flushed() && slot.conn.fin_acked()))
            });
        }
        send_all(&inner, &mut out).await;
        let sleep = next.map_or(Duration::from_secs(3600), |t| {
            Duration::from_micros(t.saturating_sub(inner.now()))
        });
        tokio::select! {
            r = inner.socket.readable() => {
                if r.is_err() {
                    continue;
                }
                // What has arrived is handled before the connections are polled again: one
                // pass over them per batch, not per datagram; and the table is locked once for
                // the batch.
                {
                    let mut conns = inner.conns();
                    let mut last = None;
                    for _ in 0..RECV_BATCH {
                        let Ok((n, from, segment)) = recv(&inner.socket, &mut buf) else {
                            break;
                        };
                        let train = Train {
                            data: &buf[..n],
                            segment: segment.unwrap_or(n).max(1),
                            from,
                            now: inner.now(),
                        };
                        let mut to = Dispatch {
                            inner: &inner,
                            conns: &mut conns,
                            last: &mut last,
                            accept_tx: &accept_tx,
                            other: other.as_ref(),
                            resets: &mut resets,
                        };
                        to.train(train);
                    }
                }
                for (reset, to) in resets.drain(..) {
                    let _ = inner.socket.send_to(&reset, to).await;
                }
            }
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One receive, without waiting: (bytes, sender, segment size of a coalesced train).
fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<usize>)> {
    #[cfg(target_os = "linux")]
    return socket.try_io(Interest::READABLE, || sys::recv_gro(socket, buf));
    #[cfg(not(target_os = "linux"))]
    return socket.try_recv_from(buf).map(|(n, from)| (n, from, None));
}

/// Sends what the connections gave: runs of equal datagrams to one peer as one GSO send where
/// the kernel takes it, probes one by one with "don't fragment". A full socket buffer waits; an
/// unreachable peer loses the datagram, which uTP retransmits.
async fn send_all(inner: &Inner, outbox: &mut Outbox) {
    let Outbox {
        bytes: data,
        list: out,
    } = outbox;
    let mut i = 0;
    while i < out.len() {
        if let Some(conn) = &out[i].probe {
            send_probe(inner, &data[out[i].range.clone()], out[i].to, conn).await;
            i += 1;
            continue;
        }
        let (to, size) = (out[i].to, out[i].range.len());
        let mut j = i + 1;
        let mut bytes = size;
        if inner.gso.load(Ordering::Relaxed) {
            while let Some(o) = out.get(j) {
                let len = o.range.len();
                if o.probe.is_some()
                    || o.to != to
                    || len > size
                    || j - i >= sys::MAX_SEGMENTS
                    || bytes + len > sys::MAX_GSO_BYTES
                {
                    break;
                }
                bytes += len;
                j += 1;
                // Only the last segment may be shorter.
                if len < size {
                    break;
                }
            }
        }
        if j - i > 1 {
            #[cfg(target_os = "linux")]
            {
                // One peer's datagrams of a pass lie back to back: the train is one slice.
                let train = &data[out[i].range.start..out[j - 1].range.end];
                let sent = inner
                    .socket
                    .async_io(Interest::WRITABLE, || {
                        sys::send_train(&inner.socket, train, size, to)
                    })
                    .await;
                match sent {
                    Ok(()) => {
                        i = j;
                        continue;
                    }
                    // No GSO here (an old kernel, a device without checksum offload): one
                    // datagram per send from now on.
                    Err(e) if gso_refused(&e) => inner.gso.store(false, Ordering::Relaxed),
                    Err(_) => {
                        i = j;
                        continue;
                    }
                }
            }
        }
        for o in &out[i..j] {
            let _ = inner.socket.send_to(&data[o.range.clone()], o.to).await;
        }
        i = j;
    }
    out.clear();
    data.clear();
    data.shrink_to(OUTBOX_KEEP);
}

#[cfg(target_os = "linux")]
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// A path MTU probe goes with "don't fragment"; refused by the local stack as too big for the
/// interface, its connection learns so and it goes again without, as libtorrent does.
async fn send_probe(inner: &Inner, data: &[u8], to: SocketAddr, conn: &Shared) {
    let df = sys::set_dont_fragment(&inner.socket, true).is_ok();
    let sent = inner.socket.send_to(data, to).await;
    if df {
        let _ = sys::set_dont_fragment(&inner.socket, false);
    }
    if let Err(e) = sent {
        if e.raw_os_error() == Some(libc::EMSGSIZE) {
            lock(conn).conn.probe_too_big();
            let _ = inner.socket.send_to(data, to).await;
        }
    }
}

/// One receive: datagrams of `segment` bytes back to back (a train the kernel coalesced with
/// GRO: all from `from`, the last maybe shorter), or one datagram.
struct Train<'a> {
    data: &'a [u8],
    segment: usize,
    from: SocketAddr,
    now: Micros,
}

/// Where a batch of received datagrams goes, the table locked for the batch.
struct Dispatch<'a, 'b> {
    inner: &'a Arc<Inner>,
    conns: &'a mut HashMap<Key, Shared>,
    /// The connection the last datagram went to: the next is most likely its too, and then
    /// needs no lookup in the table.
    last: &'a mut Option<(Key, Shared)>,
    accept_tx: &'a mpsc::Sender<(UtpStream, SocketAddr)>,
    other: Option<&'b mpsc::Sender<(Vec<u8>, SocketAddr)>>,
    /// RESETs to send once the batch is handled (for packets of unknown connections).
    resets: &'a mut Vec<(Vec<u8>, SocketAddr)>,
}

/// The table key of a uTP datagram from `from` (one that passed [`is_utp`]): a SYN carries the
/// id the dialer receives on, one below ours.
fn key_of(d: &[u8], from: SocketAddr) -> Key {
    let id = u16::from_be_bytes([d[2], d[3]]);
    if d[0] >> 4 == PacketType::Syn as u8 {
        (from, id.wrapping_add(1))
    } else {
        (from, id)
    }
}

impl Dispatch<'_, '_> {
    /// Hands each datagram of the train to its connection, a run of them for one connection
    /// under one lock of it.
    fn train(&mut self, t: Train<'_>) {
        let mut datagrams = t.data.chunks(t.segment).peekable();
        while let Some(d) = datagrams.next() {
            if !is_utp(d) {
                if let Some(other) = self.other {
                    let _ = other.try_send((d.to_vec(), t.from));
                }
                continue;
            }
            let key = key_of(d, t.from);
            if self.last.as_ref().is_none_or(|(k, _)| *k != key) {
                match self.conns.get(&key) {
                    Some(shared) => *self.last = Some((key, shared.clone())),
                    None => {
                        if let Some(reset) = self.unknown(d, key, t.now) {
                            self.resets.push((reset, t.from));
                        }
                        continue;
                    }
                }
            }
            let Some((_, shared)) = self.last.as_ref() else {
                continue;
            };
            let mut slot = lock(shared);
            let _ = slot.conn.handle_datagram(d, t.now);
            while let Some(next) = datagrams.next_if(|n| is_utp(n) && key_of(n, t.from) == key) {
                let _ = slot.conn.handle_datagram(next, t.now);
            }
        }
    }

    /// A datagram for no connection in the table: a SYN is accepted; anything else but a RESET
    /// gets a RESET back (as libtorrent does, so the peer gives up at once).
    fn unknown(&mut self, d: &[u8], key: Key, now: Micros) -> Option<Vec<u8>> {
        let p = Packet::parse(d).ok()?;
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
        let from = key.0;
        let seq = random_u16(now ^ u64::from(p.header.conn_id));
        let mut conn = Connection::accept(self.inner.config.clone(), d, seq, now).ok()?;
        limit_to_route(&mut conn, from);
        let shared = new_slot(conn);
        let stream = UtpStream {
            shared: shared.clone(),
            inner: self.inner.clone(),
        };
        if self.accept_tx.try_send((stream, from)).is_ok() {
            self.conns.insert(key, shared);
        }
        None
    }
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
                // Reading may reopen the window the peer waits on; otherwise the driver has
                // nothing to do for it, and waking it costs a context switch per read.
                let wake = n > 0 && slot.conn.wants_transmit();
                drop(slot);
                if wake {
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
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    /// All the slices that fit go in under one lock and one wake of the driver: a peer writes
    /// each block as a 13-byte message header and the block, which one at a time left the
    /// header to go out alone in a packet of its own.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut slot = lock(&self.shared);
        let mut total = 0;
        for b in bufs {
            match slot.conn.write(b) {
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Poll::Ready(Err(io_error(e))),
                Err(_) => break,
            }
        }
        if total == 0 && bufs.iter().any(|b| !b.is_empty()) {
            slot.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        // Behind a full window the bytes wait for the next ack, which the driver handles
        // anyway: waking it now would find nothing to send.
        let wake = slot.conn.wants_transmit();
        drop(slot);
        if wake {
            self.inner.wake.notify_one();
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(ty: PacketType, conn_id: u16) -> Vec<u8> {
        let mut d = Vec::new();
        Header {
            ty,
            conn_id,
            timestamp: 0,
            timestamp_diff: 0,
            wnd_size: 0,
            seq_nr: 1,
            ack_nr: 0,
        }
        .write(None, b"x", &mut d);
        d
    }

    /// The key a datagram is looked up by is the one its connection was filed under: a dialer's
    /// SYN carries the id it receives on, one below what its other packets carry.
    #[test]
    fn syn_keyed_one_above_its_id_other_packets_by_theirs() {
        let from: SocketAddr = "127.0.0.1:6881".parse().unwrap();
        assert_eq!(key_of(&datagram(PacketType::Syn, 7), from), (from, 8));
        assert_eq!(key_of(&datagram(PacketType::Syn, 0xffff), from), (from, 0));
        for ty in [PacketType::Data, PacketType::State, PacketType::Fin] {
            assert_eq!(key_of(&datagram(ty, 8), from), (from, 8));
        }
    }
}
