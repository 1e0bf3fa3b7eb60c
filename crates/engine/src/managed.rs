//! Torrents driven through their life cycle behind one [`Session`]: a magnet link's metadata fetch,
//! the queue, checking and starting, pausing and resuming, the seed goal, and the error phase, with
//! discovery (trackers, DHT, LSD, PEX) set up once for all of them. The rules are the pure ones of
//! [`crate::lifecycle`]; this is the thin async driver that carries out what they ask. Owners see
//! snapshots and give commands by info-hash; they never hold a torrent's internals.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ids::InfoHash;
use metainfo::{Magnet, Torrent};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::dht::DhtNode;
use crate::discovery::{
    magnet_finish, magnet_request, magnet_wire_id, Carry, Discovery, MagnetTorrent,
};
use crate::error::{DiscoveryError, MagnetError, StartError};
use crate::lifecycle::{reorder, Lifecycle, Observed, Phase, Queue, QueueMove, Step};
use crate::metadata::fetch_metadata_with;
use crate::seed_goal::SeedGoal;
use crate::session::Session;
use crate::torrent::{Status, TorrentConfig, TorrentError, TorrentHandle};

/// How often running torrents are reviewed (errors, seed goals) and the queue looked at, besides
/// whenever a command or a finished start asks for it.
const PASS_EVERY: Duration = Duration::from_secs(1);

/// Why a managed torrent is in state `error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    /// A magnet link's metadata could not be had.
    #[error("metadata: {0}")]
    Metadata(Arc<MagnetError>),
    /// The owner refused or failed it: its configuration (e.g. a file selection beyond its files),
    /// keeping the metadata found, or the owner's own work on it (moving its data).
    #[error("{0}")]
    Owner(String),
    /// The engine could not start it (its files, the check, the listener).
    #[error("{0}")]
    Start(Arc<StartError>),
    /// The engine stopped it by itself (a write failed).
    #[error("{0}")]
    Stopped(TorrentError),
}

/// Errors hold no comparable state; two faults that read alike are the same to a user.
impl PartialEq for Fault {
    fn eq(&self, other: &Fault) -> bool {
        self.to_string() == other.to_string()
    }
}

/// What a managed torrent is made from.
#[derive(Clone)]
pub enum Source {
    Torrent(Arc<Torrent>),
    Magnet(Magnet),
}

/// The owner's last word on a torrent's configuration, once its metadata is known: file selection,
/// rates, trackers and the like, beyond what [`AddTorrent`] sets. An `Err` puts it in state `error`.
pub type Configure = Arc<dyn Fn(&Torrent, &mut TorrentConfig) -> Result<(), String> + Send + Sync>;

/// What an owner that keeps torrents of its own (their state on disk, across restarts) does at the
/// points of their life cycle that touch that state. Called with none of the client's locks held, so
/// an owner may ask the client anything from them; each has a default that does nothing.
pub trait Owner: Send + Sync {
    /// A magnet link's metadata arrived; an `Err` (keeping it failed) puts the torrent in `error`.
    fn metadata_found(&self, _id: &InfoHash, _torrent: &Arc<Torrent>) -> Result<(), String> {
        Ok(())
    }

    /// A start finished, `took` after it began: the torrent runs.
    fn started(&self, _id: &InfoHash, _handle: &Arc<TorrentHandle>, _took: Duration) {}

    /// The torrent stops to `to`, its engine torrent (if it ran) still running, for what should be
    /// written before it stops (resume data); its totals in [`Client::snapshot`] are final.
    fn stopping(&self, _id: &InfoHash, _handle: Option<&Arc<TorrentHandle>>, _to: &Phase<Fault>) {}

    /// Its seed goal as it is now (`None`: the one it was added with).
    fn goal(&self, _id: &InfoHash) -> Option<SeedGoal> {
        None
    }
}

/// The owner of torrents that keeps nothing of its own.
struct NoOwner;

impl Owner for NoOwner {}

/// What earlier sessions knew of a torrent added again.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Earlier {
    /// Bytes moved in them: the totals and the seed ratio count them.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Whole seconds seeded in them: the seed time counts them.
    pub seeding_secs: u64,
    /// It had every wanted piece: it queues for a seed's slot.
    pub complete: bool,
    /// It had met its seed goal: it stays finished until resumed.
    pub finished: bool,
}

/// A torrent to manage and its settings.
#[derive(Clone)]
pub struct AddTorrent {
    pub source: Source,
    pub download_dir: PathBuf,
    /// Peers to connect to directly (also while a magnet link's metadata is looked for).
    pub peers: Vec<SocketAddr>,
    pub max_peers: usize,
    pub encryption: crate::Encryption,
    /// When a complete torrent stops seeding (to `Finished`).
    pub goal: SeedGoal,
    /// Added paused: it waits for [`Client::resume`].
    pub paused: bool,
    /// How long a magnet link's metadata is looked for before the torrent goes to state `error`.
    pub metadata_timeout: Duration,
    pub configure: Option<Configure>,
    pub earlier: Earlier,
}

impl AddTorrent {
    pub fn new(source: Source, download_dir: PathBuf) -> AddTorrent {
        AddTorrent {
            source,
            download_dir,
            peers: Vec::new(),
            max_peers: 50,
            encryption: crate::Encryption::default(),
            goal: SeedGoal::default(),
            paused: false,
            metadata_timeout: Duration::from_secs(120),
            configure: None,
            earlier: Earlier::default(),
        }
    }
}

/// Why a torrent could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("torrent {} is already added", .0.to_hex())]
    Duplicate(InfoHash),
    #[error(transparent)]
    Magnet(#[from] MagnetError),
}

/// What an owner sees of a managed torrent.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: InfoHash,
    pub phase: Phase<Fault>,
    /// Its name, once its metadata is known.
    pub name: Option<String>,
    /// The engine's status while it runs, else the last one seen (none before its first start).
    pub status: Option<Status>,
    /// Bytes downloaded and uploaded, and whole seconds seeded, in all its sessions.
    pub downloaded: u64,
    pub uploaded: u64,
    pub seeding_secs: u64,
}

struct Entry {
    id: InfoHash,
    spec: AddTorrent,
    torrent: Option<Arc<Torrent>>,
    life: Lifecycle<Fault>,
    handle: Option<Arc<TorrentHandle>>,
    /// The metadata fetch under way, ended when the torrent is paused or removed.
    fetch: Option<tokio::task::AbortHandle>,
    /// The connections of the metadata phase, until the first start takes them over.
    carry: Option<Carry>,
    /// The status when it last ran.
    kept: Option<Status>,
    /// Its completion was seen by a pass (and told to those waiting for changes).
    completion_told: bool,
    /// Bytes moved before the running session (earlier ones included).
    downloaded: u64,
    uploaded: u64,
    /// Whole seconds seeded, folded at each stop (earlier sessions included).
    seeded: u64,
    /// Whether it had every wanted piece when it last ran (or as it was added).
    was_complete: bool,
}

impl Entry {
    fn status(&self) -> Option<Status> {
        self.handle
            .as_ref()
            .map(|h| h.status())
            .or(self.kept.clone())
    }

    /// Without a whole status: the queue asks it of every torrent at every pass.
    fn complete(&self) -> bool {
        self.handle
            .as_ref()
            .map_or(self.was_complete, |h| h.shared.is_complete())
    }
}

type Slot = Arc<Mutex<Entry>>;

struct Inner {
    session: Session,
    owner: Arc<dyn Owner>,
    discovery: Discovery,
    dht: Option<DhtNode>,
    /// (downloads, seeds) active at once.
    limits: Mutex<(usize, usize)>,
    /// In queue order.
    torrents: Mutex<Vec<Slot>>,
    /// The same by info-hash, for the owner's many lookups (a daemon's thousands of torrents). Taken
    /// after `torrents` when both are.
    by_id: Mutex<HashMap<InfoHash, Slot>>,
    wake: Notify,
    /// Bumped on every change an owner may wait for.
    changes: watch::Sender<u64>,
}

/// A client: torrents behind one session, driven through their life cycle.
pub struct Client {
    inner: Arc<Inner>,
    driver: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Drives torrents behind `session`, finding peers as `discovery` says (its DHT node started
    /// here, unless the torrents are `private`).
    pub async fn start(
        session: Session,
        discovery: Discovery,
        private: bool,
    ) -> Result<Client, DiscoveryError> {
        Client::start_owned(session, discovery, private, Arc::new(NoOwner)).await
    }

    /// The same, for an owner that keeps state of its own (see [`Owner`]).
    pub async fn start_owned(
        session: Session,
        discovery: Discovery,
        private: bool,
        owner: Arc<dyn Owner>,
    ) -> Result<Client, DiscoveryError> {
        let mut discovery = discovery;
        discovery.utp &= session.transports().utp;
        let dht = discovery.start_dht(session.listen_addr(), private).await?;
        let inner = Arc::new(Inner {
            session,
            owner,
            discovery,
            dht,
            limits: Mutex::new((usize::MAX, usize::MAX)),
            torrents: Mutex::new(Vec::new()),
            by_id: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            changes: watch::channel(0).0,
        });
        let driver = tokio::spawn(drive(inner.clone()));
        Ok(Client { inner, driver })
    }

    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    /// The discovery its torrents use (the DHT's port settled).
    pub fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    /// How many incomplete and complete torrents may be active at once.
    pub fn set_queue(&self, downloads: usize, seeds: usize) {
        *self.inner.limits.lock() = (downloads, seeds);
        self.inner.wake.notify_one();
    }

    /// Adds a torrent, last in the queue.
    pub fn add(&self, add: AddTorrent) -> Result<InfoHash, AddError> {
        let (id, torrent) = match &add.source {
            Source::Torrent(t) => (crate::wire_id(t), Some(t.clone())),
            Source::Magnet(m) => (magnet_wire_id(m)?, None),
        };
        let mut torrents = self.inner.torrents.lock();
        let mut by_id = self.inner.by_id.lock();
        if by_id.contains_key(&id) {
            return Err(AddError::Duplicate(id));
        }
        let earlier = add.earlier;
        let life = Lifecycle::new(add.paused, torrent.is_some(), earlier.finished);
        let slot = Arc::new(Mutex::new(Entry {
            id,
            spec: add,
            torrent,
            life,
            handle: None,
            fetch: None,
            carry: None,
            kept: None,
            completion_told: false,
            downloaded: earlier.downloaded,
            uploaded: earlier.uploaded,
            seeded: earlier.seeding_secs,
            was_complete: earlier.complete,
        }));
        by_id.insert(id, slot.clone());
        torrents.push(slot);
        drop((by_id, torrents));
        self.inner.wake.notify_one();
        Ok(id)
    }

    pub fn snapshot(&self, id: &InfoHash) -> Option<Snapshot> {
        self.inner.slot(id).map(|slot| snapshot(&slot.lock()))
    }

    /// Its engine torrent while it runs: for its views (peers, pieces, trackers) and live settings
    /// (rates, priorities, trackers); its life cycle stays the client's.
    pub fn handle(&self, id: &InfoHash) -> Option<Arc<TorrentHandle>> {
        self.inner
            .slot(id)
            .and_then(|slot| slot.lock().handle.clone())
    }

    /// The torrents' info-hashes in queue order.
    pub fn order(&self) -> Vec<InfoHash> {
        let torrents = self.inner.torrents.lock();
        torrents.iter().map(|s| s.lock().id).collect()
    }

    /// Moves the torrents `ids` in the queue as `how` says, the others keeping their order.
    pub fn queue_move(&self, ids: &[InfoHash], how: QueueMove) {
        {
            let mut torrents = self.inner.torrents.lock();
            let keyed: Vec<(InfoHash, Slot)> =
                torrents.iter().map(|s| (s.lock().id, s.clone())).collect();
            let moved = reorder(&keyed, |(id, _)| ids.contains(id), how);
            *torrents = moved.into_iter().map(|(_, s)| s).collect();
        }
        self.inner.wake.notify_one();
    }

    /// Stops a torrent for its owner's work on it (a move of its data, a new file selection): the
    /// phase it was in, for [`Client::release`].
    pub async fn hold(&self, id: &InfoHash) -> Option<Phase<Fault>> {
        let slot = self.inner.slot(id)?;
        let was = slot.lock().life.phase().clone();
        stop(&self.inner, &slot, Phase::Paused).await;
        Some(was)
    }

    /// The owner's work is over: back to where it was before [`Client::hold`] (queued again when it
    /// was active), unless something moved it on meanwhile. With `changed_data`, its pieces are no
    /// longer known complete (another selection, another place): it queues as a download.
    pub fn release(&self, id: &InfoHash, was: Phase<Fault>, changed_data: bool) {
        let Some(slot) = self.inner.slot(id) else {
            return;
        };
        {
            let mut e = slot.lock();
            if changed_data {
                e.was_complete = false;
            }
            e.life.restore_if_paused(was);
        }
        self.inner.changed();
        self.inner.wake.notify_one();
    }

    /// Its data is being moved by its owner (`true`, while held), or that is over (`false`: paused,
    /// for [`Client::release`]).
    pub fn moving(&self, id: &InfoHash, on: bool) {
        if let Some(slot) = self.inner.slot(id) {
            let mut e = slot.lock();
            if on {
                e.life.begin_move();
            } else {
                e.life.move_ended();
            }
        }
        self.inner.changed();
    }

    /// Stops a torrent in state `error` for `fault`, until resumed.
    pub async fn fail(&self, id: &InfoHash, fault: Fault) {
        if let Some(slot) = self.inner.slot(id) {
            stop(&self.inner, &slot, Phase::Error(fault)).await;
        }
    }

    /// Waits until something changed (a phase, a start, a completion) since the last call on `seen`.
    pub async fn changed(&self, seen: &mut watch::Receiver<u64>) {
        let _ = seen.changed().await;
    }

    /// A receiver for [`Client::changed`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Stops a torrent (announcing `stopped`) until resumed; a metadata fetch under way ends.
    pub async fn pause(&self, id: &InfoHash) -> Option<Snapshot> {
        let slot = self.inner.slot(id)?;
        stop(&self.inner, &slot, Phase::Paused).await;
        let snap = snapshot(&slot.lock());
        Some(snap)
    }

    /// Queues a paused, finished or failed torrent again (a magnet link without its metadata yet
    /// looks for it again); with `now`, past the queue's limits.
    pub fn resume(&self, id: &InfoHash, now: bool) -> Option<Snapshot> {
        let slot = self.inner.slot(id)?;
        let snap = {
            let mut e = slot.lock();
            let has_metadata = e.torrent.is_some();
            e.life.resume(has_metadata, now);
            snapshot(&e)
        };
        self.inner.changed();
        self.inner.wake.notify_one();
        Some(snap)
    }

    /// Stops a torrent and forgets it: its last snapshot.
    pub async fn remove(&self, id: &InfoHash) -> Option<Snapshot> {
        let slot = self.inner.slot(id)?;
        {
            let mut torrents = self.inner.torrents.lock();
            torrents.retain(|s| !Arc::ptr_eq(s, &slot));
            self.inner.by_id.lock().remove(id);
        }
        stop(&self.inner, &slot, Phase::Paused).await;
        let snap = snapshot(&slot.lock());
        Some(snap)
    }

    /// Stops every active torrent (queued to start again next time), for a clean exit.
    pub async fn shutdown(&self) {
        let slots = self.inner.torrents.lock().clone();
        let active = slots.into_iter().filter(|s| {
            let e = s.lock();
            e.life.phase().is_active() || e.handle.is_some() || e.fetch.is_some()
        });
        let stops = active.map(|s| async move { stop(&self.inner, &s, Phase::Queued).await });
        futures_util::future::join_all(stops).await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Inner {
    fn slot(&self, id: &InfoHash) -> Option<Slot> {
        self.by_id.lock().get(id).cloned()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

fn snapshot(e: &Entry) -> Snapshot {
    let status = e.status();
    let running = e.handle.as_ref().and(status.as_ref());
    Snapshot {
        id: e.id,
        phase: e.life.phase().clone(),
        name: e.torrent.as_ref().map(|t| t.name.clone()),
        downloaded: e.downloaded + running.map_or(0, |s| s.downloaded),
        uploaded: e.uploaded + running.map_or(0, |s| s.uploaded),
        seeding_secs: e.seeded + e.life.unfolded_seeding(Instant::now()),
        status,
    }
}

/// Stops a torrent to `to`: its metadata fetch or its engine torrent, unregistered from the session,
/// once its owner wrote what it keeps.
async fn stop(inner: &Inner, slot: &Slot, to: Phase<Fault>) {
    let (id, handle) = {
        let mut e = slot.lock();
        if let Some(fetch) = e.fetch.take() {
            fetch.abort();
        }
        let seeded = e.life.stop(to.clone(), Instant::now());
        e.seeded += seeded;
        let handle = e.handle.take();
        if let Some(h) = &handle {
            let st = h.status();
            e.downloaded += st.downloaded;
            e.uploaded += st.uploaded;
            e.was_complete = st.complete;
            e.kept = Some(st);
        }
        (e.id, handle)
    };
    inner.owner.stopping(&id, handle.as_ref(), &to);
    inner.changed();
    if let Some(h) = handle {
        inner.session.unregister(&h.info_hash());
        h.stop().await;
    }
    inner.wake.notify_one();
}

/// The driver: a pass now and then, and whenever something asks for one.
async fn drive(inner: Arc<Inner>) {
    loop {
        pass(&inner).await;
        tokio::select! {
            _ = tokio::time::sleep(PASS_EVERY) => {}
            _ = inner.wake.notified() => {}
        }
    }
}

/// Reviews the running torrents (errors, seed goals), then starts what the queue admits.
async fn pass(inner: &Arc<Inner>) {
    let now = Instant::now();
    let slots = inner.torrents.lock().clone();
    for slot in &slots {
        let (id, running) = {
            let e = slot.lock();
            (e.id, e.handle.is_some())
        };
        if !running {
            continue;
        }
        // Asked with no lock held; a stop meanwhile leaves no handle below.
        let goal = inner.owner.goal(&id);
        let verdict = {
            let mut e = slot.lock();
            let Some(h) = e.handle.clone() else { continue };
            let complete = h.shared.is_complete();
            if complete != e.completion_told {
                e.completion_told = complete;
                inner.changed();
            }
            let goal = goal.unwrap_or(e.spec.goal);
            // A whole status (its wanted bytes count every piece) only for a seed with a ratio goal:
            // nothing else needs its byte counts, and a daemon has many idle seeds.
            let (uploaded, wanted) = if complete && goal.ratio.is_some() {
                let st = h.status();
                (st.uploaded, st.wanted)
            } else {
                (0, 0)
            };
            let seen = Observed {
                error: h.error().map(Fault::Stopped),
                complete,
                uploaded: e.uploaded + uploaded,
                wanted,
            };
            let earlier = e.seeded;
            e.life.review(seen, &goal, earlier, now)
        };
        if let Some(to) = verdict {
            stop(inner, slot, to).await;
        }
    }
    let (downloads, seeds) = *inner.limits.lock();
    let mut queue = Queue::new(downloads, seeds);
    for slot in &slots {
        let e = slot.lock();
        queue.count(&e.life, e.complete());
    }
    for slot in &slots {
        let mut e = slot.lock();
        let complete = e.complete();
        match queue.admit(&mut e.life, complete) {
            Some(Step::FetchMetadata { generation }) => {
                let task = tokio::spawn(fetch(inner.clone(), slot.clone(), generation));
                e.fetch = Some(task.abort_handle());
            }
            Some(Step::Start { generation }) => {
                tokio::spawn(start(inner.clone(), slot.clone(), generation));
            }
            None => continue,
        }
        drop(e);
        inner.changed();
    }
}

/// The torrent of a magnet link for a torrent of `session`: its info dictionary from peers, checked
/// against every hash the link names, with the piece layers of a v2-only torrent (BEP 52 hash
/// requests, each proven against its file root), and the connections that fetched it, which the
/// torrent takes over; the peers that dial the session for it join this metadata phase. Gives up
/// after `timeout`.
pub async fn fetch_magnet(
    session: &Session,
    magnet: &Magnet,
    peers: &[SocketAddr],
    dht: Option<DhtNode>,
    max_peers: usize,
    encryption: crate::Encryption,
    timeout: Duration,
) -> Result<MagnetTorrent, MagnetError> {
    let request = magnet_request(
        magnet,
        session.listen_addr(),
        peers,
        dht,
        max_peers,
        encryption,
    )?;
    let id = request.info_hash;
    // Unregistered however the fetch ends, also when its task is aborted.
    struct Registered<'a>(&'a Session, InfoHash, u64);
    impl Drop for Registered<'_> {
        fn drop(&mut self) {
            self.0.unregister_fetch(&self.1, self.2);
        }
    }
    let (number, incoming) = session.register_fetch(id);
    let _registered = Registered(session, id, number);
    let metadata = fetch_metadata_with(&request, timeout, Some(incoming)).await?;
    magnet_finish(magnet, metadata)
}

async fn fetch(inner: Arc<Inner>, slot: Slot, generation: u64) {
    let spec = slot.lock().spec.clone();
    let Source::Magnet(magnet) = &spec.source else {
        return;
    };
    let result = fetch_magnet(
        &inner.session,
        magnet,
        &spec.peers,
        inner.dht.clone(),
        spec.max_peers,
        spec.encryption,
        spec.metadata_timeout,
    )
    .await
    .map(|MagnetTorrent { torrent, carry }| (Arc::new(torrent), carry))
    .map_err(|e| Fault::Metadata(Arc::new(e)));
    let id = slot.lock().id;
    // Kept by the owner before it counts: a torrent that runs has its metadata saved.
    let result = result.and_then(|(torrent, carry)| {
        inner
            .owner
            .metadata_found(&id, &torrent)
            .map(|()| (torrent, carry))
            .map_err(Fault::Owner)
    });
    {
        let mut e = slot.lock();
        e.fetch = None;
        match result {
            // Metadata is good whichever fetch found it; its connections only while still wanted.
            Ok((torrent, carry)) if e.torrent.is_none() => {
                if e.life.fetch_current(generation) {
                    e.carry = Some(carry);
                }
                e.torrent = Some(torrent);
                e.life.metadata_arrived();
            }
            Ok(_) => {}
            Err(fault) => {
                e.life.fetch_failed(generation, fault);
            }
        }
    }
    inner.changed();
    inner.wake.notify_one();
}

/// The engine's configuration of a managed torrent: in the session, with its discovery, its
/// metadata phase's connections, and the owner's last word (asked with no lock held).
fn config(
    inner: &Inner,
    spec: &AddTorrent,
    carry: Option<Carry>,
    torrent: &Arc<Torrent>,
) -> Result<TorrentConfig, Fault> {
    let mut config = TorrentConfig::new(torrent.clone(), spec.download_dir.clone());
    config
        .in_session(&inner.session)
        .peers(spec.peers.iter().copied())
        .max_peers(spec.max_peers)
        .transport(spec.encryption, inner.session.transports());
    if let Source::Magnet(m) = &spec.source {
        // A magnet's x.pe peers serve the download too, not only the metadata: with no tracker or
        // DHT naming them again they are all there is.
        config.peers(m.peers.iter().filter_map(|p| p.parse::<SocketAddr>().ok()));
    }
    if let Some(carry) = carry {
        carry.into_config(&mut config);
    }
    inner.discovery.apply(&mut config, inner.dht.clone());
    if let Some(configure) = &spec.configure {
        configure(torrent, &mut config).map_err(Fault::Owner)?;
    }
    Ok(config)
}

async fn start(inner: Arc<Inner>, slot: Slot, generation: u64) {
    let began = Instant::now();
    let (id, spec, carry, torrent) = {
        let mut e = slot.lock();
        let Some(torrent) = e.torrent.clone() else {
            return;
        };
        (e.id, e.spec.clone(), e.carry.take(), torrent)
    };
    let made = config(&inner, &spec, carry, &torrent);
    let result = match made {
        Ok(config) => crate::start(config)
            .await
            .map_err(|e| Fault::Start(Arc::new(e))),
        Err(fault) => Err(fault),
    };
    let overtaken = match result {
        Ok(handle) => {
            let handle = Arc::new(handle);
            let mut e = slot.lock();
            if e.life.started(generation) {
                inner.session.register(&handle);
                e.kept = Some(handle.status());
                e.handle = Some(handle.clone());
                drop(e);
                inner.owner.started(&id, &handle, began.elapsed());
                tokio::spawn(wake_when_done(
                    Arc::downgrade(&inner),
                    handle.shared.clone(),
                ));
                None
            } else {
                // Paused or removed while checking.
                Some(handle)
            }
        }
        Err(fault) => {
            slot.lock().life.start_failed(generation, fault);
            None
        }
    };
    if let Some(handle) = overtaken {
        handle.stop().await;
    }
    inner.changed();
    inner.wake.notify_one();
}

/// Wakes the driver as soon as the torrent completes or fails, so that the owner (`spore get` waiting
/// to print `complete`, a seed goal) hears of it at once instead of at the next pass, up to a second
/// later. Ends when the torrent stops.
async fn wake_when_done(inner: std::sync::Weak<Inner>, shared: Arc<crate::torrent::Shared>) {
    let mut stopping = shared.stopping();
    tokio::select! {
        _ = shared.wait_done() => {}
        _ = stopping.wait_for(|s| *s) => return,
    }
    if let Some(inner) = inner.upgrade() {
        inner.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use metainfo::Version::V1;

    use super::*;

    async fn client() -> Client {
        owned(Arc::new(NoOwner)).await
    }

    async fn owned(owner: Arc<dyn Owner>) -> Client {
        let session = Session::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            crate::HandshakeLimits::default(),
            crate::Transports::default(),
        )
        .await
        .unwrap();
        let discovery = Discovery {
            dht: false,
            lsd: false,
            ..Discovery::default()
        };
        Client::start_owned(session, discovery, false, owner)
            .await
            .unwrap()
    }

    async fn wait_for(c: &Client, id: &InfoHash, want: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let mut seen = c.subscribe();
        let wait = async {
            loop {
                let s = c.snapshot(id).unwrap();
                if want(&s) {
                    return s;
                }
                c.changed(&mut seen).await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(s) => s,
            Err(_) => panic!("still {:?}", c.snapshot(id)),
        }
    }

    /// A seed and a leecher behind one client: the leecher downloads from the seed, meets its ratio
    /// goal at once (0), and finishes; the seed keeps seeding.
    #[tokio::test]
    async fn a_leecher_downloads_from_a_seed_and_finishes_at_its_goal() {
        let (_dir, content, torrent) = crate::testutil::made(100_000, 16 * 1024, V1);
        let c = client().await;
        let seed = c
            .add(AddTorrent::new(Source::Torrent(torrent.clone()), content))
            .unwrap();
        let s = wait_for(&c, &seed, |s| s.phase == Phase::Running).await;
        assert!(s.status.unwrap().complete);
        let seed_addr = c.session().listen_addr();
        // The leecher in a second client, dialing the first.
        let c2 = client().await;
        let leech_dir = tempfile::tempdir().unwrap();
        let mut add = AddTorrent::new(Source::Torrent(torrent), leech_dir.path().to_path_buf());
        add.peers = vec![seed_addr];
        add.goal = SeedGoal {
            ratio: Some(0.0),
            time: None,
        };
        let leech = c2.add(add.clone()).unwrap();
        assert!(matches!(c2.add(add), Err(AddError::Duplicate(_))));
        let s = wait_for(&c2, &leech, |s| s.phase == Phase::Finished).await;
        assert!(s.status.unwrap().complete);
        assert_eq!(c.snapshot(&seed).unwrap().phase, Phase::Running);
    }

    /// The owner hears of a completion through `changed` at once, not at the driver's next pass (up
    /// to a second later, which `spore get` added to every download before printing `complete`).
    /// Three downloads, each timed from the moment polling sees it complete.
    #[tokio::test]
    async fn a_completion_is_told_at_once() {
        let c = client().await;
        let c2 = client().await;
        for len in [100_000, 150_000, 200_000] {
            let (_dir, content, torrent) = crate::testutil::made(len, 16 * 1024, V1);
            let seed = c
                .add(AddTorrent::new(Source::Torrent(torrent.clone()), content))
                .unwrap();
            wait_for(&c, &seed, |s| s.phase == Phase::Running).await;
            let leech_dir = tempfile::tempdir().unwrap();
            let mut add = AddTorrent::new(Source::Torrent(torrent), leech_dir.path().to_path_buf());
            add.peers = vec![c.session().listen_addr()];
            let mut seen = c2.subscribe();
            let leech = c2.add(add).unwrap();
            let polled = async {
                loop {
                    let s = c2.snapshot(&leech).unwrap();
                    if s.status.is_some_and(|st| st.complete) {
                        return Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            let told = async {
                loop {
                    c2.changed(&mut seen).await;
                    let s = c2.snapshot(&leech).unwrap();
                    if s.status.is_some_and(|st| st.complete) {
                        return Instant::now();
                    }
                }
            };
            let both = async { tokio::join!(polled, told) };
            let (polled, told) = tokio::time::timeout(Duration::from_secs(30), both)
                .await
                .expect("the download completes");
            let late = told.saturating_duration_since(polled);
            assert!(
                late < Duration::from_millis(250),
                "{len}: told {late:?} after the download completed"
            );
            c2.remove(&leech).await;
            c.remove(&seed).await;
        }
    }

    /// A client with one download slot and two downloads with no peer to download from: the first
    /// running, the second queued behind it (and the directories their torrents were made in).
    async fn two_downloads_one_slot() -> (Client, Vec<InfoHash>, Vec<tempfile::TempDir>) {
        let c = client().await;
        c.set_queue(1, 1);
        let mut ids = Vec::new();
        let mut made = Vec::new();
        for len in [30_000, 40_000] {
            let (dir, _, torrent) = crate::testutil::made(len, 16 * 1024, V1);
            let add = AddTorrent::new(Source::Torrent(torrent), dir.path().join("empty"));
            ids.push(c.add(add).unwrap());
            made.push(dir);
        }
        wait_for(&c, &ids[0], |s| s.phase == Phase::Running).await;
        (c, ids, made)
    }

    /// The queue admits one download at a time; a paused torrent waits, and resumed, runs.
    #[tokio::test]
    async fn the_queue_and_pause_resume() {
        let (c, ids, _made) = two_downloads_one_slot().await;
        assert_eq!(c.snapshot(&ids[1]).unwrap().phase, Phase::Queued);
        let paused = c.pause(&ids[0]).await.unwrap();
        assert_eq!(paused.phase, Phase::Paused);
        wait_for(&c, &ids[1], |s| s.phase == Phase::Running).await;
        c.resume(&ids[0], true);
        wait_for(&c, &ids[0], |s| s.phase == Phase::Running).await;
        let gone = c.remove(&ids[1]).await.unwrap();
        assert_eq!(gone.phase, Phase::Paused);
        assert!(c.snapshot(&ids[1]).is_none());
    }

    /// A magnet link that names no peer and no tracker added to `c`, and once its metadata is looked
    /// for, a seed of it that dials `c` (with the directory its torrent was made in).
    async fn magnet_dialled(
        c: &Client,
    ) -> (
        InfoHash,
        Arc<Torrent>,
        tempfile::TempDir,
        crate::testutil::Seed,
    ) {
        let addr = c.session().listen_addr();
        let (torrent_dir, _, torrent) = crate::testutil::made(50_000, 16 * 1024, V1);
        let link = Magnet::from_torrent(&torrent).to_string();
        let mut add = AddTorrent::new(
            Source::Magnet(Magnet::parse(&link).unwrap()),
            torrent_dir.path().join("download"),
        );
        add.metadata_timeout = Duration::from_secs(30);
        let mut seen = c.subscribe();
        let id = c.add(add).unwrap();
        // The first pass starts the fetch; then the seed dials.
        c.changed(&mut seen).await;
        let seed = crate::testutil::seed(50_000, 16 * 1024, |config| {
            config.peers = vec![addr];
        })
        .await;
        (id, torrent, torrent_dir, seed)
    }

    /// A magnet link that names no peer and no tracker: the seed dials us, joins the metadata phase,
    /// and its connection carries over to the download, which completes.
    #[tokio::test]
    async fn a_peer_that_dials_a_magnet_in_its_metadata_phase_serves_it() {
        let c = client().await;
        let (id, _, _made, _seed) = magnet_dialled(&c).await;
        let s = wait_for(&c, &id, |s| {
            s.status.as_ref().is_some_and(|st| st.complete) || matches!(s.phase, Phase::Error(_))
        })
        .await;
        assert_eq!(s.phase, Phase::Running, "{s:?}");
    }

    /// An owner that notes what it is told, refuses metadata when asked to, and sets a goal of its own.
    #[derive(Default)]
    struct Noting {
        seen: Mutex<Vec<String>>,
        refuse_metadata: bool,
        goal: Option<SeedGoal>,
    }

    impl Owner for Noting {
        fn metadata_found(&self, _: &InfoHash, t: &Arc<Torrent>) -> Result<(), String> {
            self.seen.lock().push(format!("metadata {}", t.name));
            if self.refuse_metadata {
                return Err("cannot keep it".into());
            }
            Ok(())
        }

        fn started(&self, _: &InfoHash, _: &Arc<TorrentHandle>, _: Duration) {
            self.seen.lock().push("started".into());
        }

        fn stopping(&self, _: &InfoHash, handle: Option<&Arc<TorrentHandle>>, to: &Phase<Fault>) {
            let running = handle.is_some_and(|h| h.status().complete);
            self.seen.lock().push(format!("stopping {to:?} {running}"));
        }

        fn goal(&self, _: &InfoHash) -> Option<SeedGoal> {
            self.goal
        }
    }

    /// The owner is told of the start and, with the engine torrent still running, of the stop its
    /// own goal asks for; the totals of earlier sessions count toward that goal and in the snapshot.
    #[tokio::test]
    async fn an_owner_sees_the_start_and_the_stop_and_sets_the_goal() {
        let (_dir, content, torrent) = crate::testutil::made(100_000, 16 * 1024, V1);
        let c = client().await;
        c.add(AddTorrent::new(Source::Torrent(torrent.clone()), content))
            .unwrap();
        let owner = Arc::new(Noting {
            // Met only with the earlier upload: 50 000 of 100 000 bytes now is not half.
            goal: Some(SeedGoal {
                ratio: Some(0.5),
                time: None,
            }),
            ..Noting::default()
        });
        let c2 = owned(owner.clone()).await;
        let leech_dir = tempfile::tempdir().unwrap();
        let mut add = AddTorrent::new(Source::Torrent(torrent), leech_dir.path().to_path_buf());
        add.peers = vec![c.session().listen_addr()];
        add.earlier = Earlier {
            downloaded: 7,
            uploaded: 50_000,
            seeding_secs: 3,
            ..Earlier::default()
        };
        let id = c2.add(add).unwrap();
        let s = wait_for(&c2, &id, |s| s.phase == Phase::Finished).await;
        assert!(s.downloaded >= 100_007, "{s:?}");
        assert!(s.uploaded >= 50_000 && s.seeding_secs >= 3, "{s:?}");
        assert_eq!(
            *owner.seen.lock(),
            ["started", "stopping Finished true"],
            "stopping is told while the torrent still runs"
        );
    }

    /// Metadata its owner cannot keep puts a magnet link in `error`, as the owner's fault.
    #[tokio::test]
    async fn metadata_the_owner_cannot_keep_is_an_error() {
        let owner = Arc::new(Noting {
            refuse_metadata: true,
            ..Noting::default()
        });
        let c = owned(owner.clone()).await;
        let (id, torrent, _made, _seed) = magnet_dialled(&c).await;
        let s = wait_for(&c, &id, |s| matches!(s.phase, Phase::Error(_))).await;
        assert!(
            matches!(&s.phase, Phase::Error(Fault::Owner(m)) if m == "cannot keep it"),
            "{s:?}"
        );
        assert_eq!(owner.seen.lock()[0], format!("metadata {}", torrent.name));
    }

    /// The owner's work on a torrent: held (its slot freed), moved, released back to the queue;
    /// the queue's order is the owner's to change; a failure is the owner's to give.
    #[tokio::test]
    async fn hold_move_release_reorder_and_fail() {
        let (c, ids, _made) = two_downloads_one_slot().await;
        c.queue_move(&[ids[1]], QueueMove::Top);
        assert_eq!(c.order(), [ids[1], ids[0]]);
        let was = c.hold(&ids[0]).await.unwrap();
        assert_eq!(was, Phase::Running);
        wait_for(&c, &ids[1], |s| s.phase == Phase::Running).await;
        c.moving(&ids[0], true);
        assert_eq!(c.snapshot(&ids[0]).unwrap().phase, Phase::Moving);
        c.moving(&ids[0], false);
        c.release(&ids[0], was, true);
        // Queued again: the one download slot is taken.
        assert_eq!(c.snapshot(&ids[0]).unwrap().phase, Phase::Queued);
        c.fail(&ids[1], Fault::Owner("its disk is gone".into()))
            .await;
        let s = c.snapshot(&ids[1]).unwrap();
        assert_eq!(
            s.phase,
            Phase::Error(Fault::Owner("its disk is gone".into()))
        );
        wait_for(&c, &ids[0], |s| s.phase == Phase::Running).await;
    }

    /// A magnet link nobody answers, paused while looking for its metadata and resumed: it stays
    /// paused (not in error) meanwhile, looks again when resumed, and fails only when that fetch does.
    #[tokio::test]
    async fn a_magnet_link_paused_while_fetching_stays_paused() {
        let c = client().await;
        let link = format!("magnet:?xt=urn:btih:{}", "ab".repeat(20));
        let mut add = AddTorrent::new(
            Source::Magnet(Magnet::parse(&link).unwrap()),
            PathBuf::from("/nonexistent"),
        );
        add.metadata_timeout = Duration::from_millis(300);
        let mut seen = c.subscribe();
        let id = c.add(add).unwrap();
        // The first pass starts the fetch.
        c.changed(&mut seen).await;
        assert_eq!(c.snapshot(&id).unwrap().phase, Phase::FetchingMetadata);
        c.pause(&id).await;
        // Longer than the fetch's timeout: the aborted fetch does not put it in error.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(c.snapshot(&id).unwrap().phase, Phase::Paused);
        c.resume(&id, false);
        let s = wait_for(&c, &id, |s| matches!(s.phase, Phase::Error(_))).await;
        assert!(matches!(s.phase, Phase::Error(Fault::Metadata(_))), "{s:?}");
    }
}
