//! Bad input gets a clear 4xx JSON error naming the problem, never a panic
//! or a 5xx; input the contract allows, however unusual, is not refused.

use super::support::{Server, into_json};
use anyhow::{Context, ensure};
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

/// Starts a monolith on PostgreSQL (it serves every route) with tenant
/// `t1` and one user.
async fn server_with_a_user() -> anyhow::Result<Server> {
    let server = Server::start(Backend::Postgres, None).await?;
    let tenant = recon_core::Tenant {
        id: "t1".to_owned(),
        name: "T1".to_owned(),
    };
    server.monolith.put_tenant(&tenant).await?;
    let user = recon_core::User {
        id: "u1".to_owned(),
        email: "u1@example.com".to_owned(),
        display_name: "U1".to_owned(),
        status: recon_core::UserStatus::Active,
    };
    server.monolith.put_user("t1", &user).await?;
    Ok(server)
}

/// JSON Schema's `integer` (the contract's type of `limit` and `buckets`)
/// is any number with a zero fractional part: `1922.0` is refused nowhere.
#[tokio::test]
async fn integral_numbers_are_integers_in_queries_and_bodies() -> anyhow::Result<()> {
    let server = server_with_a_user().await?;
    for path in [
        "/v1/tenants?limit=1922.0",
        "/v1/tenants/t1/users?limit=1922.0",
        "/v1/tenants/t1/memberships?limit=1e3",
        "/v1/tenants/t1/digests/users?buckets=2.0",
    ] {
        let (status, body) = server.get(path).await?;
        ensure!(status == 200, "GET {path}: {status} {body}");
    }
    let (status, body) = into_json(
        server
            .request(Method::POST, "/v1/tenants/t1/pages/users")
            .json(&json!({"ranges": [{}], "limit": 1922.0}))
            .send()
            .await?,
    )
    .await?;
    ensure!(
        status == 200 && body["items"][0]["id"] == json!("u1"),
        "POST with limit 1922.0: {status} {body}"
    );
    expect_error(
        &server,
        Method::GET,
        "/v1/tenants/t1/users?limit=1922.5",
        None,
        400,
        "limit",
    )
    .await?;
    expect_error(
        &server,
        Method::POST,
        "/v1/tenants/t1/pages/users",
        Some(r#"{"ranges": [{}], "limit": 1922.5}"#),
        400,
        "limit",
    )
    .await?;
    server.stop().await
}

/// A range of a multi-range page is a JSON object, as the contract says:
/// an array (which serde's derived structs would read as the fields in
/// order) is refused with a 400 naming the range, and so is a body that
/// is an array.
#[tokio::test]
async fn a_range_given_as_an_array_is_refused() -> anyhow::Result<()> {
    let server = server_with_a_user().await?;
    let pages = "/v1/tenants/t1/pages/users";
    for (body, needle) in [
        (
            r#"{"ranges": [[null, null]]}"#,
            "ranges[0]: invalid type: sequence",
        ),
        (
            r#"{"ranges": [{}, ["a", "b"]]}"#,
            "ranges[1]: invalid type: sequence",
        ),
        (
            r#"{"ranges": [[]]}"#,
            "an object with optional `after` and `until`",
        ),
        (
            r#"[null, null, [{}]]"#,
            "expected a page request: an object",
        ),
    ] {
        expect_error(&server, Method::POST, pages, Some(body), 400, needle).await?;
    }
    server.stop().await
}

/// The tenant id `*` is the replica store's scope of every tenant (its
/// fence and generation floor): a tenant of that id would raise every
/// tenant's floor with its own. The monolith refuses to create one and the
/// Source API to serve one, naming why. Before, both took it.
#[tokio::test]
async fn the_reserved_tenant_id_is_refused() -> anyhow::Result<()> {
    let server = Server::start(Backend::Postgres, None).await?;
    let needle = "reserved";
    expect_error(
        &server,
        Method::PUT,
        "/v1/tenants/%2A",
        Some(r#"{"name": "everyone"}"#),
        400,
        needle,
    )
    .await?;
    for path in [
        "/v1/tenants/%2A/users",
        "/v1/tenants/%2A/groups",
        "/v1/tenants/%2A/memberships",
        "/v1/tenants/%2A/digests/users",
    ] {
        expect_error(&server, Method::GET, path, None, 400, needle).await?;
    }
    server.stop().await
}

/// Connects as a role that does not exist, with a password, to the real
/// test server: the error must name the target without the password.
#[tokio::test]
async fn connection_errors_do_not_reveal_the_password() -> anyhow::Result<()> {
    let server_url = recon_tests::postgres_server_url()?;
    let after_scheme = server_url
        .split_once("://")
        .map_or(server_url.as_str(), |(_, rest)| rest);
    let host_and_path = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, rest)| rest);
    let url = format!("postgres://no_such_role:hunter2-secret@{host_and_path}");
    let error = match recon_monolith::Monolith::connect(&url).await {
        Ok(_) => anyhow::bail!("the role no_such_role must not exist"),
        Err(error) => error,
    };
    let mut chain = format!("{error} {error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    ensure!(!chain.contains("hunter2"), "the password leaked: {chain}");
    // A URL with a password still connects (the password is handed to the
    // driver separately; the test server trusts every password).
    let database = recon_tests::TestDatabase::create(Backend::Postgres).await?;
    let (scheme, rest) = database.url.split_once("://").context("scheme")?;
    let (user, host) = rest.split_once('@').context("user")?;
    let user = user.split(':').next().unwrap_or(user);
    let with_password = format!("{scheme}://{user}:s%40me-pw@{host}");
    recon_monolith::Monolith::connect(&with_password)
        .await?
        .close()
        .await?;
    ensure!(
        chain.contains("postgres://***@") && !chain.contains("no_such_role:"),
        "the error names the redacted target, user information removed: {chain}"
    );
    Ok(())
}

#[tokio::test]
async fn in_memory_sqlite_works() -> anyhow::Result<()> {
    let monolith = recon_monolith::Monolith::connect("sqlite::memory:").await?;
    let tenant = recon_core::Tenant {
        id: "t".to_owned(),
        name: "T".to_owned(),
    };
    monolith.put_tenant(&tenant).await?;
    let backup = monolith.backup().await?;
    monolith.delete_tenant("t").await?;
    monolith.restore(backup).await?;
    let page = monolith.list_tenants(None, 10).await?;
    ensure!(
        page.rows.len() == 1 && page.next_after.is_none(),
        "{page:?}"
    );
    ensure!(
        page.watermark == recon_core::Version::new(2, 1),
        "{}",
        page.watermark
    );
    Ok(())
}
