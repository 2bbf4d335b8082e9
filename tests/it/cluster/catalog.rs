//! The whole story on a declared schema unlike the default one
//! (`proto/schemas/catalog.toml`): a monolith with its relay, Kafka and
//! three `recon serve --schema` replicas through etcd; drift made in SQL
//! on every kind (NULL for empty text, a JSON document's key order, a
//! timestamp a microsecond off, missing rows, a phantom); a cluster run
//! with digests, its units spread over the replicas and big shops split
//! into key ranges of composite keys; the replica equal row by row after.

use super::checks::{ensure_completed, units_done_once, wait_for_barrier};
use super::fixture::{Cluster, Settings};
use anyhow::ensure;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_run_repairs_a_replica_of_the_catalog_schema() -> anyhow::Result<()> {
    let cluster = Cluster::start(Settings::new(301).with_schema("catalog.toml")).await?;
    let outcome = repairs_drift(&cluster).await;
    cluster.finish(outcome)
}

async fn repairs_drift(cluster: &Cluster) -> anyhow::Result<()> {
    for statement in [
        // A nullable text field: NULL where the source has text (or empty).
        "UPDATE catalog_products SET subtitle = CASE WHEN subtitle IS NULL THEN '' ELSE NULL END \
         WHERE sku IN (SELECT sku FROM catalog_products WHERE NOT deleted ORDER BY sku LIMIT 7)",
        // The same documents written another way (PostgreSQL's jsonb text:
        // spaces, its own key order); JSON is compared as canonical text.
        "UPDATE catalog_products SET attributes = CAST(CAST(attributes AS jsonb) AS TEXT) \
         WHERE attributes IS NOT NULL AND attributes <> CAST(CAST(attributes AS jsonb) AS TEXT)",
        "UPDATE catalog_products SET released_at = TIMESTAMPTZ '2026-12-07 06:31:03.123001+00' \
         WHERE sku IN (SELECT sku FROM catalog_products WHERE NOT deleted ORDER BY title LIMIT 5)",
        "UPDATE catalog_variants SET stock = stock + 1 \
         WHERE variant_id IN (SELECT variant_id FROM catalog_variants WHERE NOT deleted ORDER BY variant_id LIMIT 9)",
        "DELETE FROM catalog_product_tags WHERE tag IN \
         (SELECT tag FROM catalog_product_tags WHERE NOT deleted ORDER BY tag DESC LIMIT 6)",
        "INSERT INTO catalog_tags (shop_id, name, generation, sequence, deleted) \
         SELECT shop_id, 'phantom-' || name, 1, 1, FALSE FROM catalog_tags WHERE NOT deleted LIMIT 3",
    ] {
        ensure!(
            cluster.replica_sql(statement).await? > 0,
            "drift changed nothing: {statement}"
        );
    }
    let drifted = cluster.differences().await?;
    ensure!(drifted.total > 20, "the drift is too small: {drifted:?}");

    let run = cluster.request_run().await?;
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(120)).await?;
    ensure_completed(&barrier)?;
    let tally = units_done_once(&cluster.history, &run).await?;
    eprintln!(
        "catalog run {run}: {} units ({} split out of big shops), done by {:?}",
        tally.units, tally.split_units, tally.done_by
    );
    ensure!(
        tally.split_units > 0,
        "no shop was split: the plan proves nothing about composite key ranges"
    );
    ensure!(
        tally.done_by.len() >= 2,
        "the units were not spread over replicas: {:?}",
        tally.done_by
    );
    cluster.wait_until_equal("after the catalog run").await
}
