//! The catalog's range digests (PostgreSQL) equal what recon computes from
//! the rows the Source API pages hold — `row_hash_of_values` and
//! `digest::element`, in Rust — for every scoped kind, a composite key's
//! buckets included; a SQLite monolith offers none.

use super::{SHOP, catalog, encode, populate, put, start};
use anyhow::{Context, ensure};
use recon_core::RangeDigest;
use recon_core::digest::element;
use recon_core::schema::row_hash_of_values;
use recon_tests::Backend;
use serde_json::{Value, json};

/// Every row of `plural` as `(key, element)`, in key order, from the
/// monolith's pages.
async fn elements(server: &super::Server, plural: &str) -> anyhow::Result<Vec<(Vec<String>, i64)>> {
    let schema = catalog();
    let kind = schema.kind(plural).context("a declared kind")?;
    let page = server
        .monolith
        .page(plural, Some(SHOP), None, 10_000, &[])
        .await?;
    ensure!(page.next_after.is_none(), "one page holds them all");
    let mut elements = Vec::new();
    for index in 0..page.rows.len() {
        let row = page.row(index);
        let key: Vec<&str> = row.key.iter().map(String::as_str).collect();
        let hash = row_hash_of_values(kind, &key, row.values);
        elements.push((row.key.to_vec(), element(&hash, row.version)));
    }
    Ok(elements)
}

fn digest_of<'a>(elements: impl Iterator<Item = &'a (Vec<String>, i64)>) -> RangeDigest {
    let mut digest = RangeDigest::default();
    for (_, element) in elements {
        digest.add(*element);
    }
    digest
}

fn cursor_key(cursor: &str, parts: usize) -> Vec<String> {
    cursor.splitn(parts, ':').map(str::to_owned).collect()
}

#[tokio::test]
async fn postgres_digests_equal_recons_elements_of_the_pages_rows() -> anyhow::Result<()> {
    let server = start(Backend::Postgres).await?;
    populate(&server).await?;
    for number in 0..20 {
        let sku = format!("s{number:02}");
        let mut body = super::product(&sku);
        if number % 3 == 0 {
            body["attributes"] = Value::Null;
            body["released_at"] = Value::Null;
            body["subtitle"] = Value::Null;
        }
        body["released_at"] = if number % 3 == 1 {
            json!(format!("20{number:02}-01-02T03:04:05.{number:03}Z"))
        } else {
            body["released_at"].clone()
        };
        put(&server, &format!("/v1/shops/{SHOP}/products/{sku}"), body).await?;
        for variant in ["x", "y:z"] {
            put(
                &server,
                &format!("/v1/shops/{SHOP}/variants/{sku}/{}", encode(variant)),
                json!({"label": variant, "stock": number}),
            )
            .await?;
        }
    }
    let (status, whole) = server.get(&format!("/v1/shops/{SHOP}/digests")).await?;
    ensure!(status == 200, "{whole}");
    for plural in ["products", "variants", "tags", "product-tags"] {
        let computed = digest_of(elements(&server, plural).await?.iter());
        ensure!(
            whole[plural] == json!({"count": computed.count, "digest": computed.sum_hex()}),
            "{plural}: {whole}"
        );
    }
    let (status, all) = server.get("/v1/digests").await?;
    ensure!(status == 200, "{all}");
    ensure!(
        all["shops"][0]["code"] == json!(SHOP) && all["shops"][0]["variants"] == whole["variants"],
        "{all}"
    );
    // Buckets of a composite key's range: each bucket's digest is the sum of
    // the elements of the rows after the previous bucket's bound, up to its
    // own.
    let variants = elements(&server, "variants").await?;
    let after = cursor_key("s03:x", 2);
    let until = cursor_key("s17:y:z", 2);
    let (status, answer) = server
        .get(&format!(
            "/v1/shops/{SHOP}/digests/variants?after={}&until={}&buckets=4",
            encode("s03:x"),
            encode("s17:y:z")
        ))
        .await?;
    ensure!(status == 200, "{answer}");
    let ranges = answer["ranges"].as_array().context("ranges")?;
    ensure!(ranges.len() == 4, "{answer}");
    let mut lower = after.clone();
    for range in ranges {
        let upper = range["until"]
            .as_str()
            .map_or(until.clone(), |cursor| cursor_key(cursor, 2));
        let inside = variants
            .iter()
            .filter(|(key, _)| *key > lower && *key <= upper);
        let computed = digest_of(inside);
        ensure!(
            range["count"] == json!(computed.count) && range["digest"] == json!(computed.sum_hex()),
            "range up to {upper:?}: {range} vs {computed:?}"
        );
        lower = upper;
    }
    ensure!(lower == until, "the last range ends at `until`");
    server.stop().await
}

#[tokio::test]
async fn sqlite_offers_no_digests() -> anyhow::Result<()> {
    let server = start(Backend::Sqlite).await?;
    populate(&server).await?;
    let (status, capabilities) = server.get("/v1/capabilities").await?;
    ensure!(
        status == 200 && capabilities["digests"] == json!(false),
        "{capabilities}"
    );
    let (status, _) = server
        .get(&format!("/v1/shops/{SHOP}/digests/variants"))
        .await?;
    ensure!(status == 404);
    server.stop().await
}
