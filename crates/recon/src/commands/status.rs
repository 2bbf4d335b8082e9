//! `recon status`: the cluster as a replica's coordinator sees it (leader
//! and epoch, members, the current run's units by state and owner, pause
//! age), as a table or JSON.

use crate::cli::{OutputFormat, StatusArgs};
use anyhow::Context;
use std::process::ExitCode;

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let url = format!("{}/cluster", args.admin_url.trim_end_matches('/'));
    let body: serde_json::Value = reqwest::get(&url)
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .context("decode the cluster status")?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&body)?),
        OutputFormat::Table => {
            let status: recon_engine::cluster::ClusterStatus =
                serde_json::from_value(body["status"].clone())
                    .context("decode the cluster status")?;
            print!("{}", status.to_table());
            println!("(as seen by {})", body["member"].as_str().unwrap_or("?"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
