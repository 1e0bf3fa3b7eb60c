//! `spore daemon`: many torrents behind one peer port, kept in a state directory across restarts
//! (fast-resume included), driven through a JSON API and a web page.

mod api;
mod conns;
mod paths;
mod relocate;
mod rpc;
mod sched;
pub mod store;
mod stream;

use engine::InfoHash;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use engine::managed::{AddTorrent, Earlier};
use engine::{Client, Limiter, Session, Status, TorrentConfig, TorrentHandle};
use metainfo::{beneath, Torrent};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::opts::DiscoveryArgs;
use crate::{CmdResult, Failure};
use engine::lifecycle::QueueMove;
use store::{Record, ResumeFile, Settings, Store, WriteGate};

/// At most this many labels per torrent, of at most this many bytes each, none with a comma
/// (Transmission's rule) nor empty.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_LEN: usize = 256;
/// At most this many trackers per torrent set through the API, URLs of at most this many bytes.
pub const MAX_TRACKERS: usize = 256;
pub const MAX_TRACKER_URL: usize = 2048;
/// The watch directory: how often it is read, and at most this many entries looked at per poll.
const WATCH_EVERY_SECS: u64 = 2;
const MAX_WATCH_ENTRIES: usize = 10_000;

/// Checks labels as Transmission does, dropping repeats.
pub fn check_labels(labels: Vec<String>) -> Result<Vec<String>, String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("labels: at most {MAX_LABELS}"));
    }
    let mut out: Vec<String> = Vec::new();
    for l in labels {
        let l = l.trim().to_string();
        if l.is_empty()
            || l.contains(',')
            || l.len() > MAX_LABEL_LEN
            || l.chars().any(char::is_control)
        {
            return Err(format!(
                "labels: {l:?} is not a label (non-empty, no comma, at most {MAX_LABEL_LEN} bytes)"
            ));
        }
        if !out.contains(&l) {
            out.push(l);
        }
    }
    Ok(out)
}

/// Checks an announce list: tiers of http(s) or udp URLs, within the caps.
pub fn check_trackers(tiers: &[Vec<String>]) -> Result<(), String> {
    if tiers.iter().map(Vec::len).sum::<usize>() > MAX_TRACKERS {
        return Err(format!("trackers: at most {MAX_TRACKERS}"));
    }
    for url in tiers.iter().flatten() {
        let lower = url.to_ascii_lowercase();
        let scheme_ok = ["http://", "https://", "udp://"]
            .iter()
            .any(|p| lower.starts_with(p));
        if !scheme_ok || url.len() > MAX_TRACKER_URL || url.chars().any(char::is_whitespace) {
            return Err(format!(
                "trackers: {url:?} is not an http(s):// or udp:// announce URL"
            ));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct DaemonArgs {
    /// Where torrents, settings, resume data and the API token are kept
    /// [default: $XDG_DATA_HOME/spore/daemon]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address to accept peers on, for every torrent [default: [::]:6881 (IPv4 and IPv6) where the
    /// system has IPv6, else 0.0.0.0:6881]
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Address of the JSON API and web page (a token is required on every API call)
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9091")]
    pub api: SocketAddr,
    /// Default download directory (saved in the settings)
    #[arg(long, value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// Another directory the API may put torrents' data in, besides the download directory; repeat
    /// for more (replaces the `allowed_dirs` setting, and is saved in it)
    #[arg(long = "allowed-dir", value_name = "DIR")]
    pub allowed_dirs: Vec<PathBuf>,
    /// A TOML file of settings (the keys of `GET /api/settings`) applied at start and saved
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// How long a magnet link's metadata is looked for before the torrent goes to state `error`.
const METADATA_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a torrent is in its life: the engine's life cycle, driven by the daemon's `engine::Client`.
pub type Phase = engine::lifecycle::Phase<Fault>;

/// Why a torrent is in state `error`: the engine's own error where it comes from the engine, so the
/// daemon can tell a disk that failed from a magnet link nobody answers; the daemon's own (a move of
/// the data, keeping the metadata) as `Fault::Owner`. Shown to users as text.
pub type Fault = engine::managed::Fault;

/// A torrent as the daemon keeps it: its record and files. Its life cycle (phase, queue slot, engine
/// torrent, seed goal) is the client's, asked by its id.
pub struct Entry {
    pub id: InfoHash,
    pub record: Record,
    pub torrent: Option<Arc<Torrent>>,
    last_saved_have: u32,
    /// Whether the start under way found resume data, and how many of its pieces it trusts as is.
    start_note: Option<(bool, Option<u32>)>,
    /// The record as last written, to skip writing it again unchanged.
    saved_record: Option<Record>,
    /// Every write of its state files goes through it. Taken before the entry's lock, never inside it.
    gate: Arc<WriteGate>,
    /// How far the move of its data is, while in `Moving`.
    moving: Option<Arc<relocate::Progress>>,
}

type Slot = Arc<Mutex<Entry>>;

impl Entry {
    /// The torrent as its files lie on disk (renames applied), once its metadata is known.
    fn disk_torrent(&self) -> Option<Arc<Torrent>> {
        self.torrent
            .as_ref()
            .map(|t| store::on_disk(t, &self.record.renames))
    }
}

pub struct Daemon {
    store: Store,
    pub token: String,
    /// The web page's one-time login links and sessions.
    sessions: api::Sessions,
    /// Where the API may have data written: `download_dir` and `allowed_dirs` as they were at start
    /// (the API can move `download_dir` within them, never widen them).
    roots: Vec<PathBuf>,
    pub settings: Mutex<Settings>,
    /// The torrents' life cycle (queue, checks and starts, seed goals, metadata fetches), with
    /// `Hooks` for what the daemon keeps of them.
    client: Client,
    /// Whether the peer port is being mapped on the router (shown by the RPC).
    port_mapping: bool,
    /// Transports for peer connections, from the settings at start.
    transports: engine::Transports,
    listen: SocketAddr,
    global_up: Arc<Limiter>,
    global_down: Arc<Limiter>,
    peer_budget: Arc<engine::PeerBudget>,
    /// The connection caps in force (the settings' fitted into the open-file limit).
    fitted: Mutex<conns::Fitted>,
    api_conns: Arc<conns::ApiConns>,
    entries: Mutex<BTreeMap<InfoHash, Slot>>,
    pub events: tokio::sync::broadcast::Sender<(String, String)>,
    /// Bytes downloaded and uploaded by torrents removed since the daemon started: /metrics counts
    /// them in its totals, which must never go down (Prometheus reads a drop as a counter reset).
    removed_totals: Mutex<(u64, u64)>,
    /// Whether the alternative speed schedule covered the last tick (`None` before the first): the
    /// limits switch only when it changes, so a user's switch in between holds until the next edge.
    alt_schedule_was: Mutex<Option<bool>>,
    /// Sizes of the watch directory's .torrent files at the last poll: one is added once its size
    /// held still between two polls (a file still being written is left for later).
    watch_seen: Mutex<std::collections::HashMap<PathBuf, u64>>,
}

/// What the daemon keeps of its torrents at the client's points of their life cycle: the metadata a
/// magnet link found, the record and resume data as one starts and stops, and its seed goal.
#[derive(Default)]
struct Hooks {
    /// Set once the daemon exists (it holds the client that holds these hooks).
    daemon: std::sync::OnceLock<std::sync::Weak<Daemon>>,
}

impl Hooks {
    fn daemon(&self) -> Option<Arc<Daemon>> {
        self.daemon.get().and_then(std::sync::Weak::upgrade)
    }
}

impl engine::managed::Owner for Hooks {
    fn metadata_found(&self, id: &InfoHash, torrent: &Arc<Torrent>) -> Result<(), String> {
        let daemon = self.daemon().ok_or("metadata: the daemon is stopping")?;
        let slot = daemon.slot(id).map_err(|_| "metadata: removed")?;
        let gate = slot.lock().gate.clone();
        // Removed while its metadata was on the way: leave nothing behind.
        gate.write(|| daemon.store.save_metainfo(id, &torrent.to_file_bytes()))
            .ok_or("metadata: removed")?
            .map_err(|e| format!("metadata: {e:#}"))?;
        let mut e = slot.lock();
        if e.torrent.is_none() {
            e.torrent = Some(torrent.clone());
        }
        Ok(())
    }

    fn started(&self, id: &InfoHash, _handle: &Arc<TorrentHandle>, took: Duration) {
        let Some(daemon) = self.daemon() else { return };
        let Ok(slot) = daemon.slot(id) else { return };
        {
            let mut e = slot.lock();
            let (resumed, trusted) = e.start_note.take().unwrap_or((false, None));
            tracing::info!(
                "{}: started in {} ms ({})",
                e.torrent.as_ref().map_or("", |t| t.name.as_str()),
                took.as_millis(),
                if resumed { "fast resume" } else { "full check" }
            );
            e.last_saved_have = trusted.unwrap_or(u32::MAX);
        }
        daemon.save(&slot, false);
    }

    fn stopping(&self, id: &InfoHash, handle: Option<&Arc<TorrentHandle>>, to: &Phase) {
        let Some(daemon) = self.daemon() else { return };
        let Ok(slot) = daemon.slot(id) else { return };
        match to {
            Phase::Finished => slot.lock().record.finished = true,
            // The engine stopped it (a disk error): its resume data is saved with every verified
            // piece, and it stays in state `error` until resumed.
            Phase::Error(fault @ Fault::Stopped(_)) => {
                let name = slot.lock().torrent.as_ref().map(|t| t.name.clone());
                tracing::error!("{}: {fault}", name.unwrap_or_default());
            }
            _ => {}
        }
        // A complete torrent's pieces and files no longer change: its saved resume data stands. The
        // record is written, for the seeding time just folded in.
        let complete = handle.is_some_and(|h| h.status().complete);
        daemon.save_with(&slot, handle, !complete, true);
    }

    fn goal(&self, id: &InfoHash) -> Option<engine::SeedGoal> {
        let daemon = self.daemon()?;
        let slot = daemon.slot(id).ok()?;
        let (ratio, time) = {
            let e = slot.lock();
            (e.record.seed_ratio, e.record.seed_time)
        };
        let s = daemon.settings.lock();
        Some(engine::SeedGoal {
            ratio: ratio.or(s.seed_ratio),
            time: time.or(s.seed_time).map(Duration::from_secs),
        })
    }
}

/// An API failure: the status it maps to and a one-line reason.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    NotFound,
    Conflict(String),
    /// Refused whoever asks: a directory outside the allowed ones, a setting the API may not change.
    Forbidden(String),
    TooLarge,
    Internal(String),
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::Internal(format!("{e:#}"))
    }
}

/// Where a torrent to add comes from.
pub enum Source {
    TorrentFile(Vec<u8>),
    Magnet(String),
    Url(String),
    Path(PathBuf),
}

pub fn run(args: DaemonArgs) -> CmdResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: DaemonArgs) -> CmdResult {
    // Every path setting is made absolute here, against the directory the daemon started in: the
    // API refuses relative directories, and later ones would depend on whoever asks.
    let absolute = |p: &Path| {
        std::path::absolute(p)
            .with_context(|| format!("bad path {}", p.display()))
            .map_err(Failure::BadInput)
    };
    let state_dir = absolute(
        &args
            .state_dir
            .clone()
            .unwrap_or_else(|| crate::opts::state_dir(None).join("daemon")),
    )?;
    let store = Store::open(&state_dir).map_err(Failure::Failed)?;
    let token = store.token().map_err(Failure::Failed)?;
    let mut settings = store.settings().map_err(Failure::BadInput)?;
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(Failure::BadInput)?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| Failure::BadInput(anyhow!("{}: {e}", path.display())))?;
        let mut merged = serde_json::to_value(&settings).context("settings")?;
        for (key, value) in table {
            let known = merged.as_object().is_some_and(|m| m.contains_key(&key));
            if !known {
                return Err(Failure::BadInput(anyhow!(
                    "{}: unknown setting {key:?}",
                    path.display()
                )));
            }
            merged[&key] = serde_json::to_value(value).context("settings")?;
        }
        settings = serde_json::from_value(merged)
            .map_err(|e| Failure::BadInput(anyhow!("{}: {e}", path.display())))?;
    }
    if let Some(dir) = &args.download_dir {
        settings.download_dir = dir.clone();
    }
    if !args.allowed_dirs.is_empty() {
        settings.allowed_dirs = args.allowed_dirs.clone();
    }
    let as_given = (
        settings.download_dir.clone(),
        settings.allowed_dirs.clone(),
        settings.watch_dir.clone(),
    );
    settings.download_dir = absolute(&settings.download_dir)?;
    settings.watch_dir = settings.watch_dir.as_deref().map(absolute).transpose()?;
    settings.allowed_dirs = settings
        .allowed_dirs
        .iter()
        .map(|d| absolute(d))
        .collect::<Result<_, _>>()?;
    let resolved = as_given
        != (
            settings.download_dir.clone(),
            settings.allowed_dirs.clone(),
            settings.watch_dir.clone(),
        );
    // Checked before anything is saved.
    check_alt_schedule(&settings).map_err(|e| Failure::BadInput(anyhow!(e)))?;
    if settings.rpc_username.is_some() != settings.rpc_password.is_some() {
        return Err(Failure::BadInput(anyhow!(
            "rpc_username and rpc_password go together: set both or neither"
        )));
    }
    if args.config.is_some()
        || args.download_dir.is_some()
        || !args.allowed_dirs.is_empty()
        || resolved
    {
        store.save_settings(&settings).map_err(Failure::Failed)?;
    }
    let roots = std::iter::once(settings.download_dir.clone())
        .chain(settings.allowed_dirs.iter().cloned())
        .collect();
    let fitted = conns::fit(&settings).map_err(|e| Failure::BadInput(anyhow!(e)))?;
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::new(crate::opts::any_ip(), 6881));
    let transports: engine::Transports = settings
        .transports
        .parse()
        .map_err(|e| Failure::BadInput(anyhow!("setting transports: {e}")))?;
    let session = Session::bind(listen, fitted.handshake, transports)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    session.set_encryption(settings.encryption.into());
    let listen = session.listen_addr();
    let port_mapping = crate::port_mapping::wanted(
        args.discovery.no_port_mapping || !settings.port_mapping,
        listen.ip(),
    );
    let mut discovery = args.discovery.settings();
    discovery.utp = transports.utp;
    let dht_port = port_mapping
        .then(|| discovery.settle_dht_port(listen))
        .flatten();
    let mapper = crate::port_mapping::start_quiet(port_mapping, listen, dht_port);
    let hooks = Arc::new(Hooks::default());
    let client = Client::start_owned(session, discovery, false, hooks.clone())
        .await
        .map_err(Failure::failed)?;
    client.set_queue(settings.max_active_downloads, settings.max_active_seeds);
    let api_listener = tokio::net::TcpListener::bind(args.api)
        .await
        .with_context(|| format!("cannot listen on {}", args.api))?;
    let api_addr = api_listener.local_addr().context("API address")?;

    let daemon = Arc::new(Daemon {
        store,
        token,
        sessions: api::Sessions::default(),
        roots,
        global_up: Arc::new(Limiter::new(settings.max_upload_rate.unwrap_or(0))),
        global_down: Arc::new(Limiter::new(settings.max_download_rate.unwrap_or(0))),
        peer_budget: Arc::new(engine::PeerBudget::new(fitted.peers_total)),
        fitted: Mutex::new(fitted),
        api_conns: conns::ApiConns::new(fitted.api),
        settings: {
            engine::set_upload_memory(
                usize::try_from(settings.upload_memory).unwrap_or(usize::MAX),
            );
            Mutex::new(settings)
        },
        client,
        port_mapping,
        transports,
        listen,
        entries: Mutex::new(BTreeMap::new()),
        events: tokio::sync::broadcast::channel(64).0,
        removed_totals: Mutex::new((0, 0)),
        alt_schedule_was: Mutex::new(None),
        watch_seen: Mutex::new(std::collections::HashMap::new()),
    });
    let _ = hooks.daemon.set(Arc::downgrade(&daemon));
    let started = Instant::now();
    for (id, record, torrent) in daemon.store.load_all() {
        daemon.insert(id, record, torrent.map(Arc::new));
    }
    daemon.renumber_queue();
    let failed_moves = {
        let d = daemon.clone();
        tokio::task::spawn_blocking(move || d.recover_moves())
            .await
            .context("recovering moves")?
    };
    // To the client in queue order, once no move is half done.
    for slot in daemon.slots() {
        let id = slot.lock().id;
        if let Err(fault) = daemon.manage(&slot) {
            daemon.client.fail(&id, fault).await;
        }
    }
    for (id, fault) in failed_moves {
        daemon.client.fail(&id, fault).await;
    }
    daemon.apply_rates(&daemon.settings.lock().clone());
    println!(
        "state in {}: {} torrents loaded in {} ms",
        state_dir.display(),
        daemon.entries.lock().len(),
        started.elapsed().as_millis()
    );
    println!("peers on {listen}");
    println!("api listening on http://{api_addr}");
    let once = daemon.sessions.new_link().context("random bytes")?;
    println!(
        "web page: open http://{}/login?once={once} (works once, within {} s; `spore web` prints a new link)",
        link_host(api_addr),
        api::LINK_TTL.as_secs()
    );

    let ticker = tokio::spawn(daemon.clone().tick_loop());
    let app = api::router(daemon.clone(), api_addr);
    // Through `tap_io` so the handlers' `ConnectInfo<SocketAddr>` works with our listener.
    let api_listener = axum::serve::ListenerExt::tap_io(
        conns::ApiListener::new(api_listener, daemon.api_conns.clone()),
        |_| {},
    );
    let server = axum::serve(
        api_listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal());
    server.await.context("API server")?;
    ticker.abort();
    eprintln!("stopping: saving resume data");
    daemon.shutdown().await;
    crate::port_mapping::stop(mapper).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The settings as the API shows them: without the RPC password.
pub fn settings_view(s: &Settings) -> Value {
    let mut v = json!(s);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("rpc_password");
    }
    v
}

/// Refuses a schedule Transmission could not express: minutes past the day, days past the week.
fn check_alt_schedule(s: &Settings) -> Result<(), String> {
    if s.alt_speed_time_begin >= 24 * 60 || s.alt_speed_time_end >= 24 * 60 {
        return Err("alt_speed_time_begin/end: minutes after midnight, below 1440".into());
    }
    if s.alt_speed_time_day > 0x7f {
        return Err("alt_speed_time_day: a bitmask of days, 1 Sunday ... 64 Saturday".into());
    }
    Ok(())
}

/// The regular files named `*.torrent` in the watch directory, with their sizes (links not followed).
fn watch_scan(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .take(MAX_WATCH_ENTRIES)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.to_ascii_lowercase().ends_with(".torrent"))
        })
        .filter_map(|e| {
            let meta = e.path().symlink_metadata().ok()?;
            meta.is_file().then(|| (e.path(), meta.len()))
        })
        .collect()
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// The address a browser on this machine reaches an API bound to `addr` at.
pub fn link_host(addr: SocketAddr) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Runs blocking file-system work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("file task: {e}")))
}

impl Daemon {
    /// Refuses a directory the API may not have data written to: a relative one, or one that lies,
    /// its symbolic links resolved, outside the download directory and the allowed directories.
    async fn check_dir(&self, dir: &Path) -> Result<(), ApiError> {
        if !dir.is_absolute() {
            return Err(bad("download_dir must be an absolute path"));
        }
        let (d, roots) = (dir.to_path_buf(), self.roots.clone());
        if blocking(move || paths::is_allowed(&d, &roots)).await? {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{} is outside the directories this daemon may write to (its download_dir and allowed_dirs settings)",
                dir.display()
            )))
        }
    }

    /// Adds an entry for a torrent whose record is already in the state directory (not yet managed:
    /// see `manage`).
    fn insert(&self, id: InfoHash, record: Record, torrent: Option<Arc<Torrent>>) -> Slot {
        let saved = record.clone();
        let slot = Arc::new(Mutex::new(Entry {
            id,
            record,
            torrent,
            last_saved_have: 0,
            start_note: None,
            saved_record: Some(saved),
            gate: Arc::new(WriteGate::default()),
            moving: None,
        }));
        self.entries.lock().insert(id, slot.clone());
        slot
    }

    /// Hands an entry to the client, last in its queue, as its record says (paused, finished, the
    /// totals of earlier runs). A saved magnet link that no longer parses: added paused by its id
    /// alone, and its fault returned for the caller to put it in `error`.
    fn manage(self: &Arc<Self>, slot: &Slot) -> Result<(), Fault> {
        let (id, record, torrent) = {
            let e = slot.lock();
            (e.id, e.record.clone(), e.torrent.clone())
        };
        let (source, fault) = match torrent {
            Some(t) => (engine::managed::Source::Torrent(t), None),
            None => {
                let link = record.magnet.clone().unwrap_or_default();
                match metainfo::Magnet::parse(&link) {
                    Ok(m) => (engine::managed::Source::Magnet(m), None),
                    Err(err) => {
                        let by_id = format!("magnet:?xt=urn:btih:{}", id.to_hex());
                        let m = metainfo::Magnet::parse(&by_id)
                            .map_err(|e| Fault::Owner(format!("metadata: {e}")))?;
                        let fault = Fault::Owner(format!("metadata: {err}"));
                        (engine::managed::Source::Magnet(m), Some(fault))
                    }
                }
            }
        };
        let mut add = AddTorrent::new(source, record.download_dir.clone());
        add.paused = record.paused || fault.is_some();
        add.max_peers = self.fitted.lock().peers_per_torrent;
        add.encryption = self.settings.lock().encryption.into();
        add.metadata_timeout = METADATA_TIMEOUT;
        add.earlier = Earlier {
            downloaded: record.downloaded,
            uploaded: record.uploaded,
            seeding_secs: record.seeding_secs,
            complete: record.complete,
            finished: record.finished,
        };
        let daemon = Arc::downgrade(self);
        add.configure = Some(Arc::new(move |torrent, config| {
            let daemon = daemon.upgrade().ok_or("the daemon is stopping")?;
            daemon.configure(&id, torrent, config)
        }));
        // Already managed (added twice at once): the first stands.
        let _ = self.client.add(add);
        fault.map_or(Ok(()), Err)
    }

    /// The daemon's part of a start's configuration: the record's directory, file selection and
    /// paths, trackers and rates, the session-wide limits, and the fast-resume data.
    fn configure(
        &self,
        id: &InfoHash,
        torrent: &Torrent,
        config: &mut TorrentConfig,
    ) -> Result<(), String> {
        let slot = self.slot(id).map_err(|_| "removed".to_string())?;
        let (record, kept) = {
            let e = slot.lock();
            (e.record.clone(), e.torrent.clone())
        };
        // The daemon's own copy (the same torrent), unless a metadata fetch just found it.
        let kept = kept.unwrap_or_else(|| Arc::new(torrent.clone()));
        let resume = self.resume_for(
            id,
            &store::on_disk(&kept, &record.renames),
            &record.download_dir,
        );
        let file_paths = (!record.renames.is_empty()).then(|| {
            let paths = torrent.files.iter();
            paths
                .map(|f| store::disk_path(&f.path, &record.renames))
                .collect()
        });
        let encryption = self.settings.lock().encryption.into();
        let max_peers = self.fitted.lock().peers_per_torrent;
        config
            .download_dir(record.download_dir.clone())
            .transport(encryption, self.transports)
            .files(record.files.clone(), record.priorities.clone())
            .trackers(record.trackers.clone())
            .file_paths(file_paths)
            .rates(record.max_upload_rate, record.max_download_rate)
            .shared_limits(
                self.global_up.clone(),
                self.global_down.clone(),
                self.peer_budget.clone(),
            )
            .max_peers(max_peers);
        // Resume data used as is needs no rewrite.
        let trusted = resume
            .as_ref()
            .filter(|r| !r.check_unlisted)
            .map(|r| r.have.count());
        slot.lock().start_note = Some((resume.is_some(), trusted));
        config.resume(resume);
        Ok(())
    }

    /// Its phase, from the client (a torrent the client no longer knows, being removed: paused).
    pub fn phase_of(&self, id: &InfoHash) -> Phase {
        self.client.snapshot(id).map_or(Phase::Paused, |s| s.phase)
    }

    /// Its engine torrent while it runs.
    pub fn handle(&self, id: &InfoHash) -> Option<Arc<TorrentHandle>> {
        self.client.handle(id)
    }

    /// Whole seconds it seeded, in all its sessions.
    pub fn seeding_secs(&self, e: &Entry) -> u64 {
        self.client
            .snapshot(&e.id)
            .map_or(e.record.seeding_secs, |s| s.seeding_secs)
    }

    pub fn slot(&self, id: &InfoHash) -> Result<Slot, ApiError> {
        self.entries
            .lock()
            .get(id)
            .cloned()
            .ok_or(ApiError::NotFound)
    }

    /// Every torrent, in queue order.
    fn slots(&self) -> Vec<Slot> {
        let slots: Vec<Slot> = self.entries.lock().values().cloned().collect();
        let mut keyed: Vec<((u64, u64), Slot)> = slots
            .into_iter()
            .map(|s| {
                let key = {
                    let e = s.lock();
                    (e.record.queue_position, e.record.added)
                };
                (key, s)
            })
            .collect();
        keyed.sort_by_key(|(k, _)| *k);
        keyed.into_iter().map(|(_, s)| s).collect()
    }

    /// Reorders the queue (`ids` moved as `how` says) and saves the positions that changed.
    pub fn queue_move(self: &Arc<Self>, ids: &[InfoHash], how: QueueMove) {
        self.client.queue_move(ids, how);
        self.renumber_queue();
    }

    /// Stores `slot`'s queue position, saving its record only when it changed.
    fn set_queue_position(&self, slot: &Slot, position: usize) {
        let changed = {
            let mut e = slot.lock();
            let changed = e.record.queue_position != position as u64;
            e.record.queue_position = position as u64;
            changed
        };
        if changed {
            self.save(slot, false);
        }
    }

    /// Makes the stored positions dense from 0 in their order (after a removal, or records of old):
    /// the client's, once it manages them.
    fn renumber_queue(&self) {
        let managed = self.client.order();
        let order = if managed.is_empty() {
            self.slots()
        } else {
            let entries = self.entries.lock();
            managed
                .iter()
                .filter_map(|id| entries.get(id).cloned())
                .collect()
        };
        for (position, slot) in order.iter().enumerate() {
            self.set_queue_position(slot, position);
        }
    }

    pub async fn add(
        self: &Arc<Self>,
        source: Source,
        download_dir: Option<PathBuf>,
        paused: bool,
        labels: Vec<String>,
    ) -> Result<Value, ApiError> {
        let labels = check_labels(labels).map_err(bad)?;
        let (id, torrent_file, magnet) = match source {
            Source::Magnet(link) => {
                let m = metainfo::Magnet::parse(&link).map_err(bad)?;
                let id = engine::discovery::magnet_wire_id(&m).map_err(bad)?;
                (id, None, Some(link))
            }
            Source::Url(url) => {
                let bytes = engine::tracker::http_get(&url, None, paths::MAX_TORRENT_FILE as usize)
                    .await
                    .map_err(|e| bad(format!("{url}: {e:#}")))?;
                let (bytes, torrent) = blocking(move || {
                    let t = Torrent::from_bytes(&bytes).map_err(|e| bad(format!("{url}: {e}")))?;
                    Ok::<_, ApiError>((bytes, t))
                })
                .await??;
                (engine::wire_id(&torrent), Some((bytes, torrent)), None)
            }
            Source::Path(path) => {
                // Off the runtime: a FIFO, a slow disk or a huge file must not hold a worker.
                let (bytes, torrent) =
                    blocking(move || paths::read_torrent_file(&path).map_err(bad)).await??;
                (engine::wire_id(&torrent), Some((bytes, torrent)), None)
            }
            Source::TorrentFile(bytes) => {
                let (bytes, torrent) = blocking(move || {
                    let t = Torrent::from_bytes(&bytes)
                        .map_err(|e| bad(format!("not a valid torrent: {e}")))?;
                    Ok::<_, ApiError>((bytes, t))
                })
                .await??;
                (engine::wire_id(&torrent), Some((bytes, torrent)), None)
            }
        };
        if self.entries.lock().contains_key(&id) {
            return Err(ApiError::Conflict(format!(
                "torrent {} is already added",
                id.to_hex()
            )));
        }
        let download_dir =
            download_dir.unwrap_or_else(|| self.settings.lock().download_dir.clone());
        self.check_dir(&download_dir).await?;
        let record = Record {
            magnet,
            download_dir,
            added: store::now_secs(),
            paused,
            finished: false,
            complete: false,
            files: None,
            priorities: None,
            seed_ratio: None,
            seed_time: None,
            max_upload_rate: None,
            max_download_rate: None,
            downloaded: 0,
            uploaded: 0,
            seeding_secs: 0,
            labels,
            // Last in the queue (positions are dense from 0).
            queue_position: self.entries.lock().len() as u64,
            done: None,
            trackers: None,
            moving_to: None,
            moved_from: None,
            renames: Default::default(),
        };
        let torrent = match torrent_file {
            Some((bytes, torrent)) => {
                self.store.save_metainfo(&id, &bytes)?;
                Some(Arc::new(torrent))
            }
            None => None,
        };
        self.store.save_record(&id, &record)?;
        let slot = self.insert(id, record, torrent);
        if let Err(fault) = self.manage(&slot) {
            self.client.fail(&id, fault).await;
        }
        let _ = self
            .events
            .send(("added".into(), json!({"id": id.to_hex()}).to_string()));
        let view = self.view(&slot, false);
        Ok(view)
    }

    /// Fast-resume data for a start: trusted as is when no file changed since it was saved, the
    /// unlisted pieces checked again when files were written after it, none when a file's size changed.
    fn resume_for(&self, id: &InfoHash, torrent: &Torrent, dir: &Path) -> Option<engine::Resume> {
        let saved = self.store.load_resume(id)?;
        let have_bytes = data_encoding::BASE64.decode(saved.have.as_bytes()).ok()?;
        let have = engine::Bitfield::from_bytes(&have_bytes, saved.pieces);
        if have.len() as u64 != torrent.piece_count() || saved.files.len() != torrent.files.len() {
            return None;
        }
        let now = store::file_stamps(torrent, dir);
        let mut changed = false;
        for (before, after) in saved.files.iter().zip(&now) {
            match (before, after) {
                (Some((size_a, mtime_a)), Some((size_b, mtime_b))) => {
                    if size_a != size_b {
                        return None;
                    }
                    // A write in the same clock tick as the save leaves the mtime unchanged, so a
                    // file touched shortly before the save counts as changed too.
                    if mtime_a != mtime_b || *mtime_b + 2_000_000_000 > saved.saved_at {
                        changed = true;
                    }
                }
                (None, None) => {}
                _ => return None,
            }
        }
        Some(engine::Resume {
            have,
            check_unlisted: changed,
        })
    }

    /// Saves the record and, when running, the fast-resume data (file stamps first, then the pieces, so
    /// a piece written in between shows up as a changed file). Unless `force`, writes only what changed.
    fn save(&self, slot: &Slot, force: bool) {
        let id = slot.lock().id;
        let handle = self.handle(&id);
        self.save_with(slot, handle.as_ref(), force, force);
    }

    /// The same for a torrent running as `handle` (also one the client is stopping), the resume data
    /// and the record each forced or not.
    fn save_with(
        &self,
        slot: &Slot,
        handle: Option<&Arc<TorrentHandle>>,
        force_resume: bool,
        force_record: bool,
    ) {
        let gate = slot.lock().gate.clone();
        // Under the gate from the snapshot to the write, so saves land in the order they were taken.
        gate.write(|| self.save_now(slot, handle, force_resume, force_record));
    }

    fn save_now(
        &self,
        slot: &Slot,
        handle: Option<&Arc<TorrentHandle>>,
        force_resume: bool,
        force: bool,
    ) {
        let (id, torrent, dir, last_have) = {
            let e = slot.lock();
            (
                e.id,
                e.disk_torrent(),
                e.record.download_dir.clone(),
                e.last_saved_have,
            )
        };
        let snapshot = self.client.snapshot(&id);
        let resume = match (&torrent, handle) {
            (Some(t), Some(h)) if force_resume || h.have().count() != last_have => {
                let files = store::file_stamps(t, &dir);
                let saved_at = store::now_nanos();
                let have = h.have();
                Some((
                    have.count(),
                    ResumeFile {
                        pieces: have.len(),
                        have: data_encoding::BASE64.encode(&have.to_bytes()),
                        files,
                        saved_at,
                    },
                ))
            }
            _ => None,
        };
        let record = {
            let mut e = slot.lock();
            if let Some(s) = &snapshot {
                e.record.downloaded = s.downloaded;
                e.record.uploaded = s.uploaded;
                e.record.seeding_secs = s.seeding_secs;
            }
            if let Some(h) = handle {
                let s = h.status();
                e.record.complete = s.complete;
                if s.complete && e.record.done.is_none() {
                    e.record.done = Some(store::now_secs());
                }
            }
            if let Some((count, _)) = &resume {
                e.last_saved_have = *count;
            }
            // The seeding clock alone is no reason to rewrite an idle seed's record every 30 s: it goes
            // with the next other change, and always when seeding stops.
            let unchanged = e.saved_record.as_ref().is_some_and(|saved| {
                let clock = e.record.seeding_secs;
                Record {
                    seeding_secs: clock,
                    ..saved.clone()
                } == e.record
            });
            if !force && unchanged {
                None
            } else {
                e.saved_record = Some(e.record.clone());
                e.saved_record.clone()
            }
        };
        if let Some((_, r)) = &resume {
            if let Err(err) = self.store.save_resume(&id, r) {
                tracing::error!("saving resume data: {err:#}");
            }
        }
        if let Some(record) = record {
            if let Err(err) = self.store.save_record(&id, &record) {
                tracing::error!("saving torrent record: {err:#}");
            }
        }
    }

    pub async fn pause(self: &Arc<Self>, id: &InfoHash) -> Result<Value, ApiError> {
        let slot = self.slot(id)?;
        self.not_moving(&slot)?;
        slot.lock().record.paused = true;
        // Its record and resume data are saved as it stops (`Hooks::stopping`).
        self.client.pause(id).await;
        Ok(self.view(&slot, false))
    }

    pub async fn resume(self: &Arc<Self>, id: &InfoHash) -> Result<Value, ApiError> {
        self.resume_with(id, false).await
    }

    /// Resumes; with `now`, past the queue's limits (Transmission's `torrent-start-now`).
    pub async fn resume_with(
        self: &Arc<Self>,
        id: &InfoHash,
        now: bool,
    ) -> Result<Value, ApiError> {
        let slot = self.slot(id)?;
        self.not_moving(&slot)?;
        {
            let mut e = slot.lock();
            e.record.paused = false;
            e.record.finished = false;
        }
        self.save(&slot, true);
        self.client.resume(id, now);
        Ok(self.view(&slot, false))
    }

    pub async fn remove(
        self: &Arc<Self>,
        id: &InfoHash,
        delete_data: bool,
    ) -> Result<Value, ApiError> {
        let slot = self.slot(id)?;
        self.not_moving(&slot)?;
        let gate = slot.lock().gate.clone();
        // Closed first: saving what is about to be deleted is wasted, and a save still running (the
        // tick's, or the stop's) must be over before the files go, or it would write them back.
        gate.close();
        if let Some(last) = self.client.remove(id).await {
            // Its final totals, for the view below (nothing saves them any more).
            let mut e = slot.lock();
            e.record.downloaded = last.downloaded;
            e.record.uploaded = last.uploaded;
        }
        self.store.remove(id);
        if delete_data {
            let (torrent, dir) = {
                let e = slot.lock();
                (e.disk_torrent(), e.record.download_dir.clone())
            };
            if let Some(t) = torrent {
                blocking(move || delete_files(&t, &dir)).await?;
            }
        }
        let last = self.view(&slot, false);
        {
            // Unlisted last, so the torrent cannot be added again while its old files are still going;
            // its bytes move to the removed totals under the same lock `totals` takes, so /metrics never
            // counts them twice or not at all.
            let mut entries = self.entries.lock();
            entries.remove(id);
            let mut totals = self.removed_totals.lock();
            totals.0 += last["downloaded"].as_u64().unwrap_or(0);
            totals.1 += last["uploaded"].as_u64().unwrap_or(0);
        }
        let _ = self
            .events
            .send(("removed".into(), json!({"id": id.to_hex()}).to_string()));
        self.renumber_queue();
        Ok(json!({"removed": id.to_hex()}))
    }

    /// Applies a `PUT /api/torrents/{id}`: all of it or, when a field is invalid or the data cannot be
    /// moved, none of it. A new file selection or directory restarts the torrent; priorities do not.
    pub async fn update(
        self: &Arc<Self>,
        id: &InfoHash,
        change: &Value,
    ) -> Result<Value, ApiError> {
        let slot = self.slot(id)?;
        self.not_moving(&slot)?;
        let obj = change
            .as_object()
            .ok_or_else(|| bad("expected a JSON object"))?;
        let change = {
            let e = slot.lock();
            Change::parse(obj, e.torrent.as_ref().map(|t| t.files.len()))?
        };
        if let Some(to) = &change.download_dir {
            self.check_dir(to).await?;
        }
        // Priorities apply to a running torrent as they are; a selection or a directory restarts it.
        let restart = change.files.is_some() || change.download_dir.is_some();
        let mut old_phase = None;
        if restart {
            old_phase = self.client.hold(id).await;
        }
        if let Some(to) = &change.download_dir {
            if let Err(reply) = self.relocate(&slot, to).await {
                // Where it was before the stop, queued again when it was active.
                self.save(&slot, true);
                if let Some(p) = old_phase {
                    self.client.release(id, p, false);
                }
                return Err(reply);
            }
        }
        let queue = change.queue;
        let handle = self.handle(id);
        change.apply(&mut slot.lock(), handle.as_deref());
        self.save(&slot, true);
        if let Some(p) = old_phase {
            self.client.release(id, p, true);
        }
        if let Some(how) = queue {
            self.queue_move(&[*id], how);
        }
        Ok(self.view(&slot, false))
    }

    /// Renames a file or folder of the torrent on disk (`torrent-rename-path`): `path` is where it is
    /// now ('/'-separated, from the torrent's top), `name` its new last component. The torrent keeps its
    /// own paths; the record notes the rename, which the storage applies. A running torrent is stopped
    /// for it and started again from its resume data. Returns the path and the new name.
    pub async fn rename_path(
        self: &Arc<Self>,
        id: &InfoHash,
        path: &str,
        name: &str,
    ) -> Result<(String, String), ApiError> {
        let slot = self.slot(id)?;
        self.not_moving(&slot)?;
        metainfo::validate_component(name).map_err(|e| bad(format!("bad name: {e}")))?;
        let wanted: Vec<&str> = path.split('/').collect();
        if wanted.iter().any(|c| c.is_empty()) {
            return Err(bad("bad path: empty component"));
        }
        let (torrent, record) = {
            let e = slot.lock();
            let t = e
                .torrent
                .clone()
                .ok_or_else(|| ApiError::Conflict("its metadata has not arrived yet".into()))?;
            (t, e.record.clone())
        };
        let k = wanted.len();
        let disk: Vec<Vec<String>> = torrent
            .files
            .iter()
            .filter(|f| !f.attr.pad)
            .map(|f| store::disk_path(&f.path, &record.renames))
            .collect();
        let metas: Vec<&metainfo::FileEntry> =
            torrent.files.iter().filter(|f| !f.attr.pad).collect();
        let found = disk
            .iter()
            .position(|d| d.len() >= k && d[..k].iter().zip(&wanted).all(|(a, b)| a == b))
            .ok_or_else(|| bad(format!("no file or folder {path} in the torrent")))?;
        let key = metas[found].path[..k].join("/");
        if wanted[k - 1] == name {
            return Ok((path.to_string(), name.to_string()));
        }
        let mut target: Vec<String> = wanted.iter().map(|c| c.to_string()).collect();
        target[k - 1] = name.to_string();
        if disk.iter().any(|d| d.len() >= k && d[..k] == target[..]) {
            return Err(ApiError::Conflict(format!(
                "{} is a path of the torrent already",
                target.join("/")
            )));
        }
        let was = self.phase_of(id);
        let restart = matches!(was, Phase::Running | Phase::Checking | Phase::Queued);
        let held = if restart {
            self.client.hold(id).await
        } else {
            None
        };
        let dir = record.download_dir.clone();
        let from: Vec<String> = wanted.iter().map(|c| c.to_string()).collect();
        let renamed = blocking(move || relocate::rename_in_place(&dir, &from, &target)).await?;
        let result = match renamed {
            Ok(()) => {
                let mut e = slot.lock();
                e.record.renames.insert(key, name.to_string());
                Ok((path.to_string(), name.to_string()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Err(ApiError::Conflict(
                format!("cannot rename {path} to {name}: that name exists already"),
            )),
            Err(err) => Err(ApiError::Internal(format!(
                "cannot rename {path} to {name}: {err}"
            ))),
        };
        self.save(&slot, true);
        if let Some(was) = held {
            self.client.release(id, was, false);
        }
        result
    }

    /// Refuses to act on a torrent whose data is being moved.
    fn not_moving(&self, slot: &Slot) -> Result<(), ApiError> {
        let id = slot.lock().id;
        if self.phase_of(&id) == Phase::Moving {
            return Err(ApiError::Conflict(
                "its data is being moved; try again when that is done".into(),
            ));
        }
        Ok(())
    }

    /// Moves a stopped torrent's data to `to` (see `relocate`), recording the move in progress so a
    /// crash at any moment leaves one whole copy that the record names. On success the record names
    /// `to`; on failure it names the old place, where the data is whole unless the undo failed too
    /// (then the torrent is left paused in `error`).
    async fn relocate(&self, slot: &Slot, to: &Path) -> Result<(), ApiError> {
        let (id, torrent, from) = {
            let e = slot.lock();
            (e.id, e.disk_torrent(), e.record.download_dir.clone())
        };
        let Some(t) = torrent.filter(|_| from != to) else {
            return Ok(());
        };
        let to = to.to_path_buf();
        let (t2, to2) = (t.clone(), to.clone());
        if let Some(path) = blocking(move || relocate::occupied(&t2, &to2)).await? {
            return Err(ApiError::Conflict(format!(
                "cannot move the data to {}: {path} already exists; it stays in {}, nothing was changed",
                to.display(),
                from.display()
            )));
        }
        let progress = Arc::new(relocate::Progress::default());
        {
            let mut e = slot.lock();
            e.record.moving_to = Some(to.clone());
            e.moving = Some(progress.clone());
        }
        self.client.moving(&id, true);
        // The journal is on disk before the first file moves.
        self.save(slot, true);
        let (t2, from2, to2) = (t.clone(), from.clone(), to.clone());
        let moved = blocking(move || relocate::move_files(&t2, &from2, &to2, &progress)).await?;
        match moved {
            Ok(done) => {
                let copied = done.iter().any(|(_, h)| *h == relocate::How::Copied);
                {
                    let mut e = slot.lock();
                    e.record.download_dir = to.clone();
                    e.record.moving_to = None;
                    e.record.moved_from = copied.then(|| from.clone());
                    e.moving = None;
                }
                self.client.moving(&id, false);
                // Committed: from here the new place is the one.
                self.save(slot, true);
                let (t2, from2, to2) = (t.clone(), from.clone(), to.clone());
                blocking(move || {
                    if copied {
                        relocate::delete_originals(&t2, &from2, &to2);
                    } else {
                        remove_empty_dirs(&t2, &from2);
                    }
                })
                .await?;
                if copied {
                    slot.lock().record.moved_from = None;
                    self.save(slot, true);
                }
                Ok(())
            }
            Err(failure) => {
                {
                    let mut e = slot.lock();
                    e.record.moving_to = None;
                    e.moving = None;
                }
                if failure.rolled_back {
                    self.client.moving(&id, false);
                    Err(ApiError::Internal(format!(
                        "cannot move the data to {}: {:#}; it stays in {}, nothing was changed",
                        to.display(),
                        failure.error,
                        from.display()
                    )))
                } else {
                    // Split between two places: kept paused (and saved so) until someone puts the
                    // files back together, rather than downloading the missing ones.
                    let message = format!(
                        "moving the data to {} failed: {:#}; some files are there, the rest in {}",
                        to.display(),
                        failure.error,
                        from.display()
                    );
                    slot.lock().record.paused = true;
                    self.client.fail(&id, Fault::Owner(message.clone())).await;
                    Err(ApiError::Internal(message))
                }
            }
        }
    }

    /// Finishes or undoes the moves a previous run was killed in the middle of: a move not yet
    /// recorded as done is undone (the old place keeps the data), and the old copies of one that was
    /// are deleted. Returns the faults of the torrents whose move could not be undone, for the client.
    fn recover_moves(&self) -> Vec<(InfoHash, Fault)> {
        let mut failed = Vec::new();
        for slot in self.slots() {
            let (t, record) = {
                let e = slot.lock();
                (e.disk_torrent(), e.record.clone())
            };
            let Some(t) = t else { continue };
            if let Some(to) = &record.moving_to {
                let whole = relocate::undo(&t, &record.download_dir, to);
                tracing::warn!(
                    "{}: the move of its data to {} was interrupted{}",
                    t.name,
                    to.display(),
                    if whole {
                        format!("; undone, the data is in {}", record.download_dir.display())
                    } else {
                        "; undoing it failed, see the errors above".into()
                    }
                );
                let mut e = slot.lock();
                e.record.moving_to = None;
                if !whole {
                    e.record.paused = true;
                    failed.push((
                        e.id,
                        Fault::Owner(format!(
                            "an interrupted move to {} could not be undone",
                            to.display()
                        )),
                    ));
                }
            }
            if let Some(from) = &record.moved_from {
                relocate::delete_originals(&t, from, &record.download_dir);
                tracing::info!(
                    "{}: removed the old copies in {} of a finished move",
                    t.name,
                    from.display()
                );
                slot.lock().record.moved_from = None;
            }
            if record.moving_to.is_some() || record.moved_from.is_some() {
                self.save(&slot, true);
            }
        }
        failed
    }

    pub async fn update_settings(self: &Arc<Self>, change: &Value) -> Result<Value, ApiError> {
        let old = self.settings.lock().clone();
        let mut current = serde_json::to_value(&old).map_err(bad)?;
        let (Some(cur), Some(obj)) = (current.as_object_mut(), change.as_object()) else {
            return Err(bad("expected a JSON object"));
        };
        for (k, v) in obj {
            if !cur.contains_key(k) {
                return Err(bad(format!("unknown setting {k:?}")));
            }
            cur.insert(k.clone(), v.clone());
        }
        let settings: Settings =
            serde_json::from_value(current).map_err(|e| bad(format!("settings: {e}")))?;
        // The API works inside the allowed directories; widening them is for who starts the daemon.
        if settings.allowed_dirs != old.allowed_dirs {
            return Err(ApiError::Forbidden(
                "allowed_dirs can only be set in the config file, on the command line or in settings.json".into(),
            ));
        }
        // Credentials are for who starts the daemon too: the API's token holder has the token already.
        if obj.contains_key("rpc_password")
            || settings.rpc_username != old.rpc_username
            || settings.rpc_password != old.rpc_password
        {
            return Err(ApiError::Forbidden(
                "rpc_username and rpc_password can only be set in the config file or settings.json"
                    .into(),
            ));
        }
        if settings.download_dir != old.download_dir {
            self.check_dir(&settings.download_dir).await?;
        }
        if settings
            .watch_dir
            .as_ref()
            .is_some_and(|d| !d.is_absolute())
        {
            return Err(bad("watch_dir must be an absolute path"));
        }
        check_alt_schedule(&settings).map_err(bad)?;
        // Read at the next start: refused now rather than then.
        if let Err(e) = settings.transports.parse::<engine::Transports>() {
            return Err(bad(format!("transports: {e}")));
        }
        let fitted = conns::fit(&settings).map_err(bad)?;
        self.apply_rates(&settings);
        self.peer_budget.set_max(fitted.peers_total);
        let session = self.client.session();
        session.set_handshake_limits(fitted.handshake);
        session.set_encryption(settings.encryption.into());
        self.api_conns.set_limits(fitted.api);
        *self.fitted.lock() = fitted;
        engine::set_upload_memory(usize::try_from(settings.upload_memory).unwrap_or(usize::MAX));
        self.store.save_settings(&settings)?;
        *self.settings.lock() = settings.clone();
        self.client
            .set_queue(settings.max_active_downloads, settings.max_active_seeds);
        Ok(settings_view(&settings))
    }

    /// Sets the session-wide rate limits: the alternative ones while they are on.
    fn apply_rates(&self, s: &Settings) {
        if s.alt_speed_enabled {
            // 0 stops the traffic, as in Transmission (the limiter reads 0 as no limit).
            self.global_up.set_rate(Some(s.alt_speed_up.max(1)));
            self.global_down.set_rate(Some(s.alt_speed_down.max(1)));
        } else {
            self.global_up.set_rate(s.max_upload_rate);
            self.global_down.set_rate(s.max_download_rate);
        }
    }

    /// Switches the alternative speed limits when the schedule (if enabled) begins or ends at `now`.
    fn alt_speed_tick(&self, now: Option<sched::WeekTime>) {
        let mut settings = self.settings.lock();
        let covered = match (settings.alt_speed_time_enabled, now) {
            (true, Some(at)) => Some(sched::in_alt_schedule(&settings, at)),
            _ => None,
        };
        let mut was = self.alt_schedule_was.lock();
        if let Some(on) = sched::alt_switch(*was, covered, settings.alt_speed_enabled) {
            settings.alt_speed_enabled = on;
            tracing::info!(
                "alternative speed limits {} by the schedule",
                if on { "on" } else { "off" }
            );
            if let Err(e) = self.store.save_settings(&settings) {
                tracing::error!("saving settings: {e:#}");
            }
        }
        *was = covered;
        let s = settings.clone();
        drop((was, settings));
        self.apply_rates(&s);
    }

    /// Adds the .torrent files dropped into the watch directory, each renamed `.torrent.added` after
    /// (or `.torrent.invalid`, logged, when it is not a torrent). The directory and the files are read
    /// off the runtime's workers.
    async fn watch_tick(self: &Arc<Self>) {
        let (dir, start) = {
            let s = self.settings.lock();
            (s.watch_dir.clone(), s.start_added_torrents)
        };
        let Some(dir) = dir else { return };
        let seen = std::mem::take(&mut *self.watch_seen.lock());
        let listed = blocking(move || watch_scan(&dir)).await;
        let Ok(found) = listed else { return };
        let mut now_seen = std::collections::HashMap::new();
        for (path, size) in found {
            if seen.get(&path) != Some(&size) {
                // New or still growing: looked at again at the next poll.
                now_seen.insert(path, size);
                continue;
            }
            let p = path.clone();
            let read = blocking(move || paths::read_torrent_file(&p)).await;
            let verdict = match read {
                Ok(Ok((bytes, _))) => {
                    match self
                        .add(Source::TorrentFile(bytes), None, !start, Vec::new())
                        .await
                    {
                        Ok(_) | Err(ApiError::Conflict(_)) => Ok(()),
                        Err(ApiError::BadRequest(m)) => Err(m),
                        // Not the file's fault (the state directory, say): tried again later.
                        Err(e) => {
                            tracing::warn!("watch directory: {}: {e:?}", path.display());
                            continue;
                        }
                    }
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => continue,
            };
            let suffix = if verdict.is_ok() { "added" } else { "invalid" };
            if let Err(why) = &verdict {
                tracing::warn!(
                    "watch directory: {} is not a valid torrent: {why}",
                    path.display()
                );
            }
            let mut to = path.clone().into_os_string();
            to.push(".");
            to.push(suffix);
            if let Err(e) = std::fs::rename(&path, &to) {
                tracing::error!("watch directory: cannot rename {}: {e}", path.display());
                // Kept out of the next polls' way until it changes.
                now_seen.insert(path, u64::MAX);
            }
        }
        *self.watch_seen.lock() = now_seen;
    }

    /// Every second: the alternative speed schedule, the watch directory, resume data for torrents
    /// that verified pieces, and the torrents' list to whoever follows the events. (Their life cycle,
    /// seed goals included, is the client's.)
    async fn tick_loop(self: Arc<Self>) {
        let mut ticks = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            ticks += 1;
            self.alt_speed_tick(sched::local_week_time());
            if ticks.is_multiple_of(WATCH_EVERY_SECS) {
                self.watch_tick().await;
            }
            for slot in self.slots() {
                let (id, last_have) = {
                    let e = slot.lock();
                    (e.id, e.last_saved_have)
                };
                let Some(h) = self.handle(&id) else { continue };
                // Pieces verified since the last save, or totals every 30 s.
                if h.status().pieces_have != last_have || ticks.is_multiple_of(30) {
                    let daemon = self.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        daemon.save_with(&slot, Some(&h), false, false)
                    })
                    .await;
                }
            }
            if self.events.receiver_count() > 0 {
                let _ = self
                    .events
                    .send(("torrents".into(), self.list().to_string()));
            }
        }
    }

    /// Stops every torrent (announcing `stopped`) and saves its state, for a clean exit.
    async fn shutdown(&self) {
        self.client.shutdown().await;
    }

    /// Every torrent's view and the bytes (downloaded, uploaded) of those removed, taken together.
    pub fn totals(&self) -> (Vec<Value>, (u64, u64)) {
        let (slots, removed) = {
            let entries = self.entries.lock();
            let removed = *self.removed_totals.lock();
            (entries.values().cloned().collect::<Vec<_>>(), removed)
        };
        (slots.iter().map(|s| self.view(s, false)).collect(), removed)
    }

    pub fn list(&self) -> Value {
        let torrents: Vec<Value> = self.slots().iter().map(|s| self.view(s, false)).collect();
        json!({ "torrents": torrents })
    }

    /// The JSON view of a torrent (docs/api.md), with files, peers and trackers when `detail`.
    pub fn view(&self, slot: &Slot, detail: bool) -> Value {
        let mut e = slot.lock();
        let snapshot = self.client.snapshot(&e.id);
        let handle = self.client.handle(&e.id);
        let phase = snapshot.as_ref().map_or(Phase::Paused, |s| s.phase.clone());
        let status: Option<Status> = handle.as_ref().map(|h| h.status());
        // Noted at once, not only at the next tick (which saves it).
        if status.as_ref().is_some_and(|s| s.complete) && e.record.done.is_none() {
            e.record.done = Some(store::now_secs());
        }
        let e = e;
        let on_disk = e.disk_torrent();
        let torrent = on_disk.as_deref();
        let total_size = torrent.map_or(0, |t| t.total_size());
        let selected = |i: usize| {
            e.record
                .files
                .as_ref()
                .is_none_or(|f| f.get(i).copied().unwrap_or(true))
        };
        let size = torrent.map_or(0, |t| {
            t.files
                .iter()
                .enumerate()
                .filter(|(i, f)| !f.attr.pad && selected(*i))
                .map(|(_, f)| f.length)
                .sum()
        });
        let (progress, pieces_have) = match &status {
            Some(s) => (progress_of(s), s.pieces_have),
            None if e.record.complete => (1.0, torrent.map_or(0, |t| t.piece_count() as u32)),
            // Where the engine stopped it, while in error.
            None if matches!(phase, Phase::Error(_)) => snapshot
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .map_or((0.0, 0), |s| (progress_of(s), s.pieces_have)),
            None => (0.0, 0),
        };
        let (downloaded, uploaded) = snapshot
            .as_ref()
            .map_or((e.record.downloaded, e.record.uploaded), |s| {
                (s.downloaded, s.uploaded)
            });
        let (down_rate, up_rate) = status
            .as_ref()
            .map_or((0.0, 0.0), |s| (s.download_rate, s.upload_rate));
        let state = match &phase {
            Phase::Running if status.as_ref().is_some_and(|s| s.complete) => "seeding",
            Phase::Running => "downloading",
            Phase::FetchingMetadata => "fetching_metadata",
            Phase::Queued => "queued",
            Phase::Checking => "checking",
            Phase::Paused => "paused",
            Phase::Finished => "finished",
            Phase::Moving => "moving",
            Phase::Error(_) => "error",
        };
        let left = status.as_ref().map_or(0, |s| s.left);
        let eta =
            (state == "downloading" && down_rate > 1.0).then(|| (left as f64 / down_rate) as u64);
        let name = torrent.map(|t| t.name.clone()).unwrap_or_else(|| {
            e.record
                .magnet
                .as_deref()
                .and_then(|m| metainfo::Magnet::parse(m).ok())
                .and_then(|m| m.name)
                .unwrap_or_else(|| e.id.to_hex())
        });
        let magnet = match torrent {
            Some(t) => metainfo::Magnet::from_torrent(t).to_string(),
            None => e.record.magnet.clone().unwrap_or_default(),
        };
        let mut v = json!({
            "id": e.id.to_hex(),
            "name": name,
            "state": state,
            "error": match &phase { Phase::Error(m) => Some(m.to_string()), _ => None },
            "progress": progress,
            "size": size,
            "total_size": total_size,
            "downloaded": downloaded,
            "uploaded": uploaded,
            "download_rate": down_rate,
            "upload_rate": up_rate,
            "ratio": if size > 0 { uploaded as f64 / size as f64 } else { 0.0 },
            "peers": status.as_ref().map_or(0, |s| s.peers),
            "eta": eta,
            "pieces": torrent.map_or(0, |t| t.piece_count()),
            "pieces_have": pieces_have,
            "download_dir": e.record.download_dir,
            "added": e.record.added,
            "private": torrent.is_some_and(|t| t.private),
            "magnet": magnet,
            "labels": e.record.labels,
            "move_progress": e.moving.as_ref().map(|p| p.fraction()),
            "queue_position": e.record.queue_position,
            "done": e.record.done,
        });
        if detail {
            let have = handle.as_ref().map(|h| h.have());
            let files: Vec<Value> = torrent.map_or_else(Vec::new, |t| {
                t.files
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| !f.attr.pad)
                    .map(|(i, f)| {
                        json!({
                            "index": i,
                            "path": f.path.join("/"),
                            "size": f.length,
                            "selected": selected(i),
                            "priority": priority_name(
                                e.record
                                    .priorities
                                    .as_ref()
                                    .and_then(|p| p.get(i).copied())
                                    .unwrap_or(engine::PRIORITY_NORMAL),
                            ),
                            "progress": file_progress(t, f, have.as_ref(), e.record.complete && selected(i)),
                        })
                    })
                    .collect()
            });
            let peers: Vec<Value> = handle.as_ref().map_or_else(Vec::new, |h| {
                h.peer_list()
                    .into_iter()
                    .map(|p| {
                        json!({
                            "addr": p.addr.to_string(),
                            "downloaded": p.downloaded,
                            "uploaded": p.uploaded,
                            "download_rate": p.rate_down,
                            "upload_rate": p.rate_up,
                            "client": p.client,
                            "incoming": p.incoming,
                            "utp": p.utp,
                            "uploading_to": p.uploading_to,
                            "encrypted": p.encrypted,
                        })
                    })
                    .collect()
            });
            let announced = handle
                .as_ref()
                .map(|h| h.tracker_stats())
                .unwrap_or_default();
            let announced = &announced;
            let trackers: Vec<Value> = e
                .record
                .trackers
                .as_ref()
                .or(torrent.map(|t| &t.trackers))
                .map_or_else(Vec::new, |tiers| {
                    tiers
                        .iter()
                        .enumerate()
                        .flat_map(|(tier, urls)| {
                            urls.iter().map(move |u| {
                                let mut entry = json!({"tier": tier, "url": u});
                                if let (Some(obj), Some(s)) =
                                    (entry.as_object_mut(), announced.get(u))
                                {
                                    obj.extend(tracker_stats_json(s));
                                }
                                entry
                            })
                        })
                        .collect()
                });
            if let Some(obj) = v.as_object_mut() {
                obj.insert("files".into(), json!(files));
                obj.insert(
                    "file_count".into(),
                    json!(torrent.map_or(0, |t| t.files.len())),
                );
                obj.insert("peers".into(), json!(peers));
                obj.insert("trackers".into(), json!(trackers));
                obj.insert("seed_ratio".into(), json!(e.record.seed_ratio));
                obj.insert("seed_time".into(), json!(e.record.seed_time));
                obj.insert("max_upload_rate".into(), json!(e.record.max_upload_rate));
                obj.insert(
                    "max_download_rate".into(),
                    json!(e.record.max_download_rate),
                );
            }
        }
        v
    }
}

/// The fields of a `PUT /api/torrents/{id}`, each checked; `Some` for those given.
#[derive(Default)]
struct Change {
    files: Option<Vec<bool>>,
    priorities: Option<Vec<u8>>,
    seed_ratio: Option<Option<f64>>,
    seed_time: Option<Option<u64>>,
    max_upload_rate: Option<Option<u64>>,
    max_download_rate: Option<Option<u64>>,
    download_dir: Option<PathBuf>,
    labels: Option<Vec<String>>,
    queue: Option<QueueMove>,
    trackers: Option<Vec<Vec<String>>>,
}

impl Change {
    /// Checks every field (`file_count`: the torrent's, once its metadata is known).
    fn parse(
        obj: &serde_json::Map<String, Value>,
        file_count: Option<usize>,
    ) -> Result<Change, ApiError> {
        let mut c = Change::default();
        for (key, value) in obj {
            match key.as_str() {
                "files" => {
                    let files: Vec<bool> = serde_json::from_value(value.clone())
                        .map_err(|_| bad("files: expected a list of booleans"))?;
                    if let Some(n) = file_count.filter(|n| *n != files.len()) {
                        return Err(bad(format!(
                            "files: the torrent has {n} files, got {}",
                            files.len()
                        )));
                    }
                    c.files = Some(files);
                }
                "priorities" => {
                    let names: Vec<String> =
                        serde_json::from_value(value.clone()).map_err(|_| {
                            bad("priorities: expected a list of \"low\", \"normal\", \"high\" or \"skip\"")
                        })?;
                    // "skip": not wanted, the same as false in `files`.
                    let skipped: Vec<bool> = names.iter().map(|n| n == "skip").collect();
                    let levels = names
                        .iter()
                        .map(|n| match n.as_str() {
                            "skip" => Ok(engine::PRIORITY_NORMAL),
                            n => priority_level(n),
                        })
                        .collect::<Result<Vec<u8>, ApiError>>()?;
                    if skipped.contains(&true) {
                        if obj.contains_key("files") {
                            return Err(bad(
                                "priorities: \"skip\" and files together: give the selection once",
                            ));
                        }
                        c.files = Some(skipped.iter().map(|s| !s).collect());
                    }
                    let n = file_count.unwrap_or(levels.len());
                    if levels.len() != n {
                        return Err(bad(format!(
                            "priorities: the torrent has {n} files, got {}",
                            levels.len()
                        )));
                    }
                    c.priorities = Some(levels);
                }
                "seed_ratio" => c.seed_ratio = Some(opt_f64(value, key)?),
                "seed_time" => c.seed_time = Some(opt_u64(value, key)?),
                "max_upload_rate" => c.max_upload_rate = Some(opt_u64(value, key)?),
                "max_download_rate" => c.max_download_rate = Some(opt_u64(value, key)?),
                "download_dir" => {
                    let dir = PathBuf::from(
                        value
                            .as_str()
                            .ok_or_else(|| bad("download_dir: expected a string"))?,
                    );
                    if !dir.is_absolute() {
                        return Err(bad("download_dir must be an absolute path"));
                    }
                    c.download_dir = Some(dir);
                }
                "labels" => {
                    let labels: Vec<String> = serde_json::from_value(value.clone())
                        .map_err(|_| bad("labels: expected a list of strings"))?;
                    c.labels = Some(check_labels(labels).map_err(bad)?);
                }
                "queue_position" => {
                    c.queue = Some(match value {
                        Value::String(name) => QueueMove::parse(name).ok_or_else(|| {
                            bad("queue_position: a number, \"top\", \"up\", \"down\" or \"bottom\"")
                        })?,
                        v => QueueMove::To(
                            v.as_u64()
                                .and_then(|n| usize::try_from(n).ok())
                                .ok_or_else(|| bad("queue_position: a number, \"top\", \"up\", \"down\" or \"bottom\""))?,
                        ),
                    });
                }
                "trackers" => {
                    let tiers: Vec<Vec<String>> =
                        serde_json::from_value(value.clone()).map_err(|_| {
                            bad("trackers: expected a list of tiers, each a list of URLs")
                        })?;
                    check_trackers(&tiers).map_err(bad)?;
                    c.trackers = Some(tiers.into_iter().filter(|t| !t.is_empty()).collect());
                }
                other => return Err(bad(format!("unknown field {other:?}"))),
            }
        }
        Ok(c)
    }

    /// Sets what was given, the data already moved to `download_dir`.
    fn apply(self, e: &mut Entry, handle: Option<&TorrentHandle>) {
        if let Some(files) = self.files {
            e.record.files = Some(files);
            e.record.complete = false;
        }
        if let Some(levels) = self.priorities {
            if let Some(h) = handle {
                h.set_file_priorities(&levels);
            }
            e.record.priorities = Some(levels);
        }
        if let Some(ratio) = self.seed_ratio {
            e.record.seed_ratio = ratio;
        }
        if let Some(time) = self.seed_time {
            e.record.seed_time = time;
        }
        if let Some(rate) = self.max_upload_rate {
            e.record.max_upload_rate = rate;
            if let Some(h) = handle {
                h.set_upload_rate(rate);
            }
        }
        if let Some(rate) = self.max_download_rate {
            e.record.max_download_rate = rate;
            if let Some(h) = handle {
                h.set_download_rate(rate);
            }
        }
        if let Some(dir) = self.download_dir {
            e.record.download_dir = dir;
        }
        if let Some(labels) = self.labels {
            e.record.labels = labels;
        }
        if let Some(tiers) = self.trackers {
            if let Some(h) = handle {
                h.set_trackers(&tiers);
            }
            e.record.trackers = Some(tiers);
        }
    }
}

fn priority_level(name: &str) -> Result<u8, ApiError> {
    match name {
        "low" => Ok(engine::PRIORITY_LOW),
        "normal" => Ok(engine::PRIORITY_NORMAL),
        "high" => Ok(engine::PRIORITY_HIGH),
        other => Err(bad(format!(
            "priorities: {other:?} is not low, normal, high or skip"
        ))),
    }
}

fn priority_name(level: u8) -> &'static str {
    match level {
        l if l <= engine::PRIORITY_LOW => "low",
        l if l >= engine::PRIORITY_HIGH => "high",
        _ => "normal",
    }
}

fn opt_u64(v: &Value, key: &str) -> Result<Option<u64>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    v.as_u64()
        .map(Some)
        .ok_or_else(|| bad(format!("{key}: expected a non-negative integer or null")))
}

fn opt_f64(v: &Value, key: &str) -> Result<Option<f64>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    v.as_f64()
        .filter(|x| *x >= 0.0)
        .map(Some)
        .ok_or_else(|| bad(format!("{key}: expected a non-negative number or null")))
}

/// Fraction of the wanted bytes verified.
fn progress_of(s: &Status) -> f64 {
    if s.wanted == 0 {
        1.0
    } else {
        1.0 - s.left as f64 / s.wanted as f64
    }
}

/// Fraction of a file's pieces that are verified.
fn file_progress(
    t: &Torrent,
    f: &metainfo::FileEntry,
    have: Option<&engine::Bitfield>,
    complete: bool,
) -> f64 {
    if f.length == 0 || complete {
        return if complete || f.length == 0 { 1.0 } else { 0.0 };
    }
    let Some(have) = have else { return 0.0 };
    let first = f.offset / t.piece_length;
    let last = (f.offset + f.length - 1) / t.piece_length;
    let got = (first..=last).filter(|p| have.get(*p as u32)).count();
    got as f64 / (last - first + 1) as f64
}

/// A tracker's last announce for the JSON API: times in seconds since the epoch, `last_result` "ok"
/// or the error, counts from the last successful reply.
fn tracker_stats_json(s: &engine::TrackerStats) -> serde_json::Map<String, Value> {
    let secs = |t: Option<std::time::SystemTime>| {
        t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    let mut m = serde_json::Map::new();
    m.insert("last_announce".into(), json!(secs(s.last_announce)));
    m.insert(
        "last_result".into(),
        json!(s.result.as_ref().map(|r| match r {
            Ok(()) => "ok".to_string(),
            Err(e) => e.clone(),
        })),
    );
    m.insert(
        "announce_ok".into(),
        json!(s.result.as_ref().map(|r| r.is_ok())),
    );
    m.insert("last_peers".into(), json!(s.peers));
    m.insert("seeders".into(), json!(s.seeders));
    m.insert("leechers".into(), json!(s.leechers));
    m.insert("next_announce".into(), json!(secs(s.next_announce)));
    m.insert("announcing".into(), json!(s.announcing));
    m
}

/// Deletes the torrent's own files, then the directories they leave empty (never anything else). No
/// link below `dir` is followed: one where a file or directory of the torrent should be is removed
/// itself, and nothing behind it is touched.
fn delete_files(t: &Torrent, dir: &Path) {
    for f in t.files.iter().filter(|f| !f.attr.pad) {
        let _ = beneath::remove_file(dir, &f.path);
    }
    for p in torrent_dirs(t) {
        // A link in a directory's place goes (a real directory refuses the unlink); a directory goes
        // only if empty.
        let _ = beneath::remove_file(dir, &p).or_else(|_| beneath::remove_dir(dir, &p));
    }
}

/// The directories the torrent's file paths name (relative to the download directory), deepest first.
fn torrent_dirs(t: &Torrent) -> Vec<Vec<String>> {
    let mut dirs: Vec<Vec<String>> = t
        .files
        .iter()
        .filter(|f| !f.attr.pad)
        .flat_map(|f| (1..f.path.len()).map(|k| f.path[..k].to_vec()))
        .collect();
    dirs.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    dirs.dedup();
    dirs
}

/// Removes the directories below `dir` that the torrent's file paths name, where they are empty.
fn remove_empty_dirs(t: &Torrent, dir: &Path) {
    for p in torrent_dirs(t) {
        // Fails, as it should, on a directory that holds anything else (and on a link).
        let _ = beneath::remove_dir(dir, &p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed faults read as the daemon's error strings always have: the API and RPC text is stable.
    #[test]
    fn faults_read_as_before() {
        let timeout = engine::MagnetError::Metadata(engine::MetadataError::Timeout { secs: 120 });
        let fault = Fault::Metadata(Arc::new(timeout));
        assert_eq!(
            fault.to_string(),
            "metadata: no peer provided the torrent's metadata within 120 s"
        );
        let start = Fault::Start(Arc::new(engine::StartError::TooManyPieces));
        assert_eq!(start.to_string(), "too many pieces");
        assert_eq!(
            Phase::Error(start.clone()),
            Phase::Error(Fault::Owner("too many pieces".into()))
        );
        assert_ne!(Phase::Error(start), Phase::Error(fault));
    }
}
