//! Runs have an id their requester holds (issue 13): `POST /reconcile`
//! answers with the id of the run that will serve the request, and that is
//! the run that starts; `recon reconcile --cluster --wait` prints its run's
//! id, follows it and exits with its outcome.

use super::checks::{ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, Settings};
use anyhow::{Context, ensure};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_names_its_run_and_wait_exits_with_its_outcome() -> anyhow::Result<()> {
    let cluster = Cluster::start(Settings::new(151)).await?;
    let outcome = run_ids(&cluster).await;
    cluster.finish(outcome)
}

async fn run_ids(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.drift().await?;
    let seen = cluster.history.len();
    let port = cluster.replicas[0].port;
    let answer = cluster
        .admin
        .request_run(port, serde_json::json!({ "dry_run": true }))
        .await?;
    let promised = answer["run_id"]
        .as_str()
        .context("no run_id in the answer")?
        .to_owned();
    let started = cluster.history.wait_for_new_run(seen).await?;
    ensure!(
        started == promised,
        "POST /reconcile promised {promised}, {started} started"
    );
    let barrier = wait_for_barrier(&cluster.history, &started, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;

    // The command line: requested, followed, and its outcome as exit code.
    let seen = cluster.history.len();
    let mut waiter = cluster.start_waiting_request("reconcile-wait", &["--dry-run"])?;
    let started = cluster.history.wait_for_new_run(seen).await?;
    let code = waiter.wait_for_exit(Duration::from_secs(90)).await?;
    let log = waiter.log();
    ensure!(
        code == Some(0),
        "--wait exited with {code:?} after a completed run:\n{log}"
    );
    ensure!(
        log.contains(&format!("run {started}: requested")),
        "the run id was not printed:\n{log}"
    );
    ensure!(
        log.contains(&format!("run {started}: completed")),
        "the outcome was not printed:\n{log}"
    );

    // A run with problems exits with 3: a tenant only the replica has,
    // with more rows than the guard lets a run delete.
    let statements = [
        "INSERT INTO replica_tenants (id, name, generation, sequence, deleted) \
         VALUES ('phantom-tenant', 'phantom', 1, 1, FALSE)",
        "INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, sequence, deleted) \
         SELECT 'phantom-tenant', 'phantom-' || n, 'p@example.com', 'p', 'active', 1, 1, FALSE \
         FROM generate_series(1, 200) AS n",
    ];
    for statement in statements {
        ensure!(cluster.replica_sql(statement).await? > 0, "{statement}");
    }
    let seen = cluster.history.len();
    let mut waiter = cluster.start_waiting_request("reconcile-wait-problems", &[])?;
    let problems = cluster.history.wait_for_new_run(seen).await?;
    let code = waiter.wait_for_exit(Duration::from_secs(90)).await?;
    ensure!(
        code == Some(3),
        "--wait exited with {code:?} after a run with problems:\n{}",
        waiter.log()
    );

    // The store's history has all three, newest first, and says why.
    let listed = cluster.runs_json(&["list"])?;
    let ids: Vec<&str> = listed
        .as_array()
        .context("runs list is not an array")?
        .iter()
        .filter_map(|run| run["run_id"].as_str())
        .collect();
    ensure!(
        ids.starts_with(&[problems.as_str(), started.as_str(), promised.as_str()]),
        "the history lists {ids:?}"
    );
    let first = &listed[0];
    ensure!(
        first["report"]["status"] == "completed_with_problems" && first["mode"] == "cluster",
        "{first}"
    );
    ensure!(listed[1]["report"]["dry_run"] == true, "{}", listed[1]);
    let shown = cluster.runs_json(&["show", &problems])?;
    let tenant_list = &shown["report"]["units"][0];
    ensure!(
        tenant_list["outcome"]["state"] == "guard_tripped"
            && tenant_list["removed_tenants"][0]["tenant"] == "phantom-tenant",
        "the history does not show the guard's decision: {tenant_list}"
    );
    ensure!(
        shown["report"]["abort_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("phantom-tenant")),
        "{}",
        shown["report"]
    );
    Ok(())
}
