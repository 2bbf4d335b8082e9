//! `recon seed`: fills a monolith database with a generated workload.

use crate::cli::{SeedArgs, WorkloadArgs};
use anyhow::Context;
use recon_monolith::{Monolith, SeedSpec};
use std::process::ExitCode;

pub async fn run(args: SeedArgs) -> anyhow::Result<ExitCode> {
    let monolith = Monolith::connect(&args.database_url)
        .await
        .context("open the monolith database")?;
    let summary = recon_monolith::seed::run(&monolith, &spec(&args.workload))
        .await
        .context("seed the workload")?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}

/// The seed spec for a workload; fields the command line does not set keep
/// the library's defaults.
pub fn spec(workload: &WorkloadArgs) -> SeedSpec {
    SeedSpec {
        seed: workload.seed,
        tenants: workload.tenants,
        users_per_tenant_mean: workload.users_per_tenant_mean,
        max_users_per_tenant: workload.max_users_per_tenant,
        ..SeedSpec::default()
    }
}
