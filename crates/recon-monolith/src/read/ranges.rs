//! Pages within many key ranges: checking the ranges, their SQL
//! conditions, and PostgreSQL's one-statement read of many small ranges.

use crate::Monolith;
use crate::error::{Error, Result};
use crate::model::KindPlan;
use crate::rows::{KeySpan, Rows, cursor_of};
use crate::sql::{self, parameter};
use sea_orm::{DatabaseTransaction, DbBackend, Statement, Value};

/// Checks a multi-range request's ranges: at most
/// [`super::MAX_PAGE_RANGES`], each not empty, in key order and disjoint.
pub(super) fn validate_spans(within: &[KeySpan]) -> Result<()> {
    let most = super::MAX_PAGE_RANGES;
    if within.len() > most as usize {
        return Err(Error::BadRequest(format!(
            "`ranges` holds {} ranges, at most {most} allowed",
            within.len()
        )));
    }
    for (index, span) in within.iter().enumerate() {
        if let (Some(after), Some(until)) = (&span.after, &span.until)
            && until <= after
        {
            return Err(Error::BadRequest(format!(
                "range {index} is empty: `until` {} is not after `after` {}",
                cursor_of(until),
                cursor_of(after)
            )));
        }
        if let Some(next) = within.get(index + 1) {
            let ordered = match (&span.until, &next.after) {
                (Some(until), Some(after)) => until <= after,
                _ => false,
            };
            if !ordered {
                return Err(Error::BadRequest(format!(
                    "range {} does not start at or after the end of range {index}: ranges must be in key order and disjoint",
                    index + 1
                )));
            }
        }
    }
    Ok(())
}

/// `after < key <= until` over the kind's key columns (`1 = 1` for the
/// whole key space).
pub(super) fn span_condition(
    backend: DbBackend,
    kind: &KindPlan,
    span: &KeySpan,
    values: &mut Vec<Value>,
) -> String {
    let mut conditions = Vec::with_capacity(2);
    for (bound, operator) in [(&span.after, ">"), (&span.until, "<=")] {
        if let Some(key) = bound {
            conditions.push(sql::key_condition(
                backend,
                kind.key(),
                operator,
                key,
                values,
            ));
        }
    }
    if conditions.is_empty() {
        return "1 = 1".to_owned();
    }
    format!("({})", conditions.join(" AND "))
}

/// The lower and the upper bounds of `spans`, key part `part`, each list
/// joined by the unit separator (U+001F) — an open bound is empty. Ids hold
/// no control character, so the joined text splits back exactly: many
/// ranges travel as two text parameters per key column.
fn joined_bounds(spans: &[KeySpan], part: usize) -> [String; 2] {
    let join = |bound: fn(&KeySpan) -> &Option<Vec<String>>| -> String {
        spans
            .iter()
            .map(|span| {
                bound(span)
                    .as_ref()
                    .and_then(|key| key.get(part).cloned())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\u{1f}")
    };
    [join(|span| &span.after), join(|span| &span.until)]
}

/// Up to `fetch` rows of a scope value inside `within` (at least two
/// ranges, in key order, disjoint), on PostgreSQL: one index range scan
/// per range under a lateral join — an `OR` of the ranges made the planner
/// scan the whole tenant with the ranges as a filter (330 ms for a page of
/// 60 small ranges in a 67k-row tenant). Each bound column travels as one
/// text parameter ([`joined_bounds`]); an open lower bound is `''`
/// (before every id), an open last range is read on its own.
pub(super) async fn page_of_ranges(
    monolith: &Monolith,
    txn: &DatabaseTransaction,
    kind: &KindPlan,
    scope: &str,
    within: &[KeySpan],
    fetch: u64,
) -> Result<Rows> {
    let statements = &monolith.statements[kind.index];
    let keys = &statements.key_list;
    let (bounded, open) = match within.split_last() {
        Some((last, rest)) if last.until.is_none() => (rest, Some(last)),
        _ => (within, None),
    };
    let limit = i64::try_from(fetch).unwrap_or(i64::MAX);
    let mut values: Vec<Value> = vec![scope.to_owned().into(), limit.into()];
    let mut parts = Vec::with_capacity(2);
    match bounded {
        [] => {}
        // `string_to_array('')` is empty, not one empty element: a single
        // bounded range is read on its own.
        [span] => parts.push(single_range(kind, keys, span, 1, &mut values)),
        _ => {
            let mut arrays = Vec::new();
            let mut names = Vec::new();
            let mut lower = Vec::new();
            let mut upper = Vec::new();
            for (index, column) in kind.key().iter().enumerate() {
                for joined in joined_bounds(bounded, index) {
                    values.push(joined.into());
                    arrays.push(format!("string_to_array(${}, chr(31))", values.len()));
                }
                names.push(format!("lo_{column}, hi_{column}"));
                lower.push(format!("b.lo_{column} COLLATE \"C\""));
                upper.push(format!("b.hi_{column} COLLATE \"C\""));
            }
            parts.push(format!(
                "SELECT b.i, r.* FROM unnest({}) WITH ORDINALITY AS b({}, i) CROSS JOIN LATERAL \
                 (SELECT * FROM {} WHERE {} = $1 AND ({keys}) > ({}) AND ({keys}) <= ({}) \
                 ORDER BY {keys} LIMIT $2) r",
                arrays.join(", "),
                names.join(", "),
                kind.quoted_table(),
                kind.scope_column,
                lower.join(", "),
                upper.join(", ")
            ));
        }
    }
    if let Some(span) = open {
        parts.push(single_range(
            kind,
            keys,
            span,
            bounded.len() + 1,
            &mut values,
        ));
    }
    let sql = format!(
        "SELECT {} FROM ({}) ranged ORDER BY i, {keys} LIMIT $2",
        statements.select_list,
        parts.join(" UNION ALL ")
    );
    let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
    monolith
        .read_rows(txn, kind, statement, 0, "read a page within ranges")
        .await
}

/// One range of [`page_of_ranges`] read on its own, as its `ordinal`-th.
fn single_range(
    kind: &KindPlan,
    keys: &str,
    span: &KeySpan,
    ordinal: usize,
    values: &mut Vec<Value>,
) -> String {
    let condition = span_condition(DbBackend::Postgres, kind, span, values);
    format!(
        "SELECT * FROM (SELECT {ordinal} AS i, r.* FROM {} r WHERE {} = {} AND {condition} \
         ORDER BY {keys} LIMIT $2) part{ordinal}",
        kind.quoted_table(),
        kind.scope_column,
        parameter(DbBackend::Postgres, 1)
    )
}
