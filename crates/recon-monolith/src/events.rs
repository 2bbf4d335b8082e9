//! The change event of a row, as the outbox stores it.
//!
//! A monolith of the default schema writes today's typed events
//! (`recon_proto::encode_change`), so every consumer deployed before
//! schemas were declared keeps reading its outbox; a monolith of any other
//! schema writes the schema-generic `declared` variant
//! (`recon_proto::encode_declared`, see `docs/events.md`), which only a
//! consumer of the same schema reads.

use crate::error::{Error, Result};
use crate::model::{KindPlan, Model};
use crate::rows::RowRef;
use recon_core::schema::{DeclaredChange, DeclaredRow};

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Created or updated: the event carries the data.
    Upsert,
    /// Deleted: the event carries the key only.
    Delete,
}

/// The encoded event of `row` of `kind`.
pub(crate) fn payload(
    model: &Model,
    kind: &KindPlan,
    row: RowRef<'_>,
    operation: Operation,
) -> Result<Vec<u8>> {
    let declared = DeclaredRow {
        kind: kind.name().to_owned(),
        scope: row.scope.to_owned(),
        key: row.key.to_vec(),
        values: match operation {
            Operation::Upsert => row.values.to_vec(),
            Operation::Delete => Vec::new(),
        },
        version: row.version,
    };
    let change = match operation {
        Operation::Upsert => DeclaredChange::Upsert(declared),
        Operation::Delete => DeclaredChange::Delete(declared),
    };
    let refused = |error: recon_core::schema::InvalidRow| {
        Error::Corrupt(format!("cannot encode the change event: {error}"))
    };
    if model.is_default() {
        let typed = change
            .to_change(recon_core::schema::Schema::default_schema())
            .map_err(refused)?;
        return Ok(recon_proto::encode_change(&typed));
    }
    recon_proto::encode_declared(&change, model.schema()).map_err(refused)
}
