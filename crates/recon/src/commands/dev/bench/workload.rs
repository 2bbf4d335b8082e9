//! The bench's databases: the monolith seeded with a workload of a given
//! scale (seeded once, reused while it holds the same seed's workload), and
//! the replica store emptied for a full load.

use anyhow::{Context, bail};
use recon_monolith::seed::{seeded_id, tenant_sizes};
use recon_monolith::{Monolith, SeedSpec};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde::Serialize;
use std::time::Instant;

/// Tenants of W1 (scale 1.0).
const W1_TENANTS: f64 = 1_000.0;
/// Users of W1.
const W1_USERS: f64 = 1_000_000.0;
/// Cap on one tenant's users in W1 (the heavy tail's end).
const W1_MAX_USERS_PER_TENANT: f64 = 100_000.0;

/// Row counts of a database, per kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    /// Tenants.
    pub tenants: u64,
    /// Users.
    pub users: u64,
    /// Groups.
    pub groups: u64,
    /// Memberships.
    pub memberships: u64,
}

impl Totals {
    /// All rows.
    pub fn rows(&self) -> u64 {
        self.tenants + self.users + self.groups + self.memberships
    }
}

/// How the monolith came to hold the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Seeding {
    /// The spec seeded.
    pub spec: SeedSpec,
    /// Seconds spent seeding; `None` when the database already held it.
    pub seconds: Option<f64>,
    /// Rows in the monolith afterwards.
    pub totals: Totals,
}

/// The seed spec of a scale: `scale × 1,000` tenants whose heavy-tailed
/// sizes add up to about `scale × 1M` users (the Pareto mean is found by
/// bisection over the generator's own sizes), 20 users per group and two
/// groups per user on average (about 50k groups and 2M memberships at
/// scale 1).
pub fn spec_for_scale(scale: f64, seed: u64) -> SeedSpec {
    let mut spec = SeedSpec {
        seed,
        tenants: (W1_TENANTS * scale).round().max(1.0) as usize,
        max_users_per_tenant: (W1_MAX_USERS_PER_TENANT * scale).round().max(1_000.0) as usize,
        users_per_group: 20.0,
        groups_per_user_mean: 2.0,
        ..SeedSpec::default()
    };
    let target_users = W1_USERS * scale;
    let (mut low, mut high) = (1.0_f64, target_users.max(2.0));
    for _ in 0..60 {
        spec.users_per_tenant_mean = (low + high) / 2.0;
        let users: usize = tenant_sizes(&spec).iter().sum();
        if (users as f64) < target_users {
            low = spec.users_per_tenant_mean;
        } else {
            high = spec.users_per_tenant_mean;
        }
    }
    spec.users_per_tenant_mean = high;
    spec
}

/// The seed spec of one tenant of `users` users, with groups and
/// memberships in the proportions of [`spec_for_scale`]: a Pareto mean six
/// times the cap puts the one tenant at the cap.
pub fn spec_for_one_tenant(users: u64, seed: u64) -> SeedSpec {
    let users = usize::try_from(users).unwrap_or(usize::MAX);
    SeedSpec {
        seed,
        tenants: 1,
        max_users_per_tenant: users,
        users_per_tenant_mean: users as f64 * 6.0,
        users_per_group: 20.0,
        groups_per_user_mean: 2.0,
        ..SeedSpec::default()
    }
}

/// Makes the monolith hold exactly `spec`'s workload: kept when it already
/// does (same tenant count, user count and first and last tenant ids),
/// otherwise the database's `public` schema is dropped and the workload
/// seeded afresh.
pub async fn ensure_seeded(database_url: &str, spec: &SeedSpec) -> anyhow::Result<Seeding> {
    let monolith = Monolith::connect(database_url)
        .await
        .context("open the monolith database")?;
    if holds_workload(monolith.connection(), spec).await? {
        let totals = monolith_totals(monolith.connection()).await?;
        monolith.close().await.ok();
        return Ok(Seeding {
            spec: spec.clone(),
            seconds: None,
            totals,
        });
    }
    let existing = monolith_totals(monolith.connection()).await?;
    if existing.rows() > 0 {
        eprintln!(
            "the monolith database holds another workload ({} rows): dropping it",
            existing.rows()
        );
        execute(
            monolith.connection(),
            "DROP SCHEMA public CASCADE; CREATE SCHEMA public;",
        )
        .await
        .context("wipe the monolith database")?;
    }
    monolith.close().await.ok();
    let monolith = Monolith::connect(database_url)
        .await
        .context("recreate the monolith schema")?;
    eprintln!(
        "seeding {} tenants (about {:.0} users each on average; this may take minutes)",
        spec.tenants, spec.users_per_tenant_mean
    );
    let started = Instant::now();
    recon_monolith::seed::run(&monolith, spec)
        .await
        .context("seed the workload")?;
    let seconds = started.elapsed().as_secs_f64();
    execute(
        monolith.connection(),
        "ANALYZE tenants, users, \"groups\", memberships",
    )
    .await
    .context("analyze the seeded tables")?;
    let totals = monolith_totals(monolith.connection()).await?;
    monolith.close().await.ok();
    Ok(Seeding {
        spec: spec.clone(),
        seconds: Some(seconds),
        totals,
    })
}

async fn holds_workload(connection: &DatabaseConnection, spec: &SeedSpec) -> anyhow::Result<bool> {
    let totals = monolith_totals(connection).await?;
    let expected_users: usize = tenant_sizes(spec).iter().sum();
    if totals.tenants != spec.tenants as u64 || totals.users != expected_users as u64 {
        return Ok(false);
    }
    for index in [0, spec.tenants.saturating_sub(1)] {
        let id = seeded_id(&format!("{}/tenant/{index}", spec.seed));
        let sql = format!("SELECT count(*) AS n FROM tenants WHERE id = '{id}'");
        if count(connection, &sql).await? != 1 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Row counts of the monolith's tables.
pub async fn monolith_totals(connection: &DatabaseConnection) -> anyhow::Result<Totals> {
    Ok(Totals {
        tenants: count(connection, "SELECT count(*) AS n FROM tenants").await?,
        users: count(connection, "SELECT count(*) AS n FROM users").await?,
        groups: count(connection, "SELECT count(*) AS n FROM \"groups\"").await?,
        memberships: count(connection, "SELECT count(*) AS n FROM memberships").await?,
    })
}

/// Empties the replica store's data tables and generation floors (fences
/// stay: epochs only grow).
pub async fn empty_replica(connection: &DatabaseConnection) -> anyhow::Result<()> {
    execute(
        connection,
        "TRUNCATE replica_tenants, replica_users, replica_groups, replica_memberships, generation_floors",
    )
    .await
    .context("empty the replica tables")?;
    Ok(())
}

/// Runs one or more statements without parameters (simple protocol).
pub async fn execute(connection: &impl ConnectionTrait, sql: &str) -> anyhow::Result<u64> {
    let result = connection.execute_unprepared(sql).await?;
    Ok(result.rows_affected())
}

/// The first column (`n`, a bigint) of a one-row query.
pub async fn count(connection: &impl ConnectionTrait, sql: &str) -> anyhow::Result<u64> {
    let row = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            sql.to_owned(),
        ))
        .await?
        .context("a count query returned no row")?;
    let value: i64 = row.try_get("", "n")?;
    Ok(u64::try_from(value).unwrap_or(0))
}

/// One text value (`v`) of a one-row query.
pub async fn text(connection: &impl ConnectionTrait, sql: &str) -> anyhow::Result<String> {
    let row = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            sql.to_owned(),
        ))
        .await?
        .context("a query returned no row")?;
    Ok(row.try_get("", "v")?)
}

/// Refuses URLs that are not PostgreSQL, or one database for both roles.
pub fn check_urls(monolith_url: &str, replica_url: &str) -> anyhow::Result<()> {
    for (what, url) in [("monolith", monolith_url), ("replica", replica_url)] {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("the {what} database must be PostgreSQL (postgres://…)");
        }
    }
    if monolith_url == replica_url {
        bail!("the monolith and the replica need two different databases");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tenant_holds_exactly_the_users_asked_for() {
        for users in [1, 1_000, 1_000_000] {
            assert_eq!(
                tenant_sizes(&spec_for_one_tenant(users, 42)),
                vec![users as usize]
            );
        }
    }

    #[test]
    fn scale_one_is_about_a_million_users_in_a_thousand_tenants() {
        let sizes = tenant_sizes(&spec_for_scale(1.0, 42));
        assert_eq!(sizes.len(), 1_000);
        let users: usize = sizes.iter().sum();
        assert!((990_000..=1_010_000).contains(&users), "{users}");
    }
}
