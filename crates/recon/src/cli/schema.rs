//! `recon schema …`: the schema file that declares the replicated kinds.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use recon_core::schema::{Schema, SchemaErrors};

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

impl SchemaFileArgs {
    /// The file's schema, refused with every problem named.
    pub fn load(&self) -> anyhow::Result<Schema> {
        self.read()?
            .with_context(|| format!("read schema {}", self.describe()))
    }

    /// The file's schema for the life of the process (a replica holds
    /// one): the built-in default schema when the file declares just that.
    pub fn load_static(&self) -> anyhow::Result<&'static Schema> {
        let schema = self.load()?;
        if schema == *Schema::default_schema() {
            return Ok(Schema::default_schema());
        }
        Ok(Box::leak(Box::new(schema)))
    }

    /// The file's schema, or its problems; an unreadable file is an error.
    pub fn read(&self) -> anyhow::Result<Result<Schema, SchemaErrors>> {
        let Some(path) = &self.path else {
            return Ok(Ok(Schema::default_schema().clone()));
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read schema file {}", path.display()))?;
        Ok(Schema::parse(&text))
    }

    /// The file's path, or "the default schema".
    pub fn describe(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => "the default schema".to_owned(),
        }
    }
}
