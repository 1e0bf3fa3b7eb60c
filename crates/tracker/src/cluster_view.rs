//! A node's short-lived view of the swarms it shares through a cluster, and its queue of writes.
//!
//! A hot swarm would cost a cluster round trip (and a script run on a master) per announce. Instead a
//! node keeps, per swarm, the sample of peers, the counts and the completed downloads the cluster last
//! returned (`Sample`), and answers announces (whatever their event) and scrapes from it while it is
//! younger than `cluster_view_ttl_ms`. An announce's own write is not skipped: it joins the `Queue`, and
//! every `cluster_flush_interval_ms` one script step per swarm carries all of that swarm's queued writes
//! (completions counted), its reply refreshing the view. So what one node learns, every node hands out
//! within the flush interval plus the view's time to live. Empty swarms are not kept, so the first peer
//! of a swarm is written at once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracker_proto::{Event, InfoHash, ScrapeStats};

use crate::store::{compact, Compact, Family};

/// One announce to send to the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub hash: InfoHash,
    pub peer: SocketAddr,
    pub left: u64,
    pub event: Event,
    pub want: usize,
    pub family: Family,
    /// Whether the announce may create the swarm (the node's per-source creation limit allows it).
    pub may_create: bool,
}

/// The answer to one announce.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    pub seeders: u32,
    pub leechers: u32,
    pub v4: Vec<u8>,
    pub v6: Vec<u8>,
}

/// The four sorted sets of a swarm, in the order of its keys: IPv4 seeders, IPv4 leechers, IPv6
/// seeders, IPv6 leechers.
pub const SETS: usize = 4;

fn bytes(c: &Compact) -> &[u8] {
    match c {
        Compact::V4(a) => a,
        Compact::V6(a) => a,
    }
}

/// One peer's write to its swarm.
#[derive(Debug, Clone, Copy)]
pub struct Update {
    pub member: Compact,
    /// The set it belongs in (index into `SETS`).
    pub set: u8,
    pub stop: bool,
    pub completed: bool,
    pub may_create: bool,
    /// Peers the announce wanted: a flush samples as many as the swarm's announcers asked for.
    pub want: u16,
}

impl Update {
    pub fn member(&self) -> &[u8] {
        bytes(&self.member)
    }
}

impl Job {
    pub fn update(&self) -> Update {
        let member = compact(self.peer);
        let v6 = matches!(member, Compact::V6(_));
        let leecher = self.left != 0;
        Update {
            member,
            set: u8::from(v6) * 2 + u8::from(leecher),
            stop: self.event == Event::Stopped,
            completed: self.event == Event::Completed,
            may_create: self.may_create,
            want: u16::try_from(self.want).unwrap_or(u16::MAX),
        }
    }
}

/// A swarm as the cluster last described it: live peers per set, and up to `size` of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub counts: [u32; SETS],
    /// Compact addresses, concatenated (6 bytes each in sets 0 and 1, 18 in 2 and 3).
    pub peers: [Vec<u8>; SETS],
    /// Peers asked for per set (0 for the counts of a scrape, which hold no peers).
    pub size: usize,
    /// Completed downloads.
    pub completed: u32,
}

fn width(set: usize) -> usize {
    if set < 2 {
        6
    } else {
        18
    }
}

impl Sample {
    /// The swarm's scrape: seeders, leechers and completed downloads.
    pub fn stats(&self) -> ScrapeStats {
        let c = &self.counts;
        ScrapeStats {
            seeders: c[0] + c[2],
            leechers: c[1] + c[3],
            completed: self.completed,
        }
    }

    /// Whether it holds every peer an announce wanting `want` could be handed (one more than `want`,
    /// as the announcer itself may be among them).
    pub fn covers(&self, want: usize) -> bool {
        want < self.size
            || (0..SETS).all(|k| self.peers[k].len() / width(k) >= self.counts[k] as usize)
    }

    /// The answer to `job`: the counts, and up to `job.want` peers other than the announcer from a
    /// place chosen by `rnd` (leechers, and seeders too for a leecher), as the cluster's script picks.
    pub fn answer(&self, job: &Job, rnd: usize) -> Answer {
        let c = &self.counts;
        let mut answer = Answer {
            seeders: c[0] + c[2],
            leechers: c[1] + c[3],
            ..Answer::default()
        };
        if job.event == Event::Stopped {
            return answer;
        }
        let me = compact(job.peer);
        let me = bytes(&me);
        let seeder = job.left == 0;
        let mut taken = 0;
        for k in 0..SETS {
            let v6 = k >= 2;
            let family_wanted = match job.family {
                Family::V4 => !v6,
                Family::V6 => v6,
                Family::Both => true,
            };
            if !family_wanted || (seeder && k % 2 == 0) {
                continue;
            }
            let w = width(k);
            let n = self.peers[k].len() / w;
            let out = if v6 { &mut answer.v6 } else { &mut answer.v4 };
            for i in 0..n {
                if taken >= job.want {
                    return answer;
                }
                let at = (rnd.wrapping_add(i) % n) * w;
                let p = &self.peers[k][at..at + w];
                if p != me {
                    out.extend_from_slice(p);
                    taken += 1;
                }
            }
        }
        answer
    }
}

/// Shards of the view, each locked on its own.
const VIEW_SHARDS: usize = 64;
/// Most swarms in the view; past it a swarm is not cached and its announces go to the cluster.
pub const MAX_VIEWS: usize = 1 << 20;

/// One shard of the view: each swarm's sample, when it was asked for, and whether a flush carrying
/// the swarm's writes is asking again now.
type ViewShard = Mutex<HashMap<InfoHash, (Instant, Arc<Sample>, bool)>>;

/// Longest a sample past its time to live still answers while a flush refreshes it (see `Views`).
pub const MAX_REFRESH_GRACE: Duration = Duration::from_secs(1);

/// A swarm's view lives `ttl`, and a flush carrying the swarm's writes refreshes it; a hot swarm's
/// view would otherwise lapse every flush for as long as the flush takes (hundreds of ms under load,
/// thousands of steps), and every announce meanwhile would cost a step of its own. So while its
/// refresh is in flight a sample answers up to `grace` longer (the smaller of `ttl` and
/// `MAX_REFRESH_GRACE`): the round trip the staleness bound already counts, bounded.
pub struct Views {
    ttl: Duration,
    grace: Duration,
    shards: Box<[ViewShard]>,
}

impl Views {
    pub fn new(ttl: Duration) -> Views {
        Views {
            ttl,
            grace: ttl.min(MAX_REFRESH_GRACE),
            shards: (0..VIEW_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, hash: &InfoHash) -> &ViewShard {
        &self.shards[usize::from(hash[0]) % VIEW_SHARDS]
    }

    fn live(&self, at: Instant, refreshing: bool, now: Instant) -> bool {
        let age = now.saturating_duration_since(at);
        age < self.ttl || (refreshing && age < self.ttl + self.grace)
    }

    /// The swarm's sample if it is younger than the time to live (or its grace, while refreshed).
    pub fn fresh(&self, hash: &InfoHash, now: Instant) -> Option<Arc<Sample>> {
        let shard = self.shard(hash).lock();
        let (at, sample, refreshing) = shard.get(hash)?;
        self.live(*at, *refreshing, now).then(|| sample.clone())
    }

    /// Marks the swarms a flush is about to refresh (until their reply replaces the sample).
    pub fn refreshing<'a>(&self, hashes: impl IntoIterator<Item = &'a InfoHash>) {
        for hash in hashes {
            if let Some(entry) = self.shard(hash).lock().get_mut(hash) {
                entry.2 = true;
            }
        }
    }

    /// Records what the cluster said of a swarm at `at` (when the request was sent, so age is never
    /// underestimated).
    pub fn put(&self, hash: InfoHash, sample: Sample, at: Instant) {
        self.insert(hash, sample, at, true);
    }

    /// Records a scrape's counts (a sample without peers) unless the view holds a fresh sample, which
    /// says as much and more.
    pub fn put_counts(&self, hash: InfoHash, sample: Sample, at: Instant) {
        self.insert(hash, sample, at, false);
    }

    fn insert(&self, hash: InfoHash, sample: Sample, at: Instant, over_fresh: bool) {
        // An empty swarm is not kept: the first peer to join it (or one its creation limit turned
        // away) is written at once, and an unknown info-hash costs no memory.
        if self.ttl.is_zero() || sample.counts == [0; SETS] {
            return;
        }
        let mut shard = self.shard(&hash).lock();
        match shard.get(&hash) {
            Some((then, _, _)) if !over_fresh && at.duration_since(*then) < self.ttl => {}
            Some(_) => {
                shard.insert(hash, (at, Arc::new(sample), false));
            }
            None if shard.len() < MAX_VIEWS / VIEW_SHARDS => {
                shard.insert(hash, (at, Arc::new(sample), false));
            }
            None => {}
        }
    }

    /// Forgets samples past their time to live (and grace).
    pub fn prune(&self, now: Instant) {
        for shard in self.shards.iter() {
            shard
                .lock()
                .retain(|_, (at, _, refreshing)| self.live(*at, *refreshing, now));
        }
    }
}

/// Writes waiting for the next flush, by swarm, bounded in number.
pub struct Queue {
    max: usize,
    inner: Mutex<(HashMap<InfoHash, Vec<Update>>, usize)>,
    /// Set while the queue is full, so the overflow is logged once, not per announce.
    overflowing: AtomicBool,
    /// Announces sent to the cluster at once because the queue was full.
    pub full: AtomicU64,
    /// Writes dropped: a flush failed and the queue had no room to keep them for the next.
    pub lost: AtomicU64,
    /// Woken when the queue is half full, to flush before the interval is up.
    pub wake: tokio::sync::Notify,
}

impl Queue {
    pub fn new(max: usize) -> Queue {
        Queue {
            max,
            inner: Mutex::default(),
            overflowing: AtomicBool::new(false),
            full: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Queues a write; false (counted, logged once per overflow) if the queue is full.
    pub fn push(&self, hash: InfoHash, update: Update) -> bool {
        let mut inner = self.inner.lock();
        if inner.1 >= self.max {
            drop(inner);
            self.full.fetch_add(1, Ordering::Relaxed);
            if !self.overflowing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "cluster write queue full ({} writes): announces go to the cluster one by one \
                     until it drains",
                    self.max
                );
            }
            return false;
        }
        inner.0.entry(hash).or_default().push(update);
        inner.1 += 1;
        if inner.1 == self.max / 2 {
            self.wake.notify_one();
        }
        true
    }

    pub fn len(&self) -> usize {
        self.inner.lock().1
    }

    /// Takes every queued write.
    pub fn take(&self) -> HashMap<InfoHash, Vec<Update>> {
        let mut inner = self.inner.lock();
        inner.1 = 0;
        self.overflowing.store(false, Ordering::Relaxed);
        std::mem::take(&mut inner.0)
    }

    /// Takes a swarm's queued writes, for a call that goes to its swarm anyway (the flush then has
    /// one swarm less to send).
    pub fn take_swarm(&self, hash: &InfoHash) -> Vec<Update> {
        let mut inner = self.inner.lock();
        let taken = inner.0.remove(hash).unwrap_or_default();
        inner.1 -= taken.len();
        taken
    }

    /// Puts back writes a flush could not deliver, as many as fit; the rest are counted as lost.
    pub fn requeue(&self, hash: InfoHash, mut updates: Vec<Update>) -> usize {
        let mut inner = self.inner.lock();
        let room = self.max.saturating_sub(inner.1);
        let lost = updates.len().saturating_sub(room);
        updates.truncate(room);
        inner.1 += updates.len();
        if !updates.is_empty() {
            let queued = inner.0.entry(hash).or_default();
            // Older writes first, so a newer one queued meanwhile still wins.
            updates.append(queued);
            *queued = updates;
        }
        self.lost.fetch_add(lost as u64, Ordering::Relaxed);
        lost
    }
}

/// Requests waiting on the cluster, bounded: what a UDP worker hands over instead of waiting itself.
pub struct Waiting {
    now: AtomicUsize,
    max: usize,
    /// Requests turned away (answered busy) because `max` were waiting.
    pub busy: AtomicU64,
}

impl Waiting {
    pub fn new(max: usize) -> Waiting {
        Waiting {
            now: AtomicUsize::new(0),
            max,
            busy: AtomicU64::new(0),
        }
    }

    /// Takes room for `n` requests; false (all `n` counted busy) if that would pass the bound. Each
    /// request taken is given back by `release` once answered.
    pub fn reserve(&self, n: usize) -> bool {
        let max = self.max;
        let taken = self
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w + n <= max).then_some(w + n)
            })
            .is_ok();
        if !taken {
            self.busy.fetch_add(n as u64, Ordering::Relaxed);
        }
        taken
    }

    pub fn release(&self, n: usize) {
        self.now.fetch_sub(n, Ordering::AcqRel);
    }

    /// Requests waiting now.
    pub fn count(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }
}

/// A swarm's queued writes reduced to one per peer (its last), and how many completions they carry.
pub fn coalesce(updates: &[Update]) -> (Vec<Update>, u64) {
    let completed = updates.iter().filter(|u| u.completed).count() as u64;
    // Most swarms have a write or two: a scan costs less than a set.
    if updates.len() <= 8 {
        let out = updates
            .iter()
            .enumerate()
            .filter(|(i, u)| !updates[i + 1..].iter().any(|v| v.member() == u.member()))
            .map(|(_, u)| *u)
            .collect();
        return (out, completed);
    }
    let mut seen = HashSet::new();
    let mut out: Vec<Update> = updates
        .iter()
        .rev()
        .filter(|u| seen.insert(u.member()))
        .copied()
        .collect();
    out.reverse();
    (out, completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(port: u16, left: u64, event: Event, want: usize) -> Job {
        Job {
            hash: [1; 20].into(),
            peer: SocketAddr::from(([10, 0, 0, 1], port)),
            left,
            event,
            want,
            family: Family::Both,
            may_create: true,
        }
    }

    fn member(port: u16) -> Vec<u8> {
        bytes(&compact(SocketAddr::from(([10, 0, 0, 1], port)))).to_vec()
    }

    #[test]
    fn a_sample_answers_without_the_announcer_and_without_seeders_for_a_seeder() {
        let mut sample = Sample {
            counts: [1, 2, 0, 0],
            size: 51,
            ..Sample::default()
        };
        sample.peers[0] = member(1);
        sample.peers[1] = [member(2), member(3)].concat();
        let leecher = sample.answer(&job(3, 5, Event::None, 50), 7);
        assert_eq!((leecher.seeders, leecher.leechers), (1, 2));
        let mut got: Vec<_> = leecher.v4.chunks(6).map(<[u8]>::to_vec).collect();
        got.sort();
        assert_eq!(got, vec![member(1), member(2)]);
        let seeder = sample.answer(&job(9, 0, Event::None, 50), 0);
        assert_eq!(seeder.v4.len(), 12, "only the two leechers");
        assert_eq!(sample.answer(&job(9, 5, Event::None, 1), 0).v4.len(), 6);
        assert!(sample.covers(50));
        sample.counts[1] = 500;
        assert!(!sample.covers(60), "more peers than sampled");
    }

    #[test]
    fn a_view_is_fresh_only_for_its_time_to_live() {
        let views = Views::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let one = Sample {
            counts: [1, 0, 0, 0],
            ..Sample::default()
        };
        views.put([1; 20].into(), one.clone(), t0);
        assert!(views.fresh(&[1; 20].into(), t0).is_some());
        assert!(views
            .fresh(&[1; 20].into(), t0 + Duration::from_millis(100))
            .is_none());
        views.prune(t0 + Duration::from_secs(1));
        assert!(views.fresh(&[1; 20].into(), t0).is_none(), "pruned");
        // An empty swarm is not kept; a scrape's counts do not replace a fresh sample.
        views.put([2; 20].into(), Sample::default(), t0);
        assert!(views.fresh(&[2; 20].into(), t0).is_none());
        let sampled = Sample {
            size: 51,
            ..one.clone()
        };
        views.put([3; 20].into(), sampled.clone(), t0);
        views.put_counts([3; 20].into(), one.clone(), t0);
        assert_eq!(*views.fresh(&[3; 20].into(), t0).unwrap(), sampled);
        let later = t0 + Duration::from_millis(150);
        views.put_counts([3; 20].into(), one.clone(), later);
        assert_eq!(
            *views.fresh(&[3; 20].into(), later).unwrap(),
            one,
            "stale: replaced"
        );
    }

    #[test]
    fn a_view_being_refreshed_answers_past_its_time_to_live_within_the_grace() {
        let views = Views::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let one = Sample {
            counts: [1, 0, 0, 0],
            ..Sample::default()
        };
        let (hot, cold): (InfoHash, InfoHash) = ([1; 20].into(), [2; 20].into());
        views.put(hot, one.clone(), t0);
        views.put(cold, one.clone(), t0);
        views.refreshing([&hot]);
        let late = t0 + Duration::from_millis(150);
        assert!(views.fresh(&hot, late).is_some(), "refresh in flight");
        assert!(views.fresh(&cold, late).is_none(), "no refresh: lapsed");
        views.prune(late);
        assert!(views.fresh(&hot, late).is_some(), "kept by the prune");
        assert!(
            views.fresh(&hot, t0 + Duration::from_millis(200)).is_none(),
            "grace bounded (here by the TTL)"
        );
        // The reply replaces the sample, and the mark with it.
        views.put(hot, one, late);
        assert!(views
            .fresh(&hot, late + Duration::from_millis(150))
            .is_none());
    }

    #[test]
    fn waiting_requests_are_bounded_and_released() {
        let waiting = Waiting::new(10);
        assert!(waiting.reserve(6));
        assert!(!waiting.reserve(5), "6 + 5 > 10");
        assert_eq!(waiting.busy.load(Ordering::Relaxed), 5);
        assert!(waiting.reserve(4));
        assert_eq!(waiting.count(), 10);
        waiting.release(6);
        assert!(waiting.reserve(5));
        assert_eq!(waiting.count(), 9);
    }

    #[test]
    fn coalescing_keeps_each_peers_last_write_in_order_whatever_their_number() {
        for repeat in [1, 3] {
            let ports: Vec<u16> = [1, 2, 1, 3, 2, 1].repeat(repeat);
            let updates: Vec<Update> = ports
                .iter()
                .map(|&p| job(p, 5, Event::Completed, 0).update())
                .collect();
            let (one_each, completed) = coalesce(&updates);
            let got: Vec<&[u8]> = one_each.iter().map(Update::member).collect();
            assert_eq!(
                got,
                [member(3), member(2), member(1)],
                "{} writes",
                ports.len()
            );
            assert_eq!(completed, ports.len() as u64);
        }
    }

    #[test]
    fn the_queue_is_bounded_and_coalesces_per_peer() {
        let queue = Queue::new(3);
        let hash: InfoHash = [1; 20].into();
        assert!(queue.push(hash, job(1, 5, Event::None, 0).update()));
        assert!(queue.push(hash, job(1, 0, Event::Completed, 0).update()));
        assert!(queue.push(hash, job(2, 5, Event::None, 0).update()));
        assert!(!queue.push(hash, job(3, 5, Event::None, 0).update()));
        assert_eq!(queue.full.load(Ordering::Relaxed), 1);
        let taken = queue.take();
        let (one_each, completed) = coalesce(&taken[&hash]);
        assert_eq!(completed, 1);
        assert_eq!(one_each.len(), 2);
        assert_eq!((one_each[0].member(), one_each[0].set), (&member(1)[..], 0));
        // A call to the swarm takes its queued writes.
        assert!(queue.push([2; 20].into(), job(5, 5, Event::None, 0).update()));
        assert_eq!(queue.take_swarm(&[2; 20].into()).len(), 1);
        assert!(queue.take_swarm(&[2; 20].into()).is_empty());
        assert_eq!(queue.len(), 0);
        // A failed flush's writes go back as far as there is room; the rest are counted.
        assert!(queue.push(hash, job(4, 5, Event::None, 0).update()));
        assert_eq!(queue.requeue(hash, taken[&hash].clone()), 1);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.lost.load(Ordering::Relaxed), 1);
    }
}
