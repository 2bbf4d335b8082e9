//! Declared schemas on a real PostgreSQL: the tables `recon schema ddl`
//! creates for the catalog schema, and their generated digest column,
//! which must equal the element recon computes in Rust for every field
//! type, NULLs, negative and sub-millisecond timestamps included.

use recon_core::Version;
use recon_core::digest::element;
use recon_core::schema::{FieldValue, Schema, row_hash_of_values};
use recon_store::schema_ddl;
use recon_tests::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

const CATALOG: &str = include_str!("../../proto/schemas/catalog.toml");

/// One product row: its values as SQL literals and as field values.
struct Product {
    sql: &'static str,
    values: Vec<FieldValue>,
}

fn products() -> Vec<(&'static str, Product)> {
    let text = |value: &str| FieldValue::Text(value.to_owned());
    vec![
        (
            "p-full",
            Product {
                sql: "'Lamp', -1999, true, '{\"a\":[1,2],\"b\":null}', \
                      timestamptz '2026-12-07T06:31:03.123Z', 'listed', 'Desk lamp'",
                values: vec![
                    text("Lamp"),
                    FieldValue::Integer(-1999),
                    FieldValue::Boolean(true),
                    FieldValue::Json("{\"a\":[1,2],\"b\":null}".into()),
                    FieldValue::Timestamp(1_796_625_063_123_000),
                    text("listed"),
                    text("Desk lamp"),
                ],
            },
        ),
        (
            "p-nulls",
            Product {
                sql: "'', 0, false, NULL, NULL, 'draft', NULL",
                values: vec![
                    text(""),
                    FieldValue::Integer(0),
                    FieldValue::Boolean(false),
                    FieldValue::Null,
                    FieldValue::Null,
                    text("draft"),
                    FieldValue::Null,
                ],
            },
        ),
        (
            "p-empty-text",
            Product {
                sql: "'Ünïcode \\ back', 9223372036854775807, false, '[]', \
                      timestamptz '1960-01-01T00:00:00.000001Z', 'retired', ''",
                values: vec![
                    text("Ünïcode \\ back"),
                    FieldValue::Integer(i64::MAX),
                    FieldValue::Boolean(false),
                    FieldValue::Json("[]".into()),
                    FieldValue::Timestamp(-315_619_199_999_999),
                    text("retired"),
                    text(""),
                ],
            },
        ),
    ]
}

#[tokio::test]
async fn postgres_digests_of_a_declared_schema_equal_recons_elements() {
    let schema = Schema::parse(CATALOG).expect("the catalog schema is valid");
    let database = TestDatabase::create(Backend::Postgres)
        .await
        .expect("test database");
    let connection = Database::connect(&database.url).await.expect("connect");
    for statement in schema_ddl(&schema, DbBackend::Postgres) {
        connection
            .execute_unprepared(&statement)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    let product = schema.kind("product").expect("product");
    let version = Version::new(3, 7);
    for (sku, row) in products() {
        connection
            .execute_unprepared(&format!(
                "INSERT INTO catalog_products (shop_id, sku, title, price_cents, active, \
                 attributes, released_at, state, subtitle, generation, sequence, \
                 deleted) VALUES ('shop-1', '{sku}', {}, 3, 7, false)",
                row.sql
            ))
            .await
            .expect("insert product");
        let stored = connection
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT digest FROM catalog_products WHERE sku = '{sku}'"),
            ))
            .await
            .expect("read digest")
            .expect("one row");
        let stored: i64 = stored.try_get("", "digest").expect("digest column");
        let computed = element(&row_hash_of_values(product, &[sku], &row.values), version);
        assert_eq!(
            stored, computed,
            "product {sku}: PostgreSQL and recon disagree"
        );
    }
    // A composite key and a kind without data fields.
    connection
        .execute_unprepared(
            "INSERT INTO catalog_product_tags (shop_id, sku, tag, generation, sequence, \
             deleted) VALUES ('shop-1', 'p-full', 'sale', 3, 7, false)",
        )
        .await
        .expect("insert product tag");
    let stored = connection
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT digest FROM catalog_product_tags".to_owned(),
        ))
        .await
        .expect("read digest")
        .expect("one row");
    let stored: i64 = stored.try_get("", "digest").expect("digest column");
    let product_tag = schema.kind("product_tag").expect("product_tag");
    assert_eq!(
        stored,
        element(
            &row_hash_of_values(product_tag, &["p-full", "sale"], &[]),
            version
        )
    );
}

/// Runs `recon schema <arguments>`; its exit code and standard output.
fn recon_schema(arguments: &[&str]) -> (Option<i32>, String) {
    let binary = recon_tests::recon_build::build().expect("build recon");
    let output = std::process::Command::new(binary)
        .arg("schema")
        .args(arguments)
        .output()
        .expect("run recon schema");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code(), format!("{stdout}{stderr}"))
}

#[test]
fn recon_schema_check_names_every_problem_of_a_bad_file() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
        scope = "account"
        [[kind]]
        name = "account"
        plural = "accounts"
        table = "accounts"
        key = ["id"]
        [[kind]]
        name = "binding"
        plural = "bindings"
        table = "bindings"
        key = []
        references = ["role"]
        field = [{ name = "sequence", type = "float" }]
        "#,
    )
    .expect("write schema");
    let path = path.to_str().expect("utf-8 path");
    let (code, output) = recon_schema(&["check", "--schema", path]);
    assert_eq!(code, Some(1), "{output}");
    for problem in [
        "invalid schema (4 problems)",
        "kind \"binding\" has no key field",
        "\"sequence\" is a column recon adds to every kind",
        "unknown type \"float\"",
        "kind \"binding\" references \"role\", which is not a declared kind",
    ] {
        assert!(
            output.contains(problem),
            "{problem:?} missing from:\n{output}"
        );
    }
    let (code, output) = recon_schema(&["check", "--schema", "/nonexistent/schema.toml"]);
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("read schema file /nonexistent/schema.toml"),
        "{output}"
    );
}

#[tokio::test]
async fn the_ddl_recon_schema_prints_creates_the_tables_on_postgres() {
    let (code, ddl) = recon_schema(&[
        "ddl",
        "--schema",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/schemas/catalog.toml"),
    ]);
    assert_eq!(code, Some(0), "{ddl}");
    let database = TestDatabase::create(Backend::Postgres)
        .await
        .expect("test database");
    let connection = Database::connect(&database.url).await.expect("connect");
    connection
        .execute_unprepared(&ddl)
        .await
        .unwrap_or_else(|error| panic!("{error}:\n{ddl}"));
    let tables = connection
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM information_schema.columns \
             WHERE table_name LIKE 'catalog_%' AND column_name = 'digest'"
                .to_owned(),
        ))
        .await
        .expect("count digest columns")
        .expect("one row");
    let digest_columns: i64 = tables.try_get("", "n").expect("count");
    assert_eq!(digest_columns, 4, "every scoped kind has a digest column");
}

#[tokio::test]
async fn an_added_kind_and_field_evolve_a_postgres_store_and_its_digests() {
    let old = Schema::parse(CATALOG).expect("the catalog schema is valid");
    let evolved_text = CATALOG.replacen(
        "    { name = \"stock\", type = \"integer\" },\n",
        "    { name = \"stock\", type = \"integer\" },\n    { name = \"weight_grams\", type = \"integer\", nullable = true },\n",
        1,
    ) + "\n[[kind]]\nname = \"review\"\nplural = \"reviews\"\ntable = \"catalog_reviews\"\nkey = [\"id\"]\nreferences = [\"product\"]\nfield = [{ name = \"stars\", type = \"integer\" }]\n";
    let new = Schema::parse(&evolved_text).expect("the evolved schema is valid");
    let changes = recon_core::schema::evolution::compare(&old, &new).expect("taken");
    let database = TestDatabase::create(Backend::Postgres)
        .await
        .expect("test database");
    let connection = Database::connect(&database.url).await.expect("connect");
    let run = |statements: Vec<String>| {
        let connection = connection.clone();
        async move {
            for statement in statements {
                connection
                    .execute_unprepared(&statement)
                    .await
                    .unwrap_or_else(|error| panic!("{statement}: {error}"));
            }
        }
    };
    run(schema_ddl(&old, DbBackend::Postgres)).await;
    connection
        .execute_unprepared(
            "INSERT INTO catalog_variants (shop_id, sku, variant_id, label, stock, generation, \
             sequence, deleted) VALUES ('shop-1', 'p', 'v', 'Blue', 4, 2, 9, false)",
        )
        .await
        .expect("insert variant");
    let digest = |connection: sea_orm::DatabaseConnection| async move {
        let row = connection
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT digest FROM catalog_variants".to_owned(),
            ))
            .await
            .expect("read digest")
            .expect("one row");
        row.try_get::<i64>("", "digest").expect("digest column")
    };
    let version = Version::new(2, 9);
    let values = [FieldValue::Text("Blue".into()), FieldValue::Integer(4)];
    let before = element(
        &row_hash_of_values(old.kind("variant").expect("variant"), &["p", "v"], &values),
        version,
    );
    assert_eq!(digest(connection.clone()).await, before);
    run(recon_store::evolution_ddl(
        &new,
        &changes,
        DbBackend::Postgres,
    ))
    .await;
    let values = [values[0].clone(), values[1].clone(), FieldValue::Null];
    let after = element(
        &row_hash_of_values(new.kind("variant").expect("variant"), &["p", "v"], &values),
        version,
    );
    assert_ne!(before, after, "the element encodes the new field");
    assert_eq!(digest(connection.clone()).await, after);
    connection
        .execute_unprepared(
            "INSERT INTO catalog_reviews (shop_id, id, stars, generation, sequence, \
             deleted) VALUES ('shop-1', 'r1', 5, 2, 10, false)",
        )
        .await
        .expect("the new kind's table takes rows");
}

#[test]
fn recon_schema_openapi_prints_the_checked_in_documents() {
    let catalog = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/schemas/catalog.toml");
    let (code, document) = recon_schema(&["openapi", "--schema", catalog]);
    assert_eq!(code, Some(0), "{document}");
    assert_eq!(
        document,
        include_str!("../../proto/schemas/catalog.openapi.json"),
        "regenerate with recon schema openapi --schema proto/schemas/catalog.toml > proto/schemas/catalog.openapi.json"
    );
    let (code, document) = recon_schema(&["openapi"]);
    assert_eq!(code, Some(0), "{document}");
    let printed: serde_json::Value = serde_json::from_str(&document).expect("JSON");
    let checked_in: serde_json::Value =
        serde_json::from_str(include_str!("../../proto/source-api.openapi.json")).expect("JSON");
    assert_eq!(printed, checked_in);
}
