//! A replica asked to stop (SIGTERM) exits, with code 0, within its
//! shutdown deadline: Kubernetes kills a pod 30 s after asking it to stop,
//! and a replica that outlives that dies without having revoked its lease.
//! Every long-lived task of `recon serve` ends under one deadline, and the
//! runtime does not wait long for a blocking call left behind (issue 25,
//! item 4). Here the broker accepts connections and never answers.

use recon_tests::process::start_serve;
use recon_tests::{Backend, TestDatabase, free_port};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// How long `recon serve` may take to exit after SIGTERM: its shutdown
/// deadline (10 s) and the runtime's grace (2 s), with slack for a loaded
/// machine.
const EXIT_LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_exits_within_its_deadline_when_kafka_never_answers() -> anyhow::Result<()> {
    // A broker that accepts connections and never answers: the Kafka
    // client's requests, its commit and its close wait on it.
    let blackhole = TcpListener::bind("127.0.0.1:0").await?;
    let brokers = blackhole.local_addr()?.to_string();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = blackhole.accept().await {
            connections.push(connection);
        }
    });
    let database = TestDatabase::replica_store(Backend::Sqlite).await?;
    let logs = tempfile::tempdir()?;
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut replica = start_serve(
        "replica",
        &database.url,
        &brokers,
        &listen,
        &[],
        &[("RUST_LOG", "info")],
        logs.path(),
    )?;
    recon_tests::broker::wait_for_port(port, Duration::from_secs(60)).await?;
    // Its consumer is running, and stuck on the broker.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = Instant::now();
    let code = replica.terminate().await;
    let took = asked.elapsed();
    eprintln!("recon serve exited {took:?} after SIGTERM");
    held.abort();
    let code = code?;
    anyhow::ensure!(
        took < EXIT_LIMIT,
        "exited {took:?} after SIGTERM (limit {EXIT_LIMIT:?}):\n{}",
        replica.log()
    );
    anyhow::ensure!(code == Some(0), "exit code {code:?}:\n{}", replica.log());
    Ok(())
}
