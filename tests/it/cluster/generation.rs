//! A restore upstream triggers a run (issue 13): replicas watching the
//! source's generation (`--watch-generation`) see it grow when the monolith
//! is restored from a backup, request one run for it by themselves, and the
//! run brings the replica back to the restored monolith.

use super::checks::{Writer, ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, Settings};
use super::history::Changes as _;
use anyhow::{Context, ensure};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_of_the_monolith_triggers_a_run_that_repairs_the_replica() -> anyhow::Result<()> {
    let mut settings = Settings::new(191);
    settings.watch_generation = Some("1s".to_owned());
    let cluster = Cluster::start(settings).await?;
    let outcome = restore_triggers(&cluster).await;
    cluster.finish(outcome)
}

async fn restore_triggers(cluster: &Cluster) -> anyhow::Result<()> {
    // The leader records the generation it first sees.
    cluster
        .history
        .wait_for(
            "the generation recorded",
            Duration::from_secs(30),
            |changes| {
                changes
                    .iter()
                    .any(|change| change.key == "triggers/generation" && !change.deleted)
                    .then_some(())
            },
        )
        .await?;
    let backup = cluster.monolith.backup().await?;
    // Changes after the backup reach the replica, then the restore undoes
    // them in the monolith only.
    let writer = Writer::start(cluster.monolith.clone(), 7);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = writer.stop().await?;
    ensure!(written > 0, "the writer changed nothing");
    cluster.wait_until_equal("the writes replicated").await?;
    let seen = cluster.history.len();
    let restored = cluster.monolith.restore(backup).await?;

    let run = cluster.history.wait_for_new_run(seen).await?;
    let (_, state) = cluster
        .history
        .changes()?
        .run_states(&run)
        .into_iter()
        .next()
        .context("the run's state")?;
    ensure!(
        state
            .request
            .requested_by
            .contains(&format!("→ {}", restored.generation)),
        "the run was not requested for the new generation: {}",
        state.request.requested_by
    );
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;
    cluster.wait_until_equal("after the triggered run").await
}
