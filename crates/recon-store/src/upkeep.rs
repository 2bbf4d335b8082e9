//! What the store keeps besides the replicated rows: dead letters, and the
//! periodic tombstone purge.
//!
//! * [`Store::record_dead_letters`] writes records the consumer refused for
//!   their content; keyed by (topic, partition, offset), so recording a
//!   replayed letter again keeps the first.
//! * [`Store::purge_tombstones_if_due`] purges tombstones older than the
//!   retention window at most once per interval *across all replicas
//!   sharing the store*: a replica first claims the run with one
//!   conditional `UPDATE` of `store_upkeep` (atomic on both backends), and
//!   only the one whose update matched purges. This keeps the purge
//!   leader-free: single instances, clusters and operator tools can share a
//!   store in any mix.

use crate::{Result, Store, error::database, sql::Binder};
use recon_core::ports::DeadLetter;
use sea_orm::{ConnectionTrait, TransactionTrait};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, instrument, warn};

/// The `store_upkeep` task name of the tombstone purge.
const PURGE_TASK: &str = "purge_tombstones";

/// How the tombstone purge runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TombstonePurge {
    /// Tombstones younger than this are kept. Must exceed the longest Kafka
    /// retention: a tombstone purged while an older event for its key can
    /// still be replayed lets that event resurrect the row.
    pub retention: Duration,
    /// Least time between two purges (by any replica of the store).
    pub interval: Duration,
}

impl Store {
    /// Records dead letters in one transaction; a letter already recorded
    /// (same topic, partition, offset) is left as it is.
    #[instrument(name = "store.record_dead_letters", skip_all, fields(letters = letters.len()))]
    pub async fn record_dead_letters(&self, letters: &[DeadLetter]) -> Result<()> {
        let transaction = self.connection.begin().await.map_err(database("begin"))?;
        let dead_at_ms = now_ms();
        for letter in letters {
            let mut binder = Binder::new(self.backend());
            let values = [
                binder.bind(letter.topic.clone()),
                binder.bind(i64::from(letter.partition)),
                binder.bind(letter.offset),
                binder.bind(letter.key.clone()),
                binder.bind(letter.payload.clone()),
                // PostgreSQL text cannot hold NUL; the error may quote data.
                binder.bind(letter.error.replace('\0', "\\0")),
                binder.bind(dead_at_ms),
            ];
            let sql = format!(
                "INSERT INTO dead_letters \
                 (topic, kafka_partition, kafka_offset, record_key, payload, error, dead_at_ms) \
                 VALUES ({}) ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING",
                values.join(", ")
            );
            transaction
                .execute_raw(binder.statement(sql))
                .await
                .map_err(database("record dead letter"))?;
        }
        transaction
            .commit()
            .await
            .map_err(database("commit dead letters"))?;
        Ok(())
    }

    /// Purges tombstones older than `purge.retention` if no replica of
    /// this store did within `purge.interval`; returns how many were purged,
    /// or `None` when it was not this replica's turn.
    pub async fn purge_tombstones_if_due(&self, purge: TombstonePurge) -> Result<Option<u64>> {
        if !self.claim_upkeep(PURGE_TASK, purge.interval).await? {
            return Ok(None);
        }
        Ok(Some(self.purge_tombstones(purge.retention).await?))
    }

    /// Runs the tombstone purge every `purge.interval` until `shutdown`
    /// completes. Failures are logged and retried at the next tick.
    pub async fn run_tombstone_purge(
        &self,
        purge: TombstonePurge,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let mut ticks = tokio::time::interval(purge.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            match self.purge_tombstones_if_due(purge).await {
                Ok(Some(purged)) => {
                    info!(
                        purged,
                        retention_secs = purge.retention.as_secs(),
                        "tombstones purged"
                    );
                }
                Ok(None) => {}
                Err(error) => {
                    let error = recon_core::ports::error_chain(&error);
                    warn!(error = %error, "tombstone purge failed, retrying at the next interval");
                }
            }
        }
    }

    /// Claims one run of `task`: succeeds for exactly one caller per
    /// `interval`, whichever replica it is.
    async fn claim_upkeep(&self, task: &str, interval: Duration) -> Result<bool> {
        let now = now_ms();
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let mut binder = Binder::new(self.backend());
        let sql = format!(
            "UPDATE store_upkeep SET last_run_ms = {} WHERE task = {} AND last_run_ms <= {}",
            binder.bind(now),
            binder.bind(task.to_owned()),
            binder.bind(now.saturating_sub(interval_ms)),
        );
        let result = self
            .connection
            .execute_raw(binder.statement(sql))
            .await
            .map_err(database("claim upkeep"))?;
        Ok(result.rows_affected() == 1)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
