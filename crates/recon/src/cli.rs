//! Command-line interface. Every option can also come from the environment
//! (`RECON_…`); flags win over the environment.

use crate::secrets;
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use recon_store::{MigrationOptions, StoreOptions, TombstonePurge};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// recon keeps a service's copy of monolith data correct.
#[derive(Debug, Parser)]
#[command(name = "recon", version, about)]
pub struct Cli {
    /// A configuration file (TOML, one table per subcommand keyed by option
    /// names); variables and flags override it.
    #[arg(long, global = true, env = "RECON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log lines as `text` (for people) or `json` (one object per line, with
    /// the current span and its parents, for log pipelines).
    #[arg(long, global = true, env = "RECON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a replica: consume change events into the service database, with
    /// an admin port for health, metrics and the pause gate.
    Serve(Box<ServeArgs>),
    /// Reconcile the replica store against the source of truth (one
    /// instance): pause the replicas' consumers, diff, fix, resume.
    Reconcile(Box<ReconcileArgs>),
    /// Show the cluster: leader and epoch, members, the current run with its
    /// units by state and owner, pause age.
    Status(StatusArgs),
    /// Run the reference monolith (Source API, write API, operator actions).
    Monolith(MonolithArgs),
    /// Generate a deterministic, heavy-tailed workload in a monolith database.
    Seed(SeedArgs),
    /// Benchmarks: print throughput figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The main job on embedded defaults: a monolith on SQLite, a generated
    /// workload, and what its Source API reports.
    Demo(DemoArgs),
    /// Ask the replicas' leader to abort the run in progress (through etcd
    /// or ZooKeeper): it writes an aborted barrier with the reason, and
    /// every consumer resumes.
    Abort(AbortArgs),
    /// The run history kept in the replica store: `recon runs list`,
    /// `recon runs show <run>`.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// The replica store's schema: `recon store migrate` brings it up to
    /// date, once per store, before the replicas start.
    #[command(subcommand)]
    Store(StoreCommand),
    /// The configuration: `recon config print serve` shows every option of
    /// `serve` with its effective value and where it came from (default,
    /// file, environment, flag), secrets redacted.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The declared data model: `recon schema check|print|openapi|ddl`.
    #[command(subcommand)]
    Schema(SchemaCommand),
}

/// `recon schema …`: the schema file that declares the replicated kinds
/// (`docs/schema.md`).
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Validates a schema file and names every problem (exit code 1 if
    /// any).
    Check(SchemaFileArgs),
    /// Prints each kind in apply order with its table, key and typed
    /// fields.
    Print(SchemaFileArgs),
    /// Prints the Source API's OpenAPI document for the schema (the
    /// checked-in `proto/source-api.openapi.json` is the default schema's).
    Openapi(SchemaFileArgs),
    /// Prints the SQL that creates the schema's replica tables.
    Ddl {
        /// The schema file.
        #[command(flatten)]
        schema: SchemaFileArgs,
        /// The database the statements are for.
        #[arg(
            long,
            env = "RECON_DDL_BACKEND",
            value_enum,
            default_value = "postgres"
        )]
        backend: DdlBackend,
    },
}

/// Which schema file to read.
#[derive(Debug, Clone, Args)]
pub struct SchemaFileArgs {
    /// The schema file (TOML); default: the built-in default schema
    /// (`proto/schemas/tenants-users-groups.toml`).
    #[arg(long = "schema", env = "RECON_SCHEMA")]
    pub path: Option<std::path::PathBuf>,
}

/// The database `recon schema ddl` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DdlBackend {
    /// PostgreSQL (typed columns, generated digest columns).
    Postgres,
    /// SQLite (the embedded default).
    Sqlite,
}

/// Options of `recon abort`.
#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The cluster's coordinator (etcd or ZooKeeper) and service.
    #[command(flatten)]
    pub coordination: CoordinationArgs,
    /// The run to abort (refused if it is not the one in progress);
    /// default: the run in progress.
    #[arg(long, env = "RECON_ABORT_RUN")]
    pub run: Option<String>,
    /// Why (kept in the run's barrier and history).
    #[arg(long, env = "RECON_ABORT_REASON")]
    pub reason: String,
}

/// `recon runs …`: the finished runs the replica store keeps (cluster and
/// single-instance runs alike; the last 1000).
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// The last runs, newest first: status, figures, leader, reason.
    List(RunsListArgs),
    /// One run in full: who asked, who aborted, scope, epoch, trace, and
    /// every unit's figures and guard decision (with the member that did it).
    Show(RunsShowArgs),
}

/// `recon store …`: the replica store itself.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Bring the replica store's schema up to date and print the migrations
    /// applied (or "store is up to date"). Run it before starting or
    /// upgrading the replicas: they refuse a store that is behind. On
    /// PostgreSQL it holds an advisory lock for the whole migration (a
    /// second `recon store migrate` waits, then finds nothing to do) and
    /// runs without the replicas' session timeouts.
    Migrate(MigrateArgs),
}

/// Options of `recon store migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The replica store to migrate.
    #[command(flatten)]
    pub database: ReplicaDatabaseArgs,
    /// The schema whose tables the store gets (created in a fresh store;
    /// a store that holds an older schema takes the kinds and nullable
    /// fields added since, anything else is refused).
    #[command(flatten)]
    pub schema: SchemaFileArgs,
    /// Longest run of one migration statement (PostgreSQL
    /// `statement_timeout`), e.g. `30m`; `0`: no limit (a migration that
    /// rewrites a big table takes as long as it takes).
    #[arg(long, env = "RECON_MIGRATION_STATEMENT_TIMEOUT", default_value = "0", value_parser = parse_duration)]
    pub migration_statement_timeout: Duration,
    /// Longest wait for a table lock (PostgreSQL `lock_timeout`), e.g.
    /// `10s` when migrating while replicas run, so that a migration does
    /// not queue their statements behind it for long; `0`: wait.
    #[arg(long, env = "RECON_MIGRATION_LOCK_TIMEOUT", default_value = "0", value_parser = parse_duration)]
    pub migration_lock_timeout: Duration,
}

impl MigrateArgs {
    /// The migration's session settings (`0`: no bound).
    pub fn options(&self) -> MigrationOptions {
        let bound = |timeout: Duration| (!timeout.is_zero()).then_some(timeout);
        MigrationOptions {
            statement_timeout: bound(self.migration_statement_timeout),
            lock_timeout: bound(self.migration_lock_timeout),
        }
    }
}

/// The service's replica database, required (`recon serve`, `recon runs`,
/// `recon store migrate`).
#[derive(Debug, Args)]
pub struct ReplicaDatabaseArgs {
    /// The service's replica database (`postgres://…` or `sqlite://path?mode=rwc`).
    #[arg(
        long,
        env = "RECON_DATABASE_URL",
        hide_env_values = true,
        required_unless_present = "database_url_file"
    )]
    pub database_url: Option<String>,
    /// A file holding the database URL (instead of `--database-url`).
    #[arg(long, env = "RECON_DATABASE_URL_FILE", conflicts_with = "database_url")]
    pub database_url_file: Option<PathBuf>,
}

impl ReplicaDatabaseArgs {
    /// The replica database's URL, given or read from its file.
    pub fn url(&self) -> anyhow::Result<String> {
        secrets::require(
            self.database_url.as_deref(),
            self.database_url_file.as_deref(),
            "--database-url",
        )
    }
}

/// Where the run history is: the replica store.
#[derive(Debug, Args)]
pub struct HistoryStoreArgs {
    /// The replica store holding the history.
    #[command(flatten)]
    pub database: ReplicaDatabaseArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", env = "RECON_RUNS_OUTPUT")]
    pub output: OutputFormat,
}

/// Options of `recon runs list`.
#[derive(Debug, Args)]
pub struct RunsListArgs {
    /// The replica store and the output format.
    #[command(flatten)]
    pub store: HistoryStoreArgs,
    /// How many runs to list.
    #[arg(long, default_value_t = 20, env = "RECON_RUNS_LIMIT")]
    pub limit: usize,
}

/// Options of `recon runs show`.
#[derive(Debug, Args)]
pub struct RunsShowArgs {
    /// The run's id (as `recon runs list` prints it).
    pub run: String,
    /// The replica store and the output format.
    #[command(flatten)]
    pub store: HistoryStoreArgs,
}

/// Where a cluster's coordination state is: etcd or ZooKeeper, and the
/// service's prefix in it.
#[derive(Debug, Clone, Args)]
pub struct CoordinationArgs {
    /// etcd endpoints (comma-separated).
    #[arg(long, env = "RECON_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// TLS and authentication towards etcd.
    #[command(flatten)]
    pub etcd_security: EtcdSecurityArgs,
    /// ZooKeeper servers (`host:port,host:port`), instead of etcd.
    #[arg(long, env = "RECON_ZOOKEEPER", conflicts_with = "etcd_endpoints")]
    pub zookeeper: Option<String>,
    /// Service name: its prefix (etcd key prefix, ZooKeeper node) is
    /// `/recon/<service>`.
    #[arg(long, env = "RECON_SERVICE", default_value = "replica")]
    pub service: String,
}

impl CoordinationArgs {
    /// Whether a coordinator is configured (etcd or ZooKeeper).
    pub fn is_set(&self) -> bool {
        !self.etcd_endpoints.is_empty() || self.zookeeper.is_some()
    }

    /// The service's prefix in the coordinator.
    pub fn prefix(&self) -> String {
        format!("/recon/{}", self.service)
    }
}

/// `recon config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Prints the effective configuration of a command line, e.g.
    /// `recon config print serve --page-size 10`.
    Print {
        /// The command line to show (a subcommand and its options).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

impl Command {
    /// Log filter used when `RUST_LOG` is not set.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve(_) | Command::Monolith(_) => "info",
            Command::Seed(_) | Command::Reconcile(_) | Command::Status(_) => "warn",
            // The bench's own statements (drift, checks) are slow on purpose.
            Command::Bench(_) => "warn,sqlx::query=error",
            // The demo's report already says what went wrong.
            Command::Demo(_) => "error",
            Command::Config(_) | Command::Abort(_) | Command::Runs(_) | Command::Schema(_) => {
                "warn"
            }
            // Which migration runs, and a wait for another one's lock.
            Command::Store(_) => "info,sea_orm_migration=warn,sqlx=warn",
        }
    }
}

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

/// Kafka connection options shared by the replica commands.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (`host:port,…`).
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "RECON_KAFKA_BOOTSTRAP_SERVERS"
    )]
    pub bootstrap_servers: String,
    /// The change topic.
    #[arg(
        long = "kafka-topic",
        env = "RECON_KAFKA_TOPIC",
        default_value = "recon.changes"
    )]
    pub topic: String,
    /// Extra librdkafka properties (TLS, SASL, tuning).
    #[command(flatten)]
    pub properties: KafkaPropertyArgs,
}

/// Extra librdkafka properties for every Kafka client of a command, from a
/// properties file, then `RECON_KAFKA_PROPERTY_<NAME>` variables (e.g.
/// `RECON_KAFKA_PROPERTY_SECURITY_PROTOCOL=SSL`), then `--kafka-property`
/// flags, later ones winning. Values are never logged.
#[derive(Debug, Clone, Default, Args)]
pub struct KafkaPropertyArgs {
    /// A librdkafka property `key=value` (repeatable; e.g.
    /// `security.protocol=SASL_SSL`).
    #[arg(long = "kafka-property", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// A properties file (`key=value` lines), e.g. holding
    /// `sasl.password`: secrets need no flag.
    #[arg(long, env = "RECON_KAFKA_PROPERTIES_FILE")]
    pub kafka_properties_file: Option<PathBuf>,
}

impl KafkaPropertyArgs {
    /// Every property, in the order file, variables, flags.
    pub fn resolve(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut properties = Vec::new();
        if let Some(path) = &self.kafka_properties_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read --kafka-properties-file {}", path.display()))?;
            let parsed = recon_kafka::parse_properties(&text).map_err(|problem| {
                anyhow::anyhow!("--kafka-properties-file {}: {problem}", path.display())
            })?;
            properties.extend(parsed);
        }
        properties.extend(recon_kafka::properties_from_variables(std::env::vars()));
        properties.extend(self.properties.iter().cloned());
        Ok(properties)
    }
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

/// A share in `0..=1`, written as a fraction (`0.2`) or a percentage
/// (`20%`); anything else is an error that says what is accepted (never
/// clamped: a typo must not widen the delete guard).
/// A tenant id as `--tenant` takes it: a valid id, not the reserved `*`.
fn parse_tenant(text: &str) -> Result<String, String> {
    recon_core::validate_tenant_id(text).map_err(|error| error.to_string())?;
    Ok(text.to_owned())
}

fn parse_share(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let (number, scale) = match trimmed.strip_suffix('%') {
        Some(percent) => (percent.trim(), 100.0),
        None => (trimmed, 1.0),
    };
    let share = number
        .parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
        .map(|value| value / scale)
        .ok_or_else(|| format!("expected a share such as 0.2 or 20%, got {text:?}"))?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err(format!(
            "a share must lie between 0 and 1 (0% and 100%), got {text:?}"
        ))
    }
}

/// Options of `recon serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service's replica database.
    #[command(flatten)]
    pub database: ReplicaDatabaseArgs,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group shared by all replicas of the service.
    #[arg(long, env = "RECON_GROUP_ID", default_value = "recon-replica")]
    pub group_id: String,
    /// Join the consumer group with dynamic membership even when
    /// `--member-id` is given. By default a replica with a `--member-id`
    /// joins with static membership (`group.instance.id` = the member id):
    /// restarted under the same id within the session timeout, it gets its
    /// partitions back without a rebalance; a static member that never
    /// comes back is expired by the broker after the session timeout (10
    /// s), since a static member does not leave the group when it stops.
    /// So use this where ids change with every replacement (a Kubernetes
    /// Deployment's pod names). Without `--member-id` (a generated,
    /// per-process id) membership is dynamic.
    #[arg(long, env = "RECON_DYNAMIC_MEMBERSHIP")]
    pub dynamic_membership: bool,
    /// Most events applied in one transaction.
    #[arg(long, env = "RECON_MAX_BATCH", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch: u32,
    /// Admin HTTP address (health, readiness, metrics, pause gate).
    #[arg(long, env = "RECON_ADMIN_LISTEN", default_value = "127.0.0.1:9464")]
    pub admin_listen: SocketAddr,
    /// The admin API's URL as the other replicas reach it (their leader
    /// calls nothing on it today; it is shown in `/cluster`). Default: the
    /// listen address, or this host's name when listening on all
    /// interfaces; never `0.0.0.0`.
    #[arg(long, env = "RECON_ADVERTISE_ADMIN_URL")]
    pub advertise_admin_url: Option<String>,
    /// Bearer token the admin API's mutating endpoints (`POST
    /// /consumer/pause`, `/consumer/resume`, `/reconcile`) require. Without
    /// one they answer only on a loopback listen address.
    #[arg(long, env = "RECON_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (instead of `--admin-token`).
    #[arg(long, env = "RECON_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
    /// Session timeouts of the replica store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Tombstones (deleted rows kept with their version) older than this are
    /// purged, e.g. `7d`, `36h`, `3600` (seconds). MUST exceed the longest
    /// retention of the change topic: an older event for a purged key,
    /// replayed from Kafka, would bring the row back.
    #[arg(long, env = "RECON_TOMBSTONE_RETENTION", default_value = "7d", value_parser = parse_positive_duration)]
    pub tombstone_retention: Duration,
    /// How often the tombstone purge runs; one replica of the store purges
    /// per interval, whichever claims it first.
    #[arg(long, env = "RECON_TOMBSTONE_PURGE_INTERVAL", default_value = "1h", value_parser = parse_positive_duration)]
    pub tombstone_purge_interval: Duration,
    /// How often the consumer group's lag on every partition (and the
    /// partitions no member owns) is read from the broker for `/metrics`.
    #[arg(long, env = "RECON_GROUP_LAG_INTERVAL", default_value = "15s", value_parser = parse_positive_duration)]
    pub group_lag_interval: Duration,
    /// Link from the status page to a run's trace in your tracing UI, with
    /// `{trace_id}` where the id goes, e.g.
    /// `http://localhost:16686/trace/{trace_id}` (Jaeger).
    #[arg(long, env = "RECON_TRACE_LINK")]
    pub trace_link: Option<String>,
    /// Cluster reconciliation (enabled when `--source-url` is given).
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl ServeArgs {
    /// The admin token, if any.
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        secrets::resolve(
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
            "--admin-token",
        )
    }

    /// The tombstone purge schedule.
    pub fn tombstone_purge(&self) -> TombstonePurge {
        TombstonePurge {
            retention: self.tombstone_retention,
            interval: self.tombstone_purge_interval,
        }
    }
}

/// Session timeouts of the replica store (DESIGN §6, bounded waits): a
/// statement waiting on a lock, a long statement, or a transaction left
/// idle (e.g. by a frozen process) fails instead of stalling the cluster,
/// and is retried.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Longest wait for a lock (PostgreSQL `lock_timeout`), e.g. `5s`.
    #[arg(long, env = "RECON_STORE_LOCK_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub store_lock_timeout: Duration,
    /// Longest statement (PostgreSQL `statement_timeout`).
    #[arg(long, env = "RECON_STORE_STATEMENT_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub store_statement_timeout: Duration,
    /// Longest idle time inside a transaction before the server ends the
    /// session (PostgreSQL `idle_in_transaction_session_timeout`).
    #[arg(long, env = "RECON_STORE_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub store_idle_in_transaction_timeout: Duration,
    /// Longest wait for the database lock (SQLite busy timeout).
    #[arg(long, env = "RECON_STORE_BUSY_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub store_busy_timeout: Duration,
    /// The declared schema of the replica store (its kinds, tables and
    /// events).
    #[command(flatten)]
    pub schema: SchemaFileArgs,
}

impl StoreArgs {
    /// The store's connection options; the error names a schema file that
    /// cannot be read or is not valid.
    pub fn options(&self) -> anyhow::Result<StoreOptions> {
        Ok(StoreOptions {
            lock_timeout: self.store_lock_timeout,
            statement_timeout: self.store_statement_timeout,
            idle_in_transaction_timeout: self.store_idle_in_transaction_timeout,
            busy_timeout: self.store_busy_timeout,
            data_model: crate::commands::schema::load_static(&self.schema)?,
        })
    }
}

/// A duration: whole seconds (`3600`) or a number with a unit: `ms`, `s`,
/// `m`, `h`, `d` (`500ms`, `5s`, `7d`). Zero is refused.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("the duration must be positive, got {text:?}"));
    }
    Ok(duration)
}

/// A duration like [`parse_positive_duration`]'s, zero allowed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 30s, 5m, 7d or seconds, got {text:?}"))?;
    let duration = match unit.trim() {
        "" | "s" => Duration::from_secs(value),
        "ms" => Duration::from_millis(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3_600)),
        "d" => Duration::from_secs(value.saturating_mul(86_400)),
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (ms, s, m, h, d)"
            ));
        }
    };
    Ok(duration)
}

/// TLS and authentication towards etcd (all off by default).
#[derive(Debug, Clone, Default, Args)]
pub struct EtcdSecurityArgs {
    /// PEM file of the CA that signed etcd's certificate (turns TLS on; use
    /// `https://` endpoints).
    #[arg(long, env = "RECON_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate (etcd `--client-cert-auth`).
    #[arg(long, env = "RECON_ETCD_CERT_FILE", requires = "etcd_key_file")]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM file of this client's private key.
    #[arg(long, env = "RECON_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    pub etcd_key_file: Option<PathBuf>,
    /// etcd user (etcd's authentication).
    #[arg(long, env = "RECON_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// The etcd user's password.
    #[arg(
        long,
        env = "RECON_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    pub etcd_password: Option<String>,
    /// A file holding the etcd password (instead of `--etcd-password`).
    #[arg(
        long,
        env = "RECON_ETCD_PASSWORD_FILE",
        conflicts_with = "etcd_password",
        requires = "etcd_user"
    )]
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdSecurityArgs {
    /// The security settings of the etcd client.
    pub fn security(&self) -> anyhow::Result<recon_etcd::EtcdSecurity> {
        let password = secrets::resolve(
            self.etcd_password.as_deref(),
            self.etcd_password_file.as_deref(),
            "--etcd-password",
        )?;
        let credentials = match (&self.etcd_user, password) {
            (Some(user), Some(password)) => Some((user.clone(), password)),
            (Some(user), None) => {
                anyhow::bail!("--etcd-user {user} needs --etcd-password or --etcd-password-file")
            }
            (None, _) => None,
        };
        Ok(recon_etcd::EtcdSecurity {
            ca_file: self.etcd_ca_file.clone(),
            client_identity: self.etcd_cert_file.clone().zip(self.etcd_key_file.clone()),
            credentials,
        })
    }
}

impl ClusterArgs {
    /// The Source API token, if any.
    pub fn source_token(&self) -> anyhow::Result<Option<String>> {
        secrets::resolve(
            self.source_token.as_deref(),
            self.source_token_file.as_deref(),
            "--source-token",
        )
    }
}

/// Options of a replica's part in cluster reconciliation.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Base URL of the Source API; without it this replica reconciles
    /// nothing, but on etcd it still pauses its consumer for runs.
    #[arg(long, env = "RECON_SOURCE_URL")]
    pub source_url: Option<String>,
    /// Bearer token for the Source API.
    #[arg(long, env = "RECON_SOURCE_TOKEN", hide_env_values = true)]
    pub source_token: Option<String>,
    /// A file holding the Source API token (instead of `--source-token`).
    #[arg(long, env = "RECON_SOURCE_TOKEN_FILE", conflicts_with = "source_token")]
    pub source_token_file: Option<PathBuf>,
    /// The cluster's coordinator: etcd or ZooKeeper; with neither, the
    /// replica is a single instance with the in-process coordinator.
    #[command(flatten)]
    pub coordination: CoordinationArgs,
    /// This replica's member id (default: `<hostname>-<pid>`).
    #[arg(long, env = "RECON_MEMBER_ID")]
    pub member_id: Option<String>,
    /// Lease TTL (etcd) or session timeout (ZooKeeper) in seconds: how
    /// long a silent replica still counts as a member.
    #[arg(long, env = "RECON_LEASE_TTL_SECS", default_value_t = 10)]
    pub lease_ttl_secs: u64,
    /// A run older than this is aborted and consumers resume.
    #[arg(long, env = "RECON_MAX_PAUSE_SECS", default_value_t = 1_800)]
    pub max_pause_secs: u64,
    /// Items per Source API page.
    #[arg(long, default_value_t = 1_000, env = "RECON_PAGE_SIZE")]
    pub page_size: u32,
    /// Range digests in runs: `auto` (where the source offers them) or `off`.
    #[arg(long, value_enum, default_value = "auto", env = "RECON_DIGESTS")]
    pub digests: DigestMode,
    /// Smallest unit worth splitting a big tenant for.
    #[arg(long, default_value_t = 20_000, env = "RECON_MIN_UNIT_ROWS")]
    pub min_unit_rows: u64,
    /// How often run state is polled, in milliseconds.
    #[arg(long, default_value_t = 200, env = "RECON_POLL_INTERVAL_MS")]
    pub poll_interval_ms: u64,
    /// Most Source API requests per second of this replica (retries
    /// included); unlimited without.
    #[arg(long, env = "RECON_SOURCE_RPS")]
    pub source_requests_per_second: Option<u32>,
    /// Deadline of one Source API request, e.g. `30s`.
    #[arg(long, env = "RECON_SOURCE_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub source_timeout: Duration,
    /// Retries of a Source API request after a transient failure.
    #[arg(long, env = "RECON_SOURCE_RETRIES", default_value_t = 5)]
    pub source_retries: u32,
    /// Units' Source API pages in flight at once per unit.
    #[arg(long, env = "RECON_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Most deletions a unit may make, as a share of its rows (`0.2` or
    /// `20%`); more trips the guard unless a run overrides it.
    #[arg(long, env = "RECON_MAX_DELETE_SHARE", default_value = "0.2", value_parser = parse_share)]
    pub max_delete_share: f64,
    /// Request a run at each slot of this cron schedule (UTC; 5 fields, or
    /// 6 with seconds first), e.g. `0 3 * * *`; the leader fires each slot
    /// once, whatever the failovers.
    #[arg(long, env = "RECON_SCHEDULE", value_parser = recon_engine::cluster::Schedule::parse)]
    pub schedule: Option<recon_engine::cluster::Schedule>,
    /// Request a run when the Source API's generation grows (the monolith
    /// was restored from a backup), looking this often, e.g. `30s`.
    #[arg(long, env = "RECON_WATCH_GENERATION", value_parser = parse_positive_duration)]
    pub watch_generation: Option<Duration>,
    /// Least time consumers run between two runs: a run requested during
    /// one (or right after it) starts this long after its barrier at the
    /// earliest, so back-to-back runs never pause consumers for longer than
    /// `--max-pause-secs` at a stretch. `0s` turns it off.
    #[arg(long, env = "RECON_MIN_CONSUMPTION_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub min_consumption_window: Duration,
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
    /// The naive baseline of `bench reconcile` (run by it as a child
    /// process): upsert every source row and delete every replica row the
    /// source lacks, one statement at a time.
    #[command(hide = true)]
    Naive(NaiveArgs),
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
    /// Skip reladiff's detection.
    #[arg(long, env = "RECON_BENCH_SKIP_RELADIFF")]
    pub skip_reladiff: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, env = "RECON_BENCH_JSON")]
    pub json: Option<std::path::PathBuf>,
    /// Items per Source API page (passed to `recon reconcile` and used by
    /// the naive baseline).
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

/// Options of the hidden `recon bench naive`.
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

/// Whether reconciliation narrows ranges with digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DigestMode {
    /// Use digests where the source offers them.
    Auto,
    /// Compare every row.
    Off,
}

/// How to print a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Table,
    /// JSON for tools.
    Json,
}

impl SourceArgs {
    /// The Source API token, if any.
    pub fn source_token(&self) -> anyhow::Result<Option<String>> {
        secrets::resolve(
            self.source_token.as_deref(),
            self.source_token_file.as_deref(),
            "--source-token",
        )
    }
}

/// Where the truth comes from.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Base URL of the Source API (the `/v1/...` paths are appended).
    #[arg(long, env = "RECON_SOURCE_URL", required_unless_present = "cluster")]
    pub source_url: Option<String>,
    /// Bearer token for the Source API.
    #[arg(long, env = "RECON_SOURCE_TOKEN", hide_env_values = true)]
    pub source_token: Option<String>,
    /// A file holding the Source API token (instead of `--source-token`).
    #[arg(long, env = "RECON_SOURCE_TOKEN_FILE", conflicts_with = "source_token")]
    pub source_token_file: Option<PathBuf>,
    /// Most Source API requests per second.
    #[arg(long, env = "RECON_SOURCE_RPS")]
    pub source_requests_per_second: Option<u32>,
}

/// How a reconciliation behaves.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Only these tenants (repeatable); default: all.
    #[arg(long = "tenant", env = "RECON_TENANTS", value_delimiter = ',', value_parser = parse_tenant)]
    pub tenants: Vec<String>,
    /// Read and compare only; write nothing.
    #[arg(long, env = "RECON_DRY_RUN")]
    pub dry_run: bool,
    /// Items per Source API page.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000), env = "RECON_PAGE_SIZE")]
    pub page_size: u32,
    /// Tenants reconciled at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256), env = "RECON_CONCURRENCY")]
    pub concurrency: u32,
    /// Changes per write transaction.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=50_000), env = "RECON_WRITE_BATCH")]
    pub write_batch: u32,
    /// Largest share of a tenant's rows a run may delete (delete guard):
    /// a fraction in `0..=1` (`0.2`) or a percentage (`20%`).
    #[arg(long, default_value = "0.2", value_parser = parse_share, env = "RECON_MAX_DELETE_SHARE")]
    pub max_delete_share: f64,
    /// Override the delete guard: delete whatever the source lacks.
    #[arg(long, env = "RECON_ALLOW_MASS_DELETE")]
    pub allow_mass_delete: bool,
    /// Abort (and resume consumers) after this many seconds.
    #[arg(long, default_value_t = 1_800, env = "RECON_MAX_PAUSE_SECS")]
    pub max_pause_secs: u64,
    /// Range digests: `auto` skips key ranges whose digests are equal on
    /// both sides where the source offers digests; `off` compares every row
    /// (also finds a row changed behind recon's back on a store that does
    /// not recompute digests itself — PostgreSQL does).
    #[arg(long, value_enum, default_value = "auto", env = "RECON_DIGESTS")]
    pub digests: DigestMode,
    /// Report format.
    #[arg(long, value_enum, default_value = "table", env = "RECON_OUTPUT")]
    pub output: OutputFormat,
    /// No progress bars.
    #[arg(long, env = "RECON_NO_PROGRESS")]
    pub no_progress: bool,
}

impl ReconcileArgs {
    /// The replica database's URL (without `--cluster`), given or read from
    /// its file.
    pub fn database_url(&self) -> anyhow::Result<String> {
        secrets::require(
            self.database_url.as_deref(),
            self.database_url_file.as_deref(),
            "--database-url",
        )
    }

    /// The replicas' admin token, given or read from its file.
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        secrets::resolve(
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
            "--admin-token",
        )
    }
}

/// Options of `recon reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Ask the replicas' cluster for a run (through etcd or ZooKeeper)
    /// instead of reconciling from this process.
    #[arg(long, env = "RECON_CLUSTER")]
    pub cluster: bool,
    /// With `--cluster`: follow the run until its barrier and exit with its
    /// outcome (0 completed, 3 with problems, 4 aborted).
    #[arg(long, requires = "cluster", env = "RECON_WAIT")]
    pub wait: bool,
    /// The cluster's coordinator (with `--cluster`).
    #[command(flatten)]
    pub coordination: CoordinationArgs,
    /// The replica store to reconcile (without `--cluster`).
    #[arg(
        long,
        env = "RECON_DATABASE_URL",
        hide_env_values = true,
        required_unless_present_any = ["cluster", "database_url_file"]
    )]
    pub database_url: Option<String>,
    /// A file holding the database URL (instead of `--database-url`).
    #[arg(long, env = "RECON_DATABASE_URL_FILE", conflicts_with = "database_url")]
    pub database_url_file: Option<PathBuf>,
    /// Session timeouts of the replica store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The source of truth.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Admin URL of a replica whose consumer to pause during the run
    /// (repeatable), e.g. `http://127.0.0.1:9464`.
    #[arg(
        long = "replica-admin-url",
        env = "RECON_REPLICA_ADMIN_URLS",
        value_delimiter = ','
    )]
    pub replica_admin_urls: Vec<String>,
    /// Bearer token of the replicas' admin API (`--replica-admin-url`), as
    /// their `--admin-token`.
    #[arg(long, env = "RECON_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (instead of `--admin-token`).
    #[arg(long, env = "RECON_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
    /// Run behaviour.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of `recon status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Admin URL of any replica, e.g. `http://127.0.0.1:9464`.
    #[arg(long, env = "RECON_ADMIN_URL", default_value = "http://127.0.0.1:9464")]
    pub admin_url: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", env = "RECON_STATUS_OUTPUT")]
    pub output: OutputFormat,
}

#[cfg(test)]
mod tests {
    use super::parse_share;

    #[test]
    fn shares_are_fractions_or_percentages() {
        assert_eq!(parse_share("0.2"), Ok(0.2));
        assert_eq!(parse_share("20%"), Ok(0.2));
        assert_eq!(parse_share(" 100 % "), Ok(1.0));
        assert_eq!(parse_share("0"), Ok(0.0));
    }

    #[test]
    fn shares_outside_zero_to_one_are_refused_not_clamped() {
        for text in [
            "1.5",
            "-0.1",
            "150%",
            "-5%",
            "NaN",
            "inf",
            "",
            "20 percent",
            "%",
        ] {
            let error = parse_share(text).expect_err(text);
            assert!(error.contains(&format!("{text:?}")), "{error}");
        }
    }
}

#[cfg(test)]
mod duration_tests {
    use super::parse_positive_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(
            parse_positive_duration("3600"),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(parse_positive_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(
            parse_positive_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(parse_positive_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_positive_duration("36h"),
            Ok(Duration::from_secs(129_600))
        );
        assert_eq!(
            parse_positive_duration("7d"),
            Ok(Duration::from_secs(604_800))
        );
    }

    #[test]
    fn zero_negative_and_unknown_units_are_refused() {
        for text in ["0", "0s", "-5s", "5 weeks", "s", "", "1.5h"] {
            assert!(parse_positive_duration(text).is_err(), "{text:?}");
        }
    }
}

#[cfg(test)]
mod variable_tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option of every subcommand, with its long name and variable.
    fn options(
        command: &clap::Command,
        path: &str,
        out: &mut Vec<(String, String, Option<String>)>,
    ) {
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let env = arg
                .get_env()
                .map(|name| name.to_string_lossy().into_owned());
            out.push((path.to_owned(), long.to_owned(), env));
        }
        for sub in command.get_subcommands() {
            options(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_has_a_recon_variable() {
        let mut all = Vec::new();
        options(&Cli::command(), "recon", &mut all);
        assert!(all.len() > 60, "only {} options found", all.len());
        // Repeatable `key=value` properties come from RECON_KAFKA_PROPERTY_<NAME>.
        let without: Vec<_> = all
            .iter()
            .filter(|(_, long, env)| env.is_none() && long != "kafka-property")
            .collect();
        assert!(
            without.is_empty(),
            "options without a variable: {without:?}"
        );
        for (path, long, env) in &all {
            if let Some(env) = env {
                assert!(env.starts_with("RECON_"), "{path} --{long}: {env}");
            }
        }
    }
}
