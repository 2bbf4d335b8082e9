//! `recon demo`: the main job on embedded defaults (SQLite, librdkafka's
//! in-process mock cluster, the in-process coordinator), end to end:
//!
//! 1. a monolith on SQLite with a seeded, heavy-tailed workload;
//! 2. its outbox relayed to Kafka and applied by three replicas (one
//!    consumer group, one shared replica store);
//! 3. a backup, more changes, then lagging consumers while changes pile up
//!    in Kafka, then a **restore** of the backup (phantoms and regressions,
//!    and old-generation events waiting in Kafka);
//! 4. random **corruption** of replica rows (simulated replication bugs);
//! 5. a **cluster reconciliation** by the three replicas: a leader with its
//!    epoch, a plan of units spread over the replicas, every consumer paused
//!    until the barrier — while the monolith keeps changing; the delete guard
//!    withholds large deletions and the operator's override run follows;
//! 6. the backlog drains; an independent row-by-row check of both databases
//!    decides the exit code.

use crate::cli::DemoArgs;
use anyhow::{Context, bail};
use rdkafka::mocking::MockCluster;
use recon_core::{Kind, RunReport, RunStatus, UnitOutcome};
use recon_engine::cluster::{
    ClusterMember, ClusterSettings, Coordinator, InProcessHub, RunRequest,
};
use recon_engine::{ReconcileOptions, Reconciler};
use recon_kafka::{ConsumerMetrics, ConsumerSettings, KafkaConfig, PauseGate, ReplicaConsumer};
use recon_monolith::relay::{ChangeProducer, Relay, RelaySettings};
use recon_monolith::verify::{Differences, compare_databases};
use recon_monolith::{Monolith, seed};
use recon_source::{HttpSource, SourceConfig};
use recon_store::{MigrationOptions, Store};
use sea_orm::ConnectionTrait;
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The owner of the demo's own pause: consumers lagging behind the
/// monolith until the cluster run is over.
const LAGGING: &str = "demo: lagging consumers";

const TOPIC: &str = "recon.changes";
const REPLICAS: usize = 3;

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let data_dir = tempfile::Builder::new()
        .prefix("recon-demo-")
        .tempdir()
        .context("create the demo's data directory")?;
    let monolith_url = format!(
        "sqlite://{}?mode=rwc",
        data_dir.path().join("monolith.db").display()
    );
    let replica_url = format!(
        "sqlite://{}?mode=rwc",
        data_dir.path().join("replica.db").display()
    );
    let tasks = shutdown.child_token();

    step("1", "monolith on SQLite, seeded workload");
    let monolith = Monolith::connect(&monolith_url)
        .await
        .context("open the monolith database")?;
    let summary = seed::run(&monolith, &super::seed::spec(&args.workload))
        .await
        .context("seed the workload")?;
    println!(
        "   {} tenants, {} users, {} groups, {} memberships (largest tenant {} users, median {})",
        summary.tenants,
        summary.users,
        summary.groups,
        summary.memberships,
        summary.largest_tenant_users,
        summary.median_tenant_users
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the Source API port")?;
    let source_url = format!("http://{}", listener.local_addr()?);
    let server = {
        let (monolith, token) = (monolith.clone(), tasks.clone());
        tokio::spawn(async move { monolith.serve(listener, None, token).await })
    };
    println!("   Source API on {source_url}/v1");

    step(
        "2",
        "Kafka (librdkafka mock cluster), outbox relay, three replicas",
    );
    let cluster = MockCluster::new(1).context("start the mock Kafka cluster")?;
    cluster
        .create_topic(TOPIC, 4, 1)
        .context("create the change topic")?;
    let kafka = KafkaConfig::new(cluster.bootstrap_servers()).with_topic(TOPIC);
    let producer = Arc::new(ChangeProducer::new(&kafka).context("create the relay's producer")?);
    let relay_task = tokio::spawn(
        Relay::new(monolith.clone(), producer, RelaySettings::default()).run(tasks.clone()),
    );
    // The demo's store is its own, so it migrates it (a deployment runs
    // `recon store migrate` before the replicas start).
    Store::migrate(&replica_url, MigrationOptions::default())
        .await
        .context("migrate the replica store")?;
    let store = Store::connect(&replica_url)
        .await
        .context("open the replica store")?;
    let metrics = ConsumerMetrics::unregistered();
    let mut gates: Vec<PauseGate> = Vec::with_capacity(REPLICAS);
    let mut consumer_tasks = Vec::with_capacity(REPLICAS);
    for _ in 0..REPLICAS {
        let (consumer, gate) = ReplicaConsumer::new(
            &kafka,
            ConsumerSettings::new("demo-replicas"),
            Arc::new(store.clone()),
            metrics.clone(),
        )
        .context("create a replica consumer")?;
        consumer_tasks.push(consumer.spawn(&TaskTracker::new(), tasks.clone()));
        gates.push(gate);
    }
    let caught_up = wait_for_equal(&monolith_url, &replica_url, Duration::from_secs(120)).await?;
    println!(
        "   {REPLICAS} replicas (one consumer group, one store) caught up: {} rows equal",
        caught_up.replica_rows
    );

    step(
        "3",
        "backup, more changes, lagging consumers, then a restore",
    );
    let backup = monolith.backup().await.context("take a backup")?;
    let changed = seed::random_changes(&monolith, 300, args.workload.seed + 1)
        .await
        .context("change data")?;
    wait_for_equal(&monolith_url, &replica_url, Duration::from_secs(120)).await?;
    println!(
        "   backup {backup:?} taken; {} changes made and replicated",
        changed.applied
    );
    for gate in &gates {
        gate.pause(LAGGING).await.context("pause a consumer")?;
    }
    let piled_up = seed::random_changes(&monolith, 200, args.workload.seed + 2)
        .await
        .context("change data")?;
    tokio::time::sleep(Duration::from_millis(500)).await; // let the relay publish them
    println!(
        "   consumers paused (lagging); {} changes of generation 1 wait in Kafka",
        piled_up.applied
    );
    let restored = monolith
        .restore(backup)
        .await
        .context("restore the backup")?;
    println!(
        "   restored backup {backup:?}: generation now {}; the monolith forgot everything since",
        restored.generation
    );
    let drift = compare_databases(&monolith_url, &replica_url).await?;
    println!("   drift after the restore: {} rows differ", drift.total);

    step(
        "4",
        "random corruption of replica rows (simulated replication bugs)",
    );
    let corrupted = corrupt(&store).await?;
    println!(
        "   {} user names garbled, {} memberships dropped, {} phantom groups added",
        corrupted.0, corrupted.1, corrupted.2
    );

    step(
        "5",
        "cluster reconciliation by the three replicas, while the monolith keeps changing",
    );
    let writer = {
        let monolith = monolith.clone();
        let seed = args.workload.seed;
        tokio::spawn(async move {
            let mut applied = 0;
            for round in 0..10 {
                applied += seed::random_changes(&monolith, 20, seed + 100 + round)
                    .await?
                    .applied;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(applied)
        })
    };
    let hub = InProcessHub::new(1);
    let etcd_prefix = format!("/recon/demo-{}", recon_engine::cluster::now_unix_ms());
    match &args.etcd {
        Some(endpoint) => {
            println!("   coordinating through etcd at {endpoint} under {etcd_prefix}")
        }
        None => println!("   coordinating in process (pass --etcd <url> to use a real etcd)"),
    }
    let mut member_tasks = Vec::with_capacity(REPLICAS);
    let mut handles: Vec<Arc<dyn Coordinator>> = Vec::with_capacity(REPLICAS);
    for (index, gate) in gates.iter().enumerate() {
        let member_id = format!("replica-{}", index + 1);
        let coordinator: Arc<dyn Coordinator> = match &args.etcd {
            Some(endpoint) => etcd_member(endpoint, &etcd_prefix, &member_id, &tasks).await?,
            None => Arc::new(hub.join(&member_id)),
        };
        handles.push(coordinator.clone());
        let source = HttpSource::new(&SourceConfig::new(&source_url))
            .context("configure the Source API client")?;
        let reconciler = Reconciler::new(Arc::new(source), Arc::new(store.clone()));
        let member = Arc::new(ClusterMember::new(
            coordinator,
            reconciler,
            Arc::new(gate.clone()),
            demo_cluster_settings(),
        ));
        member_tasks.push(tokio::spawn(member.run(tasks.clone())));
    }
    // The operator asks for runs through a replica (as `POST /reconcile` does).
    let coordinator = handles[0].clone();
    let report = cluster_run(&coordinator, &store, request(Vec::new(), false)).await?;
    // The run held its own pause and ended it; the lag ends now too.
    for gate in &gates {
        gate.resume(LAGGING).await.context("resume a consumer")?;
    }
    print!("{}", indent(&report.to_table_limited(12)));
    let during = writer.await.context("writer task")??;
    println!("   {during} changes were made during the run; they waited in Kafka");
    let tripped: Vec<String> = report
        .units
        .iter()
        .filter(|unit| unit.outcome == UnitOutcome::GuardTripped)
        .map(|unit| unit.tenant.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // No tenant list in the report: it was not reconciled (the guard
    // withheld the deletion of tenants the source no longer has, with all
    // their rows), and the run ended before planning.
    let tenant_list_withheld = report.status == RunStatus::CompletedWithProblems
        && report.units.iter().all(|unit| unit.kind != Kind::TENANT);
    if tenant_list_withheld {
        println!(
            "   the delete guard withheld deleting tenants the source lost ({}); the operator checks them and re-runs with --allow-mass-delete:",
            report.abort_reason.as_deref().unwrap_or("")
        );
        let second = cluster_run(&coordinator, &store, request(Vec::new(), true)).await?;
        print!("{}", indent(&second.to_table_limited(12)));
    } else if !tripped.is_empty() {
        println!(
            "   the delete guard withheld deletions in {} tenant(s); the operator checks them and re-runs those with --allow-mass-delete:",
            tripped.len()
        );
        let second = cluster_run(&coordinator, &store, request(tripped, true)).await?;
        print!("{}", indent(&second.to_table_limited(12)));
    }

    step("6", "backlog drains; independent row-by-row check");
    let verdict = wait_for_equal(&monolith_url, &replica_url, Duration::from_secs(120)).await;
    println!(
        "   consumers: {} events applied in all, {} skipped as stale, {} skipped below the generation floor",
        metrics.events_received.get(),
        metrics.events_skipped_stale.get(),
        metrics.events_skipped_below_floor.get()
    );
    tasks.cancel();
    for task in consumer_tasks {
        let _ = task.await;
    }
    for task in member_tasks {
        let _ = task.await;
    }
    let _ = relay_task.await;
    let _ = server.await;
    drop(cluster);
    if args.keep_data {
        println!("   data kept in {}", data_dir.keep().display());
    }
    match verdict {
        Ok(differences) => {
            println!(
                "\nOK: all {} replica rows equal the monolith's ({:.0}s)",
                differences.replica_rows,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("\nFAILED: {error:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// A replica registered in etcd under its own lease.
async fn etcd_member(
    endpoint: &str,
    prefix: &str,
    member_id: &str,
    tasks: &CancellationToken,
) -> anyhow::Result<Arc<dyn Coordinator>> {
    let info = recon_engine::cluster::MemberInfo {
        id: member_id.to_owned(),
        admin_url: None,
        joined_unix_ms: recon_engine::cluster::now_unix_ms(),
        role: recon_engine::cluster::MemberRole::Reconciler,
    };
    let settings = recon_etcd::EtcdSettings::new(vec![endpoint.to_owned()], prefix, info);
    let coordinator = recon_etcd::connect(settings, tasks.clone())
        .await
        .context("join the demo cluster through etcd")?;
    Ok(Arc::new(coordinator))
}

fn demo_cluster_settings() -> ClusterSettings {
    let mut template = ReconcileOptions::new(0);
    template.page_size = 500;
    ClusterSettings {
        poll_interval: Duration::from_millis(50),
        max_pause: Duration::from_secs(300),
        min_unit_rows: 400,
        template,
        purge_finished_runs: true,
        schedule: None,
        watch_generation: None,
        min_consumption_window: Duration::ZERO,
    }
}

fn request(tenants: Vec<String>, allow_mass_delete: bool) -> RunRequest {
    RunRequest {
        requested_by: "recon demo".into(),
        requested_unix_ms: recon_engine::cluster::now_unix_ms(),
        tenants,
        dry_run: false,
        allow_mass_delete,
        pause: recon_core::PausePolicy::Always,
        run_id: Some(crate::commands::reconcile::new_run_id()),
    }
}

/// Asks the cluster for a run, waits for its barrier, prints who did what
/// and returns the run's report, both from the run's record in the store's
/// history (the run's own keys are purged once it is kept there).
async fn cluster_run(
    coordinator: &Arc<dyn Coordinator>,
    store: &Store,
    request: RunRequest,
) -> anyhow::Result<RunReport> {
    let run_id = request
        .run_id
        .clone()
        .context("a demo request carries its run id")?;
    coordinator
        .request_run(&request)
        .await
        .map_err(|error| anyhow::anyhow!(error.message))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(record) = store.run_record(&run_id).await? {
            let mut per_member: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for unit in &record.report.units {
                if let (Some(member), Some(id)) = (&unit.member, &unit.unit) {
                    per_member
                        .entry(member.clone())
                        .or_default()
                        .insert(id.clone());
                }
            }
            let per_member: BTreeMap<String, usize> = per_member
                .into_iter()
                .map(|(member, units)| (member, units.len()))
                .collect();
            println!(
                "   run {run_id}: leader {}, epoch {}, {} units, done by {per_member:?}, {:?}",
                record.leader.as_deref().unwrap_or("?"),
                record.report.epoch,
                record.planned_units,
                record.status()
            );
            return Ok(record.report);
        }
        if Instant::now() > deadline {
            bail!("the cluster run {run_id} did not finish within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step(number: &str, title: &str) {
    println!("\n[{number}] {title}");
}
fn indent(text: &str) -> String {
    text.lines().map(|line| format!("   {line}\n")).collect()
}

async fn corrupt(store: &Store) -> anyhow::Result<(u64, u64, u64)> {
    let connection = store.connection();
    let garbled = connection
        .execute_unprepared("UPDATE replica_users SET display_name = 'garbled ' || display_name WHERE NOT deleted AND rowid % 37 = 0")
        .await?
        .rows_affected();
    let dropped = connection
        .execute_unprepared("DELETE FROM replica_memberships WHERE NOT deleted AND rowid % 41 = 0")
        .await?
        .rows_affected();
    let invented = connection
        .execute_unprepared(
            "INSERT INTO replica_groups (tenant_id, id, name, generation, sequence, deleted, deleted_at_ms) \
             SELECT id, 'phantom-group-' || id, 'never existed', 1, 1, 0, NULL FROM replica_tenants WHERE NOT deleted AND rowid % 5 = 0",
        )
        .await?
        .rows_affected();
    Ok((garbled, dropped, invented))
}

/// Polls the independent check until both databases are equal.
async fn wait_for_equal(
    monolith_url: &str,
    replica_url: &str,
    timeout: Duration,
) -> anyhow::Result<Differences> {
    let deadline = Instant::now() + timeout;
    loop {
        let differences = compare_databases(monolith_url, replica_url)
            .await
            .context("compare the databases")?;
        if differences.is_empty() {
            return Ok(differences);
        }
        if Instant::now() > deadline {
            bail!(
                "after {timeout:?} {} rows still differ; only in the monolith: {:?}; only in the replica: {:?}",
                differences.total,
                differences.only_in_monolith,
                differences.only_in_replica
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_core::{RunMode, RunRecord, RunTotals, UnitReport};
    use recon_engine::cluster::{Barrier, InProcessHub, Plan, RunPhase, RunState, UnitPlan};

    /// A leader that serves the first request by recording a run of two
    /// units done by two members, then purging the run's keys (what every
    /// leader does once the run is in the store's history).
    async fn lead_one_run(coordinator: Arc<dyn Coordinator>, store: Store) -> anyhow::Result<()> {
        let leadership = coordinator.campaign(&CancellationToken::new()).await?;
        let request = loop {
            if let Some(request) = coordinator.pending_request().await? {
                break request;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let run_id = request.run_id.clone().context("a run id")?;
        let run = RunState {
            run_id: run_id.clone(),
            request,
            phase: RunPhase::Working,
            epoch: 1,
            started_unix_ms: 1,
            traceparent: None,
        };
        coordinator.put_run(&leadership, &run).await?;
        let unit = |id: &str| UnitPlan {
            id: id.to_owned(),
            tenant_id: "t".to_owned(),
            kind: None,
            after: None,
            until: None,
            weight: 1,
        };
        let plan = Plan {
            run_id: run_id.clone(),
            epoch: 1,
            generation: 1,
            tenant_list: UnitReport::new("", Kind::TENANT),
            units: vec![unit("u0"), unit("u1")],
        };
        coordinator.put_plan(&leadership, &plan).await?;
        let barrier = Barrier {
            run_id: run_id.clone(),
            status: RunStatus::Completed,
            reason: None,
            epoch: 1,
            summary: None,
        };
        coordinator.put_barrier(&leadership, &barrier).await?;
        let mut units = vec![UnitReport::new("", Kind::TENANT)];
        for (id, member) in [("u0", "m1"), ("u1", "m2")] {
            let mut report = UnitReport::new("t", Kind::USER);
            report.unit = Some(id.to_owned());
            report.member = Some(member.to_owned());
            report.missing = 1;
            units.push(report);
        }
        let report = RunReport {
            epoch: 1,
            dry_run: false,
            status: RunStatus::Completed,
            abort_reason: None,
            generation_floor: None,
            seconds: 1.0,
            peak_rss_bytes: None,
            units,
        };
        let record = RunRecord {
            run_id: run_id.clone(),
            mode: RunMode::Cluster,
            leader: Some("m1".to_owned()),
            requested_by: "test".to_owned(),
            tenants: Vec::new(),
            started_unix_ms: 1,
            ended_unix_ms: 2,
            planned_units: 2,
            aborted_by: None,
            pause: recon_core::PausePolicy::Always,
            trace_id: None,
            totals: RunTotals::of(&report),
            report,
        };
        store.record_run(&record).await?;
        coordinator.purge_run(&run_id).await?;
        Ok(())
    }

    /// The demo's cluster runs used to be reported from the run's plan and
    /// done-records, read after the barrier: once finished runs' keys were
    /// purged, the demo printed "0 units, done by {}" and an empty report.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_run_is_reported_from_the_store_after_its_keys_are_purged()
    -> anyhow::Result<()> {
        let path = std::env::temp_dir().join(format!("recon-demo-{}.db", rand::random::<u64>()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Store::migrate(&url, MigrationOptions::default()).await?;
        let store = Store::connect(&url).await?;
        let hub = InProcessHub::new(1);
        let leader: Arc<dyn Coordinator> = Arc::new(hub.join("m1"));
        let asker: Arc<dyn Coordinator> = Arc::new(hub.join("m2"));
        let leading = tokio::spawn(lead_one_run(leader, store.clone()));
        let report = cluster_run(&asker, &store, request(Vec::new(), false)).await;
        leading.await??;
        let _ = std::fs::remove_file(&path);
        let report = report?;
        assert_eq!(report.status, RunStatus::Completed);
        assert_eq!(report.units.len(), 3, "{report:?}");
        assert_eq!(report.total(|unit| unit.missing), 2);
        Ok(())
    }
}
