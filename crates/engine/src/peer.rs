//! One peer connection: handshake, then a reader loop (this task) and a writer task, driving the sans-IO
//! `wire::Connection` and the torrent's shared state.

use std::collections::{HashMap, HashSet};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use wire::{
    BlockRef, Connection, Decoder, Event, ExtensionHandshake, Handshake, Message, HANDSHAKE_LEN,
};

use crate::bitfield::Bitfield;
use crate::conns::{AcceptBackoff, Admitted, HandshakeGate};
use crate::torrent::{Command, Shared};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer silent this long is dropped (it should send keep-alives every two minutes at most).
const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
const KEEPALIVE: Duration = Duration::from_secs(90);
/// With requests outstanding and no block for this long, the peer is snubbing us.
const SNUB_TIMEOUT: Duration = Duration::from_secs(30);
const MIN_QUEUE: usize = 16;
const MAX_QUEUE: usize = 500;
/// Requests a peer may have outstanding with us, and their bytes: 500 blocks of 16 KiB, what we
/// advertise (`reqq`) and what a fast peer keeps queued. Requests beyond either are rejected (BEP 6), or
/// without the fast extension the peer is choked, which voids them all (BEP 3).
const MAX_PEER_REQUESTS: usize = 500;
const MAX_PEER_QUEUED_BYTES: usize = 8 << 20;
/// Requests refused since the peer was last unchoked (over its cap, or sent while choked) before it is
/// dropped: a peer keeps at most its queue (500 here) in flight, so past twice that it is flooding, and
/// reading and refusing its requests would cost us CPU at the speed of the link.
const MAX_REFUSED_REQUESTS: usize = 2 * MAX_PEER_REQUESTS;
/// The fewest refused requests before a drop: a peer whose IP has misuse on record (it flooded us or
/// stalled an upload slot before) is allowed half as many per misuse, down to this, so a flooder that
/// keeps reconnecting costs little to turn away.
const MIN_REFUSED_REQUESTS: usize = 32;
/// Bytes of hash and metadata replies queued for a peer and not yet taken by its writer; a request
/// beyond this is rejected, so a peer that does not read cannot make us build up replies.
const MAX_PEER_REPLY_BYTES: usize = 1 << 20;
/// A writer whose socket takes nothing for this long copies out the blocks it holds, so a slow reader
/// pins no piece buffer; after `STALL_AFTER` the peer loses its upload slot (a reader on any working link
/// frees some of its buffer every round trip), after `CHOKE_AFTER` it is choked, after `DROP_AFTER`
/// disconnected.
const COMPACT_AFTER: Duration = Duration::from_millis(100);
const STALL_AFTER: Duration = Duration::from_millis(250);
const CHOKE_AFTER: Duration = Duration::from_secs(10);
const DROP_AFTER: Duration = Duration::from_secs(30);
/// Whole pieces read from disk for one peer may exceed twice what it was sent by this much: beyond, its
/// requests are answered by reading just their blocks. A downloader that asks for whole pieces uses every
/// byte read; one that asks a block here and there, or does not read, gets no 256-fold amplification.
const WHOLE_READ_ALLOWANCE: u64 = 16 << 20;
/// The id we ask peers to use for `ut_pex` messages to us.
const UT_PEX_ID: u8 = 2;
/// BEP 11 has peers send at most one exchange a minute; ours come every 60 s. Some slack for timer
/// jitter, but a peer sending more often is ignored so it cannot flood our queue of addresses to dial.
const PEX_MIN_GAP: Duration = Duration::from_secs(45);

/// When a peer's last peer-exchange message was taken.
#[derive(Default)]
struct PexGate(Option<Instant>);

impl PexGate {
    /// Whether a message arriving `now` is taken; one ignored does not restart the wait.
    fn admit(&mut self, now: Instant) -> bool {
        if self
            .0
            .is_some_and(|last| now.saturating_duration_since(last) < PEX_MIN_GAP)
        {
            return false;
        }
        self.0 = Some(now);
        true
    }
}

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
        if shared.state.lock().banned.contains(&addr.ip()) {
            continue;
        }
        // Refused (its IP or the listener has too many connections without a handshake): closed now.
        let Some(admitted) = crate::conns::admit(&gate, &stream, addr.ip()) else {
            continue;
        };
        let shared = shared.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            if let Err(e) = incoming(shared, stream, addr, &gate, admitted).await {
                tracing::debug!("incoming {addr}: {e:#}");
            }
        });
    }
}

async fn incoming(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    addr: SocketAddr,
    gate: &HandshakeGate,
    admitted: Admitted,
) -> anyhow::Result<()> {
    let theirs = crate::conns::finish_handshake(gate, &mut stream, admitted).await?;
    if theirs.info_hash != shared.id {
        anyhow::bail!("handshake for another torrent");
    }
    answer_incoming(shared, stream, addr, theirs).await
}

/// Answers an incoming peer whose handshake named this torrent, then runs the connection.
pub(crate) async fn answer_incoming(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    addr: SocketAddr,
    theirs: Handshake,
) -> anyhow::Result<()> {
    if shared.state.lock().banned.contains(&addr.ip()) {
        anyhow::bail!("banned");
    }
    let ours = Handshake::new(shared.id, shared.config.peer_id, shared.uses_dht());
    stream.write_all(&ours.encode()).await?;
    run(shared, stream, addr, false, ours, theirs).await
}

/// Dials `addr`, which the connect loop took a unit of the shared peer budget for (if there is one):
/// the unit is given back when the handshake is over, and registering the peer takes its own.
pub(crate) async fn connect(shared: Arc<Shared>, addr: SocketAddr) {
    let handshake = async {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        let bind = shared.config.listen.ip();
        if !bind.is_unspecified() && bind.is_ipv4() == addr.is_ipv4() {
            socket.bind(SocketAddr::new(bind, 0))?;
        }
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await??;
        let ours = Handshake::new(shared.id, shared.config.peer_id, shared.uses_dht());
        stream.write_all(&ours.encode()).await?;
        let mut buf = [0u8; HANDSHAKE_LEN];
        tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut buf)).await??;
        let theirs = Handshake::decode(&buf)?;
        if theirs.info_hash != shared.id {
            anyhow::bail!("peer answered for another torrent");
        }
        Ok((stream, ours, theirs))
    }
    .await;
    if let Some(budget) = &shared.config.peer_budget {
        budget.give_back();
    }
    let result = match handshake {
        Ok((stream, ours, theirs)) => run(shared.clone(), stream, addr, true, ours, theirs).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::debug!("peer {addr}: {e:#}");
    }
    shared.state.lock().connected.remove(&addr);
}

/// Requests from the peer that we accepted and have not yet written out. A block leaves the set exactly
/// once: when the writer commits its piece, or when a cancel, a choke or a failed read takes it back, so
/// a request never gets both a piece and a reject (BEP 6). Only the request is queued: the writer reads
/// the block's bytes when it is about to send it, so queued requests pin no piece buffer.
#[derive(Default)]
struct Uploads {
    queue: parking_lot::Mutex<UploadQueue>,
    /// Bytes of hash and metadata replies queued for the writer.
    replies: AtomicUsize,
    /// Whole pieces read from disk for this peer, and block bytes sent to it.
    whole_reads: AtomicU64,
    sent: AtomicU64,
    /// Read-ahead tasks of this peer under way.
    warming: AtomicUsize,
}

#[derive(Default)]
struct UploadQueue {
    pending: HashSet<BlockRef>,
    bytes: usize,
    per_piece: HashMap<u32, u32>,
}

#[derive(Debug, PartialEq)]
enum Accepted {
    Yes,
    Duplicate,
    /// Over the peer's cap of queued requests or bytes.
    Full,
}

impl Uploads {
    /// Takes a request on, unless it is already pending or the peer has too many.
    fn accept(&self, b: BlockRef) -> Accepted {
        let mut q = self.queue.lock();
        if q.pending.contains(&b) {
            return Accepted::Duplicate;
        }
        if q.pending.len() >= MAX_PEER_REQUESTS
            || q.bytes + b.length as usize > MAX_PEER_QUEUED_BYTES
        {
            return Accepted::Full;
        }
        q.pending.insert(b);
        q.bytes += b.length as usize;
        *q.per_piece.entry(b.index).or_default() += 1;
        Accepted::Yes
    }

    fn is_pending(&self, b: &BlockRef) -> bool {
        self.queue.lock().pending.contains(b)
    }

    /// Requests pending in piece `index`.
    fn in_piece(&self, index: u32) -> u32 {
        self.queue
            .lock()
            .per_piece
            .get(&index)
            .copied()
            .unwrap_or(0)
    }

    /// Whether `b` was still pending; whoever gets `true` answers it.
    fn take(&self, b: &BlockRef) -> bool {
        let mut q = self.queue.lock();
        if !q.pending.remove(b) {
            return false;
        }
        q.bytes -= b.length as usize;
        if let Some(n) = q.per_piece.get_mut(&b.index) {
            *n -= 1;
            if *n == 0 {
                q.per_piece.remove(&b.index);
            }
        }
        true
    }

    fn take_all(&self) -> Vec<BlockRef> {
        let mut q = self.queue.lock();
        q.bytes = 0;
        q.per_piece.clear();
        q.pending.drain().collect()
    }

    /// Whether a reply of `bytes` may be queued now; if so it is counted until the writer takes it.
    fn reserve_reply(&self, bytes: usize) -> bool {
        self.replies
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + bytes <= MAX_PEER_REPLY_BYTES).then_some(queued + bytes)
            })
            .is_ok()
    }

    /// Whether reading a whole piece of `size` bytes for this peer keeps within its allowance; if so
    /// the read is counted.
    fn read_whole(&self, size: u32) -> bool {
        let allowed = self.sent.load(Ordering::Relaxed) * 2 + WHOLE_READ_ALLOWANCE;
        self.whole_reads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |read| {
                (read + u64::from(size) <= allowed).then_some(read + u64::from(size))
            })
            .is_ok()
    }
}

/// What the reader hands the writer: a message, a hash or metadata reply and the bytes reserved for it
/// (`Uploads::reserve_reply`), or a request to answer once the writer gets to it.
enum Out {
    Message(Message),
    Reply(Message, usize),
    Block(BlockRef),
}

/// The bytes answering request `b`: sliced from its piece when that is cached, or read for the cache
/// when the peer asks for more of the piece and its read allowance permits, else just the block.
async fn block_bytes(shared: &Arc<Shared>, uploads: &Uploads, b: BlockRef) -> Option<Bytes> {
    if let Some(piece) = shared.cached_piece(b.index) {
        return Some(slice_block(&piece, b));
    }
    let size = shared.piece_sizes.get(b.index as usize).copied()?;
    if uploads.in_piece(b.index) > 1 && uploads.read_whole(size) {
        if let Some(piece) = shared.piece_data(b.index).await {
            return Some(slice_block(&piece, b));
        }
    }
    shared.block_from_disk(b).await
}

/// Watches one writer's socket: a peer that takes none of what is queued for it is marked stalled, then
/// choked, then dropped.
struct Watch {
    peer: Option<(Arc<Shared>, u64)>,
    stalled: bool,
    choked: bool,
}

impl Watch {
    fn new(shared: Arc<Shared>, key: u64) -> Watch {
        Watch {
            peer: Some((shared, key)),
            stalled: false,
            choked: false,
        }
    }

    /// A watch that only times (for tests of the writing alone).
    #[cfg(test)]
    fn detached() -> Watch {
        Watch {
            peer: None,
            stalled: false,
            choked: false,
        }
    }

    /// When to look again, `since` the last progress with `waited` gone by.
    fn next_check(waited: Duration) -> Duration {
        [COMPACT_AFTER, STALL_AFTER, CHOKE_AFTER, DROP_AFTER]
            .into_iter()
            .find(|step| *step > waited)
            .unwrap_or(DROP_AFTER)
    }

    fn no_progress(&mut self, waited: Duration) -> std::io::Result<()> {
        if waited >= DROP_AFTER {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer took nothing we sent",
            ));
        }
        if let Some((shared, key)) = &self.peer {
            if waited >= STALL_AFTER && !self.stalled {
                self.stalled = true;
                shared.set_stalled(*key, true);
            }
            if waited >= CHOKE_AFTER && !self.choked {
                self.choked = true;
                shared.choke_peer(*key);
            }
        }
        Ok(())
    }

    fn progress(&mut self) {
        if self.stalled {
            self.stalled = false;
            if let Some((shared, key)) = &self.peer {
                shared.set_stalled(*key, false);
            }
        }
        self.choked = false;
    }
}

/// The writer: drains queued messages into one vectored write per wake-up. Blocks are written from the
/// piece buffers they were sliced from, never copied into the output buffer (unless the socket stalls).
async fn writer(
    mut half: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
    key: u64,
    uploads: Arc<Uploads>,
    fast: bool,
) {
    const BATCH_BYTES: usize = 256 * 1024;
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut segments: Vec<Bytes> = Vec::with_capacity(64);
    let mut watch = Watch::new(shared.clone(), key);
    'run: while let Some(first) = rx.recv().await {
        let mut queued = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let message = match item {
                Out::Message(m) => Some(m),
                Out::Reply(m, reserved) => {
                    uploads.replies.fetch_sub(reserved, Ordering::AcqRel);
                    Some(m)
                }
                Out::Block(b) if uploads.is_pending(&b) => {
                    if shared.cached_piece(b.index).is_none() && !segments.is_empty() {
                        // Going to the disk: what is batched goes out first.
                        segments.push(out.split().freeze());
                        queued = 0;
                        if write_segments(&mut half, &mut segments, &mut watch)
                            .await
                            .is_err()
                        {
                            break 'run;
                        }
                    }
                    match block_bytes(&shared, &uploads, b).await {
                        // Checked twice: no rate-limit wait for a block already cancelled, and a cancel
                        // or choke that arrives during the wait still stops it.
                        Some(data) => {
                            shared.pass_upload(data.len()).await;
                            uploads.take(&b).then(|| {
                                let len = data.len() as u64;
                                uploads.sent.fetch_add(len, Ordering::Relaxed);
                                shared.uploaded.fetch_add(len, Ordering::Relaxed);
                                if let Some(p) = shared.state.lock().peers.get_mut(&key) {
                                    p.uploaded += len;
                                    p.last_upload = Instant::now();
                                }
                                Message::Piece {
                                    index: b.index,
                                    begin: b.begin,
                                    data,
                                }
                            })
                        }
                        None => (uploads.take(&b) && fast).then_some(Message::Reject(b)),
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
            next = rx.try_recv().ok();
        }
        if !out.is_empty() {
            segments.push(out.split().freeze());
        }
        if write_segments(&mut half, &mut segments, &mut watch)
            .await
            .is_err()
        {
            break;
        }
    }
    // The reader may be waiting for the peer: tell it the connection is over.
    if let Some(p) = shared.state.lock().peers.get(&key) {
        let _ = p.tx.try_send(Command::Disconnect);
    }
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

struct PeerTask {
    shared: Arc<Shared>,
    key: u64,
    addr: SocketAddr,
    conn: Connection,
    bitfield: Bitfield,
    out: mpsc::Sender<Out>,
    outstanding: HashSet<BlockRef>,
    queue_target: usize,
    last_block: Instant,
    received_since_tick: u64,
    snubbed: bool,
    uploads: Arc<Uploads>,
    /// Requests refused since we last unchoked the peer.
    refused: usize,
    /// Refused requests before it is dropped: see `MIN_REFUSED_REQUESTS`; set at the first refusal.
    max_refused: Option<usize>,
    /// The id the peer wants `ut_metadata` messages under, if it supports them.
    their_ut_metadata: Option<u8>,
    /// The id for `ut_pex` messages (never set for private torrents), when the next is due, and what the
    /// peer has been told of so far.
    their_ut_pex: Option<u8>,
    /// The peer set the DHT bit in its handshake.
    their_dht: bool,
    next_pex: Instant,
    pex_told: HashSet<SocketAddr>,
    pex_in: PexGate,
}

async fn run(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    outgoing: bool,
    ours: Handshake,
    theirs: Handshake,
) -> anyhow::Result<()> {
    if theirs.peer_id == shared.config.peer_id {
        anyhow::bail!("connected to ourselves");
    }
    stream.set_nodelay(true)?;
    let (mut read_half, write_half) = stream.into_split();
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(1024);
    let Some(key) = shared.add_peer(addr, outgoing, cmd_tx) else {
        anyhow::bail!("peer limit reached or banned");
    };
    let (out_tx, out_rx) = mpsc::channel::<Out>(1024);
    let uploads = Arc::new(Uploads::default());
    let pieces = shared.torrent.piece_count() as u32;
    let conn = Connection::new(pieces, &ours, &theirs);
    let writer_task = tokio::spawn(writer(
        write_half,
        out_rx,
        shared.clone(),
        key,
        uploads.clone(),
        conn.fast(),
    ));
    let mut task = PeerTask {
        conn,
        shared: shared.clone(),
        key,
        addr,
        bitfield: Bitfield::new(pieces),
        out: out_tx,
        outstanding: HashSet::new(),
        queue_target: 64,
        last_block: Instant::now(),
        received_since_tick: 0,
        snubbed: false,
        uploads,
        refused: 0,
        max_refused: None,
        their_ut_metadata: None,
        their_ut_pex: None,
        their_dht: theirs.supports_dht(),
        next_pex: Instant::now(),
        pex_told: HashSet::new(),
        pex_in: PexGate::default(),
    };
    let result = task.drive(&mut read_half, &mut cmd_rx).await;
    task.cleanup();
    writer_task.abort();
    result
}

impl PeerTask {
    async fn send(&self, m: Message) -> anyhow::Result<()> {
        self.out
            .send(Out::Message(m))
            .await
            .map_err(|_| anyhow::anyhow!("writer closed"))
    }

    /// Queues a reply built by `build` if the peer's queued replies leave room for `bytes`, else
    /// `reject` (also when `build` has no answer).
    async fn send_reply(
        &self,
        bytes: usize,
        build: impl FnOnce() -> Option<Message>,
        reject: Message,
    ) -> anyhow::Result<()> {
        if !self.uploads.reserve_reply(bytes) {
            return self.send(reject).await;
        }
        let Some(reply) = build() else {
            self.uploads.replies.fetch_sub(bytes, Ordering::AcqRel);
            return self.send(reject).await;
        };
        self.out
            .send(Out::Reply(reply, bytes))
            .await
            .map_err(|_| anyhow::anyhow!("writer closed"))
    }

    /// Counts a refused request; an error once the peer is flooding.
    fn refuse(&mut self) -> anyhow::Result<()> {
        self.refused += 1;
        let max = *self.max_refused.get_or_insert_with(|| {
            let misuse = self.shared.misuse_of(self.key).min(16);
            (MAX_REFUSED_REQUESTS >> misuse).max(MIN_REFUSED_REQUESTS)
        });
        if self.refused > max {
            self.shared.flooded(self.key);
            anyhow::bail!("{} requests refused: flooding", self.refused);
        }
        Ok(())
    }

    /// Chokes the peer: its pending requests are void (BEP 3), or each rejected under BEP 6.
    async fn choke(&mut self) -> anyhow::Result<()> {
        if let Some(m) = self.conn.set_choking(true) {
            // Taken back before the choke is queued, so no piece can follow it.
            let dropped = self.uploads.take_all();
            self.send(m).await?;
            if self.conn.fast() {
                for b in dropped {
                    self.send(Message::Reject(b)).await?;
                }
            }
        }
        Ok(())
    }

    async fn drive(
        &mut self,
        read: &mut tokio::net::tcp::OwnedReadHalf,
        commands: &mut mpsc::Receiver<Command>,
    ) -> anyhow::Result<()> {
        // Our pieces first.
        let have = self.shared.state.lock().picker.have().clone();
        if self.conn.fast() && have.count() == 0 {
            self.send(Message::HaveNone).await?;
        } else if self.conn.fast() && have.is_complete() {
            self.send(Message::HaveAll).await?;
        } else if have.count() > 0 {
            self.send(Message::Bitfield(have.to_bytes())).await?;
        }
        if let (Some(node), true, true) = (
            &self.shared.config.dht,
            self.shared.uses_dht(),
            self.their_dht,
        ) {
            self.send(Message::Port(node.port)).await?;
        }
        if self.conn.extensions() {
            let mut extensions = std::collections::BTreeMap::new();
            extensions.insert("ut_metadata".to_string(), crate::metadata::UT_METADATA_ID);
            if self.shared.uses_pex() {
                extensions.insert("ut_pex".to_string(), UT_PEX_ID);
            }
            let hs = ExtensionHandshake {
                extensions,
                metadata_size: Some(self.shared.torrent.info_bytes.len() as u64),
                listen_port: Some(self.shared.listen_addr.port()),
                client: Some(format!("Spore {}", env!("CARGO_PKG_VERSION"))),
                request_queue: Some(MAX_PEER_REQUESTS as u32),
                your_ip: Some(self.addr.ip()),
            };
            self.send(Message::Extended {
                id: 0,
                payload: hs.encode().into(),
            })
            .await?;
        }

        let decoder = Decoder::default();
        let mut buf = BytesMut::with_capacity(256 * 1024);
        let mut last_received = Instant::now();
        let mut last_sent = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut stop = self.shared.stopping();
        loop {
            tokio::select! {
                n = read.read_buf(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        anyhow::bail!("peer closed the connection");
                    }
                    self.shared.pass_download(n).await;
                    last_received = Instant::now();
                    while let Some(message) = decoder.decode(&mut buf)? {
                        if !matches!(message, Message::Piece { .. }) {
                            tracing::trace!("{} sent {message:?}", self.addr);
                        }
                        let event = self.conn.receive(message)?;
                        self.on_event(event).await?;
                    }
                    if buf.capacity() - buf.len() < 32 * 1024 {
                        buf.reserve(256 * 1024);
                    }
                    self.request_more().await?;
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Send(m)) => {
                        let have = matches!(m, Message::Have(_));
                        self.send(m).await?;
                        last_sent = Instant::now();
                        if have {
                            // A piece we now have may end our interest in this peer.
                            self.update_interest().await?;
                        }
                    }
                    Some(Command::Choke(true)) => {
                        self.choke().await?;
                        last_sent = Instant::now();
                    }
                    Some(Command::Choke(false)) => {
                        if let Some(m) = self.conn.set_choking(false) {
                            self.refused = 0;
                            self.send(m).await?;
                            last_sent = Instant::now();
                        }
                    }
                    Some(Command::Cancel(b)) => {
                        if self.outstanding.remove(&b) {
                            self.send(Message::Cancel(b)).await?;
                        }
                    }
                    Some(Command::Disconnect) | None => anyhow::bail!("disconnected by the torrent"),
                },
                _ = tick.tick() => {
                    if last_received.elapsed() > IDLE_TIMEOUT {
                        anyhow::bail!("peer idle");
                    }
                    if last_sent.elapsed() > KEEPALIVE {
                        self.send(Message::KeepAlive).await?;
                        last_sent = Instant::now();
                    }
                    self.check_redundant()?;
                    self.retune();
                    self.request_more().await?;
                    self.maybe_pex().await?;
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Sizes the request queue to about two seconds of this peer's rate (the bandwidth-delay product with
    /// room to spare), and gives up on a peer that sits on our requests.
    fn retune(&mut self) {
        let rate = self.received_since_tick as f64;
        self.received_since_tick = 0;
        self.queue_target =
            ((rate * 2.0 / f64::from(crate::picker::BLOCK)) as usize).clamp(MIN_QUEUE, MAX_QUEUE);
        if !self.outstanding.is_empty() && self.last_block.elapsed() > SNUB_TIMEOUT {
            self.snubbed = true;
            self.abandon_all();
        }
    }

    fn abandon_all(&mut self) {
        let mut st = self.shared.state.lock();
        for b in self.outstanding.drain() {
            st.picker.abandoned(&b);
        }
    }

    async fn update_interest(&mut self) -> anyhow::Result<()> {
        self.check_redundant()?;
        let interesting = self.shared.state.lock().picker.interesting(&self.bitfield);
        if let Some(m) = self.conn.set_interested(interesting) {
            self.send(m).await?;
        }
        Ok(())
    }

    /// Two seeds have nothing to give each other; the connection would only hold a slot (of this
    /// torrent's, or of a daemon's global limit) that a downloader could use.
    fn check_redundant(&self) -> anyhow::Result<()> {
        if self.bitfield.is_complete() && self.shared.is_complete() {
            anyhow::bail!("both sides are seeds");
        }
        Ok(())
    }

    async fn request_more(&mut self) -> anyhow::Result<()> {
        if self.conn.peer_choking || !self.conn.am_interested {
            return Ok(());
        }
        let target = if self.snubbed { 1 } else { self.queue_target };
        if self.outstanding.len() >= target {
            return Ok(());
        }
        let mut picked = Vec::new();
        {
            let mut st = self.shared.state.lock();
            st.picker
                .pick(&self.bitfield, target - self.outstanding.len(), &mut picked);
        }
        for b in picked {
            if self.outstanding.insert(b) {
                self.send(Message::Request(b)).await?;
            }
        }
        Ok(())
    }

    fn set_peer_bits(&mut self, bits: Bitfield) {
        let mut st = self.shared.state.lock();
        st.picker.peer_gone(&self.bitfield);
        st.picker.peer_has_all(&bits);
        if let Some(p) = st.peers.get_mut(&self.key) {
            p.bitfield = bits.clone();
        }
        self.bitfield = bits;
    }

    async fn on_event(&mut self, event: Event) -> anyhow::Result<()> {
        let pieces = self.bitfield.len();
        match event {
            Event::KeepAlive | Event::DhtPort(_) | Event::Suggest(_) | Event::AllowedFast(_) => {}
            Event::Extended { id: 0, payload } => {
                let theirs = ExtensionHandshake::decode(&payload)?;
                self.their_ut_metadata = theirs.id_of("ut_metadata");
                if let Some(seen) = theirs.your_ip {
                    let changed = self
                        .shared
                        .external_votes
                        .lock()
                        .record(crate::external_ip::Voter::Peer(self.addr.ip()), seen);
                    if let Some(ip) = changed {
                        tracing::info!("peers and trackers see us at {ip}");
                    }
                }
                if let Some(name) = theirs
                    .client
                    .as_deref()
                    .and_then(crate::torrent::client_name)
                {
                    if let Some(p) = self.shared.state.lock().peers.get_mut(&self.key) {
                        p.client = Some(name);
                    }
                }
                if self.shared.uses_pex() {
                    self.their_ut_pex = theirs.id_of("ut_pex");
                    // A first exchange soon after connecting, then at most once a minute (BEP 11).
                    self.next_pex = Instant::now() + Duration::from_secs(2);
                }
                if let Some(port) = theirs.listen_port {
                    let listen = SocketAddr::new(self.addr.ip(), port);
                    if let Some(p) = self.shared.state.lock().peers.get_mut(&self.key) {
                        p.listen = Some(listen);
                    }
                }
            }
            Event::Extended { id, payload } if id == UT_PEX_ID => {
                if self.shared.uses_pex() && self.pex_in.admit(Instant::now()) {
                    if let Ok(pex) = wire::PexMessage::decode(&payload) {
                        // The decoder caps added and added6 together already; this cap holds even if
                        // it changes, as BEP 11's 50 per message is what bounds our dialing queue.
                        self.shared
                            .add_peers(pex.added.into_iter().take(wire::MAX_PEX_PEERS));
                    }
                }
            }
            Event::Extended { id, payload } if id == crate::metadata::UT_METADATA_ID => {
                self.serve_metadata(&payload).await?;
            }
            Event::Extended { .. } => {}
            Event::HashRequest(range) => {
                // Answered from trees built once per file; a reply reserves its hashes and at most
                // 32 uncles, so a peer that does not read gets rejects, not our memory.
                let trees = self.shared.hash_tree(&range).await;
                let bytes = (range.length as usize + 32) * 32;
                let build = || {
                    let tree = trees?;
                    let hashes = metainfo::merkle::proof(
                        &tree,
                        range.index as usize,
                        range.length as usize,
                        range.proof_layers as usize,
                    )?;
                    Some(Message::Hashes { range, hashes })
                };
                self.send_reply(bytes, build, Message::HashReject(range))
                    .await?;
            }
            // We only ask for hashes while fetching a magnet link's metadata.
            Event::Hashes { .. } | Event::HashReject(_) => {}
            Event::Bitfield(bits) => {
                self.set_peer_bits(Bitfield::from_bytes(&bits, pieces));
                self.update_interest().await?;
            }
            Event::HaveAll => {
                self.set_peer_bits(Bitfield::full(pieces));
                self.update_interest().await?;
            }
            Event::HaveNone => self.set_peer_bits(Bitfield::new(pieces)),
            Event::Have(i) => {
                if self.bitfield.set(i) {
                    let mut st = self.shared.state.lock();
                    st.picker.peer_has(i);
                    if let Some(p) = st.peers.get_mut(&self.key) {
                        p.bitfield.set(i);
                    }
                }
                if !self.conn.am_interested {
                    self.update_interest().await?;
                }
            }
            Event::Choked => {
                // Requests are void after a choke unless the fast extension will reject them one by one.
                if !self.conn.fast() {
                    self.abandon_all();
                }
            }
            Event::Unchoked => {
                self.snubbed = false;
                self.last_block = Instant::now();
            }
            Event::Interested => self.shared.peer_interested(self.key, true),
            Event::NotInterested => self.shared.peer_interested(self.key, false),
            Event::Block { index, begin, data } => {
                let block = BlockRef {
                    index,
                    begin,
                    length: data.len() as u32,
                };
                if self.outstanding.remove(&block) {
                    self.last_block = Instant::now();
                    self.snubbed = false;
                    self.received_since_tick += data.len() as u64;
                    self.shared
                        .block_received(self.key, self.addr.ip(), block, &data)
                        .await;
                }
            }
            Event::Rejected(b) => {
                if self.outstanding.remove(&b) {
                    self.shared.state.lock().picker.abandoned(&b);
                }
            }
            Event::Request(b) => self.serve(b).await?,
            Event::RequestWhileChoked(b) => {
                self.refuse()?;
                if self.conn.fast() {
                    self.send(Message::Reject(b)).await?;
                }
            }
            Event::Cancel(b) => {
                // Too late if the writer has committed the piece: then the piece is the answer.
                if self.uploads.take(&b) && self.conn.fast() {
                    self.send(Message::Reject(b)).await?;
                }
            }
        }
        Ok(())
    }

    /// Answers a request from a verified piece, reading it in the background so the reader keeps going.
    async fn serve(&mut self, b: BlockRef) -> anyhow::Result<()> {
        let size = self
            .shared
            .piece_sizes
            .get(b.index as usize)
            .copied()
            .unwrap_or(0);
        // libtorrent lays a v2-only torrent out as if every file were padded to whole pieces, the last
        // one included, so it asks for each file's tail piece as if it were full length; the missing
        // bytes are zeros.
        let limit = if self.shared.torrent.version == metainfo::Version::V2 {
            self.shared.torrent.piece_length
        } else {
            u64::from(size)
        };
        let in_range = size > 0 && u64::from(b.begin) + u64::from(b.length) <= limit;
        let have = self.shared.state.lock().picker.have().get(b.index);
        let accepted = if have && in_range {
            self.uploads.accept(b)
        } else {
            Accepted::Duplicate
        };
        match accepted {
            Accepted::Yes => {}
            Accepted::Full | Accepted::Duplicate if self.refuse().is_err() => {
                anyhow::bail!("{} requests refused: flooding", self.refused)
            }
            Accepted::Full if !self.conn.fast() => {
                // No way to refuse one request: choking voids them all, and the choker may unchoke the
                // peer again later.
                tracing::debug!("{}: over its request cap, choked", self.addr);
                self.shared.choke_peer(self.key);
                return self.choke().await;
            }
            Accepted::Full | Accepted::Duplicate => {
                if self.conn.fast() {
                    self.send(Message::Reject(b)).await?;
                }
                return Ok(());
            }
        }
        // The second request for a piece not in memory starts reading it, so the writer finds it cached
        // when it gets there (at most four such reads per peer at a time).
        if self.uploads.in_piece(b.index) == 2
            && self.shared.cached_piece(b.index).is_none()
            && self.uploads.warming.load(Ordering::Relaxed) < 4
            && self.uploads.read_whole(size)
        {
            self.uploads.warming.fetch_add(1, Ordering::Relaxed);
            let shared = self.shared.clone();
            let uploads = self.uploads.clone();
            tokio::spawn(async move {
                drop(shared.piece_data(b.index).await);
                uploads.warming.fetch_sub(1, Ordering::Relaxed);
            });
        }
        self.out
            .send(Out::Block(b))
            .await
            .map_err(|_| anyhow::anyhow!("writer closed"))
    }

    /// Tells the peer which peers we are connected to now and which we dropped (BEP 11).
    async fn maybe_pex(&mut self) -> anyhow::Result<()> {
        let Some(id) = self.their_ut_pex else {
            return Ok(());
        };
        if Instant::now() < self.next_pex {
            return Ok(());
        }
        self.next_pex = Instant::now() + Duration::from_secs(60);
        let now: HashSet<SocketAddr> = self.shared.pex_candidates(self.key).into_iter().collect();
        let message = wire::PexMessage {
            added: now
                .difference(&self.pex_told)
                .copied()
                .take(wire::MAX_PEX_PEERS)
                .collect(),
            dropped: self
                .pex_told
                .difference(&now)
                .copied()
                .take(wire::MAX_PEX_PEERS)
                .collect(),
        };
        if message.added.is_empty() && message.dropped.is_empty() {
            return Ok(());
        }
        for a in &message.added {
            self.pex_told.insert(*a);
        }
        for d in &message.dropped {
            self.pex_told.remove(d);
        }
        self.shared.pex_sent.fetch_add(1, Ordering::Relaxed);
        self.send(Message::Extended {
            id,
            payload: message.encode().into(),
        })
        .await
    }

    /// Answers a BEP 9 request for a piece of our info dictionary.
    async fn serve_metadata(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        let (Ok(wire::MetadataMessage::Request { piece }), Some(their_id)) = (
            wire::MetadataMessage::decode(payload),
            self.their_ut_metadata,
        ) else {
            return Ok(());
        };
        let info = &self.shared.torrent.info_bytes;
        let start = piece as usize * wire::METADATA_PIECE;
        let extended = |m: wire::MetadataMessage| Message::Extended {
            id: their_id,
            payload: m.encode().into(),
        };
        let reject = extended(wire::MetadataMessage::Reject { piece });
        let build = || {
            (start < info.len()).then(|| {
                let end = (start + wire::METADATA_PIECE).min(info.len());
                extended(wire::MetadataMessage::Data {
                    piece,
                    total_size: info.len() as u64,
                    data: info[start..end].to_vec(),
                })
            })
        };
        self.send_reply(wire::METADATA_PIECE + 64, build, reject)
            .await
    }

    fn cleanup(&mut self) {
        self.abandon_all();
        self.shared.remove_peer(self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use wire::{BlockRef, Message};

    use crate::testutil::{seed, FakePeer, Seed};
    use crate::torrent::Command;

    const WAIT: Duration = Duration::from_secs(10);
    /// Blocks of 1 KiB at 5 kB/s: each waits about 0.2 s for the limiter (the first about 0.1 s), so
    /// requests sit in our upload queue long enough for a cancel or a choke to reach them.
    const RATE: u64 = 5_000;

    fn block(i: u32) -> BlockRef {
        BlockRef {
            index: i / 16,
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

    #[test]
    fn peer_exchange_is_taken_at_most_once_per_gap() {
        let mut gate = super::PexGate::default();
        let t0 = std::time::Instant::now();
        assert!(gate.admit(t0));
        assert!(!gate.admit(t0 + Duration::from_secs(1)));
        assert!(!gate.admit(t0 + Duration::from_secs(44)));
        assert!(gate.admit(t0 + Duration::from_secs(45)));
        // Measured from the last one taken, not from the last one ignored.
        assert!(!gate.admit(t0 + Duration::from_secs(80)));
        assert!(gate.admit(t0 + Duration::from_secs(90)));
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
            id: super::UT_PEX_ID,
            payload: wire::PexMessage {
                added,
                dropped: Vec::new(),
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
            .known
            .iter()
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
            for p in seed.handle.shared.state.lock().peers.values_mut() {
                p.am_choking = true;
                p.tx.try_send(Command::Choke(true))
                    .expect("peer task alive");
            }
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
            let fits = super::MAX_PEER_QUEUED_BYTES / BIG as usize;
            let requested: Vec<BlockRef> = (0..fits as u32 + 16)
                .map(|i| BlockRef {
                    index: i / 8,
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
