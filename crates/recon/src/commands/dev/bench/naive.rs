//! The naive baseline of `recon bench reconcile`, run as the hidden
//! subcommand `recon bench naive` in a child process (so that its time and
//! peak memory are measured like recon's own runs).
//!
//! An honest plain implementation of "make the replica equal to the
//! source", with none of recon's ideas: no merge of two ordered streams, no
//! diff, no batching. It
//!
//! 1. fetches every page of the tenant list and of every tenant's users,
//!    groups and memberships through the Source API client, and upserts
//!    every fetched row through the store's apply path, one row per
//!    statement (one transaction each), remembering every source key;
//! 2. reads the replica's live rows in key order through the store and
//!    deletes, again one statement per row, every row whose key the source
//!    did not have (memberships, then groups and users, then tenants).
//!
//! Rows go through the *reconciliation* form of the apply path (fenced by an
//! epoch from the store, authoritative up to the page's watermark), not the
//! event form: the event form only writes a strictly newer version, so it
//! could never repair a row whose data is wrong under the right version,
//! and the baseline would not converge. Memory grows with the number of
//! source keys (they are all kept in a set): that is part of being naive.

use crate::cli::NaiveArgs;
use anyhow::Context;
use recon_core::ports::{PageRequest, SourcePage};
use recon_core::{Change, Deletion, EntityKey, FenceToken, KeyRange, Kind, Version};
use recon_source::{HttpSource, SourceConfig};
use recon_store::{Store, StoredRow};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Instant;

/// Rows read from the replica per query.
const READ_PAGE_ROWS: u64 = 1_000;

/// What the baseline did; printed as JSON on stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NaiveFigures {
    /// Rows fetched from the source (every one was upserted).
    pub fetched: u64,
    /// Live replica rows read in the delete pass.
    pub replica_rows: u64,
    /// Upserts that changed a row.
    pub written: u64,
    /// Rows deleted (tombstoned) because the source lacked them.
    pub deleted: u64,
    /// Source pages fetched.
    pub pages: u64,
    /// Source bytes read.
    pub bytes: u64,
    /// Wall time inside the process.
    pub seconds: f64,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: Option<u64>,
}

/// A source key: the tenant (empty for tenant rows), the kind and the key.
type SourceKey = (String, Kind, EntityKey);

/// The replica store, an epoch of it and the Source API client: what both
/// baselines open first.
pub struct Opened {
    /// The replica store.
    pub store: Store,
    /// An epoch acquired from it (fences the baseline's writes).
    pub epoch: u64,
    /// The Source API client.
    pub source: HttpSource,
}

impl Opened {
    /// Opens the store and the source of `args` and acquires an epoch.
    pub async fn open(args: &NaiveArgs) -> anyhow::Result<Self> {
        let store = Store::connect(&args.database_url)
            .await
            .context("open the replica store")?;
        let epoch = store
            .acquire_epoch(None)
            .await
            .context("acquire an epoch from the replica store")?;
        let source = HttpSource::new(&SourceConfig::new(&args.source_url))
            .context("configure the Source API client")?;
        Ok(Self {
            store,
            epoch,
            source,
        })
    }

    /// Fetches one source page of `kind` of `tenant_id` after `after` and
    /// counts it in `figures` (pages and bytes).
    pub async fn fetch_page(
        &self,
        figures: &mut NaiveFigures,
        tenant_id: &str,
        kind: Kind,
        after: Option<EntityKey>,
        limit: u32,
    ) -> anyhow::Result<SourcePage> {
        let request = PageRequest {
            tenant_id: tenant_id.to_owned(),
            kind,
            after,
            limit,
            within: Vec::new(),
        };
        let page = self
            .source
            .fetch(&request)
            .await
            .with_context(|| format!("fetch a {kind} page of tenant {tenant_id:?}"))?;
        figures.pages += 1;
        figures.bytes += page.bytes;
        Ok(page)
    }

    /// The replica's live rows of `kind` of `tenant_id` within `span`, in
    /// key order, read a page at a time and counted in `figures`.
    pub async fn replica_rows(
        &self,
        figures: &mut NaiveFigures,
        tenant_id: &str,
        kind: Kind,
        mut span: KeyRange,
    ) -> anyhow::Result<Vec<StoredRow>> {
        let mut rows = Vec::new();
        loop {
            let page = self
                .store
                .read_page(tenant_id, kind, &span, READ_PAGE_ROWS)
                .await
                .context("read replica rows")?;
            figures.replica_rows += page.len() as u64;
            let exhausted = (page.len() as u64) < READ_PAGE_ROWS;
            let last = page.last().map(|stored| stored.key.clone());
            rows.extend(page);
            match last {
                Some(last) if !exhausted => span.after = Some(last),
                _ => return Ok(rows),
            }
        }
    }
}

/// The fence of a write of `kind` rows of `tenant_id` (the tenant list
/// has a scope of its own).
pub fn fence(epoch: u64, tenant_id: &str, kind: Kind) -> FenceToken {
    let scope = if kind == Kind::TENANT {
        "tenants"
    } else {
        tenant_id
    };
    FenceToken::new(scope, epoch)
}

struct Naive {
    opened: Opened,
    page_size: u32,
    seen: HashSet<SourceKey>,
    watermark: Version,
    figures: NaiveFigures,
}

/// Runs the naive baseline against the source and store of `args` and
/// prints its [`NaiveFigures`] as JSON.
pub async fn run(args: NaiveArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut naive = Naive {
        opened: Opened::open(&args).await?,
        page_size: args.page_size,
        seen: HashSet::new(),
        watermark: Version::ZERO,
        figures: NaiveFigures::default(),
    };
    let tenants = naive.upsert_all("", Kind::TENANT).await?;
    for tenant in &tenants {
        for kind in [Kind::USER, Kind::GROUP, Kind::MEMBERSHIP] {
            naive.upsert_all(tenant, kind).await?;
        }
    }
    let replica_tenants = naive.live_keys("", Kind::TENANT).await?;
    for tenant in &replica_tenants {
        for kind in [Kind::MEMBERSHIP, Kind::GROUP, Kind::USER] {
            naive.delete_absent(tenant.first(), kind).await?;
        }
    }
    naive.delete_absent("", Kind::TENANT).await?;
    naive.figures.seconds = started.elapsed().as_secs_f64();
    naive.figures.peak_rss_bytes = recon_engine::peak_rss_bytes();
    println!("{}", serde_json::to_string_pretty(&naive.figures)?);
    Ok(ExitCode::SUCCESS)
}

impl Naive {
    fn fence(&self, tenant_id: &str, kind: Kind) -> FenceToken {
        fence(self.opened.epoch, tenant_id, kind)
    }

    /// Fetches every page of one kind and upserts each row on its own.
    /// Returns the keys' primary ids (the tenant ids, for the tenant list).
    async fn upsert_all(&mut self, tenant_id: &str, kind: Kind) -> anyhow::Result<Vec<String>> {
        let fence = self.fence(tenant_id, kind);
        let mut ids = Vec::new();
        let mut after: Option<EntityKey> = None;
        loop {
            let page = self
                .opened
                .fetch_page(
                    &mut self.figures,
                    tenant_id,
                    kind,
                    after.clone(),
                    self.page_size,
                )
                .await?;
            self.watermark = self.watermark.max(page.watermark);
            for row in page.rows {
                let key = row.key();
                ids.push(key.first().to_owned());
                self.seen.insert((seen_tenant(kind, tenant_id), kind, key));
                self.figures.fetched += 1;
                let outcome = self
                    .opened
                    .store
                    .apply_reconciliation(&fence, page.watermark, &[Change::Upsert(row)])
                    .await
                    .context("upsert a source row")?;
                self.figures.written += outcome.written;
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(ids),
            }
        }
    }

    /// Every live key of one kind in the replica, in key order.
    async fn live_keys(&mut self, tenant_id: &str, kind: Kind) -> anyhow::Result<Vec<EntityKey>> {
        let rows = self
            .opened
            .replica_rows(&mut self.figures, tenant_id, kind, KeyRange::all())
            .await?;
        Ok(rows.into_iter().map(|stored| stored.key).collect())
    }

    /// Deletes, one statement each, the live rows the source did not list.
    async fn delete_absent(&mut self, tenant_id: &str, kind: Kind) -> anyhow::Result<()> {
        let fence = self.fence(tenant_id, kind);
        for key in self.live_keys(tenant_id, kind).await? {
            let seen_key = (seen_tenant(kind, tenant_id), kind, key);
            if self.seen.contains(&seen_key) {
                continue;
            }
            let (_, _, key) = seen_key;
            let row_tenant = if kind == Kind::TENANT {
                key.first().to_owned()
            } else {
                tenant_id.to_owned()
            };
            let deletion = Change::Delete(Deletion {
                tenant_id: row_tenant,
                kind,
                key,
                version: self.watermark,
            });
            self.opened
                .store
                .apply_reconciliation(&fence, self.watermark, &[deletion])
                .await
                .context("delete a replica row the source lacks")?;
            self.figures.deleted += 1;
        }
        Ok(())
    }
}

fn seen_tenant(kind: Kind, tenant_id: &str) -> String {
    if kind == Kind::TENANT {
        String::new()
    } else {
        tenant_id.to_owned()
    }
}
