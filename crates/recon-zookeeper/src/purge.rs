//! Finished runs leave nothing but their history entry.
//!
//! ZooKeeper has no range delete and refuses to delete a node with
//! children, so a finished run's subtree is listed and deleted leaves
//! first, in transactions of at most [`DELETE_BATCH`] deletions, each
//! starting with a check that the run's history entry exists (nothing is
//! deleted before the barrier is in the history). A node created meanwhile
//! (a late ack) fails its batch; the subtree is listed again. The history
//! is then trimmed to [`HISTORY_KEPT`] entries, oldest first, in batches
//! too.

use crate::member::ZooKeeperCoordinator;
use crate::zk::{Op, Transacted};
use recon_core::ports::{FailureKind, PortError};
use recon_engine::cluster::HISTORY_KEPT;
use tracing::debug;

/// Deletions per transaction: far below ZooKeeper's request size limit.
const DELETE_BATCH: usize = 64;

/// How often a purge lists again after a batch failed.
const PURGE_ATTEMPTS: usize = 5;

impl ZooKeeperCoordinator {
    /// Deletes the run's nodes if its barrier is in the history.
    pub(crate) async fn purge_finished_run(&self, run_id: &str) -> Result<(), PortError> {
        let history = self.nodes().history_entry(run_id);
        let run = self.nodes().run(run_id);
        for _attempt in 0..PURGE_ATTEMPTS {
            if self.session().stat(&history).await?.is_none() {
                return Ok(());
            }
            let doomed = self.subtree_leaves_first(&run).await?;
            if doomed.is_empty() {
                return Ok(());
            }
            if self
                .delete_in_batches("purge run", &doomed, Some(&history))
                .await?
            {
                return Ok(());
            }
            debug!(run = %run_id, "the run's nodes changed during the purge, listing again");
        }
        Err(PortError::new(
            FailureKind::Transient,
            format!("the nodes of run {run_id} kept changing while they were purged"),
        ))
    }

    /// Deletes the oldest history entries beyond [`HISTORY_KEPT`].
    pub(crate) async fn trim_history(&self) -> Result<(), PortError> {
        let parent = self.nodes().history();
        for _attempt in 0..PURGE_ATTEMPTS {
            let mut names = self.session().children(&parent).await?;
            let excess = names.len().saturating_sub(HISTORY_KEPT);
            if excess == 0 {
                return Ok(());
            }
            // Run ids order by start time, and escaping keeps their order.
            names.sort();
            let doomed: Vec<String> = names[..excess]
                .iter()
                .map(|name| format!("{parent}/{name}"))
                .collect();
            if self
                .delete_in_batches("trim history", &doomed, None)
                .await?
            {
                return Ok(());
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            "the run history kept changing while it was trimmed",
        ))
    }

    /// `root` and every node under it, children before their parents; empty
    /// if `root` does not exist.
    async fn subtree_leaves_first(&self, root: &str) -> Result<Vec<String>, PortError> {
        if self.session().stat(root).await?.is_none() {
            return Ok(Vec::new());
        }
        let mut order = Vec::new();
        let mut pending = vec![root.to_owned()];
        while let Some(path) = pending.pop() {
            for name in self.session().children(&path).await? {
                pending.push(format!("{path}/{name}"));
            }
            order.push(path);
        }
        // Every parent was listed before its children: reversed, children
        // come first.
        order.reverse();
        Ok(order)
    }

    /// Deletes `paths` in order, in transactions that first check `guard`
    /// exists (if given); `false` if a batch failed (a node changed).
    async fn delete_in_batches(
        &self,
        operation: &'static str,
        paths: &[String],
        guard: Option<&str>,
    ) -> Result<bool, PortError> {
        for batch in paths.chunks(DELETE_BATCH) {
            let mut ops = Vec::with_capacity(batch.len() + 1);
            if let Some(guard) = guard {
                ops.push(Op::Check {
                    path: guard.to_owned(),
                    version: -1,
                });
            }
            ops.extend(batch.iter().map(|path| Op::Delete {
                path: path.clone(),
                version: -1,
            }));
            if let Transacted::Failed { index, error } =
                self.session().transact(operation, ops).await?
            {
                debug!(operation, index, error = %error, "a deletion batch failed");
                return Ok(false);
            }
        }
        Ok(true)
    }
}
