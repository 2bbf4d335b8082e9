//! The typed variants of a `ChangeEvent` (tenant, user, group,
//! membership): the default schema's kinds, mapped to and from the core
//! domain's [`Change`] directly, without the declared form in between. The
//! consumer's hot path decodes them, and the detour through the declared
//! form (`decode_declared(bytes, default)?.to_change()`) takes two to three
//! times as long per event in a release build (`decode_speed` in
//! `declared_tests.rs`).

use crate::{DecodeError, v1, v1::change_event::Change as WireChange};
use recon_core::{
    Change, Deletion, Group, Kind, Membership, Record, Row, Tenant, User, UserStatus, Version,
};

/// The typed variant of a change.
pub(crate) fn change_to_wire(change: &Change) -> WireChange {
    match change {
        Change::Upsert(row) => upsert_to_wire(&row.record),
        Change::Delete(deletion) => delete_to_wire(deletion),
    }
}

/// The change a typed variant carries, in scope `tenant_id` at `version`.
pub(crate) fn change_from_wire(
    tenant_id: String,
    version: Version,
    change: WireChange,
) -> Result<Change, DecodeError> {
    let (operation, record) = record_from_wire(change)?;
    match operation {
        v1::Operation::Upsert => Ok(Change::Upsert(Row {
            tenant_id,
            record,
            version,
        })),
        v1::Operation::Delete => Ok(Change::Delete(Deletion {
            tenant_id,
            kind: record.kind(),
            key: record.key(),
            version,
        })),
        v1::Operation::Unspecified => Err(crate::unspecified_operation()),
    }
}

fn upsert_to_wire(record: &Record) -> WireChange {
    let operation = v1::Operation::Upsert as i32;
    if let Some(tenant) = record.as_tenant() {
        return WireChange::Tenant(v1::TenantChange {
            operation,
            id: tenant.id,
            name: tenant.name,
        });
    }
    if let Some(user) = record.as_user() {
        return WireChange::User(v1::UserChange {
            operation,
            id: user.id,
            email: user.email,
            display_name: user.display_name,
            status: match user.status {
                UserStatus::Active => v1::UserStatus::Active as i32,
                UserStatus::Disabled => v1::UserStatus::Disabled as i32,
            },
        });
    }
    if let Some(group) = record.as_group() {
        return WireChange::Group(v1::GroupChange {
            operation,
            id: group.id,
            name: group.name,
        });
    }
    if let Some(membership) = record.as_membership() {
        return WireChange::Membership(v1::MembershipChange {
            operation,
            group_id: membership.group_id,
            user_id: membership.user_id,
        });
    }
    // Any other kind's upsert is a declared change.
    WireChange::Declared(crate::declared::declared_wire(
        record.definition(),
        record.key_ref().parts(),
        record.values(),
        operation,
    ))
}

fn delete_to_wire(deletion: &Deletion) -> WireChange {
    let operation = v1::Operation::Delete as i32;
    let id = deletion.key.first().to_owned();
    match deletion.kind {
        Kind::TENANT => WireChange::Tenant(v1::TenantChange {
            operation,
            id,
            ..Default::default()
        }),
        Kind::USER => WireChange::User(v1::UserChange {
            operation,
            id,
            ..Default::default()
        }),
        Kind::GROUP => WireChange::Group(v1::GroupChange {
            operation,
            id,
            ..Default::default()
        }),
        Kind::MEMBERSHIP => WireChange::Membership(v1::MembershipChange {
            operation,
            group_id: id,
            user_id: deletion.key.parts().get(1).cloned().unwrap_or_default(),
        }),
        // Any other kind's deletion is a declared change: its kind and key,
        // no fields.
        other => WireChange::Declared(v1::DeclaredChange {
            operation,
            kind: other.as_str().to_owned(),
            key: deletion.key.parts().to_vec(),
            fields: Vec::new(),
        }),
    }
}

fn record_from_wire(change: WireChange) -> Result<(v1::Operation, Record), DecodeError> {
    use recon_core::domain::validate_id;
    Ok(match change {
        WireChange::Tenant(tenant) => {
            recon_core::validate_tenant_id(&tenant.id)?;
            let record = Record::from(Tenant {
                id: tenant.id,
                name: tenant.name,
            });
            (crate::operation_of(tenant.operation)?, record)
        }
        WireChange::User(user) => {
            validate_id("user id", &user.id)?;
            let operation = crate::operation_of(user.operation)?;
            let status = match v1::UserStatus::try_from(user.status) {
                Ok(v1::UserStatus::Disabled) => UserStatus::Disabled,
                Ok(v1::UserStatus::Active) => UserStatus::Active,
                _ if operation == v1::Operation::Delete => UserStatus::Active,
                _ => {
                    return Err(DecodeError::Field {
                        field: "user.status",
                        problem: "unspecified or unknown",
                    });
                }
            };
            let record = Record::from(User {
                id: user.id,
                email: user.email,
                display_name: user.display_name,
                status,
            });
            (operation, record)
        }
        WireChange::Group(group) => {
            validate_id("group id", &group.id)?;
            let record = Record::from(Group {
                id: group.id,
                name: group.name,
            });
            (crate::operation_of(group.operation)?, record)
        }
        WireChange::Membership(membership) => {
            validate_id("group id", &membership.group_id)?;
            validate_id("user id", &membership.user_id)?;
            let record = Record::from(Membership {
                group_id: membership.group_id,
                user_id: membership.user_id,
            });
            (crate::operation_of(membership.operation)?, record)
        }
        WireChange::Declared(_) => {
            return Err(DecodeError::Field {
                field: "change",
                problem: "declared where a typed variant was expected",
            });
        }
    })
}
