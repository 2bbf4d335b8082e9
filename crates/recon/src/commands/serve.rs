//! `recon serve`: a replica. Consumes change events into the replica store
//! and serves the admin API:
//!
//! * `GET /` — the status page (cluster, current run with its units by
//!   state and owner, the last runs, links to their traces), reading
//!   `/cluster` every second;
//! * `GET /healthz` — the process is alive;
//! * `GET /readyz` — the store answers, a broker connection is up, and the
//!   consumer is not holding a batch the store fails to take (the body says
//!   why not);
//! * `GET /metrics` — Prometheus text format;
//! * `GET /consumer` — pause state, assignment, lag per partition (JSON);
//! * `POST /consumer/pause`, `POST /consumer/resume` — the pause gate, held
//!   per owner (`?owner=<name>`, default `admin`): consumption resumes once
//!   every owner that paused has resumed, so an operator's resume never
//!   ends a run's pause (`run <id>`) and a run's end never ends theirs;
//! * `POST /reconcile` — asks the cluster for a run (body: optional JSON
//!   `{"tenants": [...], "dry_run": bool, "allow_mass_delete": bool,
//!   "confirm_mass_delete": bool}`, the override needing the confirmation); 202
//!   with the pending request, `merged` (it was merged into an earlier
//!   pending one) and `queued_behind` (the run in progress it waits for);
//! * `GET /cluster` — leader, epoch, members, current run, the last runs,
//!   this member's counters;
//! * `GET /runs`, `GET /runs/{id}` — the last finished runs; one run,
//!   finished or in progress;
//! * `POST /runs/{id}/abort` — asks the leader to abort the run in progress
//!   (body: optional `{"reason": "..."}`); 409 if that run is not current.
//!
//! The mutating endpoints (`POST`) need the admin token as a bearer token
//! (`--admin-token[-file]`); without a token they answer only when the
//! admin port listens on loopback. Everything else is read-only and open.
//!
//! With `--source-url` the replica takes part in cluster reconciliation
//! (etcd with `--etcd-endpoints`, ZooKeeper with `--zookeeper`, else as a
//! single in-process member); without it, in a cluster, it registers as a
//! pause-only member: it pauses and
//! acknowledges with the others but is handed no units and never leads. A
//! replica that starts while a run is in progress starts paused.
//!
//! Event consumption does not depend on the coordinator: the replica starts
//! consuming when etcd (or ZooKeeper) is down, and a lost cluster session takes it out of
//! reconciliation (see `membership`) while it goes on consuming — unless it
//! is paused for a run it has not seen end — and reconnects with backoff.
//! On shutdown every task is awaited, all within one deadline, so that the
//! consumer commits and the lease is revoked (the session closed) before
//! the process exits — and a task stuck on a dead service does not keep it
//! from exiting.
//!
//! Every replica also runs the tombstone purge (`--tombstone-retention`,
//! default 7 days, which must exceed the change topic's retention) every
//! `--tombstone-purge-interval`. It is not tied to cluster leadership: the
//! replicas sharing a store claim each interval's purge in the store itself
//! (one conditional update), so exactly one of them purges per interval,
//! with or without etcd.

use super::cluster::MemberTelemetry;
use super::membership::{CoordinatorSlot, Membership, connect_once};
use crate::cli::{KafkaArgs, ServeArgs};
use anyhow::Context;
use axum::extract::Request;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use recon_core::ports::EventSink;
use recon_engine::cluster::{
    AbortRequest, MemberCounters, PauseTracker, RunRequest, run_pause_owner,
};
use recon_engine::metrics::ReconcileMetrics;
use recon_kafka::{
    ConsumerMetrics, ConsumerSettings, GroupMetrics, GroupMonitor, KafkaConfig, PauseGate,
    ReplicaConsumer,
};
use recon_source::SourceMetrics;
use recon_store::Store;
use serde::Deserialize;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// The status page: static HTML and script, rendering `/cluster`.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// How long shutdown waits for the replica's tasks: the consumer (its last
/// commit), the tombstone purge, the group monitor, the cluster session's
/// tasks (the keep-alive revokes the lease on its way out) and the member.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct AdminState {
    store: Store,
    gate: PauseGate,
    registry: Arc<Registry>,
    member_id: String,
    coordinator: CoordinatorSlot,
    counters: Option<Arc<MemberCounters>>,
    trace_link: Option<String>,
    mutations: MutationPolicy,
}

/// Who may call the admin API's mutating endpoints.
#[derive(Clone)]
enum MutationPolicy {
    /// Callers presenting this bearer token.
    Token(Arc<str>),
    /// Anyone who reaches the port: it listens on loopback only.
    Loopback,
    /// Nobody: no token is configured and the port is reachable from
    /// other hosts.
    Refused,
}

impl MutationPolicy {
    fn new(token: Option<String>, listen: SocketAddr) -> Self {
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
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    match state.mutations.refusal(request.headers()) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// The admin URL other members see: `--advertise-admin-url`, else the
/// listen address, with this host's name for an all-interfaces address.
fn advertised_admin_url(args: &ServeArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.advertise_admin_url {
        let parsed = reqwest::Url::parse(url)
            .with_context(|| format!("--advertise-admin-url {url:?} is not a URL"))?;
        let unspecified = parsed
            .host_str()
            .and_then(|host| {
                host.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .ok()
            })
            .is_some_and(|ip| ip.is_unspecified());
        anyhow::ensure!(
            parsed.has_host() && !unspecified,
            "--advertise-admin-url {url:?} must name a host other replicas can reach"
        );
        return Ok(url.trim_end_matches('/').to_owned());
    }
    if args.admin_listen.ip().is_unspecified() {
        return Ok(format!(
            "http://{}:{}",
            super::cluster::host_name(),
            args.admin_listen.port()
        ));
    }
    Ok(format!("http://{}", args.admin_listen))
}

pub async fn run(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let admin_token = args.admin_token()?;
    let store = open_store(&args.database.url()?, args.store.options()?, &shutdown).await?;
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
    // A replica that could never reconcile (an unreadable token file, a bad
    // source URL) stops here, before it joins runs it would hold up.
    super::cluster::source(&args.cluster)?;
    let kafka = kafka_config(&args.kafka)?;
    if check_kafka_access(&kafka, &args.group_id).await? {
        check_topic_retention(&kafka, args.tombstone_retention).await;
    }
    let member_id = super::cluster::member_id(&args.cluster);
    let admin_url = Some(advertised_admin_url(&args)?);
    let mutations = MutationPolicy::new(admin_token, args.admin_listen);
    let tasks = TaskTracker::new();
    let clustered = args.cluster.coordination.is_set();
    // Consumption never waits for the coordinator: if it does not answer now, the
    // replica consumes and keeps trying to join in the background.
    let first = if clustered {
        connect_once(
            &args.cluster,
            &member_id,
            admin_url.clone(),
            &shutdown,
            &tasks,
        )
        .await?
    } else {
        let coordinator =
            super::cluster::coordinator(&args.cluster, &member_id, None, &shutdown, &tasks);
        Some(coordinator.await?)
    };
    let run_in_progress = match &first {
        Some(coordinator) => match coordinator.current_run().await {
            Ok(run) => run,
            Err(error) => {
                warn!(error = %error, "could not read the current run; starting unpaused");
                None
            }
        },
        None => None,
    };
    let mut registry = Registry::default();
    register_build_info(&mut registry);
    let metrics = ConsumerMetrics::register(&mut registry);
    let telemetry = MemberTelemetry {
        counters: Arc::default(),
        reconcile: ReconcileMetrics::register(&mut registry, store.data_model()),
        source: SourceMetrics::register(&mut registry),
    };
    let group_monitor = GroupMonitor::new(
        &kafka,
        &args.group_id,
        GroupMetrics::register(&mut registry),
    )
    .context("create the consumer group monitor")?
    .spawn(args.group_lag_interval, shutdown.child_token());
    let mut settings = ConsumerSettings::new(&args.group_id);
    settings.max_batch = args.max_batch as usize;
    settings.data_model = store.data_model();
    if !args.dynamic_membership {
        settings.group_instance_id = args.cluster.member_id.clone();
    }
    // Joining while a run is in progress: apply nothing before it is over.
    // The member resumes the consumer when it sees the run over, even if
    // that happens before its first look (it is told which run it is).
    let takes_part = clustered || args.cluster.source_url.is_some();
    let pause = match run_in_progress {
        Some(run) if takes_part => {
            info!(run = %run.run_id, "a run is in progress; the consumer starts paused");
            settings.start_paused_by = Some(run_pause_owner(&run.run_id));
            PauseTracker::paused_for_run(run.run_id, run.started_unix_ms)
        }
        _ => PauseTracker::new(),
    };
    let (consumer, gate) = ReplicaConsumer::new(&kafka, settings, Arc::new(store.clone()), metrics)
        .context("create the Kafka consumer")?;
    let consumer_shutdown = shutdown.child_token();
    let consumer_task = consumer.spawn(consumer_shutdown.clone());
    let counters = args
        .cluster
        .source_url
        .is_some()
        .then(|| telemetry.counters.clone());
    let slot = CoordinatorSlot::holding(first.clone());
    if clustered {
        let membership = Membership {
            args: args.cluster.clone(),
            member_id: member_id.clone(),
            admin_url,
            store: store.clone(),
            gate: Arc::new(gate.clone()),
            pause: Arc::new(pause),
            telemetry: telemetry.clone(),
            slot: slot.clone(),
            tasks: tasks.clone(),
        };
        tasks.spawn(membership.keep(first, shutdown.clone()));
    } else if let Some(coordinator) = first {
        let member = super::cluster::member(
            &args.cluster,
            coordinator,
            &store,
            Arc::new(gate.clone()),
            Arc::new(pause),
            telemetry.clone(),
        )?;
        if let Some(member) = member {
            tasks.spawn(member.run(shutdown.child_token()));
        }
    }

    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("listen on {}", args.admin_listen))?;
    info!(address = %args.admin_listen, group = %args.group_id, topic = %kafka.topic, member = %member_id, "replica serving");
    let state = AdminState {
        store,
        gate,
        registry: Arc::new(registry),
        member_id,
        coordinator: slot,
        counters,
        trace_link: args.trace_link.clone(),
        mutations,
    };
    let admin = axum::serve(listener, admin_router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let admin_result = admin.await;
    // The admin API ends on shutdown only; make sure everything else does,
    // all under one deadline: a task stuck on a dead broker or database is
    // left behind (the process exits; offsets stay as last committed, a
    // lease not revoked expires on its own).
    shutdown.cancel();
    consumer_shutdown.cancel();
    tasks.close();
    let stopped = async {
        consumer_task.await.context("consumer thread")?;
        purge_task.await.context("tombstone purge task")?;
        group_monitor.await.context("consumer group monitor")?;
        tasks.wait().await;
        anyhow::Ok(())
    };
    match tokio::time::timeout(SHUTDOWN_DEADLINE, stopped).await {
        Ok(stopped) => stopped?,
        Err(_elapsed) => warn!(
            deadline_secs = SHUTDOWN_DEADLINE.as_secs(),
            "tasks did not end in time; exiting without them"
        ),
    }
    admin_result.context("serve the admin API")?;
    Ok(ExitCode::SUCCESS)
}

/// How long `recon serve` keeps trying to open its store at startup: a
/// replica restarted while its database restarts (or starts with it) waits
/// for it rather than exiting.
const STORE_STARTUP_WAIT: Duration = Duration::from_secs(60);

/// Opens the replica store, retrying transient failures (connection
/// refused, the database starting up or restarting) with backoff for up to
/// [`STORE_STARTUP_WAIT`], each logged with its cause; then, or on any
/// other failure, the error — at once for a store whose schema is not up
/// to date (its message says to run `recon store migrate`).
async fn open_store(
    database_url: &str,
    options: recon_store::StoreOptions,
    shutdown: &CancellationToken,
) -> anyhow::Result<Store> {
    let deadline = tokio::time::Instant::now() + STORE_STARTUP_WAIT;
    let mut backoff = super::membership::FIRST_BACKOFF;
    loop {
        let error = match Store::connect_with(database_url, options).await {
            Ok(store) => return Ok(store),
            Err(error) => error,
        };
        let retry = error.kind() == recon_store::ErrorKind::Transient
            && tokio::time::Instant::now() + backoff < deadline;
        if !retry {
            return Err(error).context("open the replica store");
        }
        warn!(
            error = %recon_core::ports::error_chain(&error),
            retry_in_ms = backoff.as_millis() as u64,
            "the replica store does not answer yet; retrying"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return Err(error).context("open the replica store (shut down while waiting)"),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(super::membership::MAX_BACKOFF);
    }
}

/// `recon_build_info{version}`, always 1: which build a replica runs.
fn register_build_info(registry: &mut Registry) {
    let info = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
    registry.register("recon_build", "The running build of recon", info);
}

/// How long the start-up access check waits for the brokers.
const KAFKA_ACCESS_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops at start-up when the brokers refuse this replica (a wrong SASL
/// password, an untrusted certificate, a missing ACL): the error names what
/// was refused. Brokers that do not answer yet are no reason to stop:
/// consumption does not depend on them being up now.
/// Checks that the brokers let this replica in; `true` if they answered.
async fn check_kafka_access(kafka: &KafkaConfig, group_id: &str) -> anyhow::Result<bool> {
    match recon_kafka::access::check_access(kafka, group_id, KAFKA_ACCESS_TIMEOUT).await {
        Ok(true) => Ok(true),
        Ok(false) => {
            warn!(
                timeout_secs = KAFKA_ACCESS_TIMEOUT.as_secs(),
                "the kafka brokers did not answer the access check; consuming anyway"
            );
            Ok(false)
        }
        Err(error @ recon_kafka::Error::Refused { .. }) => {
            Err(error).context("check access to the Kafka brokers")
        }
        Err(error) => {
            warn!(error = %error, "could not check access to the kafka brokers; consuming anyway");
            Ok(false)
        }
    }
}

/// Warns when the change topic can replay, to a group that starts over,
/// events older than the tombstones the store purges (kept
/// `tombstones`): they would bring deleted rows back.
async fn check_topic_retention(kafka: &KafkaConfig, tombstones: Duration) {
    let read = recon_kafka::admin::topic_retention(kafka);
    match tokio::time::timeout(KAFKA_ACCESS_TIMEOUT, read).await {
        Ok(Ok(retention)) => {
            if let Some(risk) = retention.replay_risk(tombstones) {
                warn!(topic = %kafka.topic, "{risk}");
            }
        }
        Ok(Err(error)) => warn!(error = %error, "could not read the change topic's retention"),
        Err(_elapsed) => warn!("reading the change topic's retention took too long"),
    }
}

/// The Kafka settings of a command line.
pub fn kafka_config(args: &KafkaArgs) -> anyhow::Result<KafkaConfig> {
    let mut config = KafkaConfig::new(&args.bootstrap_servers).with_topic(&args.topic);
    config.properties.extend(args.properties.resolve()?);
    Ok(config)
}

fn admin_router(state: AdminState) -> Router {
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
        requested_unix_ms: super::reconcile::now_unix_ms(),
        tenants: body.tenants,
        dry_run: body.dry_run,
        allow_mass_delete: body.allow_mass_delete,
        run_id: Some(super::reconcile::new_run_id()),
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
        requested_unix_ms: super::reconcile::now_unix_ms(),
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
    use clap::Parser;

    fn serve_args(extra: &[&str]) -> ServeArgs {
        let mut arguments = vec![
            "recon",
            "serve",
            "--database-url",
            "sqlite://x.db",
            "--kafka-bootstrap-servers",
            "b:9092",
        ];
        arguments.extend(extra);
        match crate::cli::Cli::try_parse_from(arguments)
            .expect("parses")
            .command
        {
            crate::cli::Command::Serve(args) => *args,
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn the_advertised_admin_url_is_never_an_unspecified_address() {
        let listen_all = serve_args(&["--admin-listen", "0.0.0.0:9464"]);
        let advertised = advertised_admin_url(&listen_all).expect("derived");
        assert!(!advertised.contains("0.0.0.0"), "{advertised}");
        assert!(advertised.ends_with(":9464"), "{advertised}");
        let loopback = serve_args(&["--admin-listen", "127.0.0.1:9470"]);
        assert_eq!(
            advertised_admin_url(&loopback).expect("listen"),
            "http://127.0.0.1:9470"
        );
        let given = serve_args(&["--advertise-admin-url", "http://replica-1.recon:9464/"]);
        assert_eq!(
            advertised_admin_url(&given).expect("given"),
            "http://replica-1.recon:9464"
        );
        for bad in ["http://0.0.0.0:9464", "http://[::]:9464", "not a url"] {
            let args = serve_args(&["--advertise-admin-url", bad]);
            assert!(advertised_admin_url(&args).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_token_is_compared_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3cret!", b"s3cret"));
        assert!(!same_secret(b"S3cret", b"s3cret"));
    }
}
