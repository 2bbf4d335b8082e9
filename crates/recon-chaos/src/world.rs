//! The services of one schedule, all real and all on loopback: a private
//! PostgreSQL holding the monolith's and the replica's databases, an etcd
//! and three Kafka brokers of their own, `recon monolith` (Source API, write API,
//! outbox relay), and three `recon serve` replicas, all of one declared
//! schema (the default one unless `--schema` names another).
//!
//! Each replica reaches etcd, PostgreSQL and the Source API through proxies
//! of its own, so the nemesis can cut one replica off (a partition) or make
//! its Source API fail without touching the others. A supervisor restarts a
//! killed replica after a short delay, as Kubernetes would.

use crate::observe::Admin;
use crate::schedule::BROKERS;
use anyhow::Context;
use recon_core::schema::Schema;
use recon_monolith::Monolith;
use recon_monolith::seed::{self, SeedSpec};
use recon_tests::broker::{BrokerSecurity, KafkaCluster, wait_for_port};
use recon_tests::etcd::EtcdServer;
use recon_tests::faulty_source::FaultySource;
use recon_tests::free_port;
use recon_tests::private_postgres::PrivatePostgres;
use recon_tests::process::{ReconProcess, start_monolith_with};
use recon_tests::proxy::FreezableProxy;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The topic the relay publishes to.
const TOPIC: &str = "chaos.changes";

/// Partitions of the topic.
pub const PARTITIONS: i64 = 4;

/// Timing of the replicas.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `--lease-ttl-secs`.
    pub lease_ttl_secs: u64,
    /// `--max-pause-secs`.
    pub max_pause_secs: u64,
    /// How long the supervisor waits before restarting a killed replica.
    pub restart_delay: Duration,
}

/// The data model of every schedule: its schema and, unless it is the
/// default one, the file the processes read it from (`RECON_SCHEMA`).
#[derive(Debug, Clone, Copy)]
pub struct DataModel {
    /// The schema.
    pub schema: &'static Schema,
    /// Its file's path; `None` for the default schema.
    pub file: Option<&'static str>,
}

impl DataModel {
    /// The environment of a `recon` process of this data model, logging
    /// at `info`.
    fn environment(&self) -> Vec<(&'static str, &'static str)> {
        let mut variables = vec![("RUST_LOG", "info")];
        variables.extend(self.file.map(|file| ("RECON_SCHEMA", file)));
        variables
    }
}

/// One `recon serve` process and its links.
pub struct Replica {
    /// Member id (`r1`…).
    pub id: String,
    /// Admin port.
    pub port: u16,
    /// The process.
    pub process: ReconProcess,
    /// Starts of the process so far (its counters restart with each).
    pub incarnation: u32,
    /// Its Source API proxy.
    pub source: FaultySource,
    /// Its link to etcd.
    pub etcd_link: FreezableProxy,
    /// Its link to PostgreSQL.
    pub postgres_link: FreezableProxy,
    /// Killed at, until the supervisor restarts it.
    pub killed_at: Option<Instant>,
    /// Frozen (SIGSTOP) now.
    pub frozen: bool,
}

impl Replica {
    /// Running and not frozen: its admin API answers.
    pub fn answering(&self) -> bool {
        self.killed_at.is_none() && !self.frozen
    }
}

/// Everything one schedule runs against.
pub struct World {
    /// The PostgreSQL server of both databases.
    pub postgres: PrivatePostgres,
    /// The monolith's database URL.
    pub monolith_db: String,
    /// The replica's database URL (direct, not through a link).
    pub replica_db: String,
    /// The monolith's database as a library (outbox backlog).
    pub monolith: Monolith,
    /// etcd.
    pub etcd: EtcdServer,
    /// Three Kafka brokers (replication factor 3, `min.insync.replicas` 2).
    pub broker: KafkaCluster,
    /// `recon monolith`.
    pub monolith_process: ReconProcess,
    /// `http://127.0.0.1:<port>` of the monolith's APIs.
    pub monolith_url: String,
    /// The replicas.
    pub replicas: Vec<Replica>,
    /// The service's etcd prefix.
    pub prefix: String,
    /// Where every process logs.
    pub logs: PathBuf,
    /// Replicas that exited without the nemesis killing them: (member, when).
    pub unexpected_exits: Vec<(String, Instant)>,
    timing: Timing,
    /// The schema of every process.
    pub data_model: DataModel,
    service: String,
    brokers: String,
    admin: Admin,
}

/// The seeded monolith: a dozen heavy-tailed tenants (a few hundred users
/// in the biggest, so that it is split into units).
fn spec(seed: u64) -> SeedSpec {
    SeedSpec {
        seed,
        tenants: 12,
        users_per_tenant_mean: 60.0,
        max_users_per_tenant: 400,
        ..SeedSpec::default()
    }
}

impl World {
    /// Starts every service and three replicas; returns once the replicas
    /// see each other and a leader, every partition has an owner, and the
    /// replica equals the monolith through Kafka alone.
    pub async fn start(
        logs: &Path,
        seed: u64,
        timing: Timing,
        data_model: DataModel,
    ) -> anyhow::Result<Self> {
        let postgres = PrivatePostgres::start().await?;
        let monolith_db = postgres.create_database("monolith").await?;
        let replica_db = postgres.create_database("replica").await?;
        // As a deployment does: the store is migrated once, before replicas.
        recon_tests::migrate_store_to(&replica_db, data_model.schema).await?;
        let monolith =
            Monolith::connect_with_schema(&monolith_db, data_model.schema.clone()).await?;
        if monolith.model().is_default() {
            seed::run(&monolith, &spec(seed)).await?;
        } else {
            seed::run_declared(&monolith, &spec(seed)).await?;
        }
        let etcd_directory = logs.join("etcd");
        std::fs::create_dir_all(&etcd_directory).context("create etcd directory")?;
        let etcd = EtcdServer::start(etcd_directory).await?;
        let broker = KafkaCluster::start_nodes(BROKERS as u32, BrokerSecurity::default()).await?;
        let brokers = broker.bootstrap_servers();
        let monolith_port = free_port()?;
        let monolith_process = start_monolith_with(
            logs,
            &monolith_db,
            monolith_port,
            &brokers,
            TOPIC,
            &data_model.environment(),
        )?;
        wait_for_port(monolith_port, Duration::from_secs(30)).await?;
        let service = "chaos".to_owned();
        let mut world = Self {
            postgres,
            monolith_db,
            replica_db,
            monolith,
            etcd,
            broker,
            monolith_process,
            monolith_url: format!("http://127.0.0.1:{monolith_port}"),
            replicas: Vec::new(),
            prefix: format!("/recon/{service}"),
            logs: logs.to_owned(),
            unexpected_exits: Vec::new(),
            timing,
            data_model,
            service,
            brokers,
            admin: Admin::new()?,
        };
        for index in 1..=3 {
            world.start_replica(&format!("r{index}")).await?;
        }
        Ok(world)
    }

    async fn start_replica(&mut self, id: &str) -> anyhow::Result<()> {
        let port = free_port()?;
        let source = FaultySource::start(&self.monolith_url).await?;
        let etcd_link = FreezableProxy::start(self.etcd.address()).await?;
        let postgres_address = SocketAddr::from(([127, 0, 0, 1], self.postgres.port()));
        let postgres_link = FreezableProxy::start(postgres_address).await?;
        let database_url = format!(
            "postgres://postgres@127.0.0.1:{}/replica",
            postgres_link.port
        );
        let admin_listen = format!("127.0.0.1:{port}");
        let ttl = self.timing.lease_ttl_secs.to_string();
        let max_pause = self.timing.max_pause_secs.to_string();
        let arguments = vec![
            "serve",
            "--database-url",
            &database_url,
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
            "--etcd-endpoints",
            &etcd_link.url,
            "--service",
            &self.service,
            "--member-id",
            id,
            "--lease-ttl-secs",
            &ttl,
            "--max-pause-secs",
            &max_pause,
            "--page-size",
            "50",
            "--min-unit-rows",
            "100",
            "--poll-interval-ms",
            "100",
            // Schedules ask for runs back to back; a short window keeps as
            // many runs in a schedule as before it existed.
            "--min-consumption-window",
            "1s",
            "--source-url",
            source.base_url(),
        ];
        let log = self.logs.join(format!("{id}.log"));
        let environment = self.data_model.environment();
        let process = ReconProcess::start(id, &arguments, &environment, log)?;
        wait_for_port(port, Duration::from_secs(30))
            .await
            .with_context(|| format!("{id} did not open its admin port"))?;
        self.replicas.push(Replica {
            id: id.to_owned(),
            port,
            process,
            incarnation: 1,
            source,
            etcd_link,
            postgres_link,
            killed_at: None,
            frozen: false,
        });
        Ok(())
    }

    /// The replica `id`.
    pub fn replica_mut(&mut self, id: &str) -> anyhow::Result<&mut Replica> {
        self.replicas
            .iter_mut()
            .find(|replica| replica.id == id)
            .with_context(|| format!("no replica {id}"))
    }

    /// (member, incarnation, admin port) of every replica that answers.
    pub fn answering(&self) -> Vec<(String, u32, u16)> {
        self.replicas
            .iter()
            .filter(|replica| replica.answering())
            .map(|replica| (replica.id.clone(), replica.incarnation, replica.port))
            .collect()
    }

    /// The leader as the first answering replica sees it.
    pub async fn leader(&self) -> Option<(String, u64)> {
        for (_, _, port) in self.answering() {
            if let Ok(view) = self.admin.cluster(port).await
                && let (Some(leader), Some(epoch)) = (
                    view["status"]["leader"].as_str(),
                    view["status"]["epoch"].as_u64(),
                )
            {
                return Some((leader.to_owned(), epoch));
            }
        }
        None
    }

    /// SIGKILLs a replica; the supervisor restarts it later.
    pub async fn kill(&mut self, id: &str) -> anyhow::Result<()> {
        let replica = self.replica_mut(id)?;
        replica.process.kill().await?;
        replica.killed_at = Some(Instant::now());
        replica.frozen = false;
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) of a running replica.
    pub fn freeze(&mut self, id: &str, frozen: bool) -> anyhow::Result<()> {
        let replica = self.replica_mut(id)?;
        if replica.killed_at.is_some() {
            return Ok(());
        }
        if frozen {
            replica.process.stop()?;
        } else {
            replica.process.resume()?;
        }
        replica.frozen = frozen;
        Ok(())
    }

    /// The supervisor's round: restarts replicas killed at least the
    /// restart delay ago, and those that exited on their own (recorded).
    pub async fn supervise(&mut self) -> anyhow::Result<()> {
        let delay = self.timing.restart_delay;
        for replica in &mut self.replicas {
            if replica.killed_at.is_none() && replica.process.exited() {
                let log = replica.process.log();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "{} exited without being killed; its last lines:\n{}",
                    replica.id,
                    lines[lines.len().saturating_sub(15)..].join("\n")
                );
                self.unexpected_exits
                    .push((replica.id.clone(), Instant::now()));
                replica.killed_at = Some(Instant::now());
            }
            if replica
                .killed_at
                .is_some_and(|killed_at| killed_at.elapsed() >= delay)
            {
                replica.process.restart().await?;
                replica.incarnation += 1;
                replica.killed_at = None;
                replica.frozen = false;
            }
        }
        Ok(())
    }

    /// Undoes every fault: thaws replicas, links and etcd, clears Source
    /// API faults, restarts killed replicas now.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        self.etcd.freeze(false).ok();
        for replica in &mut self.replicas {
            replica
                .source
                .set_fault(recon_tests::faulty_source::Fault::None);
            replica.etcd_link.thaw();
            replica.postgres_link.thaw();
            if replica.frozen {
                replica.process.resume()?;
                replica.frozen = false;
            }
            if let Some(killed_at) = replica.killed_at.as_mut() {
                // Due now.
                *killed_at -= self.timing.restart_delay;
            }
        }
        self.supervise().await
    }

    /// Which partitions the answering replicas own, and whether every
    /// replica answered.
    pub async fn ownership(&self) -> (Vec<i64>, bool) {
        let mut owned = Vec::new();
        let mut all_answered = true;
        for (_, _, port) in self.answering() {
            match self.admin.partitions(port).await {
                Ok(partitions) => owned.extend(partitions),
                Err(_) => all_answered = false,
            }
        }
        owned.sort_unstable();
        owned.dedup();
        (
            owned,
            all_answered && self.answering().len() == self.replicas.len(),
        )
    }

    /// The admin client.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The last lines of every process's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut text = String::new();
        let processes = std::iter::once(&self.monolith_process)
            .chain(self.replicas.iter().map(|replica| &replica.process));
        for process in processes {
            let log = process.log();
            let all: Vec<&str> = log.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            text.push_str(&format!(
                "\n--- {} (last {lines} lines) ---\n{tail}\n",
                process.name
            ));
        }
        text
    }
}
