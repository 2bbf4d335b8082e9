//! Validation of one page against the request that asked for it.
//!
//! Deletions are inferred from absence (DESIGN §6), so a broken page must
//! never be read as "rows are gone": any violation here is a permanent
//! error, and the caller stops instead of reconciling. Pure; no I/O.

use crate::declared::item_in;
use crate::wire::RawPage;
use recon_core::EntityKey;
use recon_core::ports::{PageRequest, SourcePage};
use recon_core::schema::Schema;

/// A page that breaks the Source API contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageViolation {
    /// A digest answer that does not cover the requested range exactly
    /// (bounds out of order or out of range, a bad count or sum).
    #[error("digest answer: {0}")]
    InvalidDigests(String),
    /// An item is missing a field, has a wrong type or an invalid value.
    #[error("item {index}: {problem}")]
    InvalidItem {
        /// Position of the item in the page.
        index: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// An item's key is not greater than the previous item's.
    #[error(
        "keys out of order: item {index} has key {key:?}, not after the previous item's key {previous:?}"
    )]
    KeysOutOfOrder {
        /// Position of the offending item.
        index: usize,
        /// Its key.
        key: String,
        /// The previous item's key.
        previous: String,
    },
    /// An item's key is not greater than the request's `after`: a repeated
    /// key (e.g. the previous page's last item again) or one out of range.
    #[error(
        "duplicate or out-of-range key: item {index} has key {key:?}, not after the requested `after` {after:?}"
    )]
    KeyNotAfterCursor {
        /// Position of the offending item.
        index: usize,
        /// Its key.
        key: String,
        /// The request's `after`.
        after: String,
    },
    /// An item of a multi-range page outside every requested range.
    #[error("item {index} (key {key}) lies outside every requested range")]
    KeyOutsideRanges {
        /// Position of the offending item.
        index: usize,
        /// Its key.
        key: String,
    },
    /// More items than the request's `limit`.
    #[error("page has {count} items, more than the requested limit {limit}")]
    TooManyItems {
        /// Items in the page.
        count: usize,
        /// The request's limit.
        limit: u32,
    },
    /// `next_after` is not a valid key of the requested kind.
    #[error("invalid next_after {next_after:?}: {problem}")]
    InvalidNextAfter {
        /// The value sent.
        next_after: String,
        /// Why it does not parse.
        problem: String,
    },
    /// `next_after` is set but differs from the last item's key.
    #[error("next_after {next_after:?} is not the last item's key {last:?}")]
    NextAfterMismatch {
        /// The value sent.
        next_after: String,
        /// The last item's key.
        last: String,
    },
    /// A page without items that claims another page follows.
    #[error("page has no items but next_after {next_after:?} (a page after it would repeat it)")]
    EmptyPageWithNextAfter {
        /// The value sent.
        next_after: String,
    },
}

/// Decodes a page body for `request`: parses it, converts and validates
/// every item, and checks the page as a whole ([`check_page`]).
pub(crate) fn decode_page(
    schema: &'static Schema,
    request: &PageRequest,
    body: &[u8],
) -> Result<Result<SourcePage, PageViolation>, serde_json::Error> {
    let raw: RawPage = serde_json::from_slice(body)?;
    let bytes = u64::try_from(body.len()).unwrap_or(u64::MAX);
    Ok(rows_of(schema, request, raw, bytes))
}

fn rows_of(
    schema: &'static Schema,
    request: &PageRequest,
    raw: RawPage,
    bytes: u64,
) -> Result<SourcePage, PageViolation> {
    let key_parts = schema
        .kind(request.kind.as_str())
        .map_or(1, |kind| kind.key.len());
    let next_after = match raw.next_after {
        None => None,
        Some(text) => Some(
            EntityKey::parse(&text, key_parts, request.kind.as_str()).map_err(|invalid| {
                PageViolation::InvalidNextAfter {
                    next_after: text.clone(),
                    problem: invalid.to_string(),
                }
            })?,
        ),
    };
    let mut rows = Vec::with_capacity(raw.items.len());
    for (index, item) in raw.items.into_iter().enumerate() {
        let row = item_in(schema, request.kind, &request.tenant_id, item)
            .map_err(|problem| PageViolation::InvalidItem { index, problem })?;
        rows.push(row);
    }
    let page = SourcePage {
        rows,
        watermark: raw.watermark,
        next_after,
        bytes,
    };
    check_page(request, &page)?;
    Ok(page)
}

/// Checks a page against its request: keys strictly increasing and all
/// after the request's `after`, at most `limit` items, and `next_after`
/// either `None` or the last item's key (never set on an empty page).
pub fn check_page(request: &PageRequest, page: &SourcePage) -> Result<(), PageViolation> {
    let mut previous: Option<EntityKey> = None;
    // Keys increase (checked below), so the ranges are passed in order.
    let mut ranges = request.within.iter().peekable();
    for (index, row) in page.rows.iter().enumerate() {
        let key = row.key();
        if !request.within.is_empty() {
            while ranges
                .peek()
                .is_some_and(|range| range.until.as_ref().is_some_and(|until| key > *until))
            {
                ranges.next();
            }
            if !ranges.peek().is_some_and(|range| range.contains(&key)) {
                return Err(PageViolation::KeyOutsideRanges {
                    index,
                    key: key.to_string(),
                });
            }
        }
        if let Some(after) = &request.after
            && key <= *after
        {
            return Err(PageViolation::KeyNotAfterCursor {
                index,
                key: key.to_string(),
                after: after.to_string(),
            });
        }
        if let Some(previous) = &previous
            && key <= *previous
        {
            return Err(PageViolation::KeysOutOfOrder {
                index,
                key: key.to_string(),
                previous: previous.to_string(),
            });
        }
        previous = Some(key);
    }
    let count = page.rows.len();
    if u64::try_from(count).unwrap_or(u64::MAX) > u64::from(request.limit) {
        return Err(PageViolation::TooManyItems {
            count,
            limit: request.limit,
        });
    }
    match (&page.next_after, previous) {
        (None, _) => Ok(()),
        (Some(next_after), None) => Err(PageViolation::EmptyPageWithNextAfter {
            next_after: next_after.to_string(),
        }),
        (Some(next_after), Some(last)) if *next_after != last => {
            Err(PageViolation::NextAfterMismatch {
                next_after: next_after.to_string(),
                last: last.to_string(),
            })
        }
        (Some(_), Some(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_core::Kind;
    use serde_json::{Value, json};

    fn request(kind: Kind, after: Option<&str>, limit: u32) -> PageRequest {
        PageRequest {
            tenant_id: "t1".to_owned(),
            kind,
            after: after.map(|text| {
                EntityKey::parse(
                    text,
                    Schema::default_schema().key_parts(kind),
                    kind.as_str(),
                )
                .expect("key")
            }),
            limit,
            within: Vec::new(),
        }
    }

    fn groups(ids: &[&str], next_after: Value) -> Vec<u8> {
        let items: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "name": "n", "version": {"generation": 0, "sequence": 1}}))
            .collect();
        let body = json!({"items": items, "watermark": {"generation": 0, "sequence": 9},
                          "next_after": next_after});
        serde_json::to_vec(&body).expect("serialize")
    }

    fn violation(request: &PageRequest, body: &[u8]) -> PageViolation {
        decode_page(Schema::default_schema(), request, body)
            .expect("well-formed JSON")
            .expect_err("must be a violation")
    }

    #[test]
    fn accepts_a_valid_page() {
        let request = request(Kind::GROUP, Some("a"), 3);
        let body = groups(&["b", "c", "d"], json!("d"));
        let page = decode_page(Schema::default_schema(), &request, &body)
            .expect("json")
            .expect("valid");
        assert_eq!(page.rows.len(), 3);
        assert_eq!(page.next_after, Some(EntityKey::id("d")));
        assert_eq!(page.bytes, body.len() as u64);
        let last = decode_page(
            Schema::default_schema(),
            &request,
            &groups(&[], Value::Null),
        )
        .expect("json");
        assert!(last.expect("empty last page").rows.is_empty());
    }

    #[test]
    fn names_each_violation() {
        let plain = request(Kind::GROUP, None, 10);
        let after_b = request(Kind::GROUP, Some("b"), 10);
        let cases = [
            (
                &plain,
                groups(&["b", "a", "c"], json!("c")),
                "keys out of order",
            ),
            (&plain, groups(&["a", "a"], json!("a")), "keys out of order"),
            (
                &after_b,
                groups(&["b", "c"], json!("c")),
                "duplicate or out-of-range",
            ),
            (
                &after_b,
                groups(&["a"], Value::Null),
                "duplicate or out-of-range",
            ),
            (
                &plain,
                groups(&["a", "b"], json!("a")),
                "not the last item's key",
            ),
            (&plain, groups(&[], json!("z")), "no items but next_after"),
            (&plain, groups(&["a"], json!("")), "invalid next_after"),
            (
                &request(Kind::GROUP, None, 1),
                groups(&["a", "b"], json!("b")),
                "more than the requested limit",
            ),
        ];
        for (request, body, expected) in cases {
            let text = violation(request, &body).to_string();
            assert!(text.contains(expected), "{text} should say {expected}");
        }
    }

    #[test]
    fn a_multi_range_page_holds_only_keys_inside_its_ranges() {
        let mut within = request(Kind::GROUP, None, 10);
        within.within = vec![
            recon_core::KeyRange {
                after: None,
                until: Some(EntityKey::id("b")),
            },
            recon_core::KeyRange {
                after: Some(EntityKey::id("d")),
                until: Some(EntityKey::id("f")),
            },
        ];
        let page = decode_page(
            Schema::default_schema(),
            &within,
            &groups(&["a", "b", "e", "f"], Value::Null),
        )
        .expect("json")
        .expect("inside the ranges");
        assert_eq!(page.rows.len(), 4);
        for (ids, outside) in [(vec!["a", "c"], "key c"), (vec!["b", "g"], "key g")] {
            let text = violation(&within, &groups(&ids, Value::Null)).to_string();
            assert!(
                text.contains(outside) && text.contains("outside every requested range"),
                "{text}"
            );
        }
    }

    #[test]
    fn membership_keys_order_by_group_then_user() {
        let request = request(Kind::MEMBERSHIP, Some("g1:u9"), 10);
        let item = |group: &str, user: &str| json!({"group_id": group, "user_id": user, "version": {"generation": 0, "sequence": 1}});
        let body = json!({"items": [item("g2", "u1"), item("g2", "u2")],
                          "watermark": {"generation": 0, "sequence": 1}, "next_after": "g2:u2"});
        let body = serde_json::to_vec(&body).expect("serialize");
        let page = decode_page(Schema::default_schema(), &request, &body)
            .expect("json")
            .expect("valid");
        assert_eq!(page.next_after, Some(EntityKey::pair("g2", "u2")));
        let bad = json!({"items": [item("g1", "u1")],
                         "watermark": {"generation": 0, "sequence": 1}, "next_after": null});
        let text = violation(&request, &serde_json::to_vec(&bad).expect("serialize")).to_string();
        assert!(text.contains("g1:u1"), "{text}");
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        let request = request(Kind::GROUP, None, 10);
        assert!(decode_page(Schema::default_schema(), &request, b"{\"items\": [").is_err());
        assert!(
            decode_page(
                Schema::default_schema(),
                &request,
                b"{\"items\": 5, \"watermark\": null}"
            )
            .is_err()
        );
    }
}
