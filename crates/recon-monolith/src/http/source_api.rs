//! The Source API read routes (contract: `proto/source-api.openapi.json`),
//! built from the schema (`<scopes>` is the scope kind's plural, `{id}` a
//! scope value, `<kind>` a scoped kind's plural):
//!
//! * `GET /v1/<scopes>?after=<id>&limit=<n>`
//! * `GET /v1/<scopes>/{id}/<kind>?after=<cursor>&limit=<n>` (a cursor is
//!   the key's parts joined by `:`, e.g. `group_id:user_id`)
//! * `GET /v1/<scopes>/{id}/counts`
//! * `GET /v1/<scopes>/{id}/digests/<kind>?after=&until=&buckets=` (not
//!   under `.../<kind>/`, where a key `digests` would clash)
//! * `GET /v1/<scopes>/{id}/digests` (each kind whole)
//! * `GET /v1/digests` (every scope value's kinds whole)
//! * `POST /v1/<scopes>/{id}/pages/<kind>` (a page within many key ranges,
//!   given in the JSON body)
//! * `GET /v1/capabilities`
//!
//! Query parameters a route does not take are refused (400), so a client's
//! typo does not silently read the wrong thing.

use super::integer::u32_of_text;
use super::json::{KindDigestJson, PageJson, PerKindJson};
use super::wire::{CapabilitiesBody, DigestRangeBody, DigestsBody, PageWithinBody};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState, json_response};
use crate::error::Error;
use crate::model::{KindPlan, Model};
use crate::read::{DEFAULT_PAGE_LIMIT, MAX_PAGE_RANGES, validate_limit};
use crate::rows::{KeySpan, cursor_of};
use crate::write::check::check_scope;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

type Pairs = Vec<(String, String)>;

/// The read routes of `model`'s schema.
pub(crate) fn routes(model: &Model) -> Router<AppState> {
    let scopes = format!("/v1/{}", model.scope().def.plural);
    let scope = format!("{scopes}/{{{}_id}}", model.scope().name());
    let mut router = Router::new()
        .route(&scopes, get(list_scope_rows))
        .route(&format!("{scope}/counts"), get(counts))
        .route(&format!("{scope}/digests"), get(scope_digests))
        .route(&format!("{scope}/digests/{{kind}}"), get(digests))
        .route(&format!("{scope}/pages/{{kind}}"), post(page_within))
        .route("/v1/capabilities", get(capabilities))
        .route("/v1/digests", get(all_scope_digests));
    for kind in model.scoped_kinds() {
        let index = kind.index;
        router = router.route(
            &format!("{scope}/{}", kind.def.plural),
            get(
                move |State(state): State<AppState>,
                      ApiPath(scope): ApiPath<String>,
                      ApiQuery(pairs): ApiQuery<Pairs>| async move {
                    list_scoped_rows(state, index, scope, pairs).await
                },
            ),
        );
    }
    router
}

/// The parsed `after` and `limit` parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct PageParams {
    /// The key to start after, if any.
    pub after: Option<Vec<String>>,
    /// The page size.
    pub limit: u32,
}

/// Parses a page request's query parameters for `kind`. Errors name the
/// parameter: unknown or repeated parameters, a malformed `after`, a `limit`
/// that is not an integer in `1..=10000`.
pub fn parse_page_params(pairs: &[(String, String)], kind: &KindPlan) -> Result<PageParams, Error> {
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
        Some(text) => Some(kind.parse_cursor(text).map_err(|invalid| {
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

async fn list_scope_rows(
    State(state): State<AppState>,
    ApiQuery(pairs): ApiQuery<Pairs>,
) -> Result<Response, ApiError> {
    let monolith = &state.monolith;
    let kind = monolith.model().scope();
    let params = parse_page_params(&pairs, kind)?;
    let page = monolith
        .page(
            kind.name(),
            None,
            params.after.as_deref(),
            params.limit,
            &[],
        )
        .await?;
    json_response(&PageJson { kind, page: &page })
}

async fn list_scoped_rows(
    state: AppState,
    index: usize,
    scope: String,
    pairs: Pairs,
) -> Result<Response, ApiError> {
    let monolith = &state.monolith;
    check_scope(monolith.model(), &scope)?;
    let kind = monolith.model().kind_at(index);
    let params = parse_page_params(&pairs, kind)?;
    let page = monolith
        .page(
            kind.name(),
            Some(&scope),
            params.after.as_deref(),
            params.limit,
            &[],
        )
        .await?;
    json_response(&PageJson { kind, page: &page })
}

async fn counts(
    State(state): State<AppState>,
    ApiPath(scope): ApiPath<String>,
    ApiQuery(pairs): ApiQuery<Pairs>,
) -> Result<Response, ApiError> {
    let monolith = &state.monolith;
    check_scope(monolith.model(), &scope)?;
    no_query_parameters(&pairs, "counts take no parameters")?;
    let counts = monolith.scope_counts(&scope).await?;
    json_response(&PerKindJson {
        model: monolith.model(),
        scope: None,
        values: counts.counts,
        watermark: Some(counts.watermark),
    })
}

async fn capabilities(
    State(state): State<AppState>,
    ApiQuery(pairs): ApiQuery<Pairs>,
) -> Result<Json<CapabilitiesBody>, ApiError> {
    no_query_parameters(&pairs, "capabilities take no parameters")?;
    Ok(Json(CapabilitiesBody {
        digests: state.monolith.offers_digests(),
        digest_definition: recon_core::digest::DEFINITION.to_owned(),
        max_digest_buckets: crate::digest::MAX_BUCKETS,
        max_page_ranges: MAX_PAGE_RANGES,
        all_tenant_digests: state.monolith.offers_digests(),
    }))
}

/// `GET /v1/digests`: `{"<scopes>": [{"<scope key>": …, "<kind>": …}], "watermark"}`.
struct AllDigestsJson<'a> {
    model: &'a Model,
    scopes: Vec<PerKindJson<'a, KindDigestJson>>,
    watermark: recon_core::Version,
}

impl Serialize for AllDigestsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry(&self.model.scope().def.plural, &self.scopes)?;
        map.serialize_entry("watermark", &self.watermark)?;
        map.end()
    }
}

async fn all_scope_digests(
    State(state): State<AppState>,
    ApiQuery(pairs): ApiQuery<Pairs>,
) -> Result<Response, ApiError> {
    no_query_parameters(&pairs, "every scope's digests take no parameters")?;
    let model = state.monolith.model();
    let digests = state.monolith.all_scope_digests().await?;
    let scopes = digests
        .scopes
        .iter()
        .map(|(scope, kinds)| PerKindJson {
            model,
            scope: Some(scope.as_str()),
            values: kinds.iter().map(KindDigestJson::of).collect(),
            watermark: None,
        })
        .collect();
    json_response(&AllDigestsJson {
        model,
        scopes,
        watermark: digests.watermark,
    })
}

/// The scoped kind a `/digests/{kind}` or `/pages/{kind}` path names
/// (`method` and `segment` name the route in the 404).
fn scoped_kind<'a>(
    model: &'a Model,
    method: &str,
    segment: &str,
    plural: &str,
) -> Result<&'a KindPlan, ApiError> {
    model
        .scoped_kinds()
        .find(|kind| kind.def.plural == plural)
        .ok_or_else(|| {
            let scopes = &model.scope().def.plural;
            Error::NotFound(format!(
                "route {method} /v1/{scopes}/{{id}}/{segment}/{plural}"
            ))
            .into()
        })
}

/// The parsed body of a multi-range page request.
#[derive(Debug, PartialEq, Eq)]
pub struct PageWithinParams {
    /// The cursor.
    pub after: Option<Vec<String>>,
    /// The page size.
    pub limit: u32,
    /// The ranges.
    pub ranges: Vec<KeySpan>,
}

/// Parses a multi-range page request's body for `kind`; errors name the
/// field (order and overlap of the ranges are checked by the read).
pub fn parse_page_within(body: PageWithinBody, kind: &KindPlan) -> Result<PageWithinParams, Error> {
    let key = |field: String, text: Option<String>| -> Result<Option<Vec<String>>, Error> {
        text.map(|text| {
            kind.parse_cursor(&text)
                .map_err(|invalid| Error::BadRequest(format!("invalid `{field}`: {invalid}")))
        })
        .transpose()
    };
    let limit = body.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    validate_limit(limit)?;
    let mut ranges = Vec::with_capacity(body.ranges.len());
    for (index, range) in body.ranges.into_iter().enumerate() {
        ranges.push(KeySpan {
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
    ApiPath((scope, plural)): ApiPath<(String, String)>,
    ApiQuery(pairs): ApiQuery<Pairs>,
    ApiJson(body): ApiJson<PageWithinBody>,
) -> Result<Response, ApiError> {
    let monolith = &state.monolith;
    check_scope(monolith.model(), &scope)?;
    let kind = scoped_kind(monolith.model(), "POST", "pages", &plural)?;
    no_query_parameters(
        &pairs,
        "a multi-range page takes its parameters in the body",
    )?;
    let params = parse_page_within(body, kind)?;
    let page = monolith
        .page(
            kind.name(),
            Some(&scope),
            params.after.as_deref(),
            params.limit,
            &params.ranges,
        )
        .await?;
    json_response(&PageJson { kind, page: &page })
}

/// The parsed parameters of a digest request.
#[derive(Debug, PartialEq, Eq)]
pub struct DigestParams {
    /// The range to cover.
    pub span: KeySpan,
    /// Most ranges wanted.
    pub buckets: u32,
}

/// Parses a digest request's query parameters (`after`, `until`,
/// `buckets`, each at most once) for `kind`; errors name the parameter.
pub fn parse_digest_params(
    pairs: &[(String, String)],
    kind: &KindPlan,
) -> Result<DigestParams, Error> {
    let mut span = KeySpan::all();
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
            kind.parse_cursor(value).map_err(|invalid| {
                Error::BadRequest(format!("invalid query parameter `{name}`: {invalid}"))
            })
        };
        match name.as_str() {
            "after" => span.after = Some(key()?),
            "until" => span.until = Some(key()?),
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
        span,
        buckets: buckets.unwrap_or(1),
    })
}

async fn scope_digests(
    State(state): State<AppState>,
    ApiPath(scope): ApiPath<String>,
    ApiQuery(pairs): ApiQuery<Pairs>,
) -> Result<Response, ApiError> {
    let monolith = &state.monolith;
    check_scope(monolith.model(), &scope)?;
    no_query_parameters(&pairs, "a scope's digests take no parameters")?;
    let digests = monolith.scope_digests(&scope).await?;
    json_response(&PerKindJson {
        model: monolith.model(),
        scope: None,
        values: digests.kinds.iter().map(KindDigestJson::of).collect(),
        watermark: Some(digests.watermark),
    })
}

async fn digests(
    State(state): State<AppState>,
    ApiPath((scope, plural)): ApiPath<(String, String)>,
    ApiQuery(pairs): ApiQuery<Pairs>,
) -> Result<Json<DigestsBody>, ApiError> {
    let monolith = &state.monolith;
    check_scope(monolith.model(), &scope)?;
    let kind = scoped_kind(monolith.model(), "GET", "digests", &plural)?;
    let params = parse_digest_params(&pairs, kind)?;
    let digests = monolith
        .span_digests(&scope, kind.name(), &params.span, params.buckets)
        .await?;
    Ok(Json(DigestsBody {
        ranges: digests
            .buckets
            .into_iter()
            .map(|bucket| DigestRangeBody {
                until: bucket.until.as_deref().map(cursor_of),
                count: bucket.digest.count,
                digest: bucket.digest.sum_hex(),
            })
            .collect(),
        watermark: digests.watermark,
    }))
}

#[cfg(test)]
mod tests;
