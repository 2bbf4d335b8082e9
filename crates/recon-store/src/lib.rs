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
//!   and version, fenced by the epoch of the plan it works for: a write
//!   carrying an epoch older than the highest seen for its scope fails with
//!   [`Error::StaleEpoch`], checked and raised in the same transaction.
//!
//! Deletions leave tombstone rows with their version; [`Store::read_page`]
//! and [`Store::stream_range`] read live rows of one (tenant, kind, key
//! range) in key order for the diff.

mod apply;
mod error;
mod fence;
mod ports;
mod read;
mod schema;
mod sql;

pub use apply::{ApplyOutcome, WriteMode};
pub use error::{Error, ErrorKind, Result};
pub use fence::{ElectionClaim, FenceToken, GLOBAL_SCOPE};
pub use read::StoredRow;
pub use recon_core::KeyRange;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait;
use std::time::Duration;

/// Handle on a replica store database. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    connection: DatabaseConnection,
}

impl Store {
    /// Connects to `database_url` (`postgres://…` or `sqlite://…`) and brings
    /// the schema up to date. The URL never appears in errors or logs.
    pub async fn connect(database_url: &str) -> Result<Self> {
        let mut options = ConnectOptions::new(database_url.to_owned());
        options
            .max_connections(if database_url.starts_with("sqlite") {
                4
            } else {
                16
            })
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        let connection = Database::connect(options)
            .await
            .map_err(|source| Error::Connect {
                target: redact_url(database_url),
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

/// Renders a database URL without its credentials, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<database url>".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((_credentials, host)) => format!("{scheme}://***@{host}"),
        None => format!("{scheme}://{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact_url("postgres://recon:s3cret@db:5432/replica"),
            "postgres://***@db:5432/replica"
        );
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
        assert!(!redact_url("postgres://u:p4ss@h/d").contains("p4ss"));
        assert_eq!(redact_url("not a url"), "<database url>");
    }
}
