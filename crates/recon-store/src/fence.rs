//! Fencing by epoch, and the generation floor.
//!
//! An etcd lease can expire while its holder is paused and the holder may
//! still write afterwards. So every reconciliation write carries the epoch of
//! its plan ([`FenceToken`]); inside the write's own transaction the fence row
//! of its scope is raised to that epoch and compared with both its scope's
//! and the global (`*`) fence. A write from an older epoch fails with
//! [`Error::StaleEpoch`] and nothing of its batch lands. A new leader raises
//! the global fence when it takes over, which fences a zombie leader off
//! every scope at once.

use crate::apply::Floors;
use crate::sql::{self, Binder};
use crate::{Error, Result, Store, error::database};
use recon_core::Change;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, TransactionTrait};
use std::collections::BTreeSet;
use tracing::{instrument, warn};

pub use recon_core::{FenceToken, GLOBAL_SCOPE};

/// Raises the token's scope fence to its epoch (never lowers it) and fails
/// if that scope or the global scope is fenced at a newer epoch.
pub(crate) async fn check_and_raise(
    transaction: &DatabaseTransaction,
    token: &FenceToken,
) -> Result<()> {
    let backend = transaction.get_database_backend();
    let epoch = sql::to_db(token.epoch, "epoch")?;
    let mut binder = Binder::new(backend);
    let upsert = format!(
        "INSERT INTO fences (scope, epoch) VALUES ({}, {}) ON CONFLICT (scope) DO UPDATE \
         SET epoch = excluded.epoch WHERE fences.epoch < excluded.epoch",
        binder.bind(token.scope.clone()),
        binder.bind(epoch)
    );
    transaction
        .execute_raw(binder.statement(upsert))
        .await
        .map_err(database("raise fence"))?;
    let mut binder = Binder::new(backend);
    let lock = if backend == DbBackend::Postgres {
        " FOR SHARE"
    } else {
        ""
    };
    let select = format!(
        "SELECT scope, epoch FROM fences WHERE scope IN ({}, {}){lock}",
        binder.bind(token.scope.clone()),
        binder.bind(GLOBAL_SCOPE)
    );
    let rows = transaction
        .query_all_raw(binder.statement(select))
        .await
        .map_err(database("read fence"))?;
    for row in rows {
        let fenced_at: i64 = row.try_get("", "epoch").map_err(database("read fence"))?;
        let fenced_at = sql::from_db(fenced_at, "epoch")?;
        if fenced_at > token.epoch {
            warn!(scope = %token.scope, epoch = token.epoch, fence = fenced_at, "write rejected by fence");
            return Err(Error::StaleEpoch {
                scope: token.scope.clone(),
                epoch: token.epoch,
                fence: fenced_at,
            });
        }
    }
    Ok(())
}

/// Reads the floors that apply to the tenants of a batch.
pub(crate) async fn floors_for(
    transaction: &DatabaseTransaction,
    changes: &[Change],
) -> Result<Floors> {
    let scopes: BTreeSet<&str> = changes
        .iter()
        .map(Change::tenant_id)
        .chain(std::iter::once(GLOBAL_SCOPE))
        .collect();
    let mut binder = Binder::new(transaction.get_database_backend());
    let placeholders: Vec<String> = scopes
        .iter()
        .map(|scope| binder.bind(scope.to_string()))
        .collect();
    let select = format!(
        "SELECT scope, generation FROM generation_floors WHERE scope IN ({})",
        placeholders.join(", ")
    );
    let rows = transaction
        .query_all_raw(binder.statement(select))
        .await
        .map_err(database("read generation floors"))?;
    let mut floors = Floors::default();
    for row in rows {
        let scope: String = row
            .try_get("", "scope")
            .map_err(database("read generation floors"))?;
        let generation: i64 = row
            .try_get("", "generation")
            .map_err(database("read generation floors"))?;
        let generation = sql::from_db(generation, "generation")?;
        if scope == GLOBAL_SCOPE {
            floors.global = generation;
        } else {
            floors.per_tenant.insert(scope, generation);
        }
    }
    Ok(floors)
}

impl Store {
    /// Raises the generation floor of `scope` (a tenant id or
    /// [`GLOBAL_SCOPE`]) to `generation` — never lowers it — under `fence`.
    /// Called when a reconciliation completed: events of an older generation
    /// are then skipped.
    #[instrument(name = "store.raise_floor", skip_all, fields(scope = %scope, generation))]
    pub async fn raise_generation_floor(
        &self,
        fence: &FenceToken,
        scope: &str,
        generation: u64,
    ) -> Result<()> {
        let transaction = self.connection.begin().await.map_err(database("begin"))?;
        check_and_raise(&transaction, fence).await?;
        let mut binder = Binder::new(transaction.get_database_backend());
        let upsert = format!(
            "INSERT INTO generation_floors (scope, generation) VALUES ({}, {}) ON CONFLICT (scope) DO UPDATE \
             SET generation = excluded.generation WHERE generation_floors.generation < excluded.generation",
            binder.bind(scope.to_owned()),
            binder.bind(sql::to_db(generation, "generation")?)
        );
        transaction
            .execute_raw(binder.statement(upsert))
            .await
            .map_err(database("raise generation floor"))?;
        transaction.commit().await.map_err(database("commit floor"))
    }

    /// The generation floor that applies to events of `tenant_id`.
    pub async fn generation_floor(&self, tenant_id: &str) -> Result<u64> {
        let transaction = self.connection.begin().await.map_err(database("begin"))?;
        let probe = Change::Delete(recon_core::Deletion {
            tenant_id: tenant_id.to_owned(),
            kind: recon_core::Kind::Tenant,
            key: recon_core::EntityKey::id(tenant_id),
            version: recon_core::Version::ZERO,
        });
        let floors = floors_for(&transaction, std::slice::from_ref(&probe)).await?;
        transaction.commit().await.map_err(database("commit"))?;
        Ok(floors.floor_for(tenant_id))
    }

    /// Raises the fence of `token.scope` to `token.epoch` without writing
    /// data — a new leader does this for [`GLOBAL_SCOPE`] when it takes over.
    /// Fails with [`Error::StaleEpoch`] if a newer epoch already holds it.
    pub async fn raise_fence(&self, token: &FenceToken) -> Result<()> {
        let transaction = self.connection.begin().await.map_err(database("begin"))?;
        check_and_raise(&transaction, token).await?;
        transaction.commit().await.map_err(database("commit fence"))
    }
}
