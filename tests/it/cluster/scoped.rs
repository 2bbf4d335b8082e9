//! Scoped cluster runs (issue 13): a request naming one tenant reconciles
//! that tenant only — another tenant's drift stays for a later run.

use super::checks::{ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, Settings};
use anyhow::ensure;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_for_one_tenant_repairs_that_tenant_only() -> anyhow::Result<()> {
    let cluster = Cluster::start(Settings::new(171)).await?;
    let outcome = scoped(&cluster).await;
    cluster.finish(outcome)
}

async fn garbled(cluster: &Cluster, tenant: &str) -> anyhow::Result<u64> {
    let count = cluster
        .replica_sql_one(&format!(
            "SELECT count(*)::text AS line FROM replica_users WHERE tenant_id = '{tenant}' \
             AND display_name = 'garbled-scoped' AND NOT deleted"
        ))
        .await?;
    Ok(count.parse()?)
}

async fn scoped(cluster: &Cluster) -> anyhow::Result<()> {
    let tenant = |offset: u32| {
        format!(
            "SELECT tenant_id AS line FROM replica_users GROUP BY tenant_id ORDER BY tenant_id LIMIT 1 OFFSET {offset}"
        )
    };
    let named = cluster.replica_sql_one(&tenant(0)).await?;
    let other = cluster.replica_sql_one(&tenant(1)).await?;
    for victim in [&named, &other] {
        cluster
            .replica_sql(&format!(
                "UPDATE replica_users SET display_name = 'garbled-scoped' WHERE id IN \
                 (SELECT id FROM replica_users WHERE tenant_id = '{victim}' AND NOT deleted \
                  ORDER BY id LIMIT 5)"
            ))
            .await?;
    }
    ensure!(
        garbled(cluster, &named).await? == 5 && garbled(cluster, &other).await? == 5,
        "drift not made"
    );

    let seen = cluster.history.len();
    let port = cluster.replicas[0].port;
    let answer = cluster
        .admin
        .request_run(port, serde_json::json!({ "tenants": [named] }))
        .await?;
    let run = cluster.history.wait_for_new_run(seen).await?;
    ensure!(
        answer["run_id"] == run.as_str(),
        "another run started: {run}, answer {answer}"
    );
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;
    let summary = barrier.summary.clone().unwrap_or_default();
    ensure!(
        summary.request.tenants == vec![named.clone()],
        "the run's scope: {:?}",
        summary.request.tenants
    );
    ensure!(
        garbled(cluster, &named).await? == 0,
        "the named tenant was not repaired"
    );
    ensure!(
        garbled(cluster, &other).await? == 5,
        "a tenant outside the scope was touched"
    );
    Ok(())
}
