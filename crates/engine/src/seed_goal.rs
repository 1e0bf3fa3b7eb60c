//! When a finished torrent has seeded enough: one rule for `spore get` and the daemon.

use std::time::Duration;

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
}
