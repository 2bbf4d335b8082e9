//! JSON of declared rows, both ways: the Source API's items (serialized
//! straight from a page's flat rows, no intermediate values) and the write
//! routes' bodies.
//!
//! | field type | JSON                                                  |
//! |------------|-------------------------------------------------------|
//! | text, enum | string                                                |
//! | integer    | number (a body may write it with a zero fraction)     |
//! | boolean    | `true`, `false`                                       |
//! | timestamp  | RFC 3339 string in UTC with milliseconds (`2026-12-07T06:31:03.123Z`); a body may give any offset, at most millisecond precision |
//! | json       | the document itself (stored as its canonical text)    |
//! | NULL       | `null` (a nullable field a body leaves out is NULL)   |
//!
//! An item holds the key fields, the data fields and `version`, in that
//! order: for the default schema exactly the items served before schemas
//! were declared.

use crate::error::Error;
use crate::model::{KindPlan, Model};
use crate::read::DeclaredPage;
use crate::rows::{RowRef, cursor_of};
use recon_core::schema::{
    FieldDef, FieldType, FieldValue, canonical_json_value, format_timestamp, parse_timestamp,
};
use recon_core::{RangeDigest, Version};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// One field value as JSON.
struct ValueJson<'a>(&'a FieldValue);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            FieldValue::Null => serializer.serialize_none(),
            FieldValue::Text(text) => serializer.serialize_str(text),
            FieldValue::Integer(number) => serializer.serialize_i64(*number),
            FieldValue::Boolean(flag) => serializer.serialize_bool(*flag),
            FieldValue::Timestamp(micros) => match format_timestamp(*micros) {
                Some(text) => serializer.serialize_str(&text),
                None => Err(S::Error::custom(format!(
                    "timestamp {micros} µs has no RFC 3339 form"
                ))),
            },
            FieldValue::Json(text) => serde_json::from_str::<Value>(text)
                .map_err(|error| S::Error::custom(format!("stored JSON is invalid: {error}")))?
                .serialize(serializer),
        }
    }
}

/// One row as a Source API item.
struct ItemJson<'a> {
    kind: &'a KindPlan,
    row: RowRef<'a>,
}

impl Serialize for ItemJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.kind.fields();
        let mut map = serializer.serialize_map(Some(self.kind.key().len() + fields.len() + 1))?;
        for (name, part) in self.kind.key().iter().zip(self.row.key) {
            map.serialize_entry(name, part)?;
        }
        for (field, value) in fields.iter().zip(self.row.values) {
            map.serialize_entry(&field.name, &ValueJson(value))?;
        }
        map.serialize_entry("version", &self.row.version)?;
        map.end()
    }
}

struct ItemsJson<'a> {
    kind: &'a KindPlan,
    page: &'a DeclaredPage,
}

impl Serialize for ItemsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut items = serializer.serialize_seq(Some(self.page.rows.len()))?;
        for index in 0..self.page.rows.len() {
            items.serialize_element(&ItemJson {
                kind: self.kind,
                row: self.page.row(index),
            })?;
        }
        items.end()
    }
}

/// A page as the Source API serves it: `items`, `watermark`, `next_after`
/// (the cursor form of the next page's `after`, or `null`).
pub(crate) struct PageJson<'a> {
    /// The page's kind.
    pub kind: &'a KindPlan,
    /// The page.
    pub page: &'a DeclaredPage,
}

impl Serialize for PageJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry(
            "items",
            &ItemsJson {
                kind: self.kind,
                page: self.page,
            },
        )?;
        map.serialize_entry("watermark", &self.page.watermark)?;
        map.serialize_entry(
            "next_after",
            &self.page.next_after.as_deref().map(cursor_of),
        )?;
        map.end()
    }
}

/// A count and digest: `{"count", "digest"}`.
#[derive(Serialize)]
pub(crate) struct KindDigestJson {
    count: u64,
    digest: String,
}

impl KindDigestJson {
    pub(crate) fn of(digest: &RangeDigest) -> Self {
        KindDigestJson {
            count: digest.count,
            digest: digest.sum_hex(),
        }
    }
}

/// One value per scoped kind, by plural, in file order, then (if given)
/// the scope's key field and the watermark:
/// `{"users": …, "groups": …, "memberships": …, "watermark": …}`.
pub(crate) struct PerKindJson<'a, T> {
    /// The model, whose scoped kinds name the values.
    pub model: &'a Model,
    /// The scope value, written first under the scope's key field name.
    pub scope: Option<&'a str>,
    /// One value per scoped kind.
    pub values: Vec<T>,
    /// The watermark, written last.
    pub watermark: Option<Version>,
}

impl<T: Serialize> Serialize for PerKindJson<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(scope) = self.scope {
            map.serialize_entry(&self.model.scope().key()[0], scope)?;
        }
        for (kind, value) in self.model.scoped_kinds().zip(&self.values) {
            map.serialize_entry(&kind.def.plural, value)?;
        }
        if let Some(watermark) = &self.watermark {
            map.serialize_entry("watermark", watermark)?;
        }
        map.end()
    }
}

/// The data values a write body gives for `kind`: a JSON object with one
/// property per data field (a nullable field left out is NULL); unknown
/// properties are refused. Errors name the field, in serde's words where
/// serde has them (`missing field`, `unknown field`, `invalid type`,
/// `unknown variant`).
pub(crate) fn body_values(kind: &KindPlan, body: Value) -> Result<Vec<FieldValue>, Error> {
    let bad = |message: String| Error::BadRequest(format!("invalid request body: {message}"));
    let Value::Object(mut properties) = body else {
        return Err(bad(format!(
            "invalid type: {}, expected a JSON object of the {} fields",
            describe(&body),
            kind.name()
        )));
    };
    let mut values = Vec::with_capacity(kind.fields().len());
    for field in kind.fields() {
        let value = match properties.remove(&field.name) {
            None if field.nullable => FieldValue::Null,
            None => return Err(bad(format!("missing field `{}`", field.name))),
            Some(json) => field_value(field, json)
                .map_err(|problem| bad(format!("field `{}`: {problem}", field.name)))?,
        };
        values.push(value);
    }
    if let Some(unknown) = properties.keys().next() {
        let expected: Vec<String> = kind
            .fields()
            .iter()
            .map(|field| format!("`{}`", field.name))
            .collect();
        return Err(bad(format!(
            "unknown field `{unknown}`, expected one of {}",
            expected.join(", ")
        )));
    }
    Ok(values)
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => format!("boolean `{flag}`"),
        Value::Number(number) => format!("number `{number}`"),
        Value::String(text) => format!("string {text:?}"),
        Value::Array(_) => "sequence".to_owned(),
        Value::Object(_) => "map".to_owned(),
    }
}

fn field_value(field: &FieldDef, json: Value) -> Result<FieldValue, String> {
    if json.is_null() {
        return Ok(FieldValue::Null);
    }
    let invalid =
        |expected: &str| format!("invalid type: {}, expected {expected}", describe(&json));
    match &field.field_type {
        FieldType::Text { .. } => match json {
            Value::String(text) => Ok(FieldValue::Text(text)),
            _ => Err(invalid("a string")),
        },
        FieldType::Enum { values } => match json {
            Value::String(text) if values.contains(&text) => Ok(FieldValue::Text(text)),
            Value::String(text) => {
                let expected: Vec<String> =
                    values.iter().map(|value| format!("`{value}`")).collect();
                Err(format!(
                    "unknown variant `{text}`, expected one of {}",
                    expected.join(", ")
                ))
            }
            _ => Err(invalid("a string")),
        },
        FieldType::Integer => integer(&json)
            .map(FieldValue::Integer)
            .ok_or_else(|| invalid("an integer")),
        FieldType::Boolean => match json {
            Value::Bool(flag) => Ok(FieldValue::Boolean(flag)),
            _ => Err(invalid("a boolean")),
        },
        FieldType::Timestamp => match &json {
            Value::String(text) => {
                let micros = parse_timestamp(text)?;
                if micros % 1000 != 0 {
                    return Err(format!(
                        "{text:?} is finer than a millisecond, the precision of a timestamp"
                    ));
                }
                Ok(FieldValue::Timestamp(micros))
            }
            _ => Err(invalid("an RFC 3339 timestamp string")),
        },
        FieldType::Json => Ok(FieldValue::Json(canonical_json_value(&json))),
    }
}

/// A JSON integer: any number with a zero fractional part within i64, as
/// JSON Schema counts `1922.0` an integer.
fn integer(value: &Value) -> Option<i64> {
    let Value::Number(number) = value else {
        return None;
    };
    if let Some(integer) = number.as_i64() {
        return Some(integer);
    }
    let float = number.as_f64()?;
    // Within ±2^63 and whole: exactly representable as an i64.
    let in_range = (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&float);
    (in_range && float.fract() == 0.0).then_some(float as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Model {
        let schema = recon_core::schema::Schema::parse(include_str!(
            "../../../../proto/schemas/catalog.toml"
        ))
        .expect("valid");
        Model::new(schema).expect("served")
    }

    #[test]
    fn bodies_are_read_by_field_type() {
        let model = catalog();
        let product = model.kind("product").expect("product");
        let values = body_values(
            product,
            json!({"title": "Lamp", "price_cents": -1999.0, "active": true,
                   "attributes": {"b": null, "a": [1, 2]},
                   "released_at": "2026-12-07T08:31:03.123+02:00", "state": "listed"}),
        )
        .expect("valid body");
        assert_eq!(
            values,
            [
                FieldValue::Text("Lamp".into()),
                FieldValue::Integer(-1999),
                FieldValue::Boolean(true),
                FieldValue::Json(r#"{"a":[1,2],"b":null}"#.into()),
                FieldValue::Timestamp(1_796_625_063_123_000),
                FieldValue::Text("listed".into()),
                FieldValue::Null,
            ]
        );
    }

    #[test]
    fn body_problems_name_the_field() {
        let model = catalog();
        let product = model.kind("product").expect("product");
        let body = |extra: Value| {
            let mut base =
                json!({"title": "T", "price_cents": 1, "active": true, "state": "draft"});
            if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
                base.extend(extra);
            }
            base
        };
        for (extra, expected) in [
            (
                json!({"price_cents": 1.5}),
                "field `price_cents`: invalid type",
            ),
            (json!({"state": "gone"}), "unknown variant `gone`"),
            (json!({"colour": "red"}), "unknown field `colour`"),
            (
                json!({"active": "yes"}),
                "field `active`: invalid type: string",
            ),
            (
                json!({"released_at": "2026-12-07T06:31:03.1234Z"}),
                "finer than a millisecond",
            ),
            (
                json!({"released_at": "yesterday"}),
                "not an RFC 3339 timestamp",
            ),
        ] {
            let error = body_values(product, body(extra.clone())).expect_err("refused");
            assert!(
                error.to_string().contains(expected),
                "{extra}: {error} should mention {expected:?}"
            );
        }
        let error = body_values(product, json!({"title": "T"})).expect_err("missing");
        assert!(error.to_string().contains("missing field `price_cents`"));
        let error = body_values(product, json!([1, 2])).expect_err("not an object");
        assert!(error.to_string().contains("invalid request body"));
    }

    #[test]
    fn items_hold_keys_fields_and_version_in_order() {
        let model = catalog();
        let product = model.kind("product").expect("product");
        let key = ["SKU-1".to_owned()];
        let values = [
            FieldValue::Text("Lamp".into()),
            FieldValue::Integer(5),
            FieldValue::Boolean(false),
            FieldValue::Json(r#"{"a":1}"#.into()),
            FieldValue::Timestamp(1_796_625_063_000_000),
            FieldValue::Text("draft".into()),
            FieldValue::Null,
        ];
        let item = ItemJson {
            kind: product,
            row: RowRef {
                scope: "s",
                key: &key,
                values: &values,
                version: Version::new(1, 2),
            },
        };
        assert_eq!(
            serde_json::to_string(&item).expect("serializes"),
            r#"{"sku":"SKU-1","title":"Lamp","price_cents":5,"active":false,"attributes":{"a":1},"released_at":"2026-12-07T06:31:03.000Z","state":"draft","subtitle":null,"version":{"generation":1,"sequence":2}}"#
        );
    }
}
