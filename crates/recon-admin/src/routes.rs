//! The routes and their handlers.

use crate::AdminState;
use crate::auth::authorize;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use recon_core::PausePolicy;
use recon_core::ports::EventSink;
use recon_engine::cluster::{AbortRequest, RunRequest, now_unix_ms};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use tracing::warn;

/// The status page: static HTML and script, rendering `/cluster`.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// The admin API's routes over `state`; the mutating ones (`POST`) pass
/// the state's [`MutationPolicy`](crate::MutationPolicy) first.
pub fn router(state: AdminState) -> Router {
    let mutating = Router::new()
        .route("/consumer/pause", post(pause))
        .route("/consumer/resume", post(resume))
        .route("/reconcile", post(request_reconcile))
        .route("/runs/{run_id}/abort", post(abort_run))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/", get(|| async { Html(STATUS_PAGE) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .route("/metrics", get(metrics))
        .route("/consumer", get(consumer_status))
        .route("/cluster", get(cluster_status))
        .route("/runs", get(recent_runs))
        .route("/runs/{run_id}", get(run_by_id))
        .merge(mutating)
        .with_state(state)
}

async fn readiness(State(state): State<AdminState>) -> Response {
    let consumer = state.gate.status();
    let store = state.store.check_ready().await;
    let ready = store.is_ok()
        && consumer.broker_up
        && consumer.store_unavailable.is_none()
        && consumer.broker_refused.is_none();
    let body = serde_json::json!({
        "ready": ready,
        "store": store.as_ref().map(|_| "ok".to_owned()).unwrap_or_else(|error| error.message.clone()),
        "broker_up": consumer.broker_up,
        "consumer_store_error": consumer.store_unavailable,
        "broker_refused": consumer.broker_refused,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn consumer_status(State(state): State<AdminState>) -> Response {
    Json(state.gate.status()).into_response()
}

/// The owner a pause through the admin API is held under:
/// `?owner=<name>`, or [`ADMIN_PAUSE_OWNER`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PauseOwner {
    owner: Option<String>,
}

/// The owner of pauses asked through the admin API without `?owner=`.
const ADMIN_PAUSE_OWNER: &str = "admin";

/// Longest pause owner name accepted.
const MAX_OWNER_LEN: usize = 200;

impl PauseOwner {
    /// The owner named, or why the name is refused.
    fn name(self) -> Result<String, String> {
        match self.owner {
            None => Ok(ADMIN_PAUSE_OWNER.to_owned()),
            Some(owner) if owner.trim().is_empty() || owner.len() > MAX_OWNER_LEN => Err(format!(
                "owner must be 1 to {MAX_OWNER_LEN} characters, not blank"
            )),
            Some(owner) => Ok(owner),
        }
    }
}

async fn pause(State(state): State<AdminState>, Query(owner): Query<PauseOwner>) -> Response {
    let owner = match owner.name() {
        Ok(owner) => owner,
        Err(refusal) => return (StatusCode::BAD_REQUEST, refusal).into_response(),
    };
    match state.gate.pause(&owner).await {
        Ok(()) => Json(state.gate.status()).into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    }
}

async fn resume(State(state): State<AdminState>, Query(owner): Query<PauseOwner>) -> Response {
    let owner = match owner.name() {
        Ok(owner) => owner,
        Err(refusal) => return (StatusCode::BAD_REQUEST, refusal).into_response(),
    };
    match state.gate.resume(&owner).await {
        Ok(()) => Json(state.gate.status()).into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ReconcileBody {
    tenants: Vec<String>,
    dry_run: bool,
    allow_mass_delete: bool,
    /// Must be `true` with `allow_mass_delete`: overriding the delete guard
    /// over HTTP is never a default or a typo.
    confirm_mass_delete: bool,
    /// `"always"` (the default) or `"never"`: whether consumers pause.
    pause: PausePolicy,
}

async fn request_reconcile(
    State(state): State<AdminState>,
    body: Option<Json<ReconcileBody>>,
) -> Response {
    let body = body.map(|Json(body)| body).unwrap_or_default();
    if body.allow_mass_delete && !body.confirm_mass_delete {
        let refusal = "allow_mass_delete overrides the delete guard: send \"confirm_mass_delete\": true with it";
        return (StatusCode::BAD_REQUEST, refusal).into_response();
    }
    if let Some(error) = body
        .tenants
        .iter()
        .find_map(|tenant| recon_core::validate_tenant_id(tenant).err())
    {
        return (StatusCode::BAD_REQUEST, format!("tenants: {error}")).into_response();
    }
    let Some(coordinator) = state.coordinator.get() else {
        return not_connected();
    };
    let request = RunRequest {
        requested_by: format!("admin API of {}", state.member_id),
        requested_unix_ms: now_unix_ms(),
        tenants: body.tenants,
        dry_run: body.dry_run,
        allow_mass_delete: body.allow_mass_delete,
        pause: body.pause,
        run_id: Some(RunRequest::new_run_id(now_unix_ms(), rand::random())),
    };
    let pending = match coordinator.request_run(&request).await {
        Ok(pending) => pending,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    };
    // Say whether it waits behind a run in progress and was merged into an
    // earlier request; best effort: the request itself is recorded.
    let queued_behind = match coordinator.current_run().await {
        Ok(run) => run.map(|run| run.run_id),
        Err(_) => None,
    };
    let merged = pending != request;
    let mut body = serde_json::to_value(&pending).unwrap_or_default();
    if let Some(fields) = body.as_object_mut() {
        fields.insert("merged".into(), merged.into());
        fields.insert("queued_behind".into(), queued_behind.into());
    }
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AbortBody {
    reason: String,
}

/// `POST /runs/{id}/abort`: asks the leader to end the run in progress with
/// an aborted barrier saying who asked and why.
async fn abort_run(
    State(state): State<AdminState>,
    Path(run_id): Path<String>,
    body: Option<Json<AbortBody>>,
) -> Response {
    let Some(coordinator) = state.coordinator.get() else {
        return not_connected();
    };
    let current = match coordinator.current_run().await {
        Ok(current) => current.map(|run| run.run_id),
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    };
    if current.as_deref() != Some(run_id.as_str()) {
        let message = format!(
            "run {run_id} is not in progress (current: {})",
            current.as_deref().unwrap_or("none")
        );
        return (StatusCode::CONFLICT, message).into_response();
    }
    let reason = body.map(|Json(body)| body.reason).unwrap_or_default();
    let abort = AbortRequest {
        requested_by: format!("admin API of {}", state.member_id),
        reason: if reason.is_empty() {
            "no reason given".to_owned()
        } else {
            reason
        },
        requested_unix_ms: now_unix_ms(),
    };
    match coordinator.request_abort(&run_id, &abort).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "run_id": run_id, "abort": abort })),
        )
            .into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    }
}

/// `GET /runs`: the last finished runs from the store's history, newest
/// first (without their units), and the run in progress if any.
async fn recent_runs(State(state): State<AdminState>) -> Response {
    let finished = match state.store.recent_runs(RUNS_LISTED).await {
        Ok(finished) => finished,
        Err(error) => {
            let reason = format!(
                "read the run history: {}",
                recon_core::ports::error_chain(&error)
            );
            return (StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
        }
    };
    // The run in progress is the cluster's; the history answers without it.
    let current = match state.coordinator.get() {
        Some(coordinator) => match coordinator.current_run().await {
            Ok(current) => current,
            Err(error) => {
                warn!(error = %error, "GET /runs: could not read the run in progress");
                None
            }
        },
        None => None,
    };
    Json(serde_json::json!({ "in_progress": current, "finished": finished })).into_response()
}

/// How many finished runs `GET /runs` lists.
const RUNS_LISTED: usize = 50;

/// `GET /runs/{id}`: a finished run's record from the store's history (with
/// every unit), else the run's state while in progress, else its barrier if
/// the cluster still has it but the history does not (404 otherwise).
async fn run_by_id(State(state): State<AdminState>, Path(run_id): Path<String>) -> Response {
    match state.store.run_record(&run_id).await {
        Ok(Some(record)) => return Json(serde_json::json!({ "finished": record })).into_response(),
        Ok(None) => {}
        Err(error) => {
            let reason = format!(
                "read the run history: {}",
                recon_core::ports::error_chain(&error)
            );
            return (StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
        }
    }
    let Some(coordinator) = state.coordinator.get() else {
        return not_connected();
    };
    match coordinator.current_run().await {
        Ok(Some(run)) if run.run_id == run_id => {
            return Json(serde_json::json!({ "in_progress": run })).into_response();
        }
        Ok(_) => {}
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    }
    match coordinator.barrier(&run_id).await {
        Ok(Some(barrier)) => Json(serde_json::json!({ "barrier": barrier })).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no run {run_id}")).into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    }
}

/// The answer while this replica is not in the cluster (coordinator
/// unreachable).
fn not_connected() -> Response {
    let reason =
        "not connected to the cluster (coordinator unreachable); consuming on, reconnecting";
    (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
}

async fn cluster_status(State(state): State<AdminState>) -> Response {
    let Some(coordinator) = state.coordinator.get() else {
        return not_connected();
    };
    let status = match recon_engine::cluster::cluster_status(coordinator.as_ref()).await {
        Ok(status) => status,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    };
    let counters = state.counters.as_ref().map(|counters| {
        serde_json::json!({
            "units_completed": counters.units_completed.load(Ordering::SeqCst),
            "units_fenced": counters.units_fenced.load(Ordering::SeqCst),
            "runs_led": counters.runs_led.load(Ordering::SeqCst),
        })
    });
    Json(serde_json::json!({
        "member": state.member_id,
        "status": status,
        "counters": counters,
        "trace_link": state.trace_link,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MutationPolicy;
    use prometheus_client::registry::Registry;
    use recon_engine::cluster::CoordinatorSlot;
    use recon_kafka::{ConsumerMetrics, ConsumerSettings, KafkaConfig, ReplicaConsumer};
    use recon_store::{MigrationOptions, Store};
    use std::sync::Arc;

    /// The admin API of a replica with a fresh SQLite store, a consumer that
    /// never runs and no cluster session, served on a free loopback port.
    async fn serve(
        mutations: MutationPolicy,
    ) -> Result<(String, tempfile::TempDir), Box<dyn std::error::Error>> {
        let directory = tempfile::tempdir()?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            directory.path().join("replica.db").display()
        );
        Store::migrate(&url, MigrationOptions::default()).await?;
        let store = Store::connect(&url).await?;
        let mut registry = Registry::default();
        let metrics = ConsumerMetrics::register(&mut registry);
        let (_consumer, gate) = ReplicaConsumer::new(
            &KafkaConfig::new("127.0.0.1:1"),
            ConsumerSettings::new("admin-tests"),
            Arc::new(store.clone()),
            metrics,
        )?;
        let state = AdminState {
            store,
            gate,
            registry: Arc::new(registry),
            member_id: "r1".to_owned(),
            coordinator: CoordinatorSlot::default(),
            counters: None,
            trace_link: None,
            mutations,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        Ok((base, directory))
    }

    #[tokio::test]
    async fn the_read_routes_answer_without_a_process_or_a_cluster()
    -> Result<(), Box<dyn std::error::Error>> {
        let (base, _store) = serve(MutationPolicy::Loopback).await?;
        let http = reqwest::Client::new();
        let health = http.get(format!("{base}/healthz")).send().await?;
        assert_eq!(health.status(), 200);
        let page = http.get(format!("{base}/")).send().await?.text().await?;
        assert!(page.contains("<html"), "{page}");
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        assert!(metrics.contains("recon_consumer"), "{metrics}");
        let cluster = http.get(format!("{base}/cluster")).send().await?;
        assert_eq!(cluster.status(), 503);
        assert!(
            cluster
                .text()
                .await?
                .contains("not connected to the cluster")
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_mutating_route_needs_the_token_or_a_loopback_port()
    -> Result<(), Box<dyn std::error::Error>> {
        let http = reqwest::Client::new();
        let (refused, _store) = serve(MutationPolicy::Refused).await?;
        let answer = http.post(format!("{refused}/reconcile")).send().await?;
        assert_eq!(answer.status(), 403);
        let (guarded, _store) = serve(MutationPolicy::new(
            Some("s3cret".to_owned()),
            "0.0.0.0:9464".parse()?,
        ))
        .await?;
        let url = format!("{guarded}/reconcile");
        let missing = http.post(&url).send().await?;
        assert_eq!(missing.status(), 401);
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        let wrong = http.post(&url).bearer_auth("s3cret!").send().await?;
        assert_eq!(wrong.status(), 401);
        // The right token passes; with no cluster session the request
        // cannot be recorded.
        let right = http.post(&url).bearer_auth("s3cret").send().await?;
        assert_eq!(right.status(), 503);
        Ok(())
    }
}
