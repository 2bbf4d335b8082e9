//! The read side of the Source API: keyset pages, counts and watermarks.
//!
//! Every page is read in one snapshot together with the watermark (the
//! version of the last committed change), so that a row absent from a page
//! covering its key was really absent at the watermark. Pages are keyset
//! pages: `WHERE key > after ORDER BY key LIMIT limit + 1` (one extra row
//! tells whether another page follows); never `OFFSET`.

use crate::Monolith;
use crate::db::entities::{group, membership, tenant, user};
use crate::db::{self, read_meta, rows};
use crate::error::{DbResultExt, Error, Result};
use crate::write::exists;
use recon_core::{EntityKey, Kind, Row, Version};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, Value,
};
use serde::Serialize;
use tracing::instrument;

/// Page size when a request gives none.
pub const DEFAULT_PAGE_LIMIT: u32 = 1000;
/// Largest page size a request may ask for.
pub const MAX_PAGE_LIMIT: u32 = 10_000;

/// One key-ordered page of rows.
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

/// Checks a page size: `1..=MAX_PAGE_LIMIT`.
pub fn validate_limit(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(Error::BadRequest(format!(
            "query parameter `limit` must be between 1 and {MAX_PAGE_LIMIT}, got {limit}"
        )));
    }
    Ok(())
}

impl Monolith {
    /// A page of tenants with ids greater than `after`.
    #[instrument(skip_all, name = "monolith.read_page", fields(kind = "tenant", limit))]
    pub async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Page> {
        validate_limit(limit)?;
        let txn = db::begin_snapshot(&self.connection).await?;
        let watermark = read_meta(&txn).await?;
        let mut query = tenant::Entity::find().order_by_asc(tenant::Column::Id);
        if let Some(after) = after {
            query = query.filter(tenant::Column::Id.gt(after));
        }
        let models = query
            .limit(u64::from(limit) + 1)
            .all(&txn)
            .await
            .during("read a page of tenants")?;
        let mut page_rows = Vec::with_capacity(models.len());
        for model in models {
            page_rows.push(rows::tenant_row(model)?);
        }
        finish(txn, page_rows, watermark, limit).await
    }

    /// A page of a tenant's users, groups or memberships with keys greater
    /// than `after`. An unknown tenant is [`Error::NotFound`].
    #[instrument(skip_all, name = "monolith.read_page", fields(tenant = %tenant_id, kind = %kind, limit))]
    pub async fn list_entities(
        &self,
        tenant_id: &str,
        kind: Kind,
        after: Option<&EntityKey>,
        limit: u32,
    ) -> Result<Page> {
        validate_limit(limit)?;
        let txn = db::begin_snapshot(&self.connection).await?;
        let watermark = read_meta(&txn).await?;
        require_tenant(&txn, tenant_id).await?;
        let fetch = u64::from(limit) + 1;
        let page_rows = match kind {
            Kind::User => user_page(&txn, tenant_id, after, fetch).await?,
            Kind::Group => group_page(&txn, tenant_id, after, fetch).await?,
            Kind::Membership => membership_page(&txn, tenant_id, after, fetch).await?,
            Kind::Tenant => {
                return Err(Error::BadRequest(
                    "tenants are not listed per tenant; use list_tenants".to_owned(),
                ));
            }
        };
        finish(txn, page_rows, watermark, limit).await
    }

    /// How many users, groups and memberships a tenant has, with the
    /// watermark of the snapshot they were counted in: one statement (one
    /// snapshot, one round trip — planning asks this of every tenant).
    #[instrument(skip_all, name = "monolith.counts", fields(tenant = %tenant_id))]
    pub async fn counts(&self, tenant_id: &str) -> Result<Counts> {
        let backend = self.connection.get_database_backend();
        let parameter = if backend == DbBackend::Postgres {
            "$1"
        } else {
            "?"
        };
        let sql = format!(
            "SELECT generation, sequence, \
             (SELECT COUNT(*) FROM tenants WHERE id = {parameter}) AS known, \
             (SELECT COUNT(*) FROM users WHERE tenant_id = {parameter}) AS users, \
             (SELECT COUNT(*) FROM \"groups\" WHERE tenant_id = {parameter}) AS groups, \
             (SELECT COUNT(*) FROM memberships WHERE tenant_id = {parameter}) AS memberships \
             FROM meta WHERE id = 1"
        );
        let values: Vec<Value> = match backend {
            DbBackend::Postgres => vec![tenant_id.into()],
            _ => vec![tenant_id.into(); 4],
        };
        let action = "count a tenant's entities";
        let row = self
            .connection
            .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
            .await
            .during(action)?
            .ok_or_else(|| Error::Corrupt("the meta row is missing".to_owned()))?;
        let number = |column: &str| -> Result<u64> {
            let value: i64 = row.try_get("", column).during(action)?;
            u64::try_from(value).map_err(|_| Error::Corrupt(format!("negative {column}: {value}")))
        };
        if number("known")? == 0 {
            return Err(Error::NotFound(format!("tenant {tenant_id:?}")));
        }
        Ok(Counts {
            users: number("users")?,
            groups: number("groups")?,
            memberships: number("memberships")?,
            watermark: Version::new(number("generation")?, number("sequence")?),
        })
    }

    /// The current watermark: the version of the last committed change.
    pub async fn watermark(&self) -> Result<Version> {
        read_meta(&self.connection).await
    }

    /// Every row of every kind, read in one snapshot, ordered by tenant, kind
    /// and key, with the snapshot's watermark. Loads everything into memory:
    /// for tests and small data sets only.
    #[instrument(skip_all, name = "monolith.snapshot_rows")]
    pub async fn snapshot_rows(&self) -> Result<(Vec<Row>, Version)> {
        let txn = db::begin_snapshot(&self.connection).await?;
        let watermark = read_meta(&txn).await?;
        let action = "read every row";
        let mut all = Vec::new();
        let tenants = tenant::Entity::find()
            .order_by_asc(tenant::Column::Id)
            .all(&txn)
            .await
            .during(action)?;
        for model in tenants {
            all.push(rows::tenant_row(model)?);
        }
        let users = user::Entity::find()
            .order_by_asc(user::Column::TenantId)
            .order_by_asc(user::Column::Id)
            .all(&txn)
            .await
            .during(action)?;
        for model in users {
            all.push(rows::user_row(model)?);
        }
        let groups = group::Entity::find()
            .order_by_asc(group::Column::TenantId)
            .order_by_asc(group::Column::Id)
            .all(&txn)
            .await
            .during(action)?;
        for model in groups {
            all.push(rows::group_row(model)?);
        }
        let memberships = membership::Entity::find()
            .order_by_asc(membership::Column::TenantId)
            .order_by_asc(membership::Column::GroupId)
            .order_by_asc(membership::Column::UserId)
            .all(&txn)
            .await
            .during(action)?;
        for model in memberships {
            all.push(rows::membership_row(model)?);
        }
        txn.commit().await.during("end a snapshot")?;
        Ok((all, watermark))
    }
}

pub(crate) async fn require_tenant(
    connection: &impl ConnectionTrait,
    tenant_id: &str,
) -> Result<()> {
    if exists(
        connection,
        tenant_id,
        Kind::Tenant,
        &EntityKey::id(tenant_id),
    )
    .await?
    {
        Ok(())
    } else {
        Err(Error::NotFound(format!("tenant {tenant_id:?}")))
    }
}

/// Ends the snapshot and cuts the extra row off a full page.
async fn finish(
    txn: DatabaseTransaction,
    mut page_rows: Vec<Row>,
    watermark: Version,
    limit: u32,
) -> Result<Page> {
    txn.commit().await.during("end a snapshot")?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_after = if page_rows.len() > limit {
        page_rows.truncate(limit);
        page_rows.last().map(Row::key)
    } else {
        None
    };
    Ok(Page {
        rows: page_rows,
        watermark,
        next_after,
    })
}

async fn user_page(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    after: Option<&EntityKey>,
    fetch: u64,
) -> Result<Vec<Row>> {
    let mut query = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant_id))
        .order_by_asc(user::Column::Id);
    if let Some(after) = after {
        query = query.filter(user::Column::Id.gt(after.primary.as_str()));
    }
    let models = query
        .limit(fetch)
        .all(txn)
        .await
        .during("read a page of users")?;
    let mut page_rows = Vec::with_capacity(models.len());
    for model in models {
        page_rows.push(rows::user_row(model)?);
    }
    Ok(page_rows)
}

async fn group_page(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    after: Option<&EntityKey>,
    fetch: u64,
) -> Result<Vec<Row>> {
    let mut query = group::Entity::find()
        .filter(group::Column::TenantId.eq(tenant_id))
        .order_by_asc(group::Column::Id);
    if let Some(after) = after {
        query = query.filter(group::Column::Id.gt(after.primary.as_str()));
    }
    let models = query
        .limit(fetch)
        .all(txn)
        .await
        .during("read a page of groups")?;
    let mut page_rows = Vec::with_capacity(models.len());
    for model in models {
        page_rows.push(rows::group_row(model)?);
    }
    Ok(page_rows)
}

/// Memberships ordered by `(group_id, user_id)`; the cursor condition is a
/// row comparison over the whole primary key so that both backends can seek
/// the index instead of scanning the tenant from its start.
async fn membership_page(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    after: Option<&EntityKey>,
    fetch: u64,
) -> Result<Vec<Row>> {
    let mut query = membership::Entity::find()
        .filter(membership::Column::TenantId.eq(tenant_id))
        .order_by_asc(membership::Column::GroupId)
        .order_by_asc(membership::Column::UserId);
    if let Some(after) = after {
        let user_id = after.secondary.clone().unwrap_or_default();
        let key_columns = Expr::tuple([
            Expr::col(membership::Column::TenantId),
            Expr::col(membership::Column::GroupId),
            Expr::col(membership::Column::UserId),
        ]);
        let cursor = Expr::tuple([
            Expr::val(tenant_id),
            Expr::val(after.primary.as_str()),
            Expr::val(user_id),
        ]);
        query = query.filter(key_columns.gt(cursor));
    }
    let models = query
        .limit(fetch)
        .all(txn)
        .await
        .during("read a page of memberships")?;
    let mut page_rows = Vec::with_capacity(models.len());
    for model in models {
        page_rows.push(rows::membership_row(model)?);
    }
    Ok(page_rows)
}
