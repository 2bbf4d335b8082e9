//! The workload generator is deterministic and heavy-tailed, and its
//! random changes go through the write path.

use super::support::Server;
use anyhow::ensure;
use recon_core::Kind;
use recon_monolith::ErrorKind;
use recon_monolith::seed::{self, SeedSpec};
use recon_tests::Backend;

fn spec(seed: u64) -> SeedSpec {
    SeedSpec {
        seed,
        tenants: 60,
        users_per_tenant_mean: 20.0,
        max_users_per_tenant: 2_000,
        ..SeedSpec::default()
    }
}

#[tokio::test]
async fn same_seed_gives_the_same_data_on_both_backends() -> anyhow::Result<()> {
    let postgres = Server::start(Backend::Postgres, None).await?;
    let sqlite = Server::start(Backend::Sqlite, None).await?;
    let other = Server::start(Backend::Postgres, None).await?;
    let summary = seed::run(&postgres.monolith, &spec(1)).await?;
    let sqlite_summary = seed::run(&sqlite.monolith, &spec(1)).await?;
    seed::run(&other.monolith, &spec(2)).await?;
    ensure!(
        summary == sqlite_summary,
        "summaries differ: {summary:?} vs {sqlite_summary:?}"
    );

    let (postgres_rows, postgres_watermark) = postgres.monolith.snapshot_rows().await?;
    let (sqlite_rows, sqlite_watermark) = sqlite.monolith.snapshot_rows().await?;
    ensure!(
        postgres_rows.len() as u64
            == summary.tenants + summary.users + summary.groups + summary.memberships,
        "row count matches the summary"
    );
    ensure!(
        postgres_rows == sqlite_rows,
        "same seed must give the same rows (ids, data, versions, order)"
    );
    ensure!(
        postgres_watermark == sqlite_watermark && postgres_watermark == summary.watermark,
        "watermarks"
    );
    ensure!(
        postgres_watermark.sequence == postgres_rows.len() as u64,
        "every row has its own sequence number"
    );
    let outbox = postgres.monolith.outbox_after(0, 1_000_000).await?;
    ensure!(
        outbox.len() == postgres_rows.len(),
        "one outbox event per seeded row"
    );
    let (other_rows, _) = other.monolith.snapshot_rows().await?;
    ensure!(other_rows != postgres_rows, "another seed gives other data");

    // Heavy tail: the largest tenant dwarfs the median one.
    ensure!(
        summary.largest_tenant_users >= 5 * summary.median_tenant_users.max(1),
        "not heavy-tailed: {summary:?}"
    );
    let mut sizes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = postgres
            .monolith
            .list_tenants(after.as_deref(), 1000)
            .await?;
        for row in &page.rows {
            sizes.push(postgres.monolith.counts(&row.tenant_id).await?.users);
        }
        match page.next_after {
            Some(key) => after = Some(key.first().to_owned()),
            None => break,
        }
    }
    sizes.sort_unstable();
    ensure!(sizes.len() == 60, "60 tenants");
    ensure!(
        sizes.last().copied() == Some(summary.largest_tenant_users),
        "largest tenant in the database: {sizes:?}"
    );

    // Seeding the same spec twice is refused.
    let error = seed::run(&postgres.monolith, &spec(1)).await.err();
    ensure!(
        error.as_ref().map(|error| error.kind()) == Some(ErrorKind::Conflict),
        "reseeding: {error:?}"
    );

    postgres.stop().await?;
    sqlite.stop().await?;
    other.stop().await
}

#[tokio::test]
async fn random_changes_are_deterministic_and_versioned() -> anyhow::Result<()> {
    let first = Server::start(Backend::Postgres, None).await?;
    let second = Server::start(Backend::Sqlite, None).await?;
    let small = SeedSpec {
        seed: 5,
        tenants: 8,
        users_per_tenant_mean: 10.0,
        ..SeedSpec::default()
    };
    for server in [&first, &second] {
        seed::run(&server.monolith, &small).await?;
    }
    let before = first.monolith.watermark().await?;
    let summary = seed::random_changes(&first.monolith, 300, 99).await?;
    let other_summary = seed::random_changes(&second.monolith, 300, 99).await?;
    ensure!(summary.applied + summary.skipped == 300, "{summary:?}");
    ensure!(
        summary == other_summary,
        "same seed, same changes: {summary:?} vs {other_summary:?}"
    );
    ensure!(
        summary.watermark.sequence >= before.sequence + summary.applied,
        "each change has a sequence number"
    );
    let (first_rows, _) = first.monolith.snapshot_rows().await?;
    let (second_rows, _) = second.monolith.snapshot_rows().await?;
    ensure!(
        first_rows == second_rows,
        "same start, same seed, same end state"
    );
    let changed = first_rows
        .iter()
        .filter(|row| row.version.sequence > before.sequence)
        .count();
    ensure!(changed > 50, "random changes touched only {changed} rows");
    let kinds: std::collections::BTreeSet<Kind> = first_rows
        .iter()
        .filter(|row| row.version.sequence > before.sequence)
        .map(|row| row.kind())
        .collect();
    ensure!(kinds.len() >= 3, "changes of several kinds: {kinds:?}");
    first.stop().await?;
    second.stop().await
}
