//! The UDP front end (BEP 15): one thread per worker, each with its own SO_REUSEPORT socket, receiving and
//! sending in batches with recvmmsg/sendmmsg.

use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tracker_proto::udp::{Request, Response};
use tracker_proto::ScrapeStats;

use crate::cluster::{self, Job};
use crate::metrics::Counters;
use crate::store::Family;
use crate::{passkey_from_path, State};

/// Packets per recvmmsg/sendmmsg call.
const BATCH: usize = 32;
/// Largest request read; bigger datagrams are truncated and then fail to parse.
const MAX_REQUEST: usize = 2048;
/// Room for a response: 200 IPv6 peers is 3620 bytes.
const MAX_RESPONSE: usize = 8192;
/// How often a blocked worker wakes to notice shutdown.
const POLL: Duration = Duration::from_millis(200);

fn bind(addr: SocketAddr) -> Result<UdpSocket, crate::Error> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // Serve IPv4 too when bound to [::].
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_read_timeout(Some(POLL))?;
    socket
        .bind(&addr.into())
        .map_err(|source| crate::Error::Listen {
            addr,
            what: "UDP",
            source,
        })?;
    Ok(socket.into())
}

/// The threads and tasks serving UDP.
pub struct Workers {
    pub threads: Vec<std::thread::JoinHandle<()>>,
    /// On a cluster, one per worker: completes the requests its worker handed over (see `complete`);
    /// each ends once its worker has stopped and its requests are answered.
    pub completers: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds `workers` sockets to `addr` (the first picks the port if it is 0) and starts a thread for each.
pub fn spawn(
    addr: SocketAddr,
    workers: usize,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
) -> Result<(SocketAddr, Workers), crate::Error> {
    let first = bind(addr)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(bind(bound)?);
    }
    let mut completers = Vec::new();
    let mut threads = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let to_cluster = match state.cluster {
            Some(_) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let replies = socket.try_clone()?;
                completers.push(runtime.spawn(complete(state.clone(), replies, rx)));
                Some(tx)
            }
            None => None,
        };
        let state = state.clone();
        let stop = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("udp-{i}"))
                .spawn(move || worker(socket, &state, &stop, to_cluster))?,
        );
    }
    Ok((
        bound,
        Workers {
            threads,
            completers,
        },
    ))
}

/// Where an announce reply's leecher and seeder counts go (after action, transaction ID, interval).
const COUNTS_AT: usize = 12;

/// What a reply waits for from the cluster.
enum Pending {
    Announce {
        job: Job,
        transaction_id: u32,
    },
    /// A scrape's stats, those no view answered still `None`.
    Scrape {
        transaction_id: u32,
        hashes: Vec<tracker_proto::InfoHash>,
        stats: Vec<Option<ScrapeStats>>,
    },
}

/// Handles one datagram; writes the reply into `out` and returns whether to send it. With a cluster, an
/// announce or scrape the node's view cannot answer is put in `pending` (an announce's reply left at
/// its header), to be sent to the cluster with the rest of the batch.
fn handle(
    state: &State,
    packet: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
    pending: &mut Option<Pending>,
) -> bool {
    let src = canonical(src);
    let counters = &state.counters;
    let request = match Request::parse(packet) {
        Ok(r) => r,
        Err(_) => {
            // Garbage gets no answer: an error reply to an unvalidated source would be a reflection vector.
            Counters::add(&counters.dropped);
            return false;
        }
    };
    match request {
        Request::Connect { transaction_id } => {
            Counters::add(&counters.udp_connects);
            let Some(connection_id) = state.conn_ids.issue(&src) else {
                Counters::add(&counters.dropped);
                return false;
            };
            // 16 bytes in, 16 bytes out: no amplification.
            Response::Connect {
                transaction_id,
                connection_id,
            }
            .write(out);
            true
        }
        Request::Announce {
            connection_id,
            transaction_id,
            announce,
            url_data,
        } => {
            if !state.conn_ids.valid(connection_id, &src) {
                Counters::add(&counters.dropped);
                return false;
            }
            Counters::add(&counters.udp_announces);
            let passkey = passkey_from_path(&url_data);
            let refusal = crate::refuse_announce(&announce).or_else(|| {
                state
                    .access
                    .check(&announce.info_hash, passkey)
                    .err()
                    .map(|r| r.reason())
            });
            if let Some(reason) = refusal {
                Counters::add(&counters.errors);
                Response::Error {
                    transaction_id,
                    message: reason.to_string(),
                }
                .write(out);
                return true;
            }
            if let Some(key) = passkey {
                state.access.account(
                    key,
                    &announce.info_hash,
                    &announce.peer_id,
                    announce.uploaded,
                    announce.downloaded,
                    announce.event,
                );
            }
            let peer = SocketAddr::new(src.ip(), announce.port);
            let family = if src.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            };
            // Header first, then the compact peers straight into the reply.
            write_announce_header(state, out, transaction_id);
            if let Some(cluster) = &state.cluster {
                let mut job = Job {
                    hash: announce.info_hash,
                    peer,
                    left: announce.left,
                    event: announce.event,
                    want: cluster::want(&state.config, announce.numwant),
                    family,
                    // A swarm its view answers for is in the cluster: the creation limit (a lock
                    // and a lookup of this node's own table) is asked only when the view cannot.
                    may_create: true,
                };
                match cluster.from_view(&job) {
                    Some(answer) => write_answer(state, out, 0, &job, Ok(answer)),
                    None => {
                        job.may_create = state.store.may_create(&announce.info_hash, peer);
                        *pending = Some(Pending::Announce {
                            job,
                            transaction_id,
                        })
                    }
                }
                return true;
            }
            let mut unused = Vec::new();
            let (out4, out6) = if family == Family::V4 {
                (&mut *out, &mut unused)
            } else {
                (&mut unused, &mut *out)
            };
            let outcome = state.store.announce(
                &announce.info_hash,
                peer,
                announce.left,
                announce.event,
                announce.numwant,
                family,
                out4,
                out6,
            );
            write_counts(out, outcome.leechers, outcome.seeders);
            true
        }
        Request::Scrape {
            connection_id,
            transaction_id,
            info_hashes,
        } => {
            if !state.conn_ids.valid(connection_id, &src) {
                Counters::add(&counters.dropped);
                return false;
            }
            Counters::add(&counters.udp_scrapes);
            // Private and unlisted torrents show nothing.
            let allowed = |h: &tracker_proto::InfoHash| state.access.check(h, None).is_ok();
            let stats = match &state.cluster {
                None => info_hashes
                    .iter()
                    .map(|h| match allowed(h) {
                        true => state.store.scrape(h),
                        false => ScrapeStats::default(),
                    })
                    .collect(),
                Some(cluster) => {
                    let stats: Vec<Option<ScrapeStats>> = info_hashes
                        .iter()
                        .map(|h| match allowed(h) {
                            true => cluster.scrape_from_view(h),
                            false => Some(ScrapeStats::default()),
                        })
                        .collect();
                    if stats.iter().any(Option::is_none) {
                        *pending = Some(Pending::Scrape {
                            transaction_id,
                            hashes: info_hashes,
                            stats,
                        });
                        return true;
                    }
                    stats.into_iter().flatten().collect()
                }
            };
            Response::Scrape {
                transaction_id,
                stats,
            }
            .write(out);
            true
        }
    }
}

/// IPv4-mapped IPv6 sources (from a dual-stack socket) are IPv4 clients.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// An announce reply up to its counts (left zero).
fn write_announce_header(state: &State, out: &mut Vec<u8>, transaction_id: u32) {
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&state.config.interval.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

fn write_counts(out: &mut [u8], leechers: u32, seeders: u32) {
    out[COUNTS_AT..COUNTS_AT + 4].copy_from_slice(&leechers.to_be_bytes());
    out[COUNTS_AT + 4..COUNTS_AT + 8].copy_from_slice(&seeders.to_be_bytes());
}

/// A request the cluster must answer, and where its reply goes.
struct Deferred {
    pending: Pending,
    to: socket2::SockAddr,
}

/// Groups of requests a completer has at the cluster at once: each group is what its worker handed
/// over while the previous ones were out, so under load they grow and the round trips stay few (and
/// each has at most `GROUP_IN_FLIGHT` calls out at a time, see `cluster`).
const GROUPS_IN_FLIGHT: usize = 2;

/// Worker batches a completer takes into one group at most.
const GROUP_BATCHES: usize = 64;

/// Answers what a UDP worker handed over: the requests of each group go to the cluster together (one
/// round trip per cluster node), and their replies are sent from here as soon as it answers, while the
/// worker goes on receiving and answering from the view. Ends when the worker has stopped and every
/// request it handed over is answered.
async fn complete(
    state: Arc<State>,
    socket: UdpSocket,
    mut from_worker: tokio::sync::mpsc::UnboundedReceiver<Vec<Deferred>>,
) {
    use futures_util::StreamExt;
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut batches = Vec::with_capacity(GROUP_BATCHES);
    loop {
        tokio::select! {
            Some(()) = running.next(), if !running.is_empty() => {}
            n = from_worker.recv_many(&mut batches, GROUP_BATCHES), if running.len() < GROUPS_IN_FLIGHT => {
                if n == 0 {
                    break;
                }
                let group: Vec<Deferred> = batches.drain(..).flatten().collect();
                running.push(answer_group(&state, &socket, group));
            }
        }
    }
    while running.next().await.is_some() {}
}

/// Sends a group's announces and scrapes to the cluster at once, and its replies when it answers.
async fn answer_group(state: &State, socket: &UdpSocket, group: Vec<Deferred>) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let mut jobs = Vec::with_capacity(group.len());
    let mut scraped = Vec::new();
    for d in &group {
        match &d.pending {
            Pending::Announce { job, .. } => jobs.push(*job),
            Pending::Scrape { hashes, stats, .. } => scraped.extend(
                hashes
                    .iter()
                    .zip(stats)
                    .filter(|(_, s)| s.is_none())
                    .map(|(h, _)| *h),
            ),
        }
    }
    let scrapes = async {
        if scraped.is_empty() {
            Vec::new()
        } else {
            cluster.scrape_all(&scraped).await
        }
    };
    let answers = async {
        if jobs.is_empty() {
            Vec::new()
        } else {
            cluster.announce_all(&jobs).await
        }
    };
    let (answers, scrapes) = tokio::join!(answers, scrapes);
    let mut answers = answers.into_iter();
    let mut scrapes = scrapes.into_iter();
    // Every reply in one buffer: one allocation for the group.
    let mut out = Vec::with_capacity(group.len() * 256);
    let mut ends = Vec::with_capacity(group.len());
    for d in &group {
        write_reply(state, &mut out, &d.pending, &mut answers, &mut scrapes);
        ends.push(out.len());
    }
    cluster.waiting.release(group.len());
    send_many(
        socket.as_raw_fd(),
        group.len(),
        |i| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            (&out[start..ends[i]], &group[i].to)
        },
        libc::MSG_DONTWAIT,
    );
}

/// Appends the reply to a request the cluster answered (`answers` and `scrapes` in order), or failed:
/// an announce gets the fallback's answer, a scrape this node's own table.
fn write_reply(
    state: &State,
    out: &mut Vec<u8>,
    pending: &Pending,
    answers: &mut impl Iterator<Item = Result<cluster::Answer, cluster::ClusterError>>,
    scrapes: &mut impl Iterator<Item = Result<ScrapeStats, cluster::ClusterError>>,
) {
    match pending {
        Pending::Announce {
            job,
            transaction_id,
        } => {
            let start = out.len();
            write_announce_header(state, out, *transaction_id);
            let answer = answers.next().unwrap_or(Err(cluster::ClusterError::Reply));
            write_answer(state, out, start, job, answer);
        }
        Pending::Scrape {
            transaction_id,
            hashes,
            stats,
        } => {
            let stats = hashes
                .iter()
                .zip(stats.iter())
                .map(|(h, s)| {
                    s.or_else(|| scrapes.next().and_then(Result::ok))
                        // The cluster failed: this node's own table.
                        .unwrap_or_else(|| state.store.scrape(h))
                })
                .collect();
            Response::Scrape {
                transaction_id: *transaction_id,
                stats,
            }
            .write(out);
        }
    }
}

/// Completes an announce reply (at `start` in `out`) left at its header: the counts and peers, or the
/// fallback's failure.
fn write_answer(
    state: &State,
    out: &mut Vec<u8>,
    start: usize,
    job: &Job,
    answer: Result<cluster::Answer, cluster::ClusterError>,
) {
    match cluster::complete(state, job, answer) {
        Ok(answer) => {
            write_counts(&mut out[start..], answer.leechers, answer.seeders);
            out.extend_from_slice(match job.family {
                Family::V6 => &answer.v6,
                _ => &answer.v4,
            });
        }
        Err(reason) => {
            let at = start + 4;
            let transaction_id =
                u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
            out.truncate(start);
            Counters::add(&state.counters.errors);
            Response::Error {
                transaction_id,
                message: reason.to_string(),
            }
            .write(out);
        }
    }
}

fn worker(
    socket: UdpSocket,
    state: &State,
    stop: &AtomicBool,
    to_cluster: Option<tokio::sync::mpsc::UnboundedSender<Vec<Deferred>>>,
) {
    let v6 = socket.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    if let (Some(cluster), Some(to_cluster)) = (&state.cluster, to_cluster) {
        return cluster_worker(socket, v6, state, cluster, stop, to_cluster);
    }
    let mut batch = Batch::new(v6);
    let fd = socket.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let received = batch.receive(fd, libc::MSG_WAITFORONE);
        if received == 0 {
            continue;
        }
        let mut replies = 0;
        for i in 0..received {
            let Some(src) = batch.source(i) else { continue };
            let len = batch.received_len(i);
            let (packet, out) = batch.request_and_reply(i, replies);
            out.clear();
            let mut pending = None;
            if handle(state, &packet[..len], src, out, &mut pending) {
                batch.set_destination(replies, src);
                replies += 1;
            }
        }
        batch.send(fd, replies);
    }
}

/// The worker of a node on a cluster. It never waits on the cluster: what the view answers is sent
/// with the batch, the rest goes to this worker's completer (`complete`), which answers it when the
/// cluster does; past `cluster::WAITING_MAX` waiting requests, the rest are answered busy at once.
fn cluster_worker(
    socket: UdpSocket,
    v6: bool,
    state: &State,
    cluster: &cluster::Cluster,
    stop: &AtomicBool,
    to_cluster: tokio::sync::mpsc::UnboundedSender<Vec<Deferred>>,
) {
    let mut batch = Batch::new(v6);
    let fd = socket.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let received = batch.receive(fd, libc::MSG_WAITFORONE);
        if received == 0 {
            continue;
        }
        let mut replies = 0;
        let mut deferred = Vec::new();
        for i in 0..received {
            let Some(src) = batch.source(i) else { continue };
            let len = batch.received_len(i);
            let (packet, out) = batch.request_and_reply(i, replies);
            out.clear();
            let mut waits = None;
            if handle(state, &packet[..len], src, out, &mut waits) {
                match waits {
                    None => {
                        batch.set_destination(replies, src);
                        replies += 1;
                    }
                    Some(pending) => deferred.push(Deferred {
                        pending,
                        to: batch.destination(src),
                    }),
                }
            }
        }
        if !deferred.is_empty() {
            let n = deferred.len();
            let refused = if cluster.waiting.reserve(n) {
                match to_cluster.send(deferred) {
                    Ok(()) => None,
                    // The completer is gone (the runtime is shutting down).
                    Err(e) => {
                        cluster.waiting.release(n);
                        Some(e.0)
                    }
                }
            } else {
                Some(deferred)
            };
            for d in refused.into_iter().flatten() {
                // Room: every deferred request freed the reply slot it would have used.
                let out = &mut batch.replies[replies];
                out.clear();
                let busy = || -> Result<cluster::Answer, _> { Err(cluster::ClusterError::Busy) };
                write_reply(
                    state,
                    out,
                    &d.pending,
                    &mut std::iter::repeat_with(busy),
                    &mut std::iter::empty(),
                );
                batch.destinations[replies] = d.to;
                replies += 1;
            }
        }
        batch.send(fd, replies);
    }
}

/// Sends `count` datagrams (`item(i)`: the bytes and the destination of the i-th) with sendmmsg, up
/// to `BATCH` a call; stops at the first error (a full send buffer, an unreachable client): UDP replies
/// may be lost, and the clients retry.
fn send_many<'a>(
    fd: i32,
    count: usize,
    item: impl Fn(usize) -> (&'a [u8], &'a socket2::SockAddr),
    flags: i32,
) {
    let mut sent = 0;
    while sent < count {
        let mut iovecs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
        let mut headers: [MaybeUninit<libc::mmsghdr>; BATCH] = [MaybeUninit::uninit(); BATCH];
        let todo = (count - sent).min(BATCH);
        for j in 0..todo {
            let (bytes, to) = item(sent + j);
            iovecs[j].write(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
            // SAFETY: an all-zero mmsghdr is valid; we then point it at live buffers.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = to.len();
            h.msg_hdr.msg_iov = iovecs[j].as_mut_ptr();
            h.msg_hdr.msg_iovlen = 1;
            headers[j].write(h);
        }
        // SAFETY: `todo` headers were initialised above and point at buffers that outlive the call
        // (the kernel only reads them).
        let n = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr().cast(), todo as u32, flags) };
        if n <= 0 {
            return;
        }
        sent += n as usize;
    }
}

/// Buffers and headers for one recvmmsg/sendmmsg round.
struct Batch {
    requests: Vec<[u8; MAX_REQUEST]>,
    lengths: [usize; BATCH],
    sources: [MaybeUninit<libc::sockaddr_storage>; BATCH],
    source_lens: [libc::socklen_t; BATCH],
    replies: Vec<Vec<u8>>,
    destinations: Vec<socket2::SockAddr>,
    v6_socket: bool,
}

impl Batch {
    fn new(v6_socket: bool) -> Self {
        Batch {
            requests: vec![[0u8; MAX_REQUEST]; BATCH],
            lengths: [0; BATCH],
            sources: [MaybeUninit::zeroed(); BATCH],
            source_lens: [0; BATCH],
            replies: (0..BATCH)
                .map(|_| Vec::with_capacity(MAX_RESPONSE))
                .collect(),
            destinations: (0..BATCH)
                .map(|_| socket2::SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))))
                .collect(),
            v6_socket,
        }
    }

    /// Waits for at least one datagram (or the poll timeout; not at all with `MSG_DONTWAIT` in `flags`)
    /// and takes as many as are queued.
    fn receive(&mut self, fd: i32, flags: i32) -> usize {
        let mut iovecs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
        let mut headers: [MaybeUninit<libc::mmsghdr>; BATCH] = [MaybeUninit::uninit(); BATCH];
        for i in 0..BATCH {
            iovecs[i].write(libc::iovec {
                iov_base: self.requests[i].as_mut_ptr().cast(),
                iov_len: MAX_REQUEST,
            });
            self.source_lens[i] = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: an all-zero mmsghdr is a valid value (null pointers, zero lengths).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = self.sources[i].as_mut_ptr().cast();
            h.msg_hdr.msg_namelen = self.source_lens[i];
            h.msg_hdr.msg_iov = iovecs[i].as_mut_ptr();
            h.msg_hdr.msg_iovlen = 1;
            headers[i].write(h);
        }
        // SAFETY: every header points at live buffers owned by `self` or this frame, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr().cast(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        for (i, header) in headers.iter().enumerate().take(n) {
            // SAFETY: the first `n` headers were initialised above and filled by the kernel.
            let h = unsafe { header.assume_init_ref() };
            self.lengths[i] = h.msg_len as usize;
            self.source_lens[i] = h.msg_hdr.msg_namelen;
        }
        n
    }

    fn received_len(&self, i: usize) -> usize {
        self.lengths[i].min(MAX_REQUEST)
    }

    fn source(&self, i: usize) -> Option<SocketAddr> {
        // SAFETY: the storage was zeroed at creation and written by the kernel; we read only the family
        // the kernel reported, and only within the reported length.
        let storage = unsafe { self.sources[i].assume_init_ref() };
        let len = self.source_lens[i] as usize;
        match i32::from(storage.ss_family) {
            libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                let sin = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                let sin6 = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    fn request_and_reply(
        &mut self,
        request: usize,
        reply: usize,
    ) -> (&[u8; MAX_REQUEST], &mut Vec<u8>) {
        (&self.requests[request], &mut self.replies[reply])
    }

    /// Where a reply to `addr` goes: a dual-stack IPv6 socket must address IPv4 clients in mapped
    /// form.
    fn destination(&self, addr: SocketAddr) -> socket2::SockAddr {
        let addr = match addr {
            SocketAddr::V4(a) if self.v6_socket => {
                SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
            }
            other => other,
        };
        socket2::SockAddr::from(addr)
    }

    fn set_destination(&mut self, reply: usize, addr: SocketAddr) {
        self.destinations[reply] = self.destination(addr);
    }

    fn send(&mut self, fd: i32, count: usize) {
        let (replies, destinations) = (&self.replies, &self.destinations);
        send_many(fd, count, |i| (&replies[i][..], &destinations[i]), 0);
    }
}
