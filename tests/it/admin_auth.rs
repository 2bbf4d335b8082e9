//! The admin API's access rules on a real `recon serve` (issue 12): the
//! read-only endpoints are open; the mutating ones need the admin token
//! (here read from a file), and without a token they are refused on a port
//! that listens beyond loopback; overriding the delete guard over HTTP
//! needs an explicit confirmation.

use anyhow::ensure;
use recon_tests::TestDatabase;
use recon_tests::process::{LoneReplica, ReconProcess};
use reqwest::StatusCode;

const TOKEN: &str = "admin-s3cret-for-tests";

async fn replica(
    listen_ip: &str,
    environment: &[(&str, &str)],
) -> anyhow::Result<(ReconProcess, u16, TestDatabase, tempfile::TempDir)> {
    let logs = tempfile::tempdir()?;
    let replica = LoneReplica::spawn("replica", listen_ip, &[], environment, logs.path())
        .await?
        .serving()
        .await?;
    Ok((replica.process, replica.port, replica.database, logs))
}

async fn post(
    port: u16,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> anyhow::Result<StatusCode> {
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Ok(request.send().await?.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_admin_endpoints_need_the_token_and_reads_stay_open() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let token_file = directory.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    let token_path = token_file.display().to_string();
    let (mut process, port, _database, _logs) =
        replica("127.0.0.1", &[("RECON_ADMIN_TOKEN_FILE", &token_path)]).await?;
    for path in ["/healthz", "/metrics", "/consumer", "/cluster", "/"] {
        let status = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await?
            .status();
        ensure!(status == StatusCode::OK, "GET {path} answered {status}");
    }
    let nothing = serde_json::json!({});
    for path in ["/consumer/pause", "/consumer/resume", "/reconcile"] {
        let status = post(port, path, None, nothing.clone()).await?;
        ensure!(
            status == StatusCode::UNAUTHORIZED,
            "POST {path} without a token: {status}"
        );
        let status = post(port, path, Some("wrong-token"), nothing.clone()).await?;
        ensure!(
            status == StatusCode::UNAUTHORIZED,
            "POST {path} with a wrong token: {status}"
        );
    }
    let status = post(port, "/consumer/pause", Some(TOKEN), nothing.clone()).await?;
    ensure!(status == StatusCode::OK, "pause with the token: {status}");
    let status = post(port, "/consumer/resume", Some(TOKEN), nothing.clone()).await?;
    ensure!(status == StatusCode::OK, "resume with the token: {status}");
    let unconfirmed = serde_json::json!({ "allow_mass_delete": true });
    let status = post(port, "/reconcile", Some(TOKEN), unconfirmed).await?;
    ensure!(
        status == StatusCode::BAD_REQUEST,
        "an unconfirmed guard override: {status}"
    );
    let confirmed = serde_json::json!({ "allow_mass_delete": true, "confirm_mass_delete": true, "dry_run": true });
    let status = post(port, "/reconcile", Some(TOKEN), confirmed).await?;
    ensure!(
        status == StatusCode::ACCEPTED,
        "a confirmed request: {status}"
    );
    ensure!(
        !process.log().contains(TOKEN),
        "the admin token appears in the replica's log"
    );
    process.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_an_exposed_admin_port_refuses_mutations() -> anyhow::Result<()> {
    let (mut process, port, _database, _logs) = replica("0.0.0.0", &[]).await?;
    let status = post(port, "/consumer/pause", None, serde_json::json!({})).await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "pause on an exposed port without a token: {status}"
    );
    let status = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await?
        .status();
    ensure!(status == StatusCode::OK, "reads stay open: {status}");
    process.terminate().await?;
    Ok(())
}
