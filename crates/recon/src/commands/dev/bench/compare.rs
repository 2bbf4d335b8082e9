//! The compare-then-write baseline of `recon bench reconcile`, run as the
//! hidden subcommand `recon bench compare` in a child process (measured
//! like recon's own runs).
//!
//! What a competent team would write in a day to make a replica equal to
//! its source, next to the seed's [naive](super::naive) algorithm: it
//! fetches every page of the tenant list and of each tenant's kinds, reads
//! the replica's rows of the key span the page covers, compares them row
//! by row (data and version), and writes only what differs — the missing
//! or different rows as upserts and the rows the page's span lacks as
//! deletions — in one batch per page, through the store's reconciliation
//! form (fenced, authoritative up to the page's watermark). No digests, no
//! narrowing, one page at a time. A tenant the source lacks is deleted with
//! its rows (the store cascades a tenant's deletion).

use super::naive::{NaiveFigures, Opened, fence};
use crate::cli::NaiveArgs;
use anyhow::Context;
use recon_core::{Change, Deletion, EntityKey, KeyRange, Kind, Row};
use recon_store::StoredRow;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

/// Runs the baseline against the source and store of `args` and prints its
/// [`NaiveFigures`] as JSON.
pub async fn run(args: NaiveArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut compare = Compare {
        opened: Opened::open(&args).await?,
        page_size: args.page_size,
        figures: NaiveFigures::default(),
    };
    let tenants = compare.kind("", Kind::TENANT).await?;
    for tenant in &tenants {
        for kind in [Kind::USER, Kind::GROUP, Kind::MEMBERSHIP] {
            compare.kind(tenant, kind).await?;
        }
    }
    compare.figures.seconds = started.elapsed().as_secs_f64();
    compare.figures.peak_rss_bytes = recon_engine::peak_rss_bytes();
    println!("{}", serde_json::to_string_pretty(&compare.figures)?);
    Ok(ExitCode::SUCCESS)
}

struct Compare {
    opened: Opened,
    page_size: u32,
    figures: NaiveFigures,
}

impl Compare {
    /// Makes one kind of one tenant (or the tenant list) equal to the
    /// source, page by page. Returns the source's primary ids (the tenant
    /// ids, for the tenant list).
    async fn kind(&mut self, tenant_id: &str, kind: Kind) -> anyhow::Result<Vec<String>> {
        let fence = fence(self.opened.epoch, tenant_id, kind);
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
            self.figures.fetched += page.rows.len() as u64;
            // The page covers the keys after `after` up to its last row, or
            // to the end when it is the last page.
            let span = KeyRange {
                after: after.clone(),
                until: page
                    .next_after
                    .as_ref()
                    .and_then(|_| page.rows.last().map(Row::key)),
            };
            // What is left of the replica's rows once the page's are taken
            // out is what the source lacks.
            let mut stored: BTreeMap<EntityKey, StoredRow> = self
                .opened
                .replica_rows(&mut self.figures, tenant_id, kind, span)
                .await?
                .into_iter()
                .map(|stored| (stored.key.clone(), stored))
                .collect();
            let mut changes = Vec::new();
            for row in page.rows {
                let key = row.key();
                ids.push(key.first().to_owned());
                let same = stored.remove(&key).is_some_and(|held| {
                    held.row.version == row.version && held.row.record == row.record
                });
                if !same {
                    changes.push(Change::Upsert(row));
                }
            }
            let deleted = stored.len() as u64;
            for (key, held) in stored {
                changes.push(Change::Delete(Deletion {
                    tenant_id: held.row.tenant_id,
                    kind,
                    key,
                    version: page.watermark,
                }));
            }
            if !changes.is_empty() {
                let outcome = self
                    .opened
                    .store
                    .apply_reconciliation(&fence, page.watermark, &changes)
                    .await
                    .context("write the rows that differ")?;
                self.figures.written += outcome.written;
                self.figures.deleted += deleted;
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(ids),
            }
        }
    }
}
