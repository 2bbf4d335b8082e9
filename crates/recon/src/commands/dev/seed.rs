//! `recon seed`: fills a monolith database with a generated workload.

use crate::cli::{SeedArgs, WorkloadArgs};
use anyhow::Context;
use recon_monolith::{Monolith, SeedSpec};
use std::process::ExitCode;

pub async fn run(args: SeedArgs) -> anyhow::Result<ExitCode> {
    let schema = args.schema.load()?;
    let monolith = Monolith::connect_with_schema(&args.database_url, schema)
        .await
        .context("open the monolith database")?;
    let spec = spec(&args.workload);
    let printed = if monolith.model().is_default() {
        let summary = recon_monolith::seed::run(&monolith, &spec).await;
        serde_json::to_string_pretty(&summary.context("seed the workload")?)?
    } else {
        let summary = recon_monolith::seed::run_declared(&monolith, &spec).await;
        serde_json::to_string_pretty(&summary.context("seed the schema's kinds")?)?
    };
    println!("{printed}");
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
