//! Secrets never leak (issue 12): three replicas read a database password,
//! the Source API token and the admin token from files; after a whole run,
//! no log line of any process and no answer of any admin endpoint holds
//! any of them (nor their URL-encoded forms).

use super::checks::{ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, Secrets, Settings};
use anyhow::ensure;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_appears_in_any_log_or_admin_answer_of_a_run() -> anyhow::Result<()> {
    let secrets = Secrets {
        database_password: "pg-pw-5f3a9c1e".to_owned(),
        source_token: "source-token-8b2d7e40".to_owned(),
        admin_token: "admin-token-c61f0a93".to_owned(),
    };
    let mut settings = Settings::new(141);
    settings.secrets = Some(secrets.clone());
    let cluster = Cluster::start(settings).await?;
    let outcome = nothing_leaks(&cluster, &secrets).await;
    cluster.finish(outcome)
}

async fn nothing_leaks(cluster: &Cluster, secrets: &Secrets) -> anyhow::Result<()> {
    cluster.drift().await?;
    // The run goes through the admin token, and its units through the
    // Source API token (the monolith refuses requests without it).
    let run = cluster.request_run().await?;
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;
    cluster.wait_until_equal("after the run").await?;

    let mut texts: Vec<(String, String)> = Vec::new();
    let http = reqwest::Client::new();
    for replica in &cluster.replicas {
        for path in [
            "/",
            "/cluster",
            "/metrics",
            "/consumer",
            "/readyz",
            "/healthz",
        ] {
            let url = format!("http://127.0.0.1:{}{path}", replica.port);
            let answer = http.get(&url).send().await?.text().await?;
            texts.push((format!("GET {url}"), answer));
        }
        texts.push((format!("log of {}", replica.id), replica.process.log()));
    }
    texts.push((
        "log of the monolith".to_owned(),
        cluster.monolith_process.log(),
    ));
    let lines: usize = texts.iter().map(|(_, text)| text.lines().count()).sum();
    ensure!(
        lines > 100,
        "only {lines} lines to search: the check would prove little"
    );
    for secret in [
        &secrets.database_password,
        &secrets.source_token,
        &secrets.admin_token,
    ] {
        for (place, text) in &texts {
            let leaked = text.lines().find(|line| line.contains(secret.as_str()));
            ensure!(
                leaked.is_none(),
                "{place} holds a secret: {}",
                leaked.unwrap_or_default()
            );
        }
    }
    eprintln!(
        "searched {lines} lines of {} logs and answers: no secret",
        texts.len()
    );
    Ok(())
}
