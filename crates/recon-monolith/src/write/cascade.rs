//! What a deletion takes with it, and deleting it.
//!
//! Deleting a scope row takes every row inside the scope value. Deleting
//! any other row takes the rows that reference it (through the key fields
//! the reference resolves to), and theirs in turn. The doomed rows are
//! listed per kind in deletion order (children before parents), each kind
//! in key order — for the default schema: memberships, users, groups, then
//! the tenant, as before schemas were declared. Rows are deleted with one
//! statement per kind and scope, or per reference and parent row.

use crate::Monolith;
use crate::error::{DbResultExt, Result};
use crate::model::KindPlan;
use crate::rows::Rows;
use crate::sql::{self, parameter};
use sea_orm::{ConnectionTrait, DatabaseTransaction, Statement, Value};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

/// The rows a deletion takes with it (the addressed row not included).
pub(super) struct Cascade {
    /// `(kind index, key)` in deletion order.
    pub doomed: Vec<(usize, Vec<String>)>,
    /// `(child kind, reference, parent key)`: one `DELETE` each, run in
    /// reverse (grandchildren first).
    deletes: Vec<(usize, usize, Vec<String>)>,
}

/// Lists what deleting `key` of `kind` in `scope` takes with it.
pub(super) async fn collect(
    monolith: &Monolith,
    txn: &DatabaseTransaction,
    kind: &KindPlan,
    scope: &str,
    key: &[String],
) -> Result<Cascade> {
    let model = monolith.model();
    let mut per_kind: Vec<BTreeSet<Vec<String>>> = vec![BTreeSet::new(); model.kinds().len()];
    let mut deletes = Vec::new();
    if kind.scoped() {
        visit(
            monolith,
            txn,
            kind,
            scope,
            key.to_vec(),
            &mut per_kind,
            &mut deletes,
        )
        .await?;
    } else {
        for child in model.scoped_kinds() {
            let rows = select_keys(monolith, txn, child, scope, None).await?;
            per_kind[child.index].extend((0..rows.len()).map(|index| rows.key(index).to_vec()));
        }
    }
    let mut doomed = Vec::new();
    for index in model.deletion_order() {
        let keys = std::mem::take(&mut per_kind[*index]);
        doomed.extend(keys.into_iter().map(|key| (*index, key)));
    }
    Ok(Cascade { doomed, deletes })
}

/// Lists the rows referencing `key` of `kind`, and theirs, recursively.
fn visit<'a>(
    monolith: &'a Monolith,
    txn: &'a DatabaseTransaction,
    kind: &'a KindPlan,
    scope: &'a str,
    key: Vec<String>,
    per_kind: &'a mut Vec<BTreeSet<Vec<String>>>,
    deletes: &'a mut Vec<(usize, usize, Vec<String>)>,
) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        for (child_index, reference) in &kind.referenced_by {
            let child = monolith.model().kind_at(*child_index);
            let rows = select_keys(
                monolith,
                txn,
                child,
                scope,
                Some((*reference, key.as_slice())),
            )
            .await?;
            if !rows.is_empty() {
                deletes.push((*child_index, *reference, key.clone()));
            }
            for index in 0..rows.len() {
                let child_key = rows.key(index).to_vec();
                if per_kind[*child_index].insert(child_key.clone()) {
                    visit(monolith, txn, child, scope, child_key, per_kind, deletes).await?;
                }
            }
        }
        Ok(())
    })
}

/// The key columns of a reference (`child`'s key fields holding the
/// parent's key, in the parent's key order).
fn reference_columns(child: &KindPlan, reference: usize) -> Vec<String> {
    child.references[reference]
        .key_positions
        .iter()
        .map(|position| child.key()[*position].clone())
        .collect()
}

/// `scope = $1` and, for a reference, its columns equal to the parent key.
fn condition(
    monolith: &Monolith,
    child: &KindPlan,
    through: Option<(usize, &[String])>,
    parameters: &mut Vec<Value>,
) -> String {
    let backend = monolith.backend();
    let mut condition = format!("{} = {}", child.scope_column, parameter(backend, 1));
    if let Some((reference, parent_key)) = through {
        let columns = reference_columns(child, reference);
        let equal = sql::key_condition(backend, &columns, "=", parent_key, parameters);
        condition = format!("{condition} AND {equal}");
    }
    condition
}

async fn select_keys(
    monolith: &Monolith,
    txn: &DatabaseTransaction,
    child: &KindPlan,
    scope: &str,
    through: Option<(usize, &[String])>,
) -> Result<Rows> {
    let mut parameters: Vec<Value> = vec![scope.to_owned().into()];
    let condition = condition(monolith, child, through, &mut parameters);
    let key_list = &monolith.statements[child.index].key_list;
    let statement = Statement::from_sql_and_values(
        monolith.backend(),
        format!(
            "SELECT {key_list} FROM {} WHERE {condition} ORDER BY {key_list}",
            child.quoted_table()
        ),
        parameters,
    );
    let results = txn
        .query_all_raw(statement)
        .await
        .during("list the entities a deletion cascades to")?;
    let mut rows = Rows::new(child.key().len(), 0, results.len());
    for result in &results {
        for column in 0..child.key().len() {
            rows.push_key_part(
                result
                    .try_get_by_index(column)
                    .during("read a cascaded key")?,
            );
        }
        rows.finish_row(recon_core::Version::ZERO);
    }
    Ok(rows)
}

/// Deletes the addressed row and everything `cascade` listed, children
/// first.
pub(super) async fn delete(
    monolith: &Monolith,
    txn: &DatabaseTransaction,
    cascade: &Cascade,
    kind: &KindPlan,
    scope: &str,
    key: &[String],
) -> Result<()> {
    let model = monolith.model();
    if kind.scoped() {
        for (child_index, reference, parent_key) in cascade.deletes.iter().rev() {
            let child = model.kind_at(*child_index);
            delete_where(monolith, txn, child, scope, Some((*reference, parent_key))).await?;
        }
    } else {
        for index in model.deletion_order() {
            let child = model.kind_at(*index);
            if child.scoped() {
                delete_where(monolith, txn, child, scope, None).await?;
            }
        }
    }
    let mut parameters: Vec<Value> = Vec::with_capacity(key.len() + 1);
    if kind.scoped() {
        parameters.push(scope.to_owned().into());
    }
    parameters.extend(key.iter().map(|part| Value::from(part.clone())));
    let statement = Statement::from_sql_and_values(
        monolith.backend(),
        monolith.statements[kind.index].delete.clone(),
        parameters,
    );
    txn.execute_raw(statement).await.during("delete a row")?;
    Ok(())
}

async fn delete_where(
    monolith: &Monolith,
    txn: &DatabaseTransaction,
    child: &KindPlan,
    scope: &str,
    through: Option<(usize, &[String])>,
) -> Result<()> {
    let mut parameters: Vec<Value> = vec![scope.to_owned().into()];
    let condition = condition(monolith, child, through, &mut parameters);
    let statement = Statement::from_sql_and_values(
        monolith.backend(),
        format!("DELETE FROM {} WHERE {condition}", child.quoted_table()),
        parameters,
    );
    txn.execute_raw(statement)
        .await
        .during("delete the rows a deletion cascades to")?;
    Ok(())
}
