//! Runs on a schedule (`--schedule <cron>`): the leader requests a run for
//! each slot of a cron expression (UTC, seconds optional), at most once per
//! slot whatever the failovers — the last slot fired is kept in the
//! coordinator and advanced with a compare-and-swap
//! ([`Coordinator::advance_trigger`](super::Coordinator::advance_trigger)).
//! Slots missed while no leader ran are not made up, except the latest one.

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use std::fmt;

/// A parsed cron schedule.
#[derive(Clone)]
pub struct Schedule {
    cron: Cron,
    text: String,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl Schedule {
    /// Parses a cron expression (`min hour day month weekday`, or with a
    /// leading seconds field); the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let cron = Cron::new(text)
            .with_seconds_optional()
            .parse()
            .map_err(|error| format!("invalid cron schedule {text:?}: {error}"))?;
        Ok(Schedule {
            cron,
            text: text.to_owned(),
        })
    }

    /// The slot (Unix milliseconds) to fire at `now_unix_ms`: the latest slot
    /// after `last_fired_ms` that is not in the future, if any. Without a
    /// slot fired yet, only a slot after `since_ms` (when the schedule was
    /// first seen) counts: a new schedule does not fire for the past.
    pub fn due_slot(
        &self,
        now_unix_ms: u64,
        last_fired_ms: Option<u64>,
        since_ms: u64,
    ) -> Option<u64> {
        let after = last_fired_ms.unwrap_or(since_ms);
        let mut slot = self.next_after(after)?;
        if slot > now_unix_ms {
            return None;
        }
        // Catch up to the latest due slot, not every missed one.
        while let Some(next) = self.next_after(slot) {
            if next > now_unix_ms {
                break;
            }
            slot = next;
        }
        Some(slot)
    }

    /// The first slot strictly after `after_ms`.
    fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after: DateTime<Utc> = Utc
            .timestamp_millis_opt(i64::try_from(after_ms).ok()?)
            .single()?;
        let next = self.cron.find_next_occurrence(&after, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z.
    const NEW_YEAR: u64 = 1_767_225_600_000;
    const MINUTE: u64 = 60_000;

    #[test]
    fn a_slot_fires_once_and_only_when_due() {
        let hourly = Schedule::parse("0 * * * *").expect("valid");
        let since = NEW_YEAR - 10 * MINUTE;
        assert_eq!(
            hourly.due_slot(NEW_YEAR - MINUTE, None, since),
            None,
            "not yet"
        );
        assert_eq!(
            hourly.due_slot(NEW_YEAR + MINUTE, None, since),
            Some(NEW_YEAR)
        );
        assert_eq!(
            hourly.due_slot(NEW_YEAR + MINUTE, Some(NEW_YEAR), since),
            None,
            "fired already"
        );
        assert_eq!(
            hourly.due_slot(NEW_YEAR + 61 * MINUTE, Some(NEW_YEAR), since),
            Some(NEW_YEAR + 60 * MINUTE)
        );
    }

    #[test]
    fn missed_slots_collapse_into_the_latest_and_the_past_is_not_made_up() {
        let hourly = Schedule::parse("0 * * * *").expect("valid");
        let after_a_day = NEW_YEAR + 24 * 60 * MINUTE + 5 * MINUTE;
        assert_eq!(
            hourly.due_slot(after_a_day, Some(NEW_YEAR), NEW_YEAR),
            Some(NEW_YEAR + 24 * 60 * MINUTE)
        );
        // First seen at 00:30: the 00:00 slot is the past.
        assert_eq!(
            hourly.due_slot(NEW_YEAR + 40 * MINUTE, None, NEW_YEAR + 30 * MINUTE),
            None
        );
    }

    #[test]
    fn seconds_are_optional_and_bad_expressions_are_refused() {
        let every_two_seconds = Schedule::parse("*/2 * * * * *").expect("valid");
        assert_eq!(
            every_two_seconds.due_slot(NEW_YEAR + 3_000, Some(NEW_YEAR), 0),
            Some(NEW_YEAR + 2_000)
        );
        let error = Schedule::parse("61 * * * *").expect_err("minute 61");
        assert!(error.contains("61 * * * *"), "{error}");
    }
}
