//! The monolith's HTTP interface (axum): the Source API read side
//! ([`source_api`]), the write routes and the operator routes
//! ([`write_api`]) — both built from the schema the monolith serves —,
//! optional bearer-token auth, and JSON errors.
//!
//! Every error is a JSON object `{"error": "<message naming the problem>"}`
//! with a 4xx/5xx status; nothing a client sends can panic a handler.

mod integer;
mod json;
pub mod source_api;
pub mod wire;
pub mod write_api;

use crate::error::{Error, ErrorKind};
use crate::{Monolith, Result};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument};
use wire::ErrorBody;

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) monolith: Monolith,
}

/// An [`Error`] turned into an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

impl From<recon_core::InvalidInput> for ApiError {
    fn from(error: recon_core::InvalidInput) -> Self {
        ApiError(Error::Invalid(error))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError(Error::BadRequest(format!(
            "invalid request body: {}",
            rejection.body_text()
        )))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError(Error::BadRequest(format!(
            "invalid path: {}",
            rejection.body_text()
        )))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError(Error::BadRequest(format!(
            "invalid query string: {}",
            rejection.body_text()
        )))
    }
}

/// The HTTP status of an error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Transient => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.0.kind();
        if matches!(kind, ErrorKind::Transient | ErrorKind::Internal) {
            error!(error = %recon_core::ports::error_chain(&self.0), "request failed");
        }
        let body = Json(ErrorBody {
            error: self.0.to_string(),
        });
        let mut response = (status_of(kind), body).into_response();
        if kind == ErrorKind::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A `200 OK` with `value` as its JSON body (what `axum::Json` does, for
/// values serialized with the model at hand).
pub(crate) fn json_response<T: serde::Serialize>(value: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value)
        .map_err(|error| Error::Corrupt(format!("cannot serialize a response: {error}")))?;
    let content_type = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    Ok((content_type, body).into_response())
}

/// `axum::Json` with JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub T);

/// `axum::extract::Path` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct ApiPath<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub T);

impl Monolith {
    /// The HTTP router: `/healthz`, the Source API and write routes under
    /// `/v1`, operator routes under `/admin`. With `auth_token` set, every
    /// `/v1` and `/admin` request needs `Authorization: Bearer <token>`.
    pub fn router(&self, auth_token: Option<String>) -> Router {
        let state = AppState {
            monolith: self.clone(),
        };
        let router = Router::new()
            .route("/healthz", get(healthz))
            .merge(source_api::routes(self.model()))
            .merge(write_api::routes(self.model()))
            .fallback(no_route)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(state);
        match auth_token {
            Some(token) => {
                let token: Arc<str> = Arc::from(token);
                router.layer(middleware::from_fn_with_state(token, require_token))
            }
            None => router,
        }
    }

    /// Serves the router on `listener` until `shutdown` is cancelled, then
    /// finishes in-flight requests and returns.
    #[instrument(skip_all, name = "monolith.serve")]
    pub async fn serve(
        &self,
        listener: TcpListener,
        auth_token: Option<String>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        if let Ok(address) = listener.local_addr() {
            info!(%address, auth = auth_token.is_some(), "monolith listening");
        }
        let router = self.router(auth_token);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(Error::Serve)
    }
}

/// Liveness and database reachability.
async fn healthz(State(state): State<AppState>) -> Response {
    match state.monolith.watermark().await {
        Ok(watermark) => {
            Json(serde_json::json!({"status": "ok", "watermark": watermark})).into_response()
        }
        Err(error) => ApiError(error).into_response(),
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError(Error::NotFound(format!("route {method} {}", uri.path())))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let body = Json(ErrorBody {
        error: format!("method {method} is not allowed on {}", uri.path()),
    });
    (StatusCode::METHOD_NOT_ALLOWED, body).into_response()
}

fn is_protected(path: &str) -> bool {
    ["/v1", "/admin"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
}

/// Rejects `/v1` and `/admin` requests without the configured bearer token.
async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    if !is_protected(request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(presented) if constant_time_eq(presented.as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError(Error::Unauthorized).into_response(),
    }
}

/// Compares without an early exit, so timing does not reveal the prefix.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protects_v1_and_admin_only() {
        assert!(is_protected("/v1/tenants"));
        assert!(is_protected("/admin/backups"));
        assert!(is_protected("/v1"));
        assert!(!is_protected("/healthz"));
        assert!(!is_protected("/v10"));
    }

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
