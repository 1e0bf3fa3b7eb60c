//! Spore's tracker server: HTTP and UDP announce and scrape over a sharded in-memory swarm table, in
//! open, allow-list, deny-list or private (passkey) mode.

pub mod access;
pub mod cluster;
mod cluster_view;
mod config;
mod conn_id;
mod error;
mod http;
mod http_limits;
mod metrics;
mod sources;
pub mod store;
mod tls;
mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use access::{add_user, list_users, revoke_user, Mode, UserTotals};
pub use config::Config;
pub use error::Error;

use access::Access;
use conn_id::ConnectionIds;
use metrics::{Counters, Rates};
use store::{Store, StoreLimits};

/// Everything the HTTP and UDP front ends share.
pub struct State {
    pub config: Config,
    /// This node's swarms: all of them without a cluster; with one, the peers that announced here (the
    /// view answered from when the cluster is lost and `cluster_fallback = "local"`).
    pub store: Store,
    /// The swarms shared with other nodes, when `cluster` is set.
    pub cluster: Option<cluster::Cluster>,
    pub access: Access,
    counters: Counters,
    rates: Rates,
    conn_ids: ConnectionIds,
    http_open: Arc<parking_lot::Mutex<http_limits::Open>>,
    /// Full scrapes whose body is being sent.
    full_scrapes_in_flight: std::sync::atomic::AtomicUsize,
    full_scrapes:
        parking_lot::Mutex<std::collections::HashMap<sources::Source, std::time::Instant>>,
    /// Woken when the list file was re-read (SIGHUP), to publish it to the cluster.
    list_reloaded: tokio::sync::Notify,
}

/// Most addresses remembered for the full-scrape rate limit; past this the table is cleared, which
/// errs towards allowing a scrape rather than growing without bound.
const MAX_SCRAPE_CLIENTS: usize = 100_000;

impl State {
    pub fn new(config: Config) -> Result<State, Error> {
        Self::with_cluster(config, None, ConnectionIds::new(random_keys()?))
    }

    fn with_cluster(
        config: Config,
        cluster: Option<cluster::Cluster>,
        conn_ids: ConnectionIds,
    ) -> Result<State, Error> {
        // With a cluster, private users and their totals live in it, not in a database file.
        let access = match &cluster {
            None => Access::new(config.mode, config.list.clone(), config.db.clone())?,
            Some(_) => Access::with_users_from(config.mode, config.list.clone(), None, true)?,
        };
        let store = Store::new(
            config.shards,
            StoreLimits {
                max_swarms: config.max_swarms,
                max_peers_per_swarm: config.max_peers_per_swarm,
                max_numwant: config.max_numwant,
                default_numwant: config.default_numwant,
                creation: sources::CreationLimits {
                    burst: config.swarm_creation_burst,
                    per_minute: config.swarm_creation_per_minute,
                    reserve_percent: config.swarm_reserve_percent,
                },
            },
        );
        Ok(State {
            conn_ids,
            store,
            cluster,
            access,
            counters: Counters::default(),
            rates: Rates::default(),
            full_scrapes: Default::default(),
            full_scrapes_in_flight: Default::default(),
            http_open: Default::default(),
            list_reloaded: tokio::sync::Notify::new(),
            config,
        })
    }

    /// Whether `ip` (its IPv4 address or IPv6 /64) may do a full scrape now (and records that it did).
    fn allow_full_scrape(&self, ip: std::net::IpAddr) -> bool {
        let source = sources::Source::of(ip);
        if !self.config.full_scrape {
            return false;
        }
        let now = std::time::Instant::now();
        let mut seen = self.full_scrapes.lock();
        if seen.len() >= MAX_SCRAPE_CLIENTS {
            seen.clear();
        }
        let wait = Duration::from_secs(self.config.full_scrape_interval);
        match seen.get(&source) {
            Some(last) if now.duration_since(*last) < wait => false,
            _ => {
                seen.insert(source, now);
                true
            }
        }
    }
}

fn random_keys() -> std::io::Result<(u64, u64)> {
    use std::io::Read;
    let mut k0 = [0u8; 8];
    let mut k1 = [0u8; 8];
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    urandom.read_exact(&mut k0)?;
    urandom.read_exact(&mut k1)?;
    Ok((u64::from_le_bytes(k0), u64::from_le_bytes(k1)))
}

/// Extracts the passkey from a private announce path: `/announce/<passkey>` (also used as BEP 41 URL
/// data over UDP).
pub fn passkey_from_path(path: &[u8]) -> Option<&[u8]> {
    let rest = path.strip_prefix(b"/announce/")?;
    let end = rest
        .iter()
        .position(|&b| b == b'?' || b == b'/')
        .unwrap_or(rest.len());
    let key = &rest[..end];
    (!key.is_empty()).then_some(key)
}

/// Why an announce is refused whatever the mode, before anything is recorded. Port 0 is no address a
/// peer can be reached at: storing it would hand every downloader an address that cannot connect.
pub(crate) fn refuse_announce(announce: &tracker_proto::Announce) -> Option<&'static str> {
    (announce.port == 0).then_some("invalid port 0")
}

/// A running tracker: its bound addresses and a way to stop it.
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub udp_addr: Option<SocketAddr>,
    pub state: Arc<State>,
    stop: Arc<AtomicBool>,
    http_shutdown: Vec<tokio::sync::oneshot::Sender<()>>,
    http_tasks: Vec<tokio::task::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    /// Answer what the UDP workers handed to the cluster; they end after the workers.
    udp_completers: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds the configured sockets and starts serving on the current tokio runtime (HTTP, housekeeping)
/// and on dedicated threads (UDP workers).
pub async fn start(mut config: Config) -> Result<Running, Error> {
    let udp_workers = match config.udp_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if !config.http.is_empty() || !config.https.is_empty() {
        let udp_sockets = if config.udp.is_empty() {
            0
        } else {
            udp_workers
        };
        let budget = http_limits::connection_budget(udp_sockets);
        if config.http_max_connections > budget {
            tracing::warn!(
                "http_max_connections lowered from {} to {budget}: the open-files limit \
                 (RLIMIT_NOFILE) leaves room for no more",
                config.http_max_connections
            );
            config.http_max_connections = budget;
        }
    }
    let mut conn_ids = ConnectionIds::new(random_keys()?);
    let cluster = if config.cluster.is_empty() {
        None
    } else {
        let timeout = Duration::from_secs(config.cluster_connect_timeout);
        let settings = cluster::Settings {
            fallback: config.cluster_fallback,
            peer_timeout: config.peer_timeout,
            max_peers: config.max_peers_per_swarm,
            view_ttl: Duration::from_millis(config.cluster_view_ttl_ms),
            queue_max: config.cluster_queue_max,
        };
        let c = cluster::Cluster::connect_with(&config.cluster, settings, timeout).await?;
        conn_ids = ConnectionIds::rotating();
        let now = conn_id::period_of(conn_id::current_window());
        for period in [now.saturating_sub(1), now, now + 1] {
            let keys = tokio::time::timeout(timeout, c.period_key(period, random_keys()?))
                .await
                .map_err(|_| cluster::ClusterError::Timeout(config.cluster.clone(), timeout))??;
            conn_ids.set_period_key(period, keys);
        }
        tracing::info!("sharing swarms through the cluster at {}", config.cluster);
        Some(c)
    };
    let state = Arc::new(State::with_cluster(config, cluster, conn_ids)?);
    if let (Some(cluster), Mode::Private) = (&state.cluster, state.access.mode()) {
        // Users before serving, so no known user is refused at start.
        let users = tokio::time::timeout(Duration::from_secs(10), cluster.passkeys())
            .await
            .map_err(|_| Error::Config("the cluster did not list the users in time".into()))??;
        state.access.set_users(users);
    }
    let mut list_version = None;
    let uses_list = matches!(state.access.mode(), Mode::Allow | Mode::Deny)
        || state.access.file_list().is_some();
    if let (Some(cluster), true) = (&state.cluster, uses_list) {
        // This node's list file (if any) becomes the cluster's; without one, the cluster's is used.
        let list = async {
            match state.access.file_list() {
                Some(hashes) => cluster.publish_list(&hashes).await,
                None => {
                    let v = cluster.list_version().await?;
                    state.access.set_list(cluster.list().await?);
                    Ok(v)
                }
            }
        };
        list_version = Some(
            tokio::time::timeout(Duration::from_secs(10), list)
                .await
                .map_err(|_| {
                    Error::Config("the cluster did not share the list in time".into())
                })??,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();

    let mut http_addr = None;
    let mut http_shutdown = Vec::new();
    let mut http_tasks = Vec::new();
    if !state.config.http.is_empty() {
        let addr: SocketAddr = state.config.http.parse().map_err(|e| {
            Error::Config(format!(
                "bad HTTP listen address {:?}: {e}",
                state.config.http
            ))
        })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr,
                what: "HTTP",
                source,
            })?;
        http_addr = Some(listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel();
        http_shutdown.push(tx);
        http_tasks.push(tokio::spawn(http::serve(listener, state.clone(), rx)));
    }

    let mut https_addr = None;
    if !state.config.https.is_empty() {
        let addr: SocketAddr = state.config.https.parse().map_err(|e| {
            Error::Config(format!(
                "bad HTTPS listen address {:?}: {e}",
                state.config.https
            ))
        })?;
        let (Some(cert), Some(key)) = (&state.config.tls_cert, &state.config.tls_key) else {
            return Err(Error::Config(
                "an HTTPS listener needs tls_cert and tls_key (--tls-cert, --tls-key)".into(),
            ));
        };
        // Read before binding, so a bad certificate stops the tracker with its own message.
        let acceptor = tls::acceptor(cert, key)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr,
                what: "HTTPS",
                source,
            })?;
        https_addr = Some(listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel();
        http_shutdown.push(tx);
        http_tasks.push(tokio::spawn(http::serve_tls(
            listener,
            acceptor,
            state.clone(),
            rx,
        )));
    } else if state.config.tls_cert.is_some() || state.config.tls_key.is_some() {
        return Err(Error::Config(
            "tls_cert and tls_key are only used with an HTTPS listen address (--https)".into(),
        ));
    }

    let mut udp_addr = None;
    let mut udp_threads = Vec::new();
    let mut udp_completers = Vec::new();
    if !state.config.udp.is_empty() {
        let addr: SocketAddr = state.config.udp.parse().map_err(|e| {
            Error::Config(format!(
                "bad UDP listen address {:?}: {e}",
                state.config.udp
            ))
        })?;
        let (bound, workers) = udp::spawn(
            addr,
            udp_workers,
            state.clone(),
            stop.clone(),
            tokio::runtime::Handle::current(),
        )?;
        udp_addr = Some(bound);
        udp_threads = workers.threads;
        udp_completers = workers.completers;
    }

    if state.cluster.is_some() {
        tasks.push(tokio::spawn(share_conn_id_keys(state.clone())));
        tasks.push(tokio::spawn(flush_writes(state.clone())));
        if uses_list {
            tasks.push(tokio::spawn(share_list(state.clone(), list_version)));
        }
        if state.access.mode() == Mode::Private {
            tasks.push(tokio::spawn(share_users(state.clone())));
        }
    }

    let housekeeping_state = state.clone();
    tasks.push(tokio::spawn(async move {
        let state = housekeeping_state;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut n: u64 = 0;
        // Every minute, or every half peer_timeout if that is shorter (in 5 s ticks).
        let expire_every = (u64::from(state.config.peer_timeout) / 10).clamp(1, 12);
        loop {
            tick.tick().await;
            n += 1;
            state.rates.sample(&state.counters);
            if n.is_multiple_of(2) {
                // On a cluster the list is the cluster's, re-read from the file on SIGHUP only.
                if state.access.mode() == Mode::Private && state.cluster.is_none() {
                    if let Err(e) = state.access.reload() {
                        tracing::warn!("reloading users: {e:#}");
                    }
                }
                if let Err(e) = state.access.flush() {
                    tracing::warn!("saving totals: {e:#}");
                }
            }
            if n.is_multiple_of(expire_every) {
                state.store.expire(state.config.peer_timeout);
                state.access.expire(state.config.peer_timeout);
            }
        }
    }));

    Ok(Running {
        http_addr,
        https_addr,
        udp_addr,
        state,
        stop,
        http_shutdown,
        http_tasks,
        tasks,
        udp_threads,
        udp_completers,
    })
}

impl Running {
    /// Stops serving, waits for the workers, and saves pending private totals.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for tx in self.http_shutdown.drain(..) {
            let _ = tx.send(());
        }
        // In-flight requests finish; idle keep-alive connections get a moment, then are dropped.
        let tasks = join_all(self.http_tasks.drain(..).collect());
        if tokio::time::timeout(Duration::from_secs(5), tasks)
            .await
            .is_err()
        {
            tracing::warn!("HTTP connections still open at shutdown");
        }
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        let threads: Vec<_> = self.udp_threads.drain(..).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        // Requests still at the cluster are answered (each gives up within `REQUEST_DEADLINE`).
        for t in self.udp_completers.drain(..) {
            let _ = t.await;
        }
        if let Err(e) = self.state.access.flush() {
            tracing::warn!("saving totals at shutdown: {e:#}");
        }
        if let Some(cluster) = &self.state.cluster {
            save_totals(&self.state, cluster).await;
            cluster.flush().await;
        }
    }

    /// Re-reads the list file and users (SIGHUP); on a cluster, the list read is published to every node.
    pub fn reload(&self) -> Result<(), Error> {
        self.state.access.reload()?;
        self.state.list_reloaded.notify_one();
        Ok(())
    }
}

/// How often a node fetches the connection-ID keys of this period and the next from the cluster.
const CONN_ID_KEYS_POLL: Duration = Duration::from_secs(10);

/// Keeps the keys of the current and next period (see `conn_id`): every node has the next one long
/// before it is used, so all switch at the same minute.
async fn share_conn_id_keys(state: Arc<State>) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let mut tick = tokio::time::interval(CONN_ID_KEYS_POLL);
    loop {
        tick.tick().await;
        let now = conn_id::period_of(conn_id::current_window());
        for period in [now, now + 1] {
            let Ok(mine) = random_keys() else { continue };
            match cluster.period_key(period, mine).await {
                Ok(keys) => state.conn_ids.set_period_key(period, keys),
                Err(e) => tracing::debug!("connection-ID key from the cluster: {e}"),
            }
        }
    }
}

/// How often a node asks the cluster whether the private users changed (and saves the totals there).
const USERS_POLL: Duration = Duration::from_millis(300);

/// Private mode on a cluster: keeps this node's passkeys in step with the cluster's (a user added
/// through any node announces on every node within `USERS_POLL` and a round trip) and adds this node's
/// totals to the cluster's.
async fn share_users(state: Arc<State>) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let mut seen = None;
    let mut tick = tokio::time::interval(USERS_POLL);
    loop {
        tick.tick().await;
        follow(
            &mut seen,
            "users",
            cluster.users_version().await,
            async || cluster.passkeys().await,
            |users| state.access.set_users(users),
        )
        .await;
        save_totals(&state, cluster).await;
    }
}

/// Sends the queued re-announce writes every `cluster_flush_interval_ms` (sooner when the queue is half
/// full) and forgets views past their time to live.
async fn flush_writes(state: Arc<State>) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(
        state.config.cluster_flush_interval_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cluster.queue.wake.notified() => {}
        }
        cluster.refresh_slots().await;
        cluster.flush().await;
        cluster.views.prune(std::time::Instant::now());
        cluster.reconnect().await;
    }
}

/// How often a node asks the cluster whether the allow/deny list changed.
const LIST_POLL: Duration = Duration::from_millis(300);

/// Keeps this node's allow/deny list the cluster's: publishes the list file when it is re-read
/// (SIGHUP), and re-reads the cluster's when another node published one (within `LIST_POLL` and a
/// round trip).
async fn share_list(state: Arc<State>, mut seen: Option<u64>) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let mut tick = tokio::time::interval(LIST_POLL);
    let mut publish = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.list_reloaded.notified() => publish = true,
        }
        if publish {
            let hashes = state.access.file_list().unwrap_or_default();
            match cluster.publish_list(&hashes).await {
                Ok(v) => {
                    tracing::info!(
                        "published the list file ({} info-hashes) to the cluster",
                        hashes.len()
                    );
                    seen = Some(v);
                    publish = false;
                }
                Err(e) => tracing::warn!("publishing the list to the cluster: {e}"),
            }
            continue;
        }
        follow(
            &mut seen,
            "list",
            cluster.list_version().await,
            async || cluster.list().await,
            |list| state.access.set_list(list),
        )
        .await;
    }
}

/// Applies what the cluster keeps under a version (users, the list) when the version moved past `seen`.
async fn follow<T>(
    seen: &mut Option<u64>,
    what: &str,
    version: Result<u64, cluster::ClusterError>,
    read: impl AsyncFnOnce() -> Result<T, cluster::ClusterError>,
    apply: impl FnOnce(T),
) {
    match version {
        Ok(v) if *seen != Some(v) => match read().await {
            Ok(value) => {
                apply(value);
                *seen = Some(v);
            }
            Err(e) => tracing::debug!("reading the {what} from the cluster: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::debug!("polling the cluster's {what}: {e}"),
    }
}

async fn save_totals(state: &State, cluster: &cluster::Cluster) {
    let pending = state.access.take_pending();
    if pending.is_empty() {
        return;
    }
    if let Err(e) = cluster.add_totals(&pending).await {
        tracing::debug!("saving totals to the cluster: {e}");
        state.access.restore_pending(pending);
    }
}

/// Waits for every task (the HTTP and HTTPS servers stop in parallel, under one deadline).
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passkeys_from_paths() {
        assert_eq!(passkey_from_path(b"/announce/abc123"), Some(&b"abc123"[..]));
        assert_eq!(passkey_from_path(b"/announce/abc?x=1"), Some(&b"abc"[..]));
        assert_eq!(passkey_from_path(b"/announce/"), None);
        assert_eq!(passkey_from_path(b"/announce"), None);
        assert_eq!(passkey_from_path(b"/scrape/abc"), None);
    }
}
