//! `recon reconcile` and `recon status`: the run's options and the Source
//! API's.

use super::{CoordinationArgs, StoreArgs, parse_share};
use crate::secrets;
use clap::Args;
use std::path::PathBuf;

/// A share in `0..=1`, written as a fraction (`0.2`) or a percentage
/// (`20%`); anything else is an error that says what is accepted (never
/// clamped: a typo must not widen the delete guard).
/// A tenant id as `--tenant` takes it: a valid id, not the reserved `*`.
fn parse_tenant(text: &str) -> Result<String, String> {
    recon_core::validate_tenant_id(text).map_err(|error| error.to_string())?;
    Ok(text.to_owned())
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
    /// `always`: the replicas' consumers pause from the run's start to its
    /// barrier; `never`: they go on applying events while it reconciles
    /// (the version guards make both end equal to the source,
    /// docs/pause-free.md).
    #[arg(long, default_value = "always", env = "RECON_PAUSE")]
    pub pause: recon_core::PausePolicy,
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
