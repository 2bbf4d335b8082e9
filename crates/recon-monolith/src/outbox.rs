//! The transactional outbox: every committed change has one row here,
//! written in the change's own transaction, holding the protobuf
//! `ChangeEvent` (`recon-proto`). A relay reads unpublished rows in order,
//! publishes them (keyed by tenant) and marks them published.
//!
//! Row ids are assigned while the writer holds the meta-row lock, so id
//! order is commit order.

use crate::Monolith;
use crate::db::entities::outbox;
use crate::db::{stored_version, version_columns};
use crate::error::{DbResultExt, Result};
use recon_core::Version;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::instrument;

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the outbox; increasing in commit order.
    pub id: i64,
    /// The Kafka record key: the change's tenant.
    pub tenant_id: String,
    /// The change's version.
    pub version: Version,
    /// The encoded `recon.events.v1.ChangeEvent`.
    pub payload: Vec<u8>,
    /// When the row was marked published (Unix milliseconds), if it was.
    pub published_at_ms: Option<i64>,
}

/// An outbox row to append.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    /// The change's scope value (the Kafka record key).
    pub scope: String,
    /// The change's version.
    pub version: Version,
    /// The encoded change event ([`crate::events`]).
    pub payload: Vec<u8>,
}

/// Rows per multi-row `INSERT` into the outbox.
const APPEND_CHUNK: usize = 500;

/// Appends one unpublished outbox row per event, in order.
pub(crate) async fn append(connection: &impl ConnectionTrait, events: Vec<NewEvent>) -> Result<()> {
    let mut models = Vec::with_capacity(events.len().min(APPEND_CHUNK));
    let mut events = events.into_iter().peekable();
    while let Some(event) = events.next() {
        let (generation, sequence) = version_columns(event.version)?;
        models.push(outbox::ActiveModel {
            tenant_id: Set(event.scope),
            generation: Set(generation),
            sequence: Set(sequence),
            payload: Set(event.payload),
            published_at_ms: Set(None),
            ..Default::default()
        });
        if models.len() == APPEND_CHUNK || events.peek().is_none() {
            outbox::Entity::insert_many(std::mem::take(&mut models))
                .exec_without_returning(connection)
                .await
                .during("append to the outbox")?;
        }
    }
    Ok(())
}

impl Monolith {
    /// Up to `limit` unpublished outbox rows, oldest first.
    #[instrument(skip_all, name = "monolith.outbox_unpublished", fields(limit))]
    pub async fn outbox_unpublished(&self, limit: u64) -> Result<Vec<OutboxEntry>> {
        let models = outbox::Entity::find()
            .filter(outbox::Column::PublishedAtMs.is_null())
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.connection)
            .await
            .during("read unpublished outbox rows")?;
        entries(models)
    }

    /// Up to `limit` outbox rows (published or not) with ids above
    /// `after_id`, oldest first.
    pub async fn outbox_after(&self, after_id: i64, limit: u64) -> Result<Vec<OutboxEntry>> {
        let models = outbox::Entity::find()
            .filter(outbox::Column::Id.gt(after_id))
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.connection)
            .await
            .during("read outbox rows")?;
        entries(models)
    }

    /// Marks the given outbox rows published (now); rows already published
    /// keep their timestamp. Returns how many rows were marked.
    #[instrument(skip_all, name = "monolith.outbox_mark_published", fields(rows = ids.len()))]
    pub async fn outbox_mark_published(&self, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let result = outbox::Entity::update_many()
            .col_expr(outbox::Column::PublishedAtMs, Expr::val(now_ms()))
            .filter(outbox::Column::Id.is_in(ids.iter().copied()))
            .filter(outbox::Column::PublishedAtMs.is_null())
            .exec(&self.connection)
            .await
            .during("mark outbox rows published")?;
        Ok(result.rows_affected)
    }

    /// How many outbox rows are not published yet.
    pub async fn outbox_backlog(&self) -> Result<u64> {
        outbox::Entity::find()
            .filter(outbox::Column::PublishedAtMs.is_null())
            .count(&self.connection)
            .await
            .during("count unpublished outbox rows")
    }
}

fn entries(models: Vec<outbox::Model>) -> Result<Vec<OutboxEntry>> {
    let mut result = Vec::with_capacity(models.len());
    for model in models {
        result.push(OutboxEntry {
            id: model.id,
            version: stored_version(model.generation, model.sequence)?,
            tenant_id: model.tenant_id,
            payload: model.payload,
            published_at_ms: model.published_at_ms,
        });
    }
    Ok(result)
}

/// The current time in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}
