//! A token bucket for upload and download rate limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How much a limiter lets through at once after being idle, in seconds of its rate. A full second made
/// an idle seed send twice its cap in the first second, so N seeds serving a newcomer together beat N
/// times the cap (benches/seeds.sh); a tenth keeps the cap honest while requests a block over the
/// allowance simply wait their share, so the long-run rate is the same.
const BURST_SECS: f64 = 0.1;

/// A token bucket whose rate can change while it is in use; rate 0 means unlimited.
#[derive(Debug)]
pub struct Limiter {
    rate: AtomicU64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// `rate` bytes per second (0: unlimited), with up to `BURST_SECS` of burst.
    pub fn new(rate: u64) -> Limiter {
        Limiter {
            rate: AtomicU64::new(rate),
            state: Mutex::new((rate as f64 * BURST_SECS, Instant::now())),
        }
    }

    pub fn unlimited() -> Limiter {
        Limiter::new(0)
    }

    pub fn set_rate(&self, rate: Option<u64>) {
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn rate(&self) -> Option<u64> {
        Some(self.rate.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    /// What passes at once after an idle spell (`None` when unlimited): a reader that takes no more
    /// than this per read keeps what it hands on within the rate plus one burst.
    pub fn burst(&self) -> Option<usize> {
        self.rate().map(|r| (r as f64 * BURST_SECS) as usize)
    }

    /// Waits until `bytes` may pass.
    pub async fn acquire(&self, bytes: usize) {
        let Some(rate) = self.rate() else {
            return;
        };
        let rate = rate as f64;
        let wait = {
            let mut s = self.state.lock();
            let now = Instant::now();
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * rate).min(rate * BURST_SECS);
            s.1 = now;
            s.0 -= bytes as f64;
            if s.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.0 / rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_the_rate() {
        let limiter = Limiter::new(1_000_000);
        let start = Instant::now();
        for _ in 0..30 {
            limiter.acquire(100_000).await;
        }
        // 3 MB at 1 MB/s with a 0.1 MB burst: about 2.9 s.
        let secs = start.elapsed().as_secs_f64();
        assert!((2.7..3.5).contains(&secs), "{secs}");
    }

    #[tokio::test]
    async fn unlimited_never_waits_and_the_rate_can_change() {
        let limiter = Limiter::unlimited();
        let start = Instant::now();
        limiter.acquire(1 << 30).await;
        assert!(start.elapsed() < Duration::from_millis(50));
        limiter.set_rate(Some(1_000_000));
        assert_eq!(limiter.rate(), Some(1_000_000));
        limiter.acquire(1_000_000).await;
        let start = Instant::now();
        limiter.acquire(500_000).await;
        let secs = start.elapsed().as_secs_f64();
        assert!((0.3..0.8).contains(&secs), "{secs}");
    }
}
