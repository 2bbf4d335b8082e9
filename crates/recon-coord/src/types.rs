//! What replicas share through the coordinator: members, run requests, the
//! run's state, its plan, done-records and the barrier. All serde, so that
//! the etcd adapter stores them as JSON values.

use recon_core::{
    EntityKey, InvalidInput, KeyRange, Kind, PausePolicy, RunMode, RunRecord, RunReport, RunStatus,
    RunTotals, UnitReport,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A replica's id (unique per process start).
pub type MemberId = String;

/// A work unit's id within its run.
pub type UnitId = String;

/// A live replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its id.
    pub id: MemberId,
    /// Its admin API, if any.
    pub admin_url: Option<String>,
    /// When it joined (Unix milliseconds).
    pub joined_unix_ms: u64,
    /// What it does in a run; members registered before roles existed
    /// reconcile.
    #[serde(default)]
    pub role: MemberRole,
}

/// What a member does in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Pauses its consumer, acknowledges, may lead and is handed units.
    #[default]
    Reconciler,
    /// Pauses its consumer and acknowledges, but cannot reconcile (no
    /// source configured): it never leads and is handed no units.
    PauseOnly,
}

/// Someone asks for a reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Who asked (a member id, `recon reconcile --cluster`, …).
    pub requested_by: String,
    /// When (Unix milliseconds).
    pub requested_unix_ms: u64,
    /// Only these tenants (empty: all).
    pub tenants: Vec<String>,
    /// Report only.
    pub dry_run: bool,
    /// Override the delete guard.
    pub allow_mass_delete: bool,
    /// Whether the run pauses the consumers (requests of older versions:
    /// it does).
    #[serde(default, skip_serializing_if = "PausePolicy::is_always")]
    pub pause: PausePolicy,
    /// The id the run serving this request gets, chosen by the first
    /// requester ([`RunRequest::new_run_id`]); a request merged into a
    /// pending one takes the pending one's id. Requests of older versions
    /// have none (the leader then names the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl RunRequest {
    /// A fresh run id made at `now_unix_ms` (ids order by request time;
    /// `nonce` tells apart requests of the same millisecond).
    pub fn new_run_id(now_unix_ms: u64, nonce: u32) -> String {
        format!("run-{now_unix_ms:013}-{nonce:08x}")
    }

    /// One pending request that asks for what both ask for: the union of
    /// their tenants (all tenants if either asks for all); a dry run only if
    /// both are; the delete guard overridden only if both override it (an
    /// override never reaches tenants whose requester did not ask for it);
    /// consumers left running only if both ask for it.
    /// Keeps the earlier request time and run id and names both requesters.
    pub fn merge(self, later: RunRequest) -> RunRequest {
        let tenants = if self.tenants.is_empty() || later.tenants.is_empty() {
            Vec::new()
        } else {
            let mut tenants = self.tenants;
            for tenant in later.tenants {
                if !tenants.contains(&tenant) {
                    tenants.push(tenant);
                }
            }
            tenants
        };
        let requested_by = if self.requested_by == later.requested_by {
            self.requested_by
        } else {
            format!("{}, {}", self.requested_by, later.requested_by)
        };
        RunRequest {
            requested_by,
            requested_unix_ms: self.requested_unix_ms.min(later.requested_unix_ms),
            tenants,
            dry_run: self.dry_run && later.dry_run,
            allow_mass_delete: self.allow_mass_delete && later.allow_mass_delete,
            pause: self.pause.merge(later.pause),
            run_id: self.run_id.or(later.run_id),
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    /// Waiting for every live member to pause its consumer.
    Pausing,
    /// The leader reconciles the tenant list and writes the plan.
    Planning,
    /// Units are handed out and reconciled.
    Working,
}

/// The current run, as the leader last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// Unique id of the run.
    pub run_id: String,
    /// What was asked.
    pub request: RunRequest,
    /// Where it is.
    pub phase: RunPhase,
    /// The epoch of the leader that last wrote it.
    pub epoch: u64,
    /// When the run began (Unix milliseconds); `max_pause` counts from here.
    pub started_unix_ms: u64,
    /// W3C `traceparent` of the run's root span, so that followers join the
    /// run's trace.
    pub traceparent: Option<String>,
}

/// One piece of work: a whole tenant, or a key range of one kind of a big
/// tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitPlan {
    /// Id within the run.
    pub id: UnitId,
    /// The tenant.
    pub tenant_id: String,
    /// `None`: every kind of the tenant; `Some`: only this kind, in `range`.
    pub kind: Option<Kind>,
    /// Exclusive lower bound, cursor form.
    pub after: Option<String>,
    /// Inclusive upper bound, cursor form.
    pub until: Option<String>,
    /// Rows the source counted for it (planning weight).
    pub weight: u64,
}

impl UnitPlan {
    /// The unit's key range (the whole space for whole-tenant units); its
    /// kind's keys have `key_parts` parts.
    pub fn range(&self, key_parts: usize) -> Result<KeyRange, InvalidInput> {
        let kind = self.kind.map_or("unit", Kind::as_str);
        let parse = |text: &Option<String>| -> Result<Option<EntityKey>, InvalidInput> {
            text.as_deref()
                .map(|text| EntityKey::parse(text, key_parts, kind))
                .transpose()
        };
        Ok(KeyRange {
            after: parse(&self.after)?,
            until: parse(&self.until)?,
        })
    }
}

/// The plan of a run, written once by the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The run.
    pub run_id: String,
    /// The epoch the units' writes carry.
    pub epoch: u64,
    /// The source's generation when planned (the floor to raise).
    pub generation: u64,
    /// The tenant list's own report.
    pub tenant_list: UnitReport,
    /// The units.
    pub units: Vec<UnitPlan>,
}

/// What a member did with a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneRecord {
    /// Who did it.
    pub member: MemberId,
    /// Under which epoch.
    pub epoch: u64,
    /// Its reports (one per kind reconciled).
    pub reports: Vec<UnitReport>,
}

/// The completion barrier: consumers resume when it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    /// The run.
    pub run_id: String,
    /// Completed, with problems, or aborted.
    pub status: RunStatus,
    /// Why, when aborted.
    pub reason: Option<String>,
    /// The epoch of the leader that wrote it.
    pub epoch: u64,
    /// What the run did (absent in barriers of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<RunSummary>,
}

/// An operator's request to abort a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortRequest {
    /// Who asked (an admin API, `recon abort`, …).
    pub requested_by: String,
    /// Why, as the operator said it.
    pub reason: String,
    /// When (Unix milliseconds).
    pub requested_unix_ms: u64,
}

impl RunState {
    /// The run history's record of this run, ended by `member` with
    /// `barrier` (its end time is the barrier's) and `report` (whose
    /// duration is set from the two).
    pub fn record(
        &self,
        member: &str,
        barrier: &Barrier,
        planned_units: u64,
        aborted_by: Option<String>,
        mut report: RunReport,
    ) -> RunRecord {
        let ended_unix_ms = barrier
            .summary
            .as_ref()
            .map_or(self.started_unix_ms, |summary| summary.ended_unix_ms);
        report.seconds =
            Duration::from_millis(ended_unix_ms.saturating_sub(self.started_unix_ms)).as_secs_f64();
        RunRecord {
            run_id: self.run_id.clone(),
            mode: RunMode::Cluster,
            leader: Some(member.to_owned()),
            requested_by: self.request.requested_by.clone(),
            tenants: self.request.tenants.clone(),
            started_unix_ms: self.started_unix_ms,
            ended_unix_ms,
            planned_units,
            aborted_by,
            pause: self.request.pause,
            trace_id: self
                .traceparent
                .as_deref()
                .and_then(recon_core::history::trace_id_of)
                .map(str::to_owned),
            totals: RunTotals::of(&report),
            report,
        }
    }
}

/// The run an abort asked for `wanted` (any run when `None`) applies to,
/// given the run in progress: that run, or why there is none to abort.
pub fn abort_target(wanted: Option<&str>, current: Option<String>) -> Result<String, String> {
    match (wanted, current) {
        (Some(wanted), Some(current)) if wanted == current => Ok(current),
        (None, Some(current)) => Ok(current),
        (wanted, current) => Err(format!(
            "run {} is not in progress (current: {})",
            wanted.unwrap_or("<any>"),
            current.as_deref().unwrap_or("none")
        )),
    }
}

/// A finished run in brief, kept with its barrier for the run history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// What was asked.
    pub request: RunRequest,
    /// When the run began (Unix milliseconds).
    pub started_unix_ms: u64,
    /// When its barrier was written (Unix milliseconds, the leader's clock).
    pub ended_unix_ms: u64,
    /// Units of its plan (0 if it ended before planning).
    pub units: u64,
    /// The report's figures by kind (for an aborted run: of the units done
    /// before the abort).
    pub by_kind: BTreeMap<Kind, KindFigures>,
    /// W3C `traceparent` of the run's root span, if traced.
    pub traceparent: Option<String>,
}

/// Rows of one kind in a run's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindFigures {
    /// Keys compared.
    pub compared: u64,
    /// Rows only the source had.
    pub missing: u64,
    /// Rows only the replica had.
    pub phantom: u64,
    /// Rows that differed.
    pub changed: u64,
    /// Rows written.
    pub written: u64,
    /// Deletions withheld by the guard.
    pub withheld: u64,
}

impl KindFigures {
    /// The figures of `units`, by kind.
    pub fn by_kind(units: &[UnitReport]) -> BTreeMap<Kind, KindFigures> {
        let mut figures: BTreeMap<Kind, KindFigures> = BTreeMap::new();
        for unit in units {
            let entry = figures.entry(unit.kind).or_default();
            entry.compared += unit.compared;
            entry.missing += unit.missing;
            entry.phantom += unit.phantom;
            entry.changed += unit.changed;
            entry.written += unit.written;
            entry.withheld += unit.skipped_by_guard;
        }
        figures
    }
}

/// What a non-member's request for a run (`recon reconcile --cluster`,
/// through a coordinator backend's `request_run`) left pending.
#[derive(Debug, Clone)]
pub struct Requested {
    /// The pending request, merged with any that was pending before.
    pub pending: RunRequest,
    /// Whether it was merged into an earlier pending request.
    pub merged: bool,
    /// The run in progress it waits behind, if any.
    pub queued_behind: Option<String>,
}

/// Where a run stands, as a non-member reads it from the coordination
/// state (`--wait`).
#[derive(Debug, Clone, Default)]
pub struct RunProgress {
    /// The run's state while it is the current run.
    pub current: Option<RunState>,
    /// Units with a done-record so far.
    pub units_done: usize,
    /// The barrier, once the run is over.
    pub barrier: Option<Barrier>,
}

/// Milliseconds since the Unix epoch, for timestamps (never for fencing:
/// epochs come from the store).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_applies_to_the_run_in_progress_only() {
        let current = || Some("r2".to_owned());
        assert_eq!(abort_target(None, current()), Ok("r2".to_owned()));
        assert_eq!(abort_target(Some("r2"), current()), Ok("r2".to_owned()));
        assert_eq!(
            abort_target(Some("r1"), current()),
            Err("run r1 is not in progress (current: r2)".to_owned())
        );
        assert_eq!(
            abort_target(None, None),
            Err("run <any> is not in progress (current: none)".to_owned())
        );
    }

    fn request(by: &str, tenants: &[&str], dry_run: bool, allow: bool) -> RunRequest {
        RunRequest {
            requested_by: by.to_owned(),
            requested_unix_ms: by.len() as u64,
            tenants: tenants.iter().map(|tenant| tenant.to_string()).collect(),
            dry_run,
            allow_mass_delete: allow,
            run_id: None,
            pause: recon_core::PausePolicy::Always,
        }
    }

    #[test]
    fn merged_requests_cover_both_and_stay_as_careful_as_either() {
        let merged = request("a", &["t1", "t2"], true, true).merge(request(
            "bb",
            &["t2", "t3"],
            false,
            false,
        ));
        assert_eq!(merged.tenants, ["t1", "t2", "t3"]);
        assert!(!merged.dry_run, "one asked for a real run");
        assert!(!merged.allow_mass_delete, "one did not override the guard");
        assert_eq!(merged.requested_by, "a, bb");
        assert_eq!(merged.requested_unix_ms, 1);
    }

    #[test]
    fn a_merged_request_leaves_consumers_running_only_if_both_ask() {
        let never = |by| RunRequest {
            pause: PausePolicy::Never,
            ..request(by, &[], false, false)
        };
        let always = request("b", &[], false, false);
        assert_eq!(never("a").merge(never("b")).pause, PausePolicy::Never);
        assert_eq!(never("a").merge(always.clone()).pause, PausePolicy::Always);
        assert_eq!(always.merge(never("a")).pause, PausePolicy::Always);
    }

    #[test]
    fn a_request_of_an_older_version_pauses_and_an_always_request_reads_the_same() {
        let old: RunRequest = serde_json::from_str(
            r#"{"requested_by":"a","requested_unix_ms":1,"tenants":[],"dry_run":false,"allow_mass_delete":false}"#,
        )
        .expect("an older request");
        assert_eq!(old.pause, PausePolicy::Always);
        let always = serde_json::to_string(&old).expect("encode");
        assert!(!always.contains("pause"), "{always}");
        let never = RunRequest {
            pause: PausePolicy::Never,
            ..old
        };
        let encoded = serde_json::to_string(&never).expect("encode");
        assert!(encoded.contains(r#""pause":"never""#), "{encoded}");
        let decoded: RunRequest = serde_json::from_str(&encoded).expect("decode");
        assert_eq!(decoded, never);
    }

    #[test]
    fn a_merged_request_is_served_by_the_pending_run() {
        let mut pending = request("a", &[], false, false);
        pending.run_id = Some(RunRequest::new_run_id(1_700_000_000_000, 1));
        let mut later = request("b", &[], false, false);
        later.run_id = Some(RunRequest::new_run_id(1_700_000_000_500, 2));
        let merged = pending.clone().merge(later.clone());
        assert_eq!(merged.run_id, pending.run_id);
        // A pending request of an older version adopts the later id.
        let old = request("a", &[], false, false);
        assert_eq!(old.merge(later.clone()).run_id, later.run_id);
        // Ids order by request time.
        assert!(RunRequest::new_run_id(999, 7) < RunRequest::new_run_id(1_000, 0));
    }

    #[test]
    fn all_tenants_wins_and_a_dry_run_needs_everyone() {
        let merged = request("a", &["t1"], true, true).merge(request("a", &[], true, true));
        assert!(merged.tenants.is_empty(), "all tenants");
        assert!(merged.dry_run && merged.allow_mass_delete);
        assert_eq!(merged.requested_by, "a");
    }
}
