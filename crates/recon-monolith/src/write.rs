//! The write path: create, update and delete tenants, users, groups and
//! memberships.
//!
//! Every operation is one transaction that locks the meta row, allocates
//! one sequence number per change (so sequence order is commit order),
//! writes the rows with version `(current generation, sequence)` and appends
//! one outbox event per change. Deletions cascade: deleting a tenant deletes
//! its memberships, users and groups, deleting a user or group its
//! memberships, each with its own event (children first).

use crate::Monolith;
use crate::db::entities::{group, membership, tenant, user};
use crate::db::{self, allocate_sequences, lock_meta, rows};
use crate::error::{DbResultExt, Error, Result};
use recon_core::domain::validate_id;
use recon_core::{
    Change, Deletion, EntityKey, Group, Kind, Membership, Record, Row, Tenant, User, Version,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::Serialize;
use tracing::instrument;

/// Longest free-text field (name, e-mail, display name) accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 1000;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WriteOutcome {
    /// The version of the addressed entity's change (for a cascading delete,
    /// the last change, which is the addressed entity's deletion).
    pub version: Version,
    /// How many changes (and outbox events) the write made.
    pub changes: u64,
}

/// Checks a group id: a valid id without `:` (a membership cursor is
/// `group_id:user_id`, split at the first colon).
pub fn validate_group_id(group_id: &str) -> Result<()> {
    validate_id("group id", group_id)?;
    if group_id.contains(':') {
        return Err(Error::BadRequest(format!(
            "group id {group_id:?} must not contain ':' (membership cursors are group_id:user_id)"
        )));
    }
    Ok(())
}

/// Checks a free-text field: at most [`MAX_TEXT_BYTES`], no NUL character.
pub fn validate_text(field: &'static str, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(Error::BadRequest(format!(
            "{field} is {} bytes long, at most {MAX_TEXT_BYTES} allowed",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(Error::BadRequest(format!(
            "{field} contains a NUL character"
        )));
    }
    Ok(())
}

impl Monolith {
    /// Creates or updates a tenant.
    #[instrument(skip_all, name = "monolith.write", fields(kind = "tenant", tenant = %tenant.id))]
    pub async fn put_tenant(&self, tenant: &Tenant) -> Result<WriteOutcome> {
        recon_core::validate_tenant_id(&tenant.id)?;
        validate_text("name", &tenant.name)?;
        let record = Record::Tenant(tenant.clone());
        self.upsert_one(&tenant.id, record).await
    }

    /// Creates or updates a user of an existing tenant.
    #[instrument(skip_all, name = "monolith.write", fields(kind = "user", tenant = %tenant_id))]
    pub async fn put_user(&self, tenant_id: &str, user: &User) -> Result<WriteOutcome> {
        recon_core::validate_tenant_id(tenant_id)?;
        validate_id("user id", &user.id)?;
        validate_text("email", &user.email)?;
        validate_text("display_name", &user.display_name)?;
        self.upsert_one(tenant_id, Record::User(user.clone())).await
    }

    /// Creates or updates a group of an existing tenant.
    #[instrument(skip_all, name = "monolith.write", fields(kind = "group", tenant = %tenant_id))]
    pub async fn put_group(&self, tenant_id: &str, group: &Group) -> Result<WriteOutcome> {
        recon_core::validate_tenant_id(tenant_id)?;
        validate_group_id(&group.id)?;
        validate_text("name", &group.name)?;
        self.upsert_one(tenant_id, Record::Group(group.clone()))
            .await
    }

    /// Adds a user to a group (or re-writes the membership with a new
    /// version). The user and the group must exist in the tenant
    /// ([`Error::Conflict`] otherwise).
    #[instrument(skip_all, name = "monolith.write", fields(kind = "membership", tenant = %tenant_id))]
    pub async fn put_membership(
        &self,
        tenant_id: &str,
        membership: &Membership,
    ) -> Result<WriteOutcome> {
        recon_core::validate_tenant_id(tenant_id)?;
        validate_id("group id", &membership.group_id)?;
        validate_id("user id", &membership.user_id)?;
        self.upsert_one(tenant_id, Record::Membership(membership.clone()))
            .await
    }

    /// Deletes a tenant with all its memberships, users and groups.
    #[instrument(skip_all, name = "monolith.write", fields(kind = "tenant", tenant = %tenant_id))]
    pub async fn delete_tenant(&self, tenant_id: &str) -> Result<WriteOutcome> {
        recon_core::validate_tenant_id(tenant_id)?;
        self.delete_one(tenant_id, Kind::TENANT, EntityKey::id(tenant_id))
            .await
    }

    /// Deletes a user and its memberships.
    #[instrument(skip_all, name = "monolith.write", fields(kind = "user", tenant = %tenant_id))]
    pub async fn delete_user(&self, tenant_id: &str, user_id: &str) -> Result<WriteOutcome> {
        recon_core::validate_tenant_id(tenant_id)?;
        validate_id("user id", user_id)?;
        self.delete_one(tenant_id, Kind::USER, EntityKey::id(user_id))
            .await
    }

    /// Deletes a group and its memberships.
    #[instrument(skip_all, name = "monolith.write", fields(kind = "group", tenant = %tenant_id))]
    pub async fn delete_group(&self, tenant_id: &str, group_id: &str) -> Result<WriteOutcome> {
        recon_core::validate_tenant_id(tenant_id)?;
        validate_id("group id", group_id)?;
        self.delete_one(tenant_id, Kind::GROUP, EntityKey::id(group_id))
            .await
    }

    /// Removes a user from a group.
    #[instrument(skip_all, name = "monolith.write", fields(kind = "membership", tenant = %tenant_id))]
    pub async fn delete_membership(
        &self,
        tenant_id: &str,
        group_id: &str,
        user_id: &str,
    ) -> Result<WriteOutcome> {
        recon_core::validate_tenant_id(tenant_id)?;
        validate_id("group id", group_id)?;
        validate_id("user id", user_id)?;
        let key = EntityKey::pair(group_id, user_id);
        self.delete_one(tenant_id, Kind::MEMBERSHIP, key).await
    }

    async fn upsert_one(&self, tenant_id: &str, record: Record) -> Result<WriteOutcome> {
        let txn = db::begin_write(&self.connection).await?;
        lock_meta(&txn).await?;
        check_references(&txn, tenant_id, &record).await?;
        let mut block = allocate_sequences(&txn, 1).await?;
        let row = Row {
            tenant_id: tenant_id.to_owned(),
            record,
            version: block.next_version()?,
        };
        rows::upsert(&txn, &row).await?;
        let version = row.version;
        rows::append_outbox(&txn, &[Change::Upsert(row)]).await?;
        txn.commit().await.during("commit a write")?;
        Ok(WriteOutcome {
            version,
            changes: 1,
        })
    }

    async fn delete_one(
        &self,
        tenant_id: &str,
        kind: Kind,
        key: EntityKey,
    ) -> Result<WriteOutcome> {
        let txn = db::begin_write(&self.connection).await?;
        lock_meta(&txn).await?;
        if !exists(&txn, tenant_id, kind, &key).await? {
            return Err(not_found(tenant_id, kind, &key));
        }
        let mut doomed = cascade(&txn, tenant_id, kind, &key).await?;
        doomed.push((kind, key.clone()));
        let count = u64::try_from(doomed.len()).unwrap_or(u64::MAX);
        let mut block = allocate_sequences(&txn, count).await?;
        let mut changes = Vec::with_capacity(doomed.len());
        for (doomed_kind, doomed_key) in doomed {
            changes.push(Change::Delete(Deletion {
                tenant_id: tenant_id.to_owned(),
                kind: doomed_kind,
                key: doomed_key,
                version: block.next_version()?,
            }));
        }
        delete_rows(&txn, tenant_id, kind, &key).await?;
        rows::append_outbox(&txn, &changes).await?;
        txn.commit().await.during("commit a delete")?;
        let version = changes.last().map_or(Version::ZERO, Change::version);
        Ok(WriteOutcome {
            version,
            changes: count,
        })
    }
}

/// A write must not dangle: users and groups need their tenant (404 if it
/// is missing), memberships their user and group too (409 if missing).
async fn check_references(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    record: &Record,
) -> Result<()> {
    if matches!(record, Record::Tenant(_)) {
        return Ok(());
    }
    let tenant_key = EntityKey::id(tenant_id);
    if !exists(txn, tenant_id, Kind::TENANT, &tenant_key).await? {
        return Err(not_found(tenant_id, Kind::TENANT, &tenant_key));
    }
    if let Record::Membership(membership) = record {
        for (kind, id) in [
            (Kind::USER, &membership.user_id),
            (Kind::GROUP, &membership.group_id),
        ] {
            if !exists(txn, tenant_id, kind, &EntityKey::id(id.as_str())).await? {
                return Err(Error::Conflict(format!(
                    "{kind} {id:?} does not exist in tenant {tenant_id:?}"
                )));
            }
        }
    }
    Ok(())
}

fn not_found(tenant_id: &str, kind: Kind, key: &EntityKey) -> Error {
    match kind {
        Kind::TENANT => Error::NotFound(format!("tenant {tenant_id:?}")),
        _ => Error::NotFound(format!(
            "{kind} {:?} in tenant {tenant_id:?}",
            key.to_string()
        )),
    }
}

/// Whether the entity exists (read inside the write transaction).
pub(crate) async fn exists(
    connection: &impl ConnectionTrait,
    tenant_id: &str,
    kind: Kind,
    key: &EntityKey,
) -> Result<bool> {
    let action = "check that an entity exists";
    let found = match kind {
        Kind::TENANT => tenant::Entity::find_by_id(tenant_id.to_owned())
            .one(connection)
            .await
            .during(action)?
            .is_some(),
        Kind::USER => user::Entity::find_by_id((tenant_id.to_owned(), key.primary.clone()))
            .one(connection)
            .await
            .during(action)?
            .is_some(),
        Kind::GROUP => group::Entity::find_by_id((tenant_id.to_owned(), key.primary.clone()))
            .one(connection)
            .await
            .during(action)?
            .is_some(),
        Kind::MEMBERSHIP => {
            let user_id = key.secondary.clone().unwrap_or_default();
            membership::Entity::find_by_id((tenant_id.to_owned(), key.primary.clone(), user_id))
                .one(connection)
                .await
                .during(action)?
                .is_some()
        }
    };
    Ok(found)
}

/// The entities a deletion takes with it, children first, each kind in key
/// order.
async fn cascade(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    kind: Kind,
    key: &EntityKey,
) -> Result<Vec<(Kind, EntityKey)>> {
    let action = "list the entities a deletion cascades to";
    let mut doomed = Vec::new();
    let mut memberships = membership::Entity::find()
        .select_only()
        .columns([membership::Column::GroupId, membership::Column::UserId])
        .filter(membership::Column::TenantId.eq(tenant_id))
        .order_by_asc(membership::Column::GroupId)
        .order_by_asc(membership::Column::UserId);
    memberships = match kind {
        Kind::TENANT => memberships,
        Kind::USER => memberships.filter(membership::Column::UserId.eq(key.primary.as_str())),
        Kind::GROUP => memberships.filter(membership::Column::GroupId.eq(key.primary.as_str())),
        Kind::MEMBERSHIP => return Ok(doomed),
    };
    let pairs: Vec<(String, String)> = memberships.into_tuple().all(txn).await.during(action)?;
    for (group_id, user_id) in pairs {
        doomed.push((Kind::MEMBERSHIP, EntityKey::pair(group_id, user_id)));
    }
    if kind == Kind::TENANT {
        let user_ids: Vec<String> = user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .filter(user::Column::TenantId.eq(tenant_id))
            .order_by_asc(user::Column::Id)
            .into_tuple()
            .all(txn)
            .await
            .during(action)?;
        doomed.extend(
            user_ids
                .into_iter()
                .map(|id| (Kind::USER, EntityKey::id(id))),
        );
        let group_ids: Vec<String> = group::Entity::find()
            .select_only()
            .column(group::Column::Id)
            .filter(group::Column::TenantId.eq(tenant_id))
            .order_by_asc(group::Column::Id)
            .into_tuple()
            .all(txn)
            .await
            .during(action)?;
        doomed.extend(
            group_ids
                .into_iter()
                .map(|id| (Kind::GROUP, EntityKey::id(id))),
        );
    }
    Ok(doomed)
}

/// Deletes the entity and everything [`cascade`] listed, children first.
async fn delete_rows(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    kind: Kind,
    key: &EntityKey,
) -> Result<()> {
    let action = "delete rows";
    let memberships =
        membership::Entity::delete_many().filter(membership::Column::TenantId.eq(tenant_id));
    let memberships = match kind {
        Kind::TENANT => memberships,
        Kind::USER => memberships.filter(membership::Column::UserId.eq(key.primary.as_str())),
        Kind::GROUP => memberships.filter(membership::Column::GroupId.eq(key.primary.as_str())),
        Kind::MEMBERSHIP => memberships
            .filter(membership::Column::GroupId.eq(key.primary.as_str()))
            .filter(membership::Column::UserId.eq(key.secondary.as_deref().unwrap_or_default())),
    };
    memberships.exec(txn).await.during(action)?;
    if matches!(kind, Kind::TENANT | Kind::USER) {
        let mut users = user::Entity::delete_many().filter(user::Column::TenantId.eq(tenant_id));
        if kind == Kind::USER {
            users = users.filter(user::Column::Id.eq(key.primary.as_str()));
        }
        users.exec(txn).await.during(action)?;
    }
    if matches!(kind, Kind::TENANT | Kind::GROUP) {
        let mut groups = group::Entity::delete_many().filter(group::Column::TenantId.eq(tenant_id));
        if kind == Kind::GROUP {
            groups = groups.filter(group::Column::Id.eq(key.primary.as_str()));
        }
        groups.exec(txn).await.during(action)?;
    }
    if kind == Kind::TENANT {
        tenant::Entity::delete_by_id(tenant_id.to_owned())
            .exec(txn)
            .await
            .during(action)?;
    }
    Ok(())
}
