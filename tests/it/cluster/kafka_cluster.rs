//! A three-broker KRaft cluster (replication factor 3, `min.insync.replicas`
//! 2; the relay produces with `acks=all` and idempotence, recon's
//! defaults): one broker is SIGKILLed while events flow, and again while a
//! run is in progress, and restarted later. No event may be lost, the
//! consumers go on with two brokers, and the run completes.

use super::checks::{Writer, ensure_completed, wait_for_barrier, wait_until_paused};
use super::fixture::{Cluster, Settings};
use anyhow::{Context, ensure};
use recon_tests::process::metric_value;
use recon_tests::wait::wait_until;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_while_events_flow_and_during_a_run_loses_nothing() -> anyhow::Result<()> {
    let mut settings = Settings::new(151);
    settings.kafka_brokers = 3;
    let mut cluster = Cluster::start(settings).await?;
    let outcome = kill_brokers(&mut cluster).await;
    cluster.finish(outcome)
}

async fn kill_brokers(cluster: &mut Cluster) -> anyhow::Result<()> {
    ensure!(
        cluster.broker.node_count() == 3,
        "not a three-broker cluster"
    );
    let writer = Writer::start(cluster.monolith.clone(), 151);

    // While events flow: the first broker (the first bootstrap server, a
    // partition leader) goes down; the relay and the consumers carry on
    // with the other two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker.kill_node(0).await?;
    consumers_go_on(cluster, "with broker 1 down").await?;
    cluster.broker.start_node(0).await?;

    // During a run: the second broker goes down once the members paused.
    let run = cluster.request_run().await?;
    wait_until_paused(&cluster.history, &run).await?;
    cluster.broker.kill_node(1).await?;
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(120)).await?;
    ensure_completed(&barrier)?;
    consumers_go_on(cluster, "after the run, with broker 2 down").await?;
    cluster.broker.start_node(1).await?;

    let written = writer.stop().await?;
    ensure!(written > 0, "the monolith changed nothing");
    cluster
        .wait_until_equal("after both brokers came back")
        .await
}

/// Events the live replicas wrote to the store, from their metrics.
async fn events_written(cluster: &Cluster) -> anyhow::Result<u64> {
    let mut total = 0;
    for port in cluster.live_ports() {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await?;
        total += metric_value(&text, "recon_consumer_events_written_total")?;
    }
    Ok(total)
}

/// Waits until the replicas write events produced from now on (the writer
/// keeps changing the monolith).
async fn consumers_go_on(cluster: &Cluster, what: &str) -> anyhow::Result<()> {
    let written_before = events_written(cluster).await?;
    wait_until(
        &format!("the replicas to apply new events {what}"),
        Duration::from_secs(90),
        || async { Ok(events_written(cluster).await? > written_before) },
    )
    .await
    .with_context(|| cluster.log_tails())
}
