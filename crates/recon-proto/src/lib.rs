//! The change events on Kafka, generated from `proto/recon/events/v1`, and
//! their mapping to the core domain: the default schema's typed [`Change`]
//! and the [`DeclaredChange`] of any declared schema.
//!
//! A `ChangeEvent` carries its change in one of two forms: a typed variant
//! per default-schema kind (tenant, user, group, membership; what the outbox
//! relay writes today) or the schema-generic `declared` variant, whose data
//! fields travel by name (see `docs/events.md`). Both decoders read both
//! forms:
//!
//! * [`decode_change`] decodes into the default schema's [`Change`]; a typed
//!   event takes the direct path, a declared one is read against
//!   [`Schema::default_schema`].
//! * [`decode_declared`] decodes into a `DeclaredChange` of the
//!   consumer's schema; a typed event is accepted when that schema declares
//!   the event's kind as the default schema does (same scope kind, key and
//!   fields), e.g. the default schema extended with kinds of its own.
//!
//! Decoding validates what the wire cannot: a known operation, a non-empty
//! tenant, well-formed ids, a row that fits the schema. An event that fails
//! is reported with a [`DecodeError`] naming the problem; the consumer
//! dead-letters it (a content error, not a transient one).
//!
//! [`DeclaredChange`]: recon_core::schema::DeclaredChange

mod declared;
mod typed;

pub use declared::{declared_to_wire, encode_declared};

use prost::Message;
use recon_core::schema::{DeclaredChange, InvalidRow, Schema};
use recon_core::{Change, InvalidInput, Version};

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
    /// A declared event of a kind the consumer's schema does not declare.
    #[error(
        "kind {kind:?} is not declared in this consumer's schema: the consumer's schema is behind the producer's, or is another schema"
    )]
    UnknownKind {
        /// The event's kind.
        kind: String,
    },
    /// A declared event with a data field the consumer's schema does not
    /// declare.
    #[error(
        "kind {kind:?}: field {field:?} is not declared in this consumer's schema: the consumer's schema is behind the producer's"
    )]
    UnknownField {
        /// The event's kind.
        kind: String,
        /// The undeclared field.
        field: String,
    },
    /// A declared upsert without a field that is not nullable.
    #[error(
        "kind {kind:?}: field {field:?} is missing, and this consumer's schema declares it not nullable: the producer's schema does not declare it"
    )]
    MissingField {
        /// The event's kind.
        kind: String,
        /// The missing field.
        field: String,
    },
    /// A declared event that names a field twice.
    #[error("kind {kind:?}: field {field:?} appears more than once")]
    DuplicateField {
        /// The event's kind.
        kind: String,
        /// The repeated field.
        field: String,
    },
    /// A declared field without a value this consumer knows: none set, or
    /// a value type added to the format after the consumer was built.
    #[error(
        "kind {kind:?}: field {field:?} has no value of a type this consumer knows (null, text, integer, boolean, timestamp, json)"
    )]
    NoValue {
        /// The event's kind.
        kind: String,
        /// The field.
        field: String,
    },
    /// A typed event whose kind the consumer's schema does not declare as
    /// the default schema does.
    #[error(
        "a typed {kind} event needs this consumer's schema to declare kind {kind:?} as the default schema does (scope kind tenant, same key and fields)"
    )]
    TypedKind {
        /// The event's kind.
        kind: &'static str,
    },
    /// The row does not fit the consumer's schema.
    #[error(transparent)]
    Row(#[from] InvalidRow),
}

fn missing(field: &'static str) -> DecodeError {
    DecodeError::Field {
        field,
        problem: "missing",
    }
}

/// Decodes a `ChangeEvent` of either form into a change of `schema`,
/// checked against it (see the `declared` module's docs for the rules).
pub fn decode_declared(bytes: &[u8], schema: &Schema) -> Result<DeclaredChange, DecodeError> {
    declared_from_wire(v1::ChangeEvent::decode(bytes)?, schema)
}

/// Maps a wire event of either form to a change of `schema`, checked
/// against it.
pub fn declared_from_wire(
    event: v1::ChangeEvent,
    schema: &Schema,
) -> Result<DeclaredChange, DecodeError> {
    let (scope, version, change) = event_parts(event)?;
    if let WireChange::Declared(declared) = change {
        return declared::change_from_wire(scope, version, declared, schema);
    }
    let typed_change = typed::change_from_wire(scope, version, change)?;
    let kind_name = typed_change.kind().as_str();
    if !declared::declares_as_default(schema, kind_name) {
        return Err(DecodeError::TypedKind { kind: kind_name });
    }
    let declared = DeclaredChange::of_change(&typed_change);
    let data = matches!(declared, DeclaredChange::Upsert(_));
    declared.row().check(schema, data)?;
    Ok(declared)
}

pub(crate) fn operation_of(value: i32) -> Result<v1::Operation, DecodeError> {
    v1::Operation::try_from(value).map_err(|_| DecodeError::Field {
        field: "operation",
        problem: "an unknown value",
    })
}

fn unspecified_operation() -> DecodeError {
    DecodeError::Field {
        field: "operation",
        problem: "unspecified",
    }
}

/// Encodes a change as a `ChangeEvent` with a typed variant.
pub fn encode_change(change: &Change) -> Vec<u8> {
    to_wire(change).encode_to_vec()
}

/// Decodes and validates a `ChangeEvent` of either form into a change of
/// the default schema.
pub fn decode_change(bytes: &[u8]) -> Result<Change, DecodeError> {
    from_wire(v1::ChangeEvent::decode(bytes)?)
}

/// Decodes and validates a `ChangeEvent` of either form into a change of
/// `schema`: the default schema's typed variants are read directly, any
/// other event through its declared form, held against `schema`.
pub fn decode_change_in(bytes: &[u8], schema: &'static Schema) -> Result<Change, DecodeError> {
    if std::ptr::eq(schema, Schema::default_schema()) {
        return decode_change(bytes);
    }
    Ok(decode_declared(bytes, schema)?.to_change(schema)?)
}

/// Maps a core change to its wire form: a typed variant for the default
/// schema's kinds, the declared variant for any other.
pub fn to_wire(change: &Change) -> v1::ChangeEvent {
    let version = change.version();
    v1::ChangeEvent {
        tenant_id: change.tenant_id().to_owned(),
        version: Some(version_to_wire(version)),
        change: Some(typed::change_to_wire(change)),
    }
}

/// Maps and validates a wire event of either form to a change of the
/// default schema.
pub fn from_wire(event: v1::ChangeEvent) -> Result<Change, DecodeError> {
    let (tenant_id, version, change) = event_parts(event)?;
    match change {
        WireChange::Declared(declared) => {
            let schema = Schema::default_schema();
            let declared = declared::change_from_wire(tenant_id, version, declared, schema)?;
            Ok(declared.to_change(schema)?)
        }
        typed => typed::change_from_wire(tenant_id, version, typed),
    }
}

/// The parts every event has: the scope value (validated), the version and
/// the change.
fn event_parts(event: v1::ChangeEvent) -> Result<(String, Version, WireChange), DecodeError> {
    recon_core::validate_tenant_id(&event.tenant_id)?;
    let version = event.version.ok_or_else(|| missing("version"))?;
    let version = Version::new(version.generation, version.sequence);
    let change = event.change.ok_or_else(|| missing("change"))?;
    Ok((event.tenant_id, version, change))
}

/// The wire form of a version.
fn version_to_wire(version: Version) -> v1::Version {
    v1::Version {
        generation: version.generation,
        sequence: version.sequence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_core::{Deletion, Kind, Record, Row, User, UserStatus};

    fn user_row() -> Row {
        Row {
            tenant_id: "t1".into(),
            record: Record::from(User {
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
            kind: Kind::MEMBERSHIP,
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
                kind: Kind::MEMBERSHIP,
                key: recon_core::EntityKey::pair("g", "u"),
                version: Version::new(1, 3),
            }),
            Change::Delete(Deletion {
                tenant_id: "t1".into(),
                kind: Kind::TENANT,
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
            record: recon_core::Record::from(recon_core::Tenant {
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

#[cfg(test)]
mod declared_tests;
