//! A declared schema unlike the default one (`proto/schemas/catalog.toml`:
//! shops, products with every field type, composite keys) end to end as
//! separate processes on loopback: a `recon monolith --schema` with its
//! outbox relay, an Apache Kafka broker, a `recon serve --schema` replica.
//! The replica must end equal to the monolith row by row, NULLs, JSON
//! documents and timestamps included, deletions too; then drift made in
//! SQL is repaired by `recon reconcile --schema` (digests on), and a shop
//! that vanishes from the source behind recon's back trips the guard.

use anyhow::{Context, ensure};
use recon_core::schema::{FieldValue, Schema, canonical_json};
use recon_monolith::Monolith;
use recon_monolith::seed::{self, SeedSpec};
use recon_monolith::verify::compare_schema_databases;
use recon_store::{MigrationOptions, Store};
use recon_tests::broker::{KafkaCluster, wait_for_port};
use recon_tests::process::{ReconProcess, metric_value, start_monolith_with};
use recon_tests::recon_build::recon_binary;
use recon_tests::{Backend, TestDatabase, free_port};
use sea_orm::{ConnectionTrait, Database, Statement};
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

    drift_in_sql(&replica_database.url).await?;
    let drifted =
        compare_schema_databases(&schema, &monolith_database.url, &replica_database.url).await?;
    ensure!(drifted.total >= 5, "the drift shows: {drifted:?}");
    let source_url = format!("http://127.0.0.1:{monolith_port}");
    let (code, output) = reconcile(&replica_database.url, &source_url, &schema_file).await?;
    ensure!(
        code == Some(0),
        "recon reconcile exited with {code:?}:\n{output}"
    );
    let after =
        compare_schema_databases(&schema, &monolith_database.url, &replica_database.url).await?;
    ensure!(
        after.is_empty(),
        "the run left {} differences: {:#?} {:#?}\n{output}",
        after.total,
        after.only_in_monolith,
        after.only_in_replica
    );

    // A shop gone from the source behind recon's back (no events): deleting
    // it from the replica is more than the guard allows.
    let vanished = vanish_a_shop(&monolith_database.url).await?;
    let (code, output) = reconcile(&replica_database.url, &source_url, &schema_file).await?;
    ensure!(
        code == Some(3),
        "the guard should have tripped ({code:?}):\n{output}"
    );
    ensure!(
        output.contains(&format!("tenant {vanished} gone from the source")),
        "the report names the vanished shop:\n{output}"
    );
    let kept = Database::connect(&replica_database.url)
        .await?
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("SELECT COUNT(*) AS n FROM catalog_products WHERE shop_id = '{vanished}' AND NOT deleted"),
        ))
        .await?
        .context("a count")?
        .try_get::<i64>("", "n")?;
    ensure!(kept > 0, "the guard kept the vanished shop's products");
    Ok(())
}

/// Drift the replica in SQL: NULL where the source has empty text, a JSON
/// document with its keys reordered, a timestamp a microsecond off, a row
/// deleted and a phantom.
async fn drift_in_sql(replica_url: &str) -> anyhow::Result<()> {
    let replica = Database::connect(replica_url).await?;
    for statement in [
        format!(
            "UPDATE catalog_products SET subtitle = NULL WHERE shop_id = '{SHOP}' AND sku = 'p-null'"
        ),
        format!(
            "UPDATE catalog_products SET attributes = '{{\"b\":1,\"a\":[true,null]}}' \
             WHERE shop_id = '{SHOP}' AND sku = 'p-empty'"
        ),
        format!(
            "UPDATE catalog_products SET released_at = released_at + interval '1 microsecond' \
             WHERE shop_id = '{SHOP}' AND sku = 'p-empty'"
        ),
        format!("DELETE FROM catalog_variants WHERE shop_id = '{SHOP}' AND sku = 'p-empty'"),
        format!(
            "INSERT INTO catalog_tags (shop_id, name, generation, sequence, deleted) \
             VALUES ('{SHOP}', 'phantom', 0, 1, false)"
        ),
    ] {
        let result = replica.execute_unprepared(&statement).await?;
        ensure!(result.rows_affected() == 1, "{statement}: {result:?}");
    }
    Ok(())
}

/// Deletes the first seeded shop from the monolith's tables in SQL, its
/// rows first (no outbox event: behind recon's back); returns its code.
async fn vanish_a_shop(monolith_url: &str) -> anyhow::Result<String> {
    let monolith = Database::connect(monolith_url).await?;
    let code: String = monolith
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!(
                "SELECT s.code FROM shops s WHERE s.code <> '{SHOP}' \
                 AND (SELECT COUNT(*) FROM products p WHERE p.shop_id = s.code) > 5 \
                 ORDER BY s.code LIMIT 1"
            ),
        ))
        .await?
        .context("a seeded shop with products")?
        .try_get("", "code")?;
    for table in ["product_tags", "variants", "tags", "products"] {
        monolith
            .execute_unprepared(&format!("DELETE FROM {table} WHERE shop_id = '{code}'"))
            .await?;
    }
    monolith
        .execute_unprepared(&format!("DELETE FROM shops WHERE code = '{code}'"))
        .await?;
    Ok(code)
}

/// Runs `recon reconcile` for the catalog schema; its exit code and
/// output.
async fn reconcile(
    replica_url: &str,
    source_url: &str,
    schema_file: &str,
) -> anyhow::Result<(Option<i32>, String)> {
    let output = tokio::process::Command::new(recon_binary()?)
        .args([
            "reconcile",
            "--database-url",
            replica_url,
            "--source-url",
            source_url,
            "--no-progress",
        ])
        .env("RECON_SCHEMA", schema_file)
        .output()
        .await
        .context("run recon reconcile")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.code(), text))
}
