//! Values and waiting helpers shared by the coordinator scenarios.

use anyhow::{Context, bail};
use recon_core::ports::{FailureKind, PortError};
use recon_core::{GuardDecision, Kind, RunStatus, UnitOutcome, UnitReport};
use recon_engine::cluster::{
    Barrier, Coordinator, DoneRecord, KindFigures, Plan, RunPhase, RunRequest, RunState,
    RunSummary, UnitPlan,
};
use std::future::Future;
use std::time::{Duration, Instant};

/// How long anything that must happen may take.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// How long something that must not happen is given to show up.
pub(crate) const QUIET: Duration = Duration::from_millis(800);

/// Awaits `future` or fails naming `what`.
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(DEADLINE, future)
        .await
        .with_context(|| format!("timed out after {DEADLINE:?} waiting for {what}"))
}

/// Fails unless `result` was refused for lost authority: `StaleEpoch`
/// (its leadership is gone) or `SessionLost` (its session is) — which of
/// the two a request meets first depends on whether the member noticed its
/// loss yet.
pub(crate) fn expect_fenced_off<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, PortError>,
) -> anyhow::Result<()> {
    match result {
        Err(error) if error.kind.is_fenced_off() => Ok(()),
        Err(error) => bail!(
            "{what}: expected StaleEpoch or SessionLost, got {:?}: {}",
            error.kind,
            error
        ),
        Ok(value) => bail!("{what}: expected a refusal, but it succeeded with {value:?}"),
    }
}

/// Fails unless `result` is a `SessionLost` error.
pub(crate) fn expect_session_lost<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, PortError>,
) -> anyhow::Result<()> {
    match result {
        Err(error) if error.kind == FailureKind::SessionLost => Ok(()),
        Err(error) => bail!(
            "{what}: expected SessionLost, got {:?}: {}",
            error.kind,
            error
        ),
        Ok(value) => bail!("{what}: expected SessionLost, but it succeeded with {value:?}"),
    }
}

/// The ids of the live members, in order.
pub(crate) async fn member_ids(coordinator: &dyn Coordinator) -> anyhow::Result<Vec<String>> {
    let members = coordinator.members().await.context("list members")?;
    Ok(members.into_iter().map(|member| member.id).collect())
}

pub(crate) fn request(requested_by: &str) -> RunRequest {
    RunRequest {
        requested_by: requested_by.to_owned(),
        requested_unix_ms: 1_700_000_000_000,
        tenants: vec!["t1".to_owned()],
        dry_run: false,
        allow_mass_delete: false,
        run_id: None,
        pause: recon_core::PausePolicy::Always,
    }
}

pub(crate) fn run(run_id: &str, epoch: u64) -> RunState {
    RunState {
        run_id: run_id.to_owned(),
        request: request("test"),
        phase: RunPhase::Pausing,
        epoch,
        started_unix_ms: 1_700_000_000_001,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
    }
}

pub(crate) fn plan(run_id: &str, epoch: u64) -> Plan {
    Plan {
        run_id: run_id.to_owned(),
        epoch,
        generation: 3,
        tenant_list: UnitReport::new("", Kind::TENANT),
        units: vec![
            UnitPlan {
                id: "t1".to_owned(),
                tenant_id: "t1".to_owned(),
                kind: None,
                after: None,
                until: None,
                weight: 10,
            },
            UnitPlan {
                id: "t2/users/2".to_owned(),
                tenant_id: "t2".to_owned(),
                kind: Some(Kind::USER),
                after: Some("u-0500".to_owned()),
                until: None,
                weight: 500,
            },
        ],
    }
}

pub(crate) fn done_record(member: &str, epoch: u64) -> DoneRecord {
    let mut report = UnitReport::new("t1", Kind::USER);
    report.compared = 42;
    report.missing = 2;
    DoneRecord {
        member: member.to_owned(),
        epoch,
        reports: vec![report],
    }
}

/// The done-record a run over small tenants leaves for one tenant unit:
/// one report per kind inside the tenant, with the figures, generations
/// and times a real unit fills in (about 1.3 KB as JSON).
pub(crate) fn realistic_done_record(member: &str, epoch: u64, tenant: &str) -> DoneRecord {
    let reports = Kind::TENANT_SCOPED
        .into_iter()
        .enumerate()
        .map(|(index, kind)| {
            let mut report = UnitReport::new(tenant, kind);
            let base = 1_000 + index as u64;
            report.compared = base;
            report.missing = 3;
            report.phantom = 2;
            report.changed = 5;
            report.written = 10;
            report.kept_newer = 1;
            report.min_generation = Some(7);
            report.max_generation = Some(7);
            report.attempts = 1;
            report.guard = GuardDecision::Allowed;
            report.pages = 4;
            report.bytes = 123_456;
            report.digest_matched = 9_000;
            report.digest_requests = 12;
            report.seconds = 0.123_456_789;
            report.outcome = UnitOutcome::Done;
            report
        })
        .collect();
    DoneRecord {
        member: member.to_owned(),
        epoch,
        reports,
    }
}

pub(crate) fn barrier(run_id: &str, epoch: u64) -> Barrier {
    let figures = KindFigures {
        compared: 10,
        missing: 2,
        written: 2,
        ..KindFigures::default()
    };
    Barrier {
        run_id: run_id.to_owned(),
        status: RunStatus::Completed,
        reason: None,
        epoch,
        summary: Some(RunSummary {
            request: request("tester"),
            started_unix_ms: 1_000,
            ended_unix_ms: 2_000,
            units: 3,
            by_kind: [(Kind::USER, figures)].into(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        }),
    }
}

/// Waits until `id` is no longer listed; returns how long that took.
pub(crate) async fn until_gone(observer: &dyn Coordinator, id: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    within(&format!("{id} to leave the members"), async {
        loop {
            if !member_ids(observer)
                .await?
                .iter()
                .any(|member| member == id)
            {
                return anyhow::Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await?
}
