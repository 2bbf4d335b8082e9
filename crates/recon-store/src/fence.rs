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
//!
//! Epochs come from the store itself ([`Store::acquire_epoch`]: `fence + 1`,
//! handed out in the transaction that raises the global fence to it), so
//! single-instance runs, `recon reconcile`, an etcd cluster and a rebuilt
//! etcd can follow each other on one database in any order. A leader elected
//! through a coordinator presents its [`ElectionClaim`]; the latest claim is
//! kept in `epoch_claims`, and an older one is refused.

use crate::sql::{self, Binder};
use crate::{Error, Result, Store, error::database};
use recon_core::Change;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, TransactionTrait};
use std::collections::{BTreeSet, HashMap};
use tracing::{info, instrument, warn};

pub use recon_core::{ElectionClaim, FenceToken, GLOBAL_SCOPE};

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
            kind: recon_core::Kind::of(self.data_model().scope()),
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

impl Store {
    /// Hands out the next epoch: `fence + 1` over every scope, with the
    /// global fence raised to it in the same transaction — every older epoch
    /// is fenced off when this returns, and a write of an older epoch still in
    /// flight has committed before it (it holds the global fence row shared).
    ///
    /// With a `claim`, fails with [`Error::StaleElection`] if a later election
    /// already acquired an epoch, and records the claim otherwise. Without
    /// one (a single instance, `recon reconcile`) the recorded claim stays.
    #[instrument(name = "store.acquire_epoch", skip_all, fields(claim = ?claim))]
    pub async fn acquire_epoch(&self, claim: Option<ElectionClaim>) -> Result<u64> {
        let transaction = self.connection.begin().await.map_err(database("begin"))?;
        let backend = transaction.get_database_backend();
        // Writing first takes SQLite's write lock at once; on PostgreSQL the
        // row lock below serializes acquisitions and waits for fenced writes.
        let mut binder = Binder::new(backend);
        let ensure = format!(
            "INSERT INTO fences (scope, epoch) VALUES ({}, 0) ON CONFLICT (scope) DO NOTHING",
            binder.bind(GLOBAL_SCOPE)
        );
        transaction
            .execute_raw(binder.statement(ensure))
            .await
            .map_err(database("acquire epoch"))?;
        let mut binder = Binder::new(backend);
        let lock = if backend == DbBackend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let select = format!(
            "SELECT epoch FROM fences WHERE scope = {}{lock}",
            binder.bind(GLOBAL_SCOPE)
        );
        transaction
            .query_all_raw(binder.statement(select))
            .await
            .map_err(database("acquire epoch"))?;
        let highest =
            Binder::new(backend).statement("SELECT MAX(epoch) AS epoch FROM fences".to_owned());
        let row = transaction
            .query_one_raw(highest)
            .await
            .map_err(database("acquire epoch"))?;
        let fence: Option<i64> = match row {
            Some(row) => row
                .try_get("", "epoch")
                .map_err(database("acquire epoch"))?,
            None => None,
        };
        let fence = sql::from_db(fence.unwrap_or(0), "epoch")?;
        if let Some(claim) = claim {
            record_claim(&transaction, claim).await?;
        }
        let epoch = fence.saturating_add(1);
        let mut binder = Binder::new(backend);
        let raise = format!(
            "UPDATE fences SET epoch = {} WHERE scope = {}",
            binder.bind(sql::to_db(epoch, "epoch")?),
            binder.bind(GLOBAL_SCOPE)
        );
        transaction
            .execute_raw(binder.statement(raise))
            .await
            .map_err(database("acquire epoch"))?;
        transaction
            .commit()
            .await
            .map_err(database("commit epoch"))?;
        info!(epoch, "epoch acquired; older epochs are fenced off");
        Ok(epoch)
    }
}

impl Store {
    /// Hands out a coordinator incarnation above every one handed out
    /// before — and above every epoch and recorded claim, since
    /// incarnations were once taken from the epochs — without raising any
    /// fence: asking for one disturbs no run in progress.
    #[instrument(name = "store.next_incarnation", skip_all)]
    pub async fn next_incarnation(&self) -> Result<u64> {
        let transaction = self.connection.begin().await.map_err(database("begin"))?;
        let backend = transaction.get_database_backend();
        // Writing first takes SQLite's write lock at once; on PostgreSQL the
        // row lock serializes concurrent callers.
        let ensure = Binder::new(backend).statement(
            "INSERT INTO incarnations (singleton, last) VALUES (1, 0) \
             ON CONFLICT (singleton) DO NOTHING"
                .to_owned(),
        );
        transaction
            .execute_raw(ensure)
            .await
            .map_err(database("next incarnation"))?;
        let lock = if backend == DbBackend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let highest = Binder::new(backend).statement(format!(
            "SELECT (SELECT last FROM incarnations WHERE singleton = 1{lock}) AS last, \
             (SELECT MAX(epoch) FROM fences) AS epoch, \
             (SELECT MAX(incarnation) FROM epoch_claims) AS claimed"
        ));
        let row = transaction
            .query_one_raw(highest)
            .await
            .map_err(database("next incarnation"))?;
        let mut above = 0;
        if let Some(row) = row {
            for column in ["last", "epoch", "claimed"] {
                let value: Option<i64> = row
                    .try_get("", column)
                    .map_err(database("next incarnation"))?;
                above = above.max(sql::from_db(value.unwrap_or(0), column)?);
            }
        }
        let next = above.saturating_add(1);
        let mut binder = Binder::new(backend);
        let update = format!(
            "UPDATE incarnations SET last = {} WHERE singleton = 1",
            binder.bind(sql::to_db(next, "incarnation")?)
        );
        transaction
            .execute_raw(binder.statement(update))
            .await
            .map_err(database("next incarnation"))?;
        transaction
            .commit()
            .await
            .map_err(database("commit incarnation"))?;
        Ok(next)
    }
}

/// Records `claim` as the latest election, or fails if a later one holds.
async fn record_claim(transaction: &DatabaseTransaction, claim: ElectionClaim) -> Result<()> {
    let backend = transaction.get_database_backend();
    let select = Binder::new(backend)
        .statement("SELECT incarnation, election FROM epoch_claims WHERE singleton = 1".to_owned());
    let held = transaction
        .query_one_raw(select)
        .await
        .map_err(database("read epoch claim"))?;
    if let Some(row) = held {
        let incarnation: i64 = row
            .try_get("", "incarnation")
            .map_err(database("read epoch claim"))?;
        let election: i64 = row
            .try_get("", "election")
            .map_err(database("read epoch claim"))?;
        let held = ElectionClaim {
            incarnation: sql::from_db(incarnation, "incarnation")?,
            election: sql::from_db(election, "election")?,
        };
        if held > claim {
            warn!(?claim, ?held, "epoch refused to an older election");
            return Err(Error::StaleElection {
                claimed: claim,
                held,
            });
        }
    }
    let mut binder = Binder::new(backend);
    let upsert = format!(
        "INSERT INTO epoch_claims (singleton, incarnation, election) VALUES (1, {}, {}) \
         ON CONFLICT (singleton) DO UPDATE SET incarnation = excluded.incarnation, \
         election = excluded.election",
        binder.bind(sql::to_db(claim.incarnation, "incarnation")?),
        binder.bind(sql::to_db(claim.election, "election")?)
    );
    transaction
        .execute_raw(binder.statement(upsert))
        .await
        .map_err(database("record epoch claim"))?;
    Ok(())
}

/// Per-tenant floors read for one batch; see [`floors_for`].
#[derive(Debug, Default)]
pub(crate) struct Floors {
    /// Floor of the whole store (`*` scope).
    pub global: u64,
    /// Floors of individual tenants.
    pub per_tenant: HashMap<String, u64>,
}

impl Floors {
    /// The generation below which events of `tenant_id` are skipped.
    pub fn floor_for(&self, tenant_id: &str) -> u64 {
        let tenant_floor = self.per_tenant.get(tenant_id).copied().unwrap_or(0);
        tenant_floor.max(self.global)
    }
}
