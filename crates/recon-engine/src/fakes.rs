//! In-memory source and store for the engine's unit tests.

use async_trait::async_trait;
use recon_core::digest::record_element;
use recon_core::ports::{
    AppliedCounts, ConsumerGate, DigestRange, DigestRequest, FailureKind, PageRequest, PortError,
    RangeDigest, ReplicaStore, Source, SourceDigests, SourcePage, TenantCounts, TenantDigests,
};
use recon_core::{Change, ElectionClaim, EntityKey, FenceToken, KeyRange, Kind, Row, Version};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Rows by (kind, tenant) then key; tenants are filed under tenant "".
pub type Rows = BTreeMap<(Kind, String), BTreeMap<EntityKey, Row>>;

/// Files a row where both fakes keep it.
pub fn insert(rows: &mut Rows, row: Row) {
    let tenant = if row.kind() == Kind::TENANT {
        String::new()
    } else {
        row.tenant_id.clone()
    };
    rows.entry((row.kind(), tenant))
        .or_default()
        .insert(row.key(), row);
}

/// A change a live source makes to its data: called with the page request
/// about to be served, the rows and the watermark.
pub type LiveChange = Box<dyn Fn(&PageRequest, &mut Rows, &mut Version) + Send + Sync>;

/// A source serving rows, failing the n-th page request if asked, and
/// changing its data between requests like a live monolith if asked.
pub struct FakeSource {
    pub rows: Mutex<Rows>,
    pub watermark: Mutex<Version>,
    pub fail_request: Option<u64>,
    /// How the injected failure is classified.
    pub fail_kind: FailureKind,
    /// Fail every request from `fail_request` on, not just that one.
    pub fail_persistently: bool,
    pub requests: AtomicU64,
    /// Time every page takes, to keep work in flight for a while.
    pub page_delay: std::time::Duration,
    /// Applied before each page request is served.
    pub live: Option<LiveChange>,
    /// Serve range digests (most buckets per request); `None`: none.
    pub digest_buckets: Option<u32>,
    /// Most ranges a multi-range page request may carry (0: none).
    pub page_ranges: u32,
    /// Serve every tenant's digests at once (with `digest_buckets`).
    pub all_tenant_digests: bool,
    /// Digest requests served.
    pub digest_requests: AtomicU64,
}

impl FakeSource {
    pub fn new(rows: Rows, watermark: Version) -> Self {
        Self {
            rows: Mutex::new(rows),
            watermark: Mutex::new(watermark),
            fail_request: None,
            fail_kind: FailureKind::Transient,
            fail_persistently: false,
            requests: AtomicU64::new(0),
            page_delay: std::time::Duration::ZERO,
            live: None,
            digest_buckets: None,
            page_ranges: 0,
            all_tenant_digests: false,
            digest_requests: AtomicU64::new(0),
        }
    }

    /// The same source, serving every tenant's digests at once.
    pub fn with_all_tenant_digests(mut self) -> Self {
        self.all_tenant_digests = true;
        self
    }

    /// The same source, serving multi-range pages of up to `ranges` ranges.
    pub fn with_page_ranges(mut self, ranges: u32) -> Self {
        self.page_ranges = ranges;
        self
    }

    /// The same source, serving digests of up to `buckets` ranges.
    pub fn with_digests(mut self, buckets: u32) -> Self {
        self.digest_buckets = Some(buckets);
        self
    }
}

#[async_trait]
impl Source for FakeSource {
    async fn fetch_page(&self, request: &PageRequest) -> Result<SourcePage, PortError> {
        let number = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.page_delay.is_zero() {
            tokio::time::sleep(self.page_delay).await;
        }
        let failing = match self.fail_request {
            Some(first) if self.fail_persistently => number >= first,
            Some(first) => number == first,
            None => false,
        };
        if failing {
            return Err(PortError::new(
                self.fail_kind,
                format!("injected failure of request {number}"),
            ));
        }
        let mut all_rows = self.rows.lock().expect("lock");
        let mut watermark = self.watermark.lock().expect("lock");
        if let Some(live) = &self.live {
            live(request, &mut all_rows, &mut watermark);
        }
        let tenant = if request.kind == Kind::TENANT {
            String::new()
        } else {
            request.tenant_id.clone()
        };
        let empty = BTreeMap::new();
        let rows = all_rows.get(&(request.kind, tenant)).unwrap_or(&empty);
        let mut page: Vec<Row> = rows
            .iter()
            .filter(|(key, _)| request.after.as_ref().is_none_or(|after| *key > after))
            .filter(|(key, _)| {
                request.within.is_empty() || request.within.iter().any(|range| range.contains(key))
            })
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
            watermark: *watermark,
            next_after,
            bytes: 100,
        })
    }

    async fn digests(&self, request: &DigestRequest) -> Result<Option<SourceDigests>, PortError> {
        let Some(max) = self.digest_buckets else {
            return Ok(None);
        };
        self.digest_requests.fetch_add(1, Ordering::SeqCst);
        let all_rows = self.rows.lock().expect("lock");
        let empty = BTreeMap::new();
        let rows: Vec<&Row> = all_rows
            .get(&(request.kind, request.tenant_id.clone()))
            .unwrap_or(&empty)
            .iter()
            .filter(|(key, _)| request.range.contains(key))
            .map(|(_, row)| row)
            .collect();
        let buckets = request.buckets.clamp(1, max) as usize;
        let size = rows.len().div_ceil(buckets).max(1);
        let mut ranges: Vec<DigestRange> = rows
            .chunks(size)
            .map(|chunk| {
                let mut digest = RangeDigest::default();
                for row in chunk {
                    digest.add(record_element(&row.record, row.version));
                }
                DigestRange {
                    until: chunk.last().map(|row| row.key()),
                    digest,
                }
            })
            .collect();
        match ranges.last_mut() {
            Some(last) => last.until = request.range.until.clone(),
            None => ranges.push(DigestRange {
                until: request.range.until.clone(),
                digest: RangeDigest::default(),
            }),
        }
        Ok(Some(SourceDigests {
            ranges,
            watermark: *self.watermark.lock().expect("lock"),
        }))
    }

    async fn page_ranges(&self) -> Result<u32, PortError> {
        Ok(self.page_ranges)
    }

    async fn all_tenant_digests(
        &self,
    ) -> Result<Option<recon_core::ports::AllTenantDigests>, PortError> {
        if self.digest_buckets.is_none() || !self.all_tenant_digests {
            return Ok(None);
        }
        self.digest_requests.fetch_add(1, Ordering::SeqCst);
        Ok(Some(recon_core::ports::AllTenantDigests {
            tenants: all_digests_of(&self.rows.lock().expect("lock")),
            watermark: *self.watermark.lock().expect("lock"),
        }))
    }

    async fn tenant_digests(&self, tenant_id: &str) -> Result<Option<TenantDigests>, PortError> {
        if self.digest_buckets.is_none() {
            return Ok(None);
        }
        self.digest_requests.fetch_add(1, Ordering::SeqCst);
        let rows = self.rows.lock().expect("lock");
        let mut kinds = vec![RangeDigest::default(); Kind::TENANT_SCOPED.len()];
        for (digest, kind) in kinds.iter_mut().zip(Kind::TENANT_SCOPED) {
            for row in rows
                .get(&(kind, tenant_id.to_owned()))
                .into_iter()
                .flat_map(BTreeMap::values)
            {
                digest.add(record_element(&row.record, row.version));
            }
        }
        Ok(Some(TenantDigests {
            kinds,
            watermark: *self.watermark.lock().expect("lock"),
        }))
    }

    async fn counts(&self, tenant_id: &str) -> Result<TenantCounts, PortError> {
        let rows = self.rows.lock().expect("lock");
        let count = |kind: Kind| {
            rows.get(&(kind, tenant_id.to_owned()))
                .map_or(0, |rows| rows.len() as u64)
        };
        Ok(TenantCounts {
            counts: Kind::TENANT_SCOPED.into_iter().map(count).collect(),
            watermark: *self.watermark.lock().expect("lock"),
        })
    }
}

/// A replica store applying the reconciliation form to in-memory rows.
#[derive(Default)]
pub struct FakeStore {
    pub rows: Mutex<Rows>,
    pub floors: Mutex<BTreeMap<String, u64>>,
    pub writes: AtomicU64,
    /// Raising a fence or acquiring an epoch never returns while set (a
    /// row lock held by a frozen member).
    pub fence_stuck: std::sync::atomic::AtomicBool,
    /// The last epoch handed out and the latest election that acquired one.
    pub epochs: Mutex<(u64, Option<ElectionClaim>)>,
    /// The last coordinator incarnation handed out.
    pub incarnations: AtomicU64,
    /// Fences raised through `raise_fence`, by scope.
    pub fences: Mutex<BTreeMap<String, u64>>,
    /// Every floor raise fails (transiently) while set.
    pub fail_floors: std::sync::atomic::AtomicBool,
    /// Once a floor was raised, the next epoch acquisition (closing the
    /// run) waits this long first: a run that completes but cannot be
    /// closed in time.
    pub close_delay_after_floors: Mutex<Option<std::time::Duration>>,
    /// The wait the next epoch acquisition makes, once armed.
    pub armed_close_delay: Mutex<Option<std::time::Duration>>,
    /// Floor raises attempted.
    pub floor_attempts: AtomicU64,
    /// The run history, in the order the runs were recorded.
    pub runs: Mutex<Vec<recon_core::RunRecord>>,
    /// A reconciliation write waits until this says yes (and fails after
    /// five seconds of no): what must have happened before it.
    pub write_gate: Option<WriteGate>,
}

/// Whether a reconciliation write of `changes` may go ahead.
pub type WriteGate = Box<dyn Fn(&[Change]) -> bool + Send + Sync>;

impl FakeStore {
    pub fn with(rows: Rows) -> Self {
        Self {
            rows: Mutex::new(rows),
            ..Self::default()
        }
    }

    /// A store holding `rows` that counts the reconciliation writes made
    /// while the floor of `scope` was not yet `generation`.
    pub fn counting_writes_below_floor(
        rows: Rows,
        scope: &str,
        generation: u64,
    ) -> (Arc<Self>, Arc<AtomicU64>) {
        let own: Arc<std::sync::OnceLock<std::sync::Weak<Self>>> = Arc::default();
        let below = Arc::new(AtomicU64::new(0));
        let scope = scope.to_owned();
        let store = Arc::new(Self {
            rows: Mutex::new(rows),
            write_gate: Some(Box::new({
                let own = own.clone();
                let below = below.clone();
                move |_changes| {
                    let floor = own
                        .get()
                        .and_then(std::sync::Weak::upgrade)
                        .and_then(|store| store.floors.lock().expect("lock").get(&scope).copied());
                    if floor != Some(generation) {
                        below.fetch_add(1, Ordering::SeqCst);
                    }
                    true
                }
            })),
            ..Self::default()
        });
        let _ = own.set(Arc::downgrade(&store));
        (store, below)
    }

    pub fn snapshot(&self) -> Rows {
        let mut rows = self.rows.lock().expect("lock").clone();
        rows.retain(|_, keyed| !keyed.is_empty());
        rows
    }
}

/// Every tenant's digests of `rows` (tenants without rows absent).
fn all_digests_of(rows: &Rows) -> std::collections::HashMap<String, Vec<RangeDigest>> {
    let mut all: std::collections::HashMap<String, Vec<RangeDigest>> = Default::default();
    for ((kind, tenant), keyed) in rows {
        let Some(index) = Kind::TENANT_SCOPED.iter().position(|known| known == kind) else {
            continue;
        };
        for row in keyed.values() {
            all.entry(tenant.clone())
                .or_insert_with(|| vec![RangeDigest::default(); Kind::TENANT_SCOPED.len()])[index]
                .add(record_element(&row.record, row.version));
        }
    }
    all
}

#[async_trait]
impl ReplicaStore for FakeStore {
    async fn all_tenant_digests(
        &self,
    ) -> Result<Option<std::collections::HashMap<String, Vec<RangeDigest>>>, PortError> {
        Ok(Some(all_digests_of(&self.rows.lock().expect("lock"))))
    }

    async fn read_rows(
        &self,
        tenant_id: &str,
        kind: Kind,
        ranges: &[KeyRange],
        limit: u64,
    ) -> Result<Vec<Row>, PortError> {
        let tenant = if kind == Kind::TENANT {
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
                    .filter(|(key, _)| ranges.iter().any(|range| range.contains(key)))
                    .take(limit as usize)
                    .map(|(_, row)| row.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn count_rows(
        &self,
        tenant_id: Option<&str>,
        kind: Kind,
        range: &KeyRange,
    ) -> Result<u64, PortError> {
        let rows = self.rows.lock().expect("lock");
        let count = rows
            .iter()
            .filter(|((of_kind, tenant), _)| {
                *of_kind == kind
                    && (kind == Kind::TENANT || tenant_id.is_none_or(|wanted| wanted == tenant))
            })
            .flat_map(|(_, keyed)| keyed.keys())
            .filter(|key| range.contains(key))
            .count();
        Ok(count as u64)
    }

    async fn orphan_scopes(&self) -> Result<Vec<String>, PortError> {
        let rows = self.rows.lock().expect("lock");
        let live_tenants: std::collections::BTreeSet<&str> = rows
            .get(&(Kind::TENANT, String::new()))
            .map(|tenants| tenants.keys().map(|key| key.first()).collect())
            .unwrap_or_default();
        let orphans: std::collections::BTreeSet<String> = rows
            .iter()
            .filter(|((kind, tenant), keyed)| {
                *kind != Kind::TENANT
                    && !keyed.is_empty()
                    && !live_tenants.contains(tenant.as_str())
            })
            .map(|((_, tenant), _)| tenant.clone())
            .collect();
        Ok(orphans.into_iter().collect())
    }

    async fn record_run(&self, record: &recon_core::RunRecord) -> Result<(), PortError> {
        let mut runs = self.runs.lock().expect("lock");
        runs.retain(|kept| kept.run_id != record.run_id);
        runs.push(record.clone());
        Ok(())
    }

    async fn apply_reconciliation(
        &self,
        _fence: &FenceToken,
        watermark: Version,
        changes: &[Change],
    ) -> Result<AppliedCounts, PortError> {
        if let Some(gate) = &self.write_gate {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !gate(changes) {
                if std::time::Instant::now() > deadline {
                    return Err(PortError::new(
                        FailureKind::Permanent,
                        "the write gate stayed shut",
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        let mut rows = self.rows.lock().expect("lock");
        let mut kept_newer = 0;
        for change in changes {
            let tenant = if change.kind() == Kind::TENANT {
                String::new()
            } else {
                change.tenant_id().to_owned()
            };
            let stored = rows
                .get(&(change.kind(), tenant))
                .and_then(|keyed| keyed.get(&change.key()))
                .map(|row| row.version);
            if stored.is_some_and(|stored| stored > watermark) {
                kept_newer += 1;
                continue;
            }
            match change {
                Change::Upsert(row) => insert(&mut rows, row.clone()),
                Change::Delete(deletion) => {
                    let tenant = if deletion.kind == Kind::TENANT {
                        String::new()
                    } else {
                        deletion.tenant_id.clone()
                    };
                    if let Some(keyed) = rows.get_mut(&(deletion.kind, tenant)) {
                        keyed.remove(&deletion.key);
                    }
                    if deletion.kind == Kind::TENANT {
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
            written: changes.len() as u64 - kept_newer,
            kept_newer,
            ..AppliedCounts::default()
        })
    }

    async fn raise_fence(&self, fence: &FenceToken) -> Result<(), PortError> {
        if self.fence_stuck.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let mut fences = self.fences.lock().expect("lock");
        let raised = fences.entry(fence.scope.clone()).or_default();
        *raised = (*raised).max(fence.epoch);
        Ok(())
    }

    async fn acquire_epoch(&self, claim: Option<ElectionClaim>) -> Result<u64, PortError> {
        if self.fence_stuck.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let delay = self.armed_close_delay.lock().expect("lock").take();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
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

    async fn next_incarnation(&self) -> Result<u64, PortError> {
        let epochs = self.epochs.lock().expect("lock");
        let claimed = epochs.1.map_or(0, |held| held.incarnation);
        let last = self.incarnations.load(Ordering::SeqCst);
        let next = last.max(epochs.0).max(claimed) + 1;
        self.incarnations.store(next, Ordering::SeqCst);
        Ok(next)
    }

    async fn raise_generation_floor(
        &self,
        _fence: &FenceToken,
        scope: &str,
        generation: u64,
    ) -> Result<(), PortError> {
        self.floor_attempts.fetch_add(1, Ordering::SeqCst);
        if self.fail_floors.load(Ordering::SeqCst) {
            return Err(PortError::new(
                FailureKind::Transient,
                "injected failure of the floor raise",
            ));
        }
        self.floors
            .lock()
            .expect("lock")
            .insert(scope.to_owned(), generation);
        if let Some(delay) = self.close_delay_after_floors.lock().expect("lock").take() {
            *self.armed_close_delay.lock().expect("lock") = Some(delay);
        }
        Ok(())
    }
}

/// A consumer gate that records its state.
#[derive(Default)]
pub struct FakeGate {
    pub paused: std::sync::atomic::AtomicBool,
    pub pauses: AtomicU64,
}

#[async_trait]
impl ConsumerGate for FakeGate {
    async fn pause(&self, _owner: &str) -> Result<(), PortError> {
        self.paused.store(true, Ordering::SeqCst);
        self.pauses.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn resume(&self, _owner: &str) -> Result<(), PortError> {
        self.paused.store(false, Ordering::SeqCst);
        Ok(())
    }
}
