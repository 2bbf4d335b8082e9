//! [`HttpSource`]: the [`Source`] port over the Source API.
//!
//! One call reads one page. Each attempt waits for the shared rate limit,
//! sends `GET` with the bearer token, and reads the body incrementally up
//! to the cap. Transient failures are retried with exponential backoff and
//! jitter (honouring `Retry-After`); the final error carries the kind the
//! engine acts on. Retrying is safe: every request is a read.

use crate::config::{SourceConfig, redact_url};
use crate::digests::{
    Capabilities, decode_all_tenant_digests, decode_digests, decode_tenant_digests,
};
use crate::error::{Error, Result, error_chain, into_port_error};
use crate::metrics::SourceMetrics;
use crate::validate::{PageViolation, decode_page};
use crate::wire::ErrorBody;
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use recon_core::Kind;
use recon_core::ports::{
    AllTenantDigests, DigestRequest, FailureKind, PageRequest, PortError, Source, SourceDigests,
    SourcePage, TenantCounts, TenantDigests,
};
use recon_core::schema::Schema;
use reqwest::header::RETRY_AFTER;
use reqwest::{Response, Url};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tracing::field::Empty;
use tracing::{Span, instrument, warn};

/// Most bytes of an error response kept for its message.
const ERROR_BODY_CAP: usize = 4096;
/// Most characters of a server's error message quoted in an error.
const ERROR_MESSAGE_CHARS: usize = 300;

/// The Source API client. Cheap to clone; clones share the connection pool
/// and the rate limit.
#[derive(Clone)]
pub struct HttpSource {
    client: reqwest::Client,
    base_url: Url,
    token: Option<Arc<str>>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    backoff: ExponentialBuilder,
    max_body_bytes: u64,
    capabilities: Arc<tokio::sync::OnceCell<Capabilities>>,
    metrics: SourceMetrics,
    schema: &'static Schema,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HttpSource")
            .field("base_url", &redact_url(&self.base_url))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// A client for `config` (validated here; the error names the field).
    pub fn new(config: &SourceConfig) -> Result<HttpSource> {
        let base_url = config.validate().map_err(Error::Config)?;
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| Error::Config(format!("build the HTTP client: {error}")))?;
        let limiter = config
            .requests_per_second
            .and_then(NonZeroU32::new)
            .map(|rate| {
                // A burst of one: requests are spaced evenly, never bunched.
                let quota = Quota::per_second(rate).allow_burst(NonZeroU32::MIN);
                Arc::new(RateLimiter::direct(quota))
            });
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.retry_min_backoff)
            .with_max_delay(config.retry_max_backoff)
            .with_max_times(usize::try_from(config.max_retries).unwrap_or(usize::MAX))
            .with_jitter();
        Ok(HttpSource {
            client,
            base_url,
            token: config.bearer_token.as_deref().map(Arc::from),
            limiter,
            backoff,
            max_body_bytes: config.max_body_bytes,
            capabilities: Arc::default(),
            metrics: SourceMetrics::default(),
            schema: Schema::default_schema(),
        })
    }

    /// The same client for a source of `schema` (its paths, pages and
    /// per-kind answers); the default schema unless told.
    pub fn with_schema(mut self, schema: &'static Schema) -> Self {
        self.schema = schema;
        self
    }

    /// The same client, recording its attempts into `metrics` (those the
    /// replica exports).
    pub fn with_metrics(mut self, metrics: SourceMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The base URL, without credentials.
    pub fn base_url(&self) -> String {
        redact_url(&self.base_url)
    }

    /// The URL of `segments` under the base URL, with `query`.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// The URL of a page request.
    fn page_url(&self, request: &PageRequest) -> Url {
        let mut query = Vec::with_capacity(2);
        if let Some(after) = &request.after {
            query.push(("after", after.to_string()));
        }
        query.push(("limit", request.limit.to_string()));
        let scope = self.schema.scope();
        if request.kind.as_str() == scope.name {
            return self.url(&["v1", &scope.plural], &query);
        }
        let segments = [
            "v1",
            &scope.plural,
            &request.tenant_id,
            self.plural(request.kind),
        ];
        self.url(&segments, &query)
    }

    /// A kind's URL segment: its plural in the schema.
    fn plural(&self, kind: Kind) -> &str {
        self.schema
            .kind(kind.as_str())
            .map_or(kind.as_str(), |declared| declared.plural.as_str())
    }

    /// The URL and JSON body of a multi-range page request
    /// (`POST /v1/tenants/{id}/pages/{kind}`).
    fn page_within(&self, request: &PageRequest) -> (Url, Option<Vec<u8>>) {
        let key = |key: &Option<recon_core::EntityKey>| key.as_ref().map(ToString::to_string);
        let ranges: Vec<serde_json::Value> = request
            .within
            .iter()
            .map(
                |range| serde_json::json!({"after": key(&range.after), "until": key(&range.until)}),
            )
            .collect();
        let body = serde_json::json!({
            "after": key(&request.after),
            "limit": request.limit,
            "ranges": ranges,
        });
        let url = self.url(
            &[
                "v1",
                &self.schema.scope().plural,
                &request.tenant_id,
                "pages",
                self.plural(request.kind),
            ],
            &[],
        );
        (url, Some(body.to_string().into_bytes()))
    }

    /// Reads one page (see [`Source::fetch_page`]).
    #[instrument(
        name = "source.fetch_page",
        skip_all,
        fields(
            tenant = %request.tenant_id,
            kind = %request.kind,
            after = %request.after.as_ref().map(ToString::to_string).unwrap_or_default(),
            status = Empty,
            bytes = Empty,
            attempt = Empty,
        )
    )]
    pub async fn fetch(&self, request: &PageRequest) -> Result<SourcePage, PortError> {
        let (url, body) = if request.within.is_empty() || request.kind == self.schema.scope_kind() {
            (self.page_url(request), None)
        } else {
            self.page_within(request)
        };
        let (outcome, attempts) = self
            .with_retries(&url, body.as_deref(), |body| {
                checked(&url, decode_page(self.schema, request, &body))
            })
            .await;
        outcome.map_err(|error| {
            let mut port_error = into_port_error(&error, attempts, self.token.as_deref());
            if request.kind == self.schema.scope_kind() && port_error.kind == FailureKind::NotFound
            {
                // The tenant list has no tenant to miss: a 404 is a wrong URL.
                port_error.kind = FailureKind::Permanent;
            }
            port_error
        })
    }

    /// Reads a tenant's counts (see [`Source::counts`]).
    #[instrument(name = "source.counts", skip_all, fields(tenant = %tenant_id, status = Empty, bytes = Empty, attempt = Empty))]
    pub async fn tenant_counts(&self, tenant_id: &str) -> Result<TenantCounts, PortError> {
        let scopes = &self.schema.scope().plural;
        let url = self.url(&["v1", scopes, tenant_id, "counts"], &[]);
        let (outcome, attempts) = self
            .with_retries(&url, None, |body| {
                counts_of(self.schema, &body).map_err(|source| Error::MalformedJson {
                    url: redact_url(&url),
                    source,
                })
            })
            .await;
        outcome.map_err(|error| into_port_error(&error, attempts, self.token.as_deref()))
    }

    /// What the source offers, asked once (`GET /v1/capabilities`); a
    /// source without that route offers nothing beyond pages and counts.
    pub async fn capabilities(&self) -> Result<Capabilities, PortError> {
        self.capabilities
            .get_or_try_init(|| async {
                let url = self.url(&["v1", "capabilities"], &[]);
                let (outcome, attempts) = self
                    .with_retries(&url, None, |body| {
                        serde_json::from_slice::<Capabilities>(&body).map_err(|source| {
                            Error::MalformedJson {
                                url: redact_url(&url),
                                source,
                            }
                        })
                    })
                    .await;
                let capabilities = match outcome {
                    Err(Error::Status { status: 404, .. }) => Capabilities::default(),
                    outcome => outcome
                        .map_err(|error| into_port_error(&error, attempts, self.token.as_deref()))?,
                };
                if capabilities.digests && !capabilities.comparable_digests() {
                    warn!(
                        source = capabilities.definition(),
                        recon = recon_core::digest::DEFINITION,
                        "the source's digests follow another definition than recon's: they are not used (every range is compared row by row)"
                    );
                }
                Ok(capabilities)
            })
            .await
            .cloned()
    }

    /// Reads range digests (see [`Source::digests`]); `None` when the
    /// source does not offer them. Asks for at most the buckets the source
    /// allows.
    #[instrument(
        name = "source.digests",
        skip_all,
        fields(tenant = %request.tenant_id, kind = %request.kind, buckets = request.buckets, status = Empty, bytes = Empty, attempt = Empty)
    )]
    pub async fn range_digests(
        &self,
        request: &DigestRequest,
    ) -> Result<Option<SourceDigests>, PortError> {
        let capabilities = self.capabilities().await?;
        if !capabilities.comparable_digests() || request.kind == self.schema.scope_kind() {
            return Ok(None);
        }
        let mut request = request.clone();
        request.buckets = request
            .buckets
            .clamp(1, capabilities.max_digest_buckets.max(1));
        let mut query = Vec::with_capacity(3);
        if let Some(after) = &request.range.after {
            query.push(("after", after.to_string()));
        }
        if let Some(until) = &request.range.until {
            query.push(("until", until.to_string()));
        }
        query.push(("buckets", request.buckets.to_string()));
        let url = self.url(
            &[
                "v1",
                &self.schema.scope().plural,
                &request.tenant_id,
                "digests",
                self.plural(request.kind),
            ],
            &query,
        );
        let (outcome, attempts) = self
            .with_retries(&url, None, |body| {
                checked(&url, decode_digests(self.schema, &request, &body))
            })
            .await;
        outcome
            .map(Some)
            .map_err(|error| into_port_error(&error, attempts, self.token.as_deref()))
    }

    /// Reads a tenant's digests, every kind whole (see
    /// [`Source::tenant_digests`]); `None` when the source offers none.
    #[instrument(name = "source.tenant_digests", skip_all, fields(tenant = %tenant_id, status = Empty, bytes = Empty, attempt = Empty))]
    pub async fn whole_tenant_digests(
        &self,
        tenant_id: &str,
    ) -> Result<Option<TenantDigests>, PortError> {
        if !self.capabilities().await?.comparable_digests() {
            return Ok(None);
        }
        let scopes = &self.schema.scope().plural;
        let url = self.url(&["v1", scopes, tenant_id, "digests"], &[]);
        let (outcome, attempts) = self
            .with_retries(&url, None, |body| {
                checked(&url, decode_tenant_digests(self.schema, &body))
            })
            .await;
        outcome
            .map(Some)
            .map_err(|error| into_port_error(&error, attempts, self.token.as_deref()))
    }

    /// Reads every tenant's digests (see [`Source::all_tenant_digests`]);
    /// `None` when the source does not offer them.
    #[instrument(name = "source.all_tenant_digests", skip_all, fields(status = Empty, bytes = Empty, attempt = Empty))]
    pub async fn every_tenant_digests(&self) -> Result<Option<AllTenantDigests>, PortError> {
        let capabilities = self.capabilities().await?;
        if !capabilities.comparable_digests() || !capabilities.all_tenant_digests {
            return Ok(None);
        }
        let url = self.url(&["v1", "digests"], &[]);
        let (outcome, attempts) = self
            .with_retries(&url, None, |body| {
                checked(&url, decode_all_tenant_digests(self.schema, &body))
            })
            .await;
        outcome
            .map(Some)
            .map_err(|error| into_port_error(&error, attempts, self.token.as_deref()))
    }

    /// Runs attempts of `GET url` (`POST` with `json` as the body, when
    /// given: a read whose parameters do not fit a URL) until one succeeds,
    /// a permanent error occurs, or the retries are used up; `decode` turns
    /// the body into the answer (its errors are permanent, never retried).
    /// Returns the outcome and the number of attempts made.
    async fn with_retries<T>(
        &self,
        url: &Url,
        json: Option<&[u8]>,
        decode: impl Fn(Vec<u8>) -> Result<T>,
    ) -> (Result<T>, u32) {
        let attempts = AtomicU32::new(0);
        let attempt = || async {
            let number = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            Span::current().record("attempt", number);
            let body = self.attempt(url, json).await?;
            decode(body)
        };
        let outcome = attempt
            .retry(self.backoff)
            .when(Error::is_transient)
            .adjust(|error, delay| delay.map(|delay| delay.max(retry_after(error))))
            .notify(|error, delay| {
                warn!(
                    error = %error_chain(error),
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "source request failed, retrying"
                );
            })
            .await;
        (outcome, attempts.load(Ordering::Relaxed))
    }

    /// One attempt: rate limit, send, check the status, read the body.
    async fn attempt(&self, url: &Url, json: Option<&[u8]>) -> Result<Vec<u8>> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let mut request = match json {
            None => self.client.get(url.clone()),
            Some(json) => self
                .client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json.to_vec()),
        };
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let started = Instant::now();
        let sent = request.send().await;
        let seconds = started.elapsed().as_secs_f64();
        let status = sent
            .as_ref()
            .ok()
            .map(|response| response.status().as_u16());
        self.metrics.record(url, status, seconds);
        let response = sent.map_err(|error| transport_error(url, error))?;
        let status = response.status();
        Span::current().record("status", status.as_u16());
        if !status.is_success() {
            return Err(status_error(url, response).await);
        }
        let body = read_capped(url, response, self.max_body_bytes).await?;
        Span::current().record("bytes", body.len());
        Ok(body)
    }
}

#[async_trait]
impl Source for HttpSource {
    async fn fetch_page(&self, request: &PageRequest) -> Result<SourcePage, PortError> {
        self.fetch(request).await
    }

    async fn counts(&self, tenant_id: &str) -> Result<TenantCounts, PortError> {
        self.tenant_counts(tenant_id).await
    }

    async fn digests(&self, request: &DigestRequest) -> Result<Option<SourceDigests>, PortError> {
        self.range_digests(request).await
    }

    async fn tenant_digests(&self, tenant_id: &str) -> Result<Option<TenantDigests>, PortError> {
        self.whole_tenant_digests(tenant_id).await
    }

    async fn page_ranges(&self) -> Result<u32, PortError> {
        Ok(self.capabilities().await?.max_page_ranges)
    }

    async fn all_tenant_digests(&self) -> Result<Option<AllTenantDigests>, PortError> {
        self.every_tenant_digests().await
    }
}

/// A decoded answer, or the error naming `url`: malformed JSON, or an
/// answer that breaks the contract.
fn checked<T>(
    url: &Url,
    decoded: std::result::Result<std::result::Result<T, PageViolation>, serde_json::Error>,
) -> Result<T> {
    match decoded {
        Err(source) => Err(Error::MalformedJson {
            url: redact_url(url),
            source,
        }),
        Ok(Err(violation)) => Err(Error::InvalidPage {
            url: redact_url(url),
            violation,
        }),
        Ok(Ok(answer)) => Ok(answer),
    }
}

/// A counts answer: each scoped kind's rows under its plural, and the
/// watermark.
fn counts_of(schema: &Schema, body: &[u8]) -> serde_json::Result<TenantCounts> {
    use serde::de::Error as _;
    let raw: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)?;
    let mut counts = Vec::new();
    for kind in schema.scoped() {
        let value = raw
            .get(&kind.plural)
            .ok_or_else(|| serde_json::Error::custom(format!("missing field `{}`", kind.plural)))?;
        counts.push(serde_json::from_value(value.clone())?);
    }
    let watermark = raw
        .get("watermark")
        .ok_or_else(|| serde_json::Error::custom("missing field `watermark`"))?;
    Ok(TenantCounts {
        counts,
        watermark: serde_json::from_value(watermark.clone())?,
    })
}

/// The wait a 429 or 503 asked for with `Retry-After` (seconds), if any.
fn retry_after(error: &Error) -> Duration {
    match error {
        Error::Status {
            retry_after: Some(wait),
            ..
        } => *wait,
        _ => Duration::ZERO,
    }
}

fn transport_error(url: &Url, error: reqwest::Error) -> Error {
    let problem = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "response body cut short or unreadable"
    } else {
        "request failed"
    };
    Error::Transport {
        url: redact_url(url),
        problem,
        source: error.without_url(),
    }
}

/// The error of a non-success response, quoting the server's message.
async fn status_error(url: &Url, mut response: Response) -> Error {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds.min(300)));
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_CAP {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(ERROR_BODY_CAP);
    let message = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(parsed) => parsed.error,
        Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
    };
    let message = (!message.is_empty()).then(|| {
        message
            .chars()
            .take(ERROR_MESSAGE_CHARS)
            .collect::<String>()
    });
    let message = match (status, message) {
        (401 | 403, Some(text)) => Some(format!("{text} (check the source's bearer_token)")),
        (401 | 403, None) => Some("check the source's bearer_token".to_owned()),
        (_, other) => other,
    };
    Error::Status {
        url: redact_url(url),
        status,
        message,
        retry_after,
    }
}

/// Reads the body chunk by chunk, stopping as soon as it exceeds `cap`.
async fn read_capped(url: &Url, mut response: Response, cap: u64) -> Result<Vec<u8>> {
    let too_large = || Error::BodyTooLarge {
        url: redact_url(url),
        cap,
    };
    let announced = response.content_length();
    if announced.is_some_and(|length| length > cap) {
        return Err(too_large());
    }
    let initial = announced.unwrap_or(0).min(cap).min(1 << 20);
    let mut body = Vec::with_capacity(usize::try_from(initial).unwrap_or(0));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| transport_error(url, error))?
    {
        let length = u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX);
        if length > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
