//! Pauses are held per owner (issue 23, item 3) on a real `recon serve`:
//! an operator's resume through the admin API leaves a run's pause
//! standing, and `recon reconcile --replica-admin-url` resumes every
//! replica it paused when one of them cannot be paused, sending the admin
//! token.
//!
//! Before, the gate was one boolean: any resume un-paused a run mid-way;
//! `recon reconcile` returned at the first replica it could not pause and
//! left the ones before it paused for ever, and sent no token.

use anyhow::{Context, ensure};
use recon_tests::process::{LoneReplica, recon_binary};
use recon_tests::{Backend, TestDatabase, free_port};

const TOKEN: &str = "pause-owners-s3cret";

/// A replica of its own (no broker: the gate works without one).
async fn replica(
    name: &str,
    environment: &[(&str, &str)],
    logs: &std::path::Path,
) -> anyhow::Result<LoneReplica> {
    LoneReplica::spawn(name, "127.0.0.1", &[], environment, logs)
        .await?
        .serving()
        .await
}

/// `POST /consumer/{action}` as `owner` (none: the admin API's default).
async fn post(port: u16, action: &str, owner: Option<&str>) -> anyhow::Result<()> {
    let mut request =
        reqwest::Client::new().post(format!("http://127.0.0.1:{port}/consumer/{action}"));
    if let Some(owner) = owner {
        request = request.query(&[("owner", owner)]);
    }
    let status = request.send().await?.status();
    ensure!(status.is_success(), "POST /consumer/{action}: {status}");
    Ok(())
}

/// The replica's pause state and its owners, from `GET /consumer`.
async fn paused(port: u16) -> anyhow::Result<(bool, serde_json::Value)> {
    let status: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/consumer"))
        .await?
        .json()
        .await?;
    let paused = status["paused"]
        .as_bool()
        .context("GET /consumer has no paused")?;
    Ok((paused, status["paused_by"].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_resume_leaves_a_runs_pause_standing() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let LoneReplica {
        mut process, port, ..
    } = replica("replica", &[], logs.path()).await?;
    post(port, "pause", Some("run r1")).await?;
    post(port, "pause", None).await?;
    post(port, "resume", None).await?;
    let (still, owners) = paused(port).await?;
    ensure!(
        still,
        "an operator's resume ended the run's pause (owners {owners})"
    );
    ensure!(owners == serde_json::json!(["run r1"]), "owners {owners}");
    post(port, "resume", Some("run r1")).await?;
    let (still, owners) = paused(port).await?;
    ensure!(!still, "paused after every owner resumed (owners {owners})");
    process.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recon_reconcile_resumes_every_replica_it_paused_when_one_fails() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let directory = tempfile::tempdir()?;
    let token_file = directory.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    let token_path = token_file.display().to_string();
    let mut open = replica("open", &[], logs.path()).await?;
    let mut protected = replica(
        "protected",
        &[("RECON_ADMIN_TOKEN_FILE", &token_path)],
        logs.path(),
    )
    .await?;
    let (open_port, protected_port) = (open.port, protected.port);
    let database = TestDatabase::replica_store(Backend::Sqlite).await?;
    let nobody = format!("http://127.0.0.1:{}", free_port()?);
    let output = tokio::process::Command::new(recon_binary()?)
        .args([
            "reconcile",
            "--database-url",
            &database.url,
            "--source-url",
            &nobody,
            "--no-progress",
            "--replica-admin-url",
            &format!("http://127.0.0.1:{open_port}"),
            "--replica-admin-url",
            &format!("http://127.0.0.1:{protected_port}"),
            "--replica-admin-url",
            &nobody,
            "--admin-token-file",
            &token_path,
        ])
        .output()
        .await
        .context("run recon reconcile")?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.code() == Some(4),
        "a run that cannot pause every replica is aborted (exit 4), not {}: {printed}",
        output.status
    );
    ensure!(
        printed.contains("could not pause") && printed.contains("were resumed"),
        "the report says why and what was undone: {printed}"
    );
    for (name, port) in [("open", open_port), ("protected", protected_port)] {
        let (still, owners) = paused(port).await?;
        ensure!(
            !still,
            "the {name} replica was left paused (owners {owners}): {printed}"
        );
    }
    open.process.terminate().await?;
    protected.process.terminate().await?;
    Ok(())
}
