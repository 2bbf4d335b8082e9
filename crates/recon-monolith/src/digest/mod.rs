//! Range digests of the Source API (DESIGN §4; element definition in
//! [`recon_core::digest`]), for every scoped kind.
//!
//! On PostgreSQL every scoped kind's table keeps its rows' element in a
//! generated column `digest` (computed by the database from the row's own
//! columns in the writing transaction, see [`crate::ddl`]), so a digest is
//! an aggregate over an index range: `count(*)` and the element sum, split
//! into buckets of about equal row counts with `ntile`. SQLite has no
//! SHA-256 in SQL: a monolith on SQLite does not offer digests
//! (`GET /v1/capabilities` says so) and its clients walk every range.
//!
//! `typed` is the default schema's view ([`Monolith::digests`] of a
//! [`recon_core::Kind`]).

mod typed;

pub use typed::Bucket;

use crate::Monolith;
use crate::db::{read_meta, stored_version};
use crate::error::{DbResultExt, Error, Result};
use crate::model::KindPlan;
use crate::rows::KeySpan;
use crate::sql::key_condition;
use recon_core::{RangeDigest, Version};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};
use tracing::instrument;

/// Most buckets one request may ask for.
pub const MAX_BUCKETS: u32 = 16_384;

/// The count and element sum columns of an aggregate over `digest`.
const SUMS: &str = "count(*) AS n, coalesce(sum(digest >> 32), 0)::bigint AS high, \
                    coalesce(sum(digest & 4294967295), 0)::bigint AS low";

/// One range of a digest answer: after the previous range's `until` (or
/// the request's `after`), up to and including `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanBucket {
    /// Inclusive upper bound; the last bucket ends where the request does.
    pub until: Option<Vec<String>>,
    /// Count and element sum.
    pub digest: RangeDigest,
}

/// Digests of a range, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests<B = SpanBucket> {
    /// Consecutive buckets covering the requested range, in key order.
    pub buckets: Vec<B>,
    /// The version of the last change committed in the snapshot.
    pub watermark: Version,
}

/// A scope value's digests, every scoped kind whole, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDigests {
    /// Per scoped kind, in file order.
    pub kinds: Vec<RangeDigest>,
    /// The version of the last change committed in the snapshot.
    pub watermark: Version,
}

/// Every scope value's digests, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllScopeDigests {
    /// Per scope value that has rows, in id order: per scoped kind, in
    /// file order.
    pub scopes: Vec<(String, Vec<RangeDigest>)>,
    /// The version of the last change committed in the snapshot.
    pub watermark: Version,
}

fn not_offered() -> Error {
    Error::NotFound("range digests (this monolith's database is not PostgreSQL)".to_owned())
}

fn digest_of(row: &QueryResult, prefix: &str, action: &'static str) -> Result<RangeDigest> {
    let number = |column: &str| -> Result<i64> {
        Ok(row
            .try_get::<Option<i64>>("", &format!("{prefix}{column}"))
            .during(action)?
            .unwrap_or_default())
    };
    Ok(RangeDigest::from_split_sums(
        u64::try_from(number("n")?).unwrap_or_default(),
        number("high")?,
        number("low")?,
    ))
}

fn watermark_of(row: &QueryResult, action: &'static str) -> Result<Version> {
    let generation: i64 = row.try_get("", "generation").during(action)?;
    let sequence: i64 = row.try_get("", "sequence").during(action)?;
    stored_version(generation, sequence)
}

impl Monolith {
    /// Whether this monolith serves range digests (PostgreSQL only).
    pub fn offers_digests(&self) -> bool {
        self.backend() == DbBackend::Postgres
    }

    /// The scoped kind named `kind_name`, or 404 (the scope kind has no
    /// digests).
    fn digested_kind(&self, kind_name: &str) -> Result<&KindPlan> {
        let kind = self.kind_named(kind_name)?;
        if !kind.scoped() {
            return Err(Error::BadRequest(format!(
                "digests are per {}: of its {}",
                self.model().scope().name(),
                self.model()
                    .scoped_kinds()
                    .map(|kind| kind.def.plural.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(kind)
    }

    /// The digests of `scope`'s rows of `kind_name` in `span`, split into
    /// at most `buckets` consecutive ranges of about equal row counts. An
    /// unknown scope value is [`Error::NotFound`]; a monolith on SQLite
    /// answers [`Error::NotFound`] too (it offers no digests).
    #[instrument(skip_all, name = "monolith.digests", fields(scope = %scope, kind = %kind_name, buckets))]
    pub async fn span_digests(
        &self,
        scope: &str,
        kind_name: &str,
        span: &KeySpan,
        buckets: u32,
    ) -> Result<Digests> {
        if !(1..=MAX_BUCKETS).contains(&buckets) {
            return Err(Error::BadRequest(format!(
                "query parameter `buckets` must be between 1 and {MAX_BUCKETS}, got {buckets}"
            )));
        }
        let kind = self.digested_kind(kind_name)?;
        if !self.offers_digests() {
            return Err(not_offered());
        }
        let backend = DbBackend::Postgres;
        let key_columns = kind.key();
        let mut values: Vec<Value> = vec![scope.into()];
        let mut conditions = vec![format!("{} = $1", kind.scope_column)];
        if let Some(after) = &span.after {
            conditions.push(key_condition(backend, key_columns, ">", after, &mut values));
        }
        if let Some(until) = &span.until {
            conditions.push(key_condition(
                backend,
                key_columns,
                "<=",
                until,
                &mut values,
            ));
        }
        let keys = key_columns.join(", ");
        // A bucket's last key: its greatest, as one text (the parts of a
        // composite key joined by the unit separator, which no id holds:
        // the joined texts sort as the keys do). Cheaper than an array per
        // row.
        let joined = key_columns.join(" || chr(31) || ");
        let aggregate = if buckets == 1 {
            format!(
                "SELECT {SUMS}, NULL::text AS last FROM {} WHERE {}",
                kind.quoted_table(),
                conditions.join(" AND ")
            )
        } else {
            // The bucket count is a parameter: one statement text (parsed
            // and planned once per connection) whatever the count asked for.
            values.push(i32::try_from(buckets).unwrap_or(i32::MAX).into());
            let count = format!("${}", values.len());
            format!(
                "SELECT {SUMS}, max({joined} COLLATE \"C\") AS last, bucket FROM \
                 (SELECT {keys}, digest, ntile({count}) OVER (ORDER BY {keys}) AS bucket \
                  FROM {} WHERE {}) ranged GROUP BY bucket",
                kind.quoted_table(),
                conditions.join(" AND ")
            )
        };
        // One statement is one snapshot: the watermark and the aggregate
        // are read together, in one round trip.
        let sql = format!(
            "SELECT meta.generation, meta.sequence, d.n, d.high, d.low, d.last FROM meta \
             CROSS JOIN LATERAL ({aggregate}) d WHERE meta.id = 1 ORDER BY d.last COLLATE \"C\" NULLS LAST"
        );
        let action = "aggregate range digests";
        let rows = self
            .connection
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await
            .during(action)?;
        let watermark = match rows.first() {
            Some(row) => watermark_of(row, action)?,
            None => read_meta(&self.connection).await?,
        };
        let mut answer = Vec::with_capacity(rows.len().max(1));
        for row in &rows {
            let last: Option<String> = row.try_get("", "last").during(action)?;
            answer.push(SpanBucket {
                until: last.map(|joined| joined.split('\u{1f}').map(str::to_owned).collect()),
                digest: digest_of(row, "", action)?,
            });
        }
        if answer.iter().all(|bucket| bucket.digest.count == 0) {
            // No row in the range: say whether the scope value exists.
            self.require_scope(&self.connection, scope).await?;
        }
        // The last bucket reaches the end of the requested range, so that
        // rows past the source's last key (a replica's phantoms) fall in it.
        match answer.last_mut() {
            Some(last) => last.until = span.until.clone(),
            None => answer.push(SpanBucket {
                until: span.until.clone(),
                digest: RangeDigest::default(),
            }),
        }
        Ok(Digests {
            buckets: answer,
            watermark,
        })
    }

    /// A scope value's digests, every scoped kind whole, in one statement
    /// (one snapshot, one round trip): what a client compares first, so
    /// that an unchanged scope value costs one request. An unknown scope
    /// value, or a monolith on SQLite, is [`Error::NotFound`].
    #[instrument(skip_all, name = "monolith.tenant_digests", fields(scope = %scope))]
    pub async fn scope_digests(&self, scope: &str) -> Result<ScopeDigests> {
        if !self.offers_digests() {
            return Err(not_offered());
        }
        let scope_kind = self.model().scope();
        let mut aggregates = Vec::new();
        let mut columns = vec![format!(
            "(SELECT count(*) FROM {} WHERE {} = $1) AS known",
            scope_kind.quoted_table(),
            scope_kind.scope_column
        )];
        for (position, kind) in self.model().scoped_kinds().enumerate() {
            aggregates.push(format!(
                "(SELECT {SUMS} FROM {} WHERE {} = $1) k{position}",
                kind.quoted_table(),
                kind.scope_column
            ));
            columns.push(format!(
                "k{position}.n AS k{position}_n, k{position}.high AS k{position}_high, \
                 k{position}.low AS k{position}_low"
            ));
        }
        let sql = format!(
            "SELECT meta.generation, meta.sequence, {} FROM meta, {} WHERE meta.id = 1",
            columns.join(", "),
            aggregates.join(", ")
        );
        let action = "aggregate a scope's digests";
        let row = self
            .connection
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                [Value::from(scope)],
            ))
            .await
            .during(action)?
            .ok_or_else(|| Error::Corrupt("the meta row is missing".to_owned()))?;
        let known: i64 = row.try_get("", "known").during(action)?;
        if known == 0 {
            return Err(self.not_found(scope_kind, scope, &[scope.to_owned()]));
        }
        let mut kinds = Vec::new();
        for position in 0..self.model().scoped_kinds().count() {
            kinds.push(digest_of(&row, &format!("k{position}_"), action)?);
        }
        Ok(ScopeDigests {
            kinds,
            watermark: watermark_of(&row, action)?,
        })
    }

    /// Every scope value's digests, every scoped kind whole, in one
    /// statement: one sequential pass over each table (grouped by scope)
    /// instead of an index scan per scope value and kind — what a run
    /// compares first. Scope values without rows are left out. A monolith
    /// on SQLite answers [`Error::NotFound`].
    #[instrument(skip_all, name = "monolith.all_tenant_digests")]
    pub async fn all_scope_digests(&self) -> Result<AllScopeDigests> {
        if !self.offers_digests() {
            return Err(not_offered());
        }
        let kind_count = self.model().scoped_kinds().count();
        let per_scope: Vec<String> = self
            .model()
            .scoped_kinds()
            .enumerate()
            .map(|(position, kind)| {
                format!(
                    "SELECT {position}::bigint AS kind, {0} AS scope, {SUMS} FROM {1} GROUP BY {0}",
                    kind.scope_column,
                    kind.quoted_table()
                )
            })
            .collect();
        let sql = format!(
            "SELECT meta.generation, meta.sequence, k.kind, k.scope, k.n, k.high, k.low FROM meta \
             LEFT JOIN LATERAL ({}) k ON TRUE WHERE meta.id = 1 \
             ORDER BY k.scope COLLATE \"C\", k.kind",
            per_scope.join(" UNION ALL ")
        );
        let action = "aggregate every scope's digests";
        let rows = self
            .connection
            .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .during(action)?;
        let mut watermark = None;
        let mut scopes: Vec<(String, Vec<RangeDigest>)> = Vec::new();
        for row in &rows {
            if watermark.is_none() {
                watermark = Some(watermark_of(row, action)?);
            }
            let scope: Option<String> = row.try_get("", "scope").during(action)?;
            let kind: Option<i64> = row.try_get("", "kind").during(action)?;
            let (Some(scope), Some(kind)) = (scope, kind) else {
                continue;
            };
            if scopes.last().is_none_or(|(last, _)| *last != scope) {
                scopes.push((scope, vec![RangeDigest::default(); kind_count]));
            }
            if let (Some((_, kinds)), Ok(index)) = (scopes.last_mut(), usize::try_from(kind))
                && let Some(slot) = kinds.get_mut(index)
            {
                *slot = digest_of(row, "", action)?;
            }
        }
        let watermark = match watermark {
            Some(watermark) => watermark,
            None => read_meta(&self.connection).await?,
        };
        Ok(AllScopeDigests { scopes, watermark })
    }
}
