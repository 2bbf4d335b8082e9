//! Scheduled runs (issue 13): replicas with `--schedule` start runs on
//! their own, one per slot of the cron expression — though leadership moves
//! from replica to replica between runs (a leader resigns after each), no
//! slot is served twice.

use super::fixture::{Cluster, Settings};
use super::history::{Changes as _, Entry};
use anyhow::ensure;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_start_on_schedule_once_per_slot() -> anyhow::Result<()> {
    let mut settings = Settings::new(181);
    settings.schedule = Some("*/3 * * * * *".to_owned());
    let cluster = Cluster::start(settings).await?;
    let outcome = scheduled(&cluster).await;
    cluster.finish(outcome)
}

/// Every run started by the schedule, by run id, with its request's origin.
fn scheduled_runs(cluster: &Cluster) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(cluster
        .history
        .changes()?
        .iter()
        .filter_map(|change| match &change.entry {
            Entry::Run(run) => Some(run),
            _ => None,
        })
        .filter(|run| run.request.requested_by.starts_with("schedule"))
        .map(|run| (run.run_id.clone(), run.request.requested_by.clone()))
        .collect())
}

async fn scheduled(cluster: &Cluster) -> anyhow::Result<()> {
    let finished = |cluster: &Cluster| -> anyhow::Result<usize> {
        let changes = cluster.history.changes()?;
        Ok(scheduled_runs(cluster)?
            .keys()
            .filter(|run| changes.barrier(run).is_some())
            .count())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = finished(cluster)?;
        if done >= 3 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "only {done} scheduled runs finished in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let runs = scheduled_runs(cluster)?;
    let mut slots: BTreeMap<&str, &str> = BTreeMap::new();
    for (run, origin) in &runs {
        if let Some(earlier) = slots.insert(origin.as_str(), run.as_str()) {
            anyhow::bail!("{origin} was served by {earlier} and {run}");
        }
    }
    eprintln!("{} scheduled runs, one per slot", runs.len());
    Ok(())
}
