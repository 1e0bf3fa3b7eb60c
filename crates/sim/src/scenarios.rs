//! The swarms BENCHMARKS.md reports on, and the figures each one yields.

use std::time::{Duration, Instant};

use crate::bound::fluid_lower_bound;
use crate::config::{Arrivals, Departure, Group, SwarmConfig, KIB, MIB};
use crate::sim::{secs, Outcome, Sim};

/// The size of the swarms: the 1 000 peers and 1 GiB of 4 096 pieces by default.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub seed: u64,
    pub pieces: u32,
    pub leechers: usize,
    /// How many runs go at once.
    pub jobs: usize,
    /// Threads each run may use (a run is the same however many).
    pub threads: usize,
    pub max_peers: usize,
    /// The flash crowd's mean upload, MiB/s (4: as fast as the seed).
    pub leecher_up: f64,
    /// [`SwarmConfig::have_batch`].
    pub have_batch: Duration,
}

fn swarm(scale: &Scale, groups: Vec<Group>) -> SwarmConfig {
    let mut c = SwarmConfig::new(scale.seed, scale.pieces, PIECE, groups);
    c.max_peers = scale.max_peers;
    c.threads = scale.threads;
    c.have_batch = scale.have_batch;
    c
}

pub const PIECE: u32 = (256 * KIB) as u32;
/// The original seed's upload and the leechers' mean: equal, so the seed is the bottleneck of a flash
/// crowd and sending the file about once is all it can do (see BENCHMARKS.md).
pub const SEED_UP: f64 = 4.0 * MIB as f64;
pub const DOWN: f64 = 16.0 * MIB as f64;

fn mib(x: f64) -> f64 {
    x * MIB as f64
}

/// A run with its wall time.
pub struct Run {
    pub config: SwarmConfig,
    pub outcome: Outcome,
    pub wall: Duration,
}

pub fn run(config: SwarmConfig) -> Run {
    let started = Instant::now();
    let outcome =
        Sim::new(config.clone()).run_with_progress(Duration::from_secs(60), |(t, left, events)| {
            eprintln!(
                "  [{:.0} s virtual, {:.0} s wall] {left} leechers downloading, {events} events",
                t.as_secs_f64(),
                started.elapsed().as_secs_f64()
            )
        });
    Run {
        config,
        outcome,
        wall: started.elapsed(),
    }
}

/// Runs every configuration, `jobs` at a time, in order of the input.
pub fn run_all(configs: Vec<SwarmConfig>, jobs: usize) -> Vec<Run> {
    let mut results: Vec<Option<Run>> = (0..configs.len()).map(|_| None).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(config) = configs.get(i) else { break };
                let r = run(config.clone());
                if let Ok(mut slots) = slots.lock() {
                    slots[i] = Some(r);
                }
            });
        }
    });
    results.into_iter().flatten().collect()
}

fn seeds_group(count: usize, departure: Departure) -> Group {
    Group {
        name: "seed".into(),
        count,
        seed: true,
        upload: SEED_UP,
        download: DOWN,
        arrivals: Arrivals::At(Duration::ZERO),
        departure,
    }
}

/// Leechers in two halves, at half and one and a half times `mean` MiB/s up, all 16 MiB/s down.
fn leecher_groups(count: usize, mean: f64, arrivals: Arrivals, departure: Departure) -> Vec<Group> {
    let slow = count / 2;
    [
        ("slow", slow, 0.5 * mean),
        ("fast", count - slow, 1.5 * mean),
    ]
    .into_iter()
    .map(|(name, count, up)| Group {
        name: name.into(),
        count,
        seed: false,
        upload: mib(up),
        download: DOWN,
        arrivals,
        departure,
    })
    .collect()
}

const CROWD: Arrivals = Arrivals::Spread {
    start: Duration::from_secs(1),
    span: Duration::from_secs(60),
};

/// Scenario 2: one seed and the leechers arriving within a minute; everyone stays.
pub fn flash_crowd(scale: &Scale) -> SwarmConfig {
    let mut groups = vec![seeds_group(1, Departure::Never)];
    groups.extend(leecher_groups(
        scale.leechers,
        scale.leecher_up,
        CROWD,
        Departure::Never,
    ));
    swarm(scale, groups)
}

/// Scenario 3: the flash crowd, but the seed leaves once the others hold a full copy and leechers
/// leave a minute after they complete.
pub fn departure(scale: &Scale) -> SwarmConfig {
    let mut groups = vec![seeds_group(1, Departure::WhenCopyOut)];
    groups.extend(leecher_groups(
        scale.leechers,
        scale.leecher_up,
        CROWD,
        Departure::AfterDone(Duration::from_secs(60)),
    ));
    swarm(scale, groups)
}

/// Scenario 1: `seeds` seeds and a steady stream of newcomers (one every `4096 / pieces` seconds
/// on average, so the demand in bytes per second stays that of 1 GiB every 4 s) who leave on completion, 2 MiB/s up.
pub fn more_seeds(scale: &Scale, seeds: usize) -> SwarmConfig {
    let mean = Duration::from_secs_f64(4.0 * f64::from(scale.pieces) / 4096.0);
    let groups = vec![
        seeds_group(seeds, Departure::Never),
        Group {
            name: "newcomer".into(),
            count: scale.leechers,
            seed: false,
            upload: mib(2.0),
            download: DOWN,
            arrivals: Arrivals::Poisson {
                start: Duration::from_secs(1),
                mean,
            },
            departure: Departure::AfterDone(Duration::ZERO),
        },
    ];
    swarm(scale, groups)
}

/// The flash-crowd figures of one run.
#[derive(Debug, Clone)]
pub struct CrowdFigures {
    /// Seconds from the first arrival until the last leecher completed.
    pub all_done: f64,
    pub bound: f64,
    /// The original seed's upload in files.
    pub seed_upload: f64,
    pub mean_download: f64,
    /// Payload the leechers received beyond one copy each (endgame duplicates, blocks that crossed a
    /// cancel), as a fraction of what they needed.
    pub duplicates: f64,
    /// Seconds from the first arrival until the leechers held every piece between them.
    pub copy_out: f64,
    pub done: usize,
    pub leechers: usize,
}

impl CrowdFigures {
    pub fn ratio(&self) -> f64 {
        self.all_done / self.bound
    }
}

pub fn crowd_figures(run: &Run) -> CrowdFigures {
    let cfg = &run.config;
    let file = cfg.file_size() as f64;
    let leechers: Vec<_> = run.outcome.peers.iter().filter(|p| !p.seed).collect();
    let uploads: Vec<f64> = cfg
        .groups
        .iter()
        .filter(|g| !g.seed)
        .flat_map(|g| std::iter::repeat_n(g.upload, g.count))
        .collect();
    let seed_up = cfg
        .groups
        .iter()
        .filter(|g| g.seed)
        .map(|g| g.upload * g.count as f64)
        .sum();
    let min_down = cfg
        .groups
        .iter()
        .map(|g| g.download)
        .fold(f64::INFINITY, f64::min);
    let first = leechers
        .iter()
        .filter_map(|p| p.arrived)
        .min()
        .map_or(0.0, secs);
    let last = leechers
        .iter()
        .filter_map(|p| p.completed)
        .max()
        .map_or(0.0, secs);
    let times: Vec<f64> = leechers.iter().filter_map(|p| p.download_time()).collect();
    let received: f64 = leechers.iter().map(|p| p.downloaded as f64).sum();
    let needed = file * leechers.len() as f64;
    CrowdFigures {
        copy_out: run.outcome.copy_out.map_or(f64::NAN, secs) - first,
        duplicates: if needed > 0.0 {
            received / needed - 1.0
        } else {
            0.0
        },
        all_done: last - first,
        bound: fluid_lower_bound(file, seed_up, min_down, &uploads),
        seed_upload: run.outcome.peers.first().map_or(0, |p| p.uploaded) as f64 / file,
        mean_download: mean(&times),
        done: times.len(),
        leechers: leechers.len(),
    }
}

pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// The `q` quantile (0..=1) by the nearest rank.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// How many leechers had completed at each completion time: the curve of a flash crowd.
pub fn completions(outcome: &Outcome) -> Vec<(f64, f64)> {
    let mut done: Vec<f64> = outcome
        .peers
        .iter()
        .filter(|p| !p.seed)
        .filter_map(|p| p.completed.map(secs))
        .collect();
    done.sort_by(f64::total_cmp);
    let mut points = vec![(0.0, 0.0)];
    points.extend(done.iter().enumerate().map(|(i, &t)| (t, (i + 1) as f64)));
    points
}
