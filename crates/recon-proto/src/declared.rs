//! The schema-generic `declared` variant of a `ChangeEvent`, mapped to and
//! from a [`DeclaredChange`] of a [`Schema`] known only at run time.
//!
//! An event names its kind, gives the key in key order and the data fields
//! by name. Decoding holds it against the consumer's schema, which may be
//! older or newer than the producer's:
//!
//! * a nullable field the event lacks reads as NULL; a missing field that
//!   is not nullable refuses the event ([`DecodeError::MissingField`]);
//! * a field the schema does not declare refuses the event
//!   ([`DecodeError::UnknownField`]): the consumer's schema is behind the
//!   producer's, and storing the rest would lose data silently;
//! * a JSON value is stored as its canonical text, whatever the spacing
//!   and key order it arrived in;
//! * the row is then checked as a whole ([`DeclaredRow::check`]).
//!
//! A typed event (the default schema's variants) decodes into its declared
//! form through [`DeclaredChange::of_change`], and only if the consumer's
//! schema declares the event's kind as the default schema does: the same
//! scope kind, key fields and data fields (name, type, nullability). That
//! holds for the default schema and for any schema that extends it with
//! kinds of its own; for any other schema a typed event is refused
//! ([`DecodeError::TypedKind`]) rather than read into a kind it only shares
//! a name with.

use crate::{DecodeError, WireChange, v1, version_to_wire};
use prost::Message;
use recon_core::Version;
use recon_core::schema::{
    DeclaredChange, DeclaredRow, FieldValue, InvalidRow, InvalidValue, KindDef, Schema,
    canonical_json,
};
use v1::named_value::Value as WireValue;

/// Encodes a declared change as a `ChangeEvent` with the `declared`
/// variant. The change is checked against `schema` first, whose field
/// names the data values take: a producer does not write what a consumer
/// of the same schema would refuse.
pub fn encode_declared(change: &DeclaredChange, schema: &Schema) -> Result<Vec<u8>, InvalidRow> {
    Ok(declared_to_wire(change, schema)?.encode_to_vec())
}

/// Maps a declared change, checked against `schema`, to its wire form:
/// every data field by name in declaration order, NULL written
/// explicitly.
pub fn declared_to_wire(
    change: &DeclaredChange,
    schema: &Schema,
) -> Result<v1::ChangeEvent, InvalidRow> {
    let (operation, row) = match change {
        DeclaredChange::Upsert(row) => (v1::Operation::Upsert, row),
        DeclaredChange::Delete(row) => (v1::Operation::Delete, row),
    };
    row.check(schema, operation == v1::Operation::Upsert)?;
    let kind = declared_kind(schema, &row.kind)
        .ok_or_else(|| InvalidRow::UnknownKind(row.kind.clone()))?;
    Ok(v1::ChangeEvent {
        tenant_id: row.scope.clone(),
        version: Some(version_to_wire(row.version)),
        change: Some(WireChange::Declared(declared_wire(
            kind,
            &row.key,
            &row.values,
            operation as i32,
        ))),
    })
}

/// The `declared` variant of a row of `kind`: its key and every data
/// field by name in declaration order (NULL written explicitly).
pub(crate) fn declared_wire(
    kind: &KindDef,
    key: &[String],
    values: &[FieldValue],
    operation: i32,
) -> v1::DeclaredChange {
    let fields = kind
        .fields
        .iter()
        .zip(values)
        .map(|(field, value)| v1::NamedValue {
            name: field.name.clone(),
            value: Some(value_to_wire(value)),
        })
        .collect();
    v1::DeclaredChange {
        operation,
        kind: kind.name.clone(),
        key: key.to_vec(),
        fields,
    }
}

/// The change a `declared` variant carries, in scope `scope` at `version`,
/// checked against `schema`.
pub(crate) fn change_from_wire(
    scope: String,
    version: Version,
    wire: v1::DeclaredChange,
    schema: &Schema,
) -> Result<DeclaredChange, DecodeError> {
    let Some(kind) = declared_kind(schema, &wire.kind) else {
        return Err(DecodeError::UnknownKind { kind: wire.kind });
    };
    let deletion = match crate::operation_of(wire.operation)? {
        v1::Operation::Upsert => false,
        v1::Operation::Delete => true,
        v1::Operation::Unspecified => return Err(crate::unspecified_operation()),
    };
    if deletion && !wire.fields.is_empty() {
        return Err(DecodeError::Field {
            field: "declared.fields",
            problem: "set in a deletion (a deletion carries only the key)",
        });
    }
    let values = if deletion {
        Vec::new()
    } else {
        values_by_name(kind, wire.fields)?
    };
    let row = DeclaredRow {
        kind: wire.kind,
        scope,
        key: wire.key,
        values,
        version,
    };
    row.check(schema, !deletion)?;
    Ok(if deletion {
        DeclaredChange::Delete(row)
    } else {
        DeclaredChange::Upsert(row)
    })
}

/// The kind `name` (singular) of `schema`.
fn declared_kind<'schema>(schema: &'schema Schema, name: &str) -> Option<&'schema KindDef> {
    schema.kind(name).filter(|kind| kind.name == name)
}

/// Whether `schema` declares the default schema's kind `name` as the
/// default schema does, so that a typed event of that kind means the same
/// row in it.
pub(crate) fn declares_as_default(schema: &Schema, name: &str) -> bool {
    let default = Schema::default_schema();
    if std::ptr::eq(schema, default) {
        return true;
    }
    let (Some(ours), Some(default_kind)) =
        (declared_kind(schema, name), declared_kind(default, name))
    else {
        return false;
    };
    schema.scope().name == default.scope().name
        && ours.key == default_kind.key
        && ours.fields == default_kind.fields
}

/// The data values in `kind`'s declaration order, matched by name. Events
/// written by recon list the fields in that order, so each name is first
/// compared with the field at its own position.
fn values_by_name(
    kind: &KindDef,
    named_values: Vec<v1::NamedValue>,
) -> Result<Vec<FieldValue>, DecodeError> {
    let mut found: Vec<Option<FieldValue>> = vec![None; kind.fields.len()];
    for (position, named) in named_values.into_iter().enumerate() {
        let same_position = kind
            .fields
            .get(position)
            .is_some_and(|field| field.name == named.name);
        let index = if same_position {
            Some(position)
        } else {
            kind.fields
                .iter()
                .position(|field| field.name == named.name)
        };
        let Some(index) = index else {
            return Err(DecodeError::UnknownField {
                kind: kind.name.clone(),
                field: named.name,
            });
        };
        let value = value_from_wire(kind, &named.name, named.value)?;
        if found[index].replace(value).is_some() {
            return Err(DecodeError::DuplicateField {
                kind: kind.name.clone(),
                field: named.name,
            });
        }
    }
    let mut values = Vec::with_capacity(found.len());
    for (field, value) in kind.fields.iter().zip(found) {
        match value {
            Some(value) => values.push(value),
            None if field.nullable => values.push(FieldValue::Null),
            None => {
                return Err(DecodeError::MissingField {
                    kind: kind.name.clone(),
                    field: field.name.clone(),
                });
            }
        }
    }
    Ok(values)
}

/// The wire form of one value.
fn value_to_wire(value: &FieldValue) -> WireValue {
    match value {
        FieldValue::Null => WireValue::Null(v1::NullValue::NullValue as i32),
        FieldValue::Text(text) => WireValue::Text(text.clone()),
        FieldValue::Integer(number) => WireValue::Integer(*number),
        FieldValue::Boolean(flag) => WireValue::Boolean(*flag),
        FieldValue::Timestamp(micros) => WireValue::Timestamp(*micros),
        FieldValue::Json(text) => WireValue::Json(text.clone()),
    }
}

/// The value of field `field` of `kind`; JSON is made canonical.
fn value_from_wire(
    kind: &KindDef,
    field: &str,
    value: Option<WireValue>,
) -> Result<FieldValue, DecodeError> {
    let Some(value) = value else {
        return Err(DecodeError::NoValue {
            kind: kind.name.clone(),
            field: field.to_owned(),
        });
    };
    Ok(match value {
        WireValue::Null(_) => FieldValue::Null,
        WireValue::Text(text) => FieldValue::Text(text),
        WireValue::Integer(number) => FieldValue::Integer(number),
        WireValue::Boolean(flag) => FieldValue::Boolean(flag),
        WireValue::Timestamp(micros) => FieldValue::Timestamp(micros),
        WireValue::Json(text) => {
            let canonical = canonical_json(&text).map_err(|reason| InvalidRow::Value {
                kind: kind.name.clone(),
                source: InvalidValue {
                    field: field.to_owned(),
                    reason,
                },
            })?;
            FieldValue::Json(canonical)
        }
    })
}
