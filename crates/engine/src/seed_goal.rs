//! When a finished torrent has seeded enough: one rule and one clock for `spore get` and the daemon.

use std::time::{Duration, Instant};

/// A seeding goal: stop once uploaded / wanted reaches `ratio`, or after seeding for `time`; either
/// suffices, and with neither the torrent seeds until stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeedGoal {
    pub ratio: Option<f64>,
    pub time: Option<Duration>,
}

impl SeedGoal {
    /// Whether the goal is reached after uploading `uploaded` bytes of a torrent whose selected files
    /// are `wanted` bytes (like Transmission's sizeWhenDone), having seeded for `seeded`.
    pub fn reached(&self, uploaded: u64, wanted: u64, seeded: Duration) -> bool {
        let ratio_met = self
            .ratio
            .is_some_and(|r| uploaded as f64 / wanted.max(1) as f64 >= r);
        let time_met = self.time.is_some_and(|t| seeded >= t);
        ratio_met || time_met
    }
}

/// How long a torrent has seeded in this session, the time passed in (so it runs in virtual time). Its
/// owner folds the whole seconds into a total it keeps across sessions ([`SeedClock::fold`]), which the
/// seed_time goal counts together with what is not folded yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeedClock {
    since: Option<Instant>,
}

impl SeedClock {
    /// Seeding from `now`, unless the clock runs already.
    pub fn start(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// Whole seconds seeded and not yet folded (0 when the clock is not running).
    pub fn unfolded(&self, now: Instant) -> u64 {
        self.since
            .map_or(0, |s| now.saturating_duration_since(s).as_secs())
    }

    /// Takes the whole seconds seeded since the clock started or was last folded, to be added to the
    /// owner's total. The clock keeps running from the remainder unless seeding `stops`, so folding
    /// often loses nothing.
    pub fn fold(&mut self, now: Instant, stops: bool) -> u64 {
        let Some(since) = self.since else { return 0 };
        let secs = now.saturating_duration_since(since).as_secs();
        self.since = if stops {
            None
        } else {
            Some(since + Duration::from_secs(secs))
        };
        secs
    }

    /// Starts the clock if needed and says whether `goal` is reached: `uploaded` of `wanted` bytes,
    /// `earlier_secs` seeded in earlier sessions (folded) besides this clock's.
    pub fn goal_reached(
        &mut self,
        goal: &SeedGoal,
        uploaded: u64,
        wanted: u64,
        earlier_secs: u64,
        now: Instant,
    ) -> bool {
        self.start(now);
        let secs = earlier_secs.saturating_add(self.unfolded(now));
        goal.reached(uploaded, wanted, Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn no_goal_seeds_for_ever() {
        let goal = SeedGoal::default();
        assert!(!goal.reached(100 * GIB, GIB, Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn the_ratio_counts_against_the_wanted_size() {
        let goal = SeedGoal {
            ratio: Some(1.5),
            time: None,
        };
        assert!(!goal.reached(GIB, GIB, Duration::ZERO));
        assert!(!goal.reached(3 * GIB / 2 - 1, GIB, Duration::ZERO));
        assert!(goal.reached(3 * GIB / 2, GIB, Duration::ZERO));
        // Nothing wanted (every file deselected): counted as one byte, so any upload meets a ratio.
        assert!(goal.reached(2, 0, Duration::ZERO));
        assert!(!goal.reached(1, 0, Duration::ZERO));
    }

    #[test]
    fn a_zero_ratio_is_met_at_once() {
        let goal = SeedGoal {
            ratio: Some(0.0),
            time: None,
        };
        assert!(goal.reached(0, GIB, Duration::ZERO));
    }

    #[test]
    fn the_time_goal_is_met_at_its_end() {
        let goal = SeedGoal {
            ratio: None,
            time: Some(Duration::from_secs(90)),
        };
        assert!(!goal.reached(100 * GIB, GIB, Duration::from_secs(89)));
        assert!(goal.reached(0, GIB, Duration::from_secs(90)));
    }

    #[test]
    fn either_goal_suffices() {
        let goal = SeedGoal {
            ratio: Some(2.0),
            time: Some(Duration::from_secs(60)),
        };
        assert!(goal.reached(2 * GIB, GIB, Duration::from_secs(1)));
        assert!(goal.reached(0, GIB, Duration::from_secs(60)));
        assert!(!goal.reached(GIB, GIB, Duration::from_secs(59)));
    }

    #[test]
    fn the_clock_folds_whole_seconds_and_keeps_the_rest() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut clock = SeedClock::default();
        assert_eq!(clock.fold(at(5_000), false), 0, "not running");
        clock.start(at(0));
        clock.start(at(700));
        assert_eq!(clock.unfolded(at(2_500)), 2, "started once, at 0");
        assert_eq!(clock.fold(at(2_500), false), 2);
        // The half second left over counts towards the next fold.
        assert_eq!(clock.fold(at(3_000), false), 1);
        assert_eq!(clock.fold(at(3_999), true), 0);
        assert_eq!(clock.unfolded(at(10_000)), 0, "stopped");
    }

    #[test]
    fn the_time_goal_counts_earlier_sessions_and_this_one() {
        let t0 = Instant::now();
        let goal = SeedGoal {
            ratio: None,
            time: Some(Duration::from_secs(100)),
        };
        let mut clock = SeedClock::default();
        assert!(!clock.goal_reached(&goal, 0, GIB, 60, t0));
        assert!(!clock.goal_reached(&goal, 0, GIB, 60, t0 + Duration::from_secs(39)));
        assert!(clock.goal_reached(&goal, 0, GIB, 60, t0 + Duration::from_secs(40)));
    }
}
