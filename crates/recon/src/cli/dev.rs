//! The development commands: `recon monolith`, `recon seed`, `recon demo`
//! and `recon bench …`.

use super::{KafkaPropertyArgs, SchemaFileArgs, parse_share};
use crate::secrets;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

impl MonolithArgs {
    /// The monolith database's URL, given or read from its file.
    pub fn database_url(&self) -> anyhow::Result<String> {
        secrets::require(
            self.database_url.as_deref(),
            self.database_url_file.as_deref(),
            "--database-url",
        )
    }

    /// The Source API's bearer token, if any.
    pub fn auth_token(&self) -> anyhow::Result<Option<String>> {
        secrets::resolve(
            self.auth_token.as_deref(),
            self.auth_token_file.as_deref(),
            "--auth-token",
        )
    }
}

/// Options of `recon monolith`.
#[derive(Debug, Args)]
pub struct MonolithArgs {
    /// Database of the monolith (`postgres://…` or `sqlite://path?mode=rwc`).
    #[arg(
        long,
        env = "RECON_MONOLITH_DATABASE_URL",
        hide_env_values = true,
        required_unless_present = "database_url_file"
    )]
    pub database_url: Option<String>,
    /// A file holding the database URL (instead of `--database-url`).
    #[arg(
        long,
        env = "RECON_MONOLITH_DATABASE_URL_FILE",
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "RECON_MONOLITH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Bearer token required on /v1 and /admin routes (none: no auth).
    #[arg(long, env = "RECON_MONOLITH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// A file holding the bearer token (instead of `--auth-token`).
    #[arg(long, env = "RECON_MONOLITH_TOKEN_FILE", conflicts_with = "auth_token")]
    pub auth_token_file: Option<PathBuf>,
    /// Kafka bootstrap servers (`host:port,…`) the outbox relay publishes
    /// change events to; without them the monolith runs without a relay.
    #[arg(long, env = "RECON_KAFKA_BOOTSTRAP_SERVERS")]
    pub kafka_bootstrap_servers: Option<String>,
    /// The change topic.
    #[arg(long, env = "RECON_KAFKA_TOPIC", default_value = "recon.changes")]
    pub kafka_topic: String,
    /// Partitions of the change topic when the relay has to create it.
    #[arg(long, env = "RECON_KAFKA_PARTITIONS", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub kafka_partitions: i32,
    /// Extra librdkafka properties of the relay's producer.
    #[command(flatten)]
    pub kafka_properties: KafkaPropertyArgs,
    /// Most outbox rows the relay publishes per batch.
    #[arg(long, env = "RECON_RELAY_BATCH_SIZE", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub relay_batch_size: u64,
    /// How often the relay polls a drained outbox, in milliseconds.
    #[arg(long, env = "RECON_RELAY_POLL_INTERVAL_MS", default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub relay_poll_interval_ms: u64,
    /// The schema the monolith serves (its tables, routes and events).
    #[command(flatten)]
    pub schema: SchemaFileArgs,
}

/// Workload shape shared by `seed` and `demo`.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Seed every id and value derives from.
    #[arg(long, default_value_t = 42, env = "RECON_WORKLOAD_SEED")]
    pub seed: u64,
    /// Number of tenants.
    #[arg(long, default_value_t = 40, env = "RECON_WORKLOAD_TENANTS")]
    pub tenants: usize,
    /// Mean users per tenant (heavy-tailed: a few tenants get far more).
    #[arg(
        long,
        default_value_t = 200.0,
        env = "RECON_WORKLOAD_USERS_PER_TENANT_MEAN"
    )]
    pub users_per_tenant_mean: f64,
    /// Cap on the users of one tenant.
    #[arg(
        long,
        default_value_t = 20_000,
        env = "RECON_WORKLOAD_MAX_USERS_PER_TENANT"
    )]
    pub max_users_per_tenant: usize,
}

/// Options of `recon seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Database of the monolith to fill.
    #[arg(long, env = "RECON_MONOLITH_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The workload.
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// The monolith's schema; any other than the default gets a random
    /// population of its kinds (scope values and mean sizes from the
    /// workload).
    #[command(flatten)]
    pub schema: SchemaFileArgs,
}

/// Options of `recon demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The workload.
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Keep the demo's data directory instead of deleting it at the end.
    #[arg(long, env = "RECON_DEMO_KEEP_DATA")]
    pub keep_data: bool,
    /// Coordinate the three replicas through this etcd (e.g.
    /// `http://127.0.0.1:2379`) instead of the in-process coordinator.
    #[arg(long, env = "RECON_DEMO_ETCD")]
    pub etcd: Option<String>,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce a backlog of change events, then time a replica consumer
    /// draining it into the store (events/s).
    Drain(DrainArgs),
    /// Time `recon reconcile` (a child process per run) against the
    /// reference monolith: a full load, then drifted replicas with and
    /// without range digests, next to a naive reconciliation and reladiff's
    /// detection; every run is checked for convergence with plain SQL.
    Reconcile(ReconcileBenchArgs),
    /// Replication lag while a run reconciles a drifted replica, with the
    /// consumers paused for it and left running, side by side: each
    /// change's lag from the monolith's commit to the replica's write,
    /// p50/p99/max, and the run's duration (Apache Kafka, a `recon serve`
    /// child, writes flowing through the monolith).
    Lag(LagBenchArgs),
    /// The naive baseline of `bench reconcile` (run by it as a child
    /// process): upsert every source row and delete every replica row the
    /// source lacks, one statement at a time.
    #[command(hide = true)]
    Naive(NaiveArgs),
    /// The compare-then-write baseline of `bench reconcile` (run by it as
    /// a child process): fetch each page, compare it with the replica's
    /// rows of its key span, write only the rows that differ, a batch per
    /// page.
    #[command(hide = true)]
    Compare(NaiveArgs),
}

/// Options of `recon bench reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileBenchArgs {
    /// PostgreSQL database of the reference monolith. The bench owns it: a
    /// database that does not hold this seed's workload is wiped (its
    /// `public` schema dropped and recreated) and seeded.
    #[arg(long, env = "RECON_MONOLITH_DATABASE_URL", hide_env_values = true)]
    pub monolith_database_url: String,
    /// PostgreSQL database of the replica store. The bench owns it: it
    /// migrates it, empties the replica tables, damages them on purpose
    /// (drift) and creates helper functions and views (`bench_*`) in it.
    #[arg(long, env = "RECON_DATABASE_URL", hide_env_values = true)]
    pub replica_database_url: String,
    /// Workload size: 1.0 is W1 (1,000 heavy-tailed tenants, about 1M
    /// users, 50k groups and 2M memberships); 0.1 is a tenth of it.
    #[arg(long, default_value_t = 1.0, value_parser = parse_scale, env = "RECON_BENCH_SCALE")]
    pub scale: f64,
    /// Instead of the scale's tenants: ONE tenant of this many users (with
    /// its groups and memberships in W1's proportions), to measure a big
    /// tenant on its own — e.g. `--one-tenant 1000000 --drift 0` compares
    /// the unchanged tenant's check with digests against its full scan.
    #[arg(long, conflicts_with = "scale", value_parser = clap::value_parser!(u64).range(1..=10_000_000), env = "RECON_BENCH_ONE_TENANT")]
    pub one_tenant: Option<u64>,
    /// Drift shares to measure (comma-separated): the share of the users,
    /// groups and memberships damaged, a third each changed, missing and
    /// phantom.
    #[arg(long, value_delimiter = ',', default_value = "0,0.001,0.01,0.1", value_parser = parse_share, env = "RECON_BENCH_DRIFT")]
    pub drift: Vec<f64>,
    /// Seed of the workload and of the drift.
    #[arg(long, default_value_t = 42, env = "RECON_BENCH_SEED")]
    pub seed: u64,
    /// Skip the naive baseline (slow: one statement per row).
    #[arg(long, env = "RECON_BENCH_SKIP_NAIVE")]
    pub skip_naive: bool,
    /// Drift shares (of `--drift`) the naive baseline runs on
    /// (comma-separated); one transaction per row makes it take about
    /// 4 ms a row on a durable PostgreSQL.
    #[arg(long, value_delimiter = ',', default_value = "0,0.001,0.01", value_parser = parse_share, env = "RECON_BENCH_NAIVE_DRIFT")]
    pub naive_drift: Vec<f64>,
    /// Skip the compare-then-write baseline (fetch each page, compare it
    /// with the replica, write what differs), which runs on every drift
    /// share.
    #[arg(long, env = "RECON_BENCH_SKIP_COMPARE")]
    pub skip_compare: bool,
    /// Skip reladiff's detection.
    #[arg(long, env = "RECON_BENCH_SKIP_RELADIFF")]
    pub skip_reladiff: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, env = "RECON_BENCH_JSON")]
    pub json: Option<std::path::PathBuf>,
    /// Items per Source API page (passed to `recon reconcile` and used by
    /// the baselines).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000), env = "RECON_BENCH_PAGE_SIZE")]
    pub page_size: u32,
    /// Tenants reconciled at the same time (passed to `recon reconcile`).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256), env = "RECON_BENCH_CONCURRENCY")]
    pub concurrency: u32,
    /// Another build of recon (e.g. of an older commit) to measure side by
    /// side: its full load and its runs with digests on the same damage,
    /// into a replica store of its own (`--baseline-replica-database-url`),
    /// after each of this build's; the ratio column then compares the two.
    #[arg(
        long,
        requires = "baseline_replica_database_url",
        env = "RECON_BENCH_BASELINE_BINARY"
    )]
    pub baseline_binary: Option<std::path::PathBuf>,
    /// The baseline's replica store: an empty PostgreSQL database (the
    /// baseline's own `recon reconcile` creates its tables, by its own
    /// migrations).
    #[arg(
        long,
        env = "RECON_BENCH_BASELINE_DATABASE_URL",
        hide_env_values = true
    )]
    pub baseline_replica_database_url: Option<String>,
}

/// A workload scale: a positive number up to 10.
fn parse_scale(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale > 0.0 && scale <= 10.0 => Ok(scale),
        _ => Err(format!(
            "expected a scale above 0 and at most 10 (1.0 = W1), got {text:?}"
        )),
    }
}

/// Options of the hidden `recon bench naive` and `recon bench compare`.
#[derive(Debug, Args)]
pub struct NaiveArgs {
    /// The replica store to reconcile.
    #[arg(long, env = "RECON_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Base URL of the Source API.
    #[arg(long, env = "RECON_SOURCE_URL")]
    pub source_url: String,
    /// Items per Source API page.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000), env = "RECON_BENCH_PAGE_SIZE")]
    pub page_size: u32,
}

/// Options of `recon bench lag`.
#[derive(Debug, Args)]
pub struct LagBenchArgs {
    /// PostgreSQL database of the reference monolith (owned by the bench,
    /// as in `bench reconcile`; on the same server as the replica's: the
    /// lag is read from one clock).
    #[arg(long, env = "RECON_MONOLITH_DATABASE_URL", hide_env_values = true)]
    pub monolith_database_url: String,
    /// PostgreSQL database of the replica store (owned by the bench).
    #[arg(long, env = "RECON_DATABASE_URL", hide_env_values = true)]
    pub replica_database_url: String,
    /// Kafka bootstrap servers (`host:port,…`); the bench makes a topic of
    /// its own.
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "RECON_KAFKA_BOOTSTRAP_SERVERS"
    )]
    pub bootstrap_servers: String,
    /// Workload size (1.0 = W1).
    #[arg(long, default_value_t = 1.0, value_parser = parse_scale, env = "RECON_BENCH_SCALE")]
    pub scale: f64,
    /// The share of the replica damaged before each run.
    #[arg(long, default_value = "0.01", value_parser = parse_share, env = "RECON_BENCH_DRIFT")]
    pub drift: f64,
    /// Changes a second written through the monolith around each run.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000), env = "RECON_BENCH_WRITES_PER_SEC")]
    pub writes_per_sec: u64,
    /// Seed of the workload, the drift and the writes.
    #[arg(long, default_value_t = 42, env = "RECON_BENCH_SEED")]
    pub seed: u64,
    /// Items per Source API page.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000), env = "RECON_BENCH_PAGE_SIZE")]
    pub page_size: u32,
    /// Tenants reconciled at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256), env = "RECON_BENCH_CONCURRENCY")]
    pub concurrency: u32,
}

/// Options of `recon bench drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The replica database to drain into (the bench migrates it).
    #[arg(long, env = "RECON_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Kafka bootstrap servers.
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "RECON_KAFKA_BOOTSTRAP_SERVERS"
    )]
    pub bootstrap_servers: String,
    /// Extra librdkafka properties of the bench's producer and consumer.
    #[command(flatten)]
    pub kafka_properties: KafkaPropertyArgs,
    /// Events in the backlog.
    #[arg(long, default_value_t = 1_000_000, env = "RECON_BENCH_DRAIN_EVENTS")]
    pub events: u64,
    /// Tenants the events are spread over.
    #[arg(long, default_value_t = 1_000, env = "RECON_BENCH_DRAIN_TENANTS")]
    pub tenants: u64,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4, env = "RECON_BENCH_DRAIN_PARTITIONS")]
    pub partitions: i32,
    /// Most events applied in one transaction.
    #[arg(long, default_value_t = 5_000, env = "RECON_BENCH_DRAIN_MAX_BATCH")]
    pub max_batch: usize,
    /// What the backlog holds.
    #[arg(
        long,
        value_enum,
        default_value = "inserts",
        env = "RECON_BENCH_DRAIN_WORKLOAD"
    )]
    pub workload: DrainWorkload,
    /// Fail when no event was committed for this long (the group join
    /// included): an event lost, or the consumer stuck.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), env = "RECON_BENCH_DRAIN_STALL_SECS")]
    pub stall_secs: u64,
}

/// The backlog of `recon bench drain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrainWorkload {
    /// Every event creates a new user.
    Inserts,
    /// Half the events create users; of the other half a third update
    /// them, a third re-send an old version (a conflict: skipped) and a
    /// third delete them.
    Mixed,
}
