//! Ports: the small traits through which the engine and the Kafka consumer
//! talk to the outside world. Adapters (the store, the consumer, later the
//! source client and the coordinator) implement them; nothing here does I/O.

pub use crate::digest::RangeDigest;
use crate::digest::record_element;
use crate::schema::Schema;
use crate::{Change, ElectionClaim, EntityKey, FenceToken, KeyRange, Kind, Row, Version};
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
    /// The thing asked for does not exist (e.g. a tenant unknown to the
    /// source).
    NotFound,
    /// The caller gave up on the call (its cancellation token fired:
    /// shutdown, or the work it served ended); nothing failed.
    Cancelled,
    /// This member's coordinator session (etcd lease, ZooKeeper session,
    /// PostgreSQL session row) is gone: it is no longer a member, and
    /// whatever it led, claimed or acknowledged under that session is
    /// void. It must join again.
    SessionLost,
}

impl FailureKind {
    /// Whether the caller no longer holds what it acted under — an epoch
    /// ([`Self::StaleEpoch`]) or a session ([`Self::SessionLost`]): the
    /// call was refused, nothing it asked for was written, and retrying
    /// cannot succeed.
    pub fn is_fenced_off(self) -> bool {
        matches!(self, Self::StaleEpoch | Self::SessionLost)
    }
}

/// An adapter's failure: what a caller acts on ([`FailureKind`], the one
/// error kind every port and adapter uses), a message, and the adapter's
/// own error as its source where there is one (for `source()` and
/// downcasting).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    /// How to react.
    pub kind: FailureKind,
    /// What failed, with its cause chain rendered (never credentials).
    pub message: String,
    /// The adapter's error this one stands for, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl PortError {
    /// A failure of the given kind.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A failure of the given kind standing for `source`: the message is
    /// its cause chain, and `source` is kept.
    pub fn with_source(
        kind: FailureKind,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: error_chain(&source),
            source: Some(Box::new(source)),
        }
    }

    /// The same failure, its message prefixed with what was being done
    /// (`"{what}: {message}"`); kind and source kept.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

/// An error and its sources on one line, joined with `: ` (for logs and
/// [`PortError`] messages). A cause whose text the message before it already
/// quotes is left out, as some libraries repeat their cause in their own
/// message.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
    /// Reconciliation changes not written because the stored version was
    /// newer than the page's watermark (a newer event had landed).
    pub kept_newer: u64,
}

/// A record the consumer could not apply because of its own content (an
/// undecodable payload, or an event the store refused for its data), kept
/// with where it came from so that it can be found and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Topic of the record.
    pub topic: String,
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// The record's key as sent, if any.
    pub key: Option<Vec<u8>>,
    /// The record's payload as sent, if any.
    pub payload: Option<Vec<u8>>,
    /// Why it was refused.
    pub error: String,
}

/// Where the Kafka consumer applies decoded change events: the event form of
/// the store's one apply path (version-guarded, generation floor). Applying
/// the same batch twice must be harmless.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Applies one batch atomically; on error nothing of it is applied.
    /// [`FailureKind::Permanent`] means the batch's *data* is refused (some
    /// event in it would be refused by any healthy store); every failure of
    /// the store itself is [`FailureKind::Transient`].
    async fn apply_events(&self, changes: &[Change]) -> Result<AppliedCounts, PortError>;

    /// Records dead letters durably, before their offsets are stored.
    /// Recording the same letter (same topic, partition and offset) twice
    /// keeps one. Any failure is worth retrying.
    async fn record_dead_letters(&self, letters: &[DeadLetter]) -> Result<(), PortError>;

    /// Whether the sink is reachable (for readiness probes).
    async fn check_ready(&self) -> Result<(), PortError>;
}

/// Pauses and resumes a replica's event consumption (every consumer stays
/// paused while a reconciliation runs).
///
/// Pauses are held by owners (a cluster run, an operator through the admin
/// API, a `recon reconcile` run): the consumer stays paused while any owner
/// holds a pause, and one owner's resume never ends another's.
#[async_trait]
pub trait ConsumerGate: Send + Sync {
    /// Holds a pause for `owner`; returns once the batch in flight is
    /// committed. Pausing again for the same owner changes nothing.
    async fn pause(&self, owner: &str) -> Result<(), PortError>;
    /// Releases `owner`'s pause; events are applied again once no owner
    /// holds one.
    async fn resume(&self, owner: &str) -> Result<(), PortError>;
}

/// What to read from a source: one page of one kind, in key order, after a
/// key — optionally only within some key ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The tenant; ignored for [`Kind::TENANT`] (the tenant list).
    pub tenant_id: String,
    /// The kind to list.
    pub kind: Kind,
    /// Exclusive lower bound (`None`: from the start).
    pub after: Option<EntityKey>,
    /// Most items wanted (1..=10000).
    pub limit: u32,
    /// When not empty, only rows inside one of these ranges (in key order,
    /// disjoint): many small ranges read in one request (DESIGN §4). At
    /// most [`Source::page_ranges`] of them; empty for a source without
    /// multi-range pages.
    pub within: Vec<KeyRange>,
}

/// One page from the source, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePage {
    /// The rows, validated: strictly increasing keys, all after the request's
    /// `after`, all of the requested kind and tenant.
    pub rows: Vec<Row>,
    /// The source's version as of the page's snapshot.
    pub watermark: Version,
    /// Where the next page starts; `None` on the last page.
    pub next_after: Option<EntityKey>,
    /// Bytes of the response body.
    pub bytes: u64,
}

/// A tenant's entity counts at the source, for planning.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantCounts {
    /// Rows per scoped kind, in the schema's file order
    /// ([`Schema::scoped`](crate::schema::Schema::scoped)).
    pub counts: Vec<u64>,
    /// The source's version as of the counts.
    pub watermark: Version,
}

impl TenantCounts {
    /// All rows of the tenant.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What digests to compute: one kind of one tenant over a key range, split
/// into at most `buckets` consecutive ranges of about equal row counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRequest {
    /// The tenant.
    pub tenant_id: String,
    /// The kind (not [`Kind::TENANT`]).
    pub kind: Kind,
    /// The range to cover.
    pub range: KeyRange,
    /// Most ranges wanted (1..=256).
    pub buckets: u32,
}

/// One range of a [`DigestRequest`]'s answer: from the previous range's
/// `until` (or the request's `after`), exclusive, to `until`, inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRange {
    /// Inclusive upper bound; the last range ends where the request's range
    /// ends (`None`: unbounded).
    pub until: Option<EntityKey>,
    /// Its digest.
    pub digest: RangeDigest,
}

/// The source's digests of a request, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDigests {
    /// Consecutive ranges covering the requested range exactly, in key order.
    pub ranges: Vec<DigestRange>,
    /// The source's version as of the snapshot.
    pub watermark: Version,
}

/// The digests of a tenant's scoped kinds, each over its whole key space,
/// read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDigests {
    /// One per scoped kind, in the schema's file order.
    pub kinds: Vec<RangeDigest>,
    /// The source's version as of the snapshot.
    pub watermark: Version,
}

/// Every tenant's [`TenantDigests`], read in one snapshot: what a run
/// compares first, so that its unchanged tenants cost nothing more. A
/// tenant without rows of a kind has the empty digest there; a tenant
/// without any row may be absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllTenantDigests {
    /// One digest per scoped kind (file order) per tenant.
    pub tenants: std::collections::HashMap<String, Vec<RangeDigest>>,
    /// The source's version as of the snapshot.
    pub watermark: Version,
}

/// The source of truth (the monolith's Source API).
#[async_trait]
pub trait Source: Send + Sync {
    /// Reads one page. Errors are [`FailureKind::Transient`] only when the
    /// adapter gave up retrying; [`FailureKind::NotFound`] when the tenant is
    /// unknown to the source.
    async fn fetch_page(&self, request: &PageRequest) -> Result<SourcePage, PortError>;

    /// A tenant's counts.
    async fn counts(&self, tenant_id: &str) -> Result<TenantCounts, PortError>;

    /// Range digests (DESIGN §4), or `None` when the source does not offer
    /// them — then every range is walked. The default offers none.
    async fn digests(&self, request: &DigestRequest) -> Result<Option<SourceDigests>, PortError> {
        let _ = request;
        Ok(None)
    }

    /// A tenant's digests, every kind whole, in one request — or `None`
    /// when the source does not offer digests. [`FailureKind::NotFound`]
    /// when the tenant is unknown. The default offers none.
    async fn tenant_digests(&self, tenant_id: &str) -> Result<Option<TenantDigests>, PortError> {
        let _ = tenant_id;
        Ok(None)
    }

    /// Most ranges a page request may carry in [`PageRequest::within`]; 0
    /// when the source has no multi-range pages (the default).
    async fn page_ranges(&self) -> Result<u32, PortError> {
        Ok(0)
    }

    /// Every tenant's digests in one request, or `None` when the source
    /// does not offer them (the default).
    async fn all_tenant_digests(&self) -> Result<Option<AllTenantDigests>, PortError> {
        Ok(None)
    }
}

/// The replica store, as reconciliation sees it.
#[async_trait]
pub trait ReplicaStore: Send + Sync {
    /// Up to `limit` live rows of `kind` in `tenant_id` inside one of
    /// `ranges` (in key order, disjoint, not empty), in key order (for
    /// tenants `tenant_id` is ignored).
    async fn read_rows(
        &self,
        tenant_id: &str,
        kind: Kind,
        ranges: &[KeyRange],
        limit: u64,
    ) -> Result<Vec<Row>, PortError>;

    /// The tenants that have live rows of a kind inside a tenant but no live
    /// tenant row, in key order: a partial delete left them, and a run led
    /// by the source's tenant list would never look at them.
    async fn orphan_scopes(&self) -> Result<Vec<String>, PortError>;

    /// Live rows of `kind` within `range`: of one tenant, or of every
    /// tenant when `tenant_id` is `None` (ignored for [`Kind::TENANT`]).
    async fn count_rows(
        &self,
        tenant_id: Option<&str>,
        kind: Kind,
        range: &KeyRange,
    ) -> Result<u64, PortError>;

    /// Writes changes in the reconciliation form, fenced by `fence`: each
    /// row is set only where the stored version is not newer than
    /// `watermark`, the watermark of the source page the changes come from
    /// (a newer stored version is an event newer than that page: it is kept
    /// and counted in [`AppliedCounts::kept_newer`]).
    async fn apply_reconciliation(
        &self,
        fence: &FenceToken,
        watermark: Version,
        changes: &[Change],
    ) -> Result<AppliedCounts, PortError>;

    /// Raises the fence of `fence.scope` to `fence.epoch` without writing
    /// data (a new leader does this for the global scope).
    async fn raise_fence(&self, fence: &FenceToken) -> Result<(), PortError>;

    /// Hands out the next epoch: raises the global fence to `fence + 1` and
    /// returns it, in one transaction, which fences every older epoch off.
    /// With a `claim`, fails with
    /// [`FailureKind::StaleEpoch`] if the store already gave an epoch to a
    /// later election.
    async fn acquire_epoch(&self, claim: Option<ElectionClaim>) -> Result<u64, PortError>;

    /// Hands out a coordinator incarnation above every incarnation, epoch
    /// and claim the store has seen, without raising any fence (asking for
    /// one disturbs no run).
    async fn next_incarnation(&self) -> Result<u64, PortError>;

    /// Raises the generation floor of `scope` to `generation`, fenced.
    async fn raise_generation_floor(
        &self,
        fence: &FenceToken,
        scope: &str,
        generation: u64,
    ) -> Result<(), PortError>;

    /// Keeps a finished run in the run history (replacing a record of the
    /// same run: a leader that adopted a run may end it again), and trims
    /// the history to the last [`RUNS_KEPT`](crate::history::RUNS_KEPT)
    /// runs. The default keeps no history and says so.
    async fn record_run(&self, record: &crate::RunRecord) -> Result<(), PortError> {
        let _ = record;
        Err(PortError::new(
            FailureKind::Permanent,
            "this replica store keeps no run history",
        ))
    }

    /// The digests of the live rows of `kind` in `tenant_id` over
    /// consecutive ranges: the first after `after`, each up to its bound in
    /// `bounds` (inclusive; `None`: unbounded). Computed from the rows' data
    /// as stored, so a row changed behind recon's back changes its range's
    /// digest. The default reads the rows in key order and hashes them;
    /// a store that keeps the element as a column aggregates it instead.
    async fn digest_ranges(
        &self,
        tenant_id: &str,
        kind: Kind,
        after: Option<&EntityKey>,
        bounds: &[Option<EntityKey>],
    ) -> Result<Vec<RangeDigest>, PortError> {
        digests_by_scan(self, tenant_id, kind, after, bounds).await
    }

    /// Every tenant's live users, groups and memberships as digests, read
    /// at once (tenants without live rows may be absent), or `None` when
    /// the store cannot aggregate them cheaply (the default).
    async fn all_tenant_digests(
        &self,
    ) -> Result<Option<std::collections::HashMap<String, Vec<RangeDigest>>>, PortError> {
        Ok(None)
    }

    /// The digests of a tenant's live rows of each scoped kind, each whole
    /// (in the schema's file order); their counts are the tenant's live
    /// rows per kind.
    async fn tenant_digests(&self, tenant_id: &str) -> Result<Vec<RangeDigest>, PortError> {
        tenant_digests_by_scan(self, tenant_id).await
    }

    /// The declared schema the store holds (its kinds and their order).
    fn schema(&self) -> &'static Schema {
        Schema::default_schema()
    }
}

/// [`ReplicaStore::tenant_digests`] computed by reading every row of the
/// tenant in key order and hashing it as read.
pub async fn tenant_digests_by_scan<S: ReplicaStore + ?Sized>(
    store: &S,
    tenant_id: &str,
) -> Result<Vec<RangeDigest>, PortError> {
    let mut digests = Vec::new();
    for kind in store.schema().scoped_kinds() {
        digests.push(digests_by_scan(store, tenant_id, kind, None, &[None]).await?[0]);
    }
    Ok(digests)
}

/// [`ReplicaStore::digest_ranges`] computed by reading the rows in key order
/// and hashing them as read.
pub async fn digests_by_scan<S: ReplicaStore + ?Sized>(
    store: &S,
    tenant_id: &str,
    kind: Kind,
    after: Option<&EntityKey>,
    bounds: &[Option<EntityKey>],
) -> Result<Vec<RangeDigest>, PortError> {
    const PAGE: u64 = 1_000;
    let mut digests = vec![RangeDigest::default(); bounds.len()];
    let mut index = 0;
    let mut cursor = after.cloned();
    'pages: while index < bounds.len() {
        let rows = store
            .read_rows(tenant_id, kind, &[KeyRange::after(cursor.clone())], PAGE)
            .await?;
        let complete = (rows.len() as u64) < PAGE;
        for row in rows {
            let key = row.key();
            while bounds[index].as_ref().is_some_and(|until| &key > until) {
                index += 1;
                if index == bounds.len() {
                    break 'pages;
                }
            }
            digests[index].add(record_element(&row.record, row.version));
            cursor = Some(key);
        }
        if complete {
            break;
        }
    }
    Ok(digests)
}
