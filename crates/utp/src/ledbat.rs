//! LEDBAT congestion control (RFC 6817) as uTP uses it: the window follows the one-way queueing
//! delay the flow sees, aiming at [`TARGET_US`] of queue and yielding to any other traffic that
//! fills the bottleneck's queue.
//!
//! Delay samples are the peer's `timestamp_difference`: its receive clock minus our send clock.
//! The two clocks have an unknown offset, so only differences between samples mean anything: the
//! base delay is the least sample seen over the last [`BASE_MINUTES`] minutes (one minimum per
//! minute, so a route change or clock drift ages out), and the queueing delay is the current
//! sample (the least of the last [`CURRENT_FILTER`], against noise) minus that base. Samples are
//! compared with wrapping arithmetic: the clocks are 32-bit microseconds.

use std::collections::VecDeque;

/// Queueing delay the flow aims at (RFC 6817 and BEP 29: 100 ms).
pub const TARGET_US: u32 = 100_000;
/// Minutes of per-minute minimums kept for the base delay.
pub const BASE_MINUTES: usize = 2;
/// Recent samples whose minimum is the current delay.
pub const CURRENT_FILTER: usize = 4;
/// Window never below this many segments (RFC 6817 MIN_CWND).
pub const MIN_CWND_SEGMENTS: f64 = 2.0;
/// RFC 6817 ALLOWED_INCREASE: an application-limited flow's window stays within this many
/// segments above what it has in flight.
pub const ALLOWED_INCREASE_SEGMENTS: f64 = 1.0;
/// At GAIN 1 a full window of acks at zero queueing delay adds one segment: at most one MSS per
/// RTT, like TCP's congestion avoidance, never faster.
pub const GAIN: f64 = 1.0;

/// Slow start ends once the queueing delay passes this fraction of the target (LEDBAT++,
/// draft-irtf-iccrg-ledbat-plus-plus §4.2: 3/4), or at the first loss or timeout.
pub const SLOW_START_EXIT: f64 = 0.75;

/// Above target, the window shrinks by at most this fraction of itself per window of acks.
pub const MAX_DECREASE: f64 = 0.5;

const MINUTE_US: u64 = 60_000_000;

/// `a` before `b` on the 32-bit microsecond circle.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[derive(Clone, Debug)]
pub struct Ledbat {
    cwnd: f64,
    mss: f64,
    /// (minute number, least sample in it), oldest first.
    base: VecDeque<(u64, u32)>,
    current: VecDeque<u32>,
    /// Until the first sign of a queue or a loss, the window doubles every round trip as TCP's
    /// does: at one segment per round trip a fast path took thousands of round trips to fill.
    slow_start: bool,
}

impl Ledbat {
    pub fn new(mss: usize) -> Ledbat {
        let mss = mss as f64;
        Ledbat {
            cwnd: MIN_CWND_SEGMENTS * mss,
            mss,
            base: VecDeque::with_capacity(BASE_MINUTES + 1),
            current: VecDeque::with_capacity(CURRENT_FILTER + 1),
            slow_start: true,
        }
    }

    /// The congestion window, bytes.
    pub fn cwnd(&self) -> usize {
        self.cwnd as usize
    }

    fn base_delay(&self) -> Option<u32> {
        self.base
            .iter()
            .map(|&(_, d)| d)
            .reduce(|a, b| if before(b, a) { b } else { a })
    }

    /// The queueing delay estimate, microseconds, once a sample has come.
    pub fn queuing_delay(&self) -> Option<u32> {
        let base = self.base_delay()?;
        let current = self
            .current
            .iter()
            .copied()
            .reduce(|a, b| if before(b, a) { b } else { a })?;
        // A current sample older than the base's window may lie below it: no queue then.
        if before(current, base) {
            return Some(0);
        }
        Some(current.wrapping_sub(base))
    }

    pub fn on_delay_sample(&mut self, sample: u32, now: u64) {
        let minute = now / MINUTE_US;
        match self.base.back_mut() {
            Some((m, d)) if *m == minute => {
                if before(sample, *d) {
                    *d = sample;
                }
            }
            _ => {
                self.base.push_back((minute, sample));
                while self.base.len() > BASE_MINUTES {
                    self.base.pop_front();
                }
            }
        }
        self.current.push_back(sample);
        while self.current.len() > CURRENT_FILTER {
            self.current.pop_front();
        }
    }

    /// `bytes_acked` newly acknowledged while `flight` bytes were outstanding.
    pub fn on_ack(&mut self, bytes_acked: usize, flight: usize) {
        if bytes_acked == 0 {
            return;
        }
        // Without a delay sample yet, hold the window: growing blind is what LEDBAT avoids.
        let Some(queuing) = self.queuing_delay() else {
            return;
        };
        let off_target = (TARGET_US as f64 - queuing as f64) / TARGET_US as f64;
        if self.slow_start && (queuing as f64) > SLOW_START_EXIT * TARGET_US as f64 {
            self.slow_start = false;
        }
        if self.slow_start {
            // Each acked byte adds one: a window of acks doubles the window. The delay-based
            // growth is taken instead should it ever be the larger.
            let ledbat = GAIN * off_target * bytes_acked as f64 * self.mss / self.cwnd;
            self.cwnd += (bytes_acked as f64).max(ledbat);
        } else if off_target >= 0.0 {
            self.cwnd += GAIN * off_target * bytes_acked as f64 * self.mss / self.cwnd;
        } else {
            // Above target the window shrinks in proportion to itself, as LEDBAT++
            // (draft-irtf-iccrg-ledbat-plus-plus) does: RFC 6817's one segment per round trip
            // takes tens of seconds to give a large window back to a TCP flow that arrives.
            self.cwnd -= (-off_target).min(MAX_DECREASE) * bytes_acked as f64;
        }
        let max_allowed = flight as f64 + ALLOWED_INCREASE_SEGMENTS * self.mss;
        self.cwnd = self.cwnd.min(max_allowed).max(self.min_cwnd());
    }

    /// The segment size changed (path MTU discovery): the gain and the floor follow it, and the
    /// window is at least the new floor.
    pub fn set_mss(&mut self, mss: usize) {
        self.mss = mss as f64;
        self.cwnd = self.cwnd.max(self.min_cwnd());
    }

    fn min_cwnd(&self) -> f64 {
        MIN_CWND_SEGMENTS * self.mss
    }

    /// A loss (fast retransmit): halve, as TCP does (RFC 6817 §2.4.1), at most once per RTT (the
    /// caller's concern), and grow by delay from now on.
    pub fn on_loss(&mut self) {
        self.slow_start = false;
        self.cwnd = (self.cwnd / 2.0).max(self.min_cwnd());
    }

    /// A retransmission timeout: one segment, as TCP after an RTO.
    pub fn on_timeout(&mut self) {
        self.slow_start = false;
        self.cwnd = self.mss;
    }

    /// Whether the window still grows by slow start.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past slow start, as after a first queue or loss.
    fn avoiding(mss: usize) -> Ledbat {
        let mut l = Ledbat::new(mss);
        l.slow_start = false;
        l
    }

    /// Acks a full window in `mss`-sized acks with `flight` large enough not to cap.
    fn ack_window(l: &mut Ledbat, mss: usize) {
        let start = l.cwnd();
        let mut acked = 0;
        while acked < start {
            l.on_ack(mss, 1 << 30);
            acked += mss;
        }
    }

    #[test]
    fn slow_start_doubles_per_window_until_delay_passes_three_quarters_of_target() {
        let mut l = Ledbat::new(1000);
        l.on_delay_sample(5000, 0);
        assert!(l.in_slow_start());
        for _ in 0..5 {
            let before = l.cwnd();
            ack_window(&mut l, 1000);
            assert_eq!(l.cwnd(), 2 * before);
        }
        // Half the target: still below the exit, still doubling.
        for _ in 0..CURRENT_FILTER {
            l.on_delay_sample(5000 + TARGET_US / 2, 1);
        }
        let before = l.cwnd();
        ack_window(&mut l, 1000);
        assert_eq!(l.cwnd(), 2 * before);
        // 80 ms of queue: slow start ends; the window grows by delay, less than a segment a window.
        for _ in 0..CURRENT_FILTER {
            l.on_delay_sample(5000 + TARGET_US * 4 / 5, 2);
        }
        let before = l.cwnd();
        ack_window(&mut l, 1000);
        assert!(!l.in_slow_start());
        let grown = l.cwnd() - before;
        assert!((100..=1000).contains(&grown), "grew {grown}");
        // And it does not come back when the queue drains.
        for _ in 0..CURRENT_FILTER {
            l.on_delay_sample(5000, 3);
        }
        let before = l.cwnd();
        ack_window(&mut l, 1000);
        // About a segment (the last ack overshoots the window a little), not a doubling.
        assert!(l.cwnd() - before <= 1100, "{} {}", before, l.cwnd());
    }

    #[test]
    fn slow_start_ends_at_a_loss_or_a_timeout_and_never_grows_blind() {
        let mut l = Ledbat::new(1000);
        // No delay sample yet: the window holds, slow start or not.
        l.on_ack(1000, 1 << 30);
        assert_eq!(l.cwnd(), 2000);
        l.on_delay_sample(5000, 0);
        for _ in 0..4 {
            ack_window(&mut l, 1000);
        }
        assert_eq!(l.cwnd(), 32_000);
        l.on_loss();
        assert!(!l.in_slow_start());
        assert_eq!(l.cwnd(), 16_000);
        ack_window(&mut l, 1000);
        assert!(l.cwnd() <= 17_000, "{}", l.cwnd());

        let mut l = Ledbat::new(1000);
        l.on_delay_sample(5000, 0);
        ack_window(&mut l, 1000);
        l.on_timeout();
        assert!(!l.in_slow_start());
        assert_eq!(l.cwnd(), 1000);
        // Slow start is still capped by what is in flight (RFC 6817 ALLOWED_INCREASE).
        let mut l = Ledbat::new(1000);
        l.on_delay_sample(5000, 0);
        for _ in 0..100 {
            l.on_ack(1000, 2000);
        }
        assert_eq!(l.cwnd(), 3000);
    }

    #[test]
    fn grows_one_mss_per_window_at_zero_delay_and_shrinks_above_target() {
        let mut l = avoiding(1000);
        l.on_delay_sample(5000, 0);
        let start = l.cwnd();
        // A full window acked in 1000-byte acks, flight large enough not to cap.
        let mut acked = 0;
        while acked < start {
            l.on_ack(1000, 1 << 20);
            acked += 1000;
        }
        let grown = l.cwnd() - start;
        assert!((900..=1000).contains(&grown), "grew {grown}");
        // 200 ms over base: off_target -1 (clamped), shrinks.
        for _ in 0..CURRENT_FILTER {
            l.on_delay_sample(205_000, 1);
        }
        let before = l.cwnd();
        l.on_ack(1000, 1 << 20);
        assert!(l.cwnd() < before);
        assert_eq!(l.queuing_delay(), Some(200_000));
    }

    #[test]
    fn above_target_a_window_of_acks_shrinks_the_window_in_proportion_at_most_half() {
        let window_of_acks = |queuing: u32| {
            let mut l = avoiding(1000);
            l.on_delay_sample(5000, 0);
            for _ in 0..2000 {
                l.on_ack(1000, 1 << 20);
            }
            let big = l.cwnd();
            for _ in 0..CURRENT_FILTER {
                l.on_delay_sample(5000 + queuing, 1);
            }
            let mut acked = 0;
            while acked < big {
                l.on_ack(1000, 1 << 20);
                acked += 1000;
            }
            l.cwnd() as f64 / big as f64
        };
        // 120 ms: 20 % over target, the window loses about a fifth (compounded over the acks).
        let r = window_of_acks(120_000);
        assert!((0.78..=0.84).contains(&r), "{r}");
        // Twice the target and more: at most half per window of acks.
        let r = window_of_acks(400_000);
        assert!((0.45..=0.6).contains(&r), "{r}");
    }

    #[test]
    fn base_delay_ages_out_after_two_minutes_and_wraps() {
        let mut l = Ledbat::new(1000);
        l.on_delay_sample(u32::MAX - 10, 0); // just before the wrap
        for _ in 0..CURRENT_FILTER {
            l.on_delay_sample(5, 1);
        }
        assert_eq!(l.queuing_delay(), Some(16));
        l.on_delay_sample(50_000, 61 * MINUTE_US / 60);
        l.on_delay_sample(50_000, 121 * MINUTE_US / 60);
        l.on_delay_sample(50_000, 181 * MINUTE_US / 60);
        // The minimum from minute 0 is gone: base is 50 000 now.
        assert_eq!(l.queuing_delay(), Some(0));
    }

    #[test]
    fn limited_by_flight_and_floor() {
        let mut l = Ledbat::new(1000);
        l.on_delay_sample(0, 0);
        for _ in 0..100 {
            l.on_ack(1000, 2000);
        }
        assert_eq!(l.cwnd(), 3000);
        l.on_loss();
        assert_eq!(l.cwnd(), 2000);
        l.on_timeout();
        assert_eq!(l.cwnd(), 1000);
    }
}
