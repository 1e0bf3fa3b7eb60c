//! Bounds on what a stranger can hold open before proving anything: connections that have not sent
//! their handshake (in total and per IP address, each for at most a few seconds), accept loops that
//! back off instead of spinning when the process runs out of descriptors, and the file-descriptor
//! budget every connection limit is fitted into.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::AsyncReadExt;

use crate::encryption::Encryption;
use crate::transport::PeerStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use wire::{Handshake, HANDSHAKE_LEN};

/// Connections that have not completed the 68-byte handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// At most this many at once on one listener.
    pub total: usize,
    /// At most this many from one IP address.
    pub per_ip: usize,
    /// A connection that has not sent its whole handshake by then is closed.
    pub timeout: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> HandshakeLimits {
        HandshakeLimits {
            total: 64,
            per_ip: 4,
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Default)]
struct Open {
    per_ip: HashMap<IpAddr, usize>,
    /// Oldest first: each waiting connection's address and what tells it it was evicted.
    order: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    next_id: u64,
}

impl Open {
    fn release(&mut self, id: u64) -> Option<Arc<Notify>> {
        let (ip, evicted) = self.order.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(evicted)
    }
}

/// The connections of one listener still waiting for their handshake, and the caps on them.
pub struct HandshakeGate {
    limits: Mutex<HandshakeLimits>,
    open: Mutex<Open>,
}

impl HandshakeGate {
    pub fn new(limits: HandshakeLimits) -> Arc<HandshakeGate> {
        Arc::new(HandshakeGate {
            limits: Mutex::new(limits),
            open: Mutex::default(),
        })
    }

    pub fn limits(&self) -> HandshakeLimits {
        *self.limits.lock()
    }

    /// New limits apply to connections accepted from now on.
    pub fn set_limits(&self, limits: HandshakeLimits) {
        *self.limits.lock() = limits;
    }

    /// Connections waiting for their handshake now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.open.lock().order.len()
    }

    /// A waiting slot for a connection from `ip`: none when `ip` has its share already. When the
    /// listener is full the oldest waiting connection is closed to make room, so connections that sat
    /// silent longest go first and a new peer always gets its few seconds.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Waiting> {
        let limits = self.limits();
        let mut open = self.open.lock();
        if open.per_ip.get(&ip).copied().unwrap_or(0) >= limits.per_ip || limits.total == 0 {
            return None;
        }
        while open.order.len() >= limits.total {
            let Some((&oldest, _)) = open.order.iter().next() else {
                break;
            };
            if let Some(evicted) = open.release(oldest) {
                evicted.notify_one();
            }
        }
        *open.per_ip.entry(ip).or_insert(0) += 1;
        let id = open.next_id;
        open.next_id += 1;
        let evicted = Arc::new(Notify::new());
        open.order.insert(id, (ip, evicted.clone()));
        Some(Waiting {
            id,
            evicted,
            gate: self.clone(),
        })
    }
}

/// A connection's place among those waiting for a handshake, given back when dropped.
pub(crate) struct Waiting {
    id: u64,
    evicted: Arc<Notify>,
    gate: Arc<HandshakeGate>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.gate.open.lock().release(self.id);
    }
}

/// The address per-IP caps count a connection under: an IPv4 address (also one reaching a dual-stack
/// socket as `::ffff:a.b.c.d`), or an IPv6 address's /64, since one host usually has a whole /64.
pub fn ip_group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

/// A freshly accepted connection, admitted or not.
pub(crate) enum Admitted {
    /// Its whole handshake had already arrived: it never counted as waiting.
    Ready(Box<[u8; HANDSHAKE_LEN]>),
    /// It waits for the rest of its handshake in a slot; `filled` bytes are in `buf` already.
    Waiting {
        buf: Box<[u8; HANDSHAKE_LEN]>,
        filled: usize,
        slot: Waiting,
    },
}

/// Decides what happens to a connection just accepted from `ip`, without waiting: a peer whose
/// handshake is already readable (an honest peer sends it right after connecting) goes straight on, even
/// when the waiting room is full of silent connections; another takes a waiting slot, or is refused
/// (`None`: the caller drops it, closing it at once) when its IP or the listener has none left.
pub(crate) fn admit(gate: &Arc<HandshakeGate>, stream: &TcpStream, ip: IpAddr) -> Option<Admitted> {
    admit_reading(gate, ip, |buf| stream.try_read(buf))
}

/// [`admit`] for any stream: `try_read` reads what has arrived, or fails with `WouldBlock`.
pub(crate) fn admit_reading(
    gate: &Arc<HandshakeGate>,
    ip: IpAddr,
    mut try_read: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> Option<Admitted> {
    let mut buf = Box::new([0u8; HANDSHAKE_LEN]);
    let mut filled = 0;
    while filled < HANDSHAKE_LEN {
        match try_read(&mut buf[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return None,
        }
    }
    // An MSE handshake takes round trips whatever has arrived: it always waits in a slot.
    if filled == HANDSHAKE_LEN && mse::detect(&buf[..]) == mse::Detected::Plaintext {
        return Some(Admitted::Ready(buf));
    }
    let slot = gate.admit(ip_group(ip))?;
    Some(Admitted::Waiting { buf, filled, slot })
}

/// Finishes an admitted connection's handshakes within the gate's timeout, then frees its slot: a
/// plaintext BitTorrent handshake, or (told apart by its first bytes) an MSE handshake, answered as
/// `encryption` allows, with `lookup` finding the torrent it asks for, and the BitTorrent handshake
/// inside it. A connection `encryption` does not allow is refused with an info line naming it.
pub(crate) async fn finish_handshake(
    gate: &HandshakeGate,
    stream: PeerStream,
    admitted: Admitted,
    addr: SocketAddr,
    encryption: Encryption,
    lookup: impl mse::SkeyLookup + 'static,
) -> anyhow::Result<(PeerStream, Handshake)> {
    let (mut buf, mut filled, slot) = match admitted {
        Admitted::Ready(buf) => (buf, HANDSHAKE_LEN, None),
        Admitted::Waiting { buf, filled, slot } => (buf, filled, Some(slot)),
    };
    let mut stream = stream;
    let work = async move {
        loop {
            match crate::encryption::incoming_kind(encryption, &buf[..filled]) {
                Err(refused) => {
                    tracing::info!("peer {addr}: {refused}");
                    return Err(refused.into());
                }
                Ok(mse::Detected::NeedMore) => {
                    let n = stream.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        anyhow::bail!("peer closed the connection before its handshake");
                    }
                    filled += n;
                }
                Ok(mse::Detected::Plaintext) => {
                    stream.read_exact(&mut buf[filled..]).await?;
                    let theirs = Handshake::decode(&buf[..])?;
                    return Ok((stream, theirs));
                }
                Ok(mse::Detected::Encrypted) => {
                    return crate::encryption::respond(stream, &buf[..filled], encryption, lookup)
                        .await;
                }
            }
        }
    };
    let Some(slot) = slot else {
        return work.await;
    };
    let timeout = gate.limits().timeout;
    let result = tokio::select! {
        done = tokio::time::timeout(timeout, work) => {
            done.map_err(|_| anyhow::anyhow!("no handshake within {timeout:?}"))?
        }
        _ = slot.evicted.notified() => {
            anyhow::bail!("closed to make room for a newer connection")
        }
    };
    drop(slot);
    result
}

/// What an accept loop does between failed accepts: nothing for a connection that died in the backlog,
/// a growing sleep (10 ms doubling up to 1 s) when the process is out of descriptors or memory, so the
/// loop neither spins nor starves the connections that would free them. One warning per episode.
pub struct AcceptBackoff {
    what: &'static str,
    delay: Option<Duration>,
    failures: u64,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    pub fn new(what: &'static str) -> AcceptBackoff {
        AcceptBackoff {
            what,
            delay: None,
            failures: 0,
        }
    }

    /// Accepts the next connection, waiting out errors.
    pub async fn accept(&mut self, listener: &TcpListener) -> (TcpStream, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => {
                    self.succeeded();
                    return accepted;
                }
                Err(e) => self.failed(&e).await,
            }
        }
    }

    /// Ends an episode of failures, saying how long it lasted.
    pub fn succeeded(&mut self) {
        if self.delay.take().is_some() {
            tracing::warn!(
                "{}: accepting connections again after {} failed accepts",
                self.what,
                self.failures
            );
        }
        self.failures = 0;
    }

    pub async fn failed(&mut self, e: &io::Error) {
        if transient(e) {
            return;
        }
        self.failures += 1;
        let delay = match self.delay {
            None => {
                tracing::warn!(
                    "{}: cannot accept connections ({e}); backing off until descriptors free up",
                    self.what
                );
                BACKOFF_FIRST
            }
            Some(d) => (d * 2).min(BACKOFF_MAX),
        };
        self.delay = Some(delay);
        tokio::time::sleep(delay).await;
    }
}

/// A connection that failed between the peer's connect and our accept: nothing to wait for.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// Descriptors kept back from connections for everything else: torrent files, the state directory,
/// the DHT and tracker sockets, the runtime's own.
pub const FILE_RESERVE: usize = 64;

/// Raises the soft limit on open files to the hard limit (once, at start). Returns the soft limit
/// now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // An unlimited hard limit cannot be the soft one: the kernel caps descriptors at fs.nr_open.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok());
    for want in [Some(lim.rlim_max), ceiling.map(|c| c.min(lim.rlim_max))]
        .into_iter()
        .flatten()
    {
        if want <= lim.rlim_cur {
            break;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = want;
            break;
        }
    }
    Ok(lim.rlim_cur)
}

fn nofile_soft_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return u64::MAX;
    }
    lim.rlim_cur
}

/// The descriptors a process may spend on connections: its open-file limit less a reserve for files.
/// Every connection cap (established peers, connections waiting for a handshake, API connections) is
/// fitted into it by [`FdBudget::fit`], so the caps together can never run the process out of
/// descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft RLIMIT_NOFILE.
    pub limit: usize,
    /// Kept for files and other sockets: [`FILE_RESERVE`], or half the limit when that is smaller.
    pub reserve: usize,
}

impl FdBudget {
    /// The budget under the current soft limit.
    pub fn current() -> FdBudget {
        FdBudget::for_limit(usize::try_from(nofile_soft_limit()).unwrap_or(usize::MAX))
    }

    pub fn for_limit(limit: usize) -> FdBudget {
        FdBudget {
            limit,
            reserve: FILE_RESERVE.min(limit / 2),
        }
    }

    /// Descriptors for connections.
    pub fn connections(&self) -> usize {
        self.limit.saturating_sub(self.reserve)
    }

    /// Scales the caps down, each in proportion and none below 1, when together they exceed the
    /// budget; logs what was clamped. Returns whether anything was.
    pub fn fit(&self, caps: &mut [(&str, &mut usize)]) -> bool {
        let budget = self.connections();
        let sum: usize = caps.iter().map(|(_, c)| **c).fold(0, usize::saturating_add);
        if sum <= budget {
            return false;
        }
        let mut said = Vec::new();
        for (name, cap) in caps.iter_mut() {
            let scaled = ((**cap as u128 * budget as u128) / sum as u128) as usize;
            let scaled = scaled.max(1);
            if scaled < **cap {
                said.push(format!("{name} {} -> {scaled}", **cap));
                **cap = scaled;
            }
        }
        tracing::warn!(
            "open-file limit {} ({} kept for files): connection caps lowered to fit: {}",
            self.limit,
            self.reserve,
            said.join(", ")
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn caps_that_fit_are_kept_and_others_scaled_into_the_budget() {
        let b = FdBudget::for_limit(1024);
        assert_eq!(b.connections(), 960);
        let (mut peers, mut waiting) = (50, 64);
        assert!(!b.fit(&mut [("peers", &mut peers), ("waiting", &mut waiting)]));
        assert_eq!((peers, waiting), (50, 64));

        let b = FdBudget::for_limit(128);
        assert_eq!(b.connections(), 64);
        assert!(b.fit(&mut [("peers", &mut peers), ("waiting", &mut waiting)]));
        assert!(peers + waiting <= 64, "{peers} + {waiting}");
        assert!(peers >= 25 && waiting >= 30, "{peers} {waiting}");

        let b = FdBudget::for_limit(4);
        let (mut a, mut c) = (10, 10);
        b.fit(&mut [("a", &mut a), ("c", &mut c)]);
        assert_eq!((a, c), (1, 1));
    }

    #[tokio::test]
    async fn the_gate_caps_per_ip_makes_room_by_closing_the_oldest_and_frees_on_drop() {
        let gate = HandshakeGate::new(HandshakeLimits {
            total: 3,
            per_ip: 2,
            timeout: Duration::from_secs(1),
        });
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let c: IpAddr = [127, 0, 0, 4].into();
        let a1 = gate.admit(a).expect("first from a");
        let a2 = gate.admit(a).expect("second from a");
        assert!(gate.admit(a).is_none(), "third from a");
        let b1 = gate.admit(b).expect("first from b");
        assert_eq!(gate.waiting(), 3);
        // Full: the oldest (a1) makes room for c, and is told so.
        let c1 = gate.admit(c).expect("room made");
        assert_eq!(gate.waiting(), 3);
        tokio::time::timeout(Duration::from_secs(5), a1.evicted.notified())
            .await
            .expect("the oldest is told to go");
        // a has one slot left in use, so it may take another.
        drop(a1);
        assert_eq!(gate.waiting(), 3);
        let a3 = gate.admit(a).expect("a's share freed by the eviction");
        drop((a2, a3, b1, c1));
        assert_eq!(gate.waiting(), 0);
        assert!(gate.open.lock().per_ip.is_empty());
    }

    /// A connection to `to` from 127.0.0.`n`, which sends nothing.
    async fn silent(n: u8, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, n], 0)))
            .expect("bind a loopback source address");
        socket.connect(to).await.expect("connect")
    }

    /// Waits until the other end closes `stream`, and says how long after `since` that was.
    async fn closed(stream: &mut TcpStream, since: std::time::Instant) -> Duration {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => since.elapsed(),
            Ok(Ok(_)) => panic!("a silent connection got data"),
            Err(_) => panic!("not closed within 30 s"),
        }
    }

    fn limits(total: usize, per_ip: usize, timeout: Duration) -> HandshakeLimits {
        HandshakeLimits {
            total,
            per_ip,
            timeout,
        }
    }

    #[tokio::test]
    async fn silent_connections_past_the_per_ip_cap_close_at_once_the_others_at_the_timeout() {
        const TIMEOUT: Duration = Duration::from_secs(4);
        let seed = crate::testutil::seed(16 * 1024, 16 * 1024, |c| {
            c.handshake = limits(64, 2, TIMEOUT)
        })
        .await;
        let to = seed.handle.listen_addr();
        let start = std::time::Instant::now();
        let mut kept = [silent(7, to).await, silent(7, to).await];
        let mut refused = [silent(7, to).await, silent(7, to).await];
        for s in &mut refused {
            let t = closed(s, start).await;
            assert!(t < TIMEOUT, "refused connection closed after {t:?}");
        }
        // Another address has its own share.
        let mut other = silent(8, to).await;
        for s in kept.iter_mut().chain([&mut other]) {
            let t = closed(s, start).await;
            assert!(
                t >= TIMEOUT,
                "closed after {t:?}, before the handshake timeout"
            );
        }
    }

    /// Reads what the other end sends until it closes `stream`: how long after `since` that was.
    async fn drained(stream: &mut TcpStream, since: std::time::Instant) -> Duration {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return since.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("not closed within 30 s"),
            }
        }
    }

    /// MSE initiators that send their public key and then nothing hold waiting slots like silent
    /// plaintext peers: past the per-IP cap they are closed at once (their key already readable
    /// does not let them skip the gate), the others at the handshake timeout, after our answer.
    #[tokio::test]
    async fn stalled_mse_handshakes_are_held_to_the_gate() {
        use tokio::io::AsyncWriteExt;
        const TIMEOUT: Duration = Duration::from_secs(3);
        let seed = crate::testutil::seed(16 * 1024, 16 * 1024, |c| {
            c.handshake = limits(64, 2, TIMEOUT)
        })
        .await;
        let to = seed.handle.listen_addr();
        let start = std::time::Instant::now();
        let mut conns = Vec::new();
        for _ in 0..4 {
            let mut s = silent(9, to).await;
            // A public key (below the prime, not 0, 1 or P-1) and no more.
            s.write_all(&[0x42; 96]).await.expect("send Ya");
            conns.push(s);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut refused = conns.split_off(2);
        for s in &mut refused {
            let t = drained(s, start).await;
            assert!(t < TIMEOUT, "refused connection closed after {t:?}");
        }
        for s in &mut conns {
            let t = drained(s, start).await;
            assert!(
                t >= TIMEOUT,
                "closed after {t:?}, before the handshake timeout"
            );
        }
    }

    #[tokio::test]
    async fn a_full_waiting_room_closes_its_oldest_and_a_real_peer_is_served() {
        let seed = crate::testutil::seed(16 * 1024, 16 * 1024, |c| {
            c.handshake = limits(3, 2, Duration::from_secs(60))
        })
        .await;
        let to = seed.handle.listen_addr();
        let start = std::time::Instant::now();
        let mut oldest = silent(2, to).await;
        let _rest = [silent(3, to).await, silent(4, to).await];
        let _newest = silent(5, to).await;
        // At once, not after a timeout (60 s here; 10 s before waiting rooms had a size).
        let t = closed(&mut oldest, start).await;
        assert!(t < Duration::from_secs(8), "the oldest closed after {t:?}");
        let peer = crate::testutil::FakePeer::connect(to, seed.info_hash, true).await;
        assert_eq!(peer.theirs.info_hash, seed.info_hash);
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_growing_and_a_success_starts_over() {
        let mut backoff = AcceptBackoff::new("test");
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let start = tokio::time::Instant::now();
        backoff
            .failed(&io::Error::from(io::ErrorKind::ConnectionAborted))
            .await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a connection lost in the backlog"
        );
        let mut waits = Vec::new();
        for _ in 0..9 {
            let at = tokio::time::Instant::now();
            backoff.failed(&emfile).await;
            waits.push(at.elapsed().as_millis());
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded();
        let at = tokio::time::Instant::now();
        backoff.failed(&emfile).await;
        assert_eq!(at.elapsed().as_millis(), 10);
    }

    #[test]
    fn per_ip_caps_count_ipv4_as_itself_and_ipv6_by_its_64() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_group(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_group(a), ip_group(b));
        assert_ne!(ip_group(a), ip_group(c));
    }

    /// Listeners that accept connections and never answer; how many they accepted so far.
    async fn mute_peers(n: usize) -> (Vec<SocketAddr>, Arc<std::sync::atomic::AtomicUsize>) {
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut addrs = Vec::new();
        for _ in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.push(listener.local_addr().expect("address"));
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    held.push(stream);
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        (addrs, accepted)
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn dials_in_flight_count_against_the_torrent_cap_and_the_shared_budget() {
        let (addrs, accepted) = mute_peers(10).await;
        let budget = Arc::new(crate::torrent::PeerBudget::new(3));
        let seed = crate::testutil::seed(16 * 1024, 16 * 1024, |c| {
            c.max_peers = 4;
            c.peer_budget = Some(budget.clone());
            c.peers = addrs.clone();
        })
        .await;
        until("three dials", || {
            accepted.load(std::sync::atomic::Ordering::SeqCst) >= 3
        })
        .await;
        assert_eq!(budget.used(), 3, "each dial holds a unit of the budget");
        assert_eq!(seed.handle.shared.state.lock().core.connected_count(), 3);

        let (addrs, accepted) = mute_peers(10).await;
        let seed = crate::testutil::seed(16 * 1024, 16 * 1024, |c| {
            c.max_peers = 2;
            c.peers = addrs.clone();
        })
        .await;
        until("two dials", || {
            accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(seed.handle.shared.state.lock().core.connected_count(), 2);
    }
}
