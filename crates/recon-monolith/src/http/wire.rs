//! JSON shapes of the HTTP interface. The read side's shapes are the
//! Source API contract (`proto/source-api.openapi.json`); clients must
//! ignore fields they do not know.

use recon_core::Version;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::marker::PhantomData;

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, naming the offending parameter or field.
    pub error: String,
}

/// `GET /v1/capabilities` body: what this Source API offers beyond pages
/// and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesBody {
    /// Whether `GET /v1/tenants/{id}/digests/{kind}` is served.
    pub digests: bool,
    /// The definition the digests follow ([`recon_core::digest::DEFINITION`]).
    pub digest_definition: String,
    /// Most buckets one digest request may ask for.
    pub max_digest_buckets: u32,
    /// Most ranges one `POST /v1/tenants/{id}/pages/{kind}` may carry (0:
    /// the route is not served).
    pub max_page_ranges: u32,
    /// Whether `GET /v1/digests` (every tenant's digests) is served.
    pub all_tenant_digests: bool,
}

/// A request body's struct, read from a JSON object only. serde's derived
/// `Deserialize` also reads a struct from an array of its field values in
/// order (`[null, null]` was a range, `[null, null, [{}]]` a page
/// request), which the contract's schemas (objects) forbid. Such a struct
/// derives with `#[serde(remote = "Self")]`, which turns the derived code
/// into an inherent `deserialize` that [`ObjectOnly::derived`] calls, and
/// implements `Deserialize` with [`from_object`].
trait ObjectOnly<'de>: Sized {
    /// What a client must send, for the error.
    const EXPECTED: &'static str;

    /// The derived deserialization.
    fn derived<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

/// Reads `T` from a JSON object, anything else being an error that says
/// what was expected.
fn from_object<'de, D: Deserializer<'de>, T: ObjectOnly<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    struct ObjectVisitor<T>(PhantomData<T>);

    impl<'de, T: ObjectOnly<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str(T::EXPECTED)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::derived(MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectVisitor(PhantomData))
}

/// A key range of a multi-range page request: keys after `after` up to and
/// including `until` (cursor forms; `null`: open). A JSON object only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RangeBody {
    /// Exclusive lower bound.
    #[serde(default)]
    pub after: Option<String>,
    /// Inclusive upper bound.
    #[serde(default)]
    pub until: Option<String>,
}

/// `POST /v1/tenants/{id}/pages/{kind}` body: a page of the rows after
/// `after` that lie inside one of `ranges`. A JSON object only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PageWithinBody {
    /// The cursor (exclusive), as for `GET`.
    #[serde(default)]
    pub after: Option<String>,
    /// Page size (default 1000, at most 10000); any integral number, as
    /// JSON Schema's `integer` (`1922.0` too).
    #[serde(default, deserialize_with = "super::integer::optional_u32")]
    pub limit: Option<u32>,
    /// The ranges, in key order and disjoint, at most `max_page_ranges`.
    pub ranges: Vec<RangeBody>,
}

impl<'de> ObjectOnly<'de> for RangeBody {
    const EXPECTED: &'static str = "a range: an object with optional `after` and `until`";

    fn derived<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The inherent (derived) function, not the trait's.
        RangeBody::deserialize(deserializer)
    }
}

impl<'de> Deserialize<'de> for RangeBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_object(deserializer)
    }
}

impl<'de> ObjectOnly<'de> for PageWithinBody {
    const EXPECTED: &'static str =
        "a page request: an object with `ranges` and optional `after` and `limit`";

    fn derived<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The inherent (derived) function, not the trait's.
        PageWithinBody::deserialize(deserializer)
    }
}

impl<'de> Deserialize<'de> for PageWithinBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_object(deserializer)
    }
}

/// One range of a digest answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestRangeBody {
    /// Inclusive upper bound (cursor form, like `after`); `null` for an
    /// unbounded last range.
    pub until: Option<String>,
    /// Rows in the range.
    pub count: u64,
    /// Sum of the rows' digest elements modulo 2^64, 16 lowercase hex digits.
    pub digest: String,
}

/// `GET /v1/tenants/{id}/digests/{kind}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestsBody {
    /// Consecutive ranges covering the requested one, in key order; the
    /// first starts after the request's `after`, the last ends at its
    /// `until`.
    pub ranges: Vec<DigestRangeBody>,
    /// The version of the last change committed in the snapshot.
    pub watermark: Version,
}

/// Response of `POST /admin/backups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupBody {
    /// The new backup's id.
    pub backup_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_request_limit_may_be_an_integral_float() {
        let body: PageWithinBody =
            serde_json::from_str(r#"{"ranges": [{}], "limit": 1922.0}"#).expect("1922.0");
        assert_eq!(body.limit, Some(1922));
        for (bad, expected) in [
            ("1922.5", "an integer"),
            ("-1", "an integer"),
            ("5000000000", "an integer"),
            ("\"5\"", "a JSON number"),
        ] {
            let text = format!(r#"{{"ranges": [{{}}], "limit": {bad}}}"#);
            let error = serde_json::from_str::<PageWithinBody>(&text).expect_err(bad);
            assert!(error.to_string().contains(expected), "{bad}: {error}");
        }
    }

    #[test]
    fn ranges_and_page_requests_are_objects_only() {
        // serde's derived structs also read an array of the field values;
        // the contract's schemas are objects.
        for bad in [
            r#"{"ranges": [[null, null]]}"#,
            r#"{"ranges": [[]]}"#,
            r#"{"ranges": [["a", "b"]]}"#,
            r#"[null, null, [{}]]"#,
        ] {
            let error = serde_json::from_str::<PageWithinBody>(bad).expect_err(bad);
            assert!(error.to_string().contains("object"), "{bad}: {error}");
        }
        let body: PageWithinBody =
            serde_json::from_str(r#"{"ranges": [{"after": null, "until": "b"}, {}]}"#)
                .expect("objects");
        assert_eq!(body.ranges.len(), 2);
        assert_eq!(body.ranges[0].until.as_deref(), Some("b"));
    }
}
