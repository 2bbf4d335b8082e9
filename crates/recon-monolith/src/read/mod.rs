//! The read side of the Source API: keyset pages, counts and watermarks,
//! for any declared kind.
//!
//! Every page is read in one snapshot together with the watermark (the
//! version of the last committed change), so that a row absent from a page
//! covering its key was really absent at the watermark. Pages are keyset
//! pages: `WHERE key > after ORDER BY key LIMIT limit + 1` (one extra row
//! tells whether another page follows); never `OFFSET`. Keys compare part
//! by part, each byte-wise, with the scope column first so that both
//! backends seek the primary key.
//!
//! `typed` is the default schema's typed API (`list_tenants`,
//! `list_entities`, `counts`, `snapshot_rows`) over the same reads.

mod ranges;
mod typed;

pub use typed::{Counts, Page};

use crate::Monolith;
use crate::db::{self, read_meta};
use crate::error::{DbResultExt, Error, Result};
use crate::model::KindPlan;
use crate::rows::{KeySpan, RowRef, Rows, spans_after};
use crate::sql::{self, parameter};
use recon_core::Version;
use recon_core::schema::DeclaredRow;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};
use tracing::instrument;

/// Page size when a request gives none.
pub const DEFAULT_PAGE_LIMIT: u32 = 1000;
/// Largest page size a request may ask for.
pub const MAX_PAGE_LIMIT: u32 = 10_000;
/// Most key ranges one multi-range page request may carry.
pub const MAX_PAGE_RANGES: u32 = 256;

/// One key-ordered page of rows of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredPage {
    /// The kind's index in the schema.
    pub kind: usize,
    /// The scope value the rows live in (empty for a page of scope rows).
    pub scope: String,
    /// The rows, in strictly increasing key order.
    pub rows: Rows,
    /// The version of the last change committed in the page's snapshot.
    pub watermark: Version,
    /// The key to pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<Vec<String>>,
}

impl DeclaredPage {
    /// Row `index` (a scope row lives inside itself).
    pub fn row(&self, index: usize) -> RowRef<'_> {
        let scope = if self.scope.is_empty() {
            self.rows.key(index)[0].as_str()
        } else {
            self.scope.as_str()
        };
        self.rows.row(scope, index)
    }
}

/// How many rows of each scoped kind a scope value holds, for planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeCounts {
    /// Per scoped kind, in file order.
    pub counts: Vec<u64>,
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
    /// A page of rows of kind `kind_name` with keys greater than `after`
    /// and inside one of `within` (in key order, disjoint; no constraint
    /// when empty): scoped kinds within `scope` (an unknown scope value is
    /// [`Error::NotFound`]), the scope kind with `scope` `None`.
    #[instrument(skip_all, name = "monolith.read_page", fields(kind = %kind_name, limit, ranges = within.len()))]
    pub async fn page(
        &self,
        kind_name: &str,
        scope: Option<&str>,
        after: Option<&[String]>,
        limit: u32,
        within: &[KeySpan],
    ) -> Result<DeclaredPage> {
        let kind = self.kind_named(kind_name)?;
        validate_limit(limit)?;
        ranges::validate_spans(within)?;
        let scope = match (kind.scoped(), scope) {
            (true, Some(scope)) => scope,
            (false, None) => "",
            (true, None) => {
                return Err(Error::BadRequest(format!(
                    "{} rows are listed within a {}",
                    kind.name(),
                    self.model().scope().name()
                )));
            }
            (false, Some(_)) => {
                return Err(Error::BadRequest(format!(
                    "{} rows are not listed within a scope",
                    kind.name()
                )));
            }
        };
        let txn = db::begin_snapshot(&self.connection).await?;
        let watermark = read_meta(&txn).await?;
        if kind.scoped() {
            self.require_scope(&txn, scope).await?;
        }
        let fetch = u64::from(limit) + 1;
        let left = spans_after(within, after);
        let mut rows = if !within.is_empty() && left.is_empty() {
            Rows::new(kind.key().len(), kind.fields().len(), 0)
        } else if left.len() > 1 && self.backend() == DbBackend::Postgres {
            ranges::page_of_ranges(self, &txn, kind, scope, &left, fetch).await?
        } else {
            self.plain_page(&txn, kind, scope, after, &left, fetch)
                .await?
        };
        txn.commit().await.during("end a snapshot")?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_after = if rows.len() > limit {
            rows.truncate(limit);
            rows.last_key().map(<[String]>::to_vec)
        } else {
            None
        };
        Ok(DeclaredPage {
            kind: kind.index,
            scope: scope.to_owned(),
            rows,
            watermark,
            next_after,
        })
    }

    /// Up to `fetch` rows after `after` and inside one of `within` (an
    /// `OR` of the ranges; empty: no constraint), in one statement.
    async fn plain_page(
        &self,
        txn: &DatabaseTransaction,
        kind: &KindPlan,
        scope: &str,
        after: Option<&[String]>,
        within: &[KeySpan],
        fetch: u64,
    ) -> Result<Rows> {
        let statement = self.plain_page_statement(kind, scope, after, within, fetch);
        self.read_rows(txn, kind, statement, 0, "read a page").await
    }

    /// The statement of [`Monolith::plain_page`]: the scope column's
    /// equality first, then the key as one tuple, so that both backends
    /// seek the primary key (SQLite uses a row comparison as a range only
    /// right after the equality).
    fn plain_page_statement(
        &self,
        kind: &KindPlan,
        scope: &str,
        after: Option<&[String]>,
        within: &[KeySpan],
        fetch: u64,
    ) -> Statement {
        let backend = self.backend();
        let statements = &self.statements[kind.index];
        let mut values: Vec<Value> = Vec::new();
        let mut conditions = Vec::new();
        if kind.scoped() {
            values.push(scope.to_owned().into());
            conditions.push(format!("{} = {}", kind.scope_column, parameter(backend, 1)));
        }
        if let Some(after) = after {
            conditions.push(sql::key_condition(
                backend,
                kind.key(),
                ">",
                after,
                &mut values,
            ));
        }
        let mut alternatives = Vec::with_capacity(within.len());
        for span in within {
            alternatives.push(ranges::span_condition(backend, kind, span, &mut values));
        }
        if !alternatives.is_empty() {
            conditions.push(format!("({})", alternatives.join(" OR ")));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        values.push(i64::try_from(fetch).unwrap_or(i64::MAX).into());
        Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {}",
                statements.select_list,
                kind.quoted_table(),
                statements.key_list,
                parameter(backend, values.len())
            ),
            values,
        )
    }

    /// Runs `statement` and reads its rows, selected with the kind's
    /// select list from column `first` on.
    pub(crate) async fn read_rows(
        &self,
        connection: &impl ConnectionTrait,
        kind: &KindPlan,
        statement: Statement,
        first: usize,
        action: &'static str,
    ) -> Result<Rows> {
        let results = connection.query_all_raw(statement).await.during(action)?;
        let mut rows = Rows::new(kind.key().len(), kind.fields().len(), results.len());
        for result in &results {
            sql::read_row(kind, result, first, &mut rows)?;
        }
        Ok(rows)
    }

    /// How many rows of each scoped kind `scope` holds, with the watermark
    /// of the snapshot they were counted in: one statement (one snapshot,
    /// one round trip — planning asks this of every scope value). An
    /// unknown scope value is [`Error::NotFound`].
    #[instrument(skip_all, name = "monolith.counts", fields(scope = %scope))]
    pub async fn scope_counts(&self, scope: &str) -> Result<ScopeCounts> {
        let backend = self.backend();
        let parameter = parameter(backend, 1);
        let scope_kind = self.model().scope();
        let mut columns = vec![format!(
            "(SELECT COUNT(*) FROM {} WHERE {} = {parameter}) AS known",
            scope_kind.quoted_table(),
            scope_kind.scope_column
        )];
        for (position, kind) in self.model().scoped_kinds().enumerate() {
            columns.push(format!(
                "(SELECT COUNT(*) FROM {} WHERE {} = {parameter}) AS n{position}",
                kind.quoted_table(),
                kind.scope_column
            ));
        }
        let sql = format!(
            "SELECT generation, sequence, {} FROM meta WHERE id = 1",
            columns.join(", ")
        );
        let action = "count a scope's rows";
        let row = self
            .connection
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [Value::from(scope)],
            ))
            .await
            .during(action)?
            .ok_or_else(|| Error::Corrupt("the meta row is missing".to_owned()))?;
        let number = |column: &str| -> Result<u64> {
            let value: i64 = row.try_get("", column).during(action)?;
            u64::try_from(value).map_err(|_| Error::Corrupt(format!("negative {column}: {value}")))
        };
        if number("known")? == 0 {
            return Err(self.not_found(scope_kind, scope, &[scope.to_owned()]));
        }
        let mut counts = Vec::new();
        for position in 0..self.model().scoped_kinds().count() {
            counts.push(number(&format!("n{position}"))?);
        }
        Ok(ScopeCounts {
            counts,
            watermark: Version::new(number("generation")?, number("sequence")?),
        })
    }

    /// The current watermark: the version of the last committed change.
    pub async fn watermark(&self) -> Result<Version> {
        read_meta(&self.connection).await
    }

    /// Every row of every kind, read in one snapshot, ordered by kind (file
    /// order), scope and key, with the snapshot's watermark. Loads
    /// everything into memory: for tests and small data sets only.
    #[instrument(skip_all, name = "monolith.snapshot")]
    pub async fn snapshot(&self) -> Result<(Vec<DeclaredRow>, Version)> {
        let txn = db::begin_snapshot(&self.connection).await?;
        let watermark = read_meta(&txn).await?;
        let mut all = Vec::new();
        for kind in self.model().kinds() {
            let statements = &self.statements[kind.index];
            let (scope_column, first) = if kind.scoped() {
                (format!("{}, ", kind.scope_column), 1)
            } else {
                (String::new(), 0)
            };
            let statement = Statement::from_string(
                self.backend(),
                format!(
                    "SELECT {scope_column}{} FROM {} ORDER BY {}",
                    statements.select_list,
                    kind.quoted_table(),
                    statements.primary_key
                ),
            );
            let results = txn
                .query_all_raw(statement)
                .await
                .during("read every row")?;
            for result in &results {
                let mut rows = Rows::new(kind.key().len(), kind.fields().len(), 1);
                sql::read_row(kind, result, first, &mut rows)?;
                let scope: String = if kind.scoped() {
                    result.try_get_by_index(0).during("read every row")?
                } else {
                    rows.key(0)[0].clone()
                };
                all.push(DeclaredRow {
                    kind: kind.name().to_owned(),
                    scope,
                    key: rows.key(0).to_vec(),
                    values: rows.values(0).to_vec(),
                    version: rows.version(0),
                });
            }
        }
        txn.commit().await.during("end a snapshot")?;
        Ok((all, watermark))
    }

    /// The first key (in key order) of `scope`'s rows of `kind` whose
    /// first key parts equal `prefix` and whose next part is at or after
    /// `from` (no bound when `None`), if any. For picking rows at random.
    pub(crate) async fn first_key(
        &self,
        kind: &KindPlan,
        scope: &str,
        prefix: &[String],
        from: Option<&str>,
    ) -> Result<Option<Vec<String>>> {
        let backend = self.backend();
        let mut values: Vec<Value> = vec![scope.to_owned().into()];
        let mut conditions = vec![format!("{} = {}", kind.scope_column, parameter(backend, 1))];
        for (column, part) in kind.key().iter().zip(prefix) {
            values.push(part.clone().into());
            conditions.push(format!("{column} = {}", parameter(backend, values.len())));
        }
        if let (Some(from), Some(column)) = (from, kind.key().get(prefix.len())) {
            values.push(from.to_owned().into());
            conditions.push(format!("{column} >= {}", parameter(backend, values.len())));
        }
        let key_list = &self.statements[kind.index].key_list;
        let statement = Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT {key_list} FROM {} WHERE {} ORDER BY {key_list} LIMIT 1",
                kind.quoted_table(),
                conditions.join(" AND ")
            ),
            values,
        );
        let action = "pick a row";
        let Some(found) = self
            .connection
            .query_one_raw(statement)
            .await
            .during(action)?
        else {
            return Ok(None);
        };
        let mut key = Vec::with_capacity(kind.key().len());
        for column in 0..kind.key().len() {
            key.push(found.try_get_by_index(column).during(action)?);
        }
        Ok(Some(key))
    }

    /// The scope row `scope` exists, or 404 (read in `connection`'s
    /// snapshot).
    pub(crate) async fn require_scope(
        &self,
        connection: &impl ConnectionTrait,
        scope: &str,
    ) -> Result<()> {
        let scope_kind = self.model().scope();
        let key = [scope.to_owned()];
        if self.exists(connection, scope_kind, scope, &key).await? {
            Ok(())
        } else {
            Err(self.not_found(scope_kind, scope, &key))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan of a statement, one line per step.
    async fn sqlite_plan(monolith: &Monolith, statement: Statement) -> String {
        let explain = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!("EXPLAIN QUERY PLAN {}", statement.sql),
            statement.values.map(|values| values.0).unwrap_or_default(),
        );
        let rows = monolith
            .connection
            .query_all_raw(explain)
            .await
            .expect("explain");
        rows.iter()
            .map(|row| row.try_get::<String>("", "detail").expect("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A page after a cursor seeks the primary key to the cursor instead of
    /// scanning the tenant's memberships from the first (each page of a
    /// 2M-membership tenant read up to 2M rows: a SQLite run over a 1M-user
    /// tenant took 45 times as long as one over 100k users).
    #[tokio::test]
    async fn sqlite_seeks_the_cursor_of_a_memberships_page() {
        let monolith = Monolith::connect("sqlite::memory:")
            .await
            .expect("monolith");
        let kind = monolith.model().kind("membership").expect("membership");
        let key = |group: &str, user: &str| vec![group.to_owned(), user.to_owned()];
        let after = key("g1", "u1");
        let statement = monolith.plain_page_statement(kind, "t1", Some(&after), &[], 1001);
        let plan = sqlite_plan(&monolith, statement).await;
        assert!(
            plan.contains("tenant_id=? AND (group_id,user_id)>(?,?)"),
            "{plan}"
        );
        let within = [KeySpan {
            after: Some(key("g2", "u2")),
            until: Some(key("g3", "u3")),
        }];
        let statement = monolith.plain_page_statement(kind, "t1", None, &within, 1001);
        let plan = sqlite_plan(&monolith, statement).await;
        assert!(plan.contains("(group_id,user_id)>(?,?)"), "{plan}");
    }
}
