//! In-memory source and store for the engine's unit tests.

use async_trait::async_trait;
use recon_core::ports::{
    AppliedCounts, FailureKind, PageRequest, PortError, ReplicaStore, Source, SourcePage,
    TenantCounts,
};
use recon_core::{Change, ElectionClaim, EntityKey, FenceToken, Kind, Row, Version};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Rows by (kind, tenant) then key; tenants are filed under tenant "".
pub type Rows = BTreeMap<(Kind, String), BTreeMap<EntityKey, Row>>;

/// Files a row where both fakes keep it.
pub fn insert(rows: &mut Rows, row: Row) {
    let tenant = if row.kind() == Kind::Tenant {
        String::new()
    } else {
        row.tenant_id.clone()
    };
    rows.entry((row.kind(), tenant))
        .or_default()
        .insert(row.key(), row);
}

/// A source serving fixed rows, failing the n-th page request if asked.
pub struct FakeSource {
    pub rows: Rows,
    pub watermark: Version,
    pub fail_request: Option<u64>,
    pub requests: AtomicU64,
    /// Time every page takes, to keep work in flight for a while.
    pub page_delay: std::time::Duration,
}

impl FakeSource {
    pub fn new(rows: Rows, watermark: Version) -> Self {
        Self {
            rows,
            watermark,
            fail_request: None,
            requests: AtomicU64::new(0),
            page_delay: std::time::Duration::ZERO,
        }
    }
}

#[async_trait]
impl Source for FakeSource {
    async fn fetch_page(&self, request: &PageRequest) -> Result<SourcePage, PortError> {
        let number = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.page_delay.is_zero() {
            tokio::time::sleep(self.page_delay).await;
        }
        if self.fail_request == Some(number) {
            return Err(PortError::new(
                FailureKind::Transient,
                format!("injected failure of request {number}"),
            ));
        }
        let tenant = if request.kind == Kind::Tenant {
            String::new()
        } else {
            request.tenant_id.clone()
        };
        let empty = BTreeMap::new();
        let rows = self.rows.get(&(request.kind, tenant)).unwrap_or(&empty);
        let mut page: Vec<Row> = rows
            .iter()
            .filter(|(key, _)| request.after.as_ref().is_none_or(|after| *key > after))
            .take(request.limit as usize + 1)
            .map(|(_, row)| row.clone())
            .collect();
        let more = page.len() > request.limit as usize;
        page.truncate(request.limit as usize);
        let next_after = if more {
            page.last().map(Row::key)
        } else {
            None
        };
        Ok(SourcePage {
            rows: page,
            watermark: self.watermark,
            next_after,
            bytes: 100,
        })
    }

    async fn counts(&self, tenant_id: &str) -> Result<TenantCounts, PortError> {
        let count = |kind: Kind| {
            self.rows
                .get(&(kind, tenant_id.to_owned()))
                .map_or(0, |rows| rows.len() as u64)
        };
        Ok(TenantCounts {
            users: count(Kind::User),
            groups: count(Kind::Group),
            memberships: count(Kind::Membership),
            watermark: self.watermark,
        })
    }
}

/// A replica store applying the reconciliation form to in-memory rows.
#[derive(Default)]
pub struct FakeStore {
    pub rows: Mutex<Rows>,
    pub floors: Mutex<BTreeMap<String, u64>>,
    pub writes: AtomicU64,
    /// The last epoch handed out and the latest election that acquired one.
    pub epochs: Mutex<(u64, Option<ElectionClaim>)>,
}

impl FakeStore {
    pub fn with(rows: Rows) -> Self {
        Self {
            rows: Mutex::new(rows),
            ..Self::default()
        }
    }

    pub fn snapshot(&self) -> Rows {
        let mut rows = self.rows.lock().expect("lock").clone();
        rows.retain(|_, keyed| !keyed.is_empty());
        rows
    }
}

#[async_trait]
impl ReplicaStore for FakeStore {
    async fn read_rows(
        &self,
        tenant_id: &str,
        kind: Kind,
        after: Option<&EntityKey>,
        limit: u64,
    ) -> Result<Vec<Row>, PortError> {
        let tenant = if kind == Kind::Tenant {
            String::new()
        } else {
            tenant_id.to_owned()
        };
        let rows = self.rows.lock().expect("lock");
        Ok(rows
            .get(&(kind, tenant))
            .map(|keyed| {
                keyed
                    .iter()
                    .filter(|(key, _)| after.is_none_or(|after| *key > after))
                    .take(limit as usize)
                    .map(|(_, row)| row.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn apply_reconciliation(
        &self,
        _fence: &FenceToken,
        changes: &[Change],
    ) -> Result<AppliedCounts, PortError> {
        let mut rows = self.rows.lock().expect("lock");
        for change in changes {
            match change {
                Change::Upsert(row) => insert(&mut rows, row.clone()),
                Change::Delete(deletion) => {
                    let tenant = if deletion.kind == Kind::Tenant {
                        String::new()
                    } else {
                        deletion.tenant_id.clone()
                    };
                    if let Some(keyed) = rows.get_mut(&(deletion.kind, tenant)) {
                        keyed.remove(&deletion.key);
                    }
                    if deletion.kind == Kind::Tenant {
                        for kind in Kind::TENANT_SCOPED {
                            rows.remove(&(kind, deletion.tenant_id.clone()));
                        }
                    }
                }
            }
        }
        self.writes
            .fetch_add(changes.len() as u64, Ordering::SeqCst);
        Ok(AppliedCounts {
            written: changes.len() as u64,
            ..AppliedCounts::default()
        })
    }

    async fn raise_fence(&self, _fence: &FenceToken) -> Result<(), PortError> {
        Ok(())
    }

    async fn acquire_epoch(&self, claim: Option<ElectionClaim>) -> Result<u64, PortError> {
        let mut epochs = self.epochs.lock().expect("lock");
        if let Some(claim) = claim {
            if epochs.1.is_some_and(|held| held > claim) {
                return Err(PortError::new(
                    recon_core::ports::FailureKind::StaleEpoch,
                    format!("stale election {claim:?}"),
                ));
            }
            epochs.1 = Some(claim);
        }
        epochs.0 += 1;
        Ok(epochs.0)
    }

    async fn raise_generation_floor(
        &self,
        _fence: &FenceToken,
        scope: &str,
        generation: u64,
    ) -> Result<(), PortError> {
        self.floors
            .lock()
            .expect("lock")
            .insert(scope.to_owned(), generation);
        Ok(())
    }
}
