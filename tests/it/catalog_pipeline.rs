//! A declared schema unlike the default one (`proto/schemas/catalog.toml`:
//! shops, products with every field type, composite keys) replicated end
//! to end as separate processes on loopback: a `recon monolith --schema`
//! with its outbox relay, an Apache Kafka broker, a `recon serve --schema`
//! replica. The replica must end equal to the monolith row by row, NULLs,
//! JSON documents and timestamps included, deletions too.

use anyhow::{Context, ensure};
use recon_core::schema::{FieldValue, Schema, canonical_json};
use recon_monolith::Monolith;
use recon_monolith::seed::{self, SeedSpec};
use recon_monolith::verify::compare_schema_databases;
use recon_store::{MigrationOptions, Store};
use recon_tests::broker::{KafkaCluster, wait_for_port};
use recon_tests::process::{ReconProcess, metric_value, start_monolith_with};
use recon_tests::{Backend, TestDatabase, free_port};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOPIC: &str = "catalog.changes";
const SHOP: &str = "shop-e2e";

fn catalog_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/schemas/catalog.toml")
}

fn catalog() -> anyhow::Result<Schema> {
    let text = std::fs::read_to_string(catalog_file())?;
    Ok(Schema::parse(&text)?)
}

fn text(value: &str) -> FieldValue {
    FieldValue::Text(value.to_owned())
}

/// A product's values: title, price, active, attributes, released_at,
/// state, subtitle.
fn product(
    title: &str,
    attributes: Option<&str>,
    released_at: Option<i64>,
    subtitle: Option<&str>,
) -> anyhow::Result<Vec<FieldValue>> {
    let attributes = match attributes {
        Some(document) => FieldValue::Json(canonical_json(document).map_err(anyhow::Error::msg)?),
        None => FieldValue::Null,
    };
    Ok(vec![
        text(title),
        FieldValue::Integer(-1999),
        FieldValue::Boolean(true),
        attributes,
        released_at.map_or(FieldValue::Null, FieldValue::Timestamp),
        text("listed"),
        subtitle.map_or(FieldValue::Null, text),
    ])
}

/// Writes what the drift of the issue names through the monolith's write
/// path: NULL next to empty text, JSON documents that differ in key order
/// only, timestamps to the microsecond, a composite key whose last part
/// holds `:`, then updates and deletions.
async fn write_edge_cases(monolith: &Monolith) -> anyhow::Result<()> {
    let key = |parts: &[&str]| parts.iter().map(|part| (*part).to_owned()).collect();
    monolith
        .upsert("shop", SHOP, key(&[SHOP]), vec![text("End to end")])
        .await?;
    monolith
        .upsert(
            "product",
            SHOP,
            key(&["p-empty"]),
            product(
                "",
                Some(r#"{"b": 1, "a": [true, null]}"#),
                Some(1_796_625_063_123_000),
                Some(""),
            )?,
        )
        .await?;
    monolith
        .upsert(
            "product",
            SHOP,
            key(&["p-null"]),
            product("Null", None, None, None)?,
        )
        .await?;
    monolith
        .upsert(
            "variant",
            SHOP,
            key(&["p-empty", "v:1"]),
            vec![text("first"), FieldValue::Integer(3)],
        )
        .await?;
    monolith
        .upsert(
            "variant",
            SHOP,
            key(&["p-null", "v"]),
            vec![text("gone soon"), FieldValue::Integer(0)],
        )
        .await?;
    monolith
        .upsert("tag", SHOP, key(&["sale"]), Vec::new())
        .await?;
    monolith
        .upsert("product_tag", SHOP, key(&["p-empty", "sale"]), Vec::new())
        .await?;
    // Updates: the key order of a document changes nothing but the write;
    // a NULL becomes empty text and back.
    monolith
        .upsert(
            "product",
            SHOP,
            key(&["p-empty"]),
            product(
                "",
                Some(r#"{"a": [true, null], "b": 1}"#),
                Some(1_000),
                None,
            )?,
        )
        .await?;
    monolith
        .upsert(
            "product",
            SHOP,
            key(&["p-null"]),
            product("Null", None, None, Some(""))?,
        )
        .await?;
    monolith
        .delete("variant", SHOP, key(&["p-null", "v"]))
        .await?;
    monolith
        .delete("product_tag", SHOP, key(&["p-empty", "sale"]))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declared_schema_replicates_through_kafka_row_by_row() -> anyhow::Result<()> {
    let schema = catalog()?;
    let schema_file = catalog_file().display().to_string();
    let logs = tempfile::tempdir()?;
    let broker = KafkaCluster::start().await?;
    let brokers = broker.bootstrap_servers();
    let monolith_database = TestDatabase::create(Backend::Postgres).await?;
    let replica_database = TestDatabase::create(Backend::Postgres).await?;
    Store::migrate_to(&replica_database.url, MigrationOptions::default(), &schema).await?;
    let monolith = Monolith::connect_with_schema(&monolith_database.url, schema.clone()).await?;
    let spec = SeedSpec {
        seed: 24,
        tenants: 6,
        users_per_tenant_mean: 20.0,
        max_users_per_tenant: 200,
        ..SeedSpec::default()
    };
    let seeded = seed::run_declared(&monolith, &spec).await?;
    ensure!(seeded.scopes == 6, "seeded {seeded:?}");

    let monolith_port = free_port()?;
    let schema_environment = [("RECON_SCHEMA", schema_file.as_str())];
    let _relay = start_monolith_with(
        logs.path(),
        &monolith_database.url,
        monolith_port,
        &brokers,
        TOPIC,
        &schema_environment,
    )?;
    wait_for_port(monolith_port, Duration::from_secs(30)).await?;
    let admin_port = free_port()?;
    let admin = format!("127.0.0.1:{admin_port}");
    let mut replica = ReconProcess::start(
        "replica",
        &[
            "serve",
            "--database-url",
            &replica_database.url,
            "--kafka-bootstrap-servers",
            &brokers,
            "--kafka-topic",
            TOPIC,
            "--group-id",
            "catalog-replicas",
            "--admin-listen",
            &admin,
        ],
        &[("RUST_LOG", "info"), schema_environment[0]],
        logs.path().join("replica.log"),
    )?;
    wait_for_port(admin_port, Duration::from_secs(30)).await?;
    write_edge_cases(&monolith).await?;

    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(180) {
        let differences =
            compare_schema_databases(&schema, &monolith_database.url, &replica_database.url)
                .await?;
        if differences.is_empty() && differences.monolith_rows > 0 {
            last = None;
            break;
        }
        last = Some(differences);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some(differences) = last {
        anyhow::bail!(
            "the catalog replica did not converge: {} rows differ (monolith {}, replica {})\nonly in monolith: {:#?}\nonly in replica: {:#?}\nreplica log:\n{}",
            differences.total,
            differences.monolith_rows,
            differences.replica_rows,
            differences.only_in_monolith,
            differences.only_in_replica,
            replica.log()
        );
    }
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await?
        .text()
        .await?;
    let undecodable = metric_value(&metrics, "recon_consumer_events_undecodable_total")?;
    ensure!(undecodable == 0, "{undecodable} undecodable events");
    let exit = replica.terminate().await.context("stop the replica")?;
    ensure!(exit == Some(0), "replica exited with {exit:?} on SIGTERM");
    Ok(())
}
