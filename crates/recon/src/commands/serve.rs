//! `recon serve`: a replica. Consumes change events into the replica store
//! and serves the admin API (`recon_admin`: health, readiness, metrics, the
//! pause gate, run requests and history, the status page).
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
//! reconciliation (see `recon_engine::cluster::Membership`) while it goes on consuming — unless it
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
use super::membership::{ReplicaSessions, connect_once};
use crate::cli::{KafkaArgs, ServeArgs};
use anyhow::Context;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use recon_admin::{AdminState, MutationPolicy};
use recon_core::ports::ConsumerGate;
use recon_engine::cluster::{CoordinatorSlot, Membership, PauseTracker, run_pause_owner};
use recon_engine::metrics::ReconcileMetrics;
use recon_kafka::{
    ConsumerMetrics, ConsumerSettings, GroupMetrics, GroupMonitor, KafkaConfig, ReplicaConsumer,
};
use recon_source::SourceMetrics;
use recon_store::Store;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long shutdown waits for the replica's tasks: the consumer (its last
/// commit), the tombstone purge, the group monitor, the cluster session's
/// tasks (the keep-alive revokes the lease on its way out) and the member.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

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
    // Every long-lived task is on one tracker: shutdown waits for them all
    // under one deadline.
    let tasks = TaskTracker::new();
    tasks.spawn({
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
    GroupMonitor::new(
        &kafka,
        &args.group_id,
        GroupMetrics::register(&mut registry),
    )
    .context("create the consumer group monitor")?
    .spawn(&tasks, args.group_lag_interval, shutdown.child_token());
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
        Some(run) if takes_part && run.request.pause == recon_core::PausePolicy::Always => {
            info!(run = %run.run_id, "a run is in progress; the consumer starts paused");
            settings.start_paused_by = Some(run_pause_owner(&run.run_id));
            PauseTracker::paused_for_run(run.run_id, run.started_unix_ms)
        }
        _ => PauseTracker::new(),
    };
    let pause = Arc::new(pause);
    let (consumer, gate) = ReplicaConsumer::new(&kafka, settings, Arc::new(store.clone()), metrics)
        .context("create the Kafka consumer")?;
    consumer.spawn(&tasks, shutdown.child_token());
    let counters = args
        .cluster
        .source_url
        .is_some()
        .then(|| telemetry.counters.clone());
    let slot = CoordinatorSlot::holding(first.clone());
    if clustered {
        let consumer_gate: Arc<dyn ConsumerGate> = Arc::new(gate.clone());
        let sessions = ReplicaSessions {
            args: args.cluster.clone(),
            member_id: member_id.clone(),
            admin_url,
            store: store.clone(),
            gate: consumer_gate.clone(),
            pause: pause.clone(),
            telemetry: telemetry.clone(),
            tasks: tasks.clone(),
        };
        let membership = Membership::new(
            sessions,
            member_id.clone(),
            consumer_gate,
            pause,
            Duration::from_secs(args.cluster.max_pause_secs),
            slot.clone(),
            telemetry.reconcile.pause_deadline_resumes.clone(),
        );
        tasks.spawn(membership.keep(first, shutdown.clone()));
    } else if let Some(coordinator) = first {
        let member = super::cluster::member(
            &args.cluster,
            coordinator,
            &store,
            Arc::new(gate.clone()),
            pause,
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
    let admin = axum::serve(listener, recon_admin::router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let admin_result = admin.await;
    // The admin API ends on shutdown only; make sure everything else does,
    // all under one deadline: a task stuck on a dead broker or database is
    // left behind (the process exits; offsets stay as last committed, a
    // lease not revoked expires on its own).
    shutdown.cancel();
    tasks.close();
    match tokio::time::timeout(SHUTDOWN_DEADLINE, tasks.wait()).await {
        Ok(()) => {}
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

/// First pause between attempts to open the store; doubled after each.
const FIRST_STORE_BACKOFF: Duration = Duration::from_millis(250);

/// Longest pause between attempts to open the store.
const MAX_STORE_BACKOFF: Duration = Duration::from_secs(5);

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
    let mut backoff = FIRST_STORE_BACKOFF;
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
        backoff = (backoff * 2).min(MAX_STORE_BACKOFF);
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
}
