//! Conversions between the domain's [`Row`]s and the entities, and the
//! row-level statements shared by the write path, the seeder and the outbox.

use super::entities::{group, membership, outbox, tenant, user};
use super::{stored_version, version_columns};
use crate::error::{DbResultExt, Error, Result};
use recon_core::{Change, Group, Membership, Record, Row, Tenant, User, UserStatus};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};

/// Rows per multi-row `INSERT` (well under both backends' bind limits).
const INSERT_CHUNK: usize = 500;

/// The row of a tenant model.
pub(crate) fn tenant_row(model: tenant::Model) -> Result<Row> {
    Ok(Row {
        tenant_id: model.id.clone(),
        version: stored_version(model.generation, model.sequence)?,
        record: Record::Tenant(Tenant {
            id: model.id,
            name: model.name,
        }),
    })
}

/// The row of a user model.
pub(crate) fn user_row(model: user::Model) -> Result<Row> {
    let status: UserStatus = model
        .status
        .parse()
        .map_err(|_| Error::Corrupt(format!("user {} has status {:?}", model.id, model.status)))?;
    Ok(Row {
        tenant_id: model.tenant_id,
        version: stored_version(model.generation, model.sequence)?,
        record: Record::User(User {
            id: model.id,
            email: model.email,
            display_name: model.display_name,
            status,
        }),
    })
}

/// The row of a group model.
pub(crate) fn group_row(model: group::Model) -> Result<Row> {
    Ok(Row {
        tenant_id: model.tenant_id,
        version: stored_version(model.generation, model.sequence)?,
        record: Record::Group(Group {
            id: model.id,
            name: model.name,
        }),
    })
}

/// The row of a membership model.
pub(crate) fn membership_row(model: membership::Model) -> Result<Row> {
    Ok(Row {
        tenant_id: model.tenant_id,
        version: stored_version(model.generation, model.sequence)?,
        record: Record::Membership(Membership {
            group_id: model.group_id,
            user_id: model.user_id,
        }),
    })
}

/// Rows of one kind, as active models ready for a multi-row insert.
enum Batch {
    Tenants(Vec<tenant::ActiveModel>),
    Users(Vec<user::ActiveModel>),
    Groups(Vec<group::ActiveModel>),
    Memberships(Vec<membership::ActiveModel>),
}

fn active_tenant(row: &Row, tenant: &Tenant) -> Result<tenant::ActiveModel> {
    let (generation, sequence) = version_columns(row.version)?;
    Ok(tenant::ActiveModel {
        id: Set(tenant.id.clone()),
        name: Set(tenant.name.clone()),
        generation: Set(generation),
        sequence: Set(sequence),
    })
}

fn active_user(row: &Row, user: &User) -> Result<user::ActiveModel> {
    let (generation, sequence) = version_columns(row.version)?;
    Ok(user::ActiveModel {
        tenant_id: Set(row.tenant_id.clone()),
        id: Set(user.id.clone()),
        email: Set(user.email.clone()),
        display_name: Set(user.display_name.clone()),
        status: Set(user.status.as_str().to_owned()),
        generation: Set(generation),
        sequence: Set(sequence),
    })
}

fn active_group(row: &Row, group: &Group) -> Result<group::ActiveModel> {
    let (generation, sequence) = version_columns(row.version)?;
    Ok(group::ActiveModel {
        tenant_id: Set(row.tenant_id.clone()),
        id: Set(group.id.clone()),
        name: Set(group.name.clone()),
        generation: Set(generation),
        sequence: Set(sequence),
    })
}

fn active_membership(row: &Row, membership: &Membership) -> Result<membership::ActiveModel> {
    let (generation, sequence) = version_columns(row.version)?;
    Ok(membership::ActiveModel {
        tenant_id: Set(row.tenant_id.clone()),
        group_id: Set(membership.group_id.clone()),
        user_id: Set(membership.user_id.clone()),
        generation: Set(generation),
        sequence: Set(sequence),
    })
}

/// Creates or replaces one row (data and version).
pub(crate) async fn upsert(connection: &impl ConnectionTrait, row: &Row) -> Result<()> {
    match &row.record {
        Record::Tenant(tenant) => {
            tenant::Entity::insert(active_tenant(row, tenant)?)
                .on_conflict(
                    OnConflict::column(tenant::Column::Id)
                        .update_columns([
                            tenant::Column::Name,
                            tenant::Column::Generation,
                            tenant::Column::Sequence,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(connection)
                .await
                .during("write a tenant")?;
        }
        Record::User(user) => {
            user::Entity::insert(active_user(row, user)?)
                .on_conflict(
                    OnConflict::columns([user::Column::TenantId, user::Column::Id])
                        .update_columns([
                            user::Column::Email,
                            user::Column::DisplayName,
                            user::Column::Status,
                            user::Column::Generation,
                            user::Column::Sequence,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(connection)
                .await
                .during("write a user")?;
        }
        Record::Group(group) => {
            group::Entity::insert(active_group(row, group)?)
                .on_conflict(
                    OnConflict::columns([group::Column::TenantId, group::Column::Id])
                        .update_columns([
                            group::Column::Name,
                            group::Column::Generation,
                            group::Column::Sequence,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(connection)
                .await
                .during("write a group")?;
        }
        Record::Membership(membership) => {
            membership::Entity::insert(active_membership(row, membership)?)
                .on_conflict(
                    OnConflict::columns([
                        membership::Column::TenantId,
                        membership::Column::GroupId,
                        membership::Column::UserId,
                    ])
                    .update_columns([membership::Column::Generation, membership::Column::Sequence])
                    .to_owned(),
                )
                .exec_without_returning(connection)
                .await
                .during("write a membership")?;
        }
    }
    Ok(())
}

/// Inserts new rows with multi-row `INSERT`s; a row that already exists is a
/// conflict. Rows are inserted in the given order, so parents must come
/// before their children.
pub(crate) async fn insert_new(connection: &impl ConnectionTrait, rows: &[Row]) -> Result<()> {
    for chunk in rows.chunk_by(|left, right| left.kind() == right.kind()) {
        for part in chunk.chunks(INSERT_CHUNK) {
            insert_batch(connection, to_batch(part)?).await?;
        }
    }
    Ok(())
}

fn to_batch(rows: &[Row]) -> Result<Batch> {
    let mut batch = match rows.first().map(|row| &row.record) {
        Some(Record::Tenant(_)) | None => Batch::Tenants(Vec::new()),
        Some(Record::User(_)) => Batch::Users(Vec::new()),
        Some(Record::Group(_)) => Batch::Groups(Vec::new()),
        Some(Record::Membership(_)) => Batch::Memberships(Vec::new()),
    };
    for row in rows {
        match (&mut batch, &row.record) {
            (Batch::Tenants(models), Record::Tenant(tenant)) => {
                models.push(active_tenant(row, tenant)?)
            }
            (Batch::Users(models), Record::User(user)) => models.push(active_user(row, user)?),
            (Batch::Groups(models), Record::Group(group)) => models.push(active_group(row, group)?),
            (Batch::Memberships(models), Record::Membership(membership)) => {
                models.push(active_membership(row, membership)?)
            }
            _ => return Err(Error::Corrupt("mixed kinds in one insert batch".to_owned())),
        }
    }
    Ok(batch)
}

async fn insert_batch(connection: &impl ConnectionTrait, batch: Batch) -> Result<()> {
    let action = "insert a batch of rows";
    match batch {
        Batch::Tenants(models) if !models.is_empty() => {
            tenant::Entity::insert_many(models)
                .exec_without_returning(connection)
                .await
                .during(action)?;
        }
        Batch::Users(models) if !models.is_empty() => {
            user::Entity::insert_many(models)
                .exec_without_returning(connection)
                .await
                .during(action)?;
        }
        Batch::Groups(models) if !models.is_empty() => {
            group::Entity::insert_many(models)
                .exec_without_returning(connection)
                .await
                .during(action)?;
        }
        Batch::Memberships(models) if !models.is_empty() => {
            membership::Entity::insert_many(models)
                .exec_without_returning(connection)
                .await
                .during(action)?;
        }
        _ => {}
    }
    Ok(())
}

/// Appends one outbox row per change, in order: the protobuf `ChangeEvent`
/// from `recon-proto`, unpublished.
pub(crate) async fn append_outbox(
    connection: &impl ConnectionTrait,
    changes: &[Change],
) -> Result<()> {
    for part in changes.chunks(INSERT_CHUNK) {
        let mut models = Vec::with_capacity(part.len());
        for change in part {
            let (generation, sequence) = version_columns(change.version())?;
            models.push(outbox::ActiveModel {
                tenant_id: Set(change.tenant_id().to_owned()),
                generation: Set(generation),
                sequence: Set(sequence),
                payload: Set(recon_proto::encode_change(change)),
                published_at_ms: Set(None),
                ..Default::default()
            });
        }
        if models.is_empty() {
            continue;
        }
        outbox::Entity::insert_many(models)
            .exec_without_returning(connection)
            .await
            .during("append to the outbox")?;
    }
    Ok(())
}
