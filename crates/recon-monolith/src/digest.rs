//! Range digests of the Source API (DESIGN §4; element definition in
//! [`recon_core::digest`]).
//!
//! On PostgreSQL every data table keeps its rows' element in a generated
//! column `digest` (computed by the database from the row's own columns in
//! the writing transaction), so a digest is an aggregate over an index
//! range: `count(*)` and the element sum, split into buckets of about equal
//! row counts with `ntile`. SQLite has no SHA-256 in SQL: a monolith on
//! SQLite does not offer digests (`GET /v1/capabilities` says so) and its
//! clients walk every range.

use crate::Monolith;
use crate::db::read_meta;
use crate::error::{DbResultExt, Error, Result};
use recon_core::{EntityKey, KeyRange, Kind, RangeDigest, Version};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use tracing::instrument;

/// Most buckets one request may ask for.
pub const MAX_BUCKETS: u32 = 16_384;

/// One range of a digest answer: after the previous range's `until` (or the
/// request's `after`), up to and including `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Inclusive upper bound; the last bucket ends where the request does.
    pub until: Option<EntityKey>,
    /// Count and element sum.
    pub digest: RangeDigest,
}

/// Digests of a range, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Consecutive buckets covering the requested range, in key order.
    pub buckets: Vec<Bucket>,
    /// The version of the last change committed in the snapshot.
    pub watermark: Version,
}

/// A tenant's digests, every kind whole, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDigests {
    /// Users, groups, memberships.
    pub kinds: [RangeDigest; 3],
    /// The version of the last change committed in the snapshot.
    pub watermark: Version,
}

/// Table and key columns of a tenant-scoped kind.
fn layout(kind: Kind) -> Result<(&'static str, &'static [&'static str])> {
    match kind {
        Kind::User => Ok(("users", &["id"])),
        Kind::Group => Ok(("\"groups\"", &["id"])),
        Kind::Membership => Ok(("memberships", &["group_id", "user_id"])),
        Kind::Tenant => Err(Error::BadRequest(
            "digests are per tenant: users, groups or memberships".to_owned(),
        )),
    }
}

/// The SQL condition `key > bound` (or `<=`) over `columns`, binding the
/// bound's parts as `$n` parameters.
fn key_condition(
    columns: &[&str],
    operator: &str,
    key: &EntityKey,
    values: &mut Vec<Value>,
) -> String {
    let mut placeholders = Vec::with_capacity(columns.len());
    let parts = [Some(key.primary.clone()), key.secondary.clone()];
    for part in parts.into_iter().take(columns.len()) {
        values.push(part.unwrap_or_default().into());
        placeholders.push(format!("${}", values.len()));
    }
    format!(
        "({}) {operator} ({})",
        columns.join(", "),
        placeholders.join(", ")
    )
}

fn parse_last(kind: Kind, parts: Vec<String>) -> Result<EntityKey> {
    let mut parts = parts.into_iter();
    let primary = parts.next().unwrap_or_default();
    Ok(match kind {
        Kind::Membership => EntityKey::pair(primary, parts.next().unwrap_or_default()),
        _ => EntityKey::id(primary),
    })
}

impl Monolith {
    /// Whether this monolith serves range digests (PostgreSQL only).
    pub fn offers_digests(&self) -> bool {
        self.connection.get_database_backend() == DbBackend::Postgres
    }

    /// The digests of a tenant's rows of `kind` in `range`, split into at
    /// most `buckets` consecutive ranges of about equal row counts. An
    /// unknown tenant is [`Error::NotFound`]; a monolith on SQLite answers
    /// [`Error::NotFound`] too (it offers no digests).
    #[instrument(skip_all, name = "monolith.digests", fields(tenant = %tenant_id, kind = %kind, buckets))]
    pub async fn digests(
        &self,
        tenant_id: &str,
        kind: Kind,
        range: &KeyRange,
        buckets: u32,
    ) -> Result<Digests> {
        if !(1..=MAX_BUCKETS).contains(&buckets) {
            return Err(Error::BadRequest(format!(
                "query parameter `buckets` must be between 1 and {MAX_BUCKETS}, got {buckets}"
            )));
        }
        let (table, key_columns) = layout(kind)?;
        if !self.offers_digests() {
            return Err(Error::NotFound(
                "range digests (this monolith's database is not PostgreSQL)".to_owned(),
            ));
        }
        let mut values: Vec<Value> = vec![tenant_id.into()];
        let mut conditions = vec!["tenant_id = $1".to_owned()];
        if let Some(after) = &range.after {
            conditions.push(key_condition(key_columns, ">", after, &mut values));
        }
        if let Some(until) = &range.until {
            conditions.push(key_condition(key_columns, "<=", until, &mut values));
        }
        let keys = key_columns.join(", ");
        let sums = "count(*) AS n, coalesce(sum(digest >> 32), 0)::bigint AS high, \
                    coalesce(sum(digest & 4294967295), 0)::bigint AS low";
        // A bucket's last key: its greatest, as one text (the parts of a
        // pair joined by the unit separator, which no id contains: the
        // joined texts sort as the pairs do). Cheaper than an array per row.
        let joined = key_columns.join(" || chr(31) || ");
        let aggregate = if buckets == 1 {
            format!(
                "SELECT {sums}, NULL::text AS last FROM {table} WHERE {}",
                conditions.join(" AND ")
            )
        } else {
            // The bucket count is a parameter: one statement text (parsed
            // and planned once per connection) whatever the count asked for.
            values.push(i32::try_from(buckets).unwrap_or(i32::MAX).into());
            let count = format!("${}", values.len());
            format!(
                "SELECT {sums}, max({joined} COLLATE \"C\") AS last, bucket FROM \
                 (SELECT {keys}, digest, ntile({count}) OVER (ORDER BY {keys}) AS bucket \
                  FROM {table} WHERE {}) ranged GROUP BY bucket",
                conditions.join(" AND ")
            )
        };
        // One statement is one snapshot: the watermark and the aggregate
        // are read together, in one round trip.
        let sql = format!(
            "SELECT meta.generation, meta.sequence, d.n, d.high, d.low, d.last FROM meta \
             CROSS JOIN LATERAL ({aggregate}) d WHERE meta.id = 1 ORDER BY d.last COLLATE \"C\" NULLS LAST"
        );
        let rows = self
            .connection
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await
            .during("aggregate range digests")?;
        let watermark = match rows.first() {
            Some(row) => {
                let generation: i64 = row.try_get("", "generation").during("read the watermark")?;
                let sequence: i64 = row.try_get("", "sequence").during("read the watermark")?;
                Version::new(
                    u64::try_from(generation).unwrap_or_default(),
                    u64::try_from(sequence).unwrap_or_default(),
                )
            }
            None => read_meta(&self.connection).await?,
        };
        let empty = rows.iter().all(|row| {
            row.try_get::<i64>("", "n")
                .map(|count| count == 0)
                .unwrap_or(true)
        });
        if empty {
            // No row in the range: say whether the tenant exists at all.
            self.require_scope(&self.connection, tenant_id).await?;
        }
        let mut answer = Vec::with_capacity(rows.len().max(1));
        for row in rows {
            let count: i64 = row.try_get("", "n").during("read a digest count")?;
            let high: i64 = row.try_get("", "high").during("read a digest sum")?;
            let low: i64 = row.try_get("", "low").during("read a digest sum")?;
            let last: Option<String> = row.try_get("", "last").during("read a digest bound")?;
            answer.push(Bucket {
                until: last
                    .map(|joined| {
                        parse_last(kind, joined.split('\u{1f}').map(str::to_owned).collect())
                    })
                    .transpose()?,
                digest: RangeDigest::from_split_sums(
                    u64::try_from(count).unwrap_or_default(),
                    high,
                    low,
                ),
            });
        }
        // The last bucket reaches the end of the requested range, so that
        // rows past the source's last key (a replica's phantoms) fall in it.
        match answer.last_mut() {
            Some(last) => last.until = range.until.clone(),
            None => answer.push(Bucket {
                until: range.until.clone(),
                digest: RangeDigest::default(),
            }),
        }
        Ok(Digests {
            buckets: answer,
            watermark,
        })
    }
}

/// Every tenant's digests, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllTenantDigests {
    /// Users, groups, memberships per tenant that has rows, in id order.
    pub tenants: Vec<(String, [RangeDigest; 3])>,
    /// The version of the last change committed in the snapshot.
    pub watermark: Version,
}

impl Monolith {
    /// Every tenant's digests, users, groups and memberships each whole, in
    /// one statement: one sequential pass over each table (grouped by
    /// tenant) instead of an index scan per tenant and kind — what a run
    /// compares first. Tenants without rows are left out. A monolith on
    /// SQLite answers [`Error::NotFound`].
    #[instrument(skip_all, name = "monolith.all_tenant_digests")]
    pub async fn all_tenant_digests(&self) -> Result<AllTenantDigests> {
        if !self.offers_digests() {
            return Err(Error::NotFound(
                "range digests (this monolith's database is not PostgreSQL)".to_owned(),
            ));
        }
        let per_tenant = |kind: usize, table: &str| {
            format!(
                "SELECT {kind}::bigint AS kind, tenant_id, count(*) AS n, coalesce(sum(digest >> 32), 0)::bigint AS high, \
                 coalesce(sum(digest & 4294967295), 0)::bigint AS low FROM {table} GROUP BY tenant_id"
            )
        };
        let sql = format!(
            "SELECT meta.generation, meta.sequence, k.kind, k.tenant_id, k.n, k.high, k.low FROM meta \
             LEFT JOIN LATERAL ({} UNION ALL {} UNION ALL {}) k ON TRUE WHERE meta.id = 1 \
             ORDER BY k.tenant_id COLLATE \"C\", k.kind",
            per_tenant(0, "users"),
            per_tenant(1, "\"groups\""),
            per_tenant(2, "memberships"),
        );
        let action = "aggregate every tenant's digests";
        let rows = self
            .connection
            .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .during(action)?;
        let mut watermark = None;
        let mut tenants: Vec<(String, [RangeDigest; 3])> = Vec::new();
        for row in rows {
            let number =
                |column: &str| -> Result<Option<i64>> { row.try_get("", column).during(action) };
            watermark.get_or_insert(Version::new(
                u64::try_from(number("generation")?.unwrap_or_default()).unwrap_or_default(),
                u64::try_from(number("sequence")?.unwrap_or_default()).unwrap_or_default(),
            ));
            let tenant: Option<String> = row.try_get("", "tenant_id").during(action)?;
            let (Some(tenant), Some(kind)) = (tenant, number("kind")?) else {
                continue;
            };
            if tenants.last().is_none_or(|(last, _)| *last != tenant) {
                tenants.push((tenant, [RangeDigest::default(); 3]));
            }
            if let (Some((_, kinds)), Ok(index)) = (tenants.last_mut(), usize::try_from(kind)) {
                kinds[index.min(2)] = RangeDigest::from_split_sums(
                    u64::try_from(number("n")?.unwrap_or_default()).unwrap_or_default(),
                    number("high")?.unwrap_or_default(),
                    number("low")?.unwrap_or_default(),
                );
            }
        }
        let watermark = match watermark {
            Some(watermark) => watermark,
            None => read_meta(&self.connection).await?,
        };
        Ok(AllTenantDigests { tenants, watermark })
    }

    /// A tenant's digests, users, groups and memberships each whole, in one
    /// statement (one snapshot, one round trip): what a client compares
    /// first, so that an unchanged tenant costs one request. An unknown
    /// tenant, or a monolith on SQLite, is [`Error::NotFound`].
    #[instrument(skip_all, name = "monolith.tenant_digests", fields(tenant = %tenant_id))]
    pub async fn tenant_digests(&self, tenant_id: &str) -> Result<TenantDigests> {
        if !self.offers_digests() {
            return Err(Error::NotFound(
                "range digests (this monolith's database is not PostgreSQL)".to_owned(),
            ));
        }
        let aggregate = |table: &str| {
            format!(
                "(SELECT count(*) AS n, coalesce(sum(digest >> 32), 0)::bigint AS high, \
                 coalesce(sum(digest & 4294967295), 0)::bigint AS low FROM {table} WHERE tenant_id = $1)"
            )
        };
        let sql = format!(
            "SELECT meta.generation, meta.sequence, \
             (SELECT count(*) FROM tenants WHERE id = $1) AS known, \
             u.n AS u_n, u.high AS u_high, u.low AS u_low, \
             g.n AS g_n, g.high AS g_high, g.low AS g_low, \
             m.n AS m_n, m.high AS m_high, m.low AS m_low \
             FROM meta, {} u, {} g, {} m WHERE meta.id = 1",
            aggregate("users"),
            aggregate("\"groups\""),
            aggregate("memberships"),
        );
        let action = "aggregate a tenant's digests";
        let row = self
            .connection
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                [Value::from(tenant_id)],
            ))
            .await
            .during(action)?
            .ok_or_else(|| Error::Corrupt("the meta row is missing".to_owned()))?;
        let number = |column: &str| -> Result<i64> { row.try_get("", column).during(action) };
        if number("known")? == 0 {
            return Err(Error::NotFound(format!("tenant {tenant_id:?}")));
        }
        let digest = |prefix: &str| -> Result<RangeDigest> {
            Ok(RangeDigest::from_split_sums(
                u64::try_from(number(&format!("{prefix}_n"))?).unwrap_or_default(),
                number(&format!("{prefix}_high"))?,
                number(&format!("{prefix}_low"))?,
            ))
        };
        Ok(TenantDigests {
            kinds: [digest("u")?, digest("g")?, digest("m")?],
            watermark: Version::new(
                u64::try_from(number("generation")?).unwrap_or_default(),
                u64::try_from(number("sequence")?).unwrap_or_default(),
            ),
        })
    }
}
