//! A stream of random changes through the normal write path: updates,
//! creations and deletions of every kind, weighted like a real workload
//! (mostly user updates and membership churn). Deterministic given the seed
//! and the starting data.

use crate::Monolith;
use crate::error::{ErrorKind, Result};
use crate::read::MAX_PAGE_LIMIT;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recon_core::{Group, Membership, Tenant, User, UserStatus, Version};
use serde::Serialize;
use tracing::{debug, instrument};

/// Tenants with at most this many users may be deleted by random changes.
const DELETABLE_TENANT_USERS: u64 = 20;

/// What [`random_changes`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RandomChangesSummary {
    /// Write operations that succeeded (a cascading delete counts once).
    pub applied: u64,
    /// Operations that found their target gone (a concurrent writer) and
    /// were skipped.
    pub skipped: u64,
    /// The watermark afterwards.
    pub watermark: Version,
}

/// One random operation.
#[derive(Debug, Clone, Copy)]
enum Operation {
    RenameTenant,
    CreateTenant,
    DeleteTenant,
    UpdateUser,
    CreateUser,
    DeleteUser,
    CreateGroup,
    DeleteGroup,
    RenameGroup,
    AddMembership,
    RemoveMembership,
}

/// Cumulative weights (out of 100) of the operations.
const OPERATIONS: [(u32, Operation); 11] = [
    (4, Operation::RenameTenant),
    (6, Operation::CreateTenant),
    (7, Operation::DeleteTenant),
    (40, Operation::UpdateUser),
    (50, Operation::CreateUser),
    (56, Operation::DeleteUser),
    (61, Operation::CreateGroup),
    (64, Operation::DeleteGroup),
    (68, Operation::RenameGroup),
    (88, Operation::AddMembership),
    (100, Operation::RemoveMembership),
];

fn choose_operation(rng: &mut ChaCha8Rng) -> Operation {
    let roll = rng.random_range(0..100);
    OPERATIONS
        .iter()
        .find(|(bound, _)| roll < *bound)
        .map_or(Operation::UpdateUser, |(_, operation)| *operation)
}

/// Applies `count` random changes through the write path.
#[instrument(skip_all, name = "monolith.random_changes", fields(count, seed))]
pub async fn random_changes(
    monolith: &Monolith,
    count: usize,
    seed: u64,
) -> Result<RandomChangesSummary> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tenant_ids = all_tenant_ids(monolith).await?;
    let mut summary = RandomChangesSummary {
        applied: 0,
        skipped: 0,
        watermark: Version::ZERO,
    };
    for _ in 0..count {
        let outcome = if tenant_ids.is_empty() {
            create_tenant(monolith, &mut rng, &mut tenant_ids).await
        } else {
            let tenant_id = tenant_ids[rng.random_range(0..tenant_ids.len())].clone();
            let operation = choose_operation(&mut rng);
            let mut step = Step {
                monolith,
                rng: &mut rng,
                tenant_id: &tenant_id,
            };
            match operation {
                Operation::CreateTenant => create_tenant(monolith, step.rng, &mut tenant_ids).await,
                Operation::DeleteTenant => step.delete_small_tenant(&mut tenant_ids).await,
                other => step.apply(other).await,
            }
        };
        match outcome {
            Ok(()) => summary.applied += 1,
            Err(error) if matches!(error.kind(), ErrorKind::NotFound | ErrorKind::Conflict) => {
                debug!(error = %error, "random change skipped");
                summary.skipped += 1;
            }
            Err(error) => return Err(error),
        }
    }
    summary.watermark = monolith.watermark().await?;
    Ok(summary)
}

async fn all_tenant_ids(monolith: &Monolith) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = monolith
            .list_tenants(after.as_deref(), MAX_PAGE_LIMIT)
            .await?;
        ids.extend(page.rows.iter().map(|row| row.tenant_id.clone()));
        match page.next_after {
            Some(key) => after = key.into_parts().into_iter().next(),
            None => return Ok(ids),
        }
    }
}

fn random_id(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

async fn create_tenant(
    monolith: &Monolith,
    rng: &mut ChaCha8Rng,
    tenant_ids: &mut Vec<String>,
) -> Result<()> {
    let tenant = Tenant {
        id: random_id(rng),
        name: format!("Tenant {}", rng.random_range(0..100_000)),
    };
    monolith.put_tenant(&tenant).await?;
    tenant_ids.push(tenant.id);
    Ok(())
}

/// One random operation on one tenant.
struct Step<'a> {
    monolith: &'a Monolith,
    rng: &'a mut ChaCha8Rng,
    tenant_id: &'a str,
}

impl Step<'_> {
    async fn apply(&mut self, operation: Operation) -> Result<()> {
        match operation {
            Operation::RenameTenant => {
                let tenant = Tenant {
                    id: self.tenant_id.to_owned(),
                    name: format!("Tenant {}", self.rng.random_range(0..100_000)),
                };
                self.monolith.put_tenant(&tenant).await.map(drop)
            }
            Operation::UpdateUser => {
                let user_id = match self.random_user().await? {
                    Some(user_id) => user_id,
                    None => random_id(self.rng),
                };
                self.write_user(user_id).await
            }
            Operation::CreateUser => {
                let user_id = random_id(self.rng);
                self.write_user(user_id).await
            }
            Operation::DeleteUser => match self.random_user().await? {
                Some(user_id) => self
                    .monolith
                    .delete_user(self.tenant_id, &user_id)
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Operation::CreateGroup | Operation::RenameGroup => {
                let existing = match operation {
                    Operation::RenameGroup => self.random_group().await?,
                    _ => None,
                };
                let group = Group {
                    id: existing.unwrap_or_else(|| random_id(self.rng)),
                    name: format!("Group {}", self.rng.random_range(0..100_000)),
                };
                self.monolith
                    .put_group(self.tenant_id, &group)
                    .await
                    .map(drop)
            }
            Operation::DeleteGroup => match self.random_group().await? {
                Some(group_id) => self
                    .monolith
                    .delete_group(self.tenant_id, &group_id)
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Operation::AddMembership => {
                let (Some(group_id), Some(user_id)) =
                    (self.random_group().await?, self.random_user().await?)
                else {
                    return Ok(());
                };
                let membership = Membership { group_id, user_id };
                self.monolith
                    .put_membership(self.tenant_id, &membership)
                    .await
                    .map(drop)
            }
            Operation::RemoveMembership => match self.random_membership().await? {
                Some(membership) => self
                    .monolith
                    .delete_membership(self.tenant_id, &membership.group_id, &membership.user_id)
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Operation::CreateTenant | Operation::DeleteTenant => Ok(()),
        }
    }

    async fn delete_small_tenant(&mut self, tenant_ids: &mut Vec<String>) -> Result<()> {
        let counts = self.monolith.counts(self.tenant_id).await?;
        if counts.users > DELETABLE_TENANT_USERS {
            return self.apply(Operation::RenameTenant).await;
        }
        self.monolith.delete_tenant(self.tenant_id).await?;
        tenant_ids.retain(|id| id != self.tenant_id);
        Ok(())
    }

    async fn write_user(&mut self, user_id: String) -> Result<()> {
        let number = self.rng.random_range(0..100_000);
        let user = User {
            email: format!("user{number}@changed.example"),
            display_name: format!("User {number}"),
            status: if self.rng.random_bool(0.1) {
                UserStatus::Disabled
            } else {
                UserStatus::Active
            },
            id: user_id,
        };
        self.monolith
            .put_user(self.tenant_id, &user)
            .await
            .map(drop)
    }

    /// A random existing row of `kind_name` in the tenant: the first id at
    /// or after a random probe (ids are UUIDs, so probes land uniformly),
    /// wrapping around.
    async fn random_id_of(&mut self, kind_name: &str) -> Result<Option<String>> {
        let probe = random_id(self.rng);
        let kind = self.monolith.kind_named(kind_name)?;
        let tenant = self.tenant_id;
        let found = match self
            .monolith
            .first_key(kind, tenant, &[], Some(&probe))
            .await?
        {
            Some(key) => Some(key),
            None => self.monolith.first_key(kind, tenant, &[], None).await?,
        };
        Ok(found.and_then(|key| key.into_iter().next()))
    }

    async fn random_user(&mut self) -> Result<Option<String>> {
        self.random_id_of("user").await
    }

    async fn random_group(&mut self) -> Result<Option<String>> {
        self.random_id_of("group").await
    }

    /// The first membership (by user id) of a random group.
    async fn random_membership(&mut self) -> Result<Option<Membership>> {
        let Some(group_id) = self.random_group().await? else {
            return Ok(None);
        };
        let kind = self.monolith.kind_named("membership")?;
        let found = self
            .monolith
            .first_key(kind, self.tenant_id, &[group_id], None)
            .await?;
        Ok(found.and_then(|key| match <[String; 2]>::try_from(key) {
            Ok([group_id, user_id]) => Some(Membership { group_id, user_id }),
            Err(_) => None,
        }))
    }
}
