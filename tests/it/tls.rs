//! TLS to the real services (issue 12), with a CA made in the test.
//!
//! PostgreSQL: a private cluster that refuses connections without TLS; the
//! replica store connects with `sslmode=verify-full` and the test CA, the
//! session is encrypted (`pg_stat_ssl`), and a connection without TLS or
//! trusting another CA is refused with an error that says why.
//!
//! etcd: a private etcd serving TLS with `--client-cert-auth` that a member
//! joins with the CA and a client certificate (and not without them); an
//! etcd with authentication enabled that a member joins as a user allowed
//! under `/recon/`, while a wrong password is refused as permanent — and a
//! `recon serve` given it exits at startup saying so.
//!
//! Kafka over TLS, SASL and ACLs: `kafka_security.rs`.

use anyhow::{Context, ensure};
use recon_core::ports::EventSink as _;
use recon_engine::cluster::{Coordinator as _, MemberInfo, MemberRole};
use recon_etcd::{EtcdCoordinator, EtcdSecurity, EtcdSettings};
use recon_store::Store;
use recon_tests::etcd::EtcdServer;
use recon_tests::private_postgres::PrivatePostgres;
use recon_tests::process::start_serve;
use recon_tests::tls::TestCa;
use sea_orm::{ConnectionTrait, Database, Statement};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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

    recon_tests::migrate_store(&verified)
        .await
        .context("migrate the store over verified TLS")?;
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

fn settings(endpoint: &str, member: &str, security: EtcdSecurity) -> EtcdSettings {
    let info = MemberInfo {
        id: member.to_owned(),
        admin_url: None,
        joined_unix_ms: 0,
        role: MemberRole::Reconciler,
    };
    let mut settings = EtcdSettings::new(vec![endpoint.to_owned()], "/recon/secured", info);
    settings.security = security;
    settings
}

/// Joins member `m1` with `security` and checks it is registered.
async fn join(
    endpoint: &str,
    security: EtcdSecurity,
    shutdown: &CancellationToken,
) -> anyhow::Result<EtcdCoordinator> {
    let member = recon_etcd::connect(settings(endpoint, "m1", security), shutdown.clone()).await?;
    let members = member
        .members()
        .await
        .map_err(|error| anyhow::anyhow!(error.message))?;
    ensure!(
        members.iter().any(|info| info.id == "m1"),
        "not registered: {members:?}"
    );
    Ok(member)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_an_etcd_that_requires_tls_and_client_certificates() -> anyhow::Result<()> {
    let ca = TestCa::new("recon test CA")?;
    let directory = tempfile::tempdir()?;
    let etcd = EtcdServer::start_tls(directory.path().to_path_buf(), &ca).await?;
    let client = ca.client("recon")?;
    let secured = EtcdSecurity {
        ca_file: Some(ca.certificate()),
        client_identity: Some((client.certificate.clone(), client.key.clone())),
        credentials: None,
    };
    let shutdown = CancellationToken::new();
    join(&etcd.endpoint(), secured.clone(), &shutdown)
        .await
        .context("join over TLS with a client certificate")?;

    let without_certificate = EtcdSecurity {
        client_identity: None,
        ..secured.clone()
    };
    let refused = recon_etcd::connect(
        settings(&etcd.endpoint(), "m2", without_certificate),
        shutdown.clone(),
    )
    .await;
    ensure!(refused.is_err(), "a client without a certificate joined");
    let other = TestCa::new("another CA")?;
    let untrusting = EtcdSecurity {
        ca_file: Some(other.certificate()),
        ..secured
    };
    let refused = recon_etcd::connect(
        settings(&etcd.endpoint(), "m3", untrusting),
        shutdown.clone(),
    )
    .await;
    ensure!(
        refused.is_err(),
        "a server certificate from an untrusted CA was accepted"
    );
    shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_authentication_admits_the_user_and_a_wrong_password_stops_a_replica_at_startup()
-> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let etcd = EtcdServer::start(directory.path().to_path_buf()).await?;
    for command in [
        vec!["user", "add", "root", "--new-user-password", "root-pw"],
        vec!["user", "grant-role", "root", "root"],
        vec!["role", "add", "recon"],
        vec![
            "role",
            "grant-permission",
            "recon",
            "--prefix=true",
            "readwrite",
            "/recon/",
        ],
        vec!["user", "add", "recon", "--new-user-password", "recon-pw"],
        vec!["user", "grant-role", "recon", "recon"],
        vec!["auth", "enable"],
    ] {
        etcd.etcdctl(&command).await?;
    }
    let shutdown = CancellationToken::new();
    let user = |password: &str| EtcdSecurity {
        credentials: Some(("recon".to_owned(), password.to_owned())),
        ..EtcdSecurity::default()
    };
    join(&etcd.endpoint(), user("recon-pw"), &shutdown)
        .await
        .context("join as the recon user")?;

    let refused = recon_etcd::connect(
        settings(&etcd.endpoint(), "m2", user("wrong")),
        shutdown.clone(),
    )
    .await
    .err()
    .context("a wrong password was accepted")?;
    ensure!(
        refused.is_permanent(),
        "a wrong password is not a permanent refusal: {refused}"
    );

    // A replica given the wrong password stops at startup with a clear error.
    let logs = tempfile::tempdir()?;
    let password_file = logs.path().join("etcd-password");
    std::fs::write(&password_file, "wrong\n")?;
    let database = recon_tests::TestDatabase::replica_store(recon_tests::Backend::Sqlite).await?;
    let admin = format!("127.0.0.1:{}", recon_tests::free_port()?);
    let brokers = format!("127.0.0.1:{}", recon_tests::free_port()?);
    let endpoint = etcd.endpoint();
    let password_path = password_file.display().to_string();
    let mut replica = start_serve(
        "replica",
        &database.url,
        &brokers,
        &admin,
        &[
            "--etcd-endpoints",
            &endpoint,
            "--etcd-user",
            "recon",
            "--etcd-password-file",
            &password_path,
        ],
        &[("RUST_LOG", "warn")],
        logs.path(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !replica.exited() {
        ensure!(
            Instant::now() < deadline,
            "the replica did not stop: {}",
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = replica.log();
    ensure!(
        log.contains("etcd refused") && log.contains("authentication failed"),
        "unclear startup error:\n{log}"
    );
    ensure!(
        !log.contains("wrong\n") && !log.contains("recon-pw"),
        "a password in the log:\n{log}"
    );
    shutdown.cancel();
    Ok(())
}
