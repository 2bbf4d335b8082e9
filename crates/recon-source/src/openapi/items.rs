//! Each kind's schemas: its item (key fields, typed data fields, version),
//! its page, its cursor and its multi-range page request.

use super::names::{
    Api, CompositeCursor, Cursor, DEFAULT_LIMIT, KindApi, MAX_LIMIT, capitalize, english_list,
    fixed, schema_ref, with_article, words,
};
use recon_core::domain::MAX_ID_CHARS;
use recon_core::schema::{FieldDef, FieldType, VERSION_PROPERTY};
use serde_json::{Map, Value, json};

/// The control characters (general category Cc) as a regular expression
/// class body: no id holds one.
pub(super) const CONTROL_CHARACTERS: &str = r"\u0000-\u001F\u007F-\u009F";

/// A timestamp's one accepted form: RFC 3339, UTC, milliseconds.
const TIMESTAMP_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$";

/// Adds every kind's schemas, and the multi-range page schemas that kinds
/// keyed by an id share.
pub(super) fn insert_kind_schemas(api: &Api, schemas: &mut Map<String, Value>) {
    for kind in std::iter::once(&api.scope).chain(&api.scoped) {
        schemas.insert(kind.item.clone(), item(kind));
        schemas.insert(kind.page.clone(), page(kind));
    }
    let id_kinds: Vec<&str> = api
        .id_kinds()
        .map(|kind| kind.plural_words.as_str())
        .collect();
    if !id_kinds.is_empty() {
        schemas.insert(
            fixed::ID_PAGE_RANGE.to_owned(),
            page_range("Keys of ids", &schema_ref(fixed::ID)),
        );
        schemas.insert(
            fixed::ID_PAGE_WITHIN.to_owned(),
            page_within(
                &english_list(&id_kinds, "or"),
                &schema_ref(fixed::ID),
                fixed::ID_PAGE_RANGE,
            ),
        );
    }
    for (kind, cursor) in api.composite_kinds() {
        let cursor_ref = schema_ref(&cursor.schema);
        schemas.insert(cursor.schema.clone(), cursor_schema(kind, cursor));
        schemas.insert(
            cursor.page_range.clone(),
            page_range(
                &format!(
                    "Keys of {}, in cursor form {}",
                    kind.plural_words, cursor.form
                ),
                &cursor_ref,
            ),
        );
        schemas.insert(
            cursor.page_within.clone(),
            page_within(&kind.plural_words, &cursor_ref, &cursor.page_range),
        );
    }
}

/// One row: its key fields (ids), its data fields and its version, all
/// required; unknown properties are allowed (clients ignore them).
fn item(kind: &KindApi) -> Value {
    let mut required = Vec::new();
    let mut properties = Map::new();
    for key in &kind.def.key {
        required.push(Value::from(key.as_str()));
        properties.insert(key.clone(), schema_ref(fixed::ID));
    }
    for field in &kind.def.fields {
        required.push(Value::from(field.name.as_str()));
        properties.insert(field.name.clone(), field_schema(field));
    }
    required.push(Value::from(VERSION_PROPERTY));
    properties.insert(VERSION_PROPERTY.to_owned(), schema_ref(fixed::VERSION));
    json!({ "type": "object", "required": required, "properties": properties })
}

/// A data field's JSON schema; a nullable field also accepts `null`,
/// which stands for `NULL`.
fn field_schema(field: &FieldDef) -> Value {
    let (json_type, mut schema) = match &field.field_type {
        FieldType::Text { max_length } => {
            let mut schema = json!({});
            if let Some(max_length) = max_length {
                schema["maxLength"] = Value::from(*max_length);
            }
            ("string", schema)
        }
        FieldType::Integer => (
            "integer",
            json!({
                "format": "int64",
                "minimum": i64::MIN,
                "maximum": i64::MAX,
                "description": "A signed 64-bit integer.",
            }),
        ),
        FieldType::Boolean => ("boolean", json!({})),
        FieldType::Timestamp => (
            "string",
            json!({
                "format": "date-time",
                "pattern": TIMESTAMP_PATTERN,
                "description": "An instant in RFC 3339 form, in UTC with milliseconds: `2024-05-01T12:30:00.000Z`.",
            }),
        ),
        FieldType::Enum { values } => {
            let mut values: Vec<Value> = values
                .iter()
                .map(|value| Value::from(value.as_str()))
                .collect();
            if field.nullable {
                values.push(Value::Null);
            }
            ("string", json!({ "enum": values }))
        }
        FieldType::Json => return json_field_schema(field.nullable),
    };
    schema["type"] = if field.nullable {
        json!([json_type, "null"])
    } else {
        Value::from(json_type)
    };
    schema
}

/// Any JSON value; `null` only if the field is nullable (it is `NULL`).
fn json_field_schema(nullable: bool) -> Value {
    if nullable {
        return json!({
            "description": "Any JSON value (compared in canonical form: object keys sorted, no white space); null is NULL.",
        });
    }
    json!({
        "not": { "type": "null" },
        "description": "Any JSON value but null (compared in canonical form: object keys sorted, no white space).",
    })
}

/// One page of a kind.
fn page(kind: &KindApi) -> Value {
    let next_after = match &kind.cursor {
        Cursor::Id { noun } => format!(
            "The last {} {noun} of this page, to pass as `after`; null on the last page.",
            kind.words
        ),
        Cursor::Composite(cursor) => format!(
            "{} of the last {} of this page, to pass as `after`; null on the last page.",
            cursor.form, kind.words
        ),
    };
    json!({
        "type": "object",
        "required": ["items", "watermark", "next_after"],
        "properties": {
            "items": { "type": "array", "items": schema_ref(&kind.item) },
            "watermark": schema_ref(fixed::VERSION),
            "next_after": {
                "type": ["string", "null"],
                "minLength": 1,
                "description": next_after,
            },
        },
    })
}

/// A composite key as a cursor: the key parts joined by `:`, each an id;
/// every part but the last is free of `:` (a cursor splits at its first
/// colons).
fn cursor_schema(kind: &KindApi, cursor: &CompositeCursor) -> Value {
    let parts = kind.def.key.len();
    let mut pattern = String::from("^");
    let mut description = format!(
        "{} key in cursor form {}: ",
        capitalize(&with_article(&kind.words)),
        cursor.form
    );
    for (index, part) in kind.def.key.iter().enumerate() {
        if index + 1 < parts {
            pattern.push_str(&format!("[^:{CONTROL_CHARACTERS}]{{1,{MAX_ID_CHARS}}}:"));
            description.push_str(&format!(
                "the {} (which never contains `:`), a colon, ",
                words(part)
            ));
        } else {
            pattern.push_str(&format!("[^{CONTROL_CHARACTERS}]{{1,{MAX_ID_CHARS}}}$"));
            description.push_str(&format!(
                "then the {} (which may); each an Id.",
                words(part)
            ));
        }
    }
    json!({
        "type": "string",
        "minLength": 2 * parts - 1,
        "maxLength": MAX_ID_CHARS * parts + parts - 1,
        "pattern": pattern,
        "description": description,
    })
}

/// `null`, or a cursor.
fn nullable_cursor(cursor: &Value) -> Value {
    json!({ "anyOf": [cursor, { "type": "null" }] })
}

/// One range of a multi-range page request.
fn page_range(keys: &str, cursor: &Value) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": format!(
            "{keys}: after `after` up to and including `until`; null or absent: open. A JSON object."
        ),
        "properties": {
            "after": nullable_cursor(cursor),
            "until": nullable_cursor(cursor),
        },
    })
}

/// A multi-range page request of `plurals` (in prose).
fn page_within(plurals: &str, cursor: &Value, page_range: &str) -> Value {
    let mut after = nullable_cursor(cursor);
    after["description"] = Value::from(
        "The cursor (exclusive), as for GET: the previous page's next_after; null or absent: from the first key.",
    );
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["ranges"],
        "description": format!(
            "A page of the {plurals} after `after` that lie inside one of `ranges`."
        ),
        "properties": {
            "after": after,
            "limit": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
                "description": format!(
                    "Page size; null or absent: {}. Any integral number is an integer, as JSON Schema says (`1922.0` is 1922).",
                    DEFAULT_LIMIT
                ),
            },
            "ranges": {
                "type": "array",
                "minItems": 1,
                "items": schema_ref(page_range),
                "description": "In key order and disjoint (each starts at or after the previous one's `until`), none empty (`until` after `after`), at most `max_page_ranges` of /v1/capabilities.",
            },
        },
    })
}
