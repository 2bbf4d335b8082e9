//! One unit: one kind within one tenant (or the tenant list), optionally a
//! key range of it.

use crate::options::ReconcileOptions;
use crate::progress::Progress;
use crate::walk::{KeyFilter, Keyed, ReplicaWalk, SourceWalk};
use recon_core::diff::{Side, Step, classify};
use recon_core::ports::{FailureKind, PortError, ReplicaStore, Source};
use recon_core::{
    Change, Deletion, FenceToken, GuardDecision, KeyRange, Kind, UnitOutcome, UnitReport,
};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// What a unit covers.
#[derive(Debug, Clone)]
pub struct UnitSpec {
    /// The tenant (ignored for [`Kind::Tenant`]).
    pub tenant_id: String,
    /// The kind.
    pub kind: Kind,
    /// The key range.
    pub range: KeyRange,
}

/// Why a unit stopped.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// The source failed (after the client's own retries).
    #[error("source: {0}")]
    Source(PortError),
    /// The replica store failed.
    #[error("replica store: {0}")]
    Store(PortError),
    /// A page broke the Source API contract.
    #[error("broken page from the source: {0}")]
    BrokenPage(String),
    /// A stream's keys did not strictly increase.
    #[error("{side:?} keys out of order: {key} after {previous}")]
    OutOfOrder {
        /// Which stream.
        side: Side,
        /// The offending key.
        key: String,
        /// The key before it.
        previous: String,
    },
    /// The second pass found more phantoms than the guard allowed.
    #[error("more phantoms than the delete guard allows ({limit}); stopped deleting")]
    GuardExceeded {
        /// The guard's limit.
        limit: u64,
    },
    /// The run was cancelled (not a failure of the unit).
    #[error("cancelled")]
    Cancelled,
}

impl UnitError {
    /// True when a newer epoch fenced this writer off.
    pub fn is_fenced(&self) -> bool {
        matches!(self, UnitError::Store(error) if error.kind == FailureKind::StaleEpoch)
    }
}

/// Whether a pass may delete.
#[derive(Debug, Clone, Copy)]
enum Deletes {
    /// Count phantoms only.
    Count,
    /// Tombstone phantoms, at most this many.
    Apply { limit: u64 },
}

/// What one pass saw.
#[derive(Debug, Default)]
struct PassCounts {
    compared: u64,
    missing: u64,
    changed: u64,
    phantom: u64,
    replica_rows: u64,
    written: u64,
    pages: u64,
    bytes: u64,
}

/// Everything a unit needs.
pub(crate) struct UnitContext<'a> {
    pub source: Arc<dyn Source>,
    pub store: Arc<dyn ReplicaStore>,
    pub options: &'a ReconcileOptions,
    pub progress: &'a dyn Progress,
    pub cancel: &'a CancellationToken,
    pub filter: KeyFilter,
}

impl UnitContext<'_> {
    fn fence(&self, spec: &UnitSpec) -> FenceToken {
        let scope = if spec.kind == Kind::Tenant {
            "tenants"
        } else {
            spec.tenant_id.as_str()
        };
        FenceToken::new(scope, self.options.epoch)
    }

    /// First pass: writes missing and changed rows, counts phantoms.
    pub async fn first_pass(&self, spec: &UnitSpec) -> (UnitReport, Result<u64, UnitError>) {
        let started = Instant::now();
        let mut report = UnitReport::new(&spec.tenant_id, spec.kind);
        let span =
            info_span!("reconcile.unit", tenant = %spec.tenant_id, kind = %spec.kind, pass = 1);
        let result = self.pass(spec, Deletes::Count).instrument(span).await;
        let replica_rows = fill(&mut report, &result);
        report.seconds = started.elapsed().as_secs_f64();
        (report, result.map(|_| replica_rows))
    }

    /// Decides with the guard and, if allowed, runs the deleting second pass.
    /// Updates `report`; a unit whose first pass failed must not get here.
    pub async fn second_pass(&self, spec: &UnitSpec, report: &mut UnitReport, replica_rows: u64) {
        let started = Instant::now();
        let guard = self.options.delete_guard;
        report.guard = guard.decide(report.phantom, replica_rows);
        match report.guard {
            GuardDecision::NothingToDelete => return,
            GuardDecision::Tripped => {
                report.skipped_by_guard = report.phantom;
                report.outcome = UnitOutcome::GuardTripped;
                warn!(tenant = %spec.tenant_id, kind = %spec.kind, phantoms = report.phantom, replica_rows, "delete guard tripped, nothing deleted");
                return;
            }
            GuardDecision::Allowed if self.options.dry_run => return,
            GuardDecision::Allowed => {}
        }
        let limit = guard.limit(replica_rows);
        let span =
            info_span!("reconcile.unit", tenant = %spec.tenant_id, kind = %spec.kind, pass = 2);
        let result = self
            .pass(spec, Deletes::Apply { limit })
            .instrument(span)
            .await;
        match result {
            Ok(counts) => {
                report.written += counts.written;
                report.pages += counts.pages;
                report.bytes += counts.bytes;
            }
            Err(error) => report.outcome = outcome_of(&error),
        }
        report.seconds += started.elapsed().as_secs_f64();
    }

    async fn pass(&self, spec: &UnitSpec, deletes: Deletes) -> Result<PassCounts, UnitError> {
        let options = self.options;
        let mut source = SourceWalk::new(
            self.source.clone(),
            &spec.tenant_id,
            spec.kind,
            &spec.range,
            options.page_size,
            self.filter.clone(),
        );
        let mut replica = ReplicaWalk::new(
            self.store.clone(),
            &spec.tenant_id,
            spec.kind,
            &spec.range,
            options.replica_page_size,
            self.filter.clone(),
        );
        let mut counts = PassCounts::default();
        let mut pending: Vec<Change> = Vec::with_capacity(options.write_batch);
        let fence = self.fence(spec);
        let mut reported = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Err(UnitError::Cancelled);
            }
            let step = classify(source.head().await?, replica.head().await?);
            let Some(step) = step else { break };
            counts.compared += 1;
            match step {
                Step::Missing | Step::Changed => {
                    if step == Step::Missing {
                        counts.missing += 1;
                    } else {
                        counts.changed += 1;
                        replica.pop();
                    }
                    let Some(item) = source.pop() else { break };
                    pending.push(Change::Upsert(item.row));
                }
                Step::Equal => {
                    source.pop();
                    replica.pop();
                }
                Step::Phantom => {
                    let Some(item) = replica.pop() else { break };
                    counts.phantom += 1;
                    if let Deletes::Apply { limit } = deletes {
                        if counts.phantom > limit {
                            return Err(UnitError::GuardExceeded { limit });
                        }
                        pending.push(tombstone(item, &source)?);
                    }
                }
            }
            if pending.len() >= options.write_batch {
                counts.written += self.flush(&fence, &mut pending).await?;
            }
            if counts.compared - reported >= 1_000 {
                self.progress
                    .rows_compared(&spec.tenant_id, spec.kind, counts.compared - reported);
                reported = counts.compared;
            }
        }
        counts.written += self.flush(&fence, &mut pending).await?;
        self.progress
            .rows_compared(&spec.tenant_id, spec.kind, counts.compared - reported);
        counts.replica_rows = replica.rows_seen;
        counts.pages = source.pages;
        counts.bytes = source.bytes;
        info!(
            compared = counts.compared,
            missing = counts.missing,
            changed = counts.changed,
            phantom = counts.phantom,
            written = counts.written,
            "unit pass done"
        );
        Ok(counts)
    }

    async fn flush(&self, fence: &FenceToken, pending: &mut Vec<Change>) -> Result<u64, UnitError> {
        if pending.is_empty() || self.options.dry_run {
            pending.clear();
            return Ok(0);
        }
        let applied = self
            .store
            .apply_reconciliation(fence, pending)
            .await
            .map_err(UnitError::Store)?;
        pending.clear();
        Ok(applied.written)
    }
}

/// The deletion of a phantom, at the watermark of the page covering its key.
fn tombstone(item: Keyed, source: &SourceWalk) -> Result<Change, UnitError> {
    let Some(version) = source.watermark() else {
        return Err(UnitError::BrokenPage(
            "no page was read before a deletion".into(),
        ));
    };
    Ok(Change::Delete(Deletion {
        tenant_id: item.row.tenant_id,
        kind: item.row.record.kind(),
        key: item.key,
        version,
    }))
}

/// Copies a first pass's counts into the report; returns the replica rows.
fn fill(report: &mut UnitReport, result: &Result<PassCounts, UnitError>) -> u64 {
    match result {
        Ok(counts) => {
            report.compared = counts.compared;
            report.missing = counts.missing;
            report.changed = counts.changed;
            report.phantom = counts.phantom;
            report.written = counts.written;
            report.pages = counts.pages;
            report.bytes = counts.bytes;
            counts.replica_rows
        }
        Err(error) => {
            report.outcome = outcome_of(error);
            0
        }
    }
}

fn outcome_of(error: &UnitError) -> UnitOutcome {
    UnitOutcome::Failed(error.to_string())
}
