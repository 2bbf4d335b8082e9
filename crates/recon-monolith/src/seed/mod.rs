//! The workload generator: a deterministic, heavy-tailed population of
//! tenants, users, groups and memberships, and a stream of random changes
//! ([`random_changes`]) — the default schema's benchmark workload — and a
//! random population of any declared schema ([`run_declared`]).
//!
//! Everything derives from [`SeedSpec::seed`]: tenant sizes come from a
//! seeded ChaCha RNG (a Pareto distribution, so a few tenants are very large
//! and most are small), each tenant's data from its own RNG stream, and ids
//! are UUIDv5 of names built from the seed. Same spec, same data.
//!
//! Seeding is fast but honest: rows go in with multi-row inserts in big
//! transactions, yet every row still gets its own sequence number (a block
//! is allocated with one counter update) and its own outbox event.

mod declared;
mod insert;
mod random;

pub use declared::{DeclaredSeedSummary, run_declared};
pub use random::{RandomChangesSummary, random_changes};

use crate::Monolith;
use crate::error::{Error, Result};
use insert::NewRows;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recon_core::schema::FieldValue;
use recon_core::{Group, Membership, Tenant, User, UserStatus, Version};
use serde::Serialize;
use tracing::{info, instrument};
use uuid::Uuid;

/// Rows per seeding transaction (small tenants are grouped together).
const ROWS_PER_TRANSACTION: usize = 20_000;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeedSpec {
    /// The seed every id and value derives from.
    pub seed: u64,
    /// Number of tenants.
    pub tenants: usize,
    /// Mean users per tenant before capping (the Pareto distribution's mean).
    pub users_per_tenant_mean: f64,
    /// Cap on users per tenant.
    pub max_users_per_tenant: usize,
    /// Pareto tail index (> 1); smaller means heavier tails.
    pub tail_index: f64,
    /// Users per group (a tenant has `ceil(users / users_per_group)` groups).
    pub users_per_group: f64,
    /// Mean number of groups a user belongs to.
    pub groups_per_user_mean: f64,
    /// Share of users that are disabled, in `[0, 1]`.
    pub disabled_share: f64,
}

impl Default for SeedSpec {
    fn default() -> Self {
        SeedSpec {
            seed: 42,
            tenants: 20,
            users_per_tenant_mean: 50.0,
            max_users_per_tenant: 20_000,
            tail_index: 1.2,
            users_per_group: 10.0,
            groups_per_user_mean: 2.0,
            disabled_share: 0.1,
        }
    }
}

impl SeedSpec {
    /// Checks the spec; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, rule: &str| Err(Error::BadRequest(format!("seed spec: {field} {rule}")));
        if self.tenants > 1_000_000 {
            return bad("tenants", "must be at most 1000000");
        }
        if !(self.users_per_tenant_mean.is_finite() && self.users_per_tenant_mean >= 1.0) {
            return bad("users_per_tenant_mean", "must be at least 1");
        }
        if self.max_users_per_tenant == 0 || self.max_users_per_tenant > 10_000_000 {
            return bad("max_users_per_tenant", "must be between 1 and 10000000");
        }
        if !(self.tail_index.is_finite() && self.tail_index > 1.0) {
            return bad("tail_index", "must be greater than 1");
        }
        if !(self.users_per_group.is_finite() && self.users_per_group >= 1.0) {
            return bad("users_per_group", "must be at least 1");
        }
        if !(self.groups_per_user_mean.is_finite() && self.groups_per_user_mean >= 0.0) {
            return bad("groups_per_user_mean", "must be at least 0");
        }
        if !(0.0..=1.0).contains(&self.disabled_share) {
            return bad("disabled_share", "must be between 0 and 1");
        }
        Ok(())
    }
}

/// What [`run`] inserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeedSummary {
    /// Tenants inserted.
    pub tenants: u64,
    /// Users inserted.
    pub users: u64,
    /// Groups inserted.
    pub groups: u64,
    /// Memberships inserted.
    pub memberships: u64,
    /// Users of the largest tenant.
    pub largest_tenant_users: u64,
    /// Users of the median tenant.
    pub median_tenant_users: u64,
    /// The watermark after seeding.
    pub watermark: Version,
}

/// One generated tenant with its entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantData {
    /// The tenant.
    pub tenant: Tenant,
    /// Its users.
    pub users: Vec<User>,
    /// Its groups.
    pub groups: Vec<Group>,
    /// Its memberships, ordered by `(group_id, user_id)`.
    pub memberships: Vec<Membership>,
}

impl TenantData {
    fn row_count(&self) -> usize {
        1 + self.users.len() + self.groups.len() + self.memberships.len()
    }
}

/// Users per tenant, from a Pareto distribution with the spec's mean and
/// tail index, capped at `max_users_per_tenant`.
pub fn tenant_sizes(spec: &SeedSpec) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let scale = spec.users_per_tenant_mean * (spec.tail_index - 1.0) / spec.tail_index;
    let mut sizes = Vec::with_capacity(spec.tenants);
    for _ in 0..spec.tenants {
        let uniform: f64 = 1.0 - rng.random::<f64>();
        let size = scale * uniform.powf(-1.0 / spec.tail_index);
        let capped = size.round().clamp(1.0, spec.max_users_per_tenant as f64);
        sizes.push(capped as usize);
    }
    sizes
}

fn seed_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, b"recon-monolith-seed")
}

/// A deterministic id: the UUIDv5 of `name` in the seeder's namespace.
pub fn seeded_id(name: &str) -> String {
    Uuid::new_v5(&seed_namespace(), name.as_bytes()).to_string()
}

const ADJECTIVES: [&str; 8] = [
    "Amber", "Blue", "Coral", "Dune", "Ember", "Frost", "Granite", "Harbor",
];
const NOUNS: [&str; 8] = [
    "Labs",
    "Works",
    "Systems",
    "Foods",
    "Logistics",
    "Media",
    "Health",
    "Bank",
];
const FIRST_NAMES: [&str; 10] = [
    "Ada", "Bo", "Chen", "Dara", "Emil", "Fatou", "Goran", "Hana", "Ines", "Jun",
];
const LAST_NAMES: [&str; 10] = [
    "Abe", "Berg", "Costa", "Diaz", "Eze", "Fox", "Gupta", "Holm", "Ivanova", "Jones",
];

fn pick<'a>(rng: &mut ChaCha8Rng, words: &[&'a str]) -> &'a str {
    words[rng.random_range(0..words.len())]
}

/// Generates tenant number `index` with `user_count` users.
pub fn generate_tenant(spec: &SeedSpec, index: usize, user_count: usize) -> TenantData {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    rng.set_stream(index as u64 + 1);
    let seed = spec.seed;
    let tenant_id = seeded_id(&format!("{seed}/tenant/{index}"));
    let tenant_name = format!(
        "{} {} {index}",
        pick(&mut rng, &ADJECTIVES),
        pick(&mut rng, &NOUNS)
    );
    let domain = format!("t{index}-s{seed}.example");
    let mut users = Vec::with_capacity(user_count);
    for number in 0..user_count {
        let first = pick(&mut rng, &FIRST_NAMES);
        let last = pick(&mut rng, &LAST_NAMES);
        let disabled = rng.random_bool(spec.disabled_share);
        users.push(User {
            id: seeded_id(&format!("{seed}/{index}/user/{number}")),
            email: format!(
                "{}.{}{number}@{domain}",
                first.to_lowercase(),
                last.to_lowercase()
            ),
            display_name: format!("{first} {last}"),
            status: if disabled {
                UserStatus::Disabled
            } else {
                UserStatus::Active
            },
        });
    }
    let group_count = ((user_count as f64) / spec.users_per_group).ceil().max(1.0) as usize;
    let groups: Vec<Group> = (0..group_count)
        .map(|number| Group {
            id: seeded_id(&format!("{seed}/{index}/group/{number}")),
            name: format!("{} team {number}", pick(&mut rng, &ADJECTIVES)),
        })
        .collect();
    let most_groups = (spec.groups_per_user_mean * 2.0).round() as usize;
    let mut memberships = Vec::new();
    for user in &users {
        let joined = rng.random_range(0..=most_groups).min(group_count);
        for group_index in rand::seq::index::sample(&mut rng, group_count, joined) {
            memberships.push(Membership {
                group_id: groups[group_index].id.clone(),
                user_id: user.id.clone(),
            });
        }
    }
    memberships.sort_by(|left, right| {
        (left.group_id.as_bytes(), left.user_id.as_bytes())
            .cmp(&(right.group_id.as_bytes(), right.user_id.as_bytes()))
    });
    TenantData {
        tenant: Tenant {
            id: tenant_id,
            name: tenant_name,
        },
        users,
        groups,
        memberships,
    }
}

/// Generates the spec's data and inserts it into `monolith`. Fails with a
/// conflict if the same seed was inserted before.
#[instrument(skip_all, name = "monolith.seed", fields(seed = spec.seed, tenants = spec.tenants))]
pub async fn run(monolith: &Monolith, spec: &SeedSpec) -> Result<SeedSummary> {
    spec.validate()?;
    let sizes = tenant_sizes(spec);
    let mut summary = SeedSummary {
        tenants: 0,
        users: 0,
        groups: 0,
        memberships: 0,
        largest_tenant_users: sizes.iter().copied().max().unwrap_or(0) as u64,
        median_tenant_users: median(&sizes) as u64,
        watermark: Version::ZERO,
    };
    let mut pending: Vec<TenantData> = Vec::new();
    let mut pending_rows = 0;
    for (index, &user_count) in sizes.iter().enumerate() {
        let data = generate_tenant(spec, index, user_count);
        summary.tenants += 1;
        summary.users += data.users.len() as u64;
        summary.groups += data.groups.len() as u64;
        summary.memberships += data.memberships.len() as u64;
        pending_rows += data.row_count();
        pending.push(data);
        if pending_rows >= ROWS_PER_TRANSACTION {
            insert_tenants(monolith, std::mem::take(&mut pending)).await?;
            pending_rows = 0;
        }
    }
    if !pending.is_empty() {
        insert_tenants(monolith, pending).await?;
    }
    summary.watermark = monolith.watermark().await?;
    info!(
        tenants = summary.tenants,
        users = summary.users,
        groups = summary.groups,
        memberships = summary.memberships,
        "seeded"
    );
    Ok(summary)
}

fn median(sizes: &[usize]) -> usize {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// Inserts whole tenants in one transaction: one block of sequence
/// numbers, multi-row inserts, one outbox event per row ([`insert`]).
async fn insert_tenants(monolith: &Monolith, tenants: Vec<TenantData>) -> Result<()> {
    let model = monolith.model();
    let index = |name: &str| {
        model.kind(name).map(|kind| kind.index).ok_or_else(|| {
            Error::BadRequest(format!(
                "the {name} kind is not declared: the default workload is the default schema's"
            ))
        })
    };
    let (tenant, user, group, membership) = (
        index("tenant")?,
        index("user")?,
        index("group")?,
        index("membership")?,
    );
    let mut batch = NewRows::new(monolith);
    for data in tenants {
        let scope = data.tenant.id;
        batch.push(
            tenant,
            scope.clone(),
            [scope.clone()],
            [FieldValue::Text(data.tenant.name)],
        );
        for item in data.users {
            let values = [
                FieldValue::Text(item.email),
                FieldValue::Text(item.display_name),
                FieldValue::Text(item.status.as_str().to_owned()),
            ];
            batch.push(user, scope.clone(), [item.id], values);
        }
        for item in data.groups {
            batch.push(
                group,
                scope.clone(),
                [item.id],
                [FieldValue::Text(item.name)],
            );
        }
        for item in data.memberships {
            batch.push(membership, scope.clone(), [item.group_id, item.user_id], []);
        }
    }
    insert::insert(monolith, batch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data() {
        let spec = SeedSpec::default();
        assert_eq!(tenant_sizes(&spec), tenant_sizes(&spec));
        assert_eq!(generate_tenant(&spec, 3, 40), generate_tenant(&spec, 3, 40));
        let other = SeedSpec {
            seed: 7,
            ..SeedSpec::default()
        };
        assert_ne!(
            generate_tenant(&spec, 3, 40),
            generate_tenant(&other, 3, 40)
        );
    }

    #[test]
    fn sizes_are_heavy_tailed() {
        let spec = SeedSpec {
            tenants: 500,
            ..SeedSpec::default()
        };
        let sizes = tenant_sizes(&spec);
        let largest = sizes.iter().copied().max().unwrap_or(0);
        assert!(
            largest >= 10 * median(&sizes),
            "largest {largest}, median {}",
            median(&sizes)
        );
    }

    #[test]
    fn memberships_reference_the_tenants_entities() {
        let data = generate_tenant(&SeedSpec::default(), 0, 100);
        for membership in &data.memberships {
            assert!(data.users.iter().any(|user| user.id == membership.user_id));
            assert!(
                data.groups
                    .iter()
                    .any(|group| group.id == membership.group_id)
            );
        }
    }
}
