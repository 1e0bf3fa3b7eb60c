//! Clients as a budget sees them: one IPv4 address, or one IPv6 /64 (what one subscriber usually gets, so
//! an attacker holding a /64 is still one source), and a per-source token bucket for creating swarms.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

/// An IPv4 address or the first 64 bits of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => Source::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Most sources with a bucket; past it, sources without one share a single overflow bucket.
pub const MAX_SOURCES: usize = 65_536;

/// How many new swarms a source may create.
#[derive(Debug, Clone, Copy)]
pub struct CreationLimits {
    /// New swarms a source may create at once; 0 turns the limit off.
    pub burst: u32,
    /// New swarms a source earns back per minute.
    pub per_minute: u32,
    /// Percent of `max_swarms` kept for sources that have created few swarms lately.
    pub reserve_percent: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Milliseconds since the limiter's epoch at the last refill.
    at: u64,
}

/// Token buckets of swarm creations, one per source, in a bounded table.
pub struct CreationLimiter {
    limits: CreationLimits,
    epoch: std::time::Instant,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    buckets: HashMap<Source, Bucket>,
    overflow: Option<Bucket>,
}

impl CreationLimiter {
    pub fn new(limits: CreationLimits) -> CreationLimiter {
        CreationLimiter {
            limits,
            epoch: std::time::Instant::now(),
            table: Mutex::new(Table::default()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn refill(&self, bucket: &mut Bucket, now: u64) {
        let earned =
            now.saturating_sub(bucket.at) as f64 * f64::from(self.limits.per_minute) / 60_000.0;
        bucket.tokens = (bucket.tokens + earned).min(f64::from(self.limits.burst));
        bucket.at = now;
    }

    /// Whether `source` may create a swarm now, taking a token if so. With `reserve_only` (the table is
    /// in its reserve), only a source that has spent less than half its burst may.
    pub fn allow(&self, source: Source, reserve_only: bool) -> bool {
        if self.limits.burst == 0 {
            return true;
        }
        let now = self.now_ms();
        let full = Bucket {
            tokens: f64::from(self.limits.burst),
            at: now,
        };
        let mut table = self.table.lock();
        let table = &mut *table;
        let bucket = if let Some(b) = table.buckets.get_mut(&source) {
            b
        } else if table.buckets.len() < MAX_SOURCES {
            table.buckets.entry(source).or_insert(full)
        } else {
            table.overflow.get_or_insert(full)
        };
        self.refill(bucket, now);
        let floor = if reserve_only {
            f64::from(self.limits.burst) / 2.0
        } else {
            1.0
        };
        if bucket.tokens >= floor.max(1.0) {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets sources whose bucket has filled up again (they are as if never seen).
    pub fn prune(&self) {
        let now = self.now_ms();
        let burst = f64::from(self.limits.burst);
        let mut table = self.table.lock();
        let table = &mut *table;
        table.buckets.retain(|_, b| {
            self.refill(b, now);
            b.tokens < burst
        });
        if let Some(b) = &mut table.overflow {
            self.refill(b, now);
            if b.tokens >= burst {
                table.overflow = None;
            }
        }
    }

    /// The number of swarms past which only sources in good standing may create more.
    pub fn reserve_starts_at(&self, max_swarms: usize) -> usize {
        let reserve = max_swarms as u128 * u128::from(self.limits.reserve_percent.min(100)) / 100;
        max_swarms - reserve as usize
    }

    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.table.lock().buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::V4(0x0a00_0001));
    }

    #[test]
    fn buckets_limit_each_source_and_keep_the_reserve_for_quiet_ones() {
        let l = CreationLimiter::new(CreationLimits {
            burst: 10,
            per_minute: 0,
            reserve_percent: 10,
        });
        let a = Source::V4(1);
        let b = Source::V4(2);
        assert_eq!((0..100).filter(|_| l.allow(a, false)).count(), 10);
        assert!(l.allow(b, true), "a quiet source may use the reserve");
        assert!(!l.allow(a, true));
        assert_eq!(
            (0..100).filter(|_| l.allow(b, true)).count(),
            5,
            "down to half its burst"
        );
        assert_eq!(l.reserve_starts_at(1000), 900);
        l.prune();
        assert_eq!(l.sources(), 2);
        let off = CreationLimiter::new(CreationLimits {
            burst: 0,
            per_minute: 0,
            reserve_percent: 0,
        });
        assert!((0..1000).all(|_| off.allow(a, false)));
    }
}
