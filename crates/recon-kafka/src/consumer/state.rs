//! State shared between the consumer's poll thread, its rebalance callbacks
//! and the [`PauseGate`](super::PauseGate) handles.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One assigned partition as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Messages between the consumer's position and the high watermark
    /// (`-1` when librdkafka does not know yet).
    pub lag: i64,
}

/// What a replica's consumer is doing, for `recon status`, the admin API
/// and readiness.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumerStatus {
    /// Whether event application is paused.
    pub paused: bool,
    /// Who holds a pause: `run <id>` for a cluster run, `admin` (or the
    /// owner named) through the admin API, a `recon reconcile` run.
    pub paused_by: Vec<String>,
    /// When the pause began (Unix milliseconds).
    pub paused_since_unix_ms: Option<u64>,
    /// How long the pause has lasted, in seconds.
    pub paused_for_secs: Option<f64>,
    /// Whether a broker connection was up at the last statistics report.
    pub broker_up: bool,
    /// While the replica store fails to take a batch for a transient reason
    /// (consumption is held and the batch retried): the last error.
    pub store_unavailable: Option<String>,
    /// What the brokers last refused this consumer (SASL, TLS, an ACL on
    /// the topic or the group), until a record is consumed again.
    pub broker_refused: Option<String>,
    /// Assigned partitions with their lag.
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Debug, Default)]
struct PauseSince {
    wall: Option<SystemTime>,
    monotonic: Option<Instant>,
}

/// Shared, lock-light state.
#[derive(Debug, Default)]
pub(crate) struct SharedState {
    paused: AtomicBool,
    broker_up: AtomicBool,
    store_unavailable: Mutex<Option<String>>,
    broker_refused: Mutex<Option<String>>,
    since: Mutex<PauseSince>,
    partitions: Mutex<BTreeMap<(String, i32), i64>>,
    /// Who holds a pause (see [`recon_core::ports::ConsumerGate`]).
    owners: Mutex<BTreeSet<String>>,
}

impl SharedState {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// The owners of the pause, locked: the gate changes them and sends
    /// its command to the poll loop under this lock, so that commands
    /// arrive in the order the owners changed.
    pub fn owners(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.owners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        let mut since = self
            .since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *since = if paused {
            PauseSince {
                wall: Some(SystemTime::now()),
                monotonic: Some(Instant::now()),
            }
        } else {
            PauseSince::default()
        };
    }

    /// Whether consumption is held: paused by the gate, or waiting for the
    /// replica store.
    pub fn is_holding(&self) -> bool {
        self.is_paused() || self.store_error().is_some()
    }

    /// Records why the store is unavailable (`None`: available again).
    pub fn set_store_unavailable(&self, reason: Option<String>) {
        *self
            .store_unavailable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = reason;
    }

    fn store_error(&self) -> Option<String> {
        self.store_unavailable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records what the brokers refused (`None`: consuming again); returns
    /// whether that changed.
    pub fn set_broker_refused(&self, refused: Option<String>) -> bool {
        let mut current = self
            .broker_refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = *current != refused;
        *current = refused;
        changed
    }

    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.store(up, Ordering::SeqCst);
    }

    /// Replaces the assignment (lags unknown until the next statistics).
    pub fn set_assignment(&self, partitions: impl IntoIterator<Item = (String, i32)>) {
        let mut known = self
            .partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous = std::mem::take(&mut *known);
        for key in partitions {
            let lag = previous.get(&key).copied().unwrap_or(-1);
            known.insert(key, lag);
        }
    }

    /// Records a partition's lag if it is still assigned.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        let mut known = self
            .partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = known.get_mut(&(topic.to_owned(), partition)) {
            *entry = lag;
        }
    }

    pub fn status(&self) -> ConsumerStatus {
        let since = self
            .since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let partitions = self
            .partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ConsumerStatus {
            paused: self.is_paused(),
            paused_by: self.owners().iter().cloned().collect(),
            paused_since_unix_ms: since
                .wall
                .and_then(|wall| wall.duration_since(UNIX_EPOCH).ok())
                .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
            paused_for_secs: since.monotonic.map(|start| start.elapsed().as_secs_f64()),
            broker_up: self.broker_up.load(Ordering::SeqCst),
            store_unavailable: self.store_error(),
            broker_refused: self
                .broker_refused
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            partitions: partitions
                .iter()
                .map(|((topic, partition), lag)| PartitionStatus {
                    topic: topic.clone(),
                    partition: *partition,
                    lag: *lag,
                })
                .collect(),
        }
    }
}
