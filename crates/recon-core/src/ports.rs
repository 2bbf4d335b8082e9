//! Ports: the small traits through which the engine and the Kafka consumer
//! talk to the outside world. Adapters (the store, the consumer, later the
//! source client and the coordinator) implement them; nothing here does I/O.

use crate::Change;
use async_trait::async_trait;

/// What the caller can do about a failed port call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Retrying later may succeed (connection lost, busy, timeout).
    Transient,
    /// Retrying the same input will fail again.
    Permanent,
    /// A newer epoch owns the scope; this writer must stop.
    StaleEpoch,
}

/// An adapter's failure, reduced to what a caller acts on plus a message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    /// How to react.
    pub kind: FailureKind,
    /// What failed, with its cause chain rendered (never credentials).
    pub message: String,
}

impl PortError {
    /// A failure of the given kind.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What applying a batch of events did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedCounts {
    /// Rows inserted or updated (upserts and tombstones).
    pub written: u64,
    /// Changes not newer than what the store holds.
    pub skipped_stale: u64,
    /// Changes of a generation below the store's floor.
    pub skipped_below_floor: u64,
}

/// Where the Kafka consumer applies decoded change events: the event form of
/// the store's one apply path (version-guarded, generation floor). Applying
/// the same batch twice must be harmless.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Applies one batch atomically; on error nothing of it is applied.
    async fn apply_events(&self, changes: &[Change]) -> Result<AppliedCounts, PortError>;

    /// Whether the sink is reachable (for readiness probes).
    async fn check_ready(&self) -> Result<(), PortError>;
}

/// Pauses and resumes a replica's event consumption (DESIGN §2: every
/// consumer stays paused while a reconciliation runs).
#[async_trait]
pub trait ConsumerGate: Send + Sync {
    /// Stops applying events; returns once the batch in flight is committed.
    async fn pause(&self) -> Result<(), PortError>;
    /// Resumes applying events.
    async fn resume(&self) -> Result<(), PortError>;
}
