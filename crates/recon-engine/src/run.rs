//! A whole run: pause, tenant list, tenants, generation floor, resume.

use crate::options::{ReconcileOptions, Scope};
use crate::progress::{NoProgress, Progress};
use crate::unit::{UnitContext, UnitSpec};
use crate::walk::KeyFilter;
use futures::StreamExt;
use recon_core::ports::{ConsumerGate, PageRequest, ReplicaStore, Source};
use recon_core::{
    EntityKey, FenceToken, GLOBAL_SCOPE, KeyRange, Kind, RunReport, RunStatus, UnitOutcome,
    UnitReport,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

/// Runs reconciliations against a source, a replica store and, optionally,
/// the replica's consumer gate.
#[derive(Clone)]
pub struct Reconciler {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) store: Arc<dyn ReplicaStore>,
    gate: Option<Arc<dyn ConsumerGate>>,
    progress: Arc<dyn Progress>,
}

impl Reconciler {
    /// A reconciler without a consumer to pause and without progress output.
    pub fn new(source: Arc<dyn Source>, store: Arc<dyn ReplicaStore>) -> Self {
        Self {
            source,
            store,
            gate: None,
            progress: Arc::new(NoProgress),
        }
    }

    /// Pauses this consumer for the duration of each run.
    pub fn with_gate(mut self, gate: Arc<dyn ConsumerGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Reports progress to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Runs one reconciliation and reports what it did. Never panics on bad
    /// input and never returns early without resuming the consumer: every
    /// problem ends up in the report.
    pub async fn run(&self, options: &ReconcileOptions, cancel: &CancellationToken) -> RunReport {
        let started = Instant::now();
        let span = info_span!(
            "reconcile.run",
            epoch = options.epoch,
            dry_run = options.dry_run
        );
        let mut report = RunReport {
            epoch: options.epoch,
            dry_run: options.dry_run,
            status: RunStatus::Completed,
            abort_reason: None,
            generation_floor: None,
            seconds: 0.0,
            peak_rss_bytes: None,
            units: Vec::new(),
        };
        async {
            if let Some(gate) = &self.gate
                && let Err(error) = gate.pause().await
            {
                report.status = RunStatus::Aborted;
                report.abort_reason = Some(format!("could not pause the consumer: {error}"));
                return;
            }
            let run_cancel = cancel.child_token();
            let outcome = tokio::time::timeout(options.max_pause, self.reconcile(options, &run_cancel, &mut report)).await;
            if outcome.is_err() {
                run_cancel.cancel();
                report.status = RunStatus::Aborted;
                report.abort_reason = Some(format!(
                    "max_pause of {}s exceeded; consumers resumed, unfinished units left for the next run",
                    options.max_pause.as_secs()
                ));
            } else if cancel.is_cancelled() {
                report.status = RunStatus::Aborted;
                report.abort_reason = Some("cancelled".into());
            }
            if let Some(gate) = &self.gate
                && let Err(error) = gate.resume().await
            {
                error!(error = %error, "could not resume the consumer after reconciliation");
            }
        }
        .instrument(span)
        .await;
        report.seconds = started.elapsed().as_secs_f64();
        report
    }

    async fn reconcile(
        &self,
        options: &ReconcileOptions,
        cancel: &CancellationToken,
        report: &mut RunReport,
    ) {
        let tenant_filter: KeyFilter = match &options.scope {
            Scope::AllTenants => None,
            Scope::Tenants(ids) => Some(Arc::new(ids.iter().map(EntityKey::id).collect())),
        };
        let (tenant_report, tenant_ids, generation) =
            self.tenant_list(options, cancel, tenant_filter).await;
        let tenant_list_done = tenant_report.outcome == UnitOutcome::Done;
        report.units.push(tenant_report);
        if !tenant_list_done {
            report.status = RunReport::status_of(&report.units);
            return;
        }
        self.progress.tenants_planned(tenant_ids.len() as u64);
        let concurrency = options.concurrency.max(1);
        let results: Vec<Vec<UnitReport>> = futures::stream::iter(tenant_ids)
            .map(|tenant_id| async move { self.tenant(&tenant_id, options, cancel).await })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut units: Vec<UnitReport> = results.into_iter().flatten().collect();
        units.sort_by(|left, right| (&left.tenant, left.kind).cmp(&(&right.tenant, right.kind)));
        report.units.extend(units);
        report.status = RunReport::status_of(&report.units);
        if !options.dry_run && !cancel.is_cancelled() {
            report.generation_floor = self.raise_floors(options, report, generation).await;
        }
    }

    /// Reconciles the tenant rows and returns the tenants to go into, and the
    /// source's generation.
    pub(crate) async fn tenant_list(
        &self,
        options: &ReconcileOptions,
        cancel: &CancellationToken,
        filter: KeyFilter,
    ) -> (UnitReport, Vec<String>, Option<u64>) {
        let context = self.context(options, cancel, filter);
        let spec = UnitSpec {
            tenant_id: String::new(),
            kind: Kind::Tenant,
            range: KeyRange::all(),
        };
        let (mut report, first) = context.first_pass(&spec).await;
        let Ok(replica_rows) = first else {
            return (report, Vec::new(), None);
        };
        context.second_pass(&spec, &mut report, replica_rows).await;
        if report.outcome != UnitOutcome::Done {
            return (report, Vec::new(), None);
        }
        // The tenants to go into: what the source lists now (in scope).
        match self
            .source_tenants(options, cancel, context.filter.clone())
            .await
        {
            Ok((ids, generation)) => (report, ids, Some(generation)),
            Err(error) => {
                report.outcome = UnitOutcome::Failed(error);
                (report, Vec::new(), None)
            }
        }
    }

    async fn source_tenants(
        &self,
        options: &ReconcileOptions,
        cancel: &CancellationToken,
        filter: KeyFilter,
    ) -> Result<(Vec<String>, u64), String> {
        let mut ids = Vec::new();
        let mut generation = 0;
        let mut request = PageRequest {
            tenant_id: String::new(),
            kind: Kind::Tenant,
            after: None,
            limit: options.page_size,
        };
        loop {
            if cancel.is_cancelled() {
                return Err("cancelled".into());
            }
            let page = self
                .source
                .fetch_page(&request)
                .await
                .map_err(|error| format!("source: {error}"))?;
            generation = generation.max(page.watermark.generation);
            for row in &page.rows {
                let key = row.key();
                if filter.as_ref().is_none_or(|keep| keep.contains(&key)) {
                    ids.push(key.primary);
                }
            }
            match page.next_after {
                Some(next) => request.after = Some(next),
                None => return Ok((ids, generation)),
            }
        }
    }

    /// Users and groups, then memberships; deletions in the reverse order.
    pub(crate) async fn tenant(
        &self,
        tenant_id: &str,
        options: &ReconcileOptions,
        cancel: &CancellationToken,
    ) -> Vec<UnitReport> {
        let expected = self
            .source
            .counts(tenant_id)
            .await
            .ok()
            .map(|counts| counts.users + counts.groups + counts.memberships);
        self.progress.tenant_started(tenant_id, expected);
        let context = self.context(options, cancel, None);
        let mut units = Vec::with_capacity(3);
        let mut first_passes = Vec::with_capacity(3);
        for kind in Kind::TENANT_SCOPED {
            let spec = UnitSpec {
                tenant_id: tenant_id.to_owned(),
                kind,
                range: KeyRange::all(),
            };
            let (report, first) = context.first_pass(&spec).await;
            units.push(report);
            first_passes.push((spec, first));
        }
        for (index, (spec, first)) in first_passes.into_iter().enumerate().rev() {
            match first {
                Ok(replica_rows) => {
                    context
                        .second_pass(&spec, &mut units[index], replica_rows)
                        .await
                }
                Err(error) => {
                    warn!(tenant = tenant_id, kind = %spec.kind, error = %error, "unit failed; nothing deleted")
                }
            }
        }
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
        }
    }

    /// After a run, events of an older generation than the source's are
    /// void or already reflected in what was reconciled (DESIGN §3), so the
    /// floor goes up: for the whole store once the tenant list is reconciled
    /// (a tenant whose own units failed is reported and stays stale until the
    /// next run — applying pre-restore events would only move it further from
    /// the truth); for a run over listed tenants, per tenant whose units are
    /// all done.
    pub(crate) async fn raise_floors(
        &self,
        options: &ReconcileOptions,
        report: &RunReport,
        generation: Option<u64>,
    ) -> Option<u64> {
        let generation = generation?;
        let scopes: Vec<String> = if options.scope == Scope::AllTenants {
            let tenant_list_done = report
                .units
                .iter()
                .any(|unit| unit.kind == Kind::Tenant && unit.outcome == UnitOutcome::Done);
            if !tenant_list_done {
                return None;
            }
            vec![GLOBAL_SCOPE.to_owned()]
        } else {
            let failed: BTreeSet<&str> = report
                .units
                .iter()
                .filter(|unit| unit.outcome != UnitOutcome::Done)
                .map(|unit| unit.tenant.as_str())
                .collect();
            let tenants: BTreeSet<&str> = report
                .units
                .iter()
                .filter(|unit| unit.kind != Kind::Tenant)
                .map(|unit| unit.tenant.as_str())
                .collect();
            tenants
                .difference(&failed)
                .map(|tenant| tenant.to_string())
                .collect()
        };
        for scope in &scopes {
            let fence = FenceToken::new(scope.clone(), options.epoch);
            if let Err(error) = self
                .store
                .raise_generation_floor(&fence, scope, generation)
                .await
            {
                error!(error = %error, scope = %scope, "could not raise the generation floor");
                return None;
            }
        }
        info!(generation, scopes = scopes.len(), "generation floor raised");
        Some(generation)
    }
}
