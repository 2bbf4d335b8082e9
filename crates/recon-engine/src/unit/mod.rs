//! One unit: one kind within one tenant (or the tenant list), optionally a
//! key range of it, reconciled in **one walk** (DESIGN §6).
//!
//! The walk streams the source's pages and the replica's rows in key order
//! and writes missing and changed rows in batches as it goes, each batch
//! guarded by the watermark of the page its rows came from. Phantoms (rows
//! only the replica has) are not deleted during the walk: they are *held*,
//! each as a tombstone at the watermark of the page that covered its key,
//! and deleted only after the walk read its last page — so what is deleted
//! is exactly what one walk found, whatever the source does meanwhile. At
//! most the guard's limit is held: past it the unit will trip anyway, so
//! holding stops and memory stays bounded. The caller decides with the
//! guard and then calls [`UnitContext::delete`].
//!
//! A walk is idempotent: cancelled or failed half-way and walked again, it
//! converges to the same state, so transient failures are retried
//! ([`UnitContext::retrying`]).

pub(crate) mod guarded;
pub(crate) mod narrow;
pub(crate) mod walk;

use crate::options::ReconcileOptions;
use crate::progress::Progress;
use recon_core::diff::{Side, Step, classify};
use recon_core::ports::{FailureKind, PortError, ReplicaStore, Source};
use recon_core::{
    Change, Deletion, EntityKey, FenceToken, KeyRange, Kind, UnitOutcome, UnitReport, Version,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use walk::{KeyFilter, ReplicaWalk, SourceWalk, widen};

/// What a unit covers.
#[derive(Debug, Clone)]
pub struct UnitSpec {
    /// The tenant (ignored for [`Kind::TENANT`]).
    pub tenant_id: String,
    /// The kind.
    pub kind: Kind,
    /// The key range.
    pub range: KeyRange,
    /// The source's rows in the range, when a digest told (a small range
    /// is walked rather than narrowed).
    pub source_rows: Option<u64>,
    /// The replica's live rows in the range, when counted: digests can
    /// skip no more rows than the replica holds, so a range it holds less
    /// than a quarter of the source's rows of is walked rather than
    /// narrowed (a full load into an empty replica split every kind on
    /// both sides for nothing).
    pub replica_rows: Option<u64>,
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
    /// The run was cancelled (not a failure of the unit).
    #[error("cancelled")]
    Cancelled,
}

impl UnitError {
    /// True when a newer epoch fenced this writer off.
    pub fn is_fenced(&self) -> bool {
        matches!(self, UnitError::Store(error) if error.kind == FailureKind::StaleEpoch)
    }

    /// True when walking again may succeed (the source or the store said
    /// so through the failure's kind).
    pub fn is_transient(&self) -> bool {
        matches!(self, UnitError::Source(error) | UnitError::Store(error) if error.kind == FailureKind::Transient)
    }

    /// The unit's outcome after this error.
    pub fn outcome(&self) -> UnitOutcome {
        match self {
            UnitError::Cancelled => UnitOutcome::Cancelled,
            error if error.is_fenced() => UnitOutcome::Fenced(error.to_string()),
            error => UnitOutcome::Failed(error.to_string()),
        }
    }
}

/// What one walk found and did.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    pub compared: u64,
    pub missing: u64,
    pub changed: u64,
    /// Phantoms found (all of them, held or not).
    pub phantom: u64,
    /// Live replica rows seen in the unit's range.
    pub replica_rows: u64,
    pub written: u64,
    pub kept_newer: u64,
    pub pages: u64,
    pub bytes: u64,
    /// Rows skipped because their ranges' digests were equal.
    pub digest_matched: u64,
    pub digest_requests: u64,
    pub generations: Option<(u64, u64)>,
    /// The watermark of the first source page read.
    pub first_watermark: Option<Version>,
    /// The phantoms' tombstones, each at its covering page's watermark; at
    /// most the hold limit of them.
    pub held: Vec<Deletion>,
    /// The source's keys, when asked for (the tenant list).
    pub source_keys: Vec<EntityKey>,
}

impl Walked {
    /// More phantoms were found than could be held.
    pub fn overflowed(&self) -> bool {
        self.phantom > self.held.len() as u64
    }

    /// Copies the figures into `report`.
    pub fn fill(&self, report: &mut UnitReport) {
        report.compared = self.compared;
        report.missing = self.missing;
        report.changed = self.changed;
        report.phantom = self.phantom;
        report.written = self.written;
        report.kept_newer = self.kept_newer;
        report.pages = self.pages;
        report.bytes = self.bytes;
        report.digest_matched = self.digest_matched;
        report.digest_requests = self.digest_requests;
        report.min_generation = self.generations.map(|(low, _)| low);
        report.max_generation = self.generations.map(|(_, high)| high);
    }
}

/// Changes waiting to be written, all read at one watermark.
struct Pending {
    watermark: Option<Version>,
    changes: Vec<Change>,
}

/// Everything a unit needs.
pub(crate) struct UnitContext<'a> {
    pub source: Arc<dyn Source>,
    pub store: Arc<dyn ReplicaStore>,
    pub options: &'a ReconcileOptions,
    pub progress: &'a dyn Progress,
    pub cancel: &'a CancellationToken,
    pub filter: KeyFilter,
    /// How narrowing with digests paid off lately (the reconciler's).
    pub narrowing: &'a narrow::NarrowStats,
    /// Every tenant's digests on both sides, when the run read them at
    /// its start (then a tenant's first look asks nobody).
    pub all_digests: Option<&'a guarded::AllDigests>,
}

impl UnitContext<'_> {
    fn fence(&self, spec: &UnitSpec) -> FenceToken {
        let scope = if spec.kind == self.scope_kind() {
            "tenants"
        } else {
            spec.tenant_id.as_str()
        };
        FenceToken::new(scope, self.options.epoch)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts of
    /// the options are used up; transient failures are retried with a
    /// doubling backoff. Returns the result and the attempts made.
    pub async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        mut attempt: F,
    ) -> (Result<T, UnitError>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, UnitError>>,
    {
        let attempts = self.options.attempts.max(1);
        let mut backoff = self.options.retry_backoff;
        let mut made = 0;
        loop {
            made += 1;
            let result = attempt().await;
            match result {
                Err(error) if error.is_transient() && made < attempts => {
                    warn!(error = %error, what, attempt = made, "transient failure, retrying");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return (Err(UnitError::Cancelled), made),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = backoff.saturating_mul(2).min(Duration::from_secs(30));
                }
                result => return (result, made),
            }
        }
    }

    /// Live replica rows of `kind` in `range` (`None`: of every tenant).
    pub async fn count(
        &self,
        tenant_id: Option<&str>,
        kind: Kind,
        range: &KeyRange,
    ) -> Result<u64, UnitError> {
        if self.cancel.is_cancelled() {
            return Err(UnitError::Cancelled);
        }
        self.store
            .count_rows(tenant_id, kind, range)
            .await
            .map_err(UnitError::Store)
    }

    /// The scope kind of the store's schema (the tenant).
    pub fn scope_kind(&self) -> Kind {
        self.store.schema().scope_kind()
    }

    /// Live replica rows of a tenant per scoped kind, in the schema's file
    /// order (its own row excluded).
    pub async fn tenant_rows(&self, tenant_id: &str) -> Result<Vec<(Kind, u64)>, UnitError> {
        let mut rows = Vec::new();
        for kind in self.store.schema().scoped_kinds() {
            rows.push((
                kind,
                self.count(Some(tenant_id), kind, &KeyRange::all()).await?,
            ));
        }
        Ok(rows)
    }

    /// Walks the unit once, retrying transient failures: writes missing and
    /// changed rows, holds at most `hold` phantoms.
    pub async fn walk_retrying(
        &self,
        spec: &UnitSpec,
        hold: u64,
        keep_source_keys: bool,
    ) -> (Result<Walked, UnitError>, u32) {
        let span = info_span!("reconcile.walk", tenant = %spec.tenant_id, kind = %spec.kind);
        self.retrying("unit walk", || self.walk(spec, hold, keep_source_keys))
            .instrument(span)
            .await
    }

    async fn walk(
        &self,
        spec: &UnitSpec,
        hold: u64,
        keep_source_keys: bool,
    ) -> Result<Walked, UnitError> {
        let mut walked = Walked::default();
        let page_ranges = if spec.kind == self.scope_kind() {
            0
        } else {
            self.source.page_ranges().await.map_err(UnitError::Source)?
        };
        let ranges = match self.narrow(spec, page_ranges).await? {
            Some(narrowed) => {
                walked.digest_matched = narrowed.matched;
                walked.digest_requests = narrowed.requests;
                walked.generations = narrowed.generations;
                narrowed.ranges
            }
            None => vec![(spec.range.clone(), None)],
        };
        let mut pending = Pending {
            watermark: None,
            changes: Vec::with_capacity(self.options.write_batch),
        };
        let fence = self.fence(spec);
        let groups = group_walks(&ranges, page_ranges, self.options.page_size);
        for (group, source_rows) in &groups {
            // Ranges known to be small are read in a page of their size,
            // not a full page that runs past their end.
            let page_size = source_rows.map_or(self.options.page_size, |rows| {
                u32::try_from(rows.saturating_add(1))
                    .unwrap_or(u32::MAX)
                    .clamp(1, self.options.page_size)
            });
            self.walk_ranges(
                spec,
                group,
                page_size,
                hold,
                keep_source_keys,
                &fence,
                &mut pending,
                &mut walked,
            )
            .await?;
        }
        self.flush(&fence, &mut pending, &mut walked).await?;
        info!(
            compared = walked.compared,
            digest_matched = walked.digest_matched,
            ranges = ranges.len(),
            walks = groups.len(),
            missing = walked.missing,
            changed = walked.changed,
            phantom = walked.phantom,
            held = walked.held.len(),
            written = walked.written,
            kept_newer = walked.kept_newer,
            "unit walked"
        );
        Ok(walked)
    }

    /// Walks key ranges of the unit (one, or several read together from a
    /// source with multi-range pages) into `walked`.
    #[allow(clippy::too_many_arguments)]
    async fn walk_ranges(
        &self,
        spec: &UnitSpec,
        ranges: &[KeyRange],
        page_size: u32,
        hold: u64,
        keep_source_keys: bool,
        fence: &FenceToken,
        pending: &mut Pending,
        walked: &mut Walked,
    ) -> Result<(), UnitError> {
        let options = self.options;
        let mut source = SourceWalk::new(
            self.source.clone(),
            &spec.tenant_id,
            spec.kind,
            ranges,
            page_size,
            self.filter.clone(),
        );
        let mut replica = ReplicaWalk::new(
            self.store.clone(),
            &spec.tenant_id,
            spec.kind,
            ranges,
            options.replica_page_size,
            self.filter.clone(),
        );
        let mut reported = walked.compared;
        loop {
            if self.cancel.is_cancelled() {
                return Err(UnitError::Cancelled);
            }
            let step = classify(source.head().await?, replica.head().await?);
            let Some(step) = step else { break };
            walked.compared += 1;
            // The key being classified: the replica's for a phantom, else
            // the source's.
            let key = match step {
                Step::Phantom => replica.head().await?.map(|head| head.key.clone()),
                _ => source.head().await?.map(|head| head.key.clone()),
            };
            let watermark = key
                .and_then(|key| source.watermark_covering(&key))
                .ok_or_else(|| {
                    UnitError::BrokenPage("a key classified before any page covered it".into())
                })?;
            match step {
                Step::Missing | Step::Changed => {
                    if step == Step::Missing {
                        walked.missing += 1;
                    } else {
                        walked.changed += 1;
                        replica.pop();
                    }
                    let Some(item) = source.pop() else { break };
                    if keep_source_keys {
                        walked.source_keys.push(item.key.clone());
                    }
                    if pending.watermark != Some(watermark) {
                        self.flush(fence, pending, walked).await?;
                        pending.watermark = Some(watermark);
                    }
                    pending.changes.push(Change::Upsert(item.row));
                }
                Step::Equal => {
                    if let Some(item) = source.pop()
                        && keep_source_keys
                    {
                        walked.source_keys.push(item.key);
                    }
                    replica.pop();
                }
                Step::Phantom => {
                    let Some(item) = replica.pop() else { break };
                    walked.phantom += 1;
                    if (walked.held.len() as u64) < hold {
                        walked.held.push(Deletion {
                            tenant_id: item.row.tenant_id,
                            kind: spec.kind,
                            key: item.key,
                            version: watermark,
                        });
                    }
                }
            }
            if pending.changes.len() >= options.write_batch {
                self.flush(fence, pending, walked).await?;
            }
            if walked.compared - reported >= 1_000 {
                self.progress
                    .rows_compared(&spec.tenant_id, spec.kind, walked.compared - reported);
                reported = walked.compared;
            }
        }
        self.progress
            .rows_compared(&spec.tenant_id, spec.kind, walked.compared - reported);
        walked.replica_rows += replica.rows_seen;
        walked.pages += source.pages;
        walked.bytes += source.bytes;
        walked.first_watermark = walked.first_watermark.or(source.first_watermark);
        if let Some((low, high)) = source.generations {
            widen(&mut walked.generations, low, high);
        }
        Ok(())
    }

    async fn flush(
        &self,
        fence: &FenceToken,
        pending: &mut Pending,
        walked: &mut Walked,
    ) -> Result<(), UnitError> {
        let Some(watermark) = pending.watermark else {
            pending.changes.clear();
            return Ok(());
        };
        let (written, kept_newer) = self.write(fence, watermark, &pending.changes).await?;
        walked.written += written;
        walked.kept_newer += kept_newer;
        pending.changes.clear();
        Ok(())
    }

    async fn write(
        &self,
        fence: &FenceToken,
        watermark: Version,
        changes: &[Change],
    ) -> Result<(u64, u64), UnitError> {
        if changes.is_empty() || self.options.dry_run {
            return Ok((0, 0));
        }
        let applied = self
            .store
            .apply_reconciliation(fence, watermark, changes)
            .await
            .map_err(UnitError::Store)?;
        Ok((applied.written, applied.kept_newer))
    }

    /// Tombstones the held phantoms of a walk, each at its page's
    /// watermark, in batches of one watermark each; updates `report`. A key
    /// re-created at the source after its page was read has a newer version
    /// than the tombstone, so its event brings it back.
    pub async fn delete(&self, spec: &UnitSpec, held: Vec<Deletion>, report: &mut UnitReport) {
        let fence = self.fence(spec);
        let (result, attempts) = self
            .retrying("delete phantoms", || self.delete_once(&fence, &held))
            .await;
        report.attempts += attempts.saturating_sub(1);
        match result {
            Ok((written, kept_newer)) => {
                report.written += written;
                report.kept_newer += kept_newer;
            }
            Err(error) => {
                warn!(tenant = %spec.tenant_id, kind = %spec.kind, error = %error, "deleting phantoms failed");
                report.outcome = error.outcome();
            }
        }
    }

    async fn delete_once(
        &self,
        fence: &FenceToken,
        held: &[Deletion],
    ) -> Result<(u64, u64), UnitError> {
        let mut totals = (0, 0);
        let mut start = 0;
        while start < held.len() {
            if self.cancel.is_cancelled() {
                return Err(UnitError::Cancelled);
            }
            let watermark = held[start].version;
            let same = held[start..]
                .iter()
                .take(self.options.write_batch.max(1))
                .take_while(|deletion| deletion.version == watermark)
                .count();
            let batch: Vec<Change> = held[start..start + same]
                .iter()
                .cloned()
                .map(Change::Delete)
                .collect();
            let (written, kept_newer) = self.write(fence, watermark, &batch).await?;
            totals.0 += written;
            totals.1 += kept_newer;
            start += same;
        }
        Ok(totals)
    }
}

/// The walks that read `ranges` (in key order, each with the source's rows
/// in it if known): from a source with multi-range pages
/// (`page_ranges` > 1), consecutive ranges whose rows together fit a page
/// are read together, at most `page_ranges` of them; otherwise each range
/// is a walk of its own. Each walk comes with its rows, if known.
fn group_walks(
    ranges: &[(KeyRange, Option<u64>)],
    page_ranges: u32,
    page_size: u32,
) -> Vec<(Vec<KeyRange>, Option<u64>)> {
    let most = page_ranges.max(1) as usize;
    let mut groups: Vec<(Vec<KeyRange>, Option<u64>)> = Vec::new();
    for (range, rows) in ranges {
        if let Some((group, Some(group_rows))) = groups.last_mut()
            && let Some(rows) = rows
            && group.len() < most
            && *group_rows + rows <= u64::from(page_size)
        {
            group.push(range.clone());
            *group_rows += rows;
            continue;
        }
        groups.push((vec![range.clone()], *rows));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(after: &str, until: &str) -> KeyRange {
        KeyRange {
            after: Some(EntityKey::id(after)),
            until: Some(EntityKey::id(until)),
        }
    }

    #[test]
    fn ranges_are_read_together_while_their_rows_fit_a_page() {
        let ranges = vec![
            (range("a", "b"), Some(400)),
            (range("c", "d"), Some(500)),
            (range("e", "f"), Some(200)),
            (range("g", "h"), None),
            (range("i", "j"), Some(10)),
            (range("k", "l"), Some(10)),
            (range("m", "n"), Some(10)),
        ];
        let groups = group_walks(&ranges, 2, 1_000);
        let shape: Vec<(usize, Option<u64>)> = groups
            .iter()
            .map(|(group, rows)| (group.len(), *rows))
            .collect();
        // 400 + 500 fit; 200 more would not; unknown rows walk alone; at
        // most two ranges a request.
        assert_eq!(
            shape,
            vec![
                (2, Some(900)),
                (1, Some(200)),
                (1, None),
                (2, Some(20)),
                (1, Some(10))
            ]
        );
        // A source without multi-range pages: one walk per range.
        assert_eq!(group_walks(&ranges, 0, 1_000).len(), ranges.len());
    }

    #[test]
    fn the_failure_kind_decides_the_outcome_not_the_message() {
        let fenced = UnitError::Store(PortError::new(FailureKind::StaleEpoch, "refused"));
        assert!(matches!(fenced.outcome(), UnitOutcome::Fenced(_)));
        let looks_fenced = UnitError::Store(PortError::new(
            FailureKind::Permanent,
            "stale epoch 3 for scope \"t\": the fence is at 4",
        ));
        assert!(matches!(looks_fenced.outcome(), UnitOutcome::Failed(_)));
        assert_eq!(UnitError::Cancelled.outcome(), UnitOutcome::Cancelled);
    }
}
