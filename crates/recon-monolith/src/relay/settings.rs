//! The relay's settings (defaults in one place) and its counters.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How the relay batches, polls and backs off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// Most outbox rows published per batch (1..=10000).
    pub batch_size: u64,
    /// Pause between polls when the outbox is drained.
    #[serde(with = "millis")]
    pub idle_poll_interval: Duration,
    /// First delay after a failed batch.
    #[serde(with = "millis")]
    pub min_backoff: Duration,
    /// Longest delay between retries.
    #[serde(with = "millis")]
    pub max_backoff: Duration,
    /// How often the backlog gauge is recounted while the relay is busy.
    #[serde(with = "millis")]
    pub backlog_refresh_interval: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            batch_size: 1_000,
            idle_poll_interval: Duration::from_millis(150),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            backlog_refresh_interval: Duration::from_secs(1),
        }
    }
}

impl RelaySettings {
    /// Checks the settings; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10_000).contains(&self.batch_size) {
            return Err("relay batch_size must be between 1 and 10000".to_owned());
        }
        if self.idle_poll_interval.is_zero() {
            return Err("relay idle_poll_interval must be positive".to_owned());
        }
        if self.min_backoff.is_zero() || self.max_backoff < self.min_backoff {
            return Err("relay backoff must satisfy 0 < min_backoff <= max_backoff".to_owned());
        }
        Ok(())
    }
}

/// Durations as whole milliseconds in configuration files.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// Live counters of a relay, readable while it runs (the admin endpoint
/// exports them).
#[derive(Debug, Default)]
pub struct RelayMetrics {
    published: AtomicU64,
    failures: AtomicU64,
    backlog: AtomicU64,
}

/// A copy of [`RelayMetrics`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RelayMetricsSnapshot {
    /// Outbox rows acknowledged by the broker and marked published.
    pub published: u64,
    /// Failed relay steps (each is retried).
    pub failures: u64,
    /// Unpublished outbox rows at the last count.
    pub backlog: u64,
}

impl RelayMetrics {
    /// Rows acknowledged and marked published so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Failed steps so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Unpublished rows at the last count.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// All counters at once.
    pub fn snapshot(&self) -> RelayMetricsSnapshot {
        RelayMetricsSnapshot {
            published: self.published(),
            failures: self.failures(),
            backlog: self.backlog(),
        }
    }

    pub(super) fn record_published(&self, rows: u64) {
        self.published.fetch_add(rows, Ordering::Relaxed);
    }

    pub(super) fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_backlog(&self, rows: u64) {
        self.backlog.store(rows, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(RelaySettings::default().validate(), Ok(()));
        let zero_batch = RelaySettings {
            batch_size: 0,
            ..RelaySettings::default()
        };
        assert!(
            zero_batch
                .validate()
                .expect_err("zero batch")
                .contains("batch_size")
        );
        let inverted = RelaySettings {
            min_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(1),
            ..RelaySettings::default()
        };
        assert!(
            inverted
                .validate()
                .expect_err("inverted backoff")
                .contains("backoff")
        );
    }

    #[test]
    fn settings_read_from_json_with_defaults() {
        let settings: RelaySettings =
            serde_json::from_str(r#"{"batch_size": 50, "idle_poll_interval": 200}"#)
                .expect("valid settings");
        assert_eq!(settings.batch_size, 50);
        assert_eq!(settings.idle_poll_interval, Duration::from_millis(200));
        assert_eq!(settings.max_backoff, RelaySettings::default().max_backoff);
        assert!(serde_json::from_str::<RelaySettings>(r#"{"batch": 5}"#).is_err());
    }
}
