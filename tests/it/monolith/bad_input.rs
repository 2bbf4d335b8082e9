//! Bad input gets a clear 4xx JSON error naming the problem, never a panic
//! or a 5xx.

use super::support::{Server, into_json};
use anyhow::ensure;
use recon_tests::Backend;
use reqwest::Method;
use serde_json::json;

/// Sends a request and checks status and that the JSON error mentions
/// `needle`.
async fn expect_error(
    server: &Server,
    method: Method,
    path: &str,
    body: Option<&str>,
    status: u16,
    needle: &str,
) -> anyhow::Result<()> {
    let mut request = server.request(method.clone(), path);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let (got, json) = into_json(request.send().await?).await?;
    let message = json["error"].as_str().unwrap_or_default().to_owned();
    ensure!(
        got == status,
        "{method} {path} {body:?}: status {got}, expected {status}; {json}"
    );
    ensure!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "{method} {path} {body:?}: error {message:?} does not mention {needle:?}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_named_json_errors() -> anyhow::Result<()> {
    let server = Server::start(Backend::Postgres, None).await?;
    let tenant = "/v1/tenants/t1";
    let (status, _) = into_json(
        server
            .request(Method::PUT, tenant)
            .json(&json!({"name": "T1"}))
            .send()
            .await?,
    )
    .await?;
    ensure!(status == 200, "create tenant: {status}");

    expect_error(
        &server,
        Method::PUT,
        tenant,
        Some("{\"name\": "),
        400,
        "body",
    )
    .await?;
    expect_error(&server, Method::PUT, tenant, Some("[1, 2]"), 400, "body").await?;
    expect_error(
        &server,
        Method::PUT,
        tenant,
        Some(r#"{"name": "x", "colour": "red"}"#),
        400,
        "unknown field `colour`",
    )
    .await?;
    expect_error(
        &server,
        Method::PUT,
        tenant,
        Some("{}"),
        400,
        "missing field `name`",
    )
    .await?;
    expect_error(
        &server,
        Method::PUT,
        tenant,
        Some(r#"{"name": 5}"#),
        400,
        "invalid type",
    )
    .await?;
    let (status, body) = into_json(
        server
            .request(Method::PUT, tenant)
            .body(r#"{"name":"x"}"#)
            .send()
            .await?,
    )
    .await?;
    ensure!(
        status == 400
            && body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("Content-Type"),
        "no content type: {status} {body}"
    );

    let user = "/v1/tenants/t1/users/u1";
    expect_error(
        &server,
        Method::PUT,
        user,
        Some(r#"{"email": "e", "display_name": "d", "status": "gone"}"#),
        400,
        "unknown variant `gone`",
    )
    .await?;
    expect_error(
        &server,
        Method::PUT,
        user,
        Some(r#"{"email": "e", "display_name": "d", "status": "active", "admin": true}"#),
        400,
        "unknown field `admin`",
    )
    .await?;
    expect_error(
        &server,
        Method::PUT,
        user,
        Some(r#"{"email": "e\u0000", "display_name": "d", "status": "active"}"#),
        400,
        "email",
    )
    .await?;
    let long_id = "x".repeat(201);
    expect_error(
        &server,
        Method::PUT,
        &format!("/v1/tenants/t1/users/{long_id}"),
        Some(r#"{"email": "e", "display_name": "d", "status": "active"}"#),
        400,
        "user id",
    )
    .await?;
    expect_error(
        &server,
        Method::PUT,
        "/v1/tenants/t1/users/%01bell",
        Some(r#"{"email": "e", "display_name": "d", "status": "active"}"#),
        400,
        "control character",
    )
    .await?;
    expect_error(
        &server,
        Method::PUT,
        &format!("/v1/tenants/{long_id}"),
        Some(r#"{"name": "x"}"#),
        400,
        "tenant id",
    )
    .await?;
    expect_error(
        &server,
        Method::PUT,
        "/v1/tenants/t1/groups/a:b",
        Some(r#"{"name": "x"}"#),
        400,
        "group id",
    )
    .await?;

    // References and existence.
    expect_error(
        &server,
        Method::PUT,
        "/v1/tenants/nope/users/u1",
        Some(r#"{"email": "e", "display_name": "d", "status": "active"}"#),
        404,
        "tenant",
    )
    .await?;
    expect_error(
        &server,
        Method::PUT,
        "/v1/tenants/t1/groups/g1/members/u1",
        None,
        409,
        "does not exist",
    )
    .await?;
    expect_error(
        &server,
        Method::DELETE,
        "/v1/tenants/t1/users/ghost",
        None,
        404,
        "ghost",
    )
    .await?;
    expect_error(
        &server,
        Method::DELETE,
        "/v1/tenants/ghost",
        None,
        404,
        "ghost",
    )
    .await?;

    // Query parameters.
    for (query, needle) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=abc", "limit"),
        ("after=", "after"),
        ("page=2", "page"),
    ] {
        expect_error(
            &server,
            Method::GET,
            &format!("/v1/tenants/t1/users?{query}"),
            None,
            400,
            needle,
        )
        .await?;
    }
    expect_error(
        &server,
        Method::GET,
        "/v1/tenants?limit=%ZZ",
        None,
        400,
        "limit",
    )
    .await?;

    // Routing.
    expect_error(&server, Method::GET, "/v1/nothing-here", None, 404, "route").await?;
    expect_error(&server, Method::PATCH, tenant, None, 405, "not allowed").await?;

    // Nothing above changed the data beyond the first tenant.
    let (rows, _) = server.monolith.snapshot_rows().await?;
    ensure!(rows.len() == 1, "bad requests must not write: {rows:?}");
    server.stop().await
}
