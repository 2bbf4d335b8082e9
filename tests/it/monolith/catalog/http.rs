//! Writes and reads of the catalog over HTTP, the cascade, the outbox,
//! backups and the generic seed.

use super::{SHOP, catalog, encode, on_both_backends, populate, product, put, send, start, walk};
use anyhow::{Context, ensure};
use recon_core::schema::{DeclaredChange, FieldValue};
use recon_monolith::seed::{SeedSpec, run_declared};
use recon_tests::Backend;
use reqwest::Method;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

on_both_backends!(
    every_field_type_reads_back_through_the_source_api,
    null_is_not_empty_text_and_json_is_canonical,
    timestamps_keep_their_milliseconds,
    composite_cursors_walk_every_page,
    bad_bodies_are_refused_by_field,
    a_deletion_cascades_to_the_rows_referencing_it,
    the_outbox_holds_declared_events,
    a_restore_brings_the_backup_back_under_a_new_generation,
    a_seed_of_any_schema_is_deterministic_and_referentially_whole,
);

/// The item of `sku` in the shop's products.
async fn product_item(server: &super::Server, sku: &str) -> anyhow::Result<Value> {
    let items = walk(server, "products", 1000).await?;
    items
        .into_iter()
        .find(|item| item["sku"] == json!(sku))
        .with_context(|| format!("product {sku} listed"))
}

/// One value of plain SQL on the monolith's database.
async fn scalar(server: &super::Server, sql: &str) -> anyhow::Result<sea_orm::QueryResult> {
    let connection = Database::connect(server.database_url()).await?;
    let backend = connection.get_database_backend();
    let row = connection
        .query_one_raw(Statement::from_string(backend, sql.to_owned()))
        .await?
        .with_context(|| format!("{sql}: no row"))?;
    connection.close().await?;
    Ok(row)
}

async fn every_field_type_reads_back_through_the_source_api(
    backend: Backend,
) -> anyhow::Result<()> {
    let server = start(backend).await?;
    populate(&server).await?;
    let mut item = product_item(&server, "p1").await?;
    let version = item
        .as_object_mut()
        .and_then(|object| object.remove("version"))
        .context("a version")?;
    ensure!(
        item == json!({
            "sku": "p1", "title": "p1", "price_cents": -1999, "active": true,
            "attributes": {"a": [1, 2], "b": null},
            "released_at": "2026-12-07T06:31:03.123Z", "state": "listed", "subtitle": ""
        }),
        "{item}"
    );
    ensure!(version["generation"] == json!(1), "{version}");
    let (status, shops) = server.get("/v1/shops").await?;
    ensure!(status == 200, "{shops}");
    ensure!(
        shops["items"][0]["code"] == json!(SHOP) && shops["items"][0]["title"] == json!("Shop")
    );
    let (status, counts) = server.get(&format!("/v1/shops/{SHOP}/counts")).await?;
    ensure!(status == 200, "{counts}");
    let counted: Vec<&String> = counts.as_object().context("counts")?.keys().collect();
    ensure!(
        counts["products"] == json!(2)
            && counts["variants"] == json!(4)
            && counts["tags"] == json!(2)
            && counts["product-tags"] == json!(3),
        "{counts}"
    );
    ensure!(counted.len() == 5, "{counts}");
    server.stop().await
}

async fn null_is_not_empty_text_and_json_is_canonical(backend: Backend) -> anyhow::Result<()> {
    let server = start(backend).await?;
    populate(&server).await?;
    let path = |sku: &str| format!("/v1/shops/{SHOP}/products/{sku}");
    let mut with_null = product("null");
    with_null["subtitle"] = Value::Null;
    put(&server, &path("null"), with_null).await?;
    // Nullable fields left out are NULL.
    put(
        &server,
        &path("absent"),
        json!({"title": "t", "price_cents": 0, "active": false, "state": "draft"}),
    )
    .await?;
    let mut nested = product("nested");
    nested["attributes"] = json!({"z": {"y": 1, "x": [true, {"b": 2, "a": 1}]}, "a": "é"});
    put(&server, &path("nested"), nested).await?;
    ensure!(product_item(&server, "null").await?["subtitle"].is_null());
    ensure!(product_item(&server, "p1").await?["subtitle"] == json!(""));
    let absent = product_item(&server, "absent").await?;
    for field in ["attributes", "released_at", "subtitle"] {
        ensure!(absent[field].is_null(), "{field}: {absent}");
    }
    let text = server
        .request(Method::GET, &format!("/v1/shops/{SHOP}/products"))
        .send()
        .await?
        .text()
        .await?;
    let canonical = r#"{"a":"é","z":{"x":[true,{"a":1,"b":2}],"y":1}}"#;
    ensure!(
        text.contains(&format!("\"attributes\":{canonical}")),
        "{text}"
    );
    let stored = scalar(
        &server,
        "SELECT attributes, subtitle IS NULL AS missing FROM products WHERE sku = 'nested'",
    )
    .await?;
    ensure!(stored.try_get::<String>("", "attributes")? == canonical);
    let null = scalar(
        &server,
        "SELECT subtitle IS NULL AS missing FROM products WHERE sku = 'null'",
    )
    .await?;
    ensure!(null.try_get::<bool>("", "missing")?, "NULL stored as NULL");
    let empty = scalar(
        &server,
        "SELECT subtitle IS NULL AS missing FROM products WHERE sku = 'p1'",
    )
    .await?;
    ensure!(!empty.try_get::<bool>("", "missing")?, "'' stored as ''");
    server.stop().await
}

async fn timestamps_keep_their_milliseconds(backend: Backend) -> anyhow::Result<()> {
    let server = start(backend).await?;
    populate(&server).await?;
    for (written, read) in [
        ("2026-12-07T08:31:03.123+02:00", "2026-12-07T06:31:03.123Z"),
        ("2026-12-07T06:31:03Z", "2026-12-07T06:31:03.000Z"),
        ("1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"),
        ("0001-01-01T00:00:00.001Z", "0001-01-01T00:00:00.001Z"),
        ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
    ] {
        let mut body = product("t");
        body["released_at"] = json!(written);
        put(&server, &format!("/v1/shops/{SHOP}/products/t"), body).await?;
        let item = product_item(&server, "t").await?;
        ensure!(item["released_at"] == json!(read), "{written}: {item}");
    }
    let mut body = product("t");
    body["released_at"] = json!("2026-12-07T06:31:03.123Z");
    put(
        &server,
        &format!("/v1/shops/{SHOP}/products/t"),
        body.clone(),
    )
    .await?;
    let stored = match backend {
        Backend::Postgres => scalar(
            &server,
            "SELECT released_at = timestamptz '2026-12-07 06:31:03.123+00' AS exact FROM products WHERE sku = 't'",
        )
        .await?
        .try_get::<bool>("", "exact")?,
        Backend::Sqlite => {
            scalar(&server, "SELECT released_at FROM products WHERE sku = 't'")
                .await?
                .try_get::<i64>("", "released_at")?
                == 1_796_625_063_123_000
        }
    };
    ensure!(stored, "the stored timestamp is the written instant");
    body["released_at"] = json!("2026-12-07T06:31:03.1234Z");
    let (status, error) = send(
        &server,
        Method::PUT,
        &format!("/v1/shops/{SHOP}/products/t"),
        body,
    )
    .await?;
    ensure!(
        status == 400
            && error["error"]
                .as_str()
                .unwrap_or_default()
                .contains("released_at"),
        "{status} {error}"
    );
    server.stop().await
}

async fn composite_cursors_walk_every_page(backend: Backend) -> anyhow::Result<()> {
    let server = start(backend).await?;
    populate(&server).await?;
    for variant in ["ä", "a:b:c", "Z", "10", "9", "a b"] {
        put(
            &server,
            &format!("/v1/shops/{SHOP}/variants/p2/{}", encode(variant)),
            json!({"label": variant, "stock": -1}),
        )
        .await?;
    }
    let key = |item: &Value, fields: [&str; 2]| -> (String, String) {
        (
            item[fields[0]].as_str().unwrap_or_default().to_owned(),
            item[fields[1]].as_str().unwrap_or_default().to_owned(),
        )
    };
    let all = walk(&server, "variants", 1000).await?;
    for limit in [1, 2, 3] {
        let walked = walk(&server, "variants", limit).await?;
        ensure!(walked == all, "limit {limit}: pages differ from one page");
    }
    let keys: Vec<(String, String)> = all
        .iter()
        .map(|item| key(item, ["sku", "variant_id"]))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|left, right| {
        (left.0.as_bytes(), left.1.as_bytes()).cmp(&(right.0.as_bytes(), right.1.as_bytes()))
    });
    ensure!(keys == sorted && keys.len() == 10, "{keys:?}");
    let tags = walk(&server, "product-tags", 1).await?;
    let tag_keys: Vec<(String, String)> =
        tags.iter().map(|item| key(item, ["sku", "tag"])).collect();
    ensure!(
        tag_keys
            == [("p1", "sale"), ("p2", "new"), ("p2", "sale")]
                .map(|(sku, tag)| (sku.to_owned(), tag.to_owned())),
        "{tag_keys:?}"
    );
    // A page within ranges of composite keys.
    let (status, page) = send(
        &server,
        Method::POST,
        &format!("/v1/shops/{SHOP}/pages/variants"),
        json!({"ranges": [{"until": "p1:a"}, {"after": "p2:9", "until": "p2:a:b:c"}], "limit": 10}),
    )
    .await?;
    ensure!(status == 200, "{page}");
    let within: Vec<(String, String)> = page["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|item| key(item, ["sku", "variant_id"]))
        .collect();
    let expected = [
        ("p1", "B"),
        ("p1", "a"),
        ("p2", "Z"),
        ("p2", "a"),
        ("p2", "a b"),
        ("p2", "a:b:c"),
    ]
    .map(|(sku, variant)| (sku.to_owned(), variant.to_owned()));
    ensure!(within == expected, "{within:?}");
    server.stop().await
}

async fn bad_bodies_are_refused_by_field(backend: Backend) -> anyhow::Result<()> {
    let server = start(backend).await?;
    populate(&server).await?;
    let product_path = format!("/v1/shops/{SHOP}/products/p9");
    let with = |field: &str, value: Value| {
        let mut body = product("p9");
        body[field] = value;
        body
    };
    let long_title = "x".repeat(201);
    let mut missing = product("p9");
    missing.as_object_mut().context("object")?.remove("title");
    for (path, body, status, needle) in [
        (
            product_path.clone(),
            with("price_cents", json!("12")),
            400,
            "price_cents",
        ),
        (
            product_path.clone(),
            with("price_cents", json!(1.5)),
            400,
            "price_cents",
        ),
        (
            product_path.clone(),
            with("active", json!(1)),
            400,
            "active",
        ),
        (
            product_path.clone(),
            with("state", json!("gone")),
            400,
            "unknown variant `gone`",
        ),
        (
            product_path.clone(),
            with("title", json!(long_title)),
            400,
            "title",
        ),
        (
            product_path.clone(),
            with("title", Value::Null),
            400,
            "title",
        ),
        (
            product_path.clone(),
            with("colour", json!("red")),
            400,
            "unknown field `colour`",
        ),
        (product_path.clone(), missing, 400, "missing field `title`"),
        (product_path.clone(), json!([1, 2]), 400, "body"),
        (
            format!("/v1/shops/{SHOP}/products/a:b"),
            product("a:b"),
            400,
            "must not contain ':'",
        ),
        (
            format!("/v1/shops/{SHOP}/variants/p1/v"),
            json!({"label": "l", "stock": "many"}),
            400,
            "stock",
        ),
        (
            format!("/v1/shops/{SHOP}/variants/nope/v"),
            json!({"label": "l", "stock": 1}),
            409,
            "product \"nope\" does not exist",
        ),
        (
            "/v1/shops/no-shop/variants/p1/v".to_owned(),
            json!({"label": "l", "stock": 1}),
            404,
            "shop \"no-shop\"",
        ),
    ] {
        let (got, answer) = send(&server, Method::PUT, &path, body.clone()).await?;
        let message = answer["error"].as_str().unwrap_or_default();
        ensure!(
            got == status && message.contains(needle),
            "PUT {path} {body}: {got} {answer}, expected {status} naming {needle:?}"
        );
    }
    let (got, answer) = send(
        &server,
        Method::PUT,
        &format!("/v1/shops/{SHOP}/product-tags/p1/none"),
        Value::Null,
    )
    .await?;
    ensure!(got == 409, "a tag that does not exist: {got} {answer}");
    server.stop().await
}

async fn a_deletion_cascades_to_the_rows_referencing_it(backend: Backend) -> anyhow::Result<()> {
    let server = start(backend).await?;
    populate(&server).await?;
    let before = server.monolith.outbox_after(0, 1_000_000).await?;
    let last_id = before.last().map_or(0, |entry| entry.id);
    let (status, outcome) = send(
        &server,
        Method::DELETE,
        &format!("/v1/shops/{SHOP}/products/p1"),
        Value::Null,
    )
    .await?;
    ensure!(
        status == 200 && outcome["changes"] == json!(5),
        "{status} {outcome}"
    );
    let events = server.monolith.outbox_after(last_id, 1_000_000).await?;
    let mut deleted = Vec::new();
    for entry in &events {
        match recon_proto::decode_declared(&entry.payload, &catalog())? {
            DeclaredChange::Delete(row) => {
                deleted.push(format!("{} {}", row.kind, row.key.join(":")))
            }
            other => anyhow::bail!("not a deletion: {other:?}"),
        }
    }
    ensure!(
        deleted
            == [
                "variant p1:B",
                "variant p1:a",
                "variant p1:b:x",
                "product_tag p1:sale",
                "product p1"
            ],
        "{deleted:?}"
    );
    ensure!(walk(&server, "variants", 10).await?.len() == 1);
    let (status, outcome) = send(
        &server,
        Method::DELETE,
        &format!("/v1/shops/{SHOP}"),
        Value::Null,
    )
    .await?;
    // p2, its variant and its two tags, the two tags, the shop.
    ensure!(
        status == 200 && outcome["changes"] == json!(7),
        "{status} {outcome}"
    );
    let (status, _) = server.get(&format!("/v1/shops/{SHOP}/products")).await?;
    ensure!(status == 404, "the shop is gone");
    server.stop().await
}

async fn the_outbox_holds_declared_events(backend: Backend) -> anyhow::Result<()> {
    let server = start(backend).await?;
    populate(&server).await?;
    let schema = catalog();
    let entries = server.monolith.outbox_after(0, 1_000_000).await?;
    let (rows, watermark) = server.monolith.snapshot().await?;
    ensure!(
        entries.len() as u64 == watermark.sequence,
        "one event per change"
    );
    let mut latest = std::collections::BTreeMap::new();
    for entry in &entries {
        ensure!(
            recon_proto::decode_change(&entry.payload).is_err(),
            "a catalog event is not a typed event"
        );
        let change = recon_proto::decode_declared(&entry.payload, &schema)
            .context("decode a declared event")?;
        ensure!(change.row().version == entry.version && change.row().scope == entry.tenant_id);
        if let DeclaredChange::Upsert(row) = change {
            latest.insert((row.kind.clone(), row.key.clone()), row);
        }
    }
    for row in &rows {
        let event = latest
            .get(&(row.kind.clone(), row.key.clone()))
            .with_context(|| format!("an event of {row:?}"))?;
        ensure!(event == row, "{event:?} != {row:?}");
    }
    ensure!(latest.len() == rows.len());
    let product = rows
        .iter()
        .find(|row| row.kind == "product")
        .context("a product")?;
    ensure!(product.values[3] == FieldValue::Json(r#"{"a":[1,2],"b":null}"#.to_owned()));
    server.stop().await
}

async fn a_restore_brings_the_backup_back_under_a_new_generation(
    backend: Backend,
) -> anyhow::Result<()> {
    let server = start(backend).await?;
    populate(&server).await?;
    let (backed_up, _) = server.monolith.snapshot().await?;
    let (status, backup) = send(&server, Method::POST, "/admin/backups", Value::Null).await?;
    ensure!(status == 200, "{backup}");
    put(
        &server,
        &format!("/v1/shops/{SHOP}/products/p1"),
        product("changed"),
    )
    .await?;
    put(
        &server,
        &format!("/v1/shops/{SHOP}/products/p9"),
        product("new"),
    )
    .await?;
    send(
        &server,
        Method::DELETE,
        &format!("/v1/shops/{SHOP}/tags/new"),
        Value::Null,
    )
    .await?;
    let events_before = server.monolith.outbox_backlog().await?;
    let backup_id = backup["backup_id"].as_i64().context("backup id")?;
    let (status, restored) = send(
        &server,
        Method::POST,
        &format!("/admin/backups/{backup_id}/restore"),
        Value::Null,
    )
    .await?;
    ensure!(
        status == 200 && restored["generation"] == json!(2),
        "{restored}"
    );
    let (rows, watermark) = server.monolith.snapshot().await?;
    ensure!(rows == backed_up, "the backup's rows, versions included");
    ensure!(watermark.generation == 2);
    ensure!(
        server.monolith.outbox_backlog().await? == events_before,
        "a restore emits no events"
    );
    let outcome = put(
        &server,
        &format!("/v1/shops/{SHOP}/tags/later"),
        Value::Null,
    )
    .await?;
    ensure!(outcome["version"]["generation"] == json!(2), "{outcome}");
    server.stop().await
}

async fn a_seed_of_any_schema_is_deterministic_and_referentially_whole(
    backend: Backend,
) -> anyhow::Result<()> {
    let spec = SeedSpec {
        seed: 11,
        tenants: 6,
        users_per_tenant_mean: 8.0,
        ..SeedSpec::default()
    };
    let mut snapshots = Vec::new();
    for _ in 0..2 {
        let server = start(backend).await?;
        let summary = run_declared(&server.monolith, &spec).await?;
        ensure!(
            summary.scopes == 6 && summary.rows["shops"] == 6,
            "{summary:?}"
        );
        let (rows, watermark) = server.monolith.snapshot().await?;
        ensure!(
            rows.len() as u64 == watermark.sequence,
            "one version per row"
        );
        ensure!(
            rows.iter().any(|row| row.kind == "product_tag"),
            "product tags seeded"
        );
        for row in &rows {
            row.check(&catalog(), true)?;
        }
        snapshots.push(rows);
        server.stop().await?;
    }
    ensure!(snapshots[0] == snapshots[1], "same spec, same rows");
    Ok(())
}

#[tokio::test]
async fn a_database_holding_another_schema_is_refused() -> anyhow::Result<()> {
    let server = start(Backend::Sqlite).await?;
    populate(&server).await?;
    let error = recon_monolith::Monolith::connect(server.database_url())
        .await
        .expect_err("the default schema on a catalog database");
    ensure!(
        error.kind() == recon_monolith::ErrorKind::Conflict
            && error.to_string().contains("holds a schema of kinds shop"),
        "{error}"
    );
    let again = recon_monolith::Monolith::connect_with_schema(server.database_url(), catalog())
        .await
        .context("the same schema opens it again")?;
    ensure!(again.watermark().await?.sequence > 0);
    server.stop().await
}

/// The default schema's pages and counts, byte for byte as they were served
/// before schemas were declared.
#[tokio::test]
async fn the_default_schemas_json_is_unchanged() -> anyhow::Result<()> {
    let server = super::Server::start(Backend::Sqlite, None).await?;
    put(&server, "/v1/tenants/t1", json!({"name": "T \"1\""})).await?;
    put(
        &server,
        "/v1/tenants/t1/users/u1",
        json!({"email": "e@x", "display_name": "É", "status": "disabled"}),
    )
    .await?;
    put(&server, "/v1/tenants/t1/groups/g1", json!({"name": "G"})).await?;
    put(&server, "/v1/tenants/t1/groups/g1/members/u1", Value::Null).await?;
    let text = |path: &'static str| {
        let request = server.request(Method::GET, path);
        async move { anyhow::Ok(request.send().await?.text().await?) }
    };
    for (path, expected) in [
        (
            "/v1/tenants",
            r#"{"items":[{"id":"t1","name":"T \"1\"","version":{"generation":1,"sequence":1}}],"watermark":{"generation":1,"sequence":4},"next_after":null}"#,
        ),
        (
            "/v1/tenants/t1/users?limit=1",
            r#"{"items":[{"id":"u1","email":"e@x","display_name":"É","status":"disabled","version":{"generation":1,"sequence":2}}],"watermark":{"generation":1,"sequence":4},"next_after":null}"#,
        ),
        (
            "/v1/tenants/t1/memberships",
            r#"{"items":[{"group_id":"g1","user_id":"u1","version":{"generation":1,"sequence":4}}],"watermark":{"generation":1,"sequence":4},"next_after":null}"#,
        ),
        (
            "/v1/tenants/t1/counts",
            r#"{"users":1,"groups":1,"memberships":1,"watermark":{"generation":1,"sequence":4}}"#,
        ),
    ] {
        let body = text(path).await?;
        ensure!(body == expected, "{path}: {body}");
    }
    server.stop().await
}
