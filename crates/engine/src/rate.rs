//! A token bucket for upload and download rate limits.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct Limiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// `rate` bytes per second, with up to one second of burst.
    pub fn new(rate: u64) -> Limiter {
        Limiter {
            rate: rate.max(1) as f64,
            state: Mutex::new((rate.max(1) as f64, Instant::now())),
        }
    }

    /// Waits until `bytes` may pass.
    pub async fn acquire(&self, bytes: usize) {
        let wait = {
            let mut s = self.state.lock();
            let now = Instant::now();
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
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
        // 3 MB at 1 MB/s with a 1 MB burst: about 2 s.
        let secs = start.elapsed().as_secs_f64();
        assert!((1.8..2.6).contains(&secs), "{secs}");
    }
}
