//! A fault-injecting HTTP proxy in front of a real Source API (a monolith),
//! for tests of the source client and of the engine.
//!
//! [`FaultySource::start`] listens on `127.0.0.1:0` and forwards every
//! request to the upstream base URL unchanged, until a [`Fault`] is set with
//! [`FaultySource::set_fault`]; faults can be changed while requests run.
//! Faults that name a `page` count the requests whose path and query contain
//! `path_contains`, from 0, since the fault was set — retries are requests
//! too, so the retry of request `page` is request `page + 1`.
//!
//! The proxy counts requests per path ([`FaultySource::requests`]), keeps
//! their arrival times ([`FaultySource::arrival_times`]) and lets a test
//! await a count ([`FaultySource::wait_for_requests`]) instead of sleeping.

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod rewrite;

/// What the proxy does to the requests it forwards.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Forward everything unchanged.
    None,
    /// Answer matching requests number `page .. page + times` with 500 and
    /// a JSON error body, without asking upstream.
    ServerErrorAtPage {
        /// Substring of the path and query that selects requests.
        path_contains: String,
        /// Index of the first failing matching request.
        page: usize,
        /// How many matching requests fail in a row.
        times: usize,
    },
    /// Hold every matching request for `delay` before forwarding it (to
    /// trigger client timeouts).
    Delay {
        /// Substring of the path and query that selects requests.
        path_contains: String,
        /// How long to hold each one.
        delay: Duration,
    },
    /// For matching requests number `page .. page + times`: announce the
    /// full `Content-Length`, send the first half of the body, then abort
    /// the connection (a transport failure the client may retry).
    TruncatedBody {
        /// Substring of the path and query that selects requests.
        path_contains: String,
        /// Index of the first truncated matching request.
        page: usize,
        /// How many matching requests are truncated in a row.
        times: usize,
    },
    /// Replace the body of matching request number `page` with its first
    /// half, correctly framed: well-delivered JSON that does not parse.
    MalformedJson {
        /// Substring of the path and query that selects requests.
        path_contains: String,
        /// Index of the affected matching request.
        page: usize,
    },
    /// `GET /v1/tenants` answers `{"items": [], "next_after": null}` with
    /// the upstream's watermark: a source that seems to have lost every
    /// tenant.
    EmptyTenantList,
    /// Swap the first two items of matching request number `page`'s page.
    KeysBackwards {
        /// Substring of the path and query that selects requests.
        path_contains: String,
        /// Index of the affected matching request.
        page: usize,
    },
    /// Matching request number `page` (at least 1) answers with the last
    /// item of the previous matching request's page put first; its own last
    /// item is dropped and `next_after` follows, so the size and cursor look
    /// right and only the repeated key is wrong.
    DuplicateKeyAcrossPages {
        /// Substring of the path and query that selects requests.
        path_contains: String,
        /// Index of the affected matching request.
        page: usize,
    },
    /// Drop about `share` (0..=1) of the items of every matching page,
    /// chosen by a hash of the key (the same items on every read). The last
    /// item of a page that has a `next_after` is kept, so the cursor stays
    /// consistent: a source that silently lost part of a tenant.
    DropItems {
        /// Substring of the path and query that selects requests.
        path_contains: String,
        /// Share of items to drop.
        share: f64,
    },
    /// Answer everything with 503, as a source that is down.
    Stopped,
    /// `GET /v1/capabilities` names this digest definition instead of the
    /// upstream's: a source whose digests follow another definition.
    DigestDefinition(String),
}

impl Fault {
    fn path_contains(&self) -> Option<&str> {
        match self {
            Fault::ServerErrorAtPage { path_contains, .. }
            | Fault::Delay { path_contains, .. }
            | Fault::TruncatedBody { path_contains, .. }
            | Fault::MalformedJson { path_contains, .. }
            | Fault::KeysBackwards { path_contains, .. }
            | Fault::DuplicateKeyAcrossPages { path_contains, .. }
            | Fault::DropItems { path_contains, .. } => Some(path_contains),
            Fault::None | Fault::EmptyTenantList | Fault::Stopped | Fault::DigestDefinition(_) => {
                None
            }
        }
    }
}

/// The fault in force and what it needs to remember.
struct Plan {
    fault: Fault,
    /// Matching requests seen since the fault was set.
    matched: usize,
    /// The last item of the previous matching page (for duplicates).
    previous_last_item: Option<Value>,
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    plan: Mutex<Plan>,
    counts: Mutex<BTreeMap<String, usize>>,
    /// When each request arrived, in order.
    arrivals: Mutex<Vec<Instant>>,
    total: watch::Sender<usize>,
}

/// What to do with one request, decided when it arrives.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Forward,
    Delay(Duration),
    ServerError,
    Stopped,
    Truncate,
    Malformed,
    Backwards,
    Duplicate,
    Drop(f64),
    EmptyTenants,
    Definition,
}

/// A running fault-injecting proxy; stops when dropped.
pub struct FaultySource {
    base_url: String,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

impl FaultySource {
    /// Starts a proxy in front of `upstream_base_url` (e.g. a monolith's
    /// `http://127.0.0.1:<port>`), forwarding everything unchanged.
    pub async fn start(upstream_base_url: &str) -> anyhow::Result<FaultySource> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the faulty source proxy")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(ProxyState {
            upstream: upstream_base_url.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            plan: Mutex::new(Plan {
                fault: Fault::None,
                matched: 0,
                previous_last_item: None,
            }),
            counts: Mutex::new(BTreeMap::new()),
            arrivals: Mutex::new(Vec::new()),
            total: watch::Sender::new(0),
        });
        let router = Router::new().fallback(proxy).with_state(state.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("faulty source proxy stopped: {error}");
            }
        });
        Ok(FaultySource {
            base_url,
            state,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`: the base URL to give a client.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Puts `fault` in force from the next request on, restarting its
    /// request count.
    pub fn set_fault(&self, fault: Fault) {
        let mut plan = lock(&self.state.plan);
        *plan = Plan {
            fault,
            matched: 0,
            previous_last_item: None,
        };
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        lock(&self.state.plan).fault.clone()
    }

    /// Requests received (faulted ones included) whose path contains
    /// `path_contains`; `""` counts all.
    pub fn requests(&self, path_contains: &str) -> usize {
        count_matching(&lock(&self.state.counts), path_contains)
    }

    /// Requests received per path (without query).
    pub fn requests_per_path(&self) -> BTreeMap<String, usize> {
        lock(&self.state.counts).clone()
    }

    /// When each request (of any path) arrived, in order of arrival.
    pub fn arrival_times(&self) -> Vec<Instant> {
        lock(&self.state.arrivals).clone()
    }

    /// Forgets the request counts and arrival times.
    pub fn reset_counts(&self) {
        lock(&self.state.counts).clear();
        lock(&self.state.arrivals).clear();
    }

    /// Waits until at least `count` requests whose path contains
    /// `path_contains` arrived; fails after `deadline`.
    pub async fn wait_for_requests(
        &self,
        path_contains: &str,
        count: usize,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let mut total = self.state.total.subscribe();
        let reached = async {
            while self.requests(path_contains) < count {
                if total.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(deadline, reached).await.is_err()
            || self.requests(path_contains) < count
        {
            bail!(
                "only {} of {count} requests to {path_contains:?} within {deadline:?}",
                self.requests(path_contains)
            );
        }
        Ok(())
    }
}

impl Drop for FaultySource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn count_matching(counts: &BTreeMap<String, usize>, path_contains: &str) -> usize {
    counts
        .iter()
        .filter(|(path, _)| path.contains(path_contains))
        .map(|(_, count)| count)
        .sum()
}

/// Decides the action for a request to `path_and_query` and advances the
/// plan's count.
fn decide(plan: &mut Plan, path: &str, path_and_query: &str) -> Action {
    if matches!(plan.fault, Fault::Stopped) {
        return Action::Stopped;
    }
    if matches!(plan.fault, Fault::DigestDefinition(_)) {
        return if path == "/v1/capabilities" {
            Action::Definition
        } else {
            Action::Forward
        };
    }
    if matches!(plan.fault, Fault::EmptyTenantList) {
        return if path == "/v1/tenants" {
            Action::EmptyTenants
        } else {
            Action::Forward
        };
    }
    let Some(path_contains) = plan.fault.path_contains() else {
        return Action::Forward;
    };
    if !path_and_query.contains(path_contains) {
        return Action::Forward;
    }
    let index = plan.matched;
    plan.matched += 1;
    let within = |page: usize, times: usize| index >= page && index - page < times;
    match plan.fault {
        Fault::ServerErrorAtPage { page, times, .. } if within(page, times) => Action::ServerError,
        Fault::TruncatedBody { page, times, .. } if within(page, times) => Action::Truncate,
        Fault::MalformedJson { page, .. } if index == page => Action::Malformed,
        Fault::KeysBackwards { page, .. } if index == page => Action::Backwards,
        Fault::DuplicateKeyAcrossPages { page, .. } if index == page => Action::Duplicate,
        Fault::Delay { delay, .. } => Action::Delay(delay),
        Fault::DropItems { share, .. } => Action::Drop(share),
        _ => Action::Forward,
    }
}

async fn proxy(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), ToString::to_string);
    lock(&state.arrivals).push(Instant::now());
    *lock(&state.counts).entry(path.clone()).or_default() += 1;
    state.total.send_modify(|total| *total += 1);
    let action = decide(&mut lock(&state.plan), &path, &path_and_query);
    match action {
        Action::Stopped => return error_response(StatusCode::SERVICE_UNAVAILABLE, "stopped"),
        Action::ServerError => {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "injected server error");
        }
        Action::Delay(delay) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let (status, headers, body) = match forward(&state, request, &path_and_query).await {
        Ok(answer) => answer,
        Err(error) => return error_response(StatusCode::BAD_GATEWAY, &format!("{error:#}")),
    };
    let is_page = status == StatusCode::OK && path != "/healthz" && !path.ends_with("/counts");
    let body = if action == Action::Definition {
        let definition = match &lock(&state.plan).fault {
            Fault::DigestDefinition(definition) => definition.clone(),
            _ => String::new(),
        };
        rewrite::rename_digest_definition(body, &definition)
    } else if is_page {
        rewrite::rewrite_page(&state, action, body)
    } else {
        body
    };
    if action == Action::Truncate {
        return truncated(status, &headers, body);
    }
    respond(status, &headers, Body::from(body))
}

async fn forward(
    state: &ProxyState,
    request: Request,
    path_and_query: &str,
) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .context("read the request body")?;
    let mut upstream = state
        .client
        .request(parts.method, format!("{}{path_and_query}", state.upstream))
        .body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = parts.headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    let response = upstream
        .send()
        .await
        .context("forward to the upstream source")?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.context("read the upstream body")?;
    Ok((status, headers, body))
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body = json!({ "error": format!("faulty source: {message}") });
    (status, axum::Json(body)).into_response()
}

fn respond(status: StatusCode, headers: &HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for name in [
        header::CONTENT_TYPE,
        header::WWW_AUTHENTICATE,
        header::RETRY_AFTER,
    ] {
        if let Some(value) = headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// Announces the whole body, sends half of it, then fails the stream so
/// that the server aborts the connection mid-body (the pause lets the
/// headers and the first half reach the client first).
fn truncated(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response {
    let full_length = body.len();
    let half = body.slice(..full_length / 2);
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(half) });
    let abort = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(std::io::Error::other("body truncated by the fault plan"))
    });
    let stream = futures::StreamExt::chain(first, abort);
    let mut response = respond(status, headers, Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, full_length.into());
    response
}
