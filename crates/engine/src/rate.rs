//! A token bucket for upload and download rate limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token bucket whose rate can change while it is in use; rate 0 means unlimited.
#[derive(Debug)]
pub struct Limiter {
    rate: AtomicU64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// `rate` bytes per second (0: unlimited), with up to one second of burst.
    pub fn new(rate: u64) -> Limiter {
        Limiter {
            rate: AtomicU64::new(rate),
            state: Mutex::new((rate as f64, Instant::now())),
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

    /// Waits until `bytes` may pass.
    pub async fn acquire(&self, bytes: usize) {
        let Some(rate) = self.rate() else {
            return;
        };
        let rate = rate as f64;
        let wait = {
            let mut s = self.state.lock();
            let now = Instant::now();
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * rate).min(rate);
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
        // 3 MB at 1 MB/s with a 1 MB burst: about 2 s.
        let secs = start.elapsed().as_secs_f64();
        assert!((1.8..2.6).contains(&secs), "{secs}");
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
