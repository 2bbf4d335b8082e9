//! The write path: each change takes the next sequence number and writes
//! exactly one outbox row whose payload decodes to that change; cascades
//! emit one event per deleted entity, children first; concurrent writers
//! get distinct, gap-free sequence numbers in commit order.

use super::support::Server;
use anyhow::{Context, ensure};
use recon_core::{
    Change, EntityKey, Group, Kind, Membership, Record, Tenant, User, UserStatus, Version,
};
use recon_monolith::{Monolith, OutboxEntry, WriteOutcome};
use recon_tests::Backend;

/// Outbox rows appended since `after_id`.
async fn appended(monolith: &Monolith, after_id: i64) -> anyhow::Result<Vec<OutboxEntry>> {
    Ok(monolith.outbox_after(after_id, 1_000_000).await?)
}

async fn last_outbox_id(monolith: &Monolith) -> anyhow::Result<i64> {
    let all = appended(monolith, 0).await?;
    Ok(all.last().map_or(0, |entry| entry.id))
}

/// Runs one write and checks: the sequence advanced by the number of
/// changes, exactly that many outbox rows were appended, and they decode
/// to the expected changes in order.
async fn check_write(
    monolith: &Monolith,
    expected: impl Fn(Version) -> Vec<Change>,
    outcome: impl std::future::Future<Output = recon_monolith::Result<WriteOutcome>>,
    before: Version,
    after_id: i64,
) -> anyhow::Result<i64> {
    let outcome = outcome.await?;
    let now = monolith.watermark().await?;
    let entries = appended(monolith, after_id).await?;
    let expected = expected(Version::new(before.generation, before.sequence + 1));
    ensure!(
        now.sequence == before.sequence + expected.len() as u64,
        "sequence {} → {}",
        before,
        now
    );
    ensure!(
        entries.len() == expected.len(),
        "{} outbox rows for {} changes",
        entries.len(),
        expected.len()
    );
    ensure!(
        outcome.changes == expected.len() as u64 && outcome.version == now,
        "{outcome:?}"
    );
    for (entry, want) in entries.iter().zip(&expected) {
        let decoded =
            recon_proto::decode_change(&entry.payload).context("decode the outbox payload")?;
        ensure!(
            &decoded == want,
            "outbox event {decoded:?}, expected {want:?}"
        );
        ensure!(
            entry.version == want.version() && entry.tenant_id == want.tenant_id(),
            "outbox columns"
        );
        ensure!(entry.published_at_ms.is_none(), "new rows are unpublished");
    }
    Ok(entries.last().map_or(after_id, |entry| entry.id))
}

fn upsert(tenant_id: &str, record: Record, version: Version) -> Change {
    Change::Upsert(recon_core::Row {
        tenant_id: tenant_id.to_owned(),
        record,
        version,
    })
}

fn delete(tenant_id: &str, kind: Kind, key: EntityKey, version: Version) -> Change {
    Change::Delete(recon_core::Deletion {
        tenant_id: tenant_id.to_owned(),
        kind,
        key,
        version,
    })
}

fn next(version: Version, steps: u64) -> Version {
    Version::new(version.generation, version.sequence + steps)
}

#[tokio::test]
async fn every_change_bumps_the_sequence_and_writes_one_event() -> anyhow::Result<()> {
    let server = Server::start(Backend::Postgres, None).await?;
    let monolith = &server.monolith;
    let tenant = Tenant {
        id: "t".to_owned(),
        name: "T".to_owned(),
    };
    let user = User {
        id: "u".to_owned(),
        email: "u@x".to_owned(),
        display_name: "U".to_owned(),
        status: UserStatus::Active,
    };
    let group = Group {
        id: "g".to_owned(),
        name: "G".to_owned(),
    };
    let membership = Membership {
        group_id: "g".to_owned(),
        user_id: "u".to_owned(),
    };

    let mut last_id = last_outbox_id(monolith).await?;
    let start = monolith.watermark().await?;
    ensure!(
        start == Version::new(1, 0),
        "a fresh monolith starts at 1.0, got {start}"
    );

    let before = monolith.watermark().await?;
    let record = Record::from(tenant.clone());
    last_id = check_write(
        monolith,
        |v| vec![upsert("t", record.clone(), v)],
        monolith.put_tenant(&tenant),
        before,
        last_id,
    )
    .await?;
    let before = monolith.watermark().await?;
    let record = Record::from(user.clone());
    last_id = check_write(
        monolith,
        |v| vec![upsert("t", record.clone(), v)],
        monolith.put_user("t", &user),
        before,
        last_id,
    )
    .await?;
    let before = monolith.watermark().await?;
    let record = Record::from(group.clone());
    last_id = check_write(
        monolith,
        |v| vec![upsert("t", record.clone(), v)],
        monolith.put_group("t", &group),
        before,
        last_id,
    )
    .await?;
    let before = monolith.watermark().await?;
    let record = Record::from(membership.clone());
    last_id = check_write(
        monolith,
        |v| vec![upsert("t", record.clone(), v)],
        monolith.put_membership("t", &membership),
        before,
        last_id,
    )
    .await?;
    // An update is a change too.
    let renamed = User {
        display_name: "Renamed".to_owned(),
        ..user.clone()
    };
    let before = monolith.watermark().await?;
    let record = Record::from(renamed.clone());
    last_id = check_write(
        monolith,
        |v| vec![upsert("t", record.clone(), v)],
        monolith.put_user("t", &renamed),
        before,
        last_id,
    )
    .await?;

    // Deleting the user takes its membership with it, membership first.
    let before = monolith.watermark().await?;
    check_write(
        monolith,
        |v| {
            vec![
                delete("t", Kind::MEMBERSHIP, EntityKey::pair("g", "u"), v),
                delete("t", Kind::USER, EntityKey::id("u"), next(v, 1)),
            ]
        },
        monolith.delete_user("t", "u"),
        before,
        last_id,
    )
    .await?;

    // Deleting a tenant: memberships, users, groups, then the tenant.
    for id in ["u1", "u2"] {
        monolith
            .put_user(
                "t",
                &User {
                    id: id.to_owned(),
                    ..user.clone()
                },
            )
            .await?;
        monolith
            .put_membership(
                "t",
                &Membership {
                    group_id: "g".to_owned(),
                    user_id: id.to_owned(),
                },
            )
            .await?;
    }
    last_id = last_outbox_id(monolith).await?;
    let before = monolith.watermark().await?;
    check_write(
        monolith,
        |v| {
            vec![
                delete("t", Kind::MEMBERSHIP, EntityKey::pair("g", "u1"), v),
                delete(
                    "t",
                    Kind::MEMBERSHIP,
                    EntityKey::pair("g", "u2"),
                    next(v, 1),
                ),
                delete("t", Kind::USER, EntityKey::id("u1"), next(v, 2)),
                delete("t", Kind::USER, EntityKey::id("u2"), next(v, 3)),
                delete("t", Kind::GROUP, EntityKey::id("g"), next(v, 4)),
                delete("t", Kind::TENANT, EntityKey::id("t"), next(v, 5)),
            ]
        },
        monolith.delete_tenant("t"),
        before,
        last_id,
    )
    .await?;
    let (rows, _) = monolith.snapshot_rows().await?;
    ensure!(
        rows.is_empty(),
        "the tenant and everything in it are gone: {rows:?}"
    );

    // Failed writes change nothing.
    let before = monolith.watermark().await?;
    ensure!(
        monolith.delete_tenant("t").await.is_err(),
        "deleting twice fails"
    );
    ensure!(
        monolith.put_user("t", &user).await.is_err(),
        "a user needs its tenant"
    );
    ensure!(
        monolith.watermark().await? == before,
        "failed writes allocate no sequence numbers"
    );

    // The relay's view: unpublished rows in order, then marked published.
    let unpublished = monolith.outbox_unpublished(1000).await?;
    ensure!(
        unpublished.windows(2).all(|pair| pair[0].id < pair[1].id),
        "oldest first"
    );
    let ids: Vec<i64> = unpublished.iter().take(3).map(|entry| entry.id).collect();
    ensure!(
        monolith.outbox_mark_published(&ids).await? == 3,
        "three rows marked"
    );
    ensure!(
        monolith.outbox_mark_published(&ids).await? == 0,
        "marking again is a no-op"
    );
    let remaining = monolith.outbox_unpublished(1000).await?;
    ensure!(
        remaining.len() == unpublished.len() - 3
            && remaining.iter().all(|entry| !ids.contains(&entry.id)),
        "published rows leave the queue"
    );
    server.stop().await
}

#[tokio::test]
async fn concurrent_writers_get_gap_free_sequences_in_commit_order() -> anyhow::Result<()> {
    let server = Server::start(Backend::Postgres, None).await?;
    let monolith = server.monolith.clone();
    monolith
        .put_tenant(&Tenant {
            id: "t".to_owned(),
            name: "T".to_owned(),
        })
        .await?;
    let start = monolith.watermark().await?;
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let monolith = monolith.clone();
        tasks.push(tokio::spawn(async move {
            for number in 0..15 {
                let user = User {
                    id: format!("w{writer}-{number}"),
                    email: "e@x".to_owned(),
                    display_name: "D".to_owned(),
                    status: UserStatus::Active,
                };
                monolith.put_user("t", &user).await?;
            }
            Ok::<(), recon_monolith::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let end = monolith.watermark().await?;
    ensure!(
        end.sequence == start.sequence + 120,
        "120 writes, sequence {start} → {end}"
    );
    let entries = monolith.outbox_after(0, 10_000).await?;
    let sequences: Vec<u64> = entries.iter().map(|entry| entry.version.sequence).collect();
    let expected: Vec<u64> = (1..=end.sequence).collect();
    ensure!(
        sequences == expected,
        "outbox order must be sequence order without gaps"
    );
    server.stop().await
}
