//! The replica store: a service's own copy of tenants, users, groups and
//! memberships (sea-orm; PostgreSQL in production, SQLite as the embedded
//! default).
//!
//! Both Kafka events and reconciliation write through **one apply path**
//! ([`Store::apply`]) in one of two [`WriteMode`]s (DESIGN §3):
//!
//! * [`WriteMode::Event`]: a write lands only if its version is newer than
//!   the stored one (tombstones included) and its generation is not below
//!   the store's generation floor;
//! * [`WriteMode::Reconcile`]: the row is set to exactly the source's data
//!   and version unless the stored version is newer than the watermark of
//!   the page it was read in (then it is kept and counted), fenced by the
//!   epoch of the plan it works for: a write
//!   carrying an epoch older than the highest seen for its scope fails with
//!   [`Error::StaleEpoch`], checked and raised in the same transaction.
//!
//! Deletions leave tombstone rows with their version; [`Store::read_page`]
//! and [`Store::stream_range`] read live rows of one (tenant, kind, key
//! range) in key order for the diff.

mod apply;
mod error;
mod fence;
mod history;
mod ports;
mod read;
mod schema;
mod sql;
mod tables;
mod upkeep;

pub use apply::{ApplyOutcome, WriteMode};
pub use error::{Error, ErrorKind, Result};
pub use fence::{ElectionClaim, FenceToken, GLOBAL_SCOPE};
pub use read::StoredRow;
pub use recon_core::KeyRange;
pub use tables::{evolution_ddl, schema_ddl};
pub use upkeep::TombstonePurge;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait;
use std::time::Duration;

/// Session settings of a store's connections (DESIGN §6, bounded waits).
///
/// On PostgreSQL every session gets `lock_timeout`, `statement_timeout`
/// and `idle_in_transaction_session_timeout`, so a writer frozen inside a
/// transaction (or a lock held by anyone) cannot stall the cluster: the
/// waiting statement fails with a transient error and is retried, and the
/// frozen session is ended by the server. SQLite waits up to `busy_timeout`
/// for the database lock.
///
/// PostgreSQL sessions also run without parallel workers
/// (`max_parallel_workers_per_gather = 0`): the store's statements are
/// short and many run at once, and starting workers cost more than they
/// saved — a tenant's digest statement (three index scans under a
/// `UNION ALL`, which the planner made a parallel append) took 25–30 ms
/// instead of 1–2 ms at W1, most of an unchanged replica's run time. And
/// without JIT compilation (`jit = off`): the planner's estimate for a
/// digest statement over thousands of small ranges passes the JIT
/// threshold, and compiling took 220 ms of a statement that runs in 55.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Longest wait for a row or table lock (PostgreSQL).
    pub lock_timeout: Duration,
    /// Longest run of one statement (PostgreSQL).
    pub statement_timeout: Duration,
    /// Longest idle time inside an open transaction before the server ends
    /// the session (PostgreSQL).
    pub idle_in_transaction_timeout: Duration,
    /// Longest wait for the database lock (SQLite).
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    /// 5 s lock wait, 60 s per statement, 60 s idle in a transaction, 5 s
    /// SQLite busy wait.
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(60),
            idle_in_transaction_timeout: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Handle on a replica store database. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    connection: DatabaseConnection,
}

impl Store {
    /// Connects to `database_url` (`postgres://…` or `sqlite://…`) with the
    /// default [`StoreOptions`] and brings the schema up to date. The URL
    /// never appears in errors or logs.
    pub async fn connect(database_url: &str) -> Result<Self> {
        Self::connect_with(database_url, StoreOptions::default()).await
    }

    /// Connects with the given session settings; see [`Store::connect`].
    pub async fn connect_with(database_url: &str, store_options: StoreOptions) -> Result<Self> {
        let mut options = ConnectOptions::new(database_url.to_owned());
        options
            .max_connections(if database_url.starts_with("sqlite") {
                4
            } else {
                16
            })
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        let session_settings = [
            ("lock_timeout", millis(store_options.lock_timeout)),
            ("statement_timeout", millis(store_options.statement_timeout)),
            (
                "idle_in_transaction_session_timeout",
                millis(store_options.idle_in_transaction_timeout),
            ),
            ("max_parallel_workers_per_gather", "0".to_owned()),
            ("jit", "off".to_owned()),
        ];
        options.map_sqlx_postgres_opts(move |postgres| postgres.options(session_settings.clone()));
        let busy_timeout = store_options.busy_timeout;
        options.map_sqlx_sqlite_opts(move |sqlite| sqlite.busy_timeout(busy_timeout));
        let connection = Database::connect(options)
            .await
            .map_err(|source| Error::Connect {
                target: recon_core::redact_url(database_url),
                source,
            })?;
        migrate(&connection).await?;
        Ok(Self { connection })
    }

    /// The database backend in use.
    pub fn backend(&self) -> DbBackend {
        self.connection.get_database_backend()
    }

    /// The underlying connection (for tests and operator tools).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }
}

/// Brings the schema up to date. Replicas sharing one store may start at
/// the same moment and race on the migration table; the loser retries and
/// finds the work done.
async fn migrate(connection: &DatabaseConnection) -> Result<()> {
    let mut attempt = 0;
    loop {
        match schema::Migrator::up(connection, None).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 10 => {
                attempt += 1;
                tracing::warn!(error = %error, attempt, "schema migration raced with another replica, retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(error) => return Err(Error::Migrate(error)),
        }
    }
}

/// A duration as a PostgreSQL setting in milliseconds (at least 1: `0`
/// would switch the timeout off).
fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}
