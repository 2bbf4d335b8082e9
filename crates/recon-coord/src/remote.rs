//! What a tool that is not a member (`recon reconcile --cluster`, `recon
//! abort`) asks of a cluster's coordinator, written once over the port:
//! request a run, follow it, ask for an abort.

use crate::port::Coordinator;
use crate::types::{AbortRequest, Requested, RunProgress, RunRequest, abort_target};
use recon_core::ports::{FailureKind, PortError};

/// Merges `request` into the pending one; what is pending now and the run
/// it waits behind.
pub async fn request_run(
    coordinator: &dyn Coordinator,
    request: &RunRequest,
) -> Result<Requested, PortError> {
    let pending = coordinator.request_run(request).await?;
    let queued_behind = coordinator.current_run().await?.map(|run| run.run_id);
    Ok(Requested {
        merged: pending != *request,
        pending,
        queued_behind,
    })
}

/// Where the run `run_id` stands.
pub async fn run_progress(
    coordinator: &dyn Coordinator,
    run_id: &str,
) -> Result<RunProgress, PortError> {
    let barrier = coordinator.barrier(run_id).await?;
    let current = coordinator
        .current_run()
        .await?
        .filter(|run| run.run_id == run_id);
    let units_done = coordinator.done_units(run_id).await?.len();
    Ok(RunProgress {
        current,
        units_done,
        barrier,
    })
}

/// Asks the leader to abort the run in progress (`run_id`, or whichever is
/// current); the run's id. Fails, naming it, if that run is not in
/// progress.
pub async fn request_abort(
    coordinator: &dyn Coordinator,
    run_id: Option<&str>,
    abort: &AbortRequest,
) -> Result<String, PortError> {
    let current = coordinator.current_run().await?.map(|run| run.run_id);
    let target = abort_target(run_id, current)
        .map_err(|reason| PortError::new(FailureKind::NotFound, reason))?;
    coordinator.request_abort(&target, abort).await?;
    Ok(target)
}
