//! `spore get` and `spore seed`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use engine::lifecycle::Phase;
use engine::managed::{AddTorrent, Fault, Snapshot, Source};
use engine::{Client, InfoHash, Status};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use metainfo::Torrent;

use crate::format::size;
use crate::opts::DiscoveryArgs;
use crate::{CmdResult, Failure};

/// Connection caps shared by `get`, `seed` and `share` (docs/limits.md). Whatever is asked for is
/// fitted into the open-file limit (less a reserve for files) before the torrent starts.
#[derive(Args, Clone)]
pub struct ConnArgs {
    /// Connections to peers, established or being dialled
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_peers: usize,
    /// Incoming connections that have not sent their handshake yet, at once
    #[arg(long, value_name = "N", default_value_t = engine::HandshakeLimits::default().total)]
    pub max_handshakes: usize,
    /// Of those, from one IP address
    #[arg(long, value_name = "N", default_value_t = engine::HandshakeLimits::default().per_ip)]
    pub max_handshakes_per_ip: usize,
    /// An incoming connection that has not sent its handshake by then is closed, e.g. 5s
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub handshake_timeout: String,
    /// Message Stream Encryption: prefer (dial encrypted, fall back to plaintext; accept both),
    /// require (encrypted only), off (plaintext only)
    #[arg(long, value_name = "MODE", default_value = "prefer")]
    pub encryption: engine::Encryption,
    /// Transports for peer connections: utp,tcp dials uTP first and falls back to TCP
    #[arg(long, value_name = "LIST", default_value = "utp,tcp")]
    pub transports: engine::Transports,
}

impl ConnArgs {
    /// The peer cap and the handshake limits, lowered to fit the process's descriptors.
    pub(crate) fn fitted(&self) -> Result<(usize, engine::HandshakeLimits), Failure> {
        self.fitted_with(None)
    }

    /// The same, `other` (a name and a cap on other connections of the process) fitted alongside.
    pub(crate) fn fitted_with(
        &self,
        other: Option<(&str, &mut usize)>,
    ) -> Result<(usize, engine::HandshakeLimits), Failure> {
        let timeout = parse_duration(&self.handshake_timeout)?;
        if timeout.is_zero() {
            return Err(bad(anyhow!("--handshake-timeout must be at least 1s")));
        }
        let mut peers = self.max_peers;
        let mut handshakes = self.max_handshakes;
        let mut caps = vec![
            ("--max-peers", &mut peers),
            ("--max-handshakes", &mut handshakes),
        ];
        caps.extend(other);
        engine::FdBudget::current().fit(&mut caps);
        let handshake = engine::HandshakeLimits {
            total: handshakes,
            per_ip: self.max_handshakes_per_ip.min(handshakes),
            timeout,
        };
        Ok((peers, handshake))
    }
}

#[derive(Args)]
pub struct GetArgs {
    /// A .torrent file, an http:// URL of one, or a magnet link
    pub torrent: String,
    /// Download directory
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Address to accept peers on [default: [::]:6881 (IPv4 and IPv6) where the system has IPv6, else 0.0.0.0:6881; a free port if that is taken; port 0 picks one]
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Only these files (numbers as `spore info` shows them), e.g. 0,3-5
    #[arg(long, value_name = "LIST")]
    pub files: Option<String>,
    /// Download pieces in order (for streaming)
    #[arg(long)]
    pub sequential: bool,
    /// Exit when the download completes instead of seeding
    #[arg(long)]
    pub no_seed: bool,
    /// Stop seeding once uploaded / size reaches this ratio
    #[arg(long, value_name = "RATIO")]
    pub seed_ratio: Option<f64>,
    /// Stop seeding after this long, e.g. 90s, 30m, 2h
    #[arg(long, value_name = "DURATION")]
    pub seed_time: Option<String>,
    /// Run this shell command when the download completes (SPORE_TORRENT_NAME, SPORE_TORRENT_DIR,
    /// SPORE_INFO_HASH are set)
    #[arg(long, value_name = "CMD")]
    pub on_complete: Option<String>,
    /// Connect to this peer directly; repeatable
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Do not contact the torrent's trackers
    #[arg(long)]
    pub no_trackers: bool,
    /// Upload rate limit, bytes per second (K, M suffixes), e.g. 2M
    #[arg(long, value_name = "RATE")]
    pub max_up: Option<String>,
    /// Download rate limit, bytes per second (K, M suffixes)
    #[arg(long, value_name = "RATE")]
    pub max_down: Option<String>,
    /// Memory for serving uploads: cached pieces and blocks on their way out (K, M suffixes)
    /// [default: 64M]
    #[arg(long, value_name = "SIZE")]
    pub upload_memory: Option<String>,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    #[command(flatten)]
    pub conns: ConnArgs,
}

#[derive(Args)]
pub struct SeedArgs {
    /// A .torrent file
    pub torrent: String,
    /// Directory holding the torrent's content (or the content itself)
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Address to accept peers on [default: [::]:6881 where the system has IPv6, else 0.0.0.0:6881]
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Connect to this peer directly; repeatable
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Do not contact the torrent's trackers
    #[arg(long)]
    pub no_trackers: bool,
    /// Upload rate limit, bytes per second (K, M suffixes)
    #[arg(long, value_name = "RATE")]
    pub max_up: Option<String>,
    /// Memory for serving uploads: cached pieces and blocks on their way out (K, M suffixes)
    /// [default: 64M]
    #[arg(long, value_name = "SIZE")]
    pub upload_memory: Option<String>,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    #[command(flatten)]
    pub conns: ConnArgs,
}

/// Applies `--upload-memory` to the process-wide upload memory budget.
fn set_upload_memory(arg: Option<&str>) -> Result<(), Failure> {
    if let Some(text) = arg {
        let bytes = crate::format::parse_piece_length(text)
            .ok()
            .flatten()
            .filter(|&b| b > 0)
            .ok_or_else(|| bad(anyhow!("{text:?} is not a size in bytes (e.g. 64M)")))?;
        engine::set_upload_memory(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    Ok(())
}

fn bad(e: impl Into<anyhow::Error>) -> Failure {
    Failure::BadInput(e.into())
}

fn load_torrent(source: &str) -> Result<Arc<Torrent>, Failure> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let bytes = runtime()?
            .block_on(engine::tracker::http_get(source, None, 128 << 20))
            .map_err(|e| Failure::Failed(anyhow!("{source}: {e:#}")))?;
        return Torrent::from_bytes(&bytes)
            .map(Arc::new)
            .map_err(|e| bad(anyhow!("{source}: {e}")));
    }
    crate::info_cmd::load(std::path::Path::new(source)).map(Arc::new)
}

/// Parses "0,3-5" into a selection over the torrent's real (non-pad) files.
fn parse_files(list: &str, torrent: &Torrent) -> Result<Vec<bool>, Failure> {
    let real: Vec<usize> = torrent
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.attr.pad)
        .map(|(i, _)| i)
        .collect();
    let mut selected = vec![false; torrent.files.len()];
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
            None => (part.parse(), part.parse()),
        };
        let (Ok(lo), Ok(hi)) = (lo, hi) else {
            return Err(bad(anyhow!(
                "--files: {part:?} is not a file number or range"
            )));
        };
        if lo > hi || hi >= real.len() {
            return Err(bad(anyhow!(
                "--files: {part} is out of range (the torrent has files 0-{})",
                real.len() - 1
            )));
        }
        for &i in &real[lo..=hi] {
            selected[i] = true;
        }
    }
    Ok(selected)
}

pub fn parse_rate(text: &str) -> Result<u64, Failure> {
    crate::format::parse_piece_length(text)
        .ok()
        .flatten()
        .filter(|&r| r > 0)
        .ok_or_else(|| {
            bad(anyhow!(
                "{text:?} is not a rate in bytes per second (e.g. 500K, 2M)"
            ))
        })
}

pub fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| bad(anyhow!("{text:?} is not a duration (e.g. 90s, 30m, 2h)")))?;
    let unit_secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(bad(anyhow!(
                "{text:?} is not a duration (e.g. 90s, 30m, 2h)"
            )))
        }
    };
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| bad(anyhow!("{text:?} is too long a duration")))?;
    Ok(Duration::from_secs(secs))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .map_err(Failure::Failed)
}

/// `[::]:6881` where the system has IPv6, else 0.0.0.0:6881; any free port when 6881 is taken.
fn default_listen() -> SocketAddr {
    crate::opts::default_listen(6881)
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn status_line(name: &str, s: &Status, started: Instant) -> String {
    let done = s.wanted - s.left;
    let percent = if s.wanted == 0 {
        100.0
    } else {
        done as f64 * 100.0 / s.wanted as f64
    };
    let eta = if s.complete {
        "seeding".to_string()
    } else if s.download_rate > 1.0 {
        format!("ETA {}s", (s.left as f64 / s.download_rate) as u64)
    } else {
        "ETA -".to_string()
    };
    format!(
        "{name}: {percent:5.1}% of {}  down {}/s  up {}/s  peers {}  {eta}  ({}s)",
        size(s.wanted),
        size(s.download_rate as u64),
        size(s.upload_rate as u64),
        s.peers,
        started.elapsed().as_secs()
    )
}

/// SIGINT and SIGTERM handlers, installed when created (so a signal that comes early is not lost).
pub(crate) struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    pub(crate) fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals(
            signal(SignalKind::terminate())
                .ok()
                .zip(signal(SignalKind::interrupt()).ok()),
        )
    }

    pub(crate) async fn recv(&mut self) {
        match &mut self.0 {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// One torrent behind a session of its own on `listen`, with the discovery given: what `get`,
/// `seed` and `share` run, the engine driving its life cycle as it drives the daemon's torrents.
pub(crate) async fn one_torrent(
    listen: SocketAddr,
    conns: &ConnArgs,
    handshake: engine::HandshakeLimits,
    discovery: engine::Discovery,
    add: AddTorrent,
) -> Result<(Client, InfoHash), Failure> {
    let session = engine::Session::bind(listen, handshake, conns.transports)
        .await
        .map_err(|e| Failure::Failed(anyhow!("cannot listen on {listen}: {e}")))?;
    session.set_encryption(conns.encryption);
    // A magnet link's private flag is unknown until the metadata arrives; the engine keeps a private
    // torrent off the DHT once it is known.
    let private = matches!(&add.source, Source::Torrent(t) if t.private);
    let client = Client::start(session, discovery, private)
        .await
        .map_err(Failure::failed)?;
    let id = client.add(add).map_err(bad)?;
    Ok((client, id))
}

/// Shows progress until the torrent's snapshot satisfies `until` (that snapshot) or a signal arrives
/// (`None`).
pub(crate) async fn follow(
    client: &Client,
    id: &InfoHash,
    signals: &mut Signals,
    until: impl Fn(&Snapshot) -> bool,
) -> Option<Snapshot> {
    let bar = progress_bar();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut changes = client.subscribe();
    let signal = signals.recv();
    tokio::pin!(signal);
    let finished = loop {
        let snap = client.snapshot(id)?;
        if until(&snap) {
            break Some(snap);
        }
        if let (Phase::Running, Some(status), Some(name)) = (&snap.phase, &snap.status, &snap.name)
        {
            bar.set_message(status_line(name, status, started));
        }
        tokio::select! {
            _ = &mut signal => break None,
            _ = tick.tick() => {}
            _ = client.changed(&mut changes) => {}
        }
    };
    bar.finish_and_clear();
    finished
}

/// A torrent that left the running phase: why, as the command's failure. `Stopped` (a disk error)
/// says what is kept; a magnet link nobody answered may be fine, its other faults are the link's.
fn fault(snap: &Snapshot) -> Failure {
    let Phase::Error(f) = &snap.phase else {
        return Failure::Failed(anyhow!("stopped"));
    };
    match f {
        Fault::Metadata(e) if matches!(**e, engine::MagnetError::Metadata(_)) => {
            Failure::Failed(anyhow!("{e}"))
        }
        Fault::Metadata(e) => bad(anyhow!("{e}")),
        Fault::Owner(e) => bad(anyhow!("{e}")),
        Fault::Start(e) => Failure::Failed(anyhow!("{e}")),
        Fault::Stopped(e) => {
            let have = snap.status.as_ref().map_or(0, |s| s.pieces_have);
            Failure::Failed(anyhow!(
                "{e}; the {have} verified pieces are kept: run the same command again to resume"
            ))
        }
    }
}

/// Waits until the torrent runs (its metadata fetched, its data checked): the moment it started, or
/// why it could not (`None` on a signal).
pub(crate) async fn until_running(
    client: &Client,
    id: &InfoHash,
    signals: &mut Signals,
) -> Result<Option<Instant>, Failure> {
    let snap = follow(client, id, signals, |s| {
        !matches!(
            s.phase,
            Phase::FetchingMetadata | Phase::Queued | Phase::Checking
        )
    })
    .await;
    match snap {
        None => Ok(None),
        // Finished already: a complete torrent whose seed goal was met at once.
        Some(s) if matches!(s.phase, Phase::Running | Phase::Finished) => Ok(Some(Instant::now())),
        Some(s) => Err(fault(&s)),
    }
}

pub fn get(args: GetArgs) -> CmdResult {
    // Usage errors before any network work: a magnet link's metadata can take minutes to arrive.
    let seed_time = args.seed_time.as_deref().map(parse_duration).transpose()?;
    let max_up = args.max_up.as_deref().map(parse_rate).transpose()?;
    let max_down = args.max_down.as_deref().map(parse_rate).transpose()?;
    let (max_peers, handshake) = args.conns.fitted()?;
    set_upload_memory(args.upload_memory.as_deref())?;
    let listen = match args.listen {
        Some(a) if a.port() != 0 => a,
        // Pick the port now: a magnet download announces it before the torrent starts listening.
        other => {
            let want = other.unwrap_or_else(default_listen);
            std::net::TcpListener::bind(want)
                .and_then(|l| l.local_addr())
                .map_err(|e| Failure::Failed(anyhow!("cannot listen on {want}: {e}")))?
        }
    };
    let rt = runtime()?;
    let mut discovery = args.discovery.settings();
    discovery.utp = args.conns.transports.utp;
    let mapper = {
        let _rt = rt.enter();
        let wanted = crate::port_mapping::wanted(args.discovery.no_port_mapping, listen.ip());
        let dht_port = wanted.then(|| discovery.settle_dht_port(listen)).flatten();
        crate::port_mapping::start_quiet(wanted, listen, dht_port)
    };
    let result = download(
        args, discovery, listen, &rt, max_peers, handshake, seed_time, max_up, max_down,
    );
    rt.block_on(crate::port_mapping::stop(mapper));
    result
}

#[allow(clippy::too_many_arguments)]
fn download(
    args: GetArgs,
    discovery: engine::Discovery,
    listen: SocketAddr,
    rt: &tokio::runtime::Runtime,
    max_peers: usize,
    handshake: engine::HandshakeLimits,
    seed_time: Option<Duration>,
    max_up: Option<u64>,
    max_down: Option<u64>,
) -> CmdResult {
    let source = if args.torrent.starts_with("magnet:") {
        let magnet = metainfo::Magnet::parse(&args.torrent).map_err(bad)?;
        let id = engine::discovery::magnet_wire_id(&magnet).map_err(bad)?;
        eprintln!("fetching metadata for {} from peers...", id.to_hex());
        Source::Magnet(magnet)
    } else {
        let torrent = load_torrent(&args.torrent)?;
        // A bad selection is a usage error before any network work.
        if let Some(files) = &args.files {
            parse_files(files, &torrent)?;
        }
        Source::Torrent(torrent)
    };
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))
        .map_err(Failure::Failed)?;
    let mut add = AddTorrent::new(source, args.output.clone());
    add.peers = args.peers.clone();
    add.max_peers = max_peers;
    add.encryption = args.conns.encryption;
    // With --no-seed the command ends at completion, before any goal counts.
    add.goal = engine::SeedGoal {
        ratio: args.seed_ratio,
        time: seed_time,
    };
    let (files, sequential, use_trackers) =
        (args.files.clone(), args.sequential, !args.no_trackers);
    add.configure = Some(Arc::new(move |torrent, config| {
        let selected = files
            .as_deref()
            .map(|f| parse_files(f, torrent))
            .transpose()
            .map_err(|e| match e {
                Failure::BadInput(e) | Failure::Failed(e) => format!("{e:#}"),
            })?;
        config
            .files(selected, None)
            .sequential(sequential)
            .use_trackers(use_trackers)
            .rates(max_up, max_down);
        Ok(())
    }));
    rt.block_on(async move {
        let mut signals = Signals::new();
        let (client, id) = one_torrent(listen, &args.conns, handshake, discovery, add).await?;
        let interrupted = || Failure::Failed(anyhow!("interrupted before the download completed"));
        let Some(started) = until_running(&client, &id, &mut signals).await? else {
            client.remove(&id).await;
            return Err(interrupted());
        };
        println!("listening on {}", client.session().listen_addr());
        let done = |s: &Snapshot| {
            s.phase != Phase::Running || s.status.as_ref().is_some_and(|st| st.complete)
        };
        let snap = match follow(&client, &id, &mut signals, done).await {
            None => {
                client.remove(&id).await;
                return Err(interrupted());
            }
            Some(s) => s,
        };
        let name = snap.name.clone().unwrap_or_default();
        let status = match (&snap.phase, snap.status.clone()) {
            (Phase::Running | Phase::Finished, Some(status)) => status,
            _ => {
                client.remove(&id).await;
                return Err(fault(&snap));
            }
        };
        println!(
            "complete: {} ({} in {:.1} s)",
            name,
            size(status.wanted),
            started.elapsed().as_secs_f64()
        );
        if let Some(cmd) = &args.on_complete {
            run_on_complete(cmd, &name, &args.output, &id);
        }
        let mut ended = None;
        if !args.no_seed {
            println!("seeding; Ctrl-C to stop");
            ended = follow(&client, &id, &mut signals, |s| s.phase != Phase::Running).await;
        }
        let last = client.remove(&id).await;
        if let Some(s) = ended.filter(|s| matches!(s.phase, Phase::Error(_))) {
            return Err(fault(&s));
        }
        if let Some(s) = last.as_ref().and_then(|s| s.status.as_ref()) {
            print_stopped(s);
        }
        Ok(())
    })
}

fn run_on_complete(cmd: &str, name: &str, dir: &std::path::Path, id: &InfoHash) {
    let result = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("SPORE_TORRENT_NAME", name)
        .env("SPORE_TORRENT_DIR", dir)
        .env("SPORE_INFO_HASH", id.to_hex())
        .spawn();
    match result {
        // Reap it in the background so seeding is not held up.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => eprintln!("spore: cannot run --on-complete command: {e}"),
    }
}

/// The directory that holds the torrent's content, given either that directory or the content itself.
fn content_parent(torrent: &Torrent, data: &std::path::Path) -> Result<PathBuf, Failure> {
    let named = data.file_name().is_some_and(|n| n == torrent.name.as_str());
    let parent = || {
        data.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    };
    if torrent.multi_file {
        if data.join(&torrent.name).is_dir() {
            Ok(data.to_path_buf())
        } else if data.is_dir() && named {
            Ok(parent())
        } else {
            Err(bad(anyhow!(
                "no directory {} in {}",
                torrent.name,
                data.display()
            )))
        }
    } else if data.is_file() {
        if named {
            Ok(parent())
        } else {
            Err(bad(anyhow!(
                "{} is not named {} as in the torrent; pass the directory holding it",
                data.display(),
                torrent.name
            )))
        }
    } else if data.join(&torrent.name).is_file() {
        Ok(data.to_path_buf())
    } else {
        Err(bad(anyhow!(
            "no file {} in {}",
            torrent.name,
            data.display()
        )))
    }
}

pub fn seed(args: SeedArgs) -> CmdResult {
    let torrent = load_torrent(&args.torrent)?;
    let max_up = args.max_up.as_deref().map(parse_rate).transpose()?;
    let (max_peers, handshake) = args.conns.fitted()?;
    set_upload_memory(args.upload_memory.as_deref())?;
    if !args.data.exists() {
        return Err(bad(anyhow!("{} does not exist", args.data.display())));
    }
    let download_dir = content_parent(&torrent, &args.data)?;
    let listen = args.listen.unwrap_or_else(default_listen);
    let mut add = AddTorrent::new(Source::Torrent(torrent.clone()), download_dir);
    add.peers = args.peers.clone();
    add.max_peers = max_peers;
    add.encryption = args.conns.encryption;
    let use_trackers = !args.no_trackers;
    add.configure = Some(Arc::new(move |_, config| {
        config.use_trackers(use_trackers).rates(max_up, None);
        Ok(())
    }));
    let rt = runtime()?;
    let mut discovery = args.discovery.settings();
    discovery.utp = args.conns.transports.utp;
    let mapper = {
        let _rt = rt.enter();
        let wanted = crate::port_mapping::wanted(args.discovery.no_port_mapping, listen.ip());
        let dht_port = wanted.then(|| discovery.settle_dht_port(listen)).flatten();
        crate::port_mapping::start_quiet(wanted, listen, dht_port)
    };
    let result = rt.block_on(async move {
        let mut signals = Signals::new();
        let (client, id) = one_torrent(listen, &args.conns, handshake, discovery, add).await?;
        if until_running(&client, &id, &mut signals).await?.is_none() {
            client.remove(&id).await;
            return Ok(());
        }
        seeding(&client, &id, &mut signals, || {
            println!("listening on {}", client.session().listen_addr());
            println!(
                "seeding {} ({}); Ctrl-C to stop",
                torrent.name,
                size(torrent.total_size())
            );
        })
        .await
    });
    rt.block_on(crate::port_mapping::stop(mapper));
    result
}

/// Seeds a torrent that runs, once it is found complete (after `announce`), until a signal: `seed`'s
/// and `share`'s last part.
pub(crate) async fn seeding(
    client: &Client,
    id: &InfoHash,
    signals: &mut Signals,
    announce: impl FnOnce(),
) -> CmdResult {
    let status = client.snapshot(id).and_then(|s| s.status);
    if let Some(s) = status.filter(|s| !s.complete) {
        client.remove(id).await;
        let bad_pieces = s.pieces_total - s.pieces_have;
        return Err(Failure::Failed(anyhow!(
            "the data does not match the torrent: {bad_pieces} of {} pieces missing or bad (spore verify lists them)",
            s.pieces_total
        )));
    }
    announce();
    let snap = follow(client, id, signals, |s| s.phase != Phase::Running).await;
    let last = client.remove(id).await;
    if let Some(s) = snap.filter(|s| matches!(s.phase, Phase::Error(_))) {
        return Err(fault(&s));
    }
    if let Some(s) = last.as_ref().and_then(|s| s.status.as_ref()) {
        print_stopped(s);
    }
    Ok(())
}

/// The last line of `get` and `seed`: what moved, and how much the torrent told PEX, the DHT and LSD
/// (all 0 for a private torrent).
fn print_stopped(s: &Status) {
    println!(
        "stopped: downloaded {}, uploaded {}, {} peer-exchange messages sent, {} DHT announces, {} LSD announces",
        size(s.downloaded),
        size(s.uploaded),
        s.pex_sent,
        s.dht_announces,
        s.lsd_announces
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_usage_error(r: Result<Duration, Failure>) -> bool {
        matches!(r, Err(Failure::BadInput(_)))
    }

    #[test]
    fn durations_in_every_unit_and_overflow_is_a_usage_error() {
        let secs = |t: &str| parse_duration(t).ok().map(|d| d.as_secs());
        assert_eq!(secs("90"), Some(90));
        assert_eq!(secs("90s"), Some(90));
        assert_eq!(secs("30m"), Some(1800));
        assert_eq!(secs("2h"), Some(7200));
        assert_eq!(secs("3d"), Some(259_200));
        assert_eq!(
            secs(&format!("{}d", u64::MAX / 86_400)),
            Some(u64::MAX / 86_400 * 86_400)
        );
        for t in [
            format!("{}d", u64::MAX / 86_400 + 1),
            format!("{}h", u64::MAX / 3600 + 1),
            format!("{}m", u64::MAX / 60 + 1),
            "99999999999999999999s".to_string(),
            "10y".to_string(),
            "".to_string(),
        ] {
            assert!(is_usage_error(parse_duration(&t)), "{t:?}");
        }
    }
}
