//! The change events on Kafka, generated from `proto/recon/events/v1`, and
//! their mapping to the core domain's [`Change`].
//!
//! Decoding validates what the wire cannot: a known operation, a non-empty
//! tenant, well-formed ids. An event that fails is reported with a
//! [`DecodeError`] naming the problem; the consumer counts and skips it.

use prost::Message;
use recon_core::{
    Change, Deletion, Group, InvalidInput, Kind, Membership, Record, Row, Tenant, User, UserStatus,
    Version,
};

/// Generated protobuf types of `recon.events.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/recon.events.v1.rs"));
}

use v1::change_event::Change as WireChange;

/// Why bytes on the topic are not a usable change event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a protobuf `ChangeEvent` at all.
    #[error("not a recon.events.v1.ChangeEvent: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A required field is missing or has an unknown value.
    #[error("change event field {field} is {problem}")]
    Field {
        /// The field, e.g. `"version"`.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An id is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
}

fn missing(field: &'static str) -> DecodeError {
    DecodeError::Field {
        field,
        problem: "missing",
    }
}

/// Encodes a change as a `ChangeEvent`.
pub fn encode_change(change: &Change) -> Vec<u8> {
    to_wire(change).encode_to_vec()
}

/// Decodes and validates a `ChangeEvent`.
pub fn decode_change(bytes: &[u8]) -> Result<Change, DecodeError> {
    from_wire(v1::ChangeEvent::decode(bytes)?)
}

/// Maps a core change to its wire form.
pub fn to_wire(change: &Change) -> v1::ChangeEvent {
    let version = change.version();
    let wire_change = match change {
        Change::Upsert(row) => upsert_to_wire(&row.record),
        Change::Delete(deletion) => delete_to_wire(deletion),
    };
    v1::ChangeEvent {
        tenant_id: change.tenant_id().to_owned(),
        version: Some(v1::Version {
            generation: version.generation,
            sequence: version.sequence,
        }),
        change: Some(wire_change),
    }
}

fn upsert_to_wire(record: &Record) -> WireChange {
    let operation = v1::Operation::Upsert as i32;
    match record {
        Record::Tenant(tenant) => WireChange::Tenant(v1::TenantChange {
            operation,
            id: tenant.id.clone(),
            name: tenant.name.clone(),
        }),
        Record::User(user) => WireChange::User(v1::UserChange {
            operation,
            id: user.id.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            status: match user.status {
                UserStatus::Active => v1::UserStatus::Active as i32,
                UserStatus::Disabled => v1::UserStatus::Disabled as i32,
            },
        }),
        Record::Group(group) => WireChange::Group(v1::GroupChange {
            operation,
            id: group.id.clone(),
            name: group.name.clone(),
        }),
        Record::Membership(membership) => WireChange::Membership(v1::MembershipChange {
            operation,
            group_id: membership.group_id.clone(),
            user_id: membership.user_id.clone(),
        }),
    }
}

fn delete_to_wire(deletion: &Deletion) -> WireChange {
    let operation = v1::Operation::Delete as i32;
    let id = deletion.key.primary.clone();
    match deletion.kind {
        Kind::Tenant => WireChange::Tenant(v1::TenantChange {
            operation,
            id,
            ..Default::default()
        }),
        Kind::User => WireChange::User(v1::UserChange {
            operation,
            id,
            ..Default::default()
        }),
        Kind::Group => WireChange::Group(v1::GroupChange {
            operation,
            id,
            ..Default::default()
        }),
        Kind::Membership => WireChange::Membership(v1::MembershipChange {
            operation,
            group_id: id,
            user_id: deletion.key.secondary.clone().unwrap_or_default(),
        }),
    }
}

/// Maps and validates a wire event to a core change.
pub fn from_wire(event: v1::ChangeEvent) -> Result<Change, DecodeError> {
    recon_core::validate_tenant_id(&event.tenant_id)?;
    let version = event.version.ok_or_else(|| missing("version"))?;
    let version = Version::new(version.generation, version.sequence);
    let change = event.change.ok_or_else(|| missing("change"))?;
    let (operation, record) = record_from_wire(change)?;
    let tenant_id = event.tenant_id;
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
        v1::Operation::Unspecified => Err(DecodeError::Field {
            field: "operation",
            problem: "unspecified",
        }),
    }
}

fn operation_of(value: i32) -> Result<v1::Operation, DecodeError> {
    v1::Operation::try_from(value).map_err(|_| DecodeError::Field {
        field: "operation",
        problem: "an unknown value",
    })
}

fn record_from_wire(change: WireChange) -> Result<(v1::Operation, Record), DecodeError> {
    use recon_core::domain::validate_id;
    Ok(match change {
        WireChange::Tenant(tenant) => {
            recon_core::validate_tenant_id(&tenant.id)?;
            let record = Record::Tenant(Tenant {
                id: tenant.id,
                name: tenant.name,
            });
            (operation_of(tenant.operation)?, record)
        }
        WireChange::User(user) => {
            validate_id("user id", &user.id)?;
            let operation = operation_of(user.operation)?;
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
            let record = Record::User(User {
                id: user.id,
                email: user.email,
                display_name: user.display_name,
                status,
            });
            (operation, record)
        }
        WireChange::Group(group) => {
            validate_id("group id", &group.id)?;
            let record = Record::Group(Group {
                id: group.id,
                name: group.name,
            });
            (operation_of(group.operation)?, record)
        }
        WireChange::Membership(membership) => {
            validate_id("group id", &membership.group_id)?;
            validate_id("user id", &membership.user_id)?;
            let record = Record::Membership(Membership {
                group_id: membership.group_id,
                user_id: membership.user_id,
            });
            (operation_of(membership.operation)?, record)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_row() -> Row {
        Row {
            tenant_id: "t1".into(),
            record: Record::User(User {
                id: "u1".into(),
                email: "a@b".into(),
                display_name: "A".into(),
                status: UserStatus::Disabled,
            }),
            version: Version::new(2, 17),
        }
    }

    #[test]
    fn upsert_round_trips() {
        let change = Change::Upsert(user_row());
        assert_eq!(
            decode_change(&encode_change(&change)).expect("decode"),
            change
        );
    }

    #[test]
    fn membership_delete_round_trips() {
        let change = Change::Delete(Deletion {
            tenant_id: "t1".into(),
            kind: Kind::Membership,
            key: recon_core::EntityKey::pair("g", "u"),
            version: Version::new(1, 3),
        });
        assert_eq!(
            decode_change(&encode_change(&change)).expect("decode"),
            change
        );
    }

    /// Change events as bytes on the wire, computed outside Rust from the
    /// text format with `protoc` (run in `proto/`):
    ///
    /// ```text
    /// printf '<message>' | protoc --encode=recon.events.v1.ChangeEvent \
    ///     recon/events/v1/events.proto | xxd -p
    /// ```
    ///
    /// A round trip cannot see a field renumbered, an enum value moved or
    /// a field left out on both sides; these bytes can.
    const WIRE_VECTORS: [(&str, &str); 3] = [
        (
            r#"tenant_id: "t1" version { generation: 2 sequence: 17 } user { operation: OPERATION_UPSERT id: "u1" email: "a@b" display_name: "A" status: USER_STATUS_DISABLED }"#,
            "0a0274311204080210115a100801120275311a036140622201412802",
        ),
        (
            r#"tenant_id: "t1" version { generation: 1 sequence: 3 } membership { operation: OPERATION_DELETE group_id: "g" user_id: "u" }"#,
            "0a0274311204080110036a0808021201671a0175",
        ),
        (
            r#"tenant_id: "t1" version { generation: 3 sequence: 300 } tenant { operation: OPERATION_DELETE id: "t1" }"#,
            "0a0274311205080310ac025206080212027431",
        ),
    ];

    fn from_hex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|index| u8::from_str_radix(&hex[index..index + 2], 16).expect("hex"))
            .collect()
    }

    /// The changes of [`WIRE_VECTORS`], in order.
    fn vector_changes() -> [Change; 3] {
        [
            Change::Upsert(user_row()),
            Change::Delete(Deletion {
                tenant_id: "t1".into(),
                kind: Kind::Membership,
                key: recon_core::EntityKey::pair("g", "u"),
                version: Version::new(1, 3),
            }),
            Change::Delete(Deletion {
                tenant_id: "t1".into(),
                kind: Kind::Tenant,
                key: recon_core::EntityKey::id("t1"),
                version: Version::new(3, 300),
            }),
        ]
    }

    #[test]
    fn changes_encode_to_the_pinned_wire_bytes_and_decode_from_them() {
        for ((text, hex), change) in WIRE_VECTORS.iter().zip(vector_changes()) {
            let wire = from_hex(hex);
            assert_eq!(encode_change(&change), wire, "encoding {text}");
            assert_eq!(
                decode_change(&wire).expect("decode"),
                change,
                "decoding {text}"
            );
        }
    }

    #[test]
    fn garbage_is_a_named_error() {
        let error = decode_change(b"\xff\xff\xff not protobuf").expect_err("must fail");
        assert!(error.to_string().contains("ChangeEvent"), "{error}");
        let empty = decode_change(&[]).expect_err("empty event has no tenant");
        assert!(empty.to_string().contains("tenant id"), "{empty}");
    }

    /// The tenant id `*` is the store's scope of every tenant: an event of
    /// that tenant would raise every tenant's floor with its own.
    #[test]
    fn the_reserved_tenant_id_is_refused() {
        let mut row = user_row();
        row.tenant_id = "*".into();
        let error = decode_change(&encode_change(&Change::Upsert(row))).expect_err("tenant *");
        assert!(error.to_string().contains("reserved"), "{error}");
        let tenant = Change::Upsert(Row {
            tenant_id: "*".into(),
            record: recon_core::Record::Tenant(recon_core::Tenant {
                id: "*".into(),
                name: "everyone".into(),
            }),
            version: Version::new(1, 1),
        });
        let error = decode_change(&encode_change(&tenant)).expect_err("tenant *");
        assert!(error.to_string().contains("reserved"), "{error}");
    }

    #[test]
    fn missing_operation_is_refused() {
        let mut wire = to_wire(&Change::Upsert(user_row()));
        if let Some(WireChange::User(user)) = wire.change.as_mut() {
            user.operation = 0;
        }
        let error = from_wire(wire).expect_err("unspecified operation");
        assert!(error.to_string().contains("operation"));
    }
}
