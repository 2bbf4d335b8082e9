//! `recon serve`: a replica. Consumes change events into the replica store
//! and serves the admin API:
//!
//! * `GET /healthz` — the process is alive;
//! * `GET /readyz` — the store answers, a broker connection is up, and the
//!   consumer is not holding a batch the store fails to take (the body says
//!   why not);
//! * `GET /metrics` — Prometheus text format;
//! * `GET /consumer` — pause state, assignment, lag per partition (JSON);
//! * `POST /consumer/pause`, `POST /consumer/resume` — the pause gate;
//! * `POST /reconcile` — asks the cluster for a run (body: optional JSON
//!   `{"tenants": [...], "dry_run": bool, "allow_mass_delete": bool}`); 202
//!   with the pending request, `merged` (it was merged into an earlier
//!   pending one) and `queued_behind` (the run in progress it waits for);
//! * `GET /cluster` — leader, epoch, members, current run, this member's
//!   counters.
//!
//! With `--source-url` the replica takes part in cluster reconciliation
//! (etcd with `--etcd-endpoints`, else as a single in-process member); a
//! replica that starts while a run is in progress starts paused.
//!
//! Every replica also runs the tombstone purge (`--tombstone-retention`,
//! default 7 days, which must exceed the change topic's retention) every
//! `--tombstone-purge-interval`. It is not tied to cluster leadership: the
//! replicas sharing a store claim each interval's purge in the store itself
//! (one conditional update), so exactly one of them purges per interval,
//! with or without etcd.

use crate::cli::{KafkaArgs, ServeArgs};
use anyhow::Context;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use recon_core::ports::EventSink;
use recon_engine::cluster::{Coordinator, MemberCounters, RunRequest};
use recon_kafka::{ConsumerMetrics, ConsumerSettings, KafkaConfig, PauseGate, ReplicaConsumer};
use recon_store::Store;
use serde::Deserialize;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Clone)]
struct AdminState {
    store: Store,
    gate: PauseGate,
    registry: Arc<Registry>,
    coordinator: Arc<dyn Coordinator>,
    counters: Option<Arc<MemberCounters>>,
}

pub async fn run(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let store = Store::connect_with(&args.database_url, args.store.options())
        .await
        .context("open the replica store")?;
    let purge_task = tokio::spawn({
        let store = store.clone();
        let purge = args.tombstone_purge();
        let shutdown = shutdown.clone();
        async move {
            store
                .run_tombstone_purge(purge, shutdown.cancelled_owned())
                .await;
        }
    });
    let kafka = kafka_config(&args.kafka);
    let member_id = super::cluster::member_id(&args.cluster);
    let admin_url = Some(format!("http://{}", args.admin_listen));
    let coordinator =
        super::cluster::coordinator(&args.cluster, &member_id, admin_url, &shutdown).await?;
    let run_in_progress = coordinator
        .current_run()
        .await
        .map_err(|error| anyhow::anyhow!(error.message))?
        .is_some();
    let mut registry = Registry::default();
    let metrics = ConsumerMetrics::register(&mut registry);
    let mut settings = ConsumerSettings::new(&args.group_id);
    settings.max_batch = args.max_batch as usize;
    // Joining while a run is in progress: apply nothing before its barrier.
    settings.start_paused = run_in_progress && args.cluster.source_url.is_some();
    let (consumer, gate) = ReplicaConsumer::new(&kafka, settings, Arc::new(store.clone()), metrics)
        .context("create the Kafka consumer")?;
    let consumer_shutdown = shutdown.child_token();
    let consumer_task = consumer.spawn(consumer_shutdown.clone());
    let member = super::cluster::member(
        &args.cluster,
        coordinator.clone(),
        &store,
        Arc::new(gate.clone()),
    )?;
    let counters = member.as_ref().map(|member| member.counters());
    // Crash-only: a replica whose cluster session is lost (lease expired,
    // e.g. after being frozen) stops, and its supervisor starts a fresh one,
    // which joins as a new member and starts paused if a run is going on.
    let session_lost = coordinator.session_lost();
    let member_task = member.map(|member| {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            member.run(shutdown.child_token()).await;
            if !shutdown.is_cancelled() && session_lost.is_cancelled() {
                tracing::error!("cluster session lost; stopping this replica");
                shutdown.cancel();
                return true;
            }
            false
        })
    });

    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("listen on {}", args.admin_listen))?;
    info!(address = %args.admin_listen, group = %args.group_id, topic = %kafka.topic, member = %member_id, "replica serving");
    let state = AdminState {
        store,
        gate,
        registry: Arc::new(registry),
        coordinator,
        counters,
    };
    let admin = axum::serve(listener, admin_router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let admin_result = admin.await;
    let session_lost = match member_task {
        Some(task) => task.await.unwrap_or(false),
        None => false,
    };
    consumer_shutdown.cancel();
    consumer_task.await.context("consumer thread")?;
    purge_task.await.context("tombstone purge task")?;
    admin_result.context("serve the admin API")?;
    if session_lost {
        anyhow::bail!(
            "the cluster session was lost (lease expired); restart the replica to rejoin"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The Kafka settings of a command line.
pub fn kafka_config(args: &KafkaArgs) -> KafkaConfig {
    let mut config = KafkaConfig::new(&args.bootstrap_servers).with_topic(&args.topic);
    config.properties.extend(args.properties.iter().cloned());
    config
}

fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .route("/metrics", get(metrics))
        .route("/consumer", get(consumer_status))
        .route("/consumer/pause", post(pause))
        .route("/consumer/resume", post(resume))
        .route("/reconcile", post(request_reconcile))
        .route("/cluster", get(cluster_status))
        .with_state(state)
}

async fn readiness(State(state): State<AdminState>) -> Response {
    let consumer = state.gate.status();
    let store = state.store.check_ready().await;
    let ready = store.is_ok() && consumer.broker_up && consumer.store_unavailable.is_none();
    let body = serde_json::json!({
        "ready": ready,
        "store": store.as_ref().map(|_| "ok".to_owned()).unwrap_or_else(|error| error.message.clone()),
        "broker_up": consumer.broker_up,
        "consumer_store_error": consumer.store_unavailable,
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

async fn pause(State(state): State<AdminState>) -> Response {
    match state.gate.pause().await {
        Ok(()) => Json(state.gate.status()).into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    }
}

async fn resume(State(state): State<AdminState>) -> Response {
    match state.gate.resume().await {
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
}

async fn request_reconcile(
    State(state): State<AdminState>,
    body: Option<Json<ReconcileBody>>,
) -> Response {
    let body = body.map(|Json(body)| body).unwrap_or_default();
    let request = RunRequest {
        requested_by: format!("admin API of {}", state.coordinator.member_id()),
        requested_unix_ms: super::reconcile::now_unix_ms(),
        tenants: body.tenants,
        dry_run: body.dry_run,
        allow_mass_delete: body.allow_mass_delete,
    };
    let pending = match state.coordinator.request_run(&request).await {
        Ok(pending) => pending,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    };
    // Say whether it waits behind a run in progress and was merged into an
    // earlier request; best effort: the request itself is recorded.
    let queued_behind = match state.coordinator.current_run().await {
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

async fn cluster_status(State(state): State<AdminState>) -> Response {
    let status = match recon_engine::cluster::cluster_status(state.coordinator.as_ref()).await {
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
        "member": state.coordinator.member_id(),
        "status": status,
        "counters": counters,
    }))
    .into_response()
}
