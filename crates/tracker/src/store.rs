//! In-memory swarms: many lock shards keyed by info-hash, peers stored compactly in sorted vectors.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use smallvec::SmallVec;
use tracker_proto::{Event, InfoHash, ScrapeStats};

use crate::sources::{CreationLimiter, CreationLimits, Source};

/// A peer as the tracker keeps it: the compact address it is handed out as, whether it is a seeder,
/// and when it last announced. 12 bytes for IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Peer<const N: usize> {
    addr: [u8; N],
    seeder: bool,
    last_seen: u32,
}

/// Peers sorted by address; up to two live inline, so the many one-peer swarms need no heap block.
type Peers<const N: usize> = SmallVec<[Peer<N>; 2]>;

/// One torrent's peers. IPv6 peers sit behind a pointer that is empty for IPv4-only swarms: that keeps a
/// table entry (info-hash and swarm) at 72 bytes instead of 120, which is most of the tracker's memory
/// and of its cache misses when there are many torrents.
#[derive(Debug, Default)]
struct Swarm {
    v4: Peers<6>,
    v6: Option<Box<Peers<18>>>,
    seeders: u32,
    completed: u32,
}

impl Swarm {
    fn v6_len(&self) -> usize {
        self.v6.as_ref().map_or(0, |v6| v6.len())
    }

    fn leechers(&self) -> u32 {
        (self.v4.len() + self.v6_len()) as u32 - self.seeders
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6_len() == 0
    }

    /// Drops the IPv6 block once its last peer is gone.
    fn release_empty_v6(&mut self) {
        if self.v6.as_ref().is_some_and(|v6| v6.is_empty()) {
            self.v6 = None;
        }
    }
}

/// Limits that keep memory bounded whatever clients send.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_swarms: usize,
    pub max_peers_per_swarm: usize,
    pub max_numwant: usize,
    pub default_numwant: usize,
    /// Swarm creation per source (IPv4 address or IPv6 /64).
    pub creation: CreationLimits,
}

/// What an announce returns besides the peers it wrote out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceOutcome {
    pub seeders: u32,
    pub leechers: u32,
}

type Shard = HashMap<InfoHash, Swarm>;

pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    limits: StoreLimits,
    epoch: Instant,
    swarm_count: AtomicU64,
    creation: CreationLimiter,
}

pub fn compact(addr: SocketAddr) -> Compact {
    match addr {
        SocketAddr::V4(a) => {
            let mut b = [0u8; 6];
            b[..4].copy_from_slice(&a.ip().octets());
            b[4..].copy_from_slice(&a.port().to_be_bytes());
            Compact::V4(b)
        }
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => compact(SocketAddr::new(IpAddr::V4(v4), a.port())),
            None => {
                let mut b = [0u8; 18];
                b[..16].copy_from_slice(&a.ip().octets());
                b[16..].copy_from_slice(&a.port().to_be_bytes());
                Compact::V6(b)
            }
        },
    }
}

/// A peer address in BEP 23 compact form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compact {
    V4([u8; 6]),
    V6([u8; 18]),
}

/// Which peers to hand back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    Both,
}

thread_local! {
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new({
        let local = 0u8;
        let seed = (&local as *const u8 as u64) ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        seed | 1
    });
}

/// splitmix64: peer selection needs spread, not secrecy.
pub(crate) fn random() -> u64 {
    RNG.with(|state| {
        let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn upsert<const N: usize>(
    peers: &mut Peers<N>,
    addr: [u8; N],
    seeder: bool,
    now: u32,
    event: Event,
    cap: usize,
) -> (i32, bool) {
    // Returns the change in seeders and whether the peer was stored.
    match peers.binary_search_by(|p| p.addr.cmp(&addr)) {
        Ok(i) => {
            if event == Event::Stopped {
                let old = peers.remove(i);
                return (-i32::from(old.seeder), false);
            }
            let delta = i32::from(seeder) - i32::from(peers[i].seeder);
            peers[i].seeder = seeder;
            peers[i].last_seen = now;
            (delta, true)
        }
        Err(i) => {
            if event == Event::Stopped || peers.len() >= cap {
                return (0, false);
            }
            peers.insert(
                i,
                Peer {
                    addr,
                    seeder,
                    last_seen: now,
                },
            );
            (i32::from(seeder), true)
        }
    }
}

/// Appends up to `want` peers from a random starting point, never `exclude`. Seeders get no seeders.
fn select<const N: usize>(
    peers: &Peers<N>,
    exclude: Option<&[u8; N]>,
    requester_is_seeder: bool,
    want: usize,
    out: &mut Vec<u8>,
) -> usize {
    if peers.is_empty() || want == 0 {
        return 0;
    }
    let start = (random() % peers.len() as u64) as usize;
    let mut taken = 0;
    for i in 0..peers.len() {
        if taken == want {
            break;
        }
        let p = &peers[(start + i) % peers.len()];
        if Some(&p.addr) == exclude || (requester_is_seeder && p.seeder) {
            continue;
        }
        out.extend_from_slice(&p.addr);
        taken += 1;
    }
    taken
}

impl Store {
    pub fn new(shards: usize, limits: StoreLimits) -> Store {
        let shards = shards.max(1).next_power_of_two();
        Store {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            limits,
            epoch: Instant::now(),
            swarm_count: AtomicU64::new(0),
            creation: CreationLimiter::new(limits.creation),
        }
    }

    fn shard(&self, hash: &InfoHash) -> &Mutex<Shard> {
        // Info-hashes are SHA digests: their bytes are already uniformly spread.
        let key = u64::from_le_bytes([
            hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
        ]);
        &self.shards[(key as usize) & (self.shards.len() - 1)]
    }

    fn now(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    /// Records an announce from `addr` and appends compact peers for it: IPv4 peers to `out4`, IPv6 peers
    /// to `out6`, as `family` asks.
    #[allow(clippy::too_many_arguments)]
    pub fn announce(
        &self,
        hash: &InfoHash,
        addr: SocketAddr,
        left: u64,
        event: Event,
        numwant: Option<u32>,
        family: Family,
        out4: &mut Vec<u8>,
        out6: &mut Vec<u8>,
    ) -> AnnounceOutcome {
        self.announce_with(hash, addr, left, event, numwant, family, out4, out6, true)
    }

    /// Whether an announce from `addr` may create the swarm `hash` in the cluster: yes if this node
    /// already has it, else if the per-source creation limit and `max_swarms` allow (which spends the
    /// source's token; the node's own copy is then recorded with `record_unlimited`).
    pub fn may_create(&self, hash: &InfoHash, addr: SocketAddr) -> bool {
        if self.shard(hash).lock().contains_key(hash) {
            return true;
        }
        let count = self.swarm_count.load(Ordering::Relaxed) as usize;
        count < self.limits.max_swarms
            && self.creation.allow(
                Source::of(addr.ip()),
                count >= self.creation.reserve_starts_at(self.limits.max_swarms),
            )
    }

    /// `announce` without the per-source creation limit (already applied by `may_create`).
    #[allow(clippy::too_many_arguments)]
    pub fn record_unlimited(
        &self,
        hash: &InfoHash,
        addr: SocketAddr,
        left: u64,
        event: Event,
        numwant: Option<u32>,
        family: Family,
        out4: &mut Vec<u8>,
        out6: &mut Vec<u8>,
    ) -> AnnounceOutcome {
        self.announce_with(hash, addr, left, event, numwant, family, out4, out6, false)
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn announce_with(
        &self,
        hash: &InfoHash,
        addr: SocketAddr,
        left: u64,
        event: Event,
        numwant: Option<u32>,
        family: Family,
        out4: &mut Vec<u8>,
        out6: &mut Vec<u8>,
        limit_creation: bool,
    ) -> AnnounceOutcome {
        let now = self.now();
        let seeder = left == 0;
        let me = compact(addr);
        let want = numwant
            .map_or(self.limits.default_numwant, |n| n as usize)
            .min(self.limits.max_numwant);
        let mut shard = self.shard(hash).lock();
        let swarm = match shard.entry(*hash) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let count = self.swarm_count.load(Ordering::Relaxed) as usize;
                if event == Event::Stopped
                    || count >= self.limits.max_swarms
                    || limit_creation
                        && !self.creation.allow(
                            Source::of(addr.ip()),
                            count >= self.creation.reserve_starts_at(self.limits.max_swarms),
                        )
                {
                    return AnnounceOutcome {
                        seeders: 0,
                        leechers: 0,
                    };
                }
                self.swarm_count.fetch_add(1, Ordering::Relaxed);
                e.insert(Swarm::default())
            }
        };
        let cap = self.limits.max_peers_per_swarm;
        let (delta, _) = match me {
            Compact::V4(a) => upsert(&mut swarm.v4, a, seeder, now, event, cap),
            Compact::V6(a) => {
                let v6 = swarm.v6.get_or_insert_with(Box::default);
                let change = upsert(v6, a, seeder, now, event, cap);
                swarm.release_empty_v6();
                change
            }
        };
        swarm.seeders = swarm.seeders.saturating_add_signed(delta);
        if event == Event::Completed {
            swarm.completed = swarm.completed.saturating_add(1);
        }
        let outcome = AnnounceOutcome {
            seeders: swarm.seeders,
            leechers: swarm.leechers(),
        };
        if event != Event::Stopped {
            let (ex4, ex6) = match &me {
                Compact::V4(a) => (Some(a), None),
                Compact::V6(a) => (None, Some(a)),
            };
            let mut remaining = want;
            if family != Family::V6 {
                remaining -= select(&swarm.v4, ex4, seeder, remaining, out4);
            }
            if family != Family::V4 {
                if let Some(v6) = &swarm.v6 {
                    select(v6, ex6, seeder, remaining, out6);
                }
            }
        }
        if swarm.is_empty() {
            shard.remove(hash);
            self.swarm_count.fetch_sub(1, Ordering::Relaxed);
        }
        outcome
    }

    pub fn scrape(&self, hash: &InfoHash) -> ScrapeStats {
        let shard = self.shard(hash).lock();
        shard
            .get(hash)
            .map(|s| ScrapeStats {
                seeders: s.seeders,
                completed: s.completed,
                leechers: s.leechers(),
            })
            .unwrap_or_default()
    }

    /// The counts of every swarm whose info-hash starts with `first`, sorted by info-hash: a full scrape
    /// walks the table in 256 such steps, so it never holds more than about 1/256 of it.
    pub fn scrape_first_byte(&self, first: u8, out: &mut Vec<(InfoHash, ScrapeStats)>) {
        // A shard is chosen by the low bits of the info-hash's first 8 bytes read little-endian, so the
        // first byte picks the low 8 bits of the shard index.
        let n = self.shards.len();
        let start = out.len();
        let shards: Box<dyn Iterator<Item = usize>> = if n >= 256 {
            Box::new((usize::from(first)..n).step_by(256))
        } else {
            Box::new(std::iter::once(usize::from(first) & (n - 1)))
        };
        for i in shards {
            let shard = self.shards[i].lock();
            out.extend(shard.iter().filter(|(h, _)| h[0] == first).map(|(h, s)| {
                (
                    *h,
                    ScrapeStats {
                        seeders: s.seeders,
                        completed: s.completed,
                        leechers: s.leechers(),
                    },
                )
            }));
        }
        out[start..].sort_unstable_by_key(|e| e.0);
    }

    /// Drops peers that have not announced for `timeout_secs`, and swarms left empty (and forgets
    /// sources that may create swarms at their full rate again).
    pub fn expire(&self, timeout_secs: u32) -> usize {
        self.creation.prune();
        let cutoff = self.now().saturating_sub(timeout_secs);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.retain(|_, swarm| {
                let before = swarm.v4.len() + swarm.v6_len();
                swarm.v4.retain(|p| p.last_seen >= cutoff);
                if let Some(v6) = &mut swarm.v6 {
                    v6.retain(|p| p.last_seen >= cutoff);
                }
                swarm.release_empty_v6();
                removed += before - swarm.v4.len() - swarm.v6_len();
                swarm.seeders = (swarm.v4.iter().filter(|p| p.seeder).count()
                    + swarm
                        .v6
                        .iter()
                        .flat_map(|v6| v6.iter())
                        .filter(|p| p.seeder)
                        .count()) as u32;
                if swarm.is_empty() {
                    self.swarm_count.fetch_sub(1, Ordering::Relaxed);
                    false
                } else {
                    true
                }
            });
        }
        removed
    }

    /// (swarms, seeders, leechers) right now.
    pub fn totals(&self) -> (u64, u64, u64) {
        let (mut swarms, mut seeders, mut leechers) = (0u64, 0u64, 0u64);
        for shard in self.shards.iter() {
            let shard = shard.lock();
            swarms += shard.len() as u64;
            for s in shard.values() {
                seeders += u64::from(s.seeders);
                leechers += u64::from(s.leechers());
            }
        }
        (swarms, seeders, leechers)
    }

    #[cfg(test)]
    fn age_all(&self, secs: u32) {
        for shard in self.shards.iter() {
            for swarm in shard.lock().values_mut() {
                for p in swarm.v4.iter_mut() {
                    p.last_seen = p.last_seen.saturating_sub(secs);
                }
                for p in swarm.v6.iter_mut().flat_map(|v6| v6.iter_mut()) {
                    p.last_seen = p.last_seen.saturating_sub(secs);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(
            16,
            StoreLimits {
                max_swarms: 3,
                max_peers_per_swarm: 100,
                max_numwant: 50,
                default_numwant: 30,
                creation: CreationLimits {
                    burst: 0,
                    per_minute: 0,
                    reserve_percent: 0,
                },
            },
        )
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, i], 6881))
    }

    fn peers(out: &[u8]) -> Vec<SocketAddr> {
        out.chunks(6)
            .map(|c| SocketAddr::from(([c[0], c[1], c[2], c[3]], u16::from_be_bytes([c[4], c[5]]))))
            .collect()
    }

    #[test]
    fn peers_are_compact() {
        assert_eq!(std::mem::size_of::<Peer<6>>(), 12);
        assert_eq!(std::mem::size_of::<Peer<18>>(), 24);
        assert_eq!(std::mem::size_of::<(InfoHash, Swarm)>(), 72);
    }

    #[test]
    fn announce_returns_others_never_self() {
        let s = store();
        let h = InfoHash::new([1u8; 20]);
        let (mut o4, mut o6) = (Vec::new(), Vec::new());
        for i in 1..=10 {
            o4.clear();
            s.announce(
                &h,
                addr(i),
                100,
                Event::Started,
                None,
                Family::Both,
                &mut o4,
                &mut o6,
            );
            assert!(!peers(&o4).contains(&addr(i)));
            assert_eq!(peers(&o4).len(), usize::from(i - 1));
        }
        o4.clear();
        let out = s.announce(
            &h,
            addr(3),
            0,
            Event::Completed,
            Some(5),
            Family::V4,
            &mut o4,
            &mut o6,
        );
        assert_eq!(
            out,
            AnnounceOutcome {
                seeders: 1,
                leechers: 9
            }
        );
        assert_eq!(peers(&o4).len(), 5);
        assert!(!peers(&o4).contains(&addr(3)));
        assert_eq!(
            s.scrape(&h),
            ScrapeStats {
                seeders: 1,
                completed: 1,
                leechers: 9
            }
        );
        // A seeder is given no seeders.
        s.announce(
            &h,
            addr(4),
            0,
            Event::None,
            None,
            Family::V4,
            &mut o4,
            &mut o6,
        );
        o4.clear();
        s.announce(
            &h,
            addr(3),
            0,
            Event::None,
            Some(50),
            Family::V4,
            &mut o4,
            &mut o6,
        );
        assert!(!peers(&o4).contains(&addr(4)));
        assert_eq!(peers(&o4).len(), 8);
    }

    #[test]
    fn selection_is_random() {
        let s = store();
        let h = InfoHash::new([2u8; 20]);
        let (mut o4, mut o6) = (Vec::new(), Vec::new());
        for i in 1..=40 {
            s.announce(
                &h,
                addr(i),
                1,
                Event::None,
                Some(0),
                Family::V4,
                &mut o4,
                &mut o6,
            );
        }
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..50 {
            o4.clear();
            s.announce(
                &h,
                addr(100),
                1,
                Event::None,
                Some(1),
                Family::V4,
                &mut o4,
                &mut o6,
            );
            firsts.insert(o4.clone());
        }
        assert!(firsts.len() > 10, "only {} distinct picks", firsts.len());
    }

    #[test]
    fn stopped_removes_and_swarm_limit_holds() {
        let s = store();
        let (mut o4, mut o6) = (Vec::new(), Vec::new());
        for h in 0..5u8 {
            s.announce(
                &[h; 20].into(),
                addr(1),
                1,
                Event::Started,
                None,
                Family::V4,
                &mut o4,
                &mut o6,
            );
        }
        assert_eq!(s.totals().0, 3, "max_swarms caps new swarms");
        s.announce(
            &[0; 20].into(),
            addr(1),
            1,
            Event::Stopped,
            None,
            Family::V4,
            &mut o4,
            &mut o6,
        );
        assert_eq!(s.totals().0, 2);
        assert_eq!(s.scrape(&[0; 20].into()), ScrapeStats::default());
    }

    #[test]
    fn ipv6_peers_stop_and_expire_like_ipv4_ones() {
        let mut s = store();
        s.epoch -= std::time::Duration::from_secs(1000);
        let (mut o4, mut o6) = (Vec::new(), Vec::new());
        let mut announce = |hash: u8, peer: SocketAddr, left: u64, event: Event| {
            s.announce(
                &[hash; 20].into(),
                peer,
                left,
                event,
                None,
                Family::Both,
                &mut o4,
                &mut o6,
            );
        };
        let v6 = |i: u16| -> SocketAddr { format!("[2001:db8::{i}]:5000").parse().unwrap() };
        for i in 1..=3 {
            announce(7, v6(i), 0, Event::Started);
        }
        announce(7, addr(1), 5, Event::Started);
        announce(7, v6(2), 0, Event::Stopped);
        // A swarm of IPv6 peers only goes away with its last peer, stopped or expired.
        announce(8, v6(9), 0, Event::Started);
        announce(8, v6(9), 0, Event::Stopped);
        assert_eq!(
            (
                s.scrape(&[7; 20].into()).seeders,
                s.scrape(&[7; 20].into()).leechers
            ),
            (2, 1)
        );
        assert_eq!(s.totals().0, 1);
        s.age_all(100);
        assert_eq!(s.expire(50), 3);
        assert_eq!(s.totals(), (0, 0, 0));
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let s = store();
        let h = InfoHash::new([3u8; 20]);
        let (mut o4, mut o6) = (Vec::new(), Vec::new());
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.9]:5000".parse().unwrap();
        s.announce(&h, v6, 1, Event::None, None, Family::Both, &mut o4, &mut o6);
        s.announce(
            &h,
            mapped,
            1,
            Event::None,
            None,
            Family::Both,
            &mut o4,
            &mut o6,
        );
        o4.clear();
        o6.clear();
        s.announce(
            &h,
            addr(1),
            1,
            Event::None,
            None,
            Family::Both,
            &mut o4,
            &mut o6,
        );
        assert_eq!(peers(&o4), vec![SocketAddr::from(([127, 0, 0, 9], 5000))]);
        assert_eq!(o6.len(), 18);
    }

    #[test]
    fn expiry_drops_silent_peers() {
        let mut s = store();
        // Pretend the tracker has run for a while, so ages can be subtracted.
        s.epoch -= std::time::Duration::from_secs(1000);
        let h = InfoHash::new([4u8; 20]);
        let (mut o4, mut o6) = (Vec::new(), Vec::new());
        s.announce(
            &h,
            addr(1),
            0,
            Event::None,
            None,
            Family::V4,
            &mut o4,
            &mut o6,
        );
        assert_eq!(s.expire(60), 0);
        s.age_all(120);
        assert_eq!(s.expire(60), 1);
        assert_eq!(s.totals(), (0, 0, 0));
    }

    #[test]
    fn full_scrape_steps_cover_every_swarm_in_order() {
        for shards in [1, 16, 256, 1024] {
            let s = Store::new(
                shards,
                StoreLimits {
                    max_swarms: 10_000,
                    ..store().limits
                },
            );
            let (mut o4, mut o6) = (Vec::new(), Vec::new());
            for i in 0..2000u32 {
                let mut h = [0u8; 20];
                h[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
                s.announce(
                    &h.into(),
                    addr(1),
                    1,
                    Event::None,
                    None,
                    Family::V4,
                    &mut o4,
                    &mut o6,
                );
            }
            let mut all = Vec::new();
            for first in 0..=255u8 {
                s.scrape_first_byte(first, &mut all);
            }
            assert_eq!(all.len(), 2000, "{shards} shards");
            assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}
