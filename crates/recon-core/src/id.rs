//! Ids at the boundary: what an entity id may be, and the error a malformed
//! value met at a boundary (an id, a cursor, a kind name) is refused with.

/// Longest id accepted anywhere, in characters (Unicode scalar values).
pub const MAX_ID_CHARS: usize = 200;

/// A malformed value met at a boundary (an id, a cursor, a kind name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidInput {
    /// What was being parsed, e.g. `"user id"` or `"membership cursor"`.
    pub what: &'static str,
    /// Why it was refused.
    pub reason: String,
}

impl InvalidInput {
    /// A refusal of `what`, saying why.
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            what,
            reason: reason.into(),
        }
    }
}

/// Checks an entity id: non-empty, at most [`MAX_ID_CHARS`] characters
/// (Unicode scalar values, as JSON Schema's `maxLength` counts them), no
/// control characters (general category Cc). `what` names the id in the
/// error.
pub fn validate_id(what: &'static str, id: &str) -> Result<(), InvalidInput> {
    if id.is_empty() {
        return Err(InvalidInput::new(what, "must not be empty"));
    }
    let chars = id.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(InvalidInput::new(
            what,
            format!("is {chars} characters long, at most {MAX_ID_CHARS} allowed"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(InvalidInput::new(what, "contains a control character"));
    }
    Ok(())
}
