//! The client's configuration: one typed struct, defaults in one place,
//! validated once by [`SourceConfig::validate`].

use reqwest::Url;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// How to reach the Source API and how hard to try.
///
/// Durations are whole milliseconds in configuration files. `Debug` never
/// prints the bearer token or a password in `base_url`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Where the Source API lives, e.g. `http://monolith:8080` (the `/v1/...`
    /// paths are appended to it).
    pub base_url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer_token: Option<String>,
    /// Deadline of one attempt: connecting, sending and reading the whole
    /// body.
    #[serde(with = "millis")]
    pub request_timeout: Duration,
    /// Deadline for establishing a connection.
    #[serde(with = "millis")]
    pub connect_timeout: Duration,
    /// Retries after the first attempt for transient failures (connection
    /// errors, timeouts, 408, 429, 5xx, a body cut short).
    pub max_retries: u32,
    /// Delay before the first retry; doubles per retry, with jitter.
    #[serde(with = "millis")]
    pub retry_min_backoff: Duration,
    /// Longest delay between two retries.
    #[serde(with = "millis")]
    pub retry_max_backoff: Duration,
    /// Most requests per second, shared by every call of one client
    /// (retries included); `None` for no limit.
    pub requests_per_second: Option<u32>,
    /// Largest response body accepted; a larger one is a permanent error.
    pub max_body_bytes: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            base_url: "http://127.0.0.1:8080".to_owned(),
            bearer_token: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_retries: 5,
            retry_min_backoff: Duration::from_millis(200),
            retry_max_backoff: Duration::from_secs(10),
            requests_per_second: None,
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

impl SourceConfig {
    /// A default configuration for `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        SourceConfig {
            base_url: base_url.into(),
            ..SourceConfig::default()
        }
    }

    /// Checks the configuration and parses `base_url`; the error names the
    /// offending field (and never the token).
    pub fn validate(&self) -> Result<Url, String> {
        let base_url = Url::parse(&self.base_url).map_err(|error| {
            format!(
                "source base_url {:?} is not a URL: {error}",
                recon_core::redact_url(&self.base_url)
            )
        })?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(format!(
                "source base_url {} must be an http(s) URL",
                redact_url(&base_url)
            ));
        }
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err(format!(
                "source base_url {} must not have a query or fragment",
                redact_url(&base_url)
            ));
        }
        if self
            .bearer_token
            .as_deref()
            .is_some_and(|token| token.is_empty() || token.chars().any(char::is_control))
        {
            return Err("source bearer_token must be non-empty, without control characters".into());
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err("source request_timeout and connect_timeout must be positive".into());
        }
        if self.retry_min_backoff.is_zero() || self.retry_max_backoff < self.retry_min_backoff {
            return Err(
                "source backoff must satisfy 0 < retry_min_backoff <= retry_max_backoff".into(),
            );
        }
        if self.requests_per_second == Some(0) {
            return Err("source requests_per_second must be at least 1 (or unset)".into());
        }
        if self.max_body_bytes == 0 {
            return Err("source max_body_bytes must be positive".into());
        }
        Ok(base_url)
    }
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SourceConfig")
            .field("base_url", &recon_core::redact_url(&self.base_url))
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_min_backoff", &self.retry_min_backoff)
            .field("retry_max_backoff", &self.retry_max_backoff)
            .field("requests_per_second", &self.requests_per_second)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// `url` without credentials, for messages.
pub(crate) fn redact_url(url: &Url) -> String {
    recon_core::redact_url(url.as_str())
}

/// Durations as whole milliseconds in configuration files.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_token_and_password() {
        let config = SourceConfig {
            bearer_token: Some("s3cret-token".to_owned()),
            ..SourceConfig::new("http://admin:hunter2@example.com:8080/api")
        };
        let text = format!("{config:?}");
        assert!(!text.contains("s3cret-token"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(text.contains("example.com:8080/api"), "{text}");
    }

    #[test]
    fn defaults_are_valid_and_fields_are_named() {
        assert!(SourceConfig::default().validate().is_ok());
        let bad = |change: fn(&mut SourceConfig), field: &str| {
            let mut config = SourceConfig::default();
            change(&mut config);
            let error = config.validate().expect_err("must be refused");
            assert!(error.contains(field), "{error} should name {field}");
        };
        bad(|config| config.base_url = "not a url".into(), "base_url");
        bad(|config| config.base_url = "ftp://host/".into(), "base_url");
        bad(
            |config| config.base_url = "http://host/?a=b".into(),
            "base_url",
        );
        bad(
            |config| config.request_timeout = Duration::ZERO,
            "request_timeout",
        );
        bad(
            |config| config.retry_max_backoff = Duration::from_millis(1),
            "retry_min_backoff",
        );
        bad(
            |config| config.requests_per_second = Some(0),
            "requests_per_second",
        );
        bad(|config| config.max_body_bytes = 0, "max_body_bytes");
        bad(
            |config| config.bearer_token = Some(String::new()),
            "bearer_token",
        );
    }

    #[test]
    fn parses_with_defaults_and_refuses_unknown_fields() {
        let config: SourceConfig = serde_json::from_str(
            r#"{"base_url": "http://m:1", "request_timeout": 1500, "requests_per_second": 20}"#,
        )
        .expect("parse");
        assert_eq!(config.request_timeout, Duration::from_millis(1500));
        assert_eq!(config.requests_per_second, Some(20));
        assert_eq!(config.max_retries, SourceConfig::default().max_retries);
        let error = serde_json::from_str::<SourceConfig>(r#"{"base_ur": "http://m:1"}"#)
            .expect_err("unknown field");
        assert!(error.to_string().contains("base_ur"), "{error}");
    }
}
