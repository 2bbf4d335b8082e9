//! `recon monolith`: serves the reference monolith until SIGTERM.

use crate::cli::MonolithArgs;
use anyhow::Context;
use recon_monolith::Monolith;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

pub async fn run(args: MonolithArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let monolith = Monolith::connect(&args.database_url)
        .await
        .context("open the monolith database")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    monolith
        .serve(listener, args.auth_token, shutdown)
        .await
        .context("serve the monolith")?;
    Ok(ExitCode::SUCCESS)
}
