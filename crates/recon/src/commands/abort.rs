//! `recon abort`: asks the replicas' leader, through etcd or ZooKeeper, to
//! end the run in progress with an aborted barrier naming who asked and why.

use crate::cli::AbortArgs;
use recon_engine::cluster::AbortRequest;
use std::process::ExitCode;

pub async fn run(args: AbortArgs) -> anyhow::Result<ExitCode> {
    let remote = super::remote::Remote::of(&args.coordination)?;
    let abort = AbortRequest {
        requested_by: format!("recon abort on {}", super::cluster::host_name()),
        reason: args.reason.clone(),
        requested_unix_ms: recon_engine::cluster::now_unix_ms(),
    };
    let run_id = remote
        .request_abort(&args.coordination.prefix(), args.run.as_deref(), &abort)
        .await?;
    println!("run {run_id}: abort requested; the leader ends it at its next step");
    Ok(ExitCode::SUCCESS)
}
