//! The default schema's typed read API over the generic reads: pages of
//! [`Row`]s keyed by [`EntityKey`], [`Counts`] of users, groups and
//! memberships, and every row as typed [`Row`]s. On a monolith of another
//! schema they answer 404 (the kinds are not declared) or, for
//! [`Monolith::snapshot_rows`], a bad request.

use super::DeclaredPage;
use crate::Monolith;
use crate::error::{Error, Result};
use recon_core::schema::{DeclaredChange, DeclaredRow, Schema};
use recon_core::{Change, EntityKey, KeyRange, Kind, Row, Version};
use serde::Serialize;

/// One key-ordered page of typed rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The rows, in strictly increasing key order.
    pub rows: Vec<Row>,
    /// The version of the last change committed in the page's snapshot.
    pub watermark: Version,
    /// The key to pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<EntityKey>,
}

/// How many entities of each kind a tenant has, for planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Number of users.
    pub users: u64,
    /// Number of groups.
    pub groups: u64,
    /// Number of memberships.
    pub memberships: u64,
    /// The version of the last change committed in the counts' snapshot.
    pub watermark: Version,
}

/// The typed ranges of typed key ranges.
pub(crate) fn key_spans(ranges: &[KeyRange]) -> Vec<crate::rows::KeySpan> {
    ranges
        .iter()
        .map(|range| crate::rows::KeySpan {
            after: range.after.as_ref().map(|key| key.parts().to_vec()),
            until: range.until.as_ref().map(|key| key.parts().to_vec()),
        })
        .collect()
}

/// The typed row of a declared row of the default schema.
fn typed_row(row: DeclaredRow) -> Result<Row> {
    match DeclaredChange::Upsert(row).to_change(Schema::default_schema()) {
        Ok(Change::Upsert(row)) => Ok(row),
        Ok(Change::Delete(_)) => Err(Error::Corrupt("an upsert became a deletion".to_owned())),
        Err(invalid) => Err(Error::Corrupt(format!(
            "a stored row is invalid: {invalid}"
        ))),
    }
}

fn typed_page(monolith: &Monolith, page: DeclaredPage) -> Result<Page> {
    let kind = monolith.model().kind_at(page.kind);
    let mut rows = Vec::with_capacity(page.rows.len());
    for index in 0..page.rows.len() {
        let row = page.row(index);
        rows.push(typed_row(DeclaredRow {
            kind: kind.name().to_owned(),
            scope: row.scope.to_owned(),
            key: row.key.to_vec(),
            values: row.values.to_vec(),
            version: row.version,
        })?);
    }
    Ok(Page {
        rows,
        watermark: page.watermark,
        next_after: page.next_after.map(EntityKey::from_parts),
    })
}

impl Monolith {
    /// A page of tenants with ids greater than `after`.
    pub async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Page> {
        let after = after.map(|after| vec![after.to_owned()]);
        let page = self
            .page("tenant", None, after.as_deref(), limit, &[])
            .await?;
        typed_page(self, page)
    }

    /// A page of a tenant's users, groups or memberships with keys greater
    /// than `after`. An unknown tenant is [`Error::NotFound`].
    pub async fn list_entities(
        &self,
        tenant_id: &str,
        kind: Kind,
        after: Option<&EntityKey>,
        limit: u32,
    ) -> Result<Page> {
        self.list_within(tenant_id, kind, after, limit, &[]).await
    }

    /// A page of a tenant's users, groups or memberships with keys greater
    /// than `after` and inside one of `within` (in key order, disjoint; no
    /// constraint when empty). An unknown tenant is [`Error::NotFound`].
    pub async fn list_within(
        &self,
        tenant_id: &str,
        kind: Kind,
        after: Option<&EntityKey>,
        limit: u32,
        within: &[KeyRange],
    ) -> Result<Page> {
        if kind == Kind::TENANT {
            return Err(Error::BadRequest(
                "tenants are not listed per tenant; use list_tenants".to_owned(),
            ));
        }
        let after = after.map(|key| key.parts().to_vec());
        let page = self
            .page(
                kind.as_str(),
                Some(tenant_id),
                after.as_deref(),
                limit,
                &key_spans(within),
            )
            .await?;
        typed_page(self, page)
    }

    /// How many users, groups and memberships a tenant has, with the
    /// watermark of the snapshot they were counted in.
    pub async fn counts(&self, tenant_id: &str) -> Result<Counts> {
        let counts = self.scope_counts(tenant_id).await?;
        let count = |plural: &str| -> Result<u64> {
            let position = self
                .model()
                .scoped_kinds()
                .position(|kind| kind.def.plural == plural)
                .ok_or_else(|| Error::NotFound(format!("kind {plural:?}")))?;
            Ok(counts.counts[position])
        };
        Ok(Counts {
            users: count("users")?,
            groups: count("groups")?,
            memberships: count("memberships")?,
            watermark: counts.watermark,
        })
    }

    /// Every row of every kind as typed rows, read in one snapshot, ordered
    /// by kind, tenant and key, with the snapshot's watermark (default
    /// schema only). Loads everything into memory: for tests and small
    /// data sets only.
    pub async fn snapshot_rows(&self) -> Result<(Vec<Row>, Version)> {
        if !self.model().is_default() {
            return Err(Error::BadRequest(
                "typed rows are the default schema's; use snapshot".to_owned(),
            ));
        }
        let (declared, watermark) = self.snapshot().await?;
        let mut rows = Vec::with_capacity(declared.len());
        for row in declared {
            rows.push(typed_row(row)?);
        }
        Ok((rows, watermark))
    }
}
