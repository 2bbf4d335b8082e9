//! Key-ordered reads of live rows, for the diff, and tombstone upkeep.

use crate::schema::{Table, table};
use crate::sql::{self, Binder};
use crate::{Error, Result, Store, error::database};
use futures::Stream;
use recon_core::{
    EntityKey, Group, KeyRange, KeyedRow, Kind, Membership, RangeDigest, Record, Row, Tenant, User,
    Version,
};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::instrument;

/// A live row read from the store, with the hash of the data as read (not
/// as stored: a row changed behind recon's back must still show as changed).
pub type StoredRow = KeyedRow;

impl Store {
    /// Reads up to `limit` live rows of `kind` in `tenant_id` within `range`,
    /// in key order. For tenants, `tenant_id` is ignored (tenants are not
    /// inside a tenant).
    #[instrument(name = "store.read_page", skip_all, fields(tenant = %tenant_id, kind = %kind, limit))]
    pub async fn read_page(
        &self,
        tenant_id: &str,
        kind: Kind,
        range: &KeyRange,
        limit: u64,
    ) -> Result<Vec<StoredRow>> {
        let table = table(kind);
        let mut binder = Binder::new(self.backend());
        let conditions = live_in_range(&mut binder, table, Some(tenant_id), range);
        let limit = binder.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let sql = format!(
            "SELECT * FROM {} WHERE {} ORDER BY {} LIMIT {limit}",
            table.name,
            conditions.join(" AND "),
            table.key_columns.join(", ")
        );
        let rows = self
            .connection
            .query_all_raw(binder.statement(sql))
            .await
            .map_err(database("read page"))?;
        let mut page = Vec::with_capacity(rows.len());
        for row in rows {
            page.push(KeyedRow::new(parse_row(table, kind, &row)?));
        }
        Ok(page)
    }

    /// Streams the live rows of `kind` in `tenant_id` within `range` in key
    /// order, reading `page_size` rows at a time (memory is bounded by one
    /// page whatever the tenant's size).
    pub fn stream_range(
        &self,
        tenant_id: &str,
        kind: Kind,
        range: KeyRange,
        page_size: u64,
    ) -> impl Stream<Item = Result<StoredRow>> + Send + 'static {
        let store = self.clone();
        let tenant_id = tenant_id.to_owned();
        let state = (range, Vec::<StoredRow>::new().into_iter(), false);
        futures::stream::try_unfold(state, move |(mut range, mut buffered, mut exhausted)| {
            let store = store.clone();
            let tenant_id = tenant_id.clone();
            async move {
                loop {
                    if let Some(next) = buffered.next() {
                        return Ok(Some((next, (range, buffered, exhausted))));
                    }
                    if exhausted {
                        return Ok(None);
                    }
                    let page = store.read_page(&tenant_id, kind, &range, page_size).await?;
                    exhausted = (page.len() as u64) < page_size;
                    if let Some(last) = page.last() {
                        range.after = Some(last.key.clone());
                    }
                    buffered = page.into_iter();
                }
            }
        })
    }

    /// Counts live rows of `kind` in `tenant_id` (all tenants for
    /// [`Kind::Tenant`]).
    pub async fn count_live(&self, tenant_id: &str, kind: Kind) -> Result<u64> {
        self.count_live_in(Some(tenant_id), kind, &KeyRange::all())
            .await
    }

    /// Counts live rows of `kind` within `range`: of `tenant_id`, or of every
    /// tenant when it is `None` (ignored for [`Kind::Tenant`]).
    #[instrument(name = "store.count_rows", skip_all, fields(kind = %kind))]
    pub async fn count_live_in(
        &self,
        tenant_id: Option<&str>,
        kind: Kind,
        range: &KeyRange,
    ) -> Result<u64> {
        let table = table(kind);
        let mut binder = Binder::new(self.backend());
        let conditions = live_in_range(&mut binder, table, tenant_id, range);
        let sql = format!(
            "SELECT COUNT(*) AS n FROM {} WHERE {}",
            table.name,
            conditions.join(" AND ")
        );
        let row = self
            .connection
            .query_one_raw(binder.statement(sql))
            .await
            .map_err(database("count rows"))?;
        let count: i64 = match row {
            Some(row) => row.try_get("", "n").map_err(database("count rows"))?,
            None => 0,
        };
        sql::from_db(count, "count")
    }

    /// The digests of the live rows of `kind` in `tenant_id` over the
    /// consecutive ranges after `after` up to each of `bounds` (see
    /// [`recon_core::ports::ReplicaStore::digest_ranges`]): on PostgreSQL an
    /// aggregate of the generated `digest` column; `None` on SQLite, which
    /// hashes rows as it reads them.
    #[instrument(name = "store.digest_ranges", skip_all, fields(tenant = %tenant_id, kind = %kind, ranges = bounds.len()))]
    pub async fn aggregate_digests(
        &self,
        tenant_id: &str,
        kind: Kind,
        after: Option<&EntityKey>,
        bounds: &[Option<EntityKey>],
    ) -> Result<Option<Vec<RangeDigest>>> {
        let mut lower = after.cloned();
        let parts: Vec<(Kind, KeyRange)> = bounds
            .iter()
            .map(|until| {
                let range = KeyRange {
                    after: lower.clone(),
                    until: until.clone(),
                };
                lower.clone_from(until);
                (kind, range)
            })
            .collect();
        self.aggregate(tenant_id, &parts).await
    }

    /// A tenant's live users, groups and memberships, each whole, as
    /// digests in one statement (PostgreSQL; `None` on SQLite).
    #[instrument(name = "store.tenant_digests", skip_all, fields(tenant = %tenant_id))]
    pub async fn aggregate_tenant_digests(
        &self,
        tenant_id: &str,
    ) -> Result<Option<[RangeDigest; 3]>> {
        let parts = Kind::TENANT_SCOPED.map(|kind| (kind, KeyRange::all()));
        Ok(self
            .aggregate(tenant_id, &parts)
            .await?
            .map(|digests| [digests[0], digests[1], digests[2]]))
    }

    /// Count and element sums of each `(kind, range)` of a tenant, in
    /// statements of up to 64 parts (`UNION ALL`).
    async fn aggregate(
        &self,
        tenant_id: &str,
        parts: &[(Kind, KeyRange)],
    ) -> Result<Option<Vec<RangeDigest>>> {
        if self.backend() != DbBackend::Postgres
            || parts.iter().any(|(kind, _)| *kind == Kind::Tenant)
        {
            return Ok(None);
        }
        let mut digests = Vec::with_capacity(parts.len());
        for chunk in parts.chunks(64) {
            let mut binder = Binder::new(self.backend());
            let mut selects = Vec::with_capacity(chunk.len());
            for (index, (kind, range)) in chunk.iter().enumerate() {
                let table = table(*kind);
                let conditions = live_in_range(&mut binder, table, Some(tenant_id), range);
                selects.push(format!(
                    "SELECT {index} AS i, COUNT(*) AS n, COALESCE(SUM(digest >> 32), 0)::BIGINT AS high, \
                     COALESCE(SUM(digest & 4294967295), 0)::BIGINT AS low FROM {} WHERE {}",
                    table.name,
                    conditions.join(" AND ")
                ));
            }
            let sql = format!("{} ORDER BY i", selects.join(" UNION ALL "));
            let rows = self
                .connection
                .query_all_raw(binder.statement(sql))
                .await
                .map_err(database("aggregate digests"))?;
            for row in rows {
                let count: i64 = row
                    .try_get("", "n")
                    .map_err(database("aggregate digests"))?;
                let high: i64 = row
                    .try_get("", "high")
                    .map_err(database("aggregate digests"))?;
                let low: i64 = row
                    .try_get("", "low")
                    .map_err(database("aggregate digests"))?;
                digests.push(RangeDigest::from_split_sums(
                    sql::from_db(count, "count")?,
                    high,
                    low,
                ));
            }
        }
        Ok(Some(digests))
    }

    /// Deletes tombstones older than `retention`; returns how many.
    #[instrument(name = "store.purge_tombstones", skip_all)]
    pub async fn purge_tombstones(&self, retention: Duration) -> Result<u64> {
        let cutoff = SystemTime::now()
            .checked_sub(retention)
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut purged = 0;
        for kind in Kind::UPSERT_ORDER {
            let mut binder = Binder::new(self.backend());
            let sql = format!(
                "DELETE FROM {} WHERE deleted = {} AND deleted_at_ms < {}",
                table(kind).name,
                binder.bind(true),
                binder.bind(cutoff)
            );
            let result = self
                .connection
                .execute_raw(binder.statement(sql))
                .await
                .map_err(database("purge tombstones"))?;
            purged += result.rows_affected();
        }
        Ok(purged)
    }
}

fn key_values(key: &EntityKey) -> Vec<Value> {
    let mut values: Vec<Value> = vec![key.primary.clone().into()];
    if let Some(secondary) = &key.secondary {
        values.push(secondary.clone().into());
    }
    values
}

fn text(row: &QueryResult, column: &str) -> Result<String> {
    row.try_get("", column).map_err(database("decode row"))
}

fn parse_row(table: &Table, kind: Kind, row: &QueryResult) -> Result<Row> {
    let generation: i64 = row
        .try_get("", "generation")
        .map_err(database("decode row"))?;
    let sequence: i64 = row
        .try_get("", "sequence")
        .map_err(database("decode row"))?;
    let version = Version::new(
        sql::from_db(generation, "generation")?,
        sql::from_db(sequence, "sequence")?,
    );
    let record = match kind {
        Kind::Tenant => Record::Tenant(Tenant {
            id: text(row, "id")?,
            name: text(row, "name")?,
        }),
        Kind::User => Record::User(User {
            id: text(row, "id")?,
            email: text(row, "email")?,
            display_name: text(row, "display_name")?,
            status: text(row, "status")?
                .parse()
                .map_err(|error: recon_core::InvalidInput| Error::InvalidData(error.to_string()))?,
        }),
        Kind::Group => Record::Group(Group {
            id: text(row, "id")?,
            name: text(row, "name")?,
        }),
        Kind::Membership => Record::Membership(Membership {
            group_id: text(row, "group_id")?,
            user_id: text(row, "user_id")?,
        }),
    };
    let tenant_id = if table.tenant_scoped {
        text(row, "tenant_id")?
    } else {
        record.key().primary.clone()
    };
    Ok(Row {
        tenant_id,
        record,
        version,
    })
}

/// The conditions selecting the live rows of `table` in `range`: of
/// `tenant_id`, or of every tenant when it is `None` (tenant-scoped tables
/// only), bound into `binder`.
fn live_in_range(
    binder: &mut Binder,
    table: &Table,
    tenant_id: Option<&str>,
    range: &KeyRange,
) -> Vec<String> {
    let mut conditions = vec![format!("deleted = {}", binder.bind(false))];
    if table.tenant_scoped
        && let Some(tenant_id) = tenant_id
    {
        conditions.push(format!("tenant_id = {}", binder.bind(tenant_id.to_owned())));
    }
    let key_tuple = format!("({})", table.key_columns.join(", "));
    if let Some(after) = &range.after {
        conditions.push(format!(
            "{key_tuple} > {}",
            binder.bind_tuple(key_values(after))
        ));
    }
    if let Some(until) = &range.until {
        conditions.push(format!(
            "{key_tuple} <= {}",
            binder.bind_tuple(key_values(until))
        ));
    }
    conditions
}
