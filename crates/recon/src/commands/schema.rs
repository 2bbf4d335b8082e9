//! `recon schema check|print|openapi|ddl`: reads a schema file and reports
//! on it.

use crate::cli::{DdlBackend, SchemaCommand};
use sea_orm::DbBackend;
use std::process::ExitCode;

/// Runs one `recon schema` subcommand.
pub fn run(command: SchemaCommand) -> anyhow::Result<ExitCode> {
    match command {
        SchemaCommand::Check(file) => match file.read()? {
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
            print!("{}", file.load()?);
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::Openapi(file) => {
            let document = recon_source::openapi_document(&file.load()?);
            println!("{}", serde_json::to_string_pretty(&document)?);
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::Ddl { schema, backend } => {
            let backend = match backend {
                DdlBackend::Postgres => DbBackend::Postgres,
                DdlBackend::Sqlite => DbBackend::Sqlite,
            };
            for statement in recon_store::schema_ddl(&schema.load()?, backend) {
                println!("{};\n", statement.trim().trim_end_matches(';'));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
