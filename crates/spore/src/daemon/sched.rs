//! Pure rules of the alternative speed limits' weekly schedule, kept apart from any clock so they can
//! be tested in virtual time. (The queue's order and slots are the engine's: `engine::lifecycle`.)

use super::store::Settings;

/// A local time of the week: the day (0 Sunday ... 6 Saturday) and the minute after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeekTime {
    pub weekday: u8,
    pub minute: u32,
}

/// Whether the alternative speed limits' schedule covers `at` (ignoring whether it is enabled). The
/// days say when a period begins: one from 22:00 to 06:00 on Friday runs into Saturday morning.
/// Begin equal to end: the whole day.
pub fn in_alt_schedule(s: &Settings, at: WeekTime) -> bool {
    let day_on = |d: u8| s.alt_speed_time_day & (1 << (d % 7)) != 0;
    let (begin, end, now) = (s.alt_speed_time_begin, s.alt_speed_time_end, at.minute);
    if begin == end {
        return day_on(at.weekday);
    }
    if begin < end {
        day_on(at.weekday) && begin <= now && now < end
    } else {
        // Past midnight: the evening part belongs to today, the morning part to yesterday's period.
        (now >= begin && day_on(at.weekday)) || (now < end && day_on((at.weekday + 6) % 7))
    }
}

/// What the alternative speed limits switch to (`None`: stay), given whether the schedule covered the
/// previous tick (`None`: not known, or the schedule off) and covers this one: they follow the schedule
/// at its edges only, so a switch by hand in between holds until the next edge.
pub fn alt_switch(was: Option<bool>, covered: Option<bool>, enabled: bool) -> Option<bool> {
    let now = covered?;
    (was != Some(now) && enabled != now).then_some(now)
}

/// The local time of the week now (the machine's time zone), if the system can tell it.
pub fn local_week_time() -> Option<WeekTime> {
    let now = libc::time_t::try_from(super::store::now_secs()).ok()?;
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are valid for the call.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return None;
        }
        tm
    };
    Some(WeekTime {
        weekday: u8::try_from(tm.tm_wday).ok()?,
        minute: u32::try_from(tm.tm_hour * 60 + tm.tm_min).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(begin: u32, end: u32, days: u8) -> Settings {
        Settings {
            alt_speed_time_begin: begin,
            alt_speed_time_end: end,
            alt_speed_time_day: days,
            ..Settings::default()
        }
    }

    const SUNDAY: u8 = 0;
    const MONDAY: u8 = 1;
    const FRIDAY: u8 = 5;
    const SATURDAY: u8 = 6;

    fn at(weekday: u8, h: u32, m: u32) -> WeekTime {
        WeekTime {
            weekday,
            minute: h * 60 + m,
        }
    }

    #[test]
    fn the_alt_speed_schedule_follows_the_days_and_the_hours() {
        // Weekdays (Transmission's 62), 09:00 to 17:00.
        let s = schedule(9 * 60, 17 * 60, 62);
        assert!(!in_alt_schedule(&s, at(MONDAY, 8, 59)));
        assert!(in_alt_schedule(&s, at(MONDAY, 9, 0)));
        assert!(in_alt_schedule(&s, at(FRIDAY, 16, 59)));
        assert!(
            !in_alt_schedule(&s, at(FRIDAY, 17, 0)),
            "the end is outside"
        );
        assert!(!in_alt_schedule(&s, at(SATURDAY, 12, 0)));
        assert!(!in_alt_schedule(&s, at(SUNDAY, 12, 0)));
    }

    #[test]
    fn a_period_past_midnight_belongs_to_the_day_it_begins() {
        // Fridays only (32), 22:00 to 06:00.
        let s = schedule(22 * 60, 6 * 60, 32);
        assert!(
            !in_alt_schedule(&s, at(FRIDAY, 5, 0)),
            "Thursday's night is off"
        );
        assert!(!in_alt_schedule(&s, at(FRIDAY, 21, 59)));
        assert!(in_alt_schedule(&s, at(FRIDAY, 22, 0)));
        assert!(in_alt_schedule(&s, at(SATURDAY, 5, 59)));
        assert!(!in_alt_schedule(&s, at(SATURDAY, 6, 0)));
        assert!(!in_alt_schedule(&s, at(SATURDAY, 23, 0)));
        // Saturdays (64) run into Sunday: the week wraps.
        let s = schedule(22 * 60, 6 * 60, 64);
        assert!(in_alt_schedule(&s, at(SUNDAY, 1, 0)));
        assert!(!in_alt_schedule(&s, at(MONDAY, 1, 0)));
    }

    #[test]
    fn the_limits_switch_at_the_schedules_edges_only() {
        // Schedule turned on inside its period: on at once.
        assert_eq!(alt_switch(None, Some(true), false), Some(true));
        // Switched off by hand inside the period: stays off until the period ends and begins again.
        assert_eq!(alt_switch(Some(true), Some(true), false), None);
        assert_eq!(alt_switch(Some(true), Some(false), false), None);
        assert_eq!(alt_switch(Some(false), Some(true), false), Some(true));
        // The period ends: off, unless already off.
        assert_eq!(alt_switch(Some(true), Some(false), true), Some(false));
        // Switched on by hand outside the period: holds until the next edge.
        assert_eq!(alt_switch(Some(false), Some(false), true), None);
        // Schedule off: never switches.
        assert_eq!(alt_switch(Some(true), None, true), None);
        assert_eq!(alt_switch(None, None, false), None);
    }

    /// A week of ticks a minute apart through the daemon's rule: the limits are on exactly in the
    /// scheduled hours.
    #[test]
    fn a_virtual_week_follows_the_schedule() {
        let s = schedule(22 * 60, 6 * 60, 62);
        let (mut was, mut enabled) = (None, false);
        for day in 0..7u8 {
            for minute in 0..24 * 60 {
                let at = WeekTime {
                    weekday: day,
                    minute,
                };
                let covered = Some(in_alt_schedule(&s, at));
                if let Some(on) = alt_switch(was, covered, enabled) {
                    enabled = on;
                }
                was = covered;
                assert_eq!(enabled, in_alt_schedule(&s, at), "{at:?}");
            }
        }
        // Sunday 23:00 is off (Sunday is not in 62), Monday 23:00 on, Saturday 05:00 on (Friday's night).
        assert!(!in_alt_schedule(&s, at(SUNDAY, 23, 0)));
        assert!(in_alt_schedule(&s, at(MONDAY, 23, 0)));
        assert!(in_alt_schedule(&s, at(SATURDAY, 5, 0)));
    }

    #[test]
    fn begin_equal_to_end_is_the_whole_day_and_no_day_is_never() {
        let s = schedule(600, 600, 1 << SUNDAY);
        assert!(in_alt_schedule(&s, at(SUNDAY, 0, 0)));
        assert!(in_alt_schedule(&s, at(SUNDAY, 23, 59)));
        assert!(!in_alt_schedule(&s, at(MONDAY, 10, 0)));
        let never = schedule(0, 24 * 60 - 1, 0);
        for d in 0..7 {
            assert!(!in_alt_schedule(&never, at(d, 12, 0)));
        }
    }
}
