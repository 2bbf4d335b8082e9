//! What `recon status` and a replica's `GET /cluster` show: the leader and
//! its epoch, the members, and the current run with its units by state.

use recon_coord::Coordinator;
use recon_coord::{Barrier, KindFigures, MemberInfo, RunPhase, RunRequest, now_unix_ms};
use recon_core::PausePolicy;
use recon_core::ports::PortError;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Where a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Not handed out yet.
    Pending,
    /// Handed to a member that has not claimed it (yet).
    Assigned,
    /// Claimed by a live member, in progress.
    Claimed,
    /// Done-record written.
    Done,
}

/// One unit of the current run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitView {
    /// Unit id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Kind, or `all` for a whole tenant.
    pub kind: String,
    /// State.
    pub state: UnitState,
    /// Who holds or did it.
    pub owner: Option<String>,
}

/// The current run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunView {
    /// Run id.
    pub run_id: String,
    /// Phase.
    pub phase: RunPhase,
    /// Epoch the run's writes carry.
    pub epoch: u64,
    /// How long consumers have been paused for it, in seconds.
    pub paused_for_secs: f64,
    /// What was asked.
    pub request: RunRequest,
    /// Members that acknowledged the pause.
    pub acknowledged: Vec<String>,
    /// Units by state.
    pub units: Vec<UnitView>,
    /// The run's trace id, if traced.
    pub trace_id: Option<String>,
}

/// The whole picture.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The leader, if any.
    pub leader: Option<String>,
    /// Its epoch.
    pub epoch: Option<u64>,
    /// Live members.
    pub members: Vec<MemberInfo>,
    /// The run in progress, if any.
    pub run: Option<RunView>,
    /// The last finished runs, newest first.
    pub recent_runs: Vec<Barrier>,
}

/// How many finished runs the status shows.
pub const RECENT_RUNS: usize = 10;

/// Reads the cluster's state through any member's (or observer's)
/// coordinator.
pub async fn cluster_status(coordinator: &dyn Coordinator) -> Result<ClusterStatus, PortError> {
    let leader = coordinator.leader().await?;
    let members = coordinator.members().await?;
    let run = match coordinator.current_run().await? {
        None => None,
        Some(run) => {
            let plan = coordinator.plan(&run.run_id).await?;
            let assignments = coordinator.assignments(&run.run_id).await?;
            let claims = coordinator.claims(&run.run_id).await?;
            let done = coordinator.done_units(&run.run_id).await?;
            let acknowledged = coordinator
                .pause_acks(&run.run_id)
                .await?
                .into_iter()
                .collect();
            let units = plan
                .map(|plan| plan.units)
                .unwrap_or_default()
                .into_iter()
                .map(|unit| {
                    // A done unit stays assigned to the member that did it.
                    let (state, owner) = if done.contains(&unit.id) {
                        (UnitState::Done, assignments.get(&unit.id).cloned())
                    } else if let Some(member) = claims.get(&unit.id) {
                        (UnitState::Claimed, Some(member.clone()))
                    } else if let Some(member) = assignments.get(&unit.id) {
                        (UnitState::Assigned, Some(member.clone()))
                    } else {
                        (UnitState::Pending, None)
                    };
                    UnitView {
                        id: unit.id,
                        tenant: unit.tenant_id,
                        kind: unit
                            .kind
                            .map_or_else(|| "all".to_owned(), |kind| kind.as_str().to_owned()),
                        state,
                        owner,
                    }
                })
                .collect();
            Some(RunView {
                paused_for_secs: now_unix_ms().saturating_sub(run.started_unix_ms) as f64 / 1000.0,
                trace_id: run
                    .traceparent
                    .as_deref()
                    .and_then(recon_core::history::trace_id_of)
                    .map(str::to_owned),
                run_id: run.run_id,
                phase: run.phase,
                epoch: run.epoch,
                request: run.request,
                acknowledged,
                units,
            })
        }
    };
    Ok(ClusterStatus {
        leader: leader.as_ref().map(|(member, _)| member.clone()),
        epoch: leader.map(|(_, epoch)| epoch),
        members,
        run,
        recent_runs: coordinator.recent_barriers(RECENT_RUNS).await?,
    })
}

impl ClusterStatus {
    /// A readable summary.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "leader: {} (epoch {})",
            self.leader.as_deref().unwrap_or("none"),
            self.epoch
                .map_or_else(|| "-".to_owned(), |epoch| epoch.to_string())
        );
        let _ = writeln!(
            out,
            "members: {}",
            self.members
                .iter()
                .map(|member| member.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for barrier in &self.recent_runs {
            let _ = writeln!(out, "{}", describe_finished(barrier));
        }
        let Some(run) = &self.run else {
            let _ = writeln!(out, "no run in progress; consumers are not held");
            return out;
        };
        let count = |state: UnitState| run.units.iter().filter(|unit| unit.state == state).count();
        let _ = match run.request.pause {
            PausePolicy::Always => writeln!(
                out,
                "run {}: phase {:?}, epoch {}, consumers paused for {:.0}s, acknowledged by {}",
                run.run_id,
                run.phase,
                run.epoch,
                run.paused_for_secs,
                run.acknowledged.join(", ")
            ),
            PausePolicy::Never => writeln!(
                out,
                "run {}: phase {:?}, epoch {}, running for {:.0}s, consumers not paused (pause: never)",
                run.run_id, run.phase, run.epoch, run.paused_for_secs
            ),
        };
        let _ = writeln!(
            out,
            "units: {} done, {} claimed, {} assigned, {} pending",
            count(UnitState::Done),
            count(UnitState::Claimed),
            count(UnitState::Assigned),
            count(UnitState::Pending)
        );
        for unit in run
            .units
            .iter()
            .filter(|unit| unit.state != UnitState::Done)
        {
            let _ = writeln!(
                out,
                "  {:<8} {:<38} {:<10} {:<9} {}",
                unit.id,
                unit.tenant,
                unit.kind,
                format!("{:?}", unit.state).to_lowercase(),
                unit.owner.as_deref().unwrap_or("-")
            );
        }
        out
    }
}

/// One line about a finished run.
fn describe_finished(barrier: &Barrier) -> String {
    let mut line = format!(
        "finished {}: {}",
        barrier.run_id,
        crate::metrics::run_outcome(barrier.status)
    );
    if let Some(summary) = &barrier.summary {
        let seconds = summary
            .ended_unix_ms
            .saturating_sub(summary.started_unix_ms) as f64
            / 1000.0;
        let total =
            |figure: fn(&KindFigures) -> u64| summary.by_kind.values().map(figure).sum::<u64>();
        let _ = write!(
            line,
            " in {seconds:.1}s, {} units, {} missing, {} phantom, {} changed, {} written",
            summary.units,
            total(|kind| kind.missing),
            total(|kind| kind.phantom),
            total(|kind| kind.changed),
            total(|kind| kind.written)
        );
    }
    if let Some(reason) = &barrier.reason {
        let _ = write!(line, " ({reason})");
    }
    line
}
