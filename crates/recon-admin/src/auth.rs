//! Who may call the mutating routes: a bearer token compared in constant
//! time, or anyone on a loopback-only port, or nobody.

use crate::AdminState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// Who may call the admin API's mutating endpoints.
#[derive(Clone)]
pub enum MutationPolicy {
    /// Callers presenting this bearer token.
    Token(Arc<str>),
    /// Anyone who reaches the port: it listens on loopback only.
    Loopback,
    /// Nobody: no token is configured and the port is reachable from
    /// other hosts.
    Refused,
}

impl MutationPolicy {
    /// The policy of an admin port listening on `listen`, with the admin
    /// token if one is set.
    pub fn new(token: Option<String>, listen: SocketAddr) -> Self {
        match token {
            Some(token) => Self::Token(Arc::from(token)),
            None if listen.ip().is_loopback() => Self::Loopback,
            None => Self::Refused,
        }
    }

    /// `None` if `headers` may mutate, else the refusal.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        match self {
            Self::Loopback => None,
            Self::Refused => Some(
                (
                    StatusCode::FORBIDDEN,
                    "mutating admin endpoints are off: the admin port listens beyond loopback and no admin token is set (RECON_ADMIN_TOKEN or RECON_ADMIN_TOKEN_FILE)",
                )
                    .into_response(),
            ),
            Self::Token(token) => {
                let presented = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("Bearer "));
                match presented {
                    Some(presented) if same_secret(presented.as_bytes(), token.as_bytes()) => None,
                    _ => Some(
                        (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Bearer")],
                            "this admin endpoint needs the admin token as a bearer token",
                        )
                            .into_response(),
                    ),
                }
            }
        }
    }
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// Refuses mutating requests that the policy does not allow.
pub(crate) async fn authorize(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    match state.mutations.refusal(request.headers()) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_compared_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3cret!", b"s3cret"));
        assert!(!same_secret(b"S3cret", b"s3cret"));
    }
}
