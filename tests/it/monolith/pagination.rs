//! Keyset pagination under concurrent writes: rows inserted and deleted
//! between page fetches never make the walk skip or repeat a row that
//! existed for the whole walk (offset pagination would do both).

use super::source_api::urlencode;
use super::support::Server;
use anyhow::{Context, ensure};
use recon_core::{Group, Membership, Tenant, User, UserStatus};
use recon_tests::Backend;
use std::collections::BTreeSet;

const TENANT: &str = "paging";

/// A tiny deterministic generator (xorshift), enough to scatter writes.
struct Scatter(u64);

impl Scatter {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

fn user(id: &str) -> User {
    User {
        id: id.to_owned(),
        email: format!("{id}@example.com"),
        display_name: id.to_owned(),
        status: UserStatus::Active,
    }
}

/// Fetches one page; returns its keys and `next_after`.
async fn page(
    server: &Server,
    kind: &str,
    after: Option<&str>,
    limit: usize,
) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let mut url = format!("/v1/tenants/{TENANT}/{kind}?limit={limit}");
    if let Some(after) = after {
        url.push_str(&format!("&after={}", urlencode(after)));
    }
    let (status, body) = server.get(&url).await?;
    ensure!(status == 200, "GET {url}: {status} {body}");
    let mut keys = Vec::new();
    for item in body["items"].as_array().context("items")? {
        let key = match item["id"].as_str() {
            Some(id) => id.to_owned(),
            None => format!(
                "{}:{}",
                item["group_id"].as_str().context("group_id")?,
                item["user_id"].as_str().context("user_id")?
            ),
        };
        keys.push(key);
    }
    Ok((keys, body["next_after"].as_str().map(str::to_owned)))
}

#[tokio::test]
async fn users_walk_survives_concurrent_inserts_and_deletes() -> anyhow::Result<()> {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let server = Server::start(backend, None).await?;
        let monolith = &server.monolith;
        monolith
            .put_tenant(&Tenant {
                id: TENANT.to_owned(),
                name: "Paging".to_owned(),
            })
            .await?;
        let initial: Vec<String> = (0..120)
            .map(|number| format!("u{:04}", number * 10))
            .collect();
        for id in &initial {
            monolith.put_user(TENANT, &user(id)).await?;
        }
        let mut deleted = BTreeSet::new();
        let mut scatter = Scatter(0x9E37_79B9_7F4A_7C15);
        let mut seen: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        let mut inserted = 0;
        for _ in 0..1000 {
            let (keys, next_after) = page(&server, "users", after.as_deref(), 7).await?;
            seen.extend(keys);
            // Between pages: delete two random initial users (seen or not),
            // insert two users at random positions (before and after the
            // cursor).
            for _ in 0..2 {
                let victim = &initial[scatter.next(initial.len())];
                if deleted.insert(victim.clone()) {
                    monolith.delete_user(TENANT, victim).await?;
                }
                let fresh = format!("u{:04}", scatter.next(1200) * 10 + 5);
                monolith.put_user(TENANT, &user(&fresh)).await?;
                inserted += 1;
            }
            match next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        ensure!(
            inserted > 20,
            "the walk should have interleaved many writes"
        );
        for pair in seen.windows(2) {
            ensure!(
                pair[0].as_bytes() < pair[1].as_bytes(),
                "{backend:?}: not strictly increasing / repeated: {pair:?}"
            );
        }
        let seen_set: BTreeSet<&String> = seen.iter().collect();
        for id in initial.iter().filter(|id| !deleted.contains(*id)) {
            ensure!(
                seen_set.contains(id),
                "{backend:?}: user {id} existed throughout the walk but was skipped"
            );
        }
        ensure!(
            !deleted.is_empty() && deleted.len() < initial.len(),
            "the test must delete some rows"
        );
        server.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn memberships_walk_survives_concurrent_inserts_and_deletes() -> anyhow::Result<()> {
    let server = Server::start(Backend::Postgres, None).await?;
    let monolith = &server.monolith;
    monolith
        .put_tenant(&Tenant {
            id: TENANT.to_owned(),
            name: "Paging".to_owned(),
        })
        .await?;
    let user_ids: Vec<String> = (0..12).map(|number| format!("u{number:02}")).collect();
    let group_ids: Vec<String> = (0..6).map(|number| format!("g{number}")).collect();
    for id in &user_ids {
        monolith.put_user(TENANT, &user(id)).await?;
    }
    for id in &group_ids {
        monolith
            .put_group(
                TENANT,
                &Group {
                    id: id.clone(),
                    name: id.clone(),
                },
            )
            .await?;
    }
    let mut initial = Vec::new();
    for (group_number, group_id) in group_ids.iter().enumerate() {
        for user_id in user_ids.iter().skip(group_number % 2).step_by(2) {
            let membership = Membership {
                group_id: group_id.clone(),
                user_id: user_id.clone(),
            };
            monolith.put_membership(TENANT, &membership).await?;
            initial.push(format!("{group_id}:{user_id}"));
        }
    }
    let mut removed = BTreeSet::new();
    let mut scatter = Scatter(0xD1B5_4A32_D192_ED03);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let (keys, next_after) = page(&server, "memberships", after.as_deref(), 5).await?;
        seen.extend(keys);
        let victim = &initial[scatter.next(initial.len())];
        if removed.insert(victim.clone()) {
            let (group_id, user_id) = victim.split_once(':').context("membership key")?;
            monolith
                .delete_membership(TENANT, group_id, user_id)
                .await?;
        }
        let group_id = &group_ids[scatter.next(group_ids.len())];
        let user_id = &user_ids[scatter.next(user_ids.len())];
        let membership = Membership {
            group_id: group_id.clone(),
            user_id: user_id.clone(),
        };
        monolith.put_membership(TENANT, &membership).await?;
        match next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let key = |text: &String| -> (Vec<u8>, Vec<u8>) {
        let (group_id, user_id) = text.split_once(':').unwrap_or((text, ""));
        (group_id.as_bytes().to_vec(), user_id.as_bytes().to_vec())
    };
    for pair in seen.windows(2) {
        ensure!(
            key(&pair[0]) < key(&pair[1]),
            "not strictly increasing / repeated: {pair:?}"
        );
    }
    let seen_set: BTreeSet<&String> = seen.iter().collect();
    for membership in initial.iter().filter(|key| !removed.contains(*key)) {
        ensure!(
            seen_set.contains(membership),
            "membership {membership} was skipped"
        );
    }
    server.stop().await
}

/// A database whose default collation is linguistic (ICU `en-US`, where
/// "a" < "B"), so that only the monolith's `COLLATE "C"` keeps byte order.
async fn linguistic_postgres_database() -> anyhow::Result<String> {
    use sea_orm::{ConnectionTrait, Database};
    let server_url = recon_tests::postgres_server_url()?;
    let name = format!("recon_icu_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(&server_url)
        .await
        .context("connect to PostgreSQL")?;
    admin
        .execute_unprepared(&format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        ))
        .await
        .context("create a database with an ICU default collation")?;
    admin.close().await.ok();
    let (base, query) = server_url
        .split_once('?')
        .map_or((server_url.as_str(), None), |(base, query)| {
            (base, Some(query))
        });
    let (server, _) = base
        .rsplit_once('/')
        .context("database URL without a path")?;
    let url = match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    };
    let check = Database::connect(&url).await?;
    let row = check
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT ('a' < 'B') AS linguistic",
        ))
        .await?
        .context("no row")?;
    let linguistic: bool = row.try_get("", "linguistic")?;
    ensure!(
        linguistic,
        "the test database's default collation must not be byte-wise"
    );
    check.close().await.ok();
    Ok(url)
}

#[tokio::test]
async fn postgres_pages_are_bytewise_even_under_a_linguistic_collation() -> anyhow::Result<()> {
    let url = linguistic_postgres_database().await?;
    let monolith = recon_monolith::Monolith::connect(&url).await?;
    monolith
        .put_tenant(&Tenant {
            id: TENANT.to_owned(),
            name: "T".to_owned(),
        })
        .await?;
    for id in ["b", "A", "a", "B", "_x", "ä"] {
        monolith.put_user(TENANT, &user(id)).await?;
    }
    let mut seen = Vec::new();
    let mut after: Option<recon_core::EntityKey> = None;
    for _ in 0..10 {
        let page = monolith
            .list_entities(TENANT, recon_core::Kind::USER, after.as_ref(), 2)
            .await?;
        seen.extend(page.rows.iter().map(|row| row.key().first().to_owned()));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    ensure!(
        seen == ["A", "B", "_x", "a", "b", "ä"],
        "not byte-wise: {seen:?}"
    );
    monolith.close().await?;
    Ok(())
}
