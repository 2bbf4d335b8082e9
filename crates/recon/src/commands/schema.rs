//! `recon schema check|print|openapi|ddl`: reads a schema file and reports
//! on it.

use crate::cli::{DdlBackend, SchemaCommand, SchemaFileArgs};
use anyhow::Context;
use recon_core::schema::Schema;
use sea_orm::DbBackend;
use std::process::ExitCode;

/// Runs one `recon schema` subcommand.
pub fn run(command: SchemaCommand) -> anyhow::Result<ExitCode> {
    match command {
        SchemaCommand::Check(file) => match read(&file)? {
            Ok(schema) => {
                println!(
                    "{}: valid, {} kinds in scope {:?}",
                    file.describe(),
                    schema.kinds().len(),
                    schema.scope().name
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(problems) => {
                println!("{}: {problems}", file.describe());
                Ok(ExitCode::from(1))
            }
        },
        SchemaCommand::Print(file) => {
            print!("{}", load(&file)?);
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::Openapi(file) => {
            let document = recon_source::openapi_document(&load(&file)?);
            println!("{}", serde_json::to_string_pretty(&document)?);
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::Ddl { schema, backend } => {
            let backend = match backend {
                DdlBackend::Postgres => DbBackend::Postgres,
                DdlBackend::Sqlite => DbBackend::Sqlite,
            };
            for statement in recon_store::schema_ddl(&load(&schema)?, backend) {
                println!("{};\n", statement.trim().trim_end_matches(';'));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The schema of `file`, refused with every problem named.
pub fn load(file: &SchemaFileArgs) -> anyhow::Result<Schema> {
    read(file)?.with_context(|| format!("read schema {}", file.describe()))
}

/// The schema of `file` for the life of the process (a replica holds one):
/// the built-in default schema when the file declares just that.
pub fn load_static(file: &SchemaFileArgs) -> anyhow::Result<&'static Schema> {
    let schema = load(file)?;
    if schema == *Schema::default_schema() {
        return Ok(Schema::default_schema());
    }
    Ok(Box::leak(Box::new(schema)))
}

/// The file's schema, or its problems; an unreadable file is an error.
fn read(file: &SchemaFileArgs) -> anyhow::Result<Result<Schema, recon_core::schema::SchemaErrors>> {
    let Some(path) = &file.path else {
        return Ok(Ok(Schema::default_schema().clone()));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read schema file {}", path.display()))?;
    Ok(Schema::parse(&text))
}

impl SchemaFileArgs {
    /// The file's path, or "the default schema".
    fn describe(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => "the default schema".to_owned(),
        }
    }
}
