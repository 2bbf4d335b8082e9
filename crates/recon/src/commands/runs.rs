//! `recon runs list|show`: the run history kept in the replica store, read
//! without the cluster (it outlives the coordinator's state).

use crate::cli::{HistoryStoreArgs, OutputFormat, RunsCommand};
use anyhow::Context;
use recon_store::Store;
use std::process::ExitCode;

pub async fn run(command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List(args) => {
            let store = open(&args.store).await?;
            let records = store
                .recent_runs(args.limit)
                .await
                .context("read the run history")?;
            match args.store.output {
                OutputFormat::Table if records.is_empty() => {
                    println!("no finished runs in the history");
                }
                OutputFormat::Table => print!("{}", recon_core::RunRecord::listing(&records)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&records)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show(args) => {
            let store = open(&args.store).await?;
            let record = store
                .run_record(&args.run)
                .await
                .context("read the run history")?
                .with_context(|| {
                    format!(
                        "run {} is not in the history (`recon runs list` shows the runs kept)",
                        args.run
                    )
                })?;
            match args.store.output {
                OutputFormat::Table => print!("{}", record.details()),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&record)?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn open(args: &HistoryStoreArgs) -> anyhow::Result<Store> {
    Store::connect(&args.database.url()?)
        .await
        .context("open the replica store")
}
