//! The store as the Kafka consumer's [`EventSink`].

use crate::{ApplyOutcome, Error, Store, WriteMode};
use async_trait::async_trait;
use recon_core::ports::{
    AppliedCounts, DeadLetter, EventSink, FailureKind, PortError, ReplicaStore, digests_by_scan,
    error_chain, tenant_digests_by_scan,
};
use recon_core::{
    Change, ElectionClaim, EntityKey, FenceToken, KeyRange, Kind, RangeDigest, Row, Version,
};
use sea_orm::ConnectionTrait;

impl From<Error> for PortError {
    fn from(error: Error) -> Self {
        // The store's errors never carry credentials.
        PortError::with_source(error.kind(), error)
    }
}

impl From<ApplyOutcome> for AppliedCounts {
    fn from(outcome: ApplyOutcome) -> Self {
        AppliedCounts {
            written: outcome.written,
            skipped_stale: outcome.skipped_stale,
            skipped_below_floor: outcome.skipped_below_floor,
            kept_newer: outcome.kept_newer,
        }
    }
}

#[async_trait]
impl EventSink for Store {
    async fn apply_events(&self, changes: &[Change]) -> Result<AppliedCounts, PortError> {
        Ok(self.apply(changes, WriteMode::Event).await?.into())
    }

    async fn record_dead_letters(&self, letters: &[DeadLetter]) -> Result<(), PortError> {
        Store::record_dead_letters(self, letters)
            .await
            .map_err(|error| PortError::new(FailureKind::Transient, error_chain(&error)))
    }

    async fn check_ready(&self) -> Result<(), PortError> {
        self.connection
            .execute_unprepared("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|error| {
                PortError::new(
                    FailureKind::Transient,
                    format!("replica store unreachable: {error}"),
                )
            })
    }
}

#[async_trait]
impl ReplicaStore for Store {
    async fn read_rows(
        &self,
        tenant_id: &str,
        kind: Kind,
        ranges: &[KeyRange],
        limit: u64,
    ) -> Result<Vec<Row>, PortError> {
        let page = self.read_within(tenant_id, kind, ranges, limit).await?;
        Ok(page.into_iter().map(|stored| stored.row).collect())
    }

    async fn count_rows(
        &self,
        tenant_id: Option<&str>,
        kind: Kind,
        range: &KeyRange,
    ) -> Result<u64, PortError> {
        Ok(self.count_live_in(tenant_id, kind, range).await?)
    }

    async fn orphan_scopes(&self) -> Result<Vec<String>, PortError> {
        Ok(Store::orphan_scopes(self).await?)
    }

    async fn digest_ranges(
        &self,
        tenant_id: &str,
        kind: Kind,
        after: Option<&EntityKey>,
        bounds: &[Option<EntityKey>],
    ) -> Result<Vec<RangeDigest>, PortError> {
        match self
            .aggregate_digests(tenant_id, kind, after, bounds)
            .await?
        {
            Some(digests) => Ok(digests),
            None => digests_by_scan(self, tenant_id, kind, after, bounds).await,
        }
    }

    async fn all_tenant_digests(
        &self,
    ) -> Result<Option<std::collections::HashMap<String, Vec<RangeDigest>>>, PortError> {
        Ok(self.aggregate_all_tenant_digests().await?)
    }

    fn schema(&self) -> &'static recon_core::schema::Schema {
        self.data_model()
    }

    async fn tenant_digests(&self, tenant_id: &str) -> Result<Vec<RangeDigest>, PortError> {
        match self.aggregate_tenant_digests(tenant_id).await? {
            Some(digests) => Ok(digests),
            None => tenant_digests_by_scan(self, tenant_id).await,
        }
    }

    async fn record_run(&self, record: &recon_core::RunRecord) -> Result<(), PortError> {
        Ok(Store::record_run(self, record).await?)
    }

    async fn apply_reconciliation(
        &self,
        fence: &FenceToken,
        watermark: Version,
        changes: &[Change],
    ) -> Result<AppliedCounts, PortError> {
        Ok(self
            .apply(changes, WriteMode::Reconcile(fence, watermark))
            .await?
            .into())
    }

    async fn raise_fence(&self, fence: &FenceToken) -> Result<(), PortError> {
        Ok(Store::raise_fence(self, fence).await?)
    }

    async fn acquire_epoch(&self, claim: Option<ElectionClaim>) -> Result<u64, PortError> {
        Ok(Store::acquire_epoch(self, claim).await?)
    }

    async fn next_incarnation(&self) -> Result<u64, PortError> {
        Ok(Store::next_incarnation(self).await?)
    }

    async fn raise_generation_floor(
        &self,
        fence: &FenceToken,
        scope: &str,
        generation: u64,
    ) -> Result<(), PortError> {
        Ok(Store::raise_generation_floor(self, fence, scope, generation).await?)
    }
}
