//! A torrent's life cycle as its owner drives it: the phases (fetching metadata, queued, checking,
//! running, paused, finished, moving, error with a typed reason), the transitions between them, the
//! queue's download and seed slots, and the seeding clock the seed goal counts. Pure: time is passed
//! in and nothing is started here, so the rules are tested in virtual time; `managed::Client` starts
//! and stops the torrents the transitions ask for. Also the queue's order: how torrents are
//! moved in it.

use std::time::Instant;

use crate::seed_goal::{SeedClock, SeedGoal};

/// Where a torrent is in its life. `F` is why it is in state `error`: the owner's fault type, which
/// holds the engine's typed errors (`MagnetError`, `StartError`, `TorrentError`) and its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase<F> {
    FetchingMetadata,
    Queued,
    Checking,
    Running,
    Paused,
    /// Its seed goal was reached (stopped until resumed).
    Finished,
    /// Its data is being moved to another directory (stopped meanwhile).
    Moving,
    Error(F),
}

impl<F> Phase<F> {
    /// Whether it holds a queue slot: started, or being checked before it runs.
    pub fn is_active(&self) -> bool {
        matches!(self, Phase::Running | Phase::Checking)
    }

    /// Where a torrent stopped for its owner's work (a new file selection, a move, a rename) goes
    /// afterwards: queued again when it was active or queued, else where it was.
    pub fn after_restart(self) -> Phase<F> {
        match self {
            Phase::Running | Phase::Checking | Phase::Queued => Phase::Queued,
            other => other,
        }
    }
}

/// One torrent's phase, the generation that tells a late start from a current one, whether it was
/// started past the queue's limits, and its seeding clock.
#[derive(Debug, Clone)]
pub struct Lifecycle<F> {
    phase: Phase<F>,
    /// Bumped on every start, metadata fetch and stop, so a start or fetch that finishes late knows
    /// it was overtaken.
    generation: u64,
    /// A magnet link's metadata fetch is to be started (at the next queue pass).
    fetch_pending: bool,
    /// Started past the queue's limits (until it stops; not kept across restarts).
    start_now: bool,
    seeding: SeedClock,
}

/// What the queue has the owner do for a torrent ([`Queue::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Look for a magnet link's metadata; then [`Lifecycle::metadata_arrived`] or
    /// [`Lifecycle::fetch_failed`] with this generation.
    FetchMetadata { generation: u64 },
    /// Check and start the torrent; then [`Lifecycle::started`] with this generation, or
    /// [`Lifecycle::fail`].
    Start { generation: u64 },
}

impl<F> Lifecycle<F> {
    /// A torrent as it is loaded or added: paused, waiting for its metadata, finished (its seed goal
    /// met in an earlier session), or queued.
    pub fn new(paused: bool, has_metadata: bool, finished: bool) -> Lifecycle<F> {
        let phase = if paused {
            Phase::Paused
        } else if !has_metadata {
            Phase::FetchingMetadata
        } else if finished {
            Phase::Finished
        } else {
            Phase::Queued
        };
        Lifecycle {
            fetch_pending: matches!(phase, Phase::FetchingMetadata),
            phase,
            generation: 0,
            start_now: false,
            seeding: SeedClock::default(),
        }
    }

    pub fn phase(&self) -> &Phase<F> {
        &self.phase
    }

    /// The metadata arrived: queued, unless it was stopped meanwhile. Metadata is good whichever fetch
    /// found it, so a late fetch counts too while the torrent still waits for it.
    pub fn metadata_arrived(&mut self) {
        if matches!(self.phase, Phase::FetchingMetadata) {
            self.phase = Phase::Queued;
            self.fetch_pending = false;
        }
    }

    /// The metadata fetch of `generation` failed: an error, unless that fetch was overtaken (the
    /// torrent was paused meanwhile, or resumed and fetches again); then `false` and nothing changes.
    pub fn fetch_failed(&mut self, generation: u64, fault: F) -> bool {
        if self.generation != generation || !matches!(self.phase, Phase::FetchingMetadata) {
            return false;
        }
        self.phase = Phase::Error(fault);
        true
    }

    /// Whether a metadata fetch of `generation` is still the one wanted.
    pub fn fetch_current(&self, generation: u64) -> bool {
        self.generation == generation && matches!(self.phase, Phase::FetchingMetadata)
    }

    /// The metadata fetch, the start, or the owner's work on it failed.
    pub fn fail(&mut self, fault: F) {
        self.phase = Phase::Error(fault);
    }

    /// A start of `generation` finished: running, unless it was stopped or restarted meanwhile (then
    /// `false`, and the owner stops what it started).
    pub fn started(&mut self, generation: u64) -> bool {
        if self.generation != generation || !matches!(self.phase, Phase::Checking) {
            return false;
        }
        self.phase = Phase::Running;
        true
    }

    /// The start of `generation` failed: an error, unless that start was overtaken (then `false`).
    pub fn start_failed(&mut self, generation: u64, fault: F) -> bool {
        if self.generation != generation || !matches!(self.phase, Phase::Checking) {
            return false;
        }
        self.phase = Phase::Error(fault);
        true
    }

    /// Stopped, to `to` (paused, finished, queued at shutdown, error); a start under way is overtaken.
    /// Returns the whole seconds seeded since the last fold, for the owner's total.
    pub fn stop(&mut self, to: Phase<F>, now: Instant) -> u64 {
        self.generation += 1;
        self.phase = to;
        self.start_now = false;
        self.fetch_pending = false;
        self.seeding.fold(now, true)
    }

    /// Resumed by its owner (with `now`: past the queue's limits): queued again from paused,
    /// finished or error, or its metadata looked for again when it has none yet.
    pub fn resume(&mut self, has_metadata: bool, now: bool) {
        self.start_now = now;
        if matches!(
            self.phase,
            Phase::Paused | Phase::Finished | Phase::Error(_)
        ) {
            self.phase = if has_metadata {
                Phase::Queued
            } else {
                self.fetch_pending = true;
                Phase::FetchingMetadata
            };
        }
    }

    /// Its data starts moving to another directory (it is stopped already).
    pub fn begin_move(&mut self) {
        self.phase = Phase::Moving;
    }

    /// The move is over (done or undone): paused, to be restored by the owner.
    pub fn move_ended(&mut self) {
        self.phase = Phase::Paused;
    }

    /// Back to where it was before a stop for the owner's work ([`Phase::after_restart`]).
    pub fn restore(&mut self, was: Phase<F>) {
        self.phase = was.after_restart();
    }

    /// The same, unless something moved it on meanwhile (it is no longer paused).
    pub fn restore_if_paused(&mut self, was: Phase<F>) {
        if matches!(self.phase, Phase::Paused) {
            self.restore(was);
        }
    }

    /// Whole seconds seeded since the last fold, for the owner's total; the clock keeps running.
    pub fn fold_seeding(&mut self, now: Instant) -> u64 {
        self.seeding.fold(now, false)
    }

    /// Whole seconds seeded and not folded yet.
    pub fn unfolded_seeding(&self, now: Instant) -> u64 {
        self.seeding.unfolded(now)
    }

    /// A running torrent that has every wanted piece seeds from `now`: whether `goal` is met, with
    /// `uploaded` of `wanted` bytes and `earlier_secs` seeded before (folded).
    pub fn seed_goal_reached(
        &mut self,
        goal: &SeedGoal,
        uploaded: u64,
        wanted: u64,
        earlier_secs: u64,
        now: Instant,
    ) -> bool {
        self.seeding
            .goal_reached(goal, uploaded, wanted, earlier_secs, now)
    }
}

/// What the owner sees of a started torrent at a review ([`Lifecycle::review`]).
#[derive(Debug, Clone)]
pub struct Observed<F> {
    /// Why the engine stopped it by itself (a disk error), if it did.
    pub error: Option<F>,
    /// It has every wanted piece.
    pub complete: bool,
    /// Bytes uploaded in all its sessions, and the bytes of its wanted files.
    pub uploaded: u64,
    pub wanted: u64,
}

impl<F> Lifecycle<F> {
    /// The periodic review of a running torrent: where it should stop to, if anywhere: in `error`
    /// when the engine stopped it by itself, `Finished` once a complete torrent meets its seed `goal`
    /// (`earlier_secs` seeded in earlier sessions, folded). The owner then stops it with
    /// [`Lifecycle::stop`].
    pub fn review(
        &mut self,
        seen: Observed<F>,
        goal: &SeedGoal,
        earlier_secs: u64,
        now: Instant,
    ) -> Option<Phase<F>> {
        if let Some(fault) = seen.error {
            return Some(Phase::Error(fault));
        }
        let met = seen.complete
            && self.seed_goal_reached(goal, seen.uploaded, seen.wanted, earlier_secs, now);
        met.then_some(Phase::Finished)
    }
}

/// The queue's slots: at most `max_downloads` incomplete and `max_seeds` complete torrents active at
/// once. One pass over the torrents in queue order: first [`Queue::count`] each, then
/// [`Queue::admit`] each.
#[derive(Debug, Clone)]
pub struct Queue {
    max_downloads: usize,
    max_seeds: usize,
    downloads: usize,
    seeds: usize,
}

impl Queue {
    pub fn new(max_downloads: usize, max_seeds: usize) -> Queue {
        Queue {
            max_downloads,
            max_seeds,
            downloads: 0,
            seeds: 0,
        }
    }

    /// An active torrent takes its slot (`complete`: a seed's).
    pub fn count<F>(&mut self, torrent: &Lifecycle<F>, complete: bool) {
        if torrent.phase.is_active() {
            *self.slots(complete) += 1;
        }
    }

    /// What the torrent should do now, its transition made: a metadata fetch not yet started starts
    /// (no slot needed), a queued torrent starts checking while there is a free slot of its kind, or
    /// past the limits when started with `now`.
    pub fn admit<F>(&mut self, torrent: &mut Lifecycle<F>, complete: bool) -> Option<Step> {
        match torrent.phase {
            Phase::FetchingMetadata if torrent.fetch_pending => {
                torrent.fetch_pending = false;
                torrent.generation += 1;
                Some(Step::FetchMetadata {
                    generation: torrent.generation,
                })
            }
            Phase::Queued => {
                let max = if complete {
                    self.max_seeds
                } else {
                    self.max_downloads
                };
                let taken = self.slots(complete);
                if *taken >= max && !torrent.start_now {
                    return None;
                }
                *taken += 1;
                torrent.phase = Phase::Checking;
                torrent.generation += 1;
                Some(Step::Start {
                    generation: torrent.generation,
                })
            }
            _ => None,
        }
    }

    fn slots(&mut self, complete: bool) -> &mut usize {
        if complete {
            &mut self.seeds
        } else {
            &mut self.downloads
        }
    }
}

/// How `queue-move-*` (and the API's `queue_position`) move torrents in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMove {
    Top,
    Up,
    Down,
    Bottom,
    /// To this position (0 first; past the end: last).
    To(usize),
}

impl QueueMove {
    pub fn parse(name: &str) -> Option<QueueMove> {
        match name {
            "top" => Some(QueueMove::Top),
            "up" => Some(QueueMove::Up),
            "down" => Some(QueueMove::Down),
            "bottom" => Some(QueueMove::Bottom),
            _ => None,
        }
    }
}

/// The queue `order` with the items `moved` picks moved as `how` says, the others keeping their
/// relative order (as Transmission moves a set of torrents: each one step, or all to one end).
pub fn reorder<T: Clone>(order: &[T], moved: impl Fn(&T) -> bool, how: QueueMove) -> Vec<T> {
    let mut out = order.to_vec();
    match how {
        QueueMove::Top | QueueMove::Bottom => {
            let (picked, rest): (Vec<T>, Vec<T>) = order.iter().cloned().partition(|t| moved(t));
            out = if how == QueueMove::Top {
                picked.into_iter().chain(rest).collect()
            } else {
                rest.into_iter().chain(picked).collect()
            };
        }
        QueueMove::Up => {
            for i in 1..out.len() {
                if moved(&out[i]) && !moved(&out[i - 1]) {
                    out.swap(i, i - 1);
                }
            }
        }
        QueueMove::Down => {
            for i in (0..out.len().saturating_sub(1)).rev() {
                if moved(&out[i]) && !moved(&out[i + 1]) {
                    out.swap(i, i + 1);
                }
            }
        }
        QueueMove::To(position) => {
            let (picked, mut rest): (Vec<T>, Vec<T>) =
                order.iter().cloned().partition(|t| moved(t));
            let at = position.min(rest.len());
            rest.splice(at..at, picked);
            out = rest;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type L = Lifecycle<String>;

    fn ids(order: &[u8], moved: &[u8], how: QueueMove) -> Vec<u8> {
        reorder(order, |x| moved.contains(x), how)
    }

    #[test]
    fn queue_moves_keep_the_others_in_order() {
        let q = [1, 2, 3, 4, 5];
        assert_eq!(ids(&q, &[4], QueueMove::Top), [4, 1, 2, 3, 5]);
        assert_eq!(ids(&q, &[2, 4], QueueMove::Top), [2, 4, 1, 3, 5]);
        assert_eq!(ids(&q, &[2, 4], QueueMove::Bottom), [1, 3, 5, 2, 4]);
        assert_eq!(ids(&q, &[3], QueueMove::Up), [1, 3, 2, 4, 5]);
        assert_eq!(ids(&q, &[1], QueueMove::Up), q);
        assert_eq!(
            ids(&q, &[1, 2], QueueMove::Up),
            q,
            "a block at the top stays"
        );
        assert_eq!(ids(&q, &[2, 4], QueueMove::Up), [2, 1, 4, 3, 5]);
        assert_eq!(ids(&q, &[2, 4], QueueMove::Down), [1, 3, 2, 5, 4]);
        assert_eq!(ids(&q, &[5], QueueMove::Down), q);
        assert_eq!(ids(&q, &[5], QueueMove::To(1)), [1, 5, 2, 3, 4]);
        assert_eq!(ids(&q, &[1], QueueMove::To(99)), [2, 3, 4, 5, 1]);
        assert_eq!(ids(&[], &[1], QueueMove::Down), Vec::<u8>::new());
    }

    /// One scheduling pass over `torrents` (each with whether it is complete), as the managed client makes it.
    fn pass(queue: (usize, usize), torrents: &mut [(L, bool)]) -> Vec<Option<Step>> {
        let mut q = Queue::new(queue.0, queue.1);
        for (t, complete) in torrents.iter() {
            q.count(t, *complete);
        }
        torrents
            .iter_mut()
            .map(|(t, complete)| q.admit(t, *complete))
            .collect()
    }

    fn start(t: &mut L, generation: u64) {
        assert!(t.started(generation));
        assert_eq!(t.phase(), &Phase::Running);
    }

    #[test]
    fn a_torrent_begins_where_its_record_says() {
        assert_eq!(L::new(true, false, true).phase(), &Phase::Paused);
        assert_eq!(L::new(false, false, true).phase(), &Phase::FetchingMetadata);
        assert_eq!(L::new(false, true, true).phase(), &Phase::Finished);
        assert_eq!(L::new(false, true, false).phase(), &Phase::Queued);
    }

    #[test]
    fn the_queue_starts_downloads_and_seeds_in_their_own_slots_in_order() {
        let mut ts: Vec<(L, bool)> = (0..5)
            .map(|i| (L::new(false, true, false), i >= 3))
            .collect();
        let steps = pass((2, 1), &mut ts);
        let g = |generation| Some(Step::Start { generation });
        assert_eq!(steps, [g(1), g(1), None, g(1), None]);
        for i in [0, 1, 3] {
            assert_eq!(ts[i].0.phase(), &Phase::Checking, "{i}");
        }
        // Checking torrents hold their slots: nothing more starts.
        assert_eq!(pass((2, 1), &mut ts), [None; 5]);
        start(&mut ts[0].0, 1);
        // The first download finishes its goal: its slot goes to the next in the queue.
        let t0 = Instant::now();
        ts[0].0.stop(Phase::Finished, t0);
        assert_eq!(pass((2, 1), &mut ts), [None, None, g(1), None, None]);
        // Raised limits: the waiting seed starts.
        assert_eq!(pass((2, 2), &mut ts), [None, None, None, None, g(1)]);
    }

    #[test]
    fn start_now_passes_the_limits_until_it_stops() {
        let mut ts = vec![
            (L::new(false, true, false), false),
            (L::new(true, true, false), false),
        ];
        pass((1, 1), &mut ts);
        ts[1].0.resume(true, true);
        assert_eq!(
            pass((1, 1), &mut ts),
            [None, Some(Step::Start { generation: 1 })]
        );
        ts[1].0.stop(Phase::Paused, Instant::now());
        ts[1].0.resume(true, false);
        assert_eq!(pass((1, 1), &mut ts), [None, None], "a plain resume waits");
    }

    #[test]
    fn a_start_overtaken_by_a_stop_is_not_running() {
        let mut ts = vec![(L::new(false, true, false), false)];
        pass((1, 1), &mut ts);
        let t = &mut ts[0].0;
        t.stop(Phase::Paused, Instant::now());
        assert!(!t.started(1), "paused while checking");
        assert_eq!(t.phase(), &Phase::Paused);
        // Resumed and started again: the first start's late end is still overtaken, the second's not.
        t.resume(true, false);
        assert_eq!(pass((1, 1), &mut ts), [Some(Step::Start { generation: 3 })]);
        let t = &mut ts[0].0;
        assert!(!t.started(1));
        start(t, 3);
        // A failed start overtaken by a pause leaves it paused; a current one is an error.
        t.stop(Phase::Paused, Instant::now());
        assert!(!t.start_failed(3, "disk".into()));
        assert_eq!(t.phase(), &Phase::Paused);
        t.resume(true, false);
        assert_eq!(pass((1, 1), &mut ts), [Some(Step::Start { generation: 5 })]);
        assert!(ts[0].0.start_failed(5, "disk".into()));
        assert_eq!(ts[0].0.phase(), &Phase::Error("disk".into()));
    }

    #[test]
    fn a_magnet_link_fetches_once_then_queues() {
        let mut ts = vec![(L::new(false, false, false), false)];
        let fetch = |generation| Some(Step::FetchMetadata { generation });
        assert_eq!(pass((0, 0), &mut ts), [fetch(1)]);
        assert_eq!(pass((0, 0), &mut ts), [None], "one fetch at a time");
        ts[0].0.metadata_arrived();
        assert_eq!(ts[0].0.phase(), &Phase::Queued);
        // Paused while fetching: the metadata's arrival leaves it paused.
        let mut t = L::new(false, false, false);
        t.stop(Phase::Paused, Instant::now());
        t.metadata_arrived();
        assert_eq!(t.phase(), &Phase::Paused);
        // A failed fetch is an error; resumed without metadata, it fetches again.
        let mut ts = vec![(L::new(false, false, false), false)];
        pass((1, 1), &mut ts);
        assert!(ts[0].0.fetch_failed(1, "nobody answered".into()));
        assert_eq!(ts[0].0.phase(), &Phase::Error("nobody answered".into()));
        assert_eq!(pass((1, 1), &mut ts), [None]);
        ts[0].0.resume(false, false);
        assert_eq!(pass((1, 1), &mut ts), [fetch(2)]);
    }

    /// A magnet link paused while its metadata is looked for, then resumed: the first fetch's late
    /// failure neither puts the paused torrent in error nor ends the second fetch.
    #[test]
    fn a_magnet_link_paused_and_resumed_while_fetching() {
        let mut ts = vec![(L::new(false, false, false), false)];
        let fetch = |generation| Some(Step::FetchMetadata { generation });
        assert_eq!(pass((1, 1), &mut ts), [fetch(1)]);
        let t = &mut ts[0].0;
        t.stop(Phase::Paused, Instant::now());
        assert!(!t.fetch_current(1));
        assert!(
            !t.fetch_failed(1, "timed out".into()),
            "overtaken by the pause"
        );
        assert_eq!(t.phase(), &Phase::Paused);
        assert_eq!(pass((1, 1), &mut ts), [None], "paused: no fetch");
        ts[0].0.resume(false, false);
        assert_eq!(pass((1, 1), &mut ts), [fetch(3)]);
        assert_eq!(pass((1, 1), &mut ts), [None], "one fetch at a time");
        let t = &mut ts[0].0;
        assert!(
            !t.fetch_failed(1, "timed out".into()),
            "the first fetch's end"
        );
        assert_eq!(t.phase(), &Phase::FetchingMetadata);
        assert!(t.fetch_current(3));
        t.metadata_arrived();
        assert_eq!(t.phase(), &Phase::Queued);
        assert_eq!(pass((1, 1), &mut ts), [Some(Step::Start { generation: 4 })]);
    }

    #[test]
    fn a_review_stops_on_errors_and_met_goals() {
        let t0 = Instant::now();
        let goal = SeedGoal {
            ratio: Some(1.0),
            time: None,
        };
        let seen = |error: Option<&str>, complete, uploaded| Observed {
            error: error.map(String::from),
            complete,
            uploaded,
            wanted: 100,
        };
        let mut t = L::new(false, true, false);
        assert_eq!(
            t.review(seen(None, false, 500), &goal, 0, t0),
            None,
            "incomplete"
        );
        assert_eq!(t.review(seen(None, true, 99), &goal, 0, t0), None);
        assert_eq!(
            t.review(seen(None, true, 100), &goal, 0, t0),
            Some(Phase::Finished)
        );
        assert_eq!(
            t.review(seen(Some("disk full"), true, 100), &goal, 0, t0),
            Some(Phase::Error("disk full".into()))
        );
        let none = SeedGoal::default();
        assert_eq!(t.review(seen(None, true, 1 << 40), &none, 0, t0), None);
    }

    #[test]
    fn resume_requeues_stopped_torrents_only() {
        for stopped in [Phase::Paused, Phase::Finished, Phase::Error("disk".into())] {
            let mut t = L::new(false, true, false);
            t.stop(stopped, Instant::now());
            t.resume(true, false);
            assert_eq!(t.phase(), &Phase::Queued);
        }
        let mut ts = vec![(L::new(false, true, false), false)];
        pass((1, 1), &mut ts);
        ts[0].0.resume(true, false);
        assert_eq!(ts[0].0.phase(), &Phase::Checking, "active: left alone");
        let mut t = L::new(false, true, false);
        t.begin_move();
        t.resume(true, false);
        assert_eq!(t.phase(), &Phase::Moving, "moving: left alone");
    }

    #[test]
    fn restarts_for_the_owners_work_requeue_active_torrents() {
        for (was, back) in [
            (Phase::Running, Phase::Queued),
            (Phase::Checking, Phase::Queued),
            (Phase::Queued, Phase::Queued),
            (Phase::Finished, Phase::Finished),
            (Phase::Error("x".to_string()), Phase::Error("x".to_string())),
        ] {
            let mut t = L::new(false, true, false);
            t.stop(Phase::Paused, Instant::now());
            t.begin_move();
            t.move_ended();
            t.restore_if_paused(was.clone());
            assert_eq!(t.phase(), &back);
            // Failed meanwhile: left in error.
            let mut t = L::new(false, true, false);
            t.fail("move".into());
            t.restore_if_paused(was);
            assert_eq!(t.phase(), &Phase::Error("move".into()));
        }
    }

    /// A torrent seeds in virtual time until its time goal, counting an earlier session's seconds,
    /// with the owner folding the clock into its total every 30 s (folding often loses nothing).
    #[test]
    fn the_seed_goal_stops_a_seed_in_virtual_time() {
        let t0 = Instant::now();
        let goal = SeedGoal {
            ratio: Some(2.0),
            time: Some(Duration::from_secs(600)),
        };
        let mut ts = vec![(L::new(false, true, false), true)];
        pass((1, 1), &mut ts);
        let t = &mut ts[0].0;
        start(t, 1);
        let mut total = 100; // seconds seeded in an earlier session
        let mut stopped_at = None;
        for tick in 0..1000u64 {
            let now = t0 + Duration::from_millis(tick * 1000 + 300);
            if t.seed_goal_reached(&goal, 0, 1 << 20, total, now) {
                total += t.stop(Phase::Finished, now);
                stopped_at = Some(tick);
                break;
            }
            if tick % 30 == 0 {
                total += t.fold_seeding(now);
            }
        }
        assert_eq!(stopped_at, Some(500));
        assert_eq!(total, 600);
        assert_eq!(t.phase(), &Phase::Finished);
        // The ratio suffices as well.
        let mut t = L::new(false, true, false);
        assert!(t.seed_goal_reached(&goal, 2 << 20, 1 << 20, 0, t0));
    }
}
