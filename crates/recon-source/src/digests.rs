//! Decoding and checking the Source API's range digests
//! (`GET /v1/tenants/{id}/digests/{kind}`) and capabilities
//! (`GET /v1/capabilities`).
//!
//! A digest answer is trusted only if its ranges cover the requested range
//! exactly: consecutive, strictly increasing bounds inside the range, the
//! last ending where the request ends. Otherwise a range could be skipped
//! that nobody compared.

use crate::validate::PageViolation;
use recon_core::ports::{
    AllTenantDigests, DigestRange, DigestRequest, SourceDigests, TenantDigests,
};
use recon_core::schema::Schema;
use recon_core::{RangeDigest, Version};
use serde::Deserialize;
use serde_json::Value;

/// What a source offers beyond pages and counts; all `false` for a source
/// that does not serve `GET /v1/capabilities`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Capabilities {
    /// Range digests are served.
    #[serde(default)]
    pub digests: bool,
    /// The definition the digests follow (`recon-digest-v1`); a source
    /// that names none predates the field and follows the first one.
    #[serde(default)]
    pub digest_definition: Option<String>,
    /// Most buckets one digest request may ask for.
    #[serde(default = "default_buckets")]
    pub max_digest_buckets: u32,
    /// Most ranges one multi-range page request may carry (0: none).
    #[serde(default)]
    pub max_page_ranges: u32,
    /// Every tenant's digests are served in one answer.
    #[serde(default)]
    pub all_tenant_digests: bool,
}

fn default_buckets() -> u32 {
    1
}

impl Capabilities {
    /// Whether the source's digests can be compared with recon's: it
    /// serves them, under recon's definition
    /// ([`recon_core::digest::DEFINITION`]).
    pub fn comparable_digests(&self) -> bool {
        self.digests && self.definition() == recon_core::digest::DEFINITION
    }

    /// The definition the source's digests follow.
    pub fn definition(&self) -> &str {
        self.digest_definition
            .as_deref()
            .unwrap_or(recon_core::digest::DEFINITION)
    }
}

#[derive(Debug, Deserialize)]
struct RawRange {
    until: Option<String>,
    count: u64,
    digest: String,
}

#[derive(Debug, Deserialize)]
struct RawDigests {
    ranges: Vec<RawRange>,
    watermark: Version,
}

#[derive(Debug, Deserialize)]
struct RawKindDigest {
    count: u64,
    digest: String,
}

/// The scoped kinds' digests of an answer's object (each under its
/// plural), in the schema's file order; a missing kind or a sum that is
/// not 16 hex digits is named.
fn kinds(
    schema: &Schema,
    object: &serde_json::Map<String, Value>,
) -> Result<Vec<RangeDigest>, PageViolation> {
    let mut kinds = Vec::new();
    for kind in schema.scoped() {
        let name = &kind.plural;
        let Some(value) = object.get(name) else {
            return Err(PageViolation::InvalidDigests(format!("{name}: missing")));
        };
        let raw: RawKindDigest = serde_json::from_value(value.clone())
            .map_err(|error| PageViolation::InvalidDigests(format!("{name}: {error}")))?;
        let Some(sum) = parse_sum(&raw.digest) else {
            return Err(PageViolation::InvalidDigests(format!(
                "{name}: digest {:?} is not 16 hex digits",
                raw.digest
            )));
        };
        kinds.push(RangeDigest {
            count: raw.count,
            sum,
        });
    }
    Ok(kinds)
}

/// The answer's `watermark`.
fn watermark(object: &serde_json::Map<String, Value>) -> Result<Version, serde_json::Error> {
    serde_json::from_value(object.get("watermark").cloned().unwrap_or(Value::Null))
}

/// Decodes every tenant's digests (`GET /v1/digests`: the scope kind's
/// plural lists objects with the scope's key field and each scoped kind's
/// digest): `Err` for malformed JSON, `Ok(Err)` for a bad sum or a tenant
/// listed twice.
pub fn decode_all_tenant_digests(
    schema: &Schema,
    body: &[u8],
) -> Result<Result<AllTenantDigests, PageViolation>, serde_json::Error> {
    let raw: serde_json::Map<String, Value> = serde_json::from_slice(body)?;
    let watermark = watermark(&raw)?;
    let scope = schema.scope();
    let id_field = &scope.key[0];
    let listed: Vec<serde_json::Map<String, Value>> =
        serde_json::from_value(raw.get(&scope.plural).cloned().unwrap_or(Value::Null))?;
    let mut tenants = std::collections::HashMap::with_capacity(listed.len());
    for tenant in listed {
        let Some(Value::String(id)) = tenant.get(id_field) else {
            return Ok(Err(PageViolation::InvalidDigests(format!(
                "an entry of {} has no {id_field:?}",
                scope.plural
            ))));
        };
        let digests = match kinds(schema, &tenant) {
            Ok(digests) => digests,
            Err(PageViolation::InvalidDigests(problem)) => {
                return Ok(Err(PageViolation::InvalidDigests(format!(
                    "tenant {id:?}: {problem}"
                ))));
            }
            Err(other) => return Ok(Err(other)),
        };
        if tenants.insert(id.clone(), digests).is_some() {
            return Ok(Err(PageViolation::InvalidDigests(format!(
                "tenant {id:?} is listed twice"
            ))));
        }
    }
    Ok(Ok(AllTenantDigests { tenants, watermark }))
}

/// The sum of a digest answer: exactly 16 hex digits.
fn parse_sum(text: &str) -> Option<u64> {
    (text.len() == 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

/// Decodes a tenant's digests (`GET /v1/tenants/{id}/digests`): `Err` for
/// malformed JSON, `Ok(Err)` for a missing kind or a sum that is not 16 hex
/// digits.
pub fn decode_tenant_digests(
    schema: &Schema,
    body: &[u8],
) -> Result<Result<TenantDigests, PageViolation>, serde_json::Error> {
    let raw: serde_json::Map<String, Value> = serde_json::from_slice(body)?;
    let watermark = watermark(&raw)?;
    Ok(kinds(schema, &raw).map(|kinds| TenantDigests { kinds, watermark }))
}

/// Decodes a digest answer to `request`: `Err` for malformed JSON,
/// `Ok(Err)` for an answer that breaks the contract.
pub fn decode_digests(
    schema: &Schema,
    request: &DigestRequest,
    body: &[u8],
) -> Result<Result<SourceDigests, PageViolation>, serde_json::Error> {
    let raw: RawDigests = serde_json::from_slice(body)?;
    Ok(check(schema.key_parts(request.kind), request, raw))
}

fn check(
    key_parts: usize,
    request: &DigestRequest,
    raw: RawDigests,
) -> Result<SourceDigests, PageViolation> {
    let broken = |problem: String| PageViolation::InvalidDigests(problem);
    if raw.ranges.is_empty() {
        return Err(broken("no ranges".into()));
    }
    if raw.ranges.len() > request.buckets as usize {
        return Err(broken(format!(
            "{} ranges, more than the {} buckets asked for",
            raw.ranges.len(),
            request.buckets
        )));
    }
    let last_index = raw.ranges.len() - 1;
    let mut ranges = Vec::with_capacity(raw.ranges.len());
    let mut previous = request.range.after.clone();
    for (index, range) in raw.ranges.into_iter().enumerate() {
        let until = range
            .until
            .as_deref()
            .map(|text| recon_core::EntityKey::parse(text, key_parts, request.kind.as_str()))
            .transpose()
            .map_err(|invalid| broken(format!("range {index}: bad `until`: {invalid}")))?;
        if index == last_index {
            if until != request.range.until {
                return Err(broken(format!(
                    "the last range ends at {until:?}, not where the request does ({:?})",
                    request.range.until
                )));
            }
        } else {
            let Some(bound) = &until else {
                return Err(broken(format!(
                    "range {index} is unbounded but not the last"
                )));
            };
            if previous.as_ref().is_some_and(|after| bound <= after)
                || !request.range.contains(bound)
            {
                return Err(broken(format!(
                    "range {index} ends at {bound}, not after the previous bound and inside the requested range"
                )));
            }
            previous = Some(bound.clone());
        }
        let sum = parse_sum(&range.digest).ok_or_else(|| {
            broken(format!(
                "range {index}: digest {:?} is not 16 hex digits",
                range.digest
            ))
        })?;
        ranges.push(DigestRange {
            until,
            digest: RangeDigest {
                count: range.count,
                sum,
            },
        });
    }
    Ok(SourceDigests {
        ranges,
        watermark: raw.watermark,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_core::{EntityKey, KeyRange, Kind};

    fn request(after: Option<&str>, until: Option<&str>) -> DigestRequest {
        DigestRequest {
            tenant_id: "t1".into(),
            kind: Kind::USER,
            range: KeyRange {
                after: after.map(EntityKey::id),
                until: until.map(EntityKey::id),
            },
            buckets: 4,
        }
    }

    fn decode(request: &DigestRequest, ranges: &str) -> Result<SourceDigests, PageViolation> {
        let body =
            format!(r#"{{"ranges": {ranges}, "watermark": {{"generation": 1, "sequence": 9}}}}"#);
        decode_digests(Schema::default_schema(), request, body.as_bytes()).expect("json")
    }

    #[test]
    fn consecutive_ranges_covering_the_request_are_accepted() {
        let digests = decode(
            &request(Some("a"), Some("z")),
            r#"[{"until": "f", "count": 2, "digest": "00000000000000ff"},
                {"until": "z", "count": 0, "digest": "0000000000000000"}]"#,
        )
        .expect("valid");
        assert_eq!(digests.ranges.len(), 2);
        assert_eq!(digests.ranges[0].until, Some(EntityKey::id("f")));
        assert_eq!(digests.ranges[0].digest, RangeDigest { count: 2, sum: 255 });
        assert_eq!(digests.watermark, Version::new(1, 9));
    }

    #[test]
    fn tenant_digests_are_decoded_per_kind() {
        let body = br#"{"users": {"count": 2, "digest": "00000000000000ff"},
            "groups": {"count": 0, "digest": "0000000000000000"},
            "memberships": {"count": 1, "digest": "ffffffffffffffff"},
            "watermark": {"generation": 2, "sequence": 5}}"#;
        let digests = decode_tenant_digests(Schema::default_schema(), body)
            .expect("json")
            .expect("valid");
        assert_eq!(digests.kinds[0], RangeDigest { count: 2, sum: 255 });
        assert_eq!(digests.kinds[2].sum, u64::MAX);
        assert_eq!(digests.watermark, Version::new(2, 5));
        let bad = br#"{"users": {"count": 2, "digest": "ff"},
            "groups": {"count": 0, "digest": "0000000000000000"},
            "memberships": {"count": 1, "digest": "0000000000000000"},
            "watermark": {"generation": 2, "sequence": 5}}"#;
        let error = decode_tenant_digests(Schema::default_schema(), bad)
            .expect("json")
            .expect_err("short sum");
        assert!(error.to_string().contains("users"), "{error}");
    }

    #[test]
    fn answers_that_leave_keys_uncovered_are_refused() {
        let unbounded = request(None, None);
        for (ranges, problem) in [
            ("[]", "no ranges"),
            (
                r#"[{"until": "f", "count": 1, "digest": "0000000000000001"}]"#,
                "last range",
            ),
            (
                r#"[{"until": "f", "count": 1, "digest": "0000000000000001"},
                    {"until": "c", "count": 1, "digest": "0000000000000001"},
                    {"until": null, "count": 1, "digest": "0000000000000001"}]"#,
                "range 1 ends at c",
            ),
            (
                r#"[{"until": null, "count": 1, "digest": "0000000000000001"},
                    {"until": null, "count": 1, "digest": "0000000000000001"}]"#,
                "unbounded but not the last",
            ),
            (
                r#"[{"until": null, "count": 1, "digest": "12"}]"#,
                "16 hex digits",
            ),
        ] {
            let error = decode(&unbounded, ranges).expect_err(problem);
            assert!(error.to_string().contains(problem), "{error}");
        }
        let error = decode(
            &request(Some("m"), None),
            r#"[{"until": "c", "count": 1, "digest": "0000000000000001"},
                {"until": null, "count": 1, "digest": "0000000000000001"}]"#,
        )
        .expect_err("bound before the range");
        assert!(
            error.to_string().contains("inside the requested range"),
            "{error}"
        );
    }
}
