//! The replica store's options and `recon store …` / `recon runs …`.

use super::{OutputFormat, SchemaFileArgs, parse_duration, parse_positive_duration};
use crate::secrets;
use clap::{Args, Subcommand};
use recon_store::{MigrationOptions, StoreOptions};
use std::path::PathBuf;
use std::time::Duration;

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
            data_model: self.schema.load_static()?,
        })
    }
}
