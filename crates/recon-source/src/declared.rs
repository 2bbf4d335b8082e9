//! Items of a declared kind's pages (`docs/schema.md`): the key fields and
//! the data fields as JSON properties by name, and `version`.
//!
//! | field type | JSON                                                  |
//! |------------|-------------------------------------------------------|
//! | text, enum | string                                                |
//! | integer    | number with a zero fractional part, within i64        |
//! | boolean    | `true`, `false`                                       |
//! | timestamp  | RFC 3339 string (`2026-12-07T06:31:03.123Z`)          |
//! | json       | the document itself                                   |
//! | NULL       | `null` (a nullable field left out reads as `null`)    |
//!
//! Unknown properties are ignored, as the contract asks of clients; the
//! row is then checked against the schema ([`DeclaredRow::check`]).

use recon_core::schema::{
    DeclaredChange, DeclaredRow, FieldDef, FieldType, FieldValue, KindDef, Schema,
    canonical_json_value, parse_timestamp,
};
use recon_core::{Change, Kind, Row, Version};
use serde_json::Value;

/// Converts one item of a page of `kind` within `scope` (for the scope
/// kind: ignored, a scope row lives inside itself); the error names the
/// property and what is wrong with it.
pub fn declared_item(
    schema: &Schema,
    kind: &KindDef,
    scope: &str,
    item: Value,
) -> Result<DeclaredRow, String> {
    let Value::Object(mut properties) = item else {
        return Err(format!("an item is a JSON object, not {item}"));
    };
    let version: Version = match properties.remove("version") {
        Some(version) => {
            serde_json::from_value(version).map_err(|error| format!("version: {error}"))?
        }
        None => return Err("missing field `version`".to_owned()),
    };
    let mut key = Vec::with_capacity(kind.key.len());
    for name in &kind.key {
        match properties.remove(name) {
            Some(Value::String(part)) => key.push(part),
            Some(other) => return Err(format!("{name}: a key is a string, not {other}")),
            None => return Err(format!("missing field `{name}`")),
        }
    }
    let mut values = Vec::with_capacity(kind.fields.len());
    for field in &kind.fields {
        let value = properties.remove(&field.name);
        values.push(
            field_value(field, value).map_err(|problem| format!("{}: {problem}", field.name))?,
        );
    }
    let scope = if kind.scoped {
        scope.to_owned()
    } else {
        key.first().cloned().unwrap_or_default()
    };
    let row = DeclaredRow {
        kind: kind.name.clone(),
        scope,
        key,
        values,
        version,
    };
    row.check(schema, true).map_err(|error| error.to_string())?;
    Ok(row)
}

/// Converts one item of a page of `kind` within `scope` into a row of
/// `schema`: the default schema's kinds through their typed items, any
/// other through [`declared_item`]; the error names what is wrong.
pub(crate) fn item_in(
    schema: &'static Schema,
    kind: Kind,
    scope: &str,
    item: Value,
) -> Result<Row, String> {
    if std::ptr::eq(schema, Schema::default_schema()) {
        return crate::wire::item_to_row(kind, scope, item);
    }
    let definition = schema
        .kind(kind.as_str())
        .ok_or_else(|| format!("kind {kind} is not declared in the schema"))?;
    let row = declared_item(schema, definition, scope, item)?;
    match DeclaredChange::Upsert(row).to_change(schema) {
        Ok(Change::Upsert(row)) => Ok(row),
        Ok(Change::Delete(_)) => Err("an upsert became a deletion".to_owned()),
        Err(invalid) => Err(invalid.to_string()),
    }
}

fn field_value(field: &FieldDef, value: Option<Value>) -> Result<FieldValue, String> {
    let value = match value {
        None if field.nullable => return Ok(FieldValue::Null),
        None => return Err("missing".to_owned()),
        Some(Value::Null) => return Ok(FieldValue::Null),
        Some(value) => value,
    };
    let mistyped = |value: &Value| format!("expected {}, got {value}", field.field_type.name());
    match &field.field_type {
        FieldType::Text { .. } | FieldType::Enum { .. } => match value {
            Value::String(text) => Ok(FieldValue::Text(text)),
            other => Err(mistyped(&other)),
        },
        FieldType::Integer => integer(&value)
            .map(FieldValue::Integer)
            .ok_or_else(|| mistyped(&value)),
        FieldType::Boolean => match value {
            Value::Bool(flag) => Ok(FieldValue::Boolean(flag)),
            other => Err(mistyped(&other)),
        },
        FieldType::Timestamp => match value {
            Value::String(text) => parse_timestamp(&text).map(FieldValue::Timestamp),
            other => Err(mistyped(&other)),
        },
        FieldType::Json => Ok(FieldValue::Json(canonical_json_value(&value))),
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

    fn catalog() -> Schema {
        Schema::parse(include_str!("../../../proto/schemas/catalog.toml")).expect("valid")
    }

    #[test]
    fn every_field_type_is_read() {
        let schema = catalog();
        let product = schema.kind("products").expect("product");
        let row = declared_item(
            &schema,
            product,
            "shop-1",
            json!({
                "sku": "SKU-1", "title": "Lamp", "price_cents": -1999.0, "active": true,
                "attributes": {"b": null, "a": [1, 2]},
                "released_at": "2026-12-07T06:31:03.123Z", "state": "listed",
                "version": {"generation": 3, "sequence": 7}, "unknown": "ignored"
            }),
        )
        .expect("valid product");
        assert_eq!(row.scope, "shop-1");
        assert_eq!(row.key, ["SKU-1"]);
        assert_eq!(
            row.values,
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
        assert_eq!(row.version, Version::new(3, 7));
        // The pinned vector of docs/schema.md: the same row hash.
        let key: Vec<&str> = row.key.iter().map(String::as_str).collect();
        assert_eq!(
            recon_core::schema::row_hash_of_values(product, &key, &row.values).to_hex(),
            "2af2efb7dd28877ee6c3e6e4150dc93b"
        );
    }

    #[test]
    fn problems_are_named_by_property() {
        let schema = catalog();
        let variant = schema.kind("variant").expect("variant");
        let version = json!({"generation": 1, "sequence": 1});
        let cases = [
            (
                json!({"sku": "a", "variant_id": "b", "label": "L", "version": version}),
                "stock: missing",
            ),
            (
                json!({"sku": "a", "variant_id": "b", "label": "L", "stock": 1.5, "version": version}),
                "stock: expected integer, got 1.5",
            ),
            (
                json!({"sku": "a", "variant_id": "b", "label": null, "stock": 1, "version": version}),
                "is null, and the field is not nullable",
            ),
            (
                json!({"sku": "a", "label": "L", "stock": 1, "version": version}),
                "missing field `variant_id`",
            ),
            (
                json!({"sku": "a:x", "variant_id": "b", "label": "L", "stock": 1, "version": version}),
                "contains `:`",
            ),
            (
                json!({"sku": "a", "variant_id": "b", "label": "L", "stock": 1}),
                "missing field `version`",
            ),
            (json!(["not", "an", "object"]), "a JSON object"),
        ];
        for (item, expected) in cases {
            let error =
                declared_item(&schema, variant, "shop-1", item.clone()).expect_err("refused");
            assert!(
                error.contains(expected),
                "{item}: {error:?} should mention {expected:?}"
            );
        }
        let product = schema.kind("product").expect("product");
        let error = declared_item(
            &schema,
            product,
            "shop-1",
            json!({"sku": "s", "title": "T", "price_cents": 1, "active": true,
                   "released_at": "yesterday", "state": "draft", "version": version}),
        )
        .expect_err("bad timestamp");
        assert!(
            error.starts_with("released_at: \"yesterday\" is not an RFC 3339 timestamp"),
            "{error}"
        );
    }

    #[test]
    fn a_scope_row_lives_inside_itself() {
        let schema = catalog();
        let shop = schema.kind("shop").expect("shop");
        let row = declared_item(
            &schema,
            shop,
            "",
            json!({"code": "shop-9", "title": "Nine", "version": {"generation": 1, "sequence": 2}}),
        )
        .expect("valid shop");
        assert_eq!(row.scope, "shop-9");
    }
}
