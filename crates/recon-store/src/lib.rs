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
//!
//! The schema is brought up to date once per store by [`Store::migrate`]
//! (`recon store migrate`), never by [`Store::connect`], which refuses a
//! store whose schema does not match this build (see `migrate.rs`).

mod apply;
mod data_model;
mod error;
mod fence;
mod history;
mod migrate;
mod ports;
mod read;
mod schema;
mod sql;
mod tables;
mod upkeep;

pub use apply::{ApplyOutcome, WriteMode};
pub use error::{Error, ErrorKind, Result};
pub use fence::{ElectionClaim, FenceToken, GLOBAL_SCOPE};
pub use migrate::{MIGRATION_LOCK_KEY, MigrationOptions};
pub use read::StoredRow;
pub use recon_core::KeyRange;
pub use tables::{evolution_ddl, schema_ddl};
pub use upkeep::TombstonePurge;

use recon_core::schema::Schema;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};
use std::sync::Arc;
use std::time::Duration;
use tables::Tables;

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
    /// The declared schema the replica holds; connecting checks that the
    /// store holds it too.
    pub data_model: &'static Schema,
}

impl Default for StoreOptions {
    /// 5 s lock wait, 60 s per statement, 60 s idle in a transaction, 5 s
    /// SQLite busy wait, the default schema.
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(60),
            idle_in_transaction_timeout: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(5),
            data_model: Schema::default_schema(),
        }
    }
}

/// Handle on a replica store database. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    connection: DatabaseConnection,
    tables: Arc<Tables>,
}

impl Store {
    /// Connects to `database_url` (`postgres://…` or `sqlite://…`) with the
    /// default [`StoreOptions`] and checks that the schema is the one this
    /// build knows (see [`Store::connect_with`]). The URL never appears in
    /// errors or logs.
    pub async fn connect(database_url: &str) -> Result<Self> {
        Self::connect_with(database_url, StoreOptions::default()).await
    }

    /// Connects with the given session settings and checks the schema.
    ///
    /// It never migrates: a store missing a migration this build knows (an
    /// empty database included) fails with [`Error::SchemaBehind`], whose
    /// message says to run `recon store migrate`; a store with a migration
    /// this build does not know (migrated by a newer recon) fails with
    /// [`Error::SchemaAhead`]. Both are permanent: retrying does not help.
    pub async fn connect_with(database_url: &str, store_options: StoreOptions) -> Result<Self> {
        let session_settings = vec![
            ("lock_timeout", millis(store_options.lock_timeout)),
            ("statement_timeout", millis(store_options.statement_timeout)),
            (
                "idle_in_transaction_session_timeout",
                millis(store_options.idle_in_transaction_timeout),
            ),
            ("max_parallel_workers_per_gather", "0".to_owned()),
            ("jit", "off".to_owned()),
        ];
        let mut options =
            connect_options(database_url, session_settings, store_options.busy_timeout);
        options.max_connections(if database_url.starts_with("sqlite") {
            4
        } else {
            16
        });
        let connection = open(database_url, options).await?;
        migrate::check(&connection).await?;
        data_model::check(&connection, store_options.data_model).await?;
        Ok(Self {
            connection,
            tables: Arc::new(Tables::of(store_options.data_model)),
        })
    }

    /// Brings the schema of the store at `database_url` up to date and
    /// returns the names of the migrations it applied, in order (none when
    /// the store already was up to date). The one way a store gets its
    /// schema: `recon store migrate` calls it, and so do the demo and the
    /// benchmarks for the stores they create. On PostgreSQL it holds an
    /// advisory lock for the whole migration, so that concurrent calls
    /// apply every migration once; see `migrate.rs` for what it promises.
    pub async fn migrate(database_url: &str, options: MigrationOptions) -> Result<Vec<String>> {
        Self::migrate_to(database_url, options, Schema::default_schema()).await
    }

    /// [`Store::migrate`] to a declared schema: after recon's own
    /// migrations, the store's kinds' tables are created for `data_model`
    /// (a fresh store) or evolved to it from the schema the store holds —
    /// only by the changes a running system can take (a kind or a nullable
    /// field added); any other change is refused, named
    /// ([`Error::DataModelRefused`]).
    pub async fn migrate_to(
        database_url: &str,
        options: MigrationOptions,
        data_model: &Schema,
    ) -> Result<Vec<String>> {
        migrate::run(database_url, options, data_model).await
    }

    /// The declared schema the store holds.
    pub fn data_model(&self) -> &'static Schema {
        self.tables.schema()
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

/// Connection options shared by every pool on a store: a 10 s connect
/// timeout, no statement logging, PostgreSQL sessions started with
/// `postgres_settings`, SQLite waiting up to `busy_timeout` for the
/// database lock. The caller sizes the pool.
fn connect_options(
    database_url: &str,
    postgres_settings: Vec<(&'static str, String)>,
    busy_timeout: Duration,
) -> ConnectOptions {
    let mut options = ConnectOptions::new(database_url.to_owned());
    options
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    options.map_sqlx_postgres_opts(move |postgres| postgres.options(postgres_settings.clone()));
    options.map_sqlx_sqlite_opts(move |sqlite| sqlite.busy_timeout(busy_timeout));
    options
}

/// Opens the pool; the error names the database without credentials.
async fn open(database_url: &str, options: ConnectOptions) -> Result<DatabaseConnection> {
    Database::connect(options)
        .await
        .map_err(|source| Error::Connect {
            target: recon_core::redact_url(database_url),
            source,
        })
}

/// A duration as a PostgreSQL setting in milliseconds (at least 1: `0`
/// would switch the timeout off).
fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}
