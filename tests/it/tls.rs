//! TLS to the real services (issue 12), with a CA made in the test.
//!
//! PostgreSQL: a private cluster that refuses connections without TLS; the
//! replica store connects with `sslmode=verify-full` and the test CA, the
//! session is encrypted (`pg_stat_ssl`), and a connection without TLS or
//! trusting another CA is refused with an error that says why.

use anyhow::{Context, ensure};
use recon_core::ports::EventSink as _;
use recon_store::Store;
use recon_tests::private_postgres::PrivatePostgres;
use recon_tests::tls::TestCa;
use sea_orm::{ConnectionTrait, Database, Statement};

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_store_connects_to_postgresql_over_verified_tls() -> anyhow::Result<()> {
    let ca = TestCa::new("recon test CA")?;
    let postgres = PrivatePostgres::start_with_tls(&ca).await?;
    let url = postgres.create_database("tls_replica").await?;
    let verified = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        ca.certificate().display()
    );

    let store = Store::connect(&verified)
        .await
        .context("open the store over verified TLS")?;
    store
        .check_ready()
        .await
        .map_err(|error| anyhow::anyhow!(error.message))?;
    let connection = Database::connect(&verified).await?;
    let row = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ))
        .await?
        .context("no pg_stat_ssl row for this session")?;
    let encrypted: bool = row.try_get("", "ssl")?;
    let version: String = row.try_get("", "version")?;
    ensure!(encrypted, "the session is not encrypted");
    eprintln!("replica store session over {version}");

    let plain = format!("{url}?sslmode=disable");
    let refused = Store::connect(&plain)
        .await
        .err()
        .context("a connection without TLS was accepted")?;
    let refused = chain(&refused);
    ensure!(
        refused.contains("no encryption") || refused.contains("pg_hba"),
        "unclear refusal: {refused}"
    );

    let other = TestCa::new("another CA")?;
    let untrusted = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        other.certificate().display()
    );
    let refused = Store::connect(&untrusted)
        .await
        .err()
        .context("a server certificate from an untrusted CA was accepted")?;
    let refused = chain(&refused).to_lowercase();
    ensure!(
        refused.contains("certificate"),
        "the error does not name the certificate: {refused}"
    );
    Ok(())
}
