//! A token bucket for upload and download rate limits.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How much a limiter lets through at once after being idle, in seconds of its rate. A full second made
/// an idle seed send twice its cap in the first second, so N seeds serving a newcomer together beat N
/// times the cap (benches/seeds.sh); a tenth keeps the cap honest while requests a block over the
/// allowance simply wait their share, so the long-run rate is the same.
const BURST_SECS: f64 = 0.1;

pub struct Limiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// `rate` bytes per second, with up to `BURST_SECS` of burst.
    pub fn new(rate: u64) -> Limiter {
        let rate = rate.max(1) as f64;
        Limiter {
            rate,
            burst: rate * BURST_SECS,
            state: Mutex::new((rate * BURST_SECS, Instant::now())),
        }
    }

    /// Waits until `bytes` may pass.
    pub async fn acquire(&self, bytes: usize) {
        let wait = {
            let mut s = self.state.lock();
            let now = Instant::now();
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
            s.1 = now;
            s.0 -= bytes as f64;
            if s.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.0 / self.rate)
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
}
