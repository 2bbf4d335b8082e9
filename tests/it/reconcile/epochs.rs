//! Epochs come from one source per store (DESIGN §2): `recon reconcile`, an
//! etcd cluster and a rebuilt (wiped) etcd reconcile the same replica
//! database one after the other, and every run completes.
//!
//! Before, `recon reconcile` fenced the store at its wall-clock epoch
//! (~1.7e12), above any etcd revision: no cluster leader could raise the
//! fence afterwards, and none finished a run.

use super::{Fixture, small_spec};
use anyhow::{Context, bail, ensure};
use async_trait::async_trait;
use recon_core::ports::{AppliedCounts, ConsumerGate, FailureKind, PortError, ReplicaStore};
use recon_core::{
    Change, Deletion, ElectionClaim, EntityKey, FenceToken, KeyRange, Kind, Row, RunMode,
    RunStatus, Version,
};
use recon_engine::ReconcileOptions;
use recon_engine::cluster::{
    ClusterMember, ClusterSettings, InProcessHub, MemberInfo, MemberRole, Plan, RunRequest,
};
use recon_engine::{Reconciler, cluster::Coordinator};
use recon_etcd::EtcdSettings;
use recon_source::{HttpSource, SourceConfig};
use recon_store::Store;
use recon_tests::free_port;
use recon_tests::process::recon_binary;
use recon_zookeeper::ZooKeeperSettings;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standalone_then_cluster_then_wiped_etcd_runs_all_complete() -> anyhow::Result<()> {
    let fixture = Fixture::new(small_spec(61)).await;
    let prefix = format!("/recon/epochs-{}", uuid::Uuid::new_v4().simple());

    damage(&fixture).await?;
    standalone_reconcile(&fixture).await?;
    ensure!(
        fixture.differences().await == 0,
        "standalone run left differences"
    );

    let etcd = std::env::var("RECON_TEST_ETCD_ENDPOINTS")
        .context("RECON_TEST_ETCD_ENDPOINTS (scripts/test.sh sets it)")?;
    damage(&fixture).await?;
    cluster_run(&fixture, &etcd, &prefix, "after a standalone run").await?;

    // A rebuilt etcd: new data directory, revisions from 1 again.
    let rebuilt = FreshEtcd::start().await?;
    damage(&fixture).await?;
    cluster_run(&fixture, &rebuilt.endpoint, &prefix, "on a rebuilt etcd").await?;

    damage(&fixture).await?;
    standalone_reconcile(&fixture).await?;
    ensure!(
        fixture.differences().await == 0,
        "last standalone run left differences"
    );

    // The store's history kept all four, the first etcd's runs included
    // although that etcd's state is gone: newest first, epochs descending.
    let store = recon_store::Store::connect(&fixture.replica_db.url).await?;
    let runs = store.recent_runs(10).await?;
    let modes: Vec<RunMode> = runs.iter().map(|run| run.mode).collect();
    ensure!(
        modes
            == [
                RunMode::Single,
                RunMode::Cluster,
                RunMode::Cluster,
                RunMode::Single
            ],
        "the history has {modes:?}"
    );
    ensure!(
        runs.windows(2)
            .all(|pair| pair[0].report.epoch > pair[1].report.epoch),
        "epochs do not descend: {:?}",
        runs.iter().map(|run| run.report.epoch).collect::<Vec<_>>()
    );
    ensure!(
        runs.iter()
            .all(|run| run.status() == RunStatus::Completed && run.totals.written > 0),
        "{runs:?}"
    );
    Ok(())
}

/// A store's claims come from every coordination state that led on it: a
/// single instance's hub, an etcd cluster, the same etcd restored from a
/// snapshot (its elections older than ones the store saw since), and
/// ZooKeeper take turns on one PostgreSQL store, and every run completes.
///
/// Before, the store refused an epoch to any claim older than the latest
/// it held, for good: after a single-instance run the etcd cluster's
/// leaders were refused (its incarnation older) and campaigned without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_instance_etcd_restored_etcd_and_zookeeper_take_turns() -> anyhow::Result<()> {
    let fixture = Fixture::new(small_spec(63)).await;
    let prefix = format!("/recon/turns-{}", uuid::Uuid::new_v4().simple());
    let zookeeper = std::env::var("RECON_TEST_ZOOKEEPER")
        .context("RECON_TEST_ZOOKEEPER (scripts/test.sh sets it)")?;
    let etcd = FreshEtcd::start().await?;
    let on_etcd = Coordination::Etcd {
        endpoint: &etcd.endpoint,
        prefix: &prefix,
    };
    let single = Coordination::InProcess;

    damage(&fixture).await?;
    cluster_run_with(&fixture, &single, "on a single instance", false).await?;
    damage(&fixture).await?;
    cluster_run_with(&fixture, &on_etcd, "on etcd", false).await?;
    let snapshots = tempfile::tempdir()?;
    let snapshot = snapshots.path().join("etcd.db");
    etcd.save_snapshot(&snapshot).await?;

    damage(&fixture).await?;
    cluster_run_with(&fixture, &single, "on a second single instance", false).await?;
    damage(&fixture).await?;
    cluster_run_with(&fixture, &on_etcd, "on etcd after a single instance", false).await?;

    drop(etcd);
    let restored = FreshEtcd::restore(&snapshot).await?;
    let on_restored = Coordination::Etcd {
        endpoint: &restored.endpoint,
        prefix: &prefix,
    };
    damage(&fixture).await?;
    cluster_run_with(
        &fixture,
        &on_restored,
        "on etcd restored from a snapshot",
        false,
    )
    .await?;

    let on_zookeeper = Coordination::ZooKeeper {
        servers: &zookeeper,
        prefix: &prefix,
    };
    damage(&fixture).await?;
    cluster_run_with(&fixture, &on_zookeeper, "on ZooKeeper", false).await?;

    let store = recon_store::Store::connect(&fixture.replica_db.url).await?;
    let runs = store.recent_runs(10).await?;
    ensure!(
        runs.len() == 6
            && runs
                .iter()
                .all(|run| run.status() == RunStatus::Completed && run.totals.written > 0),
        "{runs:?}"
    );
    Ok(())
}

/// A dry run writes nothing and so acquires nothing: a run in progress
/// elsewhere (its epoch acquired before) still writes after an operator's
/// `recon reconcile --dry-run`. Before, the dry run acquired the next epoch
/// and the run's writes were refused by the fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dry_run_leaves_the_fence_of_a_run_in_progress() -> anyhow::Result<()> {
    let fixture = Fixture::new(small_spec(64)).await;
    let in_progress = fixture.store.acquire_epoch(None).await?;
    damage(&fixture).await?;
    standalone_reconcile_with(&fixture, &["--dry-run"]).await?;
    ensure!(
        fixture.differences().await > 0,
        "the dry run repaired the replica"
    );
    let write = Change::Delete(Deletion {
        tenant_id: "in-progress-tenant".into(),
        kind: Kind::USER,
        key: EntityKey::id("in-progress-user"),
        version: Version::new(1, 1),
    });
    let token = FenceToken::new("in-progress-tenant", in_progress);
    let watermark = Version::new(1, 2);
    ReplicaStore::apply_reconciliation(&fixture.store, &token, watermark, &[write])
        .await
        .context("the run in progress was fenced off by a dry run")?;
    Ok(())
}

/// The run is closed in the store before its barrier is written: a write
/// that still carries the run's epoch (a follower frozen mid-unit that wakes
/// up after consumers resumed) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_at_a_finished_runs_epoch_is_refused() -> anyhow::Result<()> {
    let fixture = Fixture::new(small_spec(62)).await;
    let prefix = format!("/recon/closed-{}", uuid::Uuid::new_v4().simple());
    let etcd = std::env::var("RECON_TEST_ETCD_ENDPOINTS")
        .context("RECON_TEST_ETCD_ENDPOINTS (scripts/test.sh sets it)")?;
    let coordination = Coordination::Etcd {
        endpoint: &etcd,
        prefix: &prefix,
    };
    cluster_run_with(&fixture, &coordination, "on an empty replica", true).await?;
    let epoch = run_epoch(&etcd, &prefix).await?;
    let late = Change::Delete(Deletion {
        tenant_id: "late-tenant".into(),
        kind: Kind::USER,
        key: EntityKey::id("late-user"),
        version: Version::new(u64::MAX / 2, 1),
    });
    let token = FenceToken::new("late-tenant", epoch);
    let watermark = Version::new(u64::MAX / 2, 2);
    match ReplicaStore::apply_reconciliation(&fixture.store, &token, watermark, &[late]).await {
        Err(error) if error.kind == FailureKind::StaleEpoch => Ok(()),
        Err(error) => bail!("the late write failed, but not on the fence: {error}"),
        Ok(counts) => bail!("a write at the finished run's epoch {epoch} landed: {counts:?}"),
    }
}

/// The epoch of the (only) run under `prefix`, from its plan.
async fn run_epoch(endpoint: &str, prefix: &str) -> anyhow::Result<u64> {
    let mut client = etcd_client::Client::connect([endpoint], None).await?;
    let runs = format!("{prefix}/runs/");
    let options = etcd_client::GetOptions::new().with_prefix();
    let response = client.get(runs.as_str(), Some(options)).await?;
    for entry in response.kvs() {
        if entry.key_str()?.ends_with("/plan") {
            // The plan without its units (they are in pages), and the pages.
            let header: serde_json::Value = serde_json::from_slice(entry.value())?;
            let plan: Plan = serde_json::from_value(header["plan"].clone())?;
            return Ok(plan.epoch);
        }
    }
    bail!("no plan under {runs}")
}

/// Deletes replica rows so that a run has something to repair.
async fn damage(fixture: &Fixture) -> anyhow::Result<()> {
    let deleted = fixture
        .replica_sql("DELETE FROM replica_memberships WHERE user_id IN (SELECT user_id FROM replica_memberships ORDER BY user_id LIMIT 3)")
        .await;
    // The first damage happens on an empty replica; later ones must bite.
    let total = fixture.differences().await;
    ensure!(deleted > 0 || total > 0, "nothing to reconcile");
    Ok(())
}

/// `recon reconcile` as a user runs it.
async fn standalone_reconcile(fixture: &Fixture) -> anyhow::Result<()> {
    standalone_reconcile_with(fixture, &[]).await
}

/// [`standalone_reconcile`] with `extra` arguments.
async fn standalone_reconcile_with(fixture: &Fixture, extra: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(recon_binary()?)
        .args([
            "reconcile",
            "--database-url",
            &fixture.replica_db.url,
            "--source-url",
            &fixture.source_url,
            "--no-progress",
            "--allow-mass-delete",
            "--page-size",
            "50",
        ])
        .args(extra)
        .output()
        .await
        .context("run recon reconcile")?;
    ensure!(
        output.status.success(),
        "recon reconcile failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Where a run's two members coordinate.
enum Coordination<'a> {
    /// One in-process hub, as a single-instance `recon serve` has.
    InProcess,
    /// etcd at `endpoint`, under `prefix`.
    Etcd { endpoint: &'a str, prefix: &'a str },
    /// ZooKeeper at `servers`, under `prefix`.
    ZooKeeper { servers: &'a str, prefix: &'a str },
}

impl Coordination<'_> {
    /// The coordinators of members `ids`, ending with `shutdown`.
    async fn connect(
        &self,
        ids: &[&str],
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Vec<Arc<dyn Coordinator>>> {
        let hub = InProcessHub::new(1);
        let mut coordinators: Vec<Arc<dyn Coordinator>> = Vec::new();
        for id in ids {
            let info = MemberInfo {
                id: (*id).to_owned(),
                admin_url: None,
                joined_unix_ms: 0,
                role: MemberRole::Reconciler,
            };
            coordinators.push(match self {
                Self::InProcess => Arc::new(hub.join(id)),
                Self::Etcd { endpoint, prefix } => {
                    let mut settings =
                        EtcdSettings::new(vec![(*endpoint).to_owned()], *prefix, info);
                    settings.lease_ttl_secs = 3;
                    Arc::new(recon_etcd::connect(settings, shutdown.clone()).await?)
                }
                Self::ZooKeeper { servers, prefix } => {
                    let mut settings = ZooKeeperSettings::new(*servers, *prefix, info);
                    settings.session_timeout = Duration::from_secs(3);
                    Arc::new(recon_zookeeper::connect(settings, shutdown.clone()).await?)
                }
            });
        }
        Ok(coordinators)
    }
}

/// Two members on `endpoint` under `prefix`; one run requested; waits until
/// its barrier is written and the replica equals the monolith.
async fn cluster_run(
    fixture: &Fixture,
    endpoint: &str,
    prefix: &str,
    what: &str,
) -> anyhow::Result<()> {
    let coordination = Coordination::Etcd { endpoint, prefix };
    cluster_run_with(fixture, &coordination, what, false).await
}

/// [`cluster_run`] on any `coordination`; with `one_term`, the store
/// refuses every leader an epoch once no run is current or pending, so
/// that no leader elected after the barrier moves the fence (what it would
/// do only milliseconds later).
async fn cluster_run_with(
    fixture: &Fixture,
    coordination: &Coordination<'_>,
    what: &str,
    one_term: bool,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let request = RunRequest {
        requested_by: "epochs test".into(),
        requested_unix_ms: 0,
        tenants: Vec::new(),
        dry_run: false,
        allow_mass_delete: true,
        run_id: None,
        pause: recon_core::PausePolicy::Always,
    };
    let mut members = Vec::new();
    for coordinator_port in coordination.connect(&["e1", "e2"], &shutdown).await? {
        let mut config = SourceConfig::new(&fixture.source_url);
        config.request_timeout = Duration::from_secs(5);
        let source = HttpSource::new(&config)?;
        if members.is_empty() {
            coordinator_port.request_run(&request).await?;
        }
        let store: Arc<dyn ReplicaStore> = if one_term {
            Arc::new(EpochsDuringRunsOnly {
                store: fixture.store.clone(),
                coordinator: coordinator_port.clone(),
            })
        } else {
            Arc::new(fixture.store.clone())
        };
        let reconciler = Reconciler::new(Arc::new(source), store);
        let mut template = ReconcileOptions::new(0);
        template.page_size = 50;
        let member = Arc::new(ClusterMember::new(
            coordinator_port,
            reconciler,
            Arc::new(NoGate),
            ClusterSettings {
                poll_interval: Duration::from_millis(50),
                max_pause: Duration::from_secs(60),
                min_unit_rows: 200,
                template,
                purge_finished_runs: false,
                schedule: None,
                watch_generation: None,
                min_consumption_window: Duration::ZERO,
            },
        ));
        let task = tokio::spawn(member.clone().run(shutdown.clone()));
        members.push((member, task));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        let led: u64 = members
            .iter()
            .map(|(member, _)| member.counters().runs_led.load(Ordering::SeqCst))
            .sum();
        if led >= 1 {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!("no run finished {what} within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shutdown.cancel();
    for (_, task) in members {
        task.await?;
    }
    outcome?;
    ensure!(
        fixture.differences().await == 0,
        "the cluster run {what} left differences"
    );
    Ok(())
}

/// The replica store, except that a leader gets no epoch while no run is
/// current or pending (see [`cluster_run_with`]).
struct EpochsDuringRunsOnly {
    store: Store,
    coordinator: Arc<dyn Coordinator>,
}

#[async_trait]
impl ReplicaStore for EpochsDuringRunsOnly {
    async fn read_rows(
        &self,
        tenant_id: &str,
        kind: Kind,
        ranges: &[KeyRange],
        limit: u64,
    ) -> Result<Vec<Row>, PortError> {
        self.store.read_rows(tenant_id, kind, ranges, limit).await
    }

    async fn count_rows(
        &self,
        tenant_id: Option<&str>,
        kind: Kind,
        range: &KeyRange,
    ) -> Result<u64, PortError> {
        self.store.count_rows(tenant_id, kind, range).await
    }

    async fn orphan_scopes(&self) -> Result<Vec<String>, PortError> {
        ReplicaStore::orphan_scopes(&self.store).await
    }

    async fn apply_reconciliation(
        &self,
        fence: &FenceToken,
        watermark: Version,
        changes: &[Change],
    ) -> Result<AppliedCounts, PortError> {
        ReplicaStore::apply_reconciliation(&self.store, fence, watermark, changes).await
    }

    async fn record_run(&self, record: &recon_core::RunRecord) -> Result<(), PortError> {
        ReplicaStore::record_run(&self.store, record).await
    }

    async fn raise_fence(&self, fence: &FenceToken) -> Result<(), PortError> {
        ReplicaStore::raise_fence(&self.store, fence).await
    }

    async fn acquire_epoch(&self, claim: Option<ElectionClaim>) -> Result<u64, PortError> {
        if claim.is_some()
            && self.coordinator.current_run().await?.is_none()
            && self.coordinator.pending_request().await?.is_none()
        {
            return Err(PortError::new(
                FailureKind::Transient,
                "test: no epochs between runs",
            ));
        }
        ReplicaStore::acquire_epoch(&self.store, claim).await
    }

    async fn next_incarnation(&self) -> Result<u64, PortError> {
        ReplicaStore::next_incarnation(&self.store).await
    }

    async fn raise_generation_floor(
        &self,
        fence: &FenceToken,
        scope: &str,
        generation: u64,
    ) -> Result<(), PortError> {
        ReplicaStore::raise_generation_floor(&self.store, fence, scope, generation).await
    }
}

/// Consumers are not part of this test.
struct NoGate;

#[async_trait]
impl ConsumerGate for NoGate {
    async fn pause(&self, _owner: &str) -> Result<(), PortError> {
        Ok(())
    }

    async fn resume(&self, _owner: &str) -> Result<(), PortError> {
        Ok(())
    }
}

/// A throw-away single-member etcd.
struct FreshEtcd {
    endpoint: String,
    child: tokio::process::Child,
    _data: tempfile::TempDir,
}

impl FreshEtcd {
    /// An etcd with an empty data directory: revisions from 1.
    async fn start() -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        Self::run(data, peer).await
    }

    /// An etcd restored from `snapshot` (`etcdctl snapshot restore`): its
    /// keys and revisions as they were when the snapshot was saved.
    async fn restore(snapshot: &std::path::Path) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let output = tokio::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("snapshot")
            .arg("restore")
            .arg(snapshot)
            .arg("--data-dir")
            .arg(data.path().join("etcd"))
            .args([
                "--name",
                "rebuilt",
                "--initial-cluster",
                &format!("rebuilt={peer}"),
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .output()
            .await
            .context("run etcdctl snapshot restore")?;
        ensure!(
            output.status.success(),
            "etcdctl snapshot restore failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self::run(data, peer).await
    }

    /// Saves a snapshot of this etcd's keys to `path`.
    async fn save_snapshot(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let output = tokio::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint, "snapshot", "save"])
            .arg(path)
            .output()
            .await
            .context("run etcdctl snapshot save")?;
        ensure!(
            output.status.success(),
            "etcdctl snapshot save failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Runs etcd on `data` (a member named `rebuilt` with peer URL `peer`)
    /// and waits until it answers.
    async fn run(data: tempfile::TempDir, peer: String) -> anyhow::Result<Self> {
        let endpoint = format!("http://127.0.0.1:{}", free_port()?);
        let child = tokio::process::Command::new("etcd")
            .args([
                "--name",
                "rebuilt",
                "--data-dir",
                &data.path().join("etcd").to_string_lossy(),
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("rebuilt={peer}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start etcd (is it installed? scripts/test.sh installs it)")?;
        let etcd = Self {
            endpoint,
            child,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut client) =
                etcd_client::Client::connect([etcd.endpoint.as_str()], None).await
                && client.get("health", None).await.is_ok()
            {
                return Ok(etcd);
            }
            if Instant::now() > deadline {
                bail!("the fresh etcd on {} did not answer", etcd.endpoint);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for FreshEtcd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
