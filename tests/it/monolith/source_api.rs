//! The Source API answers exactly what `proto/source-api.openapi.json`
//! says, for every path and every declared status, and its pages are
//! key-ordered with correct `next_after` semantics.

use super::support::{Contract, Server, TOKEN, into_json};
use anyhow::{Context, ensure};
use recon_core::{Group, Membership, Tenant, User, UserStatus};
use recon_tests::Backend;
use serde_json::{Value, json};

const TENANT: &str = "tenant-a";
/// Ids chosen so that byte-wise order differs from case-insensitive or
/// locale order ("B" < "Z-1" < "a" < "ab" < "é").
const USER_IDS: [&str; 7] = ["a", "B", "ab", "Z-1", "user-10", "user-9", "é"];
const GROUP_IDS: [&str; 3] = ["g1", "G", "g2"];

async fn populate(server: &Server) -> anyhow::Result<()> {
    let monolith = &server.monolith;
    for id in ["tenant-b", TENANT, "Tenant-C", "tenant-0", "t"] {
        let tenant = Tenant {
            id: id.to_owned(),
            name: format!("Tenant {id}"),
        };
        monolith.put_tenant(&tenant).await?;
    }
    for (number, id) in USER_IDS.iter().enumerate() {
        let user = User {
            id: (*id).to_owned(),
            email: format!("{number}@example.com"),
            display_name: format!("User {number}"),
            status: if number % 3 == 0 {
                UserStatus::Disabled
            } else {
                UserStatus::Active
            },
        };
        monolith.put_user(TENANT, &user).await?;
    }
    for id in GROUP_IDS {
        let group = Group {
            id: id.to_owned(),
            name: format!("Group {id}"),
        };
        monolith.put_group(TENANT, &group).await?;
    }
    for group_id in GROUP_IDS {
        for user_id in &USER_IDS[..4] {
            let membership = Membership {
                group_id: group_id.to_owned(),
                user_id: (*user_id).to_owned(),
            };
            monolith.put_membership(TENANT, &membership).await?;
        }
    }
    Ok(())
}

/// The key of an item in cursor form.
fn item_key(item: &Value) -> anyhow::Result<String> {
    if let Some(id) = item["id"].as_str() {
        return Ok(id.to_owned());
    }
    let group_id = item["group_id"]
        .as_str()
        .context("item without id or group_id")?;
    let user_id = item["user_id"]
        .as_str()
        .context("membership without user_id")?;
    Ok(format!("{group_id}:{user_id}"))
}

/// Byte-wise key of an item for ordering (memberships by group, then user).
fn sort_key(item: &Value) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    if let Some(id) = item["id"].as_str() {
        return Ok((id.as_bytes().to_vec(), Vec::new()));
    }
    let group_id = item["group_id"].as_str().context("no group_id")?;
    let user_id = item["user_id"].as_str().context("no user_id")?;
    Ok((group_id.as_bytes().to_vec(), user_id.as_bytes().to_vec()))
}

/// Walks every page of `path` with page size `limit`, checking each page
/// against the contract, strict key order across pages and `next_after`.
async fn walk(
    server: &Server,
    contract: &Contract,
    template: &str,
    path: &str,
    limit: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut items: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{path}?limit={limit}");
        if let Some(after) = &after {
            url.push_str(&format!("&after={}", urlencode(after)));
        }
        let (status, body) = server.get(&url).await?;
        ensure!(status == 200, "GET {url}: status {status}, body {body}");
        contract.check(template, 200, &body)?;
        pages += 1;
        ensure!(pages <= 1000, "{template}: the walk does not end");
        let page = body["items"].as_array().context("items")?;
        ensure!(page.len() <= limit, "page longer than limit");
        let next_after = body["next_after"].as_str().map(str::to_owned);
        if let Some(next) = &next_after {
            ensure!(page.len() == limit, "a non-last page must be full");
            let last = page.last().context("non-last page is empty")?;
            ensure!(
                &item_key(last)? == next,
                "next_after {next} is not the last key"
            );
        }
        items.extend(page.iter().cloned());
        match next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    for pair in items.windows(2) {
        ensure!(
            sort_key(&pair[0])? < sort_key(&pair[1])?,
            "{template}: keys not strictly increasing: {} then {}",
            pair[0],
            pair[1]
        );
    }
    ensure!(
        pages == items.len().div_ceil(limit).max(1),
        "{template}: {pages} pages for {} items",
        items.len()
    );
    Ok(items)
}

/// Percent-encodes a cursor for a query string.
pub fn urlencode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

const USERS: &str = "/v1/tenants/{tenant_id}/users";
const GROUPS: &str = "/v1/tenants/{tenant_id}/groups";
const MEMBERSHIPS: &str = "/v1/tenants/{tenant_id}/memberships";
const COUNTS: &str = "/v1/tenants/{tenant_id}/counts";
const TENANTS: &str = "/v1/tenants";
const TENANT_DIGESTS: &str = "/v1/tenants/{tenant_id}/digests";
const CAPABILITIES: &str = "/v1/capabilities";
const ALL_DIGESTS: &str = "/v1/digests";
/// The kinds of a tenant's rows, each with its own digests and multi-range
/// pages (their cursors differ: ids, or `<group_id>:<user_id>`).
const KINDS: [&str; 3] = ["users", "groups", "memberships"];

/// The path template of a kind's range digests.
fn digests_template(kind: &str) -> String {
    format!("/v1/tenants/{{tenant_id}}/digests/{kind}")
}

/// The path template of a kind's multi-range pages.
fn pages_template(kind: &str) -> String {
    format!("/v1/tenants/{{tenant_id}}/pages/{kind}")
}

fn concrete(template: &str, tenant_id: &str) -> String {
    template.replace("{tenant_id}", tenant_id)
}

async fn check_pages(server: &Server, contract: &Contract) -> anyhow::Result<()> {
    for limit in [1, 2, 3, 1000] {
        let tenants = walk(server, contract, TENANTS, TENANTS, limit).await?;
        ensure!(
            tenants.len() == 5,
            "expected 5 tenants, got {}",
            tenants.len()
        );
        let users = walk(server, contract, USERS, &concrete(USERS, TENANT), limit).await?;
        let mut expected: Vec<&str> = USER_IDS.to_vec();
        expected.sort_unstable_by(|left, right| left.as_bytes().cmp(right.as_bytes()));
        let got: Vec<String> = users.iter().map(item_key).collect::<anyhow::Result<_>>()?;
        ensure!(got == expected, "users {got:?}, expected {expected:?}");
        let groups = walk(server, contract, GROUPS, &concrete(GROUPS, TENANT), limit).await?;
        ensure!(groups.len() == GROUP_IDS.len(), "groups: {}", groups.len());
        let memberships = walk(
            server,
            contract,
            MEMBERSHIPS,
            &concrete(MEMBERSHIPS, TENANT),
            limit,
        )
        .await?;
        ensure!(
            memberships.len() == 12,
            "memberships: {}",
            memberships.len()
        );
        let empty = walk(server, contract, USERS, &concrete(USERS, "tenant-b"), limit).await?;
        ensure!(empty.is_empty(), "tenant-b has no users");
    }
    let (status, counts) = server.get(&concrete(COUNTS, TENANT)).await?;
    ensure!(status == 200, "counts: {status} {counts}");
    contract.check(COUNTS, 200, &counts)?;
    ensure!(
        counts["users"] == json!(7)
            && counts["groups"] == json!(3)
            && counts["memberships"] == json!(12),
        "{counts}"
    );
    let watermark = server.monolith.watermark().await?;
    ensure!(
        counts["watermark"] == serde_json::to_value(watermark)?,
        "counts watermark {counts}"
    );
    Ok(())
}

/// Capabilities, and digests: served on PostgreSQL (their counts add up to
/// the tenant's rows and they cover the range), a 404 on SQLite.
async fn check_digests(
    server: &Server,
    contract: &Contract,
    backend: Backend,
) -> anyhow::Result<()> {
    let (status, capabilities) = server.get(CAPABILITIES).await?;
    ensure!(status == 200, "capabilities: {status}");
    contract.check(CAPABILITIES, 200, &capabilities)?;
    let (status, body) = server.get(&format!("{CAPABILITIES}?digests=1")).await?;
    ensure!(
        status == 400
            && body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("`digests`"),
        "capabilities with a parameter: {status} {body}"
    );
    contract.check(CAPABILITIES, 400, &body)?;
    let offered = backend == Backend::Postgres;
    ensure!(capabilities["digests"] == json!(offered), "{capabilities}");
    let digests = |kind: &str, tenant: &str, query: &str| {
        format!("{}?{query}", concrete(&digests_template(kind), tenant))
    };
    for (kind, rows) in [("users", 7), ("groups", 3), ("memberships", 12)] {
        let template = digests_template(kind);
        let (status, body) = server.get(&digests(kind, TENANT, "buckets=3")).await?;
        if !offered {
            ensure!(status == 404, "digests on {backend:?}: {status} {body}");
            contract.check(&template, 404, &body)?;
            continue;
        }
        ensure!(status == 200, "{kind} digests: {status} {body}");
        contract.check(&template, 200, &body)?;
        let ranges = body["ranges"].as_array().context("ranges")?;
        ensure!(ranges.len() == 3, "{body}");
        let total: u64 = ranges
            .iter()
            .filter_map(|range| range["count"].as_u64())
            .sum();
        ensure!(
            total == rows,
            "{kind}: {total} rows in the digests, {rows} in the tenant"
        );
        ensure!(
            ranges[2]["until"].is_null(),
            "the last range is unbounded: {body}"
        );
        let (status, empty) = server.get(&digests(kind, "tenant-b", "")).await?;
        ensure!(status == 200, "{status}");
        contract.check(&template, 200, &empty)?;
        ensure!(
            empty["ranges"] == json!([{"until": null, "count": 0, "digest": "0000000000000000"}]),
            "{empty}"
        );
    }
    let (status, all) = server.get(ALL_DIGESTS).await?;
    if offered {
        ensure!(status == 200, "every tenant's digests: {status} {all}");
        contract.check(ALL_DIGESTS, 200, &all)?;
        ensure!(
            capabilities["all_tenant_digests"] == json!(true),
            "{capabilities}"
        );
        let tenants = all["tenants"].as_array().context("tenants")?;
        // Only tenant-a has rows.
        ensure!(
            tenants.len() == 1 && tenants[0]["id"] == json!(TENANT),
            "{all}"
        );
        let (_, whole) = server.get(&concrete(TENANT_DIGESTS, TENANT)).await?;
        for kind in ["users", "groups", "memberships"] {
            ensure!(
                tenants[0][kind] == whole[kind],
                "{kind}: every tenant's digests agree with the tenant's own: {all} {whole}"
            );
        }
    } else {
        ensure!(
            status == 404,
            "every tenant's digests on {backend:?}: {status}"
        );
        contract.check(ALL_DIGESTS, 404, &all)?;
        ensure!(
            capabilities["all_tenant_digests"] == json!(false),
            "{capabilities}"
        );
    }
    let (status, body) = server.get(&format!("{ALL_DIGESTS}?limit=3")).await?;
    ensure!(
        status == 400 && body["error"].as_str().unwrap_or_default().contains("limit"),
        "{status} {body}"
    );
    contract.check(ALL_DIGESTS, 400, &body)?;
    let (status, whole) = server.get(&concrete(TENANT_DIGESTS, TENANT)).await?;
    if offered {
        ensure!(status == 200, "tenant digests: {status} {whole}");
        contract.check(TENANT_DIGESTS, 200, &whole)?;
        ensure!(
            whole["users"]["count"] == json!(7)
                && whole["groups"]["count"] == json!(3)
                && whole["memberships"]["count"] == json!(12),
            "{whole}"
        );
        let (_, users) = server.get(&digests("users", TENANT, "")).await?;
        ensure!(
            whole["users"]["digest"] == users["ranges"][0]["digest"],
            "a tenant's users digest equals the users' range digest: {whole} {users}"
        );
    } else {
        ensure!(status == 404, "tenant digests on {backend:?}: {status}");
        contract.check(TENANT_DIGESTS, 404, &whole)?;
    }
    let (status, body) = server
        .get(&format!("{}?buckets=2", concrete(TENANT_DIGESTS, TENANT)))
        .await?;
    ensure!(
        status == 400
            && body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("buckets"),
        "{status} {body}"
    );
    contract.check(TENANT_DIGESTS, 400, &body)?;
    let (status, body) = server
        .get(&concrete(TENANT_DIGESTS, "no-such-tenant"))
        .await?;
    ensure!(status == 404, "{status}");
    contract.check(TENANT_DIGESTS, 404, &body)?;
    for kind in KINDS {
        let template = digests_template(kind);
        let mut queries = vec![
            "buckets=0",
            "buckets=16385",
            "buckets=x",
            "buckets=2.5",
            "limit=5",
            "after=",
            "until=a%01b",
            "after=a:1&after=b:2",
        ];
        if kind == "memberships" {
            queries.push("until=no-colon");
        }
        for query in queries {
            let url = digests(kind, TENANT, query);
            let (status, body) = server.get(&url).await?;
            ensure!(status == 400, "GET {url}: {status}");
            contract.check(&template, 400, &body)?;
            let parameter = query.split('=').next().unwrap_or_default();
            ensure!(
                body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(parameter),
                "GET {url}: {body}"
            );
        }
        let (status, body) = server.get(&digests(kind, "no-such-tenant", "")).await?;
        ensure!(status == 404, "{status}");
        contract.check(&template, 404, &body)?;
    }
    let mut unauthorized: Vec<(String, String)> = KINDS
        .iter()
        .map(|kind| (digests_template(kind), digests(kind, TENANT, "")))
        .collect();
    for template in [TENANT_DIGESTS, CAPABILITIES, ALL_DIGESTS] {
        unauthorized.push((template.to_owned(), concrete(template, TENANT)));
    }
    for (template, url) in unauthorized {
        let response = server
            .client
            .get(format!("{}{url}", server.base_url))
            .send()
            .await?;
        let (status, body) = into_json(response).await?;
        ensure!(status == 401, "{url} without a token: {status}");
        contract.check(&template, 401, &body)?;
    }
    Ok(())
}

/// Multi-range pages (`POST .../pages/<kind>`): only rows inside the
/// ranges, cursor and limit as for GET, named errors for bad bodies.
async fn check_pages_within(server: &Server, contract: &Contract) -> anyhow::Result<()> {
    let (_, capabilities) = server.get(CAPABILITIES).await?;
    ensure!(
        capabilities["max_page_ranges"] == json!(256),
        "{capabilities}"
    );
    let post = |tenant: &str, kind: &str, body: Value| {
        let path = concrete(&pages_template(kind), tenant);
        async move {
            into_json(
                server
                    .request(reqwest::Method::POST, &path)
                    .json(&body)
                    .send()
                    .await?,
            )
            .await
        }
    };
    // Users sorted: B, Z-1, a, ab, user-10, user-9, é.
    let ranges = json!([{"until": "B"}, {"after": "Z-1", "until": "ab"}, {"after": "user-9"}]);
    let (status, body) = post(TENANT, "users", json!({"ranges": ranges})).await?;
    ensure!(status == 200, "{status} {body}");
    contract.check(&pages_template("users"), 200, &body)?;
    let keys: Vec<String> = body["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(item_key)
        .collect::<anyhow::Result<_>>()?;
    ensure!(keys == ["B", "a", "ab", "é"], "{keys:?}");
    // Page by page: two items, then the rest after the cursor.
    let (_, first) = post(TENANT, "users", json!({"ranges": ranges, "limit": 2})).await?;
    ensure!(first["next_after"] == json!("a"), "{first}");
    let (_, rest) = post(
        TENANT,
        "users",
        json!({"ranges": ranges, "limit": 2, "after": "a"}),
    )
    .await?;
    let keys: Vec<String> = rest["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(item_key)
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        keys == ["ab", "é"] && rest["next_after"].is_null(),
        "{rest}"
    );
    let memberships = json!([{"until": "G:B"}, {"after": "g1:a", "until": "g2:B"}]);
    let (status, body) = post(TENANT, "memberships", json!({"ranges": memberships})).await?;
    ensure!(status == 200, "{status} {body}");
    contract.check(&pages_template("memberships"), 200, &body)?;
    let keys: Vec<String> = body["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(item_key)
        .collect::<anyhow::Result<_>>()?;
    ensure!(keys == ["G:B", "g1:ab", "g2:B"], "{keys:?}");
    let too_many: Vec<Value> = (0..257)
        .map(|index| json!({"after": format!("k{index:03}"), "until": format!("k{index:03}x")}))
        .collect();
    for (body, named) in [
        (json!({"ranges": []}), "ranges"),
        (json!({"ranges": [{"after": "b", "until": "a"}]}), "range 0"),
        (
            json!({"ranges": [{"until": "b"}, {"after": "a", "until": "c"}]}),
            "range 1",
        ),
        (
            json!({"ranges": [{"until": "b"}, {"until": "c"}]}),
            "range 1",
        ),
        (json!({"ranges": too_many}), "ranges"),
        (json!({"ranges": [{}], "limit": 0}), "limit"),
        (json!({"ranges": [{}], "offset": 3}), "offset"),
    ] {
        let (status, answer) = post(TENANT, "users", body.clone()).await?;
        ensure!(status == 400, "{body}: {status} {answer}");
        contract.check(&pages_template("users"), 400, &answer)?;
        ensure!(
            answer["error"].as_str().unwrap_or_default().contains(named),
            "{body}: {answer}"
        );
    }
    let (status, answer) = post(
        TENANT,
        "memberships",
        json!({"ranges": [{"until": "no-colon"}]}),
    )
    .await?;
    ensure!(
        status == 400
            && answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains("ranges[0].until"),
        "{status} {answer}"
    );
    let query_url = format!("{}?limit=5", concrete(&pages_template("users"), TENANT));
    let (status, answer) = into_json(
        server
            .request(reqwest::Method::POST, &query_url)
            .json(&json!({"ranges": [{}]}))
            .send()
            .await?,
    )
    .await?;
    ensure!(
        status == 400
            && answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains("`limit`"),
        "a multi-range page with a query parameter: {status} {answer}"
    );
    contract.check(&pages_template("users"), 400, &answer)?;
    let (status, body) = post(TENANT, "groups", json!({"ranges": [{"after": "G"}]})).await?;
    ensure!(
        status == 200 && body["items"].as_array().map(Vec::len) == Some(2),
        "groups after G: {status} {body}"
    );
    contract.check(&pages_template("groups"), 200, &body)?;
    for kind in KINDS {
        let template = pages_template(kind);
        let (status, answer) = post(TENANT, kind, json!({"ranges": [{"after": ""}]})).await?;
        ensure!(
            status == 400
                && answer["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("ranges[0].after"),
            "{kind}: an empty cursor: {status} {answer}"
        );
        contract.check(&template, 400, &answer)?;
        let (status, answer) = post("no-such-tenant", kind, json!({"ranges": [{}]})).await?;
        ensure!(status == 404, "{kind}: {status} {answer}");
        contract.check(&template, 404, &answer)?;
        let url = format!("{}{}", server.base_url, concrete(&template, TENANT));
        let (status, answer) = into_json(
            server
                .client
                .post(&url)
                .json(&json!({"ranges": [{}]}))
                .send()
                .await?,
        )
        .await?;
        ensure!(status == 401, "{kind} without a token: {status}");
        contract.check(&template, 401, &answer)?;
    }
    Ok(())
}

async fn check_errors(server: &Server, contract: &Contract) -> anyhow::Result<()> {
    let tenant_paths = [USERS, GROUPS, MEMBERSHIPS];
    let bad_queries = [
        "limit=0",
        "limit=10001",
        "limit=abc",
        "after=",
        "offset=3",
        "limit=5&limit=6",
    ];
    for template in std::iter::once(TENANTS).chain(tenant_paths) {
        for query in bad_queries {
            let url = format!("{}?{query}", concrete(template, TENANT));
            let (status, body) = server.get(&url).await?;
            ensure!(status == 400, "GET {url}: status {status}");
            contract.check(template, 400, &body)?;
            let message = body["error"].as_str().unwrap_or_default();
            let parameter = query.split('=').next().unwrap_or_default();
            ensure!(
                message.contains(parameter),
                "GET {url}: error {message:?} does not name {parameter}"
            );
        }
    }
    let url = format!("{}?after=no-colon", concrete(MEMBERSHIPS, TENANT));
    let (status, body) = server.get(&url).await?;
    ensure!(
        status == 400 && body["error"].as_str().unwrap_or_default().contains("after"),
        "{url}: {status} {body}"
    );
    contract.check(MEMBERSHIPS, 400, &body)?;
    let (status, body) = server
        .get(&format!("{}?limit=1", concrete(COUNTS, TENANT)))
        .await?;
    ensure!(status == 400, "counts with a parameter: {status}");
    contract.check(COUNTS, 400, &body)?;
    for template in tenant_paths.into_iter().chain([COUNTS]) {
        let (status, body) = server.get(&concrete(template, "no-such-tenant")).await?;
        ensure!(status == 404, "{template} for an unknown tenant: {status}");
        contract.check(template, 404, &body)?;
        let long_id = "x".repeat(300);
        let (status, body) = server.get(&concrete(template, &long_id)).await?;
        ensure!(
            status == 400
                && body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("tenant id"),
            "{status} {body}"
        );
    }
    for template in std::iter::once(TENANTS).chain(tenant_paths).chain([COUNTS]) {
        let url = format!("{}{}", server.base_url, concrete(template, TENANT));
        let (status, body) = into_json(server.client.get(&url).send().await?).await?;
        ensure!(status == 401, "{url} without a token: {status}");
        contract.check(template, 401, &body)?;
        let wrong = server
            .client
            .get(&url)
            .bearer_auth("wrong-token")
            .send()
            .await?;
        let (status, body) = into_json(wrong).await?;
        ensure!(status == 401, "{url} with a wrong token: {status}");
        contract.check(template, 401, &body)?;
    }
    let health = server
        .client
        .get(format!("{}/healthz", server.base_url))
        .send()
        .await?;
    ensure!(health.status().as_u16() == 200, "healthz needs no token");
    Ok(())
}

async fn source_api_matches_contract(backend: Backend) -> anyhow::Result<()> {
    let contract = Contract::load()?;
    let server = Server::start(backend, Some(TOKEN)).await?;
    populate(&server).await?;
    check_pages(&server, &contract).await?;
    check_errors(&server, &contract).await?;
    check_digests(&server, &contract, backend).await?;
    check_pages_within(&server, &contract).await?;
    let mut declared = contract.declared();
    if backend == Backend::Sqlite {
        // A monolith on SQLite offers no digests (it says so in its
        // capabilities): their 200 cannot be seen there.
        for kind in KINDS {
            declared.remove(&(digests_template(kind), 200));
        }
        declared.remove(&(TENANT_DIGESTS.to_owned(), 200));
        declared.remove(&(ALL_DIGESTS.to_owned(), 200));
    }
    if backend == Backend::Postgres {
        // Every tenant's digests have no unknown tenant to miss: their 404
        // is the answer of a monolith that offers no digests (SQLite).
        declared.remove(&(ALL_DIGESTS.to_owned(), 404));
    }
    let covered = contract.covered();
    let missing: Vec<_> = declared.difference(&covered).collect();
    ensure!(
        missing.is_empty(),
        "declared responses never checked: {missing:?}"
    );
    let undeclared: Vec<_> = covered.difference(&declared).collect();
    ensure!(
        undeclared.is_empty(),
        "responses the contract does not declare: {undeclared:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn source_api_matches_contract_on_postgres() -> anyhow::Result<()> {
    source_api_matches_contract(Backend::Postgres).await
}

#[tokio::test]
async fn source_api_matches_contract_on_sqlite() -> anyhow::Result<()> {
    source_api_matches_contract(Backend::Sqlite).await
}

/// The contract is strict enough to catch mistakes: broken bodies fail.
#[test]
fn contract_rejects_broken_pages() -> anyhow::Result<()> {
    let contract = Contract::load()?;
    let version = json!({"generation": 1, "sequence": 5});
    let good = json!({"items": [{"id": "u", "email": "e", "display_name": "d", "status": "active", "version": version, "extra": true}], "watermark": version, "next_after": null});
    contract.check(USERS, 200, &good)?;
    let broken = [
        json!({"items": [{"id": "u", "email": "e", "display_name": "d", "status": "gone", "version": version}], "watermark": version, "next_after": null}),
        json!({"items": [{"id": "u", "email": "e", "display_name": "d", "status": "active"}], "watermark": version, "next_after": null}),
        json!({"items": [], "watermark": {"generation": 1, "sequence": -1}, "next_after": null}),
        json!({"items": [], "watermark": version}),
        json!({"items": [{"id": "", "email": "e", "display_name": "d", "status": "active", "version": version}], "watermark": version, "next_after": null}),
        json!({"items": [], "watermark": version, "next_after": 7}),
    ];
    for body in broken {
        ensure!(
            contract.check(USERS, 200, &body).is_err(),
            "accepted a broken page: {body}"
        );
    }
    ensure!(
        contract
            .check(TENANTS, 400, &json!({"message": "x"}))
            .is_err(),
        "error without `error`"
    );
    ensure!(
        contract
            .check(
                COUNTS,
                200,
                &json!({"users": 1, "groups": 1, "watermark": version})
            )
            .is_err(),
        "counts without memberships"
    );
    Ok(())
}

/// Every cursor the contract declares (`after` and `until`, as query
/// parameters and in a multi-range page's body) refuses what the server
/// refuses as a cursor: an empty one, a control character, one too long,
/// and for memberships one without `:`. (The digests' `after` was any
/// string: `after=` was valid by the contract and refused by the server.)
#[test]
fn contract_cursors_refuse_what_the_server_refuses() -> anyhow::Result<()> {
    let contract = Contract::load()?;
    let paths = contract.document()["paths"]
        .as_object()
        .context("the document has no paths")?;
    let too_long = "x".repeat(201);
    let mut checked = Vec::new();
    for (template, item) in paths {
        let mut refused = vec!["", "a\u{1}b", too_long.as_str()];
        if template.ends_with("/memberships") {
            refused.push("no-colon");
        }
        for operation in item.as_object().context("a path item")?.values() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let parameter = contract.resolve(parameter)?;
                let name = parameter["name"].as_str().unwrap_or_default();
                if !["after", "until"].contains(&name) {
                    continue;
                }
                let validator = contract.validator(&parameter["schema"])?;
                for text in &refused {
                    ensure!(
                        !validator.is_valid(&json!(text)),
                        "{template}: the contract allows `{name}` {text:?}"
                    );
                }
                checked.push(format!("{template} {name}"));
            }
            let Some(body) = operation.get("requestBody") else {
                continue;
            };
            let schema = &contract.resolve(body)?["content"]["application/json"]["schema"];
            let validator = contract.validator(schema)?;
            for text in &refused {
                for body in [
                    json!({"after": text, "ranges": [{}]}),
                    json!({"ranges": [{"after": text}]}),
                    json!({"ranges": [{"until": text}]}),
                ] {
                    ensure!(
                        !validator.is_valid(&body),
                        "{template}: the contract allows the body {body}"
                    );
                }
            }
            checked.push(format!("{template} body"));
        }
    }
    ensure!(
        checked.len() >= 10,
        "too few cursors in the contract: {checked:?}"
    );
    Ok(())
}
