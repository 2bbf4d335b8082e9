//! What a write must satisfy before it touches the database: a valid
//! scope value, key parts that are ids (and free of `:` where a cursor
//! joins them), and data values that fit their fields. Errors are
//! [`Error::BadRequest`]s naming the field and the problem.

use crate::error::{Error, Result};
use crate::model::{KindPlan, Model};
use recon_core::domain::validate_id;
use recon_core::schema::{FieldDef, FieldType, FieldValue};

/// Longest text value of a field without a declared `max_length`, in
/// bytes.
pub const MAX_TEXT_BYTES: usize = 1000;

/// Longest JSON document (canonical text), in bytes.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// Checks a scope value (a tenant id for the default schema).
pub(crate) fn check_scope(model: &Model, scope: &str) -> Result<()> {
    recon_core::validate_tenant_id(scope).map_err(|invalid| {
        Error::BadRequest(format!(
            "invalid {} id: {}",
            model.scope().name(),
            invalid.reason
        ))
    })
}

/// Checks a key: one id per key field, and no `:` where a cursor joins
/// parts.
pub(crate) fn check_key(kind: &KindPlan, key: &[String]) -> Result<()> {
    if key.len() != kind.key().len() {
        return Err(Error::BadRequest(format!(
            "a {} key has {} parts ({}), {} given",
            kind.name(),
            kind.key().len(),
            kind.key().join(", "),
            key.len()
        )));
    }
    for (position, part) in key.iter().enumerate() {
        let label = &kind.key_labels[position];
        validate_id("id", part)
            .map_err(|invalid| Error::BadRequest(format!("invalid {label}: {}", invalid.reason)))?;
        if kind.colon_free[position] && part.contains(':') {
            return Err(Error::BadRequest(format!(
                "{label} {part:?} must not contain ':' (composite-key cursors join their parts with ':')"
            )));
        }
    }
    Ok(())
}

/// Checks data values: one per field, each fitting its field
/// ([`FieldDef::check`]); a text holds no NUL character and, without a
/// declared `max_length`, at most [`MAX_TEXT_BYTES`]; a JSON document at
/// most [`MAX_JSON_BYTES`].
pub(crate) fn check_values(kind: &KindPlan, values: &[FieldValue]) -> Result<()> {
    if values.len() != kind.fields().len() {
        return Err(Error::BadRequest(format!(
            "a {} has {} data fields, {} values given",
            kind.name(),
            kind.fields().len(),
            values.len()
        )));
    }
    for (field, value) in kind.fields().iter().zip(values) {
        check_value(field, value)?;
    }
    Ok(())
}

fn check_value(field: &FieldDef, value: &FieldValue) -> Result<()> {
    field
        .check(value)
        .map_err(|invalid| Error::BadRequest(format!("{}: {}", invalid.field, invalid.reason)))?;
    let name = &field.name;
    match (&field.field_type, value) {
        (FieldType::Text { max_length }, FieldValue::Text(text)) => {
            if max_length.is_none() && text.len() > MAX_TEXT_BYTES {
                return Err(Error::BadRequest(format!(
                    "{name} is {} bytes long, at most {MAX_TEXT_BYTES} allowed",
                    text.len()
                )));
            }
            if text.contains('\0') {
                return Err(Error::BadRequest(format!(
                    "{name} contains a NUL character"
                )));
            }
        }
        (FieldType::Json, FieldValue::Json(text)) if text.len() > MAX_JSON_BYTES => {
            return Err(Error::BadRequest(format!(
                "{name} is {} bytes long as canonical JSON, at most {MAX_JSON_BYTES} allowed",
                text.len()
            )));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_named() {
        let model = Model::default_model();
        let group = model.kind("group").expect("group");
        let error = check_key(group, &["g:1".to_owned()]).expect_err("colon");
        assert!(
            error
                .to_string()
                .contains("group id \"g:1\" must not contain ':'")
        );
        let user = model.kind("user").expect("user");
        check_key(user, &["u:1".to_owned()]).expect("a user id may hold a colon");
        let error = check_key(user, &[String::new()]).expect_err("empty");
        assert_eq!(error.to_string(), "invalid user id: must not be empty");
        let text = |text: &str| FieldValue::Text(text.to_owned());
        let error = check_values(user, &[text("e\0"), text("d"), text("active")]).expect_err("NUL");
        assert_eq!(error.to_string(), "email contains a NUL character");
        let error = check_values(user, &[text("e"), text("d"), text("gone")]).expect_err("enum");
        assert!(
            error
                .to_string()
                .starts_with("status: \"gone\" is not one of"),
            "{error}"
        );
        let error = check_scope(&model, "").expect_err("empty scope");
        assert_eq!(error.to_string(), "invalid tenant id: must not be empty");
    }
}
