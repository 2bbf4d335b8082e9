//! Options of a reconciliation run.

use recon_core::{DeleteGuard, PausePolicy};
use std::time::Duration;

/// Which tenants a run covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant; tenants the source no longer has are deleted.
    AllTenants,
    /// Only these tenants (their tenant rows and everything inside them).
    Tenants(Vec<String>),
}

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// Which tenants.
    pub scope: Scope,
    /// Report only: read and compare, write nothing.
    pub dry_run: bool,
    /// Items per source page (1..=10000).
    pub page_size: u32,
    /// Rows per replica read.
    pub replica_page_size: u64,
    /// Changes per write transaction.
    pub write_batch: usize,
    /// Tenants reconciled at the same time.
    pub concurrency: usize,
    /// Limits on deletions.
    pub delete_guard: DeleteGuard,
    /// The epoch every write carries (fencing).
    pub epoch: u64,
    /// A run still going after this long is aborted and the consumer
    /// resumed, so that Kafka's retention is never outrun silently.
    pub max_pause: Duration,
    /// Walks of a unit (and raises of a generation floor) tried before a
    /// transient failure is final; at least 1.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
    /// Skip key ranges whose digests are equal on both sides, where the
    /// source offers digests (DESIGN §4); `false` walks every row.
    pub digests: bool,
    /// Sub-ranges a differing range is split into when narrowing with
    /// digests.
    pub digest_fanout: u32,
    /// Whether the consumers pause for the run.
    pub pause: PausePolicy,
}

impl ReconcileOptions {
    /// Defaults for a run at `epoch` over all tenants.
    pub fn new(epoch: u64) -> Self {
        Self {
            scope: Scope::AllTenants,
            dry_run: false,
            page_size: 1_000,
            replica_page_size: 1_000,
            write_batch: 1_000,
            concurrency: 4,
            delete_guard: DeleteGuard::default(),
            epoch,
            max_pause: Duration::from_secs(30 * 60),
            attempts: 4,
            retry_backoff: Duration::from_millis(500),
            digests: true,
            digest_fanout: 16,
            pause: PausePolicy::Always,
        }
    }
}
