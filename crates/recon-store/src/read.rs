//! Key-ordered reads of live rows, for the diff, and tombstone upkeep.

use crate::sql::{self, Binder};
use crate::tables::Table;
use crate::{Error, Result, Store, error::database};
use futures::Stream;
use recon_core::schema::{FieldType, FieldValue};
use recon_core::{EntityKey, KeyRange, KeyedRow, Kind, RangeDigest, Record, Row, Version};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Value};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::instrument;

/// A live row read from the store, with the hash of the data as read (not
/// as stored: a row changed behind recon's back must still show as changed).
pub type StoredRow = KeyedRow;

impl Store {
    /// Reads up to `limit` live rows of `kind` in `tenant_id` within
    /// `range`, in key order. For tenants, `tenant_id` is ignored (tenants
    /// are not inside a tenant).
    pub async fn read_page(
        &self,
        tenant_id: &str,
        kind: Kind,
        range: &KeyRange,
        limit: u64,
    ) -> Result<Vec<StoredRow>> {
        self.read_within(tenant_id, kind, std::slice::from_ref(range), limit)
            .await
    }

    /// Reads up to `limit` live rows of `kind` in `tenant_id` inside one of
    /// `ranges` (in key order, disjoint; one statement however many), in
    /// key order.
    #[instrument(name = "store.read_page", skip_all, fields(tenant = %tenant_id, kind = %kind, ranges = ranges.len(), limit))]
    pub async fn read_within(
        &self,
        tenant_id: &str,
        kind: Kind,
        ranges: &[KeyRange],
        limit: u64,
    ) -> Result<Vec<StoredRow>> {
        let table = self.tables.table(kind)?;
        if ranges.len() > 1 && self.backend() == DbBackend::Postgres && table.tenant_scoped {
            return self.read_many(tenant_id, kind, ranges, limit).await;
        }
        let mut binder = Binder::new(self.backend());
        let mut conditions = live_in_range(&mut binder, table, Some(tenant_id), &KeyRange::all());
        if let [range] = ranges {
            conditions.extend(key_conditions(&mut binder, table, range));
        } else if !ranges.is_empty() {
            let alternatives: Vec<String> = ranges
                .iter()
                .map(|range| {
                    let parts = key_conditions(&mut binder, table, range);
                    if parts.is_empty() {
                        "TRUE".to_owned()
                    } else {
                        format!("({})", parts.join(" AND "))
                    }
                })
                .collect();
            conditions.push(format!("({})", alternatives.join(" OR ")));
        }
        let limit = binder.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let sql = format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT {limit}",
            table.selected_columns(self.backend(), ""),
            table.name,
            conditions.join(" AND "),
            table.key_columns.join(", ")
        );
        self.query_page(binder, sql, kind).await
    }

    /// [`Store::read_within`] for several ranges on PostgreSQL: one index
    /// range scan per range under a lateral join (an `OR` of the ranges
    /// made the planner scan the tenant with the ranges as a filter: 150 ms
    /// for a page of leaves of a 67k-row tenant); an open last range is
    /// read on its own.
    async fn read_many(
        &self,
        tenant_id: &str,
        kind: Kind,
        ranges: &[KeyRange],
        limit: u64,
    ) -> Result<Vec<StoredRow>> {
        let table = self.tables.table(kind)?;
        let keys = table.key_columns.join(", ");
        let (bounded, open) = match ranges.split_last() {
            Some((last, rest)) if last.until.is_none() => (rest, Some(last)),
            _ => (ranges, None),
        };
        let mut binder = Binder::new(self.backend());
        let limit = binder.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let single = |binder: &mut Binder, ordinal: usize, range: &KeyRange| {
            let conditions = live_in_range(binder, table, Some(tenant_id), range);
            // The ordinal is a parameter: one statement text per shape,
            // parsed once per connection, whatever the number of ranges.
            let ordinal = binder.bind(i64::try_from(ordinal).unwrap_or(i64::MAX));
            format!(
                "SELECT * FROM (SELECT {ordinal}::BIGINT AS i, {} FROM {} r WHERE {} \
                 ORDER BY {keys} LIMIT {limit}) part",
                table.selected_columns(DbBackend::Postgres, "r."),
                table.name,
                conditions.join(" AND ")
            )
        };
        let mut parts = Vec::with_capacity(2);
        match bounded {
            [] => {}
            [range] => parts.push(single(&mut binder, 1, range)),
            _ => {
                let tenant = binder.bind(tenant_id.to_owned());
                let deleted = binder.bind(false);
                let bounds = BoundsJoin::new(&mut binder, table, bounded.iter());
                parts.push(format!(
                    "SELECT b.i, r.* FROM {} CROSS JOIN LATERAL (SELECT {} FROM {} WHERE deleted = {deleted} \
                     AND {} = {tenant} AND {} ORDER BY {keys} LIMIT {limit}) r",
                    bounds.from,
                    table.selected_columns(DbBackend::Postgres, ""),
                    table.name,
                    table.scope_column,
                    bounds.condition
                ));
            }
        }
        if let Some(open) = open {
            parts.push(single(&mut binder, bounded.len() + 1, open));
        }
        let sql = format!(
            "SELECT * FROM ({}) ranged ORDER BY i, {keys} LIMIT {limit}",
            parts.join(" UNION ALL ")
        );
        self.query_page(binder, sql, kind).await
    }

    /// Runs a page's statement and parses its rows.
    async fn query_page(&self, binder: Binder, sql: String, kind: Kind) -> Result<Vec<StoredRow>> {
        let rows = self
            .connection
            .query_all_raw(binder.statement(sql))
            .await
            .map_err(database("read page"))?;
        rows.iter()
            .map(|row| Ok(KeyedRow::new(self.parse_row(kind, row)?)))
            .collect()
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
    /// [`Kind::TENANT`]).
    pub async fn count_live(&self, tenant_id: &str, kind: Kind) -> Result<u64> {
        self.count_live_in(Some(tenant_id), kind, &KeyRange::all())
            .await
    }

    /// Counts live rows of `kind` within `range`: of `tenant_id`, or of every
    /// tenant when it is `None` (ignored for [`Kind::TENANT`]).
    #[instrument(name = "store.count_rows", skip_all, fields(kind = %kind))]
    pub async fn count_live_in(
        &self,
        tenant_id: Option<&str>,
        kind: Kind,
        range: &KeyRange,
    ) -> Result<u64> {
        let table = self.tables.table(kind)?;
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

    /// The tenants that have live rows of a kind inside a tenant but no live
    /// tenant row (a partial delete left them; the source's tenant list
    /// never leads to them), in key order.
    #[instrument(name = "store.orphan_scopes", skip_all)]
    pub async fn orphan_scopes(&self) -> Result<Vec<String>> {
        let mut binder = Binder::new(self.backend());
        let scope = self.tables.scope();
        let selects: Vec<String> = self
            .tables
            .scoped()
            .map(|table| {
                let live = binder.bind(false);
                let live_scope = binder.bind(false);
                format!(
                    "SELECT DISTINCT {column} FROM {rows} WHERE deleted = {live} AND NOT EXISTS \
                     (SELECT 1 FROM {scopes} t WHERE t.{key} = {rows}.{column} AND t.deleted = {live_scope})",
                    column = table.scope_column,
                    rows = table.name,
                    scopes = scope.name,
                    key = scope.key_columns[0],
                )
            })
            .collect();
        let sql = format!("{} ORDER BY 1", selects.join(" UNION "));
        let rows = self
            .connection
            .query_all_raw(binder.statement(sql))
            .await
            .map_err(database("list orphan scopes"))?;
        rows.iter()
            .map(|row| {
                row.try_get_by_index::<String>(0)
                    .map_err(database("list orphan scopes"))
            })
            .collect()
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
        if parts.len() > 1
            && self.backend() == DbBackend::Postgres
            && self.tables.table(kind)?.tenant_scoped
        {
            return self.aggregate_many(tenant_id, kind, &parts).await.map(Some);
        }
        self.aggregate(tenant_id, &parts).await
    }

    /// Count and element sums of many consecutive ranges of one kind of a
    /// tenant (PostgreSQL), in one statement: each range is one index range
    /// scan under a lateral join over the bounds ([`BoundsJoin`]); an open
    /// last range (or a single bounded one) is a plain aggregate in the
    /// same statement. A `UNION ALL` of one aggregate per range cost more
    /// to plan than to run (4.5 s of a W1 run at 1% drift went to binding
    /// such statements of up to 64 parts).
    async fn aggregate_many(
        &self,
        tenant_id: &str,
        kind: Kind,
        parts: &[(Kind, KeyRange)],
    ) -> Result<Vec<RangeDigest>> {
        let table = self.tables.table(kind)?;
        let (bounded, open) = match parts.split_last() {
            Some((last, rest)) if last.1.until.is_none() => (rest, Some(last)),
            _ => (parts, None),
        };
        let mut binder = Binder::new(self.backend());
        let sums = "COUNT(*) AS n, COALESCE(SUM(digest >> 32), 0)::BIGINT AS high, \
                    COALESCE(SUM(digest & 4294967295), 0)::BIGINT AS low";
        let single = |binder: &mut Binder, ordinal: usize, range: &KeyRange| {
            let conditions = live_in_range(binder, table, Some(tenant_id), range);
            let ordinal = binder.bind(i64::try_from(ordinal).unwrap_or(i64::MAX));
            format!(
                "SELECT {ordinal}::BIGINT AS i, {sums} FROM {} WHERE {}",
                table.name,
                conditions.join(" AND ")
            )
        };
        let mut selects = Vec::with_capacity(2);
        match bounded {
            [] => {}
            [(_, range)] => selects.push(single(&mut binder, 1, range)),
            _ => {
                let tenant = binder.bind(tenant_id.to_owned());
                let deleted = binder.bind(false);
                let bounds =
                    BoundsJoin::new(&mut binder, table, bounded.iter().map(|(_, range)| range));
                selects.push(format!(
                    "SELECT b.i, a.n, a.high, a.low FROM {} CROSS JOIN LATERAL \
                     (SELECT {sums} FROM {} WHERE deleted = {deleted} AND {} = {tenant} AND {}) a",
                    bounds.from, table.name, table.scope_column, bounds.condition,
                ));
            }
        }
        if let Some((_, range)) = open {
            selects.push(single(&mut binder, bounded.len() + 1, range));
        }
        let sql = format!("{} ORDER BY i", selects.join(" UNION ALL "));
        let rows = self
            .connection
            .query_all_raw(binder.statement(sql))
            .await
            .map_err(database("aggregate digests"))?;
        if rows.len() != parts.len() {
            return Err(Error::InvalidData(format!(
                "{} digests for {} ranges",
                rows.len(),
                parts.len()
            )));
        }
        rows.iter().map(split_sums).collect()
    }

    /// Every scope's live rows of each scoped kind (in apply order) as
    /// digests, in one statement: one sequential pass over each table
    /// grouped by scope (PostgreSQL; `None` on SQLite). Scopes without live
    /// rows are absent.
    #[instrument(name = "store.all_tenant_digests", skip_all)]
    pub async fn aggregate_all_tenant_digests(
        &self,
    ) -> Result<Option<HashMap<String, Vec<RangeDigest>>>> {
        if self.backend() != DbBackend::Postgres {
            return Ok(None);
        }
        let selects: Vec<String> = self
            .tables
            .scoped()
            .enumerate()
            .map(|(index, table)| {
                format!(
                    "SELECT {index} AS i, {column} AS scope, COUNT(*) AS n, COALESCE(SUM(digest >> 32), 0)::BIGINT AS high, \
                     COALESCE(SUM(digest & 4294967295), 0)::BIGINT AS low FROM {} WHERE NOT deleted GROUP BY {column}",
                    table.name,
                    column = table.scope_column,
                )
            })
            .collect();
        let kinds = selects.len();
        let rows = self
            .connection
            .query_all_raw(sea_orm::Statement::from_string(
                DbBackend::Postgres,
                selects.join(" UNION ALL "),
            ))
            .await
            .map_err(database("aggregate every tenant's digests"))?;
        let mut scopes: HashMap<String, Vec<RangeDigest>> = HashMap::new();
        for row in rows {
            let index: i32 = row
                .try_get("", "i")
                .map_err(database("aggregate every tenant's digests"))?;
            let scope = text(&row, "scope")?;
            let slot = scopes
                .entry(scope)
                .or_insert_with(|| vec![RangeDigest::default(); kinds]);
            slot[usize::try_from(index).unwrap_or_default().min(kinds - 1)] = split_sums(&row)?;
        }
        Ok(Some(scopes))
    }

    /// A scope's live rows of each scoped kind (in apply order), each
    /// whole, as digests in one statement (PostgreSQL; `None` on SQLite).
    #[instrument(name = "store.tenant_digests", skip_all, fields(tenant = %tenant_id))]
    pub async fn aggregate_tenant_digests(
        &self,
        tenant_id: &str,
    ) -> Result<Option<Vec<RangeDigest>>> {
        let parts: Vec<(Kind, KeyRange)> = self
            .data_model()
            .scoped_kinds()
            .into_iter()
            .map(|kind| (kind, KeyRange::all()))
            .collect();
        self.aggregate(tenant_id, &parts).await
    }

    /// Count and element sums of each `(kind, range)` of a tenant, in
    /// statements of up to 64 parts (`UNION ALL`).
    async fn aggregate(
        &self,
        tenant_id: &str,
        parts: &[(Kind, KeyRange)],
    ) -> Result<Option<Vec<RangeDigest>>> {
        if self.backend() != DbBackend::Postgres {
            return Ok(None);
        }
        for (kind, _) in parts {
            if !self.tables.table(*kind)?.tenant_scoped {
                return Ok(None);
            }
        }
        let mut digests = Vec::with_capacity(parts.len());
        for chunk in parts.chunks(64) {
            let mut binder = Binder::new(self.backend());
            let mut selects = Vec::with_capacity(chunk.len());
            for (index, (kind, range)) in chunk.iter().enumerate() {
                let table = self.tables.table(*kind)?;
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
                digests.push(split_sums(&row)?);
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
        for kind in self.tables.upsert_order() {
            let mut binder = Binder::new(self.backend());
            let sql = format!(
                "DELETE FROM {} WHERE deleted = {} AND deleted_at_ms < {}",
                self.tables.table(kind)?.name,
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

/// Many key ranges as a table `b(lo_…, hi_…, i)` to join laterally (one
/// index range scan per range), for PostgreSQL: ids contain no control
/// character, so each bound column travels as one text parameter joined by
/// the unit separator. Every range must be bounded above; an open lower
/// bound is `''`, which sorts before every id. At least two ranges
/// (`string_to_array('')` is empty, not one empty element: a single range
/// is read on its own).
struct BoundsJoin {
    /// `unnest(…) WITH ORDINALITY AS b(…, i)`.
    from: String,
    /// `(keys) > (b.lo…) AND (keys) <= (b.hi…)`.
    condition: String,
}

impl BoundsJoin {
    fn new<'a>(
        binder: &mut Binder,
        table: &Table,
        ranges: impl Iterator<Item = &'a KeyRange> + Clone,
    ) -> Self {
        let columns = &table.key_columns;
        let mut arrays = Vec::new();
        let mut names = Vec::new();
        let mut lower = Vec::new();
        let mut upper = Vec::new();
        for (index, column) in columns.iter().enumerate() {
            for values in recon_core::joined_bounds(ranges.clone(), index) {
                arrays.push(format!("string_to_array({}, chr(31))", binder.bind(values)));
            }
            names.push(format!("lo_{column}, hi_{column}"));
            lower.push(format!("b.lo_{column} COLLATE \"C\""));
            upper.push(format!("b.hi_{column} COLLATE \"C\""));
        }
        let keys = columns.join(", ");
        BoundsJoin {
            from: format!(
                "unnest({}) WITH ORDINALITY AS b({}, i)",
                arrays.join(", "),
                names.join(", ")
            ),
            condition: format!(
                "({keys}) > ({}) AND ({keys}) <= ({})",
                lower.join(", "),
                upper.join(", ")
            ),
        }
    }
}

/// A digest from a row's `n`, `high` and `low` columns.
fn split_sums(row: &QueryResult) -> Result<RangeDigest> {
    let number = |column: &str| -> Result<i64> {
        row.try_get("", column)
            .map_err(database("aggregate digests"))
    };
    Ok(RangeDigest::from_split_sums(
        sql::from_db(number("n")?, "count")?,
        number("high")?,
        number("low")?,
    ))
}

fn key_values(key: &EntityKey) -> Vec<Value> {
    key.parts()
        .iter()
        .map(|part| Value::from(part.clone()))
        .collect()
}

fn text(row: &QueryResult, column: &str) -> Result<String> {
    row.try_get("", column).map_err(database("decode row"))
}

impl Store {
    /// A row of `kind` selected with [`Table::selected_columns`].
    fn parse_row(&self, kind: Kind, row: &QueryResult) -> Result<Row> {
        let table = self.tables.table(kind)?;
        let definition = self.tables.definition(kind)?;
        let number = |column: &str| -> Result<i64> {
            row.try_get("", column).map_err(database("decode row"))
        };
        let version = Version::new(
            sql::from_db(number("generation")?, "generation")?,
            sql::from_db(number("sequence")?, "sequence")?,
        );
        let key = table
            .key_columns
            .iter()
            .map(|column| text(row, column))
            .collect::<Result<Vec<_>>>()?;
        let mut values = Vec::with_capacity(table.fields.len());
        for field in &table.fields {
            values.push(read_value(&field.field_type, row, &field.name)?);
        }
        let key = EntityKey::from_parts(key);
        let tenant_id = if table.tenant_scoped {
            text(row, &table.scope_column)?
        } else {
            key.first().to_owned()
        };
        Ok(Row {
            tenant_id,
            record: Record::unchecked(definition, key, values),
            version,
        })
    }
}

/// One data column's value (timestamps selected as microseconds).
fn read_value(field_type: &FieldType, row: &QueryResult, column: &str) -> Result<FieldValue> {
    let decode = database("decode row");
    let value = match field_type {
        FieldType::Text { .. } | FieldType::Enum { .. } => row
            .try_get::<Option<String>>("", column)
            .map_err(decode)?
            .map(FieldValue::Text),
        FieldType::Json => row
            .try_get::<Option<String>>("", column)
            .map_err(decode)?
            .map(FieldValue::Json),
        FieldType::Integer | FieldType::Timestamp => {
            let number = row.try_get::<Option<i64>>("", column).map_err(decode)?;
            match field_type {
                FieldType::Integer => number.map(FieldValue::Integer),
                _ => number.map(FieldValue::Timestamp),
            }
        }
        FieldType::Boolean => row
            .try_get::<Option<bool>>("", column)
            .map_err(decode)?
            .map(FieldValue::Boolean),
    };
    Ok(value.unwrap_or(FieldValue::Null))
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
        conditions.push(format!(
            "{} = {}",
            table.scope_column,
            binder.bind(tenant_id.to_owned())
        ));
    }
    conditions.extend(key_conditions(binder, table, range));
    conditions
}

/// The conditions that keep a table's keys within `range`.
fn key_conditions(binder: &mut Binder, table: &Table, range: &KeyRange) -> Vec<String> {
    let key_tuple = format!("({})", table.key_columns.join(", "));
    let mut conditions = Vec::with_capacity(2);
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
