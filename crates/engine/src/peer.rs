//! One peer connection, as I/O only: the handshake, then a reader (this task) that decodes frames and
//! hands them to the torrent core, and a writer task that drains the peer's queue into vectored writes,
//! reads the blocks it serves, and reports a socket that stops taking data. Every decision (what to
//! request, whom to unchoke, what to refuse) is the core's; see `Shared::pump`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, Notify};
use torrent_core::{PeerEvent, PeerKey};
use wire::{BlockRef, Decoder, Handshake, Message};

use crate::conns::{AcceptBackoff, Admitted, HandshakeGate};
use crate::link::{Out, PeerIo, UploadIo, WRITER_QUEUE};
use crate::torrent::Shared;
use crate::transport::{PeerStream, ReadHalf, WriteHalf};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A writer whose socket takes nothing for this long copies out the blocks it holds, so a slow reader
/// pins no piece buffer; after `STALL_AFTER` the core hears the peer stalled (it loses its upload slot,
/// and is choked if it stays so: a reader on any working link frees some of its buffer every round
/// trip), after `DROP_AFTER` it is disconnected.
const COMPACT_AFTER: Duration = Duration::from_millis(100);
const STALL_AFTER: Duration = Duration::from_millis(250);
const DROP_AFTER: Duration = Duration::from_secs(30);

/// A listening socket for peers. `[::]` means every address of both families, so that socket is made
/// dual-stack explicitly: a system may default IPv6 sockets to v6-only (net.ipv6.bindv6only).
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // As std's own listeners do: a restarted client can take its port back at once.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// An accepted peer's address as the rest of the engine keeps addresses: an IPv4 peer reaching a
/// dual-stack listener arrives as `::ffff:a.b.c.d` and is recorded (and banned) as `a.b.c.d`.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    gate: Arc<HandshakeGate>,
) {
    let mut stop = shared.stopping();
    let mut backoff = AcceptBackoff::new("peer listener");
    loop {
        let (stream, addr) = tokio::select! {
            a = backoff.accept(&listener) => a,
            _ = stop.changed() => return,
        };
        let addr = canonical(addr);
        if shared.state.lock().core.is_banned(addr.ip()) {
            continue;
        }
        // Refused (its IP or the listener has too many connections without a handshake): closed now.
        let Some(admitted) = crate::conns::admit(&gate, &stream, addr.ip()) else {
            continue;
        };
        let shared = shared.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let result = match PeerStream::tcp(stream) {
                Ok(stream) => incoming(shared, stream, addr, &gate, admitted).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = result {
                tracing::debug!("incoming {addr}: {e:#}");
            }
        });
    }
}

/// An admitted connection to this torrent's own listener (TCP or uTP): its handshakes, plaintext or
/// MSE as the torrent's policy allows, then the connection.
pub(crate) async fn incoming(
    shared: Arc<Shared>,
    stream: PeerStream,
    addr: SocketAddr,
    gate: &HandshakeGate,
    admitted: Admitted,
) -> anyhow::Result<()> {
    let ours: mse::InfoHashes = [shared.id.0].into_iter().collect();
    let encryption = shared.config.encryption;
    let (stream, theirs) =
        crate::conns::finish_handshake(gate, stream, admitted, addr, encryption, ours).await?;
    if theirs.info_hash != shared.id {
        anyhow::bail!("handshake for another torrent");
    }
    answer_incoming(shared, stream, addr, theirs).await
}

/// Answers an incoming peer whose handshake named this torrent, then runs the connection.
pub(crate) async fn answer_incoming(
    shared: Arc<Shared>,
    mut stream: PeerStream,
    addr: SocketAddr,
    theirs: Handshake,
) -> anyhow::Result<()> {
    if shared.state.lock().core.is_banned(addr.ip()) {
        anyhow::bail!("banned");
    }
    let ours = Handshake::new(shared.id, shared.config.peer_id, shared.uses_dht());
    stream.write_all(&ours.encode()).await?;
    run(shared, stream, addr, false, ours, theirs).await
}

/// Dials `addr`, which the connect loop took a unit of the shared peer budget for (if there is one):
/// the unit is given back when the handshake is over, and registering the peer takes its own.
pub(crate) async fn connect(shared: Arc<Shared>, addr: SocketAddr) {
    // A peer that answered only plaintext before is dialled in plaintext straight away.
    let policy = shared
        .plaintext_peers
        .lock()
        .policy_for(shared.config.encryption, addr);
    let holepunch = shared.state.lock().core.is_punching(addr);
    let how = Dial {
        holepunch,
        bind: shared.config.listen,
        info_hash: shared.id,
        peer_id: shared.config.peer_id,
        dht: shared.uses_dht(),
        encryption: policy,
        utp: shared.utp.clone(),
        transports: shared.config.transports,
    };
    let handshake = dial(&how, addr).await;
    if let Ok((stream, _, _)) = &handshake {
        shared
            .plaintext_peers
            .lock()
            .dialled(policy, addr, stream.encrypted());
    }
    if let Some(budget) = &shared.config.peer_budget {
        budget.give_back();
    }
    let reached = handshake.is_ok();
    let result = match handshake {
        Ok((stream, ours, theirs)) => run(shared.clone(), stream, addr, true, ours, theirs).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::debug!("peer {addr}: {e:#}");
    }
    // A peer we never reached may be behind a NAT: the core may ask a relay to introduce us.
    shared.with_core_now(|core, now| {
        if reached {
            core.dial_failed(addr, now)
        } else {
            core.unreachable(addr, now)
        }
    });
}

/// What an outgoing connection says of us, and from where it is made.
pub(crate) struct Dial {
    /// Our listening address: outgoing connections leave from its IP when that is not unspecified,
    /// never from its port.
    pub bind: SocketAddr,
    pub info_hash: ids::InfoHash,
    pub peer_id: ids::PeerId,
    pub dht: bool,
    /// MSE for this dial (`Off`, or `Prefer` with a plaintext retry, or `Require`).
    pub encryption: crate::Encryption,
    /// The uTP socket to dial through (none: TCP only), and which transports may be used.
    pub utp: Option<crate::UtpEndpoint>,
    pub transports: crate::Transports,
    /// The dial answers a relay's `connect` (BEP 55): the peer dials us at the same moment, through
    /// NATs that let in only what answers packets sent out, so uTP goes first whatever is remembered
    /// of the peer, and its failure is not remembered.
    pub holepunch: bool,
}

/// Connects to `addr` and exchanges handshakes: the one way out for a torrent's peers and a magnet
/// link's metadata phase alike.
pub(crate) async fn dial(
    how: &Dial,
    addr: SocketAddr,
) -> anyhow::Result<(PeerStream, Handshake, Handshake)> {
    let ours = Handshake::new(how.info_hash, how.peer_id, how.dht);
    // uTP first where the peer may speak it, TCP beside it when uTP is slow to answer; a plaintext
    // retry under `Prefer` dials again the same way.
    let connect = || {
        crate::utp_transport::dial(
            how.utp.as_ref(),
            how.transports,
            how.holepunch,
            addr,
            dial_tcp(addr, how.bind),
        )
    };
    let (stream, theirs) =
        crate::encryption::outgoing(how.encryption, &ours, HANDSHAKE_TIMEOUT, connect).await?;
    if theirs.info_hash != how.info_hash {
        anyhow::bail!("peer answered for another torrent");
    }
    Ok((stream, ours, theirs))
}

/// A TCP connection to `addr`, from `bind`'s address when it is a specific one of the same family,
/// never from its port.
pub(crate) async fn dial_tcp(addr: SocketAddr, bind: SocketAddr) -> anyhow::Result<PeerStream> {
    let new_socket = || {
        if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
    };
    let mut socket = new_socket()?;
    let ip = bind.ip();
    if !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4() {
        socket.bind(SocketAddr::new(ip, 0))?;
        // `get` picks its listening port before a magnet's metadata phase and binds it after; a
        // connection that phase hands over must not be holding it. While the first socket holds the
        // port, the second gets another.
        if socket.local_addr()?.port() == bind.port() {
            let other = new_socket()?;
            other.bind(SocketAddr::new(ip, 0))?;
            socket = other;
        }
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await??;
    Ok(PeerStream::tcp(stream)?)
}

/// Takes over a connection from a magnet link's metadata phase: registered with the core like a new
/// one, then what the peer said before the piece count was known is fed in, then its bytes as usual.
pub(crate) async fn adopt(shared: Arc<Shared>, carried: crate::carry::CarriedPeer) {
    let addr = carried.addr;
    let outgoing = carried.outgoing;
    let result = run_with(
        shared.clone(),
        carried.stream,
        addr,
        outgoing,
        carried.ours,
        carried.theirs,
        carried.buffered,
        carried.said,
    )
    .await;
    if let Err(e) = result {
        tracing::debug!("peer {addr}: {e:#}");
    }
    if outgoing {
        shared.with_core_now(|core, now| core.dial_failed(addr, now));
    }
}

/// Dials the addresses the core asks for (`Connect` actions).
pub(crate) async fn dial_loop(shared: Arc<Shared>, mut addrs: mpsc::UnboundedReceiver<SocketAddr>) {
    let mut stop = shared.stopping();
    loop {
        tokio::select! {
            addr = addrs.recv() => match addr {
                Some(addr) => {
                    tokio::spawn(connect(shared.clone(), addr));
                }
                None => return,
            },
            _ = stop.changed() => return,
        }
    }
}

/// The bytes answering request `b`: sliced from its piece when that is cached, or read for the cache
/// when the peer asks for more of the piece and its read allowance permits, else just the block.
async fn block_bytes(
    shared: &Arc<Shared>,
    key: PeerKey,
    uploads: &UploadIo,
    b: BlockRef,
) -> Option<Bytes> {
    if let Some(piece) = shared.cached_piece(b.index) {
        return Some(slice_block(&piece, b));
    }
    let size = shared.piece_sizes.get(b.index.as_usize()).copied()?;
    let more = shared.state.lock().core.pending_in_piece(key, b.index) > 1;
    if more && uploads.read_whole(size) {
        if let Some(piece) = shared.piece_data(b.index).await {
            return Some(slice_block(&piece, b));
        }
    }
    shared.block_from_disk(b).await
}

/// Watches one writer's socket: a peer that takes none of what is queued for it is reported stalled
/// to the core, then dropped.
struct Watch {
    peer: Option<(Arc<Shared>, PeerKey)>,
    stalled: bool,
}

impl Watch {
    fn new(shared: Arc<Shared>, key: PeerKey) -> Watch {
        Watch {
            peer: Some((shared, key)),
            stalled: false,
        }
    }

    /// A watch that only times (for tests of the writing alone).
    #[cfg(test)]
    fn detached() -> Watch {
        Watch {
            peer: None,
            stalled: false,
        }
    }

    /// When to look again, `since` the last progress with `waited` gone by.
    fn next_check(waited: Duration) -> Duration {
        [COMPACT_AFTER, STALL_AFTER, DROP_AFTER]
            .into_iter()
            .find(|step| *step > waited)
            .unwrap_or(DROP_AFTER)
    }

    fn report(&mut self, stalled: bool) {
        self.stalled = stalled;
        if let Some((shared, key)) = &self.peer {
            let key = *key;
            shared.with_core_now(|core, now| {
                core.handle_event(key, PeerEvent::WriteStalled(stalled), now)
            });
        }
    }

    fn no_progress(&mut self, waited: Duration) -> std::io::Result<()> {
        if waited >= DROP_AFTER {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer took nothing we sent",
            ));
        }
        if waited >= STALL_AFTER && !self.stalled {
            self.report(true);
        }
        Ok(())
    }

    fn progress(&mut self) {
        if self.stalled {
            self.report(false);
        }
    }
}

/// The writer: drains queued messages into one vectored write per wake-up. Blocks are written from the
/// piece buffers they were sliced from, never copied into the output buffer (unless the socket stalls).
async fn writer(
    mut half: WriteHalf,
    mut rx: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
    key: PeerKey,
    uploads: Arc<UploadIo>,
    close: Arc<Notify>,
) {
    const BATCH_BYTES: usize = 256 * 1024;
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut segments: Vec<Bytes> = Vec::with_capacity(64);
    let mut watch = Watch::new(shared.clone(), key);
    // Blocks taken off the queue while a block ahead of them waited for the limiter, in order.
    let mut deferred: VecDeque<Out> = VecDeque::new();
    let mut queue_open = true;
    'run: loop {
        let first = match deferred.pop_front() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => break,
            },
        };
        let mut queued = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let message = match item {
                Out::Message(m) => Some(m),
                Out::Reply(m, reserved) => {
                    uploads.release_reply(reserved);
                    Some(m)
                }
                Out::Block(b) if shared.state.lock().core.upload_pending(key, &b) => {
                    if shared.cached_piece(b.index).is_none() && !segments.is_empty() {
                        // Going to the disk: what is batched goes out first.
                        queued = 0;
                        if flush(&mut half, &mut out, &mut segments, &mut watch)
                            .await
                            .is_err()
                        {
                            break 'run;
                        }
                    }
                    match block_bytes(&shared, key, &uploads, b).await {
                        // Asked twice: no rate-limit wait for a block already cancelled, and a cancel
                        // or choke that arrives during the wait still stops it.
                        Some(data) => {
                            // While the block waits for the limiter, control messages queued
                            // behind it (haves, chokes, rejects, extension replies) go out at once;
                            // blocks behind it keep their order. Reordering is safe: a choke or
                            // cancel that overtakes this block is seen by `commit_upload` below.
                            let pass = shared.pass_upload(data.len());
                            tokio::pin!(pass);
                            loop {
                                tokio::select! {
                                    biased;
                                    () = &mut pass => break,
                                    item = rx.recv(), if queue_open && deferred.len() < MAX_DEFERRED => {
                                        let control = match item {
                                            None => {
                                                queue_open = false;
                                                continue;
                                            }
                                            Some(block @ Out::Block(_)) => {
                                                deferred.push_back(block);
                                                continue;
                                            }
                                            Some(Out::Message(m)) => m,
                                            Some(Out::Reply(m, reserved)) => {
                                                uploads.release_reply(reserved);
                                                m
                                            }
                                        };
                                        // Whatever was batched before this block was queued first.
                                        control.encode(&mut out);
                                        queued = 0;
                                        if flush(&mut half, &mut out, &mut segments, &mut watch)
                                            .await
                                            .is_err()
                                        {
                                            break 'run;
                                        }
                                    }
                                }
                            }
                            let sent =
                                shared
                                    .state
                                    .lock()
                                    .core
                                    .commit_upload(key, b, Instant::now());
                            sent.then(|| {
                                let len = data.len() as u64;
                                uploads.sent.fetch_add(len, Ordering::Relaxed);
                                shared.uploaded.fetch_add(len, Ordering::Relaxed);
                                Message::Piece {
                                    index: b.index,
                                    begin: b.begin,
                                    data,
                                }
                            })
                        }
                        None => {
                            // Rejected under BEP 6 through the queue, if still pending.
                            shared.with_core_now(|core, now| {
                                core.handle_event(key, PeerEvent::ReadFailed(b), now)
                            });
                            None
                        }
                    }
                }
                Out::Block(_) => None,
            };
            if let Some(block) = message.as_ref().and_then(|m| m.encode_head(&mut out)) {
                segments.push(out.split().freeze());
                if !block.is_empty() {
                    queued += block.len();
                    segments.push(block.clone());
                }
            }
            if queued + out.len() >= BATCH_BYTES || segments.len() >= MAX_SEGMENTS - 2 {
                break;
            }
            next = deferred.pop_front().or_else(|| rx.try_recv().ok());
        }
        if flush(&mut half, &mut out, &mut segments, &mut watch)
            .await
            .is_err()
        {
            break;
        }
    }
    // The reader may be waiting for the peer: tell it the connection is over.
    close.notify_one();
}

/// Writes the batched `segments` followed by what is staged in `out`.
async fn flush(
    half: &mut WriteHalf,
    out: &mut BytesMut,
    segments: &mut Vec<Bytes>,
    watch: &mut Watch,
) -> std::io::Result<()> {
    if !out.is_empty() {
        segments.push(out.split().freeze());
    }
    write_segments(half, segments, watch).await
}

/// Block `b` of its piece's bytes (zeros past the end of a short tail piece).
fn slice_block(piece: &Bytes, b: BlockRef) -> Bytes {
    let (begin, end) = (b.begin as usize, (b.begin + b.length) as usize);
    if end <= piece.len() {
        piece.slice(begin..end)
    } else {
        let mut padded = vec![0u8; end - begin];
        if begin < piece.len() {
            padded[..piece.len() - begin].copy_from_slice(&piece[begin..]);
        }
        Bytes::from(padded)
    }
}

/// Blocks the writer sets aside while one waits for the upload limiter; past it, control messages
/// wait too. A peer's upload queue holds far fewer (docs/limits.md).
const MAX_DEFERRED: usize = 1024;

/// Segments per vectored write; far below the kernel's 1024 iovecs.
const MAX_SEGMENTS: usize = 64;

/// Writes all of `segments` in order, however the kernel splits the writes, and leaves it empty. When the
/// socket takes nothing for a while the rest is copied into one buffer of its own, so the piece buffers
/// it was sliced from are not held for a reader that may never come, and `watch` hears of the stall.
async fn write_segments<W: AsyncWrite + Unpin>(
    w: &mut W,
    segments: &mut Vec<Bytes>,
    watch: &mut Watch,
) -> std::io::Result<()> {
    segments.retain(|s| !s.is_empty());
    let mut first = 0;
    let mut since = Instant::now();
    let mut compacted = false;
    while first < segments.len() {
        let waited = since.elapsed();
        let attempt = {
            let slices: Vec<IoSlice<'_>> =
                segments[first..].iter().map(|s| IoSlice::new(s)).collect();
            let deadline = tokio::time::Instant::from_std(since + Watch::next_check(waited));
            tokio::time::timeout_at(deadline, w.write_vectored(&slices)).await
        };
        let Ok(written) = attempt else {
            // A write that timed out wrote nothing (it is retried whole).
            let waited = since.elapsed();
            if !compacted && waited >= COMPACT_AFTER {
                compacted = true;
                let rest = segments.split_off(first);
                let mut copy = BytesMut::with_capacity(rest.iter().map(Bytes::len).sum());
                for s in &rest {
                    copy.extend_from_slice(s);
                }
                segments.clear();
                segments.push(copy.freeze());
                first = 0;
            }
            watch.no_progress(waited)?;
            continue;
        };
        let mut written = written?;
        since = Instant::now();
        watch.progress();
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let len = segments[first].len();
            if written >= len {
                written -= len;
                first += 1;
            } else {
                segments[first].advance(written);
                written = 0;
            }
        }
    }
    segments.clear();
    Ok(())
}

async fn run(
    shared: Arc<Shared>,
    stream: PeerStream,
    addr: SocketAddr,
    outgoing: bool,
    ours: Handshake,
    theirs: Handshake,
) -> anyhow::Result<()> {
    let buf = BytesMut::with_capacity(256 * 1024);
    run_with(
        shared,
        stream,
        addr,
        outgoing,
        ours,
        theirs,
        buf,
        Vec::new(),
    )
    .await
}

/// [`run`] for a connection that has been read from already: `buf` holds bytes not yet decoded, and
/// `said` the messages the core is to hear first.
#[allow(clippy::too_many_arguments)]
async fn run_with(
    shared: Arc<Shared>,
    stream: PeerStream,
    addr: SocketAddr,
    outgoing: bool,
    ours: Handshake,
    theirs: Handshake,
    buf: BytesMut,
    said: Vec<Message>,
) -> anyhow::Result<()> {
    tracing::debug!(
        "peer {addr}: {} over {:?}{}",
        if outgoing { "dialled" } else { "accepted" },
        stream.carrier(),
        if stream.encrypted() {
            ", encrypted"
        } else {
            ""
        }
    );
    let encrypted = stream.encrypted();
    let carrier = stream.carrier();
    let (mut read_half, write_half) = stream.into_split();
    let budget = shared.config.peer_budget.clone();
    if budget.as_ref().is_some_and(|b| !b.try_take()) {
        // Another torrent took the last slot: dial this peer again when a slot frees, or a torrent
        // whose only peer this was would wait for its next tracker announce.
        if outgoing {
            shared.with_core_now(|core, now| core.dial_deferred(addr, now));
        }
        anyhow::bail!("peer limit reached");
    }
    let (out_tx, out_rx) = mpsc::channel::<Out>(WRITER_QUEUE);
    let close = Arc::new(Notify::new());
    let uploads = Arc::new(UploadIo::default());
    let link = PeerIo {
        addr,
        out: out_tx,
        close: close.clone(),
        uploads: uploads.clone(),
        budget,
        encrypted,
        carrier,
    };
    // A refused peer's link is dropped here, which gives its budget unit back.
    let (key, after) = shared
        .register(addr, outgoing, &ours, &theirs, link)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    shared.finish(after).await;
    if !said.is_empty() {
        let ((), after) = shared.with_core(|core, now| {
            for m in said {
                core.handle_event(key, PeerEvent::Message(m), now);
            }
        });
        shared.finish(after).await;
    }
    let writer_task = tokio::spawn(writer(
        write_half,
        out_rx,
        shared.clone(),
        key,
        uploads,
        close.clone(),
    ));
    let result = read_loop(&shared, key, addr, &mut read_half, buf, &close).await;
    shared.unregister(key);
    writer_task.abort();
    result
}

/// One read into `buf`, of at most `cap` bytes when a download limit asks for small reads.
async fn read_some(
    read: &mut ReadHalf,
    buf: &mut BytesMut,
    cap: Option<usize>,
) -> std::io::Result<usize> {
    match cap {
        Some(cap) => read.read_buf(&mut (&mut *buf).limit(cap)).await,
        None => read.read_buf(buf).await,
    }
}

/// Reads and decodes the peer's frames and feeds each read's worth to the core at once.
async fn read_loop(
    shared: &Arc<Shared>,
    key: PeerKey,
    addr: SocketAddr,
    read: &mut ReadHalf,
    mut buf: BytesMut,
    close: &Notify,
) -> anyhow::Result<()> {
    let decoder = Decoder::default();
    let mut frames = Vec::new();
    let mut stop = shared.stopping();
    loop {
        tokio::select! {
            n = read_some(read, &mut buf, shared.download_read_cap()) => {
                let n = n?;
                if n == 0 {
                    anyhow::bail!("peer closed the connection");
                }
                // Only block payloads pay the download limiter, and after they are handed on: a
                // peer's haves, chokes and extension messages are not held up by the limit, nor by
                // other peers' blocks draining a shared one. The wait still holds the next read.
                let mut payload = 0;
                let decoded = loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(message)) => {
                            if let Message::Piece { data, .. } = &message {
                                payload += data.len();
                            } else {
                                tracing::trace!("{addr} sent {message:?}");
                            }
                            frames.push(message);
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                if !frames.is_empty() {
                    let messages = std::mem::take(&mut frames);
                    let ((), after) = shared.with_core(|core, now| {
                        for m in messages {
                            core.handle_event(key, PeerEvent::Message(m), now);
                        }
                    });
                    shared.finish(after).await;
                }
                decoded?;
                if payload > 0 {
                    shared.pass_download(payload).await;
                }
                if buf.capacity() - buf.len() < 32 * 1024 {
                    buf.reserve(256 * 1024);
                }
            }
            _ = close.notified() => anyhow::bail!("disconnected by the torrent"),
            _ = stop.changed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use wire::{BlockRef, Message, PieceIndex};

    use crate::testutil::{seed, FakePeer, Seed};

    const WAIT: Duration = Duration::from_secs(10);
    /// Blocks of 1 KiB at 5 kB/s: each waits about 0.2 s for the limiter (the first about 0.1 s), so
    /// requests sit in our upload queue long enough for a cancel or a choke to reach them.
    const RATE: u64 = 5_000;

    fn block(i: u32) -> BlockRef {
        BlockRef {
            index: PieceIndex::new(i / 16),
            begin: (i % 16) * 1024,
            length: 1024,
        }
    }

    /// Takes at most 7 bytes of at most two slices per call, like a socket whose buffer is nearly full.
    struct Trickle(Vec<u8>);

    impl tokio::io::AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut budget = 7;
            for b in bufs.iter().take(2) {
                let n = b.len().min(budget);
                self.0.extend_from_slice(&b[..n]);
                budget -= n;
                if n < b.len() {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(7 - budget))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn segments_are_written_whole_and_in_order_through_short_writes() {
        let parts: Vec<&[u8]> = vec![b"header-13-byt", b"", b"x", &[9u8; 40], b"tail", b""];
        let mut segments: Vec<bytes::Bytes> = parts
            .iter()
            .map(|p| bytes::Bytes::copy_from_slice(p))
            .collect();
        let mut sink = Trickle(Vec::new());
        super::write_segments(&mut sink, &mut segments, &mut super::Watch::detached())
            .await
            .unwrap();
        assert_eq!(sink.0, parts.concat());
        assert!(segments.is_empty());
    }

    /// A slow seed of eight 16 KiB pieces and a peer it has unchoked.
    async fn unchoked(fast: bool) -> (Seed, FakePeer) {
        let seed = seed(8 * 16 * 1024, 16 * 1024, |c| c.max_upload_rate = Some(RATE)).await;
        let mut peer = FakePeer::connect(seed.handle.listen_addr(), seed.info_hash, fast).await;
        assert!(peer.theirs.supports_fast());
        peer.send(&[Message::Interested]).await;
        peer.wait_for("unchoke", WAIT, |m| matches!(m, Message::Unchoke))
            .await;
        (seed, peer)
    }

    /// What came back for each block until `done` says enough, then for `linger` more: pieces and
    /// rejects per block, and whether each came after a choke.
    #[derive(Default)]
    struct Answers {
        pieces: HashMap<BlockRef, u32>,
        rejects: HashMap<BlockRef, u32>,
        pieces_after_choke: u32,
        choked: bool,
    }

    impl Answers {
        fn note(&mut self, m: &Message) {
            match m {
                Message::Piece { index, begin, data } => {
                    let b = BlockRef {
                        index: *index,
                        begin: *begin,
                        length: data.len() as u32,
                    };
                    *self.pieces.entry(b).or_default() += 1;
                    if self.choked {
                        self.pieces_after_choke += 1;
                    }
                }
                Message::Reject(b) => *self.rejects.entry(*b).or_default() += 1,
                Message::Choke => self.choked = true,
                _ => {}
            }
        }

        fn answers(&self, b: &BlockRef) -> u32 {
            self.pieces.get(b).copied().unwrap_or(0) + self.rejects.get(b).copied().unwrap_or(0)
        }

        async fn collect(
            &mut self,
            peer: &mut FakePeer,
            done: impl Fn(&Answers) -> bool,
            linger: Duration,
        ) {
            let deadline = tokio::time::Instant::now() + WAIT;
            while !done(self) {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match peer.next(left).await {
                    Some(m) => self.note(&m),
                    None => panic!(
                        "answers incomplete after {WAIT:?}: pieces {:?}, rejects {:?}",
                        self.pieces, self.rejects
                    ),
                }
            }
            let end = tokio::time::Instant::now() + linger;
            while let Some(m) = peer
                .next(end.saturating_duration_since(tokio::time::Instant::now()))
                .await
            {
                self.note(&m);
            }
        }
    }

    #[tokio::test]
    async fn a_second_peer_exchange_within_the_gap_is_ignored_and_one_adds_at_most_fifty() {
        // One connection allowed, so addresses stay queued instead of being dialled.
        let seed = seed(64 * 1024, 16 * 1024, |c| {
            c.pex = true;
            c.max_peers = 1;
        })
        .await;
        let mut peer = FakePeer::connect(seed.handle.listen_addr(), seed.info_hash, true).await;
        let v4: Vec<SocketAddr> = (0..60u8)
            .map(|i| SocketAddr::from(([10, 0, 1, i], 6881)))
            .collect();
        let v6: Vec<SocketAddr> = (1..=10u16)
            .map(|i| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i], 6881)))
            .collect();
        let later: Vec<SocketAddr> = (0..5u8)
            .map(|i| SocketAddr::from(([10, 0, 2, i], 6881)))
            .collect();
        let pex = |added: Vec<SocketAddr>| Message::Extended {
            id: torrent_core::UT_PEX_ID,
            payload: wire::PexMessage {
                added,
                ..Default::default()
            }
            .encode()
            .into(),
        };
        // The unchoke answering the last message shows both exchanges were read.
        peer.send(&[
            pex(v4.iter().chain(&v6).copied().collect()),
            pex(later.clone()),
            Message::Interested,
        ])
        .await;
        peer.wait_for("unchoke", WAIT, |m| matches!(m, Message::Unchoke))
            .await;
        let known: Vec<SocketAddr> = seed
            .handle
            .shared
            .state
            .lock()
            .core
            .known()
            .copied()
            .collect();
        assert_eq!(known.len(), 50, "{known:?}");
        assert!(known.iter().all(|a| v4.contains(a) || v6.contains(a)));
        assert!(known.iter().all(|a| !later.contains(a)), "{known:?}");
    }

    #[tokio::test]
    async fn a_cancelled_request_is_not_served_and_under_the_fast_extension_is_rejected() {
        for fast in [false, true] {
            let (_seed, mut peer) = unchoked(fast).await;
            let kept: Vec<BlockRef> = (0..4).map(block).collect();
            let cancelled: Vec<BlockRef> = (4..12).map(block).collect();
            let mut messages: Vec<Message> = kept
                .iter()
                .chain(&cancelled)
                .map(|b| Message::Request(*b))
                .collect();
            messages.extend(cancelled.iter().map(|b| Message::Cancel(*b)));
            peer.send(&messages).await;
            let mut got = Answers::default();
            got.collect(
                &mut peer,
                |a| {
                    kept.iter().all(|b| a.pieces.contains_key(b))
                        && (!fast || cancelled.iter().all(|b| a.answers(b) > 0))
                },
                // Long enough for three more blocks to pass the limiter.
                Duration::from_millis(700),
            )
            .await;
            for b in &kept {
                assert_eq!(
                    got.pieces.get(b),
                    Some(&1),
                    "fast {fast}: {b:?} served once"
                );
                assert_eq!(got.rejects.get(b), None, "fast {fast}: {b:?} not rejected");
            }
            for b in &cancelled {
                assert_eq!(
                    got.pieces.get(b),
                    None,
                    "fast {fast}: cancelled {b:?} served"
                );
                let rejects = got.rejects.get(b).copied().unwrap_or(0);
                assert_eq!(rejects, u32::from(fast), "fast {fast}: rejects of {b:?}");
            }
        }
    }

    /// The download limit holds, now that only block payloads pay it after they are read, also over a
    /// short transfer from several peers: each read takes at most a burst's worth. 1 MiB at 400 kB/s
    /// from one seed takes about 2.5 s; 512 KiB at 150 kB/s from three at least 3.4 s (5–6 s: endgame
    /// duplicates pay the limit too), where it took 2.0–2.2 s when each connection's read took
    /// whatever its socket held before paying the limiter.
    #[tokio::test]
    async fn the_download_limit_holds() {
        for (len, seeds, rate, at_least) in [
            (1usize << 20, 1, 400_000u64, 2.3),
            (512 << 10, 3, 150_000, 3.0),
        ] {
            let mut sources = Vec::new();
            for _ in 0..seeds {
                sources.push(seed(len, 16 * 1024, |_| {}).await);
            }
            let dir = tempfile::tempdir().unwrap();
            let mut config = crate::torrent::TorrentConfig::new(
                sources[0].handle.shared.torrent.clone(),
                dir.path().to_path_buf(),
            );
            config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            config.use_trackers = false;
            config.pex = false;
            config.peers = sources.iter().map(|s| s.handle.listen_addr()).collect();
            config.max_download_rate = Some(rate);
            let start = std::time::Instant::now();
            let leecher = crate::launch::start(config).await.unwrap();
            let deadline = start + Duration::from_secs(20);
            while !leecher.shared.is_complete() {
                assert!(std::time::Instant::now() < deadline, "download unfinished");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let secs = start.elapsed().as_secs_f64();
            assert!(
                secs >= at_least,
                "{len} bytes from {seeds} at {rate} B/s in {secs:.2} s"
            );
        }
    }

    /// A control message is written while a block ahead of it waits for the upload limiter: the
    /// reject of a cancelled request overtakes the blocks queued before it (it used to wait until
    /// all seven had passed the limiter, about 1.4 s at this rate).
    #[tokio::test]
    async fn a_control_message_is_not_held_behind_blocks_waiting_for_the_limiter() {
        let (_seed, mut peer) = unchoked(true).await;
        let requested: Vec<BlockRef> = (0..8).map(block).collect();
        let mut messages: Vec<Message> = requested.iter().map(|b| Message::Request(*b)).collect();
        messages.push(Message::Cancel(requested[7]));
        peer.send(&messages).await;
        let mut got = Answers::default();
        got.collect(
            &mut peer,
            |a| a.rejects.contains_key(&requested[7]),
            Duration::ZERO,
        )
        .await;
        let served = got.pieces.len();
        assert!(
            served <= 2,
            "{served} blocks came before the reject queued behind them"
        );
    }

    #[tokio::test]
    async fn a_choke_voids_pending_requests_and_under_the_fast_extension_rejects_them() {
        for fast in [false, true] {
            let (seed, mut peer) = unchoked(fast).await;
            let requested: Vec<BlockRef> = (0..8).map(block).collect();
            let requests: Vec<Message> = requested.iter().map(|b| Message::Request(*b)).collect();
            peer.send(&requests).await;
            // About two blocks through the limiter; the writer sends them with the choke, as it batches.
            tokio::time::sleep(Duration::from_millis(350)).await;
            let mut got = Answers::default();
            // What the choker does to a peer that loses its slot.
            seed.handle.shared.with_core_now(|core, now| {
                for p in core.peers() {
                    core.choke_peer(p.key, now);
                }
            });
            got.collect(
                &mut peer,
                |a| a.choked && (!fast || requested.iter().all(|b| a.answers(b) > 0)),
                Duration::from_millis(700),
            )
            .await;
            assert_eq!(
                got.pieces_after_choke, 0,
                "fast {fast}: pieces after the choke"
            );
            // At 5 kB/s about two blocks pass the limiter in 350 ms; the rest were still queued.
            let served = got.pieces.len();
            assert!(
                served <= 4,
                "fast {fast}: {served} of 8 served though the choke came after about two"
            );
            for b in &requested {
                let expected = if fast {
                    1
                } else {
                    u32::from(got.pieces.contains_key(b))
                };
                assert_eq!(got.answers(b), expected, "fast {fast}: answers to {b:?}");
            }
        }
    }

    #[tokio::test]
    async fn requests_over_the_per_peer_cap_are_rejected_or_get_the_peer_choked() {
        // Blocks of 128 KiB, sent in one write: the seed's reader (on this test's one thread) takes them
        // all on before its writer sends any.
        const BIG: u32 = 128 * 1024;
        for fast in [true, false] {
            let seed = seed(12 << 20, 1 << 20, |_| {}).await;
            let mut peer = FakePeer::connect(seed.handle.listen_addr(), seed.info_hash, fast).await;
            peer.send(&[Message::Interested]).await;
            peer.wait_for("unchoke", WAIT, |m| matches!(m, Message::Unchoke))
                .await;
            let fits = torrent_core::MAX_PEER_QUEUED_BYTES / BIG as usize;
            let requested: Vec<BlockRef> = (0..fits as u32 + 16)
                .map(|i| BlockRef {
                    index: PieceIndex::new(i / 8),
                    begin: (i % 8) * BIG,
                    length: BIG,
                })
                .collect();
            let requests: Vec<Message> = requested.iter().map(|b| Message::Request(*b)).collect();
            peer.send(&requests).await;
            let mut got = Answers::default();
            if fast {
                got.collect(
                    &mut peer,
                    |a| a.rejects.len() + a.pieces.len() >= fits + 16,
                    Duration::from_millis(300),
                )
                .await;
                let rejected: Vec<&BlockRef> = requested
                    .iter()
                    .filter(|b| got.rejects.contains_key(b))
                    .collect();
                assert_eq!(
                    rejected,
                    requested[fits..].iter().collect::<Vec<_>>(),
                    "exactly those past {fits} blocks of 128 KiB (8 MiB) are rejected"
                );
                assert!(!got.choked, "a fast peer is not choked for it");
                assert_eq!(got.pieces.len(), fits, "the first {fits} are served");
            } else {
                got.collect(&mut peer, |a| a.choked, Duration::from_millis(300))
                    .await;
                assert!(got.rejects.is_empty());
                // The choke took back every pending request before the writer got to them (BEP 3).
                assert!(got.pieces.is_empty(), "{} served", got.pieces.len());
            }
        }
    }

    #[tokio::test]
    async fn hash_requests_are_answered_from_one_tree_per_file_and_bounded_per_peer() {
        // 4096 pieces of 16 KiB: building the file's tree for each request (as before) took about 2 ms
        // a time, and a flood of them held up every other peer on the same worker for seconds.
        let piece = 16 * 1024;
        let seed = crate::testutil::seed_version(
            4096 * piece,
            piece as u64,
            metainfo::Version::V2,
            |_| {},
        )
        .await;
        let torrent = seed.handle.shared.torrent.clone();
        let root = torrent
            .files
            .iter()
            .find_map(|f| f.pieces_root)
            .expect("a v2 file");
        let range = |i: u32| wire::HashRange {
            pieces_root: root,
            base_layer: 0,
            index: (i % 8) * 512,
            length: 512,
            // Uncles up to the root of the 4096-leaf tree from a 512-leaf subtree.
            proof_layers: 11,
        };
        let mut flooder = FakePeer::connect(seed.handle.listen_addr(), seed.info_hash, true).await;
        let mut other = FakePeer::connect(seed.handle.listen_addr(), seed.info_hash, true).await;
        other.send(&[Message::Interested]).await;
        other
            .wait_for("unchoke", WAIT, |m| matches!(m, Message::Unchoke))
            .await;
        // 3000 hash requests nobody reads the answers to, then a block for the other peer.
        let flood: Vec<Message> = (0..3000).map(|i| Message::HashRequest(range(i))).collect();
        flooder.send(&flood).await;
        let asked = std::time::Instant::now();
        other.send(&[Message::Request(block(0))]).await;
        other
            .wait_for("the block", WAIT, |m| matches!(m, Message::Piece { .. }))
            .await;
        let latency = asked.elapsed();
        // Now read what the flooder got: hashes, then rejects once its unread replies filled its quota.
        let (mut hashes, mut rejects) = (0, 0);
        while hashes + rejects < 3000 {
            match flooder.next(WAIT).await {
                Some(Message::Hashes {
                    range: r,
                    hashes: h,
                }) => {
                    let proven =
                        metainfo::merkle::verify_proof(&h, r.index as usize, 512, [0; 32], root);
                    assert!(proven.is_some(), "hashes that prove to the file root");
                    hashes += 1;
                }
                Some(Message::HashReject(_)) => rejects += 1,
                Some(_) => {}
                None => panic!("{hashes} hashes and {rejects} rejects of 3000"),
            }
        }
        assert!(
            latency < Duration::from_millis(500),
            "another peer's block took {latency:?} behind the hash requests"
        );
        assert!(
            hashes > 0 && rejects > 0,
            "{hashes} answered, {rejects} rejected"
        );
        assert_eq!(
            seed.handle
                .shared
                .hash_tree_builds
                .load(std::sync::atomic::Ordering::Relaxed),
            1,
            "one tree built for the one file"
        );
    }
}
