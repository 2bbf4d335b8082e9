//! The monolith's database: connecting, migrations, entities, and the two
//! kinds of transaction every operation uses (a serialized write
//! transaction, a read-only snapshot).

pub mod entities;
pub mod migrations;
pub mod schema_record;

use crate::error::{DbResultExt, Error, Result};
use recon_core::Version;
use recon_core::redact_url;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    AccessMode, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, EntityTrait, IsolationLevel, QueryFilter,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use std::time::Duration;

use entities::meta;

/// How long a SQLite connection waits for a lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `database_url` (the tables are [`schema_record::prepare`]d
/// next).
///
/// A password in the URL is taken out of it and handed to the driver
/// separately, so that the URL sea-orm records (in trace spans and parse
/// errors) never contains it.
pub(crate) async fn connect(database_url: &str) -> Result<DatabaseConnection> {
    let target = redact_url(database_url);
    let (url_without_password, password) = split_password(database_url);
    let mut options = ConnectOptions::new(url_without_password);
    options.sqlx_logging(false);
    if database_url.starts_with("sqlite:") {
        configure_sqlite(&mut options, database_url);
    } else {
        options.max_connections(16);
        if let Some(password) = password {
            options.map_sqlx_postgres_opts(move |postgres| postgres.password(&password));
        }
    }
    Database::connect(options)
        .await
        .map_err(|source| Error::Connect { target, source })
}

/// Splits `scheme://user:password@host/...` into the URL without the
/// password and the (percent-decoded) password.
fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return (url.to_owned(), None);
    };
    let Some((user, password)) = user_info.split_once(':') else {
        return (url.to_owned(), None);
    };
    (
        format!("{scheme}://{user}@{host}{tail}"),
        Some(percent_decode(password)),
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], escaped) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// WAL, a generous busy timeout and a small pool for files; a single
/// connection that is never recycled for in-memory databases (each
/// connection would otherwise see its own empty database).
fn configure_sqlite(options: &mut ConnectOptions, database_url: &str) {
    let in_memory = database_url.contains(":memory:") || database_url.contains("mode=memory");
    options.map_sqlx_sqlite_opts(move |sqlite: SqliteConnectOptions| {
        let sqlite = sqlite.busy_timeout(SQLITE_BUSY_TIMEOUT).foreign_keys(true);
        if in_memory {
            sqlite
        } else {
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
        }
    });
    if in_memory {
        options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else {
        options.max_connections(4);
    }
}

/// Starts a write transaction. Writers serialize on the meta row (see
/// [`allocate_sequences`]); on SQLite the transaction takes the write lock at
/// once (`BEGIN IMMEDIATE`) so that it never has to upgrade a read lock.
pub(crate) async fn begin_write(connection: &DatabaseConnection) -> Result<DatabaseTransaction> {
    let options = match connection.get_database_backend() {
        DbBackend::Sqlite => TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        },
        _ => TransactionOptions::default(),
    };
    connection
        .begin_with_options(options)
        .await
        .during("begin a write transaction")
}

/// Starts a read-only snapshot: every statement in it sees the same committed
/// state. On PostgreSQL a `REPEATABLE READ READ ONLY` transaction; SQLite
/// ignores isolation levels, but a (deferred) transaction in WAL mode reads
/// one snapshot from its first statement on, and writers are serialized.
pub(crate) async fn begin_snapshot(connection: &DatabaseConnection) -> Result<DatabaseTransaction> {
    let options = match connection.get_database_backend() {
        DbBackend::Postgres => TransactionOptions {
            isolation_level: Some(IsolationLevel::RepeatableRead),
            access_mode: Some(AccessMode::ReadOnly),
            ..TransactionOptions::default()
        },
        _ => TransactionOptions::default(),
    };
    connection
        .begin_with_options(options)
        .await
        .during("begin a snapshot transaction")
}

/// A block of consecutive sequence numbers, all of the current generation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SequenceBlock {
    generation: u64,
    next_sequence: u64,
    end_sequence: u64,
}

impl SequenceBlock {
    /// Hands out the next version of the block.
    pub(crate) fn next_version(&mut self) -> Result<Version> {
        if self.next_sequence > self.end_sequence {
            return Err(Error::Corrupt("sequence block exhausted".to_owned()));
        }
        let version = Version::new(self.generation, self.next_sequence);
        self.next_sequence += 1;
        Ok(version)
    }
}

/// Locks the meta row for the rest of the write transaction `txn` without
/// allocating anything. Every write transaction starts with this statement:
/// it serializes writers, and under PostgreSQL's READ COMMITTED every later
/// statement then sees all earlier commits.
pub(crate) async fn lock_meta(txn: &DatabaseTransaction) -> Result<()> {
    meta::Entity::update_many()
        .col_expr(meta::Column::Sequence, Expr::col(meta::Column::Sequence))
        .filter(meta::Column::Id.eq(1))
        .exec(txn)
        .await
        .during("lock the meta row")?;
    Ok(())
}

/// Allocates `count` sequence numbers in the write transaction `txn`.
///
/// The `UPDATE` locks the meta row until the transaction ends, which
/// serializes writers: sequence order is commit order. Call [`lock_meta`]
/// first when the transaction reads before it knows how many it needs.
pub(crate) async fn allocate_sequences(
    txn: &DatabaseTransaction,
    count: u64,
) -> Result<SequenceBlock> {
    let increment = i64::try_from(count)
        .map_err(|_| Error::BadRequest(format!("cannot allocate {count} sequence numbers")))?;
    meta::Entity::update_many()
        .col_expr(
            meta::Column::Sequence,
            Expr::col(meta::Column::Sequence).add(increment),
        )
        .filter(meta::Column::Id.eq(1))
        .exec(txn)
        .await
        .during("advance the sequence counter")?;
    let current = read_meta(txn).await?;
    Ok(SequenceBlock {
        generation: current.generation,
        next_sequence: current.sequence + 1 - count,
        end_sequence: current.sequence,
    })
}

/// Reads the meta row: the current generation and the last sequence number,
/// i.e. the watermark of the state visible to `connection`.
pub(crate) async fn read_meta(connection: &impl ConnectionTrait) -> Result<Version> {
    let row = meta::Entity::find_by_id(1)
        .one(connection)
        .await
        .during("read the meta row")?
        .ok_or_else(|| Error::Corrupt("the meta row is missing".to_owned()))?;
    stored_version(row.generation, row.sequence)
}

/// Converts a stored `(generation, sequence)` pair to a [`Version`].
pub(crate) fn stored_version(generation: i64, sequence: i64) -> Result<Version> {
    match (u64::try_from(generation), u64::try_from(sequence)) {
        (Ok(generation), Ok(sequence)) => Ok(Version::new(generation, sequence)),
        _ => Err(Error::Corrupt(format!(
            "negative version {generation}.{sequence}"
        ))),
    }
}

/// Converts a [`Version`] to its stored `(generation, sequence)` pair.
pub(crate) fn version_columns(version: Version) -> Result<(i64, i64)> {
    match (
        i64::try_from(version.generation),
        i64::try_from(version.sequence),
    ) {
        (Ok(generation), Ok(sequence)) => Ok((generation, sequence)),
        _ => Err(Error::Corrupt(format!(
            "version {version} overflows BIGINT"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_taken_out_of_the_url() {
        let (url, password) =
            split_password("postgres://app:p%40ss:w@db:5432/mono?sslmode=disable");
        assert_eq!(url, "postgres://app@db:5432/mono?sslmode=disable");
        assert_eq!(password.as_deref(), Some("p@ss:w"));
        let (url, password) = split_password("postgres://app@db/mono");
        assert_eq!((url.as_str(), password), ("postgres://app@db/mono", None));
        let (url, password) = split_password("sqlite://data/x.db?mode=rwc");
        assert_eq!(
            (url.as_str(), password),
            ("sqlite://data/x.db?mode=rwc", None)
        );
    }
}
