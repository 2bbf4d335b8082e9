//! A replica cut off from the coordinator during a run resumes its
//! consumer at the run's deadline — `max_pause` plus the orphan grace after
//! the run's start — and counts it (issue 23, item 4). The leader aborts
//! the run at `max_pause` and no unit writes after it, so resuming then is
//! safe. Before, the replica stayed paused without limit: its partitions
//! owned and unconsumed until retention deleted the events.

use anyhow::{Context, ensure};
use recon_engine::cluster::{Coordinator, MemberInfo, MemberRole, RunPhase, RunRequest, RunState};
use recon_etcd::EtcdSettings;
use recon_tests::etcd::EtcdServer;
use recon_tests::process::{LoneReplica, metric_value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const MAX_PAUSE_SECS: u64 = 4;

/// The replica's pause state from `GET /consumer`.
async fn paused(port: u16) -> anyhow::Result<bool> {
    let status: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/consumer"))
        .await?
        .json()
        .await?;
    status["paused"]
        .as_bool()
        .context("GET /consumer has no paused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_during_a_run_resumes_at_the_runs_deadline() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let etcd = EtcdServer::start(directory.path().to_path_buf()).await?;
    let service = format!("cut-off-{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("/recon/{service}");

    // A leader (this test) starts a run; nothing will ever end it.
    let shutdown = CancellationToken::new();
    let info = MemberInfo {
        id: "leader".to_owned(),
        admin_url: None,
        joined_unix_ms: 0,
        role: MemberRole::Reconciler,
    };
    let leader = recon_etcd::connect(
        EtcdSettings::new(vec![etcd.endpoint()], prefix.as_str(), info),
        shutdown.clone(),
    )
    .await?;
    let leadership = leader.campaign(&shutdown).await?;
    let started_unix_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let run = RunState {
        run_id: "r-cut-off".to_owned(),
        request: RunRequest {
            requested_by: "test".to_owned(),
            requested_unix_ms: started_unix_ms,
            tenants: Vec::new(),
            dry_run: false,
            allow_mass_delete: false,
            run_id: None,
            pause: recon_core::PausePolicy::Always,
        },
        phase: RunPhase::Pausing,
        epoch: leadership.epoch,
        started_unix_ms,
        traceparent: None,
    };
    leader.put_run(&leadership, &run).await?;

    // A pause-only replica sees the run and pauses for it.
    let logs = tempfile::tempdir()?;
    let endpoint = etcd.endpoint();
    let max_pause = MAX_PAUSE_SECS.to_string();
    let arguments = [
        "--etcd-endpoints",
        endpoint.as_str(),
        "--service",
        &service,
        "--lease-ttl-secs",
        "3",
        "--max-pause-secs",
        &max_pause,
    ];
    let LoneReplica {
        process: mut replica,
        port,
        ..
    } = LoneReplica::spawn("replica", "127.0.0.1", &arguments, &[], logs.path())
        .await?
        .serving()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !paused(port).await? {
        ensure!(
            Instant::now() < deadline,
            "the replica did not pause for the run: {}",
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Cut off: etcd stops answering, the replica's session is lost.
    etcd.freeze(true)?;
    let run_deadline = Duration::from_secs(MAX_PAUSE_SECS) + recon_engine::cluster::ORPHAN_GRACE;
    let give_up = Instant::now() + run_deadline + Duration::from_secs(20);
    let mut resumed = false;
    while Instant::now() < give_up {
        if !paused(port).await? {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let since_start =
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64 - started_unix_ms;
    etcd.freeze(false)?;
    ensure!(
        resumed,
        "the replica cut off from etcd stayed paused {since_start} ms after the run started: {}",
        replica.log()
    );
    ensure!(
        since_start >= run_deadline.as_millis() as u64,
        "resumed before the run's deadline ({since_start} ms after its start)"
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    ensure!(
        metric_value(&metrics, "recon_cluster_pause_deadline_resumes_total")? == 1,
        "the resume at the deadline is not counted"
    );
    shutdown.cancel();
    replica.terminate().await?;
    Ok(())
}
