//! The reference monolith: a small HTTP service over its own database that
//! owns the truth recon replicates, for any declared schema
//! ([`recon_core::schema`]; the default schema's tenants, users, groups and
//! memberships unless told otherwise).
//!
//! * [`Monolith`] connects to its database (PostgreSQL, or SQLite as the
//!   embedded default) for a schema ([`Monolith::connect_with_schema`]),
//!   resolves it once into a [`model`] and prepares its tables ([`ddl`],
//!   [`db::schema_record`]);
//! * the write path ([`Monolith::upsert`], [`Monolith::delete`], the
//!   default schema's [`Monolith::put_user`] and friends, and the HTTP
//!   write routes) gives every change a [`Version`](recon_core::Version)
//!   from one serialized counter and appends a protobuf change event to the
//!   transactional [`outbox`] in the same transaction — typed events for
//!   the default schema, declared events for any other;
//! * the read side is the Source API ([`Monolith::page`],
//!   [`Monolith::scope_counts`], range [`digest`]s; typed views such as
//!   [`Monolith::list_entities`] for the default schema): keyset pages read
//!   in one snapshot, each carrying its watermark; its contract is
//!   `proto/source-api.openapi.json`, its routes are built from the schema
//!   ([`http`]);
//! * operator actions reproduce the failures recon repairs: [`backup`]s and
//!   restores that bump the generation and emit no events;
//! * [`seed`] generates the default schema's deterministic, heavy-tailed
//!   workload and a stream of random changes, and a random population of
//!   any schema;
//! * [`verify`] compares a replica's tables with the monolith's, row by row.

pub mod backup;
pub mod db;
pub mod ddl;
pub mod digest;
pub mod error;
mod events;
pub mod http;
pub mod model;
pub mod outbox;
pub mod read;
pub mod relay;
pub mod rows;
pub mod seed;
mod sql;
pub mod verify;
pub mod write;

pub use backup::{BackupId, RestoreOutcome};
pub use error::{Error, ErrorKind, Result};
pub use outbox::OutboxEntry;
pub use read::{Counts, Page};
pub use seed::{SeedSpec, SeedSummary};
pub use write::WriteOutcome;

use model::Model;
use recon_core::schema::Schema;
use sea_orm::{DatabaseConnection, DbBackend};
use std::sync::Arc;
use tracing::instrument;

/// The monolith: a handle on its database and the schema it serves. Cheap
/// to clone (the connection pool and the model are shared).
#[derive(Debug, Clone)]
pub struct Monolith {
    connection: DatabaseConnection,
    model: Arc<Model>,
    statements: Arc<[sql::KindSql]>,
}

impl Monolith {
    /// Connects to the database at `database_url` and runs pending
    /// migrations.
    ///
    /// PostgreSQL URLs (`postgres://…`) and SQLite URLs are accepted; for
    /// SQLite prefer a file (`sqlite://path/to/monolith.db?mode=rwc`, opened
    /// in WAL mode with a busy timeout). `sqlite::memory:` works too, on a
    /// single connection. Errors name the URL without its password.
    #[instrument(skip_all, name = "monolith.connect")]
    pub async fn connect(database_url: &str) -> Result<Monolith> {
        Monolith::connect_with_schema(database_url, Schema::default_schema().clone()).await
    }

    /// Connects to the database at `database_url` for `schema`: a new
    /// database gets the schema's tables, one created for the same schema
    /// is opened, one holding another schema is refused
    /// ([`Error::SchemaMismatch`]); see [`db::schema_record`]. A schema the
    /// monolith cannot serve is [`Error::Model`].
    #[instrument(skip_all, name = "monolith.connect")]
    pub async fn connect_with_schema(database_url: &str, schema: Schema) -> Result<Monolith> {
        let model = Model::new(schema)?;
        let connection = db::connect(database_url).await?;
        db::schema_record::prepare(&connection, &model).await?;
        let statements = sql::KindSql::of_model(&model, connection.get_database_backend());
        Ok(Monolith {
            connection,
            model: Arc::new(model),
            statements: statements.into(),
        })
    }

    /// The schema the monolith serves.
    pub fn schema(&self) -> &Schema {
        self.model.schema()
    }

    /// The monolith's plan of its schema.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The underlying database connection (for tests and tools; the monolith
    /// owns its schema).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }

    /// Which database backend the monolith runs on.
    pub fn backend(&self) -> DbBackend {
        self.connection.get_database_backend()
    }

    /// Closes the connection pool.
    pub async fn close(self) -> Result<()> {
        use error::DbResultExt;
        self.connection
            .close()
            .await
            .during("close the database connection")
    }
}
