//! Conversions between the domain's [`Row`]s and the entities, and the
//! row-level statements shared by the write path, the seeder and the outbox.

use super::entities::{group, membership, outbox, tenant, user};
use super::version_columns;
use crate::error::{DbResultExt, Error, Result};
use recon_core::{Change, Group, Membership, Record, Row, Tenant, User};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};

/// Rows per multi-row `INSERT` (well under both backends' bind limits).
const INSERT_CHUNK: usize = 500;

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
