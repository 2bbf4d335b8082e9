//! The shared fixture: a seeded monolith (`recon monolith`, PostgreSQL, its
//! outbox relay), a broker, one replica database and three `recon serve`
//! replicas in one consumer group and one etcd service prefix, each reading
//! the Source API through a fault-injecting proxy of its own so that a test
//! can slow one replica's units down without touching the others.

use super::admin::{Admin, ClusterView};
use super::history::History;
use anyhow::{Context, bail, ensure};
use recon_core::schema::Schema;
use recon_monolith::Monolith;
use recon_monolith::seed::{self, SeedSpec};
use recon_store::{MigrationOptions, Store};
use recon_tests::broker::{BrokerSecurity, KafkaCluster, wait_for_port};
use recon_tests::faulty_source::FaultySource;
use recon_tests::process::{ReconProcess, start_monolith_with};
use recon_tests::proxy::FreezableProxy;
pub use recon_tests::wait::wait_until;
use recon_tests::{Backend, TestDatabase, free_port};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TOPIC: &str = "cluster.changes";

/// Lease TTL of every replica: short, so that failovers fit in a test.
pub const LEASE_TTL_SECS: u64 = 3;

/// Smallest unit the planner splits a big tenant into.
const MIN_UNIT_ROWS: &str = "200";

/// What differs between the fixtures of the tests.
pub struct Settings {
    /// Seed of the workload.
    pub seed: u64,
    /// `--max-pause-secs` of the replicas.
    pub max_pause_secs: u64,
    /// The replicas reach etcd through a proxy the test can freeze (an
    /// etcd outage for them only).
    pub etcd_proxy: bool,
    /// Kafka brokers (KRaft nodes): 1, or 3 for a cluster with replication
    /// factor 3 and `min.insync.replicas` 2.
    pub kafka_brokers: u32,
    /// The replicas join the consumer group with dynamic membership (static,
    /// `group.instance.id` = member id, is recon's default).
    pub dynamic_membership: bool,
    /// Where the replicas export their spans (OTLP/gRPC), if anywhere.
    pub otlp_endpoint: Option<String>,
    /// Credentials everywhere (read from files): a password in the replica
    /// database's URL, the Source API token, the admin token.
    pub secrets: Option<Secrets>,
    /// `--schedule` of the replicas.
    pub schedule: Option<String>,
    /// `--watch-generation` of the replicas.
    pub watch_generation: Option<String>,
    /// What the replicas coordinate through.
    pub coordinator: CoordinatorKind,
    /// The declared schema of the monolith and the replicas (a file under
    /// `proto/schemas/`); `None`: the default schema.
    pub schema_file: Option<&'static str>,
}

/// The coordinator of a test cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorKind {
    /// The test etcd (`RECON_TEST_ETCD_ENDPOINTS`).
    Etcd,
    /// The shared test ZooKeeper (`RECON_TEST_ZOOKEEPER`).
    ZooKeeper,
    /// The replica database itself (`--postgres-coordinator`).
    Postgres,
}

/// The credentials of a cluster started with [`Settings::secrets`].
#[derive(Debug, Clone)]
pub struct Secrets {
    /// A password in the replica database's URL (the test server trusts any).
    pub database_password: String,
    /// The monolith's Source API bearer token.
    pub source_token: String,
    /// The replicas' admin token.
    pub admin_token: String,
}

impl Settings {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            max_pause_secs: 120,
            etcd_proxy: false,
            kafka_brokers: 1,
            dynamic_membership: false,
            otlp_endpoint: None,
            secrets: None,
            schedule: None,
            watch_generation: None,
            coordinator: CoordinatorKind::Etcd,
            schema_file: None,
        }
    }

    /// These settings with the monolith and the replicas on the schema of
    /// `proto/schemas/<file>`.
    pub fn with_schema(mut self, file: &'static str) -> Self {
        self.schema_file = Some(file);
        self
    }

    /// The path of the schema file, if one is set.
    fn schema_path(&self) -> Option<String> {
        self.schema_file.map(|file| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../proto/schemas")
                .join(file)
                .display()
                .to_string()
        })
    }

    /// These settings with the replicas on ZooKeeper.
    pub fn on_zookeeper(mut self) -> Self {
        self.coordinator = CoordinatorKind::ZooKeeper;
        self
    }

    /// These settings with the replicas coordinating through their own
    /// PostgreSQL database.
    pub fn on_postgres(mut self) -> Self {
        self.coordinator = CoordinatorKind::Postgres;
        self
    }
}

/// One `recon serve` process and its Source API proxy.
pub struct Replica {
    /// Its member id.
    pub id: String,
    /// Its admin port.
    pub port: u16,
    /// The process.
    pub process: ReconProcess,
    /// The proxy it reads the Source API through.
    pub proxy: FaultySource,
    /// Since when it is frozen or dead, if it is.
    pub silent_since: Option<Instant>,
    /// Whether a new replica took its place.
    pub replaced: bool,
}

/// Everything a cluster test runs against.
pub struct Cluster {
    /// Client of the replicas' admin APIs.
    pub admin: Admin,
    /// Everything written under the service's etcd prefix.
    pub history: History,
    /// The monolith's database as a library (random changes, outbox).
    pub monolith: Monolith,
    /// The monolith's database.
    pub monolith_db: TestDatabase,
    /// The replica database all replicas share.
    pub replica_db: TestDatabase,
    /// The schema of the monolith and the replicas.
    pub schema: Schema,
    /// `recon monolith`: Source API and outbox relay.
    pub monolith_process: ReconProcess,
    /// Every replica started, dead ones included.
    pub replicas: Vec<Replica>,
    monolith_url: String,
    /// How the replicas (and tools) reach the coordinator: `--etcd-endpoints
    /// <the proxy's, if any>` or `--zookeeper <servers>`.
    coordination: [String; 2],
    etcd_proxy: Option<FreezableProxy>,
    service: String,
    brokers: String,
    settings: Settings,
    logs: tempfile::TempDir,
    /// The Kafka brokers.
    pub broker: KafkaCluster,
}

impl Cluster {
    /// Starts everything, waits until three members are in, every partition
    /// has one owner, and the replica equals the monolith through Kafka
    /// alone.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let logs = tempfile::tempdir()?;
        let broker =
            KafkaCluster::start_nodes(settings.kafka_brokers, BrokerSecurity::default()).await?;
        let monolith_db = TestDatabase::create(Backend::Postgres).await?;
        let replica_db = TestDatabase::create(Backend::Postgres).await?;
        let schema = match settings.schema_path() {
            Some(path) => Schema::parse(&std::fs::read_to_string(&path)?)?,
            None => Schema::default_schema().clone(),
        };
        Store::migrate_to(&replica_db.url, MigrationOptions::default(), &schema).await?;
        let monolith = Monolith::connect_with_schema(&monolith_db.url, schema.clone()).await?;
        if settings.schema_file.is_some() {
            seed::run_declared(&monolith, &spec(settings.seed)).await?;
        } else {
            seed::run(&monolith, &spec(settings.seed)).await?;
        }
        let monolith_port = free_port()?;
        let brokers = broker.bootstrap_servers();
        let mut monolith_environment = Vec::new();
        if let Some(path) = settings.schema_path() {
            monolith_environment.push(("RECON_SCHEMA".to_owned(), path));
        }
        if let Some(secrets) = &settings.secrets {
            let file = write_secret(logs.path(), "source-token", &secrets.source_token)?;
            monolith_environment.push(("RECON_MONOLITH_TOKEN_FILE".to_owned(), file));
        }
        let monolith_environment: Vec<(&str, &str)> = monolith_environment
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let monolith_process = start_monolith_with(
            logs.path(),
            &monolith_db.url,
            monolith_port,
            &brokers,
            TOPIC,
            &monolith_environment,
        )?;
        wait_for_port(monolith_port, Duration::from_secs(30)).await?;
        let service = format!("cluster-{}", uuid::Uuid::new_v4().simple());
        let prefix = format!("/recon/{service}");
        let (history, etcd_proxy, coordination) = match settings.coordinator {
            CoordinatorKind::ZooKeeper => {
                let servers = recon_tests::zookeeper::shared_server()?;
                let history = History::start_zookeeper(&servers, &prefix).await?;
                (history, None, ["--zookeeper".to_owned(), servers])
            }
            CoordinatorKind::Postgres => {
                let history = History::start_postgres(&replica_db.url, &prefix).await?;
                let url = replica_db.url.clone();
                (history, None, ["--postgres-coordinator".to_owned(), url])
            }
            CoordinatorKind::Etcd => {
                let endpoints = etcd_endpoints()?;
                let history = History::start(&endpoints, &prefix).await?;
                let etcd_proxy = if settings.etcd_proxy {
                    Some(FreezableProxy::start(first_address(&endpoints)?).await?)
                } else {
                    None
                };
                let endpoints = match &etcd_proxy {
                    Some(proxy) => proxy.url.clone(),
                    None => endpoints.join(","),
                };
                (
                    history,
                    etcd_proxy,
                    ["--etcd-endpoints".to_owned(), endpoints],
                )
            }
        };
        let mut admin = Admin::new()?;
        admin.token = settings
            .secrets
            .as_ref()
            .map(|secrets| secrets.admin_token.clone());
        let mut cluster = Self {
            admin,
            history,
            monolith,
            monolith_db,
            replica_db,
            schema,
            monolith_process,
            replicas: Vec::new(),
            monolith_url: format!("http://127.0.0.1:{monolith_port}"),
            coordination,
            etcd_proxy,
            service,
            brokers,
            settings,
            logs,
            broker,
        };
        let started = async {
            for _ in 0..3 {
                cluster.add_replica().await?;
            }
            cluster.wait_for_members(3).await?;
            // A run starts on a settled group: a rebalance during a pause is
            // tested on purpose only (see `pause`).
            cluster.wait_for_partitions().await?;
            cluster.wait_until_equal("initial replication").await
        };
        match started.await {
            Ok(()) => Ok(cluster),
            Err(error) => {
                eprintln!("{}", cluster.log_tails());
                Err(error)
            }
        }
    }

    /// Starts one more replica (`r<n>`) and waits for its admin port.
    pub async fn add_replica(&mut self) -> anyhow::Result<&Replica> {
        self.start_replica(true).await
    }

    /// Starts one more replica (`r<n>`) without `--source-url`: it consumes
    /// and pauses for runs but cannot reconcile. Waits for its admin port.
    pub async fn add_pause_only_replica(&mut self) -> anyhow::Result<&Replica> {
        self.start_replica(false).await
    }

    async fn start_replica(&mut self, with_source: bool) -> anyhow::Result<&Replica> {
        let id = format!("r{}", self.replicas.len() + 1);
        let proxy = FaultySource::start(&self.monolith_url).await?;
        // A port free a moment ago can be taken by another test's server
        // before the replica binds it: the port then answers for someone
        // else and the replica exits at once. Start again on a fresh port.
        let mut attempts = 0;
        let (port, process) = loop {
            attempts += 1;
            // The log is appended to: look only at this attempt's lines.
            let log_path = self.logs.path().join(format!("{id}.log"));
            let logged_before = std::fs::metadata(&log_path).map_or(0, |meta| meta.len());
            let (port, mut process) = self.spawn_replica(&id, &proxy, with_source).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let log = std::fs::read(&log_path).unwrap_or_default();
            let this_attempt = String::from_utf8_lossy(
                log.get(usize::try_from(logged_before).unwrap_or(0)..)
                    .unwrap_or_default(),
            );
            if attempts < 3 && process.exited() && this_attempt.contains("Address already in use") {
                continue;
            }
            break (port, process);
        };
        self.replicas.push(Replica {
            id,
            port,
            process,
            proxy,
            silent_since: None,
            replaced: false,
        });
        Ok(self.replicas.last().expect("just pushed"))
    }

    /// Starts replica `id` on a fresh admin port and waits for the port.
    async fn spawn_replica(
        &self,
        id: &str,
        proxy: &FaultySource,
        with_source: bool,
    ) -> anyhow::Result<(u16, ReconProcess)> {
        let port = free_port()?;
        let admin_listen = format!("127.0.0.1:{port}");
        let ttl = LEASE_TTL_SECS.to_string();
        let max_pause = self.settings.max_pause_secs.to_string();
        let mut arguments = vec![
            "serve",
            "--kafka-bootstrap-servers",
            &self.brokers,
            "--kafka-topic",
            TOPIC,
            "--group-id",
            "replicas",
            "--admin-listen",
            &admin_listen,
            "--max-batch",
            "500",
            &self.coordination[0],
            &self.coordination[1],
            "--service",
            &self.service,
            "--member-id",
            &id,
            "--lease-ttl-secs",
            &ttl,
            "--max-pause-secs",
            &max_pause,
            "--page-size",
            "50",
            "--min-unit-rows",
            MIN_UNIT_ROWS,
            "--poll-interval-ms",
            "100",
            "--group-lag-interval",
            "2s",
            // Scenarios run runs back to back; the window itself is tested
            // in the engine (`back_to_back_runs_leave_consumers_a_window`).
            "--min-consumption-window",
            "1s",
        ];
        if with_source {
            arguments.extend(["--source-url", proxy.base_url()]);
        }
        if self.settings.dynamic_membership {
            arguments.push("--dynamic-membership");
        }
        if let Some(schedule) = &self.settings.schedule {
            arguments.extend(["--schedule", schedule.as_str()]);
        }
        if let Some(interval) = &self.settings.watch_generation {
            arguments.extend(["--watch-generation", interval.as_str()]);
        }
        let log = self.logs.path().join(format!("{id}.log"));
        let service_name = format!("recon-{id}");
        let schema_path = self.settings.schema_path();
        let mut environment = vec![("RUST_LOG", "info")];
        if let Some(path) = &schema_path {
            environment.push(("RECON_SCHEMA", path.as_str()));
        }
        let secret_files = match &self.settings.secrets {
            Some(secrets) => {
                let url = with_password(&self.replica_db.url, &secrets.database_password)?;
                Some([
                    (
                        "RECON_DATABASE_URL_FILE",
                        write_secret(self.logs.path(), "database-url", &url)?,
                    ),
                    (
                        "RECON_SOURCE_TOKEN_FILE",
                        write_secret(self.logs.path(), "source-token", &secrets.source_token)?,
                    ),
                    (
                        "RECON_ADMIN_TOKEN_FILE",
                        write_secret(self.logs.path(), "admin-token", &secrets.admin_token)?,
                    ),
                ])
            }
            None => None,
        };
        match &secret_files {
            Some(files) => {
                environment.extend(files.iter().map(|(name, path)| (*name, path.as_str())))
            }
            None => arguments.extend(["--database-url", self.replica_db.url.as_str()]),
        }
        if let Some(endpoint) = &self.settings.otlp_endpoint {
            environment.extend([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_SERVICE_NAME", service_name.as_str()),
                // Export promptly: the test waits for the spans.
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ]);
        }
        let process = ReconProcess::start(id, &arguments, &environment, log)?;
        wait_for_port(port, Duration::from_secs(30))
            .await
            .with_context(|| format!("{id} did not open its admin port"))?;
        Ok((port, process))
    }

    /// The coordinator the replicas use, for messages.
    pub fn coordinator_name(&self) -> &'static str {
        match self.settings.coordinator {
            CoordinatorKind::Etcd => "etcd",
            CoordinatorKind::ZooKeeper => "ZooKeeper",
            CoordinatorKind::Postgres => "PostgreSQL",
        }
    }

    /// The options naming the coordinator the replicas use:
    /// `--etcd-endpoints <endpoints>`, `--zookeeper <servers>` or
    /// `--postgres-coordinator <url>`.
    pub fn coordination_args(&self) -> [&str; 2] {
        [&self.coordination[0], &self.coordination[1]]
    }

    /// The service name: the replicas' etcd prefix is `/recon/<service>`.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Where the test keeps the processes' logs.
    pub fn logs(&self) -> &std::path::Path {
        self.logs.path()
    }

    /// The proxy between the replicas and etcd, if the settings asked for one.
    pub fn etcd_proxy(&self) -> Option<&FreezableProxy> {
        self.etcd_proxy.as_ref()
    }

    /// The replica with member id `id`.
    pub fn replica(&self, id: &str) -> anyhow::Result<&Replica> {
        self.replicas
            .iter()
            .find(|replica| replica.id == id)
            .with_context(|| format!("no replica {id}"))
    }

    /// The replica with member id `id`, mutable.
    pub fn replica_mut(&mut self, id: &str) -> anyhow::Result<&mut Replica> {
        self.replicas
            .iter_mut()
            .find(|replica| replica.id == id)
            .with_context(|| format!("no replica {id}"))
    }

    /// SIGKILLs a replica; returns when.
    pub async fn kill(&mut self, member: &str) -> anyhow::Result<Instant> {
        let replica = self.replica_mut(member)?;
        let killed_at = Instant::now();
        replica.process.kill().await?;
        replica.silent_since.get_or_insert(killed_at);
        Ok(killed_at)
    }

    /// SIGSTOPs a replica; returns when.
    pub fn freeze(&mut self, member: &str) -> anyhow::Result<Instant> {
        let replica = self.replica_mut(member)?;
        let frozen_at = Instant::now();
        replica.process.stop()?;
        replica.silent_since.get_or_insert(frozen_at);
        Ok(frozen_at)
    }

    /// Stops a replica gracefully (SIGTERM: its consumer leaves the group);
    /// it is not replaced.
    pub async fn retire(&mut self, member: &str) -> anyhow::Result<()> {
        let replica = self.replica_mut(member)?;
        let exit = replica.process.terminate().await?;
        replica.silent_since = Some(Instant::now());
        replica.replaced = true;
        ensure!(exit == Some(0), "{member} exited with {exit:?} on SIGTERM");
        Ok(())
    }

    /// Starts a new replica for each one that died, as a supervisor would,
    /// and waits until the consumer group owns every partition again.
    /// The group coordinator expires the dead members after the session
    /// timeout and rebalances on its own; the new ones join at once.
    pub async fn replace_dead(&mut self) -> anyhow::Result<()> {
        let mut dead = 0;
        for replica in &mut self.replicas {
            if !replica.replaced && replica.silent_since.is_some() {
                replica.replaced = true;
                dead += 1;
            }
        }
        for _ in 0..dead {
            self.add_replica().await?;
        }
        let live = self.live_ports().len();
        self.wait_for_members(live).await?;
        self.wait_for_partitions().await
    }

    /// Waits until the group has settled: every live replica owns a
    /// partition (there are at most four) and every partition has exactly
    /// one owner.
    pub async fn wait_for_partitions(&self) -> anyhow::Result<()> {
        wait_until(
            "every live replica to own partitions, and every partition one owner",
            Duration::from_secs(30),
            || async {
                let mut owned = Vec::new();
                for port in self.live_ports() {
                    let partitions = self.admin.consumer(port).await?.partitions;
                    if partitions.is_empty() {
                        return Ok(false);
                    }
                    for partition in partitions {
                        owned.push(partition["partition"].as_i64().unwrap_or(-1));
                    }
                }
                owned.sort_unstable();
                Ok(owned == [0, 1, 2, 3])
            },
        )
        .await
    }

    /// Polls `GET /cluster` on `port` every 50 ms until `condition` holds;
    /// returns the view that satisfied it.
    pub async fn wait_for_view(
        &self,
        port: u16,
        what: &str,
        condition: impl Fn(&ClusterView) -> bool,
    ) -> anyhow::Result<ClusterView> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(view) = self.admin.cluster(port).await
                && condition(&view)
            {
                return Ok(view);
            }
            if Instant::now() > deadline {
                bail!("timed out after 30 s waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `units_completed` of every live member.
    pub async fn units_completed(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut counters = BTreeMap::new();
        for replica in &self.replicas {
            if replica.silent_since.is_none() {
                let view = self.admin.cluster(replica.port).await?;
                counters.insert(replica.id.clone(), view.units_completed());
            }
        }
        Ok(counters)
    }

    /// Whether a replica's process has exited (reaped or not).
    pub fn has_exited(&self, member: &str) -> anyhow::Result<bool> {
        let Some(pid) = self.replica(member)?.process.pid() else {
            return Ok(true);
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return Ok(true);
        };
        // `pid (name) state …`: Z is an exited process nobody reaped yet.
        let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
        Ok(state.starts_with('Z') || state.starts_with('X'))
    }

    /// Admin ports of the replicas that still run.
    pub fn live_ports(&self) -> Vec<u16> {
        self.replicas
            .iter()
            .filter(|replica| replica.silent_since.is_none())
            .map(|replica| replica.port)
            .collect()
    }

    /// Waits until every live replica sees `count` members and a leader.
    pub async fn wait_for_members(&self, count: usize) -> anyhow::Result<()> {
        for port in self.live_ports() {
            let what = format!("replica on {port} to see {count} members and a leader");
            wait_until(&what, Duration::from_secs(30), || async {
                let view = self.admin.cluster(port).await?;
                Ok(view.status.members.len() == count && view.status.leader.is_some())
            })
            .await?;
        }
        Ok(())
    }

    /// The current leader and its epoch, as the replica on `port` sees it.
    pub async fn leader_seen_by(&self, port: u16) -> anyhow::Result<(String, u64)> {
        let status = self.admin.cluster(port).await?.status;
        match (status.leader, status.epoch) {
            (Some(leader), Some(epoch)) => Ok((leader, epoch)),
            _ => bail!("the replica on {port} sees no leader"),
        }
    }

    /// The store epoch the run's writes carry, as its leader last wrote it
    /// (it changes when another leader adopts the run).
    pub fn run_epoch(&self, run: &str) -> anyhow::Result<u64> {
        use super::history::Changes as _;
        self.history
            .changes()?
            .run_states(run)
            .last()
            .map(|(_, state)| state.epoch)
            .with_context(|| format!("no state of run {run} seen"))
    }

    /// Asks for a run (guard override: random deletions during the run may
    /// legitimately empty small tenants) and returns its id.
    pub async fn request_run(&self) -> anyhow::Result<String> {
        let seen = self.history.len();
        let port = *self.live_ports().first().context("no live replica")?;
        let body = serde_json::json!({ "allow_mass_delete": true, "confirm_mass_delete": true });
        self.admin.request_run(port, body).await?;
        self.history.wait_for_new_run(seen).await
    }

    /// Starts `recon reconcile --cluster --wait` for this cluster with
    /// `extra` options (its log is `<name>.log`).
    pub fn start_waiting_request(
        &self,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<ReconProcess> {
        let [flag, value] = self.coordination_args();
        let mut args = vec![
            "reconcile",
            "--cluster",
            "--wait",
            flag,
            value,
            "--service",
            self.service(),
        ];
        args.extend_from_slice(extra);
        ReconProcess::start(
            name,
            &args,
            &[("RUST_LOG", "warn")],
            self.logs().join(format!("{name}.log")),
        )
    }

    /// `recon runs <args…> --output json` against the replica database:
    /// its standard output, parsed.
    pub fn runs_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let output = std::process::Command::new(recon_tests::recon_build::recon_binary()?)
            .arg("runs")
            .args(args)
            .args(["--output", "json", "--database-url", &self.replica_db.url])
            .output()
            .context("run recon runs")?;
        ensure!(
            output.status.success(),
            "recon runs {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "recon runs {args:?} printed no JSON: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// The last lines of every process's log.
    pub fn log_tails(&self) -> String {
        let mut text = String::new();
        let processes = std::iter::once(&self.monolith_process)
            .chain(self.replicas.iter().map(|replica| &replica.process));
        for process in processes {
            let log = process.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            text.push_str(&format!(
                "\n--- {} (last 25 lines) ---\n{tail}\n",
                process.name
            ));
        }
        text
    }

    /// Ends a test: on failure, prints every log's tail and keeps the logs.
    pub fn finish(self, outcome: anyhow::Result<()>) -> anyhow::Result<()> {
        if outcome.is_err() {
            eprintln!("{}", self.log_tails());
            eprintln!("logs kept in {}", self.logs.keep().display());
        }
        outcome
    }
}

/// Writes `value` to the file `name` under `directory`; returns its path.
fn write_secret(directory: &std::path::Path, name: &str, value: &str) -> anyhow::Result<String> {
    let path = directory.join(name);
    std::fs::write(&path, format!("{value}\n"))?;
    Ok(path.display().to_string())
}

/// `url` (`postgres://user@host/…`) with `password` for its user.
fn with_password(url: &str, password: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").context("a URL without scheme")?;
    let (user, host) = rest.split_once('@').context("a URL without user")?;
    Ok(format!("{scheme}://{user}:{password}@{host}"))
}

/// Sixteen tenants, heavy-tailed (1 000 to 3 000 users in all): with
/// `--min-unit-rows 200` and three members the biggest one or two are split
/// into key ranges per kind (the seeds the tests use have a biggest tenant
/// of 148 to 349 users; `completes` checks that its plan has split units).
fn spec(seed: u64) -> SeedSpec {
    SeedSpec {
        seed,
        tenants: 16,
        users_per_tenant_mean: 120.0,
        max_users_per_tenant: 1_000,
        ..SeedSpec::default()
    }
}

pub(super) fn etcd_endpoints() -> anyhow::Result<Vec<String>> {
    let value = std::env::var("RECON_TEST_ETCD_ENDPOINTS").unwrap_or_default();
    let endpoints: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        bail!(
            "RECON_TEST_ETCD_ENDPOINTS is not set: run the tests through scripts/test.sh, \
             which starts etcd, or start one and export RECON_TEST_ETCD_ENDPOINTS"
        );
    }
    Ok(endpoints)
}

/// The socket address of the first etcd endpoint (`http://IP:PORT`).
fn first_address(endpoints: &[String]) -> anyhow::Result<SocketAddr> {
    let url = endpoints.first().context("no etcd endpoint")?;
    let address = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    address
        .parse()
        .with_context(|| format!("etcd endpoint {url} is not http://IP:PORT"))
}
