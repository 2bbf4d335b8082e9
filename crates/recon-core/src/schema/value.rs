//! Field values and the canonical, type-aware encoding of a row's data that
//! the row hash and the digest element are defined over.
//!
//! ```text
//! encoding v1 = "recon-row-v1" 0x00
//!               kind tag (1 byte: the kind's position in the schema file)
//!               each key field, in key order, as a text value
//!               each data field, in declaration order, as its value:
//!   text, enum  u32 big-endian byte length ++ UTF-8 bytes
//!   json        the canonical text (keys sorted byte-wise, no white
//!               space), as text
//!   integer     00 00 00 08 ++ i64 big-endian
//!   timestamp   00 00 00 08 ++ i64 big-endian microseconds since
//!               1970-01-01T00:00:00Z
//!   boolean     00 00 00 01 ++ 00 (false) or 01 (true)
//!   NULL        ff ff ff ff (no text is 4 GiB long: NULL is never the
//!               encoding of a text, empty text included)
//! row hash    = first 16 bytes of SHA-256(encoding)
//! ```
//!
//! The schema fixes each field's type and position, so the encoding is
//! unambiguous; for kinds whose fields are all non-null text and enums (the
//! default schema) it is byte for byte the encoding recon used before
//! schemas were declared, so stored hashes and digests stay valid.

use super::{FieldDef, FieldType, KindDef};
use crate::RowHash;
use sha2::{Digest, Sha256};

const ROW_PREFIX: &[u8] = b"recon-row-v1\0";
const NULL_MARK: [u8; 4] = [0xff; 4];

/// One field's value, borrowed or owned by the caller's row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldValue {
    /// SQL `NULL` (only in nullable fields).
    Null,
    /// A text or enum value.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Boolean(bool),
    /// A timestamp in microseconds since the Unix epoch, UTC (values recon
    /// writes have whole milliseconds; a finer value read from a replica is
    /// drift and encodes differently).
    Timestamp(i64),
    /// A JSON document in canonical text form ([`canonical_json`]).
    Json(String),
}

/// A value that does not fit its declared field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field:?}: {reason}")]
pub struct InvalidValue {
    /// The field.
    pub field: String,
    /// Why the value was refused.
    pub reason: String,
}

/// How a field's value travels as an SQL parameter: in its column's type
/// (a NULL typed too: PostgreSQL refuses a text NULL for a BIGINT column).
/// A timestamp is RFC 3339 text on PostgreSQL, whose statements cast it
/// (exact to the microsecond, where a float conversion is not), and
/// microseconds on SQLite. Both the replica store and the reference
/// monolith bind values this way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlParameter {
    /// Text (text, enum, JSON; a PostgreSQL timestamp).
    Text(Option<String>),
    /// A 64-bit integer (integer; a SQLite timestamp).
    BigInt(Option<i64>),
    /// A boolean.
    Boolean(Option<bool>),
}

impl FieldDef {
    /// `value` of this field as an SQL parameter (see [`SqlParameter`]);
    /// refused only for a timestamp outside the years a database stores.
    pub fn sql_parameter(
        &self,
        value: &FieldValue,
        postgres: bool,
    ) -> Result<SqlParameter, InvalidValue> {
        Ok(match (&self.field_type, value) {
            (FieldType::Integer, FieldValue::Null) => SqlParameter::BigInt(None),
            (FieldType::Boolean, FieldValue::Null) => SqlParameter::Boolean(None),
            (FieldType::Timestamp, FieldValue::Null) if !postgres => SqlParameter::BigInt(None),
            (_, FieldValue::Null) => SqlParameter::Text(None),
            (_, FieldValue::Text(text) | FieldValue::Json(text)) => {
                SqlParameter::Text(Some(text.clone()))
            }
            (_, FieldValue::Integer(number)) => SqlParameter::BigInt(Some(*number)),
            (_, FieldValue::Boolean(flag)) => SqlParameter::Boolean(Some(*flag)),
            (_, FieldValue::Timestamp(micros)) if postgres => {
                SqlParameter::Text(Some(format_timestamp(*micros).ok_or_else(|| {
                    InvalidValue {
                        field: self.name.clone(),
                        reason: format!(
                            "timestamp {micros} µs is outside the years a database stores"
                        ),
                    }
                })?))
            }
            (_, FieldValue::Timestamp(micros)) => SqlParameter::BigInt(Some(*micros)),
        })
    }

    /// Checks that `value` fits this field: its type, its nullability, a
    /// text's length, an enum's values, a JSON text's canonical form.
    pub fn check(&self, value: &FieldValue) -> Result<(), InvalidValue> {
        let refuse = |reason: String| InvalidValue {
            field: self.name.clone(),
            reason,
        };
        match (&self.field_type, value) {
            (_, FieldValue::Null) if self.nullable => Ok(()),
            (_, FieldValue::Null) => Err(refuse("is null, and the field is not nullable".into())),
            (FieldType::Text { max_length }, FieldValue::Text(text)) => {
                let chars = text.chars().count();
                match max_length {
                    Some(max) if chars > *max as usize => Err(refuse(format!(
                        "is {chars} characters long, at most {max} allowed"
                    ))),
                    _ => Ok(()),
                }
            }
            (FieldType::Enum { values }, FieldValue::Text(text)) => {
                if values.contains(text) {
                    Ok(())
                } else {
                    Err(refuse(format!(
                        "{text:?} is not one of {}",
                        values.join(", ")
                    )))
                }
            }
            (FieldType::Json, FieldValue::Json(text)) => match canonical_json(text) {
                Ok(canonical) if &canonical == text => Ok(()),
                Ok(_) => Err(refuse("JSON text is not in canonical form".into())),
                Err(error) => Err(refuse(error)),
            },
            (FieldType::Integer, FieldValue::Integer(_))
            | (FieldType::Boolean, FieldValue::Boolean(_))
            | (FieldType::Timestamp, FieldValue::Timestamp(_)) => Ok(()),
            (expected, _) => Err(refuse(format!(
                "holds a {}, the field is {}",
                value.type_name(),
                expected.name()
            ))),
        }
    }
}

impl FieldValue {
    /// The name of the value's type, for errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Null => "null",
            FieldValue::Text(_) => "text",
            FieldValue::Integer(_) => "integer",
            FieldValue::Boolean(_) => "boolean",
            FieldValue::Timestamp(_) => "timestamp",
            FieldValue::Json(_) => "json",
        }
    }

    /// Appends the value's canonical encoding (see the module docs).
    fn encode_into(&self, sink: &mut impl Extend<u8>) {
        match self {
            FieldValue::Null => sink.extend(NULL_MARK),
            FieldValue::Text(text) | FieldValue::Json(text) => encode_text(text, sink),
            FieldValue::Integer(number) | FieldValue::Timestamp(number) => {
                sink.extend(8u32.to_be_bytes());
                sink.extend(number.to_be_bytes());
            }
            FieldValue::Boolean(flag) => {
                sink.extend(1u32.to_be_bytes());
                sink.extend([u8::from(*flag)]);
            }
        }
    }
}

/// Appends a text value: its byte length (u32 big-endian) and its bytes.
pub(crate) fn encode_text(text: &str, sink: &mut impl Extend<u8>) {
    let length = u32::try_from(text.len()).unwrap_or(u32::MAX - 1);
    sink.extend(length.to_be_bytes());
    sink.extend(text.bytes());
}

/// The canonical encoding of a row of `kind` (module docs): `key` holds
/// the key fields' values in key order, `values` the data fields' values in
/// declaration order.
pub fn encode_row(kind: &KindDef, key: &[impl AsRef<str>], values: &[FieldValue]) -> Vec<u8> {
    let mut encoding = Vec::with_capacity(64);
    encoding.extend_from_slice(ROW_PREFIX);
    encoding.push(kind.tag);
    for part in key {
        encode_text(part.as_ref(), &mut encoding);
    }
    for value in values {
        value.encode_into(&mut encoding);
    }
    encoding
}

/// The row hash of a row of `kind` (see [`encode_row`]).
pub fn row_hash_of_values(
    kind: &KindDef,
    key: &[impl AsRef<str>],
    values: &[FieldValue],
) -> RowHash {
    row_hash_of_encoding(&encode_row(kind, key, values))
}

/// The row hash of an encoding made by [`encode_row`] (or its equivalent):
/// the first 16 bytes of its SHA-256.
pub(crate) fn row_hash_of_encoding(encoding: &[u8]) -> RowHash {
    let digest = Sha256::digest(encoding);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    RowHash::from_bytes(bytes)
}

/// The canonical text of a JSON document: object keys sorted byte-wise,
/// no white space, strings and numbers as serde_json writes them. Two
/// documents that differ only in key order or spacing have the same
/// canonical text. The error says why `text` is not JSON.
pub fn canonical_json(text: &str) -> Result<String, String> {
    let document: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
    Ok(canonical_json_value(&document))
}

/// The canonical text of a parsed JSON document (see [`canonical_json`]).
pub fn canonical_json_value(document: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(document, &mut out);
    out
}

/// A timestamp's text form in pages and APIs: RFC 3339 in UTC with
/// milliseconds (`2026-12-07T06:31:03.123Z`), or microseconds when the value
/// has them (a replica's drifted value). `None` outside the years chrono
/// represents.
pub fn format_timestamp(micros: i64) -> Option<String> {
    let instant = chrono::DateTime::from_timestamp_micros(micros)?;
    let precision = if micros % 1000 == 0 {
        chrono::SecondsFormat::Millis
    } else {
        chrono::SecondsFormat::Micros
    };
    Some(instant.to_rfc3339_opts(precision, true))
}

/// Parses a timestamp's text form: RFC 3339 with any offset, at most
/// microsecond precision; the value in microseconds since the epoch, UTC.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let instant = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|error| format!("{text:?} is not an RFC 3339 timestamp: {error}"))?;
    if instant.timestamp_subsec_nanos() % 1000 != 0 {
        return Err(format!("{text:?} is finer than a microsecond"));
    }
    Ok(instant.timestamp_micros())
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|left, right| left.0.as_bytes().cmp(right.0.as_bytes()));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
