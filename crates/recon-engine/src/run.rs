//! A whole run: pause, tenant list, tenants, generation floor, resume —
//! the run machine executed in one process (`single.rs`) — and the steps
//! of a run that the cluster's members share with it (tenant list, a
//! tenant, completion, floors).

mod single;

pub use single::RunHistory;
use single::SingleRun;

use crate::options::{ReconcileOptions, Scope};
use crate::progress::{NoProgress, Progress};
use crate::unit::guarded::AllDigests;
use crate::unit::narrow::NarrowStats;
use crate::unit::walk::KeyFilter;
use crate::unit::{UnitContext, UnitError};
use recon_core::ports::{ConsumerGate, PageRequest, PortError, ReplicaStore, Source};
use recon_core::{
    EntityKey, FenceToken, GLOBAL_SCOPE, RunReport, RunStatus, UnitOutcome, UnitReport,
};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

/// Runs reconciliations against a source, a replica store and, optionally,
/// the replica's consumer gate.
#[derive(Clone)]
pub struct Reconciler {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) store: Arc<dyn ReplicaStore>,
    /// The consumer paused around each run, and the owner its pause is
    /// held under.
    gate: Option<(Arc<dyn ConsumerGate>, String)>,
    progress: Arc<dyn Progress>,
    narrowing: Arc<NarrowStats>,
}

impl Reconciler {
    /// A reconciler without a consumer to pause and without progress output.
    pub fn new(source: Arc<dyn Source>, store: Arc<dyn ReplicaStore>) -> Self {
        Self {
            source,
            store,
            gate: None,
            progress: Arc::new(NoProgress),
            narrowing: Arc::default(),
        }
    }

    /// Pauses this consumer for the duration of each run, holding the pause
    /// as `owner` (another owner's pause is left alone).
    pub fn with_gate(mut self, gate: Arc<dyn ConsumerGate>, owner: impl Into<String>) -> Self {
        self.gate = Some((gate, owner.into()));
        self
    }

    /// Reports progress to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Runs one reconciliation and reports what it did: the run machine
    /// ([`crate::machine`]) executed in this process. Never panics on bad
    /// input and never returns early without resuming the consumer: every
    /// problem ends up in the report.
    pub async fn run(&self, options: &ReconcileOptions, cancel: &CancellationToken) -> RunReport {
        self.execute(options, cancel, None).await.0
    }

    /// [`Self::run`], then keeps the run in the store's history as
    /// `history` says; the report, and whether the history took it.
    pub async fn run_with_history(
        &self,
        options: &ReconcileOptions,
        cancel: &CancellationToken,
        history: &RunHistory,
    ) -> (RunReport, Result<(), PortError>) {
        let (report, kept) = self.execute(options, cancel, Some(history)).await;
        (report, kept.unwrap_or(Ok(())))
    }

    async fn execute(
        &self,
        options: &ReconcileOptions,
        cancel: &CancellationToken,
        history: Option<&RunHistory>,
    ) -> (RunReport, Option<Result<(), PortError>>) {
        let span = info_span!(
            "reconcile.run",
            epoch = options.epoch,
            dry_run = options.dry_run
        );
        SingleRun::new(self, options, cancel, history)
            .execute()
            .instrument(span)
            .await
    }

    /// Completes a run whose units are all reported: its status, then —
    /// unless cancelled, dry, or the source was restored while it ran — the
    /// generation floors, retried; a floor that cannot be raised leaves the
    /// run not completed, with the reason. Used by the single-instance run
    /// and the cluster leader alike.
    pub(crate) async fn complete(
        &self,
        options: &ReconcileOptions,
        report: &mut RunReport,
        generation: Option<u64>,
        cancel: &CancellationToken,
    ) {
        report.status = RunReport::status_of(&report.units);
        if cancel.is_cancelled() {
            report.status = RunStatus::Cancelled;
            return;
        }
        if let Some(reason) = generation.and_then(|generation| report.generation_change(generation))
        {
            warn!(reason = %reason, "run aborted: the source was restored while it ran");
            report.status = RunStatus::Aborted;
            report.abort_reason = Some(reason);
            return;
        }
        if options.dry_run {
            return;
        }
        match self.raise_floors(options, report, generation, cancel).await {
            Ok(floor) => report.generation_floor = floor,
            Err(reason) => {
                error!(reason = %reason, "run not completed: the generation floor was not raised");
                report.status = if cancel.is_cancelled() {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Aborted
                };
                report.abort_reason = Some(reason);
            }
        }
    }

    /// Reconciles the tenant rows and returns their report, the tenants to
    /// go into (what the source listed in that same walk, in the options'
    /// scope) and the source's generation as of the tenant list.
    pub(crate) async fn tenant_list(
        &self,
        options: &ReconcileOptions,
        cancel: &CancellationToken,
    ) -> (UnitReport, Vec<String>, Option<u64>) {
        let filter: KeyFilter = match &options.scope {
            Scope::AllTenants => None,
            Scope::Tenants(ids) => Some(Arc::new(ids.iter().map(EntityKey::id).collect())),
        };
        let context = self.context(options, cancel, filter);
        let (report, tenants) = context.tenant_list().await;
        if report.outcome != UnitOutcome::Done {
            return (report, Vec::new(), None);
        }
        let generation = report.max_generation;
        (report, tenants, generation)
    }

    /// One whole tenant: users and groups, then memberships; deletions in
    /// the reverse order, within the tenant's delete guard.
    pub(crate) async fn tenant(
        &self,
        tenant_id: &str,
        options: &ReconcileOptions,
        cancel: &CancellationToken,
        all_digests: Option<&AllDigests>,
    ) -> Vec<UnitReport> {
        let expected = if self.progress.wants_expected_rows() {
            self.source
                .counts(tenant_id)
                .await
                .ok()
                .map(|counts| counts.total())
        } else {
            None
        };
        self.progress.tenant_started(tenant_id, expected);
        let mut context = self.context(options, cancel, None);
        context.all_digests = all_digests;
        let units = context.whole_tenant(tenant_id).await;
        for unit in &units {
            self.progress.unit_finished(unit);
        }
        self.progress.tenant_finished(tenant_id);
        units
    }

    pub(crate) fn context<'a>(
        &'a self,
        options: &'a ReconcileOptions,
        cancel: &'a CancellationToken,
        filter: KeyFilter,
    ) -> UnitContext<'a> {
        UnitContext {
            source: self.source.clone(),
            store: self.store.clone(),
            options,
            progress: self.progress.as_ref(),
            cancel,
            filter,
            narrowing: &self.narrowing,
            all_digests: None,
        }
    }

    /// Every tenant's digests on both sides, for a run over all tenants
    /// with digests on — when both sides offer them cheaply; otherwise each
    /// tenant's first look asks for its own (a failure here only costs
    /// that).
    pub(crate) async fn all_digests(&self, options: &ReconcileOptions) -> Option<AllDigests> {
        if !options.digests || options.scope != Scope::AllTenants {
            return None;
        }
        let (source, replica) = tokio::join!(
            self.source.all_tenant_digests(),
            self.store.all_tenant_digests()
        );
        match (source, replica) {
            (Ok(Some(source)), Ok(Some(replica))) => {
                info!(
                    source_tenants = source.tenants.len(),
                    replica_tenants = replica.len(),
                    "every tenant's digests read at once"
                );
                Some(AllDigests { source, replica })
            }
            (Err(error), _) | (_, Err(error)) => {
                warn!(error = %error, "could not read every tenant's digests at once; each tenant asks for its own");
                None
            }
            _ => None,
        }
    }

    /// After a run, events of an older generation than the source's are
    /// void or already reflected in what was reconciled (DESIGN §3), so the
    /// floor goes up — for the whole store when every unit was reconciled,
    /// else for each tenant whose units all were (a failed tenant keeps its
    /// floor: the run did not read it). Each raise is retried; the first
    /// that fails for good is the error.
    pub(crate) async fn raise_floors(
        &self,
        options: &ReconcileOptions,
        report: &RunReport,
        generation: Option<u64>,
        cancel: &CancellationToken,
    ) -> Result<Option<u64>, String> {
        let Some(generation) = generation else {
            return Ok(None);
        };
        let scopes = report.floor_scopes(options.scope == Scope::AllTenants, GLOBAL_SCOPE);
        self.raise_floors_of(options, &scopes, generation, cancel)
            .await
    }

    /// The source's generation now: the watermark of a one-row page of
    /// scopes.
    pub(crate) async fn source_generation(&self) -> Result<u64, PortError> {
        let first = PageRequest {
            tenant_id: String::new(),
            kind: self.store.schema().scope_kind(),
            after: None,
            limit: 1,
            within: Vec::new(),
        };
        Ok(self.source.fetch_page(&first).await?.watermark.generation)
    }

    /// Raises the generation floors of a run's scopes (the whole store, or
    /// each of its tenants) to the source's generation before the run
    /// writes anything, the tenant list included: what a run that leaves
    /// consumers running does first (see `docs/pause-free.md`). Nothing
    /// for a dry run.
    pub(crate) async fn raise_floors_before_writing(
        &self,
        options: &ReconcileOptions,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        if options.dry_run {
            return Ok(());
        }
        let generation = self
            .source_generation()
            .await
            .map_err(|error| format!("could not read the source's generation: {error}"))?;
        let scopes = match &options.scope {
            Scope::AllTenants => vec![GLOBAL_SCOPE.to_owned()],
            Scope::Tenants(tenants) => tenants.clone(),
        };
        self.raise_floors_of(options, &scopes, generation, cancel)
            .await
            .map(|_| ())
    }

    /// Raises the floors of `tenants`, which an aborted run reconciled
    /// whole, to `generation` before its consumers resume: old-generation
    /// events still in Kafka (a paused backlog, outbox rows unpublished at
    /// a restore) must not overwrite what it restored. Best effort, within
    /// `deadline`; what to add to the abort reason when raised.
    pub(crate) async fn raise_floors_after_abort(
        &self,
        options: &ReconcileOptions,
        tenants: &[String],
        generation: u64,
        deadline: Duration,
    ) -> Option<String> {
        if tenants.is_empty() {
            return None;
        }
        let cancel = CancellationToken::new();
        let raise = self.raise_floors_of(options, tenants, generation, &cancel);
        match tokio::time::timeout(deadline, raise).await {
            Ok(Ok(_)) => {
                info!(
                    tenants = tenants.len(),
                    generation, "aborted run: floors raised for the tenants it reconciled whole"
                );
                Some(format!(
                    "; generation floor {generation} raised for the {} tenants reconciled whole",
                    tenants.len()
                ))
            }
            Ok(Err(reason)) => {
                warn!(reason = %reason, "aborted run: could not raise the floors of the tenants it reconciled");
                None
            }
            Err(_elapsed) => {
                warn!("aborted run: raising the floors of the tenants it reconciled took too long");
                None
            }
        }
    }

    /// Raises the generation floor of each of `scopes` (tenants, or the
    /// global scope) to `generation` under the run's epoch, retrying
    /// transient failures; `None` when there is no scope.
    pub(crate) async fn raise_floors_of(
        &self,
        options: &ReconcileOptions,
        scopes: &[String],
        generation: u64,
        cancel: &CancellationToken,
    ) -> Result<Option<u64>, String> {
        if scopes.is_empty() {
            return Ok(None);
        }
        let context = self.context(options, cancel, None);
        for scope in scopes {
            let fence = FenceToken::new(scope.clone(), options.epoch);
            let (result, _) = context
                .retrying("raise the generation floor", || async {
                    self.store
                        .raise_generation_floor(&fence, scope, generation)
                        .await
                        .map_err(UnitError::Store)
                })
                .await;
            if let Err(error) = result {
                return Err(format!(
                    "could not raise the generation floor of {scope} to {generation}: {error}"
                ));
            }
        }
        info!(generation, scopes = scopes.len(), "generation floor raised");
        Ok(Some(generation))
    }
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

#[cfg(test)]
mod tests;
