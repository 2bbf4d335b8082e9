//! The monolith serving a declared schema unlike the default one
//! (`proto/schemas/catalog.toml`: shops, products with every field type,
//! variants with a composite key, tags, product tags referencing both), on
//! SQLite and PostgreSQL: writes over HTTP read back through the Source
//! API value for value, NULL is not empty text, JSON is canonical,
//! timestamps keep their milliseconds, composite cursors walk every page,
//! digests equal recon's own computation from the pages' rows, backups
//! restore under a new generation, the outbox holds declared events, bad
//! bodies are refused by field, and the independent row check compares a
//! catalog replica.

mod digests;
mod http;
mod verify;

use super::support::Server;
use anyhow::{Context, ensure};
use recon_core::schema::Schema;
use recon_tests::Backend;
use reqwest::Method;
use serde_json::{Value, json};

const CATALOG: &str = include_str!("../../../proto/schemas/catalog.toml");
const SHOP: &str = "shop-1";

fn catalog() -> Schema {
    Schema::parse(CATALOG).expect("the catalog schema is valid")
}

async fn start(backend: Backend) -> anyhow::Result<Server> {
    Server::start_with_schema(backend, None, catalog()).await
}

/// `method path` with a JSON body (none for `Value::Null`); status and
/// JSON answer.
async fn send(
    server: &Server,
    method: Method,
    path: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let mut request = server.request(method.clone(), path);
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    super::support::into_json(response).await
}

/// `PUT path` that must succeed.
async fn put(server: &Server, path: &str, body: Value) -> anyhow::Result<Value> {
    let (status, answer) = send(server, Method::PUT, path, body).await?;
    ensure!(status == 200, "PUT {path}: {status} {answer}");
    Ok(answer)
}

/// A product body with every field given.
fn product(title: &str) -> Value {
    json!({
        "title": title,
        "price_cents": -1999,
        "active": true,
        "attributes": {"b": null, "a": [1, 2]},
        "released_at": "2026-12-07T06:31:03.123Z",
        "state": "listed",
        "subtitle": "",
    })
}

/// A shop with products `p1`, `p2`, variants, tags and product tags.
async fn populate(server: &Server) -> anyhow::Result<()> {
    put(
        server,
        &format!("/v1/shops/{SHOP}"),
        json!({"title": "Shop"}),
    )
    .await?;
    for sku in ["p1", "p2"] {
        put(
            server,
            &format!("/v1/shops/{SHOP}/products/{sku}"),
            product(sku),
        )
        .await?;
    }
    for (sku, variant) in [("p1", "a"), ("p1", "b:x"), ("p2", "a"), ("p1", "B")] {
        put(
            server,
            &format!("/v1/shops/{SHOP}/variants/{sku}/{variant}"),
            json!({"label": format!("{sku} {variant}"), "stock": 3}),
        )
        .await?;
    }
    for tag in ["sale", "new"] {
        put(server, &format!("/v1/shops/{SHOP}/tags/{tag}"), Value::Null).await?;
    }
    for (sku, tag) in [("p1", "sale"), ("p2", "sale"), ("p2", "new")] {
        put(
            server,
            &format!("/v1/shops/{SHOP}/product-tags/{sku}/{tag}"),
            Value::Null,
        )
        .await?;
    }
    Ok(())
}

/// Every item of a kind, walking pages of `limit` by `next_after`.
async fn walk(server: &Server, plural: &str, limit: u32) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/shops/{SHOP}/{plural}?limit={limit}");
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        let (status, page) = server.get(&path).await?;
        ensure!(status == 200, "GET {path}: {status} {page}");
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok(items),
        }
    }
    anyhow::bail!("{plural}: more than 100 pages")
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Runs `check` against a catalog monolith on each backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(recon_tests::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(recon_tests::Backend::Postgres).await
                }
            )*
        }
    };
}

pub(crate) use on_both_backends;
