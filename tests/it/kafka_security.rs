//! recon against an Apache Kafka broker secured the way production ones
//! are: a TLS listener with a certificate from a test CA, SASL/SCRAM-SHA-512
//! over TLS with users created by `kafka-configs`, and ACLs enforced by the
//! `StandardAuthorizer` (`kafka-acls`). recon's processes are configured
//! through `RECON_KAFKA_PROPERTY_*` variables only, as a deployment would.
//!
//! Each refusal must stop `recon serve` at startup with an error naming
//! what was refused, and commit nothing; the same setup with the right
//! credentials or ACLs consumes everything (so a refusal is the broker's
//! answer, not a broken setup).

use anyhow::{Context, ensure};
use recon_monolith::Monolith;
use recon_monolith::seed::{self, SeedSpec};
use recon_monolith::verify::compare_databases;
use recon_tests::broker::{BrokerSecurity, BrokerTls, KafkaCluster, wait_for_port};
use recon_tests::process::{ReconProcess, metric_value, start_monolith_with};
use recon_tests::tls::TestCa;
use recon_tests::wait::wait_until;
use recon_tests::{Backend, TestDatabase, free_port};
use std::path::Path;
use std::time::Duration;

const TOPIC: &str = "secure.changes";
const GROUP: &str = "secure-replicas";

/// `RECON_KAFKA_PROPERTY_*` variables for `properties` (librdkafka names).
fn property_variables(properties: &[(String, String)]) -> Vec<(String, String)> {
    properties
        .iter()
        .filter(|(key, _)| key != "bootstrap.servers")
        .map(|(key, value)| {
            let name = key.to_uppercase().replace('.', "_");
            (format!("RECON_KAFKA_PROPERTY_{name}"), value.clone())
        })
        .collect()
}

/// Properties of a SCRAM user on the broker's secure listener.
fn scram_properties(
    broker: &KafkaCluster,
    user: &str,
    password: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut properties = broker.secure_client_properties()?;
    properties.push(("sasl.username".to_owned(), user.to_owned()));
    properties.push(("sasl.password".to_owned(), password.to_owned()));
    Ok(properties)
}

/// A `recon serve` replica on the broker's secure listener, configured
/// through variables only.
fn start_replica(
    logs: &Path,
    name: &str,
    database_url: &str,
    admin_port: u16,
    broker: &KafkaCluster,
    properties: &[(String, String)],
) -> anyhow::Result<ReconProcess> {
    let admin = format!("127.0.0.1:{admin_port}");
    let bootstrap = broker.secure_bootstrap_servers()?;
    let variables = property_variables(properties);
    let mut environment: Vec<(&str, &str)> = vec![("RUST_LOG", "info")];
    environment.extend(
        variables
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    ReconProcess::start(
        name,
        &[
            "serve",
            "--database-url",
            database_url,
            "--kafka-bootstrap-servers",
            &bootstrap,
            "--kafka-topic",
            TOPIC,
            "--group-id",
            GROUP,
            "--admin-listen",
            &admin,
        ],
        &environment,
        logs.join(format!("{name}.log")),
    )
}

/// A seeded monolith whose relay publishes to the secure listener with
/// `properties`; returns the monolith's database and process.
async fn start_relay(
    logs: &Path,
    broker: &KafkaCluster,
    properties: &[(String, String)],
) -> anyhow::Result<(TestDatabase, ReconProcess)> {
    let database = TestDatabase::create(Backend::Postgres).await?;
    let monolith = Monolith::connect(&database.url).await?;
    let spec = SeedSpec {
        seed: 5,
        tenants: 4,
        users_per_tenant_mean: 10.0,
        max_users_per_tenant: 40,
        ..SeedSpec::default()
    };
    seed::run(&monolith, &spec).await?;
    let port = free_port()?;
    let variables = property_variables(properties);
    let environment: Vec<(&str, &str)> = variables
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let bootstrap = broker.secure_bootstrap_servers()?;
    let relay = start_monolith_with(logs, &database.url, port, &bootstrap, TOPIC, &environment)?;
    wait_for_port(port, Duration::from_secs(30)).await?;
    Ok((database, relay))
}

/// Waits until the replica holds every row of the monolith.
async fn wait_for_convergence(
    monolith: &TestDatabase,
    replica_database: &TestDatabase,
    replica: &ReconProcess,
    relay: &ReconProcess,
) -> anyhow::Result<()> {
    wait_until(
        "the replica to equal the monolith",
        Duration::from_secs(120),
        || async {
            let differences = compare_databases(&monolith.url, &replica_database.url).await?;
            Ok(differences.is_empty() && differences.monolith_rows > 0)
        },
    )
    .await
    .with_context(|| format!("replica:\n{}\nrelay:\n{}", replica.log(), relay.log()))
}

async fn metrics(admin_port: u16) -> anyhow::Result<String> {
    Ok(
        reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await?,
    )
}

/// A replica with `properties` on a fresh database, once it equals the
/// monolith (it goes on running).
async fn converging_replica(
    logs: &Path,
    name: &str,
    broker: &KafkaCluster,
    properties: &[(String, String)],
    monolith: &TestDatabase,
    relay: &ReconProcess,
) -> anyhow::Result<(ReconProcess, u16)> {
    let database = TestDatabase::replica_store(Backend::Postgres).await?;
    let admin_port = free_port()?;
    let replica = start_replica(logs, name, &database.url, admin_port, broker, properties)?;
    wait_for_convergence(monolith, &database, &replica, relay).await?;
    Ok((replica, admin_port))
}

/// A replica with `properties` on a fresh database, which must stop at
/// startup having applied nothing; returns its log.
async fn refused_replica(
    logs: &Path,
    name: &str,
    broker: &KafkaCluster,
    properties: &[(String, String)],
) -> anyhow::Result<String> {
    let database = TestDatabase::replica_store(Backend::Postgres).await?;
    let mut replica = start_replica(logs, name, &database.url, free_port()?, broker, properties)?;
    let log = refused_at_startup(&mut replica).await?;
    ensure!(
        replica_rows(&database).await? == 0,
        "{name} applied rows:\n{log}"
    );
    Ok(log)
}

/// Waits for a replica to exit at startup; returns its log.
async fn refused_at_startup(replica: &mut ReconProcess) -> anyhow::Result<String> {
    let code = replica
        .wait_for_exit(Duration::from_secs(60))
        .await
        .with_context(|| format!("the replica did not stop:\n{}", replica.log()))?;
    ensure!(
        code.is_some_and(|code| code != 0),
        "the replica exited with {code:?}:\n{}",
        replica.log()
    );
    Ok(replica.log())
}

/// Rows in the replica's tenant and user tables (0 when nothing was
/// applied; the store creates the tables before the access check).
async fn replica_rows(database: &TestDatabase) -> anyhow::Result<i64> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let connection = Database::connect(&database.url).await?;
    let row = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            "SELECT (SELECT count(*) FROM replica_tenants) + (SELECT count(*) FROM replica_users) AS n",
        ))
        .await?
        .context("no count")?;
    Ok(row.try_get::<i64>("", "n")?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_replica_and_group_monitor_work_over_a_tls_listener() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let ca = TestCa::new("kafka test CA")?;
    let broker = KafkaCluster::start_secure(BrokerSecurity {
        tls: Some(BrokerTls::from_ca(&ca)?),
        ..BrokerSecurity::default()
    })
    .await?;
    let properties = broker.secure_client_properties()?;
    let (monolith, relay) = start_relay(logs.path(), &broker, &properties).await?;
    let (mut replica, admin_port) = converging_replica(
        logs.path(),
        "replica",
        &broker,
        &properties,
        &monolith,
        &relay,
    )
    .await?;
    // The group monitor reads the group over TLS too.
    wait_until(
        "the group monitor to observe the group",
        Duration::from_secs(60),
        || async {
            let text = metrics(admin_port).await?;
            Ok(metric_value(&text, "recon_group_observed")? == 1
                && metric_value(&text, "recon_group_partitions")? == 4)
        },
    )
    .await
    .with_context(|| replica.log())?;
    replica.terminate().await?;

    // A replica trusting another CA stops at startup saying why.
    let other = TestCa::new("another CA")?;
    let mut untrusting_properties = properties.clone();
    for (key, value) in &mut untrusting_properties {
        if key == "ssl.ca.location" {
            *value = other.certificate().display().to_string();
        }
    }
    let log = refused_replica(logs.path(), "untrusting", &broker, &untrusting_properties).await?;
    ensure!(
        log.contains("TLS handshake failed"),
        "no clear TLS error:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scram_over_tls_takes_the_right_password_and_stops_a_replica_with_a_wrong_one()
-> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let ca = TestCa::new("kafka test CA")?;
    let broker = KafkaCluster::start_secure(BrokerSecurity {
        tls: Some(BrokerTls::from_ca(&ca)?),
        scram: true,
        authorizer: false,
    })
    .await?;
    broker.add_scram_user("relay", "relay-secret-1").await?;
    broker.add_scram_user("replica", "replica-secret-2").await?;
    let relay_properties = scram_properties(&broker, "relay", "relay-secret-1")?;
    let (monolith, relay) = start_relay(logs.path(), &broker, &relay_properties).await?;

    let wrong = scram_properties(&broker, "replica", "not-the-password")?;
    let log = refused_replica(logs.path(), "wrong-password", &broker, &wrong).await?;
    ensure!(
        log.contains("SASL authentication failed"),
        "no clear SASL error:\n{log}"
    );
    ensure!(
        !log.contains("not-the-password"),
        "the password is in the log:\n{log}"
    );

    let right = scram_properties(&broker, "replica", "replica-secret-2")?;
    let (mut replica, _) =
        converging_replica(logs.path(), "replica", &broker, &right, &monolith, &relay).await?;
    ensure!(
        !replica.log().contains("replica-secret-2"),
        "the password is in the log"
    );
    replica.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acls_stop_a_replica_that_may_not_read_the_topic_or_use_the_group() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let ca = TestCa::new("kafka test CA")?;
    let broker = KafkaCluster::start_secure(BrokerSecurity {
        tls: Some(BrokerTls::from_ca(&ca)?),
        scram: true,
        authorizer: true,
    })
    .await?;
    for user in ["relay", "full", "no-topic", "no-group"] {
        broker.add_scram_user(user, &format!("{user}-pw")).await?;
    }
    broker
        .add_acl(&[
            "--allow-principal",
            "User:relay",
            "--operation",
            "Write",
            "--operation",
            "Create",
            "--operation",
            "Describe",
            "--topic",
            TOPIC,
        ])
        .await?;
    for (user, topic, group) in [
        ("full", true, true),
        ("no-topic", false, true),
        ("no-group", true, false),
    ] {
        let principal = format!("User:{user}");
        if topic {
            broker
                .add_acl(&[
                    "--allow-principal",
                    &principal,
                    "--operation",
                    "Read",
                    "--topic",
                    TOPIC,
                ])
                .await?;
        }
        if group {
            broker
                .add_acl(&[
                    "--allow-principal",
                    &principal,
                    "--operation",
                    "Read",
                    "--group",
                    GROUP,
                ])
                .await?;
        }
    }
    let relay_properties = scram_properties(&broker, "relay", "relay-pw")?;
    let (monolith, relay) = start_relay(logs.path(), &broker, &relay_properties).await?;
    // The topic exists with its records before the refused replicas come.
    wait_until(
        "the relay to create the topic",
        Duration::from_secs(60),
        || async { Ok(broker.topic_partitions(TOPIC).await? == 4) },
    )
    .await
    .with_context(|| relay.log())?;

    for (user, expected) in [
        ("no-topic", "not authorized to read the topic"),
        ("no-group", "not authorized to use the consumer group"),
    ] {
        let properties = scram_properties(&broker, user, &format!("{user}-pw"))?;
        let log = refused_replica(logs.path(), user, &broker, &properties).await?;
        ensure!(log.contains(expected), "{user}: no clear error:\n{log}");
    }
    ensure!(
        committed_offsets(&broker).await? == 0,
        "a refused replica committed offsets"
    );

    let properties = scram_properties(&broker, "full", "full-pw")?;
    let (mut replica, _) =
        converging_replica(logs.path(), "full", &broker, &properties, &monolith, &relay).await?;
    replica.terminate().await?;
    ensure!(
        committed_offsets(&broker).await? > 0,
        "the allowed replica committed nothing"
    );
    Ok(())
}

/// Partitions of the topic for which the group has a committed offset, as
/// the harness (a super user on the plaintext listener) sees them.
async fn committed_offsets(broker: &KafkaCluster) -> anyhow::Result<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let bootstrap = broker.bootstrap_servers();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", GROUP)
            .create()?;
        let mut partitions = rdkafka::TopicPartitionList::new();
        for partition in 0..4 {
            partitions.add_partition(TOPIC, partition);
        }
        let committed = consumer.committed_offsets(partitions, Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .filter(|element| matches!(element.offset(), rdkafka::Offset::Offset(_)))
            .count())
    })
    .await?
}
