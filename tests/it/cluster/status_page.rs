//! The status page (`GET /` of a replica) in headless Chromium (issue 11):
//! it shows a run in progress with its units, then the run done in the
//! history with its figures. Screenshots are kept under
//! `target/test-artifacts/`.

use super::checks::{ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, Settings, wait_until};
use anyhow::{Context, ensure};
use recon_tests::chromium::{dom, opening_tag, screenshot};
use recon_tests::faulty_source::Fault;
use std::path::PathBuf;
use std::time::Duration;

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artifacts")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_status_page_shows_a_run_moving_to_done() -> anyhow::Result<()> {
    let cluster = Cluster::start(Settings::new(131)).await?;
    let outcome = page_follows_the_run(&cluster).await;
    cluster.finish(outcome)
}

async fn page_follows_the_run(cluster: &Cluster) -> anyhow::Result<()> {
    // Slow units (300 ms per tenant request), so that the run is seen in
    // progress.
    for replica in &cluster.replicas {
        replica.proxy.set_fault(Fault::Delay {
            path_contains: "/tenants/".to_owned(),
            delay: Duration::from_millis(300),
        });
    }
    let page = format!("http://127.0.0.1:{}/", cluster.replicas[1].port);
    let before = dom(&page).await?;
    ensure!(
        before.contains("No run in progress"),
        "the page does not say no run is in progress:\n{before}"
    );
    cluster.drift().await?;
    let run = cluster.request_run().await?;

    // In progress: the run's id, phase `working`, units with owners.
    let mut last = String::new();
    let working = wait_until(
        "the page to show the run working",
        Duration::from_secs(60),
        || {
            let page = page.clone();
            let run = run.clone();
            async move {
                let shown = dom(&page).await?;
                let tag = opening_tag(&shown, "run").unwrap_or_default().to_owned();
                Ok(tag.contains(&format!("data-run=\"{run}\""))
                    && tag.contains("data-phase=\"working\"")
                    && shown.contains("units done"))
            }
        },
    )
    .await;
    if working.is_err() {
        last = dom(&page).await.unwrap_or_default();
    }
    working.with_context(|| format!("last page:\n{last}"))?;
    screenshot(&page, &artifact("status-page-run.png")).await?;

    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(120)).await?;
    ensure_completed(&barrier)?;
    // Done: no current run, and the run in the history as completed.
    let row = format!("data-run=\"{run}\" data-status=\"completed\"");
    wait_until(
        "the page to show the run done",
        Duration::from_secs(30),
        || {
            let page = page.clone();
            let row = row.clone();
            async move {
                let shown = dom(&page).await?;
                let idle =
                    opening_tag(&shown, "run").is_some_and(|tag| tag.contains("data-run=\"\""));
                Ok(idle && shown.contains(&row))
            }
        },
    )
    .await?;
    screenshot(&page, &artifact("status-page-done.png")).await?;
    Ok(())
}
