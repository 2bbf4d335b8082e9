//! The three shapes a unit takes, each with its delete guard (DESIGN §6):
//!
//! * a whole tenant: its users, groups and memberships walked in that order,
//!   then their phantoms deleted in the reverse order (memberships before
//!   what they point to);
//! * a key range of one kind of a split tenant, whose limit is its share of
//!   the tenant's ([`DeleteGuard::share_limit`](recon_core::DeleteGuard::share_limit)):
//!   the ranges of one tenant never add up to more than the tenant's limit,
//!   however it is split (the always-allowed minimum is split with it).
//!
//! Either way a tenant loses at most its limit in one run.
//! * the tenant list: a tenant's deletion cascades to all its rows, so every
//!   phantom tenant is counted with its rows, per tenant and per run.

use super::{UnitContext, UnitError, UnitSpec, Walked};
use recon_core::ports::{AllTenantDigests, TenantDigests};
use recon_core::{
    Deletion, EntityKey, GuardDecision, KeyRange, Kind, RangeDigest, TenantRemoval, UnitOutcome,
    UnitReport, Version,
};
use std::collections::HashMap;
use tracing::warn;

/// A walked unit awaiting the guard's decision.
struct WalkedUnit {
    spec: UnitSpec,
    report: UnitReport,
    walked: Option<Walked>,
}

impl UnitContext<'_> {
    /// Reconciles a whole tenant: every kind walked once, then deletions
    /// made in reverse kind order — if each kind stays within its own limit
    /// and the tenant's phantoms together within the tenant's.
    pub async fn whole_tenant(&self, tenant_id: &str) -> Vec<UnitReport> {
        let guard = self.options.delete_guard;
        let (looked, count_attempts) = self
            .retrying("count tenant rows", || self.first_look(tenant_id))
            .await;
        let look = match looked {
            Ok(look) => look,
            Err(error) => {
                warn!(tenant = tenant_id, error = %error, "could not count the tenant's rows; nothing walked");
                return self
                    .store
                    .schema()
                    .scoped_kinds()
                    .into_iter()
                    .map(|kind| {
                        let mut report = UnitReport::new(tenant_id, kind);
                        report.outcome = error.outcome();
                        report.attempts = count_attempts;
                        report
                    })
                    .collect();
            }
        };
        let tenant_rows: u64 = look.replica_rows.iter().sum();
        let tenant_limit = guard.limit(tenant_rows);
        let mut units = Vec::with_capacity(look.kinds.len());
        let mut found = 0u64;
        for (&kind, &kind_rows) in look.kinds.iter().zip(&look.replica_rows) {
            let spec = UnitSpec {
                tenant_id: tenant_id.to_owned(),
                kind,
                range: KeyRange::all(),
                source_rows: look.source_rows(kind),
                replica_rows: Some(kind_rows),
            };
            let kind_limit = guard.limit(kind_rows);
            if let Some(matched) = look.matched(kind) {
                self.progress
                    .rows_compared(tenant_id, kind, matched.0.count);
                units.push((matched_unit(spec, matched), kind_limit));
                continue;
            }
            let hold = kind_limit.min(tenant_limit.saturating_sub(found));
            let unit = self.walk_unit(spec, hold, false).await;
            found = found.saturating_add(unit.walked.as_ref().map_or(0, |walked| walked.phantom));
            units.push((unit, kind_limit));
        }
        if look.source.is_some()
            && self.all_digests.is_none()
            && let Some((first, _)) = units.first_mut()
        {
            // The tenant's digest request, counted once.
            first.report.digest_requests += 1;
        }
        let within_tenant_limit = found <= tenant_limit;
        if !within_tenant_limit {
            warn!(
                tenant = tenant_id,
                phantoms = found,
                tenant_rows,
                "the tenant's phantoms together exceed its delete limit"
            );
        }
        for (unit, kind_limit) in units.iter_mut().rev() {
            let limit = if within_tenant_limit { *kind_limit } else { 0 };
            let decision = decide(unit, limit);
            self.settle(unit, decision).await;
        }
        units.into_iter().map(|(unit, _)| unit.report).collect()
    }

    /// The tenant's live rows per kind, and — where the source offers
    /// digests — which kinds are equal on both sides as a whole: one source
    /// request and one store statement, so an unchanged tenant costs no
    /// more.
    async fn first_look(&self, tenant_id: &str) -> Result<FirstLook, UnitError> {
        if self.cancel.is_cancelled() {
            return Err(UnitError::Cancelled);
        }
        let kinds = self.store.schema().scoped_kinds();
        if let Some(all) = self.all_digests {
            return Ok(all.first_look(tenant_id, kinds));
        }
        let source = if self.options.digests && self.filter.is_none() {
            self.source
                .tenant_digests(tenant_id)
                .await
                .map_err(UnitError::Source)?
        } else {
            None
        };
        let Some(source) = source else {
            let replica_rows = self
                .tenant_rows(tenant_id)
                .await?
                .into_iter()
                .map(|(_, rows)| rows)
                .collect();
            return Ok(FirstLook {
                kinds,
                replica_rows,
                source: None,
                replica: Vec::new(),
            });
        };
        let replica = self
            .store
            .tenant_digests(tenant_id)
            .await
            .map_err(UnitError::Store)?;
        Ok(FirstLook {
            kinds,
            replica_rows: replica.iter().map(|digest| digest.count).collect(),
            source: Some(source),
            replica,
        })
    }

    /// Reconciles one key range of one kind of a split tenant, with its
    /// share of the tenant's limit.
    pub async fn range_unit(&self, spec: &UnitSpec) -> UnitReport {
        let guard = self.options.delete_guard;
        let (counted, count_attempts) = self
            .retrying("count unit rows", || async {
                let tenant = self.tenant_rows(&spec.tenant_id).await?;
                let unit = self
                    .count(Some(&spec.tenant_id), spec.kind, &spec.range)
                    .await?;
                Ok((tenant.iter().map(|(_, rows)| rows).sum::<u64>(), unit))
            })
            .await;
        let (tenant_rows, unit_rows) = match counted {
            Ok(counts) => counts,
            Err(error) => {
                let mut report = UnitReport::new(&spec.tenant_id, spec.kind);
                report.outcome = error.outcome();
                report.attempts = count_attempts;
                return report;
            }
        };
        let limit = guard.share_limit(unit_rows, tenant_rows);
        let mut unit = self.walk_unit(spec.clone(), limit, false).await;
        let decision = decide(&unit, limit);
        self.settle(&mut unit, decision).await;
        unit.report
    }

    /// Reconciles the tenant rows; returns the report and the tenants the
    /// source lists (in scope), read in the same walk.
    pub async fn tenant_list(&self) -> (UnitReport, Vec<String>) {
        let guard = self.options.delete_guard;
        let (counted, count_attempts) = self
            .retrying("count store tenants", || async {
                self.count(None, self.scope_kind(), &KeyRange::all()).await
            })
            .await;
        let tenant_rows = match counted {
            Ok(count) => count,
            Err(error) => {
                let mut report = UnitReport::new("", self.scope_kind());
                report.outcome = error.outcome();
                report.attempts = count_attempts;
                return (report, Vec::new());
            }
        };
        // A scoped run sees only its tenants: they bound what is held.
        let hold = if self.filter.is_some() {
            u64::MAX
        } else {
            guard.limit(tenant_rows)
        };
        let spec = UnitSpec {
            tenant_id: String::new(),
            kind: self.scope_kind(),
            range: KeyRange::all(),
            source_rows: None,
            replica_rows: None,
        };
        let mut unit = self.walk_unit(spec, hold, true).await;
        let tenants: Vec<String> = unit
            .walked
            .as_mut()
            .map(|walked| std::mem::take(&mut walked.source_keys))
            .unwrap_or_default()
            .into_iter()
            .map(|key: EntityKey| key.first().to_owned())
            .collect();
        let Some(walked) = unit.walked.as_mut() else {
            return (unit.report, tenants);
        };
        if let Err(error) = self.hold_orphan_scopes(walked, &tenants, hold).await {
            unit.report.outcome = error.outcome();
            unit.walked = None;
            return (unit.report, tenants);
        }
        walked.fill(&mut unit.report);
        let decision = if walked.overflowed() {
            GuardDecision::Tripped
        } else {
            let held: Vec<String> = walked
                .held
                .iter()
                .map(|deletion| deletion.tenant_id.clone())
                .collect();
            let removals = match self.removals(&held).await {
                Ok(removals) if removals.is_empty() => Ok((removals, 0)),
                // The store's rows bound what a run may remove with its
                // tenants: counted only when the source lost tenants (two
                // full counts cost 0.6 s at W1, before any tenant starts).
                Ok(removals) => self
                    .retrying("count store rows", || self.store_rows())
                    .await
                    .0
                    .map(|store_rows| (removals, store_rows)),
                Err(error) => Err(error),
            };
            match removals {
                Ok((removals, store_rows)) => {
                    let decision =
                        guard.decide_tenant_removals(&removals, walked.replica_rows, store_rows);
                    unit.report.removed_tenants = removals;
                    decision
                }
                Err(error) => {
                    unit.report.outcome = error.outcome();
                    unit.walked = None;
                    return (unit.report, tenants);
                }
            }
        };
        self.settle(&mut unit, decision).await;
        (unit.report, tenants)
    }

    /// Holds, as vanished tenants, the store's tenants in scope that have
    /// live rows inside them but no live tenant row and that the source
    /// does not list (`listed`): a partial delete left their rows, which no
    /// unit would ever look at since units come from the source's list. A
    /// tombstone of the tenant (at the first page's watermark, which read
    /// no such tenant) removes them, under the same guard as any vanished
    /// tenant.
    async fn hold_orphan_scopes(
        &self,
        walked: &mut Walked,
        listed: &[String],
        hold: u64,
    ) -> Result<(), UnitError> {
        let (found, _) = self
            .retrying("list orphan scopes", || async {
                self.store.orphan_scopes().await.map_err(UnitError::Store)
            })
            .await;
        let Some(watermark) = walked.first_watermark else {
            return Ok(());
        };
        for tenant in found? {
            let key = EntityKey::id(&tenant);
            let in_scope = self.filter.as_ref().is_none_or(|keep| keep.contains(&key));
            if !in_scope || listed.contains(&tenant) {
                continue;
            }
            walked.phantom += 1;
            if (walked.held.len() as u64) < hold {
                walked.held.push(Deletion {
                    tenant_id: tenant,
                    kind: self.scope_kind(),
                    key,
                    version: watermark,
                });
            }
        }
        Ok(())
    }

    /// Live rows of every kind in the whole store.
    async fn store_rows(&self) -> Result<u64, UnitError> {
        let mut rows = 0;
        for kind in self.store.schema().kinds().iter().map(Kind::of) {
            rows += self.count(None, kind, &KeyRange::all()).await?;
        }
        Ok(rows)
    }

    /// What deleting each of `tenants` removes.
    async fn removals(&self, tenants: &[String]) -> Result<Vec<TenantRemoval>, UnitError> {
        let mut removals = Vec::with_capacity(tenants.len());
        for tenant in tenants {
            let (counted, _) = self
                .retrying("count tenant rows", || self.tenant_rows(tenant))
                .await;
            let schema = self.store.schema();
            let live = counted?
                .into_iter()
                .map(|(kind, rows)| (schema.plural_of(kind).to_owned(), rows))
                .collect();
            removals.push(TenantRemoval {
                tenant: tenant.clone(),
                live,
            });
        }
        Ok(removals)
    }

    async fn walk_unit(&self, spec: UnitSpec, hold: u64, keep_source_keys: bool) -> WalkedUnit {
        let started = std::time::Instant::now();
        let mut report = UnitReport::new(&spec.tenant_id, spec.kind);
        let (result, attempts) = self.walk_retrying(&spec, hold, keep_source_keys).await;
        report.attempts = attempts;
        let walked = match result {
            Ok(walked) => {
                walked.fill(&mut report);
                Some(walked)
            }
            Err(error) => {
                warn!(tenant = %spec.tenant_id, kind = %spec.kind, error = %error, attempts, "unit failed; nothing deleted");
                report.outcome = error.outcome();
                None
            }
        };
        report.seconds = started.elapsed().as_secs_f64();
        WalkedUnit {
            spec,
            report,
            walked,
        }
    }

    /// Applies the guard's decision to a walked unit: deletes its held
    /// phantoms, or reports them withheld.
    async fn settle(&self, unit: &mut WalkedUnit, decision: GuardDecision) {
        let Some(walked) = unit.walked.take() else {
            return;
        };
        let started = std::time::Instant::now();
        let report = &mut unit.report;
        if walked.phantom == 0 {
            report.guard = GuardDecision::NothingToDelete;
            return;
        }
        report.guard = decision;
        match decision {
            GuardDecision::NothingToDelete => {}
            GuardDecision::Tripped => {
                report.skipped_by_guard = walked.phantom;
                report.outcome = UnitOutcome::GuardTripped;
                warn!(tenant = %unit.spec.tenant_id, kind = %unit.spec.kind, phantoms = walked.phantom, "delete guard tripped, nothing deleted");
            }
            GuardDecision::Allowed if self.options.dry_run => {}
            GuardDecision::Allowed => {
                self.delete(&unit.spec, walked.held, report).await;
            }
        }
        report.seconds += started.elapsed().as_secs_f64();
    }
}

/// Every tenant's digests on both sides, read once at the start of a run
/// (one pass over each table on each side instead of a request and a
/// statement per tenant): a tenant missing from an answer has no rows
/// there.
#[derive(Debug)]
pub(crate) struct AllDigests {
    pub source: AllTenantDigests,
    pub replica: HashMap<String, Vec<RangeDigest>>,
}

impl AllDigests {
    /// The first look at a tenant whose scoped kinds are `kinds`.
    fn first_look(&self, tenant_id: &str, kinds: Vec<Kind>) -> FirstLook {
        let empty = vec![RangeDigest::default(); kinds.len()];
        let replica = self
            .replica
            .get(tenant_id)
            .cloned()
            .unwrap_or_else(|| empty.clone());
        FirstLook {
            kinds,
            replica_rows: replica.iter().map(|digest| digest.count).collect(),
            source: Some(TenantDigests {
                kinds: self.source.tenants.get(tenant_id).cloned().unwrap_or(empty),
                watermark: self.source.watermark,
            }),
            replica,
        }
    }
}

/// What [`UnitContext::first_look`] found.
struct FirstLook {
    /// The scoped kinds, in the schema's file order: the order of the
    /// lists below.
    kinds: Vec<Kind>,
    /// Live replica rows per kind.
    replica_rows: Vec<u64>,
    /// The source's digests of each kind, if it offers them.
    source: Option<TenantDigests>,
    /// The replica's, when the source's are known.
    replica: Vec<RangeDigest>,
}

impl FirstLook {
    /// The source's rows of `kind`, if its digests are known.
    fn source_rows(&self, kind: Kind) -> Option<u64> {
        let index = self.kinds.iter().position(|known| *known == kind)?;
        Some(self.source.as_ref()?.kinds.get(index)?.count)
    }

    /// The source's digest of `kind` and the watermark it was read at, if
    /// it equals the replica's.
    fn matched(&self, kind: Kind) -> Option<(RangeDigest, Version)> {
        let index = self.kinds.iter().position(|known| *known == kind)?;
        let source = self.source.as_ref()?;
        let digest = *source.kinds.get(index)?;
        (Some(&digest) == self.replica.get(index)).then_some((digest, source.watermark))
    }
}

/// A unit whose digests were equal on both sides: done without a walk.
fn matched_unit(spec: UnitSpec, (digest, watermark): (RangeDigest, Version)) -> WalkedUnit {
    let walked = Walked {
        digest_matched: digest.count,
        generations: Some((watermark.generation, watermark.generation)),
        ..Walked::default()
    };
    let mut report = UnitReport::new(&spec.tenant_id, spec.kind);
    report.attempts = 1;
    walked.fill(&mut report);
    WalkedUnit {
        spec,
        report,
        walked: Some(walked),
    }
}

/// The guard's verdict on a walked unit allowed `limit` deletions.
fn decide(unit: &WalkedUnit, limit: u64) -> GuardDecision {
    let phantoms = unit.walked.as_ref().map_or(0, |walked| walked.phantom);
    if phantoms == 0 {
        GuardDecision::NothingToDelete
    } else if phantoms <= limit {
        GuardDecision::Allowed
    } else {
        GuardDecision::Tripped
    }
}
