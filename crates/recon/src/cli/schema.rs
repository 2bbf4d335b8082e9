//! `recon schema …`: the schema file that declares the replicated kinds.

use clap::{Args, Subcommand};

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
