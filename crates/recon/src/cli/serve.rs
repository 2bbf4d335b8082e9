//! `recon serve`: a replica's options (Kafka, the cluster, etcd's
//! security) and `recon abort`.

use super::{
    DigestMode, ReplicaDatabaseArgs, StoreArgs, parse_duration, parse_positive_duration,
    parse_share,
};
use crate::secrets;
use anyhow::Context as _;
use clap::Args;
use recon_store::TombstonePurge;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

/// Where a cluster's coordination state is: etcd, ZooKeeper or
/// PostgreSQL, and the service's prefix in it.
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
    /// A PostgreSQL database (`postgres://…`, typically the replica's own)
    /// that coordinates the replicas, instead of etcd or ZooKeeper.
    #[arg(
        long,
        env = "RECON_POSTGRES_COORDINATOR",
        conflicts_with_all = ["etcd_endpoints", "zookeeper"]
    )]
    pub postgres_coordinator: Option<String>,
    /// Service name: its prefix (etcd key prefix, ZooKeeper node) is
    /// `/recon/<service>`.
    #[arg(long, env = "RECON_SERVICE", default_value = "replica")]
    pub service: String,
}

impl CoordinationArgs {
    /// Whether a coordinator is configured (etcd, ZooKeeper or
    /// PostgreSQL).
    pub fn is_set(&self) -> bool {
        !self.etcd_endpoints.is_empty()
            || self.zookeeper.is_some()
            || self.postgres_coordinator.is_some()
    }

    /// The service's prefix in the coordinator.
    pub fn prefix(&self) -> String {
        format!("/recon/{}", self.service)
    }
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
    /// The pause policy of the runs this replica requests itself (its
    /// schedule, its generation trigger): `always` or `never`.
    #[arg(long, env = "RECON_RUN_PAUSE", default_value = "always")]
    pub run_pause: recon_core::PausePolicy,
    /// Least time consumers run between two runs: a run requested during
    /// one (or right after it) starts this long after its barrier at the
    /// earliest, so back-to-back runs never pause consumers for longer than
    /// `--max-pause-secs` at a stretch. `0s` turns it off.
    #[arg(long, env = "RECON_MIN_CONSUMPTION_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub min_consumption_window: Duration,
}
