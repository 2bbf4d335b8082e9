//! The client's errors, each with the [`FailureKind`] a caller acts on.
//!
//! Every message names the URL (never with credentials; the token travels in
//! a header and never reaches a message) and the status or problem.

use crate::validate::PageViolation;
use recon_core::ports::{FailureKind, PortError};

/// `Result` of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request to the Source API failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was refused.
    #[error("{0}")]
    Config(String),
    /// The request could not be sent or its response not read (connection
    /// refused or reset, timeout, body cut short).
    #[error("GET {url}: {problem}")]
    Transport {
        /// The URL, without credentials.
        url: String,
        /// What went wrong (`timed out`, `connection failed`, ...).
        problem: &'static str,
        /// The cause, stripped of its URL.
        #[source]
        source: reqwest::Error,
    },
    /// The source answered with a non-success status.
    #[error("GET {url}: status {status}{}", describe(.message))]
    Status {
        /// The URL, without credentials.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The server's error message (bounded), if it sent one.
        message: Option<String>,
        /// The wait the server asked for with `Retry-After`, if any.
        retry_after: Option<std::time::Duration>,
    },
    /// The body was larger than the configured cap.
    #[error("GET {url}: response body exceeds the cap of {cap} bytes (max_body_bytes)")]
    BodyTooLarge {
        /// The URL, without credentials.
        url: String,
        /// The cap, in bytes.
        cap: u64,
    },
    /// The body is not the JSON the contract describes.
    #[error("GET {url}: malformed JSON in the response: {source}")]
    MalformedJson {
        /// The URL, without credentials.
        url: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The page is well-formed JSON but breaks the contract.
    #[error("GET {url}: invalid page: {violation}")]
    InvalidPage {
        /// The URL, without credentials.
        url: String,
        /// The broken rule.
        violation: PageViolation,
    },
}

fn describe(message: &Option<String>) -> String {
    match message {
        Some(message) => format!(": {message}"),
        None => String::new(),
    }
}

impl Error {
    /// What a caller can do about it.
    pub fn kind(&self) -> FailureKind {
        match self {
            Error::Transport { .. } => FailureKind::Transient,
            Error::Status { status, .. } => kind_of_status(*status),
            Error::Config(_)
            | Error::BodyTooLarge { .. }
            | Error::MalformedJson { .. }
            | Error::InvalidPage { .. } => FailureKind::Permanent,
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind() == FailureKind::Transient
    }
}

/// The failure kind of an HTTP status (only 404 on a tenant's resources is
/// [`FailureKind::NotFound`]; the caller decides that).
fn kind_of_status(status: u16) -> FailureKind {
    match status {
        408 | 429 | 500..=599 => FailureKind::Transient,
        404 => FailureKind::NotFound,
        _ => FailureKind::Permanent,
    }
}

pub use recon_core::ports::error_chain;

/// Turns the final error of a call into a [`PortError`]: the kind, and the
/// message with its cause chain and the number of attempts made.
pub(crate) fn into_port_error(error: &Error, attempts: u32, token: Option<&str>) -> PortError {
    let mut message = error_chain(error);
    if error.is_transient() {
        message.push_str(&format!(" (gave up after {attempts} attempts)"));
    }
    if let Some(token) = token.filter(|token| !token.is_empty()) {
        // Belt and braces: a server could echo the token in its error body.
        message = message.replace(token, "<redacted>");
    }
    PortError::new(error.kind(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(kind_of_status(500), FailureKind::Transient);
        assert_eq!(kind_of_status(503), FailureKind::Transient);
        assert_eq!(kind_of_status(429), FailureKind::Transient);
        assert_eq!(kind_of_status(404), FailureKind::NotFound);
        assert_eq!(kind_of_status(401), FailureKind::Permanent);
        assert_eq!(kind_of_status(400), FailureKind::Permanent);
    }

    #[test]
    fn port_error_names_status_and_hides_token() {
        let error = Error::Status {
            url: "http://m/v1/tenants".to_owned(),
            status: 503,
            message: Some("echo tok-123".to_owned()),
            retry_after: None,
        };
        let port_error = into_port_error(&error, 4, Some("tok-123"));
        assert_eq!(port_error.kind, FailureKind::Transient);
        assert!(port_error.message.contains("status 503"), "{port_error}");
        assert!(port_error.message.contains("http://m/v1/tenants"));
        assert!(port_error.message.contains("after 4 attempts"));
        assert!(!port_error.message.contains("tok-123"));
    }
}
