//! Counters for `/stats` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

#[derive(Default)]
pub struct Counters {
    pub http_announces: AtomicU64,
    pub udp_announces: AtomicU64,
    pub http_scrapes: AtomicU64,
    pub udp_scrapes: AtomicU64,
    pub udp_connects: AtomicU64,
    /// Requests refused or malformed (answered with a failure or error).
    pub errors: AtomicU64,
    /// UDP packets dropped without reply (bad connection ID, garbage).
    pub dropped: AtomicU64,
    /// HTTP connections closed at once because their address or the tracker had too many open.
    pub http_refused: AtomicU64,
    /// HTTPS connections whose TLS handshake failed or took too long.
    pub tls_failed: AtomicU64,
}

/// Rates over the last sampling period.
pub struct Rates {
    last: Mutex<(Instant, u64, u64)>,
    current: Mutex<(f64, f64)>,
}

impl Counters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn announces(&self) -> u64 {
        self.http_announces.load(Ordering::Relaxed) + self.udp_announces.load(Ordering::Relaxed)
    }

    pub fn scrapes(&self) -> u64 {
        self.http_scrapes.load(Ordering::Relaxed) + self.udp_scrapes.load(Ordering::Relaxed)
    }
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            last: Mutex::new((Instant::now(), 0, 0)),
            current: Mutex::new((0.0, 0.0)),
        }
    }
}

impl Rates {
    /// Called periodically: turns counter growth into per-second rates.
    pub fn sample(&self, counters: &Counters) {
        let now = Instant::now();
        let (announces, scrapes) = (counters.announces(), counters.scrapes());
        let mut last = self.last.lock();
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
        *self.current.lock() = (
            (announces - last.1) as f64 / secs,
            (scrapes - last.2) as f64 / secs,
        );
        *last = (now, announces, scrapes);
    }

    /// (announces/s, scrapes/s)
    pub fn get(&self) -> (f64, f64) {
        *self.current.lock()
    }
}
