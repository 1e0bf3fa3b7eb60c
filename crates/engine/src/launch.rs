//! Starting a torrent, and the tasks that drive its core besides the peers' own: the timer, the
//! tracker announces and dialling; the DHT lookups (`dht_lookup.rs`) and local discovery (`lsd.rs`)
//! are started here.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metainfo::Torrent;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};
use torrent_core::{CoreConfig, ExtensionInfo, TorrentCore};
use tracker_proto::Event as TrackerEvent;
use wire::PieceIndex;

use crate::bitfield::Bitfield;
use crate::rate::Limiter;
use crate::storage::{piece_matches, Storage};
use crate::torrent::{
    piece_priorities, shuffled_tiers, verify_slots, wire_id, Shared, State, TorrentConfig,
    TorrentHandle,
};

/// What the torrent core is made from: the torrent's pieces and what we have of them, and the
/// configuration's policy settings (upload slots, peers, PEX, trackers), seeded from the OS.
fn core_config(
    config: &TorrentConfig,
    torrent: &Torrent,
    piece_sizes: Vec<u32>,
    have: Bitfield,
    priorities: Vec<u8>,
    listen: SocketAddr,
) -> CoreConfig {
    let mut core = CoreConfig::new(piece_sizes, crate::rng::os_seed());
    core.have = have;
    core.priorities = priorities;
    core.private = torrent.private;
    core.pex = config.pex;
    core.trackers = config.use_trackers;
    core.upload_slots = config.upload_slots;
    core.max_peers = config.max_peers;
    core.sequential = config.sequential;
    // libtorrent lays a v2-only torrent out as if every file were padded to whole pieces, the last one
    // included, so it asks for each file's tail piece as if it were full length; the rest is zeros.
    core.full_tail_requests = torrent.version == metainfo::Version::V2;
    core.peers = config.peers.clone();
    core.listen = Some(listen);
    let dht = config.dht.as_ref().filter(|_| !torrent.private);
    core.extension = ExtensionInfo {
        ut_metadata: Some(crate::metadata::UT_METADATA_ID),
        metadata_size: Some(torrent.info_bytes.len() as u64),
        listen_port: Some(listen.port()),
        client: Some(format!("Spore {}", env!("CARGO_PKG_VERSION"))),
        dht_port: dht.map(|node| node.port),
    };
    core
}

/// Starts a torrent: rechecks data already in the download directory, then serves and downloads.
pub async fn start(config: TorrentConfig) -> Result<TorrentHandle, crate::StartError> {
    let torrent = config.torrent.clone();
    let piece_count = torrent.piece_count();
    let piece_count = u32::try_from(piece_count).map_err(|_| crate::StartError::TooManyPieces)?;
    let piece_sizes: Vec<u32> = (0..u64::from(piece_count))
        .map(|i| torrent.piece_size(i) as u32)
        .collect();

    let priority = piece_priorities(
        &torrent,
        piece_count,
        config.selected_files.as_deref(),
        config.file_priorities.as_deref(),
    );

    let file_paths = config.file_paths.clone();
    let storage = Storage::with_paths(&torrent, &config.download_dir, file_paths.as_deref())?;
    // Files first, so the recheck finds the content where the storage will write it.
    storage.create_files(config.selected_files.as_deref())?;
    let resume = config
        .resume
        .clone()
        .filter(|r| r.have.len() == piece_count);
    let recheck_torrent = torrent.clone();
    let dir = config.download_dir.clone();
    let recheck_storage = Storage::with_paths(&torrent, &dir, file_paths.as_deref())?;
    // The full check reads the files where they are on disk.
    let verify_torrent = match &file_paths {
        Some(paths) => {
            let mut t = (*torrent).clone();
            for (f, p) in t.files.iter_mut().zip(paths) {
                f.path = p.clone();
            }
            Arc::new(t)
        }
        None => torrent.clone(),
    };
    let have = tokio::task::spawn_blocking(move || match resume {
        Some(resume) if !resume.check_unlisted => resume.have,
        Some(resume) => {
            // Pieces verified after the resume data was saved are on disk already: find them.
            let storage = recheck_storage;
            let mut have = resume.have;
            let mut buf = Vec::new();
            for i in 0..piece_count {
                if have.get(i) {
                    continue;
                }
                buf.resize(recheck_torrent.piece_size(u64::from(i)) as usize, 0);
                let start = u64::from(i) * recheck_torrent.piece_length;
                if storage.read(start, &mut buf).is_ok()
                    && piece_matches(&recheck_torrent, PieceIndex::new(i), &buf)
                {
                    have.set(i);
                }
            }
            have
        }
        None => {
            let report = metainfo::verify(&verify_torrent, &dir, &AtomicU64::new(0));
            let mut have = Bitfield::new(piece_count);
            for (i, ok) in report.piece_ok.iter().enumerate() {
                if *ok {
                    have.set(i as u32);
                }
            }
            have
        }
    })
    .await?;

    let (listener, listen_addr, utp) = match config.session_listener {
        Some(addr) => (
            None,
            addr,
            config.session_utp.clone().filter(|_| config.transports.utp),
        ),
        None => {
            let (listener, utp) = crate::utp_listen::bind_pair(config.listen, config.transports)?;
            let addr = listener.local_addr()?;
            (Some(listener), addr, utp)
        }
    };
    let (stopping, _) = watch::channel(false);
    let core_config = core_config(
        &config,
        &torrent,
        piece_sizes.clone(),
        have,
        priority,
        listen_addr,
    );
    let core = TorrentCore::new(core_config, Instant::now());
    let already_done = core.is_complete();
    let (dial, dial_rx) = mpsc::unbounded_channel();
    let carried = config.carried.take();
    let dial_rx = match &carried {
        Some(c) if !c.peers.is_empty() => {
            let given = c.peers.iter().map(|p| p.addr);
            skip_first_dial(
                dial_rx,
                given.filter(|a| config.peers.contains(a)).collect(),
            )
        }
        _ => dial_rx,
    };
    let (announces, announce_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        id: wire_id(&torrent),
        tiers: Mutex::new(shuffled_tiers(
            config.trackers.as_ref().unwrap_or(&torrent.trackers),
            &mut crate::rng::from_os(),
        )),
        torrent,
        storage,
        state: Mutex::new(State::new(core)),
        listen_addr,
        utp,
        downloaded: AtomicU64::new(0),
        uploaded: AtomicU64::new(0),
        wasted: AtomicU64::new(0),
        dht_announces: AtomicU64::new(0),
        lsd_announces: AtomicU64::new(0),
        external_votes: Mutex::new(Default::default()),
        plaintext_peers: Mutex::new(Default::default()),
        complete: AtomicBool::new(already_done),
        complete_notify: Notify::new(),
        failure: Mutex::new(None),
        dial,
        announces,
        timer: Notify::new(),
        piece_done: Notify::new(),
        next_reader: AtomicU64::new(0),
        tracker_stats: Mutex::new(HashMap::new()),
        stopping,
        verify_slots: Arc::new(tokio::sync::Semaphore::new(verify_slots(
            config.torrent.piece_length,
        ))),
        piece_sizes,
        rates: Mutex::new((Instant::now(), 0, 0, 0.0, 0.0)),
        hash_trees: Mutex::new(HashMap::new()),
        hash_tree_builds: AtomicU64::new(0),
        down_limit: Limiter::new(config.max_download_rate.unwrap_or(0)),
        up_limit: Limiter::new(config.max_upload_rate.unwrap_or(0)),
        config,
    });
    let mut tasks = Vec::new();
    if let Some(listener) = listener {
        let gate = crate::conns::HandshakeGate::new(shared.config.handshake);
        if let Some(endpoint) = shared.utp.clone() {
            let mut stop = shared.stopping();
            tasks.push(tokio::spawn(crate::utp_listen::accept_loop(
                endpoint,
                crate::utp_listen::Route::One(shared.clone()),
                gate.clone(),
                async move {
                    let _ = stop.changed().await;
                },
            )));
        }
        if shared.config.transports.tcp {
            tasks.push(tokio::spawn(crate::peer::accept_loop(
                shared.clone(),
                listener,
                gate,
            )));
        }
    }
    tasks.push(tokio::spawn(crate::peer::dial_loop(
        shared.clone(),
        dial_rx,
    )));
    tasks.push(tokio::spawn(timer_loop(shared.clone())));
    // Also with no trackers yet: `set_trackers` may give it some.
    if shared.config.use_trackers {
        tasks.push(tokio::spawn(tracker_loop(shared.clone(), announce_rx)));
    }
    if let (Some(node), false) = (shared.config.dht.clone(), shared.torrent.private) {
        tasks.push(tokio::spawn(crate::dht_lookup::run(shared.clone(), node)));
    }
    if shared.config.lsd && !shared.torrent.private {
        let group = shared.config.lsd_group;
        tasks.push(tokio::spawn(crate::lsd::run(shared.clone(), group)));
    }
    // The peers given in the configuration, queued when the core was made.
    shared.with_core_now(|_, _| ());
    // A magnet link's connections carry over from its metadata phase, and so do its bans.
    if let Some(carried) = carried {
        shared.with_core_now(|core, _| {
            for ip in carried.banned {
                core.ban(ip);
            }
        });
        for peer in carried.peers {
            tasks.push(tokio::spawn(crate::peer::adopt(shared.clone(), peer)));
        }
    }
    Ok(TorrentHandle {
        shared,
        tasks: Mutex::new(tasks),
    })
}

/// The core dials the peers given in the configuration when it is made; a connection to one of them
/// carried over from the metadata phase is that dial, done already: the first `Connect` to each such address is
/// dropped (the adopted connection reports `dial_failed` when it ends, as a dial would).
fn skip_first_dial(
    mut rx: mpsc::UnboundedReceiver<SocketAddr>,
    mut carried: HashSet<SocketAddr>,
) -> mpsc::UnboundedReceiver<SocketAddr> {
    let (tx, out) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(addr) = rx.recv().await {
            if !carried.remove(&addr) && tx.send(addr).is_err() {
                return;
            }
        }
    });
    out
}

/// Runs the core's timeouts (choker rounds, free slots, per-peer upkeep, announces, redials) when due.
async fn timer_loop(shared: Arc<Shared>) {
    let mut stop = shared.stopping();
    loop {
        let next = {
            let mut st = shared.state.lock();
            st.timer_at = st.core.poll_timeout();
            st.timer_at
        };
        let wait = next.map_or(Duration::from_secs(3600), |at| {
            at.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // Something may have brought the next timeout closer: look again.
            _ = shared.timer.notified() => continue,
            _ = stop.changed() => return,
        }
        shared.with_core_now(|core, now| core.handle_timeout(now));
    }
}

/// Makes the announces the core asks for, one at a time, and tells it when the next is due.
async fn tracker_loop(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<TrackerEvent>) {
    let mut stop = shared.stopping();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let interval = shared.announce_all(event).await;
                let next = SystemTime::now() + interval.unwrap_or(Duration::from_secs(60));
                for s in shared.tracker_stats.lock().values_mut() {
                    s.next_announce = Some(next);
                }
                shared.with_core_now(|core, now| core.announced(interval, now));
                shared.timer.notify_one();
            }
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(5), shared.announce_all(TrackerEvent::Stopped)).await;
                return;
            }
        }
    }
}
