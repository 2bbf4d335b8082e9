//! Errors of the replica store, and what the caller can do about them.
//!
//! A driver error's kind is decided from its code — the SQLSTATE on
//! PostgreSQL, the extended result code on SQLite — never from its message
//! text. Only the codes that say the *statement's data* is at fault (a data
//! exception, an integrity constraint violated by the values written, a
//! value too big or of the wrong type) are permanent: the same event would
//! fail again on any healthy database. Everything else — a lost connection,
//! a failed COMMIT, a read-only or full database, an administrator's
//! shutdown, serialization failures and deadlocks, lock and statement
//! timeouts, codes we do not know — is transient: the database, not the
//! event, is at fault, and the write is retried.

use sea_orm::sqlx;
use sea_orm::sqlx::error::DatabaseError;
use sea_orm::{DbErr, RuntimeErr};

/// What the caller can do about an error: the ports' one kind enum (the
/// store's errors are transient, permanent — the data written is at fault,
/// or the schema does not match this build — or fenced off).
pub use recon_core::ports::FailureKind as ErrorKind;

/// Errors of the replica store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached.
    #[error("connect to replica store {target}")]
    Connect {
        /// The database URL without credentials.
        target: String,
        /// The driver's error.
        #[source]
        source: DbErr,
    },
    /// A schema migration failed (see [`crate::Store::migrate`]); on
    /// PostgreSQL the store is left as it was before this migration.
    #[error("apply migration {migration} to the replica store")]
    Migrate {
        /// The migration's name.
        migration: String,
        /// The driver's error.
        #[source]
        source: DbErr,
    },
    /// The store lacks migrations this build needs (an empty database lacks
    /// them all): it was never migrated, or by an older recon. Nothing but
    /// `recon store migrate` changes that.
    #[error(
        "the replica store's schema is not up to date: {} not applied ({}); run `recon store migrate` against this store (same --database-url) before starting recon",
        count(missing.len()),
        missing.join(", ")
    )]
    SchemaBehind {
        /// The names of the missing migrations, in the order they apply.
        missing: Vec<String>,
    },
    /// The store records migrations this build does not know: a newer recon
    /// migrated it. This build refuses it rather than write rows the newer
    /// schema may not expect.
    #[error(
        "the replica store was migrated by a newer recon: {} unknown to this version ({}); run a recon at least as new as the one that migrated it",
        count(unknown.len()),
        unknown.join(", ")
    )]
    SchemaAhead {
        /// The names of the unknown migrations.
        unknown: Vec<String>,
    },
    /// The store holds an older schema than the one asked for, or none
    /// yet.
    #[error(
        "the replica store's tables are behind the schema ({}); run `recon store migrate` with that schema",
        .changes.join(", ")
    )]
    DataModelBehind {
        /// What the store lacks.
        changes: Vec<String>,
    },
    /// The store holds a newer schema than the one asked for.
    #[error(
        "the replica store holds a newer schema than this one ({}); run recon with the store's schema",
        .changes.join(", ")
    )]
    DataModelAhead {
        /// What the store has beyond the schema.
        changes: Vec<String>,
    },
    /// The store holds a schema the one asked for cannot replace.
    #[error("the replica store holds another schema: {0}")]
    DataModelRefused(#[source] recon_core::schema::evolution::RefusedChanges),
    /// A statement failed.
    #[error("replica store {operation} failed")]
    Database {
        /// What was being done, e.g. `"apply batch"`.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: DbErr,
    },
    /// A reconciliation write carried an epoch older than the fence.
    #[error("stale epoch {epoch} for scope {scope:?}: the fence is at {fence}")]
    StaleEpoch {
        /// The fenced scope.
        scope: String,
        /// The epoch the write carried.
        epoch: u64,
        /// The highest epoch seen for the scope.
        fence: u64,
    },
    /// A leader asked for an epoch with an election older than one that
    /// already acquired an epoch (a zombie of an older election).
    #[error("stale election {claimed:?}: the store already handed an epoch to election {held:?}")]
    StaleElection {
        /// The election presented.
        claimed: recon_core::ElectionClaim,
        /// The latest election that acquired an epoch.
        held: recon_core::ElectionClaim,
    },
    /// Data that cannot be stored or was stored malformed.
    #[error("invalid data: {0}")]
    InvalidData(String),
}

impl Error {
    /// Classifies the error for the caller's retry logic.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::StaleEpoch { .. } | Error::StaleElection { .. } => ErrorKind::StaleEpoch,
            // Retrying cannot change the data, nor the schema: only an
            // operator's `recon store migrate` (or another build) can.
            Error::InvalidData(_)
            | Error::SchemaBehind { .. }
            | Error::SchemaAhead { .. }
            | Error::DataModelBehind { .. }
            | Error::DataModelAhead { .. }
            | Error::DataModelRefused(_) => ErrorKind::Permanent,
            Error::Connect { .. } => ErrorKind::Transient,
            Error::Database { source, .. } | Error::Migrate { source, .. } => {
                classify_db_error(source)
            }
        }
    }
}

/// "1 migration" or "N migrations".
fn count(migrations: usize) -> String {
    match migrations {
        1 => "1 migration".to_owned(),
        many => format!("{many} migrations"),
    }
}

/// The kind of a driver error, from its database code.
fn classify_db_error(error: &DbErr) -> ErrorKind {
    let runtime = match error {
        DbErr::Exec(runtime) | DbErr::Query(runtime) | DbErr::Conn(runtime) => runtime,
        // Pool exhausted or closed, and everything sea-orm raises itself
        // (conversions, unexpected results): not a verdict on the data.
        _ => return ErrorKind::Transient,
    };
    let RuntimeErr::SqlxError(sqlx_error) = runtime else {
        return ErrorKind::Transient;
    };
    let sqlx::Error::Database(database_error) = sqlx_error.as_ref() else {
        // I/O, TLS, protocol, pool and worker errors: the connection.
        return ErrorKind::Transient;
    };
    if let Some(postgres) = database_error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return classify_sqlstate(postgres.code());
    }
    if let Some(sqlite) = database_error.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        return match sqlite.code().and_then(|code| code.parse::<i32>().ok()) {
            Some(code) => classify_sqlite_code(code),
            None => ErrorKind::Transient,
        };
    }
    ErrorKind::Transient
}

/// The kind of a PostgreSQL SQLSTATE.
///
/// Permanent: class 22 (data exception: invalid value, NUL in text, value
/// out of range) and class 23 (integrity constraint violation) — the values
/// written are at fault. Everything else is transient, e.g. 08 (connection
/// exception), 25006 (read-only transaction), 40001/40P01 (serialization
/// failure, deadlock), 53 (insufficient resources, 53100 disk full), 55P03
/// (lock not available: `lock_timeout`), 57014 (query canceled:
/// `statement_timeout`), 57P01 (admin shutdown), 58 (system error), and any
/// code not listed.
pub(crate) fn classify_sqlstate(sqlstate: &str) -> ErrorKind {
    match sqlstate.get(..2) {
        Some("22" | "23") => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    }
}

/// SQLite primary result codes (the low byte of an extended code).
mod sqlite_codes {
    pub const CONSTRAINT: i32 = 19;
    pub const TOOBIG: i32 = 18;
    pub const MISMATCH: i32 = 20;
}

/// The kind of an SQLite (extended) result code.
///
/// Permanent: `SQLITE_CONSTRAINT` (all its extended forms), `SQLITE_TOOBIG`
/// and `SQLITE_MISMATCH` — the values written are at fault. Everything else
/// is transient, e.g. `SQLITE_BUSY`, `SQLITE_LOCKED`, `SQLITE_IOERR`,
/// `SQLITE_FULL`, `SQLITE_READONLY`, `SQLITE_CANTOPEN`, and unknown codes.
pub(crate) fn classify_sqlite_code(code: i32) -> ErrorKind {
    match code & 0xff {
        sqlite_codes::CONSTRAINT | sqlite_codes::TOOBIG | sqlite_codes::MISMATCH => {
            ErrorKind::Permanent
        }
        _ => ErrorKind::Transient,
    }
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps a driver error with the operation that failed.
pub(crate) fn database(operation: &'static str) -> impl FnOnce(DbErr) -> Error {
    move |source| Error::Database { operation, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_data_and_constraint_errors_are_permanent() {
        for sqlstate in [
            "22021", "22001", "22003", "22P02", "23505", "23503", "23502", "23514",
        ] {
            assert_eq!(
                classify_sqlstate(sqlstate),
                ErrorKind::Permanent,
                "{sqlstate}"
            );
        }
    }

    #[test]
    fn postgres_database_faults_are_transient() {
        let transient = [
            "25006", // read-only transaction (failover onto a standby)
            "53100", // disk full
            "53200", // out of memory
            "57P01", // admin shutdown
            "57P02", // crash shutdown
            "57P03", // cannot connect now (starting up)
            "40001", // serialization failure
            "40P01", // deadlock detected
            "55P03", // lock not available (lock_timeout)
            "57014", // query canceled (statement_timeout)
            "25P03", // idle-in-transaction session timeout
            "08006", // connection failure
            "08003", // connection does not exist
            "XX000", // internal error
            "42P01", // undefined table (a migration not yet run)
            "99999", // unknown
            "",
        ];
        for sqlstate in transient {
            assert_eq!(
                classify_sqlstate(sqlstate),
                ErrorKind::Transient,
                "{sqlstate:?}"
            );
        }
    }

    #[test]
    fn sqlite_constraint_toobig_and_mismatch_are_permanent() {
        // SQLITE_CONSTRAINT and its extended codes: CHECK, NOTNULL,
        // PRIMARYKEY, UNIQUE, FOREIGNKEY; TOOBIG; MISMATCH.
        for code in [19, 275, 1299, 1555, 2067, 787, 18, 20] {
            assert_eq!(classify_sqlite_code(code), ErrorKind::Permanent, "{code}");
        }
    }

    #[test]
    fn sqlite_busy_io_and_full_are_transient() {
        // BUSY, BUSY_SNAPSHOT, LOCKED, LOCKED_SHAREDCACHE, IOERR,
        // IOERR_WRITE, FULL, READONLY, READONLY_DBMOVED, CANTOPEN, ERROR,
        // unknown.
        for code in [5, 517, 6, 262, 10, 778, 13, 8, 1032, 14, 1, 4242] {
            assert_eq!(classify_sqlite_code(code), ErrorKind::Transient, "{code}");
        }
    }

    #[test]
    fn errors_without_a_database_code_are_transient() {
        let lost = Error::Database {
            operation: "apply batch",
            source: DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(sqlx::Error::Io(
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            )))),
        };
        assert_eq!(lost.kind(), ErrorKind::Transient);
        let acquire = Error::Database {
            operation: "begin",
            source: DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout),
        };
        assert_eq!(acquire.kind(), ErrorKind::Transient);
        // The message is not read: a text that once meant "permanent" or
        // "busy" changes nothing.
        let custom = Error::Database {
            operation: "apply batch",
            source: DbErr::Custom("database is locked".to_owned()),
        };
        assert_eq!(custom.kind(), ErrorKind::Transient);
    }

    #[test]
    fn the_stores_own_validation_is_permanent() {
        assert_eq!(
            Error::InvalidData("tenant row filed under another tenant".to_owned()).kind(),
            ErrorKind::Permanent
        );
    }

    #[test]
    fn a_port_error_keeps_the_store_error_as_its_source() {
        let error = Error::Database {
            operation: "apply batch",
            source: DbErr::Custom("the disk is full".to_owned()),
        };
        let port = recon_core::ports::PortError::from(error);
        assert_eq!(port.kind, ErrorKind::Transient);
        let source = std::error::Error::source(&port).expect("a source");
        let store = source.downcast_ref::<Error>().expect("the store's error");
        assert!(matches!(
            store,
            Error::Database {
                operation: "apply batch",
                ..
            }
        ));
        assert_eq!(port.message, recon_core::ports::error_chain(store));
    }
}
