//! `recon abort`: asks the replicas' leader, through etcd, to end the run
//! in progress with an aborted barrier naming who asked and why.

use crate::cli::AbortArgs;
use anyhow::Context;
use recon_engine::cluster::AbortRequest;
use std::process::ExitCode;

pub async fn run(args: AbortArgs) -> anyhow::Result<ExitCode> {
    let prefix = format!("/recon/{}", args.service);
    let security = args.etcd_security.security()?;
    let abort = AbortRequest {
        requested_by: format!("recon abort on {}", super::cluster::host_name()),
        reason: args.reason.clone(),
        requested_unix_ms: super::reconcile::now_unix_ms(),
    };
    let run_id = recon_etcd::request_abort(
        &args.etcd_endpoints,
        &security,
        &prefix,
        args.run.as_deref(),
        &abort,
    )
    .await
    .context("ask for the abort")?;
    println!("run {run_id}: abort requested; the leader ends it at its next step");
    Ok(ExitCode::SUCCESS)
}
