//! The Source API read routes (contract: `proto/source-api.openapi.json`):
//!
//! * `GET /v1/tenants?after=<id>&limit=<n>`
//! * `GET /v1/tenants/{tenant_id}/users|groups?after=<id>&limit=<n>`
//! * `GET /v1/tenants/{tenant_id}/memberships?after=<group_id>:<user_id>&limit=<n>`
//! * `GET /v1/tenants/{tenant_id}/counts`
//! * `GET /v1/tenants/{tenant_id}/digests/users|groups|memberships?after=&until=&buckets=`
//!   (not under `.../users/`, where a user id `digests` would clash)
//! * `GET /v1/tenants/{tenant_id}/digests` (each kind whole)
//! * `GET /v1/digests` (every tenant's kinds whole)
//! * `POST /v1/tenants/{tenant_id}/pages/users|groups|memberships` (a page
//!   within many key ranges, given in the JSON body)
//! * `GET /v1/capabilities`
//!
//! Query parameters a route does not take are refused (400), so a client's
//! typo does not silently read the wrong thing.

use super::integer::u32_of_text;
use super::wire::{
    AllTenantDigestsBody, CapabilitiesBody, DigestRangeBody, DigestsBody, Item, KindDigestBody,
    PageBody, PageWithinBody, TenantDigestsBody, TenantKindsBody,
};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::error::Error;
use crate::read::{Counts, DEFAULT_PAGE_LIMIT, MAX_PAGE_RANGES, Page, validate_limit};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use recon_core::validate_tenant_id;
use recon_core::{EntityKey, KeyRange, Kind};

/// The read routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", get(list_tenants))
        .route("/v1/tenants/{tenant_id}/users", get(list_users))
        .route("/v1/tenants/{tenant_id}/groups", get(list_groups))
        .route("/v1/tenants/{tenant_id}/memberships", get(list_memberships))
        .route("/v1/tenants/{tenant_id}/counts", get(counts))
        .route("/v1/tenants/{tenant_id}/digests", get(tenant_digests))
        .route("/v1/tenants/{tenant_id}/digests/{kind}", get(digests))
        .route("/v1/tenants/{tenant_id}/pages/{kind}", post(page_within))
        .route("/v1/capabilities", get(capabilities))
        .route("/v1/digests", get(all_tenant_digests))
}

/// The parsed `after` and `limit` parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct PageParams {
    /// The key to start after, if any.
    pub after: Option<EntityKey>,
    /// The page size.
    pub limit: u32,
}

/// Parses a page request's query parameters for `kind`. Errors name the
/// parameter: unknown or repeated parameters, a malformed `after`, a `limit`
/// that is not an integer in `1..=10000`.
pub fn parse_page_params(pairs: &[(String, String)], kind: Kind) -> Result<PageParams, Error> {
    let mut after = None;
    let mut limit = None;
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "after" => &mut after,
            "limit" => &mut limit,
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown query parameter `{other}`; allowed are `after` and `limit`"
                )));
            }
        };
        if slot.replace(value.as_str()).is_some() {
            return Err(Error::BadRequest(format!(
                "query parameter `{name}` is given more than once"
            )));
        }
    }
    let after = match after {
        None => None,
        Some(text) => Some(kind.parse_key(text).map_err(|invalid| {
            Error::BadRequest(format!("invalid query parameter `after`: {invalid}"))
        })?),
    };
    let limit = match limit {
        None => DEFAULT_PAGE_LIMIT,
        Some(text) => u32_of_text(text).ok_or_else(|| {
            Error::BadRequest(format!(
                "query parameter `limit` must be an integer between 1 and {}, got {text:?}",
                crate::read::MAX_PAGE_LIMIT
            ))
        })?,
    };
    validate_limit(limit)?;
    Ok(PageParams { after, limit })
}

/// Refuses any query parameter of a route that takes none (`what` says
/// so in the error), as the contract promises for unknown parameters.
fn no_query_parameters(pairs: &[(String, String)], what: &str) -> Result<(), Error> {
    match pairs.first() {
        Some((name, _)) => Err(Error::BadRequest(format!(
            "unknown query parameter `{name}`; {what}"
        ))),
        None => Ok(()),
    }
}

fn page_body(page: Page) -> PageBody {
    PageBody {
        items: page.rows.into_iter().map(Item::of).collect(),
        watermark: page.watermark,
        next_after: page.next_after.map(|key| key.to_string()),
    }
}

fn checked_tenant_id(tenant_id: &str) -> Result<(), ApiError> {
    validate_tenant_id(tenant_id).map_err(ApiError::from)
}

async fn list_tenants(
    State(state): State<AppState>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<PageBody>, ApiError> {
    let params = parse_page_params(&pairs, Kind::TENANT)?;
    let after = params.after.as_ref().map(|key| key.primary.as_str());
    let page = state.monolith.list_tenants(after, params.limit).await?;
    Ok(Json(page_body(page)))
}

async fn list_of_kind(
    state: AppState,
    tenant_id: String,
    pairs: Vec<(String, String)>,
    kind: Kind,
) -> Result<Json<PageBody>, ApiError> {
    checked_tenant_id(&tenant_id)?;
    let params = parse_page_params(&pairs, kind)?;
    let page = state
        .monolith
        .list_entities(&tenant_id, kind, params.after.as_ref(), params.limit)
        .await?;
    Ok(Json(page_body(page)))
}

async fn list_users(
    State(state): State<AppState>,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<PageBody>, ApiError> {
    list_of_kind(state, tenant_id, pairs, Kind::USER).await
}

async fn list_groups(
    State(state): State<AppState>,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<PageBody>, ApiError> {
    list_of_kind(state, tenant_id, pairs, Kind::GROUP).await
}

async fn list_memberships(
    State(state): State<AppState>,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<PageBody>, ApiError> {
    list_of_kind(state, tenant_id, pairs, Kind::MEMBERSHIP).await
}

async fn counts(
    State(state): State<AppState>,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<Counts>, ApiError> {
    checked_tenant_id(&tenant_id)?;
    no_query_parameters(&pairs, "counts take no parameters")?;
    Ok(Json(state.monolith.counts(&tenant_id).await?))
}

async fn capabilities(
    State(state): State<AppState>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<CapabilitiesBody>, ApiError> {
    no_query_parameters(&pairs, "capabilities take no parameters")?;
    Ok(Json(CapabilitiesBody {
        digests: state.monolith.offers_digests(),
        max_digest_buckets: crate::digest::MAX_BUCKETS,
        max_page_ranges: MAX_PAGE_RANGES,
        all_tenant_digests: state.monolith.offers_digests(),
    }))
}

fn kind_digest(digest: recon_core::RangeDigest) -> KindDigestBody {
    KindDigestBody {
        count: digest.count,
        digest: digest.sum_hex(),
    }
}

async fn all_tenant_digests(
    State(state): State<AppState>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<AllTenantDigestsBody>, ApiError> {
    no_query_parameters(&pairs, "every tenant's digests take no parameters")?;
    let digests = state.monolith.all_tenant_digests().await?;
    Ok(Json(AllTenantDigestsBody {
        tenants: digests
            .tenants
            .into_iter()
            .map(|(id, [users, groups, memberships])| TenantKindsBody {
                id,
                users: kind_digest(users),
                groups: kind_digest(groups),
                memberships: kind_digest(memberships),
            })
            .collect(),
        watermark: digests.watermark,
    }))
}

/// The kind a `/digests/{kind}` or `/pages/{kind}` path names.
fn tenant_scoped_kind(route: &str, kind: &str) -> Result<Kind, ApiError> {
    match kind {
        "users" => Ok(Kind::USER),
        "groups" => Ok(Kind::GROUP),
        "memberships" => Ok(Kind::MEMBERSHIP),
        other => Err(Error::NotFound(format!("route {route}/{other}")).into()),
    }
}

/// The parsed body of a multi-range page request.
#[derive(Debug, PartialEq, Eq)]
pub struct PageWithinParams {
    /// The cursor.
    pub after: Option<EntityKey>,
    /// The page size.
    pub limit: u32,
    /// The ranges.
    pub ranges: Vec<KeyRange>,
}

/// Parses a multi-range page request's body for `kind`; errors name the
/// field (order and overlap of the ranges are checked by the read).
pub fn parse_page_within(body: PageWithinBody, kind: Kind) -> Result<PageWithinParams, Error> {
    let key = |field: String, text: Option<String>| -> Result<Option<EntityKey>, Error> {
        text.map(|text| {
            kind.parse_key(&text)
                .map_err(|invalid| Error::BadRequest(format!("invalid `{field}`: {invalid}")))
        })
        .transpose()
    };
    let limit = body.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    validate_limit(limit)?;
    let mut ranges = Vec::with_capacity(body.ranges.len());
    for (index, range) in body.ranges.into_iter().enumerate() {
        ranges.push(KeyRange {
            after: key(format!("ranges[{index}].after"), range.after)?,
            until: key(format!("ranges[{index}].until"), range.until)?,
        });
    }
    if ranges.is_empty() {
        return Err(Error::BadRequest(
            "`ranges` is empty: give at least one range (or use GET for a plain page)".to_owned(),
        ));
    }
    Ok(PageWithinParams {
        after: key("after".to_owned(), body.after)?,
        limit,
        ranges,
    })
}

async fn page_within(
    State(state): State<AppState>,
    ApiPath((tenant_id, kind)): ApiPath<(String, String)>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
    ApiJson(body): ApiJson<PageWithinBody>,
) -> Result<Json<PageBody>, ApiError> {
    checked_tenant_id(&tenant_id)?;
    let kind = tenant_scoped_kind("POST /v1/tenants/{id}/pages", &kind)?;
    no_query_parameters(
        &pairs,
        "a multi-range page takes its parameters in the body",
    )?;
    let params = parse_page_within(body, kind)?;
    let page = state
        .monolith
        .list_within(
            &tenant_id,
            kind,
            params.after.as_ref(),
            params.limit,
            &params.ranges,
        )
        .await?;
    Ok(Json(page_body(page)))
}

/// The parsed parameters of a digest request.
#[derive(Debug, PartialEq, Eq)]
pub struct DigestParams {
    /// The range to cover.
    pub range: KeyRange,
    /// Most ranges wanted.
    pub buckets: u32,
}

/// Parses a digest request's query parameters (`after`, `until`,
/// `buckets`, each at most once) for `kind`; errors name the parameter.
pub fn parse_digest_params(pairs: &[(String, String)], kind: Kind) -> Result<DigestParams, Error> {
    let mut range = KeyRange::all();
    let mut buckets = None;
    let mut seen = Vec::new();
    for (name, value) in pairs {
        if seen.contains(name) {
            return Err(Error::BadRequest(format!(
                "query parameter `{name}` is given more than once"
            )));
        }
        seen.push(name.clone());
        let key = || {
            kind.parse_key(value).map_err(|invalid| {
                Error::BadRequest(format!("invalid query parameter `{name}`: {invalid}"))
            })
        };
        match name.as_str() {
            "after" => range.after = Some(key()?),
            "until" => range.until = Some(key()?),
            "buckets" => buckets = Some(u32_of_text(value).ok_or_else(|| {
                Error::BadRequest(format!(
                    "query parameter `buckets` must be an integer between 1 and {}, got {value:?}",
                    crate::digest::MAX_BUCKETS
                ))
            })?),
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown query parameter `{other}`; allowed are `after`, `until` and `buckets`"
                )));
            }
        }
    }
    Ok(DigestParams {
        range,
        buckets: buckets.unwrap_or(1),
    })
}

async fn tenant_digests(
    State(state): State<AppState>,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<TenantDigestsBody>, ApiError> {
    checked_tenant_id(&tenant_id)?;
    no_query_parameters(&pairs, "a tenant's digests take no parameters")?;
    let digests = state.monolith.tenant_digests(&tenant_id).await?;
    let [users, groups, memberships] = digests.kinds;
    Ok(Json(TenantDigestsBody {
        users: kind_digest(users),
        groups: kind_digest(groups),
        memberships: kind_digest(memberships),
        watermark: digests.watermark,
    }))
}

async fn digests(
    State(state): State<AppState>,
    ApiPath((tenant_id, kind)): ApiPath<(String, String)>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<DigestsBody>, ApiError> {
    checked_tenant_id(&tenant_id)?;
    let kind = tenant_scoped_kind("GET /v1/tenants/{id}/digests", &kind)?;
    let params = parse_digest_params(&pairs, kind)?;
    let digests = state
        .monolith
        .digests(&tenant_id, kind, &params.range, params.buckets)
        .await?;
    Ok(Json(DigestsBody {
        ranges: digests
            .buckets
            .into_iter()
            .map(|bucket| DigestRangeBody {
                until: bucket.until.map(|key| key.to_string()),
                count: bucket.digest.count,
                digest: bucket.digest.sum_hex(),
            })
            .collect(),
        watermark: digests.watermark,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_bounds() {
        let params = parse_page_params(&[], Kind::USER).expect("defaults");
        assert_eq!(params.limit, DEFAULT_PAGE_LIMIT);
        assert_eq!(params.after, None);
        for bad in ["0", "10001", "abc", "-1", ""] {
            let error = parse_page_params(&pairs(&[("limit", bad)]), Kind::USER)
                .expect_err("bad limit must fail");
            assert!(error.to_string().contains("`limit`"), "{error}");
        }
        let params = parse_page_params(&pairs(&[("limit", "10000")]), Kind::USER).expect("max");
        assert_eq!(params.limit, 10_000);
    }

    #[test]
    fn names_bad_parameters() {
        let error = parse_page_params(&pairs(&[("offset", "5")]), Kind::USER).expect_err("unknown");
        assert!(error.to_string().contains("`offset`"));
        let error = parse_page_params(&pairs(&[("after", "g1")]), Kind::MEMBERSHIP)
            .expect_err("membership cursor needs a colon");
        assert!(error.to_string().contains("`after`"));
        let error = parse_page_params(&pairs(&[("limit", "1"), ("limit", "2")]), Kind::USER)
            .expect_err("repeated");
        assert!(error.to_string().contains("more than once"));
        let params = parse_page_params(&pairs(&[("after", "g:u")]), Kind::MEMBERSHIP).expect("ok");
        assert_eq!(params.after, Some(EntityKey::pair("g", "u")));
    }

    #[test]
    fn integral_numbers_are_integers() {
        // JSON Schema's `integer` (the contract's type of `limit` and
        // `buckets`) is any number with a zero fractional part.
        for (text, limit) in [("1922.0", 1922), ("1.922e3", 1922), ("10000.00", 10_000)] {
            let params =
                parse_page_params(&pairs(&[("limit", text)]), Kind::USER).expect("integral");
            assert_eq!(params.limit, limit, "{text}");
        }
        for bad in ["1922.5", "1e5", "NaN", "inf", "-1.0"] {
            let error = parse_page_params(&pairs(&[("limit", bad)]), Kind::USER)
                .expect_err("not an integer in range");
            assert!(error.to_string().contains("`limit`"), "{error}");
        }
        let params = parse_digest_params(&pairs(&[("buckets", "16.0")]), Kind::USER)
            .expect("integral buckets");
        assert_eq!(params.buckets, 16);
    }

    #[test]
    fn digest_parameters_are_checked_by_name() {
        let params = parse_digest_params(
            &pairs(&[("after", "g:u"), ("until", "h:v"), ("buckets", "16")]),
            Kind::MEMBERSHIP,
        )
        .expect("ok");
        assert_eq!(params.range.after, Some(EntityKey::pair("g", "u")));
        assert_eq!(params.range.until, Some(EntityKey::pair("h", "v")));
        assert_eq!(params.buckets, 16);
        assert_eq!(
            parse_digest_params(&[], Kind::USER)
                .expect("defaults")
                .buckets,
            1
        );
        for (bad, named) in [
            (pairs(&[("until", "g")]), "`until`"),
            (pairs(&[("buckets", "x")]), "`buckets`"),
            (pairs(&[("limit", "5")]), "`limit`"),
            (
                pairs(&[("after", "a:1"), ("after", "b:2")]),
                "more than once",
            ),
        ] {
            let error = parse_digest_params(&bad, Kind::MEMBERSHIP).expect_err("must fail");
            assert!(error.to_string().contains(named), "{error}");
        }
    }
}
